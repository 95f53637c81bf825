/* SPDX-License-Identifier: MIT */
/*
 * Dialing: URL parsing; connect refused, timing out at its deadline (a
 * listener whose accept queue is full drops our SYN), stopped by the caller's
 * wake fd; TLS against a throwaway CA made here (trusted via SSL_CERT_FILE,
 * untrusted, wrong name, the store read per handshake and dropped after it,
 * not TLS at all with OpenSSL's reason told, a pin hook refusing a trusted
 * certificate and one accepting an untrusted one by its key hash); no SIGPIPE
 * when the TLS peer is gone; HTTP request, upgrade with leftover bytes, body,
 * and non-HTTP.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>

#include "base/time.h"
#include "net/dial.h"

#define IO_NS (5ULL * NSEC_PER_SEC)

static void test_url_parse(void **state)
{
	struct dial_url u;
	char longhost[400];

	(void)state;
	assert_int_equal(dial_url_parse("http://192.0.2.1:8080", &u), 0);
	assert_false(u.tls);
	assert_string_equal(u.host, "192.0.2.1");
	assert_int_equal(u.port, 8080);
	assert_string_equal(u.authority, "192.0.2.1:8080");
	assert_int_equal(dial_url_parse("https://ctl.example/", &u), 0);
	assert_true(u.tls);
	assert_string_equal(u.host, "ctl.example");
	assert_int_equal(u.port, 443);
	assert_string_equal(u.authority, "ctl.example:443");
	assert_int_equal(dial_url_parse("http://[2001:db8::1]:99", &u), 0);
	assert_string_equal(u.host, "2001:db8::1");
	assert_int_equal(u.port, 99);
	assert_string_equal(u.authority, "[2001:db8::1]:99");
	assert_int_equal(dial_url_parse("http://h/path?q#f", &u), 0);
	assert_string_equal(u.host, "h");
	assert_int_equal(u.port, 80);
	assert_int_equal(dial_url_parse("ftp://x", &u), -EINVAL);
	assert_int_equal(dial_url_parse("http://", &u), -EINVAL);
	assert_int_equal(dial_url_parse("http://h:0", &u), -EINVAL);
	assert_int_equal(dial_url_parse("http://h:70000", &u), -EINVAL);
	assert_int_equal(dial_url_parse("http://h:x1", &u), -EINVAL);
	assert_int_equal(dial_url_parse("http://h:", &u), -EINVAL);
	assert_int_equal(dial_url_parse("http://u@h", &u), -EINVAL);
	assert_int_equal(dial_url_parse("http://[2001:db8::1", &u), -EINVAL);
	assert_int_equal(dial_url_parse("http://[]:80", &u), -EINVAL);
	memset(longhost, 'a', sizeof(longhost));
	memcpy(longhost, "http://", 7);
	longhost[sizeof(longhost) - 1] = '\0';
	assert_int_equal(dial_url_parse(longhost, &u), -EINVAL);
}

/* --- plain TCP --- */

static int listener(int backlog, uint16_t *ret_port)
{
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof(sin);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(listen(fd, backlog), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &sl), 0);
	*ret_port = ntohs(sin.sin_port);
	return fd;
}

static struct dial_opts plain_opts(uint16_t port, uint64_t timeout_ns)
{
	return (struct dial_opts){.host = "127.0.0.1",
				  .port = port,
				  .deadline_ns = time_now_ns() + timeout_ns,
				  .cancel = {.wake_fd = -1}};
}

static void test_connect_refused(void **state)
{
	struct dial_conn c;
	struct dial_opts o;
	char err[256] = "";
	uint16_t port;
	int fd = listener(1, &port);

	(void)state;
	close(fd); /* nothing listens there now */
	o = plain_opts(port, IO_NS);
	assert_int_equal(dial_open(&c, &o, err, sizeof(err)), -ECONNREFUSED);
	assert_int_equal(c.fd, -1);
	assert_non_null(strstr(err, "cannot reach 127.0.0.1:"));
	assert_non_null(strstr(err, strerror(ECONNREFUSED)));
}

/*
 * A server's other address (dial_opts.alt_host, a relay's IPv4 address after its IPv6
 * one): tried when host's fails, and only then.
 */
static void test_connect_alt(void **state)
{
	struct dial_conn c;
	struct dial_opts o;
	struct sockaddr_in peer;
	socklen_t sl = sizeof(peer);
	char err[256] = "";
	uint16_t port;
	int fd = listener(2, &port);

	(void)state;
	o = plain_opts(port, IO_NS);
	o.host = "127.0.0.2"; /* loopback, but nothing listens there: refused */
	assert_int_equal(dial_open(&c, &o, err, sizeof(err)), -ECONNREFUSED);
	o.alt_host = "127.0.0.1";
	assert_int_equal(dial_open(&c, &o, err, sizeof(err)), 0);
	assert_true(c.fd >= 0);
	dial_close(&c, 0);
	/* host answers: the connection is host's, alt_host is not needed. */
	o.host = "127.0.0.1";
	o.alt_host = "127.0.0.2";
	assert_int_equal(dial_open(&c, &o, err, sizeof(err)), 0);
	assert_int_equal(getpeername(c.fd, (struct sockaddr *)&peer, &sl), 0);
	assert_int_equal(ntohl(peer.sin_addr.s_addr), INADDR_LOOPBACK);
	dial_close(&c, 0);
	close(fd);
}

/*
 * A listener with a full accept queue drops new SYNs: our connect stays
 * pending. Fills the queue with connects that complete, until one does not.
 */
struct blackhole {
	int lfd;
	uint16_t port;
	int fills[8];
	unsigned n;
};

static void blackhole_open(struct blackhole *b)
{
	b->lfd = listener(0, &b->port);
	for (b->n = 0; b->n < 8; b->n++) {
		struct sockaddr_in sin = {.sin_family = AF_INET,
					  .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
					  .sin_port = htons(b->port)};
		struct pollfd p;
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

		assert_true(fd >= 0);
		b->fills[b->n] = fd;
		if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0)
			continue;
		assert_int_equal(errno, EINPROGRESS);
		p = (struct pollfd){.fd = fd, .events = POLLOUT};
		if (poll(&p, 1, 200) == 0) {
			b->n++;
			return; /* this one hangs: the queue is full */
		}
	}
	fail_msg("the accept queue never filled");
}

static void blackhole_close(struct blackhole *b)
{
	unsigned i;

	for (i = 0; i < b->n; i++)
		close(b->fills[i]);
	close(b->lfd);
}

static void test_connect_timeout(void **state)
{
	struct blackhole b;
	struct dial_conn c;
	struct dial_opts o;
	char err[256] = "";
	uint64_t t0, dt;

	(void)state;
	blackhole_open(&b);
	o = plain_opts(b.port, 300 * NSEC_PER_MSEC);
	t0 = time_now_ns();
	assert_int_equal(dial_open(&c, &o, err, sizeof(err)), -ETIMEDOUT);
	dt = time_now_ns() - t0;
	assert_true(dt >= 300 * NSEC_PER_MSEC);
	assert_true(dt < 5 * NSEC_PER_SEC);
	assert_non_null(strstr(err, strerror(ETIMEDOUT)));
	blackhole_close(&b);
}

struct canceller {
	int efd;
	atomic_bool stop;
	bool set_stop;
};

static void *cancel_main(void *arg)
{
	struct canceller *k = arg;
	uint64_t one = 1;

	if (k->set_stop)
		atomic_store(&k->stop, true);
	assert_int_equal(write(k->efd, &one, sizeof(one)), (ssize_t)sizeof(one));
	return NULL;
}

/* A command (wake without stop) does not end a connect; stop does, at once. */
static void test_connect_cancel(void **state)
{
	struct canceller k = {.efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)};
	struct blackhole b;
	struct dial_conn c;
	struct dial_opts o;
	char err[256] = "";
	pthread_t th;
	uint64_t t0;

	(void)state;
	assert_true(k.efd >= 0);
	blackhole_open(&b);

	o = plain_opts(b.port, 300 * NSEC_PER_MSEC);
	o.cancel = (struct dial_cancel){.wake_fd = k.efd, .stop = &k.stop};
	assert_int_equal(pthread_create(&th, NULL, cancel_main, &k), 0);
	assert_int_equal(dial_open(&c, &o, err, sizeof(err)), -ETIMEDOUT);
	pthread_join(th, NULL);

	o = plain_opts(b.port, 60 * NSEC_PER_SEC);
	o.cancel = (struct dial_cancel){.wake_fd = k.efd, .stop = &k.stop};
	k.set_stop = true;
	t0 = time_now_ns();
	assert_int_equal(pthread_create(&th, NULL, cancel_main, &k), 0);
	assert_int_equal(dial_open(&c, &o, err, sizeof(err)), -ECANCELED);
	assert_true(time_now_ns() - t0 < 10 * NSEC_PER_SEC);
	pthread_join(th, NULL);
	/* Stopped: a sleep returns at once too. */
	assert_int_equal(dial_sleep(&o.cancel, TIME_NEVER), -ECANCELED);
	blackhole_close(&b);
	close(k.efd);
}

/* --- a test server: accepts connections one at a time, TLS or not --- */

enum srv_mode { SRV_ECHO, SRV_DROP, SRV_HTTP, SRV_JUNK };

struct srv {
	int lfd;
	uint16_t port;
	SSL_CTX *tls; /* NULL: plain */
	pthread_t thread;
	enum srv_mode mode;
	const char *http_reply; /* SRV_HTTP: sent after the request head */
	size_t echoed;		/* SRV_ECHO: bytes echoed before the peer's FIN */
	bool clean_eof;
};

static ssize_t srv_read(int fd, SSL *ssl, void *buf, size_t len)
{
	if (ssl) {
		int n = SSL_read(ssl, buf, (int)len);

		return n > 0 ? n : (SSL_get_error(ssl, n) == SSL_ERROR_ZERO_RETURN ? 0 : -1);
	}
	return recv(fd, buf, len, 0);
}

static void srv_write(int fd, SSL *ssl, const void *buf, size_t len)
{
	if (ssl)
		SSL_write(ssl, buf, (int)len);
	else
		send(fd, buf, len, MSG_NOSIGNAL);
}

static void srv_conn(struct srv *s, int fd)
{
	char buf[4096];
	SSL *ssl = NULL;
	size_t have = 0;
	ssize_t n;

	if (s->tls) {
		ssl = SSL_new(s->tls);
		SSL_set_fd(ssl, fd);
		if (SSL_accept(ssl) != 1)
			goto out;
	}
	switch (s->mode) {
	case SRV_DROP:
		/* Unread data on close: the kernel answers the client with a reset. */
		break;
	case SRV_JUNK:
		/* A plain HTTP server on a port the client speaks TLS to. */
		srv_write(fd, ssl, "HTTP/1.1 400 Bad Request\r\n\r\n", 28);
		while (srv_read(fd, ssl, buf, sizeof(buf)) > 0)
			;
		break;
	case SRV_ECHO:
		s->echoed = 0;
		s->clean_eof = false;
		while ((n = srv_read(fd, ssl, buf, sizeof(buf))) > 0) {
			srv_write(fd, ssl, buf, (size_t)n);
			s->echoed += (size_t)n;
		}
		s->clean_eof = n == 0;
		break;
	case SRV_HTTP:
		while (!memmem(buf, have, "\r\n\r\n", 4) && have < sizeof(buf)) {
			n = srv_read(fd, ssl, buf + have, sizeof(buf) - have);
			if (n <= 0)
				goto out;
			have += (size_t)n;
		}
		if (s->http_reply)
			srv_write(fd, ssl, s->http_reply, strlen(s->http_reply));
		/* Then wait for the client to go. */
		while (srv_read(fd, ssl, buf, sizeof(buf)) > 0)
			;
		break;
	}
out:
	SSL_free(ssl);
	close(fd);
}

static void *srv_main(void *arg)
{
	struct srv *s = arg;
	sigset_t set;
	int fd;

	/*
	 * The server's OpenSSL writes with write(2): its own SIGPIPE (thread
	 * directed) stays pending here, while the client's thread keeps SIGPIPE
	 * deliverable, so a client write that raised it would kill the test.
	 */
	sigemptyset(&set);
	sigaddset(&set, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &set, NULL);

	while ((fd = accept(s->lfd, NULL, NULL)) >= 0)
		srv_conn(s, fd);
	return NULL;
}

static void srv_start(struct srv *s, SSL_CTX *tls, enum srv_mode mode)
{
	memset(s, 0, sizeof(*s));
	s->tls = tls;
	s->mode = mode;
	s->lfd = listener(8, &s->port);
	assert_int_equal(pthread_create(&s->thread, NULL, srv_main, s), 0);
}

static void srv_stop(struct srv *s)
{
	shutdown(s->lfd, SHUT_RDWR);
	pthread_join(s->thread, NULL);
	close(s->lfd);
}

/* --- a throwaway PKI --- */

struct pki {
	EVP_PKEY *ca_key, *srv_key, *other_ca_key;
	X509 *ca, *srv, *other_ca;
	char ca_file[64], other_ca_file[64];
	SSL_CTX *srv_ctx;
};

static void ext_add(X509 *x, X509V3_CTX *v3, int nid, const char *value)
{
	X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, v3, nid, value);

	assert_non_null(e);
	assert_int_equal(X509_add_ext(x, e, -1), 1);
	X509_EXTENSION_free(e);
}

static X509 *cert_make(EVP_PKEY *key, const char *cn, X509 *issuer, EVP_PKEY *issuer_key,
		       const char *san)
{
	static long serial = 1;
	X509 *x = X509_new();
	X509_NAME *name;
	X509V3_CTX v3;

	assert_non_null(x);
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
	X509_gmtime_adj(X509_getm_notBefore(x), -60);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_set_pubkey(x, key);
	name = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
	X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name);
	X509V3_set_ctx_nodb(&v3);
	X509V3_set_ctx(&v3, issuer ? issuer : x, x, NULL, NULL, 0);
	if (!issuer) {
		ext_add(x, &v3, NID_basic_constraints, "critical,CA:TRUE");
		ext_add(x, &v3, NID_key_usage, "critical,keyCertSign,cRLSign");
	} else {
		ext_add(x, &v3, NID_basic_constraints, "CA:FALSE");
		ext_add(x, &v3, NID_subject_alt_name, san);
	}
	assert_true(X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256()) > 0);
	return x;
}

static void pem_write(const char *path, X509 *x)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	assert_int_equal(PEM_write_X509(f, x), 1);
	fclose(f);
}

static struct pki g_pki;

static int pki_setup(void **state)
{
	struct pki *p = &g_pki;
	int fd;

	(void)state;
	p->ca_key = EVP_EC_gen("P-256");
	p->srv_key = EVP_EC_gen("P-256");
	p->other_ca_key = EVP_EC_gen("P-256");
	assert_true(p->ca_key && p->srv_key && p->other_ca_key);
	p->ca = cert_make(p->ca_key, "trellis test CA", NULL, NULL, NULL);
	p->other_ca = cert_make(p->other_ca_key, "another test CA", NULL, NULL, NULL);
	p->srv = cert_make(p->srv_key, "127.0.0.1", p->ca, p->ca_key, "IP:127.0.0.1");
	snprintf(p->ca_file, sizeof(p->ca_file), "/tmp/test_dial_ca.XXXXXX");
	snprintf(p->other_ca_file, sizeof(p->other_ca_file), "/tmp/test_dial_other.XXXXXX");
	fd = mkstemp(p->ca_file);
	assert_true(fd >= 0);
	close(fd);
	fd = mkstemp(p->other_ca_file);
	assert_true(fd >= 0);
	close(fd);
	pem_write(p->ca_file, p->ca);
	pem_write(p->other_ca_file, p->other_ca);
	p->srv_ctx = SSL_CTX_new(TLS_server_method());
	assert_non_null(p->srv_ctx);
	assert_int_equal(SSL_CTX_use_certificate(p->srv_ctx, p->srv), 1);
	assert_int_equal(SSL_CTX_use_PrivateKey(p->srv_ctx, p->srv_key), 1);
	return 0;
}

static int pki_teardown(void **state)
{
	struct pki *p = &g_pki;

	(void)state;
	unlink(p->ca_file);
	unlink(p->other_ca_file);
	SSL_CTX_free(p->srv_ctx);
	X509_free(p->ca);
	X509_free(p->srv);
	X509_free(p->other_ca);
	EVP_PKEY_free(p->ca_key);
	EVP_PKEY_free(p->srv_key);
	EVP_PKEY_free(p->other_ca_key);
	return 0;
}

/* A client context that trusts what ca_file holds, through SSL_CERT_FILE as trellisd would. */
static SSL_CTX *client_ctx(const char *ca_file)
{
	SSL_CTX *ctx;

	setenv("SSL_CERT_FILE", ca_file, 1);
	ctx = dial_tls_ctx_new();
	unsetenv("SSL_CERT_FILE");
	assert_non_null(ctx);
	return ctx;
}

static struct dial_opts tls_opts(uint16_t port, SSL_CTX *ctx)
{
	struct dial_opts o = plain_opts(port, IO_NS);

	o.tls = true;
	o.ssl_ctx = ctx;
	return o;
}

static void echo_check(struct dial_conn *c)
{
	char err[256] = "", buf[16];
	size_t have = 0;

	assert_int_equal(dial_write(c, "hello", 5, time_now_ns() + IO_NS, err, sizeof(err)), 0);
	while (have < 5) {
		ssize_t n = dial_read(c, buf + have, sizeof(buf) - have, time_now_ns() + IO_NS);

		assert_true(n > 0);
		have += (size_t)n;
	}
	assert_memory_equal(buf, "hello", 5);
}

static void test_tls_trusted(void **state)
{
	SSL_CTX *ctx = client_ctx(g_pki.ca_file);
	struct dial_conn c;
	struct dial_opts o;
	struct srv s;
	char err[256] = "";

	(void)state;
	srv_start(&s, g_pki.srv_ctx, SRV_ECHO);
	o = tls_opts(s.port, ctx);
	assert_int_equal(dial_open(&c, &o, err, sizeof(err)), 0);
	echo_check(&c);
	/* Lingering: our FIN reaches the server after all our bytes, no reset. */
	dial_close(&c, 2 * NSEC_PER_SEC);
	assert_int_equal(c.fd, -1);
	srv_stop(&s);
	assert_int_equal(s.echoed, 5);
	assert_true(s.clean_eof);
	SSL_CTX_free(ctx);
}

static void test_tls_refused(void **state)
{
	SSL_CTX *trusting = client_ctx(g_pki.ca_file), *other = client_ctx(g_pki.other_ca_file);
	struct dial_conn c;
	struct dial_opts o;
	struct srv s;
	char err[256] = "";

	(void)state;
	srv_start(&s, g_pki.srv_ctx, SRV_ECHO);
	/* Signed by a CA we do not trust. */
	o = tls_opts(s.port, other);
	assert_int_equal(dial_open(&c, &o, err, sizeof(err)), -EPROTO);
	assert_non_null(strstr(err, "certificate not trusted"));
	assert_int_equal(c.fd, -1);
	/* Trusted CA, but for another name than the one we asked for. */
	o = tls_opts(s.port, trusting);
	o.sni = "ctl.example";
	err[0] = '\0';
	assert_int_equal(dial_open(&c, &o, err, sizeof(err)), -EPROTO);
	assert_non_null(strstr(err, "TLS with ctl.example: certificate not trusted"));
	srv_stop(&s);
	SSL_CTX_free(trusting);
	SSL_CTX_free(other);
}

/*
 * A context that reads the trust store per handshake (trellisd's clients): the paths
 * are those of when it was made, the handshake verifies against them, and once it is
 * done no certificate is held, in the connection or the context; the next connect
 * reads them again. A context made trusting another CA still refuses.
 */
static void test_tls_store_per_handshake(void **state)
{
	SSL_CTX *ctx, *other;
	X509_STORE *st = (X509_STORE *)1;
	struct dial_conn c;
	struct dial_opts o;
	struct srv s;
	char err[256] = "";

	(void)state;
	setenv("SSL_CERT_FILE", g_pki.ca_file, 1);
	ctx = dial_tls_ctx_new_per_handshake();
	setenv("SSL_CERT_FILE", g_pki.other_ca_file, 1);
	other = dial_tls_ctx_new_per_handshake();
	unsetenv("SSL_CERT_FILE");
	assert_non_null(ctx);
	assert_non_null(other);
	srv_start(&s, g_pki.srv_ctx, SRV_ECHO);
	for (int i = 0; i < 2; i++) {
		o = tls_opts(s.port, ctx);
		assert_int_equal(dial_open(&c, &o, err, sizeof(err)), 0);
		assert_int_equal(SSL_get_verify_result(c.ssl), X509_V_OK);
		SSL_get0_verify_cert_store(c.ssl, &st);
		assert_null(st);
		assert_int_equal(
		    sk_X509_OBJECT_num(X509_STORE_get0_objects(SSL_CTX_get_cert_store(ctx))), 0);
		echo_check(&c);
		dial_close(&c, 2 * NSEC_PER_SEC);
	}
	o = tls_opts(s.port, other);
	assert_int_equal(dial_open(&c, &o, err, sizeof(err)), -EPROTO);
	assert_non_null(strstr(err, "certificate not trusted"));
	srv_stop(&s);
	SSL_CTX_free(ctx);
	SSL_CTX_free(other);
}

/*
 * Not TLS at all: the error names OpenSSL's reason, whose text is loaded only now (the
 * process started without OpenSSL's error strings, as trellisd does: main()).
 */
static void test_tls_reason(void **state)
{
	SSL_CTX *ctx = client_ctx(g_pki.ca_file);
	struct dial_conn c;
	struct dial_opts o;
	struct srv s;
	char err[256] = "";

	(void)state;
	srv_start(&s, NULL, SRV_JUNK);
	o = tls_opts(s.port, ctx);
	assert_int_equal(dial_open(&c, &o, err, sizeof(err)), -EPROTO);
	assert_non_null(strstr(err, "TLS with 127.0.0.1 failed: wrong version number"));
	srv_stop(&s);
	SSL_CTX_free(ctx);
}

struct pin {
	uint8_t want[32];
	int calls;
	bool verified;
};

static int pin_refuse(void *ctx, X509 *leaf, bool verified, char *err, size_t err_len)
{
	struct pin *p = ctx;

	(void)leaf;
	p->calls++;
	p->verified = verified;
	snprintf(err, err_len, "not the pinned key");
	return -EPERM;
}

static int pin_spki(void *ctx, X509 *leaf, bool verified, char *err, size_t err_len)
{
	struct pin *p = ctx;
	uint8_t h[32];

	(void)err;
	(void)err_len;
	p->calls++;
	p->verified = verified;
	if (dial_cert_spki_sha256(leaf, h) < 0 || memcmp(h, p->want, 32))
		return -EPERM;
	return 0;
}

static void test_tls_pin(void **state)
{
	SSL_CTX *trusting = client_ctx(g_pki.ca_file), *other = client_ctx(g_pki.other_ca_file);
	struct pin pin = {0};
	struct dial_conn c;
	struct dial_opts o;
	struct srv s;
	char err[256] = "";

	(void)state;
	srv_start(&s, g_pki.srv_ctx, SRV_ECHO);
	/* A trusted certificate that the hook refuses. */
	o = tls_opts(s.port, trusting);
	o.pin = pin_refuse;
	o.pin_ctx = &pin;
	assert_int_equal(dial_open(&c, &o, err, sizeof(err)), -EPERM);
	assert_string_equal(err, "not the pinned key");
	assert_int_equal(pin.calls, 1);
	assert_true(pin.verified);
	assert_int_equal(c.fd, -1);

	/* An untrusted certificate that the hook accepts by its key hash. */
	assert_int_equal(dial_cert_spki_sha256(g_pki.srv, pin.want), 0);
	pin.calls = 0;
	o = tls_opts(s.port, other);
	o.pin = pin_spki;
	o.pin_ctx = &pin;
	assert_int_equal(dial_open(&c, &o, err, sizeof(err)), 0);
	assert_int_equal(pin.calls, 1);
	assert_false(pin.verified);
	echo_check(&c);
	dial_close(&c, 0);

	/* ... and refuses another key. */
	pin.want[0] ^= 1;
	err[0] = '\0';
	assert_int_equal(dial_open(&c, &o, err, sizeof(err)), -EPERM);
	assert_non_null(strstr(err, "certificate refused"));
	srv_stop(&s);
	SSL_CTX_free(trusting);
	SSL_CTX_free(other);
}

/* The server resets the connection: writes fail with an error, SIGPIPE stays default and unraised.
 */
static void test_tls_no_sigpipe(void **state)
{
	SSL_CTX *ctx = client_ctx(g_pki.ca_file);
	struct dial_conn c;
	struct dial_opts o;
	struct srv s;
	static char chunk[16384];
	char err[256] = "";
	struct pollfd pfd;
	int i, r = 0;

	(void)state;
	assert_true(signal(SIGPIPE, SIG_DFL) != SIG_ERR);
	srv_start(&s, g_pki.srv_ctx, SRV_DROP);
	o = tls_opts(s.port, ctx);
	assert_int_equal(dial_open(&c, &o, err, sizeof(err)), 0);
	/*
	 * Wait for the server's FIN (on the socket: reading it through TLS would
	 * put the session in an error state that writes nothing more). Our next
	 * write draws a reset, which in this state (CLOSE_WAIT) leaves EPIPE on
	 * the socket: the write after that raises SIGPIPE unless it is sent with
	 * MSG_NOSIGNAL.
	 */
	pfd = (struct pollfd){.fd = c.fd, .events = POLLRDHUP};
	assert_int_equal(poll(&pfd, 1, 5000), 1);
	for (i = 0; i < 1000 && r == 0; i++)
		r = dial_write(&c, chunk, sizeof(chunk), time_now_ns() + IO_NS, err, sizeof(err));
	assert_int_equal(r, -EPIPE);
	assert_non_null(strstr(err, "connection to 127.0.0.1:"));
	dial_close(&c, 0);
	srv_stop(&s);
	SSL_CTX_free(ctx);
}

/* --- HTTP --- */

static const char req_upgrade[] = "POST /control HTTP/1.1\r\nHost: x\r\nUpgrade: t\r\n\r\n";

struct http_case {
	struct srv srv;
	struct dial_conn c;
	struct http_response resp;
	char err[256], buf[512];
};

/* A fresh connection to the server, which answers reply; returns what the request returned. */
static ssize_t http_try(struct http_case *h, const char *reply, bool upgrade, uint64_t timeout_ns)
{
	struct dial_opts o = plain_opts(h->srv.port, IO_NS);
	uint64_t deadline = time_now_ns() + timeout_ns;

	o.name = "http://test";
	h->srv.http_reply = reply;
	h->err[0] = '\0';
	assert_int_equal(dial_open(&h->c, &o, h->err, sizeof(h->err)), 0);
	if (upgrade)
		return dial_http_upgrade(&h->c, req_upgrade, strlen(req_upgrade), h->buf,
					 sizeof(h->buf), &h->resp, deadline, h->err,
					 sizeof(h->err));
	return dial_http_request(&h->c, req_upgrade, strlen(req_upgrade), h->buf, sizeof(h->buf),
				 &h->resp, deadline, h->err, sizeof(h->err));
}

static void test_http(void **state)
{
	static struct http_case h;
	ssize_t n;

	(void)state;
	srv_start(&h.srv, NULL, SRV_HTTP);

	/* Upgrade: the bytes after the head belong to the new protocol. */
	n = http_try(&h, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: t\r\n\r\nFRAME", true,
		     IO_NS);
	/* The head and its leftover may come in one read or two. */
	assert_true(n >= (ssize_t)h.resp.head_len);
	assert_int_equal(h.resp.status, 101);
	while ((size_t)n < h.resp.head_len + 5) {
		ssize_t k =
		    dial_read(&h.c, h.buf + n, sizeof(h.buf) - (size_t)n, time_now_ns() + IO_NS);

		assert_true(k > 0);
		n += k;
	}
	assert_memory_equal(h.buf + h.resp.head_len, "FRAME", 5);
	dial_close(&h.c, 0);

	/* No upgrade: the answer is named with the URL and the path. */
	n = http_try(&h, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", true, IO_NS);
	assert_int_equal(n, -EPROTO);
	assert_string_equal(h.err,
			    "http://test/control answered 404 instead of switching protocols");
	dial_close(&h.c, 0);

	/* A body, read to its Content-Length. */
	n = http_try(&h, "HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world", false, IO_NS);
	assert_true(n > 0);
	assert_int_equal(h.resp.status, 200);
	n = dial_http_body_read(&h.c, h.buf, sizeof(h.buf), (size_t)n, &h.resp,
				time_now_ns() + IO_NS, h.err, sizeof(h.err));
	assert_int_equal(n, (ssize_t)(h.resp.head_len + 11));
	assert_memory_equal(h.buf + h.resp.head_len, "hello world", 11);
	dial_close(&h.c, 0);

	/* Not HTTP at all. */
	n = http_try(&h, "SSH-2.0-OpenSSH_9.2\r\n\r\n", false, IO_NS);
	assert_int_equal(n, -EBADMSG);
	assert_string_equal(h.err, "http://test does not speak HTTP as expected");
	dial_close(&h.c, 0);

	/* No answer: the deadline, not a hang. */
	n = http_try(&h, NULL, false, 200 * NSEC_PER_MSEC);
	assert_int_equal(n, -ETIMEDOUT);
	assert_non_null(strstr(h.err, "http://test: no answer within"));
	dial_close(&h.c, 0);
	srv_stop(&h.srv);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_url_parse),
	    cmocka_unit_test(test_connect_refused),
	    cmocka_unit_test(test_connect_alt),
	    cmocka_unit_test(test_connect_timeout),
	    cmocka_unit_test(test_connect_cancel),
	    cmocka_unit_test(test_tls_trusted),
	    cmocka_unit_test(test_tls_refused),
	    cmocka_unit_test(test_tls_reason),
	    cmocka_unit_test(test_tls_store_per_handshake),
	    cmocka_unit_test(test_tls_pin),
	    cmocka_unit_test(test_tls_no_sigpipe),
	    cmocka_unit_test(test_http),
	};

	/*
	 * As trellisd: OpenSSL set up by the node's own code before any other OpenSSL call
	 * (pki_setup's), so its error strings are not loaded (src/crypto/crypto.c).
	 */
	SSL_CTX_free(dial_tls_ctx_new());
	return cmocka_run_group_tests(tests, pki_setup, pki_teardown);
}
