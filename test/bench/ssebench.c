/*
 * ssebench.c — a small HTTP/1.1 load generator for sluice's `make bench`.
 * Single-threaded, epoll, no dependencies:  gcc -O2 -o ssebench ssebench.c
 *
 *   ssebench -a HOST:PORT [-P PATH] -c CONNS [-d SECONDS] [-n REQUESTS] [-w SECONDS]
 *            (-m MODEL | -b BODY | -B FILE) [--sync] [--stall-ms MS] [--timeout MS]
 *            [--max-time SECONDS] [--connect-burst N] [-H 'Name: value']... [--kv] [-v]
 *
 * CONNS keep-alive connections each POST the body to PATH again and again, for the warm-up (-w,
 * default 0) plus the duration (-d, default 10 s) or until REQUESTS requests were started (-n),
 * whichever comes first. Then no new request starts; those in flight may finish (each within its
 * --timeout, default 10 s), and the run always ends by --max-time (default warm-up + duration +
 * timeout + 2 s): a request still unfinished then is an error. Only requests started after the
 * warm-up are measured; errors are counted over the whole run.
 *
 * -m MODEL builds the body {"model":MODEL,"messages":[{"role":"user","content":"hi"}],
 * "stream":true} (false with --sync); -b/-B give it verbatim.
 *
 * STREAM MODE (default): the response must be 200 and an SSE stream (chunked, Content-Length or
 * until close) that ends with `data: [DONE]`. Per request it timestamps
 *   ttfb   the first byte of the response body (after the head), from the request's first write
 *          (successful streams only: an error's body is not a first byte)
 *   ttft   the first `data:` event carrying content (a non-empty "content" / "reasoning_content",
 *          or "tool_calls")
 *   gaps   from the first content event on, the gap before every later `data:` event
 *          (content, finish, usage, [DONE]); the gap percentiles are over the gaps between two
 *          content events (inter-token), max and the stall count over every gap. A gap longer
 *          than --stall-ms is a "stalled gap" (0 = do not count).
 * A 200 stream without [DONE] is an error (incomplete), as is one carrying a `data: {"error"…`
 * event (stream error).
 * SYNC MODE (--sync): any 2xx response is a success; its latency is from the request's first
 * write to the last byte of the response.
 *
 * Timestamps are taken when a read returns, so events that arrive in one read share one. Output:
 * a readable summary on stdout; with --kv, `key=value` lines on stdout instead (the summary goes
 * to stderr) for scripts. -v prints the first few failures of each kind to stderr (the status
 * and the start of an error body, the bytes a parse error stopped at, a stream's error event). Exit status 0 when the run completed (whatever the errors), 2 on usage
 * errors, 1 when it could not run at all.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ---------------------------------------------------------------------------------------- */
/* options */

static struct {
	char host[256];
	int port;
	const char *path;
	int conns;
	double duration, warmup, max_time;
	long max_requests;
	int sync;
	double stall_ms;
	double timeout_ms;
	int burst;
	int kv;
	int verbose; /* print the first few failures of each kind */
	char *body;
	size_t body_len;
	char *headers; /* extra header lines, each ending in \r\n */
} opt = { .path = "/v1/chat/completions", .conns = 1, .duration = -1, .max_time = -1,
	  .timeout_ms = 10000, .burst = 64 };

static void
die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("ssebench: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(1);
}

static void
usage(const char *msg)
{
	if (msg)
		fprintf(stderr, "ssebench: %s\n", msg);
	fputs("usage: ssebench -a HOST:PORT [-P PATH] -c CONNS [-d SECONDS] [-n REQUESTS] [-w SECONDS]\n"
	      "                (-m MODEL | -b BODY | -B FILE) [--sync] [--stall-ms MS] [--timeout MS]\n"
	      "                [--max-time SECONDS] [--connect-burst N] [-H 'Name: value']... [--kv] [-v]\n",
	      stderr);
	exit(2);
}

static char *
read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		die("%s: %s", path, strerror(errno));
	size_t cap = 4096, n = 0;
	char *b = malloc(cap);
	size_t r;
	while ((r = fread(b + n, 1, cap - n, f)) > 0) {
		n += r;
		if (n == cap)
			b = realloc(b, cap *= 2);
	}
	fclose(f);
	*len = n;
	return b;
}

static double
num_arg(const char *name, const char *v)
{
	char *end;
	double d = strtod(v, &end);
	if (end == v || *end || d < 0)
		usage(name);
	return d;
}

static void
parse_args(int argc, char **argv)
{
	const char *model = NULL;
	size_t hcap = 0, hlen = 0;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		int last = i + 1 >= argc;
#define VAL() (last ? (usage("missing value"), "") : argv[++i])
		if (!strcmp(a, "-a")) {
			const char *v = VAL();
			const char *colon = strrchr(v, ':');
			if (!colon || colon == v || (size_t)(colon - v) >= sizeof opt.host)
				usage("-a HOST:PORT");
			memcpy(opt.host, v, colon - v);
			opt.host[colon - v] = 0;
			opt.port = atoi(colon + 1);
			if (opt.port <= 0 || opt.port > 65535)
				usage("-a HOST:PORT");
		} else if (!strcmp(a, "-P")) {
			opt.path = VAL();
		} else if (!strcmp(a, "-c")) {
			opt.conns = (int)num_arg("-c CONNS", VAL());
		} else if (!strcmp(a, "-d")) {
			opt.duration = num_arg("-d SECONDS", VAL());
		} else if (!strcmp(a, "-n")) {
			opt.max_requests = (long)num_arg("-n REQUESTS", VAL());
		} else if (!strcmp(a, "-w")) {
			opt.warmup = num_arg("-w SECONDS", VAL());
		} else if (!strcmp(a, "-m")) {
			model = VAL();
		} else if (!strcmp(a, "-b")) {
			opt.body = strdup(VAL());
			opt.body_len = strlen(opt.body);
		} else if (!strcmp(a, "-B")) {
			opt.body = read_file(VAL(), &opt.body_len);
		} else if (!strcmp(a, "--sync")) {
			opt.sync = 1;
		} else if (!strcmp(a, "--stall-ms")) {
			opt.stall_ms = num_arg("--stall-ms MS", VAL());
		} else if (!strcmp(a, "--timeout")) {
			opt.timeout_ms = num_arg("--timeout MS", VAL());
		} else if (!strcmp(a, "--max-time")) {
			opt.max_time = num_arg("--max-time SECONDS", VAL());
		} else if (!strcmp(a, "--connect-burst")) {
			opt.burst = (int)num_arg("--connect-burst N", VAL());
		} else if (!strcmp(a, "-H")) {
			const char *v = VAL();
			size_t l = strlen(v);
			if (hlen + l + 3 > hcap)
				opt.headers = realloc(opt.headers, hcap = (hcap + l + 3) * 2);
			memcpy(opt.headers + hlen, v, l);
			memcpy(opt.headers + hlen + l, "\r\n", 3);
			hlen += l + 2;
		} else if (!strcmp(a, "--kv")) {
			opt.kv = 1;
		} else if (!strcmp(a, "-v")) {
			opt.verbose = 1;
		} else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage(NULL);
		} else {
			fprintf(stderr, "ssebench: unknown argument %s\n", a);
			usage(NULL);
		}
#undef VAL
	}
	if (!opt.port)
		usage("-a HOST:PORT is required");
	if (opt.conns < 1)
		usage("-c CONNS must be at least 1");
	if (opt.burst < 1)
		opt.burst = 1;
	if (!opt.body == !model)
		usage("give exactly one of -m, -b, -B");
	if (model) {
		size_t l = strlen(model) * 2 + 128;
		opt.body = malloc(l);
		/* the model name is JSON-escaped for the two characters that matter */
		char esc[1024];
		size_t e = 0;
		for (const char *p = model; *p && e < sizeof esc - 2; p++) {
			if (*p == '"' || *p == '\\')
				esc[e++] = '\\';
			esc[e++] = *p;
		}
		esc[e] = 0;
		opt.body_len = (size_t)snprintf(opt.body, l,
			"{\"model\":\"%s\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"stream\":%s}",
			esc, opt.sync ? "false" : "true");
	}
	if (opt.duration < 0)
		opt.duration = opt.max_requests ? 3600 : 10;
	if (opt.max_time < 0)
		opt.max_time = opt.warmup + opt.duration + opt.timeout_ms / 1000 + 2;
}

/* ---------------------------------------------------------------------------------------- */
/* time and samples */

static uint64_t
now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

#define SAMPLES_MAX (32u << 20) /* beyond this many samples per series, keep counting only */

struct series {
	uint32_t *v; /* microseconds */
	size_t n, cap;
	uint64_t max;
};

static void
push(struct series *s, uint64_t us)
{
	if (us > s->max)
		s->max = us;
	if (s->n == s->cap) {
		if (s->cap >= SAMPLES_MAX)
			return;
		s->cap = s->cap ? s->cap * 2 : 4096;
		s->v = realloc(s->v, s->cap * sizeof *s->v);
		if (!s->v)
			die("out of memory");
	}
	s->v[s->n++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
}

static int
cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

static void
finish_series(struct series *s)
{
	if (s->n)
		qsort(s->v, s->n, sizeof *s->v, cmp_u32);
}

/* the p-th percentile (0 < p <= 100) in ms, nearest rank; -1 when empty */
static double
pct(const struct series *s, double p)
{
	if (!s->n)
		return -1;
	size_t rank = (size_t)((p / 100.0) * (double)s->n + 0.999999);
	if (rank < 1)
		rank = 1;
	if (rank > s->n)
		rank = s->n;
	return s->v[rank - 1] / 1000.0;
}

/* ---------------------------------------------------------------------------------------- */
/* connections */

enum { ST_IDLE, ST_CONNECTING, ST_SENDING, ST_HEAD, ST_BODY };
enum { BM_LENGTH, BM_CHUNKED, BM_CLOSE };
enum { CK_LINE, CK_DATA, CK_CRLF, CK_TRAILER };
enum { E_CONNECT, E_IO, E_EOF, E_TIMEOUT, E_HTTP, E_PARSE, E_INCOMPLETE, E_STREAM, E_UNFINISHED, E_N };
static const char *const err_names[E_N] = { "connect", "io", "closed", "timeout", "http", "parse",
					    "incomplete", "stream_error", "unfinished" };

static void
show(int kind, const char *what, const char *p, size_t n)
{
	static int shown[E_N];
	if (!opt.verbose || shown[kind]++ >= 5)
		return;
	fprintf(stderr, "ssebench: %s: %s: ", err_names[kind], what);
	for (size_t i = 0; i < n && i < 200; i++) {
		unsigned char ch = (unsigned char)p[i];
		if (ch == '\r')
			fputs("\\r", stderr);
		else if (ch == '\n')
			fputs("\\n", stderr);
		else if (ch < 32 || ch > 126)
			fprintf(stderr, "\\x%02x", ch);
		else
			fputc(ch, stderr);
	}
	fputc('\n', stderr);
}

#define HEAD_MAX 16384
#define LINE_MAX_ 8192

struct conn {
	int fd;
	uint32_t ev; /* the epoll events registered */
	int state;
	int active; /* a request is in flight (sent or being sent) */
	size_t sent;
	uint64_t t_connect, t_start, deadline;
	int measured; /* started after the warm-up */
	/* response head */
	char head[HEAD_MAX];
	size_t head_len;
	int status, keepalive;
	int body_mode;
	uint64_t remaining;
	/* chunked decoder */
	int ck;
	char ckline[64];
	size_t ckline_len, trailer_len;
	/* SSE */
	char line[LINE_MAX_];
	size_t line_len;
	int line_cr; /* the last byte was a CR that ended a line: skip one LF */
	int got_body, got_content, got_done, stream_error;
	int prev_status, nreq; /* the previous response's status on this connection, requests on it */
	char snip[200]; /* the start of the body, for -v */
	size_t snip_len;
	uint64_t t_last_event, t_last_content, t_body;
};

static struct conn *conns;
static int epfd;
static struct sockaddr_storage addr;
static socklen_t addrlen;
static char *request;
static size_t request_len;

static struct {
	long started, completed_ok, errors[E_N];
	long status_count[600];
	long connects, connecting, open, inflight;
	long ok_in_window;
	long stalls, gaps_total;
	struct series ttfb, ttft, gap, latency, connect;
	uint64_t gap_max;
} st;

static uint64_t t0, t_warm, t_stop, t_hard;
static int stopping;

static void
resolve(void)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res;
	char port[16];
	snprintf(port, sizeof port, "%d", opt.port);
	int rc = getaddrinfo(opt.host, port, &hints, &res);
	if (rc)
		die("%s: %s", opt.host, gai_strerror(rc));
	memcpy(&addr, res->ai_addr, res->ai_addrlen);
	addrlen = res->ai_addrlen;
	freeaddrinfo(res);
}

static void
build_request(void)
{
	const char *h = opt.headers ? opt.headers : "";
	size_t cap = strlen(opt.path) + strlen(opt.host) + strlen(h) + opt.body_len + 512;
	request = malloc(cap);
	int n = snprintf(request, cap,
			 "POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
			 "Accept: %s\r\nContent-Length: %zu\r\n%s\r\n",
			 opt.path, opt.host, opt.port, opt.sync ? "application/json" : "text/event-stream",
			 opt.body_len, h);
	memcpy(request + n, opt.body, opt.body_len);
	request_len = (size_t)n + opt.body_len;
}

static void
ep_set(struct conn *c, uint32_t events, int op)
{
	if (op == EPOLL_CTL_MOD && c->ev == events)
		return;
	struct epoll_event ev = { .events = events, .data.ptr = c };
	if (epoll_ctl(epfd, op, c->fd, &ev) < 0)
		die("epoll_ctl: %s", strerror(errno));
	c->ev = events;
}

static void
close_conn(struct conn *c)
{
	if (c->fd >= 0) {
		if (c->state == ST_CONNECTING)
			st.connecting--;
		close(c->fd);
		st.open--;
	}
	if (c->active)
		st.inflight--;
	c->fd = -1;
	c->state = ST_IDLE;
	c->active = 0;
}

static int
may_start(uint64_t now)
{
	if (stopping || now >= t_stop)
		return 0;
	if (opt.max_requests && st.started >= opt.max_requests)
		return 0;
	return 1;
}

/* counts an error for the request in flight (if any) and closes the connection */
static void
fail(struct conn *c, int kind)
{
	if (c->active || kind == E_CONNECT)
		st.errors[kind]++;
	close_conn(c);
}

static void start_request(struct conn *c, uint64_t now);
static void try_send(struct conn *c);

static void
open_conn(struct conn *c, uint64_t now)
{
	int fd = socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		st.errors[E_CONNECT]++;
		return;
	}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	c->fd = fd;
	c->prev_status = c->nreq = 0;
	st.open++;
	c->t_connect = now;
	c->deadline = now + (uint64_t)(opt.timeout_ms * 1000);
	st.connects++;
	if (connect(fd, (struct sockaddr *)&addr, addrlen) == 0) {
		c->state = ST_SENDING;
		ep_set(c, EPOLLIN, EPOLL_CTL_ADD);
		push(&st.connect, 0);
		start_request(c, now);
		return;
	}
	if (errno != EINPROGRESS) {
		close_conn(c);
		st.errors[E_CONNECT]++;
		return;
	}
	c->state = ST_CONNECTING;
	st.connecting++;
	ep_set(c, EPOLLOUT, EPOLL_CTL_ADD);
}

static void
start_request(struct conn *c, uint64_t now)
{
	if (!may_start(now)) {
		close_conn(c);
		return;
	}
	st.started++;
	st.inflight++;
	c->nreq++;
	c->active = 1;
	c->state = ST_SENDING;
	c->sent = 0;
	c->t_start = now;
	c->measured = now >= t_warm;
	c->deadline = now + (uint64_t)(opt.timeout_ms * 1000);
	c->head_len = 0;
	c->status = 0;
	c->keepalive = 1;
	c->body_mode = BM_CLOSE;
	c->remaining = 0;
	c->ck = CK_LINE;
	c->ckline_len = c->trailer_len = 0;
	c->line_len = 0;
	c->line_cr = 0;
	c->got_body = c->got_content = c->got_done = c->stream_error = 0;
	c->snip_len = 0;
	c->t_last_event = c->t_last_content = 0;
	try_send(c);
}

/* the response ended (body complete, or a close that ends a BM_CLOSE body) */
static void
response_done(struct conn *c, uint64_t now)
{
	int ok;
	if (opt.sync) {
		ok = c->status >= 200 && c->status < 300;
		if (!ok) {
			st.errors[E_HTTP]++;
			show(E_HTTP, c->head, c->snip, c->snip_len);
		}
	} else if (c->status != 200) {
		ok = 0;
		st.errors[E_HTTP]++;
		char what[32];
		snprintf(what, sizeof what, "status %d", c->status);
		show(E_HTTP, what, c->snip, c->snip_len);
	} else if (c->stream_error) {
		ok = 0;
		st.errors[E_STREAM]++;
	} else if (!c->got_done) {
		ok = 0;
		st.errors[E_INCOMPLETE]++;
	} else {
		ok = 1;
	}
	if (c->status > 0 && c->status < 600)
		st.status_count[c->status]++;
	c->prev_status = c->status;
	if (ok) {
		st.completed_ok++;
		if (now >= t_warm && now <= t_stop)
			st.ok_in_window++;
		if (c->measured) {
			push(&st.latency, now - c->t_start);
			if (!opt.sync)
				push(&st.ttfb, c->t_body - c->t_start);
		}
	}
	c->active = 0;
	st.inflight--;
	if (c->keepalive && c->body_mode != BM_CLOSE && may_start(now)) {
		start_request(c, now);
	} else {
		close_conn(c);
	}
}

static int
content_bearing(const char *p, size_t n)
{
	/* "content": "x…" (also reasoning_content) with a non-empty string, or tool_calls */
	const char *end = p + n;
	for (const char *q = p; q < end; q++) {
		q = memmem(q, end - q, "content\"", 8);
		if (!q)
			break;
		const char *r = q + 8;
		while (r < end && (*r == ' ' || *r == '\t'))
			r++;
		if (r >= end || *r != ':')
			continue;
		r++;
		while (r < end && (*r == ' ' || *r == '\t'))
			r++;
		if (r + 1 < end && r[0] == '"' && r[1] != '"')
			return 1;
	}
	return memmem(p, n, "\"tool_calls\"", 12) != NULL;
}

static void
sse_line(struct conn *c, uint64_t now)
{
	const char *l = c->line;
	size_t n = c->line_len;
	if (n < 5 || memcmp(l, "data:", 5))
		return;
	l += 5;
	n -= 5;
	if (n && *l == ' ')
		l++, n--;
	int done = n == 6 && !memcmp(l, "[DONE]", 6);
	if (done)
		c->got_done = 1;
	else if (n >= 8 && !memcmp(l, "{\"error\"", 8)) {
		c->stream_error = 1;
		show(E_STREAM, "event", l, n);
	}
	int content = !done && content_bearing(l, n);
	if (!c->got_content) {
		if (!content)
			return;
		c->got_content = 1;
		c->t_last_event = c->t_last_content = now;
		if (c->measured)
			push(&st.ttft, now - c->t_start);
		return;
	}
	uint64_t gap = now - c->t_last_event;
	c->t_last_event = now;
	if (c->measured) {
		st.gaps_total++;
		if (gap > st.gap_max)
			st.gap_max = gap;
		if (opt.stall_ms > 0 && gap > (uint64_t)(opt.stall_ms * 1000))
			st.stalls++;
		if (content)
			push(&st.gap, now - c->t_last_content);
	}
	if (content)
		c->t_last_content = now;
}

/* decoded body bytes */
static void
body_bytes(struct conn *c, const char *p, size_t n, uint64_t now)
{
	if (opt.verbose && c->status != 200 && c->snip_len < sizeof c->snip) {
		size_t k = sizeof c->snip - c->snip_len < n ? sizeof c->snip - c->snip_len : n;
		memcpy(c->snip + c->snip_len, p, k);
		c->snip_len += k;
	}
	if (opt.sync)
		return;
	for (size_t i = 0; i < n; i++) {
		char ch = p[i];
		if (c->line_cr) {
			c->line_cr = 0;
			if (ch == '\n')
				continue;
		}
		if (ch == '\n' || ch == '\r') {
			sse_line(c, now);
			c->line_len = 0;
			c->line_cr = ch == '\r';
			continue;
		}
		if (c->line_len < sizeof c->line)
			c->line[c->line_len++] = ch;
	}
}

/* raw body bytes (after the head); returns 1 when the body ended, -1 on a framing error */
static int
body_raw(struct conn *c, const char *p, size_t n, uint64_t now)
{
	if (n && !c->got_body) {
		c->got_body = 1;
		c->t_body = now;
	}
	if (c->body_mode == BM_CLOSE) {
		body_bytes(c, p, n, now);
		return 0;
	}
	if (c->body_mode == BM_LENGTH) {
		size_t take = n < c->remaining ? n : (size_t)c->remaining;
		body_bytes(c, p, take, now);
		c->remaining -= take;
		return c->remaining == 0 ? 1 : 0; /* extra bytes after the body are ignored */
	}
	size_t i = 0;
	while (i < n) {
		switch (c->ck) {
		case CK_LINE: {
			char ch = p[i++];
			if (ch == '\n') {
				c->ckline[c->ckline_len] = 0;
				char *end;
				unsigned long long sz = strtoull(c->ckline, &end, 16);
				if (end == c->ckline)
					return -1;
				c->ckline_len = 0;
				if (sz == 0) {
					c->ck = CK_TRAILER;
					c->trailer_len = 0;
				} else {
					c->remaining = sz;
					c->ck = CK_DATA;
				}
			} else if (c->ckline_len < sizeof c->ckline - 1) {
				c->ckline[c->ckline_len++] = ch;
			} else {
				return -1;
			}
			break;
		}
		case CK_DATA: {
			size_t take = n - i < c->remaining ? n - i : (size_t)c->remaining;
			body_bytes(c, p + i, take, now);
			i += take;
			c->remaining -= take;
			if (!c->remaining)
				c->ck = CK_CRLF;
			break;
		}
		case CK_CRLF:
			if (p[i++] == '\n')
				c->ck = CK_LINE;
			break;
		case CK_TRAILER: {
			char ch = p[i++];
			if (ch == '\n') {
				if (c->trailer_len == 0)
					return 1;
				c->trailer_len = 0;
			} else if (ch != '\r') {
				c->trailer_len++;
			}
			break;
		}
		}
	}
	return 0;
}

static int
hdr_is(const char *line, size_t n, const char *name, const char **val, size_t *vlen)
{
	size_t k = strlen(name);
	if (n <= k || strncasecmp(line, name, k) || line[k] != ':')
		return 0;
	const char *v = line + k + 1, *e = line + n;
	while (v < e && (*v == ' ' || *v == '\t'))
		v++;
	while (e > v && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
		e--;
	*val = v;
	*vlen = (size_t)(e - v);
	return 1;
}

/* parses c->head[0..end): 0 ok, -1 bad */
static int
parse_head(struct conn *c, size_t end)
{
	const char *h = c->head;
	if (end < 12 || memcmp(h, "HTTP/1.", 7))
		return -1;
	int minor = h[7] - '0';
	c->keepalive = minor >= 1;
	c->status = atoi(h + 9);
	if (c->status < 100 || c->status > 599)
		return -1;
	int have_len = 0, chunked = 0;
	const char *line = memchr(h, '\n', end);
	while (line && (size_t)(line + 1 - h) < end) {
		line++;
		const char *nl = memchr(line, '\n', end - (size_t)(line - h));
		if (!nl)
			break;
		size_t n = (size_t)(nl - line);
		const char *v;
		size_t vl;
		if (hdr_is(line, n, "content-length", &v, &vl)) {
			have_len = 1;
			c->remaining = strtoull(v, NULL, 10);
		} else if (hdr_is(line, n, "transfer-encoding", &v, &vl)) {
			if (memmem(v, vl, "chunked", 7))
				chunked = 1;
		} else if (hdr_is(line, n, "connection", &v, &vl)) {
			if (vl >= 5 && memmem(v, vl, "close", 5))
				c->keepalive = 0;
			else if (memmem(v, vl, "keep-alive", 10))
				c->keepalive = 1;
		}
		line = nl;
	}
	if (chunked)
		c->body_mode = BM_CHUNKED;
	else if (have_len)
		c->body_mode = BM_LENGTH;
	else
		c->body_mode = BM_CLOSE;
	if (c->status == 204 || c->status == 304 || (c->status >= 100 && c->status < 200)) {
		c->body_mode = BM_LENGTH;
		c->remaining = 0;
	}
	return 0;
}

static char rbuf[1 << 16];

static void
on_readable(struct conn *c, uint64_t now)
{
	for (;;) {
		ssize_t r = recv(c->fd, rbuf, sizeof rbuf, 0);
		if (r < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return;
			if (errno == EINTR)
				continue;
			if (c->active && c->state == ST_BODY && c->body_mode == BM_CLOSE) {
				response_done(c, now);
				close_conn(c);
			} else {
				fail(c, E_IO);
			}
			return;
		}
		if (r == 0) {
			if (c->active && c->state == ST_BODY && c->body_mode == BM_CLOSE) {
				response_done(c, now);
				close_conn(c);
			} else if (c->active) {
				fail(c, E_EOF);
			} else {
				close_conn(c); /* an idle keep-alive connection closed by the server */
			}
			return;
		}
		if (!c->active) {
			close_conn(c); /* bytes nobody asked for */
			return;
		}
		const char *p = rbuf;
		size_t n = (size_t)r;
		if (c->state == ST_SENDING) {
			/* an early answer (an error before the body was read): take it as the head */
			c->state = ST_HEAD;
			ep_set(c, EPOLLIN, EPOLL_CTL_MOD);
		}
		if (c->state == ST_HEAD) {
			size_t room = sizeof c->head - c->head_len;
			size_t take = n < room ? n : room;
			size_t scan_from = c->head_len > 3 ? c->head_len - 3 : 0;
			memcpy(c->head + c->head_len, p, take);
			c->head_len += take;
			char *e = memmem(c->head + scan_from, c->head_len - scan_from, "\r\n\r\n", 4);
			if (!e) {
				if (c->head_len == sizeof c->head) {
					show(E_PARSE, "head too long", c->head, c->head_len);
					fail(c, E_PARSE);
					return;
				}
				continue;
			}
			size_t hend = (size_t)(e + 4 - c->head);
			if (parse_head(c, hend) < 0) {
				char what[96];
				snprintf(what, sizeof what, "bad head (request %d on the connection; the previous answer: %d)",
					 c->nreq, c->prev_status);
				show(E_PARSE, what, c->head, hend);
				fail(c, E_PARSE);
				return;
			}
			if (c->status == 100) { /* skip an interim 100 Continue */
				memmove(c->head, c->head + hend, c->head_len - hend);
				c->head_len -= hend;
				continue;
			}
			/* the body bytes that came with the head */
			size_t consumed_before = c->head_len - take; /* head bytes from earlier reads */
			size_t off = hend - consumed_before;
			p += off;
			n -= off;
			c->state = ST_BODY;
			if (c->body_mode == BM_LENGTH && c->remaining == 0) {
				response_done(c, now);
				if (c->fd < 0 || !c->active)
					return;
				continue;
			}
		}
		if (c->state == ST_BODY && n) {
			int rc = body_raw(c, p, n, now);
			if (rc < 0) {
				char what[128];
				snprintf(what, sizeof what, "bad chunk size line after %s, this read (%zu bytes)",
					 c->got_content ? "content" : "no content", n);
				show(E_PARSE, what, p, n);
				fail(c, E_PARSE);
				return;
			}
			if (rc > 0) {
				response_done(c, now);
				if (c->fd < 0)
					return;
			}
		}
	}
}

static void
on_writable(struct conn *c, uint64_t now)
{
	if (c->state == ST_CONNECTING) {
		int err = 0;
		socklen_t l = sizeof err;
		getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
		st.connecting--;
		if (err) {
			c->state = ST_IDLE;
			close_conn(c);
			st.errors[E_CONNECT]++;
			return;
		}
		push(&st.connect, now - c->t_connect);
		c->state = ST_SENDING;
		start_request(c, now);
		return;
	}
	if (c->state == ST_SENDING)
		try_send(c);
}

static void
try_send(struct conn *c)
{
	while (c->sent < request_len) {
		ssize_t w = send(c->fd, request + c->sent, request_len - c->sent, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				ep_set(c, EPOLLIN | EPOLLOUT, EPOLL_CTL_MOD);
				return;
			}
			if (errno == EINTR)
				continue;
			/* a reused keep-alive connection the server just closed: not the request's fault
			 * when nothing was sent yet, but counted anyway (wrk counts these too) */
			fail(c, E_IO);
			return;
		}
		c->sent += (size_t)w;
	}
	c->state = ST_HEAD;
	ep_set(c, EPOLLIN, EPOLL_CTL_MOD);
}

/* ---------------------------------------------------------------------------------------- */

static void
raise_nofile(int need)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
		getrlimit(RLIMIT_NOFILE, &rl);
	}
	if (rl.rlim_cur != RLIM_INFINITY && (long)rl.rlim_cur < need)
		die("%d connections need %d file descriptors; the limit is %ld (raise ulimit -n)",
		    opt.conns, need, (long)rl.rlim_cur);
}

static void
report(uint64_t t_end)
{
	finish_series(&st.ttfb);
	finish_series(&st.ttft);
	finish_series(&st.gap);
	finish_series(&st.latency);
	finish_series(&st.connect);
	long errors = 0;
	for (int i = 0; i < E_N; i++)
		errors += st.errors[i];
	double window = opt.duration;
	if (t_end < t_stop) /* ended early: -n reached */
		window = (double)(t_end - (t_warm < t_end ? t_warm : t_end)) / 1e6;
	double rps = window > 0 ? (double)st.ok_in_window / window : 0;
	long measured = (long)st.latency.n;

	FILE *h = opt.kv ? stderr : stdout;
	char statuses[512] = "";
	size_t sl = 0;
	for (int s = 100; s < 600; s++)
		if (st.status_count[s] && sl < sizeof statuses - 32)
			sl += (size_t)snprintf(statuses + sl, sizeof statuses - sl, "%s%d:%ld", sl ? "," : "", s,
					       st.status_count[s]);
	fprintf(h, "ssebench %s:%d%s  %s  c=%d  warm-up %.1fs + %.1fs  (%.1fs in all)\n", opt.host, opt.port,
		opt.path, opt.sync ? "sync" : "stream", opt.conns, opt.warmup, opt.duration, (t_end - t0) / 1e6);
	fprintf(h, "  requests   %ld ok (%ld measured), %ld errors", st.completed_ok, measured, errors);
	if (errors) {
		fputs(" (", h);
		int first = 1;
		for (int i = 0; i < E_N; i++)
			if (st.errors[i]) {
				fprintf(h, "%s%s %ld", first ? "" : ", ", err_names[i], st.errors[i]);
				first = 0;
			}
		fputs(")", h);
	}
	fprintf(h, "\n  statuses   %s\n", sl ? statuses : "-");
	fprintf(h, "  rate       %.1f req/s\n", rps);
	fprintf(h, "  connect ms p50 %.2f  p99 %.2f  (%ld connects)\n", pct(&st.connect, 50), pct(&st.connect, 99),
		st.connects);
	if (opt.sync) {
		fprintf(h, "  latency ms p50 %.3f  p99 %.3f  max %.3f\n", pct(&st.latency, 50), pct(&st.latency, 99),
			st.latency.max / 1000.0);
	} else {
		fprintf(h, "  ttfb ms    p50 %.3f  p99 %.3f\n", pct(&st.ttfb, 50), pct(&st.ttfb, 99));
		fprintf(h, "  ttft ms    p50 %.3f  p99 %.3f\n", pct(&st.ttft, 50), pct(&st.ttft, 99));
		fprintf(h, "  gap ms     p50 %.3f  p99 %.3f  max %.3f  (%ld gaps)\n", pct(&st.gap, 50), pct(&st.gap, 99),
			st.gap_max / 1000.0, st.gaps_total);
		if (opt.stall_ms > 0)
			fprintf(h, "  stalled    %ld gaps > %g ms\n", st.stalls, opt.stall_ms);
		fprintf(h, "  stream ms  p50 %.3f  p99 %.3f  max %.3f\n", pct(&st.latency, 50), pct(&st.latency, 99),
			st.latency.max / 1000.0);
	}
	if (!opt.kv)
		return;
	printf("mode=%s\nconns=%d\nok=%ld\nmeasured=%ld\nerrors=%ld\n", opt.sync ? "sync" : "stream", opt.conns,
	       st.completed_ok, measured, errors);
	for (int i = 0; i < E_N; i++)
		printf("err_%s=%ld\n", err_names[i], st.errors[i]);
	printf("statuses=%s\nrps=%.1f\n", sl ? statuses : "-", rps);
	printf("lat_p50=%.3f\nlat_p99=%.3f\nlat_max=%.3f\n", pct(&st.latency, 50), pct(&st.latency, 99),
	       st.latency.max / 1000.0);
	printf("ttfb_p50=%.3f\nttfb_p99=%.3f\n", pct(&st.ttfb, 50), pct(&st.ttfb, 99));
	printf("ttft_p50=%.3f\nttft_p99=%.3f\n", pct(&st.ttft, 50), pct(&st.ttft, 99));
	printf("gap_p50=%.3f\ngap_p99=%.3f\ngap_max=%.3f\ngaps=%ld\nstalls=%ld\n", pct(&st.gap, 50),
	       pct(&st.gap, 99), st.gap_max / 1000.0, st.gaps_total, st.stalls);
}

static volatile sig_atomic_t interrupted;
static void
on_signal(int sig)
{
	(void)sig;
	interrupted = 1;
}

int
main(int argc, char **argv)
{
	parse_args(argc, argv);
	raise_nofile(opt.conns + 32);
	resolve();
	build_request();
	signal(SIGPIPE, SIG_IGN);
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);

	conns = calloc((size_t)opt.conns, sizeof *conns);
	if (!conns)
		die("out of memory");
	for (int i = 0; i < opt.conns; i++)
		conns[i].fd = -1;
	epfd = epoll_create1(EPOLL_CLOEXEC);
	if (epfd < 0)
		die("epoll_create1: %s", strerror(errno));

	t0 = now_us();
	t_warm = t0 + (uint64_t)(opt.warmup * 1e6);
	t_stop = t_warm + (uint64_t)(opt.duration * 1e6);
	t_hard = t0 + (uint64_t)(opt.max_time * 1e6);
	uint64_t last_scan = t0, t_end = t0;
	int next_open = 0; /* round-robin start for the connect ramp */
	struct epoll_event evs[512];

	for (;;) {
		uint64_t now = now_us();
		if (interrupted && !stopping) {
			stopping = 1;
			t_hard = now; /* end at once */
		}
		if (!stopping && !may_start(now))
			stopping = 1;
		/* open connections, at most --connect-burst in progress at once */
		if (!stopping && st.open < opt.conns) {
			for (int k = 0; k < opt.conns && st.connecting < opt.burst; k++) {
				struct conn *c = &conns[(next_open + k) % opt.conns];
				if (c->fd < 0) {
					open_conn(c, now);
					if (!may_start(now))
						break;
				}
			}
			next_open = (next_open + 1) % opt.conns;
		}
		/* the end: nothing in flight after the stop, or the hard limit */
		if (stopping && st.inflight == 0 && st.connecting == 0) {
			t_end = now;
			break;
		}
		if (now >= t_hard) {
			for (int i = 0; i < opt.conns; i++)
				if (conns[i].fd >= 0 && conns[i].active)
					st.errors[E_UNFINISHED]++;
			t_end = now;
			break;
		}
		int nev = epoll_wait(epfd, evs, 512, 20);
		if (nev < 0 && errno != EINTR)
			die("epoll_wait: %s", strerror(errno));
		now = now_us();
		for (int i = 0; i < nev; i++) {
			struct conn *c = evs[i].data.ptr;
			if (c->fd < 0)
				continue;
			uint32_t e = evs[i].events;
			if ((e & EPOLLOUT) || (c->state == ST_CONNECTING && (e & (EPOLLERR | EPOLLHUP))))
				on_writable(c, now);
			if (c->fd >= 0 && c->state != ST_CONNECTING && (e & (EPOLLIN | EPOLLERR | EPOLLHUP)))
				on_readable(c, now);
		}
		/* timeouts, and idle connections after the stop */
		if (now - last_scan >= 20000) {
			last_scan = now;
			for (int i = 0; i < opt.conns; i++) {
				struct conn *c = &conns[i];
				if (c->fd < 0)
					continue;
				if ((c->active || c->state == ST_CONNECTING) && now >= c->deadline) {
					if (c->state == ST_CONNECTING) {
						st.errors[E_CONNECT]++;
						close_conn(c);
					} else {
						static const char *const names[] = { "idle", "connecting", "sending",
										     "waiting for the head", "in the body" };
						char what[160];
						snprintf(what, sizeof what, "%s after %.0f ms (status %d, %s, request %d on the connection)",
							 names[c->state], (now - c->t_start) / 1000.0, c->status,
							 c->got_content ? "after content" : c->got_body ? "body begun" : "no body",
							 c->nreq);
						show(E_TIMEOUT, what, c->head, c->head_len);
						fail(c, E_TIMEOUT);
					}
				} else if (!c->active && c->state != ST_CONNECTING && stopping) {
					close_conn(c);
				}
			}
		}
	}
	for (int i = 0; i < opt.conns; i++)
		close_conn(&conns[i]);
	report(t_end);
	return 0;
}
