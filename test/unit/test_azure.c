/*
 * test_azure.c — the Azure OpenAI adapter: Azure's URL (deployment, api-version), the api-key
 * header and OpenAI's body (model replaced, usage asked for on streams); and an Azure stream —
 * its first chunk `choices: []` with prompt_filter_results and no usage, content_filter_results
 * on every choice — replayed through openai.c's decoder at every feeding, which must hold that
 * first chunk as preamble (never reading a choices[0] that is not there), pass everything
 * through with only `model` rewritten, and keep the usage chunk only when the client asked.
 */
#include <stdlib.h>
#include <string.h>
#include "sluice.h"
#include "unit.h"
#include "xharness.h"

#define DEP "gpt4o-prod"
#define URL "https://upstream.test/v1/openai/deployments/" DEP "/chat/completions?api-version=2024-10-21"
#define HI "\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]"

static const struct xrow rows[] = {
	{ "the deployment URL with api-version, api-key (no bearer), model replaced", NULL, "{\"model\":\"gem\"," HI "}", URL,
	  "api-key: KEY\nContent-Type: application/json\nAccept: application/json\nExpect:\n",
	  "{\"model\":\"" DEP "\"," HI "}", 0, NULL },
	{ "a stream: usage asked for, SSE accepted", NULL, "{\"model\":\"gem\"," HI ",\"stream\":true}", URL,
	  "api-key: KEY\nContent-Type: application/json\nAccept: text/event-stream\nExpect:\n",
	  "{\"model\":\"" DEP "\"," HI ",\"stream\":true,\"stream_options\":{\"include_usage\":true}}", 0, NULL },
	{ "the deployment is percent-encoded", "my dep/1", "{\"model\":\"gem\"," HI "}",
	  "https://upstream.test/v1/openai/deployments/my%20dep%2F1/chat/completions?api-version=2024-10-21", NULL,
	  "{\"model\":\"my dep/1\"," HI "}", 0, NULL },
	{ "everything OpenAI takes passes (n, logprobs, tools, images)", NULL,
	  "{\"model\":\"gem\"," HI ",\"n\":2,\"logprobs\":true,\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}]}",
	  NULL, NULL, "{\"model\":\"" DEP "\"," HI ",\"n\":2,\"logprobs\":true,\"tools\":[{\"type\":\"function\",\"function\":"
	  "{\"name\":\"f\"}}]}", 0, NULL },
};

#define SAFE "{\"filtered\":false,\"severity\":\"safe\"}"
#define CF "\"content_filter_results\":{\"hate\":" SAFE ",\"self_harm\":" SAFE ",\"sexual\":" SAFE ",\"violence\":" SAFE "}"
#define TAIL "\"created\":1727346170,\"id\":\"chatcmpl-AZ1\",\"model\":\"gem\",\"object\":\"chat.completion.chunk\"," \
	"\"system_fingerprint\":\"fp_67802d9a6d\""
#define FILTER "data: {\"choices\":[],\"created\":0,\"id\":\"\",\"model\":\"gem\",\"object\":\"\",\"prompt_filter_results\":" \
	"[{\"prompt_index\":0,\"content_filter_results\":{\"hate\":" SAFE ",\"jailbreak\":{\"filtered\":false,\"detected\":false}," \
	"\"self_harm\":" SAFE ",\"sexual\":" SAFE ",\"violence\":" SAFE "}}]}\n\n"
#define ROLE "data: {\"choices\":[{\"content_filter_results\":{},\"delta\":{\"content\":\"\",\"refusal\":null,\"role\":" \
	"\"assistant\"},\"finish_reason\":null,\"index\":0,\"logprobs\":null}]," TAIL "}\n\n"
#define HELLO "data: {\"choices\":[{" CF ",\"delta\":{\"content\":\"Hello\"},\"finish_reason\":null,\"index\":0," \
	"\"logprobs\":null}]," TAIL "}\n\n"
#define FINISH "data: {\"choices\":[{\"content_filter_results\":{},\"delta\":{},\"finish_reason\":\"content_filter\"," \
	"\"index\":0,\"logprobs\":null}]," TAIL "}\n\n"
#define USAGE "data: {\"choices\":[]," TAIL ",\"usage\":{\"completion_tokens\":1,\"prompt_tokens\":9,\"total_tokens\":10}}\n\n"

static const struct xanswer answers[] = {
	{ "azure_openai_stream_content_filter.sse", NULL, XH_STREAM_REQ, 200, 200, FILTER ROLE HELLO FINISH USAGE XH_DONE },
	{ "azure_openai_stream_content_filter.sse", NULL, XH_STREAM_REQ_NO_USAGE, 200, 200, FILTER ROLE HELLO FINISH XH_DONE },
	/* Only the filter chunk and the role chunk, then the end: no content ever came. */
	{ NULL, "data: {\"choices\":[],\"created\":0,\"id\":\"\",\"model\":\"\",\"object\":\"\",\"prompt_filter_results\":[]}\n\n"
	  "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null,\"index\":0}],"
	  "\"model\":\"x\"}\n\ndata: [DONE]\n\n", XH_STREAM_REQ, 200, 502,
	  XH_ERROR("the provider's stream ended with no content", "\"upstream_closed\"") },
	{ NULL, "{\"choices\":[{\"content_filter_results\":{},\"finish_reason\":\"stop\",\"index\":0,\"message\":{\"content\":\"Hi!\","
	  "\"role\":\"assistant\"}}],\"created\":1727346170,\"id\":\"chatcmpl-AZ2\",\"model\":\"gpt-4o-2024-08-06\",\"object\":"
	  "\"chat.completion\",\"prompt_filter_results\":[],\"usage\":{\"completion_tokens\":2,\"prompt_tokens\":9,\"total_tokens\":11}}",
	  XH_WHOLE_REQ, 200, 200,
	  "{\"choices\":[{\"content_filter_results\":{},\"finish_reason\":\"stop\",\"index\":0,\"message\":{\"content\":\"Hi!\","
	  "\"role\":\"assistant\"}}],\"created\":1727346170,\"id\":\"chatcmpl-AZ2\",\"model\":\"gem\",\"object\":"
	  "\"chat.completion\",\"prompt_filter_results\":[],\"usage\":{\"completion_tokens\":2,\"prompt_tokens\":9,\"total_tokens\":11}}" },
	/* An event whose JSON spans three data lines (SSE joins them with '\n'): passed on as one
	 * data line, the joins as spaces (a raw '\n' would end the line at the client, leaving it
	 * an empty event and a line of garbage). */
	{ NULL, "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"},\ndata: \"finish_reason\":null,\"index\":0}],\n"
	  "data: \"model\":\"x\"}\n\ndata: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\",\"index\":0}],\"model\":\"x\"}\n\n"
	  "data: [DONE]\n\n", XH_STREAM_REQ_NO_USAGE, 200, 200,
	  "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}, \"finish_reason\":null,\"index\":0}], \"model\":\"gem\"}\n\n"
	  "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\",\"index\":0}],\"model\":\"gem\"}\n\n" XH_DONE },
	/* A filtered prompt: Azure's 400 with code content_filter, kept for the client. */
	{ NULL, "{\"error\":{\"code\":\"content_filter\",\"message\":\"The response was filtered due to the prompt triggering "
	  "Azure OpenAI's content management policy.\",\"status\":400,\"innererror\":{\"code\":\"ResponsibleAIPolicyViolation\"}}}",
	  XH_WHOLE_REQ, 400, 400,
	  XH_ERROR("The response was filtered due to the prompt triggering Azure OpenAI's content management policy.",
	  "\"content_filter\"") },
};

void
suite_azure(void)
{
	char err[256];

	unit_case("azure mem_init");
	if (!CHECKF(mem_init(64 << 20, err, sizeof err) == 0, "mem_init: %s", err))
		return;
	xh_check_rows(&adapter_azure, PROVIDER_AZURE, DEP, rows, NELEM(rows), "azure");
	xh_check_answers(&adapter_azure, PROVIDER_AZURE, answers, NELEM(answers), "azure");
	unit_case("azure mem in use after all");
	CHECKF(xh_in_use() == 0, "%zu bytes in use", xh_in_use());
	mem_shutdown();
}
