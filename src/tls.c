/*
 * tls.c — the CA trust store. The bundle embedded at build time (src/cacert.S) is the default,
 * so a FROM scratch image verifies providers with no files at all; `ca_file` replaces it.
 * Either way libcurl receives the bytes as a blob: one code path, nothing read per connection.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include "sluice.h"

extern const char sluice_cacert_pem[];
extern const char sluice_cacert_pem_end[];

static const char PEM_BEGIN[] = "-----BEGIN CERTIFICATE-----";

/* Load the trust store: `file` if given (read once at start: libcurl parses and hashes it once
 * and keeps what it made, so the bytes must not change under it, as a mapping of a file that is
 * rewritten would), else the embedded one. */
int
tls_ca_load(struct tls_ca *ca, const char *file, char *err, size_t errlen)
{
	struct stat st;
	char *p;
	size_t got = 0;
	int fd;

	if (file == NULL || *file == '\0') {
		ca->pem = sluice_cacert_pem;
		ca->len = (size_t)(sluice_cacert_pem_end - sluice_cacert_pem);
		ca->source = "embedded";
		return 0;
	}
	if ((fd = open(file, O_RDONLY | O_CLOEXEC)) < 0) {
		snprintf(err, errlen, "ca_file %s: %s", file, strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) < 0 || st.st_size == 0 || (p = malloc((size_t)st.st_size)) == NULL) {
		snprintf(err, errlen, "ca_file %s: empty or unreadable", file);
		close(fd);
		return -1;
	}
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, p + got, (size_t)st.st_size - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	close(fd);
	ca->pem = p;
	ca->len = got;
	ca->source = file;
	if (got == 0 || tls_ca_count(ca) == 0) {
		snprintf(err, errlen, "ca_file %s: no PEM certificate in it", file);
		tls_ca_free(ca);
		return -1;
	}
	return 0;
}

void
tls_ca_free(struct tls_ca *ca)
{
	if (ca->pem != NULL && ca->pem != sluice_cacert_pem)
		free((void *)ca->pem);
	ca->pem = NULL;
	ca->len = 0;
}

/* How many certificates the store holds (for the start-up log and the tests). */
int
tls_ca_count(const struct tls_ca *ca)
{
	const char *p = ca->pem, *end = ca->pem + ca->len;
	size_t n = sizeof PEM_BEGIN - 1;
	int count = 0;

	while ((size_t)(end - p) >= n) {
		const char *hit = memmem(p, (size_t)(end - p), PEM_BEGIN, n);
		if (hit == NULL)
			break;
		count++;
		p = hit + n;
	}
	return count;
}
