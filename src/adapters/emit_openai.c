/*
 * emit_openai.c — canonical events → OpenAI's shapes (DESIGN.md §2, FORMATS.md §1.4–1.5).
 *
 * A stream: each event becomes one chat.completion.chunk, built in x->scratch (reused: no
 * allocation per chunk once it has grown) and handed to xc_chunk() with the flags the commit
 * point needs — the role chunk none (it is preamble, held), deltas CHUNK_CONTENT, the finish
 * CHUNK_FINISH, the usage chunk CHUNK_USAGE_ONLY. Provider bytes (already-escaped JSON string
 * contents) go out as their own part, never copied into scratch.
 *
 * A whole answer: content, reasoning and the tool calls accumulate in x->em's buffers (the
 * calls as the JSON of OpenAI's tool_calls array, each call's arguments growing in place), and
 * emit_end() writes one chat.completion into x->scratch, which lives until the request ends.
 *
 * Every chunk of an exchange has the same id and `created` (x->em.id, x->em.created).
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "adapter.h"

#define WHOLE_SLACK 4096 /* the chat.completion around its content, tool calls and usage */

static const char CHOICE[] = ",\"choices\":[{\"index\":0,\"delta\":";
static const char TAIL[] = ",\"logprobs\":null,\"finish_reason\":null}]}";

/* ---- small writers ---- */

static int
put_uint(struct buf *b, unsigned long v)
{
	char d[21];

	return buf_puts(b, u64_dec(d, v));
}

static int
put_long(struct buf *b, long v)
{
	return v < 0 ? buf_puts(b, "0") : put_uint(b, (unsigned long)v);
}

/*
 * A whole JSON value (valid, as parsed from the provider) written as the contents of a JSON
 * string: whitespace between tokens dropped, '"' and '\' escaped. Inside the value's own
 * strings every byte is kept (their escapes become escaped escapes).
 */
static int
put_value_as_string(struct buf *b, const char *s, size_t n)
{
	int in_str = 0, rc = buf_reserve(b, 2 * n);
	char *o;

	if (rc != BUF_OK)
		return rc;
	o = b->data + b->len;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];

		if (!in_str && (c == ' ' || c == '\t' || c == '\n' || c == '\r'))
			continue;
		if (c == '"') {
			in_str = !in_str;
			*o++ = '\\';
		} else if (c == '\\') {
			*o++ = '\\';
			*o++ = '\\';
			if (i + 1 == n)
				break;
			c = s[++i]; /* the escaped character: a quote or a backslash needs its own escape */
			if (c == '"' || c == '\\')
				*o++ = '\\';
		}
		*o++ = c;
	}
	b->len = (size_t)(o - b->data);
	return BUF_OK;
}

/* Reverse s[0..n). */
static void
reverse(char *s, size_t n)
{
	for (size_t i = 0, k = n; i + 1 < k; i++, k--) {
		char t = s[i];
		s[i] = s[k - 1];
		s[k - 1] = t;
	}
}

/* The last m bytes of b move to offset at (the bytes after at follow them). */
static void
move_tail_to(struct buf *b, size_t at, size_t m)
{
	size_t keep = b->len - m - at;

	if (keep == 0 || m == 0)
		return;
	reverse(b->data + at, keep);
	reverse(b->data + at + keep, m);
	reverse(b->data + at, keep + m);
}

/* A buffer failure: out of memory (the gateway's 503) or a translation past its cap. */
static int
no_room(struct exchange *x, int rc)
{
	if (rc == BUF_NOMEM) {
		xc_fail(x, FAIL_CLIENT, 503, "overloaded", "the gateway is out of memory; retry shortly");
		x->fail.type = "server_error";
		return -1;
	}
	return xc_fail(x, FAIL_TOO_LARGE, 502, "upstream_response_too_large",
	    "%s: the answer is too large to translate", x->target->provider->name);
}

/* ---- the exchange's identity ---- */

static void
identity(struct exchange *x)
{
	static uint64_t seed, seq;
	struct emit_state *e = &x->em;
	uint64_t v;
	struct buf created = { e->created, 0, sizeof e->created - 1, sizeof e->created - 1 };
	time_t now;

	if (e->id[0] != '\0')
		return;
	now = time(NULL);
	if (seed == 0)
		seed = splitmix64((uint64_t)now ^ loop_clock_ms() << 20);
	v = splitmix64(seed + ++seq);
	memcpy(e->id, "chatcmpl-", 9);
	u64_hex(e->id + 9, v);
	e->id[25] = '\0';
	put_uint(&created, (unsigned long)now);
	e->created[created.len] = '\0';
}

/* ---- a stream: one chunk per event ---- */

/* {"id":"…","object":"OBJECT","created":N,"model":M — the start of every chunk and answer. */
static int
put_head(struct exchange *x, struct buf *b, const char *object)
{
	int rc;

	identity(x);
	rc = buf_puts(b, "{\"id\":\"");
	rc = rc ? rc : buf_puts(b, x->em.id);
	rc = rc ? rc : buf_puts(b, "\",\"object\":\"");
	rc = rc ? rc : buf_puts(b, object);
	rc = rc ? rc : buf_puts(b, "\",\"created\":");
	rc = rc ? rc : buf_puts(b, x->em.created);
	rc = rc ? rc : buf_puts(b, ",\"model\":");
	return rc ? rc : buf_append(b, x->public_model, x->public_model_len);
}

/* Start a chunk in scratch: the head and, unless delta is NULL, the start of the delta's value.
 * The head is the same for every chunk of the exchange: built once, then left in place, since
 * in a stream scratch holds nothing but chunks, each begun by it (appends never touch what is
 * there, growing keeps it): only its length is kept. */
static int
chunk_open_n(struct exchange *x, const char *delta, size_t deltan)
{
	struct emit_state *e = &x->em;
	struct buf *b = &x->scratch;
	int rc = BUF_OK;

	if (e->head_len == 0) {
		buf_reset(b);
		rc = put_head(x, b, "chat.completion.chunk");
		if (rc == BUF_OK)
			e->head_len = b->len;
	} else {
		b->len = e->head_len; /* the head, still there */
	}
	if (delta != NULL) {
		rc = rc ? rc : buf_append(b, CHOICE, sizeof CHOICE - 1);
		rc = rc ? rc : buf_append(b, delta, deltan);
	}
	return rc;
}

/* Callers pass literals: inline, so that their lengths are known when compiled. */
static inline __attribute__((always_inline)) int
chunk_open(struct exchange *x, const char *delta)
{
	return chunk_open_n(x, delta, delta != NULL ? strlen(delta) : 0);
}

/* Send the chunk: scratch, then the provider's bytes s, then close and the choice's tail. */
static int
chunk_send_n(struct exchange *x, const char *s, size_t n, const char *close, size_t closen, unsigned flags)
{
	struct iovec v[4] = {
		{ x->scratch.data, x->scratch.len }, { (void *)s, n },
		{ (void *)close, closen }, { (void *)TAIL, sizeof TAIL - 1 },
	};

	return xc_chunk(x, v, 4, flags);
}

static inline __attribute__((always_inline)) int
chunk_send(struct exchange *x, const char *s, size_t n, const char *close, unsigned flags)
{
	return chunk_send_n(x, s, n, close, strlen(close), flags);
}

/* The role chunk, once, before the first delta: preamble, held until content comes. */
static int
role(struct exchange *x)
{
	int rc;

	if (x->em.role_sent)
		return 0;
	x->em.role_sent = 1;
	if ((rc = chunk_open(x, "{\"role\":\"assistant\",\"content\":\"\"}")) != BUF_OK)
		return no_room(x, rc);
	return chunk_send(x, "", 0, "", 0);
}

/* A delta whose one string field is the provider's escaped bytes s: {"field":"s"}. */
static inline __attribute__((always_inline)) int
string_delta(struct exchange *x, const char *open, const char *s, size_t n)
{
	int rc;

	if (role(x) < 0)
		return -1;
	if ((rc = chunk_open(x, open)) != BUF_OK)
		return no_room(x, rc);
	return chunk_send(x, s, n, "\"}", CHUNK_CONTENT);
}

/* Open a tool-call delta for call i: {"tool_calls":[{"index":i */
static int
tool_open(struct exchange *x, int i)
{
	int rc = chunk_open(x, "{\"tool_calls\":[{\"index\":");

	return rc ? rc : put_uint(&x->scratch, (unsigned)i);
}

/* ---- a whole answer: accumulate ---- */

/* A whole answer's buffer gets its cap on first use: what the provider's answer can hold, twice
 * (a tool call's input grows when it becomes an escaped arguments string). */
static void
whole_ready(struct exchange *x, struct buf *b)
{
	if (b->max == 0)
		buf_init(b, 2 * x->target->provider->max_response_body + WHOLE_SLACK);
}

static int
whole_append(struct exchange *x, struct buf *b, const char *s, size_t n)
{
	int rc;

	whole_ready(x, b);
	if ((rc = buf_append(b, s, n)) != BUF_OK)
		return no_room(x, rc);
	return 0;
}

/* The last m bytes of the tools buffer are arguments of call i: move them into place. */
static void
args_place(struct exchange *x, int i, size_t m)
{
	struct emit_state *e = &x->em;

	move_tail_to(&e->tools, e->args_end[i], m);
	for (int k = i; k < e->ntools; k++)
		e->args_end[k] += m;
}

/* ---- the events ---- */

int
emit_text(struct exchange *x, const char *s, size_t n)
{
	if (n == 0)
		return 0;
	if (!x->req->stream)
		return whole_append(x, &x->em.content, s, n);
	return string_delta(x, "{\"content\":\"", s, n);
}

int
emit_reasoning(struct exchange *x, const char *s, size_t n)
{
	if (n == 0)
		return 0;
	if (!x->req->stream)
		return whole_append(x, &x->em.reasoning, s, n);
	return string_delta(x, "{\"reasoning_content\":\"", s, n);
}

/* A call without an id from its provider gets one from the exchange's: call_<id>_<index>. */
static int
put_tool_id(struct exchange *x, struct buf *b, const char *id, size_t idn, int i)
{
	int rc;

	if (idn > 0)
		return buf_append(b, id, idn);
	identity(x);
	rc = buf_puts(b, "call_");
	rc = rc ? rc : buf_puts(b, x->em.id + strlen("chatcmpl-"));
	rc = rc ? rc : buf_puts(b, "_");
	return rc ? rc : put_uint(b, (unsigned)i);
}

/* {"id":"…","type":"function","function":{"name":"…","arguments":" — the call's opening. */
static int
put_call_open(struct exchange *x, struct buf *b, int i, const char *id, size_t idn, const char *name, size_t namen)
{
	int rc = buf_puts(b, "\"id\":\"");

	rc = rc ? rc : put_tool_id(x, b, id, idn, i);
	rc = rc ? rc : buf_puts(b, "\",\"type\":\"function\",\"function\":{\"name\":\"");
	rc = rc ? rc : buf_append(b, name, namen);
	return rc ? rc : buf_puts(b, "\",\"arguments\":\"");
}

int
emit_tool_start(struct exchange *x, const char *id, size_t idn, const char *name, size_t namen)
{
	struct emit_state *e = &x->em;
	int i = e->ntools, rc;

	if (i == EMIT_MAX_TOOLS)
		return xc_fail(x, FAIL_MALFORMED, 502, "upstream_malformed", "%s: more than %d tool calls in one answer",
		    x->target->provider->name, EMIT_MAX_TOOLS);
	if (e->key == NULL) {
		e->key = arena_alloc(x->arena, EMIT_MAX_TOOLS * (sizeof *e->key + sizeof *e->args_end));
		if (e->key == NULL)
			return no_room(x, BUF_NOMEM);
		e->args_end = (size_t *)(void *)(e->key + EMIT_MAX_TOOLS); /* 16-aligned base, 512 B in */
	}
	e->ntools++;
	e->key[i] = -1;
	if (!x->req->stream) {
		whole_ready(x, &e->tools);
		rc = buf_puts(&e->tools, i ? ",{" : "{");
		rc = rc ? rc : put_call_open(x, &e->tools, i, id, idn, name, namen);
		e->args_end[i] = e->tools.len;
		rc = rc ? rc : buf_puts(&e->tools, "\"}}");
		return rc ? no_room(x, rc) : i;
	}
	if (role(x) < 0)
		return -1;
	rc = tool_open(x, i);
	rc = rc ? rc : buf_puts(&x->scratch, ",");
	rc = rc ? rc : put_call_open(x, &x->scratch, i, id, idn, name, namen);
	if (rc != BUF_OK)
		return no_room(x, rc);
	return chunk_send(x, "", 0, "\"}}]}", CHUNK_CONTENT) < 0 ? -1 : i;
}

static int
check_index(struct exchange *x, int i)
{
	if (i >= 0 && i < x->em.ntools)
		return 0;
	return xc_fail(x, FAIL_MALFORMED, 502, "upstream_malformed", "%s: arguments for a tool call that never started",
	    x->target->provider->name);
}

int
emit_tool_args(struct exchange *x, int i, const char *s, size_t n)
{
	int rc;

	if (check_index(x, i) < 0)
		return -1;
	if (n == 0)
		return 0;
	if (!x->req->stream) {
		if ((rc = buf_append(&x->em.tools, s, n)) != BUF_OK)
			return no_room(x, rc);
		args_place(x, i, n);
		return 0;
	}
	rc = tool_open(x, i);
	rc = rc ? rc : buf_puts(&x->scratch, ",\"function\":{\"arguments\":\"");
	if (rc != BUF_OK)
		return no_room(x, rc);
	return chunk_send(x, s, n, "\"}}]}", CHUNK_CONTENT);
}

int
emit_tool_args_json(struct exchange *x, int i, const char *json, size_t n)
{
	size_t before;
	int rc;

	if (check_index(x, i) < 0)
		return -1;
	if (!x->req->stream) {
		before = x->em.tools.len;
		if ((rc = put_value_as_string(&x->em.tools, json, n)) != BUF_OK)
			return no_room(x, rc);
		args_place(x, i, x->em.tools.len - before);
		return 0;
	}
	rc = tool_open(x, i);
	rc = rc ? rc : buf_puts(&x->scratch, ",\"function\":{\"arguments\":\"");
	rc = rc ? rc : put_value_as_string(&x->scratch, json, n);
	if (rc != BUF_OK)
		return no_room(x, rc);
	return chunk_send(x, "", 0, "\"}}]}", CHUNK_CONTENT);
}

int
emit_finish(struct exchange *x, const char *reason)
{
	int rc;

	if (x->em.finish != NULL)
		return 0; /* the first finish counts */
	x->em.finish = reason;
	if (!x->req->stream)
		return 0;
	if (role(x) < 0)
		return -1;
	rc = chunk_open(x, "{},\"logprobs\":null,\"finish_reason\":\"");
	rc = rc ? rc : buf_puts(&x->scratch, reason);
	rc = rc ? rc : buf_puts(&x->scratch, "\"}]}");
	if (rc != BUF_OK)
		return no_room(x, rc);
	{
		struct iovec v = { x->scratch.data, x->scratch.len };
		return xc_chunk(x, &v, 1, CHUNK_FINISH);
	}
}

/* "usage":{…} from x->usage. */
static int
put_usage(struct buf *b, const struct usage *u)
{
	int rc = buf_puts(b, ",\"usage\":{\"prompt_tokens\":");

	rc = rc ? rc : put_long(b, u->prompt);
	rc = rc ? rc : buf_puts(b, ",\"completion_tokens\":");
	rc = rc ? rc : put_long(b, u->completion);
	rc = rc ? rc : buf_puts(b, ",\"total_tokens\":");
	rc = rc ? rc : put_long(b, u->prompt + u->completion);
	rc = rc ? rc : buf_puts(b, ",\"prompt_tokens_details\":{\"cached_tokens\":");
	rc = rc ? rc : put_long(b, u->cached);
	return rc ? rc : buf_puts(b, "}}");
}

/* A stream's last chunk: `"choices":[]` and the usage (the exchange drops it if not asked for). */
static int
end_stream(struct exchange *x)
{
	struct iovec v;
	int rc;

	if (!x->usage.seen)
		return 0;
	rc = chunk_open(x, NULL);
	rc = rc ? rc : buf_puts(&x->scratch, ",\"choices\":[]");
	rc = rc ? rc : put_usage(&x->scratch, &x->usage);
	rc = rc ? rc : buf_puts(&x->scratch, "}");
	if (rc != BUF_OK)
		return no_room(x, rc);
	v.iov_base = x->scratch.data;
	v.iov_len = x->scratch.len;
	return xc_chunk(x, &v, 1, CHUNK_USAGE_ONLY);
}

/* "content":"…"|null[,"reasoning_content":"…"][,"tool_calls":[…]] */
static int
put_message(struct buf *b, const struct emit_state *e)
{
	int rc = buf_puts(b, "\"content\":");

	if (e->content.len > 0) {
		rc = rc ? rc : buf_puts(b, "\"");
		rc = rc ? rc : buf_append(b, e->content.data, e->content.len);
		rc = rc ? rc : buf_puts(b, "\"");
	} else {
		rc = rc ? rc : buf_puts(b, "null");
	}
	if (e->reasoning.len > 0) {
		rc = rc ? rc : buf_puts(b, ",\"reasoning_content\":\"");
		rc = rc ? rc : buf_append(b, e->reasoning.data, e->reasoning.len);
		rc = rc ? rc : buf_puts(b, "\"");
	}
	if (e->ntools > 0) {
		rc = rc ? rc : buf_puts(b, ",\"tool_calls\":[");
		rc = rc ? rc : buf_append(b, e->tools.data, e->tools.len);
		rc = rc ? rc : buf_puts(b, "]");
	}
	return rc;
}

/* A whole answer: one chat.completion in scratch (it lives until the request ends). */
static int
end_whole(struct exchange *x)
{
	struct emit_state *e = &x->em;
	struct buf *b = &x->scratch;
	size_t need = e->content.len + e->reasoning.len + e->tools.len + x->public_model_len + WHOLE_SLACK;
	struct iovec v;
	int rc;

	if (b->max < need) {
		buf_free(b);
		buf_init(b, need);
	}
	buf_reset(b);
	rc = put_head(x, b, "chat.completion");
	rc = rc ? rc : buf_puts(b, ",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",");
	rc = rc ? rc : put_message(b, e);
	rc = rc ? rc : buf_puts(b, "},\"logprobs\":null,\"finish_reason\":");
	if (e->finish != NULL) {
		rc = rc ? rc : buf_puts(b, "\"");
		rc = rc ? rc : buf_puts(b, e->finish);
		rc = rc ? rc : buf_puts(b, "\"}]");
	} else {
		rc = rc ? rc : buf_puts(b, "null}]");
	}
	if (x->usage.seen)
		rc = rc ? rc : put_usage(b, &x->usage);
	rc = rc ? rc : buf_puts(b, "}");
	if (rc != BUF_OK)
		return no_room(x, rc);
	v.iov_base = b->data;
	v.iov_len = b->len;
	return xc_body(x, &v, 1);
}

int
emit_end(struct exchange *x)
{
	if (x->em.ended)
		return 0;
	x->em.ended = 1;
	return x->req->stream ? end_stream(x) : end_whole(x);
}

void
emit_release(struct exchange *x)
{
	struct emit_state *e = &x->em;

	buf_free(&e->content);
	buf_free(&e->reasoning);
	buf_free(&e->tools);
	e->role_sent = e->ntools = e->ended = 0;
	e->finish = NULL;
}
