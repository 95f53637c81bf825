// SPDX-License-Identifier: MIT
/*
 * trellis-control [--state DIR] <command>: `serve` runs the coordination
 * server (server.c); `version` prints the version; everything else is the admin
 * CLI (admin.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "base/log.h"
#include "base/version.h"
#include "control/admin.h"
#include "control/admin_api.h"
#include "control/config.h"
#include "control/server.h"
#include "control/web.h"
#include "control/weboidc.h"
#include "oidc/client.h"

/*
 * One server per state directory: a second would write the same database behind the
 * first one's in-memory records and indexes, and the admin CLI asks the lock whether
 * a server runs. The lock ends with the process however it ends (kill -9 included),
 * so it never needs cleaning up. Returns the fd to keep open, or -1 (said why).
 */
static int state_lock(const char *dir)
{
	int fd = admin_state_lock(dir, true);

	if (fd == -EBUSY)
		fprintf(stderr, "trellis-control: another trellis-control serves %s\n", dir);
	else if (fd < 0)
		fprintf(stderr, "trellis-control: cannot lock %s/serve.lock: %s\n", dir,
			strerror(-fd));
	return fd < 0 ? -1 : fd;
}

static void serve_usage(void)
{
	printf(
	    "usage: trellis-control [--state DIR] serve [--config FILE] [--listen ADDR:PORT]\n"
	    "         [--tls-cert PEM --tls-key PEM] [--no-relay] [--stun-port N]\n"
	    "         [--metrics-listen ADDR:PORT] [--public-url URL]\n"
	    "         [--machine-cert-auto-renew DUR] [--consumer-domains D,D]\n"
	    "         [--oidc-issuer URL --oidc-client-id ID --oidc-client-secret-file F\n"
	    "          [--oidc-ca-file PEM] [--oidc-allowed-domains D,D]\n"
	    "          [--oidc-allowed-groups G,G [--oidc-groups-claim NAME]] "
	    "[--oidc-allow-unverified-email]]\n"
	    "  --config FILE       settings as key = value lines (trellis-control(8)); flags\n"
	    "                      override them: state, listen, tls-cert, tls-key,\n"
	    "                      metrics-listen, no-relay, stun-port, public-url, oidc-issuer,\n"
	    "                      oidc-client-id, oidc-client-secret-file, oidc-ca-file,\n"
	    "                      oidc-allowed-domains, oidc-allowed-groups,\n"
	    "                      oidc-groups-claim, oidc-allow-unverified-email,\n"
	    "                      machine-cert-auto-renew, consumer-domains\n"
	    "  --listen ADDR:PORT  HTTP(S) address (%s)\n"
	    "  --tls-cert, --tls-key  serve HTTPS with this PEM chain and key\n"
	    "  --no-relay          no embedded relay (GET /relay)\n"
	    "  --stun-port N       embedded STUN server's UDP port (3478; 0: none)\n"
	    "  --metrics-listen ADDR:PORT  GET /metrics there (none by default)\n"
	    "  --public-url URL    this server as browsers reach it (https://HOST[:PORT]);\n"
	    "                      OIDC sends them back to URL" WEBOIDC_CALLBACK_PATH "\n"
	    "                      and machine certificates signed here name\n"
	    "                      URL/crl/KEYID.crl, where their CA's CRL is served\n"
	    "  --machine-cert-auto-renew DUR  renew a node's machine certificate (as\n"
	    "                      `ca renew`, in the audit log as the server) when less than\n"
	    "                      DUR of it is left (7d, 12h), and push it to the node\n"
	    "  --consumer-domains D,D  shared email domains: each address of them signs in\n"
	    "                      to a tailnet of its own (default: gmail.com, outlook.com,\n"
	    "                      yahoo.com and other large providers); any other domain\n"
	    "                      is a company's, whose first user creates its tailnet\n"
	    "  --oidc-issuer URL   sign in with this OpenID provider (https, as it names\n"
	    "                      itself in its discovery document); needs --public-url\n"
	    "  --oidc-client-id ID, --oidc-client-secret-file F  this server's client at\n"
	    "                      the provider (the file's first line is the secret)\n"
	    "  --oidc-ca-file PEM  trust only this CA for the provider (default: system)\n"
	    "  --oidc-allowed-domains D,D  only addresses in these domains may sign in\n"
	    "  --oidc-allowed-groups G,G  only members of one of these groups may sign in\n"
	    "  --oidc-groups-claim NAME  the ID token's claim that lists them (groups)\n"
	    "  --oidc-allow-unverified-email  accept addresses the provider has not verified\n"
	    "The admin API listens on STATE/%s (root) and under /admin/v1/ on the\n"
	    "public port (admin API keys).\n"
	    "example: trellis-control serve --config /etc/trellis/control.conf\n",
	    CONTROL_LISTEN_DEFAULT, ADMIN_SOCKET_NAME);
}

/*
 * The OIDC settings: the secret's file read (its first line), the client made once
 * to check them, and the provider asked for its discovery document and keys, so a
 * wrong issuer, CA or client shows at start. A provider that does not answer now
 * is only a warning: logins ask again. 0, or -1 (said why).
 */
static int oidc_check(struct oidc_config *o, const char *secret_file, char *secret, size_t cap,
		      const char *public_url, char *redirect, size_t redirect_cap)
{
	char err[OIDC_ERR_MAX];
	struct oidc_client *c = NULL;
	FILE *f;
	size_t n;

	if (!o->issuer && !o->client_id && !secret_file && !o->ca_file && !o->allowed_domains &&
	    !o->allowed_groups && !o->groups_claim)
		return 0;
	if (!o->issuer || !o->client_id || !secret_file) {
		fprintf(stderr, "trellis-control: serve: OIDC needs --oidc-issuer, --oidc-client-id "
				"and --oidc-client-secret-file together\n");
		return -1;
	}
	/* The provider sends browsers back here: registered there, so it must be exact. */
	if (!public_url ||
	    (strncmp(public_url, "https://", 8) && strncmp(public_url, "http://", 7)) ||
	    snprintf(redirect, redirect_cap, "%.*s" WEBOIDC_CALLBACK_PATH,
		     (int)(strlen(public_url) - (public_url[strlen(public_url) - 1] == '/')),
		     public_url) >= (int)redirect_cap) {
		fprintf(stderr,
			"trellis-control: serve: OIDC needs --public-url, the server's URL "
			"as browsers reach it (https://HOST[:PORT]): the provider sends them "
			"back to URL%s\n",
			WEBOIDC_CALLBACK_PATH);
		return -1;
	}
	o->redirect_uri = redirect;
	f = fopen(secret_file, "re");
	if (!f || !fgets(secret, (int)cap, f)) {
		fprintf(stderr, "trellis-control: serve: cannot read the OIDC client secret from "
				"%s%s%s\n", secret_file, f ? "" : ": ", f ? "" : strerror(errno));
		if (f)
			fclose(f);
		return -1;
	}
	fclose(f);
	n = strcspn(secret, "\r\n");
	secret[n] = '\0';
	o->client_secret = secret;
	o->timeout_ms = 5000;
	if (oidc_client_new(o, &c, err, sizeof(err)) < 0) {
		fprintf(stderr, "trellis-control: serve: %s\n", err);
		return -1;
	}
	if (oidc_client_discover(c, err, sizeof(err)) < 0)
		log_warn("control: OIDC provider %s: %s (asked again at each login)", o->issuer, err);
	else
		log_info("control: OIDC provider %s: discovery and keys fetched", o->issuer);
	oidc_client_free(c);
	o->timeout_ms = 0;
	return 0;
}

/* A value from the file unless a flag gave one. */
static void config_take(const char **dst, const char *flag, const char *file)
{
	*dst = flag ? flag : file ? file : *dst;
}

static bool public_url_valid(const char *url)
{
	return (!strncmp(url, "https://", 8) || !strncmp(url, "http://", 7)) &&
	       !strpbrk(url, ", \t\r\n") && strlen(url) <= 256;
}

static int serve(const char *state_dir, bool state_set, int argc, char **argv)
{
	struct control_serve_opts opts = {
		.state_dir = state_dir,
		.listen = CONTROL_LISTEN_DEFAULT,
		.stun_port = 3478,
	};
	const char *listen = NULL, *cert = NULL, *key = NULL, *metrics = NULL, *config = NULL;
	const char *stun = NULL, *oidc_secret_file = NULL, *public_url = NULL, *renew = NULL;
	const char *consumer = NULL;
	struct control_config cf = { .no_relay = -1, .stun_port = -1, .oidc_allow_unverified = -1 };
	struct oidc_config oidc = { 0 };
	char err[CONFIG_ERR_MAX], oidc_secret[1024], redirect[OIDC_URL_MAX];
	bool no_relay = false, oidc_unverified = false;
	int i, r, lock_fd;

	for (i = 0; i < argc; i++) {
		const char **dst = NULL;

		if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
			serve_usage();
			return 0;
		}
		if (strcmp(argv[i], "--no-relay") == 0) {
			no_relay = true;
			continue;
		}
		if (strcmp(argv[i], "--oidc-allow-unverified-email") == 0) {
			oidc_unverified = true;
			continue;
		}
		if (strcmp(argv[i], "--listen") == 0)
			dst = &listen;
		else if (strcmp(argv[i], "--tls-cert") == 0)
			dst = &cert;
		else if (strcmp(argv[i], "--tls-key") == 0)
			dst = &key;
		else if (strcmp(argv[i], "--metrics-listen") == 0)
			dst = &metrics;
		else if (strcmp(argv[i], "--stun-port") == 0)
			dst = &stun;
		else if (strcmp(argv[i], "--config") == 0)
			dst = &config;
		else if (strcmp(argv[i], "--public-url") == 0)
			dst = &public_url;
		else if (strcmp(argv[i], "--machine-cert-auto-renew") == 0)
			dst = &renew;
		else if (strcmp(argv[i], "--consumer-domains") == 0)
			dst = &consumer;
		else if (strcmp(argv[i], "--oidc-issuer") == 0)
			dst = &oidc.issuer;
		else if (strcmp(argv[i], "--oidc-client-id") == 0)
			dst = &oidc.client_id;
		else if (strcmp(argv[i], "--oidc-client-secret-file") == 0)
			dst = &oidc_secret_file;
		else if (strcmp(argv[i], "--oidc-ca-file") == 0)
			dst = &oidc.ca_file;
		else if (strcmp(argv[i], "--oidc-allowed-domains") == 0)
			dst = &oidc.allowed_domains;
		else if (strcmp(argv[i], "--oidc-allowed-groups") == 0)
			dst = &oidc.allowed_groups;
		else if (strcmp(argv[i], "--oidc-groups-claim") == 0)
			dst = &oidc.groups_claim;
		if (!dst) {
			fprintf(stderr, "trellis-control: serve: unknown argument \"%s\" (try "
					"serve --help)\n", argv[i]);
			return 1;
		}
		if (i + 1 >= argc) {
			fprintf(stderr, "trellis-control: serve: %s needs a value\n", argv[i]);
			return 1;
		}
		*dst = argv[++i];
	}
	if (stun && control_config_port_parse(stun, &opts.stun_port) < 0) {
		fprintf(stderr, "trellis-control: serve: --stun-port: \"%s\" is not 0-65535\n",
			stun);
		return 1;
	}
	opts.stun_port_set = stun != NULL;
	if (config && control_config_load(config, &cf, err, sizeof(err)) < 0) {
		fprintf(stderr, "trellis-control: serve: %s\n", err);
		return 1;
	}
	/* The file first, then the flags over it. */
	if (!state_set && cf.state_dir)
		opts.state_dir = state_dir = cf.state_dir;
	config_take(&opts.listen, listen, cf.listen);
	config_take(&opts.tls_cert, cert, cf.tls_cert);
	config_take(&opts.tls_key, key, cf.tls_key);
	config_take(&opts.metrics_listen, metrics, cf.metrics_listen);
	opts.no_relay = no_relay || cf.no_relay == 1;
	if (!stun && cf.stun_port >= 0) {
		opts.stun_port = (uint16_t)cf.stun_port;
		opts.stun_port_set = true;
	}
	config_take(&public_url, public_url, cf.public_url);
	config_take(&oidc.issuer, oidc.issuer, cf.oidc_issuer);
	config_take(&oidc.client_id, oidc.client_id, cf.oidc_client_id);
	config_take(&oidc_secret_file, oidc_secret_file, cf.oidc_secret_file);
	config_take(&oidc.ca_file, oidc.ca_file, cf.oidc_ca_file);
	config_take(&oidc.allowed_domains, oidc.allowed_domains, cf.oidc_domains);
	config_take(&oidc.allowed_groups, oidc.allowed_groups, cf.oidc_groups);
	config_take(&oidc.groups_claim, oidc.groups_claim, cf.oidc_groups_claim);
	oidc.allow_unverified_email = oidc_unverified || cf.oidc_allow_unverified == 1;
	if (oidc_check(&oidc, oidc_secret_file, oidc_secret, sizeof(oidc_secret), public_url,
		       redirect, sizeof(redirect)) < 0) {
		control_config_free(&cf);
		return 1;
	}
	/* It goes into certificates (a CRL distribution point) and URLs sent to browsers. */
	if (public_url && !public_url_valid(public_url)) {
		fprintf(stderr, "trellis-control: serve: --public-url takes http(s)://HOST[:PORT]\n");
		control_config_free(&cf);
		return 1;
	}
	opts.public_url = public_url;
	config_take(&renew, renew, cf.mcert_auto_renew);
	if (renew && admin_duration_parse(renew, &opts.mcert_auto_renew_sec) < 0) {
		fprintf(stderr,
			"trellis-control: serve: --machine-cert-auto-renew: bad duration "
			"\"%s\" (examples: 90s, 30m, 12h, 7d)\n",
			renew);
		control_config_free(&cf);
		return 1;
	}
	config_take(&consumer, consumer, cf.consumer_domains);
	if (consumer && web_consumer_domains_check(consumer, err, sizeof(err)) < 0) {
		fprintf(stderr, "trellis-control: serve: --consumer-domains: %s\n", err);
		control_config_free(&cf);
		return 1;
	}
	opts.consumer_domains = consumer;
	if (oidc.issuer)
		opts.oidc = &oidc;
	if (!opts.tls_cert != !opts.tls_key) {
		fprintf(stderr, "trellis-control: serve: --tls-cert and --tls-key go together\n");
		control_config_free(&cf);
		return 1;
	}
	lock_fd = state_lock(state_dir);
	if (lock_fd < 0) {
		control_config_free(&cf);
		return 1;
	}
	log_info("trellis-control %s", trellis_version);
	if (config)
		log_info("control: settings from %s", config);
	r = control_serve(&opts);
	close(lock_fd);
	control_config_free(&cf);
	OPENSSL_cleanse(oidc_secret, sizeof(oidc_secret));
	if (r == -ENOSYS) {
		fprintf(stderr, "trellis-control: serve: not built yet\n");
		return 1;
	}
	return r < 0 ? 1 : 0;
}

int main(int argc, char **argv)
{
	const char *state_dir = ADMIN_STATE_DIR_DEFAULT;
	bool offline = false, state_set = false;
	int i = 1;

	/*
	 * Before any thread exists. httpd's sockets send with MSG_NOSIGNAL, TLS
	 * included (net/sockbio.h); this covers any write that does not, so that
	 * one client's reset can never end the server (issue 7, finding 1).
	 */
	signal(SIGPIPE, SIG_IGN);
	log_init();
	if (argc == 2 && strcmp(argv[1], "--version") == 0) {
		printf("trellis-control %s\n", trellis_version);
		return 0;
	}
	while (i < argc && (strncmp(argv[i], "--state", 7) == 0 ||
			    strcmp(argv[i], "--offline") == 0)) {
		if (strcmp(argv[i], "--offline") == 0) {
			offline = true;
			i++;
		} else if (argv[i][7] == '=') {
			state_dir = argv[i] + 8;
			state_set = true;
			i++;
		} else if (argv[i][7] == '\0' && i + 1 < argc) {
			state_dir = argv[i + 1];
			state_set = true;
			i += 2;
		} else {
			fprintf(stderr, "trellis-control: --state needs a directory\n");
			return 1;
		}
	}
	if (!state_dir[0]) {
		fprintf(stderr, "trellis-control: --state needs a directory\n");
		return 1;
	}
	if (i < argc && strcmp(argv[i], "version") == 0) {
		printf("%s\n", trellis_version);
		return 0;
	}
	if (offline && i < argc && strcmp(argv[i], "serve") == 0) {
		fprintf(stderr, "trellis-control: --offline is for admin commands, not serve\n");
		return 1;
	}
	if (i < argc && strcmp(argv[i], "serve") == 0)
		return serve(state_dir, state_set, argc - i - 1, argv + i + 1);
	return admin_run(state_dir, offline, argc - i, argv + i);
}
