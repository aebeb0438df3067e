/*
 * unit.h — a small harness for table-driven unit tests. A suite is a function that walks its
 * table, opening one case per row with unit_case() and checking it with CHECK(). A case passes
 * when every check in it passed. The runner prints one line per failed check and, at the end,
 * "N passed, N failed".
 */
#ifndef UNIT_H
#define UNIT_H

#include <stdio.h>

void unit_case(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int  unit_check(int ok, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define CHECK(c)       unit_check(!!(c), __FILE__, __LINE__, "%s", #c)
#define CHECKF(c, ...) unit_check(!!(c), __FILE__, __LINE__, __VA_ARGS__)
#define NELEM(a)       (sizeof(a) / sizeof((a)[0]))

/* One line per suite; the runner calls them in this order. */
#define UNIT_SUITES(X) \
	X(tls) \
	X(mem) \
	X(arena) \
	X(buf) \
	X(config) \
	X(http) \
	X(json) \
	X(json_tokens) \
	X(sse) \
	X(anthropic) \
	X(gemini) \
	X(ollama) \
	X(azure) \
	X(curl_printf) \
	X(loop) \
	X(adversary)

#define X(name) void suite_##name(void);
UNIT_SUITES(X)
#undef X

#endif
