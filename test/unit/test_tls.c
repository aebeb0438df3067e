/* test_tls.c — the CA trust store: embedded bundle and ca_file loading. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "sluice.h"
#include "unit.h"

#define CERT "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"

static const char *
write_tmp(const char *content)
{
	static char path[64];
	FILE *f;

	strcpy(path, "/tmp/sluice-unit-XXXXXX");
	close(mkstemp(path));
	f = fopen(path, "w");
	fputs(content, f);
	fclose(f);
	return path;
}

void
suite_tls(void)
{
	struct tls_ca ca;
	char err[256];
	static const struct {
		const char *name, *content; /* content NULL: a path that does not exist */
		int ok, count;
		const char *err;
	} rows[] = {
		{ "missing file",       NULL,                     0, 0, "No such file" },
		{ "empty file",         "",                       0, 0, "empty" },
		{ "no certificate",     "hello\n",                0, 0, "no PEM certificate" },
		{ "one certificate",    CERT,                     1, 1, NULL },
		{ "two certificates",   "junk\n" CERT "x\n" CERT, 1, 2, NULL },
	};

	unit_case("embedded bundle");
	CHECK(tls_ca_load(&ca, NULL, err, sizeof err) == 0);
	CHECKF(tls_ca_count(&ca) > 100, "embedded bundle has %d certificates", tls_ca_count(&ca));
	CHECK(strcmp(ca.source, "embedded") == 0);
	tls_ca_free(&ca);

	for (size_t i = 0; i < NELEM(rows); i++) {
		const char *path = rows[i].content ? write_tmp(rows[i].content) : "/nonexistent/ca.pem";
		int rc;

		unit_case("ca_file: %s", rows[i].name);
		err[0] = '\0';
		rc = tls_ca_load(&ca, path, err, sizeof err);
		CHECKF((rc == 0) == rows[i].ok, "rc %d, err '%s'", rc, err);
		if (rc == 0) {
			CHECK(tls_ca_count(&ca) == rows[i].count);
			tls_ca_free(&ca);
		} else {
			CHECKF(strstr(err, rows[i].err) != NULL, "err '%s'", err);
		}
		if (rows[i].content)
			unlink(path);
	}
}
