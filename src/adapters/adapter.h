/*
 * adapter.h — what a provider adapter is, and the part of the exchange it may touch.
 *
 * An adapter turns the client's OpenAI request into the provider's (URL, headers, body) and
 * turns what the provider answers back into OpenAI's shape, through a few calls on the
 * exchange: xc_chunk() for each chat.completion.chunk of a stream (with flags saying whether it
 * carries content — the commit point — or only usage), xc_usage(), xc_stream_end() when the
 * provider's own end marker arrives, xc_body() for a whole response, and xc_fail() for an error
 * inside a 200. The exchange owns everything else: the commit point, holding the preamble,
 * stripping usage the client did not ask for, timeouts, backpressure, the error contract.
 */
#ifndef ADAPTER_H
#define ADAPTER_H

#include "sluice.h"

struct exchange;

/* A failure as the client and the router see it. */
struct failure {
	enum fail_class cls;
	int             status;        /* what the client gets before the commit point */
	const char     *type, *code;   /* OpenAI envelope fields (static strings) */
	char            ptype[48];     /* the provider's own error type and code, if it gave them */
	char            pcode[64];
	char            msg[400];
	char            retry_after[48];
};

/* How a provider's stream is cut into frames (the exchange sets its parser up from it). */
enum framing { FRAMING_SSE, FRAMING_NDJSON };

struct adapter {
	const char *name;
	enum framing framing;      /* FRAMING_SSE (0) unless set */
	/* The stream must end with the provider's own end marker (message_stop, done:true, …); a
	 * finish reason alone is not enough. OpenAI-compatible servers: [DONE] or a finish. */
	int          end_marker;
	/* Build the upstream request: URL, headers and body (into body, capped). */
	int  (*encode)(struct exchange *x, struct upstream_req *req, struct buf *body);
	/* One streamed frame: an SSE event (NDJSON adapters get each line as data). */
	int  (*stream_event)(struct exchange *x, const struct sse_event *ev);
	/* Optional: the provider's stream ended cleanly (EOF), before the exchange checks its end —
	 * for providers whose end marker is a finish that usage may still follow (Gemini). */
	int  (*stream_done)(struct exchange *x);
	/* The whole body of a successful non-streamed answer. */
	int  (*response)(struct exchange *x, const char *p, size_t n);
	/* An answer with an error status: fill f (class, status, message). */
	void (*error)(struct exchange *x, long status, const char *p, size_t n, struct failure *f);
};

extern const struct adapter adapter_openai;
extern const struct adapter adapter_anthropic;
extern const struct adapter adapter_gemini;
extern const struct adapter adapter_ollama;
extern const struct adapter adapter_azure;
/* openai.c's request body (the client's with model replaced, usage asked for), for azure.c. */
int openai_encode_body(struct exchange *x, struct buf *body);

/* The client's request, checked by api.c and read by adapters. */
struct chat_req {
	const char *body;
	size_t      len;
	struct json j;
	int         model;         /* token of the model value */
	int         stream;        /* the client asked for a stream */
	int         stream_options;/* token of the stream_options object, or -1 */
	int         include_usage; /* the client asked for usage in its stream */
};

/* One target of the plan: a provider and the provider's own name for the model. */
struct target_stats;
struct target {
	const struct cfg_provider *provider;
	const char                *model;
	const struct adapter      *adapter;
	const struct tls_ca       *ca;       /* the provider's ca_file, or NULL */
	struct target_stats       *stats;    /* breaker and speed figures; NULL if untracked */
	double                     score;    /* the route's ranking, lower first */
};

/* router.c — the attempt chain, computed before anything is sent (DESIGN.md §4). */
struct plan {
	struct target          *targets;
	int                     ntargets;
	const struct cfg_chain *chain;       /* NULL for provider/model */
	int                     retries, max_attempts;
	uint32_t                deadline, backoff_base, backoff_max, fallback_on;
};
enum router_action { ROUTE_RETRY, ROUTE_NEXT, ROUTE_STOP };
int      router_init(const struct config *cfg);
int      router_plan(const struct config *cfg, const char *name, size_t len, const struct chat_req *req,
                     struct arena *a, struct plan *out, char *why, size_t whylen);
enum router_action router_action(const struct plan *p, enum fail_class cls);
uint64_t router_backoff(const struct plan *p, int n);
void     router_attempt_start(const struct target *t);
void     router_report(const struct target *t, int ok, enum fail_class cls);
void     router_abandon(const struct target *t);
void     router_observe(const struct target *t, uint64_t ttft_ms, long tokens, uint64_t gen_ms);

enum xstate { X_PLANNED, X_ATTEMPT, X_BACKOFF, X_COMMITTED, X_DONE, X_INTERRUPTED, X_FAILED };

/* One attempt that failed, for the answer's message and (later) the request log. */
struct attempt_rec {
	const struct target *target;
	enum fail_class      cls;
	long                 status;      /* the provider's HTTP status, 0 if none */
	char                 msg[120];
};

enum { CHUNK_CONTENT = 1, CHUNK_USAGE_ONLY = 2, CHUNK_FINISH = 4 };

struct usage {
	long prompt, completion, cached;
	int  seen;
};

/* emit_openai.c's state for one exchange. All zero is the start: the id and `created` are made on
 * first use and kept for the exchange (a test may set them first); the rest is per attempt,
 * cleared by emit_release(). The buffers are used for a whole (non-streamed) answer only. */
#define EMIT_MAX_TOOLS 128
struct emit_state {
	char        id[40];                     /* "chatcmpl-…" */
	char        created[24];                /* unix seconds, as digits */
	size_t      head_len;                   /* a stream's chunk head (id, object, created, model), at scratch's start; 0: not built */
	int         role_sent;                  /* stream: the role chunk went */
	int         ntools;                     /* tool calls started */
	int         ended;                      /* emit_end() ran */
	const char *finish;                     /* the finish reason, once given */
	struct buf  content, reasoning, tools;  /* whole: the message as it accumulates */
	/* Per tool call, EMIT_MAX_TOOLS of each, from the arena at the first call (most answers
	 * have none: 1.5 KiB of every exchange otherwise). */
	size_t     *args_end;                   /* whole: where each call's arguments end in tools */
	int        *key;                        /* a decoder's own number for each call (Anthropic: its block index) */
};

struct exchange {
	struct sink            sink;
	struct arena          *arena;
	const struct config   *cfg;
	const struct chat_req *req;
	const char            *public_model;   /* "name" as the client wrote it, quotes included */
	size_t                 public_model_len;
	struct plan            plan;
	const struct target   *target;         /* plan.targets[ti] */
	int                    ti, tries;      /* the target, and attempts made on it */
	int                    attempts;       /* in all */
	struct attempt_rec    *failed;         /* the failed attempts, in order */
	int                    nfailed;
	struct timer           retry_timer, deadline_timer;
	uint64_t               deadline_at, t_attempt, t_first;
	enum xstate            state;
	struct upstream        up;
	struct buf             up_body;        /* the request bytes sent upstream */
	struct sse             sse;
	struct buf             resp;           /* a whole answer, or an error body */
	struct buf             held;           /* events held before the commit point */
	struct buf             toks;           /* jsmn tokens for one chunk, reused */
	struct buf             scratch;        /* one rewritten event, reused; only emit_openai.c writes it (a stream's chunk head stays at its start) */
	int                    saw_end, saw_finish;
	int                    head_sent;      /* the stream's head went (heartbeats or commit) */
	struct timer           heartbeat;
	struct usage           usage;
	struct emit_state      em;             /* emit_openai.c */
	struct failure         fail;
	uint64_t               t_start;
};

/* For adapters. */
int  xc_chunk(struct exchange *x, const struct iovec *parts, int nparts, unsigned flags);
void xc_usage(struct exchange *x, long prompt, long completion, long cached);
void xc_stream_end(struct exchange *x);
int  xc_body(struct exchange *x, const struct iovec *parts, int nparts);
int  xc_fail(struct exchange *x, enum fail_class cls, int status, const char *code, const char *fmt, ...)
     __attribute__((format(printf, 5, 6)));
int  xc_json(struct exchange *x, struct json *j, const char *p, size_t n);
/* The provider's error status → the status the client gets, and the failure class. */
void xc_classify_status(long status, struct failure *f);
void xc_error_message(const char *p, size_t n, struct failure *f);
void xc_error_default(struct exchange *x, long status, const char *p, size_t n, struct failure *f);

/*
 * emit_openai.c — canonical events → OpenAI's shapes (DESIGN.md §2). Decoders of providers that
 * do not speak OpenAI call these. In a stream each event becomes one chat.completion.chunk (via
 * xc_chunk, with the right flags for the commit point); for a whole answer the events
 * accumulate and emit_end() writes one chat.completion (via xc_body). The role chunk is emitted
 * by the emitter itself before the first delta. Strings are passed as JSON string *contents*,
 * already escaped, exactly as they sit in the provider's JSON: text is copied, never decoded
 * and encoded again. OpenAI's tool-call index counts tool calls only, from 0, in the order they
 * start, whatever the provider's own block numbering; the id and name go on a call's first
 * delta only. Usage comes from x->usage (xc_usage) and is emitted by emit_end.
 */
int emit_text(struct exchange *x, const char *s, size_t n);
int emit_reasoning(struct exchange *x, const char *s, size_t n);
/* Start a tool call; returns its OpenAI index (0, 1, …) or < 0 on failure. */
int emit_tool_start(struct exchange *x, const char *id, size_t idn, const char *name, size_t namen);
int emit_tool_args(struct exchange *x, int index, const char *s, size_t n);        /* escaped fragment */
int emit_tool_args_json(struct exchange *x, int index, const char *json, size_t n); /* a whole JSON value */
/* reason: "stop", "length", "tool_calls" or "content_filter". */
int emit_finish(struct exchange *x, const char *reason);
/* The end: a stream gets its usage chunk (when the client asked); a whole answer is written. */
int emit_end(struct exchange *x);
/* Forget the attempt (its buffers, tool calls, role chunk); the id and `created` stay. */
void emit_release(struct exchange *x);

/* exchange.c — one request's life: attempt, commit point, outcome (DESIGN.md §3). */
extern const struct conn_handler exchange_handler;
int  exchange_run(struct exchange *x, const struct plan *plan);
/* The same steps without libcurl, for tests and replays of recorded answers. */
void exchange_prepare(struct exchange *x);
int  exchange_upstream_head(struct exchange *x, long status);
int  exchange_feed(struct exchange *x, const char *p, size_t n);
void exchange_upstream_done(struct exchange *x, const struct upstream_result *r);

#endif
