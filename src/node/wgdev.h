/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_NODE_WGDEV_H
#define TRELLIS_NODE_WGDEV_H

/* Plain WireGuard mode: one TUN interface driven by the wg engine, configured over UAPI. */

struct wgdev_opts {
	const char *ifname;
	unsigned mtu;
	int workers; /* crypto threads; 0 = inline on the I/O threads; <0 = online CPUs */
	const char *socket_path; /* NULL: /var/run/wireguard/IFACE.sock */
};

/*
 * Runs in the foreground until SIGTERM/SIGINT or until the interface is deleted,
 * then tears everything down (the TUN interface disappears with its fd).
 * 0, or -errno if it could not start.
 */
int wgdev_run(const struct wgdev_opts *opts);

#endif
