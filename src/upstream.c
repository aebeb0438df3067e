/*
 * upstream.c — HTTP requests to providers: libcurl's multi interface driven by our event loop
 * (curl's docs/examples/ephiperfifo.c pattern). libcurl tells us which sockets to watch
 * (CURLMOPT_SOCKETFUNCTION) and when to call it back (CURLMOPT_TIMERFUNCTION); we drive it with
 * curl_multi_socket_action and reap finished transfers with curl_multi_info_read. All of
 * libcurl's memory comes from mem (curl_global_init_mem), so the process keeps its ceiling.
 *
 * One multi handle for the process, so connections to a provider are pooled and reused: with
 * BearSSL every new TLS connection parses the whole CA bundle, which is the difference between
 * about a millisecond and tens of milliseconds per request.
 *
 * Our own timers, not libcurl's, bound the phases a client cares about — until the response
 * head (timeout_first_byte), between body chunks (timeout_idle), the whole transfer
 * (timeout_total) — so a failure says which phase ran out. One timer per transfer, armed at the
 * nearest deadline and re-armed lazily when it fires, so a chunk costs no heap operation.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>
#include <curl/curl.h>
#include "sluice.h"

#define HANDLE_CACHE     64
#define IDLE_CONNECTIONS 64  /* provider connections kept open for reuse (each costs memory) */
#define URL_CACHE        32  /* provider URLs kept parsed */

/*
 * A provider URL parsed once (CURLOPT_CURLU), not on every request: libcurl's parse of a URL
 * string, ~5,800 instructions, was a twentieth of a proxied request. A few URLs serve all the
 * traffic (one per provider, or per model and mode for Gemini and Azure), so a small table,
 * found by hash; an entry in use by a transfer is never replaced (libcurl reads it when the
 * transfer starts). When every entry is in use, or the URL does not parse, the transfer gets the
 * string and libcurl parses it (and words the error) as before.
 */
struct parsed_url {
	char    *url;
	uint32_t hash;
	int      users;  /* transfers started with it and not finished */
	CURLU   *h;
};

static struct {
	CURLM        *multi;
	struct timer  timer;
	struct upstream *resume;          /* transfers to unpause on the next tick */
	CURL         *cache[HANDLE_CACHE]; /* easy handles kept for reuse */
	int           ncache;
	int           running;
	int           transfers;          /* added to the multi handle and not yet removed */
	int           idle_max;           /* provider connections kept idle at most */
	struct tls_ca ca;                 /* the embedded bundle */
	struct tls_ca *provider_ca;       /* per provider, by index; .pem NULL if none */
	const struct config *cfg;
	int           no_proxy_env;       /* no proxy variable is set: tell libcurl, once per request */
	struct parsed_url urls[URL_CACHE];
	int           nurls, url_hand;    /* entries filled; where the search for one to replace starts */
} U;

static void check_done(void);

/* ---- libcurl on our loop ---- */

static void
on_socket(int fd, unsigned events, void *ud)
{
	int flags = (events & LOOP_READ ? CURL_CSELECT_IN : 0) |
	    (events & LOOP_WRITE ? CURL_CSELECT_OUT : 0) | (events & LOOP_ERROR ? CURL_CSELECT_ERR : 0);

	curl_multi_socket_action(U.multi, fd, flags, &U.running);
	check_done();
}

static int
socket_cb(CURL *e, curl_socket_t s, int what, void *userp, void *socketp)
{
	unsigned ev;

	if (what == CURL_POLL_REMOVE) {
		loop_park(s); /* a provider connection between two requests stays registered */
		return 0;
	}
	ev = (what & CURL_POLL_IN ? LOOP_READ : 0) | (what & CURL_POLL_OUT ? LOOP_WRITE : 0);
	if (loop_watch(s, ev, on_socket, NULL) < 0)
		log_msg("upstream: socket %d is beyond the loop's capacity", (int)s);
	return 0;
}

static void
on_curl_timer(void *ud)
{
	curl_multi_socket_action(U.multi, CURL_SOCKET_TIMEOUT, 0, &U.running);
	check_done();
}

static int
timer_cb(CURLM *m, long ms, void *userp)
{
	if (ms < 0)
		loop_timer_cancel(&U.timer);
	else
		loop_timer_set(&U.timer, (uint64_t)ms, on_curl_timer, NULL);
	return 0;
}

/* Unpausing may make libcurl deliver data at once, so it happens here, on the loop's tick, never
 * inside a caller that is itself in the middle of writing. */
static void
resume_pending(void *ud)
{
	while (U.resume != NULL) {
		struct upstream *u = U.resume;

		U.resume = u->next_resume;
		u->resume_queued = 0;
		if (u->easy != NULL && u->paused) {
			u->paused = 0;
			u->t_last = loop_now(); /* a paused stream was not idle by its own fault */
			curl_easy_pause(u->easy, CURLPAUSE_CONT);
		}
	}
	check_done();
}

/* The trust stores: the embedded bundle, and each provider's ca_file, loaded once at start. */
static int
load_trust(const struct config *cfg, char *err, size_t errlen)
{
	if (tls_ca_load(&U.ca, NULL, err, errlen) < 0)
		return -1;
	U.cfg = cfg;
	/* From the C heap, like the config: kept for the process, and a leak checker sees the files'
	 * bytes (tls_ca_load's, also the C heap) held from here, not from inside the reservation. */
	U.provider_ca = calloc((size_t)cfg->nproviders + 1, sizeof *U.provider_ca);
	if (U.provider_ca == NULL) {
		snprintf(err, errlen, "out of memory for the providers' trust stores");
		return -1;
	}
	for (int i = 0; i < cfg->nproviders; i++) {
		const char *file = cfg->providers[i].ca_file;
		int j = 0;

		if (!file[0])
			continue;
		while (j < i && strcmp(cfg->providers[j].ca_file, file) != 0)
			j++;
		if (j < i) /* the same file: the same bytes, so libcurl parses and hashes it once */
			U.provider_ca[i] = U.provider_ca[j];
		else if (tls_ca_load(&U.provider_ca[i], file, err, errlen) < 0)
			return -1;
	}
	return 0;
}

/* The provider's own trust store, or NULL for the process's. */
const struct tls_ca *
upstream_ca_for(const struct cfg_provider *p)
{
	ptrdiff_t i = p - U.cfg->providers;

	return i >= 0 && i < U.cfg->nproviders && U.provider_ca[i].pem != NULL ? &U.provider_ca[i] : NULL;
}

/*
 * libcurl looks for a proxy in the environment on every transfer: no_proxy, NO_PROXY, then
 * http_proxy (never HTTP_PROXY: httpoxy) or https_proxy, HTTPS_PROXY, then all_proxy, ALL_PROXY
 * — up to six getenv walks of the whole environment per request. The environment does not change
 * while sluice runs, so look once: with none of them set (or all empty, which libcurl treats as
 * unset), each transfer says "no proxy" itself (CURLOPT_PROXY and CURLOPT_NOPROXY empty: what
 * libcurl concludes from such an environment); with any set, libcurl keeps doing what it does.
 */
static int
proxy_env_empty(void)
{
	static const char *const vars[] = { "http_proxy", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY",
	    "no_proxy", "NO_PROXY" };

	for (size_t i = 0; i < NELEM(vars); i++) {
		const char *v = getenv(vars[i]);

		if (v != NULL && v[0] != '\0')
			return 0;
	}
	return 1;
}

/* How many provider connections libcurl keeps: CURLMOPT_MAXCONNECTS counts those in use too (a
 * connection given back is closed while the pool holds more), so a fixed number would reuse
 * nothing once more transfers than it run at once. Those running, plus idle_max idle: libcurl
 * checks while the finishing transfer is still counted here, hence the one less. Never 0, which
 * libcurl reads as "its own default". */
static void
pool_limit(void)
{
	int n = U.transfers + U.idle_max - 1;

	curl_multi_setopt(U.multi, CURLMOPT_MAXCONNECTS, (long)(n > 0 ? n : 1));
}

int
upstream_init(const struct config *cfg, char *err, size_t errlen)
{
	int max_connections = cfg->server.max_connections;
	/* libcurl's sizes are not powers of two (an easy handle is 4,304 bytes): exact blocks. */
	CURLcode rc = curl_global_init_mem(CURL_GLOBAL_DEFAULT, mem_alloc_exact, mem_free,
	    mem_realloc_exact, mem_strdup_exact, mem_calloc_exact);

	if (rc != CURLE_OK || (U.multi = curl_multi_init()) == NULL) {
		snprintf(err, errlen, "libcurl: %s", curl_easy_strerror(rc));
		return -1;
	}
	if (load_trust(cfg, err, errlen) < 0)
		return -1;
	loop_timer_init(&U.timer);
	U.no_proxy_env = proxy_env_empty();
	curl_multi_setopt(U.multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
	curl_multi_setopt(U.multi, CURLMOPT_TIMERFUNCTION, timer_cb);
	/* Every client request holds at most one upstream connection, and idle ones are kept for
	 * reuse, up to the same bound, so the fd budget of the loop is never exceeded (at the bound,
	 * libcurl closes an idle connection to open a new one). */
	curl_multi_setopt(U.multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)max_connections);
	U.idle_max = max_connections < IDLE_CONNECTIONS ? max_connections : IDLE_CONNECTIONS;
	pool_limit();
	loop_on_tick(resume_pending, NULL);
	return 0;
}

/* ---- one transfer ---- */

/* Which deadline is nearest now, and what failing it means. */
static uint64_t
next_deadline(const struct upstream *u, enum fail_class *cls)
{
	uint64_t d = u->t_start + u->to_total;

	*cls = FAIL_TIMEOUT_TOTAL;
	if (!u->head_done && u->t_start + u->to_first_byte < d) {
		d = u->t_start + u->to_first_byte;
		*cls = FAIL_TIMEOUT_HEAD;
	} else if (u->head_done && !u->paused && u->t_last + u->to_idle < d) {
		d = u->t_last + u->to_idle;
		*cls = FAIL_TIMEOUT_IDLE;
	}
	return d;
}

static void arm_timer(struct upstream *u);

static uint32_t
url_hash(const char *s, size_t n)
{
	uint32_t h = 2166136261u; /* FNV-1a */

	for (size_t i = 0; i < n; i++)
		h = (h ^ (unsigned char)s[i]) * 16777619u;
	return h;
}

/* The entry to fill for a new URL: an empty one, or one no transfer uses; NULL if none. */
static struct parsed_url *
url_slot(void)
{
	if (U.nurls < URL_CACHE)
		return &U.urls[U.nurls++];
	for (int k = 0; k < URL_CACHE; k++) {
		struct parsed_url *e = &U.urls[(U.url_hand + k) % URL_CACHE];

		if (e->users == 0) {
			U.url_hand = (int)(e - U.urls + 1) % URL_CACHE;
			curl_url_cleanup(e->h);
			mem_free(e->url);
			memset(e, 0, sizeof *e);
			return e;
		}
	}
	return NULL;
}

/* url, parsed, with one more user; NULL when it is not cached and cannot be. */
static struct parsed_url *
url_take(const char *url)
{
	size_t n = strlen(url);
	uint32_t h = url_hash(url, n);
	struct parsed_url *e;

	for (int i = 0; i < U.nurls; i++) {
		e = &U.urls[i];
		if (e->hash == h && e->h != NULL && strcmp(e->url, url) == 0) {
			e->users++;
			return e;
		}
	}
	if ((e = url_slot()) == NULL)
		return NULL;
	if ((e->url = mem_strdup_exact(url)) == NULL || (e->h = curl_url()) == NULL ||
	    curl_url_set(e->h, CURLUPART_URL, url, 0) != CURLUE_OK) {
		curl_url_cleanup(e->h);
		mem_free(e->url);
		memset(e, 0, sizeof *e);
		if (e == &U.urls[U.nurls - 1]) /* the slot just opened goes back */
			U.nurls--;
		return NULL;
	}
	e->hash = h;
	e->users = 1;
	return e;
}

/* The transfer no longer needs its parsed URL. */
static void
url_release(struct upstream *u)
{
	if (u->url != NULL)
		u->url->users--;
	u->url = NULL;
}

static void
finish(struct upstream *u, const struct upstream_result *r)
{
	CURL *e = u->easy;

	loop_timer_cancel(&u->timer);
	u->easy = NULL;
	curl_multi_remove_handle(U.multi, e);
	U.transfers--;
	pool_limit();
	curl_slist_free_all(u->hdrs);
	u->hdrs = NULL;
	url_release(u);
	if (U.ncache < HANDLE_CACHE) {
		/* Kept with its options (see handle_new): only what points into this transfer's
		 * memory is cleared, and the next transfer sets every per-request option again. */
		curl_easy_setopt(e, CURLOPT_ERRORBUFFER, NULL);
		curl_easy_setopt(e, CURLOPT_HTTPHEADER, NULL);
		curl_easy_setopt(e, CURLOPT_POSTFIELDS, NULL);
		U.cache[U.ncache++] = e;
	} else {
		curl_easy_cleanup(e);
	}
	if (r != NULL)
		u->cb->on_done(u->ud, r);
}

static void
on_deadline(void *ud)
{
	struct upstream *u = ud;
	struct upstream_result r = { .ok = 0 };
	static const char *const phase[] = {
		[FAIL_TIMEOUT_HEAD] = "first byte (the response head)",
		[FAIL_TIMEOUT_IDLE] = "idle (the gap between chunks)",
		[FAIL_TIMEOUT_TOTAL] = "total",
	};
	uint64_t d = next_deadline(u, &r.cls);

	if (d > loop_now()) {
		arm_timer(u); /* activity moved the deadline on since the timer was armed */
		return;
	}
	snprintf(r.msg, sizeof r.msg, "timed out waiting for %s: timeout_%s = %llums", phase[r.cls],
	    r.cls == FAIL_TIMEOUT_HEAD ? "first_byte" : r.cls == FAIL_TIMEOUT_IDLE ? "idle" : "total",
	    (unsigned long long)(r.cls == FAIL_TIMEOUT_HEAD ? u->to_first_byte :
	    r.cls == FAIL_TIMEOUT_IDLE ? u->to_idle : u->to_total));
	finish(u, &r);
}

static void
arm_timer(struct upstream *u)
{
	enum fail_class cls;
	uint64_t d = next_deadline(u, &cls), now = loop_now();

	loop_timer_set(&u->timer, d > now ? d - now : 0, on_deadline, u);
}

/* Header lines arrive one by one; the blank line ends the head. */
static size_t
on_header(char *p, size_t size, size_t n, void *ud)
{
	struct upstream *u = ud;
	size_t len = size * n;

	if (len <= 2 && (p[0] == '\r' || p[0] == '\n')) {
		curl_easy_getinfo(u->easy, CURLINFO_RESPONSE_CODE, &u->status);
		if (u->status >= 100 && u->status < 200)
			return len; /* an interim response; the real head follows */
		u->head_done = 1;
		u->t_last = loop_now();
		arm_timer(u);
		if (u->cb->on_head(u->ud, u) < 0)
			return 0;
		return len;
	}
	if (len > 12 && strncasecmp(p, "retry-after:", 12) == 0)
		header_value(p + 12, len - 12, u->retry_after, sizeof u->retry_after);
	else if (len > 13 && strncasecmp(p, "content-type:", 13) == 0)
		header_value(p + 13, len - 13, u->content_type, sizeof u->content_type);
	return len;
}

static size_t
on_body(char *p, size_t size, size_t n, void *ud)
{
	struct upstream *u = ud;
	size_t len = size * n;
	int rc;

	u->t_last = loop_now();
	rc = u->cb->on_data(u->ud, p, len);
	if (rc == UPSTREAM_PAUSE) {
		u->paused = 1;
		return CURL_WRITEFUNC_PAUSE;
	}
	return rc < 0 ? 0 : len; /* 0: libcurl ends the transfer with CURLE_WRITE_ERROR */
}

static enum fail_class
classify_curl(CURLcode rc, CURL *e)
{
	curl_off_t connect_time = 0;

	switch (rc) {
	case CURLE_OUT_OF_MEMORY:
		return FAIL_NOMEM;
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
	case CURLE_COULDNT_CONNECT:
		return FAIL_CONNECT;
	case CURLE_OPERATION_TIMEDOUT:
		curl_easy_getinfo(e, CURLINFO_CONNECT_TIME_T, &connect_time);
		return connect_time == 0 ? FAIL_CONNECT : FAIL_TIMEOUT_TOTAL;
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_CIPHER:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_USE_SSL_FAILED:
		return FAIL_TLS;
	default:
		return FAIL_CLOSED;
	}
}

static void
check_done(void)
{
	CURLMsg *m;
	int left;

	while ((m = curl_multi_info_read(U.multi, &left)) != NULL) {
		struct upstream *u = NULL;
		struct upstream_result r = { .ok = 1 };

		if (m->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&u);
		if (m->data.result != CURLE_OK) {
			r.ok = 0;
			r.aborted = m->data.result == CURLE_WRITE_ERROR;
			r.cls = classify_curl(m->data.result, m->easy_handle);
			snprintf(r.msg, sizeof r.msg, "%s", u->errbuf[0] ? u->errbuf : curl_easy_strerror(m->data.result));
		}
		finish(u, &r);
	}
}

/* libcurl's connection sockets are opened and closed here, so that the loop knows when one
 * closes and may leave it registered between requests (loop_park). */
static curl_socket_t
open_socket(void *clientp, curlsocktype purpose, struct curl_sockaddr *a)
{
	int fd = socket(a->family, a->socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->protocol);

	if (fd < 0)
		return CURL_SOCKET_BAD;
	loop_parkable(fd);
	return fd;
}

static int
close_socket(void *clientp, curl_socket_t fd)
{
	loop_forget(fd);
	return close(fd);
}

/* A new easy handle with the options every transfer has; a cached handle keeps them, so a
 * transfer sets only its own (curl_easy_reset and setting these again cost ~4,000 instructions
 * a request). */
static CURL *
handle_new(void)
{
	CURL *e = curl_easy_init();

	if (e == NULL)
		return NULL;
	curl_easy_setopt(e, CURLOPT_POST, 1L);
	curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, open_socket);
	curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, close_socket);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
	/* The smallest buffers libcurl allows: a request body is small, an event is small, and
	 * memory per stream is what bounds how many streams fit. */
	curl_easy_setopt(e, CURLOPT_UPLOAD_BUFFERSIZE, 16384L);
	curl_easy_setopt(e, CURLOPT_BUFFERSIZE, 16384L);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
	curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(e, CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_HTTP_VERSION, CURL_HTTP_VERSION_1_1);
	if (U.no_proxy_env) {
		curl_easy_setopt(e, CURLOPT_PROXY, "");
		curl_easy_setopt(e, CURLOPT_NOPROXY, "");
	}
	return e;
}

/* Start a POST. The body must stay valid until the transfer ends. */
int
upstream_start(struct upstream *u, const struct upstream_req *req, const struct upstream_cb *cb,
    void *ud)
{
	const struct cfg_provider *p = req->provider;
	struct curl_blob ca;
	CURL *e = U.ncache > 0 ? U.cache[--U.ncache] : handle_new();

	memset(u, 0, sizeof *u);
	if (e == NULL)
		return -1;
	loop_timer_init(&u->timer);
	u->easy = e;
	u->cb = cb;
	u->ud = ud;
	u->hdrs = req->headers;
	u->t_start = u->t_last = loop_now();
	u->to_first_byte = p->timeout_first_byte;
	u->to_idle = p->timeout_idle;
	u->to_total = p->timeout_total;
	ca.data = (void *)(req->ca ? req->ca : &U.ca)->pem;
	ca.len = (req->ca ? req->ca : &U.ca)->len;
	ca.flags = CURL_BLOB_NOCOPY;
	/* Every option that differs between transfers is set here, each time. */
	if ((u->url = url_take(req->url)) != NULL) {
		curl_easy_setopt(e, CURLOPT_CURLU, u->url->h);
	} else {
		curl_easy_setopt(e, CURLOPT_CURLU, NULL);
		curl_easy_setopt(e, CURLOPT_URL, req->url);
	}
	curl_easy_setopt(e, CURLOPT_PRIVATE, u);
	curl_easy_setopt(e, CURLOPT_POSTFIELDS, req->body);
	curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, req->headers);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, u);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, u);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, u->errbuf);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)p->timeout_connect);
	/* Borrowed, not copied (NOCOPY: the bundle lives as long as the process), and parsed once
	 * for all connections (our libcurl patch 08); plain-HTTP transfers do not carry it. */
	curl_easy_setopt(e, CURLOPT_CAINFO_BLOB, strncmp(req->url, "https:", 6) == 0 ? &ca : NULL);
	U.transfers++;
	pool_limit();
	if (curl_multi_add_handle(U.multi, e) != CURLM_OK) {
		U.transfers--;
		pool_limit();
		u->easy = NULL;
		curl_easy_cleanup(e);
		url_release(u);
		return -1;
	}
	arm_timer(u);
	return 0;
}

/* Resume a transfer paused by on_data returning UPSTREAM_PAUSE (on the next tick). */
void
upstream_resume(struct upstream *u)
{
	if (u->easy == NULL || !u->paused || u->resume_queued)
		return;
	u->resume_queued = 1;
	u->next_resume = U.resume;
	U.resume = u;
	loop_wake();
}

/* End a transfer now, with no callback: the client went away or the exchange gave up. */
void
upstream_abort(struct upstream *u)
{
	if (u->resume_queued) {
		struct upstream **pp = &U.resume;
		while (*pp != u)
			pp = &(*pp)->next_resume;
		*pp = u->next_resume;
		u->resume_queued = 0;
	}
	if (u->easy != NULL)
		finish(u, NULL);
}

/* Copy a header's value, trimmed, NUL-terminated and truncated to the buffer. */
void
header_value(const char *p, size_t len, char *out, size_t outlen)
{
	while (len > 0 && (*p == ' ' || *p == '\t'))
		p++, len--;
	while (len > 0 && (p[len - 1] == '\r' || p[len - 1] == '\n' || p[len - 1] == ' ' || p[len - 1] == '\t'))
		len--;
	if (len >= outlen)
		len = outlen - 1;
	memcpy(out, p, len);
	out[len] = '\0';
}
