/* SPDX-License-Identifier: MIT */
/* Strict HTTP/1.1 heads (RFC 9112 sections 2-5), bounded and I/O-free; see http.h. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "proto/http.h"

/* RFC 9110 section 5.6.2 tchar. */
static bool is_tchar(unsigned char c)
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
		return true;
	return c && strchr("!#$%&'*+-.^_`|~", c);
}

/* field-value characters: VCHAR, obs-text, SP, HTAB. */
static bool is_vchar(unsigned char c)
{
	return (c >= 0x21 && c != 0x7f) || c == ' ' || c == '\t';
}

/*
 * Finds the end of the head: the offset just past CRLF CRLF. A bare LF is
 * -EBADMSG at once: a head ended by LF LF would otherwise wait for a CRLF
 * CRLF that never comes, until the head deadline.
 */
static int head_end(const char *buf, size_t len, size_t *ret)
{
	size_t lim = len < HTTP_HEAD_MAX ? len : HTTP_HEAD_MAX;

	for (size_t i = 0; i < lim; i++) {
		if (buf[i] == '\n' && (i == 0 || buf[i - 1] != '\r'))
			return -EBADMSG;
		if (i + 3 < lim && buf[i] == '\r' && buf[i + 1] == '\n' && buf[i + 2] == '\r' &&
		    buf[i + 3] == '\n') {
			*ret = i + 4;
			return 0;
		}
	}
	return len >= HTTP_HEAD_MAX ? -E2BIG : -EAGAIN;
}

/* One line of [p, end) without its CRLF; -EBADMSG for a bare CR or LF or a NUL. */
static int next_line(const char **p, const char *end, const char **ret, size_t *ret_len)
{
	const char *s = *p;

	for (const char *q = s; q + 1 < end; q++) {
		if (*q == '\r' && q[1] == '\n') {
			*ret = s;
			*ret_len = (size_t)(q - s);
			*p = q + 2;
			return 0;
		}
		if (*q == '\r' || *q == '\n' || *q == '\0')
			return -EBADMSG;
	}
	return -EBADMSG;
}

static int parse_version(const char *s, size_t n, unsigned *ret)
{
	if (n != 8 || memcmp(s, "HTTP/1.", 7) || (s[7] != '0' && s[7] != '1'))
		return -EBADMSG;
	*ret = (unsigned)(s[7] - '0');
	return 0;
}

static int parse_headers(const char **p, const char *end, struct http_header *h, unsigned *ret_n,
			 bool *ret_has_cl, uint64_t *ret_cl)
{
	unsigned n = 0;
	bool has_cl = false;
	uint64_t cl = 0;

	for (;;) {
		const char *line, *colon, *v, *ve;
		size_t len, i;

		if (next_line(p, end, &line, &len))
			return -EBADMSG;
		if (!len)
			break;
		if (n == HTTP_HEADERS_MAX)
			return -E2BIG;
		colon = memchr(line, ':', len);
		if (!colon || colon == line)
			return -EBADMSG;
		/* Also rejects obs-fold (a line starting with whitespace) and "Name :". */
		for (const char *q = line; q < colon; q++)
			if (!is_tchar((unsigned char)*q))
				return -EBADMSG;
		v = colon + 1;
		ve = line + len;
		for (const char *q = v; q < ve; q++)
			if (!is_vchar((unsigned char)*q))
				return -EBADMSG;
		while (v < ve && (*v == ' ' || *v == '\t'))
			v++;
		while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
			ve--;
		h[n].name = line;
		h[n].name_len = (size_t)(colon - line);
		h[n].value = v;
		h[n].value_len = (size_t)(ve - v);

		if (h[n].name_len == 17 && !strncasecmp(line, "Transfer-Encoding", 17))
			return -EBADMSG;
		if (h[n].name_len == 14 && !strncasecmp(line, "Content-Length", 14)) {
			if (has_cl || !h[n].value_len || h[n].value_len > 18)
				return -EBADMSG;
			for (i = 0; i < h[n].value_len; i++) {
				if (v[i] < '0' || v[i] > '9')
					return -EBADMSG;
				cl = cl * 10 + (uint64_t)(v[i] - '0');
			}
			has_cl = true;
		}
		n++;
	}
	*ret_n = n;
	*ret_has_cl = has_cl;
	*ret_cl = cl;
	return 0;
}

int http_request_parse(struct http_request *ret, const char *buf, size_t len)
{
	struct http_request r;
	const char *p = buf, *end, *line, *sp1, *sp2;
	size_t head, n;
	int e;

	e = head_end(buf, len, &head);
	if (e)
		return e;
	end = buf + head;
	memset(&r, 0, sizeof(r));
	if (next_line(&p, end, &line, &n) || !n)
		return -EBADMSG;
	sp1 = memchr(line, ' ', n);
	if (!sp1 || sp1 == line)
		return -EBADMSG;
	sp2 = memchr(sp1 + 1, ' ', (size_t)(line + n - sp1 - 1));
	if (!sp2 || sp2 == sp1 + 1)
		return -EBADMSG;
	for (const char *q = line; q < sp1; q++)
		if (!is_tchar((unsigned char)*q))
			return -EBADMSG;
	for (const char *q = sp1 + 1; q < sp2; q++)
		if ((unsigned char)*q <= 0x20 || (unsigned char)*q >= 0x7f)
			return -EBADMSG;
	if (parse_version(sp2 + 1, (size_t)(line + n - sp2 - 1), &r.version_minor))
		return -EBADMSG;
	r.method = line;
	r.method_len = (size_t)(sp1 - line);
	r.target = sp1 + 1;
	r.target_len = (size_t)(sp2 - sp1 - 1);
	e = parse_headers(&p, end, r.headers, &r.n_headers, &r.has_content_length,
			  &r.content_length);
	if (e)
		return e;
	r.head_len = head;
	*ret = r;
	return 0;
}

int http_response_parse(struct http_response *ret, const char *buf, size_t len)
{
	struct http_response r;
	const char *p = buf, *end, *line;
	size_t head, n;
	int e;

	e = head_end(buf, len, &head);
	if (e)
		return e;
	end = buf + head;
	memset(&r, 0, sizeof(r));
	/* "HTTP/1.1 200 OK": version, SP, three digits, SP, reason (may be empty). */
	if (next_line(&p, end, &line, &n) || n < 13 || line[8] != ' ' || line[12] != ' ')
		return -EBADMSG;
	if (parse_version(line, 8, &r.version_minor))
		return -EBADMSG;
	for (int i = 9; i < 12; i++) {
		if (line[i] < '0' || line[i] > '9')
			return -EBADMSG;
		r.status = r.status * 10 + (unsigned)(line[i] - '0');
	}
	if (r.status < 100 || r.status > 599)
		return -EBADMSG;
	for (size_t i = 13; i < n; i++)
		if (!is_vchar((unsigned char)line[i]))
			return -EBADMSG;
	r.reason = line + 13;
	r.reason_len = n - 13;
	e = parse_headers(&p, end, r.headers, &r.n_headers, &r.has_content_length,
			  &r.content_length);
	if (e)
		return e;
	r.head_len = head;
	*ret = r;
	return 0;
}

const struct http_header *http_header_find(const struct http_header *h, unsigned n,
					   const char *name)
{
	size_t len = strlen(name);

	for (unsigned i = 0; i < n; i++)
		if (h[i].name_len == len && !strncasecmp(h[i].name, name, len))
			return &h[i];
	return NULL;
}

bool http_header_has_token(const struct http_header *h, unsigned n, const char *name,
			   const char *token)
{
	size_t nlen = strlen(name), tlen = strlen(token);

	for (unsigned i = 0; i < n; i++) {
		const char *v = h[i].value, *end = h[i].value + h[i].value_len;

		if (h[i].name_len != nlen || strncasecmp(h[i].name, name, nlen))
			continue;
		while (v < end) {
			const char *comma = memchr(v, ',', (size_t)(end - v));
			const char *e = comma ? comma : end;

			while (v < e && (*v == ' ' || *v == '\t'))
				v++;
			while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
				e--;
			if ((size_t)(e - v) == tlen && !strncasecmp(v, token, tlen))
				return true;
			v = comma ? comma + 1 : end;
		}
	}
	return false;
}

bool http_request_is(const struct http_request *r, const char *method, const char *target)
{
	return r->method_len == strlen(method) && !memcmp(r->method, method, r->method_len) &&
	       r->target_len == strlen(target) && !memcmp(r->target, target, r->target_len);
}

static int finish(int n, size_t cap)
{
	if (n < 0 || (size_t)n >= cap)
		return -ENOBUFS;
	return n;
}

int http_request_build(char *buf, size_t cap, const char *method, const char *target,
		       const char *host, const char *extra_headers, uint64_t content_length)
{
	return finish(snprintf(buf, cap,
			       "%s %s HTTP/1.1\r\nHost: %s\r\n%sContent-Length: %llu\r\n\r\n",
			       method, target, host, extra_headers ? extra_headers : "",
			       (unsigned long long)content_length),
		      cap);
}

int http_control_request_build(char *buf, size_t cap, const char *host)
{
	return http_request_build(buf, cap, "POST", "/control", host,
				  "Connection: Upgrade\r\nUpgrade: " HTTP_UPGRADE_TOKEN "\r\n", 0);
}

int http_key_request_build(char *buf, size_t cap, const char *host)
{
	return finish(snprintf(buf, cap,
			       "GET /key HTTP/1.1\r\nHost: %s\r\nAccept: application/json\r\n\r\n",
			       host),
		      cap);
}

const char *http_status_reason(unsigned status)
{
	switch (status) {
	case 101: return "Switching Protocols";
	case 200: return "OK";
	case 204: return "No Content";
	case 400: return "Bad Request";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 413: return "Content Too Large";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 503: return "Service Unavailable";
	}
	return "Unknown";
}

int http_response_build(char *buf, size_t cap, unsigned status, const char *extra_headers,
			uint64_t content_length)
{
	if (status < 100 || status > 599)
		return -EINVAL;
	if (status == 101)
		return finish(snprintf(buf, cap, "HTTP/1.1 101 %s\r\n%s\r\n",
				       http_status_reason(status), extra_headers ? extra_headers : ""),
			      cap);
	return finish(snprintf(buf, cap, "HTTP/1.1 %u %s\r\n%sContent-Length: %llu\r\n\r\n", status,
			       http_status_reason(status), extra_headers ? extra_headers : "",
			       (unsigned long long)content_length),
		      cap);
}
