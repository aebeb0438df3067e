/*
 * anthropic.c — Anthropic's Messages API (FORMATS.md §3): POST {base_url}/v1/messages with
 * x-api-key and anthropic-version.
 *
 * The request is translated from the client's OpenAI request in one pass over its tokens
 * (FORMATS.md §3.7): system and developer messages become the top-level `system`; user,
 * assistant and tool messages become alternating turns of content blocks (neighbours of the
 * same role merge, so consecutive tool results form one user turn); tool calls' argument
 * strings are unescaped into `input` objects; tools, tool_choice, sampling, stop and the token
 * limit (required: the provider's default_max_tokens) are renamed. A parameter Anthropic cannot
 * honour is refused with a 400 naming it and the provider, never dropped in silence.
 *
 * The answer comes back as canonical events for the OpenAI emitter (emit_openai.c): text and
 * thinking deltas, tool_use blocks as tool calls (OpenAI numbers them itself; each call's
 * Anthropic block index is kept in x->em.key to route its input_json_delta fragments), the stop
 * reason, and usage — input from message_start (with the cache counts), output a running total
 * from message_delta. An `error` event, first or mid-stream, is a failure in the router's
 * classes.
 */
#include <stdlib.h>
#include <string.h>
#include "adapter.h"
#include "xlate.h"

#define VALUE_SHOWN 60 /* bytes of a refused parameter's value quoted in the 400 */

/* ---- reading JSON ---- */

/* A string token's contents (between the quotes), or any other token's bytes. */
static const char *tp(const struct json *j, int t) { return j->src + j->tok[t].start; }
static size_t tn(const struct json *j, int t) { return (size_t)(j->tok[t].end - j->tok[t].start); }

/* Token t (which may be -1: not found) is the string s. */
static int
eq(const struct json *j, int t, const char *s)
{
	return t >= 0 && json_eq(j, t, s);
}

static int
is_type(const struct json *j, int t, jsmntype_t type)
{
	return t >= 0 && j->tok[t].type == type;
}

/* A key of the object obj whose value is not null, or -1. */
static int
value(const struct json *j, int obj, const char *key)
{
	int t = json_find(j, obj, key);

	return t >= 0 && !json_is_null(j, t) ? t : -1;
}

static int
nonempty_string(const struct json *j, int t)
{
	return is_type(j, t, JSMN_STRING) && tn(j, t) > 0;
}

static int
is_number(const struct json *j, int t)
{
	return is_type(j, t, JSMN_PRIMITIVE) && (tp(j, t)[0] == '-' || (tp(j, t)[0] >= '0' && tp(j, t)[0] <= '9'));
}

static long
number(const struct json *j, int t)
{
	return is_number(j, t) ? strtol(tp(j, t), NULL, 10) : 0;
}

/* The i-th element of the array (or member value of the object) at token t. */
#define EACH(j, t, i, el) \
	for (int i = 0, el = (t) + 1; i < (j)->tok[t].size; i++, el = json_skip(j, el))

/* ---- the request: the encoder's state and its writers ---- */

struct enc {
	struct exchange   *x;
	const struct json *j;
	struct buf        *b;
	int                rc;    /* the first buffer failure (BUF_*), sticky */
	int                bad;   /* refused: x->fail says why */
	const char        *role;  /* the open turn's role, or NULL */
	int                nlist; /* blocks written in a list outside turns (a tool result's content) */
};

static void
putn(struct enc *e, const char *s, size_t n)
{
	if (e->rc == BUF_OK)
		e->rc = buf_append(e->b, s, n);
}

static void
put(struct enc *e, const char *s)
{
	putn(e, s, strlen(s));
}

/* A token as the client wrote it (a string with its quotes). */
static void
put_tok(struct enc *e, int t)
{
	size_t q = e->j->tok[t].type == JSMN_STRING;

	putn(e, tp(e->j, t) - q, tn(e->j, t) + 2 * q);
}

/* A tool id, made to match ^[a-zA-Z0-9_-]+$ as Anthropic requires: every other byte becomes
 * '_' (the same mapping for tool_use.id and tool_result.tool_use_id, so they still pair). */
static void
put_tool_id(struct enc *e, int t)
{
	const char *s = tp(e->j, t);
	size_t n = tn(e->j, t);

	put(e, "\"");
	if (e->rc == BUF_OK && (e->rc = buf_reserve(e->b, n)) == BUF_OK) {
		char *o = e->b->data + e->b->len;
		for (size_t i = 0; i < n; i++) {
			char c = s[i];
			int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
			o[i] = ok ? c : '_';
		}
		e->b->len += n;
	}
	put(e, "\"");
}

static int
refuse(struct enc *e, const char *msg)
{
	const struct cfg_provider *p = e->x->target->provider;

	xc_fail(e->x, FAIL_CLIENT, 400, "unsupported_parameter", "%s (provider '%s', type anthropic)", msg, p->name);
	e->x->fail.type = "invalid_request_error";
	e->bad = 1;
	return -1;
}

/* A parameter Anthropic has no equivalent for. */
static int
unsupported(struct enc *e, const char *key, int t)
{
	const char *q = e->j->tok[t].type == JSMN_STRING ? "\"" : "";
	size_t n = tn(e->j, t);
	char msg[200];

	snprintf(msg, sizeof msg, "'%s' = %s%.*s%s%s is not supported", key, q, (int)(n > VALUE_SHOWN ? VALUE_SHOWN : n),
	    tp(e->j, t), n > VALUE_SHOWN ? "…" : "", q);
	return refuse(e, msg);
}

static int invalid(struct enc *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A value that cannot be translated as it is. */
static int
invalid(struct enc *e, const char *fmt, ...)
{
	char msg[240];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	return refuse(e, msg);
}

/* ---- parameters Anthropic cannot honour: refused unless they ask for the default ---- */

static int
is_one(const struct json *j, int t)
{
	return is_number(j, t) && strtod(tp(j, t), NULL) == 1;
}

static int
is_zero(const struct json *j, int t)
{
	return is_number(j, t) && strtod(tp(j, t), NULL) == 0;
}

static int
is_false(const struct json *j, int t)
{
	return json_eq_literal(j, t, "false");
}

static int
is_never(const struct json *j, int t)
{
	return 0;
}

static int
is_empty_object(const struct json *j, int t)
{
	return is_type(j, t, JSMN_OBJECT) && j->tok[t].size == 0;
}

static int
is_text_only(const struct json *j, int t)
{
	if (!is_type(j, t, JSMN_ARRAY))
		return 0;
	EACH(j, t, i, el)
		if (!eq(j, el, "text"))
			return 0;
	return 1;
}

static int
is_text_format(const struct json *j, int t)
{
	return eq(j, json_find(j, t, "type"), "text");
}

static const struct {
	const char *key;
	int       (*harmless)(const struct json *j, int t);
} unhonoured[] = {
	{ "n", is_one },                   { "logprobs", is_false },         { "top_logprobs", is_zero },
	{ "frequency_penalty", is_zero },  { "presence_penalty", is_zero },  { "seed", is_never },
	{ "logit_bias", is_empty_object }, { "audio", is_never },            { "modalities", is_text_only },
	{ "prediction", is_never },        { "response_format", is_text_format },
	{ "reasoning_effort", is_never },  { "web_search_options", is_never }, { "verbosity", is_never },
	{ "functions", is_never },         { "function_call", is_never },
};

static int
check_params(struct enc *e)
{
	for (size_t i = 0; i < NELEM(unhonoured); i++) {
		int t = value(e->j, 0, unhonoured[i].key);
		if (t >= 0 && !unhonoured[i].harmless(e->j, t))
			return unsupported(e, unhonoured[i].key, t);
	}
	return 0;
}

/* ---- content blocks and turns ---- */

/* Blocks go in a turn ("user", "assistant") or in a list: "system" (the top-level system) and
 * "tool_result" (a tool result's content). */
static int
in_turn(const char *where)
{
	return strcmp(where, "user") == 0 || strcmp(where, "assistant") == 0;
}

/* Where the next block goes: in a turn (a new turn when the role changes — Anthropic wants user
 * and assistant to alternate, so neighbours of one role merge), or in the list being written. */
static void
open_block(struct enc *e, const char *role)
{
	if (!in_turn(role)) {
		put(e, e->nlist++ ? "," : "");
	} else if (e->role != NULL && strcmp(e->role, role) == 0) {
		put(e, ",");
	} else {
		put(e, e->role != NULL ? "]},{\"role\":\"" : "{\"role\":\"");
		put(e, role);
		put(e, "\",\"content\":[");
		e->role = role;
	}
}

static void
text_block(struct enc *e, const char *role, int t)
{
	open_block(e, role);
	put(e, "{\"type\":\"text\",\"text\":");
	put_tok(e, t);
	put(e, "}");
}

/* An image_url part: a base64 `data:` URL (its media type split off) or an http(s) URL. */
static int
image_block(struct enc *e, const char *role, int url, int k)
{
	const char *s = tp(e->j, url), *comma;
	size_t n = tn(e->j, url);
	static const char b64[] = ";base64,";

	if (n > 5 && memcmp(s, "data:", 5) == 0) {
		if ((comma = memmem(s, n, b64, sizeof b64 - 1)) == NULL)
			return invalid(e, "messages[%d]: an image data: URL must be base64", k);
		open_block(e, role);
		put(e, "{\"type\":\"image\",\"source\":{\"type\":\"base64\",\"media_type\":\"");
		putn(e, s + 5, (size_t)(comma - s) - 5);
		put(e, "\",\"data\":\"");
		putn(e, comma + sizeof b64 - 1, n - (size_t)(comma - s) - (sizeof b64 - 1));
		put(e, "\"}}");
		return 0;
	}
	if ((n > 7 && memcmp(s, "http://", 7) == 0) || (n > 8 && memcmp(s, "https://", 8) == 0)) {
		open_block(e, role);
		put(e, "{\"type\":\"image\",\"source\":{\"type\":\"url\",\"url\":");
		put_tok(e, url);
		put(e, "}}");
		return 0;
	}
	return invalid(e, "messages[%d]: an image URL must be a data: URL or http(s)", k);
}

/* One content part of message k: text (empty text is dropped: Anthropic rejects it), an image
 * (user turns and tool results), a refusal (dropped from assistant history). where: a turn's
 * role, "system" or "tool_result". */
static int
part(struct enc *e, const char *role, int p, int k)
{
	const struct json *j = e->j;
	int type = json_find(j, p, "type"), t;

	if (eq(j, type, "text")) {
		t = json_find(j, p, "text");
		if (!is_type(j, t, JSMN_STRING))
			return invalid(e, "messages[%d]: a text part without its text", k);
		if (tn(j, t) > 0)
			text_block(e, role, t);
		return 0;
	}
	if (eq(j, type, "image_url") && (strcmp(role, "user") == 0 || strcmp(role, "tool_result") == 0)) {
		t = json_find(j, p, "image_url");
		if (is_type(j, t, JSMN_OBJECT))
			t = json_find(j, t, "url");
		if (!is_type(j, t, JSMN_STRING))
			return invalid(e, "messages[%d]: an image_url part without its url", k);
		return image_block(e, role, t, k);
	}
	if (eq(j, type, "refusal") && strcmp(role, "assistant") == 0)
		return 0;
	return invalid(e, "messages[%d]: content parts of type '%.*s' are not supported", k,
	    type >= 0 ? (int)tn(j, type) : 4, type >= 0 ? tp(j, type) : "null");
}

/* A message's content: a string, or an array of parts. */
static int
content(struct enc *e, const char *role, int c, int k)
{
	const struct json *j = e->j;

	if (c < 0)
		return 0;
	if (is_type(j, c, JSMN_STRING)) {
		if (tn(j, c) > 0)
			text_block(e, role, c);
		return 0;
	}
	if (!is_type(j, c, JSMN_ARRAY))
		return invalid(e, "messages[%d]: content must be a string or an array of parts", k);
	EACH(j, c, i, p)
		if (part(e, role, p, k) < 0)
			return -1;
	return 0;
}

/* A tool call's arguments (a JSON string holding JSON) unescaped into the body as the tool_use
 * block's input object; empty arguments are {}. */
static int
tool_input(struct enc *e, int args, int k)
{
	const struct json *j = e->j;
	size_t n, o, at;
	char *out;

	if (args < 0) {
		put(e, "{}");
		return 0;
	}
	if (!is_type(j, args, JSMN_STRING))
		return invalid(e, "messages[%d]: tool_calls[].function.arguments must be a string", k);
	n = tn(j, args);
	if (e->rc != BUF_OK || (e->rc = buf_reserve(e->b, n + 8)) != BUF_OK)
		return 0;
	out = e->b->data + e->b->len;
	o = json_unescape(tp(j, args), n, out, n + 8);
	at = json_skip_end(out, 0, o);
	if (at == o) {
		put(e, "{}");
		return 0;
	}
	if (out[at] != '{' || !json_valid(out, o))
		return invalid(e, "messages[%d]: tool_calls[].function.arguments is not a JSON object", k);
	e->b->len += o;
	return 0;
}

static int
tool_use(struct enc *e, int tc, int k)
{
	const struct json *j = e->j;
	int type = value(j, tc, "type"), id = json_find(j, tc, "id"), f = json_find(j, tc, "function");
	int name = json_find(j, f, "name");

	if (type >= 0 && !eq(j, type, "function"))
		return invalid(e, "messages[%d]: tool calls of type '%.*s' are not supported", k, (int)tn(j, type), tp(j, type));
	if (!nonempty_string(j, id) || !nonempty_string(j, name))
		return invalid(e, "messages[%d]: a tool call needs an id and a function name", k);
	open_block(e, "assistant");
	put(e, "{\"type\":\"tool_use\",\"id\":");
	put_tool_id(e, id);
	put(e, ",\"name\":");
	put_tok(e, name);
	put(e, ",\"input\":");
	if (tool_input(e, value(j, f, "arguments"), k) < 0)
		return -1;
	put(e, "}");
	return 0;
}

static int
assistant(struct enc *e, int m, int k)
{
	const struct json *j = e->j;
	int calls = value(j, m, "tool_calls");

	if (content(e, "assistant", value(j, m, "content"), k) < 0)
		return -1;
	if (calls < 0)
		return 0;
	if (!is_type(j, calls, JSMN_ARRAY))
		return invalid(e, "messages[%d]: tool_calls must be an array", k);
	EACH(j, calls, i, tc)
		if (tool_use(e, tc, k) < 0)
			return -1;
	return 0;
}

/* A tool message: a tool_result block in a user turn (consecutive results share one). */
static int
tool_result(struct enc *e, int m, int k)
{
	const struct json *j = e->j;
	int id = json_find(j, m, "tool_call_id"), c = value(j, m, "content");
	size_t mark;

	if (!nonempty_string(j, id))
		return invalid(e, "messages[%d]: a tool message needs its tool_call_id", k);
	open_block(e, "user");
	put(e, "{\"type\":\"tool_result\",\"tool_use_id\":");
	put_tool_id(e, id);
	if (nonempty_string(j, c)) {
		put(e, ",\"content\":");
		put_tok(e, c);
	} else if (is_type(j, c, JSMN_ARRAY)) {
		mark = e->b->len;
		e->nlist = 0;
		put(e, ",\"content\":[");
		if (content(e, "tool_result", c, k) < 0)
			return -1;
		put(e, "]");
		if (e->nlist == 0 && e->rc == BUF_OK)
			e->b->len = mark; /* nothing but empty text */
	} else if (c >= 0 && !is_type(j, c, JSMN_STRING)) {
		return invalid(e, "messages[%d]: content must be a string or an array of parts", k);
	}
	put(e, "}");
	return 0;
}

static int
is_system(const struct json *j, int role)
{
	return eq(j, role, "system") || eq(j, role, "developer");
}

/* "system":[text blocks] from every system and developer message, in order. */
static int
put_system(struct enc *e, int msgs)
{
	const struct json *j = e->j;
	size_t mark = e->b->len;

	e->nlist = 0;
	put(e, ",\"system\":[");
	EACH(j, msgs, k, m)
		if (is_system(j, json_find(j, m, "role")) && content(e, "system", value(j, m, "content"), k) < 0)
			return -1;
	put(e, "]");
	if (e->nlist == 0 && e->rc == BUF_OK)
		e->b->len = mark;
	return 0;
}

static int
put_messages(struct enc *e, int msgs)
{
	const struct json *j = e->j;
	int rc = 0;

	put(e, ",\"messages\":[");
	EACH(j, msgs, k, m) {
		int role = json_find(j, m, "role");

		if (is_system(j, role))
			continue;
		if (eq(j, role, "user"))
			rc = content(e, "user", value(j, m, "content"), k);
		else if (eq(j, role, "assistant"))
			rc = assistant(e, m, k);
		else if (eq(j, role, "tool"))
			rc = tool_result(e, m, k);
		else
			rc = invalid(e, "messages[%d]: the role '%.*s' is not supported", k,
			    role >= 0 ? (int)tn(j, role) : 4, role >= 0 ? tp(j, role) : "null");
		if (rc < 0)
			return -1;
	}
	put(e, e->role != NULL ? "]}]" : "]");
	return 0;
}

/* ---- tools, choice, sampling ---- */

static int
put_tools(struct enc *e)
{
	const struct json *j = e->j;
	int tools = value(j, 0, "tools");

	if (tools < 0 || (is_type(j, tools, JSMN_ARRAY) && j->tok[tools].size == 0))
		return 0;
	if (!is_type(j, tools, JSMN_ARRAY))
		return invalid(e, "'tools' must be an array");
	put(e, ",\"tools\":[");
	EACH(j, tools, i, t) {
		int f = json_find(j, t, "function"), name = json_find(j, f, "name");
		int desc = value(j, f, "description"), params = value(j, f, "parameters");

		if (!eq(j, json_find(j, t, "type"), "function") || !nonempty_string(j, name))
			return invalid(e, "tools[%d]: only function tools with a name are supported", i);
		put(e, i ? ",{\"name\":" : "{\"name\":");
		put_tok(e, name);
		if (desc >= 0) {
			put(e, ",\"description\":");
			put_tok(e, desc);
		}
		put(e, ",\"input_schema\":");
		if (params >= 0)
			put_tok(e, params);
		else
			put(e, "{\"type\":\"object\",\"properties\":{}}");
		put(e, "}");
	}
	put(e, "]");
	return 0;
}

/* tool_choice: auto, none, required (any), a named function (tool); parallel_tool_calls false
 * becomes disable_parallel_tool_use. Without tools there is nothing to choose. */
static int
put_tool_choice(struct enc *e)
{
	const struct json *j = e->j;
	int tc = value(j, 0, "tool_choice"), ptc = value(j, 0, "parallel_tool_calls");
	int tools = value(j, 0, "tools"), single = ptc >= 0 && json_eq_literal(j, ptc, "false"), name = -1;
	const char *type = "auto";

	if (tools < 0 || j->tok[tools].size == 0 || (tc < 0 && !single))
		return 0;
	if (tc >= 0 && eq(j, tc, "auto"))
		type = "auto";
	else if (tc >= 0 && eq(j, tc, "none"))
		type = "none";
	else if (tc >= 0 && eq(j, tc, "required"))
		type = "any";
	else if (tc >= 0 && eq(j, json_find(j, tc, "type"), "function") &&
	    nonempty_string(j, (name = json_find(j, json_find(j, tc, "function"), "name"))))
		type = "tool";
	else if (tc >= 0)
		return unsupported(e, "tool_choice", tc);
	put(e, ",\"tool_choice\":{\"type\":\"");
	put(e, type);
	put(e, "\"");
	if (name >= 0) {
		put(e, ",\"name\":");
		put_tok(e, name);
	}
	if (single && strcmp(type, "none") != 0)
		put(e, ",\"disable_parallel_tool_use\":true");
	put(e, "}");
	return 0;
}

/* max_tokens: max_completion_tokens, else max_tokens, else the provider's default (Anthropic
 * requires one). */
static int
put_max_tokens(struct enc *e)
{
	const struct json *j = e->j;
	const char *key = "max_completion_tokens";
	int t = value(j, 0, key);
	char def[24];

	if (t < 0)
		t = value(j, 0, key = "max_tokens");
	put(e, ",\"max_tokens\":");
	if (t < 0) {
		snprintf(def, sizeof def, "%d", e->x->target->provider->default_max_tokens);
		put(e, def);
		return 0;
	}
	if (!is_type(j, t, JSMN_PRIMITIVE) || strspn(tp(j, t), "0123456789") != tn(j, t))
		return invalid(e, "'%s' must be a positive integer", key);
	put_tok(e, t);
	return 0;
}

/* temperature (Anthropic's range is 0–1: higher values are clamped), top_p, stop. */
static int
put_sampling(struct enc *e)
{
	const struct json *j = e->j;
	int temp = value(j, 0, "temperature"), top_p = value(j, 0, "top_p"), stop = value(j, 0, "stop");

	if ((temp >= 0 && !is_number(j, temp)) || (top_p >= 0 && !is_number(j, top_p)))
		return invalid(e, "'temperature' and 'top_p' must be numbers");
	if (temp >= 0) {
		put(e, ",\"temperature\":");
		if (strtod(tp(j, temp), NULL) > 1)
			put(e, "1");
		else
			put_tok(e, temp);
	}
	if (top_p >= 0) {
		put(e, ",\"top_p\":");
		put_tok(e, top_p);
	}
	if (nonempty_string(j, stop)) {
		put(e, ",\"stop_sequences\":[");
		put_tok(e, stop);
		put(e, "]");
	} else if (is_type(j, stop, JSMN_ARRAY) && j->tok[stop].size > 0) {
		put(e, ",\"stop_sequences\":");
		put_tok(e, stop);
	}
	return 0;
}

static int
encode_body(struct enc *e)
{
	const struct json *j = e->j;
	const char *model = e->x->target->model;
	int msgs = json_find(j, 0, "messages"), user = value(j, 0, "user");

	if (!is_type(j, msgs, JSMN_ARRAY))
		return invalid(e, "'messages' must be an array");
	if (check_params(e) < 0)
		return -1;
	put(e, "{\"model\":");
	if (e->rc == BUF_OK)
		e->rc = json_escape(e->b, model, strlen(model));
	if (put_max_tokens(e) < 0 || put_system(e, msgs) < 0 || put_messages(e, msgs) < 0 || put_tools(e) < 0 ||
	    put_tool_choice(e) < 0 || put_sampling(e) < 0)
		return -1;
	if (nonempty_string(j, user)) {
		put(e, ",\"metadata\":{\"user_id\":");
		put_tok(e, user);
		put(e, "}");
	}
	put(e, e->x->req->stream ? ",\"stream\":true}" : "}");
	return e->rc == BUF_OK ? 0 : -1;
}

static int
encode(struct exchange *x, struct upstream_req *req, struct buf *body)
{
	const struct cfg_provider *p = x->target->provider;
	struct enc e = { .x = x, .j = &x->req->j, .b = body };
	size_t cap = 2 * x->req->len + 64 * 1024; /* blocks and turns can make a request larger */
	struct curl_slist *h = NULL;

	if (body->len == 0 && body->max < cap) {
		buf_free(body);
		buf_init(body, cap);
	}
	if (encode_body(&e) < 0)
		return -1;
	req->url = arena_cat(x->arena, p->base_url, "/v1/messages", (char *)NULL);
	if (p->api_key[0])
		h = curl_slist_append(h, arena_cat(x->arena, "x-api-key: ", p->api_key, (char *)NULL));
	h = curl_slist_append(h, arena_cat(x->arena, "anthropic-version: ",
	    p->api_version[0] ? p->api_version : "2023-06-01", (char *)NULL));
	h = curl_slist_append(h, "content-type: application/json");
	h = curl_slist_append(h, x->req->stream ? "accept: text/event-stream" : "accept: application/json");
	h = curl_slist_append(h, "Expect:");
	for (int i = 0; i < p->nheaders; i++)
		h = curl_slist_append(h, p->headers[i]);
	req->headers = h;
	return req->url != NULL && h != NULL ? 0 : -1;
}

/* ---- the answer: Anthropic's events → canonical events ---- */

/* stop_reason → finish_reason (FORMATS.md §3.6); anything new counts as a plain stop. */
static const char *
finish_reason(const struct json *j, int t)
{
	static const struct { const char *anthropic, *openai; } map[] = {
		{ "max_tokens", "length" }, { "model_context_window_exceeded", "length" },
		{ "tool_use", "tool_calls" }, { "refusal", "content_filter" },
	};

	for (size_t i = 0; i < NELEM(map); i++)
		if (eq(j, t, map[i].anthropic))
			return map[i].openai;
	return "stop"; /* end_turn, stop_sequence, pause_turn */
}

/* Usage: prompt = input + cache reads + cache writes, cached = cache reads, completion = output.
 * Each count is a running total: the largest seen wins, never a sum of two messages'. */
static void
read_usage(struct exchange *x, const struct json *j, int u)
{
	long in, cr, out, prompt = x->usage.prompt, cached = x->usage.cached, completion = x->usage.completion;

	if (!is_type(j, u, JSMN_OBJECT))
		return;
	cr = xl_count(j, json_find(j, u, "cache_read_input_tokens"));
	in = xl_count(j, json_find(j, u, "input_tokens")) + cr + xl_count(j, json_find(j, u, "cache_creation_input_tokens"));
	out = xl_count(j, json_find(j, u, "output_tokens"));
	xc_usage(x, in > prompt ? in : prompt, out > completion ? out : completion, cr > cached ? cr : cached);
}

static int
on_message_start(struct exchange *x, const struct json *j)
{
	read_usage(x, j, json_find(j, json_find(j, 0, "message"), "usage"));
	return 0;
}

/* The emitter's number for the tool call of Anthropic's block, or -1 (not a tool_use block). */
static int
tool_of_block(const struct exchange *x, long block)
{
	for (int i = 0; i < x->em.ntools; i++)
		if (x->em.key[i] == block)
			return i;
	return -1;
}

/* A block starts: a tool_use block is a tool call (text and thinking start with their deltas). */
static int
on_block_start(struct exchange *x, const struct json *j)
{
	int cb = json_find(j, 0, "content_block"), id, name, i;

	if (!eq(j, json_find(j, cb, "type"), "tool_use"))
		return 0; /* text, thinking, redacted_thinking, server tools */
	id = json_find(j, cb, "id");
	name = json_find(j, cb, "name");
	if (!is_type(j, id, JSMN_STRING) || !is_type(j, name, JSMN_STRING))
		return xc_fail(x, FAIL_MALFORMED, 502, "upstream_malformed", "%s: a tool_use block without its id or name",
		    x->target->provider->name);
	if ((i = emit_tool_start(x, tp(j, id), tn(j, id), tp(j, name), tn(j, name))) < 0)
		return -1;
	x->em.key[i] = (int)number(j, json_find(j, 0, "index"));
	return 0;
}

static int
on_block_delta(struct exchange *x, const struct json *j)
{
	int d = json_find(j, 0, "delta"), type = json_find(j, d, "type"), t, i;

	if (eq(j, type, "text_delta") && is_type(j, t = json_find(j, d, "text"), JSMN_STRING))
		return emit_text(x, tp(j, t), tn(j, t));
	if (eq(j, type, "thinking_delta") && is_type(j, t = json_find(j, d, "thinking"), JSMN_STRING))
		return emit_reasoning(x, tp(j, t), tn(j, t));
	if (eq(j, type, "input_json_delta") && is_type(j, t = json_find(j, d, "partial_json"), JSMN_STRING) &&
	    (i = tool_of_block(x, number(j, json_find(j, 0, "index")))) >= 0)
		return emit_tool_args(x, i, tp(j, t), tn(j, t));
	return 0; /* signature_delta, citations_delta, a server tool's input */
}

static int
on_message_delta(struct exchange *x, const struct json *j)
{
	int sr = json_find(j, json_find(j, 0, "delta"), "stop_reason");

	read_usage(x, j, json_find(j, 0, "usage"));
	return is_type(j, sr, JSMN_STRING) ? emit_finish(x, finish_reason(j, sr)) : 0;
}

static int
on_message_stop(struct exchange *x, const struct json *j)
{
	xc_stream_end(x);
	return emit_end(x);
}

/* {"type":"error","error":{"type","message"}}: overloaded, rate-limited and server errors keep
 * their classes (the router retries them before the commit point); anything else is the
 * provider's error event. */
static int
on_error(struct exchange *x, const struct json *j)
{
	static const struct { const char *type; long status; } classes[] = {
		{ "overloaded_error", 529 }, { "rate_limit_error", 429 }, { "api_error", 500 },
	};
	int err = json_find(j, 0, "error"), type = json_find(j, err, "type"), msg = json_find(j, err, "message");
	struct failure f = { .cls = FAIL_PROVIDER, .status = 502 };
	char text[sizeof f.msg];

	for (size_t i = 0; i < NELEM(classes); i++)
		if (eq(j, type, classes[i].type))
			xc_classify_status(classes[i].status, &f);
	if (is_type(j, msg, JSMN_STRING))
		json_unescape(tp(j, msg), tn(j, msg), text, sizeof text);
	else
		snprintf(text, sizeof text, "an error event");
	return xc_fail(x, f.cls, f.status, "upstream_error", "%s: %s", x->target->provider->name, text);
}

static const struct {
	const char *type;
	int       (*fn)(struct exchange *x, const struct json *j);
} handlers[] = {
	{ "content_block_delta", on_block_delta }, { "content_block_start", on_block_start },
	{ "message_start", on_message_start },     { "message_delta", on_message_delta },
	{ "message_stop", on_message_stop },       { "error", on_error },
};

/* One event, dispatched on the payload's own "type" (ping, content_block_stop and types not
 * known yet need nothing). */
static int
stream_event(struct exchange *x, const struct sse_event *ev)
{
	struct json j;
	int type;

	if (xc_json(x, &j, ev->data, ev->data_len) <= 0 || j.tok[0].type != JSMN_OBJECT)
		return xc_fail(x, FAIL_MALFORMED, 502, "upstream_malformed",
		    "%s sent a stream event that is not a JSON object", x->target->provider->name);
	type = json_find(&j, 0, "type");
	for (size_t i = 0; i < NELEM(handlers); i++)
		if (eq(&j, type, handlers[i].type))
			return handlers[i].fn(x, &j);
	return 0;
}

/* One content block of a whole Message. */
static int
whole_block(struct exchange *x, const struct json *j, int b)
{
	int type = json_find(j, b, "type"), t, id, name, input, i;

	if (eq(j, type, "text") && is_type(j, t = json_find(j, b, "text"), JSMN_STRING))
		return emit_text(x, tp(j, t), tn(j, t));
	if (eq(j, type, "thinking") && is_type(j, t = json_find(j, b, "thinking"), JSMN_STRING))
		return emit_reasoning(x, tp(j, t), tn(j, t));
	if (!eq(j, type, "tool_use"))
		return 0;
	id = json_find(j, b, "id");
	name = json_find(j, b, "name");
	input = json_find(j, b, "input");
	if (!is_type(j, id, JSMN_STRING) || !is_type(j, name, JSMN_STRING) || input < 0)
		return xc_fail(x, FAIL_MALFORMED, 502, "upstream_malformed", "%s: a tool_use block without its id, name or input",
		    x->target->provider->name);
	if ((i = emit_tool_start(x, tp(j, id), tn(j, id), tp(j, name), tn(j, name))) < 0)
		return -1;
	return emit_tool_args_json(x, i, tp(j, input) - (j->tok[input].type == JSMN_STRING),
	    tn(j, input) + 2 * (j->tok[input].type == JSMN_STRING));
}

/* A whole Message: the same events, then one chat.completion. */
static int
response(struct exchange *x, const char *p, size_t n)
{
	struct json j;
	int blocks, sr;

	if (xc_json(x, &j, p, n) <= 0 || j.tok[0].type != JSMN_OBJECT)
		return xc_fail(x, FAIL_MALFORMED, 502, "upstream_malformed",
		    "%s answered with something that is not a JSON object", x->target->provider->name);
	if (eq(&j, json_find(&j, 0, "type"), "error"))
		return on_error(x, &j);
	read_usage(x, &j, json_find(&j, 0, "usage"));
	blocks = json_find(&j, 0, "content");
	if (is_type(&j, blocks, JSMN_ARRAY))
		EACH(&j, blocks, i, b)
			if (whole_block(x, &j, b) < 0)
				return -1;
	sr = json_find(&j, 0, "stop_reason");
	if (is_type(&j, sr, JSMN_STRING) && emit_finish(x, finish_reason(&j, sr)) < 0)
		return -1;
	return emit_end(x);
}

/* An error status: its class, and the message from {"type":"error","error":{"type","message"}}.
 * An overloaded_error is the overloaded class whatever the status says. */
static void
error(struct exchange *x, long status, const char *p, size_t n, struct failure *f)
{
	jsmntok_t toks[256];
	struct buf store = { .data = (char *)toks, .size = sizeof toks, .max = sizeof toks };
	struct json j;

	xc_classify_status(status, f);
	xc_error_message(p, n, f);
	if (json_parse_buf(&j, &store, p, n) > 0 &&
	    eq(&j, json_find(&j, json_find(&j, 0, "error"), "type"), "overloaded_error"))
		f->cls = FAIL_529;
}

const struct adapter adapter_anthropic = {
	.name = "anthropic",
	.end_marker = 1, /* message_stop */
	.encode = encode,
	.stream_event = stream_event,
	.response = response,
	.error = error,
};
