/*
 * test_json_tokens.c — json.c lays down jsmn's tokens in its validating pass; jsmn itself (strict,
 * with parent links, as configured for sluice) is the reference. Every valid text here must give
 * exactly jsmn's tokens — type, start, end, size, parent — through json_parse and through
 * json_parse_buf (a fresh store, one too small, one reused). The texts: every recorded provider
 * body and stream event in test/fixtures, hand-picked shapes, and a few thousand generated
 * documents (seeded: the same every run) with strings of every length around the 8-byte steps of
 * the string scanner and every kind of byte at every offset in them. Whether a text is JSON at
 * all is held to a plain recursive reference (below) over every cut and every one-byte change of
 * a few texts: a byte deleted, replaced or inserted, at every offset.
 */
#include <jsmn.h> /* first, without JSMN_HEADER: this file holds jsmn's code, the reference */
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include "sluice.h"
#include "unit.h"

#define MAX_TOKENS 4096

static int compared, differed;

/* jsmn's answer for src: the count (negative: jsmn's error), tokens in tok. */
static int
jsmn_tokens(const char *src, size_t len, jsmntok_t *tok)
{
	jsmn_parser p;

	jsmn_init(&p);
	return jsmn_parse(&p, src, len, tok, MAX_TOKENS);
}

static int
same_tokens(const jsmntok_t *a, const jsmntok_t *b, int n, const char *what, const char *src, size_t len)
{
	for (int i = 0; i < n; i++)
		if (a[i].type != b[i].type || a[i].start != b[i].start || a[i].end != b[i].end ||
		    a[i].size != b[i].size || a[i].parent != b[i].parent)
			return CHECKF(0, "%s: token %d differs from jsmn's (type %d/%d start %d/%d end %d/%d size %d/%d "
			    "parent %d/%d) in '%.*s'", what, i, a[i].type, b[i].type, a[i].start, b[i].start, a[i].end,
			    b[i].end, a[i].size, b[i].size, a[i].parent, b[i].parent, (int)(len > 200 ? 200 : len), src);
	return 1;
}

/* json_skip over b's tokens (json_parse_buf's: by its skip links, when it has them) answers as
 * over a's (json_parse's: by bisection), token by token. */
static int
same_skips(const struct json *a, const struct json *b, int links, const char *what, const char *src, size_t len)
{
	if (!CHECKF((b->next != NULL) == links, "%s: skip links %s", what, links ? "missing" : "where none fit"))
		return 0;
	for (int i = 0; i < a->ntok; i++)
		if (json_skip(a, i) != json_skip(b, i))
			return CHECKF(0, "%s: json_skip(%d) %d, by bisection %d in '%.*s'", what, i, json_skip(b, i),
			    json_skip(a, i), (int)(len > 200 ? 200 : len), src);
	return 1;
}

/* src is valid JSON with an object or array at the top: ours must equal jsmn's, every way in. */
static void
match(const char *src, size_t len)
{
	static jsmntok_t ref[MAX_TOKENS], small[4];
	struct arena a;
	struct json j, ja;
	struct buf store;
	int n = jsmn_tokens(src, len, ref), ok = 1;

	compared++;
	arena_init(&a);
	if (!CHECKF(n > 0, "jsmn refuses '%.*s' (%d)", (int)(len > 200 ? 200 : len), src, n))
		goto out;
	ok &= CHECKF(json_parse(&ja, &a, src, len) == n, "json_parse: %d tokens, jsmn %d in '%.*s'", ja.ntok, n,
	    (int)(len > 200 ? 200 : len), src) && same_tokens(ja.tok, ref, n, "json_parse", src, len);
	if (!ok)
		goto out;

	buf_init(&store, 1u << 20); /* fresh: starts at a guess, grows when the guess is short */
	ok &= CHECK(json_parse_buf(&j, &store, src, len) == n) && same_tokens(j.tok, ref, n, "fresh store", src, len) &&
	    same_skips(&ja, &j, 1, "fresh store", src, len);
	/* reused: the same tokens again, and again after a smaller text left its own in the store */
	ok &= CHECK(json_parse_buf(&j, &store, "[[1]]", 5) == 3);
	ok &= CHECK(json_parse_buf(&j, &store, src, len) == n) && same_tokens(j.tok, ref, n, "reused store", src, len) &&
	    same_skips(&ja, &j, 1, "reused store", src, len);
	buf_free(&store);

	/* Room for four tokens: with their skip links, three; four alone (skipped by bisection). */
	store = (struct buf){ .data = (char *)small, .size = sizeof small, .max = sizeof small };
	ok &= n <= 4 ? CHECK(json_parse_buf(&j, &store, src, len) == n) && same_tokens(j.tok, ref, n, "small", src, len) &&
	                   same_skips(&ja, &j, n <= 3, "small", src, len)
	             : CHECK(json_parse_buf(&j, &store, src, len) == -2); /* too many for a store that cannot grow */
out:
	differed += !ok;
	arena_release(&a);
}

/* ---- hand-picked ---- */

static void
test_shapes(void)
{
	static const char *const rows[] = {
		"{}", "[]", "[[]]", "[{}]", "{\"a\":{}}", "{\"a\":[]}", " \t\r\n{\"a\":1} \n",
		"{\"a\":{\"b\":[1,true,false,null,\"x\"]},\"c\":-1.5e3}",
		"[1,[2,[3,[4]]],{\"k\":{\"k\":{\"k\":[]}}},\"end\"]",
		"{\"a\":1,\"b\":{\"c\":2,\"d\":[3,4,{\"e\":5}]},\"f\":\"g\"}",
		"[0,-0,1.5,-2e10,3E+2,4e-2]", "{\"\":\"\"}",
		"{\"s\":\"q\\\" b\\\\ u\\u00e9 n\\n \\/ \\b\\f\\r\\t\"}",
		"{\"s\":\"J\xc3\xbcrgen \xe6\x97\xa5\xf0\x9f\x8e\x89\"}",
		"{ \"spaced\" : [ 1 , 2 ] , \"x\" : { } }",
	};

	unit_case("json tokens: hand-picked shapes equal jsmn's");
	for (size_t i = 0; i < NELEM(rows); i++)
		match(rows[i], strlen(rows[i]));
}

/* ---- the recorded provider bodies and stream events ---- */

static char *
slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *s = NULL;
	long n;

	if (f != NULL && fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
	    (s = malloc((size_t)n + 1)) != NULL && fread(s, 1, (size_t)n, f) == (size_t)n) {
		s[n] = '\0';
		*len = (size_t)n;
	} else {
		free(s);
		s = NULL;
	}
	if (f != NULL)
		fclose(f);
	return s;
}

/* Each line that holds JSON: a whole .json file, an SSE data: line, an NDJSON line. */
static int
match_file(const char *name, const char *s, size_t len)
{
	size_t dot = strlen(name) > 5 ? strlen(name) - 5 : 0;
	int n = 0;

	if (strcmp(name + dot, ".json") == 0) {
		match(s, len);
		return 1;
	}
	for (const char *p = s, *end = s + len; p < end;) {
		const char *nl = memchr(p, '\n', (size_t)(end - p)), *q = p;
		size_t l = (size_t)((nl ? nl : end) - p);

		if (l >= 5 && memcmp(q, "data:", 5) == 0)
			q += 5 + (q[5] == ' '), l -= (size_t)(q - p);
		if (l > 0 && q[l - 1] == '\r')
			l--;
		if (l > 0 && (*q == '{' || *q == '[') && !(l == 6 && memcmp(q, "[DONE]", 6) == 0))
			match(q, l), n++;
		p = nl ? nl + 1 : end;
	}
	return n;
}

static void
test_fixtures(void)
{
	DIR *d = opendir("test/fixtures");
	struct dirent *e;
	int files = 0, texts = 0;

	unit_case("json tokens: every recorded provider body and event equals jsmn's");
	if (!CHECKF(d != NULL, "cannot open test/fixtures (run from the repository's root)"))
		return;
	while ((e = readdir(d)) != NULL) {
		const char *x = strrchr(e->d_name, '.');
		char path[512];
		size_t len = 0;
		char *s;

		if (x == NULL || (strcmp(x, ".json") != 0 && strcmp(x, ".sse") != 0 && strcmp(x, ".ndjson") != 0))
			continue;
		snprintf(path, sizeof path, "test/fixtures/%s", e->d_name);
		if (!CHECKF((s = slurp(path, &len)) != NULL, "cannot read %s", path))
			continue;
		texts += match_file(e->d_name, s, len);
		files++;
		free(s);
	}
	closedir(d);
	CHECKF(files >= 20 && texts >= 100, "only %d files, %d texts", files, texts);
}

/* ---- generated ---- */

static unsigned long long rng = 0x9e3779b97f4a7c15ull;

static unsigned
rnd(unsigned n)
{
	rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
	return (unsigned)(rng % n);
}

struct out {
	char   s[16384];
	size_t n;
};

static void put(struct out *o, const char *s) { size_t l = strlen(s); if (o->n + l < sizeof o->s) memcpy(o->s + o->n, s, l), o->n += l; }
static void ws(struct out *o) { static const char *const w[] = { "", "", "", " ", "\n", "\t ", "\r\n  " }; put(o, w[rnd(NELEM(w))]); }

/* A string of len characters, ordinary ones with an escape or a UTF-8 sequence now and then. */
static void
gen_string(struct out *o, int len)
{
	static const char *const odd[] = { "\\\"", "\\\\", "\\n", "\\u00e9", "\\/", "\xc3\xa9", "\xe6\x97\xa5",
		"\xf0\x9f\x8e\x89", "\\ud83c\\udf89" };

	put(o, "\"");
	for (int i = 0; i < len; i++) {
		char c[2] = { (char)(' ' + rnd(95)), 0 };

		if (c[0] == '"' || c[0] == '\\' || rnd(16) == 0)
			put(o, odd[rnd(NELEM(odd))]);
		else
			put(o, c);
	}
	put(o, "\"");
}

static void
gen_value(struct out *o, int depth)
{
	static const char *const scalars[] = { "0", "-1", "12.5e-3", "true", "false", "null", "1E9", "-0.0" };
	unsigned k = depth > 6 ? 2 + rnd(2) : rnd(4);

	ws(o);
	if (k == 0 || k == 1) {
		unsigned n = rnd(5);

		put(o, k == 0 ? "{" : "[");
		for (unsigned i = 0; i < n; i++) {
			if (i > 0)
				put(o, ",");
			if (k == 0) {
				ws(o);
				gen_string(o, (int)rnd(12));
				ws(o);
				put(o, ":");
			}
			gen_value(o, depth + 1);
		}
		ws(o);
		put(o, k == 0 ? "}" : "]");
	} else if (k == 2) {
		gen_string(o, (int)rnd(rnd(4) == 0 ? 300 : 24));
	} else {
		put(o, scalars[rnd(NELEM(scalars))]);
	}
	ws(o);
}

static void
test_generated(void)
{
	static struct out o;
	int before = differed;

	unit_case("json tokens: 3,000 generated documents equal jsmn's");
	for (int i = 0; i < 3000; i++) {
		o.n = 0;
		put(&o, rnd(2) ? "[" : "{\"k\":");
		gen_value(&o, 0);
		put(&o, o.s[0] == '[' ? "]" : "}");
		match(o.s, o.n);
	}
	CHECKF(differed == before, "%d documents differ", differed - before);
}

/*
 * The 8-byte string scanner at every offset: a string of length 1..40 with one byte of each kind
 * at each position, in an object whose key shifts the string's alignment too. Printable bytes,
 * escapes and UTF-8 pass; a raw control byte, a bad escape and a stray high byte do not.
 */
static void
test_every_offset(void)
{
	static const struct { const char *bytes; int valid; } kinds[] = {
		{ "a", 1 }, { "~", 1 }, { " ", 1 }, { "\\\"", 1 }, { "\\\\", 1 }, { "\\u0041", 1 }, { "\xc3\xa9", 1 },
		{ "\xe6\x97\xa5", 1 }, { "\x7f", 1 },
		{ "\x01", 0 }, { "\x1f", 0 }, { "\t", 0 }, { "\n", 0 }, { "\\x", 0 }, { "\\u12g4", 0 }, { "\xff", 0 },
		{ "\x80", 0 }, { "\xc3", 0 }, { "\xe6\x97", 0 },
		/* UTF-8 at the edges of each form's ranges, runs of characters, and what is not UTF-8:
		 * overlong forms, surrogates, past U+10FFFF, a continuation byte missing or wrong. */
		{ "\xc2\x80", 1 }, { "\xdf\xbf", 1 }, { "\xe0\xa0\x80", 1 }, { "\xe1\x80\x80", 1 }, { "\xed\x9f\xbf", 1 },
		{ "\xee\x80\x80", 1 }, { "\xef\xbf\xbf", 1 }, { "\xf0\x90\x80\x80", 1 }, { "\xf4\x8f\xbf\xbf", 1 },
		{ "\xe6\x97\xa5\xe6\x9c\xac\xc3\xa9", 1 },
		{ "\xc0\x80", 0 }, { "\xc1\xbf", 0 }, { "\xe0\x9f\xbf", 0 }, { "\xed\xa0\x80", 0 }, { "\xf0\x8f\xbf\xbf", 0 },
		{ "\xf4\x90\x80\x80", 0 }, { "\xf5\x80\x80\x80", 0 }, { "\xc3\x41", 0 }, { "\xe1\x41\x80", 0 },
		{ "\xe1\x80\x41", 0 }, { "\xe1\xc0\x80", 0 }, { "\xf0\x90\x80\x41", 0 }, { "\xe6\x97\xa5\xe6\x97", 0 },
	};
	int bad = 0;

	unit_case("json tokens: every kind of byte at every offset of strings up to 40 long");
	for (size_t k = 0; k < NELEM(kinds); k++)
		for (int key = 0; key < 8; key++)
			for (int len = 1; len <= 40; len++)
				for (int at = 0; at < len; at++) {
					char s[128];
					struct json j;
					struct arena a;
					int n = 0, r;

					n += snprintf(s + n, sizeof s - (size_t)n, "{\"%.*s\":\"", key, "kkkkkkkk");
					for (int i = 0; i < len; i++)
						n += snprintf(s + n, sizeof s - (size_t)n, "%s", i == at ? kinds[k].bytes : "x");
					n += snprintf(s + n, sizeof s - (size_t)n, "\"}");
					arena_init(&a);
					r = json_parse(&j, &a, s, (size_t)n);
					if (kinds[k].valid) {
						if (r != 3 || j.tok[2].end != n - 2)
							bad += !CHECKF(0, "kind %zu at %d of %d: %d tokens", k, at, len, r);
						else
							match(s, (size_t)n);
					} else if (r != -1) {
						bad += !CHECKF(0, "kind %zu at %d of %d: accepted", k, at, len);
					}
					arena_release(&a);
					if (bad > 5)
						return;
				}
}

/* ---- every cut and one-byte change, against a reference ---- */

/*
 * RFC 8259, plainly and recursively (nesting capped as json.c caps it), written apart from
 * json.c: strings decode each UTF-8 sequence's code point and check it, where json.c checks
 * byte ranges.
 */
struct ref {
	const unsigned char *s;
	size_t n, i;
};

static void ref_ws(struct ref *r) { while (r->i < r->n && memchr(" \t\n\r", r->s[r->i], 4) != NULL) r->i++; }
static int ref_at(struct ref *r, char c) { return r->i < r->n && r->s[r->i] == (unsigned char)c; }
static int ref_digit(struct ref *r) { return r->i < r->n && r->s[r->i] >= '0' && r->s[r->i] <= '9'; }

static int
ref_string(struct ref *r)
{
	for (r->i++; r->i < r->n;) {
		unsigned c = r->s[r->i], cp, len, k;

		if (c == '"')
			return r->i++, 1;
		if (c < 0x20)
			return 0;
		if (c == '\\') {
			if (r->i + 1 >= r->n)
				return 0;
			if (r->s[r->i + 1] == 'u') {
				for (k = 2; k < 6; k++)
					if (r->i + k >= r->n || strchr("0123456789abcdefABCDEF", r->s[r->i + k]) == NULL ||
					    r->s[r->i + k] == 0)
						return 0;
				r->i += 6;
			} else if (r->s[r->i + 1] != 0 && strchr("\"\\/bfnrt", r->s[r->i + 1]) != NULL) {
				r->i += 2;
			} else {
				return 0;
			}
			continue;
		}
		if (c < 0x80) {
			r->i++;
			continue;
		}
		len = c >= 0xF0 && c <= 0xF7 ? 4 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xC0 && c <= 0xDF ? 2 : 0;
		if (len == 0 || r->i + len > r->n)
			return 0;
		cp = c & (0x7Fu >> len);
		for (k = 1; k < len; k++) {
			if ((r->s[r->i + k] & 0xC0) != 0x80)
				return 0;
			cp = cp << 6 | (r->s[r->i + k] & 0x3Fu);
		}
		if (cp < (len == 2 ? 0x80u : len == 3 ? 0x800u : 0x10000u) || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
			return 0;
		r->i += len;
	}
	return 0;
}

static int
ref_number(struct ref *r)
{
	if (ref_at(r, '-'))
		r->i++;
	if (ref_at(r, '0'))
		r->i++;
	else if (ref_digit(r))
		while (ref_digit(r))
			r->i++;
	else
		return 0;
	if (ref_at(r, '.')) {
		r->i++;
		if (!ref_digit(r))
			return 0;
		while (ref_digit(r))
			r->i++;
	}
	if (ref_at(r, 'e') || ref_at(r, 'E')) {
		r->i++;
		if (ref_at(r, '+') || ref_at(r, '-'))
			r->i++;
		if (!ref_digit(r))
			return 0;
		while (ref_digit(r))
			r->i++;
	}
	return 1;
}

static int
ref_value(struct ref *r, int depth)
{
	static const char *const lits[] = { "true", "false", "null" };
	int obj = ref_at(r, '{');

	ref_ws(r);
	if (r->i >= r->n)
		return 0;
	if (ref_at(r, '"'))
		return ref_string(r);
	for (size_t k = 0; k < NELEM(lits); k++)
		if (r->n - r->i >= strlen(lits[k]) && memcmp(r->s + r->i, lits[k], strlen(lits[k])) == 0)
			return r->i += strlen(lits[k]), 1;
	if (!(obj = ref_at(r, '{')) && !ref_at(r, '['))
		return ref_number(r);
	if (depth == 128)
		return 0;
	r->i++;
	ref_ws(r);
	if (ref_at(r, obj ? '}' : ']'))
		return r->i++, 1;
	for (;;) {
		if (obj) {
			ref_ws(r);
			if (!ref_at(r, '"') || !ref_string(r))
				return 0;
			ref_ws(r);
			if (!ref_at(r, ':'))
				return 0;
			r->i++;
		}
		if (!ref_value(r, depth + 1))
			return 0;
		ref_ws(r);
		if (ref_at(r, ','))
			r->i++;
		else if (ref_at(r, obj ? '}' : ']'))
			return r->i++, 1;
		else
			return 0;
	}
}

static int
ref_valid(const char *s, size_t n)
{
	struct ref r = { (const unsigned char *)s, n, 0 };

	if (!ref_value(&r, 0))
		return 0;
	ref_ws(&r);
	return r.i == n;
}

/* t (n bytes) and its mutants: json.c must accept exactly what the reference accepts, and give
 * jsmn's tokens for those with a container at the top. */
static int
mutate(const char *t, size_t n)
{
	static const char bytes[] = "{}[],:\" \\ \t\n\r0159-+.eEtfnulx\x01\x1f\x7f\x80\xc3\xe6\xed\xf0\xff";
	static char m[2048];
	int bad = 0;

	if (n + 1 > sizeof m)
		return 0;
	for (size_t at = 0; at <= n && bad < 5; at++)
		for (size_t k = 0; k <= sizeof bytes - 1; k++) /* bytes' own NUL too */
			for (int op = 0; op < 3; op++) { /* replace, insert, delete (once per offset) */
				size_t len = n;

				if ((op != 1 && at == n) || (op == 2 && k > 0))
					continue;
				memcpy(m, t, at);
				if (op == 0)
					m[at] = bytes[k], memcpy(m + at + 1, t + at + 1, n - at - 1);
				else if (op == 1)
					m[at] = bytes[k], memcpy(m + at + 1, t + at, n - at), len++;
				else
					memcpy(m + at, t + at + 1, n - at - 1), len--;
				if (json_valid(m, len) != ref_valid(m, len))
					bad += !CHECKF(0, "'%.*s' (%zu bytes): json.c says %s, the reference %s", (int)(len > 200 ? 200 : len),
					    m, len, json_valid(m, len) ? "valid" : "malformed", ref_valid(m, len) ? "valid" : "malformed");
				else if (ref_valid(m, len) && (m[json_skip_end(m, 0, len)] == '{' || m[json_skip_end(m, 0, len)] == '['))
					match(m, len);
			}
	for (size_t cut = 0; cut < n && bad < 5; cut++) /* every cut, the cut-off text on its own */
		if (json_valid(t, cut) != ref_valid(t, cut))
			bad += !CHECKF(0, "'%.*s' cut at %zu: json.c says %s", (int)(cut > 200 ? 200 : cut), t, cut,
			    json_valid(t, cut) ? "valid" : "malformed");
	return bad;
}

static void
test_mutants(void)
{
	static const char *const rows[] = {
		"{\"a\":1}", "[1,[2],{}]", "{ \"k\" : [ true , null ] }", "{\"s\":\"x\\u00e9\\n\xc3\xa9\xe6\x97\xa5\xf0\x9f\x8e\x89\"}",
		"[-0.5e+3,0,12,\"\"]", "{\"a\":{\"b\":[{\"c\":false}]}}", "\"top\"", "-12.5E-1", " [ ] ",
		/* a colon with the value right after it or one space on, a comma with the next key right
		 * after it, and their neighbours: tokenize's fast paths */
		"{\"a\": 1,\"b\":\"x\", \"c\" :{\"d\":[1, 2]},\"e\":  {}}",
		/* a Gemini and an Anthropic event as they come */
		"{\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"\xe4\xbb\x8a\xe6\x97\xa5\"}],\"role\": \"model\"},"
		"\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 138,\"candidatesTokenCount\": 4},"
		"\"modelVersion\": \"gemini-2.5-flash\",\"responseId\": \"45I2aaWZBumm2roPm8HR0Ao\"}",
		"{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}",
	};
	int bad = 0, before = differed;

	unit_case("json tokens: every cut and one-byte change accepted exactly as the reference accepts it");
	for (size_t i = 0; i < NELEM(rows) && bad < 5; i++) {
		CHECKF(ref_valid(rows[i], strlen(rows[i])), "the reference refuses row %zu", i);
		bad += mutate(rows[i], strlen(rows[i]));
	}
	CHECKF(bad == 0 && differed == before, "%d mutants judged differently, %d with other tokens", bad, differed - before);
}

void
suite_json_tokens(void)
{
	char err[256];
	struct mem_stats st;

	unit_case("mem_init");
	if (!CHECKF(mem_init(16 << 20, err, sizeof err) == 0, "mem_init: %s", err))
		return;
	test_shapes();
	test_fixtures();
	test_generated();
	test_every_offset();
	test_mutants();

	unit_case("json tokens: documents compared with jsmn");
	CHECKF(compared > 3000 && differed == 0, "%d compared, %d differ", compared, differed);
	unit_case("no memory left in use");
	mem_get_stats(&st);
	CHECKF(st.in_use == 0, "%zu bytes in use", st.in_use);
	mem_shutdown();
}
