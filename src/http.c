/*
 * http.c — HTTP/1.1 request parsing on llhttp (strict mode: it rejects the request-smuggling
 * shapes: both Content-Length and Transfer-Encoding, conflicting lengths, bad chunk sizes, bare
 * LF line ends, obsolete folding).
 *
 * No copies of the head: the method, target and every header name and value are spans (offset,
 * length) into the connection's read buffer, where the head stays put until the request is
 * answered. Only the body is copied, into a buffer capped at max_request_body, because it may
 * arrive chunked and the JSON reader wants it contiguous. The parser pauses after each complete
 * request so that pipelined requests are answered one at a time, in order.
 */
#include <string.h>
#include <strings.h>
#include "sluice.h"

static struct http_req *
req_of(llhttp_t *p)
{
	return p->data;
}

/* Fail the parse with a status and code of our own (a limit), not llhttp's 400. */
static int
limit(struct http_req *r, int status, const char *code, const char *msg)
{
	r->err_status = status;
	r->err_code = code;
	r->err_msg = msg;
	return HPE_USER;
}

static int
head_limit_check(struct http_req *r, const char *at, size_t len)
{
	if ((size_t)(at - r->base) + len > r->max_header)
		return limit(r, 431, "headers_too_large", "request headers are larger than max_header");
	return 0;
}

/* Trailer fields are read past, not kept; their size is held to max_header like the head's. */
static int
trailer(struct http_req *r, size_t len)
{
	r->trailer_len += len;
	if (r->trailer_len > r->max_header)
		return limit(r, 431, "headers_too_large", "request trailers are larger than max_header");
	return 0;
}

/* Extend a span if this piece continues it (llhttp hands over partial spans at buffer ends). */
static void
span_add(struct span *s, struct http_req *r, const char *at, size_t len)
{
	if (s->len == 0)
		s->off = (uint32_t)(at - r->base);
	s->len += (uint32_t)len;
}

static int body_reserve(struct http_req *r, uint64_t n);

static int
on_message_begin(llhttp_t *p)
{
	struct http_req *r = req_of(p);

	r->state = REQ_HEAD;
	return 0;
}

static int
on_url(llhttp_t *p, const char *at, size_t len)
{
	struct http_req *r = req_of(p);

	span_add(&r->target, r, at, len);
	return head_limit_check(r, at, len);
}

/* The header array is sized to the request, not to the limit: most requests have under 16
 * headers, and a connection's fixed part is what 1,000 open streams multiply. */
static int
grow_headers(struct http_req *r)
{
	int cap = r->cap_headers == 0 ? 8 : r->cap_headers * 2;
	struct http_header *h;

	if (cap > HTTP_MAX_HEADERS)
		cap = HTTP_MAX_HEADERS;
	if ((h = mem_realloc_exact(r->headers, (size_t)cap * sizeof *h)) == NULL)
		return -1;
	r->headers = h;
	r->cap_headers = cap;
	return 0;
}

static int
on_header_field(llhttp_t *p, const char *at, size_t len)
{
	struct http_req *r = req_of(p);
	struct http_header *h;

	if (r->state == REQ_BODY) /* a trailer field: never merged into the head (RFC 9110 6.5.1) */
		return trailer(r, len);
	if (r->in_value || r->nheaders == 0) {
		if (r->nheaders == HTTP_MAX_HEADERS)
			return limit(r, 431, "headers_too_large", "too many request headers");
		if (r->nheaders == r->cap_headers && grow_headers(r) != 0)
			return limit(r, 503, "overloaded", "the gateway is out of memory; retry shortly");
		h = &r->headers[r->nheaders++];
		memset(h, 0, sizeof *h);
		r->in_value = 0;
	}
	span_add(&r->headers[r->nheaders - 1].name, r, at, len);
	return head_limit_check(r, at, len);
}

static int
on_header_value(llhttp_t *p, const char *at, size_t len)
{
	struct http_req *r = req_of(p);

	if (r->state == REQ_BODY)
		return trailer(r, len);
	r->in_value = 1;
	span_add(&r->headers[r->nheaders - 1].value, r, at, len);
	return head_limit_check(r, at, len);
}

static int
on_headers_complete(llhttp_t *p)
{
	struct http_req *r = req_of(p);
	struct span v;

	/* llhttp drops a value's leading whitespace but keeps its trailing whitespace. */
	for (int i = 0; i < r->nheaders; i++) {
		struct span *s = &r->headers[i].value;
		while (s->len > 0 && (r->base[s->off + s->len - 1] == ' ' || r->base[s->off + s->len - 1] == '\t'))
			s->len--;
	}
	r->state = REQ_BODY;
	r->chunked = (p->flags & F_CHUNKED) != 0;
	r->has_length = (p->flags & F_CONTENT_LENGTH) != 0;
	r->content_length = r->has_length ? p->content_length : 0;
	if (r->has_length && r->content_length > r->max_body)
		return limit(r, 413, "request_too_large", "request body is larger than max_request_body");
	if (p->http_major == 1 && p->http_minor >= 1 && http_header(r, "expect", &v) && v.len == 12 &&
	    strncasecmp(r->base + v.off, "100-continue", 12) == 0)
		r->expect_continue = 1;
	return r->has_length && r->content_length > 0 ? body_reserve(r, r->content_length) : 0;
}

/* Room for n more body bytes: a length announced up front is reserved in one allocation. A
 * body that could never fit in the gateway's memory is 413, one that does not fit now is 503. */
static int
body_reserve(struct http_req *r, uint64_t n)
{
	switch (buf_reserve(&r->body, (size_t)n)) {
	case BUF_OK:
		return 0;
	case BUF_FULL:
		return limit(r, 413, "request_too_large", "request body is larger than max_request_body");
	default:
		if (r->body.len + n > mem_largest())
			return limit(r, 413, "request_too_large",
			    "request body is larger than this gateway's memory can ever hold");
		return limit(r, 503, "overloaded", "the gateway is out of memory; retry shortly");
	}
}

static int
on_body(llhttp_t *p, const char *at, size_t len)
{
	struct http_req *r = req_of(p);
	int rc = body_reserve(r, len);

	if (rc == 0)
		buf_append(&r->body, at, len);
	return rc;
}

static int
on_message_complete(llhttp_t *p)
{
	struct http_req *r = req_of(p);

	r->state = REQ_DONE;
	r->keep_alive = llhttp_should_keep_alive(p) && !p->upgrade; /* llhttp stops after an Upgrade/CONNECT */
	return HPE_PAUSED; /* one request at a time: pipelined ones wait their turn */
}

static const llhttp_settings_t settings = {
	.on_message_begin = on_message_begin,
	.on_url = on_url,
	.on_header_field = on_header_field,
	.on_header_value = on_header_value,
	.on_headers_complete = on_headers_complete,
	.on_body = on_body,
	.on_message_complete = on_message_complete,
};

void
http_req_init(struct http_req *r, size_t max_header, size_t max_body)
{
	memset(r, 0, sizeof *r);
	llhttp_init(&r->parser, HTTP_REQUEST, &settings);
	r->parser.data = r;
	r->max_header = max_header;
	r->max_body = max_body;
	buf_init(&r->body, max_body);
}

/* Forget the finished request (its body memory is kept for the next one on this connection). */
void
http_req_next(struct http_req *r)
{
	struct buf body = r->body;
	llhttp_t parser = r->parser;
	size_t mh = r->max_header, mb = r->max_body;

	buf_reset(&body);
	mem_free(r->headers);
	memset(r, 0, sizeof *r);
	r->parser = parser;
	r->parser.data = r;
	r->body = body;
	r->max_header = mh;
	r->max_body = mb;
	if (llhttp_get_errno(&r->parser) == HPE_PAUSED)
		llhttp_resume(&r->parser);
}

void
http_req_free(struct http_req *r)
{
	mem_free(r->headers);
	r->headers = NULL;
	r->nheaders = r->cap_headers = 0;
	buf_free(&r->body);
}

/*
 * Parse data[*pos, len). data must be the connection's read buffer, the same for the whole
 * request (spans are offsets into it). Returns REQ_DONE when a request is complete (*pos then
 * points past it), 0 when more bytes are needed (*pos == len), or -1 on a bad request with
 * err_status/err_code/err_msg set.
 */
int
http_parse(struct http_req *r, const char *data, size_t len, size_t *pos)
{
	llhttp_errno_t e;

	r->base = data;
	e = llhttp_execute(&r->parser, data + *pos, len - *pos);
	if (e == HPE_OK) {
		*pos = len;
		return 0;
	}
	if (e == HPE_PAUSED) {
		*pos = (size_t)(llhttp_get_error_pos(&r->parser) - data);
		return REQ_DONE;
	}
	if (r->err_status == 0) {
		r->err_status = 400;
		r->err_code = "bad_request";
		r->err_msg = llhttp_get_error_reason(&r->parser);
		if (r->err_msg == NULL || *r->err_msg == '\0')
			r->err_msg = llhttp_errno_name(e);
	}
	return -1;
}

/* Find a header by name (case-insensitive); the first one wins. */
int
http_header(const struct http_req *r, const char *name, struct span *out)
{
	size_t n = strlen(name);

	for (int i = 0; i < r->nheaders; i++) {
		const struct http_header *h = &r->headers[i];
		if (h->name.len == n && strncasecmp(r->base + h->name.off, name, n) == 0) {
			*out = h->value;
			return 1;
		}
	}
	return 0;
}

const char *
http_method_name(const struct http_req *r)
{
	return llhttp_method_name((llhttp_method_t)r->parser.method);
}

int
http_method_is(const struct http_req *r, const char *name)
{
	return strcmp(http_method_name(r), name) == 0;
}

/* The path without its query string. */
struct span
http_path(const struct http_req *r)
{
	struct span s = r->target;
	const char *q = memchr(r->base + s.off, '?', s.len);

	if (q != NULL)
		s.len = (uint32_t)(q - (r->base + s.off));
	return s;
}

const char *
http_status_text(int status)
{
	switch (status) {
	case 100: return "Continue";
	case 200: return "OK";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 409: return "Conflict";
	case 413: return "Content Too Large";
	case 422: return "Unprocessable Content";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	default:  return status < 400 ? "OK" : status < 500 ? "Client Error" : "Server Error";
	}
}
