/* test_buf.c — capped buffers: the cap, growth, out of memory, printf, consume. */
#include <stdint.h>
#include <string.h>
#include "sluice.h"
#include "unit.h"

#define KB 1024

static int
init(size_t bytes)
{
	char err[256];

	return CHECKF(mem_init(bytes, err, sizeof err) == 0, "mem_init: %s", err);
}

static size_t
in_use(void)
{
	struct mem_stats st;

	mem_get_stats(&st);
	return st.in_use;
}

/* What every buffer must satisfy between calls. */
static int
sane(const struct buf *b)
{
	return b->len <= b->size && b->size <= b->max && (b->size == 0 || b->data != NULL);
}

static int
holds(const struct buf *b, const char *s)
{
	return b->len == strlen(s) && (b->len == 0 || memcmp(b->data, s, b->len) == 0);
}

/* Byte i of everything appended in the cap tests. */
static char
pattern(size_t i)
{
	return (char)('a' + i % 26);
}

static void
test_cap(void)
{
	static const struct {
		const char *name;
		size_t max;
		size_t add[4];  /* bytes appended by each step; the steps end at a 0 after the first */
		int rc[4];
		size_t len;     /* at the end */
	} rows[] = {
		{ "exactly max",       10,   { 10 },               { BUF_OK },                          10 },
		{ "max + 1 at once",   10,   { 11 },               { BUF_FULL },                        0 },
		{ "max, then 1 more",  10,   { 10, 1 },            { BUF_OK, BUF_FULL },                10 },
		{ "max - 1, then 2",   10,   { 9, 2, 1 },          { BUF_OK, BUF_FULL, BUF_OK },        10 },
		{ "zero cap",          0,    { 0, 1 },             { BUF_OK, BUF_FULL },                0 },
		{ "pieces up to max",  1000, { 400, 400, 200, 1 }, { BUF_OK, BUF_OK, BUF_OK, BUF_FULL }, 1000 },
		{ "max past 256",      300,  { 299, 1, 1 },        { BUF_OK, BUF_OK, BUF_FULL },        300 },
		{ "huge request",      100,  { 50, SIZE_MAX },     { BUF_OK, BUF_FULL },                50 },
	};
	static char src[2000];

	for (size_t i = 0; i < sizeof src; i++)
		src[i] = pattern(i);
	for (size_t i = 0; i < NELEM(rows); i++) {
		struct buf b;
		size_t at = 0;

		unit_case("cap: %s", rows[i].name);
		buf_init(&b, rows[i].max);
		for (size_t s = 0; s < 4 && (s == 0 || rows[i].add[s] != 0); s++) {
			size_t n = rows[i].add[s];
			int rc = buf_append(&b, n == SIZE_MAX ? src : src + at, n);

			CHECKF(rc == rows[i].rc[s], "step %zu: rc %d", s, rc);
			if (rc == BUF_OK)
				at += n;
		}
		CHECKF(b.len == rows[i].len, "len %zu", b.len);
		CHECK(sane(&b) && b.max == rows[i].max);
		CHECK(b.len == 0 || memcmp(b.data, src, b.len) == 0);
		buf_free(&b);
	}
}

static void
test_growth(void)
{
	static const struct {
		size_t max, n, size;
	} rows[] = {
		{ 1 << 20, 0,    0 },    /* nothing to hold, nothing allocated */
		{ 1 << 20, 1,    256 },
		{ 1 << 20, 256,  256 },
		{ 1 << 20, 257,  512 },
		{ 1 << 20, 1000, 1024 },
		{ 1 << 20, 5000, 8192 },
		{ 300,     280,  300 },
		{ 100,     1,    100 },
	};
	static char src[5000];
	size_t before = in_use();

	for (size_t i = 0; i < NELEM(rows); i++) {
		struct buf b;

		unit_case("growth: %zu bytes, max %zu", rows[i].n, rows[i].max);
		buf_init(&b, rows[i].max);
		CHECK(buf_append(&b, src, rows[i].n) == BUF_OK);
		CHECKF(b.size == rows[i].size, "size %zu", b.size);
		CHECK(sane(&b));
		/* Unless clamped to max, a buffer fills its mem run exactly. */
		CHECK(b.size == b.max || in_use() - before == b.size);
		buf_free(&b);
		CHECK(b.data == NULL && b.len == 0 && b.size == 0 && b.max == rows[i].max);
		CHECK(in_use() == before);
	}

	unit_case("growth: one byte at a time doubles");
	{
		struct buf b;
		size_t grows = 0, last = 0;

		buf_init(&b, 1 << 20);
		for (int i = 0; i < 100000; i++) {
			CHECK(buf_append(&b, "z", 1) == BUF_OK);
			if (b.size != last) {
				grows++;
				CHECKF(last == 0 || b.size == 2 * last, "%zu after %zu", b.size, last);
				last = b.size;
			}
		}
		CHECKF(grows == 10 && b.size == 131072, "%zu grows to %zu", grows, b.size);
		buf_free(&b);
	}
}

static void
test_nomem(void)
{
	static void *hog[128];
	struct buf b;
	size_t nhog = 0;

	if (!init(4 * KB))
		return;
	unit_case("nomem: a buffer bigger than mem");
	buf_init(&b, 1 << 20);
	CHECK(buf_append(&b, "hello", 5) == BUF_OK);
	CHECK(buf_reserve(&b, 3000) == BUF_NOMEM);
	CHECK(buf_printf(&b, "%3000s", "") == BUF_NOMEM);
	CHECK(holds(&b, "hello") && b.size == 256);

	unit_case("nomem: mem full, then freed");
	while (nhog < NELEM(hog) && (hog[nhog] = mem_alloc(1)) != NULL)
		nhog++;
	CHECK(buf_append(&b, "world", 5) == BUF_OK); /* fits in the room it has */
	CHECK(buf_printf(&b, "%300s", "") == BUF_NOMEM);
	CHECK(holds(&b, "helloworld") && sane(&b));
	{
		struct buf empty;

		buf_init(&empty, 100);
		CHECK(buf_puts(&empty, "x") == BUF_NOMEM && empty.data == NULL && empty.len == 0);
	}
	while (nhog > 0)
		mem_free(hog[--nhog]);
	CHECK(buf_printf(&b, "%300s", "") == BUF_OK && b.len == 310 && sane(&b));
	buf_free(&b);

	unit_case("nomem: sizes near SIZE_MAX");
	buf_init(&b, SIZE_MAX);
	CHECK(buf_reserve(&b, SIZE_MAX) == BUF_NOMEM && b.data == NULL);
	CHECK(buf_reserve(&b, SIZE_MAX / 2) == BUF_NOMEM && b.data == NULL);
	mem_shutdown();
}

static void
test_printf(void)
{
	static char want[4000];
	struct buf b;
	size_t wlen = 0;

	unit_case("printf: many small writes grow the buffer");
	buf_init(&b, 1 << 20);
	for (int i = 0; i < 300; i++) {
		CHECK(buf_printf(&b, "item %d,", i) == BUF_OK);
		wlen += (size_t)snprintf(want + wlen, sizeof want - wlen, "item %d,", i);
	}
	CHECK(holds(&b, want) && sane(&b));
	buf_free(&b);

	unit_case("printf: one write bigger than the first allocation");
	buf_init(&b, 1 << 20);
	CHECK(buf_printf(&b, "<%2998d>", 7) == BUF_OK);
	CHECK(b.len == 3000 && b.data[0] == '<' && b.data[2998] == '7' && b.data[2999] == '>');
	CHECK(sane(&b) && b.size == 4096);
	buf_free(&b);

	unit_case("printf: the room left, less one for the terminator, then exactly the room");
	buf_init(&b, 1 << 20);
	CHECK(buf_printf(&b, "%250s", "") == BUF_OK && b.size == 256);
	CHECK(buf_printf(&b, "%s", "abcde") == BUF_OK && b.len == 255 && b.size == 256);
	CHECK(buf_printf(&b, "%c", 'x') == BUF_OK && b.len == 256 && b.size == 512);
	CHECK(memcmp(b.data + 250, "abcdex", 6) == 0 && sane(&b));
	buf_free(&b);

	unit_case("printf: the cap");
	buf_init(&b, 20);
	CHECK(buf_printf(&b, "%s", "") == BUF_OK && b.len == 0 && sane(&b));
	CHECK(buf_printf(&b, "%d", 1234567890) == BUF_OK && b.size == 20);
	CHECK(buf_printf(&b, "%s", "abcdefghijk") == BUF_FULL);
	CHECK(holds(&b, "1234567890") && sane(&b));
	CHECK(buf_printf(&b, "%s", "abcdefghi") == BUF_OK && b.len == 19);
	/* The last byte: vsnprintf needs one more for its terminator, append does not. */
	CHECK(buf_printf(&b, "j") == BUF_FULL && b.len == 19);
	CHECK(buf_append(&b, "j", 1) == BUF_OK && b.len == 20);
	CHECK(buf_printf(&b, "%s", "") == BUF_OK && buf_printf(&b, "x") == BUF_FULL);
	CHECK(holds(&b, "1234567890abcdefghij") && sane(&b));
	buf_free(&b);
}

static void
test_consume(void)
{
	static const struct {
		const char *have;
		size_t n;
		const char *want;
	} rows[] = {
		{ "hello world", 0,   "hello world" },
		{ "hello world", 6,   "world" },
		{ "hello world", 10,  "d" },
		{ "hello world", 11,  "" },
		{ "hello world", 100, "" },
		{ "",            0,   "" },
		{ "",            5,   "" },
	};

	for (size_t i = 0; i < NELEM(rows); i++) {
		struct buf b;
		size_t size;

		unit_case("consume %zu of \"%s\"", rows[i].n, rows[i].have);
		buf_init(&b, 100);
		CHECK(buf_puts(&b, rows[i].have) == BUF_OK);
		size = b.size;
		buf_consume(&b, rows[i].n);
		CHECK(holds(&b, rows[i].want));
		CHECK(b.size == size && sane(&b));
		CHECK(buf_puts(&b, "!") == BUF_OK && b.data[b.len - 1] == '!');
		buf_free(&b);
	}

	unit_case("consume and reset on a buffer never written");
	{
		struct buf b;

		buf_init(&b, 100);
		buf_consume(&b, 3);
		buf_reset(&b);
		CHECK(b.data == NULL && b.len == 0 && sane(&b));
		buf_free(&b);
		buf_free(&b);
	}

	unit_case("reset keeps the memory");
	{
		struct buf b;
		char *data;

		buf_init(&b, 1000);
		CHECK(buf_printf(&b, "%500s", "") == BUF_OK);
		data = b.data;
		buf_reset(&b);
		CHECK(b.len == 0 && b.size == 512 && b.data == data);
		CHECK(buf_reserve(&b, 512) == BUF_OK && b.data == data);
		CHECK(buf_reserve(&b, 1000) == BUF_OK && b.size == 1000);
		CHECK(buf_reserve(&b, 1001) == BUF_FULL && b.size == 1000);
		buf_free(&b);
	}
}

/* A caller's own array wrapped as a buf: filled to the byte, never reallocated or overrun. */
static void
test_wrapped(void)
{
	struct {
		char arr[16];
		char guard;
	} m;
	struct buf b = { .data = m.arr, .size = sizeof m.arr, .max = sizeof m.arr };

	unit_case("wrapped array: fills to the byte, never past it");
	m.guard = 'G';
	CHECK(buf_printf(&b, "%d-%s", 42, "abcdefghi") == BUF_OK && holds(&b, "42-abcdefghi"));
	CHECK(buf_printf(&b, "%s", "abcd") == BUF_FULL); /* 16 and the terminator do not fit */
	CHECK(buf_puts(&b, "abcde") == BUF_FULL && b.len == 12);
	CHECK(buf_puts(&b, "abc") == BUF_OK && buf_puts(&b, "d") == BUF_OK);
	CHECK(buf_puts(&b, "z") == BUF_FULL && buf_printf(&b, "z") == BUF_FULL);
	CHECK(buf_reserve(&b, 0) == BUF_OK && buf_reserve(&b, 1) == BUF_FULL);
	CHECK(holds(&b, "42-abcdefghiabcd") && m.guard == 'G');
	CHECK(b.data == m.arr && b.size == sizeof m.arr);
	buf_consume(&b, 13);
	CHECK(holds(&b, "bcd"));
	CHECK(m.guard == 'G');
}

/* The number writers the hot paths use instead of printf, against printf. */
static void
test_numbers(void)
{
	static const uint64_t vals[] = { 0, 1, 9, 10, 99, 100, 4096, 0x0123456789abcdefull, UINT32_MAX,
	    (uint64_t)INT64_MAX, UINT64_MAX };
	int bad = 0;

	unit_case("u64_dec and u64_hex: as printf's %%llu and %%016llx");
	for (size_t i = 0; i < NELEM(vals); i++) {
		char d[21], h[17] = { 0 }, want[40];

		snprintf(want, sizeof want, "%llu", (unsigned long long)vals[i]);
		bad += strcmp(u64_dec(d, vals[i]), want) != 0;
		snprintf(want, sizeof want, "%016llx", (unsigned long long)vals[i]);
		u64_hex(h, vals[i]);
		bad += strcmp(h, want) != 0;
	}
	CHECKF(bad == 0, "%d wrong", bad);
}

void
suite_buf(void)
{
	if (!init(1 << 20))
		return;
	test_cap();
	test_growth();
	test_printf();
	test_consume();
	test_wrapped();
	test_numbers();
	mem_shutdown();
	test_nomem();
}
