/*
 * sluice — the one private header. Every module's types and prototypes are listed here under
 * the name of the file that defines them, in the order a request meets them, so reading this
 * file is reading the architecture (DESIGN.md §2).
 */
#ifndef SLUICE_H
#define SLUICE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* version.c */
void version_print(FILE *out);

/* tls.c — the CA trust store handed to libcurl as a blob (CURLOPT_CAINFO_BLOB). */
struct tls_ca {
	const char *pem;
	size_t      len;
	const char *source; /* "embedded" or the file's path, for logs */
};
int  tls_ca_load(struct tls_ca *ca, const char *file, char *err, size_t errlen);
void tls_ca_free(struct tls_ca *ca);
int  tls_ca_count(const struct tls_ca *ca);

#endif
