/* SPDX-License-Identifier: MIT */
#include "control/webform.h"

#include <errno.h>
#include <string.h>

#include "base/util.h"

/* Decodes [p, end) into ret (cap bytes, NUL included). Length or -errno. */
static int decode(const uint8_t *p, const uint8_t *end, char *ret, size_t cap)
{
	size_t o = 0;

	while (p < end) {
		int c = *p++;

		if (c == '+') {
			c = ' ';
		} else if (c == '%') {
			int hi, lo;

			if (end - p < 2)
				return -EINVAL;
			hi = hex_digit((char)p[0]);
			lo = hex_digit((char)p[1]);
			if (hi < 0 || lo < 0)
				return -EINVAL;
			c = hi << 4 | lo;
			p += 2;
		}
		if ((c < 0x20 && c != '\t' && c != '\r' && c != '\n') || c == 0x7f)
			return -EINVAL;
		if (o + 1 >= cap)
			return -ENOBUFS;
		ret[o++] = (char)c;
	}
	if (!cap)
		return -ENOBUFS;
	ret[o] = '\0';
	return (int)o;
}

int webform_field(const uint8_t *body, size_t len, const char *name, char *ret, size_t cap)
{
	const uint8_t *p = body, *end = body + len;
	size_t nlen = strlen(name);
	int found = -ENOENT;

	while (p < end) {
		const uint8_t *amp = memchr(p, '&', (size_t)(end - p));
		const uint8_t *pe = amp ? amp : end;
		const uint8_t *eq = memchr(p, '=', (size_t)(pe - p));
		const uint8_t *ke = eq ? eq : pe;

		/* Names are ours (plain ASCII): compare them undecoded. */
		if ((size_t)(ke - p) == nlen && memcmp(p, name, nlen) == 0) {
			if (found != -ENOENT)
				return -EINVAL;
			found = eq ? decode(eq + 1, pe, ret, cap) : decode(pe, pe, ret, cap);
			if (found < 0)
				return found;
		}
		p = amp ? amp + 1 : end;
	}
	return found;
}

/* RFC 6265 section 4.1.1 cookie-octet. */
static int cookie_octet(unsigned char c)
{
	return c == 0x21 || (c >= 0x23 && c <= 0x2b) || (c >= 0x2d && c <= 0x3a) ||
	       (c >= 0x3c && c <= 0x5b) || (c >= 0x5d && c <= 0x7e);
}

int webform_cookie(const char *header, size_t len, const char *name, char *ret, size_t cap)
{
	const char *p = header, *end = header + len;
	size_t nlen = strlen(name);
	int found = -ENOENT;

	while (p < end) {
		const char *semi = memchr(p, ';', (size_t)(end - p));
		const char *pe = semi ? semi : end;
		const char *eq;

		while (p < pe && (*p == ' ' || *p == '\t'))
			p++;
		eq = memchr(p, '=', (size_t)(pe - p));
		if (eq && (size_t)(eq - p) == nlen && memcmp(p, name, nlen) == 0) {
			const char *v = eq + 1, *ve = pe;
			size_t vlen;

			if (found != -ENOENT)
				return -EINVAL;
			while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
				ve--;
			if (ve - v >= 2 && *v == '"' && ve[-1] == '"') {
				v++;
				ve--;
			}
			vlen = (size_t)(ve - v);
			for (size_t i = 0; i < vlen; i++)
				if (!cookie_octet((unsigned char)v[i]))
					return -EINVAL;
			if (vlen + 1 > cap)
				return -ENOBUFS;
			memcpy(ret, v, vlen);
			ret[vlen] = '\0';
			found = (int)vlen;
		}
		p = semi ? semi + 1 : end;
	}
	return found;
}

int webform_html_escape(char *ret, size_t cap, size_t *off, const char *s)
{
	/* Terminated even when s is empty (the fuzzer's find). */
	if (*off >= cap)
		return -ENOBUFS;
	ret[*off] = '\0';
	for (; *s; s++) {
		const char *rep = NULL;
		char one[2] = {*s, '\0'};
		size_t n;

		switch (*s) {
		case '&':
			rep = "&amp;";
			break;
		case '<':
			rep = "&lt;";
			break;
		case '>':
			rep = "&gt;";
			break;
		case '"':
			rep = "&quot;";
			break;
		case '\'':
			rep = "&#39;";
			break;
		default:
			rep = one;
			break;
		}
		n = strlen(rep);
		if (*off + n >= cap)
			return -ENOBUFS;
		memcpy(ret + *off, rep, n + 1);
		*off += n;
	}
	return 0;
}
