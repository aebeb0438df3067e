/*
 * mem.c — the process's one memory reservation, managed as a buddy system (SQLite's mem5 idea).
 *
 * ALGORITHM. mem_init() maps `bytes` once. The start of the mapping holds the control array, one
 * byte per block, and the summary below; the rest is cut into N blocks of MEM_BLOCK bytes. Every
 * allocation is a run of 2^k blocks starting at a block index that is a multiple of 2^k, so a
 * run's "buddy" — the other half of the run of 2^(k+1) it was split from — is at index i ^ 2^k.
 * N need not be a power of two: the blocks are first cut into top-level runs of decreasing
 * powers of two (the binary digits of N), each aligned to its own size because the larger ones
 * come first.
 *
 * A control byte is nonzero only at the first block of a run and says "free" or "used" plus k.
 * Above the control bytes sits a summary, a tree of fan-out 64: an entry of level 1 holds the
 * largest free run (1 + k, or 0 for none) starting in its 64 blocks, an entry of level 2 the
 * largest of its 64 level-1 entries, and so on up to one root. Descending it from the root,
 * always into the highest child that holds enough, finds the free run of at least 2^k blocks
 * that starts highest in memory.
 *
 *   alloc(k)  take the highest free run of at least 2^k blocks, splitting it in halves and
 *             offering each lower half, until the top 2^k blocks are left.
 *   free(i)   while the buddy is a free run of the same size, withdraw it and merge; then
 *             offer the merged run.
 *   realloc   if the new size fits the run, keep it, freeing the upper halves it no longer
 *             needs; otherwise alloc, copy, free.
 *
 * WHY THE HIGHEST. Which free run an allocation takes decides what stays resident: a page is
 * resident once written, whoever uses it since. Taking the smallest run that fits, from a list
 * in the order runs were freed, scatters a steady load over more and more pages (at 1,000
 * streams the process's peak RSS was 27.8 MiB, of which 26.4 of pool pages, for 17.8 MiB in
 * use); first fit keeps the live memory packed at the top of the reservation and refills the
 * holes a finished request leaves before touching a new page (peak RSS 23.1 MiB). The top, not
 * the bottom, because the top-level runs get smaller towards the end: small allocations use
 * those up first and the largest run stays whole the longest. (A run in the run cache, below,
 * goes back to the next allocation of its size wherever it lies: it is already resident.)
 *
 * GUARANTEE. Every operation is O(log N): at most one split or merge per size, and each offer
 * or withdrawal updates the summary on one path of at most 6 levels (64^6 > 2^31 blocks),
 * reading at most one group of 64 entries per level. A request of n bytes takes one block or a
 * run of fewer than 2n bytes. Freeing everything merges the blocks back into exactly the
 * top-level runs mem_init() made, so fragmentation never outlives the allocations that caused
 * it. mem5 cites Robson's bound for power-of-two first-fit allocators: with sizes counted in
 * blocks after rounding to runs, if the largest request is n blocks and at most L blocks are
 * ever in use at once, no request fails for fragmentation while N >= L * (1 + log2(n) / 2) - n + 1.
 * The run cache keeps some freed runs out of the pool, but it is emptied into it before any
 * request could fail, so both hold as stated once mem_trim() (or a failed search) has run.
 * Every pointer returned is MEM_BLOCK-aligned, but for slab objects of up to MEM_SMALL_MAX
 * bytes (16-aligned). The summary costs 1/63 of a byte per block.
 *
 * EXACT ALLOCATIONS (mem_*_exact, what libcurl gets). A power of two wastes up to half of a run,
 * and libcurl's hot sizes sit just past one (an easy handle of 4,304 bytes; the send buffer was
 * 16,424 until our patch made it 16,384). An exact allocation of m blocks takes the run of 2^k >= m blocks as above, keeps its
 * first m blocks and frees the rest at once, as the aligned runs it splits into (the way Linux's
 * alloc_pages_exact gives back a tail). The m blocks it keeps are themselves aligned runs — the
 * binary digits of m, largest first — marked in their control bytes as one allocation, and free()
 * frees each of them with the usual merging. A request of n bytes then costs n rounded up to a
 * block. Every piece is an ordinary buddy run, so freeing everything still merges back into the
 * top-level runs; the bound above is for power-of-two requests, which mem_alloc keeps. Freeing
 * and shrinking cost O(log N) per piece.
 *
 * SLABS (exact allocations too). An exact allocation of up to MEM_SMALL_MAX bytes, or of 3 to
 * 127 blocks that are not a power of two, is an object in a slab: a run holding 8 to 64
 * objects of its size class (16, 32 or 48 bytes; or exactly m blocks), a bitmap of them and
 * its partial-list links in a header at its end. Without slabs each such allocation leaves
 * its own odd tail of free blocks, which only something smaller can reuse: at 1,000 streams
 * the peak RSS stayed at 23.1 MiB for 17.8 MiB in use. In a slab a freed place is reused by
 * the next object of its size (peak RSS 20.1 MiB, 16.6 MiB in use: libcurl's 35 small strings
 * and structs per stream no longer take a block each). An object is handed out from the lowest
 * free place of the most recently partial slab (so a slab's top is touched only when needed);
 * an emptied slab goes back to the pool at once. A control byte marks every block where an
 * object may start (CTRL_SLAB and the slab's k), which is how free() finds the header. Alloc
 * and free are O(1) beside the run taken or freed (a new or emptied slab marks at most 64
 * control bytes). When no run is free for a slab the allocation falls back to the exact run
 * above. A slab's k is chosen once per class at mem_init: the one up to 2^11 blocks that
 * wastes least.
 *
 * ZEROING. calloc of several pages zeroes the pages wholly inside it by giving them back to the
 * kernel (madvise MADV_DONTNEED: read back as zeros, resident again only when written), so a
 * large buffer that is mostly never written costs no resident memory. mem_init checks once that
 * the kernel (or an emulator) really zeroes such pages, and memsets otherwise.
 *
 * Nothing else: the reservation is never grown, exhaustion returns NULL and is counted. A spin
 * lock makes every entry point thread-safe (libcurl's resolver thread allocates here too).
 * With SLUICE_DEBUG new memory is filled with 0xA5 and freed memory with 0xDB; under
 * AddressSanitizer free runs are also poisoned, so a use after free inside the pool is caught.
 */
#include <errno.h>
#include <sched.h>
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
#define NONE       UINT32_MAX  /* no block */
#define FAN_LOG    6           /* a summary entry covers 64 entries of the level below */
#define FAN        (1u << FAN_LOG)
#define MAX_LEVELS 6           /* 64^6 > 2^31 blocks */
#define GRAIN      16          /* small slab objects are multiples of this, up to MEM_SMALL_MAX */
#define SMALL      (MEM_SMALL_MAX / GRAIN) /* classes 0 .. SMALL-1 are small; class m >= 3 is m blocks */
#define SLAB_BLOCKS 127        /* the largest object a slab holds, in blocks */
#define CLASSES    (SLAB_BLOCKS + 1)
#define SMALL_LOG  4           /* a small slab is a run of 2^4 blocks */
#define SLAB_MAX_LOG 11        /* no slab is larger than 2^11 blocks (128 KiB) */
#define SLAB_HDR   32          /* struct slab, at the end of its slab */
#define CTRL_SLAB  (CTRL_FREE | CTRL_MORE) /* an object may start in this block; low bits: the slab's k */
#define CTRL_CACHED CTRL_MORE  /* a freed run kept in the run cache (kind 0); low bits: its k */
#define CACHE_LOG  8           /* freed runs of up to 2^8 blocks (16 KiB) are cached */
#define CACHE_CAP  8           /* runs cached per size */

/* At the end of every slab, in the room its objects leave. */
struct slab {
	uint64_t map;              /* bit j: object j is handed out */
	uint32_t next, prev;       /* the partial slabs of its class, by first block */
	uint32_t cls;
};

static struct {
	int              lock;      /* see lock() */
	unsigned char   *map;       /* the mmap, NULL before mem_init */
	size_t           maplen;
	unsigned char   *ctrl;      /* one byte per block */
	unsigned char   *sum[MAX_LEVELS + 1]; /* the summary levels 1..nlevels; level 0 is ctrl */
	uint32_t         count[MAX_LEVELS + 1]; /* entries per level */
	int              nlevels;
	unsigned char   *pool;      /* block 0 */
	uint32_t         nblocks;
	int              logmax;    /* the largest run is 2^logmax blocks; -1 before mem_init */
	int              madv_zeroes; /* madvise(MADV_DONTNEED) reads back as zeros here */
	uint32_t         partial[CLASSES]; /* slabs with room, per class, or NONE */
	unsigned char    slab_log[CLASSES]; /* a slab of the class is 2^k blocks; 0: no slabs */
	unsigned char    objects[CLASSES];  /* objects in one slab of the class */
	uint16_t         obj_bytes[CLASSES]; /* bytes of one object */
	uint32_t         cache[CACHE_LOG + 1][CACHE_CAP]; /* freed runs of 2^k blocks, by first block */
	unsigned char    ncache[CACHE_LOG + 1];
	struct mem_stats st;
} M = { .logmax = -1 };

/*
 * The only other thread that allocates is libcurl's resolver, for microseconds at a time, so a
 * spin lock: one atomic exchange to take it and a plain release store to give it back. musl's
 * mutex was a call and a locked instruction on both sides, ~5,000 instructions a sync request
 * (some 90 allocations and frees). A waiter yields, in case the holder is not running.
 */
static inline void
lock(void)
{
	while (__atomic_exchange_n(&M.lock, 1, __ATOMIC_ACQUIRE))
		while (__atomic_load_n(&M.lock, __ATOMIC_RELAXED))
			sched_yield();
}

static inline void
unlock(void)
{
	__atomic_store_n(&M.lock, 0, __ATOMIC_RELEASE);
}

static inline __attribute__((always_inline)) void *
block_ptr(uint32_t i)
{
	return M.pool + (size_t)i * MEM_BLOCK;
}

static inline __attribute__((always_inline)) size_t
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

/* ---- the summary: where the highest free run of at least 2^k blocks starts ---- */

/*
 * A block's value is 1 + k if a free run of 2^k blocks starts there, else 0; an entry's is the
 * largest of its 64 children's. A group of 64 children is read as 8 words, 8 bytes at a time
 * (SWAR): every level is stored padded to whole groups, so a group is always 64 bytes, and the
 * padding reads as 0. Values are below 128, so adding to a byte never carries into the next.
 */
#define ONES  0x0101010101010101ull
#define HIGHS 0x8080808080808080ull

static inline __attribute__((always_inline)) uint64_t
word_at(const unsigned char *p)
{
	uint64_t w;

	memcpy(&w, p, sizeof w); /* little-endian on both targets: byte j is child j */
	return w;
}

/* The high bit of each byte of summary word w that holds at least v. */
static inline __attribute__((always_inline)) uint64_t
sum_ge(uint64_t w, unsigned v)
{
	return (w + (0x80 - v) * ONES) & HIGHS;
}

/* The high bit of each control byte of w that starts a free run of at least 2^k blocks: the
 * byte is CTRL_FREE | k' with k' >= k, i.e. 0x20 + k <= byte < 0x40. */
static inline __attribute__((always_inline)) uint64_t
ctrl_ge(uint64_t w, int k)
{
	uint64_t low = w & ~HIGHS;
	uint64_t ge = (low + (0x80 - CTRL_FREE - (uint64_t)k) * ONES) & HIGHS;
	uint64_t lt = ~(low + (0x80 - 0x40) * ONES) & HIGHS;

	return ge & lt & ~w;
}

/* Bytewise max of two words of values below 128. */
static inline __attribute__((always_inline)) uint64_t
bytes_max(uint64_t a, uint64_t b)
{
	uint64_t a_ge = (((a | HIGHS) - b) & HIGHS) >> 7;

	return (a & a_ge * 0xff) | (b & ~(a_ge * 0xff));
}

/* Word w of the children of entry j of level l, as values. */
static inline __attribute__((always_inline)) uint64_t
child_values(int l, uint32_t j, int w)
{
	uint64_t x;

	if (l > 1)
		return word_at(M.sum[l - 1] + ((size_t)j << FAN_LOG) + 8 * w);
	x = word_at(M.ctrl + ((size_t)j << FAN_LOG) + 8 * w);
	return ((x & 0x1f * ONES) + ONES) & (ctrl_ge(x, 0) >> 7) * 0xff;
}

/* The largest value among the children of entry j of level l. */
static unsigned
group_max(int l, uint32_t j)
{
	uint64_t m = 0;

	for (int w = 0; w < 8; w++)
		m = bytes_max(m, child_values(l, j, w));
	m = bytes_max(m, m >> 32);
	m = bytes_max(m, m >> 16);
	m = bytes_max(m, m >> 8);
	return (unsigned)(m & 0xff);
}

/* Block i's value has grown to v: raise its ancestors to v until one already holds as much. */
static void
sum_raise(uint32_t i, unsigned v)
{
	for (int l = 1; l <= M.nlevels; l++) {
		uint32_t j = i >> (FAN_LOG * l);

		if (M.sum[l][j] >= v)
			return;
		M.sum[l][j] = (unsigned char)v;
	}
}

/* Block i's value has dropped from v: an ancestor that held v may hold less now. */
static void
sum_lower(uint32_t i, unsigned v)
{
	for (int l = 1; l <= M.nlevels; l++) {
		uint32_t j = i >> (FAN_LOG * l);
		unsigned now;

		if (M.sum[l][j] != v || (now = group_max(l, j)) == v)
			return;
		M.sum[l][j] = (unsigned char)now;
	}
}

/* The highest block where a free run of at least 2^k blocks starts, or NONE. */
static uint32_t
sum_find(int k)
{
	unsigned v = (unsigned)k + 1;
	uint32_t j = 0;

	if (M.nlevels == 0 || M.sum[M.nlevels][0] < v)
		return NONE;
	for (int l = M.nlevels; l > 0; l--) {
		const unsigned char *g = (l > 1 ? M.sum[l - 1] : M.ctrl) + ((size_t)j << FAN_LOG);
		uint64_t hit = 0;
		int w = 8;

		while (hit == 0 && w-- > 0) /* the parent's value says a child has it */
			hit = l > 1 ? sum_ge(word_at(g + 8 * w), v) : ctrl_ge(word_at(g + 8 * w), k);
		if (hit == 0) {
			fprintf(stderr, "sluice: mem: summary corrupt at level %d\n", l);
			abort();
		}
		j = (j << FAN_LOG) + 8 * (uint32_t)w + (uint32_t)(63 - __builtin_clzll(hit)) / 8;
	}
	return j;
}

/* The free run of 2^k blocks at block i is on offer (no merging here). */
static void
run_offer(uint32_t i, int k)
{
	M.ctrl[i] = CTRL_FREE | k;
	sum_raise(i, (unsigned)k + 1);
}

/* The free run of 2^k blocks at block i is taken off offer. */
static void
run_withdraw(uint32_t i, int k)
{
	M.ctrl[i] = 0;
	sum_lower(i, (unsigned)k + 1);
}

/* The smallest k whose run holds n bytes, or -1 if no run can. */
static int
log_for(size_t n)
{
	if (M.logmax < 0 || n > run_bytes(M.logmax))
		return -1;
	return n <= MEM_BLOCK ? 0 : 64 - __builtin_clzll((uint64_t)(n - 1) / MEM_BLOCK);
}

/* p points into the pool's blocks (the caller holds the lock). */
static int
in_pool(const unsigned char *c)
{
	return M.pool != NULL && c >= M.pool && c < M.pool + (size_t)M.nblocks * MEM_BLOCK;
}

/* The first block of the used run p points at, or NONE if p is not one. */
static uint32_t
used_run(const void *p)
{
	const unsigned char *c = p;
	size_t off;

	if (!in_pool(c))
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

static int cache_flush(void);
static void free_run(uint32_t i, int k);

/* Take the highest free run of at least 2^k blocks, splitting it down to its top 2^k, or NONE
 * (the run cache is emptied first when nothing else fits). */
static uint32_t
take_run(int k)
{
	uint32_t i = k < 0 ? NONE : sum_find(k);
	int b;

	if (i == NONE && k >= 0 && cache_flush())
		i = sum_find(k);
	if (i == NONE)
		return NONE;
	b = M.ctrl[i] & CTRL_LOG;
	run_withdraw(i, b);
	while (b > k) {
		b--;
		run_offer(i, b);
		i += (uint32_t)1 << b;
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

/*
 * ---- the run cache: most runs a request takes, it gives back before it ends, and taking a run
 * from the summary and freeing it into it again (split, withdraw, merge, offer) cost some 600
 * instructions a pair. A freed run of up to 2^CACHE_LOG blocks that is one whole allocation is
 * kept instead, up to CACHE_CAP of each size, marked CTRL_CACHED (not free, not used: a second
 * free of it still stops the process), and handed out again, last in first out, to the next
 * allocation of its size. It counts as freed in the stats. Whenever a run is needed and none is
 * free, the cache is emptied into the pool first, so it never makes an allocation fail. ----
 */

/* A cached run of 2^k blocks, taken off the cache, or NONE. */
static uint32_t
cache_take(int k)
{
	if (k < 0 || k > CACHE_LOG || M.ncache[k] == 0)
		return NONE;
	return M.cache[k][--M.ncache[k]];
}

/* Keep the freed run at i, of 2^k blocks, if its size has room. */
static int
cache_put(uint32_t i, int k)
{
	if (k > CACHE_LOG || M.ncache[k] == CACHE_CAP)
		return 0;
	M.ctrl[i] = (unsigned char)(CTRL_CACHED | k);
	M.cache[k][M.ncache[k]++] = i;
	return 1;
}

/* Every cached run back into the pool; returns whether there was any. */
static int
cache_flush(void)
{
	int any = 0;

	for (int k = 0; k <= CACHE_LOG; k++)
		while (M.ncache[k] > 0) {
			uint32_t i = M.cache[k][--M.ncache[k]];

			free_run(i, k);
			any = 1;
		}
	return any;
}

static void *
handed_out_run(uint32_t i, int k)
{
	M.ctrl[i] = (unsigned char)(CTRL_USED | k);
	return handed_out(i, run_bytes(k));
}

static void *
alloc_locked(size_t n)
{
	int k = log_for(n);
	uint32_t i = cache_take(k);

	if (i == NONE)
		i = take_run(k);

	if (i == NONE) {
		M.st.refusals++;
		return NULL;
	}
	return handed_out_run(i, k);
}

/* Mark n bytes at block i freed (debug fill, ASan poison). */
static void
retire(uint32_t i, size_t n)
{
	fill(block_ptr(i), 0xDB, n);
	POISON(block_ptr(i), n);
}

/* Offer the run at block i, of 2^k blocks, merged with its buddy for as long as the buddy is
 * free and whole. */
static void
free_run(uint32_t i, int k)
{
	M.ctrl[i] = 0;
	while (k < M.logmax) {
		uint32_t buddy = i ^ ((uint32_t)1 << k);

		if (buddy >= M.nblocks || M.ctrl[buddy] != (CTRL_FREE | k))
			break;
		run_withdraw(buddy, k);
		i &= ~((uint32_t)1 << k);
		k++;
	}
	run_offer(i, k);
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

static int class_for(size_t n);
static void *alloc_slab_locked(int cls);

static void *
alloc_exact_locked(size_t n)
{
	int cls = class_for(n), k;
	uint32_t m, i;
	void *p;

	if (cls >= 0 && (p = alloc_slab_locked(cls)) != NULL)
		return p;
	m = blocks_for_bytes(n);
	k = log_for(n);
	if (m == 0) {
		M.st.refusals++;
		return NULL;
	}
	if (m == (uint32_t)1 << k && (i = cache_take(k)) != NONE) /* one whole run */
		return handed_out_run(i, k);
	if ((i = take_run(k)) == NONE) {
		M.st.refusals++;
		return NULL;
	}
	mark_pieces(i, m);
	free_range(i + m, i + ((uint32_t)1 << k));
	return handed_out(i, (size_t)m * MEM_BLOCK);
}

/*
 * ---- slabs: exact allocations of up to MEM_SMALL_MAX bytes, and of 3 to SLAB_BLOCKS blocks
 * that are not a power of two ----
 */

static inline __attribute__((always_inline)) size_t
class_bytes(int cls)
{
	return M.obj_bytes[cls];
}

static inline __attribute__((always_inline)) unsigned
class_objects(int cls)
{
	return M.objects[cls];
}

/* The slab's bitmap with every object handed out. */
static inline __attribute__((always_inline)) uint64_t
class_full(int cls)
{
	return ((uint64_t)2 << (class_objects(cls) - 1)) - 1;
}

/* The slab's k for each class: the one, up to SLAB_MAX_LOG, that wastes the least of its run
 * on at least 8 and at most 64 objects (its bitmap); 0 where there are no slabs. */
static void
plan_slabs(void)
{
	for (int cls = 0; cls < CLASSES; cls++) {
		size_t best = 0, bytes = cls < SMALL ? (size_t)(cls + 1) * GRAIN : (size_t)cls * MEM_BLOCK;

		M.slab_log[cls] = 0;
		M.obj_bytes[cls] = (uint16_t)bytes;
		if (cls < SMALL)
			M.slab_log[cls] = SMALL_LOG;
		else if ((cls & (cls - 1)) == 0)
			continue; /* whole runs already fit these exactly */
		for (int k = 1; cls >= SMALL && k <= SLAB_MAX_LOG; k++) {
			size_t n = (run_bytes(k) - SLAB_HDR) / bytes;
			size_t used = n * bytes * 1024 / run_bytes(k); /* per mille of the run */

			if (n >= 8 && n <= 64 && used > best) {
				best = used;
				M.slab_log[cls] = (unsigned char)k;
			}
		}
		M.objects[cls] = (unsigned char)((run_bytes(M.slab_log[cls]) - SLAB_HDR) / bytes);
	}
}

/* The class an exact allocation of n bytes goes to, or -1 for a run of its own. */
static int
class_for(size_t n)
{
	size_t m = (n + MEM_BLOCK - 1) / MEM_BLOCK;

	if (n <= MEM_SMALL_MAX)
		return n == 0 ? 0 : (int)((n - 1) / GRAIN);
	if (n > (size_t)SLAB_BLOCKS * MEM_BLOCK)
		return -1;
	return m >= SMALL && m <= SLAB_BLOCKS && M.slab_log[m] != 0 ? (int)m : -1;
}

/* Slab i's header (i its first block, k its size). */
static struct slab *
slab_at(uint32_t i, int k)
{
	return (struct slab *)((unsigned char *)block_ptr(i) + run_bytes(k) - SLAB_HDR);
}

static struct slab *
class_slab(uint32_t i, int cls)
{
	return slab_at(i, M.slab_log[cls]);
}

static void
partial_push(uint32_t i, int cls)
{
	struct slab *sl = class_slab(i, cls);

	sl->prev = NONE;
	sl->next = M.partial[cls];
	if (sl->next != NONE)
		class_slab(sl->next, cls)->prev = i;
	M.partial[cls] = i;
}

static void
partial_remove(uint32_t i, int cls)
{
	struct slab *sl = class_slab(i, cls);

	if (sl->prev == NONE)
		M.partial[cls] = sl->next;
	else
		class_slab(sl->prev, cls)->next = sl->next;
	if (sl->next != NONE)
		class_slab(sl->next, cls)->prev = sl->prev;
}

/* Mark (or unmark, ctrl 0) the blocks of slab i where its objects may start: every block of a
 * small slab, the first block of each object of a larger one. */
static void
mark_slab(uint32_t i, int cls, unsigned char ctrl)
{
	uint32_t step = cls < SMALL ? 1 : (uint32_t)cls;
	uint32_t end = cls < SMALL ? (uint32_t)1 << M.slab_log[cls] : step * class_objects(cls);

	for (uint32_t b = 0; b < end; b += step)
		M.ctrl[i + b] = ctrl;
}

/* A new empty slab for cls, on its partial list; NONE if no run is free for it. */
static uint32_t
slab_new(int cls)
{
	int k = M.slab_log[cls];
	uint32_t i = take_run(k);
	struct slab *sl;

	if (i == NONE)
		return NONE;
	mark_slab(i, cls, (unsigned char)(CTRL_SLAB | k));
	sl = slab_at(i, k);
	UNPOISON(sl, SLAB_HDR);
	sl->map = 0;
	sl->cls = (uint32_t)cls;
	partial_push(i, cls);
	return i;
}

static void *
alloc_slab_locked(int cls)
{
	uint32_t i = M.partial[cls];
	struct slab *sl;
	unsigned j;
	unsigned char *p;

	if (i == NONE && (i = slab_new(cls)) == NONE)
		return NULL;
	sl = class_slab(i, cls);
	j = (unsigned)__builtin_ctzll(~sl->map); /* the lowest free object: the slab's top stays untouched */
	sl->map |= (uint64_t)1 << j;
	if (sl->map == class_full(cls))
		partial_remove(i, cls);
	p = (unsigned char *)block_ptr(i) + j * class_bytes(cls);
	M.st.allocs++;
	count_in(class_bytes(cls));
	UNPOISON(p, class_bytes(cls));
	fill(p, 0xA5, class_bytes(cls));
	return p;
}

/* The first block of the slab p points into, or NONE. */
static uint32_t
slab_of(const void *p)
{
	const unsigned char *c = p;
	uint32_t b;

	if (!in_pool(c))
		return NONE;
	b = (uint32_t)((size_t)(c - M.pool) / MEM_BLOCK);
	if ((M.ctrl[b] & (CTRL_MORE | CTRL_KIND)) != CTRL_SLAB)
		return NONE;
	return b & ~(((uint32_t)1 << (M.ctrl[b] & CTRL_LOG)) - 1);
}

/* Which object of slab i p is, or -1 if p is not one handed out. */
static int
slab_object(uint32_t i, const void *p)
{
	int k = M.ctrl[i] & CTRL_LOG;
	const struct slab *sl = slab_at(i, k);
	int cls = (int)sl->cls;
	size_t off = (size_t)((const unsigned char *)p - (unsigned char *)block_ptr(i));

	if (off % class_bytes(cls) != 0 || off / class_bytes(cls) >= class_objects(cls) ||
	    !(sl->map >> (off / class_bytes(cls)) & 1))
		return -1;
	return (int)(off / class_bytes(cls));
}

static void
free_slab_locked(uint32_t i, int j)
{
	struct slab *sl = slab_at(i, M.ctrl[i] & CTRL_LOG);
	int cls = (int)sl->cls, k = M.slab_log[cls];
	unsigned char *p = (unsigned char *)block_ptr(i) + (size_t)j * class_bytes(cls);

	if (sl->map == class_full(cls))
		partial_push(i, cls);
	sl->map &= ~((uint64_t)1 << j);
	M.st.in_use -= class_bytes(cls);
	fill(p, 0xDB, class_bytes(cls));
	POISON(p, class_bytes(cls));
	if (sl->map == 0) { /* empty: the run goes back, so a slab never pins memory for nothing */
		partial_remove(i, cls);
		mark_slab(i, cls, 0);
		UNPOISON(block_ptr(i), run_bytes(k)); /* its free objects were poisoned one by one */
		retire(i, run_bytes(k));
		free_run(i, k);
	}
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
	if (n == 1 && cache_put(i, k[0]))
		return;
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
		run_offer(upper, k);
	}
	M.ctrl[i] = CTRL_USED | want;
}

/* Cut the blocks into top-level runs, largest first, each aligned to its own size. */
static void
carve_top_runs(void)
{
	uint32_t at = 0;

	for (M.logmax = 0; M.logmax + 1 < MEM_LOGS && ((uint32_t)2 << M.logmax) <= M.nblocks; M.logmax++)
		;
	for (int k = M.logmax; k >= 0; k--) {
		if (at + ((uint32_t)1 << k) <= M.nblocks) {
			run_offer(at, k);
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

/* The bytes in front of n blocks: their control bytes and the summary levels above them (at
 * least one), rounded up to a block; count[] gets the entries per level, and *levels. */
static size_t
meta_bytes(size_t n, uint32_t count[MAX_LEVELS + 1], int *levels)
{
	size_t c = n, total = (n + FAN - 1) / FAN * FAN; /* each level padded to whole groups */
	int l = 0;

	count[0] = (uint32_t)n;
	do {
		c = (c + FAN - 1) / FAN;
		count[++l] = (uint32_t)c;
		total += (c + FAN - 1) / FAN * FAN;
	} while (c > 1);
	*levels = l;
	return (total + MEM_BLOCK - 1) / MEM_BLOCK * MEM_BLOCK;
}

/* The most blocks that fit in `bytes` with their control bytes and summary. */
static size_t
blocks_for(size_t bytes)
{
	size_t n = bytes / 4096 * 63 + bytes % 4096 * 63 / 4096; /* a block and 1 + 1/63 bytes of meta */
	uint32_t count[MAX_LEVELS + 1];
	int levels;

	if (n > UINT32_MAX)
		return n;
	while (n > 0 && meta_bytes(n, count, &levels) + n * MEM_BLOCK > bytes)
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
	lock();
	if (M.map != NULL) {
		unlock();
		snprintf(err, errlen, "memory is already reserved");
		return -1;
	}
	map = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (map == MAP_FAILED) {
		unlock();
		snprintf(err, errlen, "cannot reserve %zu bytes: %s", bytes, strerror(errno));
		return -1;
	}
	/* A fresh anonymous mapping reads as zeros: the control array starts "no runs", the
	 * summary "no free run". */
	M.map = map;
	M.maplen = bytes;
	M.ctrl = map;
	M.pool = M.ctrl + meta_bytes(n, M.count, &M.nlevels);
	M.sum[0] = NULL;
	for (int l = 1; l <= M.nlevels; l++)
		M.sum[l] = (l == 1 ? M.ctrl : M.sum[l - 1]) + (M.count[l - 1] + FAN - 1) / FAN * FAN;
	M.nblocks = (uint32_t)n;
	memset(&M.st, 0, sizeof M.st);
	M.st.reserved = n * MEM_BLOCK;
	M.madv_zeroes = madv_zeroes((unsigned char *)(((uintptr_t)M.pool + M.st.reserved) &
	    ~(uintptr_t)(PAGE - 1)) - PAGE);
	POISON(M.pool, M.st.reserved);
	carve_top_runs();
	for (int c = 0; c < CLASSES; c++)
		M.partial[c] = NONE;
	plan_slabs();
	unlock();
	return 0;
}

void
mem_shutdown(void)
{
	lock();
	if (M.map != NULL) {
		/* ASan's shadow outlives the mapping; leave it clean for whoever maps here next. */
		UNPOISON(M.pool, M.st.reserved);
		munmap(M.map, M.maplen);
	}
	M.map = M.ctrl = M.pool = NULL;
	M.maplen = 0;
	memset(M.ncache, 0, sizeof M.ncache);
	M.nblocks = 0;
	M.nlevels = 0;
	M.logmax = -1;
	memset(&M.st, 0, sizeof M.st);
	unlock();
}

void *
mem_alloc(size_t n)
{
	void *p;

	lock();
	p = alloc_locked(n);
	unlock();
	return p;
}

void *
mem_alloc_exact(size_t n)
{
	void *p;

	lock();
	p = alloc_exact_locked(n);
	unlock();
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
		lock();
		M.st.refusals++;
		unlock();
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

/* Free p, a run or a slab object; a pointer that is neither stops the process. */
static void
free_any_locked(void *p, const char *what)
{
	uint32_t i = used_run(p);
	int j;

	if (i != NONE) {
		free_locked(i);
		return;
	}
	if ((i = slab_of(p)) != NONE && (j = slab_object(i, p)) >= 0) {
		free_slab_locked(i, j);
		return;
	}
	used_run_or_die(p, what);
}

/* Bytes usable at p, a run or a slab object; 0 if it is neither. */
static size_t
usable_locked(const void *p)
{
	uint32_t i = used_run(p);

	if (i != NONE)
		return (size_t)alloc_blocks(i) * MEM_BLOCK;
	if ((i = slab_of(p)) != NONE && slab_object(i, p) >= 0)
		return class_bytes((int)slab_at(i, M.ctrl[i] & CTRL_LOG)->cls);
	return 0;
}

/* Keep p in place when n fits what it has, else alloc (exact or not), copy, free. */
/* p, of `has` usable bytes, moved to a new allocation of n bytes. The old allocation is the
 * caller's until freed, so copying it needs no lock. */
static void *
moved(void *p, size_t has, size_t n, int exact)
{
	void *q = exact ? mem_alloc_exact(n) : mem_alloc(n);

	if (q == NULL)
		return NULL;
	memcpy(q, p, has < n ? has : n);
	mem_free(p);
	return q;
}

static void *
realloc_with(void *p, size_t n, int exact)
{
	uint32_t i, m, want;
	int k;

	if (p == NULL)
		return exact ? mem_alloc_exact(n) : mem_alloc(n);
	lock();
	if (used_run(p) == NONE && (m = (uint32_t)usable_locked(p)) != 0) { /* a slab object */
		unlock();
		if (exact && n <= m)
			return p;
		return moved(p, m, n, exact);
	}
	i = used_run_or_die(p, "realloc");
	k = M.ctrl[i] & CTRL_LOG;
	m = alloc_blocks(i);
	if (!(M.ctrl[i] & CTRL_MORE) && !exact) {
		int want_k = log_for(n);

		if (want_k >= 0 && want_k <= k) {
			trim_locked(i, k, want_k);
			unlock();
			return p;
		}
	} else if (exact && (want = blocks_for_bytes(n)) != 0 && want <= m) {
		shrink_exact_locked(i, m, want);
		unlock();
		return p;
	}
	unlock();
	return moved(p, (size_t)m * MEM_BLOCK, n, exact);
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
	lock();
	free_any_locked(p, "free");
	unlock();
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
	size_t n;

	lock();
	n = usable_locked(p);
	unlock();
	return n;
}

void
mem_get_stats(struct mem_stats *st)
{
	lock();
	*st = M.st;
	unlock();
}

int
mem_owns(const void *p)
{
	const unsigned char *c = p;
	int owns;

	lock();
	owns = in_pool(c);
	unlock();
	return owns;
}

/* Give the run cache back to the pool (it empties itself whenever a run is needed and none is
 * free; this is for a caller that wants the pool as first fit alone would leave it). */
void
mem_trim(void)
{
	lock();
	cache_flush();
	unlock();
}

/* The largest allocation that could ever succeed (the largest top-level run), for callers that
 * must tell "never fits" (413) from "does not fit now" (503). */
size_t
mem_largest(void)
{
	return M.logmax < 0 ? 0 : (size_t)MEM_BLOCK << M.logmax;
}
