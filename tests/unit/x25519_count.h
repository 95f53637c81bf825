/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_TESTS_X25519_COUNT_H
#define TRELLIS_TESTS_X25519_COUNT_H

/*
 * Counting X25519 operations (never timing them), for the tests that prove what a
 * handshake costs. crypto/x25519.c is compiled into the test with its functions renamed,
 * so the library's copy is not linked and every X25519 operation of the code under test
 * goes through the counters below. The test defines
 *
 *   static int x25519_count_who(const uint8_t priv[X25519_KEY_LEN]);
 *
 * which says whose an operation with the private key priv is: an index below
 * X25519_COUNT_WHO, or -1 for one not counted. The counters are atomic: a server under
 * test may run on threads of its own.
 */

#include <stdint.h>

#include "crypto/crypto.h"

#define X25519_COUNT_WHO 2

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

struct x25519_count {
	uint64_t derived;    /* public keys derived from a private key */
	uint64_t scalarmult; /* scalar multiplications, however they came */
};

static struct x25519_count x25519_counts[X25519_COUNT_WHO];

static int x25519_count_who(const uint8_t priv[X25519_KEY_LEN]);

static inline void x25519_count_add(const uint8_t priv[X25519_KEY_LEN], uint64_t derived,
				    uint64_t scalarmult)
{
	int who = x25519_count_who(priv);

	if (who < 0)
		return;
	__atomic_fetch_add(&x25519_counts[who].derived, derived, __ATOMIC_RELAXED);
	__atomic_fetch_add(&x25519_counts[who].scalarmult, scalarmult, __ATOMIC_RELAXED);
}

/* What who has done so far. */
static inline struct x25519_count x25519_count_get(int who)
{
	return (struct x25519_count){
	    .derived = __atomic_load_n(&x25519_counts[who].derived, __ATOMIC_RELAXED),
	    .scalarmult = __atomic_load_n(&x25519_counts[who].scalarmult, __ATOMIC_RELAXED)};
}

/* What who has done since then (a x25519_count_get). */
static inline struct x25519_count x25519_count_since(int who, struct x25519_count then)
{
	struct x25519_count now = x25519_count_get(who);

	return (struct x25519_count){.derived = now.derived - then.derived,
				     .scalarmult = now.scalarmult - then.scalarmult};
}

int x25519_public_from_private(uint8_t ret_pub[X25519_KEY_LEN], const uint8_t priv[X25519_KEY_LEN])
{
	x25519_count_add(priv, 1, 1);
	return real_x25519_public_from_private(ret_pub, priv);
}

int x25519_shared(uint8_t ret_shared[X25519_KEY_LEN], const uint8_t priv[X25519_KEY_LEN],
		  const uint8_t pub[X25519_KEY_LEN])
{
	/* Given the private half alone, OpenSSL derives the public half first (x25519.c). */
	x25519_count_add(priv, 1, 2);
	return real_x25519_shared(ret_shared, priv, pub);
}

int x25519_shared_pair(uint8_t ret_shared[X25519_KEY_LEN], const uint8_t priv[X25519_KEY_LEN],
		       const uint8_t priv_pub[X25519_KEY_LEN], const uint8_t pub[X25519_KEY_LEN])
{
	x25519_count_add(priv, 0, 1);
	return real_x25519_shared_pair(ret_shared, priv, priv_pub, pub);
}

#endif
