/*
 * xlate.c — what the translating adapters share (see xlate.h).
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "xlate.h"

static const char *const type_names[] = { "openai", "anthropic", "gemini", "ollama", "azure" };

/* ---- the writer ---- */

void
jw_raw(struct jw *w, const char *s, size_t n)
{
	if (w->err == 0 && n > 0)
		w->err = buf_append(w->b, s, n);
}

void
jw_puts(struct jw *w, const char *s)
{
	jw_raw(w, s, strlen(s));
}

const char *
xl_src(const struct json *j, int t)
{
	return j->src + j->tok[t].start;
}

size_t
xl_len(const struct json *j, int t)
{
	return (size_t)(j->tok[t].end - j->tok[t].start);
}

void
jw_tok(struct jw *w, const struct json *j, int t)
{
	int q = j->tok[t].type == JSMN_STRING;

	jw_raw(w, xl_src(j, t) - q, xl_len(j, t) + 2 * (size_t)q);
}

void
jw_tok_str(struct jw *w, const struct json *j, int t)
{
	if (xl_is_str(j, t))
		jw_tok(w, j, t);
	else
		jw_puts(w, "\"\"");
}

void
jw_str(struct jw *w, const char *s, size_t n)
{
	if (w->err == 0)
		w->err = json_escape(w->b, s, n);
}

void
jw_printf(struct jw *w, const char *fmt, ...)
{
	va_list ap;

	if (w->err)
		return;
	va_start(ap, fmt);
	w->err = buf_vprintf(w->b, fmt, ap);
	va_end(ap);
}

int
jw_json_in_string(struct jw *w, const struct json *j, int t, int want_object)
{
	size_t n = xl_len(j, t), m, at;
	const char *v;

	if (n == 0) {
		jw_puts(w, "{}");
		return 1;
	}
	if (w->err == 0)
		w->err = buf_reserve(w->b, n + 8);
	if (w->err)
		return 1; /* the writer's error says it */
	at = w->b->len;
	m = json_unescape(xl_src(j, t), n, w->b->data + at, n + 8);
	if (!json_valid(w->b->data + at, m))
		return -1;
	v = w->b->data + at + json_skip_end(w->b->data + at, 0, m);
	if (*v != '{' && want_object)
		return 0;
	w->b->len += m;
	return *v == '{';
}

void
xl_body_cap(struct buf *body, size_t len)
{
	size_t cap = 4 * len + 16384;

	if (body->max < cap)
		body->max = cap;
}

int
xl_written(struct exchange *x, const struct jw *w)
{
	if (w->err == BUF_FULL)
		return xl_invalid(x, "the request translated for provider '%s' would be larger than %zu bytes",
		    x->target->provider->name, w->b->max);
	return w->err ? -1 : 0; /* out of memory: the exchange answers 503 */
}

/* ---- tokens ---- */

int
xl_is_str(const struct json *j, int t)
{
	return t >= 0 && j->tok[t].type == JSMN_STRING;
}

int
xl_nonempty(const struct json *j, int t)
{
	return xl_is_str(j, t) && j->tok[t].end > j->tok[t].start;
}

int
xl_present(const struct json *j, int t)
{
	return t >= 0 && !json_is_null(j, t);
}

int
xl_is_true(const struct json *j, int t)
{
	return t >= 0 && json_eq_literal(j, t, "true");
}

long
xl_long(const struct json *j, int t)
{
	const char *p, *end;
	long v = 0;
	int neg;

	if (t < 0 || j->tok[t].type != JSMN_PRIMITIVE)
		return 0;
	/* A validated number (or literal): its integer part, saturated as strtol would, without
	 * strtol's locale and base machinery (a count per usage field per stream chunk). */
	p = j->src + j->tok[t].start, end = j->src + j->tok[t].end;
	if ((neg = p < end && *p == '-'))
		p++;
	for (; p < end && *p >= '0' && *p <= '9'; p++) {
		int d = *p - '0';

		if (v > LONG_MAX / 10 || (v == LONG_MAX / 10 && d > LONG_MAX % 10)) /* no division per digit */
			return neg ? LONG_MIN : LONG_MAX;
		v = v * 10 + d;
	}
	return neg ? -v : v;
}

long
xl_count(const struct json *j, int t)
{
	long v = xl_long(j, t);

	return v < 0 ? 0 : v > (1L << 40) ? 1L << 40 : v;
}

int
xl_elem(const struct json *j, int arr, int k)
{
	int i = arr + 1;

	if (arr < 0 || j->tok[arr].type != JSMN_ARRAY || k >= j->tok[arr].size)
		return -1;
	while (k-- > 0)
		i = json_skip(j, i);
	return i;
}

/* ---- the request ---- */

int
xl_messages(const struct exchange *x)
{
	return json_find(&x->req->j, 0, "messages");
}

int
xl_max_tokens(const struct exchange *x)
{
	const struct json *j = &x->req->j;
	int t = json_find(j, 0, "max_completion_tokens");

	return xl_present(j, t) ? t : (t = json_find(j, 0, "max_tokens"), xl_present(j, t) ? t : -1);
}

/* One content part's text token, or -1 (and *other set) if the part is not text. */
static int
part_text(const struct json *j, int p, int *other)
{
	int type = json_find(j, p, "type");

	*other = 0;
	if (xl_eq(j, type, "text"))
		return json_find(j, p, "text");
	if (xl_eq(j, type, "refusal"))
		return json_find(j, p, "refusal");
	*other = 1;
	return -1;
}

int
xl_text_content(struct exchange *x, struct jw *w, int msg, const char *what, int images_ok)
{
	const struct json *j = &x->req->j;
	int c = json_find(j, msg, "content"), any = 0, other;

	if (xl_is_str(j, c)) {
		jw_raw(w, xl_src(j, c), xl_len(j, c));
		return xl_len(j, c) > 0;
	}
	if (!xl_present(j, c))
		return 0;
	if (j->tok[c].type != JSMN_ARRAY)
		return xl_invalid(x, "a %s message's content must be a string or an array of parts", what);
	for (int k = 0, p = c + 1; k < j->tok[c].size; k++, p = json_skip(j, p)) {
		int t = part_text(j, p, &other);

		if (other && images_ok && xl_eq(j, json_find(j, p, "type"), "image_url"))
			continue;
		if (other || !xl_is_str(j, t))
			return xl_invalid(x, "a %s message's content parts must be text parts", what);
		if (xl_len(j, t) == 0)
			continue;
		if (any++)
			jw_puts(w, "\\n");
		jw_raw(w, xl_src(j, t), xl_len(j, t));
	}
	return any > 0;
}

static int
same_text(const struct json *j, int a, int b)
{
	return xl_is_str(j, a) && xl_is_str(j, b) && xl_len(j, a) == xl_len(j, b) &&
	    memcmp(xl_src(j, a), xl_src(j, b), xl_len(j, a)) == 0;
}

/* The name token of the call `id` among one assistant message's tool_calls, or -1. */
static int
call_name(const struct json *j, int msg, int id)
{
	int calls = json_find(j, msg, "tool_calls");

	if (calls < 0 || j->tok[calls].type != JSMN_ARRAY)
		return -1;
	for (int k = 0, c = calls + 1; k < j->tok[calls].size; k++, c = json_skip(j, c))
		if (same_text(j, json_find(j, c, "id"), id))
			return json_find(j, json_find(j, c, "function"), "name");
	return -1;
}

int
xl_tool_name(const struct exchange *x, int before, int id)
{
	const struct json *j = &x->req->j;
	int arr = xl_messages(x), found = -1;

	for (int k = 0, m = arr + 1; k < before && k < j->tok[arr].size; k++, m = json_skip(j, m)) {
		int n;

		if (xl_eq(j, json_find(j, m, "role"), "assistant") && (n = call_name(j, m, id)) >= 0)
			found = n; /* the nearest one wins: ids may repeat across turns */
	}
	return xl_is_str(j, found) ? found : -1;
}

/* ---- images ---- */

static const struct { const char *ext, *mime; } mimes[] = {
	{ "png", "image/png" }, { "jpg", "image/jpeg" }, { "jpeg", "image/jpeg" }, { "gif", "image/gif" },
	{ "webp", "image/webp" }, { "heic", "image/heic" }, { "heif", "image/heif" }, { "pdf", "application/pdf" },
};

/* The MIME type of a URL's file extension (before any query), or "". */
static const char *
mime_of_url(const char *s, size_t n)
{
	size_t end = 0, dot = 0;

	while (end < n && s[end] != '?' && s[end] != '#')
		end++;
	for (size_t i = end; i > 0; i--) {
		if (s[i - 1] == '/')
			break;
		if (s[i - 1] == '.') {
			dot = i;
			break;
		}
	}
	for (size_t k = 0; dot > 0 && k < NELEM(mimes); k++)
		if (end - dot == strlen(mimes[k].ext) && strncasecmp(s + dot, mimes[k].ext, end - dot) == 0)
			return mimes[k].mime;
	return "";
}

/* data:MIME[;params];base64,DATA */
static int
data_url(struct exchange *x, const char *s, size_t n, struct image *img, int msg)
{
	const char *comma = memchr(s, ',', n);
	char head[128];
	size_t hn, mn = 0;

	if (comma == NULL || (size_t)(comma - s) >= sizeof head - 8)
		return xl_invalid(x, "messages[%d]: an image's data: URL is malformed", msg);
	hn = json_unescape(s, (size_t)(comma - s), head, sizeof head);
	if (hn < 12 || strncasecmp(head + hn - 7, ";base64", 7) != 0)
		return xl_invalid(x, "messages[%d]: an image's data: URL must be base64 (data:MIME;base64,…)", msg);
	while (5 + mn < hn && head[5 + mn] != ';' && mn < sizeof img->mime - 1)
		mn++;
	if (mn == 0)
		return xl_invalid(x, "messages[%d]: an image's data: URL has no MIME type", msg);
	memcpy(img->mime, head + 5, mn);
	img->mime[mn] = '\0';
	img->is_data = 1;
	img->data = comma + 1;
	img->data_len = n - (size_t)(comma + 1 - s);
	return 0;
}

int
xl_image(struct exchange *x, int part, struct image *img, int msg)
{
	const struct json *j = &x->req->j;
	int iu = json_find(j, part, "image_url"), u = xl_is_str(j, iu) ? iu : json_find(j, iu, "url");
	const char *s;
	size_t n;

	memset(img, 0, sizeof *img);
	if (!xl_nonempty(j, u))
		return xl_invalid(x, "messages[%d]: an image_url part needs image_url.url", msg);
	s = xl_src(j, u);
	n = xl_len(j, u);
	img->url = u;
	if (n > 5 && strncasecmp(s, "data:", 5) == 0)
		return data_url(x, s, n, img, msg);
	if ((n > 7 && strncasecmp(s, "http://", 7) == 0) || (n > 8 && strncasecmp(s, "https://", 8) == 0) ||
	    (n > 5 && strncasecmp(s, "gs://", 5) == 0)) {
		snprintf(img->mime, sizeof img->mime, "%s", mime_of_url(s, n));
		return 0;
	}
	return xl_invalid(x, "messages[%d]: an image URL must be a data:, http(s): or gs: URL", msg);
}

/* ---- refusals ---- */

static int
client_error(struct exchange *x, const char *code, const char *msg)
{
	if (x->fail.msg[0] == '\0') {
		xc_fail(x, FAIL_CLIENT, 400, code, "%s", msg);
		x->fail.type = "invalid_request_error";
	}
	return -1;
}

int
xl_unsupported(struct exchange *x, const char *param, const char *why)
{
	const struct cfg_provider *p = x->target->provider;
	char msg[sizeof x->fail.msg];

	snprintf(msg, sizeof msg, "%s is not supported by provider '%s' (type %s)%s%s", param, p->name,
	    type_names[p->type], why ? ": " : "", why ? why : "");
	return client_error(x, "unsupported_parameter", msg);
}

int
xl_invalid(struct exchange *x, const char *fmt, ...)
{
	char msg[sizeof x->fail.msg];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	return client_error(x, "invalid_request", msg);
}

/* A modalities array asking for more than text. */
static int
wants_audio(const struct json *j, int t)
{
	if (t < 0 || j->tok[t].type != JSMN_ARRAY)
		return 0;
	for (int k = 0, e = t + 1; k < j->tok[t].size; k++, e = json_skip(j, e))
		if (!xl_eq(j, e, "text"))
			return 1;
	return 0;
}

int
xl_check_common(struct exchange *x)
{
	const struct json *j = &x->req->j;
	int t;

	if (xl_present(j, t = json_find(j, 0, "n")) && !(j->tok[t].type == JSMN_PRIMITIVE && xl_long(j, t) == 1))
		return xl_unsupported(x, "n > 1", "it answers with one choice; ask for n = 1 or leave n out");
	if (xl_is_true(j, json_find(j, 0, "logprobs")) || xl_present(j, json_find(j, 0, "top_logprobs")))
		return xl_unsupported(x, "logprobs", NULL);
	if ((t = json_find(j, 0, "logit_bias")) >= 0 && j->tok[t].type == JSMN_OBJECT && j->tok[t].size > 0)
		return xl_unsupported(x, "logit_bias", NULL);
	if (xl_present(j, json_find(j, 0, "audio")) || wants_audio(j, json_find(j, 0, "modalities")))
		return xl_unsupported(x, "audio output", NULL);
	if (xl_present(j, json_find(j, 0, "prediction")))
		return xl_unsupported(x, "prediction", NULL);
	if (xl_present(j, json_find(j, 0, "functions")) || xl_present(j, json_find(j, 0, "function_call")))
		return xl_unsupported(x, "functions/function_call (the legacy form of tools)", "use tools and tool_choice");
	return 0;
}

/* ---- URLs, headers, failures ---- */

static int
unreserved(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
	    c == '.' || c == '_' || c == '~';
}

const char *
xl_path_escape(struct arena *a, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = 0;
	char *out, *w;

	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		n += unreserved(*p) ? 1 : 3;
	if ((out = arena_alloc(a, n + 1)) == NULL)
		return NULL;
	w = out;
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (unreserved(*p)) {
			*w++ = (char)*p;
			continue;
		}
		*w++ = '%';
		*w++ = hex[*p >> 4];
		*w++ = hex[*p & 15];
	}
	*w = '\0';
	return out;
}

struct curl_slist *
xl_headers(struct exchange *x, const char *auth, const char *accept)
{
	const struct cfg_provider *p = x->target->provider;
	struct curl_slist *h = NULL, *t;
	const char *fixed[] = { auth, "Content-Type: application/json", accept, "Expect:" };

	for (size_t i = 0; i < NELEM(fixed); i++) {
		if (fixed[i] == NULL)
			continue;
		if ((t = curl_slist_append(h, fixed[i])) == NULL)
			goto fail;
		h = t;
	}
	for (int i = 0; i < p->nheaders; i++) {
		if ((t = curl_slist_append(h, p->headers[i])) == NULL)
			goto fail;
		h = t;
	}
	return h;
fail:
	curl_slist_free_all(h);
	return NULL;
}

int
xl_fail_provider(struct exchange *x, enum fail_class cls, int status, const char *msg)
{
	return xc_fail(x, cls, status, "upstream_error", "%s: %s", x->target->provider->name, msg);
}
