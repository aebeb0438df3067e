/* test_mem.c — the buddy allocator: sizes, coalescing, exhaustion, realloc, stress, threads. */
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "sluice.h"
#include "unit.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#endif

#define KB 1024
#define MB (1024 * 1024)

static char err[256];

static int
init(size_t bytes)
{
	err[0] = '\0';
	return CHECKF(mem_init(bytes, err, sizeof err) == 0, "mem_init(%zu): %s", bytes, err);
}

static struct mem_stats
stats(void)
{
	struct mem_stats st;

	mem_get_stats(&st);
	return st;
}

/* The largest run the pool can hold: the top power of two of its blocks. */
static size_t
max_run(void)
{
	size_t blocks = stats().reserved / MEM_BLOCK, run = 1;

	while (run * 2 <= blocks)
		run *= 2;
	return run * MEM_BLOCK;
}

/* After everything is freed: nothing in use, and the largest run can be had again. */
static void
check_coalesced(void)
{
	void *p;

	CHECKF(stats().in_use == 0, "in_use %zu", stats().in_use);
	p = mem_alloc(max_run());
	CHECKF(p != NULL, "max run %zu after freeing all", max_run());
	mem_free(p);
}

static uint64_t rng = 0x9e3779b97f4a7c15u;

static uint32_t
rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (uint32_t)(rng >> 32);
}

static void
test_init(void)
{
	static const struct {
		const char *name;
		size_t bytes;
		int ok;
		size_t reserved;
		const char *err;
	} rows[] = {
		{ "zero bytes",        0,                   0, 0,                 "too small" },
		{ "less than a block", 100,                 0, 0,                 "too small" },
		{ "two blocks",        256,                 1, 2 * MEM_BLOCK,     NULL },
		{ "one MiB",           MB,                  1, 16126 * MEM_BLOCK, NULL },
		{ "odd size",          MB + 123,            1, 16127 * MEM_BLOCK, NULL },
		{ "beyond 2^31 blocks", (size_t)1 << 40,    0, 0,                 "too large" },
	};

	for (size_t i = 0; i < NELEM(rows); i++) {
		int rc;

		unit_case("init: %s", rows[i].name);
		err[0] = '\0';
		rc = mem_init(rows[i].bytes, err, sizeof err);
		CHECKF((rc == 0) == rows[i].ok, "rc %d, err '%s'", rc, err);
		if (rc == 0) {
			CHECKF(stats().reserved == rows[i].reserved, "reserved %zu", stats().reserved);
			CHECK(stats().in_use == 0 && stats().allocs == 0);
			mem_shutdown();
		} else {
			CHECKF(strstr(err, rows[i].err) != NULL, "err '%s'", err);
		}
	}

	unit_case("init: twice is refused, shutdown twice is harmless");
	if (init(64 * KB)) {
		CHECK(mem_init(64 * KB, err, sizeof err) == -1 && strstr(err, "already") != NULL);
		mem_shutdown();
	}
	mem_shutdown();
	CHECK(mem_alloc(1) == NULL);
}

static void
test_sizes(void)
{
	static const struct {
		size_t n, usable;
	} rows[] = {
		{ 0, 64 }, { 1, 64 }, { 16, 64 }, { 64, 64 }, { 65, 128 }, { 100, 128 },
		{ 1000, 1024 }, { 4096, 4096 }, { 4097, 8192 }, { 100000, 131072 }, { 512 * KB, 512 * KB },
	};
	void *p[NELEM(rows)];
	size_t total = 0;

	if (!init(MB))
		return;
	for (size_t i = 0; i < NELEM(rows); i++) {
		unit_case("alloc %zu bytes", rows[i].n);
		p[i] = mem_alloc(rows[i].n);
		if (!CHECK(p[i] != NULL))
			continue;
		total += rows[i].usable;
		CHECKF(mem_usable(p[i]) == rows[i].usable, "usable %zu", mem_usable(p[i]));
		CHECKF((uintptr_t)p[i] % 16 == 0, "%p not 16-byte aligned", p[i]);
		CHECK(mem_owns(p[i]) && mem_owns((char *)p[i] + rows[i].usable - 1));
		CHECKF(stats().in_use == total, "in_use %zu, expected %zu", stats().in_use, total);
		CHECK(stats().allocs == i + 1);
		memset(p[i], 0x5a, rows[i].usable);
	}
	unit_case("alloc: a run too big for the pool is refused");
	CHECK(mem_alloc(max_run() + 1) == NULL && stats().refusals == 1);
	CHECK(mem_alloc(SIZE_MAX) == NULL && stats().refusals == 2);

	unit_case("alloc: free every size, then coalesced");
	for (size_t i = 0; i < NELEM(rows); i++)
		mem_free(p[i]);
	check_coalesced();
	CHECK(stats().high_water == total);
	mem_shutdown();
}

/* Allocate every block one at a time, free them in an order, and expect full coalescing. */
static void
test_free_orders(void)
{
	static void *p[2048];
	static const char *orders[] = { "in order", "reverse", "evens then odds", "random" };
	size_t n;

	for (size_t o = 0; o < NELEM(orders); o++) {
		unit_case("free all single blocks %s", orders[o]);
		if (!init(64 * KB))
			return;
		for (n = 0; n < NELEM(p) && (p[n] = mem_alloc(1)) != NULL; n++)
			;
		CHECKF(n * MEM_BLOCK == stats().reserved, "%zu blocks of %zu bytes", n, stats().reserved);
		CHECK(stats().refusals == 1 && stats().in_use == stats().reserved);
		if (o == 3) {
			for (size_t i = n - 1; i > 0; i--) {
				size_t j = rnd() % (i + 1);
				void *t = p[i];

				p[i] = p[j];
				p[j] = t;
			}
		}
		for (size_t i = 0; i < n; i++) {
			size_t at = o == 1 ? n - 1 - i : o == 2 ? (i < (n + 1) / 2 ? 2 * i : 2 * (i - (n + 1) / 2) + 1) : i;

			mem_free(p[at]);
		}
		check_coalesced();
		mem_shutdown();
	}
}

static void
test_exhaustion(void)
{
	void *p[64], *big;
	size_t n;

	unit_case("exhaustion: NULL and a refusal, then recovery");
	if (!init(64 * KB))
		return;
	for (n = 0; n < NELEM(p) && (p[n] = mem_alloc(4 * KB)) != NULL; n++)
		;
	CHECKF(n == stats().reserved / (4 * KB), "%zu runs of 4K", n);
	CHECK(stats().refusals == 1);
	CHECK(mem_alloc(4 * KB) == NULL && stats().refusals == 2);
	mem_free(p[0]);
	p[0] = mem_alloc(4 * KB);
	CHECK(p[0] != NULL && stats().refusals == 2);
	CHECK(mem_alloc(1) != NULL); /* the blocks left over after the 4K runs */

	unit_case("exhaustion: high water stays at the peak");
	{
		size_t peak = stats().in_use;

		for (size_t i = 0; i < n; i++)
			mem_free(p[i]);
		CHECK(stats().high_water == peak);
		big = mem_alloc(8 * KB);
		CHECK(big != NULL && stats().high_water == peak);
		mem_free(big);
	}
	mem_shutdown();
}

static void
test_realloc(void)
{
	static const struct {
		const char *name;
		size_t from, to;
		int same;          /* 1: the same pointer back */
		size_t usable;     /* after */
	} rows[] = {
		{ "grow inside its run",  100,  120,  1, 128 },
		{ "grow to the run size", 100,  128,  1, 128 },
		{ "grow past its run",    100,  1000, 0, 1024 },
		{ "grow a lot",           64,   64000, 0, 65536 },
		{ "shrink keeps place",   1000, 100,  1, 128 },
		{ "shrink to zero",       1000, 0,    1, 64 },
		{ "same size",            256,  256,  1, 256 },
	};

	if (!init(MB))
		return;
	for (size_t i = 0; i < NELEM(rows); i++) {
		unsigned char *p, *q;
		size_t keep = rows[i].from < rows[i].to ? rows[i].from : rows[i].to;

		unit_case("realloc: %s", rows[i].name);
		p = mem_alloc(rows[i].from);
		if (!CHECK(p != NULL))
			continue;
		for (size_t j = 0; j < rows[i].from; j++)
			p[j] = (unsigned char)(j * 7 + i);
		q = mem_realloc(p, rows[i].to);
		if (!CHECK(q != NULL))
			continue;
		CHECKF((q == p) == rows[i].same, "moved: %d", q != p);
		CHECKF(mem_usable(q) == rows[i].usable, "usable %zu", mem_usable(q));
		CHECKF(stats().in_use == rows[i].usable, "in_use %zu", stats().in_use);
		for (size_t j = 0; j < keep; j++) {
			if (!CHECKF(q[j] == (unsigned char)(j * 7 + i), "byte %zu lost", j))
				break;
		}
		mem_free(q);
		check_coalesced();
	}

	unit_case("realloc: NULL is alloc");
	{
		void *p = mem_realloc(NULL, 10);

		CHECK(p != NULL && mem_usable(p) == 64);
		mem_free(p);
	}

	unit_case("realloc: failure keeps the old block");
	{
		char *p = mem_alloc(100), *fill;

		if (CHECK(p != NULL)) {
			strcpy(p, "precious");
			CHECK(mem_realloc(p, max_run() + 1) == NULL);
			CHECK(strcmp(p, "precious") == 0 && mem_usable(p) == 128);
			/* Take the biggest free run, then ask for a run no free one holds. */
			fill = mem_alloc(max_run());
			CHECK(fill != NULL);
			CHECK(mem_realloc(p, max_run()) == NULL);
			CHECK(strcmp(p, "precious") == 0);
			CHECK(stats().refusals == 2);
			mem_free(fill);
			mem_free(p);
		}
		check_coalesced();
	}
	mem_shutdown();
}

static void
test_calloc_strdup_owns(void)
{
	int local;

	if (!init(MB))
		return;
	unit_case("calloc zeroes reused memory");
	{
		unsigned char *p = mem_alloc(3000), *q;
		int zero = 1;

		if (CHECK(p != NULL)) {
			memset(p, 0xff, 3000);
			mem_free(p);
		}
		q = mem_calloc(300, 10);
		CHECK(q == p); /* the same run came back: the zeroing is real */
		for (size_t i = 0; q != NULL && i < 3000; i++)
			zero &= q[i] == 0;
		CHECK(zero);
		mem_free(q);
	}

	unit_case("calloc overflow is refused");
	CHECK(mem_calloc(SIZE_MAX / 2, 3) == NULL && stats().refusals == 1);
	{
		void *z = mem_calloc(0, 10);

		CHECK(z != NULL);
		mem_free(z);
	}

	unit_case("strdup");
	{
		static char longs[5000];
		char *a = mem_strdup(""), *b = mem_strdup("hello"), *c;

		memset(longs, 'x', sizeof longs - 1);
		c = mem_strdup(longs);
		CHECK(a && strcmp(a, "") == 0);
		CHECK(b && strcmp(b, "hello") == 0 && b != (char *)"hello");
		CHECK(c && strcmp(c, longs) == 0 && mem_usable(c) == 8192);
		mem_free(a);
		mem_free(b);
		mem_free(c);
	}

	unit_case("owns and usable");
	{
		char *p = mem_alloc(10);

		CHECK(mem_owns(p) && mem_owns(p + 63));
		CHECK(!mem_owns(&local) && !mem_owns(NULL) && !mem_owns(err));
		CHECK(mem_usable(NULL) == 0 && mem_usable(&local) == 0);
		CHECK(mem_usable(p + 16) == 0); /* inside a run but not its start */
		mem_free(NULL);
		mem_free(p);
		CHECK(mem_usable(p) == 0); /* freed */
	}
	check_coalesced();
	mem_shutdown();
}

/* A debug build fills fresh memory, and ASan traps reads of freed memory in the pool. */
static void
test_poison(void)
{
	unsigned char *p;

	if (!init(64 * KB))
		return;
	p = mem_alloc(200);
#ifdef SLUICE_DEBUG
	unit_case("debug: fresh memory is 0xA5");
	{
		int all = 1;

		for (size_t i = 0; p != NULL && i < mem_usable(p); i++)
			all &= p[i] == 0xA5;
		CHECK(all);
	}
#endif
	mem_free(p);
#if defined(__SANITIZE_ADDRESS__)
	unit_case("asan: a freed run is poisoned, a new one is not");
	CHECK(__asan_address_is_poisoned(p) && __asan_address_is_poisoned(p + 255));
	p = mem_alloc(200);
	CHECK(p != NULL && !__asan_address_is_poisoned(p) && !__asan_address_is_poisoned(p + 255));
	CHECK(__asan_address_is_poisoned(p - 256)); /* the split-off buddy (below: first fit from the top) is free */
	mem_free(p);
	unit_case("asan: a freed slab object is poisoned, its neighbours are not");
	{
		unsigned char *o[3];

		for (int i = 0; i < 3; i++)
			o[i] = mem_alloc_exact(32);
		mem_free(o[1]);
		CHECK(__asan_address_is_poisoned(o[1]) && __asan_address_is_poisoned(o[1] + 31));
		CHECK(!__asan_address_is_poisoned(o[0] + 31) && !__asan_address_is_poisoned(o[2]));
		mem_free(o[0]);
		mem_free(o[2]);
	}
#endif
	(void)p;
	mem_shutdown();
}

/* A freed or foreign pointer handed to free must stop the process, not corrupt the lists. */
static void
test_bad_free(void)
{
	static const char *what[] = { "double free (the run cached)", "interior pointer", "foreign pointer",
		"slab double free", "slab interior pointer", "slab header", "double free (the run back in the pool)" };

	for (size_t i = 0; i < NELEM(what); i++) {
		pid_t pid;
		int status = 0;

		unit_case("abort on %s", what[i]);
		fflush(stdout);
		pid = fork();
		if (pid == 0) {
			static int foreign;
			char *p;

			if (freopen("/dev/null", "w", stderr) == NULL || mem_init(64 * KB, err, sizeof err) != 0)
				_exit(3);
			p = i < 3 || i == 6 ? mem_alloc(100) : mem_alloc_exact(i == 4 ? 32 : 4304);
			(void)mem_alloc_exact(i == 4 ? 32 : 4304); /* the slab stays when p goes */
			if (i == 0 || i == 3) {
				mem_free(p);
				mem_free(p);
			} else if (i == 6) {
				mem_free(p);
				mem_trim();
				mem_free(p);
			} else if (i == 5) {
				mem_free(p + 15 * 4352); /* past the last object */
			} else {
				mem_free(i == 1 || i == 4 ? p + 16 : (char *)&foreign);
			}
			_exit(0);
		}
		CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
		CHECKF(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT, "status %#x", status);
	}
}

/*
 * Random allocs, reallocs and frees against a shadow model (fixed seed): every live block keeps
 * its fill pattern, live runs never overlap, and in_use is the sum of their runs.
 */
#define SLOTS 512
struct slot {
	unsigned char *p;
	size_t n;
	unsigned char tag;
};

static int
intact(const struct slot *s)
{
	for (size_t i = 0; i < s->n; i++)
		if (s->p[i] != (unsigned char)(s->tag + i))
			return 0;
	return 1;
}

static int
by_address(const void *a, const void *b)
{
	const struct slot *x = a, *y = b;

	return (x->p > y->p) - (x->p < y->p);
}

static int
model_consistent(struct slot *slots, size_t *bad)
{
	static struct slot live[SLOTS];
	size_t nlive = 0, sum = 0;

	for (size_t i = 0; i < SLOTS; i++) {
		if (slots[i].p == NULL)
			continue;
		if (!intact(&slots[i]) || mem_usable(slots[i].p) < slots[i].n) {
			*bad = i;
			return 0;
		}
		sum += mem_usable(slots[i].p);
		live[nlive++] = slots[i];
	}
	qsort(live, nlive, sizeof live[0], by_address);
	for (size_t i = 1; i < nlive; i++)
		if (live[i - 1].p + mem_usable(live[i - 1].p) > live[i].p)
			return 0;
	return sum == stats().in_use;
}

/*
 * First fit from the top: the run an allocation took (usable bytes rounded up to a power of
 * two; an exact one keeps the start of it) must be the highest that was free. So no aligned run
 * of that size above it may be wholly outside the live slots. base is block 0 of the pool.
 */
static int
took_highest(struct slot *slots, const unsigned char *base, const unsigned char *p)
{
	static struct slot live[SLOTS];
	size_t nlive = 0, run = MEM_BLOCK, end = stats().reserved, at = 0;

	while (run < mem_usable(p))
		run *= 2;
	for (size_t i = 0; i < SLOTS; i++)
		if (slots[i].p != NULL && slots[i].p != p)
			live[nlive++] = slots[i];
	qsort(live, nlive, sizeof live[0], by_address);
	for (size_t q = (size_t)(p - base) + run; q + run <= end; q += run) {
		while (at < nlive && (size_t)(live[at].p - base) + mem_usable(live[at].p) <= q)
			at++;
		if (at == nlive || (size_t)(live[at].p - base) >= q + run)
			return 0; /* [q, q + run) is free and higher */
	}
	return 1;
}

static size_t
random_size(void)
{
	size_t span = (size_t)16 << (rnd() % 12); /* two statements: the calls' order is then fixed */

	return rnd() % span; /* mostly small, up to 32K */
}

static void
fill_slot(struct slot *s, size_t from)
{
	for (size_t i = from; i < s->n; i++)
		s->p[i] = (unsigned char)(s->tag + i);
}

/* exact: 0 power-of-two calls only; 1 a mix of them and the exact ones (libcurl's). */
static void
stress(int exact)
{
	static struct slot slots[SLOTS];
	size_t refused = 0, bad = 0, highest = 0;
	unsigned char *base;
	int ok = 1;

	unit_case("stress: 200000 random operations against a shadow model%s", exact ? ", exact and power-of-two" : "");
	if (!init(exact ? MB / 2 : MB))
		return;
	base = mem_alloc(max_run()); /* the largest top-level run is block 0 */
	mem_free(base);
	rng = 42 + (uint64_t)exact;
	memset(slots, 0, sizeof slots);
	for (int step = 0; step < 200000 && ok; step++) {
		struct slot *s = &slots[rnd() % SLOTS];
		unsigned op = rnd() % 3, ex = exact && rnd() % 2;

		if (s->p == NULL) {
			s->n = random_size();
			s->tag = (unsigned char)rnd();
			if (!exact && step % 7 == 0)
				mem_trim(); /* first fit is for runs not in the cache */
			s->p = ex ? mem_alloc_exact(s->n) : mem_alloc(s->n);
			refused += s->p == NULL;
			if (s->p)
				fill_slot(s, 0);
			if (s->p && !exact && step % 7 == 0) { /* exact ones may sit in slabs */
				ok = CHECKF(took_highest(slots, base, s->p), "step %d: %zu bytes at +%zu, a higher run was free",
				    step, s->n, (size_t)(s->p - base));
				highest++;
			}
		} else if (!intact(s)) {
			ok = CHECKF(0, "step %d: block %p of %zu corrupted", step, (void *)s->p, s->n);
		} else if (op == 0) {
			size_t n = random_size();
			unsigned char *q = ex ? mem_realloc_exact(s->p, n) : mem_realloc(s->p, n);

			refused += q == NULL;
			if (q != NULL) {
				size_t old = s->n;

				s->p = q;
				s->n = n;
				fill_slot(s, old < n ? old : n);
			}
		} else {
			mem_free(s->p);
			s->p = NULL;
		}
		if (ok && step % 5000 == 0)
			ok = CHECKF(model_consistent(slots, &bad), "step %d: model differs (slot %zu)", step, bad);
	}
	CHECKF(refused > 0 && refused == stats().refusals, "refused %zu, counted %llu", refused,
	    (unsigned long long)stats().refusals);
	CHECKF(exact || highest > 5000, "first fit checked %zu times", highest);
	CHECK(model_consistent(slots, &bad));
	for (size_t i = 0; i < SLOTS; i++)
		mem_free(slots[i].p);
	check_coalesced();
	mem_shutdown();
}

static void
test_stress(void)
{
	stress(0);
	stress(1);
}

/*
 * Exact allocations (what libcurl gets): a request costs its size in whole blocks, not the next
 * power of two; calloc's are zero however the pages were zeroed; realloc keeps the contents;
 * mem_free frees them like any other; freeing everything merges the pool back whole.
 */
static void
test_exact(void)
{
	static const size_t sizes[] = { 1, 63, 64, 65, 200, 2240, 4096, 4304, 16424, 100000, 300000 };
	unsigned char *p[NELEM(sizes)];

	if (!init(4 * MB))
		return;
	for (size_t i = 0; i < NELEM(sizes); i++) {
		size_t grain = sizes[i] <= MEM_SMALL_MAX ? 16 : MEM_BLOCK;
		size_t want = (sizes[i] + grain - 1) / grain * grain;

		unit_case("mem_alloc_exact(%zu): %zu usable bytes, in use as much", sizes[i], want);
		size_t before = stats().in_use;
		p[i] = mem_alloc_exact(sizes[i]);
		if (CHECK(p[i] != NULL)) {
			CHECKF(mem_usable(p[i]) == want, "usable %zu", mem_usable(p[i]));
			CHECKF(stats().in_use - before == want, "in use grew by %zu", stats().in_use - before);
			CHECK(mem_owns(p[i]) && (uintptr_t)p[i] % grain == 0);
			memset(p[i], 0xA5, sizes[i]);
		}
	}
	unit_case("mem_alloc_exact: freed in another order, the pool merges back whole");
	for (size_t i = 0; i < NELEM(sizes); i += 2)
		mem_free(p[i]);
	for (size_t i = 1; i < NELEM(sizes); i += 2)
		mem_free(p[i]);
	check_coalesced();

	unit_case("mem_calloc_exact: zero, also where a freed, written run is taken again");
	for (int round = 0; round < 2; round++) {
		unsigned char *q = mem_calloc_exact(1, 300000);
		size_t nonzero = 0;

		if (!CHECK(q != NULL))
			break;
		for (size_t i = 0; i < 300000; i++)
			nonzero += q[i] != 0;
		CHECKF(nonzero == 0, "round %d: %zu bytes not zero", round, nonzero);
		memset(q, 0x5A, 300000);
		mem_free(q);
	}
	CHECK(mem_calloc_exact(SIZE_MAX / 2, 4) == NULL); /* the product overflows */

	unit_case("mem_realloc_exact: grows and shrinks keeping the contents");
	{
		unsigned char *q = mem_alloc_exact(100), *r;
		int same = 1;

		if (CHECK(q != NULL)) {
			for (int i = 0; i < 100; i++)
				q[i] = (unsigned char)i;
			r = mem_realloc_exact(q, 20000);
			if (CHECK(r != NULL)) {
				for (int i = 0; i < 100; i++)
					same &= r[i] == (unsigned char)i;
				CHECK(mem_usable(r) == 20032);
				q = mem_realloc_exact(r, 130);
				if (CHECK(q != NULL)) {
					for (int i = 0; i < 100; i++)
						same &= q[i] == (unsigned char)i;
					CHECK(mem_usable(q) == 192);
				}
			}
			CHECK(same);
			mem_free(q);
		}
	}
	unit_case("mem_strdup_exact");
	{
		char *d = mem_strdup_exact("sluice");

		CHECK(d != NULL && strcmp(d, "sluice") == 0 && mem_usable(d) == 16);
		mem_free(d);
	}
	check_coalesced();
	mem_shutdown();
}

/*
 * Slabs: exact allocations of up to MEM_SMALL_MAX bytes, and of 3 to 127 blocks that are not a
 * power of two, sit side by side in runs of their own size class, each costing its size; freed,
 * an object's place is the next one handed out; an emptied slab goes back to the pool.
 */
static void
test_slabs(void)
{
	static const size_t sizes[] = { 1, 16, 17, 48, 184, 312, 1080, 2240, 4304, 8100 };
	static unsigned char *p[64];

	if (!init(4 * MB))
		return;
	for (size_t s = 0; s < NELEM(sizes); s++) {
		size_t n = sizes[s], grain = n <= MEM_SMALL_MAX ? 16 : MEM_BLOCK, each = (n + grain - 1) / grain * grain;
		size_t lo = SIZE_MAX, hi = 0;
		int ok = 1;

		unit_case("slab: 8 objects of %zu bytes cost %zu each, side by side", n, each);
		for (int i = 0; i < 8; i++) {
			p[i] = mem_alloc_exact(n);
			if (!CHECK(p[i] != NULL))
				return;
			memset(p[i], 0x11 * (i + 1), n);
			ok &= mem_usable(p[i]) == each && (uintptr_t)p[i] % grain == 0;
			ok &= i == 0 || p[i] == p[i - 1] + each; /* lowest place first: the slab's top stays untouched */
			lo = (size_t)p[i] < lo ? (size_t)p[i] : lo;
			hi = (size_t)p[i] > hi ? (size_t)p[i] : hi;
		}
		CHECKF(ok, "usable %zu", mem_usable(p[0]));
		CHECKF(stats().in_use == 8 * each, "in use %zu", stats().in_use);
		CHECKF(hi - lo == 7 * each, "spread over %zu bytes", hi - lo);
		mem_free(p[3]);
		CHECKF(mem_alloc_exact(n) == p[3], "a freed place is handed out next");
		for (int i = 0; i < 8; i++) {
			for (size_t j = 0; i != 3 && j < n; j++)
				ok &= p[i][j] == 0x11 * (i + 1);
			mem_free(p[i]);
		}
		CHECKF(ok, "an object was overwritten");
		check_coalesced();
	}

	unit_case("slab: once its slab is gone, an object's address is no object");
	{
		unsigned char *a = mem_alloc_exact(4304), *b = mem_alloc_exact(4304), *run;

		mem_free(a);
		mem_free(b);
		run = mem_alloc(64 * KB); /* the slab's run, taken whole */
		CHECK(run != NULL && a >= run && a < run + 64 * KB);
		if (run != NULL)
			memset(run, 0xff, 64 * KB); /* nothing of the slab's header is left */
		CHECK(mem_usable(b) == 0 && mem_usable(a) == (a == run ? 64 * KB : 0));
		mem_free(run);
	}

	unit_case("slab: many small ones, freed in another order, merge back whole");
	for (int i = 0; i < 64; i++)
		p[i] = mem_alloc_exact((size_t)(i % 3 + 1) * 16);
	for (int i = 0; i < 64; i += 2)
		mem_free(p[i]);
	for (int i = 1; i < 64; i += 2)
		mem_free(p[i]);
	check_coalesced();

	unit_case("slab: realloc_exact keeps an object that still fits, moves one that does not");
	{
		unsigned char *q = mem_alloc_exact(20), *r;

		if (CHECK(q != NULL)) {
			memcpy(q, "0123456789abcdefghi", 20);
			CHECK(mem_realloc_exact(q, 32) == q);
			r = mem_realloc_exact(q, 300);
			CHECK(r != NULL && r != q && memcmp(r, "0123456789abcdefghi", 20) == 0 && mem_usable(r) == 320);
			q = mem_realloc_exact(r, 5000);
			CHECK(q != NULL && memcmp(q, "0123456789abcdefghi", 20) == 0 && mem_usable(q) == 5056);
			r = mem_realloc(q, 40); /* power-of-two realloc of a slab object: a run of its own */
			CHECK(r != NULL && memcmp(r, "0123456789abcdefghi", 20) == 0 && mem_usable(r) == 64);
			mem_free(r);
		}
	}
	check_coalesced();
	mem_shutdown();

	unit_case("slab: no room for one, the allocation is a run of its own");
	if (!init(64 * KB))
		return;
	p[0] = mem_alloc_exact(8100); /* its slab would be 64 KiB */
	CHECK(p[0] != NULL && mem_usable(p[0]) == 8128 && stats().refusals == 0);
	mem_free(p[0]);
	check_coalesced();
	mem_shutdown();
}

/* Two threads allocate, fill, check and free at once; a lost lock shows as corruption. */
static void *
churn(void *arg)
{
	unsigned char tag = (unsigned char)(uintptr_t)arg;
	unsigned char *held[32] = { 0 };
	size_t held_n[32] = { 0 };
	uint32_t r = tag * 2654435761u + 1;
	uintptr_t bad = 0;

	for (int i = 0; i < 100000; i++) {
		size_t at = i % 32, n;

		r = r * 1103515245u + 12345u;
		n = 1 + (r >> 16) % 8000;
		for (size_t j = 0; held[at] && j < held_n[at]; j++)
			bad += held[at][j] != tag;
		mem_free(held[at]);
		held[at] = r & 0x100 ? mem_alloc_exact(n) : mem_alloc(n); /* slabs and runs both */
		held_n[at] = held[at] ? n : 0;
		if (held[at])
			memset(held[at], tag, n);
	}
	for (size_t at = 0; at < 32; at++) {
		for (size_t j = 0; held[at] && j < held_n[at]; j++)
			bad += held[at][j] != tag;
		mem_free(held[at]);
	}
	return (void *)bad;
}

/* The run cache: a freed run of one piece is handed out again to the next allocation of its
 * size, last in first out, and counts as freed; it never makes an allocation fail. */
static void
test_run_cache(void)
{
	static void *p[1024];
	void *a, *b, *c;
	size_t n;

	unit_case("run cache: a freed run goes to the next allocation of its size, last freed first");
	if (!init(64 * KB))
		return;
	a = mem_alloc(200);
	b = mem_alloc(256);
	CHECK(a != NULL && b != NULL && stats().in_use == 512);
	mem_free(a);
	mem_free(b);
	CHECK(stats().in_use == 0);
	c = mem_alloc(129);
	CHECK(c == b && stats().in_use == 256);
	CHECK(mem_alloc_exact(250) == a); /* exact, and a whole run of the same size */
	CHECK(mem_alloc(64) != a && stats().in_use == 576);
	mem_shutdown();

	unit_case("run cache: never the reason an allocation fails");
	if (!init(64 * KB))
		return;
	for (n = 0; n < NELEM(p) && (p[n] = mem_alloc(1)) != NULL; n++)
		;
	CHECK(n * MEM_BLOCK == stats().reserved && stats().refusals == 1);
	for (size_t i = 0; i < 8; i++) /* adjacent single blocks: all cached, none merged */
		mem_free(p[i]);
	a = mem_alloc(4 * MEM_BLOCK); /* only the cached blocks, merged, can make one */
	CHECK(a != NULL && stats().refusals == 1);
	mem_free(a);
	for (size_t i = 8; i < n; i++)
		mem_free(p[i]);
	check_coalesced();
	mem_shutdown();
}

static void
test_threads(void)
{
	pthread_t t[2];
	void *bad[2] = { (void *)1, (void *)1 };

	unit_case("threads: two threads allocate and free concurrently");
	if (!init(4 * MB))
		return;
	for (int i = 0; i < 2; i++)
		CHECK(pthread_create(&t[i], NULL, churn, (void *)(uintptr_t)(0x11 * (i + 1))) == 0);
	for (int i = 0; i < 2; i++)
		CHECK(pthread_join(t[i], &bad[i]) == 0);
	CHECKF(bad[0] == NULL && bad[1] == NULL, "corrupted bytes %zu, %zu", (size_t)(uintptr_t)bad[0],
	    (size_t)(uintptr_t)bad[1]);
	CHECK(stats().allocs == 200000 && stats().refusals == 0);
	check_coalesced();
	mem_shutdown();
}

void
suite_mem(void)
{
	test_init();
	test_sizes();
	test_free_orders();
	test_exhaustion();
	test_realloc();
	test_calloc_strdup_owns();
	test_poison();
	test_bad_free();
	test_stress();
	test_exact();
	test_slabs();
	test_run_cache();
	test_threads();
}
