/*
 * test_ollama.c — the Ollama adapter's conformance: OpenAI requests in, /api/chat requests out
 * (one row per feature, and the 400s for what Ollama cannot honour); NDJSON streams
 * (test/fixtures/ollama_*) replayed through the real exchange with its parser in NDJSON mode —
 * whole, cut at every byte, one byte at a time, LF and CRLF — must give exactly the OpenAI
 * chunks written out below; the mid-stream error exactly one stream_interrupted event and no
 * [DONE]; whole answers exactly one chat.completion.
 */
#include <stdlib.h>
#include <string.h>
#include "sluice.h"
#include "unit.h"
#include "xharness.h"

#define MODEL "llama3.2"
#define HI "\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]"
#define HI_OUT "{\"model\":\"llama3.2\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]"
#define TOOLS "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"description\":\"Weather\"," \
	"\"parameters\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}}}}}]"
#define REFUSED(what, why) what " is not supported by provider 'prov' (type ollama)" why

static const struct xrow rows[] = {
	{ "a whole answer: stream false written out; the URL and headers", NULL, "{\"model\":\"gem\"," HI "}",
	  "https://upstream.test/v1/api/chat",
	  "Authorization: Bearer KEY\nContent-Type: application/json\nAccept: application/json\nExpect:\n",
	  HI_OUT ",\"stream\":false}", 0, NULL },
	{ "a stream: NDJSON accepted", NULL, "{\"model\":\"gem\"," HI ",\"stream\":true}", "https://upstream.test/v1/api/chat",
	  "Authorization: Bearer KEY\nContent-Type: application/json\nAccept: application/x-ndjson\nExpect:\n",
	  HI_OUT ",\"stream\":true}", 0, NULL },
	{ "roles: developer → system; text parts joined; null content → \"\"", NULL,
	  "{\"model\":\"gem\",\"messages\":[{\"role\":\"developer\",\"content\":\"D\"},{\"role\":\"system\",\"content\":"
	  "[{\"type\":\"text\",\"text\":\"S1\"},{\"type\":\"text\",\"text\":\"S2\"}]},{\"role\":\"user\",\"content\":\"U\\u00e9\"},"
	  "{\"role\":\"assistant\",\"content\":null}]}", NULL, NULL,
	  "{\"model\":\"llama3.2\",\"messages\":[{\"role\":\"system\",\"content\":\"D\"},{\"role\":\"system\",\"content\":\"S1\\nS2\"},"
	  "{\"role\":\"user\",\"content\":\"U\\u00e9\"},{\"role\":\"assistant\",\"content\":\"\"}],\"stream\":false}", 0, NULL },
	{ "options: temperature, top_p, num_predict, stop, seed, penalties", NULL,
	  "{\"model\":\"gem\"," HI ",\"temperature\":0.2,\"top_p\":1,\"max_tokens\":9,\"max_completion_tokens\":64,\"stop\":\"\\n\\n\","
	  "\"seed\":42,\"presence_penalty\":0.5,\"frequency_penalty\":0.25}", NULL, NULL,
	  HI_OUT ",\"options\":{\"temperature\":0.2,\"top_p\":1,\"num_predict\":64,\"stop\":[\"\\n\\n\"],\"seed\":42,"
	  "\"presence_penalty\":0.5,\"frequency_penalty\":0.25},\"stream\":false}", 0, NULL },
	{ "a stop array; max_tokens alone", NULL, "{\"model\":\"gem\"," HI ",\"stop\":[\"a\",\"b\"],\"max_tokens\":5}", NULL, NULL,
	  HI_OUT ",\"options\":{\"num_predict\":5,\"stop\":[\"a\",\"b\"]},\"stream\":false}", 0, NULL },
	{ "response_format json_object → format json", NULL,
	  "{\"model\":\"gem\"," HI ",\"response_format\":{\"type\":\"json_object\"}}", NULL, NULL,
	  HI_OUT ",\"format\":\"json\",\"stream\":false}", 0, NULL },
	{ "response_format json_schema → format = the schema", NULL,
	  "{\"model\":\"gem\"," HI ",\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"n\",\"schema\":"
	  "{\"type\":\"object\"}}}}", NULL, NULL, HI_OUT ",\"format\":{\"type\":\"object\"},\"stream\":false}", 0, NULL },
	{ "images: data: URLs → bare base64 in images", NULL,
	  "{\"model\":\"gem\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"What?\"},"
	  "{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,iVBORw0KGgo=\"}},"
	  "{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/jpeg;base64,/9j/4AAQ\"}}]}]}", NULL, NULL,
	  "{\"model\":\"llama3.2\",\"messages\":[{\"role\":\"user\",\"content\":\"What?\",\"images\":[\"iVBORw0KGgo=\",\"/9j/4AAQ\"]}],"
	  "\"stream\":false}", 0, NULL },
	{ "tools passed as they are; tool_choice auto", NULL, "{\"model\":\"gem\"," HI "," TOOLS ",\"tool_choice\":\"auto\"}",
	  NULL, NULL, HI_OUT "," TOOLS ",\"stream\":false}", 0, NULL },
	{ "tool_choice none: no tools sent", NULL, "{\"model\":\"gem\"," HI "," TOOLS ",\"tool_choice\":\"none\"}", NULL, NULL,
	  HI_OUT ",\"stream\":false}", 0, NULL },
	{ "tool calls (arguments decoded into objects) and results named by their call", NULL,
	  "{\"model\":\"gem\",\"messages\":[{\"role\":\"user\",\"content\":\"w?\"},{\"role\":\"assistant\",\"content\":null,"
	  "\"tool_calls\":[{\"id\":\"c1\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":"
	  "\"{\\\"city\\\":\\\"Paris\\\"}\"}},{\"id\":\"c2\",\"type\":\"function\",\"function\":{\"name\":\"now\",\"arguments\":\"\"}}]},"
	  "{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"21C\"},{\"role\":\"tool\",\"tool_call_id\":\"c2\",\"content\":\"noon\"},"
	  "{\"role\":\"tool\",\"tool_call_id\":\"zz\",\"content\":\"?\"}]}", NULL, NULL,
	  "{\"model\":\"llama3.2\",\"messages\":[{\"role\":\"user\",\"content\":\"w?\"},{\"role\":\"assistant\",\"content\":\"\","
	  "\"tool_calls\":[{\"function\":{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Paris\"}}},"
	  "{\"function\":{\"name\":\"now\",\"arguments\":{}}}]},{\"role\":\"tool\",\"content\":\"21C\",\"tool_name\":\"get_weather\"},"
	  "{\"role\":\"tool\",\"content\":\"noon\",\"tool_name\":\"now\"},{\"role\":\"tool\",\"content\":\"?\"}],\"stream\":false}", 0, NULL },

	{ "n > 1", NULL, "{\"model\":\"gem\"," HI ",\"n\":3}", NULL, NULL, NULL, 400,
	  REFUSED("n > 1", ": it answers with one choice; ask for n = 1 or leave n out") },
	{ "an image URL", NULL,
	  "{\"model\":\"gem\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":"
	  "{\"url\":\"https://example.com/a.png\"}}]}]}", NULL, NULL, NULL, 400,
	  REFUSED("an image URL", ": it takes images only as base64 data: URLs") },
	{ "tool_choice required", NULL, "{\"model\":\"gem\"," HI "," TOOLS ",\"tool_choice\":\"required\"}", NULL, NULL, NULL, 400,
	  REFUSED("tool_choice other than auto and none", ": it cannot force a tool call") },
	{ "a named tool_choice", NULL,
	  "{\"model\":\"gem\"," HI "," TOOLS ",\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"get_weather\"}}}",
	  NULL, NULL, NULL, 400, REFUSED("tool_choice other than auto and none", ": it cannot force a tool call") },
	{ "logprobs", NULL, "{\"model\":\"gem\"," HI ",\"logprobs\":true}", NULL, NULL, NULL, 400, REFUSED("logprobs", "") },
	{ "arguments that are not a JSON object", NULL,
	  "{\"model\":\"gem\",\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"id\":\"c\",\"type\":\"function\","
	  "\"function\":{\"name\":\"f\",\"arguments\":\"[1]\"}}]}]}", NULL, NULL, NULL, 400,
	  "messages[0]: a tool call's function.arguments must be a JSON object" },
	{ "an unknown role", NULL, "{\"model\":\"gem\",\"messages\":[{\"role\":\"function\",\"content\":\"x\"}]}", NULL, NULL,
	  NULL, 400, "messages[0]: a message must be an object with role system, developer, user, assistant or tool" },
	{ "a non-text part in a system message", NULL,
	  "{\"model\":\"gem\",\"messages\":[{\"role\":\"system\",\"content\":[{\"type\":\"image_url\",\"image_url\":{\"url\":\"x\"}}]}]}",
	  NULL, NULL, NULL, 400, "a system message's content parts must be text parts" },
};

static const struct xanswer answers[] = {
	{ "ollama_chat_stream.ndjson", NULL, XH_STREAM_REQ, 200, 200,
	  XH_ROLE XH_TEXT("The") XH_FINISH("stop") XH_USAGE(26, 282, 308, 0) XH_DONE },
	{ "ollama_chat_stream.ndjson", NULL, XH_STREAM_REQ_NO_USAGE, 200, 200,
	  XH_ROLE XH_TEXT("The") XH_FINISH("stop") XH_DONE },
	{ "ollama_chat_stream_tool_call.ndjson", NULL, XH_STREAM_REQ, 200, 200,
	  XH_ROLE XH_TOOL(0, "call_test_0", "get_weather") XH_ARGS(0, "{\\\"city\\\":\\\"Tokyo\\\"}") XH_FINISH("tool_calls")
	  XH_USAGE(169, 15, 184, 0) XH_DONE },
	{ "ollama_chat_stream_thinking_length.ndjson", NULL, XH_STREAM_REQ, 200, 200,
	  XH_ROLE XH_REASONING("Let me think") XH_REASONING(" \\\"hard\\\".") XH_TEXT("The answer is") XH_FINISH("length")
	  XH_USAGE(0, 5, 5, 0) XH_DONE },
	{ "ollama_chat_stream_midstream_error.ndjson", NULL, XH_STREAM_REQ, 200, 200,
	  XH_ROLE XH_TEXT(" Yes") XH_TEXT(".") XH_TEXT("I") XH_TEXT("can")
	  XH_INTERRUPTED("prov: an error was encountered while running the model") },
	/* /api/generate's lines carry no message: the error comes before any content, a clean 502. */
	{ "ollama_generate_stream_midstream_error.ndjson", NULL, XH_STREAM_REQ, 200, 502,
	  XH_ERROR("prov: an error was encountered while running the model", "\"upstream_error\"") },
	{ NULL, "{\"model\":\"llama3.2\",\"created_at\":\"2023-08-04T08:52:19Z\",\"message\":{\"role\":\"assistant\",\"content\":"
	  "\"tok0\"},\"done\":false}\n", XH_STREAM_REQ, 200, 200,
	  XH_ROLE XH_TEXT("tok0") XH_INTERRUPTED("the provider's stream ended without its end marker or a finish reason") },
	{ NULL, "{\"model\":\"llama3.2\",\"created_at\":\"2023-08-04T08:52:19Z\",\"message\":{\"role\":\"assistant\",\"content\":"
	  "\"tok0\"},\"done\":false}\n{not json\n", XH_STREAM_REQ, 200, 200,
	  XH_ROLE XH_TEXT("tok0") XH_INTERRUPTED("prov: a line that is not a JSON object") },
	{ "ollama_chat_nonstream_tool_call.json", NULL, XH_WHOLE_REQ, 200, 200,
	  XH_WHOLE("\"content\":null,\"tool_calls\":[{\"id\":\"call_test_0\",\"type\":\"function\",\"function\":{\"name\":"
	  "\"get_weather\",\"arguments\":\"{\\\"city\\\":\\\"Tokyo\\\"}\"}},{\"id\":\"call_ollama_1\",\"type\":\"function\","
	  "\"function\":{\"name\":\"get_time\",\"arguments\":\"{}\"}}]", "tool_calls", XH_WHOLE_USAGE(169, 18, 187, 0)) },
	{ NULL, "{\"model\":\"llama3.2\",\"created_at\":\"2023-08-04T19:22:45Z\",\"message\":{\"role\":\"assistant\",\"content\":"
	  "\"Hello \\\"you\\\"\",\"thinking\":\"hm\"},\"done_reason\":\"stop\",\"done\":true,\"prompt_eval_count\":3,\"eval_count\":4}",
	  XH_WHOLE_REQ, 200, 200,
	  XH_WHOLE("\"content\":\"Hello \\\"you\\\"\",\"reasoning_content\":\"hm\"", "stop", XH_WHOLE_USAGE(3, 4, 7, 0)) },
	{ NULL, "{\"model\":\"llama3.2\",\"message\":{\"role\":\"assistant\",\"content\":\"x\"},\"done\":false}", XH_WHOLE_REQ,
	  200, 502, XH_ERROR("prov: an answer without done: true", "\"upstream_error\"") },
	{ NULL, "{\"error\":\"model \\\"llama9\\\" not found, try pulling it first\"}", XH_WHOLE_REQ, 404, 404,
	  XH_ERROR("model \\\"llama9\\\" not found, try pulling it first", "null") },
	{ NULL, "{\"error\":\"model \\\"llama9\\\" not found, try pulling it first\"}", XH_STREAM_REQ, 404, 404,
	  XH_ERROR("model \\\"llama9\\\" not found, try pulling it first", "null") },
};

void
suite_ollama(void)
{
	char err[256];

	unit_case("ollama mem_init");
	if (!CHECKF(mem_init(64 << 20, err, sizeof err) == 0, "mem_init: %s", err))
		return;
	xh_check_rows(&adapter_ollama, PROVIDER_OLLAMA, MODEL, rows, NELEM(rows), "ollama");
	xh_check_answers(&adapter_ollama, PROVIDER_OLLAMA, answers, NELEM(answers), "ollama");
	unit_case("ollama mem in use after all");
	CHECKF(xh_in_use() == 0, "%zu bytes in use", xh_in_use());
	mem_shutdown();
}
