/* SPDX-License-Identifier: MIT */
/*
 * Both head parsers on arbitrary bytes. Whatever parses must describe text
 * inside the input, and every header must be findable by its own name.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_headers(const char *buf, size_t head_len, const struct http_header *h,
			  unsigned n)
{
	char name[HTTP_HEAD_MAX + 1];

	if (n > HTTP_HEADERS_MAX)
		abort();
	for (unsigned i = 0; i < n; i++) {
		if (h[i].name < buf || h[i].value + h[i].value_len > buf + head_len ||
		    !h[i].name_len || h[i].name_len > HTTP_HEAD_MAX)
			abort();
		memcpy(name, h[i].name, h[i].name_len);
		name[h[i].name_len] = '\0';
		if (!http_header_find(h, n, name))
			abort();
		(void)http_header_has_token(h, n, name, "upgrade");
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *buf = (const char *)data;
	struct http_request *req = malloc(sizeof(*req));
	struct http_response *resp = malloc(sizeof(*resp));

	if (!req || !resp)
		abort();
	if (!http_request_parse(req, buf, size)) {
		if (req->head_len > size || req->head_len > HTTP_HEAD_MAX)
			abort();
		check_headers(buf, req->head_len, req->headers, req->n_headers);
	}
	if (!http_response_parse(resp, buf, size)) {
		if (resp->head_len > size || resp->status < 100 || resp->status > 599)
			abort();
		check_headers(buf, resp->head_len, resp->headers, resp->n_headers);
	}
	free(req);
	free(resp);
	return 0;
}
