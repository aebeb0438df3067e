/* test_loop.c — the loop's fd watches: parking a provider connection between requests. */
#include <sys/socket.h>
#include <unistd.h>
#include "sluice.h"
#include "unit.h"

static int calls, ticks;

static void
on_fd(int fd, unsigned events, void *ud)
{
	char b[16];

	(void)!read(fd, b, sizeof b);
	calls++;
	*(int *)ud += 1;
}

static void
count_tick(void *ud)
{
	ticks++;
}

static void
stop(void *ud)
{
	loop_stop();
}

/* Run the loop for ms milliseconds; the iterations it made in ticks. */
static void
run_for(uint64_t ms)
{
	struct timer t;

	loop_timer_init(&t);
	ticks = 0;
	loop_timer_set(&t, ms, stop, NULL);
	loop_run();
}

static int
pair(int sv[2])
{
	return CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) == 0);
}

static void
test_park(void)
{
	int sv[2], old = 0, now = 0;

	unit_case("loop: a parked fd watched again for the same events is reported to the new watcher");
	if (!pair(sv))
		return;
	loop_parkable(sv[0]);
	CHECK(loop_watch(sv[0], LOOP_READ, on_fd, &old) == 0);
	loop_park(sv[0]);
	CHECK(loop_watch(sv[0], LOOP_READ, on_fd, &now) == 0);
	(void)!write(sv[1], "x", 1);
	run_for(20);
	CHECKF(old == 0 && now == 1, "old watcher %d calls, new %d", old, now);

	unit_case("loop: a parked fd that fires is taken out of the set: nobody is called, no spinning");
	loop_park(sv[0]);
	(void)!write(sv[1], "y", 1);
	calls = 0;
	run_for(30);
	CHECKF(calls == 0 && ticks < 10, "%d calls, %d iterations in 30 ms", calls, ticks);
	now = 0;
	CHECK(loop_watch(sv[0], LOOP_READ, on_fd, &now) == 0); /* registered afresh: the byte is there */
	run_for(20);
	CHECKF(now == 1, "%d calls after watching again", now);

	unit_case("loop: an fd that is not parkable is unwatched by loop_park");
	close(sv[0]);
	loop_forget(sv[0]);
	close(sv[1]);
	if (!pair(sv))
		return;
	CHECK(loop_watch(sv[0], LOOP_READ, on_fd, &now) == 0);
	loop_park(sv[0]);
	(void)!write(sv[1], "z", 1);
	calls = 0;
	run_for(30);
	CHECKF(calls == 0 && ticks < 10, "%d calls, %d iterations in 30 ms", calls, ticks);
	close(sv[0]);
	close(sv[1]);
}

/* A parked fd closed without loop_forget would leave the loop believing a new fd of the same
 * number registered: loop_forget is what makes the number start from nothing. */
static void
test_forget(void)
{
	int sv[2], fd, now = 0, ignored = 0;

	unit_case("loop: a forgotten fd's number, taken by a new socket, is watched afresh");
	if (!pair(sv))
		return;
	fd = sv[0];
	loop_parkable(fd);
	CHECK(loop_watch(fd, LOOP_READ, on_fd, &ignored) == 0);
	loop_park(fd);
	loop_forget(fd);
	close(sv[0]);
	close(sv[1]);
	if (!pair(sv))
		return;
	if (!CHECKF(sv[0] == fd, "the new socket got fd %d, not %d", sv[0], fd))
		return;
	CHECK(loop_watch(sv[0], LOOP_READ, on_fd, &now) == 0);
	(void)!write(sv[1], "x", 1);
	run_for(20);
	CHECKF(now == 1, "%d calls", now);
	close(sv[0]);
	close(sv[1]);
}

void
suite_loop(void)
{
	char err[128];

	unit_case("mem_init and loop_init");
	if (!CHECKF(mem_init(1 << 20, err, sizeof err) == 0, "mem_init: %s", err))
		return;
	if (!CHECK(loop_init(256) == 0 && loop_on_tick(count_tick, NULL) == 0))
		return;
	test_park();
	test_forget();
	/* The loop keeps its watches (there is no loop teardown); no suite after this one uses it. */
	mem_shutdown();
}
