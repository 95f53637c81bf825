/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "crypto/crypto.h"
#include "node/nodefilter.h"
#include "proto/ctrlmsg.h"

struct nodefilter {
	struct filter *f;
	struct netmap_filter *applied; /* the filter in force; NULL: none (or no policy) */
	char error[128];	       /* why the last filter was refused; "" = it was not */
};

int nodefilter_new(struct nodefilter **ret)
{
	struct nodefilter *nf = calloc(1, sizeof(*nf));
	uint64_t seed = 0;
	int r = -ENOMEM;

	if (!nf)
		return -ENOMEM;
	/* Peers choose the tuples: the flow hash is keyed. */
	r = crypto_random(&seed, sizeof(seed));
	if (r < 0)
		goto out;
	r = filter_new(0, seed, &nf->f);
	if (r < 0)
		goto out;
	*ret = nf;
	nf = NULL;
out:
	nodefilter_free(nf);
	return r;
}

void nodefilter_free(struct nodefilter *nf)
{
	if (!nf)
		return;
	filter_free(nf->f);
	netmap_filter_free(nf->applied);
	free(nf);
}

struct filter *nodefilter_filter(struct nodefilter *nf)
{
	return nf->f;
}

static bool same(const struct netmap_filter *a, const struct netmap_filter *b)
{
	return a->n_rules == b->n_rules && a->n_srcs == b->n_srcs && a->n_dsts == b->n_dsts &&
	       !memcmp(a->rules, b->rules, a->n_rules * sizeof(*a->rules)) &&
	       !memcmp(a->srcs, b->srcs, a->n_srcs * sizeof(*a->srcs)) &&
	       !memcmp(a->dsts, b->dsts, a->n_dsts * sizeof(*a->dsts));
}

int nodefilter_apply(struct nodefilter *nf, const struct netmap_filter *want)
{
	struct filter_rules *rules = NULL;
	struct netmap_filter *copy;
	int r;

	if (!want) {
		if (filter_active(nf->f))
			log_info("packet filter: no policy, every peer may reach us");
		filter_rules_set(nf->f, NULL);
		netmap_filter_free(nf->applied);
		nf->applied = NULL;
		nf->error[0] = '\0';
		return 0;
	}
	/* Every delta re-applies the map: recompile only what changed. */
	if (nf->applied && filter_active(nf->f) && same(nf->applied, want))
		return 0;
	r = filter_rules_compile(want, &rules);
	if (r < 0) {
		snprintf(nf->error, sizeof(nf->error), "cannot compile the filter: %s", strerror(-r));
		if (!filter_active(nf->f)) {
			log_warn("packet filter: %s; admitting no new flow", nf->error);
			filter_deny_all(nf->f);
		} else {
			log_warn("packet filter: %s; the previous one stays", nf->error);
		}
		return r;
	}
	/* The copy is what status shows and what the next netmap is compared with. */
	copy = netmap_filter_dup(want);
	filter_rules_set(nf->f, rules);
	netmap_filter_free(nf->applied);
	nf->applied = copy;
	nf->error[0] = '\0';
	log_info("packet filter: %u rules", want->n_rules);
	return 0;
}

json_t *nodefilter_status_json(struct nodefilter *nf)
{
	struct filter_stats st;
	json_t *o, *drops, *rules = NULL;
	char *text = NULL;
	size_t len;
	unsigned i;

	filter_stats_get(nf->f, &st);
	/* The rules as the netmap carries them (docs/control-protocol.md "Packet filter"). */
	if (nf->applied && ctrl_filter_encode(nf->applied, &text, &len) == 0) {
		json_t *pf = json_loadb(text, len, 0, NULL);

		rules = json_incref(json_object_get(pf, "rules"));
		json_decref(pf);
	}
	free(text);
	drops = json_object();
	for (i = 0; drops && i < FILTER_DROP__MAX; i++)
		json_object_set_new(drops, filter_drop_name(i), json_integer((json_int_t)st.drops[i]));
	o = json_pack("{s:b, s:o, s:s?, s:o, s:I, s:{s:I, s:I, s:I}}", "policy", st.active, "rules",
		      rules ? rules : json_null(), "error", nf->error[0] ? nf->error : NULL, "drops",
		      drops ? drops : json_null(), "fragments_passed", (json_int_t)st.fragments,
		      "conntrack", "entries", (json_int_t)st.ct_entries, "max",
		      (json_int_t)st.ct_max, "evicted", (json_int_t)st.ct_evicted);
	return o;
}
