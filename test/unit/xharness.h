/*
 * xharness.h — an exchange without a loop or libcurl, for the adapter conformance suites
 * (test_gemini.c, test_ollama.c, test_azure.c): a client request, a provider of one type, a
 * capture sink; encode a request, or replay a recorded answer through exchange_upstream_head /
 * exchange_feed / exchange_upstream_done exactly as libcurl would deliver it, and compare what
 * the client received byte for byte.
 */
#ifndef XHARNESS_H
#define XHARNESS_H

#include "adapters/adapter.h"

/* What the client received. */
struct capture {
	char  *text;       /* every byte written (heads not included), NUL-terminated */
	size_t len, cap;
	int    status;     /* the head's status, 0 if none */
	char   ctype[64];
	char   headers[512];
	int    ends;       /* sink end() calls */
};

struct xh {
	struct exchange     x;
	struct arena        arena;
	struct config       cfg;
	struct chat_req     req;
	struct cfg_provider prov;
	struct target       target;
	struct capture      cap;
	char               *body;   /* the client's request (malloc'd copy) */
};

/* Set an exchange up: provider `type` named `pname`, the target's model, the client's request
 * (public model from its "model"). 0, or -1 if the request does not parse. The chunk id and
 * `created` are fixed: chatcmpl-test, 1700000000. */
int  xh_setup(struct xh *h, const struct adapter *a, enum provider_type type, const char *pname,
              const char *model, const char *request);
/* Encode: the URL, the headers (one per line) and the body. */
int  xh_encode(struct xh *h, char **url, char **headers, char **body);
/* Replay an answer: head(status), the bytes in pieces (cut > 0: [0,cut) then the rest; step > 0:
 * step bytes at a time; both 0: whole), then done(ok). */
void xh_replay(struct xh *h, long status, const char *s, size_t n, size_t cut, size_t step);
/* Release everything the exchange took (as the connection's gone() would) and the arena. */
void xh_teardown(struct xh *h);

/* One recorded answer checked at every feeding: whole, cut in two at every byte, one byte at a
 * time — as written, and with CRLF line ends if crlf. Each run must give exactly want (and the
 * status, when want_status is nonzero). Stops at the first run that differs. */
void xh_check_replay(const struct adapter *a, enum provider_type type, const char *request, long status,
                     const char *s, size_t n, int crlf, const char *want, int want_status);

/* The exact chunks emit_openai.c writes for a client that named its model "gem". */
#define XH_HEAD "{\"id\":\"chatcmpl-test\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gem\""
#define XH_DELTA(d) "data: " XH_HEAD ",\"choices\":[{\"index\":0,\"delta\":" d ",\"logprobs\":null,\"finish_reason\":null}]}\n\n"
#define XH_ROLE XH_DELTA("{\"role\":\"assistant\",\"content\":\"\"}")
#define XH_TEXT(t) XH_DELTA("{\"content\":\"" t "\"}")
#define XH_REASONING(t) XH_DELTA("{\"reasoning_content\":\"" t "\"}")
#define XH_TOOL(i, id, name) XH_DELTA("{\"tool_calls\":[{\"index\":" #i ",\"id\":\"" id "\",\"type\":\"function\"," \
	"\"function\":{\"name\":\"" name "\",\"arguments\":\"\"}}]}")
#define XH_ARGS(i, a) XH_DELTA("{\"tool_calls\":[{\"index\":" #i ",\"function\":{\"arguments\":\"" a "\"}}]}")
#define XH_FINISH(r) "data: " XH_HEAD ",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"" r "\"}]}\n\n"
#define XH_USAGE(p, c, t, k) "data: " XH_HEAD ",\"choices\":[],\"usage\":{\"prompt_tokens\":" #p ",\"completion_tokens\":" \
	#c ",\"total_tokens\":" #t ",\"prompt_tokens_details\":{\"cached_tokens\":" #k "}}}\n\n"
#define XH_DONE "data: [DONE]\n\n"
#define XH_INTERRUPTED(msg) "data: {\"error\":{\"message\":\"" msg "\",\"type\":\"upstream_error\",\"param\":null," \
	"\"code\":\"stream_interrupted\"}}\n\n"
/* A whole chat.completion: message is the message object's members after "role". */
#define XH_WHOLE(message, finish, usage) "{\"id\":\"chatcmpl-test\",\"object\":\"chat.completion\",\"created\":1700000000," \
	"\"model\":\"gem\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\"," message "},\"logprobs\":null," \
	"\"finish_reason\":\"" finish "\"}]" usage "}"
#define XH_WHOLE_USAGE(p, c, t, k) ",\"usage\":{\"prompt_tokens\":" #p ",\"completion_tokens\":" #c ",\"total_tokens\":" #t \
	",\"prompt_tokens_details\":{\"cached_tokens\":" #k "}}"
/* An error answer before the commit point. */
#define XH_ERROR(msg, code) "{\"error\":{\"message\":\"" msg "\",\"type\":\"upstream_error\",\"param\":null,\"code\":" code "}}"

/* A request translation row: the client's request in, the provider's URL, headers and body out
 * — or, when want_status is nonzero, the 400 the client gets, with its exact message. */
struct xrow {
	const char *name;
	const char *model;      /* the target's model; NULL: the suite's default */
	const char *request;
	const char *url;        /* NULL: not checked */
	const char *headers;    /* NULL: not checked */
	const char *body;
	int         want_status;
	const char *want_msg;
};
void xh_check_rows(const struct adapter *a, enum provider_type type, const char *model,
                   const struct xrow *rows, size_t n, const char *suite);

/* Client requests for replays: a stream with usage asked for, one without, a whole answer. */
#define XH_STREAM_REQ "{\"model\":\"gem\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"stream\":true," \
	"\"stream_options\":{\"include_usage\":true}}"
#define XH_STREAM_REQ_NO_USAGE "{\"model\":\"gem\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"stream\":true}"
#define XH_WHOLE_REQ "{\"model\":\"gem\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}"

/* A recorded answer (test/fixtures/file, or body when file is NULL) and what the client gets. */
struct xanswer {
	const char *file;
	const char *body;
	const char *request;
	long        status;      /* the provider's */
	int         want_status; /* the client's */
	const char *want;
};
void xh_check_answers(const struct adapter *a, enum provider_type type, const struct xanswer *answers, size_t n,
                      const char *suite);

char *xh_slurp(const char *path, size_t *n);   /* malloc'd, NUL-terminated; NULL if unreadable */
const char *xh_printable(const char *s, size_t n);
size_t xh_in_use(void);

#endif
