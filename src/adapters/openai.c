/*
 * openai.c — OpenAI and every OpenAI-compatible server (vLLM, llama.cpp, Groq, Together,
 * Mistral, DeepSeek, OpenRouter, Ollama's /v1). Nothing to translate: the request goes out as
 * the client wrote it with `model` replaced (and, for streams, usage asked for), and each chunk
 * comes back byte for byte with only `model` rewritten to the name the client used — fields
 * sluice does not know (logprobs, system_fingerprint, …) pass untouched.
 */
#include <stdlib.h>
#include <string.h>
#include "adapter.h"
#include "xlate.h"

/* One edit of the client's body: bytes [from, to) become text. */
struct splice {
	size_t      from, to;
	const char *text;
	size_t      len;
};

static int
apply_splices(struct buf *out, const char *src, size_t len, const struct splice *s, int n)
{
	size_t at = 0;
	int rc = BUF_OK;

	for (int i = 0; i < n && rc == BUF_OK; i++) {
		rc = buf_append(out, src + at, s[i].from - at);
		rc = rc ? rc : buf_append(out, s[i].text, s[i].len);
		at = s[i].to;
	}
	return rc ? rc : buf_append(out, src + at, len - at);
}

/* Where a token's text begins and ends in the source (a string's with its quotes). */
static size_t tok_from(const jsmntok_t *t) { return (size_t)t->start - (t->type == JSMN_STRING); }
static size_t tok_to(const jsmntok_t *t) { return (size_t)t->end + (t->type == JSMN_STRING); }

/* The request as the client wrote it, with `model` replaced and, on a stream, usage asked for
 * (stream_options.include_usage forced true; the exchange strips the usage chunk again if the
 * client did not ask). Splices are in source order. Azure's adapter sends the same body. */
int
openai_encode_body(struct exchange *x, struct buf *body)
{
	const struct chat_req *r = x->req;
	const jsmntok_t *tok = r->j.tok;
	struct splice s[2];
	char model[512];
	struct buf m = { .data = model, .size = sizeof model, .max = sizeof model };
	int n = 0;

	if (json_escape(&m, x->target->model, strlen(x->target->model)) != BUF_OK)
		return -1;
	s[n++] = (struct splice){ tok_from(&tok[r->model]), tok_to(&tok[r->model]), m.data, m.len };
	if (r->stream) {
		if (r->stream_options < 0) {
			static const char add[] = ",\"stream_options\":{\"include_usage\":true}";
			size_t close = (size_t)tok[0].end - 1; /* the root object's '}' */
			s[n++] = (struct splice){ close, close, add, sizeof add - 1 };
		} else {
			int iu = json_find(&r->j, r->stream_options, "include_usage");
			if (iu >= 0) {
				s[n++] = (struct splice){ tok_from(&tok[iu]), tok_to(&tok[iu]), "true", 4 };
			} else {
				size_t open = (size_t)tok[r->stream_options].start + 1;
				const char *add = tok[r->stream_options].size ? "\"include_usage\":true," : "\"include_usage\":true";
				s[n++] = (struct splice){ open, open, add, strlen(add) };
			}
		}
		if (n == 2 && s[1].from < s[0].from) {
			struct splice t = s[0];
			s[0] = s[1];
			s[1] = t;
		}
	}
	return apply_splices(body, r->body, r->len, s, n) == BUF_OK ? 0 : -1;
}

static int
encode(struct exchange *x, struct upstream_req *req, struct buf *body)
{
	const struct cfg_provider *p = x->target->provider;
	struct curl_slist *h = NULL;

	if (openai_encode_body(x, body) < 0)
		return -1;
	req->url = arena_cat(x->arena, p->base_url, "/chat/completions", (char *)NULL);
	if (p->api_key[0])
		h = curl_slist_append(h, arena_cat(x->arena, "Authorization: Bearer ", p->api_key, (char *)NULL));
	h = curl_slist_append(h, "Content-Type: application/json");
	h = curl_slist_append(h, x->req->stream ? "Accept: text/event-stream" : "Accept: application/json");
	h = curl_slist_append(h, "Expect:"); /* no 100-continue round trip for large bodies */
	for (int i = 0; i < p->nheaders; i++)
		h = curl_slist_append(h, p->headers[i]);
	req->headers = h;
	return req->url != NULL && h != NULL ? 0 : -1;
}

/* A string value that is present and not empty. */
static int
nonempty_string(const struct json *j, int t)
{
	return t >= 0 && j->tok[t].type == JSMN_STRING && j->tok[t].end > j->tok[t].start;
}

static int
present(const struct json *j, int t)
{
	return t >= 0 && !json_is_null(j, t);
}

/* Usage from a chunk or a whole answer: {prompt_tokens, completion_tokens,
 * prompt_tokens_details.cached_tokens}. */
static void
read_usage(struct exchange *x, const struct json *j, int u)
{
	int details;

	if (u < 0 || j->tok[u].type != JSMN_OBJECT)
		return;
	details = json_find(j, u, "prompt_tokens_details");
	xc_usage(x, xl_count(j, json_find(j, u, "prompt_tokens")), xl_count(j, json_find(j, u, "completion_tokens")),
	    xl_count(j, json_find(j, details, "cached_tokens")));
}

/* What a chunk carries: content (commits), a finish, or only usage. Each object's fields are
 * read in one walk over its keys. */
static unsigned
chunk_flags(const struct json *j, int choices)
{
	static const struct json_key choice_keys[] = { JSON_KEY("delta"), JSON_KEY("finish_reason") };
	enum { D_CONTENT, D_TOOL_CALLS, D_REASONING_CONTENT, D_REASONING, D_REFUSAL, D_FUNCTION_CALL, D_N };
	static const struct json_key delta_keys[D_N] = { JSON_KEY("content"), JSON_KEY("tool_calls"),
	    JSON_KEY("reasoning_content"), JSON_KEY("reasoning"), JSON_KEY("refusal"), JSON_KEY("function_call") };
	unsigned flags = 0;
	int c;

	if (choices < 0 || j->tok[choices].type != JSMN_ARRAY)
		return 0;
	if (j->tok[choices].size == 0)
		return CHUNK_USAGE_ONLY;
	c = choices + 1;
	for (int k = 0; k < j->tok[choices].size; k++, c = json_skip(j, c)) {
		int cv[NELEM(choice_keys)], d[D_N];

		json_fields(j, c, choice_keys, NELEM(choice_keys), cv);
		if (present(j, cv[1]))
			flags |= CHUNK_FINISH;
		json_fields(j, cv[0], delta_keys, D_N, d);
		if (nonempty_string(j, d[D_CONTENT]) || present(j, d[D_TOOL_CALLS]) ||
		    nonempty_string(j, d[D_REASONING_CONTENT]) || nonempty_string(j, d[D_REASONING]) ||
		    nonempty_string(j, d[D_REFUSAL]) || present(j, d[D_FUNCTION_CALL]))
			flags |= CHUNK_CONTENT;
	}
	return flags;
}

/* The chunk's bytes with the value m of `model` (-1: none) rewritten: up to three parts,
 * nothing copied. */
static int
rewrite_model(struct exchange *x, const struct json *j, int m, const char *p, size_t n, struct iovec v[3])
{
	size_t from, to;

	if (m < 0) {
		v[0].iov_base = (void *)p;
		v[0].iov_len = n;
		return 1;
	}
	from = tok_from(&j->tok[m]);
	to = tok_to(&j->tok[m]);
	v[0].iov_base = (void *)p;
	v[0].iov_len = from;
	v[1].iov_base = (void *)x->public_model;
	v[1].iov_len = x->public_model_len;
	v[2].iov_base = (void *)(p + to);
	v[2].iov_len = n - to;
	return 3;
}

/* A chunk's or an answer's top-level fields, in one walk. */
enum { TOP_ERROR, TOP_USAGE, TOP_CHOICES, TOP_MODEL, TOP_N };

static void
top_fields(const struct json *j, int *v)
{
	static const struct json_key keys[TOP_N] = { JSON_KEY("error"), JSON_KEY("usage"), JSON_KEY("choices"),
	    JSON_KEY("model") };

	json_fields(j, 0, keys, TOP_N, v);
}

static int
stream_event(struct exchange *x, const struct sse_event *ev)
{
	struct iovec v[3];
	struct json j;
	int top[TOP_N], nv;
	unsigned flags;

	if (ev->data_len == 6 && memcmp(ev->data, "[DONE]", 6) == 0) {
		xc_stream_end(x);
		return 0;
	}
	if (xc_json(x, &j, ev->data, ev->data_len) <= 0 || j.tok[0].type != JSMN_OBJECT)
		return xc_fail(x, FAIL_MALFORMED, 502, "upstream_malformed",
		    "%s sent a stream event that is not a JSON object", x->target->provider->name);
	if (ev->joined != NULL) /* its '\n's, whitespace between tokens, would end our one data line */
		for (char *nl = ev->joined; (nl = memchr(nl, '\n', ev->data_len - (size_t)(nl - ev->joined))) != NULL;)
			*nl++ = ' ';
	top_fields(&j, top);
	if (present(&j, top[TOP_ERROR])) {
		struct failure f = { .cls = FAIL_PROVIDER };
		xc_error_message(ev->data, ev->data_len, &f);
		return xc_fail(x, FAIL_PROVIDER, 502, "upstream_error", "%s: %s", x->target->provider->name, f.msg);
	}
	read_usage(x, &j, top[TOP_USAGE]);
	flags = chunk_flags(&j, top[TOP_CHOICES]);
	if ((flags & CHUNK_USAGE_ONLY) && !present(&j, top[TOP_USAGE]))
		flags = 0; /* Azure's first chunk: no choices, no usage, content-filter results */
	nv = rewrite_model(x, &j, top[TOP_MODEL], ev->data, ev->data_len, v);
	return xc_chunk(x, v, nv, flags);
}

static int
response(struct exchange *x, const char *p, size_t n)
{
	struct iovec v[3];
	struct json j;
	int top[TOP_N];

	if (xc_json(x, &j, p, n) <= 0 || j.tok[0].type != JSMN_OBJECT)
		return xc_fail(x, FAIL_MALFORMED, 502, "upstream_malformed",
		    "%s answered with something that is not a JSON object", x->target->provider->name);
	top_fields(&j, top);
	if (present(&j, top[TOP_ERROR])) {
		struct failure f;
		xc_error_message(p, n, &f);
		return xc_fail(x, FAIL_PROVIDER, 502, "upstream_error", "%s: %s", x->target->provider->name, f.msg);
	}
	read_usage(x, &j, top[TOP_USAGE]);
	return xc_body(x, v, rewrite_model(x, &j, top[TOP_MODEL], p, n, v));
}

const struct adapter adapter_openai = {
	.name = "openai",
	.encode = encode,
	.stream_event = stream_event,
	.response = response,
	.error = xc_error_default,
};
