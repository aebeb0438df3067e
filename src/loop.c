/*
 * loop.c — one thread, one wait for readiness (DESIGN.md §6; Redis's ae.c in spirit).
 *
 * The wait is epoll_wait, not poll(): poll() hands the kernel the whole set on every call, and
 * at 1,000 streams (2,000 sockets) scanning it was 40% of sluice's CPU (perf, cpu-clock). With
 * epoll the kernel keeps the set and returns only what is ready; level-triggered, so the
 * semantics are poll()'s. The interest set changes only when a watch really changes.
 *
 * File descriptors are watched for read and/or write with a callback each; timers are intrusive
 * (the caller owns struct timer) and kept in a binary min-heap; tick hooks run once per
 * iteration for batched work; signals arrive through a self-pipe and are handed to one callback
 * on the loop, never run in signal context. All tables come from mem at loop_init and are sized
 * by the fd capacity, so the loop never allocates while it runs (the timer heap may grow once
 * in a while, from mem, and reports failure instead of dying).
 *
 * Callbacks may add and remove watches and timers freely, including closing an fd and having
 * the number reused by accept() in the same iteration: readiness is collected first and each
 * event is delivered only if the watch that was polled is still the one registered (a
 * generation count per fd tells).
 */
#include <errno.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <signal.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "sluice.h"

struct watch {
	loop_fd_fn *fn;     /* NULL while parked (still registered, nobody listening) */
	void       *ud;
	uint32_t    gen;    /* bumped at every (un)registration of this fd */
	uint32_t    events; /* the epoll events registered; 0 when not watched */
	int         parkable; /* its owner reports its close (loop_forget): it may be parked */
};

static struct {
	int            cap;          /* fds 0..cap-1 can be watched */
	int            epfd;
	struct watch  *watches;      /* indexed by fd */
	struct epoll_event *fired;   /* one wait's events; data: fd and the watch's generation */
	int            nfired;
	struct timer **heap;
	int            nheap, heapcap;
	struct { loop_tick_fn *fn; void *ud; } ticks[8];
	int            nticks;
	int            sigpipe[2];
	loop_signal_fn *on_signal;
	void          *sig_ud;
	uint64_t       now;
	int            stop;
	int            woken;        /* a tick hook has work: the wait must not block */
} L = { .epfd = -1, .sigpipe = { -1, -1 } };

uint64_t
loop_clock_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t
loop_now(void)
{
	return L.now;
}

int
loop_init(int fd_capacity)
{
	L.cap = fd_capacity;
	L.nfired = L.cap < 1024 ? L.cap : 1024; /* more stay ready for the next wait */
	L.watches = mem_calloc((size_t)L.cap, sizeof *L.watches);
	L.fired = mem_calloc((size_t)L.nfired, sizeof *L.fired);
	L.heapcap = 64;
	L.heap = mem_calloc((size_t)L.heapcap, sizeof *L.heap);
	if (!L.watches || !L.fired || !L.heap)
		return -1;
	if (L.epfd < 0 && (L.epfd = epoll_create1(EPOLL_CLOEXEC)) < 0)
		return -1;
	L.now = loop_clock_ms();
	return 0;
}

int
loop_capacity(void)
{
	return L.cap;
}

/* Tell the kernel what fd's watch now is: its events, and its generation in the event's data so
 * a readiness collected for an earlier watch of the same number is recognised and dropped. */
static int
epoll_set(int fd, struct watch *w, uint32_t events, int op)
{
	struct epoll_event ev = { .events = events, .data.u64 = (uint64_t)w->gen << 32 | (uint32_t)fd };

	if (epoll_ctl(L.epfd, op, fd, &ev) == 0)
		return 0;
	/* The number was closed without an unwatch and reused (the kernel dropped the old one), or
	 * the other way round: the operation the kernel's set needs. */
	if (op == EPOLL_CTL_MOD && errno == ENOENT)
		return epoll_ctl(L.epfd, EPOLL_CTL_ADD, fd, &ev);
	if (op == EPOLL_CTL_ADD && errno == EEXIST)
		return epoll_ctl(L.epfd, EPOLL_CTL_MOD, fd, &ev);
	return -1;
}

/* Watch fd for LOOP_READ and/or LOOP_WRITE; events 0 stops watching. -1 if fd is out of range
 * or the kernel refused it. */
int
loop_watch(int fd, unsigned events, loop_fd_fn *fn, void *ud)
{
	struct watch *w;
	uint32_t ev = (events & LOOP_READ ? EPOLLIN : 0) | (events & LOOP_WRITE ? EPOLLOUT : 0);
	int op;

	if (fd < 0 || fd >= L.cap)
		return -1;
	w = &L.watches[fd];
	if (events == 0) {
		loop_unwatch(fd);
		return 0;
	}
	if (w->events == ev && w->fn == NULL) { /* parked with these events: the kernel has it */
		w->fn = fn;
		w->ud = ud;
		return 0;
	}
	if (w->events == 0) {
		op = EPOLL_CTL_ADD;
		w->gen++;
	} else if (w->fn != fn || w->ud != ud) {
		op = EPOLL_CTL_MOD;
		w->gen++;
	} else if (w->events != ev) {
		op = EPOLL_CTL_MOD;
	} else {
		return 0; /* the same watch: nothing for the kernel */
	}
	w->fn = fn;
	w->ud = ud;
	w->events = ev;
	if (epoll_set(fd, w, ev, op) < 0) {
		log_msg("loop: cannot watch fd %d: %s", fd, strerror(errno));
		loop_unwatch(fd);
		return -1;
	}
	return 0;
}

void
loop_unwatch(int fd)
{
	struct watch *w;

	if (fd < 0 || fd >= L.cap || L.watches[fd].events == 0)
		return;
	w = &L.watches[fd];
	(void)epoll_ctl(L.epfd, EPOLL_CTL_DEL, fd, NULL); /* fails harmlessly if fd is closed already */
	w->events = 0;
	w->fn = NULL;
	w->gen++;
}

/*
 * Parking: a provider connection is watched for its answer, unwatched when the transfer ends and
 * watched again for the next request's answer — an epoll_ctl removal and addition a request for
 * the same registration. An fd whose owner tells the loop when it closes it (loop_parkable, then
 * loop_forget before the close) is instead left registered when unwatched (loop_park): watched
 * again for the same events it costs no system call. If it fires while parked (the peer closed
 * it, or sent something nobody asked for), it is removed then, once.
 */
void
loop_parkable(int fd)
{
	if (fd >= 0 && fd < L.cap)
		L.watches[fd].parkable = 1;
}

void
loop_park(int fd)
{
	if (fd < 0 || fd >= L.cap)
		return;
	if (!L.watches[fd].parkable) {
		loop_unwatch(fd);
		return;
	}
	L.watches[fd].fn = NULL;
	L.watches[fd].ud = NULL;
}

/* fd is about to be closed: forget it, no system call (closing takes it out of the kernel's
 * set; a later fd of the same number starts from nothing). */
void
loop_forget(int fd)
{
	if (fd < 0 || fd >= L.cap)
		return;
	L.watches[fd] = (struct watch){ .gen = L.watches[fd].gen + 1 };
}

/* ---- timers: a binary min-heap of pointers, each timer knowing its index ---- */

static int
heap_less(int a, int b)
{
	return L.heap[a]->when < L.heap[b]->when;
}

static void
heap_swap(int a, int b)
{
	struct timer *t = L.heap[a];

	L.heap[a] = L.heap[b];
	L.heap[b] = t;
	L.heap[a]->idx = a;
	L.heap[b]->idx = b;
}

static void
heap_up(int i)
{
	while (i > 0 && heap_less(i, (i - 1) / 2)) {
		heap_swap(i, (i - 1) / 2);
		i = (i - 1) / 2;
	}
}

static void
heap_down(int i)
{
	for (;;) {
		int l = 2 * i + 1, r = l + 1, m = i;

		if (l < L.nheap && heap_less(l, m))
			m = l;
		if (r < L.nheap && heap_less(r, m))
			m = r;
		if (m == i)
			return;
		heap_swap(i, m);
		i = m;
	}
}

static void
heap_remove(int i)
{
	int last = --L.nheap;

	L.heap[i]->idx = -1;
	if (i == last)
		return;
	L.heap[i] = L.heap[last];
	L.heap[i]->idx = i;
	heap_up(i);
	heap_down(i);
}

void
loop_timer_init(struct timer *t)
{
	memset(t, 0, sizeof *t);
	t->idx = -1;
}

/* (Re)arm t to fire once, ms from now. -1 if the heap could not grow (memory exhausted). */
int
loop_timer_set(struct timer *t, uint64_t ms, loop_timer_fn *fn, void *ud)
{
	/* Room first: a timer that cannot be re-armed keeps its old deadline, never none. */
	if (L.nheap == L.heapcap && t->idx < 0) {
		struct timer **h = mem_realloc(L.heap, (size_t)L.heapcap * 2 * sizeof *h);
		if (h == NULL)
			return -1;
		L.heap = h;
		L.heapcap *= 2;
	}
	if (t->idx >= 0)
		heap_remove(t->idx);
	t->when = L.now + ms;
	t->fn = fn;
	t->ud = ud;
	t->idx = L.nheap++;
	L.heap[t->idx] = t;
	heap_up(t->idx);
	return 0;
}

void
loop_timer_cancel(struct timer *t)
{
	if (t->idx >= 0)
		heap_remove(t->idx);
}

int
loop_timer_armed(const struct timer *t)
{
	return t->idx >= 0;
}

static void
run_timers(void)
{
	while (L.nheap > 0 && L.heap[0]->when <= L.now) {
		struct timer *t = L.heap[0];

		heap_remove(0);
		t->fn(t->ud);
	}
}

static int
wait_timeout(void)
{
	uint64_t d;

	if (L.stop || L.woken)
		return 0;
	if (L.nheap == 0)
		return -1;
	if (L.heap[0]->when <= L.now)
		return 0;
	d = L.heap[0]->when - L.now;
	return d > 60000 ? 60000 : (int)d;
}

/* ---- tick hooks and signals ---- */

/* Work was queued for a tick hook: the next wait returns at once instead of blocking. */
void
loop_wake(void)
{
	L.woken = 1;
}

int
loop_on_tick(loop_tick_fn *fn, void *ud)
{
	if (L.nticks == (int)NELEM(L.ticks))
		return -1;
	L.ticks[L.nticks].fn = fn;
	L.ticks[L.nticks++].ud = ud;
	return 0;
}

static void
on_signal_raw(int sig)
{
	int saved = errno;
	unsigned char b = (unsigned char)sig;

	(void)!write(L.sigpipe[1], &b, 1);
	errno = saved;
}

static void
on_sigpipe_readable(int fd, unsigned events, void *ud)
{
	unsigned char b[16];
	ssize_t n;

	while ((n = read(fd, b, sizeof b)) > 0)
		for (ssize_t i = 0; i < n; i++)
			L.on_signal(b[i], L.sig_ud);
}

/* Deliver SIGTERM, SIGINT and SIGHUP to fn on the loop; ignore SIGPIPE. */
int
loop_signals(loop_signal_fn *fn, void *ud)
{
	static const int sigs[] = { SIGTERM, SIGINT, SIGHUP };
	struct sigaction sa;

	if (pipe2(L.sigpipe, O_NONBLOCK | O_CLOEXEC) < 0)
		return -1;
	L.on_signal = fn;
	L.sig_ud = ud;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &sa, NULL);
	sa.sa_handler = on_signal_raw;
	sa.sa_flags = SA_RESTART;
	sigemptyset(&sa.sa_mask);
	for (size_t i = 0; i < NELEM(sigs); i++)
		sigaction(sigs[i], &sa, NULL);
	return loop_watch(L.sigpipe[0], LOOP_READ, on_sigpipe_readable, NULL);
}

/* ---- the loop ---- */

static void
dispatch_fired(int n)
{
	for (int i = 0; i < n; i++) {
		uint32_t re = L.fired[i].events;
		int fd = (int)(uint32_t)L.fired[i].data.u64;
		struct watch *w = &L.watches[fd];
		unsigned ev = 0;

		if (w->events == 0 || w->gen != (uint32_t)(L.fired[i].data.u64 >> 32))
			continue; /* removed or replaced by an earlier callback */
		if (w->fn == NULL) { /* parked, and something happened: out of the kernel's set now */
			loop_unwatch(fd);
			continue;
		}
		if (re & (EPOLLIN | EPOLLHUP | EPOLLERR))
			ev |= LOOP_READ;
		if (re & (EPOLLOUT | EPOLLERR))
			ev |= LOOP_WRITE;
		if (re & (EPOLLERR | EPOLLHUP))
			ev |= LOOP_ERROR;
		w->fn(fd, ev, w->ud);
	}
}

static void
loop_run_once(void)
{
	int n;

	L.woken = 0;
	for (int i = 0; i < L.nticks; i++)
		L.ticks[i].fn(L.ticks[i].ud);
	n = epoll_wait(L.epfd, L.fired, L.nfired, wait_timeout());
	L.now = loop_clock_ms();
	if (n < 0 && errno != EINTR)
		log_msg("epoll_wait: %s", strerror(errno));
	dispatch_fired(n > 0 ? n : 0);
	run_timers();
}

void
loop_run(void)
{
	L.stop = 0;
	while (!L.stop)
		loop_run_once();
}

void
loop_stop(void)
{
	L.stop = 1;
}
