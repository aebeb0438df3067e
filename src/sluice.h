/*
 * sluice — the one private header. Every module's types and prototypes are listed here under
 * the name of the file that defines them, in the order a request meets them, so reading this
 * file is reading the architecture (DESIGN.md §2).
 */
#ifndef SLUICE_H
#define SLUICE_H

#include <stdarg.h>
#include <stddef.h>
#include <sys/uio.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* A well-mixed 64-bit value from a counter (ids: request ids, completion ids). */
static inline uint64_t
splitmix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

/* log.c — diagnostics and the one-line-per-request log, to stderr, plain or JSON. */
void log_set_format(int json);
int  log_is_json(void);
void log_timestamp(char *out, size_t len);
void log_msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* version.c */
void version_print(FILE *out);

/* tls.c — the CA trust store handed to libcurl as a blob (CURLOPT_CAINFO_BLOB). */
struct tls_ca {
	const char *pem;
	size_t      len;
	const char *source; /* "embedded" or the file's path, for logs */
};
int  tls_ca_load(struct tls_ca *ca, const char *file, char *err, size_t errlen);
void tls_ca_free(struct tls_ca *ca);
int  tls_ca_count(const struct tls_ca *ca);

/*
 * mem.c — the whole process's memory: one reservation made at start (mmap of [server] memory
 * bytes), managed as a buddy system of fixed-size blocks (the idea of SQLite's mem5): every
 * allocation is a power-of-two run of blocks, freed in O(log n), never growing the reservation.
 * When it is exhausted an allocation returns NULL and is counted as a refusal; callers answer
 * 503. Debug builds (SLUICE_DEBUG) poison memory on alloc and free.
 */
#define MEM_BLOCK 64 /* the smallest allocation unit, bytes */
#define MEM_SMALL_MAX 48  /* exact allocations up to this come from slabs, in 16-byte steps */
struct mem_stats {
	size_t   reserved;    /* bytes under management */
	size_t   in_use;      /* bytes handed out (rounded to their runs or slab objects) */
	size_t   high_water;  /* the most in_use has been */
	uint64_t refusals;    /* allocations that found no room */
	uint64_t allocs;      /* allocations served, ever */
};
int    mem_init(size_t bytes, char *err, size_t errlen);
void   mem_shutdown(void);
void  *mem_alloc(size_t n);
void  *mem_calloc(size_t nmemb, size_t size);
void  *mem_realloc(void *p, size_t n);
void   mem_free(void *p);
char  *mem_strdup(const char *s);
size_t mem_usable(const void *p);
/* The same, rounded up to a block (64 bytes) instead of a power of two: for libcurl. */
void  *mem_alloc_exact(size_t n);
void  *mem_calloc_exact(size_t nmemb, size_t size);
void  *mem_realloc_exact(void *p, size_t n);
char  *mem_strdup_exact(const char *s);
size_t mem_largest(void);
void   mem_trim(void);     /* the run cache back into the pool */
void   mem_get_stats(struct mem_stats *st);
int    mem_owns(const void *p);

/*
 * arena.c — a request's memory: chunks taken from mem and chained, bump-allocated, all given
 * back by one arena_release() when the request ends (nginx's pool). No per-object free.
 */
struct arena_chunk;
struct arena {
	struct arena_chunk *head;
	size_t              used;  /* bytes used in head */
	size_t              total; /* bytes of all chunks, for limits and logs */
};
void  arena_init(struct arena *a);
void *arena_alloc(struct arena *a, size_t n);          /* 16-byte aligned; NULL if memory is short */
char *arena_strndup(struct arena *a, const char *s, size_t n);
char *arena_cat(struct arena *a, ...) __attribute__((sentinel)); /* strings up to NULL, joined */
void  arena_release(struct arena *a);

/*
 * buf.c — a byte buffer with a cap fixed at birth. It grows (from mem) as needed but never past
 * its cap: appending past the cap fails with BUF_FULL, a failed allocation with BUF_NOMEM, and
 * the caller decides (413, 431, backpressure, 503). curl's dynbuf idea.
 */
enum { BUF_OK = 0, BUF_FULL = -1, BUF_NOMEM = -2 };
struct buf {
	char  *data;
	size_t len;  /* bytes held */
	size_t size; /* bytes allocated */
	size_t max;  /* the cap */
};
void buf_init(struct buf *b, size_t max);
int  buf_reserve(struct buf *b, size_t extra);           /* room for extra more bytes */
int  buf_append_grow(struct buf *b, const void *p, size_t n); /* buf_append when it must grow */
/* Appending is on every path that writes JSON: the common case (room already there) inline. */
static inline __attribute__((always_inline)) int
buf_append(struct buf *b, const void *p, size_t n)
{
	if (n > b->size - b->len)
		return buf_append_grow(b, p, n);
	if (n > 0)
		memcpy(b->data + b->len, p, n);
	b->len += n;
	return BUF_OK;
}
static inline __attribute__((always_inline)) int buf_puts(struct buf *b, const char *s) { return buf_append(b, s, strlen(s)); }
int  buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int  buf_vprintf(struct buf *b, const char *fmt, va_list ap);
void buf_consume(struct buf *b, size_t n);               /* drop n bytes from the front */
void buf_reset(struct buf *b);                           /* len = 0, keeps the memory */
void buf_free(struct buf *b);
char *u64_dec(char out[21], uint64_t v);                  /* NUL-terminated, in out */
void  u64_hex(char out[16], uint64_t v);                  /* 16 hex digits, no NUL */

/* Eight bytes at p as a little-endian word: the byte at p is then the lowest, whatever the
 * machine (json.c's key comparisons, first16 without SSE2). */
static inline __attribute__((always_inline)) uint64_t
load_le64(const void *p)
{
	uint64_t w;

	memcpy(&w, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	w = __builtin_bswap64(w);
#endif
	return w;
}

/* Sixteen bytes as a vector (GCC's vector extensions: SSE2 on x86_64, NEON on aarch64), for
 * scans sixteen bytes at a time: a comparison gives -1 in each byte where it holds, else 0. */
typedef signed char bytes16 __attribute__((vector_size(16)));

static inline __attribute__((always_inline)) bytes16
load16(const void *p)
{
	bytes16 v;

	memcpy(&v, p, 16);
	return v;
}

/* -1 in the bytes from the k-th on (k <= 16), 0 before: m & from16(k) leaves out m's first k. */
static inline __attribute__((always_inline)) bytes16
from16(size_t k)
{
	static const signed char t[32] = { [16] = -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1 };

	return load16(t + 16 - k);
}

/* The index of the first byte of m that is -1, or 16 if none is. */
static inline __attribute__((always_inline)) size_t
first16(bytes16 m)
{
#ifdef __SSE2__
	typedef char v16qi __attribute__((vector_size(16))); /* the builtin's own type */
	unsigned b = (unsigned)__builtin_ia32_pmovmskb128((v16qi)m);

	return (size_t)__builtin_ctz(b | 1u << 16); /* 16 when b is 0: no branch */
#else
	uint64_t lo = load_le64(&m), hi = load_le64((const char *)&m + 8);

	return lo ? (size_t)__builtin_ctzll(lo) >> 3 : hi ? 8 + ((size_t)__builtin_ctzll(hi) >> 3) : 16;
#endif
}

/*
 * config.c — the INI config (DESIGN.md §1), parsed once at start into an immutable struct.
 * Strings point into the config's own storage. Durations are milliseconds, sizes bytes.
 */
enum provider_type { PROVIDER_OPENAI, PROVIDER_ANTHROPIC, PROVIDER_GEMINI, PROVIDER_OLLAMA, PROVIDER_AZURE };
enum route_policy { POLICY_COST, POLICY_SPEED, POLICY_BALANCED };
enum log_format { LOG_PLAIN, LOG_JSON };

/*
 * Failure classes (DESIGN.md §4): every failed attempt is put in exactly one, once. The first
 * FAIL_NCLASSES are the ones `fallback_on` can name; cfg_chain.fallback_on is a bit set over
 * them (1u << FAIL_x), 0 meaning the router's default set. The rest are decided the same way
 * but are never a reason to try elsewhere (the client's own error) or happen after the commit.
 */
enum fail_class {
	FAIL_CONNECT, FAIL_TLS, FAIL_TIMEOUT_HEAD, FAIL_TIMEOUT_FIRST_TOKEN,
	FAIL_408, FAIL_409, FAIL_429, FAIL_500, FAIL_502, FAIL_503, FAIL_504, FAIL_529,
	FAIL_AUTH, FAIL_MALFORMED, FAIL_CLOSED,
	FAIL_NCLASSES,
	FAIL_CLIENT = FAIL_NCLASSES, /* 400, 404, 422: the request itself is wrong */
	FAIL_OTHER_4XX,
	FAIL_TOO_LARGE,              /* a response over max_response_body */
	FAIL_TIMEOUT_IDLE,           /* a gap between chunks over timeout_idle */
	FAIL_TIMEOUT_TOTAL,
	FAIL_PROVIDER,               /* an error event inside a stream */
	FAIL_NOMEM,                  /* the gateway's own memory ran out: not the provider's fault */
};

struct cfg_provider {
	const char        *name;
	enum provider_type type;
	const char        *base_url;
	const char        *api_key;         /* may be "" (local servers) */
	const char        *api_version;     /* azure */
	const char        *ca_file;         /* "" = the embedded bundle */
	const char       **headers;         /* extra "Name: value" lines */
	int                nheaders;
	uint32_t           timeout_connect, timeout_first_byte, timeout_idle, timeout_total; /* ms */
	size_t             max_response_body;
	int                default_max_tokens;
	int                line;
};

struct cfg_target {
	const struct cfg_provider *provider;
	const char                *model;   /* the provider's own model name */
};

/* [model.NAME] and [route.NAME] share their chain settings. */
struct cfg_chain {
	const char        *name;            /* the public name clients ask for */
	int                is_route;
	enum route_policy  policy;          /* routes only */
	struct cfg_target *targets;
	int                ntargets;
	int                retries;
	int                max_attempts;
	uint32_t           fallback_on;     /* bit set of failure classes; 0 = the default set */
	uint32_t           deadline;        /* ms */
	uint32_t           backoff_base, backoff_max; /* ms */
	double             weight_cost, weight_speed;
	uint32_t           prior_ttft;      /* ms */
	double             prior_tps;
	int                tools, images;   /* capabilities: 1 yes, 0 no, -1 not declared */
	int                line;
};

struct cfg_price {
	const char *target;                 /* "provider/model" */
	double      input, output;          /* USD per 1M tokens */
	int         line;
};

struct cfg_server {
	const char     *listen;             /* "ADDR:PORT" as written */
	char            host[64];
	int             port;
	size_t          memory;
	int             max_connections;
	size_t          max_request_body;
	size_t          max_header;
	uint32_t        header_timeout, idle_timeout, drain_timeout, stream_heartbeat; /* ms */
	const char    **api_keys;
	int             napi_keys;
	enum log_format log_format;
	int             breaker_failures;
	uint32_t        breaker_cooldown;   /* ms */
};

struct config {
	const char          *source;        /* the file read, or "embedded default" */
	struct cfg_server    server;
	struct cfg_provider *providers;
	int                  nproviders;
	struct cfg_chain    *models;
	int                  nmodels;
	struct cfg_chain    *routes;
	int                  nroutes;
	struct cfg_price    *prices;
	int                  nprices;
	void                *storage;       /* owned memory, freed by config_free */
};

/* Every error is written to errs as "FILE:LINE: message\n"; returns NULL if there was any. */
struct config *config_load_file(const char *path, struct buf *errs);
struct config *config_load_string(const char *text, const char *name, struct buf *errs);
struct config *config_default(struct buf *errs);  /* the embedded default, from the environment */
void           config_free(struct config *cfg);
/* Replace [server] listen (the --listen flag); -1 with a message in errs if it is malformed. */
int            config_set_listen(struct config *cfg, const char *listen, struct buf *errs);
void           config_summary(const struct config *cfg, FILE *out);
const struct cfg_provider *config_provider(const struct config *cfg, const char *name, size_t len);
const struct cfg_chain    *config_model(const struct config *cfg, const char *name, size_t len);
const struct cfg_chain    *config_route(const struct config *cfg, const char *name, size_t len);
/* Parsers shared with the tests; 0 on success, -1 on a bad value. */
int config_parse_size(const char *s, size_t *out);       /* "64M", "512K", "1G", "4096" */
int config_parse_duration(const char *s, uint32_t *ms);  /* "5s", "250ms", "10m", "1h" */
/* Expand ${VAR} and ${VAR:-default} from the environment into out. -1 and a message on error. */
int config_expand_env(const char *in, struct buf *out, char *err, size_t errlen);

/*
 * loop.c — one thread, one epoll wait: fd watches, one-shot timers in a heap, tick hooks, signals
 * through a self-pipe (DESIGN.md §6).
 */
enum { LOOP_READ = 1, LOOP_WRITE = 2, LOOP_ERROR = 4 };
typedef void loop_fd_fn(int fd, unsigned events, void *ud);
typedef void loop_timer_fn(void *ud);
typedef void loop_tick_fn(void *ud);
typedef void loop_signal_fn(int sig, void *ud);
struct timer {
	uint64_t       when; /* loop_now() ms at which it fires */
	int            idx;  /* heap index, -1 when not armed */
	loop_timer_fn *fn;
	void          *ud;
};
int      loop_init(int fd_capacity);
int      loop_capacity(void);
int      loop_watch(int fd, unsigned events, loop_fd_fn *fn, void *ud);
void     loop_unwatch(int fd);
void     loop_parkable(int fd);  /* the caller will loop_forget(fd) before it closes fd */
void     loop_park(int fd);      /* unwatch, but a parkable fd stays registered (see loop.c) */
void     loop_forget(int fd);    /* fd is being closed */
void     loop_timer_init(struct timer *t);
int      loop_timer_set(struct timer *t, uint64_t ms, loop_timer_fn *fn, void *ud);
void     loop_timer_cancel(struct timer *t);
int      loop_timer_armed(const struct timer *t);
int      loop_on_tick(loop_tick_fn *fn, void *ud);
void     loop_wake(void);
int      loop_signals(loop_signal_fn *fn, void *ud);
void     loop_run(void);
void     loop_stop(void);
uint64_t loop_now(void);       /* ms, monotonic, updated once per iteration */
uint64_t loop_clock_ms(void);  /* ms, monotonic, read now */

/* http.c — HTTP/1.1 request parsing on llhttp; the head as spans into the read buffer. */
#include <llhttp.h>
#define HTTP_MAX_HEADERS 100
enum { REQ_IDLE = 0, REQ_HEAD, REQ_BODY, REQ_DONE };
struct span {
	uint32_t off, len;
};
struct http_header {
	struct span name, value;
};
struct http_req {
	llhttp_t           parser;
	const char        *base;        /* the read buffer the spans point into */
	int                state;       /* REQ_IDLE .. REQ_DONE */
	struct span        target;
	struct http_header *headers;    /* grown as they arrive (8, 16, … HTTP_MAX_HEADERS), freed per request */
	int                nheaders, cap_headers;
	int                in_value;
	int                keep_alive, expect_continue, chunked, has_length;
	uint64_t           content_length;
	struct buf         body;
	size_t             max_header, max_body;
	size_t             trailer_len; /* bytes of trailer fields, held to max_header */
	int                err_status;  /* set when parsing failed: 400, 413, 431, 503 */
	const char        *err_code, *err_msg;
};
void        http_req_init(struct http_req *r, size_t max_header, size_t max_body);
void        http_req_next(struct http_req *r);
void        http_req_free(struct http_req *r);
int         http_parse(struct http_req *r, const char *data, size_t len, size_t *pos);
int         http_header(const struct http_req *r, const char *name, struct span *out);
const char *http_method_name(const struct http_req *r);
int         http_method_is(const struct http_req *r, const char *name);
struct span http_path(const struct http_req *r);
const char *http_status_text(int status);
#define SPAN_EQ(base, sp, lit) ((sp).len == sizeof(lit) - 1 && memcmp((base) + (sp).off, lit, sizeof(lit) - 1) == 0)

/*
 * conn.c — client connections: accept, read, parse, answer, keep-alive, limits, drain. The
 * answer is written through conn_reply/conn_error (whole responses) or, for streams, through
 * the conn's sink (next issue).
 */
struct conn;
struct conn_stats {
	int      open;      /* connections open now */
	uint64_t accepted;  /* ever */
	uint64_t refused;   /* answered 503 at accept (max_connections or memory) */
	uint64_t requests;  /* requests answered */
};
int   conn_listen(const struct config *cfg, char *err, size_t errlen);
void  conn_drain(uint32_t timeout_ms);
int   conn_draining(void);
void  conn_get_stats(struct conn_stats *st);
const struct http_req *conn_req(const struct conn *c);
struct arena *conn_arena(struct conn *c);
const char *conn_request_id(const struct conn *c);
void  conn_reply(struct conn *c, int status, const char *ctype, const char *headers,
                 const char *body, size_t len);
/* An error in OpenAI's envelope; headers: extra "Name: value\r\n" lines or NULL. */
void  conn_error_hdr(struct conn *c, int status, const char *headers, const char *type,
                     const char *code, const char *param, const char *fmt, ...)
                     __attribute__((format(printf, 7, 8)));
#define conn_error(c, status, type, code, param, ...) \
	conn_error_hdr(c, status, NULL, type, code, param, __VA_ARGS__)

/*
 * sse.c — an incremental parser for text/event-stream (WHATWG rules, FORMATS.md §0.1): line
 * ends CRLF, LF or a lone CR (a CR and its LF may arrive in different reads); ':' comments;
 * 'data' lines joined with '\n'; one optional space after the colon; 'event' names; an event
 * still pending at the end of the stream is delivered by sse_finish(). A non-standard 'error:'
 * line (legacy llama.cpp) is delivered as an event named "error". Zero-copy where it can be:
 * an event of one data line whose bytes all arrived in one read is handed over in place;
 * others are copied, into buffers capped at max_event. A nonzero result is sticky: later calls
 * return it. sse_free() releases the buffers and leaves p as sse_init() made it (the framing
 * kept). With sse_init_ndjson() (or p->ndjson set before the first byte) the same line splitter
 * frames NDJSON instead (Ollama, FORMATS.md §0.2): every line that is not blank is one event, its
 * data the whole line, its name "" — in place when the line lies in one read, like SSE data.
 */
struct sse_event {
	const char *event;  /* the 'event' field, "" if none */
	size_t      event_len;
	const char *data;   /* the joined 'data' lines */
	size_t      data_len;
	char       *joined; /* data itself when it joined several lines (their '\n's between them),
	                     * in the parser's own buffer, which the callback may change in place;
	                     * else NULL */
};
/* Return 0 to go on, nonzero to stop parsing (sse_feed returns that value). */
typedef int sse_event_fn(void *ud, const struct sse_event *ev);
struct sse {
	struct buf line;      /* a line split across reads */
	struct buf data;      /* an event's data when it cannot stay in place */
	char       event[64];
	size_t     event_len;
	const char *data_at;  /* in-place data of the pending event, in the current chunk */
	size_t     data_n;
	int        ndata;     /* data lines seen in the pending event */
	int        skip_lf;   /* the last chunk ended in CR: a leading LF belongs to it */
	int        started;   /* the first line (which may open with a BOM) has been seen */
	int        err;       /* sticky: once nonzero, feed and finish return it */
	int        ndjson;    /* NDJSON framing (sse_init_ndjson): every non-blank line is an event */
	size_t     max_event;
};
enum { SSE_TOO_LARGE = -1, SSE_NOMEM = -2 };
void sse_init(struct sse *p, size_t max_event);
void sse_init_ndjson(struct sse *p, size_t max_event);
int  sse_feed(struct sse *p, const char *chunk, size_t len, sse_event_fn *fn, void *ud);
int  sse_finish(struct sse *p, sse_event_fn *fn, void *ud);
void sse_free(struct sse *p);

/*
 * upstream.c — HTTP to providers through one libcurl multi handle on our loop. A transfer
 * reports its head, its body in pieces (which may pause it: backpressure) and its end, with
 * the failure class and a message when it failed. Our own timers bound each phase.
 */
#include <curl/curl.h>
enum { UPSTREAM_PAUSE = 1 };
struct upstream_result {
	int             ok;
	int             aborted;  /* ended by our own on_head/on_data returning < 0 */
	enum fail_class cls;
	char            msg[256];
};
struct upstream;
struct upstream_cb {
	int  (*on_head)(void *ud, struct upstream *u);      /* < 0 ends the transfer */
	int  (*on_data)(void *ud, const char *p, size_t n); /* 0, UPSTREAM_PAUSE, or < 0 to end */
	void (*on_done)(void *ud, const struct upstream_result *r);
};
struct upstream_req {
	const struct cfg_provider *provider;
	const char                *url;
	struct curl_slist         *headers; /* owned by the transfer from here on */
	const char                *body;
	size_t                     body_len;
	const struct tls_ca       *ca;      /* NULL: the process's trust store */
};
struct upstream {
	CURL                     *easy;     /* NULL when not running */
	const struct upstream_cb *cb;
	void                     *ud;
	struct curl_slist        *hdrs;
	struct parsed_url        *url;      /* its parsed URL, or NULL (libcurl parsed the string) */
	long                      status;
	int                       head_done, paused, resume_queued;
	uint64_t                  t_start, t_last;
	uint32_t                  to_first_byte, to_idle, to_total;
	struct timer              timer;
	char                      retry_after[48];
	char                      content_type[96];
	char                      errbuf[CURL_ERROR_SIZE];
	struct upstream          *next_resume;
};
int  upstream_init(const struct config *cfg, char *err, size_t errlen);
const struct tls_ca *upstream_ca_for(const struct cfg_provider *p);
int  upstream_start(struct upstream *u, const struct upstream_req *req, const struct upstream_cb *cb, void *ud);
void upstream_resume(struct upstream *u);
void upstream_abort(struct upstream *u);
void header_value(const char *p, size_t len, char *out, size_t outlen);

/*
 * The sink: how an asynchronous producer (the exchange) answers through a connection. The conn
 * frames and queues what it is given; when its queue has drained it calls handler->drained;
 * when the request is over — answered, or the client gone — it calls handler->gone, before the
 * request's memory is released.
 */
struct conn_handler {
	void (*drained)(void *ud);
	void (*gone)(void *ud);
};
void   conn_set_handler(struct conn *c, const struct conn_handler *h, void *ud);
int    conn_sink_head(struct conn *c, int status, const char *ctype, const char *headers, int64_t len);
int    conn_sink_write(struct conn *c, const struct iovec *parts, int nparts);
int    conn_sink_borrow(struct conn *c, const char *p, size_t n);
void   conn_sink_end(struct conn *c);
size_t conn_sink_queued(const struct conn *c);

/* A sink as the exchange sees it: a vtable, so the same exchange can answer a connection or,
 * later, an async request with no connection at all (DESIGN.md §2). */
struct sink_ops {
	int    (*head)(void *o, int status, const char *ctype, const char *headers, int64_t len);
	int    (*write)(void *o, const struct iovec *parts, int nparts);
	int    (*borrow)(void *o, const char *p, size_t n);
	void   (*end)(void *o);
	size_t (*queued)(const void *o);
};
struct sink {
	const struct sink_ops *ops;
	void                  *o;
};
struct sink conn_sink(struct conn *c);

/* api.c — the endpoints: routing by path and method, client auth, JSON checks. */
void api_init(const struct config *cfg, uint64_t started_ms);
void api_dispatch(struct conn *c);

/* json.c — reading JSON as jsmn's tokens over the bytes, and writing it escaped. */
#ifndef JSMN_H
#define JSMN_HEADER /* the token type; jsmn's parser itself is the unit tests' reference */
#include <jsmn.h>
#endif
struct json {
	const char *src;
	jsmntok_t  *tok;
	const int  *next; /* json_parse_buf's skip links (a container's next sibling), or NULL */
	int         ntok;
};
int  json_valid(const char *s, size_t n);                          /* strict RFC 8259 */
int  json_parse(struct json *j, struct arena *a, const char *src, size_t len);
int  json_parse_buf(struct json *j, struct buf *store, const char *src, size_t len);
int  json_findn(const struct json *j, int obj, const char *key, size_t n); /* value token, or -1 */
int  json_skip(const struct json *j, int i);                      /* index after token i's subtree */
int  json_eqn(const struct json *j, int i, const char *s, size_t n);
struct json_key { /* made with JSON_KEY only: a key without its bit is never matched */
	const char *s;
	size_t      n;
	uint64_t    bit; /* 1 << (n mod 64), json_fields' filter on lengths: made when compiled */
};
#define JSON_KEY(lit) { lit, sizeof lit - 1, 1ull << ((sizeof lit - 1) & 63) }
void json_fields(const struct json *j, int obj, const struct json_key *keys, int nkeys, int *vals);
/* Keys are literals: inline, their lengths are known when compiled. */
static inline __attribute__((always_inline)) int json_find(const struct json *j, int obj, const char *key) { return json_findn(j, obj, key, strlen(key)); }
static inline __attribute__((always_inline)) int json_eq(const struct json *j, int i, const char *s) { return json_eqn(j, i, s, strlen(s)); }
int  json_is_null(const struct json *j, int i);
int  json_eq_literal(const struct json *j, int i, const char *lit);
size_t json_skip_end(const char *s, size_t from, size_t len);
int  json_escape(struct buf *b, const char *s, size_t n);         /* appends "s", quoted */
int  json_error(struct buf *b, const char *msg, size_t msglen, const char *type, const char *code,
                const char *param);
size_t json_unescape(const char *s, size_t n, char *out, size_t outlen);

#endif
