/*
 * xlate.h — helpers shared by the adapters that translate the OpenAI request into another
 * provider's dialect (gemini.c, ollama.c): a JSON writer over a capped buf with a sticky error,
 * walks over the client's request, tool-call names found back from their ids, data: URLs,
 * and parameters a provider cannot honour.
 *
 * Everything is read from the client's bytes (x->req->j) and written into the request body
 * buffer: strings are copied as they sit in the client's JSON (escapes and all), never decoded
 * and encoded again; only the few values whose meaning matters (a data: URL's header, a tool
 * call's arguments) are decoded.
 */
#ifndef XLATE_H
#define XLATE_H

#include "adapter.h"

/* A JSON writer: every call after the first failure does nothing; err keeps that failure
 * (BUF_FULL, BUF_NOMEM). */
struct jw {
	struct buf *b;
	int         err;
};
/* A translated body may be larger than the client's (the exchange caps it at the client's
 * length + 1 KiB): raise the cap to 4 × len + 16 KiB. The buffer still grows only as needed. */
void xl_body_cap(struct buf *body, size_t len);
/* The end of encoding: 0, or -1 — a 400 if the cap was reached, nothing set (so the exchange
 * answers 503) if memory was short. */
int  xl_written(struct exchange *x, const struct jw *w);
void jw_raw(struct jw *w, const char *s, size_t n);
void jw_puts(struct jw *w, const char *s);
void jw_tok(struct jw *w, const struct json *j, int t);        /* a value as the client wrote it */
void jw_tok_str(struct jw *w, const struct json *j, int t);    /* a string token, quoted as written */
void jw_str(struct jw *w, const char *s, size_t n);            /* plain text, escaped and quoted */
void jw_printf(struct jw *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Token t, a JSON string holding JSON text (a tool call's arguments, a tool's result), written
 * decoded as the JSON value it holds. Returns 1 if it was a JSON object, 0 if it was some other
 * valid value, -1 if it was no valid JSON (then nothing is written: the buffer is as before).
 * An empty string writes `{}` and counts as an object. */
int  jw_json_in_string(struct jw *w, const struct json *j, int t, int want_object);

/* Token helpers over any parsed document; a token index of -1 (json_find's "absent") is safe. */
/* A string token equal to s; inline so that a literal's length is known when compiled. */
static inline __attribute__((always_inline)) int xl_eq(const struct json *j, int t, const char *s) { return t >= 0 && json_eq(j, t, s); }
int  xl_is_str(const struct json *j, int t);                   /* a string token */
int  xl_nonempty(const struct json *j, int t);                 /* a non-empty string token */
int  xl_present(const struct json *j, int t);                  /* present and not null */
int  xl_is_true(const struct json *j, int t);
long xl_long(const struct json *j, int t);                     /* a number token, or 0 */
/* A token count from a provider: xl_long kept to [0, 2^40] (a trillion: past any real count,
 * and a few of them add up without overflowing a long). */
long xl_count(const struct json *j, int t);
int  xl_elem(const struct json *j, int arr, int k);            /* element k of array arr, or -1 */
const char *xl_src(const struct json *j, int t);               /* where token t's text starts */
size_t      xl_len(const struct json *j, int t);

/* The request as sluice reads it. */
int  xl_messages(const struct exchange *x);                    /* the messages array token */
/* The message's text, written as the contents of one JSON string: string content, or the text
 * (and refusal) parts of an array joined with "\n". 1 if any text was written, 0 if none, -1
 * (and x->fail: 400) if a part is something else — image_url parts are skipped if images_ok
 * (the caller translates them). what names the message ("system", …) in the error. */
int  xl_text_content(struct exchange *x, struct jw *w, int msg, const char *what, int images_ok);
/* The name token of the tool call `id` (the tool message's tool_call_id token) in the nearest
 * assistant message before message index `before`, or -1. */
int  xl_tool_name(const struct exchange *x, int before, int id);

/* An image_url part's URL: a data: URL split into its MIME type and its base64 data. */
struct image {
	int         is_data;         /* data:…;base64,… */
	char        mime[96];        /* decoded: data: URLs, or guessed from a URL's extension ("" if unknown) */
	const char *data;            /* data: the base64 as written (JSON-escaped) */
	size_t      data_len;
	int         url;             /* the url token */
};
int  xl_image(struct exchange *x, int part, struct image *img, int msg);

/* 400 for the client: the parameter and the provider named. Returns -1. */
int  xl_unsupported(struct exchange *x, const char *param, const char *why);
/* The parameters no translated provider honours (n > 1, logprobs, logit_bias, audio, …). */
int  xl_check_common(struct exchange *x);
/* A request body that is not what OpenAI accepts: 400. Returns -1. */
int  xl_invalid(struct exchange *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The max_completion_tokens or max_tokens token, or -1. */
int  xl_max_tokens(const struct exchange *x);

/* The URL-path form of s (unreserved bytes as they are, the rest %XX), in the arena. */
const char *xl_path_escape(struct arena *a, const char *s);
/* The common headers of a JSON POST (Content-Type, Accept, no Expect), the provider's extra
 * headers, and `auth` first if not NULL. NULL when memory is short. */
struct curl_slist *xl_headers(struct exchange *x, const char *auth, const char *accept);

/* In-stream or whole-answer failure with the provider named. Returns -1. */
int  xl_fail_provider(struct exchange *x, enum fail_class cls, int status, const char *msg);

#endif
