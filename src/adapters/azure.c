/*
 * azure.c — Azure OpenAI (FORMATS.md §6): OpenAI's wire format on Azure's URL and auth.
 *
 * POST {base_url}/openai/deployments/{deployment}/chat/completions?api-version={api_version},
 * where the deployment is the target's model (percent-encoded into the path) and api_version the
 * provider's (config default 2024-10-21); the key goes in `api-key`, never as a bearer token.
 * The body is exactly what the OpenAI adapter sends (openai_encode_body): the client's bytes
 * with `model` replaced by the deployment name and, on a stream, usage asked for. Azure ignores
 * `model` (the path chose the deployment); it is kept rather than cut out so the two adapters
 * share one body and one set of tests. Answers, streams and errors are OpenAI's and go through
 * openai.c's decoders unchanged — which never assume choices[0] exists, so Azure's first stream
 * chunk (`choices: []`, prompt_filter_results, no usage) is held as preamble like a role chunk,
 * and content_filter_results on each choice pass through to the client untouched.
 */
#include "xlate.h"

static int
encode(struct exchange *x, struct upstream_req *req, struct buf *body)
{
	const struct cfg_provider *p = x->target->provider;
	const char *dep, *auth = NULL;

	if (openai_encode_body(x, body) < 0 || (dep = xl_path_escape(x->arena, x->target->model)) == NULL)
		return -1;
	req->url = arena_cat(x->arena, p->base_url, "/openai/deployments/", dep,
	    "/chat/completions?api-version=", p->api_version, (char *)NULL);
	if (p->api_key[0] && (auth = arena_cat(x->arena, "api-key: ", p->api_key, (char *)NULL)) == NULL)
		return -1;
	req->headers = xl_headers(x, auth, x->req->stream ? "Accept: text/event-stream" : "Accept: application/json");
	return req->url != NULL && req->headers != NULL ? 0 : -1;
}

/* The rest is the OpenAI adapter's (called through its vtable: nothing copied). */
static int
stream_event(struct exchange *x, const struct sse_event *ev)
{
	return adapter_openai.stream_event(x, ev);
}

static int
response(struct exchange *x, const char *p, size_t n)
{
	return adapter_openai.response(x, p, n);
}

const struct adapter adapter_azure = {
	.name = "azure",
	.encode = encode,
	.stream_event = stream_event,
	.response = response,
	.error = xc_error_default,
};
