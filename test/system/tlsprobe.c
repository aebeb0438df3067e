/*
 * tlsprobe — a TLS client linked exactly like sluice (same static libcurl, BearSSL, trust-store
 * code), so the tests can prove from inside an empty root that verified HTTPS works there.
 *   tlsprobe [--ca FILE] [--resolve HOST:PORT:ADDR] URL
 * Without --ca it trusts the embedded bundle. Prints the status line or libcurl's error; exits
 * 0 on HTTP 200, 1 otherwise.
 */
#include <string.h>
#include <curl/curl.h>
#include "sluice.h"

static size_t
discard(char *p, size_t size, size_t n, void *ud)
{
	(void)p; (void)ud;
	return size * n;
}

int
main(int argc, char **argv)
{
	const char *ca_file = NULL, *resolve = NULL, *url = NULL;
	char err[CURL_ERROR_SIZE] = "", loaderr[256];
	struct curl_slist *res = NULL;
	struct tls_ca ca;
	struct curl_blob blob;
	long status = 0;
	CURLcode rc;
	CURL *h;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--ca") == 0 && i + 1 < argc)
			ca_file = argv[++i];
		else if (strcmp(argv[i], "--resolve") == 0 && i + 1 < argc)
			resolve = argv[++i];
		else
			url = argv[i];
	}
	if (url == NULL) {
		fputs("usage: tlsprobe [--ca FILE] [--resolve HOST:PORT:ADDR] URL\n", stderr);
		return 2;
	}
	if (tls_ca_load(&ca, ca_file, loaderr, sizeof loaderr) < 0) {
		fprintf(stderr, "tlsprobe: %s\n", loaderr);
		return 1;
	}
	curl_global_init(CURL_GLOBAL_DEFAULT);
	h = curl_easy_init();
	blob.data = (void *)ca.pem;
	blob.len = ca.len;
	blob.flags = CURL_BLOB_NOCOPY;
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_CAINFO_BLOB, &blob);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, err);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 10000L);
	if (resolve != NULL) {
		res = curl_slist_append(NULL, resolve);
		curl_easy_setopt(h, CURLOPT_RESOLVE, res);
	}
	rc = curl_easy_perform(h);
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	if (rc != CURLE_OK)
		printf("error: %s (%s)\n", curl_easy_strerror(rc), err);
	else
		printf("HTTP %ld (CA: %s, %d certificates)\n", status, ca.source, tls_ca_count(&ca));
	curl_easy_cleanup(h);
	curl_slist_free_all(res);
	tls_ca_free(&ca);
	return rc == CURLE_OK && status == 200 ? 0 : 1;
}
