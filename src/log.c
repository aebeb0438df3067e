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

/* "2026-11-22T02:50:01.123Z": wall-clock time for humans and log collectors. Every request logs
 * one, so the part up to the second is formatted once a second (the loop's thread only). */
void
log_timestamp(char *out, size_t len)
{
	static time_t sec = -1;
	static char prefix[64]; /* "2026-11-22T02:50:01." */
	static size_t plen;
	struct timespec ts;
	long ms;

	clock_gettime(CLOCK_REALTIME, &ts);
	if (ts.tv_sec != sec) {
		struct tm tm;

		gmtime_r(&ts.tv_sec, &tm);
		plen = (size_t)snprintf(prefix, sizeof prefix, "%04d-%02d-%02dT%02d:%02d:%02d.", tm.tm_year + 1900,
		    tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
		sec = ts.tv_sec;
	}
	if (len < plen + 5) {
		if (len > 0)
			out[0] = '\0';
		return;
	}
	ms = ts.tv_nsec / 1000000;
	memcpy(out, prefix, plen);
	out[plen] = (char)('0' + ms / 100);
	out[plen + 1] = (char)('0' + ms / 10 % 10);
	out[plen + 2] = (char)('0' + ms % 10);
	out[plen + 3] = 'Z';
	out[plen + 4] = '\0';
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
