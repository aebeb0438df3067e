/* version.c — what this binary is and what it was built from. */
#include <curl/curl.h>
#include <llhttp.h>
#include "sluice.h"
#include "deps.h"

void
version_print(FILE *out)
{
	const curl_version_info_data *cv = curl_version_info(CURLVERSION_NOW);

	fprintf(out, "sluice %s (%s)\n", SLUICE_VERSION, SLUICE_ARCH);
	fprintf(out, "  BearSSL %s\n", DEB_bearssl);
	fprintf(out, "  libcurl %s (Debian %s, TLS: %s)\n", cv->version, DEB_curl, cv->ssl_version);
	fprintf(out, "  inih %s\n", DEB_libinih);
	fprintf(out, "  jsmn %s (its token layout; tokens laid down by sluice's validating pass)\n", DEB_jsmn);
	fprintf(out, "  llhttp %d.%d.%d (from Debian nodejs %s)\n", LLHTTP_VERSION_MAJOR,
	    LLHTTP_VERSION_MINOR, LLHTTP_VERSION_PATCH, DEB_nodejs);
	fprintf(out, "  CA bundle: Debian ca-certificates %s\n", DEB_ca_certificates);
}
