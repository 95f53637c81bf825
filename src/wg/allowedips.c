/* SPDX-License-Identifier: MIT */
/*
 * Cryptokey routing table: one path-compressed binary trie (PATRICIA) per family.
 *
 * Every node holds a masked prefix (key, cidr). A node with a peer is a route;
 * a node without one is a branch point and then always has two children, so
 * the trie never holds more than 2n-1 nodes for n routes. A child's cidr is
 * strictly greater than its parent's, which bounds the depth by 129 nodes and
 * lets every walk use a fixed-size stack instead of recursion.
 *
 * Keys are kept as two host-order 64-bit words, left-aligned (an IPv4 address
 * sits in the top 32 bits of word 0), so prefix tests on the lookup path are
 * a couple of XOR-and-mask operations with no allocation and no byte loops.
 */
#include <arpa/inet.h>
#include <assert.h>
#include <endian.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "base/util.h"
#include "wg/allowedips.h"

/* cidr 0..128 along one root-to-leaf path, plus slack for the pre-order walk. */
#define MAX_DEPTH 130

struct key {
	uint64_t w[2];
};

struct node {
	struct node *child[2];
	void *peer;	/* NULL: branch point */
	struct key key; /* masked to cidr */
	uint8_t cidr;
};

struct allowedips {
	struct node *root4;
	struct node *root6;
	unsigned count;
};

static inline uint64_t load_be64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, sizeof(v));
	return be64toh(v);
}

static inline void key_load(struct key *k, int family, const uint8_t *addr)
{
	uint32_t v4;

	if (family == AF_INET) {
		memcpy(&v4, addr, sizeof(v4));
		k->w[0] = (uint64_t)ntohl(v4) << 32;
		k->w[1] = 0;
	} else {
		k->w[0] = load_be64(addr);
		k->w[1] = load_be64(addr + 8);
	}
}

static void key_store(const struct key *k, int family, uint8_t *addr)
{
	uint64_t be[2] = {htobe64(k->w[0]), htobe64(k->w[1])};

	memcpy(addr, be, family == AF_INET ? 4 : 16);
}

/* The top `bits` bits set, 0 <= bits <= 64. */
static inline uint64_t mask64(unsigned bits)
{
	return bits ? ~0ULL << (64 - bits) : 0;
}

static inline void key_mask(struct key *k, unsigned cidr)
{
	k->w[0] &= mask64(MIN(cidr, 64U));
	k->w[1] &= mask64(cidr > 64 ? cidr - 64 : 0);
}

static inline unsigned key_bit(const struct key *k, unsigned i)
{
	return (unsigned)(k->w[i >> 6] >> (63 - (i & 63))) & 1;
}

/* Whether the first node->cidr bits of k equal the node's key. */
static inline bool node_matches(const struct node *n, const struct key *k)
{
	if (n->cidr <= 64)
		return ((k->w[0] ^ n->key.w[0]) & mask64(n->cidr)) == 0;
	return k->w[0] == n->key.w[0] && ((k->w[1] ^ n->key.w[1]) & mask64(n->cidr - 64U)) == 0;
}

/* Number of leading bits a and b share, capped at limit. */
static unsigned common_bits(const struct key *a, const struct key *b, unsigned limit)
{
	uint64_t x = a->w[0] ^ b->w[0];
	unsigned n;

	if (x)
		n = (unsigned)__builtin_clzll(x);
	else if ((x = a->w[1] ^ b->w[1]))
		n = 64 + (unsigned)__builtin_clzll(x);
	else
		n = 128;
	return MIN(n, limit);
}

static struct node **root_of(struct allowedips *t, int family)
{
	if (family == AF_INET)
		return &t->root4;
	if (family == AF_INET6)
		return &t->root6;
	return NULL;
}

static unsigned max_bits(int family)
{
	return family == AF_INET ? 32 : 128;
}

struct allowedips *wg_allowedips_new(void)
{
	return calloc(1, sizeof(struct allowedips));
}

static void free_trie(struct node *root)
{
	struct node *stack[MAX_DEPTH + 2];
	unsigned sp = 0;

	if (root)
		stack[sp++] = root;
	while (sp) {
		struct node *n = stack[--sp];

		/* Pre-order: each pop pushes at most two, so sp stays <= depth + 1. */
		for (int i = 1; i >= 0; i--)
			if (n->child[i]) {
				assert(sp < ARRAY_SIZE(stack));
				stack[sp++] = n->child[i];
			}
		free(n);
	}
}

void wg_allowedips_free(struct allowedips *t)
{
	if (!t)
		return;
	free_trie(t->root4);
	free_trie(t->root6);
	free(t);
}

static struct node *node_new(const struct key *k, unsigned cidr, void *peer)
{
	struct node *n = calloc(1, sizeof(*n));

	if (!n)
		return NULL;
	n->key = *k;
	key_mask(&n->key, cidr);
	n->cidr = (uint8_t)cidr;
	n->peer = peer;
	return n;
}

int wg_allowedips_insert(struct allowedips *t, int family, const uint8_t *addr, uint8_t cidr,
			 void *peer)
{
	struct node **link = root_of(t, family);
	struct node *n, *leaf, *branch;
	struct key k;
	unsigned common;

	if (!link || cidr > max_bits(family) || !peer)
		return -EINVAL;
	key_load(&k, family, addr);
	key_mask(&k, cidr);

	for (;;) {
		n = *link;
		if (!n) {
			leaf = node_new(&k, cidr, peer);
			if (!leaf)
				return -ENOMEM;
			*link = leaf;
			t->count++;
			return 0;
		}
		common = common_bits(&n->key, &k, MIN(n->cidr, cidr));
		if (common < n->cidr)
			break;
		/* n's prefix contains the new one. */
		if (n->cidr == cidr) {
			if (!n->peer)
				t->count++;
			n->peer = peer; /* takes the prefix over */
			return 0;
		}
		link = &n->child[key_bit(&k, n->cidr)];
	}

	leaf = node_new(&k, cidr, peer);
	if (!leaf)
		return -ENOMEM;
	if (common == cidr) {
		/* The new prefix contains n: it goes in between. */
		leaf->child[key_bit(&n->key, cidr)] = n;
		*link = leaf;
		t->count++;
		return 0;
	}
	/* They diverge at bit `common`: a branch point takes n's place. */
	branch = node_new(&k, common, NULL);
	if (!branch) {
		free(leaf);
		return -ENOMEM;
	}
	branch->child[key_bit(&k, common)] = leaf;
	branch->child[key_bit(&n->key, common)] = n;
	*link = branch;
	t->count++;
	return 0;
}

/*
 * Restores the invariant at *link after its node lost its peer or a child:
 * a peerless node with fewer than two children is spliced out.
 */
static void compact(struct node **link)
{
	struct node *n = *link;

	if (!n || n->peer || (n->child[0] && n->child[1]))
		return;
	*link = n->child[0] ? n->child[0] : n->child[1];
	free(n);
}

int wg_allowedips_remove(struct allowedips *t, int family, const uint8_t *addr, uint8_t cidr,
			 void *peer)
{
	struct node **link = root_of(t, family), **parent = NULL;
	struct node *n;
	struct key k;

	if (!link || cidr > max_bits(family))
		return -ENOENT;
	key_load(&k, family, addr);
	key_mask(&k, cidr);

	for (;;) {
		n = *link;
		if (!n || n->cidr > cidr || !node_matches(n, &k))
			return -ENOENT;
		if (n->cidr == cidr)
			break;
		parent = link;
		link = &n->child[key_bit(&k, n->cidr)];
	}
	if (!n->peer || n->peer != peer)
		return -ENOENT;
	n->peer = NULL;
	t->count--;
	compact(link);
	/* If n went away entirely, its parent may now be a branch with one child. */
	if (parent)
		compact(parent);
	return 0;
}

/* Post-order walk clearing `peer` from every node and compacting on the way up. */
static void prune(struct allowedips *t, struct node **root, void *peer)
{
	struct {
		struct node **link;
		uint8_t state;
	} stack[MAX_DEPTH + 1];
	unsigned sp = 0;

	if (!*root)
		return;
	stack[sp].link = root;
	stack[sp++].state = 0;
	while (sp) {
		struct node *n = *stack[sp - 1].link;
		uint8_t state = stack[sp - 1].state++;

		if (state < 2) {
			if (n->child[state]) {
				assert(sp < ARRAY_SIZE(stack));
				stack[sp].link = &n->child[state];
				stack[sp++].state = 0;
			}
			continue;
		}
		if (n->peer == peer) {
			n->peer = NULL;
			t->count--;
		}
		compact(stack[--sp].link);
	}
}

void wg_allowedips_remove_by_peer(struct allowedips *t, void *peer)
{
	if (!peer)
		return;
	prune(t, &t->root4, peer);
	prune(t, &t->root6, peer);
}

void *wg_allowedips_lookup(const struct allowedips *t, int family, const uint8_t *addr)
{
	const struct node *n;
	void *best = NULL;
	struct key k;

	if (family == AF_INET)
		n = t->root4;
	else if (family == AF_INET6)
		n = t->root6;
	else
		return NULL;
	key_load(&k, family, addr);
	while (n && node_matches(n, &k)) {
		if (n->peer)
			best = n->peer;
		if (n->cidr == max_bits(family))
			break;
		n = n->child[key_bit(&k, n->cidr)];
	}
	return best;
}

static int walk(const struct node *root, int family, void *peer,
		int (*cb)(void *ctx, int family, const uint8_t *addr, uint8_t cidr), void *ctx)
{
	const struct node *stack[MAX_DEPTH + 2];
	unsigned sp = 0;
	uint8_t addr[16];
	int r;

	if (root)
		stack[sp++] = root;
	/* Pre-order, child 0 first: prefixes come out sorted by address, then length. */
	while (sp) {
		const struct node *n = stack[--sp];

		for (int i = 1; i >= 0; i--)
			if (n->child[i]) {
				assert(sp < ARRAY_SIZE(stack));
				stack[sp++] = n->child[i];
			}
		if (n->peer != peer)
			continue;
		key_store(&n->key, family, addr);
		r = cb(ctx, family, addr, n->cidr);
		if (r)
			return r;
	}
	return 0;
}

int wg_allowedips_walk_by_peer(const struct allowedips *t, void *peer,
			       int (*cb)(void *ctx, int family, const uint8_t *addr, uint8_t cidr),
			       void *ctx)
{
	int r;

	if (!peer)
		return 0;
	r = walk(t->root4, AF_INET, peer, cb, ctx);
	if (r)
		return r;
	return walk(t->root6, AF_INET6, peer, cb, ctx);
}

unsigned wg_allowedips_count(const struct allowedips *t)
{
	return t->count;
}
