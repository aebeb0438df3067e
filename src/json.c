/*
 * json.c — JSON without trees. Reading: jsmn tokens over the request's own bytes (tokens in the
 * request's arena; a first pass counts them so the array is exactly as large as needed).
 * Writing: values are appended to a capped buffer, strings escaped here.
 */
#include <jsmn.h> /* first, without JSMN_HEADER: this file holds jsmn's code */
#include <string.h>
#include "sluice.h"

#define JSON_MAX_DEPTH 128

static size_t
skip_ws(const char *s, size_t i, size_t n)
{
	return json_skip_end(s, i, n);
}

/* One UTF-8 sequence at s[i]: its length, or 0 if malformed (overlong, surrogate, > U+10FFFF). */
static size_t
utf8_len(const unsigned char *s, size_t i, size_t n)
{
	unsigned char c = s[i];
	size_t len;
	unsigned char lo = 0x80, hi = 0xBF;

	if (c < 0x80)
		return 1;
	if (c >= 0xC2 && c <= 0xDF)
		len = 2;
	else if (c >= 0xE0 && c <= 0xEF)
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

/* A string starting at the quote s[i]: the index after its closing quote, or 0 if invalid. */
static size_t
scan_string(const char *s, size_t i, size_t n)
{
	const unsigned char *u = (const unsigned char *)s;

	for (i++; i < n;) {
		size_t l;

		/* A run of ordinary bytes (printable ASCII, neither quote nor backslash) first. */
		while (u[i] >= 0x20 && u[i] < 0x80 && u[i] != '"' && u[i] != '\\')
			if (++i == n)
				return 0;
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
			} else if (strchr("\"\\/bfnrt", s[i + 1]) != NULL && s[i + 1] != '\0') {
				i += 2;
			} else {
				return 0;
			}
			continue;
		}
		if ((l = utf8_len(u, i, n)) == 0)
			return 0;
		i += l;
	}
	return 0;
}

static size_t
scan_digits(const char *s, size_t i, size_t n)
{
	while (i < n && s[i] >= '0' && s[i] <= '9')
		i++;
	return i;
}

/* A number or literal starting at s[i]: the index after it, or 0 if invalid. */
static size_t
scan_scalar(const char *s, size_t i, size_t n)
{
	static const char *const lits[] = { "true", "false", "null" };
	size_t d;

	/* Literals all start with a letter from f on; a number never does. */
	for (size_t k = 0; k < NELEM(lits) && s[i] >= 'f'; k++) {
		size_t l = strlen(lits[k]);
		if (n - i >= l && memcmp(s + i, lits[k], l) == 0)
			return i + l;
	}
	if (s[i] == '-')
		i++;
	if (i < n && s[i] == '0')
		i++;
	else if ((d = scan_digits(s, i, n)) > i)
		i = d;
	else
		return 0;
	if (i < n && s[i] == '.') {
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

/*
 * A strict RFC 8259 check of the whole body, in one pass without recursion. jsmn only
 * tokenizes: it lets through missing or doubled commas, stray colons, bad literals and raw
 * control characters, so every body is validated here first.
 */
int
json_valid(const char *s, size_t n)
{
	enum { VALUE, VALUE_OR_CLOSE, KEY, KEY_OR_CLOSE, COLON, AFTER } st = VALUE;
	char stack[JSON_MAX_DEPTH];
	int depth = 0;
	size_t i = skip_ws(s, 0, n);

	while (i < n) {
		char c = s[i];

		switch (st) {
		case VALUE_OR_CLOSE:
			if (c == ']') {
				depth--, i++, st = AFTER;
				break;
			}
			/* fall through */
		case VALUE:
			if (c == '{' || c == '[') {
				if (depth == JSON_MAX_DEPTH)
					return 0;
				stack[depth++] = c;
				i++;
				st = c == '{' ? KEY_OR_CLOSE : VALUE_OR_CLOSE;
			} else if (c == '"') {
				if ((i = scan_string(s, i, n)) == 0)
					return 0;
				st = AFTER;
			} else {
				if ((i = scan_scalar(s, i, n)) == 0)
					return 0;
				st = AFTER;
			}
			break;
		case KEY_OR_CLOSE:
			if (c == '}') {
				depth--, i++, st = AFTER;
				break;
			}
			/* fall through */
		case KEY:
			if (c != '"' || (i = scan_string(s, i, n)) == 0)
				return 0;
			st = COLON;
			break;
		case COLON:
			if (c != ':')
				return 0;
			i++, st = VALUE;
			break;
		case AFTER:
			if (depth == 0)
				return 0; /* something after the one top-level value */
			if (c == ',')
				st = stack[depth - 1] == '{' ? KEY : VALUE;
			else if ((c == '}' && stack[depth - 1] == '{') || (c == ']' && stack[depth - 1] == '['))
				depth--;
			else
				return 0;
			i++;
			break;
		}
		i = skip_ws(s, i, n);
	}
	return st == AFTER && depth == 0;
}

/* Validate src and count its tokens: the count, or -1 for malformed JSON. */
static int
json_count(const char *src, size_t len)
{
	jsmn_parser p;
	size_t b;

	if (!json_valid(src, len))
		return -1;
	b = skip_ws(src, 0, len);
	if (src[b] != '{' && src[b] != '[')
		return 1; /* a lone scalar */
	jsmn_init(&p);
	return jsmn_parse(&p, src, len, NULL, 0);
}

/* Fill the n tokens counted by json_count into tok. */
static int
json_fill(struct json *j, const char *src, size_t len, jsmntok_t *tok, int n)
{
	jsmn_parser p;
	size_t b = skip_ws(src, 0, len), e = len;

	j->tok = tok;
	j->src = src;
	j->ntok = n;
	if (src[b] == '{' || src[b] == '[') {
		jsmn_init(&p);
		return jsmn_parse(&p, src, len, tok, (unsigned)n) == n ? n : -1;
	}
	/* A lone scalar: jsmn's strict mode wants a delimiter after it, so it is one token here. */
	while (e > b && (src[e - 1] == ' ' || src[e - 1] == '\t' || src[e - 1] == '\n' || src[e - 1] == '\r'))
		e--;
	tok[0].type = src[b] == '"' ? JSMN_STRING : JSMN_PRIMITIVE;
	tok[0].start = (int)b + (src[b] == '"');
	tok[0].end = (int)e - (src[b] == '"');
	tok[0].size = 0;
	tok[0].parent = -1;
	return 1;
}

/* Tokenize src, tokens in the arena. Returns the token count, or -1 for malformed JSON, -2 when
 * memory is short. */
int
json_parse(struct json *j, struct arena *a, const char *src, size_t len)
{
	int n = json_count(src, len);
	jsmntok_t *tok;

	if (n <= 0)
		return -1;
	if ((tok = arena_alloc(a, (size_t)n * sizeof *tok)) == NULL)
		return -2;
	return json_fill(j, src, len, tok, n);
}

/* The same, with tokens in a buffer reused from call to call (a stream's chunks): no
 * allocation once the buffer is as large as the largest chunk needs. */
int
json_parse_buf(struct json *j, struct buf *store, const char *src, size_t len)
{
	size_t cap = store->size / sizeof(jsmntok_t), b;
	jsmn_parser p;
	int n;

	if (!json_valid(src, len))
		return -1;
	b = skip_ws(src, 0, len);
	/* Usually the tokens fit what the last chunk needed: one jsmn pass, not two. */
	if (cap > 0 && (src[b] == '{' || src[b] == '[')) {
		jsmn_init(&p);
		n = jsmn_parse(&p, src, len, (jsmntok_t *)(void *)store->data, (unsigned)cap);
		if (n > 0) {
			j->tok = (jsmntok_t *)(void *)store->data;
			j->src = src;
			j->ntok = n;
			return n;
		}
		if (n != JSMN_ERROR_NOMEM)
			return -1;
	}
	if ((n = json_count(src, len)) <= 0)
		return -1;
	store->len = 0;
	if (buf_reserve(store, (size_t)n * sizeof(jsmntok_t)) != BUF_OK)
		return -2;
	return json_fill(j, src, len, (jsmntok_t *)(void *)store->data, n);
}

/* Index of the token after token i and everything inside it. */
int
json_skip(const struct json *j, int i)
{
	int end = j->tok[i].end;

	i++;
	while (i < j->ntok && j->tok[i].start < end)
		i++;
	return i;
}

/* The value token of key in object token obj, or -1. */
int
json_find(const struct json *j, int obj, const char *key)
{
	int i, n;

	if (obj < 0 || obj >= j->ntok || j->tok[obj].type != JSMN_OBJECT)
		return -1;
	n = j->tok[obj].size;
	i = obj + 1;
	for (int k = 0; k < n && i + 1 < j->ntok; k++) {
		if (json_eq(j, i, key))
			return i + 1;
		i = json_skip(j, i + 1);
	}
	return -1;
}

/* Token i is a string equal to s (compared raw: keys we look up never need escapes). */
int
json_eq(const struct json *j, int i, const char *s)
{
	const jsmntok_t *t = &j->tok[i];
	size_t n = strlen(s);

	return t->type == JSMN_STRING && (size_t)(t->end - t->start) == n &&
	    memcmp(j->src + t->start, s, n) == 0;
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
	while (from < len && (s[from] == ' ' || s[from] == '\t' || s[from] == '\n' || s[from] == '\r'))
		from++;
	return from;
}

/* Append s as a JSON string, quoted and escaped (control characters as \u00XX). */
int
json_escape(struct buf *b, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	size_t run = 0;
	int rc;

	if ((rc = buf_append(b, "\"", 1)) != BUF_OK)
		return rc;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		char esc[6] = { '\\', 0, '0', '0', 0, 0 };
		size_t elen = 2;

		if (c >= 0x20 && c != '"' && c != '\\')
			continue;
		/* Flush the plain run before this character, then its escape. */
		if ((rc = buf_append(b, s + run, i - run)) != BUF_OK)
			return rc;
		run = i + 1;
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
