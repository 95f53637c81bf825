// SPDX-License-Identifier: MIT
#include "control/model.h"

bool ctl_node_visible(const struct ctl_node *n, int64_t now)
{
	if (!n->approved)
		return false;
	/* Logout and `nodes expire` set key_expiry to now: covered here too. */
	if (n->expiry_disabled || n->key_expiry == 0)
		return true;
	return n->key_expiry > now;
}
