/*
 * json.c — JSON without trees. Reading: jsmn's tokens over the bytes themselves, laid down by a
 * strict validating pass (one pass: jsmn only tokenizes, so it needed a validation pass of its
 * own before it). Writing: values are appended to a capped buffer, strings escaped here.
 */
#include <limits.h>
#include <stdint.h>
#include <string.h>
#include "sluice.h"

#define JSON_MAX_DEPTH 128

/* JSON's whitespace (space, LF, CR, tab) as bits of a mask indexed by the byte. */
#define WS_BITS ((1ull << ' ') | (1ull << '\n') | (1ull << '\r') | (1ull << '\t'))

static inline __attribute__((always_inline)) size_t
skip_ws(const char *s, size_t i, size_t n)
{
	while (i < n && (unsigned char)s[i] <= ' ' && (WS_BITS >> (unsigned char)s[i] & 1))
		i++;
	return i;
}

/* One UTF-8 sequence at s[i] (its first byte >= 0x80): its length, or 0 if malformed (overlong,
 * surrogate, > U+10FFFF). The usual cases first: two bytes, and three outside E0 and ED (whose
 * second bytes have narrower ranges), where every continuation byte is just 10xxxxxx. */
static inline __attribute__((always_inline)) size_t
utf8_len(const unsigned char *s, size_t i, size_t n)
{
	unsigned char c = s[i], lo = 0x80, hi = 0xBF;
	size_t len;

	if (c >= 0xC2 && c <= 0xDF)
		return i + 1 < n && (s[i + 1] & 0xC0) == 0x80 ? 2 : 0;
	if (c >= 0xE1 && c <= 0xEF && c != 0xED)
		return i + 2 < n && (s[i + 1] & 0xC0) == 0x80 && (s[i + 2] & 0xC0) == 0x80 ? 3 : 0;
	if (c == 0xE0 || c == 0xED)
		len = 3, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
	else if (c >= 0xF0 && c <= 0xF4)
		len = 4, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
	else
		return 0;
	if (i + len > n || s[i + 1] < lo || s[i + 1] > hi)
		return 0;
	for (size_t k = 2; k < len; k++)
		if ((s[i + k] & 0xC0) != 0x80)
			return 0;
	return len;
}

/* The bytes among the sixteen at p that are not ordinary string bytes (printable ASCII, neither
 * quote nor backslash) flagged -1. As signed bytes, those from 0x80 on are negative: one
 * comparison finds them and the control characters. */
static inline __attribute__((always_inline)) bytes16
special16(const unsigned char *p)
{
	bytes16 v = load16(p);

	return (v == '"') | (v == '\\') | (v < ' ');
}

/* s[0..2] is a three-byte UTF-8 sequence led by E1 to EF but ED (most of CJK: E0 and ED, whose
 * second bytes have narrower ranges, are utf8_len's), tested as one word of s[0..3]. */
static inline __attribute__((always_inline)) int
common3(const unsigned char *s)
{
	uint32_t w;

	memcpy(&w, s, 4);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	w = __builtin_bswap32(w);
#endif
	return (w & 0xC0C0F0) == 0x8080E0 && (w & 0x0F) != 0 && (w & 0x0F) != 0x0D;
}

/* c follows a backslash as one of JSON's one-letter escapes: " \ / b f n r t. */
static inline __attribute__((always_inline)) int
simple_escape(unsigned char c)
{
	return c == '"' || c == '\\' || c == '/' || c == 'b' || c == 'f' || c == 'n' || c == 'r' || c == 't';
}

/* A string starting at the quote s[i]: the index after its closing quote, or 0 if invalid. */
static inline __attribute__((always_inline)) size_t
scan_string(const char *s, size_t i, size_t n)
{
	const unsigned char *u = (const unsigned char *)s;

	for (i++;;) {
		size_t l;

		/* A run of ordinary bytes first: sixteen at a time while there are sixteen; then the
		 * text's last sixteen, those before i masked out (one by one in a text shorter). */
		if (i + 16 <= n) {
			if ((l = first16(special16(u + i))) == 16) {
				i += 16;
				continue;
			}
			i += l; /* before n: no need to check */
		} else {
			if (n >= 16)
				i = n - 16 + first16(special16(u + n - 16) & from16(i - (n - 16)));
			else
				while (i < n && u[i] >= 0x20 && u[i] < 0x80 && u[i] != '"' && u[i] != '\\')
					i++;
			if (i >= n)
				return 0;
		}
		if (u[i] == '"')
			return i + 1;
		if (u[i] < 0x20)
			return 0;
		if (u[i] == '\\') {
			if (i + 1 >= n)
				return 0;
			if (s[i + 1] == 'u') {
				for (size_t k = 2; k < 6; k++)
					if (i + k >= n || !((s[i + k] >= '0' && s[i + k] <= '9') ||
					    ((s[i + k] | 0x20) >= 'a' && (s[i + k] | 0x20) <= 'f')))
						return 0;
				i += 6;
			} else if (simple_escape((unsigned char)s[i + 1])) {
				i += 2;
			} else {
				return 0;
			}
			continue;
		}
		while (i < n && u[i] >= 0x80) /* a run of multi-byte characters (most text that is not English) */
			if (i + 4 <= n && common3(u + i))
				i += 3;
			else if ((l = utf8_len(u, i, n)) == 0)
				return 0;
			else
				i += l;
	}
}

static size_t
scan_digits(const char *s, size_t i, size_t n)
{
	while (i < n && s[i] >= '0' && s[i] <= '9')
		i++;
	return i;
}

/* The four bytes at p are w's. */
static inline __attribute__((always_inline)) int
word4_is(const char *p, const char *w)
{
	uint32_t a, b;

	memcpy(&a, p, 4);
	memcpy(&b, w, 4);
	return a == b;
}

/* A number or literal starting at s[i]: the index after it, or 0 if invalid. */
static size_t
scan_scalar(const char *s, size_t i, size_t n)
{
	size_t d;

	if (s[i] >= 'f') { /* literals all start with a letter from f on; a number never does */
		size_t l = s[i] == 'f' ? 5 : 4; /* false; true, null */

		if (n - i >= l && ((s[i] == 'n' && word4_is(s + i, "null")) || (s[i] == 't' && word4_is(s + i, "true")) ||
		    (s[i] == 'f' && word4_is(s + i + 1, "alse"))))
			return i + l;
		return 0;
	}
	if (s[i] == '-')
		i++;
	if (i < n && s[i] == '0')
		i++;
	else if ((d = scan_digits(s, i, n)) > i)
		i = d;
	else
		return 0;
	if (i == n || (s[i] != '.' && (s[i] | 0x20) != 'e'))
		return i; /* an integer, as most numbers are */
	if (s[i] == '.') {
		if ((d = scan_digits(s, i + 1, n)) == i + 1)
			return 0;
		i = d;
	}
	if (i < n && (s[i] == 'e' || s[i] == 'E')) {
		i++;
		if (i < n && (s[i] == '+' || s[i] == '-'))
			i++;
		if ((d = scan_digits(s, i, n)) == i)
			return 0;
		i = d;
	}
	return i;
}

/* The byte at the first position from *i on that is not whitespace, *i moved there; 0 at the
 * end, or at a control byte (which is never valid between tokens either): where the end is
 * allowed, the caller tells the two apart by *i == n. The usual case, no whitespace at all, is
 * a bounds check, a load and one compare. */
static inline __attribute__((always_inline)) unsigned char
next_byte(const char *s, size_t *i, size_t n)
{
	for (; *i < n; ++*i) {
		unsigned char c = (unsigned char)s[*i];

		if (c > ' ')
			return c;
		/* c < 32 past a space: a 32-bit mask, which is an operand (a 64-bit one was loaded into a
		 * register ahead of every use, whitespace or not) */
		if (c != ' ' && !((1u << c) & (1u << '\n' | 1u << '\r' | 1u << '\t')))
			return 0;
	}
	return 0;
}

/*
 * The tokens being laid down: those past cap are counted, not stored, so one call both checks
 * and sizes (cap 0) and the caller can retry with room for the count. A token is stored whole
 * (its size known: 1 for a key, a container's written when it closes), so nothing is ever
 * read back and incremented.
 */
struct tokens {
	jsmntok_t *t, *end; /* the next token's room (no index to multiply), and the room's end */
	int        n;
};

static inline __attribute__((always_inline)) int
tok_add(struct tokens *z, jsmntype_t type, size_t start, size_t end, int size, int parent)
{
	if (z->t < z->end) { /* field by field: a compound literal was built on the stack, then copied */
		z->t->type = type;
		z->t->start = (int)start;
		z->t->end = (int)end;
		z->t->size = size;
		z->t->parent = parent;
		z->t++;
	}
	return z->n++;
}

/*
 * A strict RFC 8259 check of the whole text in one pass without recursion, laying down the
 * tokens jsmn (strict, with parent links) gives for the same text: type, start and end (a
 * string's inside its quotes), size (an object's keys, an array's elements, 1 for a key) and
 * parent (a value's key, a key's object, an element's array); the unit tests hold the two to
 * the same answers. jsmn alone lets through missing or doubled commas, stray colons, bad
 * literals and raw control characters; nothing here does. Returns the token count (tokens past
 * cap counted, not stored) or -1 for malformed JSON.
 *
 * The innermost container (its token, its count of keys or elements so far, its closing
 * bracket) lives in variables; the ones around it wait in up_tok[], up_size[], up_close[].
 * When next is not NULL, next[k] is set for each container k stored: the index of the token
 * after it and all inside it.
 */
static int
tokenize(const char *s, size_t n, jsmntok_t *tok, int cap, int *next)
{
	int up_tok[JSON_MAX_DEPTH], up_size[JSON_MAX_DEPTH]; /* apart: indexed with no multiply */
	unsigned char up_close[JSON_MAX_DEPTH];
	struct tokens z = { tok, tok != NULL ? tok + cap : NULL, 0 };
	int depth = 0, cont = -1, size = 0, parent = -1;
	size_t i = 0, e;
	unsigned char c, close = 1; /* 1 at the top: no byte next_byte gives */

	if (n >= INT_MAX)
		return -1;
	c = next_byte(s, &i, n);
value: /* a value starting with c at i, its parent known */
	if (c == '"') {
		if ((e = scan_string(s, i, n)) == 0)
			return -1;
		tok_add(&z, JSMN_STRING, i + 1, e - 1, 0, parent);
		i = e;
	} else if (c == '{' || c == '[') {
		if (depth == JSON_MAX_DEPTH)
			return -1;
		up_tok[depth] = cont, up_size[depth] = size, up_close[depth++] = close;
		cont = tok_add(&z, c == '{' ? JSMN_OBJECT : JSMN_ARRAY, i, (size_t)-1, 0, parent);
		size = 0, close = c + 2; /* '{' + 2 is '}', '[' + 2 is ']' */
		if (++i < n && s[i] == '"' && close == '}') { /* the first key, right there */
			c = '"';
			goto key;
		}
		c = next_byte(s, &i, n);
		if (c == close)
			goto close;
		if (close == '}')
			goto key;
		size++, parent = cont;
		goto value;
	} else {
		if (c == 0 || (e = scan_scalar(s, i, n)) == 0) /* c 0: the end, or a control byte */
			return -1;
		tok_add(&z, JSMN_PRIMITIVE, i, e, 0, parent);
		i = e;
	}
after: /* after a value: a comma, the container's close, or the end */
	if (close == '}' && i + 1 < n && s[i] == ',' && s[i + 1] == '"') { /* the next key, right there */
		c = '"', i++;
		goto key;
	}
	c = next_byte(s, &i, n);
	if (c == ',' && depth > 0) {
		i++;
		c = next_byte(s, &i, n);
		if (close == '}')
			goto key;
		size++, parent = cont;
		goto value;
	}
	if (c != close)
		return depth == 0 && i == n ? z.n : -1; /* nothing may follow the one top-level value */
close: /* s[i] closes the innermost container */
	if (cont < cap) {
		tok[cont].end = (int)i + 1, tok[cont].size = size;
		if (next != NULL)
			next[cont] = z.n;
	}
	depth--;
	cont = up_tok[depth], size = up_size[depth], close = up_close[depth];
	i++;
	goto after;
key: /* a key starting with c at i, its colon, then its value */
	if (c != '"' || (e = scan_string(s, i, n)) == 0)
		return -1;
	size++;
	parent = tok_add(&z, JSMN_STRING, i + 1, e - 1, 1, cont);
	i = e;
	/* The colon right after the key, then the value right after it or after one space, as
	 * encoders write them: the bytes compared in place. Anything else: the general way. */
	if (i + 2 < n && s[i] == ':' && (unsigned char)s[i + 1] > ' ')
		c = (unsigned char)s[++i];
	else if (i + 2 < n && s[i] == ':' && s[i + 1] == ' ' && (unsigned char)s[i + 2] > ' ')
		c = (unsigned char)s[i += 2];
	else if (next_byte(s, &i, n) == ':')
		i++, c = next_byte(s, &i, n);
	else
		return -1;
	goto value;
}

int
json_valid(const char *s, size_t n)
{
	return tokenize(s, n, NULL, 0, NULL) > 0;
}

/* A first pass's room: one token per 4 bytes (denser than any chat request: a long prompt is a
 * few tokens in 200 KiB), at most JSON_GUESS_MAX tokens (1.25 MiB, given back at once). */
#define JSON_GUESS_MAX 65536

/* Tokenize src, tokens in the arena, exactly as many as there are. One pass into a room from mem
 * that is given back at once (the tokens copied), so the arena takes no guess; only a text
 * denser than the guess, or short memory, takes a counting pass first. Returns the token count,
 * or -1 for malformed JSON, -2 when memory is short. No skip links (a request body may be
 * large; what reads it skips by bisection). */
int
json_parse(struct json *j, struct arena *a, const char *src, size_t len)
{
	size_t guess = len / 4 + 16 < JSON_GUESS_MAX ? len / 4 + 16 : JSON_GUESS_MAX;
	jsmntok_t *room = mem_alloc(guess * sizeof *room), *tok = NULL;
	int n = tokenize(src, len, room, room != NULL ? (int)guess : 0, NULL);

	if (n > 0 && (tok = arena_alloc(a, (size_t)n * sizeof *tok)) != NULL) {
		if (room != NULL && (size_t)n <= guess)
			memcpy(tok, room, (size_t)n * sizeof *tok);
		else
			tokenize(src, len, tok, n, NULL);
		*j = (struct json){ .src = src, .tok = tok, .ntok = n };
	}
	mem_free(room);
	if (n <= 0)
		return -1;
	return tok != NULL ? n : -2;
}

/*
 * The same, with tokens in a buffer reused from call to call (a stream's chunks), each with its
 * skip link after them (the buffer holds cap tokens, then cap links): one pass while the tokens
 * fit what the largest chunk so far needed, which is the rule; no allocation once the buffer is
 * that large. A fresh buffer starts at a guess, one token per 10 bytes and 8 more (providers'
 * chunks run at one per 9 to 12 bytes, and the buffer's rounding up to a power of two adds
 * room), so that the first chunk, too, is usually one pass; a more generous guess tipped a
 * 250-byte chunk's buffer from 1 to 2 KiB, a KiB more in every stream. A buffer that cannot
 * grow to hold the links as well still takes the tokens alone if it can hold them.
 */
int
json_parse_buf(struct json *j, struct buf *store, const char *src, size_t len)
{
	const size_t per = sizeof(jsmntok_t) + sizeof(int);
	jsmntok_t *tok;
	int n, cap;

	if (store->size == 0)
		(void)buf_reserve(store, (len / 10 + 8) * per); /* short memory: no guess */
	for (;;) {
		tok = (jsmntok_t *)(void *)store->data, cap = (int)(store->size / per);
		if ((n = tokenize(src, len, tok, cap, (int *)(void *)(tok + cap))) <= 0)
			return -1;
		if (n <= cap)
			break;
		store->len = 0;
		if (buf_reserve(store, (size_t)n * per) == BUF_OK)
			continue;
		if (buf_reserve(store, (size_t)n * sizeof(jsmntok_t)) != BUF_OK)
			return -2;
		tok = (jsmntok_t *)(void *)store->data;
		*j = (struct json){ .src = src, .tok = tok, .ntok = tokenize(src, len, tok, n, NULL) };
		return n;
	}
	*j = (struct json){ .src = src, .tok = tok, .next = (int *)(void *)(tok + cap), .ntok = n };
	return n;
}

/* Index of the token after token i and everything inside it: a string's or a number's is the
 * next; a container's is its skip link, or without links the first token that starts at or past
 * its end (tokens are in the order they start), found by bisection. */
static inline __attribute__((always_inline)) int
skip(const struct json *j, int i)
{
	int end, lo, hi;

	if (j->tok[i].type != JSMN_OBJECT && j->tok[i].type != JSMN_ARRAY)
		return i + 1;
	if (j->next != NULL)
		return j->next[i];
	end = j->tok[i].end, lo = i + 1, hi = j->ntok;
	while (lo < hi) {
		int mid = lo + (hi - lo) / 2;

		if (j->tok[mid].start < end)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

int
json_skip(const struct json *j, int i)
{
	return skip(j, i);
}

/* n bytes at a and b are equal; eight or four at a time (keys are short: no call to memcmp). */
static inline __attribute__((always_inline)) int
bytes_eq(const char *a, const char *b, size_t n)
{
	const unsigned char *x = (const unsigned char *)a, *y = (const unsigned char *)b;
	uint32_t u[4];

	if (n >= 8) {
		for (size_t i = 0; i + 8 < n; i += 8)
			if (load_le64(x + i) != load_le64(y + i))
				return 0;
		return load_le64(x + n - 8) == load_le64(y + n - 8); /* the last eight, overlapping */
	}
	if (n >= 4) { /* the first four and the last four, overlapping */
		memcpy(&u[0], x, 4), memcpy(&u[1], y, 4), memcpy(&u[2], x + n - 4, 4), memcpy(&u[3], y + n - 4, 4);
		return u[0] == u[1] && u[2] == u[3];
	}
	for (size_t i = 0; i < n; i++)
		if (x[i] != y[i])
			return 0;
	return 1;
}

/* Token t is a string whose raw bytes are s. */
static inline __attribute__((always_inline)) int
tok_eq(const struct json *j, const jsmntok_t *t, const char *s, size_t n)
{
	return t->type == JSMN_STRING && (size_t)(t->end - t->start) == n && bytes_eq(j->src + t->start, s, n);
}

/* The value token of key in object token obj, or -1. */
int
json_findn(const struct json *j, int obj, const char *key, size_t len)
{
	int i, n;

	if (obj < 0 || obj >= j->ntok || j->tok[obj].type != JSMN_OBJECT)
		return -1;
	n = j->tok[obj].size;
	i = obj + 1;
	for (int k = 0; k < n && i + 1 < j->ntok; k++) {
		if (tok_eq(j, &j->tok[i], key, len))
			return i + 1;
		i = skip(j, i + 1);
	}
	return -1;
}

/* Several keys of one object in one walk over its keys (a decoder reading five fields of one
 * object would otherwise walk it five times): vals[k] is the value token of keys[k] (its first
 * occurrence, as json_find gives), or -1. The keys asked for must differ from one another. */
void
json_fields(const struct json *j, int obj, const struct json_key *keys, int nkeys, int *vals)
{
	uint64_t lens = 0; /* the lengths asked for as bits (mod 64) */
	int left = nkeys;

	for (int k = 0; k < nkeys; k++)
		vals[k] = -1, lens |= keys[k].bit;
	if (obj < 0 || obj >= j->ntok || j->tok[obj].type != JSMN_OBJECT)
		return;
	for (int m = j->tok[obj].size, i = obj + 1; m > 0 && i + 1 < j->ntok; m--, i = skip(j, i + 1)) {
		const jsmntok_t *t = &j->tok[i];
		size_t len = (size_t)(t->end - t->start);
		int k = 0;

		if (!(lens >> (len & 63) & 1)) /* most keys: no length asked for is theirs */
			continue;
		while (k < nkeys && !(keys[k].n == len && vals[k] < 0 && bytes_eq(j->src + t->start, keys[k].s, len)))
			k++; /* the length rules out nearly all; a key already found stays its first */
		if (k < nkeys && (vals[k] = i + 1, --left == 0))
			return;
	}
}

/* Token i is a string equal to s (compared raw: keys we look up never need escapes). */
int
json_eqn(const struct json *j, int i, const char *s, size_t n)
{
	return tok_eq(j, &j->tok[i], s, n);
}

int
json_is_null(const struct json *j, int i)
{
	const jsmntok_t *t = &j->tok[i];

	return t->type == JSMN_PRIMITIVE && j->src[t->start] == 'n';
}

/* Where the trailing whitespace after offset `from` ends. */
size_t
json_skip_end(const char *s, size_t from, size_t len)
{
	return skip_ws(s, from, len);
}

/* Append s as a JSON string, quoted and escaped (control characters as \u00XX). s may be
 * anything (a provider's body that is not JSON, a message cut short, a client's path): a byte
 * that does not begin a valid UTF-8 sequence becomes \ufffd, so what is written is always
 * valid JSON, which strict parsers (ours among them) reject otherwise. */
int
json_escape(struct buf *b, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *u = (const unsigned char *)s;
	size_t run = 0;
	int rc;

	if ((rc = buf_append(b, "\"", 1)) != BUF_OK)
		return rc;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = u[i];
		char esc[6] = { '\\', 0, '0', '0', 0, 0 };
		size_t elen = 2, l;

		if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\')
			continue;
		if (c >= 0x80 && (l = utf8_len(u, i, n)) > 0) {
			i += l - 1;
			continue;
		}
		/* Flush the plain run before this character, then its escape. */
		if ((rc = buf_append(b, s + run, i - run)) != BUF_OK)
			return rc;
		run = i + 1;
		if (c >= 0x80) {
			if ((rc = buf_append(b, "\\ufffd", 6)) != BUF_OK)
				return rc;
			continue;
		}
		switch (c) {
		case '"':  esc[1] = '"'; break;
		case '\\': esc[1] = '\\'; break;
		case '\n': esc[1] = 'n'; break;
		case '\r': esc[1] = 'r'; break;
		case '\t': esc[1] = 't'; break;
		default:
			esc[1] = 'u';
			esc[4] = hex[c >> 4];
			esc[5] = hex[c & 15];
			elen = 6;
		}
		if ((rc = buf_append(b, esc, elen)) != BUF_OK)
			return rc;
	}
	if ((rc = buf_append(b, s + run, n - run)) != BUF_OK)
		return rc;
	return buf_append(b, "\"", 1);
}

/* OpenAI's error envelope: {"error":{"message","type","param","code"}}; msg is plain text. */
int
json_error(struct buf *b, const char *msg, size_t msglen, const char *type, const char *code,
    const char *param)
{
	int rc = buf_puts(b, "{\"error\":{\"message\":");

	rc = rc ? rc : json_escape(b, msg, msglen);
	rc = rc ? rc : buf_printf(b, ",\"type\":\"%s\",\"param\":", type);
	rc = rc ? rc : (param ? json_escape(b, param, strlen(param)) : buf_puts(b, "null"));
	rc = rc ? rc : (code ? buf_printf(b, ",\"code\":\"%s\"}}", code) : buf_puts(b, ",\"code\":null}}"));
	return rc;
}

static int
hex4(const char *s, unsigned *out)
{
	unsigned v = 0;

	for (int i = 0; i < 4; i++) {
		char c = s[i];
		v <<= 4;
		if (c >= '0' && c <= '9')
			v |= (unsigned)(c - '0');
		else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
			v |= (unsigned)((c | 0x20) - 'a' + 10);
		else
			return -1;
	}
	*out = v;
	return 0;
}

static size_t
utf8_put(char *o, unsigned cp)
{
	if (cp < 0x80)
		return o[0] = (char)cp, 1;
	if (cp < 0x800)
		return o[0] = (char)(0xC0 | cp >> 6), o[1] = (char)(0x80 | (cp & 63)), 2;
	if (cp < 0x10000)
		return o[0] = (char)(0xE0 | cp >> 12), o[1] = (char)(0x80 | (cp >> 6 & 63)),
		    o[2] = (char)(0x80 | (cp & 63)), 3;
	return o[0] = (char)(0xF0 | cp >> 18), o[1] = (char)(0x80 | (cp >> 12 & 63)),
	    o[2] = (char)(0x80 | (cp >> 6 & 63)), o[3] = (char)(0x80 | (cp & 63)), 4;
}

/* The text of a JSON string's contents (s, n: between the quotes, already validated), decoded
 * into out (at most outlen - 1 bytes, NUL-terminated, cut on overflow). Returns its length. */
size_t
json_unescape(const char *s, size_t n, char *out, size_t outlen)
{
	size_t o = 0;

	for (size_t i = 0; i < n && o + 4 < outlen;) {
		unsigned cp, lo;

		if (s[i] != '\\') {
			out[o++] = s[i++];
			continue;
		}
		if (i + 1 >= n)
			break;
		switch (s[i + 1]) {
		case 'n': out[o++] = '\n'; break;
		case 't': out[o++] = '\t'; break;
		case 'r': out[o++] = '\r'; break;
		case 'b': out[o++] = '\b'; break;
		case 'f': out[o++] = '\f'; break;
		case 'u':
			if (i + 6 > n || hex4(s + i + 2, &cp) < 0)
				goto done;
			i += 4;
			if (cp >= 0xD800 && cp < 0xDC00 && i + 8 <= n && s[i + 2] == '\\' && s[i + 3] == 'u' &&
			    hex4(s + i + 4, &lo) == 0 && lo >= 0xDC00 && lo < 0xE000) {
				cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
				i += 6;
			} else if (cp >= 0xD800 && cp < 0xE000) {
				cp = 0xFFFD; /* a lone surrogate */
			}
			o += utf8_put(out + o, cp);
			break;
		default: out[o++] = s[i + 1]; break; /* \" \\ \/ */
		}
		i += 2;
	}
done:
	out[o] = '\0';
	return o;
}

/* Token i is the literal lit (true, false, null). */
int
json_eq_literal(const struct json *j, int i, const char *lit)
{
	const jsmntok_t *t = &j->tok[i];
	size_t n = strlen(lit);

	return t->type == JSMN_PRIMITIVE && (size_t)(t->end - t->start) == n && memcmp(j->src + t->start, lit, n) == 0;
}
