/*
 * log.c — sluice's diagnostics on stderr: one line each, plain or JSON ([server] log_format).
 * The request log line itself is written by conn.c through log_line().
 */
#include <stdarg.h>
#include <string.h>
#include <time.h>
#include "sluice.h"

static int json_format;

void
log_set_format(int json)
{
	json_format = json;
}

int
log_is_json(void)
{
	return json_format;
}

/* "2026-11-22T02:50:01.123Z": wall-clock time for humans and log collectors. */
void
log_timestamp(char *out, size_t len)
{
	struct timespec ts;
	struct tm tm;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	snprintf(out, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900, tm.tm_mon + 1,
	    tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
}

void
log_msg(const char *fmt, ...)
{
	char ts[32], msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	log_timestamp(ts, sizeof ts);
	if (json_format) {
		char esc[2048];
		struct buf b = { .data = esc, .size = sizeof esc, .max = sizeof esc };

		/* A fixed buffer, never grown: logging must work when memory is exhausted. */
		if (json_escape(&b, msg, strlen(msg)) != BUF_OK)
			b.len = 0;
		fprintf(stderr, "{\"ts\":\"%s\",\"msg\":%.*s}\n", ts, (int)b.len, b.data);
	} else {
		fprintf(stderr, "%s sluice: %s\n", ts, msg);
	}
}
