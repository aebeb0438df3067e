/*
 * conn.c — client connections: accept, read, parse (http.c), hand the request to api.c, write
 * the answer, keep-alive, and every limit with its status (DESIGN.md §1; issue: server core).
 *
 * A connection moves through these states:
 *   IDLE   keep-alive, waiting for the first byte of a request     (timer: idle_timeout → close)
 *   HEAD   reading the request head                               (timer: header_timeout → 408)
 *   BODY   reading the request body                               (timer: idle_timeout → 408)
 *   BUSY   the request is answered; output drains as it is made   (reading only to see EOF)
 *   LINGER our side is shut; input discarded until EOF            (timer: 2 s → close)
 * The state changes in one function, conn_set_state(), which also arms that state's timer.
 *
 * Memory: the conn itself, its read buffer (capped at max_header + READ_CHUNK), its write
 * queue (capped) and its per-request arena all come from mem. When any of them cannot be had,
 * the connection is answered 503 from static bytes — answering "full" never needs memory.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdarg.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include "sluice.h"

#define READ_CHUNK   (16 * 1024)
#define READ_FIRST   2048           /* a read buffer's first size, and the least a read asks room for */
#define WRITE_CAP    (1024 * 1024)  /* bytes of unsent output a connection may queue */
#define LINGER_MS    2000
#define ACCEPT_BATCH 64

enum conn_state { C_IDLE, C_HEAD, C_BODY, C_BUSY, C_LINGER };

struct conn {
	int             fd;
	enum conn_state state;
	struct buf      rbuf;        /* bytes read, the current request's head at its start */
	size_t          parsed;      /* how far http_parse has read rbuf */
	struct http_req req;
	struct buf      wbuf;        /* output not yet written */
	size_t          wdone;       /* bytes of wbuf already written */
	struct timer    timer;
	struct arena    arena;       /* the current request's memory */
	char            rid[65];     /* x-request-id */
	char            peer[64];
	uint64_t        t_start;     /* ms: the request's first byte */
	int             status;      /* of the answer, for the log */
	uint64_t        bytes_out;   /* body bytes of the answer, for the log */
	unsigned        answered : 1, close_after : 1, sent_continue : 1, dirty : 1;
	unsigned        head_sent : 1, chunked : 1;
	struct iovec    borrowed[3]; /* body bytes owned by the request, written after wbuf */
	int             nborrowed;
	const struct conn_handler *handler; /* who produces the answer asynchronously */
	void           *handler_ud;
	struct conn    *next, *prev; /* all connections */
	struct conn    *next_dirty;  /* connections with output to flush this iteration */
};

static struct {
	const struct config *cfg;
	int                  listen_fd;
	struct conn         *all;
	struct conn         *dirty;
	struct conn_stats    st;
	int                  draining;
	struct timer         drain_timer;
	uint64_t             rid_seed, rid_count;
} S = { .listen_fd = -1 };

static void conn_on_event(int fd, unsigned events, void *ud);
static void conn_parse(struct conn *c);
static void conn_watch_busy(struct conn *c);
static void arm_write_timer(struct conn *c);
static size_t conn_queued(const struct conn *c);
static int conn_put_head(struct conn *c, int status, const char *ctype, const char *headers, int64_t len);
static void new_request_id(char out[21]);
static void conn_set_state(struct conn *c, enum conn_state to);
static void conn_close(struct conn *c);
static size_t head_keep(const struct http_req *r);

/* ---- static answers, for when there is no memory to build one ---- */

/* Answer a connection we cannot serve: read what it already sent (so that closing does not
 * reset the answer away), write the static 503, shut down, close. */
static void
write_static_503(int fd, const char *rid, const char *code, const char *msg)
{
	char body[256], out[640];
	int blen, n;

	blen = snprintf(body, sizeof body,
	    "{\"error\":{\"message\":\"%s\",\"type\":\"server_error\",\"param\":null,\"code\":\"%s\"}}", msg, code);
	n = snprintf(out, sizeof out,
	    "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
	    "x-request-id: %s\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s", rid, blen, body);
	(void)!write(fd, out, (size_t)n);
}

static void
refuse(int fd, const char *code, const char *msg)
{
	char junk[4096];

	char rid[32];

	while (read(fd, junk, sizeof junk) > 0)
		;
	new_request_id(rid);
	write_static_503(fd, rid, code, msg);
	log_msg("refused a connection: 503 %s %s", code, rid);
	shutdown(fd, SHUT_WR);
	close(fd);
	S.st.refused++;
}

/* ---- request ids ---- */

static void
new_request_id(char out[21])
{
	memcpy(out, "req_", 4);
	u64_hex(out + 4, splitmix64(S.rid_seed + ++S.rid_count));
	out[20] = '\0';
}

/* The client's own x-request-id if it is short and printable, else a fresh one. */
static void
assign_request_id(struct conn *c)
{
	struct span v;

	if (http_header(&c->req, "x-request-id", &v) && v.len > 0 && v.len < sizeof c->rid) {
		const char *p = c->rbuf.data + v.off;
		uint32_t i;

		for (i = 0; i < v.len && p[i] > 0x20 && p[i] < 0x7f; i++)
			;
		if (i == v.len) {
			memcpy(c->rid, p, v.len);
			c->rid[v.len] = '\0';
			return;
		}
	}
	new_request_id(c->rid);
}

/* ---- the state machine ---- */

/* Answer the request in progress with an error, then close the connection. */
static void
conn_fail(struct conn *c, int status, const char *code, const char *msg)
{
	c->close_after = 1;
	conn_set_state(c, C_BUSY);
	if (status == 503)
		conn_error(c, 503, "server_error", code, NULL, "%s", msg);
	else
		conn_error(c, status, "invalid_request_error", code, NULL, "%s", msg);
}

static void
on_timer(void *ud)
{
	struct conn *c = ud;

	switch (c->state) {
	case C_IDLE:
	case C_LINGER:
		conn_close(c);
		break;
	case C_HEAD:
		conn_fail(c, 408, "request_timeout", "the request head did not arrive within header_timeout");
		break;
	case C_BODY:
		conn_fail(c, 408, "request_timeout", "the request body stalled for longer than idle_timeout");
		break;
	case C_BUSY:
		if (conn_queued(c) > 0) {
			log_msg("%s: the client read nothing for idle_timeout; closing", c->rid);
			conn_close(c);
		}
		break;
	}
}

static void
conn_set_state(struct conn *c, enum conn_state to)
{
	const struct cfg_server *sv = &S.cfg->server;
	uint64_t ms = 0;

	c->state = to;
	switch (to) {
	case C_IDLE:   ms = sv->idle_timeout; break;
	case C_HEAD:   ms = sv->header_timeout; break;
	case C_BODY:   ms = sv->idle_timeout; break;
	case C_LINGER: ms = LINGER_MS; break;
	case C_BUSY:   break;
	}
	if (ms)
		loop_timer_set(&c->timer, ms, on_timer, c);
	else
		loop_timer_cancel(&c->timer);
}

static void
conn_close(struct conn *c)
{
	if (c->handler != NULL && c->handler->gone != NULL)
		c->handler->gone(c->handler_ud); /* abort the upstream before its memory is released */
	c->handler = NULL;
	loop_unwatch(c->fd);
	loop_timer_cancel(&c->timer);
	close(c->fd);
	if (c->dirty) {
		struct conn **pp = &S.dirty;
		while (*pp != c)
			pp = &(*pp)->next_dirty;
		*pp = c->next_dirty;
	}
	if (c->prev)
		c->prev->next = c->next;
	else
		S.all = c->next;
	if (c->next)
		c->next->prev = c->prev;
	http_req_free(&c->req);
	buf_free(&c->rbuf);
	buf_free(&c->wbuf);
	arena_release(&c->arena);
	mem_free(c);
	S.st.open--;
	if (S.draining && S.st.open == 0)
		loop_stop();
}

/* Shut our side and read until the peer closes, so that a client still sending does not get a
 * reset that destroys the answer it has not read yet. */
static void
conn_linger(struct conn *c)
{
	shutdown(c->fd, SHUT_WR);
	conn_set_state(c, C_LINGER);
	loop_watch(c->fd, LOOP_READ, conn_on_event, c);
}

static void
mark_dirty(struct conn *c)
{
	if (!c->dirty) {
		c->dirty = 1;
		c->next_dirty = S.dirty;
		S.dirty = c;
		loop_wake(); /* queued by a callback that ran after this iteration's flush */
	}
}

static void
log_request(struct conn *c)
{
	const struct http_req *r = &c->req;
	/* Room for the longest line: the path is cut at 512 bytes (escaped for JSON: at most 1,024,
	 * since llhttp lets no control byte into a path; 3,072 even if it did), the request id is at
	 * most 64 printable bytes (130 escaped). One byte is kept back for the newline. */
	char d1[21], d2[21], d3[21], ts[32], line[4096];
	struct buf o = { .data = line, .size = sizeof line - 1, .max = sizeof line - 1 };
	const char *path = c->rbuf.data + r->target.off;
	size_t pathn = r->target.len > 512 ? 512 : r->target.len;
	const char *method = r->target.len ? http_method_name(r) : "-"; /* "-": no request line yet */
	const char *status = u64_dec(d1, (uint64_t)(c->status > 0 ? c->status : 0));
	const char *bytes = u64_dec(d2, c->bytes_out);
	const char *ms = u64_dec(d3, loop_clock_ms() - c->t_start); /* whole ms, written as "N.0" */

	/* Appended piece by piece, no printf (a line per request). */
	log_timestamp(ts, sizeof ts);
	if (log_is_json()) {
		(void)(buf_puts(&o, "{\"ts\":\"") || buf_puts(&o, ts) || buf_puts(&o, "\",\"method\":\"") ||
		    buf_puts(&o, method) || buf_puts(&o, "\",\"path\":") ||
		    json_escape(&o, path, pathn) || buf_puts(&o, ",\"status\":") ||
		    buf_puts(&o, status) || buf_puts(&o, ",\"bytes\":") || buf_puts(&o, bytes) ||
		    buf_puts(&o, ",\"ms\":") || buf_puts(&o, ms) || buf_puts(&o, ".0,\"request_id\":") ||
		    json_escape(&o, c->rid, strlen(c->rid)) || buf_puts(&o, ",\"peer\":\"") ||
		    buf_puts(&o, c->peer) || buf_puts(&o, "\"}"));
	} else {
		(void)(buf_puts(&o, ts) || buf_puts(&o, " ") || buf_puts(&o, c->peer) || buf_puts(&o, " ") ||
		    buf_puts(&o, method) || buf_puts(&o, " ") ||
		    buf_append(&o, path, pathn) || buf_puts(&o, " ") ||
		    buf_puts(&o, status) || buf_puts(&o, " ") || buf_puts(&o, bytes) || buf_puts(&o, "B ") ||
		    buf_puts(&o, ms) || buf_puts(&o, ".0ms ") || buf_puts(&o, c->rid));
	}
	line[o.len++] = '\n';
	/* One write(2) a line: stderr is unbuffered, and musl's fprintf writes a line longer than
	 * 80 bytes to it in several (a system call each, on every request). */
	(void)!write(STDERR_FILENO, line, o.len);
}

/* The answer is fully written: log it, then serve the next request or close. Returns -1 when
 * the connection was closed. */
static int
conn_request_done(struct conn *c)
{
	S.st.requests++;
	log_request(c);
	if (c->handler != NULL && c->handler->gone != NULL)
		c->handler->gone(c->handler_ud); /* the request is over: its producer lets go */
	c->handler = NULL;
	arena_release(&c->arena);
	if (c->close_after || S.draining) {
		if (c->req.state == REQ_DONE && c->parsed == c->rbuf.len && !c->req.err_status) {
			conn_close(c);
			return -1;
		}
		conn_linger(c);
		return 0;
	}
	/* Drop the finished request's bytes; pipelined ones move to the front. */
	buf_consume(&c->rbuf, c->parsed);
	c->parsed = 0;
	http_req_next(&c->req);
	c->answered = 0;
	c->rid[0] = '\0';
	c->head_sent = 0;
	c->chunked = 0;
	c->sent_continue = 0;
	c->status = 0;
	c->bytes_out = 0;
	conn_set_state(c, C_IDLE);
	loop_watch(c->fd, LOOP_READ, conn_on_event, c);
	if (c->rbuf.len > 0)
		conn_parse(c);
	return 0;
}

/* Bytes queued and not yet written: the write buffer, then the borrowed body. */
static size_t
conn_queued(const struct conn *c)
{
	size_t n = c->wbuf.len - c->wdone;

	for (int i = 0; i < c->nborrowed; i++)
		n += c->borrowed[i].iov_len;
	return n;
}

/* Account for n bytes written: first from wbuf, then from the borrowed segments. */
static void
conn_advance_written(struct conn *c, size_t n)
{
	size_t w = c->wbuf.len - c->wdone;

	if (n < w) {
		c->wdone += n;
		return;
	}
	n -= w;
	c->wdone = c->wbuf.len;
	while (c->nborrowed > 0 && n >= c->borrowed[0].iov_len) {
		n -= c->borrowed[0].iov_len;
		memmove(&c->borrowed[0], &c->borrowed[1], (size_t)--c->nborrowed * sizeof c->borrowed[0]);
	}
	if (c->nborrowed > 0) {
		c->borrowed[0].iov_base = (char *)c->borrowed[0].iov_base + n;
		c->borrowed[0].iov_len -= n;
	}
}

/* What a connection waits for while its answer is made or written: output to write if any is
 * queued, and input only while the read buffer has room (a full one would report readable
 * for ever and spin the loop). */
static void
conn_watch_busy(struct conn *c)
{
	unsigned ev = conn_queued(c) > 0 ? LOOP_WRITE : 0;

	if (c->state != C_LINGER && c->rbuf.len < c->rbuf.max)
		ev |= LOOP_READ;
	loop_watch(c->fd, ev, conn_on_event, c);
}

/* A client that reads nothing of its answer for idle_timeout is let go: it would hold its slot
 * and its memory for ever. Re-armed whenever a write stalls after progress. */
static void
arm_write_timer(struct conn *c)
{
	if (c->state == C_BUSY)
		loop_timer_set(&c->timer, S.cfg->server.idle_timeout, on_timer, c);
}

/* Write what is queued. Returns -1 if the connection was closed. */
static int
conn_flush(struct conn *c)
{
	while (conn_queued(c) > 0) {
		struct iovec iov[4];
		int n = 0;
		ssize_t w;

		if (c->wdone < c->wbuf.len) {
			iov[n].iov_base = c->wbuf.data + c->wdone;
			iov[n++].iov_len = c->wbuf.len - c->wdone;
		}
		for (int i = 0; i < c->nborrowed; i++)
			iov[n++] = c->borrowed[i];
		w = writev(c->fd, iov, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && errno == EAGAIN) {
			conn_watch_busy(c);
			arm_write_timer(c);
			return 0;
		}
		if (w <= 0) {
			conn_close(c);
			return -1;
		}
		conn_advance_written(c, (size_t)w);
	}
	if (c->state == C_BUSY)
		loop_timer_cancel(&c->timer); /* all written: no write stall to time */
	buf_free(&c->wbuf); /* a stream between events, an idle connection: neither holds a buffer */
	c->wdone = 0;
	if (c->state == C_BUSY && c->answered)
		return conn_request_done(c);
	/* Everything written and the answer is still being made: its producer may go on. */
	if (c->state == C_BUSY && c->handler != NULL && c->handler->drained != NULL)
		c->handler->drained(c->handler_ud);
	if (c->state != C_LINGER)
		conn_watch_busy(c);
	return 0;
}

static void
flush_dirty(void *ud)
{
	while (S.dirty) {
		struct conn *c = S.dirty;

		S.dirty = c->next_dirty;
		c->dirty = 0;
		conn_flush(c);
	}
}

/* A dispatched request needs of its read buffer only its head's bytes (and any pipelined ones
 * after it): move them to an allocation of their exact size and give back the room that was
 * grown for reading, which a stream would otherwise hold for its whole life. Not trimmed in
 * place: that left a comb of small heads in 2 KiB runs whose freed tails nothing reused (at
 * 1,000 streams, 1.3 MiB of resident pages). The head's spans are offsets from req.base, and
 * nothing has pointed into the buffer before dispatch; the next read grows it again. */
static void
rbuf_fit(struct conn *c)
{
	char *p;

	if (c->rbuf.len >= c->rbuf.size || (p = mem_alloc_exact(c->rbuf.len)) == NULL)
		return;
	memcpy(p, c->rbuf.data, c->rbuf.len);
	mem_free(c->rbuf.data);
	c->rbuf.data = p;
	c->rbuf.size = c->rbuf.len;
	c->req.base = p;
}

/* A request is complete: hand it to the API. */
static void
conn_dispatch(struct conn *c)
{
	rbuf_fit(c);
	conn_set_state(c, C_BUSY);
	assign_request_id(c);
	if (!c->req.keep_alive)
		c->close_after = 1;
	api_dispatch(c);
}

/* Parse what has been read; dispatch a complete request; answer a bad one. */
static void
conn_parse(struct conn *c)
{
	struct http_req *r = &c->req;
	int rc;

	if (c->state == C_IDLE) {
		c->t_start = loop_clock_ms();
		conn_set_state(c, C_HEAD);
	}
	rc = http_parse(r, c->rbuf.data, c->rbuf.len, &c->parsed);
	if (rc < 0) {
		char msg[256];

		snprintf(msg, sizeof msg, "%s%s", r->err_status == 400 ? "malformed HTTP request: " : "",
		    r->err_msg);
		conn_fail(c, r->err_status, r->err_code, msg);
		return;
	}
	if (rc == REQ_DONE) {
		conn_dispatch(c);
		return;
	}
	if (r->state <= REQ_HEAD) {
		if (c->rbuf.len > r->max_header)
			conn_fail(c, 431, "headers_too_large", "request headers are larger than max_header");
		return;
	}
	/* In the body: the body bytes were copied out; keep only the head in the read buffer. */
	if (c->state == C_HEAD)
		conn_set_state(c, C_BODY);
	else
		loop_timer_set(&c->timer, S.cfg->server.idle_timeout, on_timer, c);
	c->rbuf.len = c->parsed = head_keep(r);
	if (r->expect_continue && !c->sent_continue && r->body.len == 0) {
		static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
		c->sent_continue = 1;
		if (buf_append(&c->wbuf, cont, sizeof cont - 1) == BUF_OK)
			mark_dirty(c);
	}
}

/* How many bytes of the read buffer the head's spans reach into. */
static size_t
head_keep(const struct http_req *r)
{
	uint32_t end = r->target.off + r->target.len;

	for (int i = 0; i < r->nheaders; i++) {
		uint32_t e = r->headers[i].value.off + r->headers[i].value.len;
		uint32_t n = r->headers[i].name.off + r->headers[i].name.len;
		if (e > end)
			end = e;
		if (n > end)
			end = n;
	}
	return end;
}

/* Read what the socket has. Returns bytes read, 0 at EOF, -1 on error, -2 when nothing to read
 * now or no room. */
static ssize_t
conn_read(struct conn *c)
{
	size_t room;
	ssize_t n;
	int rc;

	room = c->rbuf.max - c->rbuf.len;
	if (room == 0)
		return -2;
	/* Read into the room the buffer has; grow it (doubling, from 2 KiB) only when it is nearly
	 * full: most requests are small, and every idle or streaming connection keeps its buffer. */
	if (c->rbuf.size - c->rbuf.len >= 1024)
		room = c->rbuf.size - c->rbuf.len < room ? c->rbuf.size - c->rbuf.len : room;
	else if (room > (c->rbuf.size > READ_FIRST ? c->rbuf.size : READ_FIRST))
		room = c->rbuf.size > READ_FIRST ? c->rbuf.size : READ_FIRST;
	if (room > READ_CHUNK)
		room = READ_CHUNK;
	rc = buf_reserve(&c->rbuf, room);
	if (rc == BUF_NOMEM)
		return -3;
	do
		n = read(c->fd, c->rbuf.data + c->rbuf.len, room);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return errno == EAGAIN ? -2 : -1;
	c->rbuf.len += (size_t)n;
	return n;
}

static void
conn_on_readable(struct conn *c)
{
	ssize_t n = conn_read(c);

	if (n == -2) {
		if (c->state == C_BUSY && c->rbuf.len == c->rbuf.max)
			conn_watch_busy(c); /* no room: reading more would only spin */
		return;
	}
	if (n == -3) {
		/* No memory for the bytes this client sent: answer 503 and let it go. */
		if (c->state == C_LINGER) {
			conn_close(c);
		} else if (c->state == C_BUSY) {
			conn_watch_busy(c);
		} else {
			conn_fail(c, 503, "overloaded", "the gateway is out of memory; retry shortly");
		}
		return;
	}
	if (n <= 0) {
		/* The client went away (or reset). In LINGER that is what we waited for. */
		conn_close(c);
		return;
	}
	if (c->state == C_LINGER) {
		c->rbuf.len = 0; /* discard */
		return;
	}
	if (c->state == C_BUSY) {
		/* Pipelined bytes wait in the buffer; stop reading when it is full. */
		if (c->rbuf.len == c->rbuf.max)
			conn_watch_busy(c);
		return;
	}
	conn_parse(c);
}

static void
conn_on_event(int fd, unsigned events, void *ud)
{
	struct conn *c = ud;

	if (events & LOOP_WRITE) {
		if (conn_flush(c) < 0)
			return;
		if (c->fd != fd)
			return;
	}
	if (events & LOOP_READ)
		conn_on_readable(c);
}

/* ---- answers ---- */

/* The current HTTP date, formatted once per second. */
static const char *
http_date(void)
{
	static char buf[40];
	static time_t last;
	time_t now = time(NULL);
	struct tm tm;

	if (now != last) {
		last = now;
		gmtime_r(&now, &tm);
		strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
	}
	return buf;
}

/* The status line and headers. len < 0: the body follows in chunks (a stream). */
static int
conn_put_head(struct conn *c, int status, const char *ctype, const char *headers, int64_t len)
{
	struct buf *b = &c->wbuf;
	size_t at = b->len;
	char num[21];
	int rc;

	if (c->rid[0] == '\0')
		assign_request_id(c);
	if (S.draining)
		c->close_after = 1;
	/* Every answer has one: joined piece by piece (printf cost ~5,000 instructions a head). */
	rc = buf_puts(b, "HTTP/1.1 ");
	rc = rc ? rc : buf_puts(b, u64_dec(num, (uint64_t)status));
	rc = rc ? rc : buf_puts(b, " ");
	rc = rc ? rc : buf_puts(b, http_status_text(status));
	rc = rc ? rc : buf_puts(b, "\r\nServer: sluice\r\nDate: ");
	rc = rc ? rc : buf_puts(b, http_date());
	rc = rc ? rc : buf_puts(b, "\r\nContent-Type: ");
	rc = rc ? rc : buf_puts(b, ctype);
	if (len < 0) {
		rc = rc ? rc : buf_puts(b, "\r\nTransfer-Encoding: chunked");
	} else {
		rc = rc ? rc : buf_puts(b, "\r\nContent-Length: ");
		rc = rc ? rc : buf_puts(b, u64_dec(num, (uint64_t)len));
	}
	rc = rc ? rc : buf_puts(b, "\r\nx-request-id: ");
	rc = rc ? rc : buf_puts(b, c->rid);
	rc = rc ? rc : buf_puts(b, c->close_after ? "\r\nConnection: close\r\n" : "\r\n");
	rc = rc ? rc : buf_puts(b, headers ? headers : "");
	rc = rc ? rc : buf_puts(b, "\r\n");
	if (rc != BUF_OK) {
		b->len = at; /* nothing of a head that did not fit */
		return BUF_NOMEM;
	}
	c->head_sent = 1;
	c->chunked = len < 0;
	c->status = status;
	return BUF_OK;
}

/* The answer cannot be given (no memory for its bytes): say so from static bytes if nothing of
 * it has been queued yet, and close — a promised body that never comes would hang the client. */
static void
conn_broken(struct conn *c)
{
	if (!c->head_sent) {
		buf_reset(&c->wbuf);
		c->wdone = 0;
		c->status = 503;
		write_static_503(c->fd, c->rid, "overloaded", "the gateway is out of memory; retry shortly");
	}
	c->head_sent = 1;
	c->close_after = 1;
	c->answered = 1;
	mark_dirty(c);
}

/* Queue a whole answer: status line, headers, body. headers is extra "Name: value\r\n" lines. */
void
conn_reply(struct conn *c, int status, const char *ctype, const char *headers, const char *body,
    size_t len)
{
	int rc;

	if (c->answered)
		return;
	if (c->head_sent) {
		/* An answer was already begun (a stream): it cannot become another. */
		c->close_after = 1;
		conn_sink_end(c);
		return;
	}
	c->answered = 1;
	rc = conn_put_head(c, status, ctype, headers, (int64_t)len);
	if (rc == BUF_OK)
		rc = buf_append(&c->wbuf, body, len);
	c->bytes_out = len;
	if (rc != BUF_OK) {
		c->head_sent = 0; /* nothing of it can go: the static 503 instead (c stays alive) */
		conn_broken(c);
		return;
	}
	mark_dirty(c);
}

/* Queue an error in OpenAI's envelope: {"error":{"message","type","param","code"}}. */
void
conn_error_hdr(struct conn *c, int status, const char *headers, const char *type, const char *code,
    const char *param, const char *fmt, ...)
{
	char msg[512], body[1536];
	struct buf b = { .data = body, .size = sizeof body, .max = sizeof body };
	va_list ap;
	int rc;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	rc = json_error(&b, msg, strlen(msg), type, code, param);
	if (rc != BUF_OK)
		b.len = 0;
	if (status == 503 && headers == NULL)
		headers = "Retry-After: 1\r\n";
	conn_reply(c, status, "application/json", headers, b.data, b.len);
}

const struct http_req *
conn_req(const struct conn *c)
{
	return &c->req;
}

struct arena *
conn_arena(struct conn *c)
{
	return &c->arena;
}

const char *
conn_request_id(const struct conn *c)
{
	return c->rid;
}

/* ---- the sink: how an asynchronous producer (the exchange) answers ---- */

/* Begin an answer whose body follows: len >= 0 bytes with Content-Length, or chunked (-1). */
int
conn_sink_head(struct conn *c, int status, const char *ctype, const char *headers, int64_t len)
{
	if (c->head_sent || c->answered)
		return -1;
	if (conn_put_head(c, status, ctype, headers, len) != BUF_OK) {
		conn_broken(c);
		return -1;
	}
	mark_dirty(c);
	return 0;
}

/* "%zx\r\n" without printf: this runs once per streamed event. */
static int
append_chunk_size(struct buf *b, size_t n)
{
	char tmp[2 * sizeof n + 2], *p = tmp + sizeof tmp;

	*--p = '\n';
	*--p = '\r';
	do
		*--p = "0123456789abcdef"[n & 15];
	while ((n >>= 4) != 0);
	return buf_append(b, p, (size_t)(tmp + sizeof tmp - p));
}

/* Body bytes from parts, copied (and framed as one chunk on a chunked answer). -1 if the queue is
 * full or the answer is not open. */
int
conn_sink_write(struct conn *c, const struct iovec *parts, int nparts)
{
	size_t mark = c->wbuf.len, n = 0;
	int rc = BUF_OK;

	for (int i = 0; i < nparts; i++)
		n += parts[i].iov_len;
	if (!c->head_sent || c->answered)
		return -1;
	if (n == 0)
		return 0;
	if (c->chunked)
		rc = append_chunk_size(&c->wbuf, n);
	for (int i = 0; i < nparts && rc == BUF_OK; i++)
		rc = buf_append(&c->wbuf, parts[i].iov_base, parts[i].iov_len);
	rc = rc ? rc : (c->chunked ? buf_append(&c->wbuf, "\r\n", 2) : BUF_OK);
	if (rc != BUF_OK) {
		c->wbuf.len = mark; /* never a torn chunk */
		conn_broken(c);
		return -1;
	}
	c->bytes_out += n;
	mark_dirty(c);
	return 0;
}

/* Body bytes written from the caller's memory, which must live until the request ends. Only
 * on a Content-Length answer, and after any copied bytes. */
int
conn_sink_borrow(struct conn *c, const char *p, size_t n)
{
	if (!c->head_sent || c->answered || c->chunked || c->nborrowed == (int)NELEM(c->borrowed))
		return -1;
	if (n == 0)
		return 0;
	c->borrowed[c->nborrowed].iov_base = (void *)p;
	c->borrowed[c->nborrowed++].iov_len = n;
	c->bytes_out += n;
	mark_dirty(c);
	return 0;
}

/* The answer is complete. */
void
conn_sink_end(struct conn *c)
{
	if (c->answered)
		return;
	if (c->chunked && buf_append(&c->wbuf, "0\r\n\r\n", 5) != BUF_OK)
		c->close_after = 1; /* no room for the last chunk: closing ends the body instead */
	c->answered = 1;
	mark_dirty(c);
}

size_t
conn_sink_queued(const struct conn *c)
{
	return conn_queued(c);
}

static int sink_head(void *o, int st, const char *ct, const char *h, int64_t len) { return conn_sink_head(o, st, ct, h, len); }
static int sink_write(void *o, const struct iovec *v, int n) { return conn_sink_write(o, v, n); }
static int sink_borrow(void *o, const char *p, size_t n) { return conn_sink_borrow(o, p, n); }
static void sink_end(void *o) { conn_sink_end(o); }
static size_t sink_queued(const void *o) { return conn_sink_queued(o); }

static const struct sink_ops conn_sink_ops = {
	.head = sink_head, .write = sink_write, .borrow = sink_borrow, .end = sink_end, .queued = sink_queued,
};

/* The connection as a sink, for a producer that must not know connections. */
struct sink
conn_sink(struct conn *c)
{
	struct sink s = { &conn_sink_ops, c };
	return s;
}

void
conn_set_handler(struct conn *c, const struct conn_handler *h, void *ud)
{
	c->handler = h;
	c->handler_ud = ud;
}

/* ---- accepting ---- */

static void
peer_name(int fd, char *out, size_t len)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof ss;
	char host[INET6_ADDRSTRLEN] = "?";
	int port = 0;

	if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0) {
		if (ss.ss_family == AF_INET) {
			struct sockaddr_in *a = (struct sockaddr_in *)&ss;
			inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
			port = ntohs(a->sin_port);
		} else if (ss.ss_family == AF_INET6) {
			struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
			inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
			port = ntohs(a->sin6_port);
		}
	}
	snprintf(out, len, "%s:%d", host, port);
}

static void
conn_new(int fd)
{
	const struct cfg_server *sv = &S.cfg->server;
	struct conn *c;
	int one = 1;

	if (S.st.open >= sv->max_connections || fd >= loop_capacity()) {
		refuse(fd, "too_many_connections", "the gateway is at max_connections; retry shortly");
		return;
	}
	if ((c = mem_calloc_exact(1, sizeof *c)) == NULL) { /* 2 KiB and a bit: not rounded to 4 */
		refuse(fd, "overloaded", "the gateway is out of memory; retry shortly");
		return;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	c->fd = fd;
	buf_init(&c->rbuf, sv->max_header + READ_CHUNK);
	buf_init(&c->wbuf, WRITE_CAP);
	http_req_init(&c->req, sv->max_header, sv->max_request_body);
	arena_init(&c->arena);
	loop_timer_init(&c->timer);
	peer_name(fd, c->peer, sizeof c->peer);
	c->next = S.all;
	if (S.all)
		S.all->prev = c;
	S.all = c;
	S.st.open++;
	S.st.accepted++;
	/* A new connection must send its head within header_timeout. */
	c->t_start = loop_clock_ms();
	conn_set_state(c, C_HEAD);
	loop_watch(fd, LOOP_READ, conn_on_event, c);
}

static void
on_accept(int lfd, unsigned events, void *ud)
{
	for (int i = 0; i < ACCEPT_BATCH; i++) {
		int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE)
				log_msg("accept: %s (raise the fd limit or lower max_connections)", strerror(errno));
			return;
		}
		conn_new(fd);
	}
}

static int
make_listener(const struct cfg_server *sv, char *err, size_t errlen)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	int fd, one = 1;

	memset(&ss, 0, sizeof ss);
	if (strchr(sv->host, ':') != NULL) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
		a->sin6_family = AF_INET6;
		a->sin6_port = htons((uint16_t)sv->port);
		if (inet_pton(AF_INET6, sv->host, &a->sin6_addr) != 1)
			goto bad_addr;
		sl = sizeof *a;
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)&ss;
		a->sin_family = AF_INET;
		a->sin_port = htons((uint16_t)sv->port);
		if (inet_pton(AF_INET, sv->host[0] ? sv->host : "0.0.0.0", &a->sin_addr) != 1)
			goto bad_addr;
		sl = sizeof *a;
	}
	if ((fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
	    bind(fd, (struct sockaddr *)&ss, sl) < 0 || listen(fd, 4096) < 0) {
		snprintf(err, errlen, "listen on %s: %s", sv->listen, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
bad_addr:
	snprintf(err, errlen, "listen: '%s' is not a numeric IP address", sv->host);
	return -1;
}

int
conn_listen(const struct config *cfg, char *err, size_t errlen)
{
	uint64_t seed = 0;

	S.cfg = cfg;
	if ((S.listen_fd = make_listener(&cfg->server, err, errlen)) < 0)
		return -1;
	if (getentropy(&seed, sizeof seed) < 0)
		seed = loop_clock_ms() ^ (uint64_t)getpid() << 32;
	S.rid_seed = seed;
	loop_on_tick(flush_dirty, NULL);
	return loop_watch(S.listen_fd, LOOP_READ, on_accept, NULL);
}

/* ---- drain ---- */

static void
on_drain_timeout(void *ud)
{
	log_msg("drain: %d connection(s) still open after drain_timeout; exiting", S.st.open);
	loop_stop();
}

/* Stop accepting, close idle keep-alive connections, let requests in flight finish; the loop
 * stops when the last connection closes or after timeout_ms. */
void
conn_drain(uint32_t timeout_ms)
{
	struct conn *c, *next;

	if (S.draining)
		return;
	S.draining = 1;
	if (S.listen_fd >= 0) {
		loop_unwatch(S.listen_fd);
		close(S.listen_fd);
		S.listen_fd = -1;
	}
	for (c = S.all; c != NULL; c = next) {
		next = c->next;
		if (c->state == C_IDLE || (c->state == C_HEAD && c->rbuf.len == 0))
			conn_close(c);
	}
	if (S.st.open == 0) {
		loop_stop();
		return;
	}
	loop_timer_init(&S.drain_timer);
	loop_timer_set(&S.drain_timer, timeout_ms, on_drain_timeout, NULL);
}

int
conn_draining(void)
{
	return S.draining;
}

void
conn_get_stats(struct conn_stats *st)
{
	*st = S.st;
}
