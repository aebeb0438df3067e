/*
 * api.c — the endpoints: which path and method go where, client auth, and the checks a request
 * body must pass before anything is planned or sent. Every refusal is an OpenAI error envelope.
 */
#include <string.h>
#include <strings.h>
#include "adapters/adapter.h"

static struct {
	const struct config *cfg;
	uint64_t             started_ms;
} A;

typedef void handler_fn(struct conn *c);

static handler_fn get_healthz, get_models, post_chat_completions;

static const struct route {
	const char *path;
	const char *method;
	int         open;     /* served without client auth */
	handler_fn *fn;
} routes[] = {
	{ "/healthz",             "GET",  1, get_healthz },
	{ "/v1/models",           "GET",  0, get_models },
	{ "/v1/chat/completions", "POST", 0, post_chat_completions },
};

void
api_init(const struct config *cfg, uint64_t started_ms)
{
	A.cfg = cfg;
	A.started_ms = started_ms;
}

/* Compare without an early exit, so the time taken does not tell how much of a key matched. */
static int
equal_consttime(const char *a, size_t alen, const char *b, size_t blen)
{
	unsigned char d = alen != blen;

	for (size_t i = 0; i < alen; i++)
		d |= (unsigned char)(a[i] ^ b[i % (blen ? blen : 1)]);
	return d == 0;
}

static int
authorized(struct conn *c)
{
	const struct http_req *r = conn_req(c);
	const struct cfg_server *sv = &A.cfg->server;
	struct span v;
	const char *tok;
	int ok = 0;

	if (sv->napi_keys == 0)
		return 1;
	if (!http_header(r, "authorization", &v) || v.len < 7 ||
	    strncasecmp(r->base + v.off, "Bearer ", 7) != 0)
		return 0;
	tok = r->base + v.off + 7;
	for (int i = 0; i < sv->napi_keys; i++)
		ok |= equal_consttime(tok, v.len - 7, sv->api_keys[i], strlen(sv->api_keys[i]));
	return ok;
}

void
api_dispatch(struct conn *c)
{
	const struct http_req *r = conn_req(c);
	struct span path = http_path(r);
	const struct route *match = NULL;
	char allow[64] = "";

	for (size_t i = 0; i < NELEM(routes); i++) {
		if (path.len != strlen(routes[i].path) ||
		    memcmp(r->base + path.off, routes[i].path, path.len) != 0)
			continue;
		if (http_method_is(r, routes[i].method)) {
			match = &routes[i];
			break;
		}
		snprintf(allow, sizeof allow, "Allow: %s\r\n", routes[i].method);
	}
	if (match == NULL && allow[0]) {
		conn_error_hdr(c, 405, allow, "invalid_request_error", "method_not_allowed", NULL,
		    "%s is not allowed on %.*s", http_method_name(r), (int)path.len, r->base + path.off);
		return;
	}
	if (match == NULL) {
		conn_error(c, 404, "invalid_request_error", "not_found", NULL, "no such endpoint: %s %.*s",
		    http_method_name(r), (int)(path.len > 200 ? 200 : path.len), r->base + path.off);
		return;
	}
	if (!match->open && !authorized(c)) {
		conn_error(c, 401, "invalid_request_error", "invalid_api_key", NULL,
		    "missing or invalid API key: send 'Authorization: Bearer <key>'");
		return;
	}
	match->fn(c);
}

/* ---- GET /healthz ---- */

static void
get_healthz(struct conn *c)
{
	struct mem_stats ms;
	struct conn_stats cs;
	char body[512];
	int n, draining = conn_draining();

	mem_get_stats(&ms);
	conn_get_stats(&cs);
	n = snprintf(body, sizeof body,
	    "{\"status\":\"%s\",\"version\":\"%s\",\"uptime_s\":%llu,\"connections\":%d,"
	    "\"requests\":%llu,\"memory\":{\"in_use\":%zu,\"reserved\":%zu,\"high_water\":%zu,"
	    "\"refusals\":%llu}}",
	    draining ? "draining" : "ok", SLUICE_VERSION,
	    (unsigned long long)((loop_clock_ms() - A.started_ms) / 1000), cs.open,
	    (unsigned long long)cs.requests, ms.in_use, ms.reserved, ms.high_water,
	    (unsigned long long)ms.refusals);
	conn_reply(c, draining ? 503 : 200, "application/json", NULL, body, (size_t)n);
}

/* ---- GET /v1/models ---- */

static int
models_append(struct buf *b, const struct cfg_chain *ch, int n, int *first)
{
	int rc = BUF_OK;

	for (int i = 0; i < n && rc == BUF_OK; i++) {
		rc = buf_puts(b, *first ? "{\"id\":" : ",{\"id\":");
		rc = rc ? rc : json_escape(b, ch[i].name, strlen(ch[i].name));
		rc = rc ? rc : buf_puts(b, ",\"object\":\"model\",\"created\":0,\"owned_by\":\"sluice\"}");
		*first = 0;
	}
	return rc;
}

static void
get_models(struct conn *c)
{
	const struct config *cfg = A.cfg;
	struct buf b;
	int first = 1, rc;

	buf_init(&b, 64 * 1024 + (size_t)(cfg->nmodels + cfg->nroutes) * 512);
	rc = buf_puts(&b, "{\"object\":\"list\",\"data\":[");
	rc = rc ? rc : models_append(&b, cfg->models, cfg->nmodels, &first);
	rc = rc ? rc : models_append(&b, cfg->routes, cfg->nroutes, &first);
	rc = rc ? rc : buf_puts(&b, "]}");
	if (rc != BUF_OK)
		conn_error(c, 503, "server_error", "overloaded", NULL, "the gateway is out of memory; retry shortly");
	else
		conn_reply(c, 200, "application/json", NULL, b.data, b.len);
	buf_free(&b);
}

/* ---- POST /v1/chat/completions ---- */

#define OUT_OF_MEMORY "the gateway is out of memory; retry shortly"

/* Read and check the client's request into r. 0, or -1 once the client has been answered. */
static int
read_chat_request(struct conn *c, struct chat_req *r)
{
	const struct http_req *h = conn_req(c);
	struct json *j = &r->j;
	int rc, messages, t;

	r->body = h->body.data ? h->body.data : "";
	r->len = h->body.len;
	rc = json_parse(j, conn_arena(c), r->body, r->len);
	if (rc == -2) {
		conn_error(c, 503, "server_error", "overloaded", NULL, OUT_OF_MEMORY);
		return -1;
	}
	if (rc < 0 || j->tok[0].type != JSMN_OBJECT) {
		conn_error(c, 400, "invalid_request_error", NULL, NULL,
		    "the request body is not valid JSON (it must be one JSON object)");
		return -1;
	}
	r->model = json_find(j, 0, "model");
	if (r->model < 0 || j->tok[r->model].type != JSMN_STRING || j->tok[r->model].end == j->tok[r->model].start) {
		conn_error(c, 400, "invalid_request_error", NULL, "model",
		    "you must provide a model parameter (a non-empty string)");
		return -1;
	}
	messages = json_find(j, 0, "messages");
	if (messages < 0 || j->tok[messages].type != JSMN_ARRAY) {
		conn_error(c, 400, "invalid_request_error", NULL, "messages",
		    "'messages' is required and must be an array");
		return -1;
	}
	t = json_find(j, 0, "stream");
	r->stream = t >= 0 && json_eq_literal(j, t, "true");
	r->stream_options = json_find(j, 0, "stream_options");
	if (r->stream_options >= 0 && j->tok[r->stream_options].type != JSMN_OBJECT)
		r->stream_options = -1; /* null: as if absent */
	t = json_find(j, r->stream_options, "include_usage");
	r->include_usage = r->stream && t >= 0 && json_eq_literal(j, t, "true");
	return 0;
}

static void
post_chat_completions(struct conn *c)
{
	struct arena *a = conn_arena(c);
	struct exchange *x = arena_alloc(a, sizeof *x);
	struct chat_req *r = arena_alloc(a, sizeof *r);
	struct plan plan;
	const jsmntok_t *m;
	char name[512], why[256];
	size_t len;
	int rc;

	if (x == NULL || r == NULL) {
		conn_error(c, 503, "server_error", "overloaded", NULL, OUT_OF_MEMORY);
		return;
	}
	memset(x, 0, sizeof *x);
	memset(r, 0, sizeof *r);
	if (read_chat_request(c, r) < 0)
		return;
	m = &r->j.tok[r->model];
	len = json_unescape(r->body + m->start, (size_t)(m->end - m->start), name, sizeof name);
	for (size_t i = 0; i < len; i++) {
		if ((unsigned char)name[i] < 0x20 || name[i] == 0x7f) {
			/* It would end up in headers (x-sluice-model) and upstream URLs. */
			conn_error(c, 400, "invalid_request_error", NULL, "model",
			    "the model name contains a control character");
			return;
		}
	}
	if ((rc = router_plan(A.cfg, name, len, r, a, &plan, why, sizeof why)) < 0) {
		if (rc == -2)
			conn_error(c, 503, "server_error", "overloaded", NULL, OUT_OF_MEMORY);
		else if (rc == -3)
			conn_error(c, 400, "invalid_request_error", "unsupported_capability", "model", "%s", why);
		else
			conn_error(c, 404, "invalid_request_error", "model_not_found", "model",
			    "the model '%.200s' does not exist: ask for a configured model, a route, or provider/model", name);
		return;
	}
	x->sink = conn_sink(c);
	x->arena = a;
	x->cfg = A.cfg;
	x->req = r;
	x->public_model = r->body + m->start - 1; /* the client's own bytes, quotes included */
	x->public_model_len = (size_t)(m->end - m->start) + 2;
	conn_set_handler(c, &exchange_handler, x);
	exchange_run(x, &plan);
}
