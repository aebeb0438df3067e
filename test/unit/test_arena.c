/* test_arena.c — request pools: bump allocation, chunk growth, big requests, release. */
#include <stdint.h>
#include <string.h>
#include "sluice.h"
#include "unit.h"

#define KB  1024
#define HDR 16 /* the chunk header, as the arena rounds it */

static size_t
in_use(void)
{
	struct mem_stats st;

	mem_get_stats(&st);
	return st.in_use;
}

static int
init(size_t bytes)
{
	char err[256];

	return CHECKF(mem_init(bytes, err, sizeof err) == 0, "mem_init: %s", err);
}

/* Many small blocks: aligned, disjoint (each keeps its pattern), chunks doubling to 64K. */
static void
test_small(void)
{
	static unsigned char *p[20000];
	static const size_t sizes[] = { 1, 7, 16, 17, 100, 0, 33 };
	struct arena a;
	size_t want = 0, before = in_use();
	int aligned = 1, intact = 1, all = 1;

	unit_case("arena: 20000 small allocations");
	arena_init(&a);
	for (size_t i = 0; i < NELEM(p); i++) {
		size_t n = sizes[i % NELEM(sizes)];

		p[i] = arena_alloc(&a, n);
		all &= p[i] != NULL;
		if (p[i] == NULL)
			break;
		aligned &= (uintptr_t)p[i] % 16 == 0;
		memset(p[i], (int)(i & 0xff), n);
		want += n;
	}
	for (size_t i = 0; all && i < NELEM(p); i++)
		for (size_t j = 0; j < sizes[i % NELEM(sizes)]; j++)
			intact &= p[i][j] == (unsigned char)(i & 0xff);
	CHECK(all && aligned && intact);
	CHECKF(a.total >= want && a.total == in_use() - before, "total %zu, want %zu, mem %zu", a.total,
	    want, in_use() - before);
	arena_release(&a);
	CHECK(in_use() == before && a.head == NULL && a.total == 0 && a.used == 0);

	unit_case("arena: chunks are 3K, 6K, 12K, 24K, 48K, then 64K");
	{
		static const size_t totals[] = { 3, 9, 21, 45, 93, 157, 221 };
		size_t c = 0;

		for (int i = 0; i < 20000 && c < NELEM(totals); i++) {
			size_t t = a.total;

			CHECK(arena_alloc(&a, 48) != NULL);
			if (a.total != t) {
				CHECKF(a.total == totals[c] * KB, "chunk %zu: total %zu", c, a.total);
				c++;
			}
		}
		CHECK(c == NELEM(totals));
		arena_release(&a);
	}
}

static void
test_big(void)
{
	static const struct {
		const char *name;
		size_t first, big;  /* first: a small allocation before, 0 for none */
		size_t total;       /* after both */
	} rows[] = {
		/* A chunk is an exact allocation: it costs (and counts) whole 64-byte blocks. */
		{ "big first",            0,   5000,   5056 },
		{ "just fits a 3K chunk", 0,   3056,   3072 },
		{ "one past a 3K chunk",  0,   3057,   3136 },
		{ "big after small",      112, 100000, 3072 + 100032 },
		{ "big after small, 8K",  112, 8192,   3072 + 8256 },
	};
	size_t before = in_use();

	for (size_t i = 0; i < NELEM(rows); i++) {
		struct arena a;
		unsigned char *small = NULL, *big, *after;

		unit_case("arena: %s", rows[i].name);
		arena_init(&a);
		if (rows[i].first)
			small = arena_alloc(&a, rows[i].first);
		big = arena_alloc(&a, rows[i].big);
		if (!CHECK(big != NULL && (uintptr_t)big % 16 == 0))
			continue;
		memset(big, 0x77, rows[i].big);
		CHECKF(a.total == rows[i].total, "total %zu", a.total);
		if (small != NULL) {
			/* The small chunk stays the head: its room is still used. */
			after = arena_alloc(&a, 16);
			CHECK(after == small + rows[i].first && a.total == rows[i].total);
		}
		CHECK(big[rows[i].big - 1] == 0x77);
		arena_release(&a);
		CHECK(in_use() == before);
	}
}

static void
test_strings(void)
{
	static const struct {
		const char *s;
		size_t n;
		const char *want;
	} rows[] = {
		{ "hello world", 5,  "hello" },
		{ "hello",       5,  "hello" },
		{ "hello",       99, "hello" }, /* stops at the NUL */
		{ "hello",       0,  "" },
		{ "",            3,  "" },
	};
	static char longs[10001];
	struct arena a;
	char *p;

	arena_init(&a);
	for (size_t i = 0; i < NELEM(rows); i++) {
		unit_case("arena_strndup(\"%s\", %zu)", rows[i].s, rows[i].n);
		p = arena_strndup(&a, rows[i].s, rows[i].n);
		CHECK(p != NULL && strcmp(p, rows[i].want) == 0);
	}

	unit_case("arena_cat");
	p = arena_cat(&a, "x", "-", "42", "", "-003.1", (char *)NULL);
	CHECK(p != NULL && strcmp(p, "x-42-003.1") == 0);
	p = arena_cat(&a, (char *)NULL);
	CHECK(p != NULL && *p == '\0');
	p = arena_cat(&a, "", (char *)NULL);
	CHECK(p != NULL && *p == '\0');
	memset(longs, 'y', sizeof longs - 1);
	p = arena_cat(&a, "<", longs, ">", (char *)NULL);
	CHECK(p != NULL && strlen(p) == 10002 && p[0] == '<' && p[10001] == '>');
	CHECK(p != NULL && memcmp(p + 1, longs, 10000) == 0);
	/* More strings than lengths kept (12): the rest measured again when copied */
	p = arena_cat(&a, "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "mm", "", "nnn", "o", (char *)NULL);
	CHECK(p != NULL && strcmp(p, "abcdefghijklmmnnno") == 0);
	arena_release(&a);
}

static void
test_exhaustion(void)
{
	static char big[50001];
	struct arena a;
	void *p;
	size_t before, total;

	unit_case("arena: NULL when mem is short, then still usable");
	if (!init(32 * KB))
		return;
	before = in_use();
	arena_init(&a);
	CHECK(arena_alloc(&a, 100) != NULL);
	total = a.total;
	CHECK(arena_alloc(&a, 64 * KB) == NULL);
	CHECK(arena_alloc(&a, SIZE_MAX) == NULL && arena_alloc(&a, SIZE_MAX - 8) == NULL);
	memset(big, 'z', sizeof big - 1);
	CHECK(arena_cat(&a, big, big, (char *)NULL) == NULL);
	CHECK(a.total == total);
	CHECK(arena_alloc(&a, 100) != NULL && a.total == total);
	/* Fill all of mem through the arena: it must end in NULL, not a crash. */
	while ((p = arena_alloc(&a, 1000)) != NULL)
		memset(p, 1, 1000);
	CHECK(a.total > 16 * KB);
	arena_release(&a);
	CHECK(in_use() == before);

	unit_case("arena: usable again after release");
	CHECK(arena_alloc(&a, 100) != NULL && a.total == 3072);
	arena_release(&a);
	mem_shutdown();
}

void
suite_arena(void)
{
	if (!init(4 * 1024 * KB))
		return;
	test_small();
	test_big();
	test_strings();
	mem_shutdown();
	test_exhaustion();
}
