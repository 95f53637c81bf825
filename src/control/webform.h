/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_CONTROL_WEBFORM_H
#define TRELLIS_CONTROL_WEBFORM_H

/*
 * What the login pages read from a browser, without I/O: fields of an
 * application/x-www-form-urlencoded body, cookies of a Cookie header, and the
 * HTML escaping of what the pages echo back. Everything here is outside input
 * (tests/fuzz/fuzz_webform.c): the parsers never write past ret's capacity,
 * refuse rather than truncate, and refuse a field or cookie given twice (a
 * second CSRF token or session id must not shadow the first).
 */

#include <stddef.h>
#include <stdint.h>

/*
 * The value of field name in body, percent-decoded ('+' is a space), into ret
 * with a NUL. Its length, or -ENOENT (absent), -EINVAL (a bad escape, a NUL or
 * a control character other than tab/CR/LF, given twice), -ENOBUFS (longer than
 * cap - 1).
 */
int webform_field(const uint8_t *body, size_t len, const char *name, char *ret, size_t cap);

/*
 * The value of cookie name in a Cookie header value ("a=1; b=2"), verbatim,
 * into ret with a NUL. Its length, or -ENOENT, -EINVAL (given twice, or not
 * a cookie-octet string), -ENOBUFS.
 */
int webform_cookie(const char *header, size_t len, const char *name, char *ret, size_t cap);

/*
 * Appends s HTML-escaped (&<>"') at ret + *off, keeping a NUL. 0 or -ENOBUFS
 * (ret then ends where it fit).
 */
int webform_html_escape(char *ret, size_t cap, size_t *off, const char *s);

#endif
