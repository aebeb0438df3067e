/*
 * test_anthropic.c — the Anthropic adapter and the OpenAI emitter, through the real exchange.
 *
 * Streams: each recorded stream (test/fixtures/anthropic_stream_*.sse) is replayed through
 * exchange_prepare → exchange_upstream_head(200) → exchange_feed → exchange_upstream_done into a
 * capture sink — whole, cut in two at every byte, one byte at a time, and all of it again with
 * CRLF line ends — and the client's bytes must equal test/fixtures/expected/<fixture> exactly
 * every time (derived by hand from the fixture: see each row's comment). Each piece is fed from
 * its own malloc'd copy, spoiled as soon as exchange_feed returns. After every replay the
 * exchange is released and mem's in-use count must be back where it started.
 *
 * Then: whole answers (anthropic_nonstream_*.json) → one chat.completion; small inline streams
 * for each stop reason, errors as the first event, streams that stop short; the error hook; the
 * emitter on its own (interleaved tool arguments, a whole JSON value as arguments, ids minted
 * for calls that come without); and the request translation table (OpenAI request in, exact
 * Anthropic body out, one row per feature), with the 400 rows.
 */
#include <stdlib.h>
#include <string.h>
#include "adapters/adapter.h"
#include "unit.h"

#define PUBLIC "\"my-claude\""

/* ---- a sink that records what the client would receive ---- */

struct capture {
	char   *out;
	size_t  len, cap;
	int     status, heads, ends;
	char    ctype[64];
	int64_t clen;
};

static void
cap_put(struct capture *c, const void *p, size_t n)
{
	if (c->len + n > c->cap) {
		c->cap = (c->len + n) * 2 + 256;
		if ((c->out = realloc(c->out, c->cap)) == NULL)
			abort();
	}
	memcpy(c->out + c->len, p, n);
	c->len += n;
}

static int
cap_head(void *o, int status, const char *ctype, const char *headers, int64_t len)
{
	struct capture *c = o;

	c->heads++;
	c->status = status;
	c->clen = len;
	snprintf(c->ctype, sizeof c->ctype, "%s", ctype);
	return 0;
}

static int
cap_write(void *o, const struct iovec *v, int n)
{
	for (int i = 0; i < n; i++)
		cap_put(o, v[i].iov_base, v[i].iov_len);
	return 0;
}

static int
cap_borrow(void *o, const char *p, size_t n)
{
	cap_put(o, p, n);
	return 0;
}

static void cap_end(void *o) { ((struct capture *)o)->ends++; }
static size_t cap_queued(const void *o) { return 0; }

static const struct sink_ops cap_ops = {
	.head = cap_head, .write = cap_write, .borrow = cap_borrow, .end = cap_end, .queued = cap_queued,
};

/* ---- one exchange against the anthropic target ---- */

static struct cfg_provider prov;
static struct config cfg;
static struct target tgt;

static struct run {
	struct arena    arena;
	struct chat_req req;
	struct exchange x;
	struct capture  cap;
} R;

static void
setup_config(void)
{
	prov.name = "anth";
	prov.type = PROVIDER_ANTHROPIC;
	prov.base_url = "https://api.anthropic.test";
	prov.api_key = "sk-ant-test";
	prov.api_version = "2023-06-01";
	prov.ca_file = "";
	prov.max_response_body = 8u << 20;
	prov.default_max_tokens = 4096;
	cfg.server.stream_heartbeat = 0; /* exchange_prepare arms no timer: no loop runs here */
	tgt.provider = &prov;
	tgt.model = "claude-sonnet-4-5";
	tgt.adapter = &adapter_anthropic;
}

static size_t
in_use(void)
{
	struct mem_stats st;

	mem_get_stats(&st);
	return st.in_use;
}

/* The client's request read as api.c reads it, and an exchange prepared for it. */
static int
run_open(const char *request)
{
	struct chat_req *r = &R.req;
	struct exchange *x = &R.x;
	int t;

	free(R.cap.out);
	memset(&R, 0, sizeof R);
	arena_init(&R.arena);
	r->body = request;
	r->len = strlen(request);
	if (json_parse(&r->j, &R.arena, r->body, r->len) <= 0)
		return -1;
	r->model = json_find(&r->j, 0, "model");
	t = json_find(&r->j, 0, "stream");
	r->stream = t >= 0 && json_eq_literal(&r->j, t, "true");
	r->stream_options = json_find(&r->j, 0, "stream_options");
	t = json_find(&r->j, r->stream_options, "include_usage");
	r->include_usage = r->stream && t >= 0 && json_eq_literal(&r->j, t, "true");
	x->sink = (struct sink){ &cap_ops, &R.cap };
	x->arena = &R.arena;
	x->cfg = &cfg;
	x->req = r;
	x->public_model = PUBLIC;
	x->public_model_len = strlen(PUBLIC);
	x->plan.targets = &tgt;
	x->plan.ntargets = 1;
	x->target = &tgt;
	loop_timer_init(&x->retry_timer);
	loop_timer_init(&x->deadline_timer);
	strcpy(x->em.id, "chatcmpl-test");
	strcpy(x->em.created, "1700000000");
	exchange_prepare(x);
	return 0;
}

/* The request is over (what the connection's `gone` does), and its memory goes back. */
static void
run_close(void)
{
	exchange_handler.gone(&R.x);
	arena_release(&R.arena);
}

/* Feed n bytes from a copy that is spoiled and freed as soon as exchange_feed returns. */
static int
feed_copy(const char *s, size_t n)
{
	char *c = malloc(n ? n : 1);
	int rc;

	if (c == NULL)
		abort();
	memcpy(c, s, n);
	rc = exchange_feed(&R.x, c, n);
	memset(c, '#', n);
	free(c);
	return rc;
}

/*
 * Replay a provider's 200 answer: pieces of `step` bytes after a first cut at `cut` (step 0:
 * the rest in one piece). A feed that fails ends the transfer the way upstream.c ends it
 * (aborted by our own callback); otherwise it ends cleanly.
 */
static void
replay(const char *body, size_t n, size_t cut, size_t step)
{
	struct upstream_result ok = { .ok = 1 }, aborted = { .aborted = 1 };
	size_t at = 0;
	int rc = 0;

	exchange_upstream_head(&R.x, 200);
	if (cut > 0)
		rc = feed_copy(body, at = cut);
	while (rc >= 0 && at < n) {
		size_t k = step == 0 || n - at < step ? n - at : step;
		rc = feed_copy(body + at, k);
		at += k;
	}
	exchange_upstream_done(&R.x, rc < 0 ? &aborted : &ok);
}

static char *
slurp(const char *path, size_t *n)
{
	FILE *f = fopen(path, "rb");
	char *s;
	long len;

	if (f == NULL)
		return NULL;
	fseek(f, 0, SEEK_END);
	len = ftell(f);
	fseek(f, 0, SEEK_SET);
	s = malloc((size_t)len + 1);
	if (s == NULL || fread(s, 1, (size_t)len, f) != (size_t)len)
		abort();
	fclose(f);
	s[len] = '\0';
	*n = (size_t)len;
	return s;
}

/* LF → CRLF */
static char *
crlf(const char *s, size_t n, size_t *out)
{
	char *c = malloc(2 * n + 1);
	size_t k = 0;

	if (c == NULL)
		abort();
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '\n')
			c[k++] = '\r';
		c[k++] = s[i];
	}
	*out = k;
	return c;
}

/* Where two byte strings first differ, for a readable failure. */
static size_t
differ_at(const char *a, size_t an, const char *b, size_t bn)
{
	size_t i = 0;

	while (i < an && i < bn && a[i] == b[i])
		i++;
	return i;
}

/* One replay of request + body; 1 when the client's bytes are exactly `want` and nothing leaked. */
static int
replay_once(const char *request, const char *body, size_t n, size_t cut, size_t step, const char *want,
    size_t wantn, int want_status, char *why, size_t whylen)
{
	size_t base = in_use(), at;
	int same;

	if (run_open(request) < 0) {
		snprintf(why, whylen, "the request does not parse");
		return 0;
	}
	replay(body, n, cut, step);
	run_close();
	same = R.cap.len == wantn && memcmp(R.cap.out, want, wantn) == 0;
	if (!same) {
		at = differ_at(R.cap.out, R.cap.len, want, wantn);
		snprintf(why, whylen, "output differs at byte %zu (got %zu bytes, want %zu): got «%.160s» want «%.160s»", at,
		    R.cap.len, wantn, R.cap.out + (at > 40 ? at - 40 : 0), want + (at > 40 ? at - 40 : 0));
		return 0;
	}
	if (R.cap.status != want_status || R.cap.heads != 1 || R.cap.ends != 1) {
		snprintf(why, whylen, "status %d (want %d), %d heads, %d ends", R.cap.status, want_status, R.cap.heads,
		    R.cap.ends);
		return 0;
	}
	if (in_use() != base) {
		snprintf(why, whylen, "mem in use %zu after the request, %zu before", in_use(), base);
		return 0;
	}
	return 1;
}

/* ---- recorded streams and answers ---- */

#define REQ_STREAM_USAGE \
	"{\"model\":\"my-claude\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],\"stream\":true," \
	"\"stream_options\":{\"include_usage\":true}}"
#define REQ_STREAM "{\"model\":\"my-claude\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],\"stream\":true}"
#define REQ_WHOLE  "{\"model\":\"my-claude\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]}"

static const struct recorded {
	const char *file;
	const char *request;
	int         status;
	const char *note;
} recorded[] = {
	{ "anthropic_stream_text.sse", REQ_STREAM_USAGE, 200,
	  "role, three text deltas, finish stop, usage 11 + 6 (output a running total: 6, not 1 + 6)" },
	{ "anthropic_stream_tool_use.sse", REQ_STREAM_USAGE, 200,
	  "text, then block 1 (tool_use) as tool call 0: id and name once, the empty first fragment "
	  "skipped, four fragments concatenating to {\"location\": \"Paris\"}, finish tool_calls, usage 377 + 65" },
	{ "anthropic_stream_thinking.sse", REQ_STREAM_USAGE, 200,
	  "thinking as reasoning_content (the empty delta and the signature dropped), then text; usage 69 + 53" },
	{ "anthropic_stream_midstream_error.sse", REQ_STREAM_USAGE, 200,
	  "content, then overloaded_error: exactly one stream_interrupted event, no finish, no [DONE]" },
	{ "anthropic_stream_parallel_tools.sse", REQ_STREAM_USAGE, 200,
	  "a server tool ignored; tool_use blocks 2, 3, 4 as calls 0, 1, 2; cache reads and writes in the prompt" },
	{ "anthropic_nonstream_text.json", REQ_WHOLE, 200, "one chat.completion with content and usage" },
	{ "anthropic_nonstream_tool_use.json", REQ_WHOLE, 200,
	  "text and a tool call with input {} as arguments \"{}\", finish tool_calls" },
};

/* Every way of cutting the body must give the same bytes. */
static void
test_recorded_cuts(const struct recorded *r, const char *body, size_t n, const char *want, size_t wantn,
    const char *ending)
{
	char why[600];
	int ok = 1;

	unit_case("anthropic %s, %s: whole (%s)", r->file, ending, r->note);
	CHECKF(replay_once(r->request, body, n, 0, 0, want, wantn, r->status, why, sizeof why), "%s", why);
	unit_case("anthropic %s, %s: cut in two at every byte", r->file, ending);
	for (size_t cut = 1; cut < n && ok; cut++)
		ok = CHECKF(replay_once(r->request, body, n, cut, 0, want, wantn, r->status, why, sizeof why),
		    "cut at %zu: %s", cut, why);
	unit_case("anthropic %s, %s: one byte at a time", r->file, ending);
	CHECKF(replay_once(r->request, body, n, 0, 1, want, wantn, r->status, why, sizeof why), "%s", why);
}

static void
test_recorded(const struct recorded *r)
{
	char path[256];
	size_t n, wantn, cn;
	char *body, *want, *c;

	snprintf(path, sizeof path, "test/fixtures/%s", r->file);
	body = slurp(path, &n);
	snprintf(path, sizeof path, "test/fixtures/expected/%s", r->file);
	want = slurp(path, &wantn);
	unit_case("anthropic %s: fixture and expected output present", r->file);
	if (!CHECK(body != NULL && want != NULL)) {
		free(body);
		free(want);
		return;
	}
	test_recorded_cuts(r, body, n, want, wantn, "LF");
	c = crlf(body, n, &cn);
	test_recorded_cuts(r, c, cn, want, wantn, "CRLF");
	free(c);
	free(body);
	free(want);
}

/* Without include_usage the client gets no usage chunk (the rest is byte for byte the same). */
static void
test_usage_not_asked(void)
{
	size_t n, wantn;
	char *body = slurp("test/fixtures/anthropic_stream_text.sse", &n);
	char *want = slurp("test/fixtures/expected/anthropic_stream_text.sse", &wantn);
	char *u, *end, why[600];

	unit_case("anthropic stream without include_usage: no usage chunk");
	if (!CHECK(body != NULL && want != NULL))
		goto out;
	u = strstr(want, "\"choices\":[],\"usage\"");
	if (!CHECK(u != NULL))
		goto out;
	while (u > want && u[-1] != '\n')
		u--;
	end = strstr(u, "\n\n") + 2;
	memmove(u, end, wantn - (size_t)(end - want));
	wantn -= (size_t)(end - u);
	CHECKF(replay_once(REQ_STREAM, body, n, 0, 0, want, wantn, 200, why, sizeof why), "%s", why);
out:
	free(body);
	free(want);
}

/* ---- small inline streams: stop reasons, errors first, streams that stop short ---- */

#define EV(type, json) "event: " type "\ndata: " json "\n\n"
#define START EV("message_start", "{\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}")
#define TEXT_X EV("content_block_delta", "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"x\"}}")
#define STOP_AS(r) EV("message_delta", "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"" r "\"},\"usage\":{\"output_tokens\":2}}")
#define MSG_STOP EV("message_stop", "{\"type\":\"message_stop\"}")

#define CHUNK(delta, fin) "data: {\"id\":\"chatcmpl-test\",\"object\":\"chat.completion.chunk\",\"created\":1700000000," \
	"\"model\":\"my-claude\",\"choices\":[{\"index\":0,\"delta\":" delta ",\"logprobs\":null,\"finish_reason\":" fin "}]}\n\n"
#define ROLE_X CHUNK("{\"role\":\"assistant\",\"content\":\"\"}", "null") CHUNK("{\"content\":\"x\"}", "null")
#define DONE "data: [DONE]\n\n"

static const struct inline_case {
	const char *name, *request, *body;
	int         status;
	const char *want;
} inline_cases[] = {
	{ "stop_reason end_turn → stop", REQ_STREAM, START TEXT_X STOP_AS("end_turn") MSG_STOP, 200,
	  ROLE_X CHUNK("{}", "\"stop\"") DONE },
	{ "stop_reason stop_sequence → stop", REQ_STREAM, START TEXT_X STOP_AS("stop_sequence") MSG_STOP, 200,
	  ROLE_X CHUNK("{}", "\"stop\"") DONE },
	{ "stop_reason max_tokens → length", REQ_STREAM, START TEXT_X STOP_AS("max_tokens") MSG_STOP, 200,
	  ROLE_X CHUNK("{}", "\"length\"") DONE },
	{ "stop_reason refusal → content_filter", REQ_STREAM, START TEXT_X STOP_AS("refusal") MSG_STOP, 200,
	  ROLE_X CHUNK("{}", "\"content_filter\"") DONE },
	{ "stop_reason pause_turn → stop", REQ_STREAM, START TEXT_X STOP_AS("pause_turn") MSG_STOP, 200,
	  ROLE_X CHUNK("{}", "\"stop\"") DONE },
	{ "stop_reason model_context_window_exceeded → length", REQ_STREAM,
	  START TEXT_X STOP_AS("model_context_window_exceeded") MSG_STOP, 200, ROLE_X CHUNK("{}", "\"length\"") DONE },
	{ "a duplicate message_start and message_delta change nothing", REQ_STREAM_USAGE,
	  START START TEXT_X STOP_AS("end_turn") STOP_AS("max_tokens") MSG_STOP, 200,
	  ROLE_X CHUNK("{}", "\"stop\"")
	  "data: {\"id\":\"chatcmpl-test\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"my-claude\","
	  "\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5,"
	  "\"prompt_tokens_details\":{\"cached_tokens\":0}}}\n\n" DONE },
	{ "unknown events and block types are skipped", REQ_STREAM,
	  START EV("content_block_start", "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"compaction\"}}")
	  EV("brand_new", "{\"type\":\"brand_new\",\"x\":1}")
	  EV("content_block_delta", "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"citations_delta\",\"citation\":{}}}")
	  TEXT_X STOP_AS("end_turn") MSG_STOP, 200, ROLE_X CHUNK("{}", "\"stop\"") DONE },
	{ "overloaded_error as the first event: a clean 502 before any content", REQ_STREAM,
	  EV("error", "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}"), 502,
	  "{\"error\":{\"message\":\"anth: Overloaded\",\"type\":\"upstream_error\",\"param\":null,\"code\":\"upstream_error\"}}" },
	{ "rate_limit_error after message_start: 429 (nothing was sent)", REQ_STREAM,
	  START EV("error", "{\"type\":\"error\",\"error\":{\"type\":\"rate_limit_error\",\"message\":\"slow \\\"down\\\"\"}}"), 429,
	  "{\"error\":{\"message\":\"anth: slow \\\"down\\\"\",\"type\":\"upstream_error\",\"param\":null,\"code\":\"upstream_error\"}}" },
	{ "a stream that stops after content, without message_delta or message_stop: interrupted", REQ_STREAM,
	  START TEXT_X, 200,
	  ROLE_X "data: {\"error\":{\"message\":\"the provider's stream ended without its end marker or a finish reason\","
	  "\"type\":\"upstream_error\",\"param\":null,\"code\":\"stream_interrupted\"}}\n\n" },
	{ "a stream cut after message_delta, before message_stop: interrupted (a finish is not the end)", REQ_STREAM,
	  START TEXT_X STOP_AS("end_turn"), 200,
	  ROLE_X CHUNK("{}", "\"stop\"") "data: {\"error\":{\"message\":\"the provider's stream ended without its end marker or a finish reason\","
	  "\"type\":\"upstream_error\",\"param\":null,\"code\":\"stream_interrupted\"}}\n\n" },
	{ "a stream that stops before content: a clean 502", REQ_STREAM, START, 502,
	  "{\"error\":{\"message\":\"the provider's stream ended without its end marker or a finish reason\","
	  "\"type\":\"upstream_error\",\"param\":null,\"code\":\"upstream_closed\"}}" },
	{ "a frame that is not JSON after content: interrupted", REQ_STREAM, START TEXT_X "event: content_block_delta\ndata: {not json\n\n", 200,
	  ROLE_X "data: {\"error\":{\"message\":\"anth sent a stream event that is not a JSON object\","
	  "\"type\":\"upstream_error\",\"param\":null,\"code\":\"stream_interrupted\"}}\n\n" },
	{ "whole: thinking, two tool calls with nested JSON inputs, usage with cache", REQ_WHOLE,
	  "{\"id\":\"msg_2\",\"type\":\"message\",\"role\":\"assistant\",\"content\":["
	  "{\"type\":\"thinking\",\"thinking\":\"Let me \\\"think\\\".\",\"signature\":\"sig\"},"
	  "{\"type\":\"redacted_thinking\",\"data\":\"xx\"},"
	  "{\"type\":\"tool_use\",\"id\":\"toolu_a\",\"name\":\"search\",\"input\": {\"q\": \"say \\\"hi\\\"\\\\n\", \"n\": [1, 2]}},"
	  "{\"type\":\"tool_use\",\"id\":\"toolu_b\",\"name\":\"noop\",\"input\":{}}],"
	  "\"stop_reason\":\"tool_use\",\"usage\":{\"input_tokens\":7,\"cache_read_input_tokens\":50,"
	  "\"cache_creation_input_tokens\":3,\"output_tokens\":12}}", 200,
	  "{\"id\":\"chatcmpl-test\",\"object\":\"chat.completion\",\"created\":1700000000,\"model\":\"my-claude\","
	  "\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":null,"
	  "\"reasoning_content\":\"Let me \\\"think\\\".\",\"tool_calls\":["
	  "{\"id\":\"toolu_a\",\"type\":\"function\",\"function\":{\"name\":\"search\","
	  "\"arguments\":\"{\\\"q\\\":\\\"say \\\\\\\"hi\\\\\\\"\\\\\\\\n\\\",\\\"n\\\":[1,2]}\"}},"
	  "{\"id\":\"toolu_b\",\"type\":\"function\",\"function\":{\"name\":\"noop\",\"arguments\":\"{}\"}}]},"
	  "\"logprobs\":null,\"finish_reason\":\"tool_calls\"}],\"usage\":{\"prompt_tokens\":60,\"completion_tokens\":12,"
	  "\"total_tokens\":72,\"prompt_tokens_details\":{\"cached_tokens\":50}}}" },
	{ "whole: an error body with status 200 is the provider's error", REQ_WHOLE,
	  "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}", 502,
	  "{\"error\":{\"message\":\"anth: Overloaded\",\"type\":\"upstream_error\",\"param\":null,\"code\":\"upstream_error\"}}" },
};

static void
test_inline(const struct inline_case *c)
{
	char why[600];
	size_t n = strlen(c->body);
	int ok = 1;

	unit_case("anthropic inline: %s", c->name);
	CHECKF(replay_once(c->request, c->body, n, 0, 0, c->want, strlen(c->want), c->status, why, sizeof why), "%s", why);
	for (size_t cut = 1; cut < n && ok; cut++)
		ok = CHECKF(replay_once(c->request, c->body, n, cut, 0, c->want, strlen(c->want), c->status, why, sizeof why),
		    "cut at %zu: %s", cut, why);
}

/* ---- the error hook: status and body → class, status for the client, message ---- */

static const struct error_case {
	long            status;
	const char     *body;
	enum fail_class cls;
	int             client_status;
	const char     *msg;
} error_cases[] = {
	{ 529, "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}", FAIL_529, 502, "Overloaded" },
	{ 503, "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}", FAIL_529, 502, "Overloaded" },
	{ 429, "{\"type\":\"error\",\"error\":{\"type\":\"rate_limit_error\",\"message\":\"Number of requests has exceeded your rate limit\"}}",
	  FAIL_429, 429, "Number of requests has exceeded your rate limit" },
	{ 400, "{\"type\":\"error\",\"error\":{\"type\":\"invalid_request_error\",\"message\":\"max_tokens: Field required\"}}",
	  FAIL_CLIENT, 400, "max_tokens: Field required" },
	{ 401, "{\"type\":\"error\",\"error\":{\"type\":\"authentication_error\",\"message\":\"invalid x-api-key\"}}", FAIL_AUTH, 401,
	  "invalid x-api-key" },
	{ 500, "{\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"Internal server error\"}}", FAIL_500, 502,
	  "Internal server error" },
	{ 502, "<html>bad gateway</html>", FAIL_502, 502, "<html>bad gateway</html>" },
};

static void
test_errors(void)
{
	for (size_t i = 0; i < NELEM(error_cases); i++) {
		const struct error_case *c = &error_cases[i];
		struct failure f;

		unit_case("anthropic error %ld %s", c->status, c->msg);
		memset(&f, 0, sizeof f);
		adapter_anthropic.error(NULL, c->status, c->body, strlen(c->body), &f);
		CHECKF(f.cls == c->cls, "class %d, want %d", f.cls, c->cls);
		CHECKF(f.status == c->client_status, "status %d, want %d", f.status, c->client_status);
		CHECKF(strcmp(f.msg, c->msg) == 0, "message «%s»", f.msg);
	}
}

/* ---- the emitter on its own ---- */

static void
test_emitter(void)
{
	size_t base = in_use();
	static const char want_whole[] =
	    "{\"id\":\"chatcmpl-test\",\"object\":\"chat.completion\",\"created\":1700000000,\"model\":\"my-claude\","
	    "\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"ab\",\"tool_calls\":["
	    "{\"id\":\"t0\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"a\\\":1}\"}},"
	    "{\"id\":\"call_test_1\",\"type\":\"function\",\"function\":{\"name\":\"g\",\"arguments\":\"[2,\\\"x y\\\"]\"}},"
	    "{\"id\":\"t2\",\"type\":\"function\",\"function\":{\"name\":\"h\",\"arguments\":\"{}\"}}]},"
	    "\"logprobs\":null,\"finish_reason\":\"tool_calls\"}]}";
	static const char want_stream[] =
	    CHUNK("{\"role\":\"assistant\",\"content\":\"\"}", "null")
	    CHUNK("{\"tool_calls\":[{\"index\":0,\"id\":\"call_test_0\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"\"}}]}", "null")
	    CHUNK("{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"k\\\":[1,\\\"a b\\\"]}\"}}]}", "null")
	    CHUNK("{}", "\"tool_calls\"");

	unit_case("emit whole: arguments of interleaved calls land in their own call; no usage, no usage key");
	if (run_open(REQ_WHOLE) == 0) {
		struct exchange *x = &R.x;
		exchange_upstream_head(x, 200);
		CHECK(emit_text(x, "a", 1) == 0);
		CHECK(emit_tool_start(x, "t0", 2, "f", 1) == 0);
		CHECK(emit_tool_start(x, "", 0, "g", 1) == 1);
		CHECK(emit_tool_args(x, 0, "{\\\"a\\\"", 6) == 0);
		CHECK(emit_tool_args_json(x, 1, "[ 2 , \"x y\" ]", 13) == 0);
		CHECK(emit_tool_start(x, "t2", 2, "h", 1) == 2);
		CHECK(emit_tool_args(x, 0, ":1}", 3) == 0);
		CHECK(emit_tool_args_json(x, 2, "{}", 2) == 0);
		CHECK(emit_text(x, "b", 1) == 0);
		CHECK(emit_tool_args(x, 3, "x", 1) < 0); /* never started */
		x->fail.msg[0] = '\0';
		CHECK(emit_finish(x, "tool_calls") == 0);
		CHECK(emit_finish(x, "stop") == 0); /* the first finish counts */
		CHECK(emit_end(x) == 0);
		CHECK(emit_end(x) == 0); /* once */
		CHECKF(R.cap.len == sizeof want_whole - 1 && memcmp(R.cap.out, want_whole, R.cap.len) == 0, "got «%.*s»",
		    (int)R.cap.len, R.cap.out);
		CHECK(R.cap.heads == 1 && R.cap.status == 200 && strcmp(R.cap.ctype, "application/json") == 0 &&
		    R.cap.clen == (int64_t)R.cap.len);
		run_close();
	}
	CHECKF(in_use() == base, "mem in use %zu, %zu before", in_use(), base);

	unit_case("emit stream: a whole JSON value as one arguments delta, an id made for a call without");
	if (run_open(REQ_STREAM) == 0) {
		struct exchange *x = &R.x;
		exchange_upstream_head(x, 200);
		CHECK(emit_tool_start(x, NULL, 0, "f", 1) == 0);
		CHECK(emit_tool_args_json(x, 0, "{\"k\": [1, \"a b\"]}", 17) == 0);
		CHECK(emit_tool_args(x, 0, "", 0) == 0); /* empty fragments are not sent */
		CHECK(emit_text(x, "", 0) == 0);
		CHECK(emit_finish(x, "tool_calls") == 0);
		CHECKF(R.cap.len == sizeof want_stream - 1 && memcmp(R.cap.out, want_stream, R.cap.len) == 0, "got «%.*s»",
		    (int)R.cap.len, R.cap.out);
		run_close();
	}
	CHECKF(in_use() == base, "mem in use %zu, %zu before", in_use(), base);

	unit_case("emit: an exchange's id is made once, chatcmpl- and 16 hex digits; created is a time");
	if (run_open(REQ_STREAM) == 0) {
		struct exchange *x = &R.x;
		char first[sizeof x->em.id];
		x->em.id[0] = x->em.created[0] = '\0';
		exchange_upstream_head(x, 200);
		CHECK(emit_text(x, "a", 1) == 0);
		strcpy(first, x->em.id);
		CHECK(emit_text(x, "b", 1) == 0);
		CHECK(strcmp(first, x->em.id) == 0);
		CHECK(strncmp(x->em.id, "chatcmpl-", 9) == 0 && strlen(x->em.id) == 25);
		CHECK(atol(x->em.created) > 1700000000);
		run_close();
	}
}

/* ---- the request: OpenAI in, Anthropic out ---- */

#define M_HI "\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]"
#define A_HI "\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Hi\"}]}]"
#define A_HEAD "{\"model\":\"claude-sonnet-4-5\",\"max_tokens\":4096"
#define TOOL_W "{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"description\":\"Weather now\"," \
	"\"parameters\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}}}}}"
#define A_TOOL_W "{\"name\":\"get_weather\",\"description\":\"Weather now\"," \
	"\"input_schema\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}}}}"

static const struct encode_case {
	const char *name, *in, *out; /* out NULL: refused, with `err` in the message */
	const char *err;
} encode_cases[] = {
	{ "a user message; max_tokens from the provider's default", "{\"model\":\"x\"," M_HI "}", A_HEAD "," A_HI "}", NULL },
	{ "max_tokens", "{\"model\":\"x\"," M_HI ",\"max_tokens\":100}",
	  "{\"model\":\"claude-sonnet-4-5\",\"max_tokens\":100," A_HI "}", NULL },
	{ "max_completion_tokens wins over max_tokens", "{\"model\":\"x\",\"max_tokens\":100," M_HI ",\"max_completion_tokens\":50}",
	  "{\"model\":\"claude-sonnet-4-5\",\"max_tokens\":50," A_HI "}", NULL },
	{ "stream", "{\"model\":\"x\"," M_HI ",\"stream\":true,\"stream_options\":{\"include_usage\":true}}",
	  A_HEAD "," A_HI ",\"stream\":true}", NULL },
	{ "system and developer messages → top-level system, in order, wherever they are",
	  "{\"model\":\"x\",\"messages\":[{\"role\":\"system\",\"content\":\"Be terse.\"},{\"role\":\"user\",\"content\":\"Hi\"},"
	  "{\"role\":\"developer\",\"content\":[{\"type\":\"text\",\"text\":\"Use French.\"},{\"type\":\"text\",\"text\":\"\"}]}]}",
	  A_HEAD ",\"system\":[{\"type\":\"text\",\"text\":\"Be terse.\"},{\"type\":\"text\",\"text\":\"Use French.\"}]," A_HI "}", NULL },
	{ "an empty system message leaves no system",
	  "{\"model\":\"x\",\"messages\":[{\"role\":\"system\",\"content\":\"\"},{\"role\":\"user\",\"content\":\"Hi\"}]}",
	  A_HEAD "," A_HI "}", NULL },
	{ "user and assistant turns; escapes kept as written",
	  "{\"model\":\"x\",\"messages\":[{\"role\":\"user\",\"content\":\"Say \\\"hi\\\"\\n\"},{\"role\":\"assistant\",\"content\":\"hi\"},"
	  "{\"role\":\"user\",\"content\":\"Again \\u00e9\"}]}",
	  A_HEAD ",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Say \\\"hi\\\"\\n\"}]},"
	  "{\"role\":\"assistant\",\"content\":[{\"type\":\"text\",\"text\":\"hi\"}]},"
	  "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Again \\u00e9\"}]}]}", NULL },
	{ "consecutive same-role messages merge into one turn",
	  "{\"model\":\"x\",\"messages\":[{\"role\":\"user\",\"content\":\"a\"},{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"b\"}]},"
	  "{\"role\":\"assistant\",\"content\":\"c\"},{\"role\":\"assistant\",\"content\":\"d\"}]}",
	  A_HEAD ",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},{\"type\":\"text\",\"text\":\"b\"}]},"
	  "{\"role\":\"assistant\",\"content\":[{\"type\":\"text\",\"text\":\"c\"},{\"type\":\"text\",\"text\":\"d\"}]}]}", NULL },
	{ "images: a data: URL → base64 source, an https URL → url source",
	  "{\"model\":\"x\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"What is this?\"},"
	  "{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,iVBORw0KGgo=\",\"detail\":\"auto\"}},"
	  "{\"type\":\"image_url\",\"image_url\":{\"url\":\"https://example.com/cat.jpg\"}}]}]}",
	  A_HEAD ",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"What is this?\"},"
	  "{\"type\":\"image\",\"source\":{\"type\":\"base64\",\"media_type\":\"image/png\",\"data\":\"iVBORw0KGgo=\"}},"
	  "{\"type\":\"image\",\"source\":{\"type\":\"url\",\"url\":\"https://example.com/cat.jpg\"}}]}]}", NULL },
	{ "assistant tool_calls → tool_use blocks with parsed input; empty content gives no text block; ids sanitised",
	  "{\"model\":\"x\",\"messages\":[{\"role\":\"user\",\"content\":\"Weather?\"},{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":["
	  "{\"id\":\"call_x|fc_y\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"{\\\"city\\\": \\\"Paris \\\\\\\"FR\\\\\\\"\\\"}\"}},"
	  "{\"id\":\"call_2\",\"type\":\"function\",\"function\":{\"name\":\"now\",\"arguments\":\"\"}}]}]}",
	  A_HEAD ",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Weather?\"}]},"
	  "{\"role\":\"assistant\",\"content\":[{\"type\":\"tool_use\",\"id\":\"call_x_fc_y\",\"name\":\"get_weather\","
	  "\"input\":{\"city\": \"Paris \\\"FR\\\"\"}},{\"type\":\"tool_use\",\"id\":\"call_2\",\"name\":\"now\",\"input\":{}}]}]}", NULL },
	{ "assistant text and a tool call in one turn",
	  "{\"model\":\"x\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"},{\"role\":\"assistant\",\"content\":\"Checking.\",\"tool_calls\":["
	  "{\"id\":\"t1\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]}]}",
	  A_HEAD ",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Hi\"}]},"
	  "{\"role\":\"assistant\",\"content\":[{\"type\":\"text\",\"text\":\"Checking.\"},{\"type\":\"tool_use\",\"id\":\"t1\",\"name\":\"f\",\"input\":{}}]}]}", NULL },
	{ "consecutive tool results → one user turn, then the user's text in the same turn",
	  "{\"model\":\"x\",\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"id\":\"a\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}},"
	  "{\"id\":\"b\",\"type\":\"function\",\"function\":{\"name\":\"g\",\"arguments\":\"{}\"}}]},"
	  "{\"role\":\"tool\",\"tool_call_id\":\"a\",\"content\":\"12°C\"},{\"role\":\"tool\",\"tool_call_id\":\"b\",\"content\":[{\"type\":\"text\",\"text\":\"noon\"}]},"
	  "{\"role\":\"user\",\"content\":\"Thanks\"}]}",
	  A_HEAD ",\"messages\":[{\"role\":\"assistant\",\"content\":[{\"type\":\"tool_use\",\"id\":\"a\",\"name\":\"f\",\"input\":{}},"
	  "{\"type\":\"tool_use\",\"id\":\"b\",\"name\":\"g\",\"input\":{}}]},"
	  "{\"role\":\"user\",\"content\":[{\"type\":\"tool_result\",\"tool_use_id\":\"a\",\"content\":\"12°C\"},"
	  "{\"type\":\"tool_result\",\"tool_use_id\":\"b\",\"content\":[{\"type\":\"text\",\"text\":\"noon\"}]},"
	  "{\"type\":\"text\",\"text\":\"Thanks\"}]}]}", NULL },
	{ "a tool result with empty content has none",
	  "{\"model\":\"x\",\"messages\":[{\"role\":\"tool\",\"tool_call_id\":\"a\",\"content\":\"\"}]}",
	  A_HEAD ",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"tool_result\",\"tool_use_id\":\"a\"}]}]}", NULL },
	{ "tools → name, description, input_schema (a tool without parameters gets an empty object schema)",
	  "{\"model\":\"x\"," M_HI ",\"tools\":[" TOOL_W ",{\"type\":\"function\",\"function\":{\"name\":\"now\"}}]}",
	  A_HEAD "," A_HI ",\"tools\":[" A_TOOL_W ",{\"name\":\"now\",\"input_schema\":{\"type\":\"object\",\"properties\":{}}}]}", NULL },
	{ "tool_choice auto", "{\"model\":\"x\"," M_HI ",\"tools\":[" TOOL_W "],\"tool_choice\":\"auto\"}",
	  A_HEAD "," A_HI ",\"tools\":[" A_TOOL_W "],\"tool_choice\":{\"type\":\"auto\"}}", NULL },
	{ "tool_choice none", "{\"model\":\"x\"," M_HI ",\"tools\":[" TOOL_W "],\"tool_choice\":\"none\"}",
	  A_HEAD "," A_HI ",\"tools\":[" A_TOOL_W "],\"tool_choice\":{\"type\":\"none\"}}", NULL },
	{ "tool_choice required → any", "{\"model\":\"x\"," M_HI ",\"tools\":[" TOOL_W "],\"tool_choice\":\"required\"}",
	  A_HEAD "," A_HI ",\"tools\":[" A_TOOL_W "],\"tool_choice\":{\"type\":\"any\"}}", NULL },
	{ "tool_choice a named function → tool",
	  "{\"model\":\"x\"," M_HI ",\"tools\":[" TOOL_W "],\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"get_weather\"}}}",
	  A_HEAD "," A_HI ",\"tools\":[" A_TOOL_W "],\"tool_choice\":{\"type\":\"tool\",\"name\":\"get_weather\"}}", NULL },
	{ "parallel_tool_calls false → disable_parallel_tool_use",
	  "{\"model\":\"x\"," M_HI ",\"tools\":[" TOOL_W "],\"parallel_tool_calls\":false}",
	  A_HEAD "," A_HI ",\"tools\":[" A_TOOL_W "],\"tool_choice\":{\"type\":\"auto\",\"disable_parallel_tool_use\":true}}", NULL },
	{ "temperature, top_p, stop as a string",
	  "{\"model\":\"x\"," M_HI ",\"temperature\":0.5,\"top_p\":0.9,\"stop\":\"END\"}",
	  A_HEAD "," A_HI ",\"temperature\":0.5,\"top_p\":0.9,\"stop_sequences\":[\"END\"]}", NULL },
	{ "temperature above 1 is clamped; stop as an array",
	  "{\"model\":\"x\"," M_HI ",\"temperature\":1.7,\"stop\":[\"a\",\"b\"]}",
	  A_HEAD "," A_HI ",\"temperature\":1,\"stop_sequences\":[\"a\",\"b\"]}", NULL },
	{ "user → metadata.user_id", "{\"model\":\"x\"," M_HI ",\"user\":\"u-42\"}",
	  A_HEAD "," A_HI ",\"metadata\":{\"user_id\":\"u-42\"}}", NULL },
	{ "parameters at their defaults pass (n 1, logprobs false, text format, zero penalties, nulls)",
	  "{\"model\":\"x\"," M_HI ",\"n\":1,\"logprobs\":false,\"response_format\":{\"type\":\"text\"},\"frequency_penalty\":0,"
	  "\"presence_penalty\":0.0,\"seed\":null,\"logit_bias\":{},\"modalities\":[\"text\"],\"stop\":null,\"temperature\":null}",
	  A_HEAD "," A_HI "}", NULL },
	{ "n > 1", "{\"model\":\"x\"," M_HI ",\"n\":2}", NULL, "'n' = 2 is not supported (provider 'anth', type anthropic)" },
	{ "logprobs", "{\"model\":\"x\"," M_HI ",\"logprobs\":true}", NULL, "'logprobs' = true is not supported" },
	{ "top_logprobs", "{\"model\":\"x\"," M_HI ",\"top_logprobs\":3}", NULL, "'top_logprobs' = 3 is not supported" },
	{ "seed", "{\"model\":\"x\"," M_HI ",\"seed\":7}", NULL, "'seed' = 7 is not supported" },
	{ "frequency_penalty", "{\"model\":\"x\"," M_HI ",\"frequency_penalty\":0.5}", NULL, "'frequency_penalty' = 0.5" },
	{ "presence_penalty", "{\"model\":\"x\"," M_HI ",\"presence_penalty\":-1}", NULL, "'presence_penalty' = -1" },
	{ "logit_bias", "{\"model\":\"x\"," M_HI ",\"logit_bias\":{\"50256\":-100}}", NULL, "'logit_bias' = {\"50256\":-100}" },
	{ "response_format json_object", "{\"model\":\"x\"," M_HI ",\"response_format\":{\"type\":\"json_object\"}}", NULL,
	  "'response_format' = {\"type\":\"json_object\"} is not supported (provider 'anth'" },
	{ "audio output", "{\"model\":\"x\"," M_HI ",\"modalities\":[\"text\",\"audio\"]}", NULL, "'modalities'" },
	{ "reasoning_effort", "{\"model\":\"x\"," M_HI ",\"reasoning_effort\":\"low\"}", NULL, "'reasoning_effort' = \"low\" is not supported" },
	{ "legacy functions", "{\"model\":\"x\"," M_HI ",\"functions\":[]}", NULL, "'functions' = []" },
	{ "an input_audio part", "{\"model\":\"x\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"input_audio\",\"input_audio\":{}}]}]}",
	  NULL, "messages[0]: content parts of type 'input_audio' are not supported (provider 'anth'" },
	{ "an image in an assistant message",
	  "{\"model\":\"x\",\"messages\":[{\"role\":\"assistant\",\"content\":[{\"type\":\"image_url\",\"image_url\":{\"url\":\"https://e/x.png\"}}]}]}",
	  NULL, "messages[0]: content parts of type 'image_url' are not supported" },
	{ "an image URL that is neither data: nor http(s)",
	  "{\"model\":\"x\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{\"url\":\"ftp://e/x.png\"}}]}]}",
	  NULL, "messages[0]: an image URL must be a data: URL or http(s)" },
	{ "a data: URL that is not base64",
	  "{\"model\":\"x\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png,abc\"}}]}]}",
	  NULL, "messages[0]: an image data: URL must be base64" },
	{ "the function role", "{\"model\":\"x\",\"messages\":[{\"role\":\"function\",\"name\":\"f\",\"content\":\"x\"}]}", NULL,
	  "messages[0]: the role 'function' is not supported" },
	{ "tool arguments that are not JSON",
	  "{\"model\":\"x\",\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"id\":\"a\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{city: Paris}\"}}]}]}",
	  NULL, "messages[0]: tool_calls[].function.arguments is not a JSON object" },
	{ "tool arguments that are JSON but not an object",
	  "{\"model\":\"x\",\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"id\":\"a\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"[1]\"}}]}]}",
	  NULL, "messages[0]: tool_calls[].function.arguments is not a JSON object" },
	{ "a tool message without tool_call_id", "{\"model\":\"x\",\"messages\":[{\"role\":\"tool\",\"content\":\"x\"}]}", NULL,
	  "messages[0]: a tool message needs its tool_call_id" },
	{ "a tool that is not a function", "{\"model\":\"x\"," M_HI ",\"tools\":[{\"type\":\"web_search\"}]}", NULL,
	  "tools[0]: only function tools with a name are supported" },
	{ "a tool_choice it cannot map", "{\"model\":\"x\"," M_HI ",\"tools\":[" TOOL_W "],\"tool_choice\":{\"type\":\"allowed_tools\"}}",
	  NULL, "'tool_choice' = {\"type\":\"allowed_tools\"} is not supported" },
	{ "max_tokens that is not an integer", "{\"model\":\"x\"," M_HI ",\"max_tokens\":\"many\"}", NULL,
	  "'max_tokens' must be a positive integer" },
};

static void
test_encode(const struct encode_case *c)
{
	struct upstream_req req;
	size_t base = in_use();
	int rc;

	unit_case("anthropic encode: %s", c->name);
	if (!CHECKF(run_open(c->in) == 0, "the request does not parse"))
		return;
	memset(&req, 0, sizeof req);
	rc = adapter_anthropic.encode(&R.x, &req, &R.x.up_body);
	if (c->out != NULL) {
		CHECKF(rc == 0, "refused: %s", R.x.fail.msg);
		CHECKF(R.x.up_body.len == strlen(c->out) && memcmp(R.x.up_body.data, c->out, R.x.up_body.len) == 0,
		    "\n     got  %.*s\n     want %s", (int)R.x.up_body.len, R.x.up_body.data, c->out);
		CHECKF(json_valid(R.x.up_body.data, R.x.up_body.len), "the body is not valid JSON");
	} else {
		CHECK(rc < 0);
		CHECKF(R.x.fail.status == 400 && R.x.fail.cls == FAIL_CLIENT, "status %d, class %d", R.x.fail.status, R.x.fail.cls);
		CHECK(R.x.fail.type != NULL && strcmp(R.x.fail.type, "invalid_request_error") == 0);
		CHECKF(strstr(R.x.fail.msg, c->err) != NULL, "message «%s», want «%s»", R.x.fail.msg, c->err);
		CHECKF(strstr(R.x.fail.msg, "anth") != NULL, "the provider is not named: «%s»", R.x.fail.msg);
	}
	curl_slist_free_all(req.headers);
	run_close();
	CHECKF(in_use() == base, "mem in use %zu, %zu before", in_use(), base);
}

/* The URL and headers of a request. */
static void
test_encode_head(void)
{
	static const char *const want[] = {
		"x-api-key: sk-ant-test", "anthropic-version: 2023-06-01", "content-type: application/json",
		"accept: text/event-stream",
	};
	struct upstream_req req;
	struct curl_slist *h;
	int n = 0;

	unit_case("anthropic encode: URL {base_url}/v1/messages, x-api-key, anthropic-version, content-type");
	if (!CHECK(run_open(REQ_STREAM) == 0))
		return;
	memset(&req, 0, sizeof req);
	CHECK(adapter_anthropic.encode(&R.x, &req, &R.x.up_body) == 0);
	CHECKF(req.url != NULL && strcmp(req.url, "https://api.anthropic.test/v1/messages") == 0, "url %s", req.url);
	for (h = req.headers; h != NULL; h = h->next, n++)
		if (n < (int)NELEM(want))
			CHECKF(strcmp(h->data, want[n]) == 0, "header %d: «%s», want «%s»", n, h->data, want[n]);
	CHECK(n >= (int)NELEM(want));
	curl_slist_free_all(req.headers);
	run_close();

	unit_case("anthropic encode: a large request fits (translation can make it grow)");
	{
		size_t cap = 1 << 20, len = 0;
		char *big = malloc(cap);
		if (big == NULL)
			abort();
		len += (size_t)snprintf(big, cap, "{\"model\":\"x\",\"messages\":[");
		for (int i = 0; i < 2000; i++)
			len += (size_t)snprintf(big + len, cap - len, "%s{\"role\":\"%s\",\"content\":\"m\"}", i ? "," : "",
			    i % 2 ? "assistant" : "user");
		snprintf(big + len, cap - len, "]}");
		if (CHECK(run_open(big) == 0)) {
			memset(&req, 0, sizeof req);
			CHECKF(adapter_anthropic.encode(&R.x, &req, &R.x.up_body) == 0, "refused: %s", R.x.fail.msg);
			CHECK(json_valid(R.x.up_body.data, R.x.up_body.len));
			curl_slist_free_all(req.headers);
			run_close();
		}
		free(big);
	}
}

void
suite_anthropic(void)
{
	char err[128];

	unit_case("anthropic mem_init");
	if (!CHECKF(mem_init(64 << 20, err, sizeof err) == 0, "mem_init: %s", err))
		return;
	setup_config();
	/* router_report() reads the config even for an untracked target (stats NULL) */
	if (!CHECK(router_init(&cfg) == 0))
		return;
	for (size_t i = 0; i < NELEM(recorded); i++)
		test_recorded(&recorded[i]);
	test_usage_not_asked();
	for (size_t i = 0; i < NELEM(inline_cases); i++)
		test_inline(&inline_cases[i]);
	test_errors();
	test_emitter();
	for (size_t i = 0; i < NELEM(encode_cases); i++)
		test_encode(&encode_cases[i]);
	test_encode_head();
	free(R.cap.out);
	memset(&R, 0, sizeof R);
	mem_shutdown();
}
