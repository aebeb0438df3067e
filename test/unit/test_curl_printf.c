/*
 * test_curl_printf.c — libcurl's own printf, which vendor/patches/curl-04-printf-plain.patch
 * changes. libcurl builds every request (request line, Host, custom headers, URL parts) with it;
 * the patch appends formats of text, %s, %d, %u, %ld, %lu and %% directly (in curl_mvaprintf and
 * curlx_dyn_vprintf alike) and leaves every other format to libcurl's formatf. This is an
 * equivalence test: through curl_maprintf each answer must be what the C library's snprintf
 * gives (libcurl writes a NULL %s as "(nil)"), on both sides of the line between the two paths;
 * it passes with and without the patch. curlx_dyn_vprintf (internal) is exercised by every
 * request of the integration tests, whose bytes on the wire they check.
 */
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <curl/curl.h>
#include "sluice.h"
#include "unit.h"

static int bad;

/* curl_maprintf against vsnprintf, the same arguments. */
static void __attribute__((format(printf, 1, 2)))
same(const char *fmt, ...)
{
	char want[512];
	char *got;
	va_list ap, aq;

	va_start(ap, fmt);
	va_copy(aq, ap);
	vsnprintf(want, sizeof want, fmt, ap);
	got = curl_mvaprintf(fmt, aq);
	va_end(aq);
	va_end(ap);
	if (got == NULL || strcmp(got, want) != 0) {
		bad++;
		CHECKF(0, "format '%s': '%s', want '%s'", fmt, got ? got : "(NULL)", want);
	}
	curl_free(got);
}

static void
test_plain(void)
{
	unit_case("curl_maprintf: text, %%s, %%d, %%u, %%ld, %%lu and %%%% (the direct path)");
	bad = 0;
	same("plain text, no conversion");
	same("%s", "");
	same("%s", "x");
	same("%s ", "POST");
	same("Host: %s%s%s\r\n", "[", "::1", "]");
	same("Host: %s%s%s:%d\r\n", "", "127.0.0.1", "", 8080);
	same("%s%s%s%s%s%s%s%s%s%s%s%s%s%s%s", "https://", "", "", "", "", "", "", "api.example.com", ":", "8443",
	    "/v1/chat/completions", "?", "a=1", "", "");
	same("Content-Length: %ld\r\n", 0L);
	same("Content-Length: %ld\r\n", 1234567L);
	same("%d %d %d %d", 0, -1, INT_MAX, INT_MIN);
	same("%u %u %u", 0u, 1u, UINT_MAX);
	same("%ld %ld %ld", -42L, LONG_MAX, LONG_MIN);
	same("%lu %lu", 0ul, ULONG_MAX);
	same("%d/%s", 443, "api.example.com");
	same("100%%");
	same("%%s is not a conversion: %s%%", "x");
	same("%s%d%s%u%s%ld%s%lu", "a", -7, "b", 7u, "c", -70L, "d", 70ul);
	CHECKF(bad == 0, "%d formats differ", bad);

	unit_case("curl_maprintf: a NULL %%s is (nil)");
	{
		static const char *volatile none; /* NULL, unknown to the compiler's format checks */
		char *s = curl_maprintf("<%s>", none);
		CHECKF(s != NULL && strcmp(s, "<(nil)>") == 0, "'%s'", s ? s : "(NULL)");
		curl_free(s);
	}
}

static void
test_formatf(void)
{
	unit_case("curl_maprintf: widths, precisions, flags, hex (still libcurl's formatf)");
	bad = 0;
	same("%5s|%-5s|", "ab", "cd");
	same("%.*s:", 3, "abcdef");
	same("%.2s", "xyz");
	same("%x %X %o", 255u, 255u, 8u);
	same("%5d|%-5d|%05d", 42, 42, 42);
	same("%zu", (size_t)99);
	same("%lld %llu", -5LL, 5ULL);
	same("%c%c", 'o', 'k');
	same("%s then %x", "text", 16u);
	same("%d then %5s", 7, "w");
	/* More than 32 conversions: back to formatf, whatever they are. */
	same("%s%s%s%s%s%s%s%s%s%s%s%s%s%s%s%s%s%s%s%s%s%s%s%s%s%s%s%s%s%s%s%s%s",
	    "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o", "p", "q", "r", "s", "t", "u", "v", "w", "x", "y", "z", "a", "b", "c", "d", "e", "f", "g");
	CHECKF(bad == 0, "%d formats differ", bad);
}

static void
test_limits(void)
{
	size_t n = 9u << 20; /* past libcurl's 8,000,000-byte cap on aprintf */
	char *big = malloc(n + 1), *s;

	unit_case("curl_maprintf: a result past libcurl's cap is NULL, as before");
	if (!CHECK(big != NULL))
		return;
	memset(big, 'a', n);
	big[n] = '\0';
	s = curl_maprintf("%s", big);
	CHECKF(s == NULL, "got %zu bytes", s ? strlen(s) : 0);
	curl_free(s);
	s = curl_maprintf("x%sy", big + n - 1000);
	CHECKF(s != NULL && strlen(s) == 1002 && s[0] == 'x' && s[1001] == 'y', "1,002 bytes");
	curl_free(s);
	free(big);
}

void
suite_curl_printf(void)
{
	test_plain();
	test_formatf();
	test_limits();
}
