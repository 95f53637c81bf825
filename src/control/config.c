// SPDX-License-Identifier: MIT
/*
 * The configuration file (config.h): line by line, every line either blank, a
 * comment, or one "key = value" of a known key, each key at most once.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "control/config.h"

enum kind { STRING, BOOL, PORT };

static const struct key {
	const char *name;
	enum kind kind;
	size_t off; /* of the char * or int in struct control_config */
} keys[] = {
    {"state", STRING, offsetof(struct control_config, state_dir)},
    {"listen", STRING, offsetof(struct control_config, listen)},
    {"tls-cert", STRING, offsetof(struct control_config, tls_cert)},
    {"tls-key", STRING, offsetof(struct control_config, tls_key)},
    {"metrics-listen", STRING, offsetof(struct control_config, metrics_listen)},
    {"no-relay", BOOL, offsetof(struct control_config, no_relay)},
    {"stun-port", PORT, offsetof(struct control_config, stun_port)},
    {"public-url", STRING, offsetof(struct control_config, public_url)},
    {"oidc-issuer", STRING, offsetof(struct control_config, oidc_issuer)},
    {"oidc-client-id", STRING, offsetof(struct control_config, oidc_client_id)},
    {"oidc-client-secret-file", STRING, offsetof(struct control_config, oidc_secret_file)},
    {"oidc-ca-file", STRING, offsetof(struct control_config, oidc_ca_file)},
    {"oidc-allowed-domains", STRING, offsetof(struct control_config, oidc_domains)},
    {"oidc-allowed-groups", STRING, offsetof(struct control_config, oidc_groups)},
    {"oidc-groups-claim", STRING, offsetof(struct control_config, oidc_groups_claim)},
    {"machine-cert-auto-renew", STRING, offsetof(struct control_config, mcert_auto_renew)},
    {"oidc-allow-unverified-email", BOOL, offsetof(struct control_config, oidc_allow_unverified)},
    {"consumer-domains", STRING, offsetof(struct control_config, consumer_domains)},
};

#define N_KEYS (sizeof(keys) / sizeof(keys[0]))

static int bad(char *err, size_t err_len, const char *name, unsigned line, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));
static int bad(char *err, size_t err_len, const char *name, unsigned line, const char *fmt, ...)
{
	va_list ap;
	int n = snprintf(err, err_len, "%s:%u: ", name, line);

	va_start(ap, fmt);
	if (n >= 0 && (size_t)n < err_len)
		vsnprintf(err + n, err_len - (size_t)n, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

int control_config_port_parse(const char *s, uint16_t *ret)
{
	unsigned long v = 0;

	if (!s[0] || strlen(s) > 5)
		return -EINVAL;
	for (const char *p = s; *p; p++) {
		if (*p < '0' || *p > '9')
			return -EINVAL;
		v = v * 10 + (unsigned long)(*p - '0');
	}
	if (v > 65535)
		return -EINVAL;
	*ret = (uint16_t)v;
	return 0;
}

static bool is_space(char c)
{
	return c == ' ' || c == '\t';
}

/* Trims [*s, *e) of blanks. */
static void trim(const char **s, const char **e)
{
	while (*s < *e && is_space(**s))
		(*s)++;
	while (*e > *s && is_space((*e)[-1]))
		(*e)--;
}

/* Printable for a message: at most 40 bytes, control characters as '?'. */
static const char *shown(const char *s, size_t len, char buf[48])
{
	size_t n = len < 40 ? len : 40, i;

	for (i = 0; i < n; i++)
		buf[i] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i];
	buf[i] = '\0';
	if (len > 40)
		strcpy(buf + 40, "...");
	return buf;
}

/* One line (no '\n'): 0, or -EINVAL/-ENOMEM with err set. */
static int line_parse(struct control_config *c, bool *seen, const char *s, const char *e,
		      const char *name, unsigned line, char *err, size_t err_len)
{
	const char *eq, *ks, *ke, *vs, *ve;
	const struct key *k = NULL;
	char show[48], *val;
	size_t i;

	trim(&s, &e);
	if (s == e || *s == '#')
		return 0;
	eq = memchr(s, '=', (size_t)(e - s));
	if (!eq)
		return bad(err, err_len, name, line, "expected key = value, not \"%s\"",
			   shown(s, (size_t)(e - s), show));
	ks = s;
	ke = eq;
	vs = eq + 1;
	ve = e;
	trim(&ks, &ke);
	trim(&vs, &ve);
	for (i = 0; i < N_KEYS; i++)
		if (strlen(keys[i].name) == (size_t)(ke - ks) &&
		    memcmp(keys[i].name, ks, (size_t)(ke - ks)) == 0)
			k = &keys[i];
	if (!k)
		return bad(err, err_len, name, line,
			   "unknown key \"%s\" (state, listen, tls-cert, "
			   "tls-key, metrics-listen, no-relay, stun-port, public-url, oidc-issuer, "
			   "oidc-client-id, oidc-client-secret-file, oidc-ca-file, "
			   "oidc-allowed-domains, oidc-allowed-groups, oidc-groups-claim, "
			   "oidc-allow-unverified-email, machine-cert-auto-renew, "
			   "consumer-domains)",
			   shown(ks, (size_t)(ke - ks), show));
	if (seen[k - keys])
		return bad(err, err_len, name, line, "%s is set twice", k->name);
	seen[k - keys] = true;
	/* A value in quotes keeps its spaces and '#'; a comment may follow it. */
	if (vs < ve && *vs == '"') {
		const char *q = memchr(vs + 1, '"', (size_t)(ve - vs - 1));
		const char *rest;

		if (!q)
			return bad(err, err_len, name, line, "%s: missing closing quote", k->name);
		rest = q + 1;
		while (rest < ve && is_space(*rest))
			rest++;
		if (rest < ve && *rest != '#')
			return bad(err, err_len, name, line, "%s: text after the quoted value",
				   k->name);
		vs++;
		ve = q;
	} else {
		const char *hash = memchr(vs, '#', (size_t)(ve - vs));

		if (hash) {
			ve = hash;
			trim(&vs, &ve);
		}
	}
	if (memchr(vs, '\0', (size_t)(ve - vs)))
		return bad(err, err_len, name, line, "%s: NUL byte in the value", k->name);
	if (vs == ve)
		return bad(err, err_len, name, line, "%s needs a value", k->name);
	val = strndup(vs, (size_t)(ve - vs));
	if (!val)
		return -ENOMEM;
	if (k->kind == STRING) {
		*(char **)((char *)c + k->off) = val;
		return 0;
	}
	if (k->kind == BOOL) {
		int *dst = (int *)((char *)c + k->off);

		if (!strcmp(val, "true") || !strcmp(val, "yes") || !strcmp(val, "1"))
			*dst = 1;
		else if (!strcmp(val, "false") || !strcmp(val, "no") || !strcmp(val, "0"))
			*dst = 0;
		else
			*dst = -2;
	} else {
		uint16_t port;

		*(int *)((char *)c + k->off) = control_config_port_parse(val, &port) < 0 ? -2 : port;
	}
	if (*(int *)((char *)c + k->off) == -2) {
		bad(err, err_len, name, line, "%s: \"%s\" is not %s", k->name,
		    shown(val, strlen(val), show), k->kind == BOOL ? "true or false" : "0-65535");
		free(val);
		return -EINVAL;
	}
	free(val);
	return 0;
}

int control_config_parse(const char *text, size_t len, const char *name,
			 struct control_config *ret, char *err, size_t err_len)
{
	struct control_config c = { .no_relay = -1, .stun_port = -1, .oidc_allow_unverified = -1 };
	bool seen[N_KEYS] = { false };
	const char *p = text, *end = text + len;
	unsigned line = 0;
	int r = 0;

	if (len > CONFIG_FILE_MAX) {
		snprintf(err, err_len, "%s: larger than %d bytes", name, CONFIG_FILE_MAX);
		return -EINVAL;
	}
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *e = nl ? nl : end;

		line++;
		if (e - p > CONFIG_LINE_MAX) {
			r = bad(err, err_len, name, line, "line longer than %d bytes",
				CONFIG_LINE_MAX);
			break;
		}
		if (e > p && e[-1] == '\r')
			e--;
		r = line_parse(&c, seen, p, e, name, line, err, err_len);
		if (r < 0)
			break;
		p = nl ? nl + 1 : end;
	}
	if (r == -ENOMEM)
		snprintf(err, err_len, "%s: out of memory", name);
	if (r < 0) {
		control_config_free(&c);
		return r;
	}
	*ret = c;
	return 0;
}

int control_config_load(const char *path, struct control_config *ret, char *err, size_t err_len)
{
	char *buf = malloc(CONFIG_FILE_MAX + 1);
	size_t len = 0;
	ssize_t n;
	int fd, r;

	if (!buf) {
		snprintf(err, err_len, "%s: out of memory", path);
		return -ENOMEM;
	}
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		snprintf(err, err_len, "cannot open %s: %s", path, strerror(errno));
		free(buf);
		return r;
	}
	while (len <= CONFIG_FILE_MAX &&
	       (n = read(fd, buf + len, CONFIG_FILE_MAX + 1 - len)) != 0) {
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			snprintf(err, err_len, "cannot read %s: %s", path, strerror(errno));
			close(fd);
			free(buf);
			return r;
		}
		len += (size_t)n;
	}
	close(fd);
	r = control_config_parse(buf, len, path, ret, err, err_len);
	free(buf);
	return r;
}

void control_config_free(struct control_config *c)
{
	if (!c)
		return;
	free(c->state_dir);
	free(c->listen);
	free(c->tls_cert);
	free(c->tls_key);
	free(c->metrics_listen);
	free(c->public_url);
	free(c->oidc_issuer);
	free(c->oidc_client_id);
	free(c->oidc_secret_file);
	free(c->oidc_ca_file);
	free(c->oidc_domains);
	free(c->oidc_groups);
	free(c->mcert_auto_renew);
	free(c->oidc_groups_claim);
	free(c->consumer_domains);
	memset(c, 0, sizeof(*c));
}
