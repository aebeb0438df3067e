/*
 * config.c — the INI config (DESIGN.md §1), read with inih into an immutable struct config.
 *
 * A load runs in three passes over the text:
 *   1. prescan: our own walk over the lines finds every section header (with its full name —
 *      inih truncates section names to 49 characters and never reports a header to the
 *      handler) and every line inih would reject, so a duplicate or empty section, a long
 *      [price.provider/model] name and every syntax error are all visible. The sections are
 *      then classified and their structs allocated with their defaults, so when keys arrive
 *      every provider is already known and a target can be resolved on the spot.
 *   2. inih: each "key = value" goes to on_pair(), which finds its section by line number,
 *      expands ${VAR}, and calls the key's setter from the section's key table.
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
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <math.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "sluice.h"

#define MAX_ERRORS  100          /* errors printed; the rest are counted */
#define MAX_TEXT    (4u << 20)   /* a config file larger than this is a mistake */
#define MAX_LINE    (INI_MAX_LINE - 2) /* the longest line inih reads whole, with its '\n' and NUL */
#define SECTION_MAX 32           /* keys per section kind; bits of section.seen */

/* The names fallback_on uses for the failure classes (enum fail_class, sluice.h). */
static const char *const fail_names[FAIL_NCLASSES] = {
	[FAIL_CONNECT] = "connect",     [FAIL_TLS] = "tls",
	[FAIL_TIMEOUT_HEAD] = "timeout_head", [FAIL_TIMEOUT_FIRST_TOKEN] = "timeout_first_token",
	[FAIL_408] = "408", [FAIL_409] = "409", [FAIL_429] = "429", [FAIL_500] = "500",
	[FAIL_502] = "502", [FAIL_503] = "503", [FAIL_504] = "504", [FAIL_529] = "529",
	[FAIL_AUTH] = "auth", [FAIL_MALFORMED] = "malformed", [FAIL_CLOSED] = "closed",
};

static const char *const type_names[] = { "openai", "anthropic", "gemini", "ollama", "azure" };
static const char *const default_urls[] = {
	[PROVIDER_OPENAI] = "https://api.openai.com/v1",
	[PROVIDER_ANTHROPIC] = "https://api.anthropic.com",
	[PROVIDER_GEMINI] = "https://generativelanguage.googleapis.com/v1beta",
	[PROVIDER_OLLAMA] = "http://localhost:11434",
	[PROVIDER_AZURE] = NULL, /* every Azure resource has its own: required */
};
static const char *const policy_names[] = { "cost", "speed", "balanced" };
static const char *const log_names[] = { "plain", "json" };

/* ---- storage: malloc'd blocks chained from cfg->storage ---------------------------------- */

struct block {
	struct block *next;
	max_align_t   data[];
};

struct error {
	int   line;  /* 0: about the whole file */
	int   seq;   /* keeps errors of one line in the order they were found */
	char *msg;
};

enum sec_kind { SEC_BAD, SEC_SERVER, SEC_PROVIDER, SEC_MODEL, SEC_ROUTE, SEC_PRICE };

struct section {
	const char   *name;     /* the text between [ and ] */
	int           line;
	enum sec_kind kind;     /* SEC_BAD: reported already; its keys are ignored */
	int           broken;   /* a header without ']': its lines are skipped, not misfiled */
	void         *obj;      /* the struct its keys fill */
	uint32_t      seen;     /* keys set, by index in the kind's key table */
	int           key_line[SECTION_MAX];
};

/* A growable malloc'd string, for the text of values and of the embedded default. */
struct sb {
	char  *p;
	size_t len, cap;
};

struct parser {
	struct config  *cfg;
	const char     *file;   /* for messages */
	const char     *text;
	struct section *secs;
	int             nsecs, cur;
	struct error   *errs;
	int             nerrs, caperrs;
	struct sb       value;  /* the current value, expanded */
	int             line;   /* of the current key */
	jmp_buf         oom;
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

static void
storage_free(void *storage)
{
	struct block *b = storage, *next;

	for (; b != NULL; b = next) {
		next = b->next;
		free(b);
	}
}

static void *
p_alloc(struct parser *p, size_t n)
{
	void *q = storage_alloc(p->cfg, n);

	if (q == NULL)
		longjmp(p->oom, 1);
	return q;
}

static char *
p_strndup(struct parser *p, const char *s, size_t n)
{
	char *d = p_alloc(p, n + 1);

	memcpy(d, s, n);
	return d;
}

static char *
p_strdup(struct parser *p, const char *s)
{
	return p_strndup(p, s, strlen(s));
}

/* ---- sb: a malloc'd string builder --------------------------------------------------------- */

static int
sb_append(struct sb *b, const char *s, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		char *q;

		while (cap < b->len + n + 1)
			cap *= 2;
		q = realloc(b->p, cap);
		if (q == NULL)
			return -1;
		b->p = q;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
	return 0;
}

static int
sb_puts(struct sb *b, const char *s)
{
	return sb_append(b, s, strlen(s));
}

/* ---- value parsers ------------------------------------------------------------------------- */

/* Digits only, into a uint64_t; -1 on no digits, junk or overflow. *end gets the first non-digit. */
static int
parse_u64(const char *s, uint64_t *out, const char **end)
{
	uint64_t v = 0;

	if (!isdigit((unsigned char)*s))
		return -1;
	for (; isdigit((unsigned char)*s); s++) {
		unsigned d = (unsigned)(*s - '0');

		if (v > (UINT64_MAX - d) / 10)
			return -1;
		v = v * 10 + d;
	}
	*out = v;
	*end = s;
	return 0;
}

int
config_parse_size(const char *s, size_t *out)
{
	uint64_t v, mul = 1;
	const char *end;

	if (parse_u64(s, &v, &end) < 0)
		return -1;
	switch (*end) {
	case '\0':           break;
	case 'K': case 'k': mul = 1ull << 10; end++; break;
	case 'M': case 'm': mul = 1ull << 20; end++; break;
	case 'G': case 'g': mul = 1ull << 30; end++; break;
	default:             return -1;
	}
	if (*end != '\0' || v > SIZE_MAX / mul)
		return -1;
	*out = (size_t)(v * mul);
	return 0;
}

/* A bare "0" is allowed (zero is zero in every unit, and "stream_heartbeat = 0" reads well);
 * any other number needs its unit, since "timeout = 30" could mean seconds or milliseconds. */
int
config_parse_duration(const char *s, uint32_t *ms)
{
	static const struct { const char *unit; uint64_t ms; } units[] = {
		{ "ms", 1 }, { "s", 1000 }, { "m", 60000 }, { "h", 3600000 },
	};
	uint64_t v;
	const char *end;

	if (parse_u64(s, &v, &end) < 0)
		return -1;
	if (*end == '\0' && v == 0) {
		*ms = 0;
		return 0;
	}
	for (size_t i = 0; i < NELEM(units); i++) {
		if (strcmp(end, units[i].unit) == 0) {
			if (v > UINT32_MAX / units[i].ms)
				return -1;
			*ms = (uint32_t)(v * units[i].ms);
			return 0;
		}
	}
	return -1;
}

/* A non-negative decimal: digits with at most one '.', no sign, exponent, hex, inf or nan. */
static int
parse_decimal(const char *s, double *out)
{
	int digits = 0, dots = 0;

	for (const char *c = s; *c; c++) {
		if (isdigit((unsigned char)*c))
			digits++;
		else if (*c == '.' && dots++ == 0)
			continue;
		else
			return -1;
	}
	if (digits == 0)
		return -1;
	*out = strtod(s, NULL);
	return isfinite(*out) ? 0 : -1;
}

static int
parse_bool(const char *s, int *out)
{
	static const char *const yes[] = { "true", "yes", "on", "1" };
	static const char *const no[] = { "false", "no", "off", "0" };

	for (size_t i = 0; i < NELEM(yes); i++) {
		if (strcmp(s, yes[i]) == 0)
			return *out = 1, 0;
		if (strcmp(s, no[i]) == 0)
			return *out = 0, 0;
	}
	return -1;
}

/* The index of s in names, or -1. */
static int
name_index(const char *const *names, size_t n, const char *s, size_t len)
{
	for (size_t i = 0; i < n; i++)
		if (strlen(names[i]) == len && memcmp(names[i], s, len) == 0)
			return (int)i;
	return -1;
}

static int
parse_port(const char *s, int *port)
{
	uint64_t v;
	const char *end;

	if (parse_u64(s, &v, &end) < 0 || *end != '\0' || v > 65535)
		return -1;
	*port = (int)v;
	return 0;
}

/*
 * "ADDR:PORT" with a numeric address: "127.0.0.1:8080", "[::1]:8080", ":8080" (every IPv4
 * address) or "localhost:8080". Port 0 asks the kernel for a free port. host gets the bare
 * address ("::1"), so a ':' in host means IPv6.
 */
static int
parse_listen(const char *s, char *host, size_t hostlen, int *port)
{
	const char *colon, *addr = s;
	size_t alen;
	unsigned char sa[16];
	char tmp[64];

	if (*s == '[') {
		const char *rb = strchr(s, ']');

		if (rb == NULL || rb[1] != ':')
			return -1;
		addr = s + 1;
		alen = (size_t)(rb - addr);
		colon = rb + 1;
	} else {
		colon = strrchr(s, ':');
		if (colon == NULL)
			return -1;
		alen = (size_t)(colon - s);
	}
	if (alen >= sizeof tmp || parse_port(colon + 1, port) < 0)
		return -1;
	memcpy(tmp, addr, alen);
	tmp[alen] = '\0';
	if (alen == 0 && *s != '[')
		strcpy(tmp, "0.0.0.0");
	else if (strcmp(tmp, "localhost") == 0 && *s != '[')
		strcpy(tmp, "127.0.0.1");
	else if (inet_pton(*s == '[' ? AF_INET6 : AF_INET, tmp, sa) != 1)
		return -1;
	if (strlen(tmp) >= hostlen)
		return -1;
	strcpy(host, tmp);
	return 0;
}

/* ---- ${VAR} expansion ---------------------------------------------------------------------- */

/* The offset of the '}' closing a default that starts at s[i], skipping nested ${...}; or -1. */
static long
closing_brace(const char *s, size_t n, size_t i)
{
	int depth = 0;

	for (; i < n; i++) {
		if (s[i] == '$' && i + 1 < n && s[i + 1] == '{') {
			depth++;
			i++;
		} else if (s[i] == '}' && depth-- == 0) {
			return (long)i;
		}
	}
	return -1;
}

static size_t
var_name_len(const char *s, size_t n)
{
	size_t i = 0;

	if (n == 0 || !(isalpha((unsigned char)s[0]) || s[0] == '_'))
		return 0;
	while (i < n && (isalnum((unsigned char)s[i]) || s[i] == '_'))
		i++;
	return i;
}

static int expand(const char *s, size_t n, struct sb *out, int depth, const char **err);

/* One ${...} starting at s (after "${"); *used gets the bytes consumed after "${". */
static int
expand_var(const char *s, size_t n, struct sb *out, int depth, size_t *used, const char **err)
{
	size_t nl = var_name_len(s, n);
	char name[256];
	const char *val;
	long close;

	if (memchr(s, '}', n) == NULL)
		return *err = "unterminated '${'", -1;
	if (nl == 0 || nl >= sizeof name)
		return *err = "bad variable name in '${...}'", -1;
	memcpy(name, s, nl);
	name[nl] = '\0';
	val = getenv(name);
	if (nl < n && s[nl] == '}') {
		*used = nl + 1;
		return val ? sb_puts(out, val) : 0;
	}
	if (nl + 1 < n && s[nl] == ':' && s[nl + 1] == '-') {
		close = closing_brace(s, n, nl + 2);
		if (close < 0)
			return *err = "unterminated '${'", -1;
		*used = (size_t)close + 1;
		if (val != NULL && *val != '\0')
			return sb_puts(out, val);
		return expand(s + nl + 2, (size_t)close - nl - 2, out, depth + 1, err);
	}
	return *err = "only ${VAR} and ${VAR:-default} are supported", -1;
}

/* Expand s[0..n) into out. Environment values are not expanded again (as in the shell). */
static int
expand(const char *s, size_t n, struct sb *out, int depth, const char **err)
{
	size_t i = 0, lit;

	if (depth > 8)
		return *err = "${...} nested too deeply", -1;
	while (i < n) {
		size_t used;

		for (lit = i; lit < n && !(s[lit] == '$' && lit + 1 < n && s[lit + 1] == '{'); lit++)
			;
		if (sb_append(out, s + i, lit - i) < 0)
			return *err = "out of memory", -1;
		if (lit == n)
			break;
		if (expand_var(s + lit + 2, n - lit - 2, out, depth, &used, err) < 0)
			return -1;
		i = lit + 2 + used;
	}
	return 0;
}

int
config_expand_env(const char *in, struct buf *out, char *err, size_t errlen)
{
	struct sb b = { 0 };
	const char *msg = "out of memory"; /* what a failing sb_append leaves unsaid */
	int rc = expand(in, strlen(in), &b, 0, &msg);

	if (rc == 0 && sb_append(&b, "", 0) < 0)
		rc = -1, msg = "out of memory";
	if (rc == 0 && buf_append(out, b.p, b.len) != BUF_OK)
		rc = -1, msg = "value too long";
	if (rc < 0)
		snprintf(err, errlen, "%s", msg);
	free(b.p);
	return rc;
}

/* ---- errors -------------------------------------------------------------------------------- */

static void perr(struct parser *p, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void
perr(struct parser *p, int line, const char *fmt, ...)
{
	va_list ap;
	char msg[512];

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (p->nerrs == p->caperrs) {
		int cap = p->caperrs ? p->caperrs * 2 : 16;
		struct error *e = realloc(p->errs, (size_t)cap * sizeof *e);

		if (e == NULL)
			longjmp(p->oom, 1);
		p->errs = e;
		p->caperrs = cap;
	}
	p->errs[p->nerrs].msg = strdup(msg);
	if (p->errs[p->nerrs].msg == NULL)
		longjmp(p->oom, 1);
	p->errs[p->nerrs].line = line;
	p->errs[p->nerrs].seq = p->nerrs;
	p->nerrs++;
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
	if (p->nerrs > 0)
		qsort(p->errs, (size_t)p->nerrs, sizeof *p->errs, error_cmp);
	for (int i = 0; out != NULL && i < p->nerrs && i < MAX_ERRORS; i++) {
		if (p->errs[i].line > 0)
			buf_printf(out, "%s:%d: %s\n", p->file, p->errs[i].line, p->errs[i].msg);
		else
			buf_printf(out, "%s: %s\n", p->file, p->errs[i].msg);
	}
	if (out != NULL && p->nerrs > MAX_ERRORS)
		buf_printf(out, "%s: %d more errors\n", p->file, p->nerrs - MAX_ERRORS);
}

/* ---- setters: one per kind of value; each reports its own error ---------------------------- */

struct key;
typedef int (*setter)(struct parser *p, const struct key *k, void *obj, const char *v);

struct key {
	const char *name;
	setter      set;
	size_t      off;       /* the field in the section's struct */
	uint64_t    min, max;  /* for sizes, durations and integers */
	unsigned    scope;     /* chain keys: SCOPE_MODEL, SCOPE_ROUTE or both */
};
enum { SCOPE_MODEL = 1, SCOPE_ROUTE = 2, SCOPE_BOTH = 3 };

#define FIELD(obj, k, T) ((T *)(void *)((char *)(obj) + (k)->off))

static const char *fmt_size(char *out, size_t n, size_t v);
static const char *fmt_ms(char *out, size_t n, uint64_t v);
static int set_size(struct parser *p, const struct key *k, void *obj, const char *v);
static int set_duration(struct parser *p, const struct key *k, void *obj, const char *v);

/* A bound written the way the key is: "1M", "1ms", "100". */
static const char *
fmt_bound(const struct key *k, uint64_t v, char *out, size_t n)
{
	if (k->set == set_size)
		return fmt_size(out, n, (size_t)v);
	if (k->set == set_duration)
		return fmt_ms(out, n, v);
	snprintf(out, n, "%llu", (unsigned long long)v);
	return out;
}

static int
out_of_range(struct parser *p, const struct key *k, uint64_t v, const char *v_text)
{
	char lo[32], hi[32];

	if (v < k->min)
		perr(p, p->line, "%s: '%s' is below the minimum, %s", k->name, v_text, fmt_bound(k, k->min, lo, sizeof lo));
	else if (v > k->max)
		perr(p, p->line, "%s: '%s' is above the maximum, %s", k->name, v_text, fmt_bound(k, k->max, hi, sizeof hi));
	return v < k->min || v > k->max ? -1 : 0;
}

static int
set_string(struct parser *p, const struct key *k, void *obj, const char *v)
{
	*FIELD(obj, k, const char *) = p_strdup(p, v);
	return 0;
}

static int
set_size(struct parser *p, const struct key *k, void *obj, const char *v)
{
	size_t n;

	if (config_parse_size(v, &n) < 0) {
		perr(p, p->line, "%s: '%s' is not a size (a whole number with an optional K, M or G)", k->name, v);
		return -1;
	}
	if (out_of_range(p, k, n, v) < 0)
		return -1;
	*FIELD(obj, k, size_t) = n;
	return 0;
}

static int
set_duration(struct parser *p, const struct key *k, void *obj, const char *v)
{
	uint32_t ms;

	if (config_parse_duration(v, &ms) < 0) {
		perr(p, p->line, "%s: '%s' is not a duration (a whole number with ms, s, m or h)", k->name, v);
		return -1;
	}
	if (out_of_range(p, k, ms, v) < 0)
		return -1;
	*FIELD(obj, k, uint32_t) = ms;
	return 0;
}

static int
set_int(struct parser *p, const struct key *k, void *obj, const char *v)
{
	uint64_t n;
	const char *end;

	if (parse_u64(v, &n, &end) < 0 || *end != '\0') {
		perr(p, p->line, "%s: '%s' is not a whole number", k->name, v);
		return -1;
	}
	if (out_of_range(p, k, n, v) < 0)
		return -1;
	*FIELD(obj, k, int) = (int)n;
	return 0;
}

static int
set_decimal(struct parser *p, const struct key *k, void *obj, const char *v)
{
	if (parse_decimal(v, FIELD(obj, k, double)) < 0) {
		perr(p, p->line, "%s: '%s' is not a non-negative decimal number", k->name, v);
		return -1;
	}
	return 0;
}

static int
set_bool(struct parser *p, const struct key *k, void *obj, const char *v)
{
	if (parse_bool(v, FIELD(obj, k, int)) < 0) {
		perr(p, p->line, "%s: '%s' is not true or false", k->name, v);
		return -1;
	}
	return 0;
}

/* One of names, or an error listing them. */
static int
pick(struct parser *p, const struct key *k, const char *const *names, size_t n, const char *v)
{
	int i = name_index(names, n, v, strlen(v));
	char list[128] = "";

	if (i >= 0)
		return i;
	for (size_t j = 0; j < n; j++)
		snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", j ? " | " : "", names[j]);
	perr(p, p->line, "%s: '%s' is not one of %s", k->name, v, list);
	return -1;
}

static int
set_type(struct parser *p, const struct key *k, void *obj, const char *v)
{
	int i = pick(p, k, type_names, NELEM(type_names), v);

	if (i >= 0)
		((struct cfg_provider *)obj)->type = (enum provider_type)i;
	return i < 0 ? -1 : 0;
}

static int
set_policy(struct parser *p, const struct key *k, void *obj, const char *v)
{
	int i = pick(p, k, policy_names, NELEM(policy_names), v);

	if (i >= 0)
		((struct cfg_chain *)obj)->policy = (enum route_policy)i;
	return i < 0 ? -1 : 0;
}

static int
set_log_format(struct parser *p, const struct key *k, void *obj, const char *v)
{
	int i = pick(p, k, log_names, NELEM(log_names), v);

	if (i >= 0)
		((struct cfg_server *)obj)->log_format = (enum log_format)i;
	return i < 0 ? -1 : 0;
}

static int
set_listen(struct parser *p, const struct key *k, void *obj, const char *v)
{
	struct cfg_server *s = obj;

	if (parse_listen(v, s->host, sizeof s->host, &s->port) < 0) {
		perr(p, p->line, "listen: '%s' is not ADDR:PORT (127.0.0.1:8080, [::1]:8080, :8080)", v);
		return -1;
	}
	s->listen = p_strdup(p, v);
	return 0;
}

static int
set_url(struct parser *p, const struct key *k, void *obj, const char *v)
{
	size_t n = strlen(v);

	if (strncmp(v, "http://", 7) != 0 && strncmp(v, "https://", 8) != 0) {
		perr(p, p->line, "%s: '%s' is not an http:// or https:// URL", k->name, v);
		return -1;
	}
	while (n > 0 && v[n - 1] == '/') /* adapters append "/chat/completions" and the like */
		n--;
	*FIELD(obj, k, const char *) = p_strndup(p, v, n);
	return 0;
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

static int
set_api_keys(struct parser *p, const struct key *k, void *obj, const char *v)
{
	struct cfg_server *s = obj;

	s->napi_keys = split_list(p, v, ',', &s->api_keys);
	return 0;
}

/* HTTP's token characters, for header names. */
static int
is_token(const char *s, size_t n)
{
	if (n == 0)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && !strchr("!#$%&'*+-.^_`|~", s[i]))
			return 0;
	return 1;
}

/* The raw text of line `line`, to see what inih stripped from it. */
static const char *
raw_line(const struct parser *p, int line, size_t *len)
{
	const char *s = p->text;

	while (--line > 0 && (s = strchr(s, '\n')) != NULL)
		s++;
	if (s == NULL)
		s = "";
	*len = strcspn(s, "\n");
	return s;
}

/* Does the raw line hold " ;" — an inline comment inih cut off, maybe in the middle of a list? */
static int
has_semicolon_comment(const struct parser *p, int line)
{
	size_t n;
	const char *s = raw_line(p, line, &n);

	for (size_t i = 1; i < n; i++)
		if (s[i] == ';' && isspace((unsigned char)s[i - 1]))
			return 1;
	return 0;
}

static int
set_headers(struct parser *p, const struct key *k, void *obj, const char *v)
{
	struct cfg_provider *pr = obj;
	int bad = 0;

	if (has_semicolon_comment(p, p->line)) {
		perr(p, p->line, "headers: ' ;' starts a comment, cutting the list short: separate headers "
		     "with ';' and no space before it (comment with '#')");
		return -1;
	}
	pr->nheaders = split_list(p, v, ';', &pr->headers);
	for (int i = 0; i < pr->nheaders; i++) {
		const char *h = pr->headers[i], *colon = strchr(h, ':');

		if (colon == NULL || !is_token(h, (size_t)(colon - h))) {
			perr(p, p->line, "headers: '%s' is not 'Name: value'", h);
			bad = -1;
		}
	}
	return bad;
}

static const struct cfg_provider *
find_provider(const struct config *cfg, const char *name, size_t len)
{
	for (int i = 0; i < cfg->nproviders; i++)
		if (cfg->providers[i].name != NULL && strlen(cfg->providers[i].name) == len &&
		    memcmp(cfg->providers[i].name, name, len) == 0)
			return &cfg->providers[i];
	return NULL;
}

/* "provider/model" → a target; the model part may hold '/' itself, so split at the first. */
static int
parse_target(struct parser *p, const struct key *k, const char *item, struct cfg_target *t)
{
	const char *slash = strchr(item, '/');

	if (slash == NULL || slash == item || slash[1] == '\0' || strpbrk(item, " \t") != NULL) {
		perr(p, p->line, "%s: '%s' is not provider/model", k->name, item);
		return -1;
	}
	t->provider = find_provider(p->cfg, item, (size_t)(slash - item));
	if (t->provider == NULL) {
		perr(p, p->line, "%s: unknown provider '%.*s' in '%s'", k->name, (int)(slash - item), item, item);
		return -1;
	}
	t->model = slash + 1;
	return 0;
}

static int
set_targets(struct parser *p, const struct key *k, void *obj, const char *v)
{
	struct cfg_chain *c = obj;
	const char **items;
	int n = split_list(p, v, ',', &items), bad = 0;

	if (n == 0) {
		perr(p, p->line, "%s: the list is empty", k->name);
		return -1;
	}
	c->targets = p_alloc(p, (size_t)n * sizeof *c->targets);
	for (int i = 0; i < n; i++)
		bad |= parse_target(p, k, items[i], &c->targets[i]);
	c->ntargets = n;
	return bad;
}

static int
set_fallback_on(struct parser *p, const struct key *k, void *obj, const char *v)
{
	struct cfg_chain *c = obj;
	const char **items;
	int n = split_list(p, v, ',', &items), bad = 0;

	c->fallback_on = 0;
	for (int i = 0; i < n; i++) {
		int f = name_index(fail_names, NELEM(fail_names), items[i], strlen(items[i]));

		if (f < 0) {
			perr(p, p->line, "fallback_on: unknown failure class '%s'", items[i]);
			bad = -1;
		} else {
			c->fallback_on |= 1u << f;
		}
	}
	return bad;
}

/* ---- key tables ---------------------------------------------------------------------------- */

#define MS(x)  ((uint64_t)(x))
#define NOMAX  UINT64_MAX

#define S(name, set, field, min, max) { #name, set, offsetof(struct cfg_server, field), min, max, 0 }
static const struct key server_keys[] = {
	S(listen,           set_listen,     listen,           0, 0),
	S(memory,           set_size,       memory,           1u << 20, NOMAX),
	S(max_connections,  set_int,        max_connections,  1, 1u << 20),
	S(max_request_body, set_size,       max_request_body, 1, NOMAX),
	S(max_header,       set_size,       max_header,       1u << 10, 1u << 20),
	S(header_timeout,   set_duration,   header_timeout,   MS(1), NOMAX),
	S(idle_timeout,     set_duration,   idle_timeout,     MS(1), NOMAX),
	S(drain_timeout,    set_duration,   drain_timeout,    0, NOMAX),
	S(stream_heartbeat, set_duration,   stream_heartbeat, 0, NOMAX), /* 0 = off */
	S(api_keys,         set_api_keys,   api_keys,         0, 0),
	S(log_format,       set_log_format, log_format,       0, 0),
	S(breaker_failures, set_int,        breaker_failures, 1, 1000),
	S(breaker_cooldown, set_duration,   breaker_cooldown, MS(1), NOMAX),
};
#undef S

#define P(name, set, field, min, max) { #name, set, offsetof(struct cfg_provider, field), min, max, 0 }
static const struct key provider_keys[] = {
	P(type,               set_type,     type,               0, 0),
	P(base_url,           set_url,      base_url,           0, 0),
	P(api_key,            set_string,   api_key,            0, 0),
	P(api_version,        set_string,   api_version,        0, 0),
	P(ca_file,            set_string,   ca_file,            0, 0),
	P(headers,            set_headers,  headers,            0, 0),
	P(timeout_connect,    set_duration, timeout_connect,    MS(1), NOMAX),
	P(timeout_first_byte, set_duration, timeout_first_byte, MS(1), NOMAX),
	P(timeout_idle,       set_duration, timeout_idle,       MS(1), NOMAX),
	P(timeout_total,      set_duration, timeout_total,      MS(1), NOMAX),
	P(max_response_body,  set_size,     max_response_body,  1u << 10, NOMAX),
	P(default_max_tokens, set_int,      default_max_tokens, 1, 10000000),
};
#undef P

/* [model.NAME] and [route.NAME] share one table; scope says which of them takes a key. */
#define C(name, set, field, min, max, scope) \
	{ #name, set, offsetof(struct cfg_chain, field), min, max, scope }
static const struct key chain_keys[] = {
	C(targets,      set_targets,     targets,      0, 0,        SCOPE_MODEL),
	C(candidates,   set_targets,     targets,      0, 0,        SCOPE_ROUTE),
	C(policy,       set_policy,      policy,       0, 0,        SCOPE_ROUTE),
	C(max_attempts, set_int,         max_attempts, 1, 100,      SCOPE_ROUTE),
	C(weight_cost,  set_decimal,     weight_cost,  0, 0,        SCOPE_ROUTE),
	C(weight_speed, set_decimal,     weight_speed, 0, 0,        SCOPE_ROUTE),
	C(prior_ttft,   set_duration,    prior_ttft,   MS(1), NOMAX, SCOPE_ROUTE),
	C(prior_tps,    set_decimal,     prior_tps,    0, 0,        SCOPE_ROUTE),
	C(retries,      set_int,         retries,      0, 10,       SCOPE_BOTH),
	C(fallback_on,  set_fallback_on, fallback_on,  0, 0,        SCOPE_BOTH),
	C(deadline,     set_duration,    deadline,     MS(1), NOMAX, SCOPE_BOTH),
	C(backoff_base, set_duration,    backoff_base, 0, NOMAX,    SCOPE_BOTH),
	C(backoff_max,  set_duration,    backoff_max,  0, NOMAX,    SCOPE_BOTH),
	C(tools,        set_bool,        tools,        0, 0,        SCOPE_BOTH),
	C(images,       set_bool,        images,       0, 0,        SCOPE_BOTH),
};
#undef C

static const struct key price_keys[] = {
	{ "input",  set_decimal, offsetof(struct cfg_price, input),  0, 0, 0 },
	{ "output", set_decimal, offsetof(struct cfg_price, output), 0, 0, 0 },
};

_Static_assert(NELEM(server_keys) <= SECTION_MAX && NELEM(provider_keys) <= SECTION_MAX &&
               NELEM(chain_keys) <= SECTION_MAX && NELEM(price_keys) <= SECTION_MAX,
               "section.seen has a bit per key");

struct kind_info {
	const char       *prefix;  /* "provider." ; "server" is matched whole */
	const struct key *keys;
	size_t            nkeys;
	unsigned          scope;
};
static const struct kind_info kinds[] = {
	[SEC_SERVER]   = { "server",    server_keys,   NELEM(server_keys),   0 },
	[SEC_PROVIDER] = { "provider.", provider_keys, NELEM(provider_keys), 0 },
	[SEC_MODEL]    = { "model.",    chain_keys,    NELEM(chain_keys),    SCOPE_MODEL },
	[SEC_ROUTE]    = { "route.",    chain_keys,    NELEM(chain_keys),    SCOPE_ROUTE },
	[SEC_PRICE]    = { "price.",    price_keys,    NELEM(price_keys),    0 },
};

/* The index of key `name` in section kind's table, or -1 (also when the key is out of scope). */
static int
key_index(enum sec_kind kind, const char *name)
{
	const struct kind_info *ki = &kinds[kind];

	for (size_t i = 0; i < ki->nkeys; i++)
		if (strcmp(ki->keys[i].name, name) == 0 && (ki->scope == 0 || (ki->keys[i].scope & ki->scope)))
			return (int)i;
	return -1;
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

/* The key of kind's table (in scope) closest to a misspelt name, or NULL if none is close. */
static const char *
closest_key(enum sec_kind kind, const char *name)
{
	const struct kind_info *ki = &kinds[kind];
	const char *best = NULL;
	size_t bestd = 3; /* up to two edits: "retires", "memroy", "fallback" */

	for (size_t i = 0; i < ki->nkeys; i++) {
		size_t d = edit_distance(ki->keys[i].name, name);

		if (d < bestd && (ki->scope == 0 || (ki->keys[i].scope & ki->scope)))
			best = ki->keys[i].name, bestd = d;
	}
	return best;
}

static int
was_set(const struct section *s, const char *name)
{
	int i = key_index(s->kind, name);

	return i >= 0 && (s->seen & (1u << i));
}

/* ---- pass 1: prescan the lines, then classify the sections -------------------------------- */

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

static struct section *
add_section(struct parser *p, const char *name, size_t n, int line)
{
	struct section *s;

	if ((p->nsecs & (p->nsecs - 1)) == 0) { /* grow at powers of two */
		size_t cap = p->nsecs ? (size_t)p->nsecs * 2 : 8;
		struct section *q = realloc(p->secs, cap * sizeof *q);

		if (q == NULL)
			longjmp(p->oom, 1);
		p->secs = q;
	}
	s = &p->secs[p->nsecs++];
	memset(s, 0, sizeof *s);
	s->name = p_strndup(p, name, n);
	s->line = line;
	return s;
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
			add_section(p, s + 1, n - 1, line)->broken = 1;
			return;
		}
		if (!only_comment(s + end + 1, n - end - 1))
			perr(p, line, "text after the section header");
		add_section(p, s + 1, end - 1, line);
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

static int
valid_chars(const char *s, const char *extra)
{
	if (*s == '\0')
		return 0;
	for (; *s; s++)
		if (!(isalnum((unsigned char)*s) && !isupper((unsigned char)*s)) && !strchr(extra, *s))
			return 0;
	return 1;
}

/* Public model names: letters too, and no '/', which is how clients name provider/model. */
static int
valid_public_name(const char *s)
{
	if (*s == '\0')
		return 0;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && !strchr("._-:@+", *s))
			return 0;
	return 1;
}

static enum sec_kind
kind_of(const char *name, const char **rest)
{
	for (int k = SEC_SERVER; k <= SEC_PRICE; k++) {
		size_t n = strlen(kinds[k].prefix);

		if (k == SEC_SERVER ? strcmp(name, "server") == 0 : strncmp(name, kinds[k].prefix, n) == 0) {
			*rest = name + (k == SEC_SERVER ? 6 : n);
			return (enum sec_kind)k;
		}
	}
	return SEC_BAD;
}

/* The first earlier section that s clashes with: same name, or a model and a route alike. */
static const struct section *
earlier_twin(const struct parser *p, const struct section *s, const char *rest)
{
	for (const struct section *t = p->secs; t < s; t++) {
		const char *trest;

		if (t->kind == SEC_BAD)
			continue;
		if (strcmp(t->name, s->name) == 0)
			return t;
		if ((s->kind == SEC_MODEL || s->kind == SEC_ROUTE) &&
		    (t->kind == SEC_MODEL || t->kind == SEC_ROUTE) && kind_of(t->name, &trest) != s->kind &&
		    strcmp(trest, rest) == 0)
			return t;
	}
	return NULL;
}

/* Is the name after the prefix valid for its kind? Reports and returns 0 if not. */
static int
check_name(struct parser *p, const struct section *s, const char *rest)
{
	const char *slash = strchr(rest, '/');

	switch (s->kind) {
	case SEC_PROVIDER:
		if (valid_chars(rest, "_-"))
			return 1;
		perr(p, s->line, "[%s]: a provider name is made of a-z, 0-9, '_' and '-'", s->name);
		return 0;
	case SEC_MODEL:
	case SEC_ROUTE:
		if (valid_public_name(rest))
			return 1;
		perr(p, s->line, "[%s]: a name is made of letters, digits and . _ - : @ + (no '/')", s->name);
		return 0;
	case SEC_PRICE:
		if (slash != NULL && slash > rest && slash[1] != '\0' && strpbrk(rest, " \t") == NULL)
			return 1;
		perr(p, s->line, "[%s]: expected [price.PROVIDER/MODEL]", s->name);
		return 0;
	default:
		return 1;
	}
}

static void
classify(struct parser *p, struct section *s, int counts[])
{
	const char *rest = NULL;
	const struct section *twin;

	s->kind = s->broken ? SEC_BAD : kind_of(s->name, &rest);
	if (s->broken)
		return;
	if (s->kind == SEC_BAD) {
		perr(p, s->line, "unknown section [%s] (expected server, provider.NAME, model.NAME, "
		     "route.NAME or price.PROVIDER/MODEL)", s->name);
		return;
	}
	if (!check_name(p, s, rest)) {
		s->kind = SEC_BAD;
		return;
	}
	twin = earlier_twin(p, s, rest);
	if (twin != NULL) {
		perr(p, s->line, strcmp(twin->name, s->name) == 0 ? "duplicate section [%s] (first on line %d)"
		     : "[%s]: a model and a route share this name (the other is on line %d)", s->name, twin->line);
		s->kind = SEC_BAD;
		return;
	}
	counts[s->kind]++;
}

/* ---- defaults: every struct starts with them; keys overwrite them -------------------------- */

static void
server_defaults(struct cfg_server *s)
{
	s->listen = "127.0.0.1:8080"; /* string literals outlive any config */
	parse_listen(s->listen, s->host, sizeof s->host, &s->port);
	s->memory = 64u << 20;
	s->max_connections = 1024;
	s->max_request_body = 8u << 20;
	s->max_header = 16u << 10;
	s->header_timeout = 10000;
	s->idle_timeout = 60000;
	s->drain_timeout = 30000;
	s->stream_heartbeat = 10000;
	s->api_keys = NULL;
	s->napi_keys = 0;
	s->log_format = LOG_PLAIN;
	s->breaker_failures = 5;
	s->breaker_cooldown = 30000;
}

static void
provider_defaults(struct cfg_provider *pr, const char *name, int line)
{
	pr->name = name;
	pr->base_url = "";
	pr->api_key = "";
	pr->api_version = "";
	pr->ca_file = "";
	pr->timeout_connect = 5000;
	pr->timeout_first_byte = 60000;
	pr->timeout_idle = 60000;
	pr->timeout_total = 600000;
	pr->max_response_body = 8u << 20;
	pr->default_max_tokens = 4096;
	pr->line = line;
}

static void
chain_defaults(struct cfg_chain *c, const char *name, int is_route, int line)
{
	c->name = name;
	c->is_route = is_route;
	c->max_attempts = is_route ? 3 : 0; /* a model's chain is its targets × (1 + retries) */
	c->deadline = 60000;
	c->backoff_base = 250;
	c->backoff_max = 5000;
	c->weight_cost = 0.5;
	c->weight_speed = 0.5;
	c->prior_ttft = 1000;
	c->prior_tps = 50;
	c->tools = c->images = -1;
	c->line = line;
}

/* Classify every section, then allocate each kind's array and point each section at its struct. */
static void
build_sections(struct parser *p)
{
	struct config *cfg = p->cfg;
	int counts[SEC_PRICE + 1] = { 0 };

	for (int i = 0; i < p->nsecs; i++)
		classify(p, &p->secs[i], counts);
	cfg->providers = p_alloc(p, (size_t)counts[SEC_PROVIDER] * sizeof *cfg->providers + 1);
	cfg->models = p_alloc(p, (size_t)counts[SEC_MODEL] * sizeof *cfg->models + 1);
	cfg->routes = p_alloc(p, (size_t)counts[SEC_ROUTE] * sizeof *cfg->routes + 1);
	cfg->prices = p_alloc(p, (size_t)counts[SEC_PRICE] * sizeof *cfg->prices + 1);
	for (int i = 0; i < p->nsecs; i++) {
		struct section *s = &p->secs[i];
		const char *rest = strchr(s->name, '.') ? strchr(s->name, '.') + 1 : "";

		switch (s->kind) {
		case SEC_SERVER:   s->obj = &cfg->server; break;
		case SEC_PROVIDER: s->obj = &cfg->providers[cfg->nproviders++];
		                   provider_defaults(s->obj, rest, s->line); break;
		case SEC_MODEL:    s->obj = &cfg->models[cfg->nmodels++];
		                   chain_defaults(s->obj, rest, 0, s->line); break;
		case SEC_ROUTE:    s->obj = &cfg->routes[cfg->nroutes++];
		                   chain_defaults(s->obj, rest, 1, s->line); break;
		case SEC_PRICE:    s->obj = &cfg->prices[cfg->nprices++];
		                   ((struct cfg_price *)s->obj)->target = rest;
		                   ((struct cfg_price *)s->obj)->line = s->line; break;
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
	const char *err = NULL;

	p->value.len = 0;
	if (expand(raw, strlen(raw), &p->value, 0, &err) < 0 || sb_append(&p->value, "", 0) < 0) {
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

static int
on_pair(void *user, const char *section, const char *name, const char *value, int lineno)
{
	struct parser *p = user;
	struct section *s = section_at(p, lineno);
	int i;

	(void)section; /* inih's copy is truncated to 49 characters: ours is whole */
	p->line = lineno;
	if (s == NULL) {
		perr(p, lineno, "'%s' comes before any [section]", name);
		return 1;
	}
	if (s->kind == SEC_BAD)
		return 1; /* the section's own error says it all */
	i = key_index(s->kind, name);
	if (i < 0) {
		const char *hint = closest_key(s->kind, name);

		if (hint != NULL)
			perr(p, lineno, "unknown key '%s' in [%s] (did you mean '%s'?)", name, s->name, hint);
		else
			perr(p, lineno, "unknown key '%s' in [%s]", name, s->name);
		return 1;
	}
	if (s->seen & (1u << i)) {
		perr(p, lineno, "duplicate key '%s' in [%s] (first on line %d)", name, s->name, s->key_line[i]);
		return 1;
	}
	s->seen |= 1u << i;
	s->key_line[i] = lineno;
	if (expand_value(p, name, value) == 0)
		kinds[s->kind].keys[i].set(p, &kinds[s->kind].keys[i], s->obj, p->value.p);
	return 1; /* errors are ours to report: inih's return then means syntax, which prescan saw */
}

/* ---- pass 3: finalize ---------------------------------------------------------------------- */

static void
require(struct parser *p, const struct section *s, const char *key)
{
	if (!was_set(s, key))
		perr(p, s->line, "[%s]: missing required key '%s'", s->name, key);
}

static void
finalize_provider(struct parser *p, const struct section *s)
{
	struct cfg_provider *pr = s->obj;

	if (!was_set(s, "type")) {
		require(p, s, "type");
		return;
	}
	if (!was_set(s, "base_url")) {
		if (default_urls[pr->type] != NULL)
			pr->base_url = default_urls[pr->type];
		else
			perr(p, s->line, "[%s]: missing required key 'base_url' (required for type %s)",
			     s->name, type_names[pr->type]);
	}
	if (pr->type == PROVIDER_AZURE && !was_set(s, "api_version"))
		pr->api_version = "2024-10-21";
	else if (pr->type == PROVIDER_ANTHROPIC && !was_set(s, "api_version"))
		pr->api_version = "2023-06-01"; /* the anthropic-version header */
	else if (was_set(s, "api_version") && pr->type != PROVIDER_AZURE && pr->type != PROVIDER_ANTHROPIC)
		perr(p, s->key_line[key_index(s->kind, "api_version")],
		     "api_version: only azure and anthropic providers take one");
	if (*pr->ca_file != '\0' && access(pr->ca_file, R_OK) != 0)
		perr(p, s->key_line[key_index(s->kind, "ca_file")], "ca_file: '%s': %s", pr->ca_file,
		     strerror(errno));
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
	const char *slash = strchr(pc->target, '/');

	if (find_provider(p->cfg, pc->target, (size_t)(slash - pc->target)) == NULL)
		perr(p, s->line, "[%s]: unknown provider '%.*s'", s->name, (int)(slash - pc->target), pc->target);
	require(p, s, "input");
	require(p, s, "output");
}

static void
finalize(struct parser *p)
{
	for (int i = 0; i < p->nsecs; i++) {
		const struct section *s = &p->secs[i];

		if (s->kind == SEC_PROVIDER)
			finalize_provider(p, s);
		else if (s->kind == SEC_MODEL || s->kind == SEC_ROUTE)
			finalize_chain(p, s);
		else if (s->kind == SEC_PRICE)
			finalize_price(p, s);
	}
}

/* ---- loading ------------------------------------------------------------------------------- */

/* Frees the parser's scratch memory; nerrs stays, for the caller to read. */
static void
parser_release(struct parser *p)
{
	for (int i = 0; i < p->nerrs; i++)
		free(p->errs[i].msg);
	free(p->errs);
	free(p->secs);
	free(p->value.p);
	p->errs = NULL;
	p->secs = NULL;
	p->value.p = NULL;
}

static void
run_passes(struct parser *p)
{
	/* inih's settings are globals; config.c is its only user. No continuation lines: an indented
	 * line is a key like any other, so a duplicate key can never pass as a continuation. */
	static char comment_prefixes[] = ";#";

	ini_allow_multiline = false;
	ini_inline_comment_prefixes = comment_prefixes;
	server_defaults(&p->cfg->server);
	prescan(p);
	build_sections(p);
	ini_parse_string(p->text, on_pair, p);
	finalize(p);
}

/*
 * setjmp lives here, apart from load(): the parser is changed after setjmp, and objects local
 * to the function that calls setjmp would be indeterminate after the longjmp.
 */
static int
parse_guarded(struct parser *p, const char *source)
{
	if (setjmp(p->oom) != 0)
		return -1;
	p->cfg->source = p_strdup(p, source);
	p->file = p->cfg->source;
	run_passes(p);
	return 0;
}

/* The one code path: files, strings and the embedded default all come through here. */
static struct config *
load(const char *text, const char *source, struct buf *errs)
{
	struct parser p = { .file = source, .text = text, .cur = -1 };

	p.cfg = calloc(1, sizeof *p.cfg);
	if (p.cfg == NULL || parse_guarded(&p, source) < 0) {
		if (errs != NULL)
			buf_printf(errs, "%s: out of memory\n", source);
		parser_release(&p);
		config_free(p.cfg);
		return NULL;
	}
	errors_emit(&p, errs);
	parser_release(&p);
	if (p.nerrs > 0) {
		config_free(p.cfg);
		return NULL;
	}
	return p.cfg;
}

struct config *
config_load_string(const char *text, const char *name, struct buf *errs)
{
	return load(text, name, errs);
}

/* The whole file, NUL-terminated, in a malloc'd string; NULL and a reason on failure. */
static char *
read_file(const char *path, const char **why)
{
	FILE *f = fopen(path, "rb");
	struct sb b = { 0 };
	char chunk[8192];
	size_t n;

	*why = NULL;
	if (f == NULL)
		return *why = strerror(errno), NULL;
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
	const char *why = NULL;
	char *text = read_file(path, &why);
	struct config *cfg;

	if (text == NULL) {
		if (errs != NULL)
			buf_printf(errs, "%s: %s\n", path, why);
		return NULL;
	}
	cfg = load(text, path, errs);
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
		cfg = load(b.p, "embedded default", errs);
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

	if (parse_listen(listen, host, sizeof host, &port) < 0) {
		if (errs != NULL)
			buf_printf(errs, "--listen: '%s' is not ADDR:PORT (127.0.0.1:8080, [::1]:8080, :8080)\n", listen);
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
	if (cfg == NULL)
		return;
	storage_free(cfg->storage);
	free(cfg);
}

/* ---- lookups ------------------------------------------------------------------------------- */

const struct cfg_provider *
config_provider(const struct config *cfg, const char *name, size_t len)
{
	return find_provider(cfg, name, len);
}

static const struct cfg_chain *
find_chain(const struct cfg_chain *c, int n, const char *name, size_t len)
{
	for (int i = 0; i < n; i++)
		if (strlen(c[i].name) == len && memcmp(c[i].name, name, len) == 0)
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

static const char *
fmt_ms(char *out, size_t n, uint64_t v)
{
	if (v >= 3600000 && v % 3600000 == 0)
		snprintf(out, n, "%lluh", (unsigned long long)(v / 3600000));
	else if (v >= 60000 && v % 60000 == 0)
		snprintf(out, n, "%llum", (unsigned long long)(v / 60000));
	else if (v >= 1000 && v % 1000 == 0)
		snprintf(out, n, "%llus", (unsigned long long)(v / 1000));
	else
		snprintf(out, n, "%llums", (unsigned long long)v);
	return out;
}

static const char *
fmt_size(char *out, size_t n, size_t v)
{
	if (v >= (1u << 30) && v % (1u << 30) == 0)
		snprintf(out, n, "%zuG", v >> 30);
	else if (v >= (1u << 20) && v % (1u << 20) == 0)
		snprintf(out, n, "%zuM", v >> 20);
	else if (v >= (1u << 10) && v % (1u << 10) == 0)
		snprintf(out, n, "%zuK", v >> 10);
	else
		snprintf(out, n, "%zu", v);
	return out;
}

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
	        fmt_size(mem, sizeof mem, s->memory), s->max_connections,
	        s->napi_keys ? "api_keys" : "none (no api_keys)");
	if (cfg->nproviders == 0 && strcmp(cfg->source, "embedded default") == 0)
		hint = " (set OPENAI_API_KEY, ANTHROPIC_API_KEY, GEMINI_API_KEY or OLLAMA_HOST)";
	fprintf(out, "providers: %d%s\n", cfg->nproviders, hint);
	for (int i = 0; i < cfg->nproviders; i++) {
		const struct cfg_provider *pr = &cfg->providers[i];

		fprintf(out, "  %-24s %-9s %s%s\n", pr->name, type_names[pr->type], pr->base_url,
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
