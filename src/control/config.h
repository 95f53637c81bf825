/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_CONTROL_CONFIG_H
#define TRELLIS_CONTROL_CONFIG_H

/*
 * trellis-control's configuration file (`serve --config FILE`, e.g.
 * /etc/trellis/control.conf): the serve flags as "key = value" lines, named as
 * the flags without their dashes:
 *
 *   # comment
 *   state = /var/lib/trellis-control
 *   listen = 0.0.0.0:443
 *   tls-cert = /etc/trellis/control.pem
 *   tls-key = /etc/trellis/control.key
 *   metrics-listen = 127.0.0.1:9090
 *   no-relay = false
 *   stun-port = 3478
 *   public-url = https://control.example.com
 *   oidc-issuer = https://idp.example.com
 *   oidc-client-id = trellis
 *   oidc-client-secret-file = /etc/trellis/oidc.secret
 *   oidc-ca-file = /etc/trellis/idp-ca.pem
 *   oidc-allowed-domains = example.com,example.org
 *   oidc-allowed-groups = eng,ops
 *   oidc-groups-claim = groups
 *   oidc-allow-unverified-email = false
 *   machine-cert-auto-renew = 7d
 *   consumer-domains = gmail.com,outlook.com
 *
 * A value may be in double quotes (to keep a '#' or surrounding spaces). An
 * unknown key, a key given twice, a bad value or a line that is no "key =
 * value" is an error that names the file and line: "control.conf:3: unknown
 * key \"lisen\"". Flags given on the command line override the file.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CONFIG_FILE_MAX (64 * 1024)
#define CONFIG_LINE_MAX 4096
#define CONFIG_ERR_MAX 512

struct control_config {
	/* malloc'd; NULL when the file does not set them */
	char *state_dir, *listen, *tls_cert, *tls_key, *metrics_listen, *public_url;
	char *oidc_issuer, *oidc_client_id, *oidc_secret_file, *oidc_ca_file, *oidc_domains;
	char *oidc_groups, *oidc_groups_claim;
	char *mcert_auto_renew; /* a duration (admin_duration_parse), checked by serve */
	char *consumer_domains; /* D,D: each address of these gets a personal tailnet (web.h) */
	int no_relay;  /* -1: not set */
	int oidc_allow_unverified; /* -1: not set */
	int stun_port; /* -1: not set; else 0-65535 */
};

/*
 * Parses text (len bytes; need not be NUL-terminated) read from a file called
 * name (for messages). 0, or -EINVAL with err set ("name:LINE: what"), or
 * -ENOMEM. *ret is filled only on success; free it with control_config_free.
 */
int control_config_parse(const char *text, size_t len, const char *name,
			 struct control_config *ret, char *err, size_t err_len);
/* Reads and parses path. 0, or -errno with err set. */
int control_config_load(const char *path, struct control_config *ret, char *err, size_t err_len);
void control_config_free(struct control_config *c);

/* "0".."65535" in decimal, nothing else. 0 or -EINVAL. */
int control_config_port_parse(const char *s, uint16_t *ret);

#endif
