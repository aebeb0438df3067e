/*
 * mem.c — the process's one memory reservation, managed as a buddy system (SQLite's mem5 idea).
 *
 * ALGORITHM. mem_init() maps `bytes` once. The start of the mapping holds the control array, one
 * byte per block; the rest is cut into N blocks of MEM_BLOCK bytes. Every allocation is a run
 * of 2^k blocks starting at a block index that is a multiple of 2^k, so a run's "buddy" — the
 * other half of the run of 2^(k+1) it was split from — is at index i ^ 2^k. N need not be a
 * power of two: the blocks are first cut into top-level runs of decreasing powers of two (the
 * binary digits of N), each aligned to its own size because the larger ones come first.
 *
 * Free runs sit on one doubly linked list per size k; the links live inside the free runs
 * themselves, so bookkeeping costs only the control byte per block. A control byte is nonzero
 * only at the first block of a run and says "free" or "used" plus k.
 *
 *   alloc(k)  take a run from the smallest non-empty list >= k, splitting it in halves and
 *             putting each upper half on its list until it is 2^k blocks.
 *   free(i)   while the buddy is a free run of the same size, unlink it and merge; then put
 *             the merged run on its list.
 *   realloc   if the new size fits the run, keep it, freeing the upper halves it no longer
 *             needs; otherwise alloc, copy, free.
 *
 * GUARANTEE. Both are O(log N): at most one split or merge per size. A request of n bytes
 * takes one block or a run of fewer than 2n bytes. Freeing everything merges the blocks back
 * into exactly the top-level runs mem_init() made, so fragmentation never outlives the
 * allocations that caused it. mem5 cites Robson's bound for such allocators: with sizes counted
 * in blocks after rounding to runs, if the largest request is n blocks and at most L blocks are
 * ever in use at once, no request fails for fragmentation while N >= L * (1 + log2(n) / 2) - n + 1.
 * Every pointer returned is MEM_BLOCK-aligned.
 *
 * Nothing else: the reservation is never grown, exhaustion returns NULL and is counted. A
 * mutex makes every entry point thread-safe (libcurl's resolver thread allocates here too).
 * With SLUICE_DEBUG new memory is filled with 0xA5 and freed memory with 0xDB; under
 * AddressSanitizer free runs are also poisoned, so a use after free inside the pool is caught.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include "sluice.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define POISON(p, n)   ASAN_POISON_MEMORY_REGION(p, n)
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define POISON(p, n)   ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#define MEM_LOGS   31          /* run sizes 2^0 .. 2^30 blocks (64 GiB) */
#define CTRL_LOG   0x1f        /* the run's k, in its first control byte */
#define CTRL_FREE  0x20
#define CTRL_USED  0x40
#define NONE       UINT32_MAX  /* end of a free list */

/* Kept at the start of every free run. */
struct mem_link {
	uint32_t next, prev;
};

static struct {
	pthread_mutex_t  lock;
	unsigned char   *map;       /* the mmap, NULL before mem_init */
	size_t           maplen;
	unsigned char   *ctrl;      /* one byte per block */
	unsigned char   *pool;      /* block 0 */
	uint32_t         nblocks;
	int              logmax;    /* the largest run is 2^logmax blocks; -1 before mem_init */
	uint32_t         freelist[MEM_LOGS];
	struct mem_stats st;
} M = { .lock = PTHREAD_MUTEX_INITIALIZER, .logmax = -1 };

static void *
block_ptr(uint32_t i)
{
	return M.pool + (size_t)i * MEM_BLOCK;
}

static size_t
run_bytes(int k)
{
	return (size_t)MEM_BLOCK << k;
}

static void
fill(void *p, int byte, size_t n)
{
#ifdef SLUICE_DEBUG
	memset(p, byte, n);
#else
	(void)p, (void)byte, (void)n;
#endif
}

/* Links are read and written inside poisoned free runs, so unpoison just around the access. */
static struct mem_link
link_get(uint32_t i)
{
	struct mem_link l;
	void *at = block_ptr(i);

	UNPOISON(at, sizeof l);
	memcpy(&l, at, sizeof l);
	POISON(at, sizeof l);
	return l;
}

static void
link_put(uint32_t i, struct mem_link l)
{
	void *at = block_ptr(i);

	UNPOISON(at, sizeof l);
	memcpy(at, &l, sizeof l);
	POISON(at, sizeof l);
}

static void
set_next(uint32_t i, uint32_t next)
{
	struct mem_link l = link_get(i);

	l.next = next;
	link_put(i, l);
}

static void
set_prev(uint32_t i, uint32_t prev)
{
	struct mem_link l = link_get(i);

	l.prev = prev;
	link_put(i, l);
}

/* Put the free run at block i, of 2^k blocks, at the head of its list. */
static void
list_push(uint32_t i, int k)
{
	uint32_t head = M.freelist[k];

	link_put(i, (struct mem_link){ .next = head, .prev = NONE });
	if (head != NONE)
		set_prev(head, i);
	M.freelist[k] = i;
	M.ctrl[i] = CTRL_FREE | k;
}

static void
list_remove(uint32_t i, int k)
{
	struct mem_link l = link_get(i);

	if (l.prev == NONE)
		M.freelist[k] = l.next;
	else
		set_next(l.prev, l.next);
	if (l.next != NONE)
		set_prev(l.next, l.prev);
	M.ctrl[i] = 0;
}

/* The smallest k whose run holds n bytes, or -1 if no run can. */
static int
log_for(size_t n)
{
	int k = 0;

	if (M.logmax < 0 || n > run_bytes(M.logmax))
		return -1;
	while (run_bytes(k) < n)
		k++;
	return k;
}

/* The first block of the used run p points at, or NONE if p is not one. */
static uint32_t
used_run(const void *p)
{
	const unsigned char *c = p;
	size_t off;

	if (M.pool == NULL || c < M.pool || c >= M.pool + (size_t)M.nblocks * MEM_BLOCK)
		return NONE;
	off = (size_t)(c - M.pool);
	if (off % MEM_BLOCK != 0 || !(M.ctrl[off / MEM_BLOCK] & CTRL_USED))
		return NONE;
	return (uint32_t)(off / MEM_BLOCK);
}

static uint32_t
used_run_or_die(const void *p, const char *what)
{
	uint32_t i = used_run(p);

	if (i == NONE) {
		/* A double free or a stray pointer: the heap can no longer be trusted. */
		fprintf(stderr, "sluice: mem_%s(%p): not an allocated block\n", what, p);
		abort();
	}
	return i;
}

static void
count_in(size_t bytes)
{
	M.st.in_use += bytes;
	if (M.st.in_use > M.st.high_water)
		M.st.high_water = M.st.in_use;
}

static void *
alloc_locked(size_t n)
{
	int k = log_for(n), b = k;
	uint32_t i;
	void *p;

	while (b >= 0 && b <= M.logmax && M.freelist[b] == NONE)
		b++;
	if (b < 0 || b > M.logmax) {
		M.st.refusals++;
		return NULL;
	}
	i = M.freelist[b];
	list_remove(i, b);
	while (b > k) {
		b--;
		list_push(i + ((uint32_t)1 << b), b);
	}
	M.ctrl[i] = CTRL_USED | k;
	M.st.allocs++;
	count_in(run_bytes(k));
	p = block_ptr(i);
	UNPOISON(p, run_bytes(k));
	fill(p, 0xA5, run_bytes(k));
	return p;
}

static void
free_locked(uint32_t i)
{
	int k = M.ctrl[i] & CTRL_LOG;

	M.st.in_use -= run_bytes(k);
	fill(block_ptr(i), 0xDB, run_bytes(k));
	POISON(block_ptr(i), run_bytes(k));
	M.ctrl[i] = 0;
	while (k < M.logmax) {
		uint32_t buddy = i ^ ((uint32_t)1 << k);

		if (buddy >= M.nblocks || M.ctrl[buddy] != (CTRL_FREE | k))
			break;
		list_remove(buddy, k);
		i &= ~((uint32_t)1 << k);
		k++;
	}
	list_push(i, k);
}

/*
 * Shrink the used run at i from 2^k to 2^want blocks, freeing upper halves. Their buddies are
 * the lower halves, still in use, so there is nothing to merge.
 */
static void
trim_locked(uint32_t i, int k, int want)
{
	while (k > want) {
		uint32_t upper = i + ((uint32_t)1 << --k);

		M.st.in_use -= run_bytes(k);
		fill(block_ptr(upper), 0xDB, run_bytes(k));
		POISON(block_ptr(upper), run_bytes(k));
		list_push(upper, k);
	}
	M.ctrl[i] = CTRL_USED | want;
}

/* Cut the blocks into top-level runs, largest first, each aligned to its own size. */
static void
carve_top_runs(void)
{
	uint32_t at = 0;

	for (int k = 0; k < MEM_LOGS; k++)
		M.freelist[k] = NONE;
	for (M.logmax = 0; M.logmax + 1 < MEM_LOGS && ((uint32_t)2 << M.logmax) <= M.nblocks; M.logmax++)
		;
	for (int k = M.logmax; k >= 0; k--) {
		if (at + ((uint32_t)1 << k) <= M.nblocks) {
			list_push(at, k);
			at += (uint32_t)1 << k;
		}
	}
}

/* The most blocks that fit in `bytes` with their control bytes (rounded up to a block). */
static size_t
blocks_for(size_t bytes)
{
	size_t n = bytes / (MEM_BLOCK + 1);

	while (n > 0 && (n + MEM_BLOCK - 1) / MEM_BLOCK * MEM_BLOCK + n * MEM_BLOCK > bytes)
		n--;
	return n;
}

int
mem_init(size_t bytes, char *err, size_t errlen)
{
	size_t n = blocks_for(bytes);
	void *map;

	if (n == 0) {
		snprintf(err, errlen, "memory %zu bytes is too small", bytes);
		return -1;
	}
	if (n > ((size_t)2 << (MEM_LOGS - 1)) - 1) { /* block indices stay below 2^31 */
		snprintf(err, errlen, "memory %zu bytes is too large", bytes);
		return -1;
	}
	pthread_mutex_lock(&M.lock);
	if (M.map != NULL) {
		pthread_mutex_unlock(&M.lock);
		snprintf(err, errlen, "memory is already reserved");
		return -1;
	}
	map = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (map == MAP_FAILED) {
		pthread_mutex_unlock(&M.lock);
		snprintf(err, errlen, "cannot reserve %zu bytes: %s", bytes, strerror(errno));
		return -1;
	}
	/* A fresh anonymous mapping reads as zeros: the control array starts "no runs". */
	M.map = map;
	M.maplen = bytes;
	M.ctrl = map;
	M.pool = M.ctrl + (n + MEM_BLOCK - 1) / MEM_BLOCK * MEM_BLOCK;
	M.nblocks = (uint32_t)n;
	memset(&M.st, 0, sizeof M.st);
	M.st.reserved = n * MEM_BLOCK;
	POISON(M.pool, M.st.reserved);
	carve_top_runs();
	pthread_mutex_unlock(&M.lock);
	return 0;
}

void
mem_shutdown(void)
{
	pthread_mutex_lock(&M.lock);
	if (M.map != NULL) {
		/* ASan's shadow outlives the mapping; leave it clean for whoever maps here next. */
		UNPOISON(M.pool, M.st.reserved);
		munmap(M.map, M.maplen);
	}
	M.map = M.ctrl = M.pool = NULL;
	M.maplen = 0;
	M.nblocks = 0;
	M.logmax = -1;
	memset(&M.st, 0, sizeof M.st);
	pthread_mutex_unlock(&M.lock);
}

void *
mem_alloc(size_t n)
{
	void *p;

	pthread_mutex_lock(&M.lock);
	p = alloc_locked(n);
	pthread_mutex_unlock(&M.lock);
	return p;
}

void *
mem_calloc(size_t nmemb, size_t size)
{
	void *p;

	if (size != 0 && nmemb > SIZE_MAX / size) {
		pthread_mutex_lock(&M.lock);
		M.st.refusals++;
		pthread_mutex_unlock(&M.lock);
		return NULL;
	}
	p = mem_alloc(nmemb * size);
	if (p != NULL)
		memset(p, 0, nmemb * size);
	return p;
}

void *
mem_realloc(void *p, size_t n)
{
	uint32_t i;
	int k, want;
	void *q;

	if (p == NULL)
		return mem_alloc(n);
	pthread_mutex_lock(&M.lock);
	i = used_run_or_die(p, "realloc");
	k = M.ctrl[i] & CTRL_LOG;
	want = log_for(n);
	if (want >= 0 && want <= k) {
		trim_locked(i, k, want);
		pthread_mutex_unlock(&M.lock);
		return p;
	}
	pthread_mutex_unlock(&M.lock);
	/* The old run is the caller's until freed, so copying it needs no lock. */
	q = mem_alloc(n);
	if (q == NULL)
		return NULL;
	memcpy(q, p, run_bytes(k));
	mem_free(p);
	return q;
}

void
mem_free(void *p)
{
	if (p == NULL)
		return;
	pthread_mutex_lock(&M.lock);
	free_locked(used_run_or_die(p, "free"));
	pthread_mutex_unlock(&M.lock);
}

char *
mem_strdup(const char *s)
{
	size_t n = strlen(s) + 1;
	char *p = mem_alloc(n);

	if (p != NULL)
		memcpy(p, s, n);
	return p;
}

size_t
mem_usable(const void *p)
{
	size_t n = 0;
	uint32_t i;

	pthread_mutex_lock(&M.lock);
	i = used_run(p);
	if (i != NONE)
		n = run_bytes(M.ctrl[i] & CTRL_LOG);
	pthread_mutex_unlock(&M.lock);
	return n;
}

void
mem_get_stats(struct mem_stats *st)
{
	pthread_mutex_lock(&M.lock);
	*st = M.st;
	pthread_mutex_unlock(&M.lock);
}

int
mem_owns(const void *p)
{
	const unsigned char *c = p;
	int owns;

	pthread_mutex_lock(&M.lock);
	owns = M.pool != NULL && c >= M.pool && c < M.pool + M.st.reserved;
	pthread_mutex_unlock(&M.lock);
	return owns;
}

/* The largest allocation that could ever succeed (the largest top-level run), for callers that
 * must tell "never fits" (413) from "does not fit now" (503). */
size_t
mem_largest(void)
{
	return M.logmax < 0 ? 0 : (size_t)MEM_BLOCK << M.logmax;
}
