/*
 * test_sse.c — the text/event-stream parser. Every stream, from the table, generated near the
 * size cap, or recorded (the .sse files in test/fixtures), is fed whole, cut in two at every
 * byte, and one byte at a time, with LF, CRLF and CR line ends; the events must be the same
 * every time (the big fixture: 100 cuts; CR fixtures: every 7th cut, to keep qemu quick). Each
 * piece is fed from its own malloc'd copy, overwritten and freed as soon as sse_feed returns,
 * so a parser that keeps pointing into a chunk delivers garbage (or, under ASan, crashes).
 * Then zero-copy (in-place data, no allocation) and running out of memory.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "sluice.h"
#include "unit.h"

#define STOP    7    /* what a stopping callback returns */
#define DEF_MAX 4096 /* max_event when a row gives 0 */

struct ev {
	const char *event, *data;
};

/* What the callback saw: each event rendered as  event 0x1f data 0x1e. */
struct rec {
	char     *text;
	size_t    len, cap;
	int       n;        /* events */
	int       stop_at;  /* return STOP from this event on (1-based); 0: never */
	uintptr_t lo, hi;   /* the chunk being fed */
	int       in_place; /* events whose data lay inside it */
};

static size_t
in_use(void)
{
	struct mem_stats st;

	mem_get_stats(&st);
	return st.in_use;
}

static uint64_t
allocs(void)
{
	struct mem_stats st;

	mem_get_stats(&st);
	return st.allocs;
}

static void
put(struct rec *r, const char *s, size_t n)
{
	if (n == 0)
		return;
	if (r->len + n > r->cap) {
		r->cap = (r->len + n) * 2 + 64;
		r->text = realloc(r->text, r->cap);
		if (r->text == NULL)
			abort();
	}
	memcpy(r->text + r->len, s, n);
	r->len += n;
}

static void
render(struct rec *r, const char *event, size_t elen, const char *data, size_t dlen)
{
	put(r, event, elen);
	put(r, "\x1f", 1);
	put(r, data, dlen);
	put(r, "\x1e", 1);
	r->n++;
}

static void
render_list(struct rec *r, const struct ev *list)
{
	for (; list->data != NULL; list++)
		render(r, list->event, strlen(list->event), list->data, strlen(list->data));
}

static int
record(void *ud, const struct sse_event *ev)
{
	struct rec *r = ud;
	uintptr_t d = (uintptr_t)ev->data;

	/* joined: the data itself exactly when it joined lines, i.e. when it holds a '\n' (one
	 * line never does). */
	if (ev->event == NULL || ev->data == NULL || ev->event[ev->event_len] != '\0' ||
	    (ev->joined != NULL) != (memchr(ev->data, '\n', ev->data_len) != NULL) ||
	    (ev->joined != NULL && ev->joined != ev->data))
		render(r, "BAD", 3, "", 0);
	else
		render(r, ev->event, ev->event_len, ev->data, ev->data_len);
	if (ev->data_len > 0 && d >= r->lo && d < r->hi)
		r->in_place++;
	return r->stop_at > 0 && r->n >= r->stop_at ? STOP : 0;
}

static void
rec_reset(struct rec *r, int stop_at)
{
	r->len = 0;
	r->n = 0;
	r->stop_at = stop_at;
	r->in_place = 0;
	r->lo = r->hi = 0;
}

/* The i-th event's rendering, or NULL. */
static const char *
nth(const struct rec *r, int i, size_t *n)
{
	const char *s = r->text, *end = r->text + r->len, *e;

	for (; s < end; s = e + 1, i--) {
		e = memchr(s, '\x1e', (size_t)(end - s));
		if (i == 0) {
			*n = (size_t)(e - s) + 1;
			return s;
		}
	}
	return NULL;
}

/* Feed n bytes from a copy that is spoiled and freed as soon as sse_feed returns. */
static int
feed_copy(struct sse *p, struct rec *r, const char *s, size_t n)
{
	char *c = malloc(n ? n : 1);
	int rc;

	if (c == NULL)
		abort();
	memcpy(c, s, n);
	r->lo = (uintptr_t)c;
	r->hi = r->lo + n;
	rc = sse_feed(p, c, n, record, r);
	memset(c, '#', n);
	free(c);
	r->lo = r->hi = 0;
	return rc;
}

/* How a run went, beyond the events. */
struct outcome {
	int rc;
	int sticky; /* a second sse_finish returned rc and delivered nothing */
	int freed;  /* mem in_use back to 0 after sse_free */
};

/*
 * Feed s in pieces (step > 0: step bytes at a time; else [0, cut) then [cut, len)), an empty
 * chunk after each, until a nonzero return; then sse_finish, twice, and sse_free.
 */
static int ndjson; /* the framing run() sets the parser up with: SSE, or NDJSON when set */

static struct outcome
run(struct rec *r, const char *s, size_t len, size_t max, size_t cut, size_t step)
{
	struct outcome o = { 0, 0, 0 };
	struct sse p;
	size_t at = 0, end;
	int n;

	if (ndjson)
		sse_init_ndjson(&p, max);
	else
		sse_init(&p, max);
	while (o.rc == 0 && at < len) {
		end = step ? (len - at < step ? len : at + step) : (at < cut ? cut : len);
		o.rc = feed_copy(&p, r, s + at, end - at);
		if (o.rc == 0)
			o.rc = feed_copy(&p, r, s + end, 0);
		at = end;
	}
	if (o.rc == 0)
		o.rc = sse_finish(&p, record, r);
	n = r->n;
	o.sticky = sse_finish(&p, record, r) == o.rc && r->n == n;
	sse_free(&p);
	o.freed = in_use() == 0;
	return o;
}

static const char *
printable(const char *s, size_t n)
{
	static char out[2][400];
	static int k;
	char *o = out[k++ % 2], *w = o;

	for (size_t i = 0; i < n && w < o + sizeof out[0] - 5; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c >= 0x20 && c < 0x7f && c != '\\')
			*w++ = (char)c;
		else
			w += snprintf(w, 5, "\\x%02x", c);
	}
	*w = '\0';
	return o;
}

static int
same(const struct rec *a, const struct rec *b)
{
	return a->len == b->len && (a->len == 0 || memcmp(a->text, b->text, a->len) == 0);
}

/* The feedings in order: 0 whole, then cuts 1, 1 + stride, ... below len, then len + 1. */
static size_t
next_cut(size_t cut, size_t len, size_t stride)
{
	if (cut == 0 || cut >= len)
		return cut + 1;
	return cut + stride < len ? cut + stride : len + 1;
}

/*
 * Check one stream at every feeding; want holds the rendered events expected, want_rc the
 * result. Stops at the first failing feeding.
 */
static void
check_feedings(const char *s, size_t len, size_t max, int stop_at, int want_rc,
               const struct rec *want, size_t cut_stride)
{
	struct rec r = { 0 };
	struct outcome o;
	char how[64];

	for (size_t cut = 0; cut <= len + 1; cut = next_cut(cut, len, cut_stride)) {
		rec_reset(&r, stop_at);
		if (cut == 0) { /* 0: whole; len+1: byte by byte; between: cut in two */
			snprintf(how, sizeof how, "whole");
			o = run(&r, s, len, max, len, 0);
		} else if (cut == len + 1) {
			snprintf(how, sizeof how, "byte by byte");
			o = run(&r, s, len, max, 0, 1);
		} else {
			snprintf(how, sizeof how, "cut at %zu", cut);
			o = run(&r, s, len, max, cut, 0);
		}
		if (o.rc != want_rc || !same(&r, want)) {
			CHECKF(0, "%s: rc %d (want %d), %d events (want %d): got \"%s\", want \"%s\"", how,
			       o.rc, want_rc, r.n, want->n, printable(r.text, r.len),
			       printable(want->text, want->len));
			break;
		}
		if (!CHECKF(o.sticky, "%s: a second sse_finish was not %d with no event", how, want_rc) ||
		    !CHECKF(o.freed, "%s: %zu bytes still in use after sse_free", how, in_use()))
			break;
	}
	free(r.text);
}

enum { LF, CRLF, CR };
static const char *const ending_name[] = { "LF", "CRLF", "CR" };

/* s with its LFs made into `ending`, malloc'd; *n its length. */
static char *
with_endings(const char *s, size_t len, int ending, size_t *n)
{
	char *o = malloc(2 * len + 1), *w = o;

	if (o == NULL)
		abort();
	for (size_t i = 0; i < len; i++) {
		if (s[i] != '\n' || ending == LF) {
			*w++ = s[i];
		} else {
			*w++ = '\r';
			if (ending == CRLF)
				*w++ = '\n';
		}
	}
	*n = (size_t)(w - o);
	return o;
}

struct row {
	const char *name;
	const char *stream; /* LF line ends; the other endings are made from it */
	int         raw;    /* holds its own CRs: fed only as written */
	size_t      max;    /* max_event; 0: DEF_MAX */
	int         stop_at;
	int         rc;
	struct ev   ev[6];  /* expected, ending at data == NULL */
};

static void
check_row(const struct row *row)
{
	struct rec want = { 0 };
	size_t len;

	render_list(&want, row->ev);
	for (int e = LF; e <= (row->raw ? LF : CR); e++) {
		char *s = with_endings(row->stream, strlen(row->stream), e, &len);

		unit_case("sse %s (%s)", row->name, row->raw ? "as written" : ending_name[e]);
		check_feedings(s, len, row->max ? row->max : DEF_MAX, row->stop_at, row->rc, &want, 1);
		free(s);
	}
	free(want.text);
}

#define LONG70 "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijklmnopqr"

static const struct row rows[] = {
	/* Framing and fields */
	{ "one event", "data: hello\n\n", 0, 0, 0, 0, { { "", "hello" }, { 0 } } },
	{ "two events", "data: a\n\ndata: b\n\n", 0, 0, 0, 0, { { "", "a" }, { "", "b" }, { 0 } } },
	{ "multi-line data", "data: a\ndata: b\ndata: c\n\n", 0, 0, 0, 0, { { "", "a\nb\nc" }, { 0 } } },
	/* Line ends are found eight bytes at a time by "a byte below 0x0E": the other such bytes (and
	 * high bytes whose low bits are CR or LF) at every offset of a word are not line ends. */
	{ "control and high bytes inside lines", "data: a\tb\x0b" "c\x0c" "d\x01" "e\x8d\x8a\xc3\xa9" "fgh\tij\t\t\t\t\t\t\t\tk\n"
	  "data: \x8a\x8d\x8a\x8d\x8a\x8d\x8a\x8dz\n\n", 0, 0, 0, 0,
	  { { "", "a\tb\x0b" "c\x0c" "d\x01" "e\x8d\x8a\xc3\xa9" "fgh\tij\t\t\t\t\t\t\t\tk\n\x8a\x8d\x8a\x8d\x8a\x8d\x8a\x8dz" }, { 0 } } },
	{ "no space after the colon (TGI)", "data:{\"x\":1}\n\n", 0, 0, 0, 0,
	  { { "", "{\"x\":1}" }, { 0 } } },
	{ "two spaces: only one removed", "data:  two\n\n", 0, 0, 0, 0, { { "", " two" }, { 0 } } },
	{ "trailing space kept", "data: a \n\n", 0, 0, 0, 0, { { "", "a " }, { 0 } } },
	{ "colons in the value", "data: a:b: c\n\n", 0, 0, 0, 0, { { "", "a:b: c" }, { 0 } } },
	{ "UTF-8 data", "data: \xe4\xbb\x8a\xe6\x97\xa5\xf0\x9f\x8e\x89\n\n", 0, 0, 0, 0,
	  { { "", "\xe4\xbb\x8a\xe6\x97\xa5\xf0\x9f\x8e\x89" }, { 0 } } },
	{ "keep-alive comments", ": keep-alive\n\n: OPENROUTER PROCESSING\n\ndata: x\n\n:\n\n", 0, 0, 0, 0,
	  { { "", "x" }, { 0 } } },
	{ "a comment inside an event", "data: a\n: ping\ndata: b\n\n", 0, 0, 0, 0,
	  { { "", "a\nb" }, { 0 } } },
	{ "comments only: nothing", ": a\n: b\n\n", 0, 0, 0, 0, { { 0 } } },
	{ "blank lines only: nothing", "\n\n\n", 0, 0, 0, 0, { { 0 } } },
	{ "empty stream: nothing", "", 0, 0, 0, 0, { { 0 } } },
	{ "event names (Anthropic)",
	  "event: message_start\ndata: {\"type\":\"message_start\"}\n\nevent: ping\ndata: {\"type\": \"ping\"}\n\n",
	  0, 0, 0, 0,
	  { { "message_start", "{\"type\":\"message_start\"}" }, { "ping", "{\"type\": \"ping\"}" }, { 0 } } },
	{ "event name after data", "data: 1\nevent:late\n\n", 0, 0, 0, 0, { { "late", "1" }, { 0 } } },
	{ "event name reset after each event", "event: a\ndata: 1\n\ndata: 2\n\n", 0, 0, 0, 0,
	  { { "a", "1" }, { "", "2" }, { 0 } } },
	{ "event without data dropped, name too", "event: ping\n\ndata: x\n\n", 0, 0, 0, 0,
	  { { "", "x" }, { 0 } } },
	{ "empty event name", "event:\ndata: x\n\n", 0, 0, 0, 0, { { "", "x" }, { 0 } } },
	{ "event name truncated to 63 bytes", "event: " LONG70 "\ndata: x\n\n", 0, 0, 0, 0,
	  { { "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijk", "x" }, { 0 } } },
	{ "empty data line", "data:\n\n", 0, 0, 0, 0, { { "", "" }, { 0 } } },
	{ "empty data after a space", "data: \n\n", 0, 0, 0, 0, { { "", "" }, { 0 } } },
	{ "bare field name data", "data\n\n", 0, 0, 0, 0, { { "", "" }, { 0 } } },
	{ "two empty data lines", "data:\ndata:\n\n", 0, 0, 0, 0, { { "", "\n" }, { 0 } } },
	{ "id and retry ignored", "id: 7\nretry: 1000\ndata: x\nid\n\n", 0, 0, 0, 0, { { "", "x" }, { 0 } } },
	{ "unknown fields ignored, names case-sensitive", "foo: bar\nDATA: y\ndatax: z\ndata: x\n\n",
	  0, 0, 0, 0, { { "", "x" }, { 0 } } },
	{ "BOM at the start", "\xef\xbb\xbf" "data: x\n\n", 0, 0, 0, 0, { { "", "x" }, { 0 } } },
	{ "BOM then a comment", "\xef\xbb\xbf: hi\ndata: x\n\n", 0, 0, 0, 0, { { "", "x" }, { 0 } } },
	{ "BOM elsewhere is part of the field name", "data: a\n\n\xef\xbb\xbf" "data: b\n\n", 0, 0, 0, 0,
	  { { "", "a" }, { 0 } } },

	/* The end of the stream */
	{ "last event without blank line (llama.cpp)", "data: a\n\ndata: [DONE]\n", 0, 0, 0, 0,
	  { { "", "a" }, { "", "[DONE]" }, { 0 } } },
	{ "last line without line end", "data: a\n\ndata: [DONE]", 0, 0, 0, 0,
	  { { "", "a" }, { "", "[DONE]" }, { 0 } } },
	{ "open multi-line event at the end", "event: e\ndata: 1\ndata: 2", 0, 0, 0, 0,
	  { { "e", "1\n2" }, { 0 } } },
	{ "open event without data at the end", "data: a\n\nevent: e\n", 0, 0, 0, 0,
	  { { "", "a" }, { 0 } } },

	/* The non-standard error field (legacy llama.cpp) */
	{ "error field", "data: a\n\nerror: {\"code\":500,\"message\":\"boom\"}\n\n", 0, 0, 0, 0,
	  { { "", "a" }, { "error", "{\"code\":500,\"message\":\"boom\"}" }, { 0 } } },
	{ "error field delivered at once, mid-event", "data: a\nerror: {}\ndata: b\n\n", 0, 0, 0, 0,
	  { { "error", "{}" }, { "", "a\nb" }, { 0 } } },
	{ "error field at the end, no line end", "error:oops", 0, 0, 0, 0,
	  { { "error", "oops" }, { 0 } } },

	/* Line ends as written */
	{ "mixed line ends", "data: a\r\ndata: b\rdata: c\n\r\ndata: d\r\r", 1, 0, 0, 0,
	  { { "", "a\nb\nc" }, { "", "d" }, { 0 } } },
	{ "LF then CR: two line ends", "data: a\n\rdata: b\n\n", 1, 0, 0, 0,
	  { { "", "a" }, { "", "b" }, { 0 } } },
	{ "CRLF then LF", "data: a\r\n\ndata: b\r\n\r\n", 1, 0, 0, 0, { { "", "a" }, { "", "b" }, { 0 } } },

	/* A callback that stops */
	{ "stop at the first event", "data: 1\n\ndata: 2\n\n", 0, 0, 1, STOP, { { "", "1" }, { 0 } } },
	{ "stop at the second of three", "data: 1\n\nevent: e\ndata: 2\n\ndata: 3\n\n", 0, 0, 2, STOP,
	  { { "", "1" }, { "e", "2" }, { 0 } } },
	{ "stop at an error field", "error: x\ndata: 1\n\n", 0, 0, 1, STOP, { { "error", "x" }, { 0 } } },
	{ "stop at the event sse_finish delivers", "data: 1\n\ndata: 2", 0, 0, 2, STOP,
	  { { "", "1" }, { "", "2" }, { 0 } } },

	/* The cap (max_event 8; a line may be 8 + 16) */
	{ "data exactly max", "data: 12345678\n\n", 0, 8, 0, 0, { { "", "12345678" }, { 0 } } },
	{ "data max + 1", "data: a\n\ndata: 123456789\n\ndata: b\n\n", 0, 8, 0, SSE_TOO_LARGE,
	  { { "", "a" }, { 0 } } },
	{ "joined data exactly max", "data: 1234\ndata: 567\n\n", 0, 8, 0, 0, { { "", "1234\n567" }, { 0 } } },
	{ "joined data max + 1", "data: 1234\ndata: 5678\n\n", 0, 8, 0, SSE_TOO_LARGE, { { 0 } } },
	{ "a line of exactly the line cap", ": 3456789012345678901234\ndata: x\n\n", 0, 8, 0, 0,
	  { { "", "x" }, { 0 } } },
	{ "a line past the line cap", ": 34567890123456789012345\ndata: x\n\n", 0, 8, 0, SSE_TOO_LARGE,
	  { { 0 } } },
	{ "an open line past the cap at the end", "data: a\n\n: 34567890123456789012345", 0, 8, 0,
	  SSE_TOO_LARGE, { { "", "a" }, { 0 } } },
	{ "error value max + 1", "error: 123456789\n", 0, 8, 0, SSE_TOO_LARGE, { { 0 } } },
};

/* Events near a cap of 1000 bytes, every feeding: exactly max is fine, max + 1 is not. */
static void
test_cap(void)
{
	enum { MAX = 1000 };
	static const struct {
		const char *name;
		size_t first, second; /* data bytes of a first and (if nonzero) second data line */
		int rc;
	} cases[] = {
		{ "1000-byte data line",            MAX,     0,   0 },
		{ "1001-byte data line",            MAX + 1, 0,   SSE_TOO_LARGE },
		{ "two lines joined to 1000 bytes", 499,     500, 0 },
		{ "two lines joined to 1001 bytes", 500,     500, SSE_TOO_LARGE },
	};

	for (size_t i = 0; i < NELEM(cases); i++) {
		size_t a = cases[i].first, b = cases[i].second;
		char *s = malloc(a + b + 64), *data = malloc(a + b + 2), *w = s;
		struct ev ev[3] = { { "", "first" }, { "big", data }, { 0 } };
		struct row row = { cases[i].name, s, 0, MAX, 0, cases[i].rc, { { 0 } } };

		if (s == NULL || data == NULL)
			abort();
		memset(data, 'x', a);
		if (b > 0) {
			data[a] = '\n';
			memset(data + a + 1, 'y', b);
		}
		data[a + (b ? b + 1 : 0)] = '\0';
		w += sprintf(w, "data: first\n\nevent: big\ndata: %.*s\n", (int)a, data);
		if (b > 0)
			w += sprintf(w, "data: %s\n", data + a + 1);
		strcpy(w, "\n");
		if (cases[i].rc != 0)
			ev[1].data = NULL; /* only the first is delivered */
		memcpy(row.ev, ev, sizeof ev);
		check_row(&row);
		free(s);
		free(data);
	}
}

/* Recorded streams: counts, a few exact payloads, then every feeding gives the same. */
static const struct fixture {
	const char *file;
	int         n;
	struct {
		int        i;
		struct ev  ev;
	} pick[3];
} fixtures[] = {
	{ "openai_chat_stream_text.sse", 34, {
	  { 1, { "", "{\"id\":\"chatcmpl-ABfw031mOJeYCSHe4yI2ZjOA6kMJL\",\"object\":\"chat.completion.chunk\","
	     "\"created\":1727346168,\"model\":\"gpt-4o-2024-08-06\",\"system_fingerprint\":\"fp_5050236cbd\","
	     "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"I'm\"},\"logprobs\":null,\"finish_reason\":null}]}" } },
	  { 32, { "", "{\"id\":\"chatcmpl-ABfw031mOJeYCSHe4yI2ZjOA6kMJL\",\"object\":\"chat.completion.chunk\","
	      "\"created\":1727346168,\"model\":\"gpt-4o-2024-08-06\",\"system_fingerprint\":\"fp_5050236cbd\","
	      "\"choices\":[],\"usage\":{\"prompt_tokens\":14,\"completion_tokens\":30,\"total_tokens\":44,"
	      "\"completion_tokens_details\":{\"reasoning_tokens\":0}}}" } },
	  { 33, { "", "[DONE]" } } } },
	{ "anthropic_stream_text.sse", 9, {
	  { 2, { "ping", "{\"type\": \"ping\"}" } },
	  { 7, { "message_delta", "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\","
	      "\"stop_sequence\":null},\"usage\":{\"output_tokens\":6}}" } },
	  { 8, { "message_stop", "{\"type\":\"message_stop\"}" } } } }, /* no line end: sse_finish */
	{ "gemini_stream_text.sse", 2, {
	  { 0, { "", "{\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"今日の東京の天気\"}],"
	     "\"role\": \"model\"},\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 138,"
	     "\"candidatesTokenCount\": 4,\"totalTokenCount\": 142,\"promptTokensDetails\": "
	     "[{\"modality\": \"TEXT\",\"tokenCount\": 138}]},\"modelVersion\": \"gemini-2.5-flash\","
	     "\"responseId\": \"45I2aaWZBumm2roPm8HR0Ao\"}" } } } },
	{ "anthropic_stream_midstream_error.sse", 4, {
	  { 3, { "error", "{\"type\":\"error\",\"error\":{\"details\":null,\"type\":\"overloaded_error\","
	      "\"message\":\"Overloaded\"}}" } } } },
	{ "openai_responses_stream_error.sse", 4, {
	  { 2, { "error", "{\"type\":\"error\",\"sequence_number\":2,\"error\":{\"type\":\"insufficient_quota\","
	      "\"code\":\"insufficient_quota\",\"message\":\"You exceeded your current quota, please check "
	      "your plan and billing details. For more information on this error, read the docs: "
	      "https://platform.openai.com/docs/guides/error-codes/api-errors.\",\"param\":null}}" } } } },
	{ "anthropic_stream_thinking.sse", 22, { { 21, { "message_stop", "{\"type\":\"message_stop\"}" } } } },
	{ "anthropic_stream_tool_use.sse", 15, { { 14, { "message_stop", "{\"type\":\"message_stop\"}" } } } },
	{ "gemini_stream_function_call.sse", 1, { { 0 } } },
	{ "groq_stream_tool_call.sse", 4, { { 3, { "", "[DONE]" } } } },
	{ "mistral_stream_tool_call.sse", 3, { { 2, { "", "[DONE]" } } } },
	{ "openai_chat_stream_length.sse", 5, { { 4, { "", "[DONE]" } } } },
	{ "openai_chat_stream_refusal.sse", 14, { { 13, { "", "[DONE]" } } } },
	{ "openai_chat_stream_parallel_tool_calls.sse", 26, { { 25, { "", "[DONE]" } } } },
	{ "openai_chat_stream_include_usage.sse", 304, { { 303, { "", "[DONE]" } } } },
};

static char *
slurp(const char *path, size_t *n)
{
	FILE *f = fopen(path, "rb");
	char *s = NULL;
	long size;

	if (f == NULL)
		return NULL;
	if (fseek(f, 0, SEEK_END) == 0 && (size = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
	    (s = malloc((size_t)size + 1)) != NULL)
		*n = fread(s, 1, (size_t)size, f);
	fclose(f);
	return s;
}

static void
test_fixture(const struct fixture *fx)
{
	char path[256];
	struct rec ref = { 0 }, one = { 0 };
	struct outcome o;
	size_t len = 0, n, stride;
	char *s;

	unit_case("sse fixture %s: events", fx->file);
	snprintf(path, sizeof path, "test/fixtures/%s", fx->file);
	s = slurp(path, &len);
	if (!CHECKF(s != NULL, "cannot read %s (run from the repository's root)", path))
		return;
	o = run(&ref, s, len, 1 << 20, len, 0);
	CHECKF(o.rc == 0 && o.freed, "rc %d", o.rc);
	CHECKF(ref.n == fx->n, "%d events, want %d", ref.n, fx->n);
	for (int k = 0; k < 3 && fx->pick[k].ev.data != NULL; k++) {
		const struct ev *ev = &fx->pick[k].ev;
		const char *got = nth(&ref, fx->pick[k].i, &n);

		rec_reset(&one, 0);
		render(&one, ev->event, strlen(ev->event), ev->data, strlen(ev->data));
		CHECKF(got != NULL && n == one.len && memcmp(got, one.text, n) == 0,
		       "event %d: \"%s\", want \"%s\"", fx->pick[k].i, got ? printable(got, n) : "(none)",
		       printable(one.text, one.len));
	}
	/* Every cut of the small ones with LF and CRLF, every 7th with CR; 100 of the big one. */
	for (int e = LF; e <= CR; e++) {
		char *t = with_endings(s, len, e, &n);

		stride = len > 16384 ? len / 100 : e == CR ? 7 : 1;
		unit_case("sse fixture %s: %s, cut every %zu bytes", fx->file, ending_name[e], stride);
		check_feedings(t, n, 1 << 20, 0, 0, &ref, stride);
		free(t);
	}
	free(one.text);
	free(ref.text);
	free(s);
}

/* NDJSON framing (Ollama): every line that is not blank is an event named "", its data the line. */
static const struct row nd_rows[] = {
	{ "one line", "{\"a\":1}\n", 0, 0, 0, 0, { { "", "{\"a\":1}" }, { 0 } } },
	{ "two lines, the last without its line end", "{\"a\":1}\n{\"b\":2}", 0, 0, 0, 0,
	  { { "", "{\"a\":1}" }, { "", "{\"b\":2}" }, { 0 } } },
	{ "blank and whitespace-only lines skipped", "\n  \n{\"a\":1}\n\t \n\n", 0, 0, 0, 0, { { "", "{\"a\":1}" }, { 0 } } },
	{ "SSE syntax is only data here", "data: x\n: comment\nevent: e\nerror: y\n", 0, 0, 0, 0,
	  { { "", "data: x" }, { "", ": comment" }, { "", "event: e" }, { "", "error: y" }, { 0 } } },
	{ "spaces kept inside a line", " {\"a\": 1} \n", 0, 0, 0, 0, { { "", " {\"a\": 1} " }, { 0 } } },
	{ "UTF-8 data", "\"\xe4\xbb\x8a\xf0\x9f\x8e\x89\"\n", 0, 0, 0, 0, { { "", "\"\xe4\xbb\x8a\xf0\x9f\x8e\x89\"" }, { 0 } } },
	{ "a BOM opening the stream is skipped", "\xef\xbb\xbf{}\n{}\n", 0, 0, 0, 0, { { "", "{}" }, { "", "{}" }, { 0 } } },
	{ "empty stream: nothing", "", 0, 0, 0, 0, { { 0 } } },
	{ "mixed line ends", "1\r\n2\r3\n\r\n4", 1, 0, 0, 0, { { "", "1" }, { "", "2" }, { "", "3" }, { "", "4" }, { 0 } } },
	{ "stop at the second line", "1\n2\n3\n", 0, 0, 2, STOP, { { "", "1" }, { "", "2" }, { 0 } } },
	{ "a line of exactly max", "12345678\n", 0, 8, 0, 0, { { "", "12345678" }, { 0 } } },
	{ "a line of max + 1", "1\n123456789\n2\n", 0, 8, 0, SSE_TOO_LARGE, { { "", "1" }, { 0 } } },
	{ "an open last line of max + 1", "1\n123456789", 0, 8, 0, SSE_TOO_LARGE, { { "", "1" }, { 0 } } },
};

static const struct fixture nd_fixtures[] = {
	{ "ollama_chat_stream.ndjson", 2, {
	  { 0, { "", "{\"model\":\"llama3.2\",\"created_at\":\"2023-08-04T08:52:19.385406455-07:00\",\"message\":"
	     "{\"role\":\"assistant\",\"content\":\"The\",\"images\":null},\"done\":false}" } } } },
	{ "ollama_chat_stream_tool_call.ndjson", 2, { { 0 } } },
	{ "ollama_generate_stream_midstream_error.ndjson", 5, {
	  { 4, { "", "{\"error\":\"an error was encountered while running the model\"}" } } } },
};

static void
test_ndjson(void)
{
	static const char whole[] = "{\"a\":1}\n\n{\"b\":22}\r\n{\"c\":333}\n";
	struct rec r = { 0 };
	struct sse p;
	uint64_t before;

	ndjson = 1;
	for (size_t i = 0; i < NELEM(nd_rows); i++) {
		struct row row = nd_rows[i];
		char name[96];

		snprintf(name, sizeof name, "ndjson: %s", row.name);
		row.name = name;
		check_row(&row);
	}
	for (size_t i = 0; i < NELEM(nd_fixtures); i++)
		test_fixture(&nd_fixtures[i]);
	ndjson = 0;

	unit_case("sse ndjson zero-copy: whole lines are in place, nothing allocated; sse_free keeps the mode");
	sse_init_ndjson(&p, DEF_MAX);
	before = allocs();
	CHECK(feed_copy(&p, &r, whole, sizeof whole - 1) == 0);
	CHECKF(r.n == 3 && r.in_place == 3, "%d events, %d in place", r.n, r.in_place);
	CHECKF(allocs() == before && in_use() == 0, "%llu allocations", (unsigned long long)(allocs() - before));
	sse_free(&p);
	CHECK(p.ndjson == 1);
	sse_init(&p, DEF_MAX);
	CHECK(p.ndjson == 0);
	sse_free(&p);
	free(r.text);
}

/* Whole single-line events are handed over in place, with no allocation; others are copied. */
static void
test_zero_copy(void)
{
	static const char whole[] = "data: a\n\nevent: e\ndata: bb\n\n: c\ndata:ccc\n\nid: 1\ndata: dddd\n\n";
	struct rec r = { 0 };
	struct sse p;
	uint64_t before;

	unit_case("sse zero-copy: whole single-line events are in place, nothing allocated");
	sse_init(&p, DEF_MAX);
	before = allocs();
	CHECK(feed_copy(&p, &r, whole, sizeof whole - 1) == 0);
	CHECKF(r.n == 4 && r.in_place == 4, "%d events, %d in place", r.n, r.in_place);
	CHECKF(allocs() == before && in_use() == 0, "%llu allocations, %zu bytes in use",
	       (unsigned long long)(allocs() - before), in_use());
	CHECK(sse_finish(&p, record, &r) == 0 && r.n == 4);
	sse_free(&p);

	unit_case("sse zero-copy: an event still open when the chunk ends is copied");
	rec_reset(&r, 0);
	sse_init(&p, DEF_MAX);
	CHECK(feed_copy(&p, &r, "data: a\n\ndata: xyz\n", 19) == 0);
	CHECK(feed_copy(&p, &r, "\n", 1) == 0);
	CHECKF(r.n == 2 && r.in_place == 1, "%d events, %d in place", r.n, r.in_place);
	CHECK(r.len == 8 && memcmp(r.text, "\x1f" "a\x1e\x1fxyz\x1e", 8) == 0);
	sse_free(&p);
	CHECK(in_use() == 0);

	unit_case("sse zero-copy: multi-line data is joined in a copy");
	rec_reset(&r, 0);
	sse_init(&p, DEF_MAX);
	CHECK(feed_copy(&p, &r, "data: a\ndata: b\n\n", 17) == 0);
	CHECKF(r.n == 1 && r.in_place == 0, "%d events, %d in place", r.n, r.in_place);
	sse_free(&p);
	CHECK(in_use() == 0);
	free(r.text);
}

/* With 256 KiB of memory: a 512 KiB event in one chunk still goes through, split it cannot. */
static void
test_nomem(void)
{
	enum { BIG = 512 << 10 };
	char err[256], *s = malloc(BIG + 16);
	struct rec r = { 0 };
	struct sse p;
	size_t n;

	unit_case("sse out of memory");
	if (s == NULL || !CHECKF(mem_init(256 << 10, err, sizeof err) == 0, "mem_init: %s", err)) {
		free(s);
		return;
	}
	n = (size_t)sprintf(s, "data: ");
	memset(s + n, 'x', BIG);
	n += BIG;
	memcpy(s + n, "\n\n", 2);
	n += 2;

	sse_init(&p, 1 << 20);
	CHECK(feed_copy(&p, &r, s, n) == 0);
	CHECKF(r.n == 1 && r.in_place == 1 && r.len == BIG + 2, "%d events, %d in place", r.n, r.in_place);
	sse_free(&p);

	rec_reset(&r, 0);
	sse_init(&p, 1 << 20);
	CHECK(feed_copy(&p, &r, s, n / 2) == SSE_NOMEM);
	CHECK(feed_copy(&p, &r, s + n / 2, n - n / 2) == SSE_NOMEM);
	CHECK(sse_finish(&p, record, &r) == SSE_NOMEM && r.n == 0);
	sse_free(&p);
	CHECKF(in_use() == 0, "%zu bytes in use", in_use());
	mem_shutdown();
	free(r.text);
	free(s);
}

void
suite_sse(void)
{
	char err[256];

	unit_case("sse mem_init");
	if (!CHECKF(mem_init(16 << 20, err, sizeof err) == 0, "mem_init: %s", err))
		return;
	for (size_t i = 0; i < NELEM(rows); i++)
		check_row(&rows[i]);
	test_cap();
	for (size_t i = 0; i < NELEM(fixtures); i++)
		test_fixture(&fixtures[i]);
	test_zero_copy();
	test_ndjson();
	unit_case("sse mem in use after all");
	CHECKF(in_use() == 0, "%zu bytes in use", in_use());
	mem_shutdown();
	test_nomem();
}
