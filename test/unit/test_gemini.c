/*
 * test_gemini.c — the Gemini adapter's conformance: OpenAI requests in, Gemini requests out
 * (one row per feature, and the 400s for what Gemini cannot honour); recorded and hand-written
 * Gemini streams (test/fixtures/gemini_*) replayed through the real exchange — whole, cut at
 * every byte, one byte at a time, as written and with CRLF line ends — must give the client
 * exactly the OpenAI chunks written out below by hand; whole answers exactly one
 * chat.completion; errors the right status, class and Retry-After.
 */
#include <stdlib.h>
#include <string.h>
#include "sluice.h"
#include "unit.h"
#include "xharness.h"

#define MODEL "gemini-2.5-flash"
#define URL_SYNC "https://upstream.test/v1/models/" MODEL ":generateContent"
#define URL_STREAM "https://upstream.test/v1/models/" MODEL ":streamGenerateContent?alt=sse"
#define HI "\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]"
#define HI_OUT "{\"contents\":[{\"role\":\"user\",\"parts\":[{\"text\":\"Hi\"}]}]"
#define TOOLS "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"description\":\"Weather\"," \
	"\"parameters\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}},\"required\":[\"city\"]}}}," \
	"{\"type\":\"function\",\"function\":{\"name\":\"noargs\"}}]"
#define TOOLS_OUT ",\"tools\":[{\"functionDeclarations\":[{\"name\":\"get_weather\",\"description\":\"Weather\"," \
	"\"parametersJsonSchema\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}},\"required\":[\"city\"]}}," \
	"{\"name\":\"noargs\"}]}]"
#define SIG ",\"thoughtSignature\":\"skip_thought_signature_validator\""
#define REFUSED(what, why) what " is not supported by provider 'prov' (type gemini)" why

static const struct xrow rows[] = {
	{ "system and user text; the URL and headers", NULL,
	  "{\"model\":\"gem\",\"messages\":[{\"role\":\"system\",\"content\":\"Be terse.\"},{\"role\":\"user\",\"content\":\"Hi\"}]}",
	  URL_SYNC, "x-goog-api-key: KEY\nContent-Type: application/json\nAccept: application/json\nExpect:\n",
	  HI_OUT ",\"systemInstruction\":{\"parts\":[{\"text\":\"Be terse.\"}]}}", 0, NULL },
	{ "a stream: streamGenerateContent?alt=sse, SSE accepted", NULL,
	  "{\"model\":\"gem\"," HI ",\"stream\":true,\"stream_options\":{\"include_usage\":false}}", URL_STREAM,
	  "x-goog-api-key: KEY\nContent-Type: application/json\nAccept: text/event-stream\nExpect:\n", HI_OUT "}", 0, NULL },
	{ "the model is percent-encoded into the path", "gemini,tool_calls=2 x/y",
	  "{\"model\":\"gem\"," HI "}", "https://upstream.test/v1/models/gemini%2Ctool_calls%3D2%20x%2Fy:generateContent",
	  NULL, HI_OUT "}", 0, NULL },
	{ "developer and system messages in order; text parts joined there, kept apart for the user", NULL,
	  "{\"model\":\"gem\",\"messages\":[{\"role\":\"developer\",\"content\":[{\"type\":\"text\",\"text\":\"A\"},"
	  "{\"type\":\"text\",\"text\":\"B\"}]},{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"x\"},"
	  "{\"type\":\"text\",\"text\":\"\"},{\"type\":\"text\",\"text\":\"y\\\"z\\u00e9\"}]},{\"role\":\"system\",\"content\":\"C\"}]}",
	  NULL, NULL,
	  "{\"contents\":[{\"role\":\"user\",\"parts\":[{\"text\":\"x\"},{\"text\":\"y\\\"z\\u00e9\"}]}],"
	  "\"systemInstruction\":{\"parts\":[{\"text\":\"A\\nB\"},{\"text\":\"C\"}]}}", 0, NULL },
	{ "turns: assistant → model; an empty message is left out", NULL,
	  "{\"model\":\"gem\",\"messages\":[{\"role\":\"user\",\"content\":\"1\"},{\"role\":\"assistant\",\"content\":\"2\"},"
	  "{\"role\":\"user\",\"content\":\"\"},{\"role\":\"assistant\",\"content\":null},{\"role\":\"user\",\"content\":\"3\"}]}",
	  NULL, NULL,
	  "{\"contents\":[{\"role\":\"user\",\"parts\":[{\"text\":\"1\"}]},{\"role\":\"model\",\"parts\":[{\"text\":\"2\"}]},"
	  "{\"role\":\"user\",\"parts\":[{\"text\":\"3\"}]}]}", 0, NULL },
	{ "generationConfig: temperature, top_p, max_tokens, stop, seed, penalties", NULL,
	  "{\"model\":\"gem\"," HI ",\"temperature\":0.5,\"top_p\":0.9,\"max_tokens\":100,\"stop\":\"END\",\"seed\":7,"
	  "\"presence_penalty\":0.1,\"frequency_penalty\":-0.2}", NULL, NULL,
	  HI_OUT ",\"generationConfig\":{\"temperature\":0.5,\"topP\":0.9,\"maxOutputTokens\":100,\"stopSequences\":[\"END\"],"
	  "\"seed\":7,\"presencePenalty\":0.1,\"frequencyPenalty\":-0.2}}", 0, NULL },
	{ "max_completion_tokens over max_tokens; a stop array; nulls and n = 1 ignored", NULL,
	  "{\"model\":\"gem\"," HI ",\"max_tokens\":100,\"max_completion_tokens\":50,\"stop\":[\"a\",\"b\"],\"temperature\":null,"
	  "\"n\":1,\"user\":\"u1\",\"parallel_tool_calls\":false}", NULL, NULL,
	  HI_OUT ",\"generationConfig\":{\"maxOutputTokens\":50,\"stopSequences\":[\"a\",\"b\"]}}", 0, NULL },
	{ "response_format json_object", NULL,
	  "{\"model\":\"gem\"," HI ",\"response_format\":{\"type\":\"json_object\"}}", NULL, NULL,
	  HI_OUT ",\"generationConfig\":{\"responseMimeType\":\"application/json\"}}", 0, NULL },
	{ "response_format json_schema", NULL,
	  "{\"model\":\"gem\"," HI ",\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"x\","
	  "\"schema\":{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\"}}}}}}", NULL, NULL,
	  HI_OUT ",\"generationConfig\":{\"responseMimeType\":\"application/json\",\"responseJsonSchema\":"
	  "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\"}}}}}", 0, NULL },
	{ "response_format text: nothing", NULL,
	  "{\"model\":\"gem\"," HI ",\"response_format\":{\"type\":\"text\"}}", NULL, NULL, HI_OUT "}", 0, NULL },
	{ "tools → functionDeclarations; tool_choice auto → AUTO", NULL,
	  "{\"model\":\"gem\"," HI "," TOOLS ",\"tool_choice\":\"auto\"}", NULL, NULL,
	  HI_OUT TOOLS_OUT ",\"toolConfig\":{\"functionCallingConfig\":{\"mode\":\"AUTO\"}}}", 0, NULL },
	{ "tool_choice none → NONE", NULL, "{\"model\":\"gem\"," HI "," TOOLS ",\"tool_choice\":\"none\"}", NULL, NULL,
	  HI_OUT TOOLS_OUT ",\"toolConfig\":{\"functionCallingConfig\":{\"mode\":\"NONE\"}}}", 0, NULL },
	{ "tool_choice required → ANY", NULL, "{\"model\":\"gem\"," HI "," TOOLS ",\"tool_choice\":\"required\"}", NULL, NULL,
	  HI_OUT TOOLS_OUT ",\"toolConfig\":{\"functionCallingConfig\":{\"mode\":\"ANY\"}}}", 0, NULL },
	{ "a named tool_choice → ANY + allowedFunctionNames", NULL,
	  "{\"model\":\"gem\"," HI "," TOOLS ",\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"get_weather\"}}}",
	  NULL, NULL,
	  HI_OUT TOOLS_OUT ",\"toolConfig\":{\"functionCallingConfig\":{\"mode\":\"ANY\",\"allowedFunctionNames\":[\"get_weather\"]}}}",
	  0, NULL },
	{ "images: data: URL → inlineData, URL with an extension → fileData", NULL,
	  "{\"model\":\"gem\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"What?\"},"
	  "{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,iVBORw0KGgo=\"}},"
	  "{\"type\":\"image_url\",\"image_url\":{\"url\":\"https://example.com/cat.JPG?x=1\",\"detail\":\"low\"}}]}]}", NULL, NULL,
	  "{\"contents\":[{\"role\":\"user\",\"parts\":[{\"text\":\"What?\"},{\"inlineData\":{\"mimeType\":\"image/png\","
	  "\"data\":\"iVBORw0KGgo=\"}},{\"fileData\":{\"mimeType\":\"image/jpeg\",\"fileUri\":\"https://example.com/cat.JPG?x=1\"}}]}]}",
	  0, NULL },
	{ "an escaped data: URL (\\/) is read right and its data copied as written", NULL,
	  "{\"model\":\"gem\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":"
	  "{\"url\":\"data:image\\/jpeg;base64,AA\\/B\"}}]}]}", NULL, NULL,
	  "{\"contents\":[{\"role\":\"user\",\"parts\":[{\"inlineData\":{\"mimeType\":\"image/jpeg\",\"data\":\"AA\\/B\"}}]}]}", 0, NULL },
	{ "input_audio → inlineData", NULL,
	  "{\"model\":\"gem\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"input_audio\",\"input_audio\":"
	  "{\"data\":\"UklGRg==\",\"format\":\"wav\"}}]}]}", NULL, NULL,
	  "{\"contents\":[{\"role\":\"user\",\"parts\":[{\"inlineData\":{\"mimeType\":\"audio/wav\",\"data\":\"UklGRg==\"}}]}]}", 0, NULL },
	{ "tool calls → functionCall parts; consecutive results → one user content of functionResponse parts", NULL,
	  "{\"model\":\"gem\",\"messages\":[{\"role\":\"user\",\"content\":\"Weather and time?\"},"
	  "{\"role\":\"assistant\",\"content\":\"Looking.\",\"tool_calls\":[{\"id\":\"call_a\",\"type\":\"function\",\"function\":"
	  "{\"name\":\"get_weather\",\"arguments\":\"{\\\"city\\\": \\\"Paris\\\\n\\\"}\"}},"
	  "{\"id\":\"call_b\",\"type\":\"function\",\"function\":{\"name\":\"get_time\",\"arguments\":\"\"}}]},"
	  "{\"role\":\"tool\",\"tool_call_id\":\"call_b\",\"content\":\"12:00\"},"
	  "{\"role\":\"tool\",\"tool_call_id\":\"call_a\",\"content\":\"{\\\"temp\\\":21}\"},"
	  "{\"role\":\"user\",\"content\":\"thanks\"}]}", NULL, NULL,
	  "{\"contents\":[{\"role\":\"user\",\"parts\":[{\"text\":\"Weather and time?\"}]},{\"role\":\"model\",\"parts\":["
	  "{\"text\":\"Looking.\"},{\"functionCall\":{\"name\":\"get_weather\",\"args\":{\"city\": \"Paris\\n\"}}" SIG "},"
	  "{\"functionCall\":{\"name\":\"get_time\",\"args\":{}}}]},{\"role\":\"user\",\"parts\":["
	  "{\"functionResponse\":{\"name\":\"get_time\",\"response\":{\"result\":\"12:00\"}}},"
	  "{\"functionResponse\":{\"name\":\"get_weather\",\"response\":{\"temp\":21}}}]},"
	  "{\"role\":\"user\",\"parts\":[{\"text\":\"thanks\"}]}]}", 0, NULL },
	{ "a result is named by the nearest earlier call with its id (ids repeat across turns)", NULL,
	  "{\"model\":\"gem\",\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"id\":\"call_0\",\"type\":\"function\","
	  "\"function\":{\"name\":\"f1\",\"arguments\":\"{}\"}}]},{\"role\":\"tool\",\"tool_call_id\":\"call_0\",\"content\":\"[1,2]\"},"
	  "{\"role\":\"assistant\",\"tool_calls\":[{\"id\":\"call_0\",\"type\":\"function\",\"function\":{\"name\":\"f2\","
	  "\"arguments\":{\"a\":1}}}]},{\"role\":\"tool\",\"tool_call_id\":\"call_0\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},"
	  "{\"type\":\"text\",\"text\":\"b\"}]}]}", NULL, NULL,
	  "{\"contents\":[{\"role\":\"model\",\"parts\":[{\"functionCall\":{\"name\":\"f1\",\"args\":{}}" SIG "}]},"
	  "{\"role\":\"user\",\"parts\":[{\"functionResponse\":{\"name\":\"f1\",\"response\":{\"result\":\"[1,2]\"}}}]},"
	  "{\"role\":\"model\",\"parts\":[{\"functionCall\":{\"name\":\"f2\",\"args\":{\"a\":1}}" SIG "}]},"
	  "{\"role\":\"user\",\"parts\":[{\"functionResponse\":{\"name\":\"f2\",\"response\":{\"result\":\"a\\nb\"}}}]}]}", 0, NULL },

	/* What Gemini cannot take: a 400 naming the parameter and the provider. */
	{ "n > 1", NULL, "{\"model\":\"gem\"," HI ",\"n\":2}", NULL, NULL, NULL, 400,
	  REFUSED("n > 1", ": it answers with one choice; ask for n = 1 or leave n out") },
	{ "logprobs", NULL, "{\"model\":\"gem\"," HI ",\"logprobs\":true,\"top_logprobs\":2}", NULL, NULL, NULL, 400,
	  REFUSED("logprobs", "") },
	{ "logit_bias", NULL, "{\"model\":\"gem\"," HI ",\"logit_bias\":{\"50256\":-100}}", NULL, NULL, NULL, 400,
	  REFUSED("logit_bias", "") },
	{ "audio output", NULL, "{\"model\":\"gem\"," HI ",\"modalities\":[\"text\",\"audio\"]}", NULL, NULL, NULL, 400,
	  REFUSED("audio output", "") },
	{ "legacy functions", NULL, "{\"model\":\"gem\"," HI ",\"functions\":[{\"name\":\"f\"}]}", NULL, NULL, NULL, 400,
	  REFUSED("functions/function_call (the legacy form of tools)", ": use tools and tool_choice") },
	{ "an image URL whose type cannot be told", NULL,
	  "{\"model\":\"gem\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":"
	  "{\"url\":\"https://example.com/image?id=7\"}}]}]}", NULL, NULL, NULL, 400,
	  REFUSED("an image URL without a known file type", ": it needs the image's MIME type; send a data: URL, or a "
	  "URL ending in .png, .jpg, .gif or .webp") },
	{ "a data: URL that is not base64", NULL,
	  "{\"model\":\"gem\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":"
	  "{\"url\":\"data:image/png,abc\"}}]}]}", NULL, NULL, NULL, 400,
	  "messages[0]: an image's data: URL must be base64 (data:MIME;base64,…)" },
	{ "a tool result whose id matches no earlier call", NULL,
	  "{\"model\":\"gem\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"},{\"role\":\"tool\",\"tool_call_id\":\"call_zz\","
	  "\"content\":\"1\"}]}", NULL, NULL, NULL, 400,
	  "messages[1]: tool_call_id 'call_zz' matches no tool call of an earlier assistant message (gemini needs the "
	  "function's name)" },
	{ "arguments that are not a JSON object", NULL,
	  "{\"model\":\"gem\",\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"id\":\"c\",\"type\":\"function\","
	  "\"function\":{\"name\":\"f\",\"arguments\":\"{oops\"}}]}]}", NULL, NULL, NULL, 400,
	  "messages[0]: a tool call's function.arguments must be a JSON object" },
	{ "an unknown role", NULL, "{\"model\":\"gem\",\"messages\":[{\"role\":\"function\",\"content\":\"x\"}]}", NULL, NULL,
	  NULL, 400, "messages[0]: unknown role (gemini takes system, developer, user, assistant and tool)" },
	{ "a tool that is not a function", NULL,
	  "{\"model\":\"gem\"," HI ",\"tools\":[{\"type\":\"web_search\"}]}", NULL, NULL, NULL, 400,
	  REFUSED("a tool that is not a function", "") },
	{ "a bad tool_choice", NULL, "{\"model\":\"gem\"," HI ",\"tool_choice\":\"any\"}", NULL, NULL, NULL, 400,
	  "tool_choice must be \"auto\", \"none\", \"required\" or {\"type\":\"function\",\"function\":{\"name\":…}}" },
	{ "temperature that is not a number", NULL, "{\"model\":\"gem\"," HI ",\"temperature\":\"hot\"}", NULL, NULL, NULL,
	  400, "temperature must be a number" },
};

/* ---- answers ---- */

#define STREAM_REQ XH_STREAM_REQ
#define STREAM_REQ_NO_USAGE XH_STREAM_REQ_NO_USAGE
#define WHOLE_REQ XH_WHOLE_REQ

static const struct xanswer answers[] = {
	{ "gemini_stream_text.sse", NULL, STREAM_REQ, 200, 200,
	  XH_ROLE XH_TEXT("今日の東京の天気") XH_TEXT("は曇りで、気温は22度です。\\n") XH_FINISH("stop")
	  XH_USAGE(138, 15, 153, 0) XH_DONE },
	{ "gemini_stream_text.sse", NULL, STREAM_REQ_NO_USAGE, 200, 200,
	  XH_ROLE XH_TEXT("今日の東京の天気") XH_TEXT("は曇りで、気温は22度です。\\n") XH_FINISH("stop") XH_DONE },
	{ "gemini_stream_function_call.sse", NULL, STREAM_REQ, 200, 200,
	  XH_ROLE XH_TOOL(0, "call_test_0", "getWeather") XH_ARGS(0, "{\\\"location\\\":\\\"Tokyo\\\"}")
	  XH_FINISH("tool_calls") XH_USAGE(83, 118, 201, 0) XH_DONE },
	{ "gemini_stream_parallel_calls_then_stop.sse", NULL, STREAM_REQ, 200, 200,
	  XH_ROLE XH_TEXT("Checking both.")
	  XH_TOOL(0, "call_test_0", "get_weather") XH_ARGS(0, "{\\\"city\\\":\\\"Paris\\\",\\\"units\\\":[\\\"c\\\",\\\"f\\\"]}")
	  XH_TOOL(1, "call_test_1", "get_time")
	  XH_ARGS(1, "{\\\"tz\\\":\\\"Europe/Paris\\\",\\\"note\\\":\\\"say \\\\\\\"hi\\\\\\\"\\\"}")
	  XH_FINISH("tool_calls") XH_USAGE(50, 25, 75, 0) XH_DONE },
	{ "gemini_stream_thinking_usage_after_finish.sse", NULL, STREAM_REQ, 200, 200,
	  XH_ROLE XH_REASONING("Thinking about it") XH_TEXT("Answer.") XH_FINISH("length") XH_USAGE(7, 11, 18, 3) XH_DONE },
	{ "gemini_stream_safety.sse", NULL, STREAM_REQ, 200, 200,
	  XH_ROLE XH_TEXT("Here is") XH_FINISH("content_filter") XH_USAGE(12, 2, 14, 0) XH_DONE },
	{ "gemini_stream_midstream_error.sse", NULL, STREAM_REQ, 200, 200,
	  XH_ROLE XH_TEXT("Partial") XH_INTERRUPTED("prov: The model is overloaded. Please try again later.") },
	{ "gemini_stream_no_finish.sse", NULL, STREAM_REQ, 200, 200,
	  XH_ROLE XH_TEXT("Cut") XH_INTERRUPTED("the provider's stream ended without its end marker or a finish reason") },
	{ "gemini_stream_error_first.sse", NULL, STREAM_REQ, 200, 429,
	  XH_ERROR("prov: Resource has been exhausted (e.g. check quota).", "\"upstream_error\"") },
	{ "gemini_nonstream_text.json", NULL, WHOLE_REQ, 200, 200,
	  XH_WHOLE("\"content\":\"There are **3** r's in strawberry.\\n\\nHere is the breakdown: st**r**awbe**rr**y.\"", "stop",
	  XH_WHOLE_USAGE(9, 272, 281, 0)) },
	{ "gemini_nonstream_function_call.json", NULL, WHOLE_REQ, 200, 200,
	  XH_WHOLE("\"content\":null,\"tool_calls\":[{\"id\":\"call_test_0\",\"type\":\"function\",\"function\":{\"name\":\"weather\","
	  "\"arguments\":\"{\\\"location\\\":\\\"San Francisco\\\"}\"}}]", "tool_calls", XH_WHOLE_USAGE(29, 908, 937, 0)) },
	{ NULL, "{\"promptFeedback\": {\"blockReason\": \"SAFETY\"},\"usageMetadata\": {\"promptTokenCount\": 5,"
	  "\"totalTokenCount\": 5}}", WHOLE_REQ, 200, 200, XH_WHOLE("\"content\":null", "content_filter", XH_WHOLE_USAGE(5, 0, 5, 0)) },
	/* Counts past any real one are kept to 2^40 each, so their sums cannot overflow; a negative
	 * count is 0. */
	{ NULL, "{\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"x\"}],\"role\": \"model\"},\"finishReason\": \"STOP\"}],"
	  "\"usageMetadata\": {\"promptTokenCount\": 9223372036854775807,\"toolUsePromptTokenCount\": 1,"
	  "\"candidatesTokenCount\": -5,\"thoughtsTokenCount\": 99999999999999999999}}", WHOLE_REQ, 200, 200,
	  XH_WHOLE("\"content\":\"x\"", "stop", XH_WHOLE_USAGE(1099511627777, 1099511627776, 2199023255553, 0)) },
	{ "gemini_error_429.json", NULL, WHOLE_REQ, 429, 429,
	  XH_ERROR("You exceeded your current quota, please check your plan.", "null") },
	{ "gemini_error_429.json", NULL, STREAM_REQ, 429, 429,
	  XH_ERROR("You exceeded your current quota, please check your plan.", "null") },
};

/* Classes and Retry-After, which the client's bytes do not show. */
static void
check_classes(void)
{
	static const struct {
		const char     *name, *body, *request;
		long            status;
		enum fail_class cls;
		const char     *retry_after;
	} cases[] = {
		{ "429 RESOURCE_EXHAUSTED: retryDelay 34.4s → 35", NULL, WHOLE_REQ, 429, FAIL_429, "35" },
		{ "a bad key: 400 INVALID_ARGUMENT with API_KEY_INVALID → auth",
		  "{\"error\":{\"code\":400,\"message\":\"API key not valid.\",\"status\":\"INVALID_ARGUMENT\",\"details\":"
		  "[{\"@type\":\"type.googleapis.com/google.rpc.ErrorInfo\",\"reason\":\"API_KEY_INVALID\"}]}}", WHOLE_REQ, 400, FAIL_AUTH, "" },
		{ "403 PERMISSION_DENIED → auth", "{\"error\":{\"code\":403,\"message\":\"no\",\"status\":\"PERMISSION_DENIED\"}}",
		  WHOLE_REQ, 403, FAIL_AUTH, "" },
		{ "503 UNAVAILABLE", "{\"error\":{\"code\":503,\"message\":\"busy\",\"status\":\"UNAVAILABLE\"}}", WHOLE_REQ, 503,
		  FAIL_503, "" },
		{ "400 INVALID_ARGUMENT → the client's", "{\"error\":{\"code\":400,\"message\":\"bad\",\"status\":\"INVALID_ARGUMENT\"}}",
		  WHOLE_REQ, 400, FAIL_CLIENT, "" },
		{ "in the stream, before content: RESOURCE_EXHAUSTED → 429 class, retryDelay 1.5s → 2", NULL, STREAM_REQ, 200,
		  FAIL_429, "2" },
	};
	char *s429 = NULL, *sfirst = NULL;
	size_t n429 = 0, nfirst = 0;

	s429 = xh_slurp("test/fixtures/gemini_error_429.json", &n429);
	sfirst = xh_slurp("test/fixtures/gemini_stream_error_first.sse", &nfirst);
	for (size_t i = 0; i < NELEM(cases); i++) {
		struct xh h;
		const char *body = cases[i].body ? cases[i].body : cases[i].status == 429 ? s429 : sfirst;

		unit_case("gemini error class: %s", cases[i].name);
		if (!CHECK(body != NULL) || !CHECK(xh_setup(&h, &adapter_gemini, PROVIDER_GEMINI, "prov", MODEL, cases[i].request) == 0))
			continue;
		xh_replay(&h, cases[i].status, body, strlen(body), 0, 0);
		CHECKF(h.x.fail.cls == cases[i].cls, "class %d, want %d", (int)h.x.fail.cls, (int)cases[i].cls);
		CHECKF(strcmp(h.x.fail.retry_after, cases[i].retry_after) == 0, "retry_after \"%s\", want \"%s\"",
		    h.x.fail.retry_after, cases[i].retry_after);
		if (cases[i].retry_after[0]) {
			char hdr[64];

			snprintf(hdr, sizeof hdr, "Retry-After: %s\r\n", cases[i].retry_after);
			CHECKF(strstr(h.cap.headers, hdr) != NULL, "headers: %s", xh_printable(h.cap.headers, strlen(h.cap.headers)));
		}
		xh_teardown(&h);
	}
	free(s429);
	free(sfirst);
}

/* ---- the gateway's own memory full while translating ---- */

static void *hog[4096];
static int nhog;

/* Take every byte the allocator has left, then every byte left in the exchange's arena. */
static void
memory_full(struct xh *h)
{
	for (size_t n = (size_t)1 << 24; n >= MEM_BLOCK; n /= 2)
		while (nhog < (int)NELEM(hog) && (hog[nhog] = mem_alloc(n)) != NULL)
			nhog++;
	for (size_t n = 4096; n >= 16; n /= 2)
		while (arena_alloc(&h->arena, n) != NULL)
			;
}

static void
memory_back(void)
{
	while (nhog > 0)
		mem_free(hog[--nhog]);
}

#define EV_USAGE "data: {\"usageMetadata\":{\"promptTokenCount\":3}}\n\n"
#define EV_TEXT "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hi\"}],\"role\":\"model\"}}]}\n\n"
#define EV_CALL "data: {\"candidates\":[{\"content\":{\"parts\":[{\"functionCall\":{\"name\":\"f\",\"args\":{}}}]," \
	"\"role\":\"model\"}}]}\n\n"

/*
 * The held first chunk and the first tool call take memory the gateway may not have. With
 * none left: before the commit point the client gets 503 overloaded (never a fallback); after
 * it, one interruption event and no [DONE]. Either way the process goes on and gives it all back.
 */
static void
check_memory_full(void)
{
	struct upstream_result ok = { .ok = 1 };
	struct xh h;
	size_t before = xh_in_use();

	unit_case("gemini: memory full at the first chunk, before the commit point: 503 overloaded");
	if (CHECK(xh_setup(&h, &adapter_gemini, PROVIDER_GEMINI, "prov", MODEL, STREAM_REQ) == 0)) {
		exchange_upstream_head(&h.x, 200);
		CHECK(exchange_feed(&h.x, EV_USAGE, strlen(EV_USAGE)) == 0); /* tokens, no chunk yet */
		CHECK(buf_reserve(&h.x.scratch, 1024) == BUF_OK); /* so it is holding the role chunk that fails */
		memory_full(&h);
		CHECK(exchange_feed(&h.x, EV_TEXT, strlen(EV_TEXT)) < 0);
		exchange_upstream_done(&h.x, &ok);
		CHECKF(h.cap.status == 503, "status %d", h.cap.status);
		CHECKF(h.cap.text != NULL && strstr(h.cap.text, "\"code\":\"overloaded\"") != NULL, "%s",
		    h.cap.text ? xh_printable(h.cap.text, h.cap.len) : "(nothing)");
		memory_back();
		xh_teardown(&h);
	}
	unit_case("gemini: memory full at the first tool call, after the commit point: one interruption, no [DONE]");
	if (CHECK(xh_setup(&h, &adapter_gemini, PROVIDER_GEMINI, "prov", MODEL, STREAM_REQ) == 0)) {
		exchange_upstream_head(&h.x, 200);
		CHECK(exchange_feed(&h.x, EV_TEXT, strlen(EV_TEXT)) == 0);
		memory_full(&h);
		CHECK(exchange_feed(&h.x, EV_CALL, strlen(EV_CALL)) < 0);
		exchange_upstream_done(&h.x, &ok);
		CHECKF(h.cap.status == 200, "status %d", h.cap.status);
		CHECKF(h.cap.text != NULL && strstr(h.cap.text, "out of memory") != NULL &&
		    strstr(h.cap.text, "[DONE]") == NULL && strstr(h.cap.text, "tool_calls") == NULL, "%s",
		    h.cap.text ? xh_printable(h.cap.text, h.cap.len) : "(nothing)");
		memory_back();
		xh_teardown(&h);
	}
	unit_case("gemini: memory full: all of it given back");
	CHECKF(xh_in_use() == before, "%zu bytes in use, %zu before", xh_in_use(), before);
}

void
suite_gemini(void)
{
	char err[256];

	unit_case("gemini mem_init");
	if (!CHECKF(mem_init(64 << 20, err, sizeof err) == 0, "mem_init: %s", err))
		return;
	xh_check_rows(&adapter_gemini, PROVIDER_GEMINI, MODEL, rows, NELEM(rows), "gemini");
	xh_check_answers(&adapter_gemini, PROVIDER_GEMINI, answers, NELEM(answers), "gemini");
	check_classes();
	check_memory_full();
	unit_case("gemini mem in use after all");
	CHECKF(xh_in_use() == 0, "%zu bytes in use", xh_in_use());
	mem_shutdown();
}
