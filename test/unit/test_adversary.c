/*
 * test_adversary.c — a provider that misbehaves in every way a byte can: each recorded stream
 * and answer of test/fixtures, mutated at random (bytes changed, structural characters and bad
 * UTF-8 put in, ranges cut out or repeated, whole lines repeated, an event's JSON split over two
 * data lines, the end cut off), replayed
 * through its adapter fed whole, cut in two or a few bytes at a time. Whatever comes in, the
 * client must get one well-formed answer: a stream of `data: {json}` events ending in exactly
 * one `[DONE]` or one interruption event and nothing after it, one JSON object, or an error
 * in OpenAI's envelope with a 4xx/5xx status; the sink ended once; every byte of memory given
 * back. And the other way: rich client requests with one value replaced by one of the wrong type
 * (3,000 of them), encoded for each provider type: a body that is JSON, or a refusal with a
 * message and a 4xx/5xx. Under the san flavour, ASan and UBSan watch every run.
 *
 * Deterministic: a fixed seed per fixture, so a failure names the run that reproduces it.
 * ADVERSARY_RUNS and ADVERSARY_SEED (environment) run more, or other, mutations when hunting.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "sluice.h"
#include "unit.h"
#include "xharness.h"

#define RUNS_PER_FIXTURE 300 /* ~0.1 s for all under ASan on the build machine */

struct fixture {
	const char            *file;
	const struct adapter  *adapter;
	enum provider_type     type;
	long                   status; /* what the provider answers with */
	int                    stream;
};

static const struct fixture fixtures[] = {
	{ "openai_chat_stream_text.sse", &adapter_openai, PROVIDER_OPENAI, 200, 1 },
	{ "openai_chat_stream_include_usage.sse", &adapter_openai, PROVIDER_OPENAI, 200, 1 },
	{ "openai_chat_stream_parallel_tool_calls.sse", &adapter_openai, PROVIDER_OPENAI, 200, 1 },
	{ "openai_chat_stream_refusal.sse", &adapter_openai, PROVIDER_OPENAI, 200, 1 },
	{ "openai_chat_stream_length.sse", &adapter_openai, PROVIDER_OPENAI, 200, 1 },
	{ "openai_chat_nonstream_parallel_tool_calls.json", &adapter_openai, PROVIDER_OPENAI, 200, 0 },
	{ "groq_stream_tool_call.sse", &adapter_openai, PROVIDER_OPENAI, 200, 1 },
	{ "mistral_stream_tool_call.sse", &adapter_openai, PROVIDER_OPENAI, 200, 1 },
	{ "azure_openai_stream_content_filter.sse", &adapter_azure, PROVIDER_AZURE, 200, 1 },
	{ "anthropic_stream_text.sse", &adapter_anthropic, PROVIDER_ANTHROPIC, 200, 1 },
	{ "anthropic_stream_tool_use.sse", &adapter_anthropic, PROVIDER_ANTHROPIC, 200, 1 },
	{ "anthropic_stream_parallel_tools.sse", &adapter_anthropic, PROVIDER_ANTHROPIC, 200, 1 },
	{ "anthropic_stream_thinking.sse", &adapter_anthropic, PROVIDER_ANTHROPIC, 200, 1 },
	{ "anthropic_stream_midstream_error.sse", &adapter_anthropic, PROVIDER_ANTHROPIC, 200, 1 },
	{ "anthropic_nonstream_text.json", &adapter_anthropic, PROVIDER_ANTHROPIC, 200, 0 },
	{ "anthropic_nonstream_tool_use.json", &adapter_anthropic, PROVIDER_ANTHROPIC, 200, 0 },
	{ "gemini_stream_text.sse", &adapter_gemini, PROVIDER_GEMINI, 200, 1 },
	{ "gemini_stream_function_call.sse", &adapter_gemini, PROVIDER_GEMINI, 200, 1 },
	{ "gemini_stream_parallel_calls_then_stop.sse", &adapter_gemini, PROVIDER_GEMINI, 200, 1 },
	{ "gemini_stream_thinking_usage_after_finish.sse", &adapter_gemini, PROVIDER_GEMINI, 200, 1 },
	{ "gemini_stream_safety.sse", &adapter_gemini, PROVIDER_GEMINI, 200, 1 },
	{ "gemini_stream_midstream_error.sse", &adapter_gemini, PROVIDER_GEMINI, 200, 1 },
	{ "gemini_stream_error_first.sse", &adapter_gemini, PROVIDER_GEMINI, 200, 1 },
	{ "gemini_nonstream_text.json", &adapter_gemini, PROVIDER_GEMINI, 200, 0 },
	{ "gemini_nonstream_function_call.json", &adapter_gemini, PROVIDER_GEMINI, 200, 0 },
	{ "gemini_error_429.json", &adapter_gemini, PROVIDER_GEMINI, 429, 1 },
	{ "ollama_chat_stream.ndjson", &adapter_ollama, PROVIDER_OLLAMA, 200, 1 },
	{ "ollama_chat_stream_tool_call.ndjson", &adapter_ollama, PROVIDER_OLLAMA, 200, 1 },
	{ "ollama_chat_stream_thinking_length.ndjson", &adapter_ollama, PROVIDER_OLLAMA, 200, 1 },
	{ "ollama_chat_stream_midstream_error.ndjson", &adapter_ollama, PROVIDER_OLLAMA, 200, 1 },
	{ "ollama_chat_nonstream_tool_call.json", &adapter_ollama, PROVIDER_OLLAMA, 200, 0 },
};

/* ---- randomness: xorshift64*, seeded per fixture ---- */

static uint64_t
next_rand(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545F4914F6CDD1Dull;
}

static size_t
below(uint64_t *s, size_t n)
{
	return n ? (size_t)(next_rand(s) % n) : 0;
}

/* ---- mutations of t[0..*n), room for cap bytes ---- */

static void
insert_at(char *t, size_t *n, size_t cap, size_t at, const char *s, size_t k)
{
	if (*n + k > cap)
		return;
	memmove(t + at + k, t + at, *n - at);
	memcpy(t + at, s, k);
	*n += k;
}

/* One mutation; what it did into what[] (for the failure message). */
static void
mutate(char *t, size_t *n, size_t cap, uint64_t *rng, char *what, size_t whatlen)
{
	static const char structural[] = "{}[]\",:\\ \n\r0-e.tnfu";
	static const char *const bad_utf8[] = { "\xff", "\xc3", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xe3\x81" };
	size_t at = below(rng, *n), k;
	const char *b;

	switch (below(rng, 8)) {
	case 0:
		t[at] = (char)below(rng, 256);
		snprintf(what, whatlen, "byte %zu set to 0x%02x", at, (unsigned char)t[at]);
		break;
	case 1:
		t[at] = structural[below(rng, sizeof structural - 1)];
		snprintf(what, whatlen, "byte %zu set to '%c'", at, t[at]);
		break;
	case 2:
		k = 1 + below(rng, 16);
		k = k > *n - at ? *n - at : k;
		memmove(t + at, t + at + k, *n - at - k);
		*n -= k;
		snprintf(what, whatlen, "%zu bytes cut out at %zu", k, at);
		break;
	case 3:
		k = 1 + below(rng, 64);
		k = k > *n - at ? *n - at : k;
		{
			char tmp[64];

			memcpy(tmp, t + at, k);
			insert_at(t, n, cap, at + k, tmp, k);
		}
		snprintf(what, whatlen, "%zu bytes at %zu repeated", k, at);
		break;
	case 4:
		*n = at;
		snprintf(what, whatlen, "cut off at %zu", at);
		break;
	case 5:
		b = bad_utf8[below(rng, NELEM(bad_utf8))];
		insert_at(t, n, cap, at, b, strlen(b));
		snprintf(what, whatlen, "bad UTF-8 put in at %zu", at);
		break;
	case 7: /* an event's JSON split over two data lines after a ',' or ':' at or past at (the
	         * joined data stays valid JSON: SSE joins the lines with a '\n') */
		while (at < *n && t[at] != ',' && t[at] != ':')
			at++;
		if (at < *n)
			insert_at(t, n, cap, at + 1, "\ndata: ", 7);
		snprintf(what, whatlen, "data line split after %zu", at);
		break;
	default: { /* the line around at, repeated: an event twice */
		size_t s = at, e = at;

		while (s > 0 && t[s - 1] != '\n')
			s--;
		while (e < *n && t[e] != '\n')
			e++;
		if (e < *n)
			e++;
		if (e - s <= cap - *n) {
			memmove(t + e + (e - s), t + e, *n - e);
			memmove(t + e, t + s, e - s);
			*n += e - s;
		}
		snprintf(what, whatlen, "line at %zu repeated", s);
		break;
	}
	}
}

/* ---- what the client got ---- */

static int
starts(const char *s, size_t n, const char *p)
{
	size_t k = strlen(p);

	return n >= k && memcmp(s, p, k) == 0;
}

/* An event stream: data events, each a JSON object, the last one [DONE] or an interruption,
 * nothing after it. NULL if so, else what is wrong. */
static const char *
bad_stream(const char *s, size_t n)
{
	int ended = 0;

	for (size_t at = 0; at < n;) {
		const char *p = s + at, *end;
		size_t len;

		if (ended)
			return "an event after the end";
		if (!starts(p, n - at, "data: "))
			return "not a data event";
		p += 6;
		if ((end = memmem(p, n - (size_t)(p - s), "\n\n", 2)) == NULL)
			return "an event without its blank line";
		len = (size_t)(end - p);
		if (memchr(p, '\n', len) != NULL || memchr(p, '\r', len) != NULL)
			return "an event on more than one line"; /* JSON allows the '\n', SSE ends the line */
		if (len == 6 && memcmp(p, "[DONE]", 6) == 0)
			ended = 1;
		else if (p[json_skip_end(p, 0, len)] != '{' || !json_valid(p, len)) /* the provider's own whitespace may lead */
			return "an event that is not a JSON object";
		else if (starts(p, len, "{\"error\":") && memmem(p, len, "\"code\":\"stream_interrupted\"", 27) == NULL)
			return "an error event that is not an interruption";
		else if (starts(p, len, "{\"error\":"))
			ended = 1;
		at = (size_t)(end + 2 - s);
	}
	return ended ? NULL : "the stream ends with neither [DONE] nor an interruption";
}

static const char *
bad_answer(const struct xh *h, int stream)
{
	const struct capture *c = &h->cap;
	const char *s = c->text ? c->text : "";

	if (c->ends != 1)
		return "the sink was not ended exactly once";
	if (c->status == 200 && stream)
		return strcmp(c->ctype, "text/event-stream") != 0 ? "a 200 stream that is not text/event-stream" : bad_stream(s, c->len);
	if (!json_valid(s, c->len))
		return "a body that is not JSON";
	if (c->status == 200) /* translated, or an OpenAI-compatible provider's own, passed on */
		return s[json_skip_end(s, 0, c->len)] == '{' ? NULL : "a 200 that is not a JSON object";
	if (c->status < 400 || c->status > 599)
		return "an error status outside 4xx/5xx";
	return starts(s, c->len, "{\"error\":{\"message\":\"") ? NULL : "an error outside OpenAI's envelope";
}

/* ---- the runs ---- */

static void
run_fixture(const struct fixture *f, size_t base, int runs, uint64_t seed)
{
	char path[256], what[3][64], *src, *t;
	size_t n = 0, cap;
	uint64_t rng = seed ^ (uint64_t)(f - fixtures + 1) * 0x100000001B3ull;
	int failed = 0;

	snprintf(path, sizeof path, "test/fixtures/%s", f->file);
	if (!CHECKF((src = xh_slurp(path, &n)) != NULL && n > 0, "cannot read %s (run from the repository's root)", path))
		return;
	cap = 2 * n + 256;
	if ((t = malloc(cap)) == NULL)
		abort();
	for (int run = 0; run < runs && !failed; run++) {
		int muts = 1 + (int)below(&rng, 3), mode = (int)below(&rng, 3);
		const char *req = !f->stream ? XH_WHOLE_REQ : run % 2 ? XH_STREAM_REQ : XH_STREAM_REQ_NO_USAGE;
		size_t len = n, cut, step;
		const char *bad;
		struct xh h;

		memcpy(t, src, n);
		for (int m = 0; m < 3; m++)
			what[m][0] = '\0';
		for (int m = 0; m < muts && len > 0; m++)
			mutate(t, &len, cap, &rng, what[m], sizeof what[m]);
		cut = mode == 1 ? 1 + below(&rng, len) : 0;
		step = mode == 2 ? 1 + below(&rng, 37) : 0;
		if (!CHECKF(xh_setup(&h, f->adapter, f->type, "prov", "model-x", req) == 0, "the request does not parse"))
			break;
		xh_replay(&h, f->status, t, len, cut, step);
		bad = bad_answer(&h, f->stream);
		failed = !CHECKF(bad == NULL, "%s run %d (%s; %s; %s; cut %zu, step %zu): %s; status %d, %d ends\n  got: %s",
		    f->file, run, what[0], what[1], what[2], cut, step, bad, h.cap.status, h.cap.ends,
		    xh_printable(h.cap.text ? h.cap.text : "", h.cap.len));
		xh_teardown(&h);
		failed |= !CHECKF(xh_in_use() == base, "%s run %d (%s; %s; %s): %zu bytes in use after the exchange, %zu before",
		    f->file, run, what[0], what[1], what[2], xh_in_use(), base);
	}
	free(t);
	free(src);
}

/* ---- requests: type confusion in what the adapters translate ---- */

/* Rich client requests (system and developer messages, images, tool calls and results, tools,
 * tool_choice, response_format, stop, sampling): the value of one token replaced at a time. */
static const char *const requests[] = {
	"{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},{\"role\":\"user\","
	"\"content\":\"hi\"}],\"temperature\":0.2,\"top_p\":0.9,\"max_tokens\":50,\"stop\":[\"\\n\\n\"],\"stream\":true}",
	"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"what?\"},"
	"{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,iVBORw0KGgo=\"}},{\"type\":\"image_url\","
	"\"image_url\":{\"url\":\"https://e.x/a.png\",\"detail\":\"low\"}}]},{\"role\":\"assistant\",\"content\":null,"
	"\"tool_calls\":[{\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"w\",\"arguments\":"
	"\"{\\\"c\\\":1}\"}},{\"id\":\"call_2\",\"type\":\"function\",\"function\":{\"name\":\"v\",\"arguments\":\"{}\"}}]},"
	"{\"role\":\"tool\",\"tool_call_id\":\"call_1\",\"content\":\"sunny\"},{\"role\":\"tool\",\"tool_call_id\":"
	"\"call_2\",\"content\":[{\"type\":\"text\",\"text\":\"ok\"}]},{\"role\":\"user\",\"content\":\"thanks\"}],"
	"\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"w\",\"description\":\"d\",\"parameters\":"
	"{\"type\":\"object\",\"properties\":{\"c\":{\"type\":\"integer\"}}}}}],\"tool_choice\":{\"type\":\"function\","
	"\"function\":{\"name\":\"w\"}},\"stream\":true,\"stream_options\":{\"include_usage\":true}}",
	"{\"model\":\"m\",\"messages\":[{\"role\":\"developer\",\"content\":[{\"type\":\"text\",\"text\":\"JSON\"}]},"
	"{\"role\":\"user\",\"content\":\"n\"}],\"response_format\":{\"type\":\"json_schema\",\"json_schema\":"
	"{\"name\":\"s\",\"schema\":{\"type\":\"object\"}}},\"max_completion_tokens\":20,\"seed\":7,\"tool_choice\":"
	"\"required\",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}],\"n\":1}",
};

static const char *const odd_values[] = { "null", "true", "0", "-1", "1e999", "-0.0", "\"\"", "\"x\"", "[]", "{}", "[[]]",
	"{\"a\":{}}", "[null,1,\"two\"]", "\"\\ud800\"", "\"\\u0000\"", "18446744073709551617", "{\"type\":\"text\"}",
	"[{\"type\":\"image_url\"}]", "{\"url\":5}", "\"assistant\"", "\"tool\"", "\"function\"" };

static const struct {
	const struct adapter *adapter;
	enum provider_type    type;
} encoders[] = {
	{ &adapter_openai, PROVIDER_OPENAI }, { &adapter_anthropic, PROVIDER_ANTHROPIC },
	{ &adapter_gemini, PROVIDER_GEMINI }, { &adapter_ollama, PROVIDER_OLLAMA }, { &adapter_azure, PROVIDER_AZURE },
};

/* base with the value token t (not a key) of its parse replaced by v, into out. */
static void
splice(const char *base, const struct json *j, int t, const char *v, char *out, size_t cap)
{
	const jsmntok_t *k = &j->tok[t];
	int from = k->type == JSMN_STRING ? k->start - 1 : k->start, to = k->type == JSMN_STRING ? k->end + 1 : k->end;

	snprintf(out, cap, "%.*s%s%s", from, base, v, base + to);
}

static void
run_requests(size_t base_in_use, int runs, uint64_t seed)
{
	uint64_t rng = seed ^ 0xA5A5A5A5ull;
	char *out = malloc(8192);
	int bad = 0, encoded = 0, refused = 0;

	unit_case("adversary: %d client requests with one value of the wrong type, encoded for each provider", runs);
	if (out == NULL)
		abort();
	for (int run = 0; run < runs && !bad; run++) {
		const char *base = requests[run % NELEM(requests)];
		struct arena a;
		struct json j;
		int t, n, e = (int)below(&rng, NELEM(encoders));
		const char *v = odd_values[below(&rng, NELEM(odd_values))];
		char *url, *headers, *body;
		struct xh h;

		arena_init(&a);
		if ((n = json_parse(&j, &a, base, strlen(base))) <= 0) {
			bad = !CHECKF(0, "request %d does not parse", run % (int)NELEM(requests));
			arena_release(&a);
			break;
		}
		do /* a value: the top-level object, or a token whose parent is not an object (a key) */
			t = (int)below(&rng, (size_t)n);
		while (t > 0 && j.tok[j.tok[t].parent].type == JSMN_OBJECT);
		splice(base, &j, t, v, out, 8192);
		arena_release(&a);
		if (xh_setup(&h, encoders[e].adapter, encoders[e].type, "prov", "model-x", out) < 0) {
			arena_release(&h.arena); /* the model itself replaced: api.c refuses such a request */
			free(h.body);            /* first, and no exchange was made */
			continue;
		}
		if (xh_encode(&h, &url, &headers, &body) == 0) {
			encoded++;
			bad = !CHECKF(json_valid(body, strlen(body)) && url[0] != '\0',
			    "%s, run %d: token %d = %s: the body is not JSON (or no URL): %s\n  from: %s",
			    encoders[e].adapter->name, run, t, v, body, out);
		} else {
			refused++;
			bad = !CHECKF(h.x.fail.msg[0] != '\0' && h.x.fail.status >= 400 && h.x.fail.status <= 599,
			    "%s, run %d: token %d = %s: refused without a message or a 4xx/5xx (status %d)\n  from: %s",
			    encoders[e].adapter->name, run, t, v, h.x.fail.status, out);
		}
		free(url);
		free(headers);
		free(body);
		xh_teardown(&h);
		bad |= !CHECKF(xh_in_use() == base_in_use, "run %d: %zu bytes in use after the exchange, %zu before", run,
		    xh_in_use(), base_in_use);
	}
	CHECKF(bad || (encoded > runs / 10 && refused > runs / 10), "%d encoded, %d refused: the mutations should give both",
	    encoded, refused);
	free(out);
}

void
suite_adversary(void)
{
	const char *runs_env = getenv("ADVERSARY_RUNS"), *seed_env = getenv("ADVERSARY_SEED");
	int runs = runs_env != NULL ? atoi(runs_env) : RUNS_PER_FIXTURE;
	uint64_t seed = seed_env != NULL ? strtoull(seed_env, NULL, 0) : 0x9E3779B97F4A7C15ull;
	char err[256];
	size_t base;

	unit_case("adversary mem_init");
	if (!CHECKF(mem_init(64 << 20, err, sizeof err) == 0, "mem_init: %s", err))
		return;
	base = xh_in_use();
	for (size_t i = 0; i < NELEM(fixtures); i++) {
		unit_case("adversary: %s mutated %d times, fed whole, cut or in small steps", fixtures[i].file, runs);
		run_fixture(&fixtures[i], base, runs, seed);
	}
	run_requests(base, 10 * runs, seed);
	mem_shutdown();
}
