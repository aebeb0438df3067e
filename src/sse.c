/*
 * sse.c — an incremental text/event-stream parser (WHATWG "event stream interpretation";
 * FORMATS.md §0.1).
 *
 * LINES. sse_feed() walks the chunk line by line. memchr finds the next CR and the next LF, and
 * each position found is kept until the walk passes it, so a chunk is scanned once whatever its
 * line ends (CRLF, LF, lone CR, or a mix). A line lying wholly in the chunk is parsed where it
 * lies; a line cut by the chunk's end is copied into p->line and parsed when its end arrives
 * (or at sse_finish). A CR that ends a chunk sets skip_lf, so an LF opening the next chunk is
 * taken as the rest of that CRLF, not as an empty line. A BOM opening the first line is skipped.
 *
 * ZERO-COPY. While the pending event's data is one data line of the current chunk it is only a
 * pointer (data_at, data_n) into the chunk, and the empty line ending the event hands that
 * pointer to the callback. It is copied into p->data when a second data line must be joined
 * to it, and when sse_feed() returns with the event still open (the chunk is the caller's and
 * gone after the call). Data from a line assembled in p->line goes to p->data at once. So a
 * chunk of whole single-line events, the common case, allocates nothing and copies nothing.
 *
 * BUFFERS. p->line and p->data grow lazily through buf_* and keep their memory until
 * sse_free(). p->data is capped at max_event (the joined data); p->line at max_event +
 * LINE_SLACK (room for the field name, colon and space). A line in place is held to the same
 * cap, so whatever the split of the stream, a line or an event past the cap gives
 * SSE_TOO_LARGE, and an allocation failure SSE_NOMEM.
 *
 * CHOICES. An 'event' name longer than 63 bytes is truncated to 63 (names are advisory: the JSON
 * repeats the type). An event without data lines is dropped, its name with it. 'id', 'retry'
 * and unknown fields are ignored, except the non-standard 'error' field (legacy llama.cpp's
 * `error: {json}` mid-stream): it is delivered at once as an event named "error" whose data is
 * the field's value, leaving the pending event as it was. Unlike WHATWG, which drops it, an
 * event still open at the end of the stream (no blank line after it, or no line end after its
 * last line: llama.cpp ends with `data: [DONE]` alone) is delivered by sse_finish(). A nonzero
 * result (the callback's, SSE_TOO_LARGE, SSE_NOMEM) is kept in p->err: later sse_feed() and
 * sse_finish() calls return it and parse nothing.
 *
 * NDJSON. With p->ndjson (sse_init_ndjson) the same line walk frames newline-delimited JSON
 * (Ollama's native stream): each line that is not blank (only spaces and tabs) is delivered at
 * once as an event named "", its data the line — in place when the line lies in the chunk, else
 * from p->line; a last line without its line end is delivered by sse_finish(). No fields, no
 * comments, no joining: the line is the payload, capped at max_event. sse_free() keeps the mode.
 */
#include <limits.h>
#include <string.h>
#include "sluice.h"

#define LINE_SLACK 16 /* a line may pass max_event by this much: "data: " and the like */

void
sse_init(struct sse *p, size_t max_event)
{
	memset(p, 0, sizeof *p);
	buf_init(&p->line, max_event > SIZE_MAX - LINE_SLACK ? SIZE_MAX : max_event + LINE_SLACK);
	buf_init(&p->data, max_event);
	p->max_event = max_event;
}

void
sse_init_ndjson(struct sse *p, size_t max_event)
{
	sse_init(p, max_event);
	p->ndjson = 1;
}

void
sse_free(struct sse *p)
{
	int ndjson = p->ndjson;

	buf_free(&p->line);
	buf_free(&p->data);
	sse_init(p, p->max_event);
	p->ndjson = ndjson;
}

static int
buf_err(int rc)
{
	return rc == BUF_OK ? 0 : rc == BUF_FULL ? SSE_TOO_LARGE : SSE_NOMEM;
}

static void
event_reset(struct sse *p)
{
	p->event[0] = '\0';
	p->event_len = 0;
	p->data_at = NULL;
	p->data_n = 0;
	p->ndata = 0;
	buf_reset(&p->data);
}

/* Hand the pending event to the callback, then start a new one. */
static int
dispatch(struct sse *p, sse_event_fn *fn, void *ud)
{
	struct sse_event ev = { p->event, p->event_len, p->data_at, p->data_n, NULL };
	int rc;

	if (ev.data == NULL) {
		ev.data = p->data.len ? p->data.data : "";
		ev.data_len = p->data.len;
		if (p->ndata > 1) /* a second line is always joined in p->data */
			ev.joined = p->data.data;
	}
	rc = fn(ud, &ev);
	event_reset(p);
	return rc;
}

/* Move in-place data into p->data: the chunk it points into is about to go. */
static int
data_own(struct sse *p)
{
	const char *at = p->data_at;

	if (at == NULL)
		return 0;
	p->data_at = NULL;
	return buf_err(buf_append(&p->data, at, p->data_n));
}

/* A 'data' field: its value joins the event's data, staying in place if it is the first line. */
static int
data_line(struct sse *p, const char *v, size_t n, int in_chunk)
{
	int first = p->ndata == 0, rc;

	if (n > p->max_event)
		return SSE_TOO_LARGE;
	if (p->ndata < INT_MAX)
		p->ndata++;
	if (first && in_chunk) {
		p->data_at = v;
		p->data_n = n;
		return 0;
	}
	rc = data_own(p);
	if (rc == 0 && !first)
		rc = buf_err(buf_append(&p->data, "\n", 1));
	return rc ? rc : buf_err(buf_append(&p->data, v, n));
}

static void
event_name(struct sse *p, const char *v, size_t n)
{
	if (n > sizeof p->event - 1)
		n = sizeof p->event - 1;
	memcpy(p->event, v, n);
	p->event[n] = '\0';
	p->event_len = n;
}

/* One non-empty line: "name:value", "name: value" or a bare "name". */
static int
field(struct sse *p, const char *s, size_t n, int in_chunk, sse_event_fn *fn, void *ud)
{
	size_t name = 0;
	const char *v;
	size_t vn;

	while (name < n && s[name] != ':') /* field names are short: no call to memchr */
		name++;
	v = s + name + (name < n);
	vn = n - (size_t)(v - s);

	if (name == 0)
		return 0; /* a comment (keep-alive) */
	if (vn > 0 && *v == ' ') {
		v++;
		vn--;
	}
	if (name == 4 && s[0] == 'd' && s[1] == 'a' && s[2] == 't' && s[3] == 'a') /* no call to memcmp */
		return data_line(p, v, vn, in_chunk);
	if (name == 5 && memcmp(s, "event", 5) == 0) {
		event_name(p, v, vn);
		return 0;
	}
	if (name == 5 && memcmp(s, "error", 5) == 0) {
		struct sse_event ev = { "error", 5, v, vn, NULL };

		return vn > p->max_event ? SSE_TOO_LARGE : fn(ud, &ev);
	}
	return 0;
}

/* NDJSON: a line that is not blank is an event of its own, its data the line itself (in place in
 * the caller's chunk, or in p->line, which lives until the callback returns). */
static int
ndjson_line(struct sse *p, const char *s, size_t n, sse_event_fn *fn, void *ud)
{
	struct sse_event ev = { "", 0, s, n, NULL };
	size_t i = 0;

	while (i < n && (s[i] == ' ' || s[i] == '\t'))
		i++;
	if (i == n)
		return 0;
	return n > p->max_event ? SSE_TOO_LARGE : fn(ud, &ev);
}

/* One complete line, without its line end; in_chunk: it lies in the caller's chunk. */
static int
line(struct sse *p, const char *s, size_t n, int in_chunk, sse_event_fn *fn, void *ud)
{
	if (n > p->line.max)
		return SSE_TOO_LARGE;
	if (!p->started) {
		p->started = 1;
		if (n >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0) {
			s += 3;
			n -= 3;
		}
	}
	if (p->ndjson)
		return ndjson_line(p, s, n, fn, ud);
	if (n > 0)
		return field(p, s, n, in_chunk, fn, ud);
	if (p->ndata > 0)
		return dispatch(p, fn, ud);
	event_reset(p); /* no data: the event is dropped */
	return 0;
}

/* The line s[0..n) of the chunk, completing the one in p->line if a read cut it. */
static int
chunk_line(struct sse *p, const char *s, size_t n, sse_event_fn *fn, void *ud)
{
	int rc;

	if (p->line.len == 0)
		return line(p, s, n, 1, fn, ud);
	rc = buf_err(buf_append(&p->line, s, n));
	if (rc == 0)
		rc = line(p, p->line.data, p->line.len, 0, fn, ud);
	buf_reset(&p->line);
	return rc;
}

/* The CR and LF bytes among the sixteen at p, flagged -1. */
static inline __attribute__((always_inline)) bytes16
eol16(const char *p)
{
	bytes16 v = load16(p);

	return (v == '\r') | (v == '\n');
}

/* The offset of the first CR or LF in s[i..len), or len: thirty-two bytes at a time (one test
 * for both halves: a data line is most of an event), then sixteen, then the last sixteen of s
 * with those before i left out (one by one when s is shorter). */
static size_t
line_end(const char *s, size_t i, size_t len)
{
	size_t k;

	for (; i + 32 <= len; i += 32)
		if (first16(eol16(s + i) | eol16(s + i + 16)) < 16)
			break;
	for (; i + 16 <= len; i += 16)
		if ((k = first16(eol16(s + i))) < 16)
			return i + k;
	if (len >= 16)
		return len - 16 + first16(eol16(s + len - 16) & from16(i - (len - 16)));
	while (i < len && s[i] != '\r' && s[i] != '\n')
		i++;
	return i;
}

static int
fail(struct sse *p, int rc)
{
	p->err = rc;
	p->data_at = NULL;
	return rc;
}

int
sse_feed(struct sse *p, const char *chunk, size_t len, sse_event_fn *fn, void *ud)
{
	size_t i = 0, eol;
	int rc;

	if (p->err)
		return p->err;
	if (len > 0 && p->skip_lf) {
		p->skip_lf = 0;
		i = chunk[0] == '\n';
	}
	while (i < len) {
		eol = line_end(chunk, i, len);
		if (eol == len) { /* cut by the chunk's end: keep it for the next one */
			rc = buf_err(buf_append(&p->line, chunk + i, len - i));
			if (rc)
				return fail(p, rc);
			break;
		}
		rc = chunk_line(p, chunk + i, eol - i, fn, ud);
		if (rc)
			return fail(p, rc);
		i = eol + 1;
		if (chunk[eol] == '\r' && i == len)
			p->skip_lf = 1;
		else if (chunk[eol] == '\r' && chunk[i] == '\n')
			i++;
	}
	rc = data_own(p);
	return rc ? fail(p, rc) : 0;
}

int
sse_finish(struct sse *p, sse_event_fn *fn, void *ud)
{
	int rc = p->err;

	if (rc == 0 && p->line.len > 0)
		rc = line(p, p->line.data, p->line.len, 0, fn, ud);
	if (rc == 0 && p->ndata > 0)
		rc = dispatch(p, fn, ud);
	buf_reset(&p->line);
	event_reset(p);
	p->skip_lf = 0;
	return rc ? fail(p, rc) : 0;
}
