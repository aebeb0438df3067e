/*
 * gemini.c — Google's Gemini API (Generative Language API, v1beta; FORMATS.md §4).
 *
 * REQUEST. POST {base_url}/models/{model}:generateContent, or :streamGenerateContent?alt=sse for
 * a stream (the model percent-encoded into the path), key in x-goog-api-key. The OpenAI request
 * becomes: system/developer messages → systemInstruction.parts; user → contents role "user"
 * (text parts; image_url data: URLs → inlineData, http(s)/gs URLs → fileData with the MIME type
 * of the file's extension, or a 400 when it cannot be told; input_audio → inlineData);
 * assistant → role "model" (text, then each tool call as a functionCall part whose args are the
 * decoded `arguments` string; the first call of a turn carries the documented placeholder
 * thoughtSignature, since sluice does not keep Gemini's own signatures); consecutive tool
 * messages → one "user" content of functionResponse parts, each named after the call its
 * tool_call_id points to in an earlier assistant message (a result that is a JSON object is
 * sent as the response, anything else as {"result": text}); tools → one functionDeclarations
 * list (parameters as parametersJsonSchema: plain JSON Schema, no OpenAPI rewriting);
 * tool_choice → toolConfig.functionCallingConfig (auto AUTO, none NONE, required ANY, a named
 * function ANY + allowedFunctionNames); temperature, top_p, max_(completion_)tokens, stop,
 * seed, presence/frequency_penalty and response_format (json_object → responseMimeType
 * application/json; json_schema → that plus responseJsonSchema) → generationConfig. n > 1,
 * logprobs, logit_bias, audio output, prediction and the legacy functions are refused with a
 * 400 naming the parameter and the provider. Ignored: user, store, metadata, service_tier,
 * parallel_tool_calls, reasoning_effort, stream_options (usage always comes).
 *
 * ANSWER. Each SSE event (and a whole answer) is a GenerateContentResponse. Text parts →
 * text, `thought: true` parts → reasoning; a functionCall arrives whole → one tool call with its
 * id (the call's own, else the exchange's call_<id>_<n>) and its complete arguments;
 * usageMetadata is a running total in every chunk: the last one counts (prompt = promptTokenCount
 * + toolUsePromptTokenCount, completion = candidates + thoughts, cached = cachedContentTokenCount);
 * finishReason STOP → stop, or tool_calls after a call; MAX_TOKENS → length; the safety family →
 * content_filter; anything else → stop (tool_calls after a call). Gemini sends no [DONE]: the
 * finishReason is its end marker, and since usage may come in the same chunk or a later one the
 * stream is ended (usage chunk, end) when the provider's stream ends (stream_done). Parts sluice
 * does not translate (executableCode, inline output data, thoughtSignature) are dropped.
 *
 * ERRORS. Google's {"error":{"code","message","status","details"}}, as an answer or as an event
 * in the stream: RESOURCE_EXHAUSTED → 429 (RetryInfo.retryDelay → Retry-After, whole seconds
 * rounded up), UNAVAILABLE → 503, INTERNAL → 500, DEADLINE_EXCEEDED → 504, INVALID_ARGUMENT,
 * FAILED_PRECONDITION, OUT_OF_RANGE, NOT_FOUND → the client's error, PERMISSION_DENIED,
 * UNAUTHENTICATED and an API_KEY_INVALID reason → auth.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "xlate.h"

#define SKIP_SIGNATURE "skip_thought_signature_validator" /* Google's documented placeholder */

/* ---- the request ---- */

struct genc {
	struct exchange   *x;
	const struct json *j;
	struct jw          w;
};

static void
sep(struct genc *g, int *n)
{
	if ((*n)++ > 0)
		jw_puts(&g->w, ",");
}

/* An inlineData part (data: the base64 as the client wrote it). */
static void
inline_data(struct genc *g, const char *mime, const char *data, size_t n)
{
	jw_puts(&g->w, "{\"inlineData\":{\"mimeType\":");
	jw_str(&g->w, mime, strlen(mime));
	jw_puts(&g->w, ",\"data\":\"");
	jw_raw(&g->w, data, n);
	jw_puts(&g->w, "\"}}");
}

static int
image_part(struct genc *g, int p, int k, int *n)
{
	struct image img;

	if (xl_image(g->x, p, &img, k) < 0)
		return -1;
	sep(g, n);
	if (img.is_data) {
		inline_data(g, img.mime, img.data, img.data_len);
		return 0;
	}
	if (img.mime[0] == '\0')
		return xl_unsupported(g->x, "an image URL without a known file type",
		    "it needs the image's MIME type; send a data: URL, or a URL ending in .png, .jpg, .gif or .webp");
	jw_puts(&g->w, "{\"fileData\":{\"mimeType\":");
	jw_str(&g->w, img.mime, strlen(img.mime));
	jw_puts(&g->w, ",\"fileUri\":");
	jw_tok(&g->w, g->j, img.url);
	jw_puts(&g->w, "}}");
	return 0;
}

static int
audio_part(struct genc *g, int p, int k, int *n)
{
	int a = json_find(g->j, p, "input_audio"), data = json_find(g->j, a, "data"), fmt = json_find(g->j, a, "format");
	char mime[32];

	if (!xl_nonempty(g->j, data) || !xl_nonempty(g->j, fmt) || xl_len(g->j, fmt) > 16)
		return xl_invalid(g->x, "messages[%d]: an input_audio part needs data and format", k);
	snprintf(mime, sizeof mime, "audio/%.*s", (int)xl_len(g->j, fmt), xl_src(g->j, fmt));
	sep(g, n);
	inline_data(g, mime, xl_src(g->j, data), xl_len(g->j, data));
	return 0;
}

static void
text_part(struct genc *g, int t, int *n)
{
	if (!xl_nonempty(g->j, t))
		return; /* Gemini refuses empty text parts */
	sep(g, n);
	jw_puts(&g->w, "{\"text\":");
	jw_tok(&g->w, g->j, t);
	jw_puts(&g->w, "}");
}

/* A user message's parts; their count, or -1. */
static int
user_parts(struct genc *g, int m, int k)
{
	const struct json *j = g->j;
	int c = json_find(j, m, "content"), n = 0;

	if (xl_is_str(j, c) || !xl_present(j, c)) {
		text_part(g, c, &n);
		return n;
	}
	if (j->tok[c].type != JSMN_ARRAY)
		return xl_invalid(g->x, "messages[%d]: content must be a string or an array of parts", k);
	for (int q = 0, p = c + 1; q < j->tok[c].size; q++, p = json_skip(j, p)) {
		int type = json_find(j, p, "type"), rc = 0;

		if (xl_eq(j, type, "text"))
			text_part(g, json_find(j, p, "text"), &n);
		else if (xl_eq(j, type, "image_url"))
			rc = image_part(g, p, k, &n);
		else if (xl_eq(j, type, "input_audio"))
			rc = audio_part(g, p, k, &n);
		else
			rc = xl_unsupported(g->x, "this content part type", "it takes text, image_url and input_audio parts");
		if (rc < 0)
			return -1;
	}
	return n;
}

/* A tool call's arguments (a JSON string holding an object, or an object) as args. */
static int
call_args(struct genc *g, int args, int k)
{
	if (args >= 0 && g->j->tok[args].type == JSMN_OBJECT) {
		jw_tok(&g->w, g->j, args);
		return 0;
	}
	if (!xl_present(g->j, args)) {
		jw_puts(&g->w, "{}");
		return 0;
	}
	if (!xl_is_str(g->j, args) || jw_json_in_string(&g->w, g->j, args, 1) != 1)
		return xl_invalid(g->x, "messages[%d]: a tool call's function.arguments must be a JSON object", k);
	return 0;
}

/* An assistant message's tool calls as functionCall parts. */
static int
call_parts(struct genc *g, int m, int k, int *n)
{
	const struct json *j = g->j;
	int calls = json_find(j, m, "tool_calls");

	if (!xl_present(j, calls))
		return 0;
	if (j->tok[calls].type != JSMN_ARRAY)
		return xl_invalid(g->x, "messages[%d]: tool_calls must be an array", k);
	for (int q = 0, c = calls + 1; q < j->tok[calls].size; q++, c = json_skip(j, c)) {
		int fn = json_find(j, c, "function"), name = json_find(j, fn, "name");

		if (!xl_nonempty(j, name))
			return xl_invalid(g->x, "messages[%d]: tool_calls[%d] needs function.name", k, q);
		sep(g, n);
		jw_puts(&g->w, "{\"functionCall\":{\"name\":");
		jw_tok(&g->w, j, name);
		jw_puts(&g->w, ",\"args\":");
		if (call_args(g, json_find(j, fn, "arguments"), k) < 0)
			return -1;
		jw_puts(&g->w, q == 0 ? "},\"thoughtSignature\":\"" SKIP_SIGNATURE "\"}" : "}}");
	}
	return 0;
}

/* An assistant message's parts: its text, then its tool calls. */
static int
model_parts(struct genc *g, int m, int k)
{
	size_t mark = g->w.b->len;
	int n = 0, rc;

	jw_puts(&g->w, "{\"text\":\"");
	if ((rc = xl_text_content(g->x, &g->w, m, "assistant", 0)) < 0)
		return -1;
	if (rc == 0)
		g->w.b->len = mark;
	else
		jw_puts(&g->w, "\"}"), n++;
	return call_parts(g, m, k, &n) < 0 ? -1 : n;
}

/* A tool message as a functionResponse part. */
static int
tool_part(struct genc *g, int m, int k, int *n)
{
	const struct json *j = g->j;
	int id = json_find(j, m, "tool_call_id"), c = json_find(j, m, "content"), name;

	if (!xl_nonempty(j, id))
		return xl_invalid(g->x, "messages[%d]: a tool message needs tool_call_id", k);
	if ((name = xl_tool_name(g->x, k, id)) < 0)
		return xl_invalid(g->x, "messages[%d]: tool_call_id '%.*s' matches no tool call of an earlier assistant "
		    "message (gemini needs the function's name)", k, (int)(xl_len(j, id) > 64 ? 64 : xl_len(j, id)), xl_src(j, id));
	sep(g, n);
	jw_puts(&g->w, "{\"functionResponse\":{\"name\":");
	jw_tok(&g->w, j, name);
	jw_puts(&g->w, ",\"response\":");
	if (xl_nonempty(j, c) && jw_json_in_string(&g->w, j, c, 1) == 1) {
		jw_puts(&g->w, "}}");
		return 0;
	}
	jw_puts(&g->w, "{\"result\":\"");
	if (xl_text_content(g->x, &g->w, m, "tool", 0) < 0)
		return -1;
	jw_puts(&g->w, "\"}}}");
	return 0;
}

/* One user or model content, dropped if it has no parts. */
static int
content(struct genc *g, int m, int k, int *ncontents, int model)
{
	size_t mark = g->w.b->len;
	int n;

	jw_puts(&g->w, *ncontents ? ",{\"role\":" : "{\"role\":");
	jw_puts(&g->w, model ? "\"model\",\"parts\":[" : "\"user\",\"parts\":[");
	n = model ? model_parts(g, m, k) : user_parts(g, m, k);
	if (n < 0)
		return -1;
	if (n == 0) {
		g->w.b->len = mark;
		return 0;
	}
	jw_puts(&g->w, "]}");
	(*ncontents)++;
	return 0;
}

static int
is_system(const struct json *j, int role)
{
	return xl_eq(j, role, "system") || xl_eq(j, role, "developer");
}

/* "contents": consecutive tool messages share one user content. */
static int
contents(struct genc *g)
{
	const struct json *j = g->j;
	int arr = xl_messages(g->x), nc = 0, ntool = 0, rc = 0;

	jw_puts(&g->w, "\"contents\":[");
	for (int k = 0, m = arr + 1; k < j->tok[arr].size && rc == 0; k++, m = json_skip(j, m)) {
		int role = json_find(j, m, "role");

		if (j->tok[m].type != JSMN_OBJECT)
			return xl_invalid(g->x, "messages[%d] must be an object", k);
		if (is_system(j, role))
			continue;
		if (xl_eq(j, role, "tool")) {
			if (ntool == 0)
				jw_puts(&g->w, nc++ ? ",{\"role\":\"user\",\"parts\":[" : "{\"role\":\"user\",\"parts\":[");
			rc = tool_part(g, m, k, &ntool);
			continue;
		}
		if (ntool > 0)
			jw_puts(&g->w, "]}"), ntool = 0;
		if (xl_eq(j, role, "user") || xl_eq(j, role, "assistant"))
			rc = content(g, m, k, &nc, xl_eq(j, role, "assistant"));
		else
			rc = xl_invalid(g->x, "messages[%d]: unknown role (gemini takes system, developer, user, assistant and tool)", k);
	}
	jw_puts(&g->w, ntool > 0 ? "]}]" : "]");
	return rc;
}

/* "systemInstruction" from every system and developer message, in order. */
static int
system_instruction(struct genc *g)
{
	const struct json *j = g->j;
	int arr = xl_messages(g->x), n = 0;
	size_t mark = g->w.b->len, part;

	jw_puts(&g->w, ",\"systemInstruction\":{\"parts\":[");
	for (int k = 0, m = arr + 1; k < j->tok[arr].size; k++, m = json_skip(j, m)) {
		int rc;

		if (!is_system(j, json_find(j, m, "role")))
			continue;
		part = g->w.b->len;
		jw_puts(&g->w, n ? ",{\"text\":\"" : "{\"text\":\"");
		if ((rc = xl_text_content(g->x, &g->w, m, "system", 0)) < 0)
			return -1;
		if (rc == 0)
			g->w.b->len = part;
		else
			jw_puts(&g->w, "\"}"), n++;
	}
	if (n == 0)
		g->w.b->len = mark;
	else
		jw_puts(&g->w, "]}");
	return 0;
}

static int
declaration(struct genc *g, int t, int *n)
{
	const struct json *j = g->j;
	int fn = json_find(j, t, "function"), name = json_find(j, fn, "name"), d, p;

	if (!xl_eq(j, json_find(j, t, "type"), "function"))
		return xl_unsupported(g->x, "a tool that is not a function", NULL);
	if (!xl_nonempty(j, name))
		return xl_invalid(g->x, "every tool needs function.name");
	sep(g, n);
	jw_puts(&g->w, "{\"name\":");
	jw_tok(&g->w, j, name);
	if (xl_is_str(j, d = json_find(j, fn, "description")))
		jw_puts(&g->w, ",\"description\":"), jw_tok(&g->w, j, d);
	if ((p = json_find(j, fn, "parameters")) >= 0 && j->tok[p].type == JSMN_OBJECT)
		jw_puts(&g->w, ",\"parametersJsonSchema\":"), jw_tok(&g->w, j, p);
	jw_puts(&g->w, "}");
	return 0;
}

static int
tools(struct genc *g)
{
	const struct json *j = g->j;
	int t = json_find(j, 0, "tools"), n = 0;

	if (!xl_present(j, t))
		return 0;
	if (j->tok[t].type != JSMN_ARRAY)
		return xl_invalid(g->x, "tools must be an array");
	if (j->tok[t].size == 0)
		return 0;
	jw_puts(&g->w, ",\"tools\":[{\"functionDeclarations\":[");
	for (int k = 0, e = t + 1; k < j->tok[t].size; k++, e = json_skip(j, e))
		if (declaration(g, e, &n) < 0)
			return -1;
	jw_puts(&g->w, "]}]");
	return 0;
}

static int
tool_config(struct genc *g)
{
	const struct json *j = g->j;
	int tc = json_find(j, 0, "tool_choice"), name = json_find(j, json_find(j, tc, "function"), "name");
	const char *mode = NULL;

	if (!xl_present(j, tc))
		return 0;
	if (xl_eq(j, tc, "auto"))
		mode = "AUTO";
	else if (xl_eq(j, tc, "none"))
		mode = "NONE";
	else if (xl_eq(j, tc, "required") || xl_nonempty(j, name))
		mode = "ANY";
	else
		return xl_invalid(g->x, "tool_choice must be \"auto\", \"none\", \"required\" or {\"type\":\"function\",\"function\":{\"name\":…}}");
	jw_printf(&g->w, ",\"toolConfig\":{\"functionCallingConfig\":{\"mode\":\"%s\"", mode);
	if (xl_nonempty(j, name))
		jw_puts(&g->w, ",\"allowedFunctionNames\":["), jw_tok(&g->w, j, name), jw_puts(&g->w, "]");
	jw_puts(&g->w, "}}");
	return 0;
}

/* A number parameter copied as written; absent or null: nothing. */
static int
number(struct genc *g, int *n, const char *key, int t, const char *param)
{
	if (!xl_present(g->j, t))
		return 0;
	if (g->j->tok[t].type != JSMN_PRIMITIVE || xl_is_true(g->j, t) || json_eq_literal(g->j, t, "false"))
		return xl_invalid(g->x, "%s must be a number", param);
	sep(g, n);
	jw_printf(&g->w, "\"%s\":", key);
	jw_tok(&g->w, g->j, t);
	return 0;
}

static int
stop_sequences(struct genc *g, int *n)
{
	const struct json *j = g->j;
	int t = json_find(j, 0, "stop");

	if (!xl_present(j, t) || (j->tok[t].type == JSMN_ARRAY && j->tok[t].size == 0))
		return 0;
	if (!xl_is_str(j, t) && j->tok[t].type != JSMN_ARRAY)
		return xl_invalid(g->x, "stop must be a string or an array of strings");
	sep(g, n);
	jw_puts(&g->w, "\"stopSequences\":");
	if (xl_is_str(j, t))
		jw_puts(&g->w, "["), jw_tok(&g->w, j, t), jw_puts(&g->w, "]");
	else
		jw_tok(&g->w, j, t);
	return 0;
}

static int
response_format(struct genc *g, int *n)
{
	const struct json *j = g->j;
	int rf = json_find(j, 0, "response_format"), type = json_find(j, rf, "type");
	int schema = json_find(j, json_find(j, rf, "json_schema"), "schema");

	if (!xl_present(j, rf) || xl_eq(j, type, "text"))
		return 0;
	if (!xl_eq(j, type, "json_object") && !xl_eq(j, type, "json_schema"))
		return xl_invalid(g->x, "response_format.type must be text, json_object or json_schema");
	sep(g, n);
	jw_puts(&g->w, "\"responseMimeType\":\"application/json\"");
	if (xl_eq(j, type, "json_schema") && schema >= 0 && j->tok[schema].type == JSMN_OBJECT)
		jw_puts(&g->w, ",\"responseJsonSchema\":"), jw_tok(&g->w, j, schema);
	return 0;
}

static int
generation_config(struct genc *g)
{
	const struct json *j = g->j;
	size_t mark = g->w.b->len;
	int n = 0;

	jw_puts(&g->w, ",\"generationConfig\":{");
	if (number(g, &n, "temperature", json_find(j, 0, "temperature"), "temperature") < 0 ||
	    number(g, &n, "topP", json_find(j, 0, "top_p"), "top_p") < 0 ||
	    number(g, &n, "maxOutputTokens", xl_max_tokens(g->x), "max_tokens") < 0 ||
	    stop_sequences(g, &n) < 0 ||
	    number(g, &n, "seed", json_find(j, 0, "seed"), "seed") < 0 ||
	    number(g, &n, "presencePenalty", json_find(j, 0, "presence_penalty"), "presence_penalty") < 0 ||
	    number(g, &n, "frequencyPenalty", json_find(j, 0, "frequency_penalty"), "frequency_penalty") < 0 ||
	    response_format(g, &n) < 0)
		return -1;
	if (n == 0)
		g->w.b->len = mark;
	else
		jw_puts(&g->w, "}");
	return 0;
}

static int
encode_body(struct exchange *x, struct buf *body)
{
	struct genc g = { x, &x->req->j, { body, 0 } };

	if (xl_check_common(x) < 0)
		return -1;
	xl_body_cap(body, x->req->len);
	jw_puts(&g.w, "{");
	if (contents(&g) < 0 || system_instruction(&g) < 0 || tools(&g) < 0 || tool_config(&g) < 0 ||
	    generation_config(&g) < 0)
		return -1;
	jw_puts(&g.w, "}");
	return xl_written(x, &g.w);
}

static int
encode(struct exchange *x, struct upstream_req *req, struct buf *body)
{
	const struct cfg_provider *p = x->target->provider;
	const char *model = xl_path_escape(x->arena, x->target->model), *auth = NULL;

	if (encode_body(x, body) < 0 || model == NULL)
		return -1;
	req->url = arena_cat(x->arena, p->base_url, "/models/", model, ":",
	    x->req->stream ? "streamGenerateContent?alt=sse" : "generateContent", (char *)NULL);
	if (p->api_key[0] && (auth = arena_cat(x->arena, "x-goog-api-key: ", p->api_key, (char *)NULL)) == NULL)
		return -1;
	req->headers = xl_headers(x, auth, x->req->stream ? "Accept: text/event-stream" : "Accept: application/json");
	return req->url != NULL && req->headers != NULL ? 0 : -1;
}

/* ---- the answer ---- */

static const char *
finish_reason(const struct json *j, int t, int calls)
{
	static const char *const filtered[] = { "SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII",
	    "IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION" };

	if (xl_eq(j, t, "STOP")) /* the usual end: no list to search */
		return calls > 0 ? "tool_calls" : "stop";
	if (xl_eq(j, t, "MAX_TOKENS"))
		return "length";
	for (size_t i = 0; i < NELEM(filtered); i++)
		if (xl_eq(j, t, filtered[i]))
			return "content_filter";
	return calls > 0 ? "tool_calls" : "stop";
}

static void
usage(struct exchange *x, const struct json *j, int u)
{
	static const struct json_key keys[] = { JSON_KEY("promptTokenCount"), JSON_KEY("toolUsePromptTokenCount"),
	    JSON_KEY("candidatesTokenCount"), JSON_KEY("thoughtsTokenCount"), JSON_KEY("cachedContentTokenCount") };
	int v[NELEM(keys)];

	if (u < 0 || j->tok[u].type != JSMN_OBJECT)
		return;
	json_fields(j, u, keys, NELEM(keys), v);
	xc_usage(x, xl_count(j, v[0]) + xl_count(j, v[1]), xl_count(j, v[2]) + xl_count(j, v[3]), xl_count(j, v[4]));
}

/* A whole functionCall: one tool call, its id (Gemini's own if it gave one, else the emitter's
 * call_<exchange id>_<index>), its name and its complete arguments. */
static int
function_call(struct exchange *x, const struct json *j, int fc)
{
	int name = json_find(j, fc, "name"), args = json_find(j, fc, "args"), fid = json_find(j, fc, "id"), idx;

	if (!xl_nonempty(j, name))
		return xl_fail_provider(x, FAIL_MALFORMED, 502, "a functionCall without a name");
	idx = xl_nonempty(j, fid) ? emit_tool_start(x, xl_src(j, fid), xl_len(j, fid), xl_src(j, name), xl_len(j, name))
	                          : emit_tool_start(x, NULL, 0, xl_src(j, name), xl_len(j, name));
	if (idx < 0)
		return -1;
	if (args >= 0 && j->tok[args].type == JSMN_OBJECT)
		return emit_tool_args_json(x, idx, xl_src(j, args), xl_len(j, args));
	return emit_tool_args_json(x, idx, "{}", 2);
}

static int
parts(struct exchange *x, const struct json *j, int cand)
{
	int ps = json_find(j, json_find(j, cand, "content"), "parts");

	if (ps < 0 || j->tok[ps].type != JSMN_ARRAY)
		return 0;
	for (int k = 0, p = ps + 1; k < j->tok[ps].size; k++, p = json_skip(j, p)) {
		static const struct json_key keys[] = { JSON_KEY("text"), JSON_KEY("functionCall"), JSON_KEY("thought") };
		int v[NELEM(keys)], t, fc, rc = 0;

		json_fields(j, p, keys, NELEM(keys), v);
		t = v[0], fc = v[1];
		if (xl_nonempty(j, t)) /* a thought, or text */
			rc = xl_is_true(j, v[2]) ? emit_reasoning(x, xl_src(j, t), xl_len(j, t))
			                         : emit_text(x, xl_src(j, t), xl_len(j, t));
		else if (fc >= 0 && j->tok[fc].type == JSMN_OBJECT)
			rc = function_call(x, j, fc);
		if (rc < 0)
			return -1;
	}
	return 0;
}

/* One GenerateContentResponse (a chunk, or the whole answer), its top-level fields read in one
 * walk: the error (checked first by the caller), the candidates, usage, and a prompt's block. */
enum { TOP_ERROR, TOP_CANDIDATES, TOP_USAGE, TOP_FEEDBACK, TOP_N };

static void
top_fields(const struct json *j, int *v)
{
	static const struct json_key keys[TOP_N] = { JSON_KEY("error"), JSON_KEY("candidates"),
	    JSON_KEY("usageMetadata"), JSON_KEY("promptFeedback") };

	json_fields(j, 0, keys, TOP_N, v);
}

static int
decode(struct exchange *x, const struct json *j, const int *top)
{
	int cand = xl_elem(j, top[TOP_CANDIDATES], 0), fr;

	usage(x, j, top[TOP_USAGE]);
	if (x->em.finish != NULL)
		return 0; /* past the finish only usage counts */
	if (cand >= 0 && parts(x, j, cand) < 0)
		return -1;
	if (xl_nonempty(j, fr = json_find(j, cand, "finishReason")))
		return emit_finish(x, finish_reason(j, fr, x->em.ntools));
	if (cand < 0 && xl_present(j, json_find(j, top[TOP_FEEDBACK], "blockReason")))
		return emit_finish(x, "content_filter"); /* the prompt was blocked: no candidates */
	return 0;
}

static const struct {
	const char     *name;
	enum fail_class cls;
	int             status;
} google_status[] = {
	{ "RESOURCE_EXHAUSTED", FAIL_429, 429 }, { "UNAVAILABLE", FAIL_503, 502 }, { "INTERNAL", FAIL_500, 502 },
	{ "DEADLINE_EXCEEDED", FAIL_504, 502 }, { "INVALID_ARGUMENT", FAIL_CLIENT, 400 },
	{ "FAILED_PRECONDITION", FAIL_CLIENT, 400 }, { "OUT_OF_RANGE", FAIL_CLIENT, 400 },
	{ "NOT_FOUND", FAIL_CLIENT, 404 }, { "PERMISSION_DENIED", FAIL_AUTH, 403 },
	{ "UNAUTHENTICATED", FAIL_AUTH, 401 },
};

/* details[]: RetryInfo.retryDelay ("34.4s") into retry_after (whole seconds, rounded up), and
 * an API_KEY_INVALID reason (Google answers a bad key with 400 INVALID_ARGUMENT). */
static void
details(const struct json *j, int err, struct failure *f)
{
	int d = json_find(j, err, "details");

	for (int k = 0, e = d + 1; d >= 0 && j->tok[d].type == JSMN_ARRAY && k < j->tok[d].size; k++, e = json_skip(j, e)) {
		int delay = json_find(j, e, "retryDelay");

		if (xl_eq(j, json_find(j, e, "reason"), "API_KEY_INVALID"))
			f->cls = FAIL_AUTH, f->status = 401;
		if (xl_nonempty(j, delay) && f->retry_after[0] == '\0')
			snprintf(f->retry_after, sizeof f->retry_after, "%.0f", ceil(strtod(xl_src(j, delay), NULL)));
	}
}

/* Google's error object → the class of f, and its status unless an HTTP status gave it. */
static void
classify(const struct json *j, int err, struct failure *f, int set_status)
{
	int st = json_find(j, err, "status");

	for (size_t i = 0; i < NELEM(google_status); i++) {
		if (!xl_eq(j, st, google_status[i].name))
			continue;
		f->cls = google_status[i].cls;
		if (set_status)
			f->status = google_status[i].status;
	}
	details(j, err, f);
}

/* A data event holding only {"error":{…}}: the stream failed (after the commit point, an
 * interruption; before it, a failure of its class, so a 429 or 503 can still fall back). */
static int
error_event(struct exchange *x, const struct json *j)
{
	int err = json_find(j, 0, "error"), m = xl_is_str(j, err) ? err : json_find(j, err, "message");
	struct failure f = { .cls = FAIL_PROVIDER, .status = 502 };
	int first = x->fail.msg[0] == '\0';
	char msg[300] = "an error event";

	if (j->tok[err].type == JSMN_OBJECT)
		classify(j, err, &f, 1);
	if (xl_is_str(j, m))
		json_unescape(xl_src(j, m), xl_len(j, m), msg, sizeof msg);
	xl_fail_provider(x, f.cls, f.status, msg);
	if (first)
		memcpy(x->fail.retry_after, f.retry_after, sizeof f.retry_after);
	return -1;
}

static int
parse(struct exchange *x, struct json *j, const char *p, size_t n, const char *what)
{
	if (xc_json(x, j, p, n) <= 0 || j->tok[0].type != JSMN_OBJECT)
		return xl_fail_provider(x, FAIL_MALFORMED, 502, what);
	return 0;
}

static int
stream_event(struct exchange *x, const struct sse_event *ev)
{
	struct json j;

	int top[TOP_N];

	if (parse(x, &j, ev->data, ev->data_len, "a stream event that is not a JSON object") < 0)
		return -1;
	top_fields(&j, top);
	if (xl_present(&j, top[TOP_ERROR]))
		return error_event(x, &j);
	return decode(x, &j, top);
}

/* The provider's stream ended: after the finish, the usage chunk and the end. */
static int
stream_done(struct exchange *x)
{
	if (x->em.finish == NULL || x->saw_end)
		return 0;
	if (emit_end(x) < 0)
		return -1;
	xc_stream_end(x);
	return 0;
}

static int
response(struct exchange *x, const char *p, size_t n)
{
	struct json j;

	int top[TOP_N];

	if (parse(x, &j, p, n, "an answer that is not a JSON object") < 0)
		return -1;
	top_fields(&j, top);
	if (xl_present(&j, top[TOP_ERROR]))
		return error_event(x, &j);
	if (decode(x, &j, top) < 0)
		return -1;
	if (x->em.finish == NULL && emit_finish(x, x->em.ntools > 0 ? "tool_calls" : "stop") < 0)
		return -1;
	return emit_end(x);
}

static void
error(struct exchange *x, long status, const char *p, size_t n, struct failure *f)
{
	struct json j;
	int err;

	xc_classify_status(status, f);
	xc_error_message(p, n, f);
	if (xc_json(x, &j, p, n) > 0 && (err = json_find(&j, 0, "error")) >= 0 && j.tok[err].type == JSMN_OBJECT)
		classify(&j, err, f, 0);
}

const struct adapter adapter_gemini = {
	.name = "gemini",
	.encode = encode,
	.stream_event = stream_event,
	.stream_done = stream_done,
	.response = response,
	.error = error,
};
