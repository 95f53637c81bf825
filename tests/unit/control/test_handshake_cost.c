// SPDX-License-Identifier: MIT
/*
 * What a control-protocol handshake costs the server in X25519 operations, counted (never
 * timed): the server's static public key is derived once when the key is loaded, not once
 * per handshake. x25519.c is compiled into this test with its functions renamed, so every
 * X25519 operation of the server (its own thread) goes through the counters below and the
 * library's copy is not linked.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "crypto/crypto.h"

int real_x25519_public_from_private(uint8_t ret_pub[X25519_KEY_LEN],
				    const uint8_t priv[X25519_KEY_LEN]);
int real_x25519_shared(uint8_t ret_shared[X25519_KEY_LEN], const uint8_t priv[X25519_KEY_LEN],
		       const uint8_t pub[X25519_KEY_LEN]);
int real_x25519_shared_pair(uint8_t ret_shared[X25519_KEY_LEN], const uint8_t priv[X25519_KEY_LEN],
			    const uint8_t priv_pub[X25519_KEY_LEN],
			    const uint8_t pub[X25519_KEY_LEN]);
#define x25519_public_from_private real_x25519_public_from_private
#define x25519_shared real_x25519_shared
#define x25519_shared_pair real_x25519_shared_pair
#include "crypto/x25519.c"
#undef x25519_public_from_private
#undef x25519_shared
#undef x25519_shared_pair

#include "base/base64.h"
#include "base/time.h"
#include "control/admin.h"
#include "control/authkey.h"
#include "control/server.c"
#include "control/store.h"
#include "control/admin_op.h"
#include "proto/ctrlmsg.h"
#include "proto/ctrlstream.h"
#include "proto/http.h"
#include "proto/mapz.h"

/* The harness serves several tests; this one needs only its handshake. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#include "server_harness.h"
#pragma GCC diagnostic pop

/* Counted on the server's threads only: the test's clients do X25519 too. */
static pthread_t test_thread;
static uint64_t n_derived;	  /* public keys derived from a private key */
static uint64_t n_static_derived; /* of those, the server's static key's */
static uint64_t n_scalarmult;	  /* scalar multiplications, however they came */

static bool on_server(void)
{
	return !pthread_equal(pthread_self(), test_thread);
}

static void count(uint64_t *c, uint64_t n)
{
	__atomic_fetch_add(c, n, __ATOMIC_RELAXED);
}

static uint64_t counted(uint64_t *c)
{
	return __atomic_load_n(c, __ATOMIC_RELAXED);
}

int x25519_public_from_private(uint8_t ret_pub[X25519_KEY_LEN], const uint8_t priv[X25519_KEY_LEN])
{
	if (on_server()) {
		count(&n_derived, 1);
		count(&n_scalarmult, 1);
		if (E.srv && !memcmp(priv, E.srv->priv, X25519_KEY_LEN))
			count(&n_static_derived, 1);
	}
	return real_x25519_public_from_private(ret_pub, priv);
}

int x25519_shared(uint8_t ret_shared[X25519_KEY_LEN], const uint8_t priv[X25519_KEY_LEN],
		  const uint8_t pub[X25519_KEY_LEN])
{
	/* Given the private half alone, OpenSSL derives the public half first (x25519.c). */
	if (on_server()) {
		count(&n_derived, 1);
		count(&n_scalarmult, 2);
		if (E.srv && !memcmp(priv, E.srv->priv, X25519_KEY_LEN))
			count(&n_static_derived, 1);
	}
	return real_x25519_shared(ret_shared, priv, pub);
}

int x25519_shared_pair(uint8_t ret_shared[X25519_KEY_LEN], const uint8_t priv[X25519_KEY_LEN],
		       const uint8_t priv_pub[X25519_KEY_LEN], const uint8_t pub[X25519_KEY_LEN])
{
	if (on_server())
		count(&n_scalarmult, 1);
	return real_x25519_shared_pair(ret_shared, priv, priv_pub, pub);
}

/*
 * N handshakes (client_open completes the Noise handshake: the server has read frame 1 and
 * written frame 2). Per handshake the server derives one public key, its ephemeral's, and
 * does four DH: es, ss, ee, se. Before the key's public half was kept, it derived its own
 * static public key on every handshake too (6 scalar multiplications, now 5).
 */
static void test_handshake_x25519(void **state)
{
	enum { N = 32 };
	uint64_t d0, st0, sm0, d, st, sm;

	(void)state;
	assert_int_equal(key_from_base64(E.server_pub, E.srv->pub_b64), 0);
	d0 = counted(&n_derived);
	st0 = counted(&n_static_derived);
	sm0 = counted(&n_scalarmult);
	for (int i = 0; i < N; i++) {
		struct client c;

		client_open(&c);
		client_close(&c);
	}
	d = counted(&n_derived) - d0;
	st = counted(&n_static_derived) - st0;
	sm = counted(&n_scalarmult) - sm0;
	print_message("server, per handshake: %.2f public keys derived (%.2f of its static key), "
		      "%.2f X25519 scalar multiplications\n",
		      (double)d / N, (double)st / N, (double)sm / N);
	assert_int_equal(st, 0);
	assert_int_equal(d, N);
	assert_int_equal(sm, 5 * N);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_handshake_x25519),
	};

	test_thread = pthread_self();
	return cmocka_run_group_tests(tests, setup, teardown);
}
