/* SPDX-License-Identifier: MIT */
/*
 * The configuration file of trellis-control serve (control/config.c): every
 * key, comments, quotes and line ends; each mistake refused with the file and
 * line in its message; nothing half-filled on a refusal.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "control/config.h"

static char err[CONFIG_ERR_MAX];

static int parse(const char *text, struct control_config *c)
{
	err[0] = '\0';
	return control_config_parse(text, strlen(text), "control.conf", c, err, sizeof(err));
}

static void test_every_key(void **state)
{
	struct control_config c;

	(void)state;
	assert_int_equal(parse("# trellis-control\n"
			       "\n"
			       "state = /var/lib/trellis-control\n"
			       "  listen=0.0.0.0:443   # public\n"
			       "tls-cert = \"/etc/trellis/a b.pem\"\n"
			       "tls-key = /etc/trellis/key.pem\r\n"
			       "metrics-listen = 127.0.0.1:9090\n"
			       "no-relay = yes\n"
			       "stun-port = 0\n"
			       "public-url = https://ctl.example.com\n"
			       "oidc-issuer = https://idp.example.com\n"
			       "oidc-client-id = trellis\n"
			       "oidc-client-secret-file = /etc/trellis/oidc.secret\n"
			       "oidc-ca-file = /etc/trellis/idp-ca.pem\n"
			       "oidc-allowed-domains = example.com,example.org\n"
			       "oidc-allowed-groups = eng, Domain Users\n"
			       "oidc-groups-claim = roles\n"
			       "oidc-allow-unverified-email = no\n"
			       "consumer-domains = gmail.com, example.net",
			       &c),
			 0);
	assert_string_equal(c.state_dir, "/var/lib/trellis-control");
	assert_string_equal(c.listen, "0.0.0.0:443");
	assert_string_equal(c.tls_cert, "/etc/trellis/a b.pem");
	assert_string_equal(c.tls_key, "/etc/trellis/key.pem");
	assert_string_equal(c.metrics_listen, "127.0.0.1:9090");
	assert_int_equal(c.no_relay, 1);
	assert_int_equal(c.stun_port, 0);
	assert_string_equal(c.public_url, "https://ctl.example.com");
	assert_string_equal(c.oidc_issuer, "https://idp.example.com");
	assert_string_equal(c.oidc_client_id, "trellis");
	assert_string_equal(c.oidc_secret_file, "/etc/trellis/oidc.secret");
	assert_string_equal(c.oidc_ca_file, "/etc/trellis/idp-ca.pem");
	assert_string_equal(c.oidc_domains, "example.com,example.org");
	assert_string_equal(c.oidc_groups, "eng, Domain Users");
	assert_string_equal(c.oidc_groups_claim, "roles");
	assert_int_equal(c.oidc_allow_unverified, 0);
	assert_string_equal(c.consumer_domains, "gmail.com, example.net");
	control_config_free(&c);

	/* Nothing set: nothing to override the defaults with. */
	assert_int_equal(parse("", &c), 0);
	assert_null(c.listen);
	assert_int_equal(c.no_relay, -1);
	assert_int_equal(c.stun_port, -1);
	assert_null(c.oidc_issuer);
	assert_int_equal(c.oidc_allow_unverified, -1);
	control_config_free(&c);
	assert_int_equal(parse("no-relay = false\nstun-port = 65535\nlisten = \"a#b\" # c\n", &c),
			 0);
	assert_int_equal(c.no_relay, 0);
	assert_int_equal(c.stun_port, 65535);
	assert_string_equal(c.listen, "a#b");
	control_config_free(&c);
}

#define OIDC_KEYS                                                                                  \
	", public-url, oidc-issuer, oidc-client-id, oidc-client-secret-file, oidc-ca-file, "       \
	"oidc-allowed-domains, oidc-allowed-groups, oidc-groups-claim, "                           \
	"oidc-allow-unverified-email, machine-cert-auto-renew, consumer-domains"

static void refused(const char *text, const char *want)
{
	struct control_config c = { 0 };

	assert_int_equal(parse(text, &c), -EINVAL);
	assert_string_equal(err, want);
	assert_null(c.listen); /* untouched */
}

static void test_mistakes(void **state)
{
	char big[CONFIG_LINE_MAX + 16];

	(void)state;
	refused("listen = 1.2.3.4:80\nlisen = x\n",
		"control.conf:2: unknown key \"lisen\" (state, listen, tls-cert, tls-key, "
		"metrics-listen, no-relay, stun-port" OIDC_KEYS ")");
	refused("\n\nlisten\n", "control.conf:3: expected key = value, not \"listen\"");
	refused("listen = a\nlisten = b\n", "control.conf:2: listen is set twice");
	refused("stun-port = 65536\n", "control.conf:1: stun-port: \"65536\" is not 0-65535");
	refused("stun-port = -1\n", "control.conf:1: stun-port: \"-1\" is not 0-65535");
	refused("stun-port = 34 78\n", "control.conf:1: stun-port: \"34 78\" is not 0-65535");
	refused("no-relay = maybe\n", "control.conf:1: no-relay: \"maybe\" is not true or false");
	refused("listen =\n", "control.conf:1: listen needs a value");
	refused("listen = \"\"\n", "control.conf:1: listen needs a value");
	refused("listen = \"abc\n", "control.conf:1: listen: missing closing quote");
	refused("listen = \"abc\" x\n", "control.conf:1: listen: text after the quoted value");
	refused("= x\n", "control.conf:1: unknown key \"\" (state, listen, tls-cert, tls-key, "
			 "metrics-listen, no-relay, stun-port" OIDC_KEYS ")");
	refused("x\x01y = 1\n", "control.conf:1: unknown key \"x?y\" (state, listen, tls-cert, "
				 "tls-key, metrics-listen, no-relay, stun-port" OIDC_KEYS ")");
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	refused(big, "control.conf:1: line longer than 4096 bytes");
	{
		struct control_config c;
		static const char nul[] = "listen = a\0b\n";

		assert_int_equal(control_config_parse(nul, sizeof(nul) - 1, "f", &c, err,
						      sizeof(err)),
				 -EINVAL);
		assert_string_equal(err, "f:1: listen: NUL byte in the value");
	}
}

static void test_load(void **state)
{
	char path[] = "/tmp/trellis-config-XXXXXX";
	struct control_config c;
	int fd;

	(void)state;
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "listen = [::]:8080\n", 19), 19);
	close(fd);
	assert_int_equal(control_config_load(path, &c, err, sizeof(err)), 0);
	assert_string_equal(c.listen, "[::]:8080");
	control_config_free(&c);
	unlink(path);
	assert_int_equal(control_config_load(path, &c, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "cannot open /tmp/trellis-config-"));
}

static void test_port_parse(void **state)
{
	uint16_t p;

	(void)state;
	assert_int_equal(control_config_port_parse("3478", &p), 0);
	assert_int_equal(p, 3478);
	assert_int_equal(control_config_port_parse("", &p), -EINVAL);
	assert_int_equal(control_config_port_parse("+1", &p), -EINVAL);
	assert_int_equal(control_config_port_parse("000001", &p), -EINVAL);
	assert_int_equal(control_config_port_parse("99999", &p), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_every_key),
		cmocka_unit_test(test_mistakes),
		cmocka_unit_test(test_load),
		cmocka_unit_test(test_port_parse),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
