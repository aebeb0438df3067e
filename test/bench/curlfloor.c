/*
 * curlfloor.c — libcurl's own cost of one upstream request, with nothing of sluice around it
 * (make bench, issue 4's latency target): the same libcurl build (vendor/, our patches), the
 * same allocator (mem.c through curl_global_init_mem), the URL parsed once (CURLOPT_CURLU) and
 * one easy handle kept with its options, as upstream.c does, driven by curl_multi_socket_action
 * on epoll. N sequential keep-alive POSTs of a small chat request; each transfer is added to
 * the multi handle and removed when done, as sluice's are.
 *
 *   curlfloor PORT N      exit 0 when all N were answered 200
 *
 * Under valgrind --tool=callgrind, (Ir(N) − Ir(1)) / (N − 1) is what libcurl costs a request:
 * a floor for any gateway whose upstream client is libcurl.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <curl/curl.h>
#include "sluice.h"

static int  ep;
static long timeout_ms = -1;

static int
on_socket(CURL *e, curl_socket_t fd, int what, void *userp, void *socketp)
{
	struct epoll_event ev = { .data.fd = fd };

	if (what == CURL_POLL_REMOVE)
		return epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL), 0;
	ev.events = (what & CURL_POLL_IN ? EPOLLIN : 0) | (what & CURL_POLL_OUT ? EPOLLOUT : 0);
	if (epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev) < 0)
		epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
	return 0;
}

static int
on_timer(CURLM *m, long ms, void *userp)
{
	timeout_ms = ms;
	return 0;
}

static size_t
on_data(char *p, size_t size, size_t n, void *userp)
{
	*(size_t *)userp += n;
	return n;
}

/* Drive the multi handle until the one transfer is done: its result. */
static CURLcode
run_transfer(CURLM *m)
{
	for (;;) {
		struct epoll_event ev[8];
		int k = epoll_wait(ep, ev, 8, timeout_ms < 0 ? 1000 : (int)timeout_ms), running;
		CURLMsg *msg;

		if (k <= 0)
			curl_multi_socket_action(m, CURL_SOCKET_TIMEOUT, 0, &running);
		for (int i = 0; i < k; i++)
			curl_multi_socket_action(m, ev[i].data.fd, (ev[i].events & EPOLLIN ? CURL_CSELECT_IN : 0) |
			    (ev[i].events & EPOLLOUT ? CURL_CSELECT_OUT : 0), &running);
		while ((msg = curl_multi_info_read(m, &running)) != NULL)
			if (msg->msg == CURLMSG_DONE)
				return msg->data.result;
	}
}

int
main(int argc, char **argv)
{
	static const char body[] = "{\"model\":\"tokens=5\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"stream\":false}";
	char url[80], err[128];
	struct curl_slist *headers = NULL;
	size_t got = 0;
	long status = 0;
	CURLU *u;
	CURLM *m;
	CURL *e;
	int n;

	if (argc != 3 || (n = atoi(argv[2])) < 1) {
		fprintf(stderr, "usage: curlfloor PORT N\n");
		return 2;
	}
	if (mem_init((size_t)16 << 20, err, sizeof err) < 0 ||
	    curl_global_init_mem(CURL_GLOBAL_DEFAULT, mem_alloc_exact, mem_free, mem_realloc_exact, mem_strdup_exact,
	        mem_calloc_exact) != CURLE_OK) {
		fprintf(stderr, "curlfloor: cannot start: %s\n", err);
		return 1;
	}
	snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/chat/completions", atoi(argv[1]));
	headers = curl_slist_append(headers, "Authorization: Bearer sk-bench");
	headers = curl_slist_append(headers, "Content-Type: application/json");
	ep = epoll_create1(EPOLL_CLOEXEC);
	m = curl_multi_init();
	e = curl_easy_init();
	u = curl_url();
	if (ep < 0 || m == NULL || e == NULL || u == NULL || headers == NULL || curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK) {
		fprintf(stderr, "curlfloor: cannot set up\n");
		return 1;
	}
	curl_multi_setopt(m, CURLMOPT_SOCKETFUNCTION, on_socket);
	curl_multi_setopt(m, CURLMOPT_TIMERFUNCTION, on_timer);
	curl_easy_setopt(e, CURLOPT_CURLU, u);
	curl_easy_setopt(e, CURLOPT_PROXY, "");
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
	curl_easy_setopt(e, CURLOPT_HTTP_VERSION, CURL_HTTP_VERSION_1_1);
	curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(sizeof body - 1));
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, &got);
	for (int i = 0; i < n; i++) {
		CURLcode rc;

		curl_multi_add_handle(m, e);
		rc = run_transfer(m);
		curl_multi_remove_handle(m, e);
		curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
		if (rc != CURLE_OK || status != 200) {
			fprintf(stderr, "curlfloor: request %d: %s, status %ld\n", i + 1, curl_easy_strerror(rc), status);
			return 1;
		}
	}
	printf("curlfloor: %d requests, %zu bytes answered\n", n, got);
	return 0;
}
