/* unit_main.c — runs every suite listed in unit.h and prints the closing count. */
#include <stdarg.h>
#include <string.h>
#include "unit.h"

static int passed, failed;
static int case_open, case_ok;
static char case_name[256];

static void
case_close(void)
{
	if (!case_open)
		return;
	if (case_ok)
		passed++;
	else
		failed++;
	case_open = 0;
}

void
unit_case(const char *fmt, ...)
{
	va_list ap;

	case_close();
	va_start(ap, fmt);
	vsnprintf(case_name, sizeof case_name, fmt, ap);
	va_end(ap);
	case_open = 1;
	case_ok = 1;
}

int
unit_check(int ok, const char *file, int line, const char *fmt, ...)
{
	va_list ap;

	if (!case_open)
		unit_case("(unnamed)");
	if (ok)
		return 1;
	case_ok = 0;
	printf("FAIL %s — %s:%d: ", case_name, file, line);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	return 0;
}

int
main(int argc, char **argv)
{
	const char *only = argc > 1 ? argv[1] : NULL;

#define X(name) \
	if (only == NULL || strcmp(only, #name) == 0) { \
		int p0 = passed, f0 = failed; \
		suite_##name(); \
		case_close(); \
		printf("unit %-12s %d passed, %d failed\n", #name, passed - p0, failed - f0); \
	}
	UNIT_SUITES(X)
#undef X
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
