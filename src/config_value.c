/*
 * config_value.c — the text of one config value turned into a value (and numbers back into
 * text, for messages and the summary): whole numbers with a unit (sizes, durations), decimals,
 * booleans, a name from a list, a listen address, and ${VAR} expansion from the environment.
 * Nothing here knows about sections or keys (config_keys.c) or reports errors: each function
 * answers 0 or -1 and the caller words the message.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "config_int.h"

/* ---- sb: a growable malloc'd string --------------------------------------------------------- */

int
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

int
sb_puts(struct sb *b, const char *s)
{
	return sb_append(b, s, strlen(s));
}

/* ---- whole numbers with a unit: one table per kind serves both reading and printing -------- */

struct unit {
	const char *suffix;
	uint64_t    scale;
};

/* Largest first, so printing picks the largest unit that divides the value. */
static const struct unit size_units[] = { { "G", 1u << 30 }, { "M", 1u << 20 }, { "K", 1u << 10 },
                                          { "", 1 } };
static const struct unit ms_units[] = { { "h", 3600000 }, { "m", 60000 }, { "s", 1000 }, { "ms", 1 } };
static const struct unit no_unit[] = { { "", 1 } };

/*
 * Digits (no sign, space or hex), then one of the units' suffixes — matched exactly, or in
 * either case if fold — scaled; -1 on anything else, or when the result would pass max.
 */
static int
parse_scaled(const char *s, const struct unit *u, size_t nu, int fold, uint64_t max, uint64_t *out)
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
	for (size_t i = 0; i < nu; i++) {
		if ((fold ? strcasecmp(s, u[i].suffix) : strcmp(s, u[i].suffix)) == 0) {
			if (v > max / u[i].scale)
				return -1;
			*out = v * u[i].scale;
			return 0;
		}
	}
	return -1;
}

static const char *
fmt_scaled(char *out, size_t n, uint64_t v, const struct unit *u, size_t nu)
{
	size_t i = 0;

	while (i + 1 < nu && !(v >= u[i].scale && v % u[i].scale == 0))
		i++;
	snprintf(out, n, "%llu%s", (unsigned long long)(v / u[i].scale), u[i].suffix);
	return out;
}

int
value_uint(const char *s, uint64_t *out)
{
	return parse_scaled(s, no_unit, NELEM(no_unit), 0, UINT64_MAX, out);
}

int
config_parse_size(const char *s, size_t *out)
{
	uint64_t v;

	if (parse_scaled(s, size_units, NELEM(size_units), 1, SIZE_MAX, &v) < 0)
		return -1;
	*out = (size_t)v;
	return 0;
}

/* A bare "0" is allowed (zero is zero in every unit, and "stream_heartbeat = 0" reads well);
 * any other number needs its unit, since "timeout = 30" could mean seconds or milliseconds. */
int
config_parse_duration(const char *s, uint32_t *ms)
{
	uint64_t v;

	if (*s != '\0' && s[strspn(s, "0")] == '\0')
		v = 0;
	else if (parse_scaled(s, ms_units, NELEM(ms_units), 0, UINT32_MAX, &v) < 0)
		return -1;
	*ms = (uint32_t)v;
	return 0;
}

const char *
value_fmt_size(char *out, size_t n, uint64_t v)
{
	return fmt_scaled(out, n, v, size_units, NELEM(size_units));
}

const char *
value_fmt_ms(char *out, size_t n, uint64_t v)
{
	return fmt_scaled(out, n, v, ms_units, NELEM(ms_units));
}

const char *
value_fmt_uint(char *out, size_t n, uint64_t v)
{
	return fmt_scaled(out, n, v, no_unit, NELEM(no_unit));
}

/* ---- decimals, booleans, names ---------------------------------------------------------------- */

/* A non-negative decimal: digits with at most one '.', no sign, exponent, hex, inf or nan. */
int
value_decimal(const char *s, double *out)
{
	int digits = 0, dots = 0;

	for (const char *c = s; *c; c++) {
		if (isdigit((unsigned char)*c))
			digits++;
		else if (*c != '.' || dots++ > 0)
			return -1;
	}
	if (digits == 0)
		return -1;
	*out = strtod(s, NULL);
	return isfinite(*out) ? 0 : -1;
}

int
value_bool(const char *s, int *out)
{
	static const char *const yes[] = { "true", "yes", "on", "1", NULL };
	static const char *const no[] = { "false", "no", "off", "0", NULL };

	if (value_name(yes, s) >= 0)
		return *out = 1, 0;
	if (value_name(no, s) >= 0)
		return *out = 0, 0;
	return -1;
}

int
value_name(const char *const *names, const char *s)
{
	for (int i = 0; names[i] != NULL; i++)
		if (strcmp(names[i], s) == 0)
			return i;
	return -1;
}

/* "provider/model", split at the first '/' (a model's own name may hold more): the length of
 * the provider's name, or -1. */
int
value_target(const char *s)
{
	size_t n = strcspn(s, "/");

	if (n == 0 || s[n] == '\0' || s[n + 1] == '\0' || strpbrk(s, " \t") != NULL)
		return -1;
	return (int)n;
}

/* ---- listen --------------------------------------------------------------------------------- */

/*
 * "ADDR:PORT" with a numeric address: "127.0.0.1:8080", "[::1]:8080", ":8080" (every IPv4
 * address) or "localhost:8080". Port 0 asks the kernel for a free port. host gets the bare
 * address ("::1"), so a ':' in host means IPv6.
 */
int
value_listen(const char *s, char *host, size_t hostlen, int *port)
{
	const char *addr, *end, *colon;
	unsigned char sa[16];
	uint64_t n;
	char tmp[64];

	if (*s == '[') {
		end = strchr(s, ']');
		if (end == NULL || end[1] != ':')
			return -1;
		addr = s + 1;
		colon = end + 1;
	} else {
		colon = end = strrchr(s, ':');
		if (colon == NULL)
			return -1;
		addr = s;
	}
	if ((size_t)(end - addr) >= sizeof tmp || value_uint(colon + 1, &n) < 0 || n > 65535)
		return -1;
	*port = (int)n;
	memcpy(tmp, addr, (size_t)(end - addr));
	tmp[end - addr] = '\0';
	if (*s != '[' && *tmp == '\0')
		strcpy(tmp, "0.0.0.0");
	else if (*s != '[' && strcmp(tmp, "localhost") == 0)
		strcpy(tmp, "127.0.0.1");
	else if (inet_pton(*s == '[' ? AF_INET6 : AF_INET, tmp, sa) != 1)
		return -1;
	if (strlen(tmp) >= hostlen)
		return -1;
	strcpy(host, tmp);
	return 0;
}

/* ---- ${VAR} expansion ----------------------------------------------------------------------- */

static int
is_var_start(const char *s, size_t i, size_t n)
{
	return s[i] == '$' && i + 1 < n && s[i + 1] == '{';
}

/* The offset of the '}' closing a default that starts at s[i], skipping nested ${...}; or -1. */
static long
closing_brace(const char *s, size_t n, size_t i)
{
	int depth = 0;

	for (; i < n; i++) {
		if (is_var_start(s, i, n)) {
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

		for (lit = i; lit < n && !is_var_start(s, lit, n); lit++)
			;
		if (sb_append(out, s + i, lit - i) < 0)
			return -1;
		if (lit == n)
			break;
		if (expand_var(s + lit + 2, n - lit - 2, out, depth, &used, err) < 0)
			return -1;
		i = lit + 2 + used;
	}
	return 0;
}

/* out is NUL-terminated, even when empty. */
int
value_expand(const char *s, struct sb *out, const char **err)
{
	*err = NULL;
	out->len = 0;
	if (expand(s, strlen(s), out, 0, err) < 0 || sb_append(out, "", 0) < 0)
		return -1;
	return 0;
}

int
config_expand_env(const char *in, struct buf *out, char *err, size_t errlen)
{
	struct sb b = { 0 };
	const char *why;
	int rc = value_expand(in, &b, &why);

	if (rc < 0 && why == NULL)
		why = "out of memory";
	if (rc == 0 && buf_append(out, b.p, b.len) != BUF_OK)
		rc = -1, why = "value too long";
	if (rc < 0)
		snprintf(err, errlen, "%s", why);
	free(b.p);
	return rc;
}
