/*
 * config.c — loading the INI config (DESIGN.md §1), read with inih into an immutable struct
 * config. What each key accepts is config_keys.c's business, turning text into values
 * config_value.c's; this file walks the text and keeps the errors (config_int.h).
 *
 * A load runs in three passes over the text:
 *   1. prescan: our own walk over the lines finds every section header (with its full name —
 *      inih truncates section names to 49 characters and never reports a header to the
 *      handler) and every line inih would reject, so a duplicate or empty section, a long
 *      [price.provider/model] name and every syntax error are all visible. Each section is
 *      classified as it is found; then their structs are allocated with their defaults, so
 *      when keys arrive every provider is already known and a target can be resolved on the
 *      spot.
 *   2. inih: each "key = value" goes to on_pair(), which finds its section by line number,
 *      expands ${VAR}, and calls the key's setter.
 *   3. finalize: required keys, defaults that depend on other keys (base_url by type), and
 *      checks across keys (backoff_base <= backoff_max).
 * Every error is kept with its line, and all of them are reported sorted by line: a typo must
 * never hide the next error, nor silently disable a fallback.
 *
 * Memory: the config is loaded at start, before the memory arena exists (its size is in the
 * config), and again on SIGHUP; so this is the one place in sluice that uses plain malloc.
 * Every block is chained from cfg->storage and config_free() releases the chain. Running out
 * of memory mid-parse longjmps back to the entry point, which frees what was taken: no
 * allocation has to be checked where it is made.
 */
#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <stdlib.h>
#include <string.h>
#include "config_int.h"

#define MAX_ERRORS  100          /* errors printed; the rest are counted */
#define MAX_TEXT    (4u << 20)   /* a config file larger than this is a mistake */
#define MAX_LINE    (INI_MAX_LINE - 2) /* the longest line inih reads whole, with its '\n' and NUL */

/* ---- storage: malloc'd blocks chained from cfg->storage ---------------------------------- */

struct block {
	struct block *next;
	max_align_t   data[];
};

/* Chain an allocation of n zeroed bytes to cfg's storage; NULL only if malloc fails. */
static void *
storage_alloc(struct config *cfg, size_t n)
{
	struct block *b = calloc(1, sizeof *b + n);

	if (b == NULL)
		return NULL;
	b->next = cfg->storage;
	cfg->storage = b;
	return b->data;
}

void *
p_alloc(struct parser *p, size_t n)
{
	void *q = storage_alloc(p->cfg, n);

	if (q == NULL)
		longjmp(p->oom, 1);
	return q;
}

char *
p_strndup(struct parser *p, const char *s, size_t n)
{
	char *d = p_alloc(p, n + 1);

	memcpy(d, s, n);
	return d;
}

char *
p_strdup(struct parser *p, const char *s)
{
	return p_strndup(p, s, strlen(s));
}

/* The parser's own arrays (sections, errors) hold n; make room for one more. They grow at
 * powers of two, so a full array is one whose length is a power of two (or zero). */
static void *
p_grow(struct parser *p, void *array, int n, size_t size)
{
	void *q;

	if (n & (n - 1))
		return array;
	q = realloc(array, (size_t)(n ? 2 * n : 1) * size);
	if (q == NULL)
		longjmp(p->oom, 1);
	return q;
}

/* ---- errors -------------------------------------------------------------------------------- */

struct error {
	int   line;
	int   seq;   /* keeps errors of one line in the order they were found */
	char *msg;
};

void
perr(struct parser *p, int line, const char *fmt, ...)
{
	va_list ap;
	char msg[512];
	struct error *e;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	p->errs = p_grow(p, p->errs, p->nerrs, sizeof *p->errs);
	e = &p->errs[p->nerrs];
	e->msg = strdup(msg);
	if (e->msg == NULL)
		longjmp(p->oom, 1);
	e->line = line;
	e->seq = p->nerrs++;
}

static int
error_cmp(const void *a, const void *b)
{
	const struct error *x = a, *y = b;

	if (x->line != y->line)
		return x->line < y->line ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static void
errors_emit(struct parser *p, struct buf *out)
{
	const char *file = p->cfg->source;

	if (out == NULL || p->nerrs == 0)
		return;
	qsort(p->errs, (size_t)p->nerrs, sizeof *p->errs, error_cmp);
	for (int i = 0; i < p->nerrs && i < MAX_ERRORS; i++)
		buf_printf(out, "%s:%d: %s\n", file, p->errs[i].line, p->errs[i].msg);
	if (p->nerrs > MAX_ERRORS)
		buf_printf(out, "%s: %d more errors\n", file, p->nerrs - MAX_ERRORS);
}

/* ---- pass 1: prescan the lines, classifying each section as it comes ---------------------- */

#define LOWER_DIGITS "abcdefghijklmnopqrstuvwxyz0123456789"
#define UPPER        "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

/* Is s non-empty and made of chars only? */
static int
made_of(const char *s, const char *chars)
{
	return *s != '\0' && s[strspn(s, chars)] == '\0';
}

/* The kind a section's name gives it; *rest gets the name after the kind's prefix. */
static enum sec_kind
kind_of(const char *name, const char **rest)
{
	static const char *const prefixes[] = {
		[SEC_PROVIDER] = "provider.", [SEC_MODEL] = "model.", [SEC_ROUTE] = "route.",
		[SEC_PRICE] = "price.",
	};

	*rest = "";
	if (strcmp(name, "server") == 0)
		return SEC_SERVER;
	for (int k = SEC_PROVIDER; k <= SEC_PRICE; k++) {
		size_t n = strlen(prefixes[k]);

		if (strncmp(name, prefixes[k], n) == 0) {
			*rest = name + n;
			return (enum sec_kind)k;
		}
	}
	return SEC_BAD;
}

/* What is wrong with the section's name after its prefix, or NULL. Public model and route
 * names have no '/', which is how clients name provider/model. */
static const char *
name_problem(const struct section *s)
{
	switch (s->kind) {
	case SEC_PROVIDER:
		return made_of(s->rest, LOWER_DIGITS "_-") ? NULL
		       : "a provider name is made of a-z, 0-9, '_' and '-'";
	case SEC_MODEL:
	case SEC_ROUTE:
		return made_of(s->rest, LOWER_DIGITS UPPER "._-:@+") ? NULL
		       : "a name is made of letters, digits and . _ - : @ + (no '/')";
	case SEC_PRICE:
		return value_target(s->rest) >= 0 ? NULL : "expected [price.PROVIDER/MODEL]";
	default:
		return NULL;
	}
}

static int
is_chain(enum sec_kind kind)
{
	return kind == SEC_MODEL || kind == SEC_ROUTE;
}

/* The first earlier section that s clashes with: same name, or a model and a route alike. */
static const struct section *
earlier_twin(const struct parser *p, const struct section *s)
{
	for (const struct section *t = p->secs; t < s; t++)
		if (t->kind != SEC_BAD && (strcmp(t->name, s->name) == 0 ||
		    (is_chain(t->kind) && is_chain(s->kind) && strcmp(t->rest, s->rest) == 0)))
			return t;
	return NULL;
}

static void
classify(struct parser *p, struct section *s)
{
	const struct section *twin;
	const char *why;

	s->kind = kind_of(s->name, &s->rest);
	if (s->kind == SEC_BAD) {
		perr(p, s->line, "unknown section [%s] (expected server, provider.NAME, model.NAME, "
		     "route.NAME or price.PROVIDER/MODEL)", s->name);
	} else if ((why = name_problem(s)) != NULL) {
		perr(p, s->line, "[%s]: %s", s->name, why);
		s->kind = SEC_BAD;
	} else if ((twin = earlier_twin(p, s)) != NULL) {
		perr(p, s->line, strcmp(twin->name, s->name) == 0 ? "duplicate section [%s] (first on line %d)"
		     : "[%s]: a model and a route share this name (the other is on line %d)", s->name, twin->line);
		s->kind = SEC_BAD;
	}
}

/* A section of kind SEC_BAD until classified: a broken header's keys are skipped, not misfiled. */
static struct section *
add_section(struct parser *p, const char *name, size_t n, int line)
{
	struct section *s;

	p->secs = p_grow(p, p->secs, p->nsecs, sizeof *p->secs);
	s = &p->secs[p->nsecs++];
	memset(s, 0, sizeof *s);
	s->name = p_strndup(p, name, n);
	s->line = line;
	return s;
}

/* inih's rule: an inline comment is ';' or '#' after whitespace. The first of chars or of a
 * comment in s[0..n), or n. */
static size_t
find_or_comment(const char *s, size_t n, const char *chars)
{
	int was_space = 0;

	for (size_t i = 0; i < n; i++) {
		if (strchr(chars, s[i]) || (was_space && (s[i] == ';' || s[i] == '#')))
			return i;
		was_space = isspace((unsigned char)s[i]);
	}
	return n;
}

/* Nothing but blanks and maybe a comment (inih ignores whatever follows a section's ']'). */
static int
only_comment(const char *s, size_t n)
{
	while (n > 0 && isspace((unsigned char)*s))
		s++, n--;
	return n == 0 || *s == ';' || *s == '#';
}

/* One line, as inih will see it: comment, [section], or name = value; anything else is an error. */
static void
scan_line(struct parser *p, const char *s, size_t n, int line)
{
	size_t end;

	if (n > MAX_LINE) {
		perr(p, line, "line longer than %d characters", MAX_LINE);
		return;
	}
	if (line == 1 && n >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0)
		s += 3, n -= 3;
	while (n > 0 && isspace((unsigned char)*s))
		s++, n--;
	while (n > 0 && isspace((unsigned char)s[n - 1]))
		n--;
	if (n == 0 || *s == ';' || *s == '#')
		return;
	if (*s == '[') {
		end = 1 + find_or_comment(s + 1, n - 1, "]");
		if (end == n || s[end] != ']') {
			perr(p, line, "section header without its closing ']'");
			add_section(p, s + 1, n - 1, line);
			return;
		}
		if (!only_comment(s + end + 1, n - end - 1))
			perr(p, line, "text after the section header");
		classify(p, add_section(p, s + 1, end - 1, line));
		return;
	}
	end = find_or_comment(s, n, "=:");
	if (end == n || (s[end] != '=' && s[end] != ':'))
		perr(p, line, "expected 'name = value', a [section] or a comment");
}

static void
prescan(struct parser *p)
{
	const char *s = p->text;
	int line = 0;

	while (*s) {
		size_t n = strcspn(s, "\n");

		scan_line(p, s, n, ++line);
		s += n + (s[n] == '\n');
	}
}

/* Allocate each kind's array and point each section at its struct, with its defaults. */
static void
build_sections(struct parser *p)
{
	struct config *cfg = p->cfg;
	int count[SEC_PRICE + 1] = { 0 };

	for (int i = 0; i < p->nsecs; i++)
		count[p->secs[i].kind]++;
	cfg->providers = p_alloc(p, (size_t)count[SEC_PROVIDER] * sizeof *cfg->providers + 1);
	cfg->models = p_alloc(p, (size_t)count[SEC_MODEL] * sizeof *cfg->models + 1);
	cfg->routes = p_alloc(p, (size_t)count[SEC_ROUTE] * sizeof *cfg->routes + 1);
	cfg->prices = p_alloc(p, (size_t)count[SEC_PRICE] * sizeof *cfg->prices + 1);
	cfg->server = keys_server(); /* even without a [server] section */
	for (int i = 0; i < p->nsecs; i++) {
		struct section *s = &p->secs[i];
		struct cfg_provider *pr;
		struct cfg_chain *c;
		struct cfg_price *pc;

		switch (s->kind) {
		case SEC_SERVER:   s->obj = &cfg->server; break;
		case SEC_PROVIDER: s->obj = pr = &cfg->providers[cfg->nproviders++];
		                   *pr = keys_provider(s->rest, s->line); break;
		case SEC_MODEL:    s->obj = c = &cfg->models[cfg->nmodels++];
		                   *c = keys_chain(s->rest, 0, s->line); break;
		case SEC_ROUTE:    s->obj = c = &cfg->routes[cfg->nroutes++];
		                   *c = keys_chain(s->rest, 1, s->line); break;
		case SEC_PRICE:    s->obj = pc = &cfg->prices[cfg->nprices++];
		                   *pc = (struct cfg_price){ .target = s->rest, .line = s->line }; break;
		case SEC_BAD:      break;
		}
	}
}

/* ---- pass 2: the keys, through inih -------------------------------------------------------- */

/* The section that line belongs to: the last header above it. Lines arrive in order. */
static struct section *
section_at(struct parser *p, int line)
{
	while (p->cur + 1 < p->nsecs && p->secs[p->cur + 1].line < line)
		p->cur++;
	return p->cur >= 0 ? &p->secs[p->cur] : NULL;
}

/* Expand ${VAR} into p->value; control characters could split an HTTP header: refused. */
static int
expand_value(struct parser *p, const char *name, const char *raw)
{
	const char *err;

	if (value_expand(raw, &p->value, &err) < 0) {
		if (err == NULL)
			longjmp(p->oom, 1);
		perr(p, p->line, "%s: %s", name, err);
		return -1;
	}
	for (size_t i = 0; i < p->value.len; i++) {
		if ((unsigned char)p->value.p[i] < 0x20 || p->value.p[i] == 0x7f) {
			perr(p, p->line, "%s: the value holds a control character", name);
			return -1;
		}
	}
	return 0;
}

/* Errors are ours to report, so this always answers 1: inih's own failures then mean syntax,
 * which prescan saw. */
static int
on_pair(void *user, const char *section, const char *name, const char *value, int lineno)
{
	struct parser *p = user;
	struct section *s = section_at(p, lineno);
	const char *hint;
	int i;

	(void)section; /* inih's copy is truncated to 49 characters: ours is whole */
	p->line = lineno;
	if (s == NULL) {
		perr(p, lineno, "'%s' comes before any [section]", name);
		return 1;
	}
	if (s->kind == SEC_BAD)
		return 1; /* the section's own error says it all */
	i = keys_find(s->kind, name);
	if (i < 0 && (hint = keys_closest(s->kind, name)) != NULL)
		perr(p, lineno, "unknown key '%s' in [%s] (did you mean '%s'?)", name, s->name, hint);
	else if (i < 0)
		perr(p, lineno, "unknown key '%s' in [%s]", name, s->name);
	else if (s->key_line[i] != 0)
		perr(p, lineno, "duplicate key '%s' in [%s] (first on line %d)", name, s->name, s->key_line[i]);
	else {
		s->key_line[i] = lineno;
		if (expand_value(p, name, value) == 0)
			keys_set(p, s, i, p->value.p);
	}
	return 1;
}

/* ---- loading ------------------------------------------------------------------------------- */

static void
run_passes(struct parser *p)
{
	/* inih's settings are globals; config.c is its only user. No continuation lines: an indented
	 * line is a key like any other, so a duplicate key can never pass as a continuation. */
	static char comment_prefixes[] = ";#";

	ini_allow_multiline = false;
	ini_inline_comment_prefixes = comment_prefixes;
	prescan(p);
	build_sections(p);
	ini_parse_string(p->text, on_pair, p);
	for (int i = 0; i < p->nsecs; i++)
		keys_finalize(p, &p->secs[i]);
}

/*
 * setjmp lives here, apart from config_load_string(): the parser is changed after setjmp, and
 * objects local to the function that calls setjmp would be indeterminate after the longjmp.
 */
static int
parse_guarded(struct parser *p, const char *source)
{
	if (setjmp(p->oom) != 0)
		return -1;
	p->cfg->source = p_strdup(p, source);
	run_passes(p);
	return 0;
}

/* The one code path: files, strings and the embedded default all come through here. */
struct config *
config_load_string(const char *text, const char *name, struct buf *errs)
{
	struct parser p = { .text = text, .cur = -1 };
	int oom;

	p.cfg = calloc(1, sizeof *p.cfg);
	oom = p.cfg == NULL || parse_guarded(&p, name) < 0;
	if (!oom)
		errors_emit(&p, errs);
	else if (errs != NULL)
		buf_printf(errs, "%s: out of memory\n", name);
	for (int i = 0; i < p.nerrs; i++)
		free(p.errs[i].msg);
	free(p.errs);
	free(p.secs);
	free(p.value.p);
	if (oom || p.nerrs > 0) {
		config_free(p.cfg);
		return NULL;
	}
	return p.cfg;
}

/* The whole file, NUL-terminated, in a malloc'd string; NULL and a reason on failure. */
static char *
read_file(const char *path, const char **why)
{
	FILE *f = fopen(path, "rb");
	struct sb b = { 0 };
	char chunk[8192];
	size_t n;

	if (f == NULL)
		return *why = strerror(errno), NULL;
	*why = NULL;
	while (*why == NULL && (n = fread(chunk, 1, sizeof chunk, f)) > 0) {
		if (b.len + n > MAX_TEXT)
			*why = "larger than 4 MiB";
		else if (sb_append(&b, chunk, n) < 0)
			*why = "out of memory";
	}
	if (*why == NULL && ferror(f))
		*why = strerror(errno);
	fclose(f);
	if (*why == NULL && sb_append(&b, "", 0) < 0)
		*why = "out of memory";
	if (*why == NULL && strlen(b.p) != b.len)
		*why = "holds a NUL byte";
	if (*why != NULL) {
		free(b.p);
		return NULL;
	}
	return b.p;
}

struct config *
config_load_file(const char *path, struct buf *errs)
{
	const char *why;
	char *text = read_file(path, &why);
	struct config *cfg;

	if (text == NULL) {
		if (errs != NULL)
			buf_printf(errs, "%s: %s\n", path, why);
		return NULL;
	}
	cfg = config_load_string(text, path, errs);
	free(text);
	return cfg;
}

/*
 * OLLAMA_HOST as Ollama's own client reads it: a URL is taken as it is; "host" or "host:port"
 * without a scheme means http, and port 11434 when none is given.
 */
static int
ollama_text(struct sb *b, const char *host)
{
	const char *port = *host == '[' ? strstr(host, "]:") : strchr(host, ':');

	if (strstr(host, "://") != NULL)
		return sb_puts(b, "base_url = ${OLLAMA_HOST}\n");
	if (port == NULL)
		return sb_puts(b, "base_url = http://${OLLAMA_HOST}:11434\n");
	return sb_puts(b, "base_url = http://${OLLAMA_HOST}\n");
}

/*
 * The embedded default as INI text, read by the same parser as a file. Environment values
 * reach it as ${VAR} references, never pasted into the text, so no value can add a line.
 */
static int
default_text(struct sb *b)
{
	static const struct { const char *env, *name; } keyed[] = {
		{ "OPENAI_API_KEY", "openai" }, { "ANTHROPIC_API_KEY", "anthropic" },
		{ "GEMINI_API_KEY", "gemini" },
	};
	const char *ollama = getenv("OLLAMA_HOST");
	int rc = sb_puts(b, "[server]\nlisten = ${SLUICE_LISTEN:-127.0.0.1:8080}\n"
	                    "api_keys = ${SLUICE_API_KEYS}\n");

	for (size_t i = 0; i < NELEM(keyed); i++) {
		const char *v = getenv(keyed[i].env);
		char sec[160];

		if (v == NULL || *v == '\0')
			continue;
		snprintf(sec, sizeof sec, "[provider.%s]\ntype = %s\napi_key = ${%s}\n",
		         keyed[i].name, keyed[i].name, keyed[i].env);
		rc |= sb_puts(b, sec);
	}
	if (ollama != NULL && *ollama != '\0')
		rc |= sb_puts(b, "[provider.ollama]\ntype = ollama\n") | ollama_text(b, ollama);
	return rc;
}

struct config *
config_default(struct buf *errs)
{
	struct sb b = { 0 };
	struct config *cfg = NULL;

	if (default_text(&b) == 0)
		cfg = config_load_string(b.p, "embedded default", errs);
	else if (errs != NULL)
		buf_printf(errs, "embedded default: out of memory\n");
	free(b.p);
	return cfg;
}

int
config_set_listen(struct config *cfg, const char *listen, struct buf *errs)
{
	struct cfg_server *s = &cfg->server;
	char host[sizeof s->host], *copy;
	int port;

	if (value_listen(listen, host, sizeof host, &port) < 0) {
		if (errs != NULL)
			buf_printf(errs, "--listen: '%s' is not " LISTEN_FORMS "\n", listen);
		return -1;
	}
	copy = storage_alloc(cfg, strlen(listen) + 1);
	if (copy == NULL) {
		if (errs != NULL)
			buf_printf(errs, "--listen: out of memory\n");
		return -1;
	}
	strcpy(copy, listen);
	memcpy(s->host, host, sizeof host);
	s->port = port;
	s->listen = copy;
	return 0;
}

void
config_free(struct config *cfg)
{
	struct block *b, *next;

	if (cfg == NULL)
		return;
	for (b = cfg->storage; b != NULL; b = next) {
		next = b->next;
		free(b);
	}
	free(cfg);
}

/* ---- lookups: a name given as a span of a longer string ------------------------------------ */

static int
span_is(const char *name, const char *s, size_t len)
{
	return strlen(name) == len && memcmp(name, s, len) == 0;
}

const struct cfg_provider *
config_provider(const struct config *cfg, const char *name, size_t len)
{
	for (int i = 0; i < cfg->nproviders; i++)
		if (span_is(cfg->providers[i].name, name, len))
			return &cfg->providers[i];
	return NULL;
}

static const struct cfg_chain *
find_chain(const struct cfg_chain *c, int n, const char *name, size_t len)
{
	for (int i = 0; i < n; i++)
		if (span_is(c[i].name, name, len))
			return &c[i];
	return NULL;
}

const struct cfg_chain *
config_model(const struct config *cfg, const char *name, size_t len)
{
	return find_chain(cfg->models, cfg->nmodels, name, len);
}

const struct cfg_chain *
config_route(const struct config *cfg, const char *name, size_t len)
{
	return find_chain(cfg->routes, cfg->nroutes, name, len);
}

/* ---- summary (sluice --check) -------------------------------------------------------------- */

static void
summary_chain(const struct cfg_chain *c, FILE *out)
{
	fprintf(out, "  %-24s", c->name);
	if (c->is_route)
		fprintf(out, " %s:", policy_names[c->policy]);
	for (int i = 0; i < c->ntargets; i++)
		fprintf(out, "%s %s/%s", i ? "," : "", c->targets[i].provider->name, c->targets[i].model);
	if (c->retries > 0)
		fprintf(out, " (retries %d)", c->retries);
	fputc('\n', out);
}

void
config_summary(const struct config *cfg, FILE *out)
{
	const struct cfg_server *s = &cfg->server;
	const char *hint = "";
	char mem[32];

	fprintf(out, "config: %s\n", cfg->source);
	fprintf(out, "listen: %s  memory: %s  max_connections: %d  client auth: %s\n", s->listen,
	        value_fmt_size(mem, sizeof mem, s->memory), s->max_connections,
	        s->napi_keys ? "api_keys" : "none (no api_keys)");
	if (cfg->nproviders == 0 && strcmp(cfg->source, "embedded default") == 0)
		hint = " (set OPENAI_API_KEY, ANTHROPIC_API_KEY, GEMINI_API_KEY or OLLAMA_HOST)";
	fprintf(out, "providers: %d%s\n", cfg->nproviders, hint);
	for (int i = 0; i < cfg->nproviders; i++) {
		const struct cfg_provider *pr = &cfg->providers[i];

		fprintf(out, "  %-24s %-9s %s%s\n", pr->name, provider_type_names[pr->type], pr->base_url,
		        *pr->api_key || pr->type == PROVIDER_OLLAMA ? "" : "  (no api_key)");
	}
	fprintf(out, "models: %d\n", cfg->nmodels);
	for (int i = 0; i < cfg->nmodels; i++)
		summary_chain(&cfg->models[i], out);
	fprintf(out, "routes: %d\n", cfg->nroutes);
	for (int i = 0; i < cfg->nroutes; i++)
		summary_chain(&cfg->routes[i], out);
	fprintf(out, "prices: %d\n", cfg->nprices);
}
