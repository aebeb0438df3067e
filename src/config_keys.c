/*
 * config_keys.c — every key the config accepts. One table per section kind gives each key its
 * setter, its field and its bounds; a setter parses the value (config_value.c), stores it and
 * reports its own error at the key's line. Beside the tables: each section's defaults, and
 * keys_finalize(), the rules that look at several keys at once (required keys, defaults that
 * depend on the provider's type, backoff_base <= backoff_max). config.c finds the section and
 * the key; it never needs to know what a key holds.
 */
#include <ctype.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include "config_int.h"

/* The lists below end with NULL (value_name) and are indexed by their enum (sluice.h). */
const char *const provider_type_names[] = { "openai", "anthropic", "gemini", "ollama", "azure", NULL };
const char *const policy_names[] = { "cost", "speed", "balanced", NULL };
static const char *const log_names[] = { "plain", "json", NULL };

/* The names fallback_on uses for the failure classes. */
static const char *const fail_names[FAIL_NCLASSES + 1] = {
	[FAIL_CONNECT] = "connect",     [FAIL_TLS] = "tls",
	[FAIL_TIMEOUT_HEAD] = "timeout_head", [FAIL_TIMEOUT_FIRST_TOKEN] = "timeout_first_token",
	[FAIL_408] = "408", [FAIL_409] = "409", [FAIL_429] = "429", [FAIL_500] = "500",
	[FAIL_502] = "502", [FAIL_503] = "503", [FAIL_504] = "504", [FAIL_529] = "529",
	[FAIL_AUTH] = "auth", [FAIL_MALFORMED] = "malformed", [FAIL_CLOSED] = "closed",
};

/* What a provider's type gives it when base_url or api_version is not set (both tables reach
 * PROVIDER_AZURE, the last type). */
static const char *const default_urls[] = {
	[PROVIDER_OPENAI] = "https://api.openai.com/v1",
	[PROVIDER_ANTHROPIC] = "https://api.anthropic.com",
	[PROVIDER_GEMINI] = "https://generativelanguage.googleapis.com/v1beta",
	[PROVIDER_OLLAMA] = "http://localhost:11434",
	[PROVIDER_AZURE] = NULL, /* every Azure resource has its own: required */
};
static const char *const default_api_versions[] = {
	[PROVIDER_ANTHROPIC] = "2023-06-01", /* the anthropic-version header */
	[PROVIDER_AZURE] = "2024-10-21",     /* others take none */
};

/* ---- setters: one per kind of value; each reports its own error ---------------------------- */

struct key;
typedef void setter(struct parser *p, const struct key *k, void *obj, const char *v);

struct key {
	const char *name;
	setter     *set;
	size_t      off;       /* the field in the section's struct */
	uint64_t    min, max;  /* for sizes, durations and whole numbers */
	unsigned    scope;     /* chain keys: SCOPE_MODEL, SCOPE_ROUTE or both */
};
enum { SCOPE_MODEL = 1, SCOPE_ROUTE = 2, SCOPE_BOTH = 3 };

#define FIELD(obj, k, T) ((T *)(void *)((char *)(obj) + (k)->off))

static void
bad_value(struct parser *p, const struct key *k, const char *v, const char *what)
{
	perr(p, p->line, "%s: '%s' is not %s", k->name, v, what);
}

/* Is v within the key's bounds? If not, reports the bound, written by fmt as the key's values
 * are: "1M", "1ms", "100". */
static int
in_range(struct parser *p, const struct key *k, uint64_t v, const char *text, value_fmt *fmt)
{
	char b[32];

	if (v >= k->min && v <= k->max)
		return 1;
	perr(p, p->line, "%s: '%s' is %s, %s", k->name, text, v < k->min ? "below the minimum"
	     : "above the maximum", fmt(b, sizeof b, v < k->min ? k->min : k->max));
	return 0;
}

static void
set_string(struct parser *p, const struct key *k, void *obj, const char *v)
{
	*FIELD(obj, k, const char *) = p_strdup(p, v);
}

static void
set_size(struct parser *p, const struct key *k, void *obj, const char *v)
{
	size_t n;

	if (config_parse_size(v, &n) < 0)
		bad_value(p, k, v, "a size (a whole number with an optional K, M or G)");
	else if (in_range(p, k, n, v, value_fmt_size))
		*FIELD(obj, k, size_t) = n;
}

static void
set_duration(struct parser *p, const struct key *k, void *obj, const char *v)
{
	uint32_t ms;

	if (config_parse_duration(v, &ms) < 0)
		bad_value(p, k, v, "a duration (a whole number with ms, s, m or h)");
	else if (in_range(p, k, ms, v, value_fmt_ms))
		*FIELD(obj, k, uint32_t) = ms;
}

static void
set_int(struct parser *p, const struct key *k, void *obj, const char *v)
{
	uint64_t n;

	if (value_uint(v, &n) < 0)
		bad_value(p, k, v, "a whole number");
	else if (in_range(p, k, n, v, value_fmt_uint))
		*FIELD(obj, k, int) = (int)n;
}

static void
set_decimal(struct parser *p, const struct key *k, void *obj, const char *v)
{
	if (value_decimal(v, FIELD(obj, k, double)) < 0)
		bad_value(p, k, v, "a non-negative decimal number");
}

static void
set_bool(struct parser *p, const struct key *k, void *obj, const char *v)
{
	if (value_bool(v, FIELD(obj, k, int)) < 0)
		bad_value(p, k, v, "true or false");
}

/* The index of v in names, or -1 and an error listing them. */
static int
pick(struct parser *p, const struct key *k, const char *const *names, const char *v)
{
	int i = value_name(names, v);
	char list[128] = "one of";

	if (i >= 0)
		return i;
	for (size_t j = 0; names[j] != NULL; j++)
		snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", j ? " | " : " ", names[j]);
	bad_value(p, k, v, list);
	return -1;
}

static void
set_type(struct parser *p, const struct key *k, void *obj, const char *v)
{
	int i = pick(p, k, provider_type_names, v);

	if (i >= 0)
		((struct cfg_provider *)obj)->type = (enum provider_type)i;
}

static void
set_policy(struct parser *p, const struct key *k, void *obj, const char *v)
{
	int i = pick(p, k, policy_names, v);

	if (i >= 0)
		((struct cfg_chain *)obj)->policy = (enum route_policy)i;
}

static void
set_log_format(struct parser *p, const struct key *k, void *obj, const char *v)
{
	int i = pick(p, k, log_names, v);

	if (i >= 0)
		((struct cfg_server *)obj)->log_format = (enum log_format)i;
}

static void
set_listen(struct parser *p, const struct key *k, void *obj, const char *v)
{
	struct cfg_server *s = obj;

	if (value_listen(v, s->host, sizeof s->host, &s->port) < 0)
		bad_value(p, k, v, LISTEN_FORMS);
	else
		s->listen = p_strdup(p, v);
}

static void
set_url(struct parser *p, const struct key *k, void *obj, const char *v)
{
	size_t n = strlen(v);

	if (strncmp(v, "http://", 7) != 0 && strncmp(v, "https://", 8) != 0) {
		bad_value(p, k, v, "an http:// or https:// URL");
		return;
	}
	while (n > 0 && v[n - 1] == '/') /* adapters append "/chat/completions" and the like */
		n--;
	*FIELD(obj, k, const char *) = p_strndup(p, v, n);
}

/*
 * Split v at sep into trimmed, non-empty items (empty ones are skipped, so a trailing comma is
 * harmless). Returns the count; items is an array in storage.
 */
static int
split_list(struct parser *p, const char *v, char sep, const char ***items)
{
	int n = 1, count = 0;

	for (const char *c = v; *c; c++)
		n += *c == sep;
	*items = p_alloc(p, (size_t)n * sizeof **items);
	while (*v) {
		const char *end = strchr(v, sep), *b = v, *e;

		if (end == NULL)
			end = v + strlen(v);
		e = end;
		while (b < e && isspace((unsigned char)*b))
			b++;
		while (e > b && isspace((unsigned char)e[-1]))
			e--;
		if (e > b)
			(*items)[count++] = p_strndup(p, b, (size_t)(e - b));
		v = *end ? end + 1 : end;
	}
	return count;
}

static void
set_api_keys(struct parser *p, const struct key *k, void *obj, const char *v)
{
	struct cfg_server *s = obj;

	s->napi_keys = split_list(p, v, ',', &s->api_keys);
}

/* Does the current key's raw line hold " ;" — an inline comment inih cut off, maybe in the
 * middle of a list? */
static int
line_has_semicolon_comment(const struct parser *p)
{
	const char *s = p->text;
	int line = p->line;
	size_t n;

	while (--line > 0 && (s = strchr(s, '\n')) != NULL)
		s++;
	n = s ? strcspn(s, "\n") : 0;
	for (size_t i = 1; i < n; i++)
		if (s[i] == ';' && isspace((unsigned char)s[i - 1]))
			return 1;
	return 0;
}

/* HTTP's token characters, for header names. */
#define TOKEN_CHARS "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

static void
set_headers(struct parser *p, const struct key *k, void *obj, const char *v)
{
	struct cfg_provider *pr = obj;

	if (line_has_semicolon_comment(p)) {
		perr(p, p->line, "headers: ' ;' starts a comment, cutting the list short: separate headers "
		     "with ';' and no space before it (comment with '#')");
		return;
	}
	pr->nheaders = split_list(p, v, ';', &pr->headers);
	for (int i = 0; i < pr->nheaders; i++) {
		const char *h = pr->headers[i], *colon = strchr(h, ':');

		if (colon == NULL || colon == h || strspn(h, TOKEN_CHARS) != (size_t)(colon - h))
			bad_value(p, k, h, "'Name: value'");
	}
}

static void
parse_target(struct parser *p, const struct key *k, const char *item, struct cfg_target *t)
{
	int n = value_target(item);

	if (n < 0) {
		bad_value(p, k, item, "provider/model");
		return;
	}
	t->provider = config_provider(p->cfg, item, (size_t)n);
	if (t->provider == NULL)
		perr(p, p->line, "%s: unknown provider '%.*s' in '%s'", k->name, n, item, item);
	t->model = item + n + 1;
}

static void
set_targets(struct parser *p, const struct key *k, void *obj, const char *v)
{
	struct cfg_chain *c = obj;
	const char **items;
	int n = split_list(p, v, ',', &items);

	if (n == 0) {
		perr(p, p->line, "%s: the list is empty", k->name);
		return;
	}
	c->targets = p_alloc(p, (size_t)n * sizeof *c->targets);
	for (int i = 0; i < n; i++)
		parse_target(p, k, items[i], &c->targets[i]);
	c->ntargets = n;
}

static void
set_fallback_on(struct parser *p, const struct key *k, void *obj, const char *v)
{
	struct cfg_chain *c = obj;
	const char **items;
	int n = split_list(p, v, ',', &items);

	for (int i = 0; i < n; i++) {
		int f = value_name(fail_names, items[i]);

		if (f < 0)
			perr(p, p->line, "fallback_on: unknown failure class '%s'", items[i]);
		else
			c->fallback_on |= 1u << f;
	}
}

/* ---- key tables ---------------------------------------------------------------------------- */

#define NOMAX UINT64_MAX

#define S(name, set, min, max) { #name, set, offsetof(struct cfg_server, name), min, max, 0 }
static const struct key server_keys[] = {
	S(listen,           set_listen,     0, 0),
	S(memory,           set_size,       1u << 20, NOMAX),
	S(max_connections,  set_int,        1, 1u << 20),
	S(max_request_body, set_size,       1, NOMAX),
	S(max_header,       set_size,       1u << 10, 1u << 20),
	S(header_timeout,   set_duration,   1, NOMAX),
	S(idle_timeout,     set_duration,   1, NOMAX),
	S(drain_timeout,    set_duration,   0, NOMAX),
	S(stream_heartbeat, set_duration,   0, NOMAX), /* 0 = off */
	S(api_keys,         set_api_keys,   0, 0),
	S(log_format,       set_log_format, 0, 0),
	S(breaker_failures, set_int,        1, 1000),
	S(breaker_cooldown, set_duration,   1, NOMAX),
};
#undef S

#define P(name, set, min, max) { #name, set, offsetof(struct cfg_provider, name), min, max, 0 }
static const struct key provider_keys[] = {
	P(type,               set_type,     0, 0),
	P(base_url,           set_url,      0, 0),
	P(api_key,            set_string,   0, 0),
	P(api_version,        set_string,   0, 0),
	P(ca_file,            set_string,   0, 0),
	P(headers,            set_headers,  0, 0),
	P(timeout_connect,    set_duration, 1, NOMAX),
	P(timeout_first_byte, set_duration, 1, NOMAX),
	P(timeout_idle,       set_duration, 1, NOMAX),
	P(timeout_total,      set_duration, 1, NOMAX),
	P(max_response_body,  set_size,     1u << 10, NOMAX),
	P(default_max_tokens, set_int,      1, 10000000),
};
#undef P

/* [model.NAME] and [route.NAME] share one table; scope says which of them takes a key. */
#define C(name, set, field, min, max, scope) \
	{ #name, set, offsetof(struct cfg_chain, field), min, max, scope }
static const struct key chain_keys[] = {
	C(targets,      set_targets,     targets,      0, 0,     SCOPE_MODEL),
	C(candidates,   set_targets,     targets,      0, 0,     SCOPE_ROUTE),
	C(policy,       set_policy,      policy,       0, 0,     SCOPE_ROUTE),
	C(max_attempts, set_int,         max_attempts, 1, 100,   SCOPE_ROUTE),
	C(weight_cost,  set_decimal,     weight_cost,  0, 0,     SCOPE_ROUTE),
	C(weight_speed, set_decimal,     weight_speed, 0, 0,     SCOPE_ROUTE),
	C(prior_ttft,   set_duration,    prior_ttft,   1, NOMAX, SCOPE_ROUTE),
	C(prior_tps,    set_decimal,     prior_tps,    0, 0,     SCOPE_ROUTE),
	C(retries,      set_int,         retries,      0, 10,    SCOPE_BOTH),
	C(fallback_on,  set_fallback_on, fallback_on,  0, 0,     SCOPE_BOTH),
	C(deadline,     set_duration,    deadline,     1, NOMAX, SCOPE_BOTH),
	C(backoff_base, set_duration,    backoff_base, 0, NOMAX, SCOPE_BOTH),
	C(backoff_max,  set_duration,    backoff_max,  0, NOMAX, SCOPE_BOTH),
	C(tools,        set_bool,        tools,        0, 0,     SCOPE_BOTH),
	C(images,       set_bool,        images,       0, 0,     SCOPE_BOTH),
};
#undef C

static const struct key price_keys[] = {
	{ "input",  set_decimal, offsetof(struct cfg_price, input),  0, 0, 0 },
	{ "output", set_decimal, offsetof(struct cfg_price, output), 0, 0, 0 },
};

_Static_assert(NELEM(server_keys) <= KEYS_MAX && NELEM(provider_keys) <= KEYS_MAX &&
               NELEM(chain_keys) <= KEYS_MAX && NELEM(price_keys) <= KEYS_MAX,
               "section.key_line has a slot per key");

static const struct table {
	const struct key *keys;
	size_t            n;
	unsigned          scope; /* 0: every key of the table */
} tables[] = {
	[SEC_SERVER]   = { server_keys,   NELEM(server_keys),   0 },
	[SEC_PROVIDER] = { provider_keys, NELEM(provider_keys), 0 },
	[SEC_MODEL]    = { chain_keys,    NELEM(chain_keys),    SCOPE_MODEL },
	[SEC_ROUTE]    = { chain_keys,    NELEM(chain_keys),    SCOPE_ROUTE },
	[SEC_PRICE]    = { price_keys,    NELEM(price_keys),    0 },
};

static int
in_scope(const struct table *t, size_t i)
{
	return t->scope == 0 || (t->keys[i].scope & t->scope);
}

int
keys_find(enum sec_kind kind, const char *name)
{
	const struct table *t = &tables[kind];

	for (size_t i = 0; i < t->n; i++)
		if (strcmp(t->keys[i].name, name) == 0 && in_scope(t, i))
			return (int)i;
	return -1;
}

void
keys_set(struct parser *p, struct section *s, int i, const char *value)
{
	const struct key *k = &tables[s->kind].keys[i];

	k->set(p, k, s->obj, value);
}

/* Levenshtein distance, for "did you mean" hints; 99 for names too long to bother with. */
static size_t
edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b), row[64];

	if (la >= NELEM(row) || lb >= NELEM(row))
		return 99;
	for (size_t j = 0; j <= lb; j++)
		row[j] = j;
	for (size_t i = 1; i <= la; i++) {
		size_t diag = row[0];

		row[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			size_t up = row[j], best = diag + (a[i - 1] != b[j - 1]);

			best = up + 1 < best ? up + 1 : best;
			best = row[j - 1] + 1 < best ? row[j - 1] + 1 : best;
			diag = up;
			row[j] = best;
		}
	}
	return row[lb];
}

/* The key (in scope) closest to a misspelt name, or NULL if none is close. */
const char *
keys_closest(enum sec_kind kind, const char *name)
{
	const struct table *t = &tables[kind];
	const char *best = NULL;
	size_t bestd = 3; /* up to two edits: "retires", "memroy", "fallback" */

	for (size_t i = 0; i < t->n; i++) {
		size_t d = edit_distance(t->keys[i].name, name);

		if (d < bestd && in_scope(t, i))
			best = t->keys[i].name, bestd = d;
	}
	return best;
}

/* ---- defaults: every struct starts as one of these; keys overwrite them ------------------- */

struct cfg_server
keys_server(void)
{
	return (struct cfg_server){
		.listen = "127.0.0.1:8080", .host = "127.0.0.1", .port = 8080,
		.memory = 64u << 20, .max_connections = 1024, .max_request_body = 8u << 20,
		.max_header = 16u << 10, .header_timeout = 10000, .idle_timeout = 60000,
		.drain_timeout = 30000, .stream_heartbeat = 10000, .log_format = LOG_PLAIN,
		.breaker_failures = 5, .breaker_cooldown = 30000,
	};
}

struct cfg_provider
keys_provider(const char *name, int line)
{
	return (struct cfg_provider){
		.name = name, .line = line, .base_url = "", .api_key = "", .api_version = "", .ca_file = "",
		.timeout_connect = 5000, .timeout_first_byte = 60000, .timeout_idle = 60000,
		.timeout_total = 600000, .max_response_body = 8u << 20, .default_max_tokens = 4096,
	};
}

struct cfg_chain
keys_chain(const char *name, int is_route, int line)
{
	return (struct cfg_chain){
		.name = name, .line = line, .is_route = is_route,
		.max_attempts = is_route ? 3 : 0, /* a model's chain is its targets × (1 + retries) */
		.deadline = 60000, .backoff_base = 250, .backoff_max = 5000, .weight_cost = 0.5,
		.weight_speed = 0.5, .prior_ttft = 1000, .prior_tps = 50,
		.tools = -1, .images = -1, /* not declared */
	};
}

/* ---- the checks across keys ---------------------------------------------------------------- */

/* The line key was set on in section s, or 0. */
static int
key_line(const struct section *s, const char *key)
{
	return s->key_line[keys_find(s->kind, key)];
}

static int
require(struct parser *p, const struct section *s, const char *key)
{
	if (key_line(s, key) != 0)
		return 1;
	perr(p, s->line, "[%s]: missing required key '%s'", s->name, key);
	return 0;
}

static void
finalize_provider(struct parser *p, const struct section *s)
{
	struct cfg_provider *pr = s->obj;
	const char *version;
	int version_line = key_line(s, "api_version");

	if (!require(p, s, "type"))
		return;
	if (key_line(s, "base_url") == 0) {
		if (default_urls[pr->type] != NULL)
			pr->base_url = default_urls[pr->type];
		else
			perr(p, s->line, "[%s]: missing required key 'base_url' (required for type %s)",
			     s->name, provider_type_names[pr->type]);
	}
	version = default_api_versions[pr->type];
	if (version_line == 0 && version != NULL)
		pr->api_version = version;
	else if (version_line != 0 && version == NULL)
		perr(p, version_line, "api_version: only azure and anthropic providers take one");
	if (*pr->ca_file != '\0' && access(pr->ca_file, R_OK) != 0)
		perr(p, key_line(s, "ca_file"), "ca_file: '%s': %s", pr->ca_file, strerror(errno));
}

static void
finalize_chain(struct parser *p, const struct section *s)
{
	struct cfg_chain *c = s->obj;

	require(p, s, c->is_route ? "candidates" : "targets");
	if (c->is_route)
		require(p, s, "policy");
	if (c->backoff_base > c->backoff_max)
		perr(p, s->line, "[%s]: backoff_base is larger than backoff_max", s->name);
	if (c->is_route && c->policy == POLICY_BALANCED && c->weight_cost + c->weight_speed <= 0)
		perr(p, s->line, "[%s]: balanced needs weight_cost or weight_speed above 0", s->name);
	if (c->is_route && !(c->prior_tps > 0))
		perr(p, s->line, "[%s]: prior_tps must be above 0", s->name);
}

static void
finalize_price(struct parser *p, const struct section *s)
{
	const struct cfg_price *pc = s->obj;
	int n = value_target(pc->target); /* the section's name was checked: n >= 0 */

	if (config_provider(p->cfg, pc->target, (size_t)n) == NULL)
		perr(p, s->line, "[%s]: unknown provider '%.*s'", s->name, n, pc->target);
	require(p, s, "input");
	require(p, s, "output");
}

void
keys_finalize(struct parser *p, const struct section *s)
{
	if (s->kind == SEC_PROVIDER)
		finalize_provider(p, s);
	else if (s->kind == SEC_MODEL || s->kind == SEC_ROUTE)
		finalize_chain(p, s);
	else if (s->kind == SEC_PRICE)
		finalize_price(p, s);
}
