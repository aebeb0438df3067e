/*
 * exchange.c — one chat request's life (DESIGN.md §3): the attempt, the commit point, the
 * outcome. The exchange answers through a sink and never sees the connection.
 *
 *   PLANNED → ATTEMPT → COMMITTED → DONE | INTERRUPTED
 *               ↓ ↑ a failure before the commit: BACKOFF, then the same or the next target
 *             FAILED when the chain is spent, the deadline passes, or the failure is the client's
 *
 * The commit point: nothing of an attempt reaches the client before its first content-bearing
 * chunk. Preamble chunks (the role-only chunk, Azure's filter chunk) are held until then, so a
 * failure before it is still a clean error answer (and, with the router, a fallback). After it,
 * a failure becomes one explicit `stream_interrupted` event and never a silent end: a stream
 * that ends without its end marker and without a finish reason is a failure too. A non-streamed
 * request commits when its whole answer is in.
 *
 * Every state change goes through xc_state(), the one place that will feed the request log.
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "adapters/adapter.h"

#define SINK_HIGH  (64 * 1024)  /* queued bytes at which the upstream is paused */
#define ERROR_MAX  (64 * 1024)  /* an error body read from a provider */
#define HELD_MAX   (64 * 1024)  /* preamble held before the commit point */
#define EVENT_MAX  (4u << 20)   /* one SSE event from a provider */

static const char *const state_names[] = {
	[X_PLANNED] = "PLANNED", [X_ATTEMPT] = "ATTEMPT", [X_BACKOFF] = "BACKOFF", [X_COMMITTED] = "COMMITTED",
	[X_DONE] = "DONE", [X_INTERRUPTED] = "INTERRUPTED", [X_FAILED] = "FAILED",
};

static void attempt_failed(struct exchange *x);

static void
xc_state(struct exchange *x, enum xstate to)
{
	(void)state_names; /* the request log (a later issue) records each transition here */
	x->state = to;
}

static int
finished(const struct exchange *x)
{
	return x->state == X_DONE || x->state == X_INTERRUPTED || x->state == X_FAILED;
}

/* Give back everything the exchange took from mem (its arena goes with the request). */
static void
release(struct exchange *x)
{
	loop_timer_cancel(&x->heartbeat);
	loop_timer_cancel(&x->retry_timer);
	loop_timer_cancel(&x->deadline_timer);
	upstream_abort(&x->up);
	sse_free(&x->sse);
	buf_free(&x->up_body);
	buf_free(&x->resp);
	buf_free(&x->held);
	buf_free(&x->toks);
	buf_free(&x->scratch);
	emit_release(x);
}

/* ---- answering ---- */

/* The headers every answer of an attempt carries. */
static const char *
attempt_headers(struct exchange *x, const char *extra)
{
	const struct target *t = x->target;
	char n[21];

	return arena_cat(x->arena, "x-sluice-provider: ", t ? t->provider->name : "-", "\r\nx-sluice-model: ",
	    t ? t->model : "-", "\r\nx-sluice-attempts: ", u64_dec(n, (uint64_t)x->attempts), "\r\n",
	    extra ? extra : "", (char *)NULL);
}

/* Answer the failure in x->fail: a clean error before the commit point, one interruption
 * event after it. Either way the exchange is over. */
static void
answer_failure(struct exchange *x)
{
	struct failure *f = &x->fail;
	char body[6 * sizeof x->fail.msg + 256]; /* every byte of the message escaped as \u00XX */
	struct buf b = { .data = body, .size = sizeof body, .max = sizeof body };
	struct iovec v[3];

	if (x->state == X_COMMITTED || x->head_sent) {
		/* The client already has a 200 and an event stream: the error is an event in it. After
		 * content it is an interruption; before (only heartbeats sent) the failure itself. */
		if (x->state == X_COMMITTED)
			json_error(&b, f->msg, strlen(f->msg), "upstream_error", "stream_interrupted", NULL);
		else
			json_error(&b, f->msg, strlen(f->msg), f->type ? f->type : "upstream_error", f->code, NULL);
		v[0].iov_base = "data: ";
		v[0].iov_len = 6;
		v[1].iov_base = b.data;
		v[1].iov_len = b.len;
		v[2].iov_base = "\n\n";
		v[2].iov_len = 2;
		x->sink.ops->write(x->sink.o, v, 3);
		x->sink.ops->end(x->sink.o);
		xc_state(x, x->state == X_COMMITTED ? X_INTERRUPTED : X_FAILED);
		return;
	}
	json_error(&b, f->msg, strlen(f->msg), f->type ? f->type : "upstream_error", f->code, NULL);
	{
		const char *extra = NULL;
		if (f->retry_after[0])
			extra = arena_cat(x->arena, "Retry-After: ", f->retry_after, "\r\n", (char *)NULL);
		if (x->sink.ops->head(x->sink.o, f->status, "application/json",
		    attempt_headers(x, extra), (int64_t)b.len) == 0) {
			v[0].iov_base = b.data;
			v[0].iov_len = b.len;
			x->sink.ops->write(x->sink.o, v, 1);
		}
	}
	x->sink.ops->end(x->sink.o);
	xc_state(x, X_FAILED);
}

/* End the exchange with a failure (from anywhere but inside the upstream's callbacks, which
 * return < 0 instead and let on_done come). */
static void
fail_now(struct exchange *x)
{
	release(x);
	answer_failure(x);
}

int
xc_fail(struct exchange *x, enum fail_class cls, int status, const char *code, const char *fmt, ...)
{
	va_list ap;

	if (x->fail.msg[0] == '\0') { /* the first failure is the one that counts */
		x->fail.cls = cls;
		x->fail.status = status;
		x->fail.type = "upstream_error";
		x->fail.code = code;
		va_start(ap, fmt);
		vsnprintf(x->fail.msg, sizeof x->fail.msg, fmt, ap);
		va_end(ap);
	}
	return -1;
}

/* The head of an event stream. It may go before the commit point (heartbeats): then it cannot
 * name the attempt that will serve, so it names none. */
static int
stream_head(struct exchange *x, int early)
{
	static const char sse[] = "Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\n";

	if (x->head_sent)
		return 0;
	x->head_sent = 1;
	return x->sink.ops->head(x->sink.o, 200, "text/event-stream", early ? sse : attempt_headers(x, sse), -1);
}

/* A model slow to start: the head goes early and `: keepalive` comments follow, so nothing
 * between the client and sluice times out. No content was sent: fallback is still allowed. */
static void
on_heartbeat(void *ud)
{
	static const struct iovec ka = { ": keepalive\n\n", 13 };
	struct exchange *x = ud;

	if (finished(x) || x->state == X_COMMITTED)
		return;
	if (stream_head(x, 1) < 0 || x->sink.ops->write(x->sink.o, &ka, 1) < 0)
		return;
	loop_timer_set(&x->heartbeat, x->cfg->server.stream_heartbeat, on_heartbeat, x);
}

/* The gateway's own memory ran out: 503, never the provider's fault nor a reason to fall back. */
static int
out_of_memory(struct exchange *x)
{
	xc_fail(x, FAIL_NOMEM, 503, "overloaded", "the gateway is out of memory; retry shortly");
	x->fail.type = "server_error";
	return -1;
}

/* The commit point: the head goes out (unless heartbeats sent it), then what was held. */
static int
commit(struct exchange *x)
{
	struct iovec v = { x->held.data, x->held.len };

	loop_timer_cancel(&x->heartbeat);
	loop_timer_cancel(&x->deadline_timer); /* the deadline bounds only what comes before */
	if (stream_head(x, 0) < 0)
		return -1;
	x->t_first = loop_now();
	xc_state(x, X_COMMITTED);
	if (x->held.len > 0 && x->sink.ops->write(x->sink.o, &v, 1) < 0)
		return -1;
	buf_free(&x->held);
	return 0;
}

/* One chat.completion.chunk (its JSON in parts), framed as an SSE event. */
int
xc_chunk(struct exchange *x, const struct iovec *parts, int nparts, unsigned flags)
{
	struct iovec v[8];
	int n = 0;

	if ((flags & CHUNK_USAGE_ONLY) && !x->req->include_usage)
		return 0; /* asked for by sluice, not by the client */
	if (flags & CHUNK_FINISH)
		x->saw_finish = 1;
	if (nparts > 6)
		return xc_fail(x, FAIL_MALFORMED, 502, "upstream_malformed", "internal: chunk in too many parts");
	v[n].iov_base = "data: ";
	v[n++].iov_len = 6;
	for (int i = 0; i < nparts; i++) /* field by field: a struct copy loop became a rep movsb */
		v[n].iov_base = parts[i].iov_base, v[n++].iov_len = parts[i].iov_len;
	v[n].iov_base = "\n\n";
	v[n++].iov_len = 2;
	if (x->state != X_COMMITTED && !(flags & (CHUNK_CONTENT | CHUNK_FINISH | CHUNK_USAGE_ONLY))) {
		/* Preamble: held until content comes. */
		for (int i = 0; i < n; i++) {
			int rc = buf_append(&x->held, v[i].iov_base, v[i].iov_len);

			if (rc == BUF_NOMEM) /* the gateway's memory, not the provider's size */
				return out_of_memory(x);
			if (rc != BUF_OK)
				return xc_fail(x, FAIL_MALFORMED, 502, "upstream_malformed",
				    "the provider sent more than %d bytes before any content", HELD_MAX);
		}
		return 0;
	}
	if (x->state != X_COMMITTED && commit(x) < 0)
		return -1;
	if (x->sink.ops->write(x->sink.o, v, n) < 0)
		return xc_fail(x, FAIL_CLOSED, 502, "stream_interrupted", "the client's write queue is full");
	return 0;
}

void
xc_usage(struct exchange *x, long prompt, long completion, long cached)
{
	x->usage.prompt = prompt;
	x->usage.completion = completion;
	x->usage.cached = cached;
	x->usage.seen = 1;
}

void
xc_stream_end(struct exchange *x)
{
	x->saw_end = 1;
}

/* A whole answer, from memory that lives as long as the request (the arena or x->resp). */
int
xc_body(struct exchange *x, const struct iovec *parts, int nparts)
{
	size_t len = 0;

	for (int i = 0; i < nparts; i++)
		len += parts[i].iov_len;
	if (x->sink.ops->head(x->sink.o, 200, "application/json", attempt_headers(x, NULL), (int64_t)len) < 0)
		return -1;
	loop_timer_cancel(&x->deadline_timer);
	x->t_first = loop_now();
	xc_state(x, X_COMMITTED);
	for (int i = 0; i < nparts; i++)
		if (x->sink.ops->borrow(x->sink.o, parts[i].iov_base, parts[i].iov_len) < 0)
			return -1;
	return 0;
}

/* Parse one JSON document with the exchange's reused token store. */
int
xc_json(struct exchange *x, struct json *j, const char *p, size_t n)
{
	return json_parse_buf(j, &x->toks, p, n);
}

/* ---- the provider's answer ---- */

void
xc_classify_status(long status, struct failure *f)
{
	static const struct { long status; enum fail_class cls; } table[] = {
		{ 400, FAIL_CLIENT }, { 404, FAIL_CLIENT }, { 422, FAIL_CLIENT },
		{ 401, FAIL_AUTH }, { 403, FAIL_AUTH }, { 408, FAIL_408 }, { 409, FAIL_409 },
		{ 429, FAIL_429 }, { 500, FAIL_500 }, { 502, FAIL_502 }, { 503, FAIL_503 },
		{ 504, FAIL_504 }, { 529, FAIL_529 },
	};

	f->cls = status >= 500 ? FAIL_500 : FAIL_OTHER_4XX;
	for (size_t i = 0; i < NELEM(table); i++)
		if (table[i].status == status)
			f->cls = table[i].cls;
	/* The client's own errors keep their status; the provider's failures are a bad gateway. */
	f->status = status >= 400 && status < 500 ? (int)status : 502;
}

/* A short string token's text, if it is a plain identifier (safe to put back in JSON as is). */
static void
copy_token_text(const struct json *j, int t, char *out, size_t len)
{
	size_t n;

	out[0] = '\0';
	if (t < 0 || j->tok[t].type != JSMN_STRING)
		return;
	n = (size_t)(j->tok[t].end - j->tok[t].start);
	if (n == 0 || n >= len)
		return;
	for (size_t i = 0; i < n; i++) {
		char c = j->src[j->tok[t].start + (int)i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.'))
			return;
	}
	memcpy(out, j->src + j->tok[t].start, n);
	out[n] = '\0';
}

/* The provider's message from an error body: OpenAI's {"error":{"message"}}, a flat
 * {"error":"…"} or {"message":"…"}, or the text itself. */
void
xc_error_message(const char *p, size_t n, struct failure *f)
{
	static const char *const keys[] = { "message", "error", "detail" };
	jsmntok_t toks[256];
	struct buf store = { .data = (char *)toks, .size = sizeof toks, .max = sizeof toks };
	struct json j;
	int obj = 0, t = -1;

	if (json_parse_buf(&j, &store, p, n) > 0 && j.tok[0].type == JSMN_OBJECT) {
		int e = json_find(&j, 0, "error");
		if (e >= 0 && j.tok[e].type == JSMN_OBJECT)
			obj = e;
		for (size_t k = 0; k < NELEM(keys) && t < 0; k++) {
			t = json_find(&j, obj, keys[k]);
			if (t >= 0 && j.tok[t].type != JSMN_STRING)
				t = -1;
		}
	}
	if (t >= 0) {
		json_unescape(p + j.tok[t].start, (size_t)(j.tok[t].end - j.tok[t].start), f->msg, sizeof f->msg);
		if (obj > 0) { /* OpenAI-shaped: keep its type and code too (SDKs act on the code) */
			copy_token_text(&j, json_find(&j, obj, "type"), f->ptype, sizeof f->ptype);
			copy_token_text(&j, json_find(&j, obj, "code"), f->pcode, sizeof f->pcode);
		}
		return;
	}
	while (n > 0 && (p[n - 1] == '\n' || p[n - 1] == '\r' || p[n - 1] == ' '))
		n--;
	snprintf(f->msg, sizeof f->msg, "%.*s", (int)(n > 300 ? 300 : n), p);
}

/* The error hook of providers whose error bodies are OpenAI-shaped, flat or plain text. */
void
xc_error_default(struct exchange *x, long status, const char *p, size_t n, struct failure *f)
{
	xc_classify_status(status, f);
	xc_error_message(p, n, f);
}

static int
on_head(void *ud, struct upstream *u)
{
	return exchange_upstream_head(ud, u->status);
}

/* The provider's answer head arrived with this status. */
int
exchange_upstream_head(struct exchange *x, long status)
{
	x->up.status = status;
	x->sse.ndjson = x->target->adapter->framing == FRAMING_NDJSON; /* per attempt: targets differ */
	if (status >= 200 && status < 300)
		buf_init(&x->resp, x->target->provider->max_response_body);
	else
		buf_init(&x->resp, ERROR_MAX);
	return 0;
}

static int
on_stream_event(void *ud, const struct sse_event *ev)
{
	struct exchange *x = ud;

	return x->target->adapter->stream_event(x, ev) < 0 ? -1 : 0;
}

static int
on_data(void *ud, const char *p, size_t n)
{
	return exchange_feed(ud, p, n);
}

/* Bytes of the provider's answer body, as they arrive (also how tests replay recordings). */
int
exchange_feed(struct exchange *x, const char *p, size_t n)
{
	int rc;

	if (finished(x))
		return -1;
	if (x->up.status >= 300 || !x->req->stream) {
		rc = buf_append(&x->resp, p, n);
		if (rc == BUF_OK || x->up.status >= 300)
			return 0; /* an error body is read as far as it fits */
		if (rc == BUF_NOMEM)
			return out_of_memory(x);
		return xc_fail(x, FAIL_TOO_LARGE, 502, "upstream_response_too_large",
		    "the provider's answer is larger than max_response_body (%zu bytes)", x->resp.max);
	}
	/* Backpressure: a client that reads slowly pauses the provider; nothing piles up. */
	if (x->state == X_COMMITTED && x->sink.ops->queued(x->sink.o) > SINK_HIGH)
		return UPSTREAM_PAUSE;
	rc = sse_feed(&x->sse, p, n, on_stream_event, x);
	if (rc == SSE_NOMEM)
		return out_of_memory(x);
	if (rc == SSE_TOO_LARGE)
		return xc_fail(x, FAIL_MALFORMED, 502, "upstream_malformed",
		    "the provider sent an event larger than %u bytes", EVENT_MAX);
	return rc < 0 ? -1 : 0;
}

/* Why an attempt that ended cleanly at the HTTP level still failed, or 0. */
static int
check_outcome(struct exchange *x)
{
	long st = x->up.status;

	if (st >= 300) {
		if (st == 429 || st == 503 || st == 529)
			snprintf(x->fail.retry_after, sizeof x->fail.retry_after, "%s", x->up.retry_after);
		x->target->adapter->error(x, st, x->resp.data ? x->resp.data : "", x->resp.len, &x->fail);
		x->fail.type = x->fail.ptype[0] ? x->fail.ptype : "upstream_error";
		x->fail.code = x->fail.pcode[0] ? x->fail.pcode : NULL;
		if (x->fail.msg[0] == '\0')
			snprintf(x->fail.msg, sizeof x->fail.msg, "the provider answered %ld", st);
		return -1;
	}
	if (!x->req->stream)
		return x->target->adapter->response(x, x->resp.data ? x->resp.data : "", x->resp.len);
	if (sse_finish(&x->sse, on_stream_event, x) < 0)
		return -1;
	if (x->target->adapter->stream_done != NULL && x->target->adapter->stream_done(x) < 0)
		return -1;
	if (!x->saw_end && (!x->saw_finish || x->target->adapter->end_marker))
		return xc_fail(x, FAIL_CLOSED, 502, "upstream_closed",
		    "the provider's stream ended without its end marker or a finish reason");
	if (x->state != X_COMMITTED)
		return xc_fail(x, FAIL_CLOSED, 502, "upstream_closed", "the provider's stream ended with no content");
	return 0;
}

static void
on_done(void *ud, const struct upstream_result *r)
{
	exchange_upstream_done(ud, r);
}

/* The provider's answer ended (r->ok) or failed. */
void
exchange_upstream_done(struct exchange *x, const struct upstream_result *r)
{
	static const struct { enum fail_class cls; int status; const char *code; } by_class[] = {
		{ FAIL_CONNECT, 502, "upstream_connect_failed" }, { FAIL_TLS, 502, "upstream_tls_failed" },
		{ FAIL_TIMEOUT_HEAD, 504, "upstream_timeout" }, { FAIL_TIMEOUT_IDLE, 504, "upstream_timeout" },
		{ FAIL_TIMEOUT_TOTAL, 504, "upstream_timeout" }, { FAIL_CLOSED, 502, "upstream_closed" },
		{ FAIL_NOMEM, 503, "overloaded" },
	};

	if (finished(x))
		return;
	if (!r->ok && !r->aborted) {
		int status = 502;
		const char *code = "upstream_error";

		for (size_t i = 0; i < NELEM(by_class); i++)
			if (by_class[i].cls == r->cls)
				status = by_class[i].status, code = by_class[i].code;
		if (r->cls == FAIL_TIMEOUT_IDLE && x->state != X_COMMITTED)
			xc_fail(x, FAIL_TIMEOUT_FIRST_TOKEN, 504, code, "%s: %s", x->target->provider->name, r->msg);
		else
			xc_fail(x, r->cls, status, code, "%s: %s", x->target->provider->name, r->msg);
	} else if (r->ok && check_outcome(x) == 0) {
		if (x->req->stream) {
			struct iovec v = { "data: [DONE]\n\n", 14 };
			x->sink.ops->write(x->sink.o, &v, 1);
		}
		x->sink.ops->end(x->sink.o); /* the body may be borrowed from x->resp: released in on_gone */
		router_report(x->target, 1, 0);
		router_observe(x->target, x->t_first - x->t_attempt, x->usage.completion, loop_now() - x->t_first);
		xc_state(x, X_DONE);
		return;
	}
	if (x->fail.msg[0] == '\0')
		xc_fail(x, FAIL_CLOSED, 502, "upstream_error", "%s: the transfer failed", x->target->provider->name);
	attempt_failed(x);
}

static const struct upstream_cb callbacks = {
	.on_head = on_head,
	.on_data = on_data,
	.on_done = on_done,
};

/* ---- the connection's side ---- */

static void
on_drained(void *ud)
{
	struct exchange *x = ud;

	if (x->up.paused)
		upstream_resume(&x->up);
}

/* The request is over: answered, or the client went away (then the provider stops generating,
 * and billing, at once). */
static void
on_gone(void *ud)
{
	struct exchange *x = ud;

	if (!finished(x)) {
		if (x->state == X_ATTEMPT && x->target != NULL)
			router_abandon(x->target);
		xc_state(x, X_INTERRUPTED);
	}
	release(x);
}

const struct conn_handler exchange_handler = { .drained = on_drained, .gone = on_gone };

/* Set the exchange up for its target (buffers, parser). Tests and replays stop here. */
void
exchange_prepare(struct exchange *x)
{
	x->t_start = loop_now();
	x->attempts = 1;
	loop_timer_init(&x->heartbeat);
	xc_state(x, X_ATTEMPT);
	if (x->req->stream && x->cfg->server.stream_heartbeat > 0)
		loop_timer_set(&x->heartbeat, x->cfg->server.stream_heartbeat, on_heartbeat, x);
	buf_init(&x->up_body, x->req->len + 1024);
	buf_init(&x->held, HELD_MAX);
	buf_init(&x->toks, 16u << 20);
	buf_init(&x->scratch, EVENT_MAX);
	sse_init(&x->sse, EVENT_MAX);
}

/* ---- walking the chain ---- */

static const char *
class_text(enum fail_class c)
{
	switch (c) {
	case FAIL_CONNECT:             return "connect error";
	case FAIL_TLS:                 return "TLS error";
	case FAIL_TIMEOUT_HEAD:        return "timeout before the head";
	case FAIL_TIMEOUT_FIRST_TOKEN: return "timeout before first token";
	case FAIL_TIMEOUT_IDLE:        return "idle timeout";
	case FAIL_TIMEOUT_TOTAL:       return "total timeout";
	case FAIL_MALFORMED:           return "malformed response";
	case FAIL_CLOSED:              return "closed before content";
	case FAIL_TOO_LARGE:           return "response too large";
	case FAIL_PROVIDER:            return "error event";
	default:                       return NULL; /* an HTTP status says it */
	}
}

static void
record_failure(struct exchange *x)
{
	struct attempt_rec *r;

	if (x->nfailed >= x->attempts || x->failed == NULL)
		return;
	r = &x->failed[x->nfailed++];
	r->target = x->target;
	r->cls = x->fail.cls;
	r->status = x->up.status >= 300 ? x->up.status : 0;
	snprintf(r->msg, sizeof r->msg, "%.119s", x->fail.msg);
}

/* The chain is spent (or stopped): one answer saying what each attempt met. */
static void
chain_failed(struct exchange *x)
{
	struct failure *f = &x->fail;
	char all[sizeof f->msg];
	size_t n;

	if (x->nfailed > 1) {
		n = (size_t)snprintf(all, sizeof all, "all %d attempts failed: ", x->nfailed);
		for (int i = 0; i < x->nfailed && n < sizeof all; i++) {
			const struct attempt_rec *r = &x->failed[i];
			const char *what = class_text(r->cls);
			char st[16];

			snprintf(st, sizeof st, "%ld", r->status);
			n += (size_t)snprintf(all + n, sizeof all - n, "%s%s/%s: %s", i ? "; " : "",
			    r->target->provider->name, r->target->model, what ? what : r->status ? st : r->msg);
		}
		snprintf(f->msg, sizeof f->msg, "%s", all);
	}
	fail_now(x);
}

/* Retry-After: delta-seconds or an HTTP date. Milliseconds from now, or -1 if none. */
static int64_t
retry_after_ms(const char *v)
{
	struct tm tm;
	char *end;
	long secs;

	if (v[0] == '\0')
		return -1;
	secs = strtol(v, &end, 10);
	if (end != v && *end == '\0')
		return secs < 0 ? 0 : secs > 86400 * 365 ? INT64_MAX / 2 : (int64_t)secs * 1000;
	memset(&tm, 0, sizeof tm);
	if (strptime(v, "%a, %d %b %Y %H:%M:%S GMT", &tm) == NULL)
		return -1;
	secs = (long)(timegm(&tm) - time(NULL));
	return secs < 0 ? 0 : (int64_t)secs * 1000;
}

static void attempt_start(struct exchange *x);

static void
on_retry(void *ud)
{
	attempt_start(ud);
}

/*
 * An attempt failed. After the commit point that is the end: one interruption event, never
 * another provider. Before it the failure table decides: the same target again after a backoff
 * (or the provider's Retry-After, if it fits the deadline), the next target at once, or stop.
 */
static void
attempt_failed(struct exchange *x)
{
	enum router_action a;
	uint64_t delay = 0;

	upstream_abort(&x->up);
	router_report(x->target, 0, x->fail.cls);
	if (x->state == X_COMMITTED) {
		fail_now(x);
		return;
	}
	record_failure(x);
	a = router_action(&x->plan, x->fail.cls);
	if (a == ROUTE_RETRY && x->tries > x->plan.retries)
		a = ROUTE_NEXT;
	if (a == ROUTE_RETRY) {
		int64_t ra = retry_after_ms(x->fail.retry_after);
		if (ra < 0)
			delay = router_backoff(&x->plan, x->tries - 1);
		else if (loop_now() + (uint64_t)ra < x->deadline_at)
			delay = (uint64_t)ra;
		else
			a = ROUTE_NEXT; /* waiting would not fit the deadline: try elsewhere */
	}
	if (a == ROUTE_NEXT) {
		x->ti++;
		x->tries = 0;
	}
	if (a == ROUTE_STOP || x->ti >= x->plan.ntargets || loop_now() + delay >= x->deadline_at ||
	    (x->plan.max_attempts > 0 && x->attempts >= x->plan.max_attempts)) {
		chain_failed(x);
		return;
	}
	xc_state(x, X_BACKOFF);
	loop_timer_set(&x->retry_timer, delay, on_retry, x);
}

static void
on_deadline(void *ud)
{
	struct exchange *x = ud;

	if (finished(x) || x->state == X_COMMITTED)
		return;
	upstream_abort(&x->up);
	loop_timer_cancel(&x->retry_timer);
	if (x->state == X_ATTEMPT)
		router_abandon(x->target);
	if (x->state == X_ATTEMPT) {
		x->fail.msg[0] = '\0';
		xc_fail(x, FAIL_TIMEOUT_FIRST_TOKEN, 504, "upstream_timeout", "%s: no content before the deadline",
		    x->target->provider->name);
		record_failure(x);
	}
	x->fail.status = 504;
	x->fail.code = "deadline_exceeded";
	x->fail.retry_after[0] = '\0';
	snprintf(x->fail.msg, sizeof x->fail.msg, "no answer within the deadline (%ums)", x->plan.deadline);
	if (x->nfailed > 1)
		chain_failed(x);
	else
		fail_now(x);
}

/* Forget what the last attempt left: it never reached the client. */
static void
attempt_reset(struct exchange *x)
{
	memset(&x->fail, 0, sizeof x->fail);
	memset(&x->usage, 0, sizeof x->usage);
	x->saw_end = x->saw_finish = 0;
	sse_free(&x->sse);
	sse_init(&x->sse, EVENT_MAX);
	buf_reset(&x->held);
	buf_reset(&x->up_body);
	buf_free(&x->resp);
	emit_release(x);
}

static void
attempt_start(struct exchange *x)
{
	struct upstream_req req;

	attempt_reset(x);
	x->target = &x->plan.targets[x->ti];
	x->tries++;
	x->attempts++;
	x->t_attempt = loop_now();
	xc_state(x, X_ATTEMPT);
	router_attempt_start(x->target);
	memset(&req, 0, sizeof req);
	req.provider = x->target->provider;
	req.ca = x->target->ca;
	if (x->target->adapter->encode(x, &req, &x->up_body) < 0) {
		curl_slist_free_all(req.headers);
		if (x->fail.msg[0] == '\0') {
			xc_fail(x, FAIL_CLIENT, 503, "overloaded", "the gateway is out of memory; retry shortly");
			x->fail.type = "server_error";
		}
		attempt_failed(x);
		return;
	}
	req.body = x->up_body.data;
	req.body_len = x->up_body.len;
	if (upstream_start(&x->up, &req, &callbacks, x) < 0) {
		curl_slist_free_all(req.headers);
		xc_fail(x, FAIL_CONNECT, 502, "upstream_connect_failed", "%s: could not start a request",
		    x->target->provider->name);
		attempt_failed(x);
	}
}

/* Walk the plan. Whatever happens, the client is answered through the sink. */
int
exchange_run(struct exchange *x, const struct plan *plan)
{
	x->plan = *plan;
	x->target = &x->plan.targets[0];
	exchange_prepare(x);
	loop_timer_init(&x->retry_timer);
	loop_timer_init(&x->deadline_timer);
	x->attempts = 0;
	x->failed = arena_alloc(x->arena, (size_t)(plan->ntargets * (plan->retries + 1) + 1) * sizeof *x->failed);
	x->deadline_at = loop_now() + plan->deadline;
	loop_timer_set(&x->deadline_timer, plan->deadline, on_deadline, x);
	attempt_start(x);
	return 0;
}
