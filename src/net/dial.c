/* SPDX-License-Identifier: MIT */
/*
 * Outgoing connections (see dial.h). Every wait is wait_fd(): a poll() on the
 * socket and the caller's wake fd with the time left to the deadline; every
 * socket is non-blocking, so OpenSSL reports WANT_READ/WANT_WRITE and we wait
 * for that, never inside OpenSSL.
 *
 * Connecting races the addresses of a name the way RFC 8305 (Happy Eyeballs)
 * does, a little simplified: families interleaved (IPv6 first, as getaddrinfo
 * sorts them), a new attempt every DIAL_STAGGER_NS while the earlier ones are
 * still pending, the first to connect wins and the rest are closed.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/time.h"
#include "base/util.h"
#include "crypto/crypto.h"
#include "net/dial.h"
#include "net/nat64.h"
#include "net/sockbio.h"

static void set_err(char *err, size_t err_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t err_len, const char *fmt, ...)
{
	va_list ap;

	if (!err || !err_len)
		return;
	va_start(ap, fmt);
	vsnprintf(err, err_len, fmt, ap);
	va_end(ap);
}

/* --- URL --- */

int dial_url_parse(const char *url, struct dial_url *ret)
{
	const char *p, *end, *hs, *he;
	unsigned long port;
	bool tls;

	if (!strncmp(url, "http://", 7)) {
		tls = false;
		p = url + 7;
	} else if (!strncmp(url, "https://", 8)) {
		tls = true;
		p = url + 8;
	} else {
		return -EINVAL;
	}
	end = p + strcspn(p, "/?#");
	if (end == p)
		return -EINVAL;
	if (*p == '[') {
		hs = p + 1;
		he = memchr(hs, ']', (size_t)(end - hs));
		if (!he)
			return -EINVAL;
		p = he + 1;
	} else {
		hs = p;
		he = memchr(hs, ':', (size_t)(end - hs));
		if (!he)
			he = end;
		p = he;
	}
	if (he == hs || (size_t)(he - hs) >= sizeof(ret->host) ||
	    memchr(hs, '@', (size_t)(he - hs)))
		return -EINVAL;
	port = tls ? 443 : 80;
	if (p < end) {
		char digits[8];
		char *e;

		if (*p != ':' || end - p - 1 < 1 || end - p - 1 > 5)
			return -EINVAL;
		memcpy(digits, p + 1, (size_t)(end - p - 1));
		digits[end - p - 1] = '\0';
		if (digits[0] < '0' || digits[0] > '9')
			return -EINVAL;
		port = strtoul(digits, &e, 10);
		if (*e || port == 0 || port > 65535)
			return -EINVAL;
	}
	memcpy(ret->host, hs, (size_t)(he - hs));
	ret->host[he - hs] = '\0';
	ret->tls = tls;
	ret->port = (uint16_t)port;
	if (strchr(ret->host, ':'))
		snprintf(ret->authority, sizeof(ret->authority), "[%s]:%u", ret->host, ret->port);
	else
		snprintf(ret->authority, sizeof(ret->authority), "%s:%u", ret->host, ret->port);
	return 0;
}

/* --- waiting --- */

static int ms_until(uint64_t deadline_ns)
{
	uint64_t now = time_now_ns();

	if (deadline_ns == TIME_NEVER)
		return -1;
	if (now >= deadline_ns)
		return 0;
	/* Round up: waking a little late is harmless, waking early spins. */
	return (int)MIN((deadline_ns - now + NSEC_PER_MSEC - 1) / NSEC_PER_MSEC,
			(uint64_t)INT32_MAX);
}

/* The wake fd is readable: -ECANCELED when stopping, else consume it and return 2. */
static int woken(const struct dial_cancel *cn)
{
	uint64_t v;

	if (cn->stop && atomic_load(cn->stop))
		return -ECANCELED;
	if (read(cn->wake_fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		return -errno;
	return 2;
}

/*
 * Waits for events on fd until deadline_ns. 1 ready, 0 at the deadline, 2 woken
 * with a command (only with want_cmd), -ECANCELED, -errno.
 */
static int wait_fd(const struct dial_cancel *cn, int fd, short events, uint64_t deadline_ns,
		   bool want_cmd)
{
	for (;;) {
		struct pollfd pfd[2] = {{.fd = fd, .events = events},
					{.fd = cn->wake_fd, .events = POLLIN}};
		int r;

		if (cn->stop && atomic_load(cn->stop))
			return -ECANCELED;
		if (time_now_ns() >= deadline_ns)
			return 0;
		r = poll(pfd, cn->wake_fd >= 0 ? 2 : 1, ms_until(deadline_ns));
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (pfd[0].revents)
			return 1;
		if (r > 0 && pfd[1].revents) {
			r = woken(cn);
			if (r < 0 || want_cmd)
				return r;
		}
	}
}

int dial_cancel_open(struct dial_cancel *c, const atomic_bool *stop)
{
	c->stop = stop;
	c->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	return c->wake_fd < 0 ? -errno : 0;
}

void dial_cancel_close(struct dial_cancel *c)
{
	if (c->wake_fd >= 0)
		close(c->wake_fd);
	c->wake_fd = -1;
}

int dial_cancel_wake(const struct dial_cancel *c)
{
	uint64_t one = 1;

	if (write(c->wake_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		return -errno;
	return 0;
}

int dial_sleep(const struct dial_cancel *cancel, uint64_t deadline_ns)
{
	int r = wait_fd(cancel, -1, 0, deadline_ns, false);

	return r < 0 ? r : 0;
}

int dial_wait(const struct dial_cancel *cancel, uint64_t deadline_ns)
{
	int r = wait_fd(cancel, -1, 0, deadline_ns, true);

	return r < 0 ? r : r == 2;
}

/* --- TLS --- */

/*
 * The system trust store, loaded per handshake (issue 14). OpenSSL's default file is the
 * distribution's whole bundle (Debian's: 144 certificates, 0.85 MiB of heap once parsed);
 * loaded into a context it stays for the context's life, and trellisd keeps two (the
 * control client's, the relay client's) for its own while it connects once in a long
 * while. So such a context remembers only where the store is, SSL_CERT_FILE and
 * SSL_CERT_DIR as they were when it was made (or OpenSSL's defaults); each handshake
 * loads the certificates into a store of its own (trust_load) and frees it once the
 * handshake is done (trust_drop): an idle node holds no parsed certificates. The cost,
 * parsing the bundle on each connect (a few ms), is why a server that dials often (a
 * relay polling its control server) keeps the store in the context instead.
 */
struct trust_paths {
	char *file;
	char *dir;
};

static pthread_once_t paths_once = PTHREAD_ONCE_INIT;
static int paths_idx = -1;

static void paths_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
	struct trust_paths *p = ptr;

	(void)parent;
	(void)ad;
	(void)idx;
	(void)argl;
	(void)argp;
	if (!p)
		return;
	free(p->file);
	free(p->dir);
	free(p);
}

static void paths_index(void)
{
	paths_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, paths_free);
}

static char *env_or(const char *name, const char *dflt)
{
	const char *v = getenv(name);

	return strdup(v ? v : dflt);
}

static const struct trust_paths *trust_paths_of(SSL_CTX *ctx)
{
	return paths_idx >= 0 ? SSL_CTX_get_ex_data(ctx, paths_idx) : NULL;
}

static SSL_CTX *tls_ctx_new(bool per_handshake)
{
	struct trust_paths *p = NULL;
	SSL_CTX *ctx;

	/* Error strings on demand (dial_tls_reason), libssl's as libcrypto's (crypto.c). */
	crypto_init();
	OPENSSL_init_ssl(OPENSSL_INIT_NO_LOAD_SSL_STRINGS, NULL);
	ctx = SSL_CTX_new(TLS_client_method());
	if (!ctx)
		return NULL;
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	if (!per_handshake) {
		/* The system store; OpenSSL also honours SSL_CERT_FILE / SSL_CERT_DIR. */
		SSL_CTX_set_default_verify_paths(ctx);
		return ctx;
	}
	/* Where X509_STORE_set_default_paths would look. */
	pthread_once(&paths_once, paths_index);
	p = paths_idx >= 0 ? calloc(1, sizeof(*p)) : NULL;
	if (!p)
		goto fail;
	p->file = env_or(X509_get_default_cert_file_env(), X509_get_default_cert_file());
	p->dir = env_or(X509_get_default_cert_dir_env(), X509_get_default_cert_dir());
	if (!p->file || !p->dir || !SSL_CTX_set_ex_data(ctx, paths_idx, p))
		goto fail;
	return ctx;
fail:
	paths_free(NULL, p, NULL, 0, 0, NULL);
	SSL_CTX_free(ctx);
	return NULL;
}

SSL_CTX *dial_tls_ctx_new(void)
{
	return tls_ctx_new(false);
}

SSL_CTX *dial_tls_ctx_new_per_handshake(void)
{
	return tls_ctx_new(true);
}

/* A context of ours: this handshake's own store, from the remembered paths. 0 or -ENOMEM. */
static int trust_load(SSL *ssl, SSL_CTX *ctx)
{
	const struct trust_paths *p = trust_paths_of(ctx);
	X509_STORE *st;
	int ok;

	if (!p)
		return 0; /* the caller's own context and store */
	st = X509_STORE_new();
	if (!st)
		return -ENOMEM;
	/* As X509_STORE_set_default_paths: a missing file or directory is no error. */
	X509_STORE_load_file(st, p->file);
	X509_STORE_load_path(st, p->dir);
	ERR_clear_error();
	ok = SSL_set1_verify_cert_store(ssl, st);
	X509_STORE_free(st);
	return ok ? 0 : -ENOMEM;
}

/*
 * The handshake is over (or failed, c closed): the store goes, and its pages back to the
 * system, which free() alone would not do: the parsed bundle lies among the connection's
 * own allocations, below the top of the heap.
 */
static void trust_drop(struct dial_conn *c, SSL_CTX *ctx)
{
	if (!ctx || !trust_paths_of(ctx))
		return;
	if (c->ssl)
		SSL_set0_verify_cert_store(c->ssl, NULL);
	malloc_trim(0);
}

int dial_cert_spki_sha256(X509 *cert, uint8_t ret[32])
{
	unsigned char *der = NULL;
	unsigned len = 32;
	int n, r = 0;

	n = i2d_PUBKEY(X509_get0_pubkey(cert), &der);
	if (n <= 0)
		return -EINVAL;
	if (EVP_Digest(der, (size_t)n, ret, &len, EVP_sha256(), NULL) != 1)
		r = -EINVAL;
	OPENSSL_free(der);
	return r;
}

/* With a pin hook, verification failures are recorded, not fatal: the hook decides. */
static int verify_defer(int ok, X509_STORE_CTX *ctx)
{
	(void)ok;
	(void)ctx;
	return 1;
}

static bool is_address(const char *host)
{
	uint8_t a[16];

	return inet_pton(AF_INET, host, a) == 1 || inet_pton(AF_INET6, host, a) == 1;
}

/* Waits for what OpenSSL wants after a call that returned r. 1 to retry, or -errno. */
static int tls_wait(struct dial_conn *c, int r, uint64_t deadline_ns)
{
	int e = SSL_get_error(c->ssl, r);

	if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
		return -EPROTO;
	r = wait_fd(&c->cancel, c->fd, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline_ns,
		    false);
	if (r == 0)
		return -ETIMEDOUT;
	return r < 0 ? r : 1;
}

static int tls_start(struct dial_conn *c, const struct dial_opts *o, char *err, size_t err_len)
{
	const char *name = o->sni ? o->sni : o->host;
	BIO *bio;
	long vr;
	int r;

	if (!o->ssl_ctx) {
		set_err(err, err_len, "TLS with %s: no TLS context", name);
		return -EINVAL;
	}
	c->ssl = SSL_new(o->ssl_ctx);
	bio = c->ssl && trust_load(c->ssl, o->ssl_ctx) == 0 ? sockbio_new(c->fd) : NULL;
	if (!bio) {
		set_err(err, err_len, "TLS with %s: out of memory", name);
		return -ENOMEM;
	}
	SSL_set_bio(c->ssl, bio, bio);
	/* RFC 6066: SNI carries host names only, never address literals. */
	if (!is_address(name))
		SSL_set_tlsext_host_name(c->ssl, name);
	if (is_address(name))
		X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), name);
	else
		SSL_set1_host(c->ssl, name);
	if (o->pin)
		SSL_set_verify(c->ssl, SSL_VERIFY_PEER, verify_defer);
	ERR_clear_error();
	while ((r = SSL_connect(c->ssl)) != 1) {
		unsigned long e = ERR_peek_error();

		r = tls_wait(c, r, o->deadline_ns);
		if (r == 1)
			continue;
		if (r == -ECANCELED)
			return r;
		if (r == -ETIMEDOUT) {
			set_err(err, err_len, "TLS with %s: no handshake within the deadline",
				name);
			return r;
		}
		vr = SSL_get_verify_result(c->ssl);
		if (vr != X509_V_OK)
			set_err(err, err_len, "TLS with %s: certificate not trusted: %s", name,
				X509_verify_cert_error_string(vr));
		else
			set_err(err, err_len, "TLS with %s failed: %s", name,
				e ? dial_tls_reason(e) : "connection closed");
		return -EPROTO;
	}
	if (o->pin) {
		X509 *leaf = SSL_get0_peer_certificate(c->ssl);

		vr = SSL_get_verify_result(c->ssl);
		if (err && err_len)
			err[0] = '\0';
		r = leaf ? o->pin(o->pin_ctx, leaf, vr == X509_V_OK, err, err_len) : -EPROTO;
		if (r < 0) {
			if (!err || !err[0])
				set_err(err, err_len, "TLS with %s: certificate refused (pin)",
					name);
			return r;
		}
	}
	return 0;
}

/* --- connect --- */

static void conn_init(struct dial_conn *c, const struct dial_opts *o)
{
	c->fd = -1;
	c->ssl = NULL;
	c->cancel = o->cancel;
	if (o->name)
		snprintf(c->name, sizeof(c->name), "%s", o->name);
	else if (strchr(o->host, ':'))
		snprintf(c->name, sizeof(c->name), "[%s]:%u", o->host, o->port);
	else
		snprintf(c->name, sizeof(c->name), "%s:%u", o->host, o->port);
}

/*
 * Interleaves the families of res, then of alt (NULL: none), into addrs (at most
 * DIAL_ADDRS_MAX), the family of res's first address first.
 */
static unsigned addrs_order(struct addrinfo *res, struct addrinfo *alt, struct addrinfo **addrs)
{
	struct addrinfo *fam[2][DIAL_ADDRS_MAX], *lists[2] = {res, alt}, *ai;
	unsigned n[2] = {0, 0}, i, k = 0;
	int first = res->ai_family;

	for (unsigned l = 0; l < ARRAY_SIZE(lists); l++) {
		for (ai = lists[l]; ai; ai = ai->ai_next) {
			int f = ai->ai_family != first;

			if (n[f] < DIAL_ADDRS_MAX)
				fam[f][n[f]++] = ai;
		}
	}
	for (i = 0; k < DIAL_ADDRS_MAX && (i < n[0] || i < n[1]); i++) {
		if (i < n[0])
			addrs[k++] = fam[0][i];
		if (i < n[1] && k < DIAL_ADDRS_MAX)
			addrs[k++] = fam[1][i];
	}
	return k;
}

/* IPv6 addresses made for IPv4 ones behind a NAT64 (nat64_add): addrinfo points into it. */
struct synthesized {
	struct addrinfo ai[DIAL_ADDRS_MAX];
	struct sockaddr_in6 sa[DIAL_ADDRS_MAX];
};

/*
 * On an IPv6-only link with a NAT64 (src/net/nat64.h), an IPv4 address is reached
 * through the IPv6 address that embeds it: each IPv4 address among addrs[0..n) gets one,
 * after it, while room lasts (RFC 8305 §7). Where IPv4 has a route its own attempt goes
 * first and usually wins; where it has none, connect() fails at once with ENETUNREACH
 * and the synthesized one is next. Returns the new count.
 */
static unsigned nat64_add(struct addrinfo **addrs, unsigned n, struct synthesized *syn)
{
	struct addrinfo *in[DIAL_ADDRS_MAX];
	unsigned i, k = 0, m = 0;

	if (!n)
		return 0;
	memcpy(in, addrs, n * sizeof(*in));
	for (i = 0; i < n && k < DIAL_ADDRS_MAX; i++) {
		struct endpoint ep = {0}, out;

		addrs[k++] = in[i];
		if (in[i]->ai_family != AF_INET || k >= DIAL_ADDRS_MAX)
			continue;
		memcpy(&ep.in4, in[i]->ai_addr, sizeof(ep.in4));
		if (nat64_endpoint_synthesize(&ep, &out) < 0)
			continue;
		syn->sa[m] = out.in6;
		syn->ai[m] = (struct addrinfo){.ai_family = AF_INET6,
					       .ai_socktype = in[i]->ai_socktype,
					       .ai_protocol = in[i]->ai_protocol,
					       .ai_addrlen = sizeof(syn->sa[m]),
					       .ai_addr = (struct sockaddr *)&syn->sa[m]};
		addrs[k++] = &syn->ai[m++];
	}
	return k;
}

/*
 * Races connects to addrs[0..n): a new one every DIAL_STAGGER_NS or as soon as
 * all started ones failed. Returns the connected fd, or -errno.
 */
static int connect_race(struct addrinfo **addrs, unsigned n, const struct dial_cancel *cn,
			uint64_t deadline_ns)
{
	struct pollfd pfd[DIAL_ADDRS_MAX + 1];
	int fds[DIAL_ADDRS_MAX];
	unsigned started = 0, pending = 0, i;
	uint64_t next_start = 0;
	int last_err = ECONNREFUSED, won = -1;

	for (;;) {
		uint64_t now = time_now_ns(), wake;
		unsigned np = 0;
		int r;

		if (cn->stop && atomic_load(cn->stop)) {
			last_err = ECANCELED;
			break;
		}
		if (now >= deadline_ns) {
			last_err = ETIMEDOUT;
			break;
		}
		if (started < n && (now >= next_start || !pending)) {
			struct addrinfo *ai = addrs[started];
			int fd =
			    socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
				   ai->ai_protocol);

			fds[started++] = fd;
			if (fd < 0) {
				last_err = errno;
				continue;
			}
			if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
				won = (int)started - 1;
				break;
			}
			if (errno != EINPROGRESS) {
				last_err = errno;
				close(fd);
				fds[started - 1] = -1;
				continue;
			}
			pending++;
			next_start = now + DIAL_STAGGER_NS;
			continue;
		}
		if (!pending)
			break; /* every address failed */
		for (i = 0; i < started; i++)
			if (fds[i] >= 0)
				pfd[np++] = (struct pollfd){.fd = fds[i], .events = POLLOUT};
		pfd[np] = (struct pollfd){.fd = cn->wake_fd, .events = POLLIN};
		wake = started < n ? MIN(deadline_ns, next_start) : deadline_ns;
		r = poll(pfd, np + (cn->wake_fd >= 0), ms_until(wake));
		if (r < 0) {
			if (errno == EINTR)
				continue;
			last_err = errno;
			break;
		}
		if (cn->wake_fd >= 0 && pfd[np].revents) {
			r = woken(cn);
			if (r < 0) {
				last_err = -r;
				break;
			}
		}
		for (i = 0; i < np && won < 0; i++) {
			int soerr = 0;
			socklen_t sl = sizeof(soerr);
			unsigned k;

			if (!pfd[i].revents)
				continue;
			for (k = 0; fds[k] != pfd[i].fd; k++)
				;
			if (getsockopt(pfd[i].fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
				soerr = errno;
			if (!soerr) {
				won = (int)k;
				break;
			}
			last_err = soerr;
			close(fds[k]);
			fds[k] = -1;
			pending--;
		}
		if (won >= 0)
			break;
	}
	for (i = 0; i < started; i++)
		if (fds[i] >= 0 && (int)i != won)
			close(fds[i]);
	return won >= 0 ? fds[won] : -last_err;
}

int dial_open(struct dial_conn *c, const struct dial_opts *o, char *err, size_t err_len)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_ADDRCONFIG};
	struct addrinfo *res = NULL, *alt = NULL, *addrs[DIAL_ADDRS_MAX];
	struct synthesized syn;
	struct nat64_prefix pref;
	char portstr[8];
	int r, one = 1;

	conn_init(c, o);
	/*
	 * AI_ADDRCONFIG drops IPv4 results, literals included, on a host without an IPv4
	 * address: behind a NAT64 they are what nat64_add reaches through the prefix.
	 */
	if (nat64_prefix_get(&pref, NULL))
		hints.ai_flags = 0;
	snprintf(portstr, sizeof(portstr), "%u", o->port);
	r = getaddrinfo(o->host, portstr, &hints, &res);
	if (r) {
		set_err(err, err_len, "cannot reach %s: %s", c->name, gai_strerror(r));
		return -EHOSTUNREACH;
	}
	/* The other address is a second chance: when it does not resolve, host's are tried. */
	if (o->alt_host && getaddrinfo(o->alt_host, portstr, &hints, &alt))
		alt = NULL;
	r = connect_race(addrs, nat64_add(addrs, addrs_order(res, alt, addrs), &syn), &c->cancel,
			 o->deadline_ns);
	freeaddrinfo(res);
	if (alt)
		freeaddrinfo(alt);
	if (r < 0) {
		if (r != -ECANCELED)
			set_err(err, err_len, "cannot reach %s: %s", c->name, strerror(-r));
		return r;
	}
	c->fd = r;
	/* Requests and frames are written whole: no reason to wait for more. */
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (o->tls) {
		r = tls_start(c, o, err, err_len);
		if (r < 0)
			dial_close(c, 0);
		trust_drop(c, o->ssl_ctx);
		if (r < 0)
			return r;
	}
	return 0;
}

void dial_close(struct dial_conn *c, uint64_t linger_ns)
{
	uint64_t deadline = linger_ns ? time_now_ns() + linger_ns : 0;
	char buf[4096];

	if (c->fd < 0)
		return;
	if (c->ssl && linger_ns)
		SSL_shutdown(c->ssl); /* close_notify, if the socket takes it now */
	if (linger_ns)
		shutdown(c->fd, SHUT_WR);
	/*
	 * Unread data makes close() send a reset, which can destroy our last bytes
	 * in flight; read what is there (and, lingering, what comes) first.
	 */
	for (;;) {
		ssize_t n = recv(c->fd, buf, sizeof(buf), 0);

		if (n > 0)
			continue;
		if (n == 0 || (errno != EAGAIN && errno != EINTR) || !linger_ns)
			break;
		if (wait_fd(&c->cancel, c->fd, POLLIN, deadline, false) != 1)
			break;
	}
	SSL_free(c->ssl);
	c->ssl = NULL;
	close(c->fd);
	c->fd = -1;
}

/* --- I/O --- */

int dial_write(struct dial_conn *c, const void *data, size_t len, uint64_t deadline_ns, char *err,
	       size_t err_len)
{
	const uint8_t *p = data;
	int r;

	while (len) {
		ssize_t n;

		if (c->cancel.stop && atomic_load(c->cancel.stop))
			return -ECANCELED;
		if (c->ssl) {
			int w;

			ERR_clear_error();
			w = SSL_write(c->ssl, p, (int)MIN(len, (size_t)INT32_MAX));
			if (w <= 0) {
				/* SSL_write retries must repeat the same arguments: they do. */
				r = tls_wait(c, w, deadline_ns);
				if (r == 1)
					continue;
				if (r == -EPROTO)
					r = -EPIPE;
				goto fail;
			}
			n = w;
		} else {
			n = send(c->fd, p, len, MSG_NOSIGNAL);
			if (n < 0) {
				if (errno == EINTR)
					continue;
				if (errno != EAGAIN) {
					r = -errno;
					goto fail;
				}
				r = wait_fd(&c->cancel, c->fd, POLLOUT, deadline_ns, false);
				if (r == 1)
					continue;
				if (r == 0)
					r = -ETIMEDOUT;
				goto fail;
			}
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
fail:
	if (r != -ECANCELED)
		set_err(err, err_len, "connection to %s lost: %s", c->name, strerror(-r));
	return r;
}

ssize_t dial_read(struct dial_conn *c, void *buf, size_t len, uint64_t deadline_ns)
{
	int r;

	for (;;) {
		if (c->ssl) {
			int n;

			ERR_clear_error();
			n = SSL_read(c->ssl, buf, (int)MIN(len, (size_t)INT32_MAX));
			if (n > 0)
				return n;
			r = SSL_get_error(c->ssl, n);
			if (r == SSL_ERROR_ZERO_RETURN)
				return 0;
			if (r != SSL_ERROR_WANT_READ && r != SSL_ERROR_WANT_WRITE)
				return -ECONNRESET;
			r = wait_fd(&c->cancel, c->fd, r == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT,
				    deadline_ns, true);
		} else {
			ssize_t n = recv(c->fd, buf, len, 0);

			if (n >= 0)
				return n;
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				return -errno;
			r = wait_fd(&c->cancel, c->fd, POLLIN, deadline_ns, true);
		}
		if (r == 0)
			return -EAGAIN;
		if (r == 2)
			return -EINTR;
		if (r < 0)
			return r;
	}
}

/* --- HTTP --- */

/* The request target of req's first line, for messages ("/control"). */
static void target_of(const char *req, size_t req_len, char *out, size_t cap)
{
	const char *sp = memchr(req, ' ', req_len), *end;

	out[0] = '\0';
	if (!sp)
		return;
	sp++;
	end = memchr(sp, ' ', req_len - (size_t)(sp - req));
	if (end && (size_t)(end - sp) < cap) {
		memcpy(out, sp, (size_t)(end - sp));
		out[end - sp] = '\0';
	}
}

ssize_t dial_http_request(struct dial_conn *c, const char *req, size_t req_len, char *buf,
			  size_t cap, struct http_response *resp, uint64_t deadline_ns, char *err,
			  size_t err_len)
{
	uint64_t start = time_now_ns();
	size_t have = 0;
	int r;

	r = dial_write(c, req, req_len, deadline_ns, err, err_len);
	if (r < 0)
		return r;
	for (;;) {
		ssize_t n;

		if (have == cap) {
			set_err(err, err_len, "%s: response head too large", c->name);
			return -E2BIG;
		}
		n = dial_read(c, buf + have, cap - have, deadline_ns);
		if (n == -EINTR)
			continue;
		if (n == -EAGAIN) {
			set_err(err, err_len, "%s: no answer within %llu s", c->name,
				(unsigned long long)((deadline_ns - start + NSEC_PER_SEC / 2) /
						     NSEC_PER_SEC));
			return -ETIMEDOUT;
		}
		if (n < 0) {
			if (n != -ECANCELED)
				set_err(err, err_len, "%s: %s", c->name, strerror((int)-n));
			return n;
		}
		if (n == 0) {
			set_err(err, err_len, "%s closed the connection", c->name);
			return -ECONNRESET;
		}
		have += (size_t)n;
		r = http_response_parse(resp, buf, have);
		if (r == 0)
			return (ssize_t)have;
		if (r == -E2BIG) {
			set_err(err, err_len, "%s: response head too large", c->name);
			return r;
		}
		if (r != -EAGAIN) {
			set_err(err, err_len, "%s does not speak HTTP as expected", c->name);
			return -EBADMSG;
		}
	}
}

ssize_t dial_http_upgrade(struct dial_conn *c, const char *req, size_t req_len, char *buf,
			  size_t cap, struct http_response *resp, uint64_t deadline_ns, char *err,
			  size_t err_len)
{
	ssize_t n = dial_http_request(c, req, req_len, buf, cap, resp, deadline_ns, err, err_len);
	char target[128];

	if (n < 0)
		return n;
	if (resp->status != 101) {
		target_of(req, req_len, target, sizeof(target));
		set_err(err, err_len, "%s%s answered %u instead of switching protocols", c->name,
			target, resp->status);
		return -EPROTO;
	}
	return n;
}

ssize_t dial_http_body_read(struct dial_conn *c, char *buf, size_t cap, size_t have,
			    const struct http_response *resp, uint64_t deadline_ns, char *err,
			    size_t err_len)
{
	if (!resp->has_content_length || resp->content_length > cap - resp->head_len) {
		set_err(err, err_len, "%s: bad response body", c->name);
		return -EMSGSIZE;
	}
	while (have < resp->head_len + resp->content_length) {
		ssize_t n = dial_read(c, buf + have, cap - have, deadline_ns);

		if (n == -EINTR)
			continue;
		if (n <= 0) {
			if (n == -ECANCELED)
				return n;
			set_err(err, err_len, "%s: response cut short", c->name);
			return n == -EAGAIN ? -ETIMEDOUT : -ECONNRESET;
		}
		have += (size_t)n;
	}
	return (ssize_t)have;
}
