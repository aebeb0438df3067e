/*
 * test_json.c — reading JSON (json_parse over jsmn, json_find, json_skip, json_eq, json_is_null,
 * json_skip_end) and writing it (json_escape into a capped buffer).
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include "sluice.h"
#include "unit.h"
#include "adapters/xlate.h"

/* The text of token i (a string's without its quotes). */
static const char *
tok_str(const struct json *j, int i)
{
	static char out[4][128];
	static int k;
	char *o = out[k++ % 4];
	int n = j->tok[i].end - j->tok[i].start;

	snprintf(o, sizeof out[0], "%.*s", n > 120 ? 120 : n, j->src + j->tok[i].start);
	return o;
}

static const char *
type_name(jsmntype_t t)
{
	switch (t) {
	case JSMN_OBJECT:    return "object";
	case JSMN_ARRAY:     return "array";
	case JSMN_STRING:    return "string";
	case JSMN_PRIMITIVE: return "primitive";
	default:             return "undefined";
	}
}

/* n copies of open, then n of close (0: none), in a malloc'd string. */
static char *
nest(int n, char open, char close)
{
	char *s = malloc(2 * (size_t)n + 1), *p = s;

	if (s == NULL)
		return NULL;
	for (int i = 0; i < n; i++)
		*p++ = open;
	for (int i = 0; close && i < n; i++)
		*p++ = close;
	*p = '\0';
	return s;
}

static void
test_parse(void)
{
	static const struct {
		const char *name, *src;
		size_t      len;   /* 0: strlen(src) */
		int         ntok;  /* -1: malformed */
		jsmntype_t  type;  /* of the top-level value */
	} rows[] = {
		/* Valid */
		{ "empty object",             "{}",                                  0, 1,  JSMN_OBJECT },
		{ "whitespace around",        " \t\r\n{\"a\":1} \n\t\r ",            0, 3,  JSMN_OBJECT },
		{ "a request body",
		  "{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
		  "\"stream\":true,\"temperature\":0.5,\"stop\":null}",             0, 16, JSMN_OBJECT },
		{ "every kind of value",
		  "{\"a\":{\"b\":[1,true,false,null,\"x\"]},\"c\":-1.5e3}",          0, 12, JSMN_OBJECT },
		{ "a top-level array",        "[1,2,3]",                             0, 4,  JSMN_ARRAY },
		{ "a top-level empty array",  "[]",                                  0, 1,  JSMN_ARRAY },
		{ "a top-level string",       "\"s\"",                               0, 1,  JSMN_STRING },
		{ "a top-level number",       "42",                                  0, 1,  JSMN_PRIMITIVE },
		{ "a top-level number, space", "42 ",                                0, 1,  JSMN_PRIMITIVE },
		{ "a top-level true",         "true",                                0, 1,  JSMN_PRIMITIVE },
		{ "escapes in strings",       "{\"s\":\"q\\\" b\\\\ u\\u00e9 n\\n\"}", 0, 3,  JSMN_OBJECT },
		{ "UTF-8 in strings",         "{\"s\":\"J\xc3\xbcrgen \xe6\x97\xa5\xf0\x9f\x8e\x89\"}", 0, 3, JSMN_OBJECT },
		{ "empty key and value",      "{\"\":\"\"}",                         0, 3,  JSMN_OBJECT },
		{ "numbers",                  "[0,-0,1.5,-2e10,3E+2,4e-2]",          0, 7,  JSMN_ARRAY },

		/* Malformed */
		{ "empty",                    "",                                    0, -1, 0 },
		{ "whitespace only",          " \t\r\n ",                            0, -1, 0 },
		{ "trailing garbage",         "{\"a\":1} x",                         0, -1, 0 },
		{ "trailing number",          "{\"a\":1} 2",                         0, -1, 0 },
		{ "trailing close",           "{\"a\":1}}",                          0, -1, 0 },
		{ "two top-level values",     "{}{}",                                0, -1, 0 },
		{ "two top-level arrays",     "[1] [2]",                             0, -1, 0 },
		{ "a NUL after the value",    "{}\0",                                3, -1, 0 },
		{ "a NUL inside a string",    "{\"a\":\"x\0y\"}",                   11, -1, 0 },
		{ "unterminated string",      "{\"a\":\"abc",                        0, -1, 0 },
		{ "unterminated key",         "{\"ab",                               0, -1, 0 },
		{ "unterminated object",      "{\"a\":1",                            0, -1, 0 },
		{ "unterminated array",       "[1,2",                                0, -1, 0 },
		{ "mismatched brackets",      "[1}",                                 0, -1, 0 },
		{ "close without open",       "}",                                   0, -1, 0 },
		{ "bad literal tru",          "{\"a\":tru}",                         0, -1, 0 },
		{ "bad literal nul",          "{\"a\":nul}",                         0, -1, 0 },
		{ "bad literal truex",        "{\"a\":truex}",                       0, -1, 0 },
		{ "bad literal True",         "{\"a\":True}",                        0, -1, 0 },
		{ "bad literal undefined",    "{\"a\":undefined}",                   0, -1, 0 },
		{ "literal cut: f",           "f",                                   0, -1, 0 },
		{ "literal cut: fals",        "fals",                                0, -1, 0 },
		{ "literal cut: nul",         "nul",                                 0, -1, 0 },
		{ "literal cut: false, 4 of 5", "false",                             4, -1, 0 },
		{ "literal cut: null, 3 of 4", "null",                               3, -1, 0 },
		{ "literal cut: true, 3 of 4", "true",                               3, -1, 0 },
		{ "bad literal falsy",        "[falsy]",                             0, -1, 0 },
		{ "bad literal fAlse",        "[fAlse]",                             0, -1, 0 },
		{ "bad literal nulL",         "[nulL]",                              0, -1, 0 },
		{ "bad literal g",            "[g]",                                 0, -1, 0 },
		{ "bad literal talse",        "[talse]",                             0, -1, 0 },
		{ "every literal",            "[false,null,true]",                   0, 4,  JSMN_ARRAY },
		{ "bad number 1.2.3",         "{\"a\":1.2.3}",                       0, -1, 0 },
		{ "bad number -",             "{\"a\":-}",                           0, -1, 0 },
		{ "bad number +1",            "{\"a\":+1}",                          0, -1, 0 },
		{ "bad escape",               "{\"a\":\"\\q\"}",                     0, -1, 0 },
		{ "bad \\u escape",           "{\"a\":\"\\u12g4\"}",                 0, -1, 0 },
		{ "unquoted key",             "{a:1}",                               0, -1, 0 },
		{ "number as key",            "{1:2}",                               0, -1, 0 },
		{ "missing colon",            "{\"a\" 1}",                           0, -1, 0 },
		{ "single quotes",            "{'a':1}",                             0, -1, 0 },
		{ "key without a value",      "{\"a\"}",                             0, -1, 0 },
		{ "missing comma",            "{\"a\":1 \"b\":2}",                   0, -1, 0 },
		{ "trailing comma",           "{\"a\":1,}",                          0, -1, 0 },
		{ "array trailing comma",     "[1,]",                                0, -1, 0 },
		{ "leading comma",            "[,1]",                                0, -1, 0 },
		{ "raw control char in string", "{\"a\":\"x\ty\"}",                  0, -1, 0 },
		{ "double comma",             "{\"a\":1,,\"b\":2}",                  0, -1, 0 },
		{ "array double comma",       "[1,,2]",                              0, -1, 0 },
		{ "comma first in an object", "{,\"a\":1}",                          0, -1, 0 },
		{ "comma before the value",   ",{}",                                 0, -1, 0 },
		{ "double colon",             "{\"a\"::1}",                          0, -1, 0 },
		{ "colon in an array",        "[1:2]",                               0, -1, 0 },
		{ "key: value in an array",   "[\"a\":1]",                           0, -1, 0 },
		{ "chained colons",           "{\"a\":\"b\":\"c\"}",                   0, -1, 0 },
	};
	struct arena a;
	struct json j;

	for (size_t i = 0; i < NELEM(rows); i++) {
		size_t len = rows[i].len ? rows[i].len : strlen(rows[i].src);
		int n;

		unit_case("json_parse: %s", rows[i].name);
		arena_init(&a);
		memset(&j, 0, sizeof j);
		{ /* an exact-size copy first: a read past the text's end is then ASan's to see (the san
		   * flavour), not a NUL that happens to follow a literal */
			char *copy = malloc(len ? len : 1);

			if (copy == NULL)
				abort();
			memcpy(copy, rows[i].src, len);
			n = json_parse(&j, &a, copy, len);
			CHECKF(n == rows[i].ntok, "exact-size copy: %d tokens, want %d", n, rows[i].ntok);
			arena_release(&a);
			free(copy);
		}
		memset(&j, 0, sizeof j);
		n = json_parse(&j, &a, rows[i].src, len);
		CHECKF(n == rows[i].ntok, "%d tokens, want %d", n, rows[i].ntok);
		if (n > 0 && rows[i].ntok > 0) {
			CHECK(j.ntok == n && j.src == rows[i].src);
			CHECKF(j.tok[0].type == rows[i].type, "top-level %s, want %s", type_name(j.tok[0].type),
			    type_name(rows[i].type));
			CHECKF(json_skip(&j, 0) == n, "json_skip(0) %d, want %d", json_skip(&j, 0), n);
		}
		arena_release(&a);
	}

	/*
	 * Deep nesting: moderate depth parses; great depth parses too or is refused (-1), but
	 * never crashes (jsmn does not recurse); unbalanced depth is malformed.
	 */
	{
		static const struct {
			const char *name;
			int depth, opened_only, short_one, may_refuse;
		} deep[] = {
			{ "arrays 100 deep",               100,   0, 0, 0 },
			{ "arrays 10000 deep",             10000, 0, 0, 1 },
			{ "arrays 10000 deep, unclosed",   10000, 1, 0, 0 },
			{ "arrays 1000 deep, one short",   1000,  0, 1, 0 },
		};

		for (size_t i = 0; i < NELEM(deep); i++) {
			char *s = nest(deep[i].depth, '[', deep[i].opened_only ? 0 : ']');
			int n, want = deep[i].opened_only || deep[i].short_one ? -1 : deep[i].depth;

			unit_case("json_parse: %s", deep[i].name);
			if (!CHECK(s != NULL))
				continue;
			if (deep[i].short_one)
				s[2 * deep[i].depth - 1] = '\0';
			arena_init(&a);
			n = json_parse(&j, &a, s, strlen(s));
			CHECKF(n == want || (deep[i].may_refuse && n == -1), "%d tokens, want %d", n, want);
			if (n > 0)
				CHECK(json_skip(&j, 0) == n && json_skip(&j, n - 1) == n && j.tok[n - 1].type == JSMN_ARRAY);
			arena_release(&a);
			free(s);
		}
	}

	unit_case("json_parse: objects 100 deep");
	{
		/* {"a":{"a":{ ... {} ... }}} */
		int depth = 100;
		size_t len = (size_t)depth * 5 + 2 + (size_t)depth;
		char *s = malloc(len + 1), *p = s;
		int n, o;

		if (CHECK(s != NULL)) {
			for (int i = 0; i < depth; i++) {
				memcpy(p, "{\"a\":", 5);
				p += 5;
			}
			memcpy(p, "{}", 2);
			p += 2;
			memset(p, '}', (size_t)depth);
			p += depth;
			*p = '\0';
			arena_init(&a);
			n = json_parse(&j, &a, s, len);
			CHECKF(n == 2 * depth + 1, "%d tokens, want %d", n, 2 * depth + 1);
			/* Walk down by json_find to the innermost object. */
			o = n > 0 ? 0 : -1;
			for (int i = 0; i < depth && o >= 0; i++)
				o = json_find(&j, o, "a");
			CHECKF(o == n - 1 && o >= 0 && j.tok[o].type == JSMN_OBJECT && j.tok[o].size == 0,
			    "innermost %d", o);
			arena_release(&a);
			free(s);
		}
	}
}

static void
test_parse_nomem(void)
{
	enum { MAXHOG = 1 << 16 };
	void **hog = malloc(MAXHOG * sizeof *hog);
	size_t nhog = 0;
	struct arena a;
	struct json j;

	unit_case("json_parse: memory short");
	if (!CHECK(hog != NULL))
		return;
	for (size_t sz = 1 << 20; sz >= MEM_BLOCK; sz /= 2)
		while (nhog < MAXHOG && (hog[nhog] = mem_alloc(sz)) != NULL)
			nhog++;
	CHECKF(nhog < MAXHOG, "memory never ran out");
	arena_init(&a);
	CHECK(json_parse(&j, &a, "{\"a\":1}", 7) == -2);
	CHECK(json_parse(&j, &a, "{\"a\":1} x", 9) == -1); /* refused before any allocation */
	arena_release(&a);
	while (nhog > 0)
		mem_free(hog[--nhog]);
	free(hog);
	arena_init(&a);
	CHECK(json_parse(&j, &a, "{\"a\":1}", 7) == 3);
	arena_release(&a);
}

/* Denser than the first pass's room (a token per 2 bytes, the room a token per 4): the count
 * is taken and the tokens laid down again, the same as a text that fits. */
static void
test_parse_dense(void)
{
	enum { N = 10000 };
	char *doc = malloc(2 * N + 2);
	struct arena a;
	struct json j = { 0 };
	int bad = 0;

	unit_case("json_parse: a text denser than the first pass's room");
	if (!CHECK(doc != NULL))
		return;
	doc[0] = '[';
	for (int i = 0; i < N; i++)
		doc[1 + 2 * i] = (char)('0' + i % 10), doc[2 + 2 * i] = i + 1 < N ? ',' : ']';
	arena_init(&a);
	if (CHECKF(json_parse(&j, &a, doc, 2 * N + 1) == N + 1, "%d tokens, want %d", j.ntok, N + 1)) {
		CHECK(j.tok[0].type == JSMN_ARRAY && j.tok[0].size == N && j.tok[0].end == 2 * N + 1);
		for (int i = 0; i < N && !bad; i++)
			bad = j.tok[1 + i].type != JSMN_PRIMITIVE || j.tok[1 + i].start != 1 + 2 * i ||
			    j.tok[1 + i].end != 2 + 2 * i || j.tok[1 + i].parent != 0;
		CHECKF(!bad, "an element's token is wrong");
	}
	arena_release(&a);
	free(doc);
}

static void
test_find(void)
{
	static const char doc[] =
	    "{\"a\":1,\"n\":{\"a\":2,\"b\":{\"a\":3},\"arr\":[{\"a\":4}]},\"arr\":[{\"b\":5},\"b\"],"
	    "\"b\":\"x\",\"s\":\"a\",\"nul\":null,\"e\":{},\"last\":[1,[2]]}";
	static const struct {
		const char *path;  /* keys from the top, separated by '.' */
		const char *want;  /* the value's text (a string's without quotes); NULL: not found */
		jsmntype_t  type;
	} rows[] = {
		{ "a",        "1",     JSMN_PRIMITIVE },
		{ "b",        "x",     JSMN_STRING },    /* not n.b nor arr[0].b, which come first */
		{ "n.a",      "2",     JSMN_PRIMITIVE },
		{ "n.b.a",    "3",     JSMN_PRIMITIVE },
		{ "n.b",      "{\"a\":3}", JSMN_OBJECT },
		{ "n.arr",    "[{\"a\":4}]", JSMN_ARRAY },
		{ "arr",      "[{\"b\":5},\"b\"]", JSMN_ARRAY },
		{ "nul",      "null",  JSMN_PRIMITIVE },
		{ "e",        "{}",    JSMN_OBJECT },
		{ "last",     "[1,[2]]", JSMN_ARRAY },
		{ "s",        "a",     JSMN_STRING },
		{ "x",        NULL,    0 },             /* a value string, not a key */
		{ "missing",  NULL,    0 },
		{ "n.missing", NULL,   0 },
		{ "n.b.b",    NULL,    0 },
		{ "e.a",      NULL,    0 },             /* an empty object */
		{ "a.a",      NULL,    0 },             /* a number is not an object */
		{ "arr.b",    NULL,    0 },             /* nor is an array */
		{ "s.a",      NULL,    0 },
		{ "",         NULL,    0 },
		{ "A",        NULL,    0 },             /* keys are case-sensitive */
		{ "las",      NULL,    0 },             /* and whole */
		{ "lastt",    NULL,    0 },
	};
	struct arena a;
	struct json j;
	int n;

	arena_init(&a);
	unit_case("json_find: the document parses");
	n = json_parse(&j, &a, doc, sizeof doc - 1);
	if (!CHECKF(n > 0, "json_parse %d", n)) {
		arena_release(&a);
		return;
	}
	for (size_t i = 0; i < NELEM(rows); i++) {
		char path[64], *save = NULL, *key;
		int t = 0;

		unit_case("json_find: %s", rows[i].path[0] ? rows[i].path : "(empty key)");
		snprintf(path, sizeof path, "%s", rows[i].path);
		key = strtok_r(path, ".", &save);
		if (key == NULL)
			t = json_find(&j, 0, "");
		for (; key != NULL && t >= 0; key = strtok_r(NULL, ".", &save))
			t = json_find(&j, t, key);
		if (rows[i].want == NULL) {
			CHECKF(t == -1, "found token %d '%s', want -1", t, t >= 0 ? tok_str(&j, t) : "");
			continue;
		}
		if (!CHECKF(t > 0 && t < n, "token %d", t))
			continue;
		CHECKF(strcmp(tok_str(&j, t), rows[i].want) == 0, "'%s', want '%s'", tok_str(&j, t), rows[i].want);
		CHECKF(j.tok[t].type == rows[i].type, "%s, want %s", type_name(j.tok[t].type),
		    type_name(rows[i].type));
	}

	unit_case("json_find: tokens that are not objects, and bad indexes");
	CHECK(json_find(&j, -1, "a") == -1);
	CHECK(json_find(&j, n, "a") == -1);
	CHECK(json_find(&j, n + 100, "a") == -1);
	CHECK(json_find(&j, 1, "a") == -1); /* the key "a" itself */
	CHECK(json_find(&j, 2, "a") == -1); /* the value 1 */
	arena_release(&a);

	/* A top-level array: json_find on token 0 finds nothing. */
	unit_case("json_find: a top-level array");
	arena_init(&a);
	CHECK(json_parse(&j, &a, "[{\"a\":1}]", 9) == 4);
	CHECK(json_find(&j, 0, "a") == -1);
	CHECK(json_find(&j, 1, "a") == 3);
	arena_release(&a);
}

static void
test_skip(void)
{
	/* Tokens: 0 [  1 1  2 [  3 2  4 3  5 {  6 "a"  7 [  8 4  9 5  (10 = end) */
	static const char doc[] = "[1,[2,3],{\"a\":[4]},5]";
	static const struct {
		int i, next;
	} rows[] = {
		{ 0, 10 }, { 1, 2 }, { 2, 5 }, { 3, 4 }, { 4, 5 }, { 5, 9 }, { 6, 7 }, { 7, 9 }, { 8, 9 }, { 9, 10 },
	};
	static const struct {
		const char *src;
		int i, next;
	} more[] = {
		{ "{\"a\":{\"b\":{\"c\":[]}},\"d\":1}", 2, 7 },  /* the value of "a" */
		{ "{\"a\":{\"b\":{\"c\":[]}},\"d\":1}", 1, 2 },  /* the key "a" alone */
		{ "{\"a\":\"}\",\"b\":1}",               2, 3 },  /* a brace inside a string */
		{ "[[],[],[[]]]",                       3, 5 },
		{ "[\"x\",{}]",                         2, 3 },
	};
	struct arena a;
	struct json j;

	arena_init(&a);
	unit_case("json_skip: %s", doc);
	if (CHECK(json_parse(&j, &a, doc, sizeof doc - 1) == 10))
		for (size_t i = 0; i < NELEM(rows); i++)
			CHECKF(json_skip(&j, rows[i].i) == rows[i].next, "json_skip(%d) %d, want %d", rows[i].i,
			    json_skip(&j, rows[i].i), rows[i].next);
	arena_release(&a);

	for (size_t i = 0; i < NELEM(more); i++) {
		unit_case("json_skip(%d): %s", more[i].i, more[i].src);
		arena_init(&a);
		if (CHECK(json_parse(&j, &a, more[i].src, strlen(more[i].src)) > more[i].i))
			CHECKF(json_skip(&j, more[i].i) == more[i].next, "%d, want %d", json_skip(&j, more[i].i),
			    more[i].next);
		arena_release(&a);
	}
}

static void
test_eq_null(void)
{
	/* Tokens: 0 {  1 "model" 2 "gpt-4o"  3 "e"  4 ""  5 "q"  6 "a\"b"  7 "t"  8 true
	 *         9 "n"  10 null  11 "ns"  12 "null"  13 "z"  14 0  15 "o"  16 {  17 "arr"  18 [  19 null */
	static const char doc[] =
	    "{\"model\":\"gpt-4o\",\"e\":\"\",\"q\":\"a\\\"b\",\"t\":true,\"n\":null,\"ns\":\"null\","
	    "\"z\":0,\"o\":{},\"arr\":[null]}";
	static const struct {
		int i;
		const char *s;
		int eq;
	} eq[] = {
		{ 1,  "model",       1 },
		{ 2,  "gpt-4o",      1 },
		{ 2,  "gpt-4",       0 },  /* a prefix */
		{ 2,  "gpt-4o-mini", 0 },  /* longer */
		{ 2,  "GPT-4o",      0 },
		{ 2,  "",            0 },
		{ 4,  "",            1 },
		{ 4,  "x",           0 },
		{ 6,  "a\\\"b",      1 },  /* compared raw, escapes and all */
		{ 6,  "a\"b",        0 },
		{ 8,  "true",        0 },  /* not a string */
		{ 10, "null",        0 },
		{ 12, "null",        1 },
		{ 14, "0",           0 },
		{ 16, "{}",          0 },
		{ 18, "[null]",      0 },
	};
	static const struct {
		int i, null;
	} nul[] = {
		{ 0, 0 }, { 2, 0 }, { 4, 0 }, { 8, 0 }, { 10, 1 }, { 12, 0 }, { 14, 0 }, { 16, 0 }, { 18, 0 },
		{ 19, 1 },
	};
	struct arena a;
	struct json j;

	arena_init(&a);
	unit_case("json_eq/json_is_null: the document parses");
	if (!CHECK(json_parse(&j, &a, doc, sizeof doc - 1) == 20)) {
		arena_release(&a);
		return;
	}
	for (size_t i = 0; i < NELEM(eq); i++) {
		unit_case("json_eq(%d '%s', \"%s\")", eq[i].i, tok_str(&j, eq[i].i), eq[i].s);
		CHECK(json_eq(&j, eq[i].i, eq[i].s) == eq[i].eq);
	}
	for (size_t i = 0; i < NELEM(nul); i++) {
		unit_case("json_is_null(%d '%s')", nul[i].i, tok_str(&j, nul[i].i));
		CHECK(json_is_null(&j, nul[i].i) == nul[i].null);
	}
	arena_release(&a);
}

static void
test_skip_end(void)
{
	static const struct {
		const char *s;
		size_t from, len, want;
	} rows[] = {
		{ "{}",             2, 2, 2 },   /* at the end already */
		{ "{}  \t\r\n",     2, 7, 7 },
		{ "{} x",           2, 4, 3 },   /* stops at the first non-blank */
		{ "   ",            0, 3, 3 },
		{ "   ",            0, 2, 2 },   /* never past len */
		{ "a b",            1, 3, 2 },
		{ " \v",            0, 2, 1 },   /* \v and \f are not JSON whitespace */
		{ " \f",            0, 2, 1 },
		{ " \0 ",           0, 3, 1 },   /* nor is NUL */
		{ "x",              0, 1, 0 },
		{ "",               0, 0, 0 },
	};

	for (size_t i = 0; i < NELEM(rows); i++) {
		size_t got = json_skip_end(rows[i].s, rows[i].from, rows[i].len);

		unit_case("json_skip_end row %zu", i);
		CHECKF(got == rows[i].want, "%zu, want %zu", got, rows[i].want);
	}
}

/* Does the escaped text t[0, n) end inside an escape or a UTF-8 sequence? */
static int
cut_inside(const char *t, size_t n)
{
	size_t i = 0;

	while (i < n) {
		unsigned char c = (unsigned char)t[i];
		size_t w = c == '\\' ? (t[i + 1] == 'u' ? 6 : 2) :
		    c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;

		if (i + w > n)
			return 1;
		i += w;
	}
	return 0;
}

static void
test_escape(void)
{
	static const struct {
		const char *name, *in;
		size_t len;        /* 0: strlen(in) */
		const char *out;
	} rows[] = {
		{ "empty",              "",                 0, "\"\"" },
		{ "plain",              "hello, world",     0, "\"hello, world\"" },
		{ "quote",              "a\"b",             0, "\"a\\\"b\"" },
		{ "backslash",          "a\\b",             0, "\"a\\\\b\"" },
		{ "only specials",      "\"\\\"",           0, "\"\\\"\\\\\\\"\"" },
		{ "newline, CR, tab",   "1\n2\r3\t4",       0, "\"1\\n2\\r3\\t4\"" },
		{ "other controls",     "\x01\x08\x0c\x1b\x1f", 0, "\"\\u0001\\u0008\\u000c\\u001b\\u001f\"" },
		{ "NUL",                "a\0b",             3, "\"a\\u0000b\"" },
		{ "DEL is not escaped", "a\x7f",            0, "\"a\x7f\"" },
		{ "slash is not escaped", "</script>",      0, "\"</script>\"" },
		{ "space is not escaped", " ",              0, "\" \"" },
		{ "UTF-8 passes through", "J\xc3\xbcrgen \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x8e\x89", 0,
		  "\"J\xc3\xbcrgen \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x8e\x89\"" },
		{ "UTF-8 next to escapes", "\xc3\xa9\n\xc3\xa9\"", 0, "\"\xc3\xa9\\n\xc3\xa9\\\"\"" },
		{ "a JSON message",     "say \"hi\"\n\tto {\"x\":1}", 0,
		  "\"say \\\"hi\\\"\\n\\tto {\\\"x\\\":1}\"" },
		{ "only the length given", "abc\"def",      3, "\"abc\"" },
		/* Invalid UTF-8 (a provider's body that is not JSON, a message cut mid-character)
		 * becomes U+FFFD, one per byte that starts no valid sequence: the output stays JSON. */
		{ "a stray continuation byte", "a\x80z",     0, "\"a\\ufffdz\"" },
		{ "0xff",                "\xff",             0, "\"\\ufffd\"" },
		{ "a lead byte, then ASCII", "g\xc3oogle",   0, "\"g\\ufffdoogle\"" },
		{ "cut mid-character at the end", "ok \xe6\x97", 0, "\"ok \\ufffd\\ufffd\"" },
		{ "overlong /",          "\xc0\xaf",         0, "\"\\ufffd\\ufffd\"" },
		{ "a UTF-16 surrogate",  "\xed\xa0\x80",     0, "\"\\ufffd\\ufffd\\ufffd\"" },
		{ "past U+10FFFF",       "\xf4\x90\x80\x80", 0, "\"\\ufffd\\ufffd\\ufffd\\ufffd\"" },
		{ "valid around invalid", "\xc3\xa9\xff\xc3\xa9", 0, "\"\xc3\xa9\\ufffd\xc3\xa9\"" },
	};

	for (size_t i = 0; i < NELEM(rows); i++) {
		size_t len = rows[i].len ? rows[i].len : strlen(rows[i].in), outlen = strlen(rows[i].out);
		struct buf b;
		int rc;

		unit_case("json_escape: %s", rows[i].name);
		buf_init(&b, 4096);
		rc = json_escape(&b, rows[i].in, len);
		CHECKF(rc == BUF_OK, "rc %d", rc);
		CHECKF(b.len == outlen && memcmp(b.data, rows[i].out, outlen) == 0, "'%.*s', want '%s'",
		    (int)b.len, b.data ? b.data : "", rows[i].out);

		/* After what the buffer holds already */
		buf_reset(&b);
		buf_puts(&b, "x=");
		rc = json_escape(&b, rows[i].in, len);
		CHECK(rc == BUF_OK && b.len == 2 + outlen && memcmp(b.data, "x=", 2) == 0 &&
		    memcmp(b.data + 2, rows[i].out, outlen) == 0);
		buf_free(&b);

		/*
		 * Every cap too small: BUF_FULL, and what was written is a prefix of the answer, never
		 * past the cap, not cut inside an escape or a UTF-8 character; the bytes
		 * that were there before are kept; the buffer still works.
		 */
		unit_case("json_escape, capped: %s", rows[i].name);
		for (size_t cap = 2; cap < 2 + outlen; cap++) {
			buf_init(&b, cap);
			buf_puts(&b, "x=");
			rc = json_escape(&b, rows[i].in, len);
			if (!CHECKF(rc == BUF_FULL, "cap %zu: rc %d", cap, rc) ||
			    !CHECKF(b.len <= cap && b.len >= 2 && memcmp(b.data, "x=", 2) == 0,
			        "cap %zu: len %zu", cap, b.len) ||
			    !CHECKF(memcmp(b.data + 2, rows[i].out, b.len - 2) == 0, "cap %zu: '%.*s' is not a prefix",
			        cap, (int)b.len, b.data) ||
			    !CHECKF(!cut_inside(b.data + 2, b.len - 2), "cap %zu: cut inside a sequence: '%.*s'",
			        cap, (int)b.len, b.data)) {
				buf_free(&b);
				break;
			}
			buf_reset(&b);
			CHECK(json_escape(&b, "", 0) == BUF_OK && b.len == 2 && memcmp(b.data, "\"\"", 2) == 0);
			buf_free(&b);
		}
		buf_init(&b, 2 + outlen);
		buf_puts(&b, "x=");
		CHECKF(json_escape(&b, rows[i].in, len) == BUF_OK && b.len == 2 + outlen,
		    "a cap of exactly the answer's length");
		buf_free(&b);
	}

	unit_case("json_escape, zero cap");
	{
		struct buf b;

		buf_init(&b, 0);
		CHECK(json_escape(&b, "a", 1) == BUF_FULL);
		CHECK(b.len == 0);
		buf_free(&b);
	}

	/* Every byte alone: escaped exactly when JSON requires it (RFC 8259: ", \ and below 0x20);
	 * from 0x80 on, alone, none is a whole UTF-8 character: U+FFFD. */
	unit_case("json_escape: every byte value");
	{
		struct buf b;

		for (int c = 0; c < 256; c++) {
			char in = (char)c, want[16];
			size_t wl;

			if (c == '"' || c == '\\')
				wl = (size_t)snprintf(want, sizeof want, "\"\\%c\"", c);
			else if (c == '\n' || c == '\r' || c == '\t')
				wl = (size_t)snprintf(want, sizeof want, "\"\\%c\"", c == '\n' ? 'n' : c == '\r' ? 'r' : 't');
			else if (c < 0x20)
				wl = (size_t)snprintf(want, sizeof want, "\"\\u%04x\"", c);
			else if (c >= 0x80)
				wl = (size_t)snprintf(want, sizeof want, "\"\\ufffd\"");
			else {
				want[0] = '"';
				want[1] = in;
				want[2] = '"';
				wl = 3;
			}
			buf_init(&b, 64);
			if (!CHECKF(json_escape(&b, &in, 1) == BUF_OK && b.len == wl && memcmp(b.data, want, wl) == 0,
			    "byte 0x%02x: '%.*s'", c, (int)b.len, b.data ? b.data : "")) {
				buf_free(&b);
				break;
			}
			buf_free(&b);
		}
	}

	/* What json_escape writes, json_parse reads back as one string of the same raw bytes. */
	unit_case("json_escape output parses");
	{
		static const char in[] = "q\" b\\ \x01\n\xc3\xa9";
		struct arena a;
		struct json j;
		struct buf b;

		buf_init(&b, 256);
		arena_init(&a);
		CHECK(json_escape(&b, in, sizeof in - 1) == BUF_OK);
		if (CHECKF(json_parse(&j, &a, b.data, b.len) == 1, "'%.*s' does not parse", (int)b.len, b.data))
			CHECK(j.tok[0].type == JSMN_STRING && json_eq(&j, 0, "q\\\" b\\\\ \\u0001\\n\xc3\xa9"));
		arena_release(&a);
		buf_free(&b);
	}

	/* Whatever the bytes, the output is valid JSON (the strict tokenizer accepts it): random
	 * strings, most of their bytes from 0x80 on, so that valid and invalid UTF-8 both abound. */
	unit_case("json_escape: random bytes always give valid JSON");
	{
		uint64_t r = 0x243F6A8885A308D3ull;
		unsigned char in[40];
		struct buf b;
		int bad = 0;

		buf_init(&b, 512);
		for (int k = 0; k < 20000 && bad == 0; k++) {
			size_t n = (size_t)(k % 40);

			for (size_t i = 0; i < n; i++) {
				r ^= r << 13, r ^= r >> 7, r ^= r << 17;
				in[i] = (unsigned char)(r % 3 ? 0x80 | (r >> 8 & 0x7f) : r >> 8);
			}
			buf_reset(&b);
			if (json_escape(&b, (const char *)in, n) != BUF_OK || !json_valid(b.data, b.len)) {
				char hex[2 * sizeof in + 1];

				for (size_t i = 0; i < n; i++)
					snprintf(hex + 2 * i, 3, "%02x", in[i]);
				hex[2 * n] = '\0';
				bad = 1;
				CHECKF(0, "string %d (bytes %s): '%.*s' is not valid JSON", k, hex, (int)b.len, b.data);
			}
		}
		buf_free(&b);
	}
}

/* json_eqn compares eight bytes at a time with an overlapping last word: a key of every length
 * to 40 must equal itself and differ from each copy with one byte changed, wherever it is. */
static void
test_eq_lengths(void)
{
	char doc[64], key[48];
	struct arena a;
	struct json j;
	int bad = 0;

	unit_case("json_eqn: every key length 0..40, one byte changed at every position");
	for (size_t n = 0; n <= 40; n++) {
		for (size_t i = 0; i < n; i++)
			key[i] = (char)('a' + (i * 7 + n) % 26);
		snprintf(doc, sizeof doc, "{\"%.*s\":1}", (int)n, key);
		arena_init(&a);
		if (json_parse(&j, &a, doc, strlen(doc)) != 3) {
			bad++;
			arena_release(&a);
			continue;
		}
		bad += !json_eqn(&j, 1, key, n) || json_findn(&j, 0, key, n) != 2;
		bad += n > 0 && json_eqn(&j, 1, key, n - 1); /* a prefix is not the key */
		for (size_t i = 0; i < n; i++) {
			key[i] ^= 0x20;
			bad += json_eqn(&j, 1, key, n) || json_findn(&j, 0, key, n) != -1;
			key[i] ^= 0x20;
		}
		arena_release(&a);
	}
	CHECKF(bad == 0, "%d wrong answers", bad);
}

/* json_fields gives, for every key of a list, what json_find gives for it alone: each subset of
 * eleven keys (present, absent, one a value and not a key, the empty key, keys of 8 and 17
 * bytes, one absent of a present one's length and first byte), on each object token of a
 * document where a key appears twice and one is 65 bytes long (65 and 1 alike mod 64), and on
 * tokens that are not objects; the tokens by json_parse and by json_parse_buf (skip links). */
static void
test_fields(void)
{
	static const char doc[] = "{\"a\":1,\"n\":{\"a\":2,\"b\":{\"a\":3}},\"arr\":[{\"b\":5},\"b\"],\"b\":\"x\","
	    "\"a\":9,\"\":0,\"last\":[1,[2]],\"x\":{},\"abcdefgh\":[8],\"abcdefgi\":{\"abcdefghijklmnopq\":17},"
	    "\"a0123456789012345678901234567890123456789012345678901234567890123\":65,\"abcdefghijklmnopq\":[[]]}";
	static const struct json_key all[] = { JSON_KEY("a"), JSON_KEY("b"), JSON_KEY("arr"), JSON_KEY(""),
	    JSON_KEY("last"), JSON_KEY("missing"), JSON_KEY("5"), JSON_KEY("x"), JSON_KEY("abcdefgi"),
	    JSON_KEY("abcdefghijklmnopq"), JSON_KEY("abcdefgX") };
	struct json_key keys[NELEM(all)];
	struct arena a;
	struct buf store;
	struct json js[2];
	int n, bad = 0;

	unit_case("json_fields: every subset of keys on every token, as json_find");
	arena_init(&a);
	buf_init(&store, 1u << 20);
	if (!CHECK((n = json_parse(&js[0], &a, doc, sizeof doc - 1)) > 0) ||
	    !CHECK(json_parse_buf(&js[1], &store, doc, sizeof doc - 1) == n && js[1].next != NULL)) {
		buf_free(&store);
		arena_release(&a);
		return;
	}
	for (unsigned set = 0; set < 1u << NELEM(all); set++) {
		int nk = 0, vals[NELEM(all)];

		for (size_t k = 0; k < NELEM(all); k++)
			if (set >> k & 1)
				keys[nk++] = all[k];
		for (int w = 0; w < 2; w++)
			for (int obj = -1; obj <= n; obj++) {
				json_fields(&js[w], obj, keys, nk, vals);
				for (int k = 0; k < nk; k++)
					bad += vals[k] != json_findn(&js[0], obj, keys[k].s, keys[k].n);
			}
	}
	CHECKF(bad == 0, "%d answers differ from json_find's", bad);
	unit_case("json_find: keys of 8 and 17 bytes, with and without skip links");
	for (int w = 0; w < 2; w++) {
		CHECK(json_find(&js[w], 0, "abcdefgi") > 0 && js[w].tok[json_find(&js[w], 0, "abcdefgi")].type == JSMN_OBJECT);
		CHECK(json_find(&js[w], 0, "abcdefghijklmnopq") == n - 2);
		CHECK(json_find(&js[w], 0, "abcdefgX") == -1 && json_find(&js[w], 0, "abcdefghijklmnopX") == -1);
	}
	buf_free(&store);
	arena_release(&a);
}

/* xl_long: a number token's integer part, saturated at the long's limits as strtol would. */
static void
test_long(void)
{
	static const struct {
		const char *doc;
		long        want;
	} rows[] = {
		{ "[0]", 0 }, { "[138]", 138 }, { "[-42]", -42 }, { "[12.9]", 12 }, { "[3e2]", 3 },
		{ "[9223372036854775807]", LONG_MAX }, { "[9223372036854775808]", LONG_MAX },
		{ "[123456789012345678901234]", LONG_MAX }, { "[-9223372036854775808]", LONG_MIN },
		{ "[-99999999999999999999]", LONG_MIN }, { "[true]", 0 }, { "[null]", 0 }, { "[\"7\"]", 0 },
	};
	struct arena a;
	struct json j;

	for (size_t i = 0; i < NELEM(rows); i++) {
		unit_case("xl_long: %s", rows[i].doc);
		arena_init(&a);
		if (CHECK(json_parse(&j, &a, rows[i].doc, strlen(rows[i].doc)) == 2))
			CHECKF(xl_long(&j, 1) == rows[i].want, "%ld, want %ld", xl_long(&j, 1), rows[i].want);
		arena_release(&a);
	}
	unit_case("xl_long: an absent token is 0");
	CHECK(xl_long(&j, -1) == 0);
}

void
suite_json(void)
{
	char err[256];
	struct mem_stats st;

	unit_case("mem_init");
	if (!CHECKF(mem_init(16 << 20, err, sizeof err) == 0, "mem_init: %s", err))
		return;
	test_parse();
	test_parse_nomem();
	test_parse_dense();
	test_find();
	test_eq_lengths();
	test_fields();
	test_long();
	test_skip();
	test_eq_null();
	test_skip_end();
	test_escape();

	unit_case("no memory left in use");
	mem_get_stats(&st);
	CHECKF(st.in_use == 0, "%zu bytes in use", st.in_use);
	mem_shutdown();
}
