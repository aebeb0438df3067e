/* xharness.c — see xharness.h. */
#include <stdlib.h>
#include <string.h>
#include "sluice.h"
#include "unit.h"
#include "xharness.h"

/* ---- the capture sink ---- */

static void
cap_put(struct capture *c, const char *s, size_t n)
{
	if (c->len + n + 1 > c->cap) {
		c->cap = (c->len + n + 1) * 2;
		if ((c->text = realloc(c->text, c->cap)) == NULL)
			abort();
	}
	memcpy(c->text + c->len, s, n);
	c->len += n;
	c->text[c->len] = '\0';
}

static int
cap_head(void *o, int status, const char *ctype, const char *headers, int64_t len)
{
	struct capture *c = o;

	c->status = status;
	snprintf(c->ctype, sizeof c->ctype, "%s", ctype);
	snprintf(c->headers, sizeof c->headers, "%s", headers ? headers : "");
	(void)len;
	return 0;
}

static int
cap_write(void *o, const struct iovec *parts, int nparts)
{
	for (int i = 0; i < nparts; i++)
		cap_put(o, parts[i].iov_base, parts[i].iov_len);
	return 0;
}

static int
cap_borrow(void *o, const char *p, size_t n)
{
	cap_put(o, p, n);
	return 0;
}

static void
cap_end(void *o)
{
	((struct capture *)o)->ends++;
}

static size_t
cap_queued(const void *o)
{
	(void)o;
	return 0;
}

static const struct sink_ops cap_ops = { cap_head, cap_write, cap_borrow, cap_end, cap_queued };

/* ---- the exchange ---- */

/* The client's request as api.c reads it. */
static int
read_request(struct xh *h)
{
	struct chat_req *r = &h->req;
	struct json *j = &r->j;
	int t;

	r->body = h->body;
	r->len = strlen(h->body);
	if (json_parse(j, &h->arena, r->body, r->len) < 0 || j->tok[0].type != JSMN_OBJECT)
		return -1;
	if ((r->model = json_find(j, 0, "model")) < 0)
		return -1;
	t = json_find(j, 0, "stream");
	r->stream = t >= 0 && json_eq_literal(j, t, "true");
	r->stream_options = json_find(j, 0, "stream_options");
	if (r->stream_options >= 0 && j->tok[r->stream_options].type != JSMN_OBJECT)
		r->stream_options = -1;
	t = json_find(j, r->stream_options, "include_usage");
	r->include_usage = r->stream && t >= 0 && json_eq_literal(j, t, "true");
	return 0;
}

int
xh_setup(struct xh *h, const struct adapter *a, enum provider_type type, const char *pname,
         const char *model, const char *request)
{
	static const char *no_headers[1];
	struct exchange *x = &h->x;
	const jsmntok_t *m;

	memset(h, 0, sizeof *h);
	arena_init(&h->arena);
	if ((h->body = strdup(request)) == NULL)
		abort();
	if (read_request(h) < 0)
		return -1;
	h->prov = (struct cfg_provider){ .name = pname, .type = type, .base_url = "https://upstream.test/v1",
		.api_key = "KEY", .api_version = "2024-10-21", .ca_file = "", .headers = no_headers,
		.max_response_body = 1 << 20, .default_max_tokens = 4096 };
	h->target = (struct target){ .provider = &h->prov, .model = model, .adapter = a };
	m = &h->req.j.tok[h->req.model];
	x->sink = (struct sink){ &cap_ops, &h->cap };
	x->arena = &h->arena;
	x->cfg = &h->cfg;
	x->req = &h->req;
	x->public_model = h->body + m->start - 1;
	x->public_model_len = (size_t)(m->end - m->start) + 2;
	x->target = &h->target;
	x->plan.targets = &h->target;
	x->plan.ntargets = 1;
	loop_timer_init(&x->retry_timer);
	loop_timer_init(&x->deadline_timer);
	snprintf(x->em.id, sizeof x->em.id, "chatcmpl-test");
	snprintf(x->em.created, sizeof x->em.created, "1700000000");
	exchange_prepare(x);
	return 0;
}

static char *
dup_text(const char *s, size_t n)
{
	char *o = malloc(n + 1);

	if (o == NULL)
		abort();
	memcpy(o, s, n);
	o[n] = '\0';
	return o;
}

int
xh_encode(struct xh *h, char **url, char **headers, char **body)
{
	struct upstream_req req;
	struct capture hs = { 0 };
	int rc;

	memset(&req, 0, sizeof req);
	rc = h->target.adapter->encode(&h->x, &req, &h->x.up_body);
	for (struct curl_slist *l = req.headers; l != NULL; l = l->next) {
		cap_put(&hs, l->data, strlen(l->data));
		cap_put(&hs, "\n", 1);
	}
	curl_slist_free_all(req.headers);
	*url = dup_text(req.url ? req.url : "", req.url ? strlen(req.url) : 0);
	*headers = hs.text ? hs.text : dup_text("", 0);
	*body = dup_text(h->x.up_body.data ? h->x.up_body.data : "", h->x.up_body.len);
	return rc;
}

/* Feed from a copy that is spoiled and freed at once: a decoder that keeps pointing into a
 * chunk delivers garbage (or, under ASan, crashes). */
static int
feed_copy(struct xh *h, const char *s, size_t n)
{
	char *c = malloc(n ? n : 1);
	int rc;

	if (c == NULL)
		abort();
	memcpy(c, s, n);
	rc = exchange_feed(&h->x, c, n);
	memset(c, '#', n);
	free(c);
	return rc;
}

/* Feed pieces of [at, end) until one is refused (as on_data refusing a write ends the transfer). */
static int
feed_range(struct xh *h, const char *s, size_t at, size_t end, size_t step)
{
	for (size_t n; at < end; at += n) {
		n = step && end - at > step ? step : end - at;
		if (feed_copy(h, s + at, n) < 0)
			return -1;
	}
	return 0;
}

void
xh_replay(struct xh *h, long status, const char *s, size_t n, size_t cut, size_t step)
{
	struct upstream_result r = { .ok = 1 };
	int rc;

	exchange_upstream_head(&h->x, status);
	if (cut > 0 && cut < n)
		rc = feed_range(h, s, 0, cut, 0) < 0 ? -1 : feed_range(h, s, cut, n, 0);
	else
		rc = feed_range(h, s, 0, n, step);
	if (rc < 0) { /* libcurl then reports the transfer ended by its write callback */
		r.ok = 0;
		r.aborted = 1;
	}
	exchange_upstream_done(&h->x, &r);
}

void
xh_teardown(struct xh *h)
{
	exchange_handler.gone(&h->x);
	arena_release(&h->arena);
	free(h->cap.text);
	free(h->body);
}

/* ---- checking ---- */

static char *
with_crlf(const char *s, size_t n, size_t *out)
{
	char *o = malloc(2 * n + 1), *w = o;

	if (o == NULL)
		abort();
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '\n' && (i == 0 || s[i - 1] != '\r'))
			*w++ = '\r';
		*w++ = s[i];
	}
	*out = (size_t)(w - o);
	return o;
}

/* One run; 1 if it gave want. */
static int
one_run(const struct adapter *a, enum provider_type type, const char *request, long status, const char *s,
        size_t n, size_t cut, size_t step, const char *want, int want_status, const char *how)
{
	struct xh h;
	int ok;

	if (xh_setup(&h, a, type, "prov", "model-x", request) < 0) {
		CHECKF(0, "%s: the request does not parse", how);
		return 0;
	}
	xh_replay(&h, status, s, n, cut, step);
	ok = h.cap.len == strlen(want) && memcmp(h.cap.text ? h.cap.text : "", want, h.cap.len) == 0 &&
	    (want_status == 0 || h.cap.status == want_status) && h.cap.ends == 1;
	if (!ok)
		CHECKF(0, "%s: status %d (want %d), %d ends\n  got:  %s\n  want: %s", how, h.cap.status, want_status,
		    h.cap.ends, xh_printable(h.cap.text ? h.cap.text : "", h.cap.len), xh_printable(want, strlen(want)));
	xh_teardown(&h);
	return ok;
}

void
xh_check_replay(const struct adapter *a, enum provider_type type, const char *request, long status,
                const char *s, size_t n, int crlf, const char *want, int want_status)
{
	char how[64];
	size_t len = n;
	char *t = crlf ? with_crlf(s, n, &len) : NULL;
	const char *src = t ? t : s;
	const char *le = crlf ? "CRLF" : "as written";

	snprintf(how, sizeof how, "%s, whole", le);
	if (!one_run(a, type, request, status, src, len, 0, 0, want, want_status, how))
		goto out;
	snprintf(how, sizeof how, "%s, byte by byte", le);
	if (!one_run(a, type, request, status, src, len, 0, 1, want, want_status, how))
		goto out;
	for (size_t cut = 1; cut < len; cut++) {
		snprintf(how, sizeof how, "%s, cut at %zu", le, cut);
		if (!one_run(a, type, request, status, src, len, cut, 0, want, want_status, how))
			break;
	}
out:
	free(t);
}

static void
check_row(const struct adapter *a, enum provider_type type, const char *model, const struct xrow *row)
{
	struct xh h;
	char *url, *headers, *body;
	int rc;

	if (!CHECKF(xh_setup(&h, a, type, "prov", row->model ? row->model : model, row->request) == 0,
	    "the request does not parse"))
		return;
	rc = xh_encode(&h, &url, &headers, &body);
	if (row->want_status) {
		CHECKF(rc < 0, "encode succeeded: %s", body);
		CHECKF(h.x.fail.status == row->want_status && h.x.fail.cls == FAIL_CLIENT, "status %d class %d",
		    h.x.fail.status, (int)h.x.fail.cls);
		CHECKF(h.x.fail.type != NULL && strcmp(h.x.fail.type, "invalid_request_error") == 0, "type %s",
		    h.x.fail.type ? h.x.fail.type : "(null)");
		CHECKF(strcmp(h.x.fail.msg, row->want_msg) == 0, "message\n  got:  %s\n  want: %s", h.x.fail.msg,
		    row->want_msg);
	} else {
		CHECKF(rc == 0, "encode failed: %s", h.x.fail.msg);
		CHECKF(row->url == NULL || strcmp(url, row->url) == 0, "url\n  got:  %s\n  want: %s", url, row->url);
		CHECKF(row->headers == NULL || strcmp(headers, row->headers) == 0, "headers\n  got:  %s\n  want: %s",
		    xh_printable(headers, strlen(headers)), row->headers ? xh_printable(row->headers, strlen(row->headers)) : "");
		CHECKF(strcmp(body, row->body) == 0, "body\n  got:  %s\n  want: %s", body, row->body);
		CHECKF(json_valid(body, strlen(body)), "the body is not valid JSON: %s", body);
	}
	free(url);
	free(headers);
	free(body);
	xh_teardown(&h);
}

void
xh_check_rows(const struct adapter *a, enum provider_type type, const char *model,
              const struct xrow *rows, size_t n, const char *suite)
{
	for (size_t i = 0; i < n; i++) {
		unit_case("%s request: %s", suite, rows[i].name);
		check_row(a, type, model, &rows[i]);
	}
}

static void
check_answer(const struct adapter *ad, enum provider_type type, const struct xanswer *a, const char *suite)
{
	char path[256];
	size_t n = 0;
	char *s = NULL;
	const char *src = a->body;

	if (a->file != NULL) {
		snprintf(path, sizeof path, "test/fixtures/%s", a->file);
		if (!CHECKF((s = xh_slurp(path, &n)) != NULL, "cannot read %s (run from the repository's root)", path))
			return;
		src = s;
	} else {
		n = strlen(src);
	}
	for (int crlf = 0; crlf <= 1; crlf++) {
		unit_case("%s answer %s (%s%s)", suite, a->file ? a->file : "(inline)",
		    strstr(a->request, "include_usage") ? "usage asked, " :
		    strstr(a->request, "\"stream\":true") ? "no usage asked, " : "whole, ", crlf ? "CRLF" : "as written");
		xh_check_replay(ad, type, a->request, a->status, src, n, crlf, a->want, a->want_status);
	}
	free(s);
}

void
xh_check_answers(const struct adapter *a, enum provider_type type, const struct xanswer *answers, size_t n,
                 const char *suite)
{
	for (size_t i = 0; i < n; i++)
		check_answer(a, type, &answers[i], suite);
}

char *
xh_slurp(const char *path, size_t *n)
{
	FILE *f = fopen(path, "rb");
	char *s = NULL;
	long size;

	if (f == NULL)
		return NULL;
	if (fseek(f, 0, SEEK_END) == 0 && (size = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
	    (s = malloc((size_t)size + 1)) != NULL) {
		*n = fread(s, 1, (size_t)size, f);
		s[*n] = '\0';
	}
	fclose(f);
	return s;
}

const char *
xh_printable(const char *s, size_t n)
{
	static char out[4][8192];
	static int k;
	char *o = out[k++ % 4], *w = o;

	for (size_t i = 0; i < n && w < o + sizeof out[0] - 8; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '\n')
			w += snprintf(w, 3, "\\n");
		else if (c == '\r')
			w += snprintf(w, 3, "\\r");
		else if (c >= 0x20)
			*w++ = (char)c;
		else
			w += snprintf(w, 5, "\\x%02x", c);
	}
	*w = '\0';
	return o;
}

size_t
xh_in_use(void)
{
	struct mem_stats st;

	mem_get_stats(&st);
	return st.in_use;
}
