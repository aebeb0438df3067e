/*
 * buf.c — a byte buffer with a cap (curl's dynbuf idea). len never passes max; every failure
 * leaves the buffer's bytes and len as they were, so the caller can still use what it holds.
 *
 * size is the bytes allocated, so a caller may wrap its own array as { arr, 0, sizeof arr,
 * sizeof arr } and it is never reallocated (growth is only asked for past size, never past
 * max). Allocations double from 256 bytes — powers of two fill their mem runs exactly — and
 * are clamped to max. The bytes are not NUL-terminated: use len.
 */
#include <string.h>
#include "sluice.h"

#define BUF_FIRST 256 /* the first allocation, bytes */

/* The size to grow to for `need` bytes (need <= max): doubling, clamped to max. */
static size_t
grown_size(const struct buf *b, size_t need)
{
	size_t size = b->size ? b->size : BUF_FIRST;

	while (size < need && size <= SIZE_MAX / 2)
		size *= 2;
	if (size < need)
		size = need;
	return size > b->max ? b->max : size;
}

void
buf_init(struct buf *b, size_t max)
{
	b->data = NULL;
	b->len = 0;
	b->size = 0;
	b->max = max;
}

int
buf_reserve(struct buf *b, size_t extra)
{
	size_t size;
	char *p;

	if (extra > b->max - b->len)
		return BUF_FULL;
	if (b->len + extra <= b->size)
		return BUF_OK;
	size = grown_size(b, b->len + extra);
	p = mem_realloc(b->data, size);
	if (p == NULL)
		return BUF_NOMEM;
	b->data = p;
	b->size = size;
	return BUF_OK;
}

int
buf_append_grow(struct buf *b, const void *p, size_t n)
{
	int rc = buf_reserve(b, n);

	if (rc != BUF_OK)
		return rc;
	if (n > 0)
		memcpy(b->data + b->len, p, n);
	b->len += n;
	return BUF_OK;
}

int
buf_printf(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	int rc;

	va_start(ap, fmt);
	rc = buf_vprintf(b, fmt, ap);
	va_end(ap);
	return rc;
}

/*
 * Format into the room there is; if it did not fit, grow to the measured length and redo.
 * vsnprintf always writes a terminator, so the text needs one spare byte: printf cannot fill
 * the very last byte before max (append can).
 */
int
buf_vprintf(struct buf *b, const char *fmt, va_list ap)
{
	size_t room = b->size - b->len;
	va_list again;
	int n, rc;

	va_copy(again, ap);
	n = vsnprintf(room ? b->data + b->len : NULL, room, fmt, again);
	va_end(again);
	if (n < 0)
		return BUF_FULL; /* an encoding error: there is no length to grow to */
	if (n > 0 && (size_t)n >= room) {
		if ((size_t)n >= b->max - b->len)
			return BUF_FULL;
		rc = buf_reserve(b, (size_t)n + 1);
		if (rc != BUF_OK)
			return rc;
		vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
	}
	b->len += (size_t)n;
	return BUF_OK;
}

void
buf_consume(struct buf *b, size_t n)
{
	if (n >= b->len) {
		b->len = 0;
	} else {
		memmove(b->data, b->data + n, b->len - n);
		b->len -= n;
	}
}

void
buf_reset(struct buf *b)
{
	b->len = 0;
}

void
buf_free(struct buf *b)
{
	mem_free(b->data);
	buf_init(b, b->max);
}

/* v in decimal, written backwards from the end of out[21]: returns where the digits start
 * (printf's cost for a number on a hot path is a thousand instructions). */
char *
u64_dec(char out[21], uint64_t v)
{
	char *p = out + 20;

	*p = '\0';
	do
		*--p = (char)('0' + v % 10);
	while ((v /= 10) != 0);
	return p;
}

/* v as 16 lowercase hex digits (ids), most significant first; no NUL. */
void
u64_hex(char out[16], uint64_t v)
{
	static const char hex[] = "0123456789abcdef";

	for (int i = 0; i < 16; i++)
		out[i] = hex[v >> (60 - 4 * i) & 15];
}
