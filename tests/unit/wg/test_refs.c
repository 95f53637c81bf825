/* SPDX-License-Identifier: MIT */
/*
 * References of packets in flight, counted per run (src/wg/internal.h, wg_ref_take): a
 * batch of one peer on one keypair costs one atomic add and one atomic subtract on each,
 * however many packets it has, and the counts stay right when a keypair or the peer goes
 * away while packets hold it (under ASan, a count added to a freed keypair fails).
 *
 * peer.c and noise.c are included with their atomic operations counted: those are the
 * only places that change a reference count.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

static unsigned long ref_ops; /* atomic read-modify-writes on reference counts */

#define __atomic_add_fetch(p, v, o) (ref_ops++, __atomic_add_fetch(p, v, o))
#define __atomic_sub_fetch(p, v, o) (ref_ops++, __atomic_sub_fetch(p, v, o))
#include "wg/noise.c"
#include "wg/peer.c"
#undef __atomic_add_fetch
#undef __atomic_sub_fetch

#include "wg_harness.h"

#define BATCH 64

static struct h_node A, B;

static int setup(void **state)
{
	(void)state;
	h_now = NSEC_PER_SEC;
	h_node_init(&A, 0, true);
	h_node_init(&B, 1, true);
	if (h_add_peer(&A, &B, true, NULL, 0) < 0 || h_add_peer(&B, &A, true, NULL, 0) < 0)
		return -1;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	h_nodes_free(&A, &B);
	return 0;
}

static struct wg_peer *peer_of(struct h_node *n, const struct h_node *other)
{
	return wg_peer_lookup(n->dev, other->pub);
}

static void handshake(void)
{
	h_send(&A, &B, 100, 0xaa);
	h_pump(&A, &B);
	assert_int_equal(B.tun.n, 1);
	h_qfree(&B.tun);
}

/* One batch from the TUN side of `from`: n packets to `to`, payloads fill + i. */
static void send_batch(struct h_node *from, const struct h_node *to, unsigned n, uint8_t fill)
{
	struct pkt *p[BATCH];
	unsigned i;

	for (i = 0; i < n; i++) {
		p[i] = h_ip4(from, from->addr, to->addr, 100, (uint8_t)(fill + i));
		assert_non_null(p[i]);
	}
	wg_device_tx(from->dev, p, n, h_now);
}

/* One batch from the UDP side of `to`: what `from` sent, from from->ep. */
static void deliver_batch(struct h_node *from, struct h_node *to)
{
	unsigned i;

	for (i = 0; i < from->udp.n; i++)
		from->udp.p[i]->ep = from->ep;
	wg_device_rx(to->dev, from->udp.p, from->udp.n, h_now);
	from->udp.n = 0;
}

/* The session's keys made unusable for sending: the next packet starts a handshake. */
static void expire(struct h_node *n, const struct h_node *other)
{
	wg_device_lock(n->dev, h_now);
	wg_noise_expire_current_peer_keypairs(n->dev, peer_of(n, other));
	wg_device_unlock(n->dev);
}

/* Two counted operations since `ops`, and the counts they left on peer and keypair. */
static void assert_counted(unsigned long ops, const struct wg_peer *p,
			   const struct noise_keypair *kp, int refs)
{
	assert_int_equal(ref_ops - ops, 2);
	assert_int_equal(p->refcount, refs);
	assert_int_equal(kp->refcount, refs);
}

/* BATCH packets from from's TUN to to's: each of the four steps counts once per object. */
static void one_way(struct h_node *from, struct h_node *to)
{
	struct wg_peer *pf = peer_of(from, to), *pt = peer_of(to, from);
	struct noise_keypair *kf = pf->keypairs.current, *kt = pt->keypairs.current;
	unsigned long ops;
	unsigned i;

	assert_int_equal(pf->refcount, 1);
	assert_int_equal(kf->refcount, 1);
	ops = ref_ops;
	send_batch(from, to, BATCH, 0);
	assert_int_equal(from->enc.n, BATCH);
	assert_counted(ops, pf, kf, 1 + BATCH);
	ops = ref_ops;
	h_work(from);
	assert_int_equal(from->udp.n, BATCH);
	assert_counted(ops, pf, kf, 1);

	ops = ref_ops;
	deliver_batch(from, to);
	assert_int_equal(to->dec.n, BATCH);
	assert_counted(ops, pt, kt, 1 + BATCH);
	ops = ref_ops;
	h_work(to);
	assert_counted(ops, pt, kt, 1);
	assert_int_equal(to->tun.n, BATCH);
	for (i = 0; i < BATCH; i++)
		assert_int_equal(to->tun.p[i]->data[20], i);
	h_qfree(&to->tun);
}

/* A batch of one peer costs two counted operations on the way in and two on the way out. */
static void test_one_count_per_run(void **state)
{
	(void)state;
	handshake();
	one_way(&A, &B);
	one_way(&B, &A);
}

/*
 * A keypair dropped in the batch that took references for packets on it: B gets late data
 * on its previous keypair followed by an initiation whose session pushes that keypair out.
 * The packets' references count before the slot's goes, so the keypair lives until they
 * are done (without that, the slot's reference was the last one and the count went to
 * freed memory).
 */
static void test_keypair_dropped_with_takes_pending(void **state)
{
	struct h_queue late;
	struct pkt *batch[5];
	struct noise_keypair *k1;
	struct wg_peer *pb;
	unsigned i;

	(void)state;
	handshake();
	pb = peer_of(&B, &A);
	k1 = pb->keypairs.current;
	send_batch(&A, &B, 4, 0x10);
	h_work(&A);
	assert_int_equal(A.udp.n, 4);
	late = A.udp;
	A.udp.n = 0;

	/* A new session: k1 becomes B's previous keypair. */
	h_now += NSEC_PER_SEC;
	expire(&A, &B);
	h_send(&A, &B, 10, 1);
	h_pump(&A, &B);
	assert_int_equal(B.tun.n, 1);
	h_qfree(&B.tun);
	assert_ptr_equal(pb->keypairs.previous, k1);
	assert_int_equal(k1->refcount, 1);

	/* Another: its initiation arrives right behind the late data on k1, in one batch. */
	h_now += NSEC_PER_SEC;
	expire(&A, &B);
	h_send(&A, &B, 10, 2);
	assert_int_equal(A.udp.n, 1);
	for (i = 0; i < 4; i++)
		batch[i] = late.p[i];
	batch[4] = A.udp.p[0];
	A.udp.n = 0;
	for (i = 0; i < 5; i++)
		batch[i]->ep = A.ep;
	wg_device_rx(B.dev, batch, 5, h_now);
	assert_int_equal(B.dec.n, 4);
	assert_ptr_not_equal(pb->keypairs.previous, k1);
	assert_ptr_not_equal(pb->keypairs.current, k1);
	assert_int_equal(k1->refcount, 4); /* the packets' only */

	/* They still decrypt and arrive; the last one frees k1. */
	h_work(&B);
	assert_int_equal(B.tun.n, 4);
	for (i = 0; i < 4; i++)
		assert_int_equal(B.tun.p[i]->data[20], 0x10 + i);
	h_qfree(&B.tun);
	h_pump(&A, &B);
	assert_int_equal(B.tun.n, 1);
	assert_int_equal(B.tun.p[0]->data[20], 2);
	h_qfree(&B.tun);
}

/* The peer removed while a batch holds it: the batch keeps it, its finish frees it. */
static void test_peer_removed_with_batch_in_flight(void **state)
{
	struct wg_peer_cfg pc = {.remove = true};
	struct wg_device_cfg cfg = {.n_peers = 1, .peers = &pc};
	struct wg_peer *pa;
	unsigned long ops;

	(void)state;
	handshake();
	pa = peer_of(&A, &B);
	send_batch(&A, &B, BATCH, 0);
	assert_int_equal(A.enc.n, BATCH);
	memcpy(pc.public_key, B.pub, 32);
	assert_int_equal(wg_device_apply(A.dev, &cfg, h_now), 0);
	assert_null(peer_of(&A, &B));
	assert_true(pa->dead);
	assert_int_equal(pa->refcount, BATCH);
	ops = ref_ops;
	h_work(&A);
	assert_int_equal(ref_ops - ops, 2);
	assert_int_equal(A.udp.n, 0);
	assert_int_equal(pkt_pool_available(A.pool), 2048);
}

/* A full crypto queue drops a batch off the lock: one subtraction per run there too. */
static void test_release_batch(void **state)
{
	struct wg_peer *pa;
	struct noise_keypair *ka;
	unsigned long ops;
	unsigned i;

	(void)state;
	handshake();
	pa = peer_of(&A, &B);
	ka = pa->keypairs.current;
	send_batch(&A, &B, BATCH, 0);
	assert_int_equal(A.enc.n, BATCH);
	ops = ref_ops;
	wg_pkt_release_batch(A.enc.p, A.enc.n);
	assert_int_equal(ref_ops - ops, 2);
	assert_int_equal(pa->refcount, 1);
	assert_int_equal(ka->refcount, 1);
	for (i = 0; i < A.enc.n; i++) {
		assert_null(A.enc.p[i]->peer);
		assert_null(A.enc.p[i]->keypair);
	}
	h_qfree(&A.enc);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_one_count_per_run, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_keypair_dropped_with_takes_pending, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_peer_removed_with_batch_in_flight, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_release_batch, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
