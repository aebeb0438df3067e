/*
 * config_int.h — what the three config files share and no other module needs (the public
 * interface is the config section of sluice.h). Read them in this order:
 *   config.c        loading: the passes over the text, errors, the embedded default, lookups
 *   config_keys.c   every key: its table, setter, bounds and default, and the checks across keys
 *   config_value.c  text to values: sizes, durations, decimals, booleans, listen, ${VAR}
 */
#ifndef CONFIG_INT_H
#define CONFIG_INT_H

#include <setjmp.h>
#include "sluice.h"

#define LISTEN_FORMS "ADDR:PORT (127.0.0.1:8080, [::1]:8080, :8080)"

/* A growable malloc'd string, for values, the file's text and the embedded default. */
struct sb {
	char  *p;
	size_t len, cap;
};

enum sec_kind { SEC_BAD, SEC_SERVER, SEC_PROVIDER, SEC_MODEL, SEC_ROUTE, SEC_PRICE };
#define KEYS_MAX 16 /* keys in one section kind's table */

struct section {
	const char   *name;     /* the text between [ and ] */
	const char   *rest;     /* the name after its kind's prefix: "openai" in [provider.openai] */
	int           line;
	enum sec_kind kind;     /* SEC_BAD: reported already (or a broken header); keys ignored */
	void         *obj;      /* the struct its keys fill */
	int           key_line[KEYS_MAX]; /* where each key of the kind's table was set; 0: not */
};

/* One load in progress. Running out of memory anywhere longjmps to oom. */
struct parser {
	struct config  *cfg;
	const char     *text;
	struct section *secs;
	int             nsecs, cur; /* cur: the section the last key was in */
	struct error   *errs;       /* config.c's */
	int             nerrs;
	struct sb       value;      /* the current value, expanded */
	int             line;       /* of the current key */
	jmp_buf         oom;
};

/* config.c */
void *p_alloc(struct parser *p, size_t n);  /* zeroed, in the config's storage */
char *p_strndup(struct parser *p, const char *s, size_t n);
char *p_strdup(struct parser *p, const char *s);
void  perr(struct parser *p, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* config_keys.c */
extern const char *const provider_type_names[];  /* by enum provider_type */
extern const char *const policy_names[];         /* by enum route_policy */
int                 keys_find(enum sec_kind kind, const char *name); /* table index, or -1 */
const char         *keys_closest(enum sec_kind kind, const char *name); /* "did you mean" */
void                keys_set(struct parser *p, struct section *s, int i, const char *value);
void                keys_finalize(struct parser *p, const struct section *s);
/* Structs with every default, before any key is set. */
struct cfg_server   keys_server(void);
struct cfg_provider keys_provider(const char *name, int line);
struct cfg_chain    keys_chain(const char *name, int is_route, int line);

/* config_value.c — 0 on success, -1 on a bad value (or out of memory, for sb). */
int         sb_append(struct sb *b, const char *s, size_t n);
int         sb_puts(struct sb *b, const char *s);
int         value_uint(const char *s, uint64_t *out);  /* digits only */
int         value_decimal(const char *s, double *out);
int         value_bool(const char *s, int *out);
int         value_name(const char *const *names, const char *s); /* index in a NULL-ended list */
int         value_target(const char *s); /* "provider/model": the provider's length, or -1 */
int         value_listen(const char *s, char *host, size_t hostlen, int *port);
/* ${VAR} into out; on -1, *err says why, or is left NULL when memory ran out. */
int         value_expand(const char *s, struct sb *out, const char **err);
typedef const char *value_fmt(char *out, size_t n, uint64_t v); /* v as text in out; out */
const char *value_fmt_size(char *out, size_t n, uint64_t v);  /* "1M", "16K", "100" */
const char *value_fmt_ms(char *out, size_t n, uint64_t v);    /* "1h", "30s", "250ms" */
const char *value_fmt_uint(char *out, size_t n, uint64_t v);  /* "100" */

#endif
