/*
 * test_http.c — HTTP/1.1 request parsing: heads as spans, bodies (Content-Length and chunked),
 * keep-alive and Expect, the smuggling shapes and the limits, the same requests fed in every
 * possible split, and pipelining.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "sluice.h"
#include "unit.h"
#include "xharness.h"

#define MH 8192     /* the max_header of most rows */
#define MB (1 << 20) /* the max_body of most rows */

struct hdr {
	const char *name, *value; /* value NULL: http_header must not find the name */
};

struct row {
	const char *name;
	const char *raw;
	size_t      len;             /* 0: strlen(raw) */
	size_t      max_header, max_body;
	int         rc;              /* REQ_DONE or -1 */
	/* rc == REQ_DONE */
	const char *method, *target, *path;
	struct hdr  hdrs[4];
	const char *body;
	int         keep_alive, expect_continue;
	/* rc == -1 */
	int         err_status;
	const char *err_code;
};

/* The request line and head most rows share. */
#define GET_ROOT "GET / HTTP/1.1\r\nHost: x\r\n"

#define OK(n, raw, method, target, path, body, ka, ec, ...) \
	{ n, raw, 0, MH, MB, REQ_DONE, method, target, path, { __VA_ARGS__ }, body, ka, ec, 0, NULL }
#define BAD(n, raw, status, code) \
	{ n, raw, 0, MH, MB, -1, NULL, NULL, NULL, { { NULL, NULL } }, NULL, 0, 0, status, code }
#define BAD400(n, raw) BAD(n, raw, 400, "bad_request")

static const struct row rows[] = {
	/* Heads */
	OK("simple GET", "GET /v1/models HTTP/1.1\r\nHost: example.com\r\n\r\n",
	    "GET", "/v1/models", "/v1/models", "", 1, 0,
	    { "Host", "example.com" }, { "Content-Length", NULL }),
	OK("query string is not part of the path",
	    "GET /v1/models?limit=5&order=asc HTTP/1.1\r\nHost: h\r\n\r\n",
	    "GET", "/v1/models?limit=5&order=asc", "/v1/models", "", 1, 0, { "host", "h" }),
	OK("empty query", "GET /a? HTTP/1.1\r\nHost: h\r\n\r\n", "GET", "/a?", "/a", "", 1, 0),
	OK("header lookup is case-insensitive",
	    "GET / HTTP/1.1\r\nhOsT: x\r\nX-Request-ID: abc\r\nAUTHORIZATION: Bearer k\r\n\r\n",
	    "GET", "/", "/", "", 1, 0,
	    { "HOST", "x" }, { "x-request-id", "abc" }, { "Authorization", "Bearer k" },
	    { "X-Request", NULL }),
	OK("the first of a repeated header wins", GET_ROOT "X-A: 1\r\nX-A: 2\r\n\r\n",
	    "GET", "/", "/", "", 1, 0, { "x-a", "1" }),
	OK("leading whitespace of a value is not part of it", GET_ROOT "X-Pad: \t  v w\r\n\r\n",
	    "GET", "/", "/", "", 1, 0, { "X-Pad", "v w" }),
	OK("trailing whitespace of a value is not part of it", GET_ROOT "X-Pad: v w \t \r\n\r\n",
	    "GET", "/", "/", "", 1, 0, { "X-Pad", "v w" }),
	OK("no whitespace after the colon", GET_ROOT "X-Tight:v\r\n\r\n",
	    "GET", "/", "/", "", 1, 0, { "X-Tight", "v" }),
	OK("an empty value, then more headers",
	    "GET / HTTP/1.1\r\nX-Empty:\r\nHost: h\r\nX-Blank: \r\nX-Last: l\r\n\r\n",
	    "GET", "/", "/", "", 1, 0,
	    { "X-Empty", "" }, { "Host", "h" }, { "X-Blank", "" }, { "X-Last", "l" }),
	OK("no headers at all", "GET /x HTTP/1.1\r\n\r\n", "GET", "/x", "/x", "", 1, 0, { "Host", NULL }),
	OK("OPTIONS *", "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", "OPTIONS", "*", "*", "", 1, 0),
	OK("HEAD", "HEAD /health HTTP/1.1\r\nHost: h\r\n\r\n", "HEAD", "/health", "/health", "", 1, 0),
	OK("DELETE", "DELETE /v1/x?y HTTP/1.1\r\nHost: h\r\n\r\n", "DELETE", "/v1/x?y", "/v1/x", "", 1, 0),
	OK("UTF-8 in a header value", GET_ROOT "X-Name: J\xc3\xbcrgen\r\n\r\n",
	    "GET", "/", "/", "", 1, 0, { "x-name", "J\xc3\xbcrgen" }),

	/* Bodies */
	OK("Content-Length body",
	    "POST /v1/chat/completions HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\n"
	    "Content-Length: 15\r\n\r\n{\"model\":\"gpt\"}",
	    "POST", "/v1/chat/completions", "/v1/chat/completions", "{\"model\":\"gpt\"}", 1, 0,
	    { "content-type", "application/json" }, { "Content-Length", "15" }),
	OK("Content-Length: 0", "POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
	    "POST", "/p", "/p", "", 1, 0),
	OK("body bytes are not parsed", "PUT /p HTTP/1.1\r\nContent-Length: 18\r\n\r\nGET / HTTP/1.1\r\n\r\n",
	    "PUT", "/p", "/p", "GET / HTTP/1.1\r\n\r\n", 1, 0),
	OK("chunked body",
	    "POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
	    "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
	    "POST", "/c", "/c", "hello world", 1, 0, { "transfer-encoding", "chunked" }),
	OK("chunked, hex sizes",
	    "POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
	    "a\r\n0123456789\r\nB\r\nabcdefghijk\r\n0\r\n\r\n",
	    "POST", "/c", "/c", "0123456789abcdefghijk", 1, 0),
	OK("chunked, extensions",
	    "POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
	    "5;name=value\r\nhello\r\n1;a;b=c\r\n!\r\n3;q=\"quoted; value\"\r\nabc\r\n0;last\r\n\r\n",
	    "POST", "/c", "/c", "hello!abc", 1, 0),
	OK("chunked, trailers (not merged into the head)",
	    "POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
	    "4\r\nbody\r\n0\r\nX-Checksum: 1234\r\nX-Other: o\r\n\r\n",
	    "POST", "/c", "/c", "body", 1, 0,
	    { "Host", "h" }, { "X-Checksum", NULL }, { "X-Other", NULL }),

	/* Keep-alive and Expect */
	OK("HTTP/1.1 keeps the connection by default", "GET / HTTP/1.1\r\n\r\n", "GET", "/", "/", "", 1, 0),
	OK("HTTP/1.1, Connection: close", "GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
	    "GET", "/", "/", "", 0, 0, { "connection", "close" }),
	OK("HTTP/1.1, Connection: Close", "GET / HTTP/1.1\r\nConnection: Close\r\n\r\n",
	    "GET", "/", "/", "", 0, 0),
	OK("HTTP/1.1, Connection: keep-alive", "GET / HTTP/1.1\r\nConnection: keep-alive\r\n\r\n",
	    "GET", "/", "/", "", 1, 0),
	OK("HTTP/1.0 closes by default", "GET / HTTP/1.0\r\nHost: h\r\n\r\n", "GET", "/", "/", "", 0, 0),
	OK("HTTP/1.0, Connection: keep-alive", "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
	    "GET", "/", "/", "", 1, 0),
	OK("HTTP/1.0, Connection: Keep-Alive, body",
	    "POST /p HTTP/1.0\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\nhi",
	    "POST", "/p", "/p", "hi", 1, 0),
	OK("Expect: 100-continue",
	    "POST /p HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
	    "POST", "/p", "/p", "abc", 1, 1, { "expect", "100-continue" }),
	OK("Expect: 100-Continue (any case)",
	    "POST /p HTTP/1.1\r\nexpect: 100-Continue\r\nContent-Length: 1\r\n\r\nz",
	    "POST", "/p", "/p", "z", 1, 1),
	OK("Expect: 100-continue with trailing whitespace",
	    "POST /p HTTP/1.1\r\nExpect: 100-continue \r\nContent-Length: 1\r\n\r\nz",
	    "POST", "/p", "/p", "z", 1, 1),
	OK("Expect: 100-continue from HTTP/1.0 is ignored (RFC 9110 10.1.1)",
	    "POST /p HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nz",
	    "POST", "/p", "/p", "z", 0, 0),
	OK("Expect: something else", "POST /p HTTP/1.1\r\nExpect: 200-ok\r\nContent-Length: 1\r\n\r\nz",
	    "POST", "/p", "/p", "z", 1, 0),

	/* Request smuggling and malformed requests: 400 */
	BAD400("Content-Length and Transfer-Encoding: chunked",
	    "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
	BAD400("Transfer-Encoding: chunked, then Content-Length",
	    "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"),
	BAD400("two different Content-Length values",
	    "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"),
	BAD400("Content-Length list", "POST / HTTP/1.1\r\nContent-Length: 3, 4\r\n\r\nabcd"),
	BAD400("Content-Length not a number", "POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n"),
	BAD400("Content-Length negative", "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"),
	BAD400("Content-Length overflows", "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n"),
	BAD400("Transfer-Encoding other than chunked",
	    "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\nabc"),
	BAD400("chunked not last", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n"),
	BAD400("bad chunk size", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"),
	BAD400("chunk shorter than its size",
	    "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhell\r\n0\r\n\r\n"),
	BAD400("bare LF line endings", "GET / HTTP/1.1\nHost: x\n\n"),
	BAD400("bare LF after a header", "GET / HTTP/1.1\r\nHost: x\n\r\n"),
	BAD400("bare CR", "GET / HTTP/1.1\rHost: x\r\n\r\n"),
	BAD400("obs-fold continuation line", "GET / HTTP/1.1\r\nX-A: a\r\n b\r\nHost: x\r\n\r\n"),
	BAD400("obs-fold with a tab", "GET / HTTP/1.1\r\nX-A: a\r\n\tb\r\n\r\n"),
	BAD400("invalid method token", "G(T / HTTP/1.1\r\nHost: x\r\n\r\n"),
	BAD400("lower-case method", "get / HTTP/1.1\r\nHost: x\r\n\r\n"),
	BAD400("space before the colon", "GET / HTTP/1.1\r\nHost : x\r\n\r\n"),
	BAD400("empty header name", "GET / HTTP/1.1\r\n: x\r\n\r\n"),
	BAD400("header line without a colon", "GET / HTTP/1.1\r\nHost x\r\n\r\n"),
	BAD400("bad version", "GET / HTTP/1.x\r\nHost: x\r\n\r\n"),
	BAD400("junk where a request should start", "\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03"),
	BAD400("a space in the target", "GET /a b HTTP/1.1\r\nHost: x\r\n\r\n"),
	{ "NUL byte in a header value", GET_ROOT "X-A: a\0b\r\n\r\n", sizeof(GET_ROOT "X-A: a\0b\r\n\r\n") - 1,
	    MH, MB, -1, NULL, NULL, NULL, { { NULL, NULL } }, NULL, 0, 0, 400, "bad_request" },
	{ "NUL byte in the target", "GET /a\0b HTTP/1.1\r\n\r\n", sizeof("GET /a\0b HTTP/1.1\r\n\r\n") - 1,
	    MH, MB, -1, NULL, NULL, NULL, { { NULL, NULL } }, NULL, 0, 0, 400, "bad_request" },

	/* Limits */
	{ "Content-Length over max_body (known at the head)",
	    "POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n", 0, MH, 10, -1,
	    NULL, NULL, NULL, { { NULL, NULL } }, NULL, 0, 0, 413, "request_too_large" },
	{ "Content-Length huge (known at the head)",
	    "POST / HTTP/1.1\r\nContent-Length: 1000000000000\r\n\r\n", 0, MH, MB, -1,
	    NULL, NULL, NULL, { { NULL, NULL } }, NULL, 0, 0, 413, "request_too_large" },
	{ "chunked body grows past max_body",
	    "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
	    0, MH, 10, -1, NULL, NULL, NULL, { { NULL, NULL } }, NULL, 0, 0, 413, "request_too_large" },
	{ "chunked body exactly max_body",
	    "POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n",
	    0, MH, 10, REQ_DONE, "POST", "/c", "/c", { { NULL, NULL } }, "helloworld", 1, 0, 0, NULL },
	{ "Content-Length body exactly max_body", "POST /p HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789",
	    0, MH, 10, REQ_DONE, "POST", "/p", "/p", { { NULL, NULL } }, "0123456789", 1, 0, 0, NULL },
	{ "head over max_header",
	    "GET /v1/models HTTP/1.1\r\nHost: example.com\r\nUser-Agent: a-rather-long-user-agent/1.0\r\n\r\n",
	    0, 48, MB, -1, NULL, NULL, NULL, { { NULL, NULL } }, NULL, 0, 0, 431, "headers_too_large" },
	{ "target over max_header", "GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\n\r\n",
	    0, 32, MB, -1, NULL, NULL, NULL, { { NULL, NULL } }, NULL, 0, 0, 431, "headers_too_large" },
	{ "head exactly max_header", "GET /v1/models HTTP/1.1\r\nHost: example.com\r\n\r\n",
	    0, 46, MB, REQ_DONE, "GET", "/v1/models", "/v1/models", { { "Host", "example.com" } }, "", 1, 0,
	    0, NULL },
	{ "a body larger than max_header is not head",
	    "POST /p HTTP/1.1\r\nContent-Length: 40\r\n\r\n0123456789012345678901234567890123456789",
	    0, 48, MB, REQ_DONE, "POST", "/p", "/p", { { NULL, NULL } },
	    "0123456789012345678901234567890123456789", 1, 0, 0, NULL },
	{ "chunked: trailers larger than max_header",
	    "POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n"
	    "X-Trailer: 0123456789012345678901234567890123456789012345678901234567890123456789\r\n\r\n",
	    0, 64, MB, -1, NULL, NULL, NULL, { { NULL, NULL } }, NULL, 0, 0, 431, "headers_too_large" },
	{ "chunked: trailers after a body larger than max_header",
	    "POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
	    "28\r\n0123456789012345678901234567890123456789\r\n0\r\nX-T: 1\r\n\r\n",
	    0, 56, MB, REQ_DONE, "POST", "/p", "/p", { { NULL, NULL } },
	    "0123456789012345678901234567890123456789", 1, 0, 0, NULL },
};

/* Rows built at run time (the suite fills raw and len). */
enum { GEN_MAX_HEADERS, GEN_TOO_MANY, GEN_PAD, NGEN };
static struct row gen[NGEN] = {
	[GEN_MAX_HEADERS] = { "HTTP_MAX_HEADERS headers", NULL, 0, 1 << 16, MB, REQ_DONE,
	    "GET", "/", "/", { { "X-H1", "1" }, { "x-h9", "9" }, { "X-H33", "33" }, { "x-h100", "100" } }, "", 1, 0, 0, NULL },
	[GEN_TOO_MANY] = { "HTTP_MAX_HEADERS + 1 headers", NULL, 0, 1 << 16, MB, -1,
	    NULL, NULL, NULL, { { NULL, NULL } }, NULL, 0, 0, 431, "headers_too_large" },
	[GEN_PAD] = { "whitespace before a value counts toward max_header", NULL, 0, 64, MB, -1,
	    NULL, NULL, NULL, { { NULL, NULL } }, NULL, 0, 0, 431, "headers_too_large" },
};

static size_t
row_len(const struct row *w)
{
	return w->len ? w->len : strlen(w->raw);
}

static int
span_is(const struct http_req *r, struct span s, const char *want)
{
	return s.len == strlen(want) && memcmp(r->base + s.off, want, s.len) == 0;
}

/* The span as text, for failure messages. */
static const char *
span_str(const struct http_req *r, struct span s)
{
	static char out[4][96];
	static int k;
	char *o = out[k++ % 4];

	snprintf(o, sizeof out[0], "%.*s", s.len > 80 ? 80 : (int)s.len, r->base + s.off);
	return o;
}

/*
 * Does the parse (rc, *pos after it, len bytes given) match the row? On a mismatch, why says
 * how, and 0 is returned.
 */
static int
matches(const struct row *w, const struct http_req *r, int rc, size_t pos, size_t len,
    char *why, size_t whylen)
{
#define MISMATCH(...) do { snprintf(why, whylen, __VA_ARGS__); return 0; } while (0)
	if (rc != w->rc)
		MISMATCH("rc %d, want %d (err %d %s: %s)", rc, w->rc, r->err_status,
		    r->err_code ? r->err_code : "-", r->err_msg ? r->err_msg : "-");
	if (rc < 0) {
		if (r->err_status != w->err_status)
			MISMATCH("err_status %d, want %d", r->err_status, w->err_status);
		if (r->err_code == NULL || strcmp(r->err_code, w->err_code) != 0)
			MISMATCH("err_code %s, want %s", r->err_code ? r->err_code : "NULL", w->err_code);
		if (r->err_msg == NULL || r->err_msg[0] == '\0')
			MISMATCH("no err_msg");
		return 1;
	}
	if (pos != len)
		MISMATCH("pos %zu, want %zu", pos, len);
	if (r->state != REQ_DONE)
		MISMATCH("state %d", r->state);
	if (strcmp(http_method_name(r), w->method) != 0 || !http_method_is(r, w->method))
		MISMATCH("method %s, want %s", http_method_name(r), w->method);
	if (!span_is(r, r->target, w->target))
		MISMATCH("target '%s', want '%s'", span_str(r, r->target), w->target);
	if (!span_is(r, http_path(r), w->path))
		MISMATCH("path '%s', want '%s'", span_str(r, http_path(r)), w->path);
	for (size_t i = 0; i < NELEM(w->hdrs) && w->hdrs[i].name; i++) {
		const struct hdr *h = &w->hdrs[i];
		struct span v = { 0, 0 };
		int found = http_header(r, h->name, &v);

		if (h->value == NULL && found)
			MISMATCH("header %s found ('%s'), want none", h->name, span_str(r, v));
		if (h->value != NULL && !found)
			MISMATCH("header %s not found", h->name);
		if (h->value != NULL && !span_is(r, v, h->value))
			MISMATCH("header %s '%s', want '%s'", h->name, span_str(r, v), h->value);
	}
	if (w->body != NULL && (r->body.len != strlen(w->body) ||
	    (r->body.len > 0 && memcmp(r->body.data, w->body, r->body.len) != 0)))
		MISMATCH("body %zu bytes '%.*s', want '%s'", r->body.len,
		    r->body.len > 80 ? 80 : (int)r->body.len, r->body.data ? r->body.data : "", w->body);
	if (r->keep_alive != w->keep_alive)
		MISMATCH("keep_alive %d, want %d", r->keep_alive, w->keep_alive);
	if (r->expect_continue != w->expect_continue)
		MISMATCH("expect_continue %d, want %d", r->expect_continue, w->expect_continue);
	return 1;
#undef MISMATCH
}

/*
 * Feed raw[0, len) into one growing buffer: first the bytes up to each cut, calling http_parse
 * after each append, as a connection would. cuts[] are increasing offsets inside (0, len).
 * Returns the rc of the last parse; *posp is its pos.
 */
static int
feed(struct http_req *r, char *store, const char *raw, size_t len, const size_t *cuts, size_t ncut,
    size_t *posp, char *why, size_t whylen)
{
	size_t have = 0, pos = 0;
	int rc = 0;

	for (size_t k = 0; k <= ncut; k++) {
		size_t upto = k < ncut ? cuts[k] : len;

		memcpy(store + have, raw + have, upto - have);
		have = upto;
		rc = http_parse(r, store, have, &pos);
		if (rc != 0)
			break;
		if (pos != have) {
			snprintf(why, whylen, "needs more bytes at %zu, but pos %zu", have, pos);
			*posp = pos;
			return -2;
		}
	}
	*posp = pos;
	return rc;
}

/* One row: parsed at once, then in two pieces cut at every byte, then a byte at a time. */
static void
run_row(const struct row *w)
{
	size_t len = row_len(w), pos, ncut;
	size_t *cuts = malloc(len * sizeof *cuts + 1);
	char *store = malloc(len);
	struct http_req r;
	char why[512];
	int rc;

	if (!CHECK(cuts != NULL && store != NULL))
		goto out;

	unit_case("http_parse: %s", w->name);
	http_req_init(&r, w->max_header, w->max_body);
	why[0] = '\0';
	rc = feed(&r, store, w->raw, len, NULL, 0, &pos, why, sizeof why);
	CHECKF(rc != -2 && matches(w, &r, rc, pos, len, why, sizeof why), "%s", why);
	http_req_free(&r);

	unit_case("http_parse in two pieces, every cut: %s", w->name);
	for (size_t cut = 1; cut < len; cut++) {
		http_req_init(&r, w->max_header, w->max_body);
		rc = feed(&r, store, w->raw, len, &cut, 1, &pos, why, sizeof why);
		if (!CHECKF(rc != -2 && matches(w, &r, rc, pos, len, why, sizeof why),
		    "cut at %zu: %s", cut, why)) {
			http_req_free(&r);
			break;
		}
		http_req_free(&r);
	}

	unit_case("http_parse a byte at a time: %s", w->name);
	ncut = len - 1;
	for (size_t k = 0; k < ncut; k++)
		cuts[k] = k + 1;
	http_req_init(&r, w->max_header, w->max_body);
	rc = feed(&r, store, w->raw, len, cuts, ncut, &pos, why, sizeof why);
	CHECKF(rc != -2 && matches(w, &r, rc, pos, len, why, sizeof why), "%s", why);
	http_req_free(&r);
out:
	free(cuts);
	free(store);
}

/* Build the rows that are too long to write out. */
static char *
build_rows(void)
{
	size_t cap = 64 << 10, n;
	char *all = malloc(3 * cap), *p;

	if (all == NULL)
		return NULL;
	/* HTTP_MAX_HEADERS and one more */
	p = all;
	n = (size_t)sprintf(p, "GET / HTTP/1.1\r\n");
	for (int i = 1; i <= HTTP_MAX_HEADERS; i++)
		n += (size_t)sprintf(p + n, "X-H%d: %d\r\n", i, i);
	n += (size_t)sprintf(p + n, "\r\n");
	gen[GEN_MAX_HEADERS].raw = p;
	gen[GEN_MAX_HEADERS].len = n;

	p = all + cap;
	n = (size_t)sprintf(p, "GET / HTTP/1.1\r\n");
	for (int i = 0; i <= HTTP_MAX_HEADERS; i++)
		n += (size_t)sprintf(p + n, "X-H%d: %d\r\n", i, i);
	n += (size_t)sprintf(p + n, "\r\n");
	gen[GEN_TOO_MANY].raw = p;
	gen[GEN_TOO_MANY].len = n;

	/* A small head padded past max_header with whitespace before a value */
	p = all + 2 * cap;
	n = (size_t)sprintf(p, "GET / HTTP/1.1\r\nX-Pad:");
	memset(p + n, ' ', 200);
	n += 200;
	n += (size_t)sprintf(p + n, "v\r\n\r\n");
	gen[GEN_PAD].raw = p;
	gen[GEN_PAD].len = n;
	return all;
}

/* A body of max_body bytes: big, so it is checked once, in a handful of splits. */
static void
test_max_body(void)
{
	static const char head[] = "POST /p HTTP/1.1\r\nContent-Length: 65536\r\n\r\n";
	size_t blen = 65536, len = sizeof head - 1 + blen, pos;
	char *raw = malloc(len), *store = malloc(len), why[512];
	static const size_t cutsets[][3] = { { 0 }, { 10, 0 }, { 44, 0 }, { 45, 30000, 0 } };
	struct http_req r;
	struct row w = { "a body of exactly max_body bytes", NULL, 0, MH, 65536, REQ_DONE,
	    "POST", "/p", "/p", { { NULL, NULL } }, NULL, 1, 0, 0, NULL };

	unit_case("http_parse: %s", w.name);
	if (!CHECK(raw != NULL && store != NULL))
		goto out;
	memcpy(raw, head, sizeof head - 1);
	for (size_t i = 0; i < blen; i++)
		raw[sizeof head - 1 + i] = (char)('a' + i % 26);
	w.raw = raw;
	w.len = len;
	for (size_t s = 0; s < NELEM(cutsets); s++) {
		size_t ncut = 0;
		int rc;

		while (ncut < 3 && cutsets[s][ncut])
			ncut++;
		http_req_init(&r, w.max_header, w.max_body);
		rc = feed(&r, store, raw, len, cutsets[s], ncut, &pos, why, sizeof why);
		if (CHECKF(rc != -2 && matches(&w, &r, rc, pos, len, why, sizeof why), "cuts %zu: %s", s, why))
			CHECK(r.body.len == blen && memcmp(r.body.data, raw + sizeof head - 1, blen) == 0);
		http_req_free(&r);
	}
	/* One byte more is refused at the head, before any body byte arrives. */
	http_req_init(&r, MH, 65535);
	pos = 0;
	memcpy(store, raw, sizeof head - 1);
	CHECK(http_parse(&r, store, sizeof head - 1, &pos) == -1);
	CHECK(r.err_status == 413);
	http_req_free(&r);
out:
	free(raw);
	free(store);
}

/* A body the memory can never hold is 413 (retrying cannot help); one that does not fit now,
 * because memory is in use, is 503 (retry shortly). Nothing leaks either way. */
static void
oom_case(const char *name, size_t blen, size_t blocker, int want_status, const char *want_code)
{
	char head[96];
	int hlen = snprintf(head, sizeof head, "POST /p HTTP/1.1\r\nContent-Length: %zu\r\n\r\n", blen);
	size_t len = (size_t)hlen + blen, pos = 0;
	char *store = malloc(len);
	void *block = blocker ? mem_alloc(blocker) : NULL;
	struct http_req r;
	struct mem_stats st;
	int rc;

	unit_case("http_parse: %s", name);
	if (!CHECK(store != NULL) || !CHECK(blocker == 0 || block != NULL))
		return;
	memcpy(store, head, (size_t)hlen);
	memset(store + hlen, 'a', blen);
	http_req_init(&r, MH, 64 << 20);
	rc = http_parse(&r, store, len, &pos);
	CHECKF(rc == -1 && r.err_status == want_status && r.err_code && strcmp(r.err_code, want_code) == 0,
	    "rc %d, err %d %s", rc, r.err_status, r.err_code ? r.err_code : "-");
	http_req_free(&r);
	mem_free(block);
	mem_get_stats(&st);
	CHECKF(st.in_use == 0, "%zu bytes still in use", st.in_use);
	free(store);
}

/* Every byte of mem taken, in runs from 1 MiB down to 16 bytes, chained through their first
 * word; mem_release_chain gives them back. */
static void *
mem_fill(void)
{
	void *chain = NULL, *p;

	for (size_t n = 1u << 20; n >= sizeof(void *) * 2; n /= 2)
		while ((p = mem_alloc_exact(n)) != NULL) {
			*(void **)p = chain;
			chain = p;
		}
	return chain;
}

static void
mem_release_chain(void *chain)
{
	while (chain != NULL) {
		void *next = *(void **)chain;

		mem_free(chain);
		chain = next;
	}
}

/* The header array grows as headers arrive: with no memory for it the request is 503. */
static void
test_headers_out_of_memory(void)
{
	static const char raw[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
	char store[sizeof raw];
	struct http_req r;
	struct mem_stats st;
	size_t pos = 0;
	void *chain;
	int rc;

	unit_case("http_parse: no memory for the header array is 503 overloaded");
	memcpy(store, raw, sizeof raw);
	http_req_init(&r, MH, MB);
	chain = mem_fill();
	rc = http_parse(&r, store, sizeof raw - 1, &pos);
	CHECKF(rc == -1 && r.err_status == 503 && r.err_code && strcmp(r.err_code, "overloaded") == 0,
	    "rc %d, err %d %s", rc, r.err_status, r.err_code ? r.err_code : "-");
	mem_release_chain(chain);
	http_req_free(&r);
	mem_get_stats(&st);
	CHECKF(st.in_use == 0, "%zu bytes still in use", st.in_use);
}

static void
test_out_of_memory(void)
{
	/* mem is 16 MiB: its largest run is 8 MiB. */
	oom_case("a body larger than the memory can ever hold is 413", 20u << 20, 0, 413, "request_too_large");
	oom_case("a body larger than the memory left is 503 overloaded", 6u << 20, 8u << 20, 503, "overloaded");
	test_headers_out_of_memory();
}

/*
 * Pipelining: a then b in one buffer. a completes with *pos at b's start; after http_req_next
 * and dropping a's bytes from the front, b parses. Done at once and a byte at a time.
 */
static void
pipeline(const struct row *a, const struct row *b)
{
	size_t alen = row_len(a), blen = row_len(b), len = alen + blen;
	char *raw = malloc(len), *store = malloc(len), why[512];
	struct http_req r;

	if (!CHECK(raw != NULL && store != NULL))
		goto out;
	memcpy(raw, a->raw, alen);
	memcpy(raw + alen, b->raw, blen);

	/* At once */
	unit_case("pipeline at once: %s, then %s", a->name, b->name);
	{
		size_t have = len, pos = 0;
		int rc;

		memcpy(store, raw, len);
		http_req_init(&r, MH, MB);
		rc = http_parse(&r, store, have, &pos);
		CHECKF(rc == REQ_DONE && pos == alen, "first: rc %d, pos %zu, want %zu", rc, pos, alen);
		CHECKF(matches(a, &r, rc, pos, alen, why, sizeof why), "first: %s", why);
		http_req_next(&r);
		CHECK(r.state == REQ_IDLE && r.nheaders == 0 && r.body.len == 0 && r.err_status == 0);
		CHECK(r.keep_alive == 0 && r.expect_continue == 0 && r.target.len == 0);
		memmove(store, store + pos, have - pos);
		have -= pos;
		pos = 0;
		rc = http_parse(&r, store, have, &pos);
		CHECKF(matches(b, &r, rc, pos, have, why, sizeof why), "second: %s", why);
		http_req_free(&r);
	}

	/* A byte at a time, as a connection reading slowly would */
	unit_case("pipeline a byte at a time: %s, then %s", a->name, b->name);
	{
		size_t have = 0, pos = 0, next = 0, base = 0;
		int rc = 0, done = 0;

		http_req_init(&r, MH, MB);
		while (next < len && rc == 0) {
			store[have++] = raw[next++];
			rc = http_parse(&r, store, have, &pos);
			if (rc == REQ_DONE && done == 0) {
				CHECKF(base + pos == alen && matches(a, &r, rc, pos, have, why, sizeof why),
				    "first at %zu: %s", next, why);
				http_req_next(&r);
				memmove(store, store + pos, have - pos);
				have -= pos;
				base += pos;
				pos = 0;
				done = 1;
				rc = 0;
			}
		}
		CHECKF(done == 1, "first never completed (rc %d)", rc);
		CHECKF(matches(b, &r, rc, pos, have, why, sizeof why), "second: %s", why);
		http_req_free(&r);
	}
out:
	free(raw);
	free(store);
}

static void
test_pipelining(void)
{
	static const struct row get = OK("GET /first", "GET /first HTTP/1.1\r\nHost: one\r\n\r\n",
	    "GET", "/first", "/first", "", 1, 0, { "Host", "one" });
	static const struct row post = OK("POST /second",
	    "POST /second?q HTTP/1.1\r\nHost: two\r\nContent-Length: 3\r\n\r\nabc",
	    "POST", "/second?q", "/second", "abc", 1, 0, { "Host", "two" });
	static const struct row chunk = OK("chunked POST /third",
	    "POST /third HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: t\r\n\r\n",
	    "POST", "/third", "/third", "abc", 1, 0);

	pipeline(&get, &post);
	pipeline(&post, &get);
	pipeline(&chunk, &post);
	pipeline(&post, &chunk);
	pipeline(&get, &get);
	/* Every valid row after a GET, and after every keep-alive row a GET. */
	for (size_t i = 0; i < NELEM(rows); i++) {
		if (rows[i].rc != REQ_DONE || rows[i].max_header != MH || rows[i].max_body != MB)
			continue;
		pipeline(&get, &rows[i]);
		if (rows[i].keep_alive)
			pipeline(&rows[i], &get);
	}

	/*
	 * Upgrade and CONNECT: the gateway never switches protocols, so it answers them as plain
	 * requests. If it says the connection may be kept, the next request on it must parse.
	 */
	{
		static const struct {
			const char *name, *raw;
		} up[] = {
			{ "Upgrade: h2c (curl --http2 on http://)",
			    "GET /v1/models HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\n"
			    "Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n" },
			{ "Upgrade: h2c with a body",
			    "POST /p HTTP/1.1\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
			    "HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\nContent-Length: 2\r\n\r\nhi" },
			{ "Upgrade: websocket", "GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n" },
			{ "CONNECT", "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n" },
		};
		static const char next[] = "GET /next HTTP/1.1\r\n\r\n";

		for (size_t i = 0; i < NELEM(up); i++) {
			size_t alen = strlen(up[i].raw), have = alen + sizeof next - 1, pos = 0;
			char *store = malloc(have);
			struct http_req r;
			int rc;

			unit_case("pipeline after %s", up[i].name);
			if (!CHECK(store != NULL))
				continue;
			memcpy(store, up[i].raw, alen);
			memcpy(store + alen, next, sizeof next - 1);
			http_req_init(&r, MH, MB);
			rc = http_parse(&r, store, have, &pos);
			CHECKF(rc == REQ_DONE && pos == alen, "first: rc %d, pos %zu, want %zu", rc, pos, alen);
			if (rc == REQ_DONE && r.keep_alive) {
				http_req_next(&r);
				memmove(store, store + pos, have - pos);
				have -= pos;
				pos = 0;
				rc = http_parse(&r, store, have, &pos);
				CHECKF(rc == REQ_DONE && span_is(&r, r.target, "/next"),
				    "keep_alive was 1, but the next request: rc %d, err %d %s: %s", rc,
				    r.err_status, r.err_code ? r.err_code : "-", r.err_msg ? r.err_msg : "-");
			}
			http_req_free(&r);
			free(store);
		}
	}

	/* Three in one buffer: each one's pos is the next one's start. */
	unit_case("pipeline: three requests in one read");
	{
		static const char three[] = "GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\nGET /3 HTTP/1.1\r\n\r\n";
		static const char *const want[] = { "/1", "/2", "/3" };
		char store[sizeof three];
		size_t have = sizeof three - 1, pos = 0;
		struct http_req r;

		memcpy(store, three, sizeof three);
		http_req_init(&r, MH, MB);
		for (int k = 0; k < 3; k++) {
			int rc = http_parse(&r, store, have, &pos);

			CHECKF(rc == REQ_DONE && pos == 19 && span_is(&r, r.target, want[k]),
			    "request %d: rc %d, pos %zu, target '%s'", k + 1, rc, pos, span_str(&r, r.target));
			http_req_next(&r);
			memmove(store, store + pos, have - pos);
			have -= pos;
			pos = 0;
		}
		CHECK(have == 0);
		CHECK(http_parse(&r, store, have, &pos) == 0 && pos == 0 && r.state == REQ_IDLE);
		http_req_free(&r);
	}
}

static void
test_status_text(void)
{
	static const struct {
		int status;
		const char *text;
	} rows_st[] = {
		{ 100, "Continue" },
		{ 200, "OK" },
		{ 400, "Bad Request" },
		{ 401, "Unauthorized" },
		{ 404, "Not Found" },
		{ 413, "Content Too Large" },
		{ 429, "Too Many Requests" },
		{ 431, "Request Header Fields Too Large" },
		{ 502, "Bad Gateway" },
		{ 503, "Service Unavailable" },
		{ 504, "Gateway Timeout" },
		{ 299, "OK" },
		{ 418, "Client Error" },
		{ 599, "Server Error" },
	};

	for (size_t i = 0; i < NELEM(rows_st); i++) {
		const char *t = http_status_text(rows_st[i].status);

		unit_case("http_status_text(%d)", rows_st[i].status);
		CHECKF(t != NULL && strcmp(t, rows_st[i].text) == 0, "'%s', want '%s'", t ? t : "NULL",
		    rows_st[i].text);
	}
}

static void
test_span_eq(void)
{
	static const char base[] = "POST /v1/chat HTTP/1.1";
	static const struct {
		struct span sp;
		int eq_post, eq_chat, eq_empty;
	} rows_sp[] = {
		{ { 0, 4 },  1, 0, 0 },
		{ { 0, 3 },  0, 0, 0 },  /* a prefix is not equal */
		{ { 0, 5 },  0, 0, 0 },  /* nor a longer span */
		{ { 9, 4 },  0, 1, 0 },
		{ { 13, 0 }, 0, 0, 1 },
	};

	for (size_t i = 0; i < NELEM(rows_sp); i++) {
		unit_case("SPAN_EQ {%u, %u}", rows_sp[i].sp.off, rows_sp[i].sp.len);
		CHECK(SPAN_EQ(base, rows_sp[i].sp, "POST") == rows_sp[i].eq_post);
		CHECK(SPAN_EQ(base, rows_sp[i].sp, "chat") == rows_sp[i].eq_chat);
		CHECK(SPAN_EQ(base, rows_sp[i].sp, "") == rows_sp[i].eq_empty);
	}
}

/* Requests mutated at random (bytes changed, CR, LF, ':' or a space put in, ranges cut out or
 * repeated, lines repeated, the end cut off), fed whole, in two pieces or a few bytes at a time,
 * 4,000 times: each parse ends needing more bytes, or with one request whose spans all lie in
 * what was read and which never has both a length and chunked framing, or with an error status
 * of 400, 413, 431 or 503 and its code. Pipelined requests are parsed one after another. */
static int
span_in(struct span s, size_t end)
{
	return (size_t)s.off + s.len <= end;
}

static const char *
bad_request_result(const struct http_req *r, int rc, size_t pos, size_t have)
{
	if (pos > have)
		return "pos past the bytes read";
	if (rc == -1)
		return (r->err_status == 400 || r->err_status == 413 || r->err_status == 431 || r->err_status == 503) &&
		    r->err_code != NULL && r->err_msg != NULL ? NULL : "an error without its status, code or message";
	if (rc != REQ_DONE)
		return rc == 0 ? NULL : "an unknown result";
	if (!span_in(r->target, pos) || r->target.len == 0)
		return "a target outside the request";
	for (int i = 0; i < r->nheaders; i++)
		if (!span_in(r->headers[i].name, pos) || !span_in(r->headers[i].value, pos))
			return "a header outside the request";
	if (r->chunked && r->has_length)
		return "both Content-Length and chunked (a smuggling shape)";
	if (r->body.len > r->max_body || (r->has_length && r->body.len != r->content_length))
		return "a body not as framed";
	return NULL;
}

/* One mutation of buf[0..*n), room for cap bytes. */
static void
mutate_request(char *buf, size_t *n, size_t cap, uint64_t *rng)
{
	static const char inserts[] = "\r\n: \t0-;";
	size_t at, len;

	*rng = *rng * 6364136223846793005ull + 1442695040888963407ull;
	at = (size_t)(*rng >> 33) % *n;
	len = 1 + (size_t)(*rng >> 20) % 12;
	len = len > *n - at ? *n - at : len;
	switch (*rng >> 61) {
	case 0: /* a byte changed */
		buf[at] = (char)(*rng >> 8);
		break;
	case 1: /* a byte made CR, LF, ':', a space, a tab, '0', '-' or ';' */
		buf[at] = inserts[(*rng >> 12) % (sizeof inserts - 1)];
		break;
	case 2: /* a CR or LF put in */
		if (*n < cap) {
			memmove(buf + at + 1, buf + at, *n - at);
			buf[at] = inserts[(*rng >> 12) % 2];
			++*n;
		}
		break;
	case 3: /* bytes cut out */
		memmove(buf + at, buf + at + len, *n - at - len);
		*n -= len;
		break;
	case 4: /* bytes repeated */
		if (*n + len <= cap) {
			memmove(buf + at + len, buf + at, *n - at);
			*n += len;
		}
		break;
	case 5: /* the end cut off */
		*n = at;
		break;
	default: /* a byte changed to ASCII */
		buf[at] = (char)((*rng >> 8) & 0x7f);
		break;
	}
}

static void
test_mutated(void)
{
	static const char *const bases[] = {
		"GET /healthz HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n",
		"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
		"Content-Length: 16\r\nAuthorization: Bearer k\r\n\r\n{\"model\":\"m\"}  ",
		"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
		"5\r\n{\"a\":\r\n3;ext=1\r\n1}\n\r\n0\r\nX-Trailer: t\r\n\r\n",
		"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"
		"GET /c HTTP/1.0\r\n\r\n",
	};
	uint64_t rng = 0xC0FFEE123456789ull;
	char *buf = malloc(4096), *store = malloc(4096);
	int bad = 0, done = 0, refused = 0;

	unit_case("http_parse: 4,000 mutated requests end in a request, an error, or a need for more");
	if (buf == NULL || store == NULL)
		abort();
	for (int k = 0; k < 4000 && !bad; k++) {
		const char *base = bases[k % NELEM(bases)], *why = NULL;
		size_t n = strlen(base), have = 0, pos = 0, step;
		int muts = 1 + k % 3, rc = 0, requests = 0;
		struct http_req r;

		memcpy(buf, base, n);
		for (int m = 0; m < muts && n > 0; m++)
			mutate_request(buf, &n, 4000, &rng);
		step = k % 3 == 0 ? n : k % 3 == 1 ? 1 + (size_t)(rng >> 40) % 7 : (n + 1) / 2;
		http_req_init(&r, 2048, 4096);
		while (have < n && !why) {
			size_t more = step < n - have ? step : n - have;

			memcpy(store + have, buf + have, more);
			have += more;
			for (;;) {
				rc = http_parse(&r, store, have, &pos);
				if ((why = bad_request_result(&r, rc, pos, have)) != NULL || rc != REQ_DONE)
					break;
				done++;
				if (++requests > 8) {
					why = "more requests than were sent";
					break;
				}
				http_req_next(&r);
			}
			if (rc == -1) {
				refused++;
				break;
			}
		}
		if (why != NULL)
			bad = !CHECKF(0, "mutation %d (step %zu): %s (rc %d, pos %zu of %zu): %s", k, step, why, rc, pos, have,
			    xh_printable(buf, n));
		http_req_free(&r);
	}
	free(buf);
	free(store);
	CHECKF(bad || (done > 1000 && refused > 1000), "%d requests parsed, %d refused: the mutations should give both",
	    done, refused);
}

void
suite_http(void)
{
	char err[256];
	struct mem_stats st;
	char *gen_store;

	unit_case("mem_init");
	if (!CHECKF(mem_init(16 << 20, err, sizeof err) == 0, "mem_init: %s", err))
		return;
	gen_store = build_rows();
	if (!CHECK(gen_store != NULL)) {
		mem_shutdown();
		return;
	}
	for (size_t i = 0; i < NELEM(rows); i++)
		run_row(&rows[i]);
	for (size_t i = 0; i < NGEN; i++)
		if (gen[i].raw != NULL)
			run_row(&gen[i]);
	test_max_body();
	test_out_of_memory();
	test_pipelining();
	test_status_text();
	test_span_eq();
	test_mutated();

	unit_case("no memory left in use");
	mem_get_stats(&st);
	CHECKF(st.in_use == 0, "%zu bytes in use", st.in_use);
	free(gen_store);
	mem_shutdown();
}
