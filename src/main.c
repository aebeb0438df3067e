/* main.c — the command line. */
#include <string.h>
#include "sluice.h"

static void
usage(FILE *out)
{
	fputs("usage: sluice [-c FILE] [--listen ADDR:PORT] [--check] [--version] [--help]\n"
	      "       sluice --healthcheck [URL]\n", out);
}

int
main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--version") == 0) {
			version_print(stdout);
			return 0;
		}
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			usage(stdout);
			return 0;
		}
		fprintf(stderr, "sluice: unknown option '%s'\n", argv[i]);
		usage(stderr);
		return 2;
	}
	usage(stderr);
	return 2;
}
