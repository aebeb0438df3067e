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
 * EXACT ALLOCATIONS (mem_*_exact, what libcurl gets). A power of two wastes up to half of a run,
 * and libcurl's hot sizes sit just past one (an easy handle of 4,304 bytes, a 16,424-byte send
 * buffer). An exact allocation of m blocks takes the run of 2^k >= m blocks as above, keeps its
 * first m blocks and frees the rest at once, as the aligned runs it splits into (the way Linux's
 * alloc_pages_exact gives back a tail). The m blocks it keeps are themselves aligned runs — the
 * binary digits of m, largest first — marked in their control bytes as one allocation, and free()
 * frees each of them with the usual merging. A request of n bytes then costs n rounded up to a
 * block. Every piece is an ordinary buddy run, so freeing everything still merges back into the
 * top-level runs; the bound above is for power-of-two requests, which mem_alloc keeps. Freeing
 * and shrinking cost O(log N) per piece.
 *
 * ZEROING. calloc of several pages zeroes the pages wholly inside it by giving them back to the
 * kernel (madvise MADV_DONTNEED: read back as zeros, resident again only when written), so a
 * large buffer that is mostly never written costs no resident memory. mem_init checks once that
 * the kernel (or an emulator) really zeroes such pages, and memsets otherwise.
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
#define CTRL_KIND  0x60
#define CTRL_FREE  0x20        /* a free run */
#define CTRL_USED  0x40        /* the first run of an allocation */
#define CTRL_TAIL  0x60        /* a later run of an exact allocation */
#define CTRL_MORE  0x80        /* the allocation goes on in the run right after this one */
#define MAX_PIECES 32          /* runs of one allocation: at most one per bit of a block count */
#define PAGE       4096
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
	int              madv_zeroes; /* madvise(MADV_DONTNEED) reads back as zeros here */
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
	if (off % MEM_BLOCK != 0 || (M.ctrl[off / MEM_BLOCK] & CTRL_KIND) != CTRL_USED)
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

/* Take a free run of 2^k blocks off the lists (splitting a larger one), or NONE. */
static uint32_t
take_run(int k)
{
	int b = k;
	uint32_t i;

	while (b >= 0 && b <= M.logmax && M.freelist[b] == NONE)
		b++;
	if (b < 0 || b > M.logmax) {
		M.st.refusals++;
		return NONE;
	}
	i = M.freelist[b];
	list_remove(i, b);
	while (b > k) {
		b--;
		list_push(i + ((uint32_t)1 << b), b);
	}
	return i;
}

static void *
handed_out(uint32_t i, size_t bytes)
{
	void *p = block_ptr(i);

	M.st.allocs++;
	count_in(bytes);
	UNPOISON(p, bytes);
	fill(p, 0xA5, bytes);
	return p;
}

static void *
alloc_locked(size_t n)
{
	int k = log_for(n);
	uint32_t i = take_run(k);

	if (i == NONE)
		return NULL;
	M.ctrl[i] = CTRL_USED | k;
	return handed_out(i, run_bytes(k));
}

/* Mark n bytes at block i freed (debug fill, ASan poison). */
static void
retire(uint32_t i, size_t n)
{
	fill(block_ptr(i), 0xDB, n);
	POISON(block_ptr(i), n);
}

/* Put the run at block i, of 2^k blocks, on its free list, merged with its buddy for as long
 * as the buddy is free and whole. */
static void
free_run(uint32_t i, int k)
{
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

/* Free blocks [a, b) of one top-level run: as the aligned runs they split into, largest first
 * at each point. */
static void
free_range(uint32_t a, uint32_t b)
{
	while (a < b) {
		int k = 0;

		while (a % ((uint32_t)2 << k) == 0 && a + ((uint32_t)2 << k) <= b)
			k++;
		free_run(a, k);
		a += (uint32_t)1 << k;
	}
}

/* Mark blocks [i, i + m) used as one allocation: the runs of m's binary digits, largest first
 * (i is aligned to the largest, so each is aligned to its own size). */
static void
mark_pieces(uint32_t i, uint32_t m)
{
	uint32_t at = i;

	while (m != 0) { /* m's set bits, highest first */
		int k = 31 - __builtin_clz(m);

		m &= ~((uint32_t)1 << k);
		M.ctrl[at] = (unsigned char)((at == i ? CTRL_USED : CTRL_TAIL) | k | (m != 0 ? CTRL_MORE : 0));
		at += (uint32_t)1 << k;
	}
}

/* The runs of the allocation at i: their first blocks and sizes; returns how many. */
static int
pieces(uint32_t i, uint32_t at[MAX_PIECES], int k[MAX_PIECES])
{
	int n = 0;

	for (;;) {
		at[n] = i;
		k[n] = M.ctrl[i] & CTRL_LOG;
		if (!(M.ctrl[i] & CTRL_MORE))
			return n + 1;
		i += (uint32_t)1 << k[n++];
	}
}

/* Blocks in the allocation at i. */
static uint32_t
alloc_blocks(uint32_t i)
{
	uint32_t at[MAX_PIECES], m = 0;
	int k[MAX_PIECES], n = pieces(i, at, k);

	for (int j = 0; j < n; j++)
		m += (uint32_t)1 << k[j];
	return m;
}

/* n bytes in whole blocks, at least one; 0 when no run could hold them. */
static uint32_t
blocks_for_bytes(size_t n)
{
	if (log_for(n) < 0)
		return 0;
	return n <= MEM_BLOCK ? 1 : (uint32_t)((n + MEM_BLOCK - 1) / MEM_BLOCK);
}

static void *
alloc_exact_locked(size_t n)
{
	uint32_t m = blocks_for_bytes(n), i;
	int k = log_for(n);

	if (m == 0) {
		M.st.refusals++;
		return NULL;
	}
	if ((i = take_run(k)) == NONE)
		return NULL;
	mark_pieces(i, m);
	free_range(i + m, i + ((uint32_t)1 << k));
	return handed_out(i, (size_t)m * MEM_BLOCK);
}

static void
free_locked(uint32_t i)
{
	uint32_t at[MAX_PIECES];
	int k[MAX_PIECES], n = pieces(i, at, k);

	for (int j = 0; j < n; j++) {
		M.st.in_use -= run_bytes(k[j]);
		M.ctrl[at[j]] = 0;
		retire(at[j], run_bytes(k[j]));
	}
	for (int j = 0; j < n; j++)
		free_run(at[j], k[j]);
}

/* Shrink the exact allocation at i, of m blocks, to want blocks (0 < want <= m). */
static void
shrink_exact_locked(uint32_t i, uint32_t m, uint32_t want)
{
	uint32_t at[MAX_PIECES];
	int k[MAX_PIECES], n;

	if (want == m)
		return;
	n = pieces(i, at, k);
	for (int j = 0; j < n; j++)
		M.ctrl[at[j]] = 0;
	mark_pieces(i, want);
	M.st.in_use -= (size_t)(m - want) * MEM_BLOCK;
	retire(i + want, (size_t)(m - want) * MEM_BLOCK);
	free_range(i + want, i + m);
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
		retire(upper, run_bytes(k));
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

/* Whether madvise(MADV_DONTNEED) on the page at p makes it read back as zeros (the kernel does;
 * an emulator may not). The page is left zero. */
static int
madv_zeroes(unsigned char *p)
{
	if ((uintptr_t)p % PAGE != 0 || p < M.pool)
		return 0;
	memset(p, 0x5a, PAGE);
	if (madvise(p, PAGE, MADV_DONTNEED) != 0) {
		memset(p, 0, PAGE);
		return 0;
	}
	for (size_t j = 0; j < PAGE; j++) {
		if (p[j] != 0) {
			memset(p, 0, PAGE);
			return 0;
		}
	}
	return 1;
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
	M.madv_zeroes = madv_zeroes((unsigned char *)(((uintptr_t)M.pool + M.st.reserved) &
	    ~(uintptr_t)(PAGE - 1)) - PAGE);
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
mem_alloc_exact(size_t n)
{
	void *p;

	pthread_mutex_lock(&M.lock);
	p = alloc_exact_locked(n);
	pthread_mutex_unlock(&M.lock);
	return p;
}

/* Zero n bytes at p, which the caller owns: the pages wholly inside go back to the kernel
 * (zeros on the next read, no resident memory until written), the rest is memset. */
static void
zero(void *p, size_t n)
{
	unsigned char *c = p, *lo = (unsigned char *)(((uintptr_t)c + PAGE - 1) & ~(uintptr_t)(PAGE - 1));
	unsigned char *hi = (unsigned char *)(((uintptr_t)c + n) & ~(uintptr_t)(PAGE - 1));

	if (!M.madv_zeroes || n < 3 * PAGE || hi - lo < 2 * PAGE ||
	    madvise(lo, (size_t)(hi - lo), MADV_DONTNEED) != 0) {
		memset(p, 0, n);
		return;
	}
	memset(c, 0, (size_t)(lo - c));
	memset(hi, 0, (size_t)(c + n - hi));
}

static void *
calloc_with(void *(*alloc)(size_t), size_t nmemb, size_t size)
{
	void *p;

	if (size != 0 && nmemb > SIZE_MAX / size) {
		pthread_mutex_lock(&M.lock);
		M.st.refusals++;
		pthread_mutex_unlock(&M.lock);
		return NULL;
	}
	p = alloc(nmemb * size);
	if (p != NULL)
		zero(p, nmemb * size);
	return p;
}

void *
mem_calloc(size_t nmemb, size_t size)
{
	return calloc_with(mem_alloc, nmemb, size);
}

void *
mem_calloc_exact(size_t nmemb, size_t size)
{
	return calloc_with(mem_alloc_exact, nmemb, size);
}

/* Keep p in place when n fits what it has, else alloc (exact or not), copy, free. */
static void *
realloc_with(void *p, size_t n, int exact)
{
	uint32_t i, m, want;
	int k;
	void *q;

	if (p == NULL)
		return exact ? mem_alloc_exact(n) : mem_alloc(n);
	pthread_mutex_lock(&M.lock);
	i = used_run_or_die(p, "realloc");
	k = M.ctrl[i] & CTRL_LOG;
	m = alloc_blocks(i);
	if (!(M.ctrl[i] & CTRL_MORE) && !exact) {
		int want_k = log_for(n);

		if (want_k >= 0 && want_k <= k) {
			trim_locked(i, k, want_k);
			pthread_mutex_unlock(&M.lock);
			return p;
		}
	} else if (exact && (want = blocks_for_bytes(n)) != 0 && want <= m) {
		shrink_exact_locked(i, m, want);
		pthread_mutex_unlock(&M.lock);
		return p;
	}
	pthread_mutex_unlock(&M.lock);
	/* The old allocation is the caller's until freed, so copying it needs no lock. */
	q = exact ? mem_alloc_exact(n) : mem_alloc(n);
	if (q == NULL)
		return NULL;
	memcpy(q, p, (size_t)m * MEM_BLOCK < n ? (size_t)m * MEM_BLOCK : n);
	mem_free(p);
	return q;
}

void *
mem_realloc(void *p, size_t n)
{
	return realloc_with(p, n, 0);
}

void *
mem_realloc_exact(void *p, size_t n)
{
	return realloc_with(p, n, 1);
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

static char *
strdup_with(void *(*alloc)(size_t), const char *s)
{
	size_t n = strlen(s) + 1;
	char *p = alloc(n);

	if (p != NULL)
		memcpy(p, s, n);
	return p;
}

char *
mem_strdup(const char *s)
{
	return strdup_with(mem_alloc, s);
}

char *
mem_strdup_exact(const char *s)
{
	return strdup_with(mem_alloc_exact, s);
}

size_t
mem_usable(const void *p)
{
	size_t n = 0;
	uint32_t i;

	pthread_mutex_lock(&M.lock);
	i = used_run(p);
	if (i != NONE)
		n = (size_t)alloc_blocks(i) * MEM_BLOCK;
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
