/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_NET_DIAL_H
#define TRELLIS_NET_DIAL_H

/*
 * Outgoing TCP and TLS connections for the threads that talk to servers (the
 * control client, the relay client): URL parsing, connect with a deadline over
 * IPv4 and IPv6, TLS against the system trust store with an optional pinning
 * hook, an HTTP request or upgrade, reads and writes with deadlines, and a
 * lingering close.
 *
 * The calls block their thread, each up to the deadline it is given, and
 * nothing else: the sockets are non-blocking underneath and every wait is a
 * poll() that also watches the caller's wake fd (struct dial_cancel), so a
 * call returns at once when its thread is told to stop. Errors come back as
 * -errno, and for the calls that take one, as a sentence in the caller's error
 * buffer (naming the peer as the caller named it, e.g. by its URL).
 *
 * SIGPIPE: plain writes use send(MSG_NOSIGNAL); TLS runs over a BIO of our own
 * that does the same (OpenSSL's socket BIO uses write(2), which raises SIGPIPE
 * on a connection the peer reset). So no call here raises SIGPIPE, whatever
 * the process's disposition of it, and no thread needs it blocked.
 */

#include <openssl/ssl.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "proto/http.h"

#define DIAL_HOST_MAX 256
#define DIAL_NAME_MAX 320
/* Addresses of one name tried, and the head start of each over the next (RFC 8305). */
#define DIAL_ADDRS_MAX 8
#define DIAL_STAGGER_NS (250ULL * 1000000ULL)

struct dial_url {
	bool tls;
	char host[DIAL_HOST_MAX];	   /* a name or an address, without brackets */
	uint16_t port;			   /* 80 or 443 unless given */
	char authority[DIAL_HOST_MAX + 8]; /* for the Host header: host:port, [v6]:port */
};

/* "http://HOST[:PORT][/...]" or "https://...". 0 or -EINVAL (no user info, port 1-65535). */
int dial_url_parse(const char *url, struct dial_url *ret);

/*
 * How a blocking call learns to stop: when wake_fd (an eventfd) is readable,
 * the call looks at *stop. Set: it returns -ECANCELED. Not set (the caller's
 * thread has a command for it): the wake is consumed, dial_read returns -EINTR
 * so the caller can act on it, and every other call goes on.
 */
struct dial_cancel {
	int wake_fd;		 /* -1: none */
	const atomic_bool *stop; /* NULL: never */
};

/*
 * Certificate pinning: called after the TLS handshake with the server's leaf
 * certificate and whether the trust store verified it for the expected name
 * (chain, validity and name). 0 accepts; -errno refuses (the connection fails
 * with it; say why in err, or a generic sentence is used). With a hook, an
 * unverified certificate is the hook's to accept (a self-signed relay pinned
 * by its key hash); without one, only verified certificates pass.
 */
typedef int (*dial_pin_fn)(void *ctx, X509 *leaf, bool verified, char *err, size_t err_len);

struct dial_opts {
	const char *host; /* a name or an address */
	/*
	 * Another address (or name) of the same server, tried after host's, as a second family
	 * is (RFC 8305): a relay's IPv4 address when its IPv6 one comes first. NULL: none.
	 */
	const char *alt_host;
	uint16_t port;
	bool tls;
	const char *name; /* how error messages call the peer (e.g. its URL); NULL: host:port */
	/* TLS */
	SSL_CTX *ssl_ctx; /* from dial_tls_ctx_new (or the caller's own) */
	const char *sni;  /* the name to ask for and verify; NULL: host (no SNI for addresses) */
	dial_pin_fn pin;
	void *pin_ctx;
	/* Connected, and the TLS handshake done, by then. */
	uint64_t deadline_ns;
	struct dial_cancel cancel;
};

struct dial_conn {
	int fd; /* -1 when closed */
	SSL *ssl;
	struct dial_cancel cancel;
	char name[DIAL_NAME_MAX];
};

/*
 * The eventfd behind a dial_cancel, watched with *stop: 0 or -errno. dial_cancel_close
 * accepts one that failed to open (or was never opened with wake_fd -1).
 */
int dial_cancel_open(struct dial_cancel *c, const atomic_bool *stop);
void dial_cancel_close(struct dial_cancel *c);
/*
 * Any thread: wakes the blocking call — a command for its thread, or, once *stop is set,
 * the stop. 0 or -errno (a full counter still wakes the reader: 0).
 */
int dial_cancel_wake(const struct dial_cancel *c);

/* Sleeps until deadline_ns, consuming commands. 0 then, or -ECANCELED when told to stop. */
int dial_sleep(const struct dial_cancel *cancel, uint64_t deadline_ns);
/*
 * Sleeps until deadline_ns or a command, whichever comes first: 0 at the deadline, 1 woken
 * with a command (the wake is consumed; the caller looks at what it was told), or
 * -ECANCELED when told to stop.
 */
int dial_wait(const struct dial_cancel *cancel, uint64_t deadline_ns);

/*
 * A client context that verifies servers against the system trust store
 * (OpenSSL's default paths, which honour SSL_CERT_FILE and SSL_CERT_DIR as
 * they are when this is called), TLS 1.2 at least. NULL on failure.
 */
SSL_CTX *dial_tls_ctx_new(void);
/*
 * The same, but the context holds no certificates: each handshake reads the store and
 * frees it when done (dial.c). For a client that connects seldom and stays connected
 * (trellisd's control and relay clients), not for one that dials every second.
 */
SSL_CTX *dial_tls_ctx_new_per_handshake(void);
/*
 * The text of OpenSSL error e's reason ("wrong version number"), loading OpenSSL's error
 * strings on the first call (the process starts without them: src/crypto/crypto.c), or
 * "OpenSSL error CODE" for a reason it does not know. Any thread; never NULL; valid
 * until the thread's next call.
 */
const char *dial_tls_reason(unsigned long e);
/* SHA-256 of the certificate's SubjectPublicKeyInfo (a pin that survives renewal). 0 or -errno. */
int dial_cert_spki_sha256(X509 *cert, uint8_t ret[32]);

/*
 * Resolves host, connects (several addresses raced, RFC 8305 style) and does
 * the TLS handshake. 0 with *c open, or -errno with err set: -EHOSTUNREACH (no
 * address), -ECONNREFUSED and friends, -ETIMEDOUT, -EPROTO (TLS failed or
 * the certificate is not trusted), the pin hook's error, -ECANCELED.
 * Name resolution itself is getaddrinfo's and does not watch the deadline.
 */
int dial_open(struct dial_conn *c, const struct dial_opts *o, char *err, size_t err_len);
/*
 * Closes c (accepts a closed one). linger_ns > 0: first says goodbye (TLS
 * close_notify, TCP FIN) and reads until the peer closes too or linger_ns
 * passes, so that our last bytes are not lost to a reset caused by unread
 * data; 0: only drains what is already there.
 */
void dial_close(struct dial_conn *c, uint64_t linger_ns);

/* Writes all of data by deadline_ns. 0, or -ETIMEDOUT, -ECANCELED, -errno with err set. */
int dial_write(struct dial_conn *c, const void *data, size_t len, uint64_t deadline_ns, char *err,
	       size_t err_len);
/*
 * Reads what is there (at most len), waiting until deadline_ns for something.
 * n > 0, 0 at the peer's orderly close, -EAGAIN at the deadline, -EINTR when
 * woken with a command (struct dial_cancel), -ECANCELED, or -errno.
 */
ssize_t dial_read(struct dial_conn *c, void *buf, size_t len, uint64_t deadline_ns);

/*
 * Sends req (a complete request head, from src/proto/http.h) and reads the
 * response head. buf (cap bytes) receives the head and whatever followed it (a
 * body's first bytes, or the first bytes of an upgraded protocol). Returns the
 * bytes in buf with *resp parsed (resp points into buf), or -errno with err
 * set: -ETIMEDOUT, -ECONNRESET, -E2BIG (head larger than cap), -EBADMSG (not
 * HTTP), -ECANCELED.
 */
ssize_t dial_http_request(struct dial_conn *c, const char *req, size_t req_len, char *buf,
			  size_t cap, struct http_response *resp, uint64_t deadline_ns, char *err,
			  size_t err_len);
/*
 * dial_http_request that must end in 101 Switching Protocols (-EPROTO, err
 * set, otherwise). The bytes after resp->head_len belong to the new protocol.
 */
ssize_t dial_http_upgrade(struct dial_conn *c, const char *req, size_t req_len, char *buf,
			  size_t cap, struct http_response *resp, uint64_t deadline_ns, char *err,
			  size_t err_len);
/*
 * Reads the rest of a Content-Length body after dial_http_request: buf holds
 * `have` bytes. Returns the bytes in buf (head + body), or -EMSGSIZE (no or a
 * too large Content-Length for cap), -ECONNRESET (cut short), -ETIMEDOUT,
 * -ECANCELED (err set).
 */
ssize_t dial_http_body_read(struct dial_conn *c, char *buf, size_t cap, size_t have,
			    const struct http_response *resp, uint64_t deadline_ns, char *err,
			    size_t err_len);

#endif
