/*
 * router.c — the attempt chain, computed before anything is sent (DESIGN.md §4): a [model.*]
 * gives its targets in order, a [route.*] its candidates, and `provider/model` a chain of one.
 */
#include <string.h>
#include "adapters/adapter.h"

static const struct adapter *
adapter_for(enum provider_type t)
{
	switch (t) {
	case PROVIDER_OPENAI:
	default:
		return &adapter_openai;
	}
}

static struct target
target_of(const struct cfg_target *t)
{
	struct target out = { .provider = t->provider, .model = t->model,
	    .adapter = adapter_for(t->provider->type), .ca = upstream_ca_for(t->provider) };
	return out;
}

int
router_plan(const struct config *cfg, const char *name, size_t len, struct arena *a, struct plan *out)
{
	const struct cfg_chain *ch = config_model(cfg, name, len);
	const char *slash;

	if (ch == NULL)
		ch = config_route(cfg, name, len);
	if (ch != NULL) {
		out->targets = arena_alloc(a, (size_t)ch->ntargets * sizeof *out->targets);
		if (out->targets == NULL)
			return -2;
		for (int i = 0; i < ch->ntargets; i++)
			out->targets[i] = target_of(&ch->targets[i]);
		out->ntargets = ch->ntargets;
		return 0;
	}
	/* provider/model, split at the first '/': the model part may itself hold slashes. */
	slash = memchr(name, '/', len);
	if (slash == NULL || slash == name || slash + 1 == name + len)
		return -1;
	{
		const struct cfg_provider *p = config_provider(cfg, name, (size_t)(slash - name));
		struct cfg_target t;

		if (p == NULL)
			return -1;
		t.provider = p;
		t.model = arena_strndup(a, slash + 1, (size_t)(name + len - slash - 1));
		out->targets = arena_alloc(a, sizeof *out->targets);
		if (t.model == NULL || out->targets == NULL)
			return -2;
		out->targets[0] = target_of(&t);
		out->ntargets = 1;
	}
	return 0;
}
