/* SPDX-License-Identifier: MIT */
/*
 * The admin operations on a tailnet's access policy (admin_op.h): get, check, set, explain,
 * matrix. Explain and matrix read the tailnet's nodes from the store, so they answer the same
 * with the server running or not.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control/admin_op.h"
#include "policy/policy.h"

static int tailnet_find(struct admin_op_ctx *c, const char *tailnet, struct control_tailnet *ret)
{
	return admin_op_tailnet_resolve(c, tailnet, ret);
}

int admin_op_policy_get(struct admin_op_ctx *c, const char *tailnet, char **ret, size_t *ret_len)
{
	struct control_tailnet t;
	int r = tailnet_find(c, tailnet, &t);

	if (r < 0)
		return r;
	r = store_policy_get(c->store, t.id, ret, ret_len);
	if (r == -ENOENT)
		return admin_op_refuse(c, r,
				       "tailnet \"%s\" has no policy: every node may reach every "
				       "other",
				       t.name);
	if (r < 0)
		return admin_op_refuse(c, r, "cannot read the policy: %s", strerror(-r));
	return 0;
}

int admin_op_policy_check(struct admin_op_ctx *c, const char *text, size_t len)
{
	char err[POLICY_ERR_MAX];
	struct policy *p = NULL;
	int r;

	if (len > STORE_POLICY_MAX)
		return admin_op_refuse(c, -EMSGSIZE, "the policy is %zu bytes; at most %u are kept",
				       len, STORE_POLICY_MAX);
	r = policy_parse(text, len, &p, err);
	policy_free(p);
	if (r < 0)
		return admin_op_refuse(c, r == -E2BIG ? -EINVAL : r, "%s", err);
	return 0;
}

int admin_op_policy_set(struct admin_op_ctx *c, const char *tailnet, const char *text, size_t len)
{
	struct store_op op = { .kind = STORE_OP_POLICY_SET };
	struct control_tailnet t;
	char target[NETMAP_NAME_MAX + 16];
	int r;

	/* Checked in full before anything is written: a bad policy never replaces a good one. */
	if (len && (r = admin_op_policy_check(c, text, len)) < 0)
		return r;
	r = tailnet_find(c, tailnet, &t);
	if (r < 0)
		return r;
	op.policy.tailnet_id = t.id;
	op.policy.text = text;
	op.policy.len = len;
	snprintf(target, sizeof(target), "policy:%s", t.name);
	r = admin_op_commit(c, len ? "policy.set" : "policy.reset", target, &op, NULL);
	if (r < 0)
		return admin_op_refuse(c, r, "cannot store the policy: %s", strerror(-r));
	return 0;
}

/* The tailnet's policy (parsed) and its nodes as the policy sees them. */
struct ptailnet {
	struct policy *p;
	struct policy_node *nodes;
	size_t n;
};

static void ptailnet_free(struct ptailnet *pt)
{
	policy_free(pt->p);
	free(pt->nodes);
}

static int ptailnet_load(struct admin_op_ctx *c, const char *tailnet, struct ptailnet *ret)
{
	struct store_snapshot snap = { 0 };
	struct control_tailnet t;
	char err[POLICY_ERR_MAX], *text = NULL;
	size_t len;
	int r;

	memset(ret, 0, sizeof(*ret));
	r = tailnet_find(c, tailnet, &t);
	if (r < 0)
		return r;
	r = store_policy_get(c->store, t.id, &text, &len);
	if (r == -ENOENT) {
		/* No policy: every node may reach every other (ret->p stays NULL). */
		text = NULL;
		r = 0;
	}
	if (r < 0)
		return admin_op_refuse(c, r, "cannot read the policy: %s", strerror(-r));
	if (text) {
		r = policy_parse(text, len, &ret->p, err);
		free(text);
		if (r < 0)
			return admin_op_refuse(c, r, "the stored policy: %s", err);
	}
	r = admin_op_snapshot(c, NULL, &snap, NULL);
	if (r < 0)
		goto out;
	r = -ENOMEM;
	ret->nodes = calloc(snap.n_nodes ? snap.n_nodes : 1, sizeof(*ret->nodes));
	if (!ret->nodes)
		goto out;
	for (size_t i = 0; i < snap.n_nodes; i++) {
		const struct control_node *n = &snap.nodes[i];
		const char *user = NULL;

		if (n->tailnet_id != t.id || !control_node_visible(n, c->now))
			continue;
		for (size_t k = 0; n->user_id && k < snap.n_users; k++)
			if (snap.users[k].id == n->user_id)
				user = snap.users[k].name;
		control_node_policy(n, user, &ret->nodes[ret->n++]);
	}
	r = 0;
out:
	store_snapshot_free(&snap);
	if (r < 0) {
		ptailnet_free(ret);
		return r == -ENOMEM ? admin_op_refuse(c, r, "out of memory") : r;
	}
	return 0;
}

/* A node of the tailnet by name, id or address; else an identity the policy names. */
static int endpoint_find(struct admin_op_ctx *c, const struct ptailnet *pt, const char *s,
			 struct policy_node *ret)
{
	char err[POLICY_ERR_MAX];
	uint8_t a[16];
	int fam = strchr(s, ':') ? AF_INET6 : AF_INET;
	bool ip = inet_pton(fam, s, a) == 1;

	for (size_t i = 0; i < pt->n; i++) {
		const struct policy_node *n = &pt->nodes[i];
		char id[24];

		snprintf(id, sizeof(id), "%llu", (unsigned long long)n->id);
		if (!strcmp(n->name, s) || !strcmp(id, s)) {
			*ret = *n;
			return 0;
		}
		for (unsigned k = 0; ip && k < n->n_addrs; k++) {
			if (n->addrs[k].family == fam &&
			    !memcmp(n->addrs[k].addr, a, fam == AF_INET ? 4 : 16)) {
				*ret = *n;
				return 0;
			}
		}
	}
	if (!pt->p)
		return admin_op_refuse(c, -ENOENT, "no node \"%s\" in the tailnet", s);
	if (policy_ident(pt->p, s, ret, err) < 0)
		return admin_op_refuse(c, -EINVAL, "%s is no node of the tailnet, and %s", s, err);
	return 0;
}

int admin_op_policy_explain(struct admin_op_ctx *c, const char *tailnet, const char *src,
			    const char *dst, int port, unsigned proto, bool *ret_allowed, char *why,
			    size_t why_len)
{
	struct policy_node a, b;
	char w[POLICY_ERR_MAX];
	struct ptailnet pt;
	int r = ptailnet_load(c, tailnet, &pt);

	if (r < 0)
		return r;
	if ((r = endpoint_find(c, &pt, src, &a)) < 0 || (r = endpoint_find(c, &pt, dst, &b)) < 0)
		goto out;
	if (!pt.p) {
		*ret_allowed = true;
		snprintf(why, why_len, "allowed: the tailnet has no policy, every node may reach "
				       "every other");
	} else {
		*ret_allowed = policy_explain(pt.p, &a, &b, port, proto, w) >= 0;
		snprintf(why, why_len, "%s", w);
	}
	r = 0;
out:
	ptailnet_free(&pt);
	return r;
}

int admin_op_policy_matrix(struct admin_op_ctx *c, const char *tailnet,
			   struct admin_op_reach **ret, size_t *ret_n)
{
	struct admin_op_reach *out = NULL;
	struct policy_view *v = NULL;
	size_t n = 0, cap = 0;
	struct ptailnet pt;
	int r = ptailnet_load(c, tailnet, &pt);

	if (r < 0)
		return r;
	if (pt.n > ADMIN_OP_MATRIX_NODES) {
		r = admin_op_refuse(c, -E2BIG, "the tailnet has %zu nodes; a matrix shows at most %u",
				    pt.n, ADMIN_OP_MATRIX_NODES);
		goto out;
	}
	r = pt.p ? policy_compile(pt.p, pt.nodes, pt.n, &v) : 0;
	if (r < 0) {
		admin_op_refuse(c, r, "cannot compile the policy: %s", strerror(-r));
		goto out;
	}
	for (size_t a = 0; a < pt.n; a++) {
		for (size_t b = 0; b < pt.n; b++) {
			struct admin_op_reach *e;
			char allow[sizeof(e->allow)];

			/* Only pairs that see each other can have anything allowed. */
			if (a == b)
				continue;
			if (!pt.p)
				snprintf(allow, sizeof(allow), "*/any");
			else if (!policy_view_sees(v, a, b) ||
				 policy_reach(pt.p, &pt.nodes[a], &pt.nodes[b], allow,
					      sizeof(allow)) <= 0)
				continue;
			if (n == cap) {
				size_t nc = cap ? cap * 2 : 64;
				void *t = realloc(out, nc * sizeof(*out));

				r = admin_op_refuse(c, -ENOMEM, "out of memory");
				if (!t)
					goto out;
				out = t;
				cap = nc;
			}
			e = &out[n++];
			snprintf(e->src, sizeof(e->src), "%s", pt.nodes[a].name);
			snprintf(e->dst, sizeof(e->dst), "%s", pt.nodes[b].name);
			memcpy(e->allow, allow, sizeof(allow));
		}
	}
	c->err[0] = '\0';
	*ret = out;
	*ret_n = n;
	out = NULL;
	r = 0;
out:
	free(out);
	policy_view_free(v);
	ptailnet_free(&pt);
	return r;
}
