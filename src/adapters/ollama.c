/*
 * ollama.c — Ollama's native chat API (POST {base_url}/api/chat; FORMATS.md §5). For Ollama's
 * OpenAI-compatible /v1 use type openai instead.
 *
 * REQUEST. {"model", "messages", "stream" (always written: Ollama streams by default),
 * "options", "format", "tools"}. Messages keep their roles (developer → system); content is a
 * string (text parts joined with "\n"); image_url parts with data: URLs → the message's
 * `images` (bare base64; Ollama takes no image URLs: those are refused with a 400); assistant
 * tool_calls → tool_calls with `arguments` decoded into an object; tool messages carry
 * `tool_name`, the function named by the earlier assistant call their tool_call_id points to.
 * temperature, top_p, max_(completion_)tokens → num_predict, stop, seed, presence_penalty and
 * frequency_penalty → options; response_format json_object → format "json", json_schema → format
 * = the schema; tools are passed as they are (Ollama takes OpenAI's shape). tool_choice: auto as
 * is, none by sending no tools; required and a named function are refused (Ollama cannot force
 * a call), as are n > 1, logprobs, logit_bias, audio output, prediction and the legacy functions.
 *
 * ANSWER. NDJSON: one JSON object per line (the exchange's parser runs in NDJSON mode for this
 * adapter). message.content → text, message.thinking → reasoning, message.tool_calls arrive
 * whole → one tool call each, its id the call's own or the exchange's call_<id>_<n>, its
 * arguments (an object) as they are. The `done: true` line is the end marker: usage
 * from prompt_eval_count / eval_count (either may be missing), done_reason "length" → length,
 * anything else → stop, or tool_calls after a call (Ollama says "stop" even then). A line
 * {"error": "…"} is an error event: a failure before the commit point, an interruption after.
 * A whole answer is the same object, decoded the same way.
 */
#include <string.h>
#include "xlate.h"

/* ---- the request ---- */

struct oenc {
	struct exchange   *x;
	const struct json *j;
	struct jw          w;
};

/* A user message's image_url parts as "images": bare base64. */
static int
images(struct oenc *o, int m, int k)
{
	const struct json *j = o->j;
	int c = json_find(j, m, "content"), n = 0;
	struct image img;

	if (c < 0 || j->tok[c].type != JSMN_ARRAY)
		return 0;
	for (int q = 0, p = c + 1; q < j->tok[c].size; q++, p = json_skip(j, p)) {
		if (!xl_eq(j, json_find(j, p, "type"), "image_url"))
			continue;
		if (xl_image(o->x, p, &img, k) < 0)
			return -1;
		if (!img.is_data)
			return xl_unsupported(o->x, "an image URL", "it takes images only as base64 data: URLs");
		jw_puts(&o->w, n++ ? ",\"" : ",\"images\":[\"");
		jw_raw(&o->w, img.data, img.data_len);
		jw_puts(&o->w, "\"");
	}
	if (n > 0)
		jw_puts(&o->w, "]");
	return 0;
}

static int
tool_calls(struct oenc *o, int m, int k)
{
	const struct json *j = o->j;
	int calls = json_find(j, m, "tool_calls");

	if (!xl_present(j, calls))
		return 0;
	if (j->tok[calls].type != JSMN_ARRAY)
		return xl_invalid(o->x, "messages[%d]: tool_calls must be an array", k);
	jw_puts(&o->w, ",\"tool_calls\":[");
	for (int q = 0, c = calls + 1; q < j->tok[calls].size; q++, c = json_skip(j, c)) {
		int fn = json_find(j, c, "function"), name = json_find(j, fn, "name"), args = json_find(j, fn, "arguments");

		if (!xl_nonempty(j, name))
			return xl_invalid(o->x, "messages[%d]: tool_calls[%d] needs function.name", k, q);
		jw_puts(&o->w, q ? ",{\"function\":{\"name\":" : "{\"function\":{\"name\":");
		jw_tok(&o->w, j, name);
		jw_puts(&o->w, ",\"arguments\":");
		if (args >= 0 && j->tok[args].type == JSMN_OBJECT)
			jw_tok(&o->w, j, args);
		else if (!xl_present(j, args))
			jw_puts(&o->w, "{}");
		else if (!xl_is_str(j, args) || jw_json_in_string(&o->w, j, args, 1) != 1)
			return xl_invalid(o->x, "messages[%d]: a tool call's function.arguments must be a JSON object", k);
		jw_puts(&o->w, "}}");
	}
	jw_puts(&o->w, "]");
	return 0;
}

static const char *
role_of(const struct json *j, int role)
{
	static const char *const same[] = { "system", "user", "assistant", "tool" };

	if (xl_eq(j, role, "developer"))
		return "system";
	for (size_t i = 0; i < NELEM(same); i++)
		if (xl_eq(j, role, same[i]))
			return same[i];
	return NULL;
}

static int
message(struct oenc *o, int m, int k)
{
	const struct json *j = o->j;
	const char *role = j->tok[m].type == JSMN_OBJECT ? role_of(j, json_find(j, m, "role")) : NULL;
	int name;

	if (role == NULL)
		return xl_invalid(o->x, "messages[%d]: a message must be an object with role system, developer, user, "
		    "assistant or tool", k);
	jw_printf(&o->w, "%s{\"role\":\"%s\",\"content\":\"", k ? "," : "", role);
	if (xl_text_content(o->x, &o->w, m, role, role[0] == 'u') < 0)
		return -1;
	jw_puts(&o->w, "\"");
	if (role[0] == 'u' && images(o, m, k) < 0)
		return -1;
	if (role[0] == 'a' && tool_calls(o, m, k) < 0)
		return -1;
	if (role[0] == 't' && (name = xl_tool_name(o->x, k, json_find(j, m, "tool_call_id"))) >= 0)
		jw_puts(&o->w, ",\"tool_name\":"), jw_tok(&o->w, j, name);
	jw_puts(&o->w, "}");
	return 0;
}

static int
messages(struct oenc *o)
{
	const struct json *j = o->j;
	int arr = xl_messages(o->x);

	jw_puts(&o->w, ",\"messages\":[");
	for (int k = 0, m = arr + 1; k < j->tok[arr].size; k++, m = json_skip(j, m))
		if (message(o, m, k) < 0)
			return -1;
	jw_puts(&o->w, "]");
	return 0;
}

static void
sep(struct oenc *o, int *n)
{
	if ((*n)++ > 0)
		jw_puts(&o->w, ",");
}

static int
number(struct oenc *o, int *n, const char *key, int t, const char *param)
{
	if (!xl_present(o->j, t))
		return 0;
	if (o->j->tok[t].type != JSMN_PRIMITIVE || xl_is_true(o->j, t) || json_eq_literal(o->j, t, "false"))
		return xl_invalid(o->x, "%s must be a number", param);
	sep(o, n);
	jw_printf(&o->w, "\"%s\":", key);
	jw_tok(&o->w, o->j, t);
	return 0;
}

static int
stop(struct oenc *o, int *n)
{
	const struct json *j = o->j;
	int t = json_find(j, 0, "stop");

	if (!xl_present(j, t) || (j->tok[t].type == JSMN_ARRAY && j->tok[t].size == 0))
		return 0;
	if (!xl_is_str(j, t) && j->tok[t].type != JSMN_ARRAY)
		return xl_invalid(o->x, "stop must be a string or an array of strings");
	sep(o, n);
	jw_puts(&o->w, "\"stop\":");
	if (xl_is_str(j, t))
		jw_puts(&o->w, "["), jw_tok(&o->w, j, t), jw_puts(&o->w, "]");
	else
		jw_tok(&o->w, j, t);
	return 0;
}

static int
options(struct oenc *o)
{
	const struct json *j = o->j;
	size_t mark = o->w.b->len;
	int n = 0;

	jw_puts(&o->w, ",\"options\":{");
	if (number(o, &n, "temperature", json_find(j, 0, "temperature"), "temperature") < 0 ||
	    number(o, &n, "top_p", json_find(j, 0, "top_p"), "top_p") < 0 ||
	    number(o, &n, "num_predict", xl_max_tokens(o->x), "max_tokens") < 0 || stop(o, &n) < 0 ||
	    number(o, &n, "seed", json_find(j, 0, "seed"), "seed") < 0 ||
	    number(o, &n, "presence_penalty", json_find(j, 0, "presence_penalty"), "presence_penalty") < 0 ||
	    number(o, &n, "frequency_penalty", json_find(j, 0, "frequency_penalty"), "frequency_penalty") < 0)
		return -1;
	if (n == 0)
		o->w.b->len = mark;
	else
		jw_puts(&o->w, "}");
	return 0;
}

static int
format(struct oenc *o)
{
	const struct json *j = o->j;
	int rf = json_find(j, 0, "response_format"), type = json_find(j, rf, "type");
	int schema = json_find(j, json_find(j, rf, "json_schema"), "schema");

	if (!xl_present(j, rf) || xl_eq(j, type, "text"))
		return 0;
	if (xl_eq(j, type, "json_object")) {
		jw_puts(&o->w, ",\"format\":\"json\"");
		return 0;
	}
	if (xl_eq(j, type, "json_schema") && schema >= 0 && j->tok[schema].type == JSMN_OBJECT) {
		jw_puts(&o->w, ",\"format\":");
		jw_tok(&o->w, j, schema);
		return 0;
	}
	return xl_invalid(o->x, "response_format must be text, json_object, or json_schema with a schema object");
}

static int
tools(struct oenc *o)
{
	const struct json *j = o->j;
	int t = json_find(j, 0, "tools"), tc = json_find(j, 0, "tool_choice");

	if (xl_present(j, tc) && !xl_eq(j, tc, "auto") && !xl_eq(j, tc, "none"))
		return xl_unsupported(o->x, "tool_choice other than auto and none", "it cannot force a tool call");
	if (!xl_present(j, t) || xl_eq(j, tc, "none"))
		return 0;
	if (j->tok[t].type != JSMN_ARRAY)
		return xl_invalid(o->x, "tools must be an array");
	for (int k = 0, e = t + 1; k < j->tok[t].size; k++, e = json_skip(j, e))
		if (!xl_eq(j, json_find(j, e, "type"), "function"))
			return xl_unsupported(o->x, "a tool that is not a function", NULL);
	if (j->tok[t].size > 0)
		jw_puts(&o->w, ",\"tools\":"), jw_tok(&o->w, j, t);
	return 0;
}

static int
encode_body(struct exchange *x, struct buf *body)
{
	struct oenc o = { x, &x->req->j, { body, 0 } };

	if (xl_check_common(x) < 0)
		return -1;
	xl_body_cap(body, x->req->len);
	jw_puts(&o.w, "{\"model\":");
	jw_str(&o.w, x->target->model, strlen(x->target->model));
	if (messages(&o) < 0 || options(&o) < 0 || format(&o) < 0 || tools(&o) < 0)
		return -1;
	jw_puts(&o.w, x->req->stream ? ",\"stream\":true}" : ",\"stream\":false}");
	return xl_written(x, &o.w);
}

static int
encode(struct exchange *x, struct upstream_req *req, struct buf *body)
{
	const struct cfg_provider *p = x->target->provider;
	const char *auth = NULL;

	if (encode_body(x, body) < 0)
		return -1;
	req->url = arena_cat(x->arena, p->base_url, "/api/chat", (char *)NULL);
	if (p->api_key[0] && (auth = arena_cat(x->arena, "Authorization: Bearer ", p->api_key, (char *)NULL)) == NULL)
		return -1;
	req->headers = xl_headers(x, auth, x->req->stream ? "Accept: application/x-ndjson" : "Accept: application/json");
	return req->url != NULL && req->headers != NULL ? 0 : -1;
}

/* ---- the answer ---- */

/* A whole call: its id (Ollama's own if it gave one, else the exchange's call_<id>_<index>),
 * name and arguments (an object; a string of JSON text from older servers). */
static int
tool_call(struct exchange *x, const struct json *j, int c)
{
	int fn = json_find(j, c, "function"), name = json_find(j, fn, "name"), args = json_find(j, fn, "arguments");
	int cid = json_find(j, c, "id"), idx;

	if (!xl_nonempty(j, name))
		return xl_fail_provider(x, FAIL_MALFORMED, 502, "a tool call without a name");
	idx = xl_nonempty(j, cid) ? emit_tool_start(x, xl_src(j, cid), xl_len(j, cid), xl_src(j, name), xl_len(j, name))
	                          : emit_tool_start(x, NULL, 0, xl_src(j, name), xl_len(j, name));
	if (idx < 0)
		return -1;
	if (args >= 0 && j->tok[args].type == JSMN_OBJECT)
		return emit_tool_args_json(x, idx, xl_src(j, args), xl_len(j, args));
	if (xl_nonempty(j, args)) /* a JSON string of JSON text: already an escaped fragment */
		return emit_tool_args(x, idx, xl_src(j, args), xl_len(j, args));
	return emit_tool_args_json(x, idx, "{}", 2);
}

static int
message_events(struct exchange *x, const struct json *j, int msg)
{
	int th = json_find(j, msg, "thinking"), c = json_find(j, msg, "content"), calls = json_find(j, msg, "tool_calls");

	if (xl_nonempty(j, th) && emit_reasoning(x, xl_src(j, th), xl_len(j, th)) < 0)
		return -1;
	if (xl_nonempty(j, c) && emit_text(x, xl_src(j, c), xl_len(j, c)) < 0)
		return -1;
	if (calls < 0 || j->tok[calls].type != JSMN_ARRAY)
		return 0;
	for (int k = 0, e = calls + 1; k < j->tok[calls].size; k++, e = json_skip(j, e))
		if (tool_call(x, j, e) < 0)
			return -1;
	return 0;
}

/* The done line: usage, the finish, the end. */
static int
done(struct exchange *x, const struct json *j)
{
	const char *reason = x->em.ntools > 0 ? "tool_calls" : "stop";

	if (xl_eq(j, json_find(j, 0, "done_reason"), "length"))
		reason = "length";
	xc_usage(x, xl_count(j, json_find(j, 0, "prompt_eval_count")), xl_count(j, json_find(j, 0, "eval_count")), 0);
	if (emit_finish(x, reason) < 0 || emit_end(x) < 0)
		return -1;
	xc_stream_end(x);
	return 0;
}

/* One line of the stream, or the whole answer. */
static int
decode(struct exchange *x, const char *p, size_t n)
{
	struct json j;
	int err, msg;

	if (xc_json(x, &j, p, n) <= 0 || j.tok[0].type != JSMN_OBJECT)
		return xl_fail_provider(x, FAIL_MALFORMED, 502, "a line that is not a JSON object");
	if (xl_present(&j, err = json_find(&j, 0, "error"))) {
		char m[300] = "an error event";

		if (xl_is_str(&j, err))
			json_unescape(xl_src(&j, err), xl_len(&j, err), m, sizeof m);
		return xl_fail_provider(x, FAIL_PROVIDER, 502, m);
	}
	if (x->em.finish != NULL)
		return 0;
	if ((msg = json_find(&j, 0, "message")) >= 0 && j.tok[msg].type == JSMN_OBJECT && message_events(x, &j, msg) < 0)
		return -1;
	return xl_is_true(&j, json_find(&j, 0, "done")) ? done(x, &j) : 0;
}

static int
stream_event(struct exchange *x, const struct sse_event *ev)
{
	return decode(x, ev->data, ev->data_len);
}

static int
response(struct exchange *x, const char *p, size_t n)
{
	if (decode(x, p, n) < 0)
		return -1;
	if (x->em.finish == NULL) /* no done: true — not a complete answer */
		return xl_fail_provider(x, FAIL_MALFORMED, 502, "an answer without done: true");
	return 0;
}

const struct adapter adapter_ollama = {
	.name = "ollama",
	.framing = FRAMING_NDJSON,
	.encode = encode,
	.stream_event = stream_event,
	.response = response,
	.error = xc_error_default,
};
