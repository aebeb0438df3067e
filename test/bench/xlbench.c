/*
 * xlbench.c — the cost of translation (make bench, issue 6 point 9): recorded provider streams
 * replayed through a real exchange (exchange_prepare / exchange_upstream_head / exchange_feed /
 * exchange_upstream_done, no loop, no libcurl), into a sink that only counts what it is given.
 *
 *   xlbench                      time every adapter: key=value lines (ns per event, …)
 *   xlbench anthropic|gemini|openai N
 *                                N iterations of one adapter, then its key=value lines — for
 *                                valgrind --tool=callgrind: Ir(N) − Ir(1) over (N−1) × events
 *                                is the cost per event, start-up excluded
 *   xlbench anthropic-mid|gemini-mid|openai-mid N
 *                                one exchange of the adapter's text stream with its first content
 *                                event fed N times: a long stream's middle. Ir(N+1) − Ir(1) over
 *                                N is what one more content event costs once the stream runs
 *
 * One iteration = every fixture of the adapter, each in a fresh exchange (set up, fed, ended,
 * released as the connection's `gone` releases it), fed one SSE event per exchange_feed call, as
 * the provider's writes would arrive. An "event" is one upstream SSE event (one data: line);
 * "chunks" are the pieces the exchange wrote to the client (chat.completion.chunk events, the
 * usage chunk and [DONE]). The per-event figures include each exchange's set-up and release,
 * spread over its events; the recorded streams are short (Gemini's: 1 or 2 events), so those
 * are mostly what a stream costs to start and end, and the mid-stream figure is the other half. Run from the repository's root (it reads test/fixtures/).
 * Each exchange's output is checked to end with [DONE] exactly once; otherwise exit 1.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "sluice.h"
#include "adapters/adapter.h"

/* ---- the sink: counts, keeps the last bytes to check the end ---- */

struct count {
	uint64_t bytes, writes;
	int      ends, status;
	char     tail[16]; /* the end of the last write's last part (the exchange writes [DONE] whole) */
	size_t   ntail;
};

static int
count_head(void *o, int status, const char *ctype, const char *headers, int64_t len)
{
	((struct count *)o)->status = status;
	return 0;
}

static int
count_write(void *o, const struct iovec *parts, int nparts)
{
	struct count *c = o;

	const struct iovec *last = &parts[nparts > 0 ? nparts - 1 : 0];

	if (nparts <= 0)
		return 0;
	for (int i = 0; i < nparts; i++)
		c->bytes += parts[i].iov_len;
	/* Only the last part's end is kept: the sink should cost next to nothing, since what is
	 * counted is the exchange's work. */
	c->ntail = last->iov_len < sizeof c->tail ? last->iov_len : sizeof c->tail;
	memcpy(c->tail, (const char *)last->iov_base + last->iov_len - c->ntail, c->ntail);
	c->writes++;
	return 0;
}

static int
count_borrow(void *o, const char *p, size_t n)
{
	struct iovec v = { (void *)p, n };

	return count_write(o, &v, 1);
}

static void count_end(void *o) { ((struct count *)o)->ends++; }
static size_t count_queued(const void *o) { return 0; }

static const struct sink_ops count_ops = {
	.head = count_head, .write = count_write, .borrow = count_borrow, .end = count_end, .queued = count_queued,
};

/* ---- the exchange ---- */

#define REQUEST "{\"model\":\"bench\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"stream\":true," \
	"\"stream_options\":{\"include_usage\":true}}"

struct fixture {
	char   *data;
	size_t  len;
	size_t *cut;   /* event ends: [cut[i-1], cut[i]) is event i */
	int     nev;   /* events (data: lines) */
	int     npieces;
};

struct bench {
	const char          *name, *label;
	const struct adapter *adapter;
	enum provider_type   type;
	const char          *model;
	const char          *files[2];
	int                  mid;     /* files[0]'s first content event: the one a long stream repeats */
	struct fixture       fx[2];
	struct cfg_provider  prov;
	struct target        tgt;
};

static struct config cfg;   /* all zero: stream_heartbeat 0, no timer is armed */

static struct bench benches[] = {
	{ .name = "anthropic", .label = "Anthropic → OpenAI", .adapter = &adapter_anthropic, .type = PROVIDER_ANTHROPIC,
	  .model = "claude-sonnet-4-5", .files = { "anthropic_stream_text.sse", "anthropic_stream_tool_use.sse" }, .mid = 3 },
	{ .name = "gemini", .label = "Gemini → OpenAI", .adapter = &adapter_gemini, .type = PROVIDER_GEMINI,
	  .model = "gemini-2.5-flash", .files = { "gemini_stream_text.sse", "gemini_stream_function_call.sse" }, .mid = 0 },
	/* Not a translation: the OpenAI-compatible pass-through (checked, model rewritten), for
	 * comparison, and the path most providers take. */
	{ .name = "openai", .label = "OpenAI pass-through", .adapter = &adapter_openai, .type = PROVIDER_OPENAI,
	  .model = "gpt-4o-mini", .files = { "openai_chat_stream_text.sse", "openai_chat_stream_parallel_tool_calls.sse" },
	  .mid = 1 },
};

static void
die(const char *what, const char *detail)
{
	fprintf(stderr, "xlbench: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
	exit(2);
}

/* Read a fixture and cut it after each blank line (the end of an SSE event). */
static void
load(struct fixture *f, const char *file)
{
	char path[256];
	FILE *fp;
	long size;

	snprintf(path, sizeof path, "test/fixtures/%s", file);
	if ((fp = fopen(path, "rb")) == NULL)
		die("cannot read (run from the repository's root)", path);
	if (fseek(fp, 0, SEEK_END) != 0 || (size = ftell(fp)) < 0 || fseek(fp, 0, SEEK_SET) != 0 ||
	    (f->data = malloc((size_t)size + 1)) == NULL || fread(f->data, 1, (size_t)size, fp) != (size_t)size)
		die("cannot read", path);
	fclose(fp);
	f->len = (size_t)size;
	f->cut = malloc((f->len + 1) * sizeof *f->cut);
	if (f->cut == NULL)
		die("out of memory", NULL);
	for (size_t i = 0; i < f->len; i++) {
		if (strncmp(f->data + i, "data:", 5) == 0 && (i == 0 || f->data[i - 1] == '\n'))
			f->nev++;
		if (f->data[i] == '\n' && i + 1 < f->len && f->data[i + 1] == '\n')
			f->cut[f->npieces++] = i + 2;
	}
	if (f->npieces == 0 || f->cut[f->npieces - 1] != f->len)
		f->cut[f->npieces++] = f->len;
}

static struct chat_req req;
static struct arena req_arena;

/* The client's request, read once as api.c reads it (its tokens live for the whole run). */
static void
read_request(void)
{
	int t;

	arena_init(&req_arena);
	req.body = REQUEST;
	req.len = strlen(REQUEST);
	if (json_parse(&req.j, &req_arena, req.body, req.len) <= 0)
		die("the request does not parse", NULL);
	req.model = json_find(&req.j, 0, "model");
	t = json_find(&req.j, 0, "stream");
	req.stream = t >= 0 && json_eq_literal(&req.j, t, "true");
	req.stream_options = json_find(&req.j, 0, "stream_options");
	t = json_find(&req.j, req.stream_options, "include_usage");
	req.include_usage = req.stream && t >= 0 && json_eq_literal(&req.j, t, "true");
}

/* One exchange: set up, the fixture fed event by event (event `rep` fed `times` times), ended,
 * released. */
static void
run_one(struct bench *b, const struct fixture *f, struct count *c, int rep, long times)
{
	static struct exchange x;
	struct arena arena;
	struct upstream_result ok = { .ok = 1 };
	const jsmntok_t *m = &req.j.tok[req.model];
	size_t at = 0;

	memset(&x, 0, sizeof x);
	memset(c, 0, sizeof *c);
	arena_init(&arena);
	x.sink = (struct sink){ &count_ops, c };
	x.arena = &arena;
	x.cfg = &cfg;
	x.req = &req;
	x.public_model = req.body + m->start - 1;
	x.public_model_len = (size_t)(m->end - m->start) + 2;
	x.plan.targets = &b->tgt;
	x.plan.ntargets = 1;
	x.target = &b->tgt;
	loop_timer_init(&x.retry_timer);
	loop_timer_init(&x.deadline_timer);
	exchange_prepare(&x);
	exchange_upstream_head(&x, 200);
	for (int i = 0; i < f->npieces; i++) {
		for (long r = 0; r < (i == rep ? times : 1); r++)
			if (exchange_feed(&x, f->data + at, f->cut[i] - at) < 0)
				goto done;
		at = f->cut[i];
	}
done:
	exchange_upstream_done(&x, &ok);
	exchange_handler.gone(&x);
	arena_release(&arena);
}

struct totals {
	uint64_t bytes, writes;
};

/* Exit unless the output was one whole stream. */
static void
check_whole(const struct bench *b, int k, const struct count *c)
{
	if (c->ends != 1 || c->status != 200 || c->ntail < 14 ||
	    memcmp(c->tail + c->ntail - 14, "data: [DONE]\n\n", 14) != 0) {
		fprintf(stderr, "xlbench: %s %s: not a whole stream (status %d, %d ends, %llu bytes)\n", b->name,
		    b->files[k], c->status, c->ends, (unsigned long long)c->bytes);
		exit(1);
	}
}

/* One iteration: every fixture of the adapter. Exits if any output is not a whole stream. */
static void
iterate(struct bench *b, struct totals *t)
{
	struct count c;

	for (int k = 0; k < 2; k++) {
		run_one(b, &b->fx[k], &c, -1, 1);
		check_whole(b, k, &c);
		t->bytes += c.bytes;
		t->writes += c.writes;
	}
}

/* A long stream: the text fixture with its first content event fed `times` times. */
static void
long_stream(struct bench *b, long times)
{
	struct count c;

	run_one(b, &b->fx[0], &c, b->mid, times);
	check_whole(b, 0, &c);
}

static int
events(const struct bench *b)
{
	return b->fx[0].nev + b->fx[1].nev;
}

static double
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static void
print_kv(const struct bench *b, const struct totals *per_iter)
{
	printf("%s.events=%d\n", b->name, events(b));
	printf("%s.chunks=%llu\n", b->name, (unsigned long long)per_iter->writes);
	printf("%s.bytes_in=%zu\n", b->name, b->fx[0].len + b->fx[1].len);
	printf("%s.bytes_out=%llu\n", b->name, (unsigned long long)per_iter->bytes);
}

/* The cost of one more content event in a running stream: a stream of MID_EVENTS + 1 content
 * events minus one of 1, over MID_EVENTS; best of 5. */
#define MID_EVENTS 2000

static void
timed_mid(struct bench *b)
{
	double best = 0;

	for (int r = 0; r < 5; r++) {
		double t0 = now_ns(), t1, t2;

		long_stream(b, 1);
		t1 = now_ns();
		long_stream(b, MID_EVENTS + 1);
		t2 = now_ns();
		if (r == 0 || (t2 - t1) - (t1 - t0) < best)
			best = (t2 - t1) - (t1 - t0);
	}
	printf("%s.mid_bytes=%zu\n", b->name, b->fx[0].cut[b->mid] - (b->mid > 0 ? b->fx[0].cut[b->mid - 1] : 0));
	printf("%s.ns_mid=%.0f\n", b->name, best / MID_EVENTS);
}

/* Time one adapter: iterations for at least ~0.3 s after a warm-up, the best of 5 runs. */
static void
timed(struct bench *b)
{
	struct totals t = { 0 };
	double best = 0;
	long n = 100;

	iterate(b, &t);
	print_kv(b, &t);
	for (double t0 = now_ns(); now_ns() - t0 < 5e7;)   /* warm-up, and the size of a run */
		for (long i = 0; i < n; i++)
			iterate(b, &(struct totals){ 0 });
	for (;;) {
		double t0 = now_ns();
		for (long i = 0; i < n; i++)
			iterate(b, &(struct totals){ 0 });
		if (now_ns() - t0 > 6e7)
			break;
		n *= 2;
	}
	for (int r = 0; r < 5; r++) {
		double t0 = now_ns(), dt;

		for (long i = 0; i < n; i++)
			iterate(b, &(struct totals){ 0 });
		dt = (now_ns() - t0) / (double)n;
		if (r == 0 || dt < best)
			best = dt;
	}
	printf("%s.iterations=%ld\n", b->name, n);
	printf("%s.ns_per_iter=%.0f\n", b->name, best);
	printf("%s.ns_per_event=%.0f\n", b->name, best / events(b));
	printf("%s.ns_per_chunk_out=%.0f\n", b->name, best / (double)t.writes);
	timed_mid(b);
}

int
main(int argc, char **argv)
{
	char err[256];
	struct bench *only = NULL;
	long iters = 0;
	int mid = 0;

	if (argc == 3) {
		size_t n = strlen(argv[1]);

		if ((mid = n > 4 && strcmp(argv[1] + n - 4, "-mid") == 0))
			n -= 4;
		for (size_t i = 0; i < NELEM(benches); i++)
			if (strlen(benches[i].name) == n && strncmp(argv[1], benches[i].name, n) == 0)
				only = &benches[i];
		iters = strtol(argv[2], NULL, 10);
	}
	if (argc != 1 && (only == NULL || iters < 1)) {
		fprintf(stderr, "usage: xlbench [NAME ITERATIONS | NAME-mid EVENTS] (NAME: anthropic, gemini, openai)\n");
		return 2;
	}
	if (mem_init(64u << 20, err, sizeof err) != 0)
		die("mem_init", err);
	read_request();
	for (size_t i = 0; i < NELEM(benches); i++) {
		struct bench *b = &benches[i];

		b->prov = (struct cfg_provider){ .name = b->name, .type = b->type, .base_url = "https://upstream.test",
			.api_key = "KEY", .api_version = "2023-06-01", .ca_file = "", .max_response_body = 8u << 20,
			.default_max_tokens = 4096 };
		b->tgt = (struct target){ .provider = &b->prov, .model = b->model, .adapter = b->adapter };
		for (int k = 0; k < 2; k++)
			load(&b->fx[k], b->files[k]);
	}
	if (only != NULL && mid) {
		long_stream(only, iters);
		return 0;
	}
	if (only != NULL) {
		struct totals t = { 0 };

		for (long i = 0; i < iters; i++) {
			struct totals one = { 0 };
			iterate(only, &one);
			t = one;
		}
		print_kv(only, &t);
		return 0;
	}
	for (size_t i = 0; i < NELEM(benches); i++) {
		printf("%s.label=%s\n", benches[i].name, benches[i].label);
		timed(&benches[i]);
	}
	return 0;
}
