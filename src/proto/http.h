/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_PROTO_HTTP_H
#define TRELLIS_PROTO_HTTP_H

/*
 * The little HTTP/1.1 the control channel needs (docs/control-protocol.md):
 * strict, bounded parsers for a request head and a response head, and
 * builders for the few messages we send. No I/O and no copies: parsed fields
 * point into the caller's buffer, which must outlive the parse result.
 *
 * Strict means: CRLF line ends only, no obsolete line folding, no whitespace
 * before a header colon, no NUL or bare CR, one Content-Length at most and
 * digits only, no Transfer-Encoding (we never need a chunked body, and
 * refusing it closes the request smuggling door behind a proxy).
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HTTP_HEAD_MAX 8192 /* request or response head, with the final empty line */
#define HTTP_HEADERS_MAX 64

struct http_header {
	const char *name;
	size_t name_len;
	const char *value; /* without leading and trailing whitespace */
	size_t value_len;
};

struct http_request {
	const char *method;
	size_t method_len;
	const char *target;
	size_t target_len;
	unsigned version_minor; /* HTTP/1.0 or HTTP/1.1 */
	unsigned n_headers;
	struct http_header headers[HTTP_HEADERS_MAX];
	bool has_content_length;
	uint64_t content_length;
	size_t head_len; /* bytes up to and including the empty line; the body follows */
};

struct http_response {
	unsigned version_minor;
	unsigned status;
	const char *reason;
	size_t reason_len;
	unsigned n_headers;
	struct http_header headers[HTTP_HEADERS_MAX];
	bool has_content_length;
	uint64_t content_length;
	size_t head_len;
};

/*
 * Parse the head at the start of buf. 0 (*ret set), -EAGAIN (no complete head
 * yet: read more), -EBADMSG (malformed: 400), -E2BIG (the head exceeds
 * HTTP_HEAD_MAX or has more than HTTP_HEADERS_MAX headers: 431).
 */
int http_request_parse(struct http_request *ret, const char *buf, size_t len);
int http_response_parse(struct http_response *ret, const char *buf, size_t len);

/* The first header called name (case-insensitive), or NULL. */
const struct http_header *http_header_find(const struct http_header *h, unsigned n,
					   const char *name);
/*
 * Does any header called name carry token in its comma-separated list
 * (case-insensitive, as "Connection: keep-alive, Upgrade")?
 */
bool http_header_has_token(const struct http_header *h, unsigned n, const char *name,
			   const char *token);
/* Is the method/target exactly s? */
bool http_request_is(const struct http_request *r, const char *method, const char *target);

/*
 * Builders write a complete head (and no body) into buf with a NUL and return
 * its length without the NUL, or -ENOBUFS. extra_headers is NULL or lines of
 * "Name: value\r\n" added verbatim (the caller's own text, never peer input).
 */
int http_request_build(char *buf, size_t cap, const char *method, const char *target,
		       const char *host, const char *extra_headers, uint64_t content_length);
/* POST /control asking for the trellis-control/1 upgrade. */
int http_control_request_build(char *buf, size_t cap, const char *host);
/* GET /key. */
int http_key_request_build(char *buf, size_t cap, const char *host);
/*
 * A response head with the standard reason phrase. Content-Length is written
 * for every status but 101 (the stream that follows is not a body).
 */
int http_response_build(char *buf, size_t cap, unsigned status, const char *extra_headers,
			uint64_t content_length);
/* "Switching Protocols", "Not Found", ...; "Unknown" for others. */
const char *http_status_reason(unsigned status);

#define HTTP_UPGRADE_TOKEN "trellis-control/1"

#endif
