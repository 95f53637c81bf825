/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proto/http.h"

static void test_request_ok(void **state)
{
	static const char req[] = "POST /control HTTP/1.1\r\nHost: control.example\r\n"
				  "connection: keep-alive, Upgrade\r\nUPGRADE:  trellis-control/1 \r\n"
				  "Content-Length: 0\r\n\r\nBODY";
	struct http_request r;
	const struct http_header *h;

	(void)state;
	assert_int_equal(http_request_parse(&r, req, sizeof(req) - 1), 0);
	assert_true(http_request_is(&r, "POST", "/control"));
	assert_false(http_request_is(&r, "GET", "/control"));
	assert_int_equal(r.version_minor, 1);
	assert_int_equal(r.n_headers, 4);
	assert_true(r.has_content_length);
	assert_int_equal(r.content_length, 0);
	assert_int_equal(r.head_len, sizeof(req) - 1 - 4);
	assert_non_null(h = http_header_find(r.headers, r.n_headers, "Upgrade"));
	assert_int_equal(h->value_len, strlen("trellis-control/1"));
	assert_memory_equal(h->value, "trellis-control/1", h->value_len);
	assert_true(http_header_has_token(r.headers, r.n_headers, "Connection", "upgrade"));
	assert_true(http_header_has_token(r.headers, r.n_headers, "Connection", "Keep-Alive"));
	assert_false(http_header_has_token(r.headers, r.n_headers, "Connection", "close"));
	assert_false(http_header_has_token(r.headers, r.n_headers, "Connection", "Upgrad"));
	assert_null(http_header_find(r.headers, r.n_headers, "Cookie"));
}

static void test_incremental(void **state)
{
	char buf[256];
	struct http_request r;
	int n = http_key_request_build(buf, sizeof(buf), "control.example");

	(void)state;
	assert_true(n > 0);
	/* Every proper prefix is incomplete, never malformed. */
	for (int i = 0; i < n; i++)
		assert_int_equal(http_request_parse(&r, buf, (size_t)i), -EAGAIN);
	assert_int_equal(http_request_parse(&r, buf, (size_t)n), 0);
	assert_true(http_request_is(&r, "GET", "/key"));
	assert_false(r.has_content_length);
}

static const char *const bad_requests[] = {
	"\r\n\r\n",
	"GET\r\n\r\n",
	"GET /key\r\n\r\n",
	"GET  /key HTTP/1.1\r\n\r\n",
	"GET /key  HTTP/1.1\r\n\r\n",
	"GET /key HTTP/2.0\r\n\r\n",
	"GET /key HTTP/1.1 \r\n\r\n",
	"G(T /key HTTP/1.1\r\n\r\n",
	"GET /k\x01y HTTP/1.1\r\n\r\n",
	"GET /key HTTP/1.1\nHost: a\r\n\r\n",
	"GET /key HTTP/1.1\r\nHost: a\rb\r\n\r\n",
	"GET /key HTTP/1.1\r\nHost : a\r\n\r\n",
	"GET /key HTTP/1.1\r\nHost: a\r\n b\r\n\r\n",
	"GET /key HTTP/1.1\r\n: a\r\n\r\n",
	"GET /key HTTP/1.1\r\nNoColon\r\n\r\n",
	"GET /key HTTP/1.1\r\nX: a\x7f\r\n\r\n",
	"GET /key HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
	"GET /key HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
	"GET /key HTTP/1.1\r\nContent-Length: +1\r\n\r\n",
	"GET /key HTTP/1.1\r\nContent-Length: 1 2\r\n\r\n",
	"GET /key HTTP/1.1\r\nContent-Length:\r\n\r\n",
	"GET /key HTTP/1.1\r\nContent-Length: 9999999999999999999\r\n\r\n",
	"GET /key HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
};

static void test_request_bad(void **state)
{
	struct http_request r;

	(void)state;
	for (size_t i = 0; i < sizeof(bad_requests) / sizeof(bad_requests[0]); i++)
		if (http_request_parse(&r, bad_requests[i], strlen(bad_requests[i])) != -EBADMSG)
			fail_msg("not rejected: %s", bad_requests[i]);
	/* A NUL inside the head. */
	static const char nul[] = "GET /key HTTP/1.1\r\nX: \0\r\n\r\n";

	assert_int_equal(http_request_parse(&r, nul, sizeof(nul) - 1), -EBADMSG);
}

/* A bare LF: 400 at once, not a wait for a CRLF CRLF that never comes (issue 7, 14). */
static void test_lone_lf(void **state)
{
	static const char *const heads[] = {
		"GET /key HTTP/1.1\n\n",
		"GET /key HTTP/1.1\n",
		"GET /key HTTP/1.1\r\nHost: x\n",
		"\n",
	};
	struct http_request r;
	struct http_response resp;

	(void)state;
	for (size_t i = 0; i < sizeof(heads) / sizeof(heads[0]); i++) {
		if (http_request_parse(&r, heads[i], strlen(heads[i])) != -EBADMSG)
			fail_msg("bare LF not rejected at once: %s", heads[i]);
	}
	assert_int_equal(http_response_parse(&resp, "HTTP/1.1 200 OK\n\n", 17), -EBADMSG);
	/* A CR alone at the end is only the start of a CRLF. */
	assert_int_equal(http_request_parse(&r, "GET /key HTTP/1.1\r", 18), -EAGAIN);
}

static void test_request_limits(void **state)
{
	char *buf = malloc(HTTP_HEAD_MAX * 2);
	struct http_request r;
	size_t n;

	(void)state;
	assert_non_null(buf);
	/* Exactly HTTP_HEADERS_MAX headers pass, one more is too many. */
	n = (size_t)sprintf(buf, "GET / HTTP/1.1\r\n");
	for (int i = 0; i < HTTP_HEADERS_MAX; i++)
		n += (size_t)sprintf(buf + n, "X-%d: v\r\n", i);
	memcpy(buf + n, "\r\n", 3);
	assert_int_equal(http_request_parse(&r, buf, n + 2), 0);
	assert_int_equal(r.n_headers, HTTP_HEADERS_MAX);
	n += (size_t)sprintf(buf + n, "X-last: v\r\n\r\n");
	assert_int_equal(http_request_parse(&r, buf, n), -E2BIG);

	/* A head that ends exactly at the cap passes; one byte longer does not. */
	n = (size_t)sprintf(buf, "GET / HTTP/1.1\r\nX: ");
	memset(buf + n, 'a', HTTP_HEAD_MAX - n - 4);
	memcpy(buf + HTTP_HEAD_MAX - 4, "\r\n\r\n", 4);
	assert_int_equal(http_request_parse(&r, buf, HTTP_HEAD_MAX), 0);
	memset(buf + n, 'a', HTTP_HEAD_MAX - n - 3);
	memcpy(buf + HTTP_HEAD_MAX - 3, "\r\n\r\n", 4);
	assert_int_equal(http_request_parse(&r, buf, HTTP_HEAD_MAX + 1), -E2BIG);
	/* Without the end, a long unfinished head is too big, not incomplete. */
	assert_int_equal(http_request_parse(&r, buf, HTTP_HEAD_MAX), -E2BIG);
	free(buf);
}

static void test_response(void **state)
{
	static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
				 "Content-Length: 42\r\n\r\n{";
	struct http_response r;
	char buf[512];
	int n;

	(void)state;
	assert_int_equal(http_response_parse(&r, ok, sizeof(ok) - 1), 0);
	assert_int_equal(r.status, 200);
	assert_int_equal(r.content_length, 42);
	assert_int_equal(r.head_len, sizeof(ok) - 2);
	assert_int_equal(http_response_parse(&r, "HTTP/1.1 204 \r\n\r\n", 17), 0);
	assert_int_equal(r.reason_len, 0);

	n = http_response_build(buf, sizeof(buf), 101,
				"Connection: Upgrade\r\nUpgrade: " HTTP_UPGRADE_TOKEN "\r\n", 0);
	assert_true(n > 0);
	assert_int_equal(http_response_parse(&r, buf, (size_t)n), 0);
	assert_int_equal(r.status, 101);
	assert_false(r.has_content_length);
	assert_true(http_header_has_token(r.headers, r.n_headers, "Upgrade", HTTP_UPGRADE_TOKEN));

	n = http_response_build(buf, sizeof(buf), 431, NULL, 0);
	assert_string_equal(buf, "HTTP/1.1 431 Request Header Fields Too Large\r\n"
				 "Content-Length: 0\r\n\r\n");
	assert_int_equal(http_response_build(buf, 10, 200, NULL, 0), -ENOBUFS);
	assert_int_equal(http_response_build(buf, sizeof(buf), 99, NULL, 0), -EINVAL);

	static const char *const bad[] = {
		"HTTP/1.1 200\r\n\r\n", "HTTP/1.1 20 OK\r\n\r\n", "HTTP/1.1 099 X\r\n\r\n",
		"HTTP/1.1 600 X\r\n\r\n", "HTTP/1.2 200 OK\r\n\r\n", "HTTP/1.1 2x0 OK\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (http_response_parse(&r, bad[i], strlen(bad[i])) != -EBADMSG)
			fail_msg("not rejected: %s", bad[i]);
	assert_int_equal(http_response_parse(&r, "HTTP/1.1 200 OK\r\n", 17), -EAGAIN);
}

static void test_builders(void **state)
{
	struct http_request r;
	char buf[512];
	int n;

	(void)state;
	n = http_control_request_build(buf, sizeof(buf), "192.0.2.1:8080");
	assert_true(n > 0);
	assert_int_equal(http_request_parse(&r, buf, (size_t)n), 0);
	assert_true(http_request_is(&r, "POST", "/control"));
	assert_true(http_header_has_token(r.headers, r.n_headers, "Connection", "upgrade"));
	assert_true(http_header_has_token(r.headers, r.n_headers, "Upgrade", HTTP_UPGRADE_TOKEN));
	assert_true(r.has_content_length);
	assert_int_equal(http_control_request_build(buf, 20, "x"), -ENOBUFS);
	assert_string_equal(http_status_reason(404), "Not Found");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_request_ok),    cmocka_unit_test(test_incremental),
		cmocka_unit_test(test_request_bad),   cmocka_unit_test(test_request_limits),
		cmocka_unit_test(test_lone_lf),
		cmocka_unit_test(test_response),      cmocka_unit_test(test_builders),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
