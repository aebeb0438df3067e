/* test_config.c — the INI config: value parsers, ${VAR} expansion, every error class with its
 * line number, a full config read back field by field, the embedded default, conf/sluice.ini. */
#include <stdlib.h>
#include <string.h>
#include "sluice.h"
#include "unit.h"

static struct buf errs;

/* Load text as "t.ini"; errs holds the messages. */
static struct config *
load(const char *text)
{
	buf_reset(&errs);
	return config_load_string(text, "t.ini", &errs);
}

static const char *
err_text(void)
{
	return errs.data ? errs.data : "";
}

static int
count_lines(const char *s)
{
	int n = 0;

	for (; *s; s++)
		n += *s == '\n';
	return n;
}

static void
test_sizes(void)
{
	static const struct { const char *in; int ok; size_t want; } rows[] = {
		{ "0", 1, 0 },           { "4096", 1, 4096 },        { "1K", 1, 1024 },
		{ "512k", 1, 512 << 10 }, { "64M", 1, 64u << 20 },    { "1G", 1, 1u << 30 },
		{ "2g", 1, 2ull << 30 }, { "007", 1, 7 },
		{ "", 0, 0 },            { "-1", 0, 0 },             { "+1", 0, 0 },
		{ "1.5M", 0, 0 },        { "1T", 0, 0 },             { "M", 0, 0 },
		{ "1KB", 0, 0 },         { " 1K", 0, 0 },            { "1K ", 0, 0 },
		{ "0x10", 0, 0 },        { "1 K", 0, 0 },
		{ "18446744073709551616", 0, 0 },  /* 2^64 */
		{ "17179869184G", 0, 0 },          /* 2^34 G = 2^64 bytes */
	};

	for (size_t i = 0; i < NELEM(rows); i++) {
		size_t v = 12345;
		int rc = config_parse_size(rows[i].in, &v);

		unit_case("size '%s'", rows[i].in);
		CHECKF((rc == 0) == rows[i].ok, "rc %d", rc);
		if (rows[i].ok)
			CHECKF(v == rows[i].want, "got %zu, want %zu", v, rows[i].want);
	}
}

static void
test_durations(void)
{
	static const struct { const char *in; int ok; uint32_t want; } rows[] = {
		{ "250ms", 1, 250 },     { "5s", 1, 5000 },          { "10m", 1, 600000 },
		{ "1h", 1, 3600000 },    { "0", 1, 0 },              { "0s", 1, 0 },
		{ "0ms", 1, 0 },         { "4294967295ms", 1, UINT32_MAX },
		{ "1193h", 1, 4294800000u },
		{ "5", 0, 0 },           { "", 0, 0 },               { "-1s", 0, 0 },
		{ "1.5s", 0, 0 },        { "5 s", 0, 0 },            { "1d", 0, 0 },
		{ "s", 0, 0 },           { "ms", 0, 0 },             { "5S", 0, 0 },
		{ "5sec", 0, 0 },        { "1m30s", 0, 0 },          { "00", 1, 0 },
		{ "4294967296ms", 0, 0 }, { "4294968s", 0, 0 },      { "1194h", 0, 0 },
		{ "99999999999999999999s", 0, 0 },
	};

	for (size_t i = 0; i < NELEM(rows); i++) {
		uint32_t v = 12345;
		int rc = config_parse_duration(rows[i].in, &v);

		unit_case("duration '%s'", rows[i].in);
		CHECKF((rc == 0) == rows[i].ok, "rc %d", rc);
		if (rows[i].ok)
			CHECKF(v == rows[i].want, "got %u, want %u", v, rows[i].want);
	}
}

static void
test_env(void)
{
	static const struct { const char *in, *want, *err; } rows[] = {
		{ "plain", "plain", NULL },
		{ "", "", NULL },
		{ "${SLUICE_T_A}", "alpha", NULL },
		{ "x${SLUICE_T_A}y${SLUICE_T_A}", "xalphayalpha", NULL },
		{ "${SLUICE_T_UNSET}", "", NULL },
		{ "<${SLUICE_T_UNSET}>", "<>", NULL },
		{ "${SLUICE_T_UNSET:-def}", "def", NULL },
		{ "${SLUICE_T_EMPTY:-def}", "def", NULL },   /* :- also covers set-but-empty */
		{ "${SLUICE_T_A:-def}", "alpha", NULL },
		{ "${SLUICE_T_UNSET:-}", "", NULL },
		{ "${SLUICE_T_UNSET:-a:b/c d}", "a:b/c d", NULL },
		{ "${SLUICE_T_UNSET:-${SLUICE_T_A}}", "alpha", NULL },
		{ "${SLUICE_T_UNSET:-<${SLUICE_T_UNSET:-in}>}x", "<in>x", NULL },
		{ "${SLUICE_T_DOLLAR}", "${SLUICE_T_A}", NULL }, /* values are not expanded again */
		{ "$5 and $HOME $", "$5 and $HOME $", NULL },
		{ "a$", "a$", NULL },
		{ "$$", "$$", NULL },
		{ "${", NULL, "unterminated" },
		{ "x${SLUICE_T_A", NULL, "unterminated" },
		{ "${SLUICE_T_A:-abc", NULL, "unterminated" },
		{ "${SLUICE_T_A:", NULL, "unterminated" },
		{ "${SLUICE_T_UNSET:-${SLUICE_T_A}", NULL, "unterminated" },
		{ "${}", NULL, "bad variable name" },
		{ "${1X}", NULL, "bad variable name" },
		{ "${A B}", NULL, "only ${VAR} and ${VAR:-default}" },
		{ "${SLUICE_T_A:?x}", NULL, "only ${VAR} and ${VAR:-default}" },
		{ "${SLUICE_T_A-x}", NULL, "only ${VAR} and ${VAR:-default}" },
	};
	struct buf out;
	char err[128];

	setenv("SLUICE_T_A", "alpha", 1);
	setenv("SLUICE_T_EMPTY", "", 1);
	setenv("SLUICE_T_DOLLAR", "${SLUICE_T_A}", 1);
	unsetenv("SLUICE_T_UNSET");
	buf_init(&out, 4096);
	for (size_t i = 0; i < NELEM(rows); i++) {
		int rc;

		unit_case("env '%s'", rows[i].in);
		buf_reset(&out);
		err[0] = '\0';
		rc = config_expand_env(rows[i].in, &out, err, sizeof err);
		if (rows[i].want != NULL) {
			CHECKF(rc == 0, "rc %d, err '%s'", rc, err);
			CHECKF(out.len == strlen(rows[i].want) && (out.len == 0 || memcmp(out.data, rows[i].want, out.len) == 0),
			       "got '%.*s', want '%s'", (int)out.len, out.data ? out.data : "", rows[i].want);
		} else {
			CHECKF(rc == -1, "rc %d", rc);
			CHECKF(strstr(err, rows[i].err) != NULL, "err '%s', want '%s'", err, rows[i].err);
		}
	}
	buf_free(&out);
}

/* --listen goes through config_set_listen(); [server] listen through the same parser. */
static void
test_listen(void)
{
	static const struct { const char *in, *host; int port; } rows[] = {
		{ "127.0.0.1:8080", "127.0.0.1", 8080 },
		{ "0.0.0.0:80", "0.0.0.0", 80 },
		{ "[::1]:8080", "::1", 8080 },
		{ "[::]:9000", "::", 9000 },
		{ ":8080", "0.0.0.0", 8080 },
		{ "localhost:3000", "127.0.0.1", 3000 },
		{ "127.0.0.1:0", "127.0.0.1", 0 },
		{ "127.0.0.1:65535", "127.0.0.1", 65535 },
		{ "8080", NULL, 0 },            { "1.2.3.4", NULL, 0 },
		{ "1.2.3.4:", NULL, 0 },        { "1.2.3.4:65536", NULL, 0 },
		{ "1.2.3:80", NULL, 0 },        { "::1:8080", NULL, 0 },
		{ "[::1]8080", NULL, 0 },       { "[::1", NULL, 0 },
		{ "[1.2.3.4]:80", NULL, 0 },    { "host.example:80", NULL, 0 },
		{ "1.2.3.4:+80", NULL, 0 },     { "1.2.3.4:80x", NULL, 0 },
		{ "[]:80", NULL, 0 },           { "", NULL, 0 },
	};
	struct config *cfg = load("[server]\nlisten = 10.0.0.1:1\n");

	if (!CHECKF(cfg != NULL, "errors '%s'", err_text()))
		return;
	for (size_t i = 0; i < NELEM(rows); i++) {
		int rc;

		unit_case("listen '%s'", rows[i].in);
		buf_reset(&errs);
		rc = config_set_listen(cfg, rows[i].in, &errs);
		CHECKF((rc == 0) == (rows[i].host != NULL), "rc %d", rc);
		if (rows[i].host != NULL) {
			CHECKF(strcmp(cfg->server.host, rows[i].host) == 0, "host '%s'", cfg->server.host);
			CHECKF(cfg->server.port == rows[i].port, "port %d", cfg->server.port);
			CHECK(strcmp(cfg->server.listen, rows[i].in) == 0);
		} else {
			CHECKF(strstr(err_text(), "--listen: '") != NULL, "errors '%s'", err_text());
			CHECK(strcmp(cfg->server.host, "127.0.0.1") == 0); /* unchanged by a failure */
		}
	}
	config_free(cfg);
}

#define PROV "[provider.openai]\ntype = openai\n"

/* One row per error class: the config, the one error it must produce, with its line. */
static void
test_errors(void)
{
	static const struct { const char *name, *text, *want; } rows[] = {
		{ "unknown section", "[server]\nlisten = :8080\n[servre]\nmemory = 1M\n",
		  "t.ini:3: unknown section [servre]" },
		{ "unknown key", "[server]\nmemroy = 64M\n",
		  "t.ini:2: unknown key 'memroy' in [server] (did you mean 'memory'?)" },
		{ "unknown key, nothing close", PROV "colour = blue\n",
		  "t.ini:3: unknown key 'colour' in [provider.openai]\n" },
		{ "bad size", "[server]\n\nmemory = 64X\n",
		  "t.ini:3: memory: '64X' is not a size" },
		{ "size below minimum", "[server]\nmemory = 512K\n",
		  "t.ini:2: memory: '512K' is below the minimum, 1M" },
		{ "bad duration", "[server]\nheader_timeout = 10\n",
		  "t.ini:2: header_timeout: '10' is not a duration" },
		{ "duration below minimum", PROV "timeout_connect = 0\n",
		  "t.ini:3: timeout_connect: '0' is below the minimum, 1ms" },
		{ "bad integer", "[server]\nmax_connections = 10k\n",
		  "t.ini:2: max_connections: '10k' is not a whole number" },
		{ "integer above maximum", PROV "[model.m]\ntargets = openai/x\nretries = 11\n",
		  "t.ini:5: retries: '11' is above the maximum, 10" },
		{ "bad decimal", PROV "[price.openai/x]\ninput = -1\noutput = 1\n",
		  "t.ini:4: input: '-1' is not a non-negative decimal number" },
		{ "bad bool", PROV "[model.m]\ntargets = openai/x\ntools = maybe\n",
		  "t.ini:5: tools: 'maybe' is not true or false" },
		{ "bad type", "[provider.x]\ntype = openia\n",
		  "t.ini:2: type: 'openia' is not one of openai | anthropic | gemini | ollama | azure" },
		{ "bad policy", PROV "[route.r]\npolicy = fastest\ncandidates = openai/x\n",
		  "t.ini:4: policy: 'fastest' is not one of cost | speed | balanced" },
		{ "bad log_format", "[server]\nlog_format = xml\n",
		  "t.ini:2: log_format: 'xml' is not one of plain | json" },
		{ "unknown provider in targets", PROV "[model.m]\ntargets = openai/x, groq/y\n",
		  "t.ini:4: targets: unknown provider 'groq' in 'groq/y'" },
		{ "target not provider/model", PROV "[model.m]\ntargets = gpt-4o\n",
		  "t.ini:4: targets: 'gpt-4o' is not provider/model" },
		{ "empty targets", PROV "[model.m]\ntargets = ,\n",
		  "t.ini:4: targets: the list is empty" },
		{ "unknown provider in candidates", PROV "[route.r]\npolicy = cost\ncandidates = nope/x\n",
		  "t.ini:5: candidates: unknown provider 'nope' in 'nope/x'" },
		{ "duplicate key", PROV "[model.m]\ntargets = openai/x\nretries = 1\nretries = 2\n",
		  "t.ini:6: duplicate key 'retries' in [model.m] (first on line 5)" },
		{ "duplicate section", PROV "[server]\n[provider.openai]\ntype = openai\n",
		  "t.ini:4: duplicate section [provider.openai] (first on line 1)" },
		{ "missing type", "[provider.x]\napi_key = k\n",
		  "t.ini:1: [provider.x]: missing required key 'type'" },
		{ "missing targets", "[server]\n[model.m]\nretries = 1\n",
		  "t.ini:2: [model.m]: missing required key 'targets'" },
		{ "missing policy", PROV "[route.r]\ncandidates = openai/x\n",
		  "t.ini:3: [route.r]: missing required key 'policy'" },
		{ "missing candidates", "[route.r]\npolicy = speed\n",
		  "t.ini:1: [route.r]: missing required key 'candidates'" },
		{ "azure without base_url", "[provider.az]\ntype = azure\n",
		  "t.ini:1: [provider.az]: missing required key 'base_url' (required for type azure)" },
		{ "missing price output", PROV "[price.openai/x]\ninput = 1\n",
		  "t.ini:3: [price.openai/x]: missing required key 'output'" },
		{ "model/route name clash", PROV "[model.m]\ntargets = openai/x\n[route.m]\npolicy = cost\n",
		  "t.ini:5: [route.m]: a model and a route share this name (the other is on line 3)" },
		{ "bad listen", "[server]\nlisten = 1.2.3:80\n",
		  "t.ini:2: listen: '1.2.3:80' is not ADDR:PORT" },
		{ "key before any section", "memory = 1M\n[server]\n",
		  "t.ini:1: 'memory' comes before any [section]" },
		{ "unclosed section header", "[server]\n[provider.x\ntype = openai\nbogus = 1\n",
		  "t.ini:2: section header without its closing ']'" },
		{ "text after section header", "[server] junk\nmemory = 2M\n",
		  "t.ini:1: text after the section header" },
		{ "line without '='", "[server]\nlisten\n",
		  "t.ini:2: expected 'name = value'" },
		{ "unterminated ${", "[provider.x]\ntype = openai\napi_key = ${OPENAI\n",
		  "t.ini:3: api_key: unterminated '${'" },
		{ "control character from env", PROV "api_key = ${SLUICE_T_CTRL}\n",
		  "t.ini:3: api_key: the value holds a control character" },
		{ "unknown failure class", PROV "[model.m]\ntargets = openai/x\nfallback_on = 429, 418\n",
		  "t.ini:5: fallback_on: unknown failure class '418'" },
		{ "bad provider name", "[provider.Open_AI]\ntype = openai\n",
		  "t.ini:1: [provider.Open_AI]: a provider name is made of a-z" },
		{ "bad model name", "[model.a/b]\ntargets = x/y\n",
		  "t.ini:1: [model.a/b]: a name is made of" },
		{ "bad price name", "[price.openai]\ninput = 1\n",
		  "t.ini:1: [price.openai]: expected [price.PROVIDER/MODEL]" },
		{ "price for unknown provider", "[price.groq/x]\ninput = 1\noutput = 1\n",
		  "t.ini:1: [price.groq/x]: unknown provider 'groq'" },
		{ "bad base_url", "[provider.x]\ntype = openai\nbase_url = api.openai.com\n",
		  "t.ini:3: base_url: 'api.openai.com' is not an http:// or https:// URL" },
		{ "bad header", PROV "headers = X-A: 1; nocolon\n",
		  "t.ini:3: headers: 'nocolon' is not 'Name: value'" },
		{ "header list cut by ' ;'", PROV "headers = X-A: 1 ; X-B: 2\n",
		  "t.ini:3: headers: ' ;' starts a comment" },
		{ "missing ca_file", PROV "ca_file = /nonexistent/ca.pem\n",
		  "t.ini:3: ca_file: '/nonexistent/ca.pem': No such file" },
		{ "api_version on openai", PROV "api_version = 1\n",
		  "t.ini:3: api_version: only azure and anthropic providers take one" },
		{ "route key in a model", PROV "[model.m]\ntargets = openai/x\npolicy = cost\n",
		  "t.ini:5: unknown key 'policy' in [model.m]" },
		{ "model key in a route", PROV "[route.r]\npolicy = cost\ncandidates = openai/x\ntargets = openai/x\n",
		  "t.ini:6: unknown key 'targets' in [route.r]" },
		{ "backoff_base above backoff_max", PROV "[model.m]\ntargets = openai/x\nbackoff_base = 10s\n",
		  "t.ini:3: [model.m]: backoff_base is larger than backoff_max" },
		{ "balanced with zero weights",
		  PROV "[route.r]\npolicy = balanced\ncandidates = openai/x\nweight_cost = 0\nweight_speed = 0\n",
		  "t.ini:3: [route.r]: balanced needs weight_cost or weight_speed above 0" },
		{ "prior_tps zero", PROV "[route.r]\npolicy = speed\ncandidates = openai/x\nprior_tps = 0\n",
		  "t.ini:3: [route.r]: prior_tps must be above 0" },
		{ "size above maximum, in its unit", "[server]\nmax_header = 2M\n",
		  "t.ini:2: max_header: '2M' is above the maximum, 1M\n" },
		{ "whole number above maximum", "[server]\nmax_connections = 2000000\n",
		  "t.ini:2: max_connections: '2000000' is above the maximum, 1048576\n" },
		{ "hint only from keys in scope", PROV "[model.m]\ntargets = openai/x\ncandidate = openai/y\n",
		  "t.ini:5: unknown key 'candidate' in [model.m]\n" },
		{ "hint in a route", PROV "[route.r]\npolicy = cost\ncandidates = openai/x\npolcy = speed\n",
		  "t.ini:6: unknown key 'polcy' in [route.r] (did you mean 'policy'?)" },
		{ "route/model name clash", PROV "[route.m]\npolicy = cost\ncandidates = openai/x\n[model.m]\ntargets = openai/x\n",
		  "t.ini:6: [model.m]: a model and a route share this name (the other is on line 3)" },
		{ "duplicate [server]", "[server]\n[server]\n",
		  "t.ini:2: duplicate section [server] (first on line 1)" },
	};

	setenv("SLUICE_T_CTRL", "a\r\nX-Evil: 1", 1);
	for (size_t i = 0; i < NELEM(rows); i++) {
		struct config *cfg;

		unit_case("error: %s", rows[i].name);
		cfg = load(rows[i].text);
		CHECK(cfg == NULL);
		CHECKF(strstr(err_text(), rows[i].want) != NULL, "errors '%s', want '%s'", err_text(), rows[i].want);
		CHECKF(count_lines(err_text()) == 1, "want one error, got '%s'", err_text());
		config_free(cfg);
	}
}

static void
test_long_line(void)
{
	char *text = malloc(5000 + 64);

	unit_case("error: line too long");
	strcpy(text, "[provider.x]\ntype = openai\napi_key = ");
	memset(text + strlen(text), 'k', 5000);
	strcpy(text + strlen("[provider.x]\ntype = openai\napi_key = ") + 5000, "\n");
	CHECK(load(text) == NULL);
	CHECKF(strstr(err_text(), "t.ini:3: line longer than 4094 characters") != NULL, "errors '%s'", err_text());
	CHECKF(count_lines(err_text()) == 1, "errors '%s'", err_text());
	free(text);
}

static const char full_text[] =
	"; a full config\n"
	"[server]\n"
	"listen = [::1]:9090\n"
	"memory = 128M\n"
	"max_connections = 10\n"
	"max_request_body = 1M\n"
	"max_header = 8K\n"
	"header_timeout = 5s\n"
	"idle_timeout = 2m\n"
	"drain_timeout = 0\n"
	"stream_heartbeat = 0\n"
	"api_keys = key-one , key-two,,\n"
	"log_format = json\n"
	"breaker_failures = 3\n"
	"breaker_cooldown = 1h\n"
	"\n"
	"[provider.oai]\n"
	"type = openai\n"
	"api_key = ${SLUICE_T_KEY}   ; from the environment\n"
	"headers = X-A: 1;X-B: two words # a comment\n"
	"timeout_connect = 250ms\n"
	"timeout_first_byte = 30s\n"
	"timeout_idle = 15s\n"
	"timeout_total = 1h\n"
	"max_response_body = 2M\n"
	"default_max_tokens = 1000\n"
	"[provider.claude]\n"
	"type = anthropic\n"
	"  base_url = https://proxy.example/anthropic/   \n"
	"[provider.az]\n"
	"type = azure\n"
	"base_url = https://r.openai.azure.com\n"
	"[provider.local-1]\n"
	"type = ollama\n"
	"[provider.or]\n"
	"type = openai\n"
	"base_url = https://openrouter.ai/api/v1\n"
	"ca_file = ${SLUICE_T_UNSET}\n"
	"\n"
	"[model.gpt-4o-mini]\n"
	"targets = oai/gpt-4o-mini, claude/claude-3-5-haiku-latest, or/meta-llama/llama-3-8b\n"
	"retries = 2\n"
	"fallback_on = 429, 503, timeout_first_token\n"
	"deadline = 30s\n"
	"backoff_base = 100ms\n"
	"backoff_max = 1s\n"
	"tools = true\n"
	"images = no\n"
	"[route.fast]\n"
	"policy = balanced\n"
	"candidates = oai/gpt-4o-mini, local-1/llama3.1\n"
	"max_attempts = 5\n"
	"weight_cost = 0.25\n"
	"weight_speed = 0.75\n"
	"prior_ttft = 800ms\n"
	"prior_tps = 42.5\n"
	"[price.oai/gpt-4o-mini]\n"
	"input = 0.15\n"
	"output = .6\n"
	"[price.or/meta-llama/llama-3-8b]\n"
	"input = 0\n"
	"output = 0\n";

static void
check_full_server(const struct config *cfg)
{
	const struct cfg_server *s = &cfg->server;

	unit_case("full config: [server]");
	CHECK(strcmp(s->listen, "[::1]:9090") == 0);
	CHECK(strcmp(s->host, "::1") == 0 && s->port == 9090);
	CHECK(s->memory == 128u << 20 && s->max_connections == 10);
	CHECK(s->max_request_body == 1u << 20 && s->max_header == 8192);
	CHECK(s->header_timeout == 5000 && s->idle_timeout == 120000);
	CHECK(s->drain_timeout == 0 && s->stream_heartbeat == 0);
	CHECK(s->napi_keys == 2 && strcmp(s->api_keys[0], "key-one") == 0 && strcmp(s->api_keys[1], "key-two") == 0);
	CHECK(s->log_format == LOG_JSON);
	CHECK(s->breaker_failures == 3 && s->breaker_cooldown == 3600000);
}

static void
check_full_providers(const struct config *cfg)
{
	const struct cfg_provider *p = config_provider(cfg, "oai", 3);
	const struct cfg_provider *c = config_provider(cfg, "claude", 6);

	unit_case("full config: providers");
	CHECK(cfg->nproviders == 5);
	if (!CHECK(p != NULL && c != NULL))
		return;
	CHECK(p->type == PROVIDER_OPENAI && strcmp(p->base_url, "https://api.openai.com/v1") == 0);
	CHECK(strcmp(p->api_key, "sk-from-env") == 0);
	CHECK(p->nheaders == 2 && strcmp(p->headers[0], "X-A: 1") == 0 && strcmp(p->headers[1], "X-B: two words") == 0);
	CHECK(p->timeout_connect == 250 && p->timeout_first_byte == 30000);
	CHECK(p->timeout_idle == 15000 && p->timeout_total == 3600000);
	CHECK(p->max_response_body == 2u << 20 && p->default_max_tokens == 1000);
	CHECK(strcmp(p->api_version, "") == 0 && strcmp(p->ca_file, "") == 0 && p->line == 17);
	CHECK(c->type == PROVIDER_ANTHROPIC && strcmp(c->base_url, "https://proxy.example/anthropic") == 0);
	CHECK(strcmp(c->api_version, "2023-06-01") == 0 && strcmp(c->api_key, "") == 0);
	CHECK(c->timeout_connect == 5000 && c->timeout_total == 600000 && c->default_max_tokens == 4096);
	CHECK(c->nheaders == 0 && c->max_response_body == 8u << 20);
	CHECK(strcmp(config_provider(cfg, "az", 2)->api_version, "2024-10-21") == 0);
	CHECK(strcmp(config_provider(cfg, "local-1", 7)->base_url, "http://localhost:11434") == 0);
	CHECK(config_provider(cfg, "oai/gpt-4o-mini", 3) == p); /* a span of a longer string */
	CHECK(config_provider(cfg, "oa", 2) == NULL && config_provider(cfg, "oaix", 4) == NULL);
}

static void
check_full_chains(const struct config *cfg)
{
	const struct cfg_chain *m = config_model(cfg, "gpt-4o-mini", 11);
	const struct cfg_chain *r = config_route(cfg, "fast", 4);

	unit_case("full config: model and route");
	CHECK(cfg->nmodels == 1 && cfg->nroutes == 1);
	if (!CHECK(m != NULL && r != NULL))
		return;
	CHECK(!m->is_route && m->ntargets == 3 && m->line == 40);
	CHECK(strcmp(m->targets[0].provider->name, "oai") == 0 && strcmp(m->targets[0].model, "gpt-4o-mini") == 0);
	CHECK(strcmp(m->targets[1].provider->name, "claude") == 0);
	CHECK(strcmp(m->targets[2].provider->name, "or") == 0 && strcmp(m->targets[2].model, "meta-llama/llama-3-8b") == 0);
	CHECK(m->retries == 2 && m->deadline == 30000 && m->backoff_base == 100 && m->backoff_max == 1000);
	CHECK(m->fallback_on == ((1u << 6) | (1u << 9) | (1u << 3))); /* 429, 503, timeout_first_token */
	CHECK(m->tools == 1 && m->images == 0 && m->max_attempts == 0);
	CHECK(r->is_route && r->policy == POLICY_BALANCED && r->ntargets == 2);
	CHECK(r->targets[1].provider == config_provider(cfg, "local-1", 7));
	CHECK(r->max_attempts == 5 && r->weight_cost == 0.25 && r->weight_speed == 0.75);
	CHECK(r->prior_ttft == 800 && r->prior_tps == 42.5);
	CHECK(r->retries == 0 && r->fallback_on == 0 && r->deadline == 60000);
	CHECK(r->backoff_base == 250 && r->backoff_max == 5000 && r->tools == -1 && r->images == -1);
	CHECK(config_model(cfg, "fast", 4) == NULL && config_route(cfg, "gpt-4o-mini", 11) == NULL);
	CHECK(config_model(cfg, "gpt-4o", 6) == NULL);
}

static void
check_full_prices(const struct config *cfg)
{
	unit_case("full config: prices");
	if (!CHECK(cfg->nprices == 2))
		return;
	CHECK(strcmp(cfg->prices[0].target, "oai/gpt-4o-mini") == 0);
	CHECK(cfg->prices[0].input == 0.15 && cfg->prices[0].output == 0.6);
	CHECK(strcmp(cfg->prices[1].target, "or/meta-llama/llama-3-8b") == 0 && cfg->prices[1].output == 0);
}

static void
check_summary(const struct config *cfg)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	unit_case("summary");
	config_summary(cfg, f);
	fclose(f);
	CHECKF(strstr(text, "listen: [::1]:9090") != NULL, "%s", text);
	CHECKF(strstr(text, "https://proxy.example/anthropic") != NULL, "%s", text);
	CHECKF(strstr(text, "gpt-4o-mini") && strstr(text, "or/meta-llama/llama-3-8b"), "%s", text);
	CHECKF(strstr(text, "balanced") != NULL, "%s", text);
	CHECKF(strstr(text, "sk-from-env") == NULL && strstr(text, "key-one") == NULL, "a key leaked: %s", text);
	free(text);
}

static void
test_full(void)
{
	struct config *cfg;

	setenv("SLUICE_T_KEY", "sk-from-env", 1);
	unit_case("full config loads");
	cfg = load(full_text);
	CHECKF(cfg != NULL, "errors '%s'", err_text());
	if (cfg == NULL)
		return;
	CHECK(strcmp(cfg->source, "t.ini") == 0);
	check_full_server(cfg);
	check_full_providers(cfg);
	check_full_chains(cfg);
	check_full_prices(cfg);
	check_summary(cfg);
	config_free(cfg);
}

static void
test_defaults(void)
{
	struct config *cfg;
	const struct cfg_server *s;

	unit_case("empty config: defaults");
	cfg = load("");
	if (!CHECKF(cfg != NULL, "errors '%s'", err_text()))
		return;
	s = &cfg->server;
	CHECK(strcmp(s->listen, "127.0.0.1:8080") == 0 && strcmp(s->host, "127.0.0.1") == 0 && s->port == 8080);
	CHECK(s->memory == 64u << 20 && s->max_connections == 1024);
	CHECK(s->max_request_body == 8u << 20 && s->max_header == 16u << 10);
	CHECK(s->header_timeout == 10000 && s->idle_timeout == 60000 && s->drain_timeout == 30000);
	CHECK(s->stream_heartbeat == 10000 && s->napi_keys == 0 && s->log_format == LOG_PLAIN);
	CHECK(s->breaker_failures == 5 && s->breaker_cooldown == 30000);
	CHECK(cfg->nproviders == 0 && cfg->nmodels == 0 && cfg->nroutes == 0 && cfg->nprices == 0);
	config_free(cfg);
}

/* Shapes of text the parser takes: each row sets memory to 2M somewhere in it. */
static void
test_syntax(void)
{
	static const struct { const char *name, *text; } rows[] = {
		{ "plain", "[server]\nmemory = 2M\n" },
		{ "no final newline", "[server]\nmemory = 2M" },
		{ "CRLF", "[server]\r\nmemory = 2M\r\n" },
		{ "UTF-8 BOM", "\xEF\xBB\xBF[server]\nmemory = 2M\n" },
		{ "indented key", "[server]\n    memory = 2M\n" },
		{ "colon form", "[server]\nmemory: 2M\n" },
		{ "no spaces", "[server]\nmemory=2M\n" },
		{ "';' and '#' comments", "; one\n# two\n[server] ; three\n  ; four\nmemory = 2M ; five\n" },
		{ "inline '#' comment", "[server]\nmemory = 2M # two megabytes\n" },
		{ "value from the environment", "[server]\nmemory = ${SLUICE_T_UNSET:-2M}\n" },
		{ "a [price.*] name longer than inih's 49 characters",
		  "[provider.openrouter]\ntype = openai\n"
		  "[price.openrouter/meta-llama/llama-3.1-70b-instruct-with-a-long-suffix]\n"
		  "input = 1\noutput = 2\n[server]\nmemory = 2M\n" },
	};

	for (size_t i = 0; i < NELEM(rows); i++) {
		struct config *cfg;

		unit_case("syntax: %s", rows[i].name);
		cfg = load(rows[i].text);
		if (!CHECKF(cfg != NULL, "errors '%s'", err_text()))
			continue;
		CHECKF(cfg->server.memory == 2u << 20, "memory %zu", cfg->server.memory);
		if (cfg->nprices == 1)
			CHECK(strcmp(cfg->prices[0].target,
			             "openrouter/meta-llama/llama-3.1-70b-instruct-with-a-long-suffix") == 0);
		config_free(cfg);
	}
}

/* Every error is reported, each with its line, sorted by line, however they were found. */
static void
test_multiple(void)
{
	static const char text[] =
		"[server]\n"                          /* 1 */
		"memory = lots\n"                     /* 2: bad size */
		"[model.m]\n"                         /* 3 */
		"targets = groq/x\n"                  /* 4: unknown provider */
		"[provider.p]\n"                      /* 5: missing type */
		"timeout_idle = 5\n"                  /* 6: bad duration */
		"tiemout_total = 1m\n"                /* 7: unknown key */
		"[nonsense]\n"                        /* 8: unknown section */
		"x = 1\n";                            /* 9: ignored: its section was reported */
	static const char *const want[] = {
		"t.ini:2: memory:", "t.ini:4: targets: unknown provider 'groq'",
		"t.ini:5: [provider.p]: missing required key 'type'", "t.ini:6: timeout_idle:",
		"t.ini:7: unknown key 'tiemout_total' in [provider.p] (did you mean 'timeout_total'?)", "t.ini:8: unknown section [nonsense]",
	};
	const char *at;

	unit_case("every error reported, in line order");
	CHECK(load(text) == NULL);
	CHECKF(count_lines(err_text()) == (int)NELEM(want), "errors '%s'", err_text());
	at = err_text();
	for (size_t i = 0; i < NELEM(want); i++) {
		const char *hit = strstr(at, want[i]);

		CHECKF(hit != NULL, "'%s' missing or out of order in '%s'", want[i], err_text());
		at = hit ? hit : at;
	}
}

/* Errors on one line keep the order they were found in; past 100, the rest are counted. */
static void
test_error_order_and_cap(void)
{
	static const char want[] = "t.ini:1: text after the section header\nt.ini:1: unknown section [servre]";
	char text[sizeof "[server]\n" + 150 * 2] = "[server]\n";

	unit_case("errors of one line in the order found");
	CHECK(load("[servre] junk\n") == NULL);
	CHECKF(strncmp(err_text(), want, sizeof want - 1) == 0, "errors '%s'", err_text());

	unit_case("past 100 errors, a count");
	for (int i = 0; i < 150; i++)
		strcat(text, "x\n");
	CHECK(load(text) == NULL);
	CHECKF(count_lines(err_text()) == 101, "%d lines", count_lines(err_text()));
	CHECKF(strstr(err_text(), "t.ini:101: expected 'name = value'") != NULL, "errors '%s'", err_text());
	CHECKF(strstr(err_text(), "\nt.ini: 50 more errors\n") != NULL, "errors '%s'", err_text());
}

struct saved_env {
	const char *name;
	char       *value; /* NULL: was unset */
};

static struct saved_env saved[] = {
	{ "SLUICE_LISTEN", NULL }, { "SLUICE_API_KEYS", NULL }, { "OPENAI_API_KEY", NULL },
	{ "ANTHROPIC_API_KEY", NULL }, { "GEMINI_API_KEY", NULL }, { "OLLAMA_HOST", NULL },
};

static void
env_save_and_clear(void)
{
	for (size_t i = 0; i < NELEM(saved); i++) {
		const char *v = getenv(saved[i].name);

		saved[i].value = v ? strdup(v) : NULL;
		unsetenv(saved[i].name);
	}
}

static void
env_restore(void)
{
	for (size_t i = 0; i < NELEM(saved); i++) {
		if (saved[i].value)
			setenv(saved[i].name, saved[i].value, 1);
		else
			unsetenv(saved[i].name);
		free(saved[i].value);
		saved[i].value = NULL;
	}
}

static void
test_embedded_default(void)
{
	static const struct { const char *host, *url; } ollama[] = {
		{ "myhost", "http://myhost:11434" },
		{ "0.0.0.0:11500", "http://0.0.0.0:11500" },
		{ "[::1]", "http://[::1]:11434" },
		{ "[::1]:9", "http://[::1]:9" },
		{ "https://ollama.example.com/", "https://ollama.example.com" },
	};
	struct config *cfg;
	const struct cfg_provider *p;

	env_save_and_clear();
	unit_case("default: empty environment");
	cfg = config_default(&errs);
	if (CHECKF(cfg != NULL, "errors '%s'", err_text())) {
		CHECK(strcmp(cfg->source, "embedded default") == 0);
		CHECK(strcmp(cfg->server.listen, "127.0.0.1:8080") == 0 && cfg->server.port == 8080);
		CHECK(cfg->nproviders == 0 && cfg->nmodels == 0 && cfg->server.napi_keys == 0);
	}
	config_free(cfg);

	unit_case("default: keys and listen from the environment");
	setenv("SLUICE_LISTEN", "0.0.0.0:9090", 1);
	setenv("SLUICE_API_KEYS", "a,b", 1);
	setenv("OPENAI_API_KEY", "sk-o", 1);
	setenv("GEMINI_API_KEY", "g-k", 1);
	setenv("ANTHROPIC_API_KEY", "", 1); /* set but empty: not enabled */
	cfg = config_default(&errs);
	if (CHECKF(cfg != NULL, "errors '%s'", err_text())) {
		CHECK(strcmp(cfg->server.host, "0.0.0.0") == 0 && cfg->server.port == 9090);
		CHECK(cfg->server.napi_keys == 2);
		CHECK(cfg->nproviders == 2 && config_provider(cfg, "anthropic", 9) == NULL);
		p = config_provider(cfg, "openai", 6);
		CHECK(p && p->type == PROVIDER_OPENAI && strcmp(p->api_key, "sk-o") == 0);
		CHECK(p && strcmp(p->base_url, "https://api.openai.com/v1") == 0);
		p = config_provider(cfg, "gemini", 6);
		CHECK(p && p->type == PROVIDER_GEMINI && strcmp(p->api_key, "g-k") == 0);
	}
	config_free(cfg);

	unit_case("default: a bad SLUICE_LISTEN is reported");
	setenv("SLUICE_LISTEN", "nonsense", 1);
	CHECK(config_default(&errs) == NULL);
	CHECKF(strstr(err_text(), "embedded default:2: listen: 'nonsense'") != NULL, "errors '%s'", err_text());
	unsetenv("SLUICE_LISTEN");

	for (size_t i = 0; i < NELEM(ollama); i++) {
		unit_case("default: OLLAMA_HOST=%s", ollama[i].host);
		setenv("OLLAMA_HOST", ollama[i].host, 1);
		buf_reset(&errs);
		cfg = config_default(&errs);
		p = cfg ? config_provider(cfg, "ollama", 6) : NULL;
		CHECKF(p != NULL, "errors '%s'", err_text());
		CHECKF(p && p->type == PROVIDER_OLLAMA && strcmp(p->base_url, ollama[i].url) == 0,
		       "base_url '%s'", p ? p->base_url : "");
		config_free(cfg);
	}
	env_restore();
}

static void
test_files(void)
{
	struct config *cfg;

	unit_case("conf/sluice.ini passes");
	env_save_and_clear(); /* the example must pass without any of them */
	buf_reset(&errs);
	cfg = config_load_file("conf/sluice.ini", &errs);
	CHECKF(cfg != NULL, "errors '%s'", err_text());
	if (cfg != NULL) {
		CHECK(strcmp(cfg->source, "conf/sluice.ini") == 0);
		CHECK(cfg->nproviders == 7 && cfg->nmodels == 2 && cfg->nroutes == 3 && cfg->nprices == 4);
		CHECK(config_route(cfg, "cheap", 5) != NULL && config_model(cfg, "llama", 5) != NULL);
	}
	config_free(cfg);
	env_restore();

	unit_case("a missing file");
	buf_reset(&errs);
	CHECK(config_load_file("/nonexistent/sluice.ini", &errs) == NULL);
	CHECKF(strstr(err_text(), "/nonexistent/sluice.ini: No such file") != NULL, "errors '%s'", err_text());
}

/* The full config mutated at random (lines dropped, repeated or swapped, values replaced by
 * junk, bytes changed), 3,000 times: each loads, or fails with every message naming the file;
 * nothing crashes (ASan, in the san flavour, watches the reads and the frees). */
static void
test_mutated(void)
{
	static const char *const junk[] = { "", "-1", "0", "99999999999999999999", "1e400", "nan", "0x10", "${", "${X",
		"${SLUICE_T_UNSET}", "[", "]", "=", ";", " , , ", "a/b/c/d", "oai/", "/x", "\xff\xfe", "1h1h", "3s5",
		"openai", "gemini", "true", "[model.x]", "http://", "ftp://x" };
	uint64_t r = 0x6A09E667F3BCC908ull;
	char *text = malloc(2 * sizeof full_text + 4096), *lines[128];
	int bad = 0, loaded = 0, refused = 0;

	unit_case("config: the full config mutated 3,000 ways loads or names its file in every error");
	if (text == NULL)
		abort();
	for (int k = 0; k < 3000 && !bad; k++) {
		char *copy = strdup(full_text), *save = NULL;
		int n = 0;
		struct config *cfg;

		if (copy == NULL)
			abort();
		for (char *l = strtok_r(copy, "\n", &save); l != NULL && n < 128; l = strtok_r(NULL, "\n", &save))
			lines[n++] = l;
		text[0] = '\0';
		for (int m = 0; m < 1 + k % 3; m++) {
			int i = (int)((r = r * 6364136223846793005ull + 1442695040888963407ull) >> 33) % n, j = (int)(r >> 50) % n;
			char *t;

			switch (r >> 61) {
			case 0: lines[i] = ""; break;                         /* dropped */
			case 1: lines[i] = lines[j]; break;                   /* another line repeated */
			case 2: t = lines[i], lines[i] = lines[j], lines[j] = t; break;
			case 3: lines[i] = (char *)junk[(r >> 40) % NELEM(junk)]; break;
			default: break;                                       /* a value replaced, below */
			}
			if (r >> 61 >= 4 && strchr(lines[i], '=') != NULL) {
				static char lv[8][256];

				snprintf(lv[m], sizeof lv[m], "%.*s= %s", (int)(strchr(lines[i], '=') - lines[i]), lines[i],
				    junk[(r >> 40) % NELEM(junk)]);
				lines[i] = lv[m];
			}
		}
		for (int i = 0; i < n; i++) {
			strcat(text, lines[i]);
			strcat(text, "\n");
		}
		if ((cfg = load(text)) != NULL) {
			FILE *null = fopen("/dev/null", "w");

			loaded++;
			if (null != NULL) {
				config_summary(cfg, null);
				fclose(null);
			}
			config_free(cfg);
		} else if (refused++, errs.len == 0 || strncmp(err_text(), "t.ini:", 6) != 0) {
			bad = !CHECKF(0, "mutation %d: no error, or one not naming the file: '%s'\n%s", k, err_text(), text);
		} else {
			for (const char *e = err_text(); (e = strchr(e, '\n')) != NULL && e[1] != '\0'; e++)
				if (strncmp(e + 1, "t.ini:", 6) != 0 && strncmp(e + 1, "  ", 2) != 0) {
					bad = !CHECKF(0, "mutation %d: an error not naming the file: '%s'", k, err_text());
					break;
				}
		}
		free(copy);
	}
	free(text);
	CHECKF(bad || (loaded > 100 && refused > 100), "%d loaded, %d refused: the mutations should give both", loaded, refused);
}

void
suite_config(void)
{
	char err[128];
	int mine = mem_init(8u << 20, err, sizeof err) == 0; /* errs and expand_env's out are bufs */

	buf_init(&errs, 1u << 16);
	test_sizes();
	test_durations();
	test_env();
	test_listen();
	test_errors();
	test_long_line();
	test_full();
	test_defaults();
	test_syntax();
	test_multiple();
	test_error_order_and_cap();
	test_embedded_default();
	test_files();
	test_mutated();
	buf_free(&errs);
	if (mine)
		mem_shutdown();
}
