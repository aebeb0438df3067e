/*
 * main.c — the command line, start-up and shutdown.
 *   sluice [-c FILE] [--listen ADDR:PORT] [--check] [--version] [--help]
 *   sluice --healthcheck [URL]
 * Config: -c FILE, else $SLUICE_CONFIG, else /etc/sluice/sluice.ini, else the embedded default
 * built from the environment (DESIGN.md §1).
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include <curl/curl.h>
#include "adapters/adapter.h"

#define DEFAULT_CONFIG  "/etc/sluice/sluice.ini"
#define HEALTHCHECK_URL "http://127.0.0.1:8080/healthz"
#define BOOT_MEMORY     (4u << 20) /* enough to read the config before its `memory` is known */

struct options {
	const char *config;
	const char *listen;
	const char *healthcheck;
	int         check;
};

static void
usage(FILE *out)
{
	fputs("usage: sluice [-c FILE] [--listen ADDR:PORT] [--check] [--version] [--help]\n"
	      "       sluice --healthcheck [URL]\n"
	      "\n"
	      "  -c FILE             config file (else $SLUICE_CONFIG, else " DEFAULT_CONFIG ",\n"
	      "                      else the embedded default: providers from OPENAI_API_KEY,\n"
	      "                      ANTHROPIC_API_KEY, GEMINI_API_KEY, OLLAMA_HOST)\n"
	      "  --listen ADDR:PORT  listen here instead (also $SLUICE_LISTEN for the default)\n"
	      "  --check             validate the config: print every error, or a summary\n"
	      "  --healthcheck [URL] exit 0 if URL (default " HEALTHCHECK_URL ") answers 200\n"
	      "  --version           sluice's version and what it was built from\n", out);
}

/* Returns -1 to exit 0 (help, version), -2 to exit 2 (bad usage), 0 to go on. */
static int
parse_args(int argc, char **argv, struct options *o)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (strcmp(a, "--version") == 0) {
			version_print(stdout);
			return -1;
		} else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			usage(stdout);
			return -1;
		} else if ((strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) && i + 1 < argc) {
			o->config = argv[++i];
		} else if (strcmp(a, "--listen") == 0 && i + 1 < argc) {
			o->listen = argv[++i];
		} else if (strcmp(a, "--check") == 0) {
			o->check = 1;
		} else if (strcmp(a, "--healthcheck") == 0) {
			o->healthcheck = (i + 1 < argc && argv[i + 1][0] != '-') ? argv[++i] : HEALTHCHECK_URL;
		} else {
			fprintf(stderr, "sluice: unknown or incomplete option '%s'\n", a);
			usage(stderr);
			return -2;
		}
	}
	return 0;
}

/* GET url; 0 if it answers 200. The HEALTHCHECK of a scratch image, where no curl exists. */
static int
healthcheck(const char *url)
{
	long status = 0;
	CURLcode rc;
	CURL *h;

	curl_global_init(CURL_GLOBAL_DEFAULT);
	if ((h = curl_easy_init()) == NULL)
		return 1;
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_NOBODY, 0L);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 3000L);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, fwrite);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, stdout);
	rc = curl_easy_perform(h);
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_cleanup(h);
	if (rc != CURLE_OK) {
		fprintf(stderr, "sluice: healthcheck %s: %s\n", url, curl_easy_strerror(rc));
		return 1;
	}
	putchar('\n');
	return status == 200 ? 0 : 1;
}

/* Load the config the command line and environment point at; errors go to errs. */
static struct config *
load_config(const struct options *o, struct buf *errs)
{
	const char *path = o->config;

	if (path == NULL && (path = getenv("SLUICE_CONFIG")) != NULL && *path == '\0')
		path = NULL;
	if (path == NULL && access(DEFAULT_CONFIG, F_OK) == 0)
		path = DEFAULT_CONFIG;
	return path ? config_load_file(path, errs) : config_default(errs);
}

/* Serve as many connections as configured: raise the soft fd limit to the hard one. */
static int
fd_capacity(int max_connections)
{
	struct rlimit rl;
	long want = (long)max_connections * 2 + 64;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		if (rl.rlim_cur < rl.rlim_max) {
			rl.rlim_cur = rl.rlim_max;
			setrlimit(RLIMIT_NOFILE, &rl);
		}
		if (rl.rlim_cur != RLIM_INFINITY && (long)rl.rlim_cur < want)
			want = (long)rl.rlim_cur;
	}
	return (int)want;
}

static void
on_signal(int sig, void *ud)
{
	const struct config *cfg = ud;

	if (sig == SIGHUP) {
		log_msg("SIGHUP: config reload is not supported yet; keeping %s", cfg->source);
		return;
	}
	if (conn_draining()) {
		log_msg("%s again: exiting now", sig == SIGINT ? "SIGINT" : "SIGTERM");
		loop_stop();
		return;
	}
	log_msg("%s: draining (up to %ums)", sig == SIGINT ? "SIGINT" : "SIGTERM", cfg->server.drain_timeout);
	conn_drain(cfg->server.drain_timeout);
}

static void
log_start(const struct config *cfg)
{
	char provs[256] = "";
	size_t n = 0;

	for (int i = 0; i < cfg->nproviders && n < sizeof provs - 1; i++)
		n += (size_t)snprintf(provs + n, sizeof provs - n, "%s%s", i ? ", " : "", cfg->providers[i].name);
	log_msg("sluice %s listening on %s (config: %s; providers: %s; models: %d; routes: %d; memory: %zuK)",
	    SLUICE_VERSION, cfg->server.listen, cfg->source, n ? provs : "none", cfg->nmodels,
	    cfg->nroutes, cfg->server.memory >> 10);
}

static int
serve(struct config *cfg)
{
	char err[256];

	log_set_format(cfg->server.log_format == LOG_JSON);
	if (mem_init(cfg->server.memory, err, sizeof err) < 0) {
		fprintf(stderr, "sluice: %s\n", err);
		return 1;
	}
	if (loop_init(fd_capacity(cfg->server.max_connections)) < 0) {
		fprintf(stderr, "sluice: memory = %zu is too small for max_connections = %d\n",
		    cfg->server.memory, cfg->server.max_connections);
		return 1;
	}
	if (router_init(cfg) < 0) {
		fprintf(stderr, "sluice: memory = %zu is too small\n", cfg->server.memory);
		return 1;
	}
	if (upstream_init(cfg, err, sizeof err) < 0 || conn_listen(cfg, err, sizeof err) < 0) {
		fprintf(stderr, "sluice: %s\n", err);
		return 1;
	}
	api_init(cfg, loop_clock_ms());
	loop_signals(on_signal, cfg);
	log_start(cfg);
	loop_run();
	log_msg("stopped");
	return 0;
}

int
main(int argc, char **argv)
{
	static char errtext[64 * 1024];
	struct buf errs = { .data = errtext, .size = sizeof errtext, .max = sizeof errtext };
	struct options o = { 0 };
	struct config *cfg;
	char err[256];
	int rc;

	if ((rc = parse_args(argc, argv, &o)) < 0)
		return rc == -1 ? 0 : 2;
	if (o.healthcheck)
		return healthcheck(o.healthcheck);
	/* The config is read with a small boot reservation; the real one follows its `memory`. */
	if (mem_init(BOOT_MEMORY, err, sizeof err) < 0) {
		fprintf(stderr, "sluice: %s\n", err);
		return 1;
	}
	cfg = load_config(&o, &errs);
	if (cfg != NULL && o.listen != NULL && config_set_listen(cfg, o.listen, &errs) < 0) {
		config_free(cfg);
		cfg = NULL;
	}
	mem_shutdown();
	if (cfg == NULL) {
		fprintf(stderr, "%.*s", (int)errs.len, errs.data);
		return 1;
	}
	if (o.check) {
		config_summary(cfg, stdout);
		config_free(cfg);
		return 0;
	}
	rc = serve(cfg);
	config_free(cfg);
	return rc;
}
