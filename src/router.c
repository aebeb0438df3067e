/*
 * router.c — the attempt chain, computed before anything is sent, and what each failure means
 * for it (DESIGN.md §4).
 *
 * router_plan(): a [model.*] gives its targets in order; a [route.*] ranks its candidates per
 * request by cost (the price table and the request's size), speed (live figures measured here:
 * moving averages of time to first token and output tokens per second, with the route's priors
 * until measured) or a weighted blend of both; `provider/model` is a chain of one. Targets whose
 * circuit breaker is open are dropped (if all are, the one whose cooldown ends first stays),
 * and a chain declared without tools or images refuses requests that need them. The chain does
 * not change afterwards.
 *
 * router_action(): the failure table — retry the same target, move to the next, or stop and
 * answer the client — narrowed by the chain's fallback_on.
 *
 * Per-target state (breaker, speed figures) lives in a fixed table from mem, made at start for
 * the configured targets; targets addressed directly as provider/model join it while it has room.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "adapters/adapter.h"

#define STATS_MAX    1024
#define EWMA_ALPHA   0.3
#define DEFAULT_OUT  512   /* output tokens assumed when the request sets no max */

struct target_stats {
	const struct cfg_provider *provider;
	char                       model[160];
	/* circuit breaker */
	int                        failures;       /* consecutive, of provider-side classes */
	uint64_t                   open_until;     /* ms; 0 when closed */
	int                        probing;        /* half-open: one request let through */
	/* speed */
	double                     ttft_ms, tps;
	int                        measured_ttft, measured_tps;
};

static struct {
	const struct config *cfg;
	struct target_stats *stats;
	int                  nstats;
} R;

/* ---- per-target state ---- */

static struct target_stats *
stats_for(const struct cfg_provider *p, const char *model)
{
	for (int i = 0; i < R.nstats; i++)
		if (R.stats[i].provider == p && strcmp(R.stats[i].model, model) == 0)
			return &R.stats[i];
	if (R.stats == NULL || R.nstats == STATS_MAX || strlen(model) >= sizeof R.stats[0].model)
		return NULL; /* untracked: no breaker, priors for speed */
	memset(&R.stats[R.nstats], 0, sizeof R.stats[0]);
	R.stats[R.nstats].provider = p;
	strcpy(R.stats[R.nstats].model, model);
	return &R.stats[R.nstats++];
}

int
router_init(const struct config *cfg)
{
	R.cfg = cfg;
	R.stats = mem_calloc(STATS_MAX, sizeof *R.stats);
	if (R.stats == NULL)
		return -1;
	for (int i = 0; i < cfg->nmodels; i++)
		for (int k = 0; k < cfg->models[i].ntargets; k++)
			stats_for(cfg->models[i].targets[k].provider, cfg->models[i].targets[k].model);
	for (int i = 0; i < cfg->nroutes; i++)
		for (int k = 0; k < cfg->routes[i].ntargets; k++)
			stats_for(cfg->routes[i].targets[k].provider, cfg->routes[i].targets[k].model);
	return 0;
}

/* ---- the failure table ---- */

static const enum router_action actions[] = {
	[FAIL_CONNECT] = ROUTE_RETRY,      [FAIL_TLS] = ROUTE_NEXT,
	[FAIL_TIMEOUT_HEAD] = ROUTE_RETRY, [FAIL_TIMEOUT_FIRST_TOKEN] = ROUTE_RETRY,
	[FAIL_408] = ROUTE_RETRY, [FAIL_409] = ROUTE_RETRY, [FAIL_429] = ROUTE_RETRY,
	[FAIL_500] = ROUTE_RETRY, [FAIL_502] = ROUTE_RETRY, [FAIL_503] = ROUTE_RETRY,
	[FAIL_504] = ROUTE_RETRY, [FAIL_529] = ROUTE_RETRY,
	[FAIL_AUTH] = ROUTE_NEXT,          /* this provider's key is wrong: retrying cannot help */
	[FAIL_MALFORMED] = ROUTE_NEXT, [FAIL_CLOSED] = ROUTE_RETRY,
	[FAIL_CLIENT] = ROUTE_STOP,        /* the request itself is wrong: it fails everywhere */
	[FAIL_OTHER_4XX] = ROUTE_STOP, [FAIL_TOO_LARGE] = ROUTE_STOP,
	[FAIL_TIMEOUT_IDLE] = ROUTE_RETRY, [FAIL_TIMEOUT_TOTAL] = ROUTE_NEXT,
	[FAIL_PROVIDER] = ROUTE_RETRY,     /* an error event before any content */
	[FAIL_NOMEM] = ROUTE_STOP,         /* our memory: another provider would not help */
};

/* The class as fallback_on names it (the classes it cannot name count as their nearest). */
static enum fail_class
named_class(enum fail_class c)
{
	switch (c) {
	case FAIL_PROVIDER:      return FAIL_500;
	case FAIL_TIMEOUT_IDLE:  return FAIL_TIMEOUT_FIRST_TOKEN;
	case FAIL_TIMEOUT_TOTAL: return FAIL_TIMEOUT_FIRST_TOKEN;
	default:                 return c;
	}
}

enum router_action
router_action(const struct plan *p, enum fail_class cls)
{
	enum router_action a = (size_t)cls < NELEM(actions) ? actions[cls] : ROUTE_STOP;
	enum fail_class n = named_class(cls);

	if (a != ROUTE_STOP && p->fallback_on != 0 && (n >= FAIL_NCLASSES || !(p->fallback_on & (1u << n))))
		return ROUTE_STOP;
	return a;
}

/* Classes that say something about the provider (they count for its breaker). */
static int
provider_fault(enum fail_class c)
{
	return c != FAIL_CLIENT && c != FAIL_OTHER_4XX && c != FAIL_TOO_LARGE && c != FAIL_NOMEM;
}

/* Full jitter: a uniform delay in [0, min(max, base * 2^n)). */
uint64_t
router_backoff(const struct plan *p, int n)
{
	uint64_t cap = p->backoff_base;

	for (int i = 0; i < n && cap < p->backoff_max; i++)
		cap *= 2;
	if (cap > p->backoff_max)
		cap = p->backoff_max;
	return cap ? (uint64_t)random() % cap : 0;
}

/* ---- breakers and speed figures ---- */

static int
breaker_open(const struct target_stats *s, uint64_t now)
{
	return s != NULL && s->open_until != 0 && (now < s->open_until || s->probing);
}

/* An attempt on t starts: a breaker past its cooldown lets this one request through. */
void
router_attempt_start(const struct target *t)
{
	struct target_stats *s = t->stats;

	if (s != NULL && s->open_until != 0 && loop_now() >= s->open_until)
		s->probing = 1;
}

void
router_report(const struct target *t, int ok, enum fail_class cls)
{
	struct target_stats *s = t->stats;
	const struct cfg_server *sv;

	if (s == NULL)
		return; /* untracked (and, in unit tests, no router_init: R.cfg is NULL) */
	sv = &R.cfg->server;
	if (ok || !provider_fault(cls)) {
		s->failures = 0;
		s->open_until = 0;
		s->probing = 0;
		return;
	}
	if (s->probing || ++s->failures >= sv->breaker_failures) {
		if (!s->probing)
			log_msg("breaker: %s/%s open for %ums after %d failures", s->provider->name, s->model,
			    sv->breaker_cooldown, s->failures);
		s->open_until = loop_now() + sv->breaker_cooldown;
		s->probing = 0;
	}
}

/* An attempt ended with no verdict on the provider (the client left, the deadline cut it): a
 * half-open probe must not keep the breaker shut for ever. */
void
router_abandon(const struct target *t)
{
	if (t->stats != NULL)
		t->stats->probing = 0;
}

void
router_observe(const struct target *t, uint64_t ttft_ms, long tokens, uint64_t gen_ms)
{
	struct target_stats *s = t->stats;

	if (s == NULL)
		return;
	s->ttft_ms = s->measured_ttft ? (1 - EWMA_ALPHA) * s->ttft_ms + EWMA_ALPHA * (double)ttft_ms : (double)ttft_ms;
	s->measured_ttft = 1;
	if (tokens > 1 && gen_ms > 0) {
		double tps = (double)tokens * 1000.0 / (double)gen_ms;
		s->tps = s->measured_tps ? (1 - EWMA_ALPHA) * s->tps + EWMA_ALPHA * tps : tps;
		s->measured_tps = 1;
	}
}

/* ---- ranking ---- */

static const struct cfg_price *
price_of(const struct target *t)
{
	size_t pl = strlen(t->provider->name);

	for (int i = 0; i < R.cfg->nprices; i++) {
		const char *k = R.cfg->prices[i].target;
		if (strncmp(k, t->provider->name, pl) == 0 && k[pl] == '/' && strcmp(k + pl + 1, t->model) == 0)
			return &R.cfg->prices[i];
	}
	return NULL;
}

/* The request's size as the ranking sees it: input tokens estimated from its bytes, output from
 * its max_tokens. */
static void
request_size(const struct chat_req *r, double *in, double *out)
{
	int m = json_find(&r->j, 0, "max_completion_tokens");

	if (m < 0)
		m = json_find(&r->j, 0, "max_tokens");
	*in = (double)r->len / 4.0;
	*out = m >= 0 && r->j.tok[m].type == JSMN_PRIMITIVE ? strtod(r->j.src + r->j.tok[m].start, NULL) : DEFAULT_OUT;
	if (*out <= 0)
		*out = DEFAULT_OUT;
}

static double
cost_of(const struct target *t, double in, double out)
{
	const struct cfg_price *p = price_of(t);

	return p ? (in * p->input + out * p->output) / 1e6 : HUGE_VAL; /* no price: ranked last */
}

/* Expected seconds to answer: first token, then the output at the measured rate. */
static double
time_of(const struct target *t, const struct cfg_chain *ch, double out)
{
	const struct target_stats *s = t->stats;
	double ttft = s && s->measured_ttft ? s->ttft_ms : ch->prior_ttft;
	double tps = s && s->measured_tps ? s->tps : ch->prior_tps;

	return ttft / 1000.0 + out / (tps > 0 ? tps : 1);
}

static void
normalise(double *v, int n)
{
	double lo = HUGE_VAL, hi = -HUGE_VAL;

	for (int i = 0; i < n; i++) {
		if (v[i] == HUGE_VAL)
			continue;
		lo = v[i] < lo ? v[i] : lo;
		hi = v[i] > hi ? v[i] : hi;
	}
	for (int i = 0; i < n; i++)
		v[i] = v[i] == HUGE_VAL ? 1.0 + 1e-9 : hi > lo ? (v[i] - lo) / (hi - lo) : 0;
}

/* Order the candidates by score, lowest first; equal scores keep the configured order. */
static void
rank(struct target *t, int n, const struct cfg_chain *ch, const struct chat_req *r, struct arena *a)
{
	double in, out, *cost = arena_alloc(a, (size_t)n * sizeof *cost), *speed = arena_alloc(a, (size_t)n * sizeof *speed);

	if (cost == NULL || speed == NULL)
		return; /* keep the configured order */
	request_size(r, &in, &out);
	for (int i = 0; i < n; i++) {
		cost[i] = cost_of(&t[i], in, out);
		speed[i] = time_of(&t[i], ch, out);
		t[i].score = ch->policy == POLICY_COST ? cost[i] : speed[i];
	}
	if (ch->policy == POLICY_BALANCED) {
		normalise(cost, n);
		normalise(speed, n);
		for (int i = 0; i < n; i++)
			t[i].score = ch->weight_cost * cost[i] + ch->weight_speed * speed[i];
	}
	for (int i = 1; i < n; i++) { /* insertion sort: stable, and chains are short */
		struct target k = t[i];
		int j = i - 1;
		while (j >= 0 && t[j].score > k.score) {
			t[j + 1] = t[j];
			j--;
		}
		t[j + 1] = k;
	}
}

/* ---- planning ---- */

static const struct adapter *
adapter_for(enum provider_type type)
{
	switch (type) {
	case PROVIDER_ANTHROPIC: return &adapter_anthropic;
	case PROVIDER_GEMINI:    return &adapter_gemini;
	case PROVIDER_OLLAMA:    return &adapter_ollama;
	case PROVIDER_AZURE:     return &adapter_azure;
	case PROVIDER_OPENAI:
	default:
		return &adapter_openai;
	}
}

static struct target
target_of(const struct cfg_provider *p, const char *model)
{
	struct target t = { .provider = p, .model = model, .adapter = adapter_for(p->type),
	    .ca = upstream_ca_for(p), .stats = stats_for(p, model) };
	return t;
}

/* Does the request use tools, or images in any message? */
static void
request_needs(const struct chat_req *r, int *tools, int *images)
{
	const struct json *j = &r->j;
	int t = json_find(j, 0, "tools"), m = json_find(j, 0, "messages");

	*tools = t >= 0 && j->tok[t].type == JSMN_ARRAY && j->tok[t].size > 0;
	*images = 0;
	for (int i = m + 1, k = 0; m >= 0 && k < j->tok[m].size && !*images; k++, i = json_skip(j, i)) {
		int c = json_find(j, i, "content");
		for (int p = c + 1, q = 0; c >= 0 && j->tok[c].type == JSMN_ARRAY && q < j->tok[c].size; q++, p = json_skip(j, p)) {
			int ty = json_find(j, p, "type");
			if (ty >= 0 && json_eq(j, ty, "image_url"))
				*images = 1;
		}
	}
}

static void
plan_defaults(struct plan *p, const struct cfg_chain *ch)
{
	p->chain = ch;
	p->retries = ch ? ch->retries : 0;
	p->deadline = ch ? ch->deadline : 60000;
	p->backoff_base = ch ? ch->backoff_base : 250;
	p->backoff_max = ch ? ch->backoff_max : 5000;
	p->fallback_on = ch ? ch->fallback_on : 0;
	p->max_attempts = ch && ch->is_route && ch->max_attempts > 0 ? ch->max_attempts : 0;
}

static uint64_t
reopens_at(const struct target *t)
{
	return t->stats ? t->stats->open_until : 0;
}

/* Drop targets whose breaker is open; if that drops all, keep the one reopening first. */
static void
drop_open(struct plan *p)
{
	uint64_t now = loop_now();
	int n = 0, first = 0;

	for (int i = 0; i < p->ntargets; i++) {
		if (reopens_at(&p->targets[i]) < reopens_at(&p->targets[first]))
			first = i;
		if (!breaker_open(p->targets[i].stats, now))
			p->targets[n++] = p->targets[i];
	}
	if (n == 0 && p->ntargets > 0) {
		p->targets[0] = p->targets[first];
		n = 1;
	}
	p->ntargets = n;
}

/*
 * The chain for the model the client named (unescaped). 0; -1 if nothing is called that; -2
 * when memory is short; -3 if the chain cannot serve this request (why says so).
 */
int
router_plan(const struct config *cfg, const char *name, size_t len, const struct chat_req *req,
    struct arena *a, struct plan *out, char *why, size_t whylen)
{
	const struct cfg_chain *ch = config_model(cfg, name, len);
	int tools, images;

	if (ch == NULL)
		ch = config_route(cfg, name, len);
	plan_defaults(out, ch);
	if (ch != NULL) {
		request_needs(req, &tools, &images);
		if ((tools && ch->tools == 0) || (images && ch->images == 0)) {
			snprintf(why, whylen, "'%s' is declared without %s support", ch->name, tools && ch->tools == 0 ? "tool" : "image");
			return -3;
		}
		if ((out->targets = arena_alloc(a, (size_t)ch->ntargets * sizeof *out->targets)) == NULL)
			return -2;
		for (int i = 0; i < ch->ntargets; i++)
			out->targets[i] = target_of(ch->targets[i].provider, ch->targets[i].model);
		out->ntargets = ch->ntargets;
		if (ch->is_route)
			rank(out->targets, out->ntargets, ch, req, a);
		drop_open(out);
		return 0;
	}
	/* provider/model, split at the first '/': the model part may itself hold slashes. */
	{
		const char *slash = memchr(name, '/', len);
		const struct cfg_provider *p;
		const char *model;

		if (slash == NULL || slash == name || slash + 1 == name + len ||
		    (p = config_provider(cfg, name, (size_t)(slash - name))) == NULL)
			return -1;
		model = arena_strndup(a, slash + 1, (size_t)(name + len - slash - 1));
		out->targets = arena_alloc(a, sizeof *out->targets);
		if (model == NULL || out->targets == NULL)
			return -2;
		out->targets[0] = target_of(p, model);
		out->ntargets = 1;
	}
	return 0;
}
