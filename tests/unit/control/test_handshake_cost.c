// SPDX-License-Identifier: MIT
/*
 * What a control-protocol handshake costs the server in X25519 operations, counted (never
 * timed): the server's static public key is derived once when the key is loaded, not once
 * per handshake. Every X25519 operation of the server (its own thread) is counted by
 * x25519_count.h.
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

#include "../x25519_count.h"

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
enum { WHO_SERVER, WHO_SERVER_STATIC };
static pthread_t test_thread;

static int x25519_count_who(const uint8_t priv[X25519_KEY_LEN])
{
	if (pthread_equal(pthread_self(), test_thread))
		return -1;
	return E.srv && !memcmp(priv, E.srv->priv, X25519_KEY_LEN) ? WHO_SERVER_STATIC : WHO_SERVER;
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
	struct x25519_count o0, st0, o, st;
	uint64_t d, sm;

	(void)state;
	assert_int_equal(key_from_base64(E.server_pub, E.srv->pub_b64), 0);
	o0 = x25519_count_get(WHO_SERVER);
	st0 = x25519_count_get(WHO_SERVER_STATIC);
	for (int i = 0; i < N; i++) {
		struct client c;

		client_open(&c);
		client_close(&c);
	}
	o = x25519_count_since(WHO_SERVER, o0);
	st = x25519_count_since(WHO_SERVER_STATIC, st0);
	d = o.derived + st.derived;
	sm = o.scalarmult + st.scalarmult;
	print_message("server, per handshake: %.2f public keys derived (%.2f of its static key), "
		      "%.2f X25519 scalar multiplications\n",
		      (double)d / N, (double)st.derived / N, (double)sm / N);
	assert_int_equal(st.derived, 0);
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
