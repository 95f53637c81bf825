// SPDX-License-Identifier: MIT
/*
 * trellis-control admin commands: argv in, an admin API request out
 * (admin_api.h), its JSON answer printed as text or JSON.
 *
 * Where the request goes. A running server holds STATE/serve.lock and owns the
 * database: the request goes to its admin socket, so the change is applied at
 * once and nothing writes the store behind it. With no server, the commands
 * refuse, unless given --offline: then the CLI takes serve.lock itself (no
 * server can start underneath it) and answers the request in-process on the
 * database. A --state that is not a state directory is refused either way
 * but for --offline, which may create one.
 *
 * Every mistake is one line on stderr and exit status 1; `authkey create` and
 * `apikey create` print only the key on stdout so scripts can capture it.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "base/time.h"
#include "base/util.h"
#include "control/admin.h"
#include "control/admin_api.h"
#include "control/admin_op.h"
#include "crypto/mcert.h"
#include "control/store.h"
#include "control/users_cli.h"
#include "crypto/crypto.h"
#include "proto/http.h"
#include "policy/policy.h"
#include "proto/relaymap.h"

/* An answer larger than this is not one of ours. */
#define ANSWER_MAX (64u << 20)
#define SOCKET_TIMEOUT_S 30
/* A starting server's socket is waited for 10 s at most. */
#define CONNECT_RETRY_US 50000
#define CONNECT_TRIES 200

static const char *cmd_name = "";

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int fail(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "trellis-control: %s%s", cmd_name, cmd_name[0] ? ": " : "");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return 1;
}

/* ---- help ---- */

struct noun {
	const char *name;
	const char *verbs; /* "create, list, revoke" */
	const char *help;
};

static const struct noun nouns[] = {
    {"authkey", "create, list, revoke",
     "usage: trellis-control [--state DIR] authkey create [--tailnet NAME] [--user NAME]\n"
     "           [--reusable] [--ephemeral] [--preauthorized] [--tags tag:a,tag:b]\n"
     "           [--expiration DURATION]\n"
     "       trellis-control [--state DIR] authkey list [--tailnet NAME] [--json]\n"
     "       trellis-control [--state DIR] authkey revoke ID\n"
     "  create prints only the key (once: only its hash is stored).\n"
     "  --tailnet NAME     the key's tailnet (default: \"default\")\n"
     "  --user NAME        its owner: nodes registered with it belong to this user\n"
     "  --reusable         any number of nodes (default: one)\n"
     "  --ephemeral        its nodes are deleted once offline for the tailnet's timeout\n"
     "  --preauthorized    its nodes need no approval\n"
     "  --tags T,...       its nodes carry these tags (tag:name)\n"
     "  --expiration DUR   lifetime (default 90d; \"never\"); --expiry is the same\n"
     "  list shows owner, flags, expiry, use count and status; ID is what list shows.\n"
     "example: trellis-control authkey create --user alice --reusable --expiration 7d\n"},
    {"apikey", "create, list, revoke",
     "usage: trellis-control [--state DIR] apikey create [--name NAME] [--expiration DUR]\n"
     "       trellis-control [--state DIR] apikey list [--json]\n"
     "       trellis-control [--state DIR] apikey revoke ID\n"
     "  Keys for the HTTP admin API on the server's port (Authorization: Bearer KEY;\n"
     "  docs/admin-api.md). create prints only the key, once; at most 16 live keys.\n"
     "  --name NAME        a note: who or what holds it\n"
     "  --expiration DUR   lifetime (default 90d; \"never\")\n"
     "example: trellis-control apikey create --name ci --expiration 30d\n"},
    {"tailnets", "list, create, set",
     "usage: trellis-control [--state DIR] tailnets list [--json]\n"
     "       trellis-control [--state DIR] tailnets create NAME [--key-expiry DUR]\n"
     "           [--ephemeral-timeout DUR] [--device-approval on|off]\n"
     "       trellis-control [--state DIR] tailnets set NAME [--key-expiry DUR]\n"
     "           [--ephemeral-timeout DUR] [--device-approval on|off] [--require-2fa on|off]\n"
     "           [--require-machine-cert on|off] [--flow-log on|off] [--flow-log-interval DUR]\n"
     "           [--flow-retention DUR]\n"
     "  NAME \"default\" is the tailnet nodes join without naming one.\n"
     "  --key-expiry DUR         node key lifetime (default 180d; 0: keys do not expire)\n"
     "  --ephemeral-timeout DUR  offline ephemeral nodes are deleted after (default 10m)\n"
     "  --device-approval on|off nodes wait for `nodes approve` after an auth key (unless\n"
     "                           --preauthorized) or a sign-in (default off)\n"
     "  --require-2fa on|off     logins on the login page must use a second factor (local\n"
     "                           accounts always do; OIDC: the provider's; default off)\n"
     "  --require-machine-cert on|off  every registration must prove a valid certificate\n"
     "                           of the tailnet's CA (ca init; default off)\n"
     "  --flow-log on|off        nodes count their flows and ship them to the collector\n"
     "                           (docs/audit.md; default on)\n"
     "  --flow-log-interval DUR  how often each node ships a batch (1s to 1h; default 5s)\n"
     "  --flow-retention DUR     flow records older than this are pruned, the chains kept\n"
     "                           verifiable (30d; 0, the default: kept forever)\n"
     "  Switches take on|off or true|false, as --SETTING VALUE or --SETTING=VALUE.\n"
     "example: trellis-control tailnets set default --device-approval on\n"},
    {"users", "list, create, add, passwd, delete, reset-2fa, confirm-2fa",
     "usage: trellis-control [--state DIR] users list [--tailnet NAME] [--json]\n"
     "       trellis-control [--state DIR] users create NAME [--tailnet NAME]\n"
     "       trellis-control [--state DIR] users add EMAIL [--admin] [--totp]\n"
     "       trellis-control [--state DIR] users passwd|delete|reset-2fa|confirm-2fa EMAIL\n"
     "  create: a user of a tailnet, for auth keys (--user); no login.\n"
     "  add: a local account that signs in on the login page; the password is read\n"
     "  twice from the terminal, or as one line from stdin; its tailnet comes from\n"
     "  its email domain at the first login (docs/identity.md). --admin: an admin of\n"
     "  that tailnet. --totp: enrol the second factor now: prints its QR code, its\n"
     "  otpauth URI and secret, and recovery codes (once) instead of enrolling at the\n"
     "  first login. The factor counts once a code from the app proves it holds the\n"
     "  secret: on a terminal, add asks for one; else confirm-2fa reads one (terminal\n"
     "  or stdin), or the person types one at the first login. Until then it is\n"
     "  pending: no recovery code signs in. reset-2fa: the next login enrols a new\n"
     "  authenticator.\n"
     "example: echo \"$PW\" | trellis-control users add alice@example.com --admin\n"},
    {"nodes", "list, show, pending, approve, rename, expire, delete, set-expiry",
     "usage: trellis-control [--state DIR] nodes list [--tailnet NAME] [--json]\n"
     "       trellis-control [--state DIR] nodes pending [--tailnet NAME] [--json]\n"
     "       trellis-control [--state DIR] nodes show ID|NAME [--tailnet NAME] [--json]\n"
     "       trellis-control [--state DIR] nodes approve|expire|delete ID|NAME [--tailnet "
     "NAME]\n"
     "       trellis-control [--state DIR] nodes approve reg:CODE\n"
     "       trellis-control [--state DIR] nodes rename ID|NAME NEWNAME [--tailnet NAME]\n"
     "       trellis-control [--state DIR] nodes set-expiry ID|NAME on|off [--tailnet NAME]\n"
     "  pending lists interactive registrations waiting for approval (the running\n"
     "  server holds them in memory only, 15 minutes); approve reg:CODE approves one.\n"
     "  expire ends the node's key now: it must log in again.\n"
     "example: trellis-control nodes list --json\n"},
    {"audit", "log, verify, prune",
     "usage: trellis-control [--state DIR] audit log [--since T] [--json]\n"
     "       trellis-control [--state DIR] audit verify\n"
     "       trellis-control [--state DIR] audit prune --keep DURATION\n"
     "  log: every admin action with actor, time, action, target and what changed;\n"
     "  --json prints one JSON object a line, with before and after in full.\n"
     "  --since T: a duration ago (2h, 7d), a UTC date (2026-12-01, 2026-12-01T19:00:00Z)\n"
     "  or Unix seconds.\n"
     "  verify: walks the hash chain; exits 1 naming the first bad entry. Keep the head\n"
     "  hash it prints somewhere else: a rewritten tail changes it.\n"
     "  prune: drops entries older than DURATION (root on the admin socket only); the\n"
     "  chain stays verifiable from the last dropped entry's hash (docs/audit.md).\n"
     "example: trellis-control audit log --since 1d\n"},
    {"flows", "list, prune",
     "usage: trellis-control [--state DIR] flows [list] [--node ID|NAME] [--since T] [--flagged]\n"
     "           [--json]\n"
     "       trellis-control [--state DIR] flows prune [--tailnet NAME]\n"
     "           --before T | --older-than DURATION\n"
     "  Every flow the nodes reported (docs/audit.md), both ends paired: confirmed\n"
     "  when the two reports agree within what loss explains, else mismatch or\n"
     "  one-sided; no-peer: one end reported it, naming no peer (it had none for\n"
     "  the address), so no other end could. --node: the flows this node reported\n"
     "  or was reported in.\n"
     "  --since T: flows seen since (2h, 7d, a UTC date or time, Unix seconds).\n"
     "  --flagged: only mismatch and one-sided. --json: one JSON object a line.\n"
     "  `audit verify` checks every node's batch chain.\n"
     "  prune: drops the tailnet's (default: \"default\") batches received before T\n"
     "  (a duration ago, a UTC date or time, Unix seconds) or longer ago than\n"
     "  DURATION, as the tailnet's --flow-retention does: each node's chain stays\n"
     "  verifiable from an anchor, each chunk a flows.prune audit entry (root on the\n"
     "  admin socket only).\n"
     "example: trellis-control flows --flagged --since 1h\n"},
    {"relaymap", "set, get, reset",
     "usage: trellis-control [--state DIR] relaymap set FILE|-\n"
     "       trellis-control [--state DIR] relaymap get [--json]\n"
     "       trellis-control [--state DIR] relaymap reset\n"
     "FILE is JSON: {\"regions\": [{\"id\": 1, \"code\": \"fra\", \"nodes\": "
     "[{\"name\": \"fra1\", \"host\": ...}]}]}\n"
     "(docs/control-protocol.md, \"Relay map\"). reset: back to the embedded relay.\n"},
    {"ca", "init, rotate, retire, show, sign, renew, revoke, list, crl",
     "usage: trellis-control [--state DIR] ca init|rotate [--tailnet NAME] [--validity DUR]\n"
     "       trellis-control [--state DIR] ca init|rotate [--tailnet NAME] --import-cert PEM "
     "--import-key PEM\n"
     "       trellis-control [--state DIR] ca retire ID|KEYID [--tailnet NAME] [--force]\n"
     "       trellis-control [--state DIR] ca show [--tailnet NAME] [--all] [--json]\n"
     "       trellis-control [--state DIR] ca sign CSR|- [--tailnet NAME] [--validity DUR]\n"
     "       trellis-control [--state DIR] ca renew SERIAL [--tailnet NAME] [--validity DUR]\n"
     "       trellis-control [--state DIR] ca revoke SERIAL [--tailnet NAME]\n"
     "       trellis-control [--state DIR] ca list [--tailnet NAME] [--revoked] "
     "[--expiring DUR] [--json]\n"
     "       trellis-control [--state DIR] ca crl [--tailnet NAME] [--ca ID|KEYID]\n"
     "  Machine certificates (docs/identity.md). init makes the tailnet's CA (Ed25519,\n"
     "  valid 10 years; its key is STATE/ca/ID.key, mode 0600) and prints its\n"
     "  certificate; --import-cert/--import-key take an existing CA (Ed25519 or ECDSA\n"
     "  P-256). sign prints the certificate for a node's CSR (`trellis cert request`),\n"
     "  valid --validity (default 365d). revoke: the certificate is refused from now on,\n"
     "  and the node of its machine is expired (it must register again). Then:\n"
     "  tailnets set NAME --require-machine-cert on.\n"
     "  rotate: a new CA that signs from now on; the old one stays trusted until\n"
     "  retire (refused while a machine has a valid certificate of it and none of\n"
     "  another, unless --force, which expires their nodes). renew SERIAL: the same\n"
     "  certificate (key, machine, name) signed again by the CA that signs now; an\n"
     "  online node gets it pushed, others at their next registration (list --expiring\n"
     "  30d finds them; serve --machine-cert-auto-renew DUR renews by itself).\n"
     "  show --all: every CA (PEM; --json with id, key_id, retired_at). crl: the\n"
     "  CA's revocation list (X.509 CRL, PEM, valid 7 days).\n"
     "example: trellis-control ca sign node.csr > node.crt\n"},
    {"policy", "get, set, check, reset, explain, matrix",
     "usage: trellis-control [--state DIR] policy get [--tailnet NAME] [--json]\n"
     "       trellis-control [--state DIR] policy set FILE|- [--tailnet NAME]\n"
     "       trellis-control policy check FILE|-\n"
     "       trellis-control [--state DIR] policy reset [--tailnet NAME]\n"
     "       trellis-control [--state DIR] policy explain SRC DST [PORT] [--proto P]\n"
     "           [--tailnet NAME] [--json]\n"
     "       trellis-control [--state DIR] policy matrix [--tailnet NAME] [--json]\n"
     "FILE is HuJSON (docs/policy.md): acls, groups, tagOwners, hosts, tests. A tailnet\n"
     "without a policy lets every node reach every other; reset returns to that.\n"
     "set checks the policy in full (and runs its tests) before it replaces the one in\n"
     "force; every node gets its new peers and filter within a second. explain: SRC and\n"
     "DST are nodes (name, id, address) or identities (user, tag:NAME); it exits 1 when\n"
     "the traffic is denied.\n"
     "example: trellis-control policy explain alice-laptop build-1 22 --proto tcp\n"},
    {0},
};

static const struct noun *noun_find(const char *name)
{
	for (const struct noun *n = nouns; n->name; n++)
		if (strcmp(n->name, name) == 0)
			return n;
	return NULL;
}

static bool is_help(const char *a)
{
	return strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0 || strcmp(a, "help") == 0;
}

static void usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: trellis-control [--state DIR] [--offline] <command>\n"
	    "  serve [--config FILE] [--listen ADDR:PORT] [--tls-cert PEM --tls-key PEM]\n"
	    "        [--no-relay] [--stun-port N] [--metrics-listen ADDR:PORT]  (serve --help)\n"
	    "  version\n"
	    "  authkey create|list|revoke     auth keys for nodes\n"
	    "  apikey create|list|revoke      keys for the HTTP admin API\n"
	    "  tailnets list|create\n"
	    "  users list|create\n"
	    "  nodes list|show|pending|approve|rename|expire|delete|set-expiry\n"
	    "  relaymap set|get|reset\n"
	    "  audit log|verify|prune           the configuration audit log, all chains\n"
	    "  flows [--node N] [--flagged]     flow logs, both ends paired\n"
	    "  policy get|set|check|reset|explain|matrix\n"
	    "  ca init|show|sign|revoke|list      machine certificates\n"
	    "Each command has --help (trellis-control nodes --help). Admin commands reach the\n"
	    "running server through its admin socket (STATE/%s, root only); with no\n"
	    "server running they refuse unless given --offline, which works on the database.\n"
	    "Durations: 90s, 30m, 12h, 7d. State directory default: %s\n",
	    ADMIN_SOCKET_NAME, ADMIN_STATE_DIR_DEFAULT);
}

/* ---- argv ---- */

/* Options of one subcommand: flags and options with a value. */
struct opt {
	const char *name;
	bool has_arg;
	const char **val;
	bool *flag;
};

/* Splits argv into options and up to max_pos positional arguments. 0 or exit status. */
static int opts_parse(int argc, char **argv, const struct opt *opts, const char **pos,
		      int max_pos, int *ret_npos)
{
	int i, n = 0;

	for (i = 0; i < argc; i++) {
		const struct opt *o;
		const char *a = argv[i], *eq;
		size_t len;

		if (a[0] != '-' || a[1] != '-') {
			if (a[0] == '-' && a[1])
				return fail("unknown option %s (try --help)", a);
			if (n >= max_pos)
				return fail("unexpected argument \"%s\"", a);
			pos[n++] = a;
			continue;
		}
		eq = strchr(a, '=');
		len = eq ? (size_t)(eq - a) : strlen(a);
		for (o = opts; o && o->name; o++)
			if (strlen(o->name) == len && strncmp(o->name, a, len) == 0)
				break;
		if (!o || !o->name)
			return fail("unknown option %s (try --help)", a);
		if (!o->has_arg) {
			if (eq)
				return fail("option %s takes no value", o->name);
			*o->flag = true;
		} else if (eq) {
			*o->val = eq + 1;
		} else {
			if (i + 1 >= argc)
				return fail("option %s needs a value", o->name);
			*o->val = argv[++i];
		}
	}
	*ret_npos = n;
	return 0;
}

int admin_duration_parse(const char *s, int64_t *ret_sec)
{
	unsigned long long v;
	int64_t mult;
	char *end;

	if (strcmp(s, "0") == 0 || strcmp(s, "never") == 0) {
		*ret_sec = 0;
		return 0;
	}
	if (!isdigit((unsigned char)s[0]))
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s || end[0] == '\0' || end[1] != '\0')
		return -EINVAL;
	switch (end[0]) {
	case 's':
		mult = 1;
		break;
	case 'm':
		mult = 60;
		break;
	case 'h':
		mult = 3600;
		break;
	case 'd':
		mult = 86400;
		break;
	default:
		return -EINVAL;
	}
	/* A hundred years is plenty and keeps now + duration far from overflow. */
	if (v == 0 || v > (unsigned long long)(100LL * 365 * 86400) / (unsigned long long)mult)
		return -EINVAL;
	*ret_sec = (int64_t)v * mult;
	return 0;
}

static int duration_check(const char *s)
{
	int64_t v;

	if (s && admin_duration_parse(s, &v) < 0)
		return fail("bad duration \"%s\" (examples: 90s, 30m, 12h, 7d)", s);
	return 0;
}

static int tags_parse(const char *s, json_t *arr)
{
	unsigned n = 0;

	while (*s) {
		const char *c = strchr(s, ',');
		size_t l = c ? (size_t)(c - s) : strlen(s);
		char t[NETMAP_TAG_MAX];

		if (l >= sizeof(t))
			return fail("tag \"%.*s\" is too long", (int)l, s);
		memcpy(t, s, l);
		t[l] = '\0';
		if (!admin_op_tag_valid(t))
			return fail("bad tag \"%s\": tags look like tag:name", t);
		if (++n > NETMAP_MAX_TAGS)
			return fail("at most %d tags", NETMAP_MAX_TAGS);
		json_array_append_new(arr, json_string(t));
		s = c ? c + 1 : s + l;
	}
	return 0;
}

/* ---- the state directory and its lock ---- */

int admin_state_lock(const char *dir, bool create)
{
	char path[4096];
	int fd;

	if (create && mkdir(dir, 0700) < 0 && errno != EEXIST)
		return -errno;
	if ((size_t)snprintf(path, sizeof(path), "%s/serve.lock", dir) >= sizeof(path))
		return -ENAMETOOLONG;
	fd = open(path, O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0), 0600);
	if (fd < 0)
		return -errno;
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		int r = errno == EWOULDBLOCK ? -EBUSY : -errno;

		close(fd);
		return r;
	}
	return fd;
}

int admin_store_open(const char *state_dir, struct store **ret)
{
	char path[4096];
	int r;

	if (mkdir(state_dir, 0700) < 0 && errno != EEXIST) {
		r = -errno;
		fail("cannot create state directory %s: %s", state_dir, strerror(-r));
		return r;
	}
	if ((size_t)snprintf(path, sizeof(path), "%s/%s", state_dir, STORE_DB_NAME) >=
	    sizeof(path)) {
		fail("state directory path too long");
		return -ENAMETOOLONG;
	}
	r = store_open(path, ret);
	if (r < 0)
		fail("cannot open %s: %s", path,
		     r == -EPROTO ? "written by a newer trellis-control" : strerror(-r));
	return r;
}

/* ---- calls: to the server's socket, or in-process offline ---- */

/* What call() returns in the dry pass (argv checked, nothing sent). */
#define DRY_STOP 99

struct cli {
	const char *state_dir;
	bool offline;
	bool dry;           /* the first pass: stop at the call */
	const char *what;   /* names the input a refusal is about (relaymap set FILE) */
	int lock_fd;        /* offline: serve.lock, held until exit */
	struct store *store; /* offline */
	char actor[96];
};

static bool file_exists(const char *dir, const char *name)
{
	char path[4096];
	struct stat st;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	return stat(path, &st) == 0;
}

/* Decides where requests go (see the top of this file). 0 or exit status. */
static int cli_connect(struct cli *cli)
{
	const char *dir = cli->state_dir;
	struct stat st;
	int fd;

	if (stat(dir, &st) < 0 && !cli->offline)
		return fail("%s: %s: not a trellis-control state directory (mistyped --state?)",
			    dir, strerror(errno));
	if (stat(dir, &st) == 0 && !S_ISDIR(st.st_mode))
		return fail("%s is not a directory", dir);
	fd = admin_state_lock(dir, cli->offline);
	if (fd == -EBUSY) {
		if (cli->offline)
			return fail("a trellis-control serves %s: drop --offline (admin commands "
				    "go through its admin socket)", dir);
		return 0; /* the server is up: its socket */
	}
	if (!cli->offline) {
		if (fd >= 0)
			close(fd);
		if (!file_exists(dir, STORE_DB_NAME))
			return fail("%s is not a trellis-control state directory (no %s; mistyped "
				    "--state?)", dir, STORE_DB_NAME);
		return fail("no trellis-control serves %s; start it (admin commands go through "
			    "its admin socket), or give --offline to change the database directly",
			    dir);
	}
	if (fd < 0)
		return fail("cannot lock %s/serve.lock: %s", dir, strerror(-fd));
	cli->lock_fd = fd;
	return admin_store_open(dir, &cli->store) < 0 ? 1 : 0;
}

static int write_all(int fd, const char *p, size_t len)
{
	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -errno;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* One HTTP request on the admin socket; the answer's status and body (malloc'd). */
static int socket_call(struct cli *cli, const char *method, const char *target, const char *body,
		       size_t body_len, unsigned *ret_status, char **ret_body, size_t *ret_len)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	struct timeval tv = { .tv_sec = SOCKET_TIMEOUT_S };
	struct http_response resp;
	char head[2048], *buf = NULL;
	size_t len = 0, cap = 0;
	int fd, n, r;

	if ((size_t)snprintf(sun.sun_path, sizeof(sun.sun_path), "%s/%s", cli->state_dir,
			     ADMIN_SOCKET_NAME) >= sizeof(sun.sun_path))
		return fail("the admin socket's path is too long: give a shorter --state");
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return fail("socket: %s", strerror(errno));
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	/*
	 * A server that holds the lock but has no socket yet is starting (opening
	 * its store): wait for the socket while the lock says it runs, a while.
	 */
	for (int tries = 0;; tries++) {
		int lk;

		if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0)
			break;
		if ((errno != ENOENT && errno != ECONNREFUSED) || tries >= CONNECT_TRIES) {
			r = fail("trellis-control serves %s but its admin socket %s: %s",
				 cli->state_dir, sun.sun_path, strerror(errno));
			goto out;
		}
		lk = admin_state_lock(cli->state_dir, false);
		if (lk != -EBUSY) {
			if (lk >= 0)
				close(lk);
			r = fail("trellis-control stopped serving %s", cli->state_dir);
			goto out;
		}
		usleep(CONNECT_RETRY_US);
	}
	n = http_request_build(head, sizeof(head), method, target, "localhost",
			       "Content-Type: application/json\r\n", body_len);
	if (n < 0 || write_all(fd, head, (size_t)n) < 0 ||
	    (body_len && write_all(fd, body, body_len) < 0)) {
		r = fail("admin socket: cannot send the request: %s", strerror(errno));
		goto out;
	}
	for (;;) {
		ssize_t got;

		if (len + 4096 > cap) {
			char *nb;

			cap = cap ? cap * 2 : 16384;
			nb = cap <= ANSWER_MAX ? realloc(buf, cap + 1) : NULL;
			if (!nb) {
				r = fail("admin socket: answer too large");
				goto out;
			}
			buf = nb;
		}
		got = recv(fd, buf + len, cap - len, 0);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0) {
			r = fail("admin socket: %s", errno == EAGAIN ? "no answer in 30 s"
								     : strerror(errno));
			goto out;
		}
		if (got == 0)
			break;
		len += (size_t)got;
	}
	if (http_response_parse(&resp, buf, len) < 0 ||
	    (resp.has_content_length && resp.content_length != len - resp.head_len)) {
		r = fail("admin socket: malformed answer");
		goto out;
	}
	*ret_status = resp.status;
	*ret_len = len - resp.head_len;
	memmove(buf, buf + resp.head_len, *ret_len);
	buf[*ret_len] = '\0';
	*ret_body = buf;
	buf = NULL;
	r = 0;
out:
	free(buf);
	close(fd);
	return r;
}

/*
 * Runs a request; on a 2xx answer, its JSON in *ret (may be NULL: not wanted).
 * On a refusal: its error printed. 0 or exit status.
 */
static int call(struct cli *cli, const char *method, const char *target, const char *body,
		size_t body_len, json_t **ret)
{
	char *answer = NULL;
	size_t len = 0;
	unsigned status;
	json_t *j;
	int r;

	if (cli->dry)
		return DRY_STOP;
	if (cli->store) {
		struct admin_api_env env = {.store = cli->store, .state_dir = cli->state_dir};
		struct admin_api_request req = {
			.method = method,
			.target = target,
			.body = body,
			.body_len = body_len,
			.actor = cli->actor,
			.apikeys = true,
			.now = time_wall_s(),
		};

		status = admin_api_handle(&env, &req, &answer, &len);
	} else {
		r = socket_call(cli, method, target, body, body_len, &status, &answer, &len);
		if (r)
			return r;
	}
	j = json_loadb(answer, len, 0, NULL);
	if (answer && len)
		crypto_wipe(answer, len); /* it may hold a new key */
	free(answer);
	if (status < 200 || status >= 300) {
		const char *e = json_string_value(json_object_get(j, "error"));

		r = e ? fail("%s%s%s", cli->what ? cli->what : "", cli->what ? ": " : "", e)
		      : fail("the server answered %u", status);
		json_decref(j);
		return r;
	}
	if (!j)
		return fail("the server's answer is not JSON");
	if (ret)
		*ret = j;
	else
		json_decref(j);
	return 0;
}

/* call with a JSON object body (consumed). */
static int call_json(struct cli *cli, const char *method, const char *target, json_t *body,
		     json_t **ret)
{
	char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
	int r;

	json_decref(body);
	if (body && !text)
		return fail("out of memory");
	r = call(cli, method, target, text, text ? strlen(text) : 0, ret);
	free(text);
	return r;
}

/* "/admin/v1/nodes" + "?tailnet=NAME"; names hold no characters that need escaping. */
static const char *target_make(char *buf, size_t len, const char *path, const char *arg,
			       const char *tailnet)
{
	snprintf(buf, len, "%s%s%s%s%s%s", ADMIN_API_PREFIX, path, arg ? "/" : "", arg ? arg : "",
		 tailnet ? "?tailnet=" : "", tailnet ? tailnet : "");
	return buf;
}

/* An argument that goes into a path: what names, ids and codes hold, nothing else. */
static int path_arg_check(const char *what)
{
	for (const char *p = what; *p; p++)
		if (!isalnum((unsigned char)*p) && !strchr("-._@:", *p))
			return fail("bad name \"%s\"", what);
	return what[0] ? 0 : fail("empty name");
}

/* ---- printing ---- */

static void json_print(json_t *j)
{
	char *s = json_dumps(j, JSON_INDENT(2));

	if (s)
		printf("%s\n", s);
	free(s);
	json_decref(j);
}

/* One JSON object a line (--json of the logs: fit for a SIEM); j stays the caller's. */
static void json_line_print(json_t *j)
{
	char *line = json_dumps(j, JSON_COMPACT);

	if (line)
		printf("%s\n", line);
	free(line);
}

static void time_format(char *buf, size_t len, json_int_t t)
{
	struct tm tm;
	time_t tt = (time_t)t;

	if (!t) {
		snprintf(buf, len, "-");
		return;
	}
	gmtime_r(&tt, &tm);
	strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static const char *s_(json_t *o, const char *k)
{
	const char *v = json_string_value(json_object_get(o, k));

	return v && v[0] ? v : "-";
}

static json_int_t i_(json_t *o, const char *k)
{
	return json_integer_value(json_object_get(o, k));
}

static const char *b_(json_t *o, const char *k)
{
	return json_is_true(json_object_get(o, k)) ? "yes" : "no";
}

static void tags_text(char *buf, size_t len, json_t *tags)
{
	size_t off = 0, i;
	json_t *t;

	snprintf(buf, len, "-");
	json_array_foreach(tags, i, t)
		off += (size_t)snprintf(buf + off, off < len ? len - off : 0, "%s%s", i ? "," : "",
					json_string_value(t));
}

/* ---- commands ---- */

/*
 * GET a listing, with query parameters beside ?tailnet= ("a=1&b=2"; NULL or "": none); with
 * --json it is printed here and *ret is NULL. 0 or exit status.
 */
static int list_fetch_query(struct cli *cli, const char *noun, const char *arg, const char *tailnet,
			    const char *query, bool as_json, json_t **ret)
{
	char target[512];
	size_t n;
	int r;

	*ret = NULL;
	if (tailnet && path_arg_check(tailnet))
		return 1;
	target_make(target, sizeof(target), noun, arg, tailnet);
	n = strlen(target);
	if (query && query[0] &&
	    (size_t)snprintf(target + n, sizeof(target) - n, "%c%s", tailnet ? '&' : '?', query) >=
		sizeof(target) - n)
		return fail("request target too long");
	r = call(cli, "GET", target, NULL, 0, ret);
	if (r == 0 && as_json) {
		json_print(*ret);
		*ret = NULL;
	}
	return r;
}

/* The same without parameters. */
static int list_fetch(struct cli *cli, const char *noun, const char *arg, const char *tailnet,
		      bool as_json, json_t **ret)
{
	return list_fetch_query(cli, noun, arg, tailnet, NULL, as_json, ret);
}

/* POST a new key (auth or API) and print only the key: scripts capture it. */
static int key_create(struct cli *cli, const char *noun, json_t *body)
{
	char target[512];
	json_t *ans;
	int r;

	r = call_json(cli, "POST", target_make(target, sizeof(target), noun, NULL, NULL), body,
		      &ans);
	if (r)
		return r;
	printf("%s\n", s_(ans, "key"));
	json_decref(ans);
	return 0;
}

/* `NOUN revoke ID`. */
static int key_revoke(struct cli *cli, const char *noun, const char *usage_line, int argc,
		      char **argv)
{
	char target[512], path[256];
	const char *pos[1];
	int npos;

	if (opts_parse(argc, argv, NULL, pos, 1, &npos))
		return 1;
	if (npos != 1)
		return fail("usage: %s", usage_line);
	if (path_arg_check(pos[0]))
		return 1;
	snprintf(path, sizeof(path), "%s/revoke", pos[0]);
	return call(cli, "POST", target_make(target, sizeof(target), noun, path, NULL), NULL, 0,
		    NULL);
}

static int authkey_cmd(struct cli *cli, const char *sub, int argc, char **argv)
{
	const char *tailnet = NULL, *user = NULL, *tags = NULL, *expiry = NULL, *exp2 = NULL,
		   *pos[1];
	bool reusable = false, ephemeral = false, preauth = false, as_json = false;
	const struct opt create_opts[] = {
		{ "--tailnet", true, &tailnet, NULL },
		{ "--user", true, &user, NULL },
		{ "--reusable", false, NULL, &reusable },
		{ "--ephemeral", false, NULL, &ephemeral },
		{ "--preauthorized", false, NULL, &preauth },
		{ "--tags", true, &tags, NULL },
		{ "--expiration", true, &expiry, NULL },
		{ "--expiry", true, &exp2, NULL },
		{ NULL },
	};
	const struct opt list_opts[] = {
		{ "--tailnet", true, &tailnet, NULL },
		{ "--json", false, NULL, &as_json },
		{ NULL },
	};
	json_t *body, *arr, *ans, *k;
	size_t i;
	int npos, r;

	if (strcmp(sub, "create") == 0) {
		if (opts_parse(argc, argv, create_opts, pos, 0, &npos))
			return 1;
		expiry = expiry ? expiry : exp2;
		if (duration_check(expiry))
			return 1;
		arr = json_array();
		if (tags && tags_parse(tags, arr)) {
			json_decref(arr);
			return 1;
		}
		body = json_pack("{s:b, s:b, s:b, s:o}", "reusable", reusable, "ephemeral",
				 ephemeral, "preauthorized", preauth, "tags", arr);
		if (tailnet)
			json_object_set_new(body, "tailnet", json_string(tailnet));
		if (user)
			json_object_set_new(body, "user", json_string(user));
		if (expiry)
			json_object_set_new(body, "expiration", json_string(expiry));
		return key_create(cli, "authkeys", body);
	}
	if (strcmp(sub, "revoke") == 0)
		return key_revoke(cli, "authkeys", "authkey revoke ID", argc, argv);
	if (opts_parse(argc, argv, list_opts, pos, 0, &npos))
		return 1;
	r = list_fetch(cli, "authkeys", NULL, tailnet, as_json, &ans);
	if (r || !ans)
		return r;
	printf("%-26s %-14s %-16s %-8s %-9s %-7s %-5s %-20s %-8s %s\n", "ID", "TAILNET", "USER",
	       "REUSABLE", "EPHEMERAL", "PREAUTH", "USES", "EXPIRES", "STATUS", "TAGS");
	json_array_foreach(ans, i, k) {
		char exp[32], tg[NETMAP_MAX_TAGS * NETMAP_TAG_MAX];

		time_format(exp, sizeof(exp), i_(k, "expires"));
		tags_text(tg, sizeof(tg), json_object_get(k, "tags"));
		printf("%-26s %-14s %-16s %-8s %-9s %-7s %-5" JSON_INTEGER_FORMAT
		       " %-20s %-8s %s\n",
		       s_(k, "id"), s_(k, "tailnet"), s_(k, "user"), b_(k, "reusable"),
		       b_(k, "ephemeral"), b_(k, "preauthorized"), i_(k, "uses"), exp,
		       s_(k, "status"), tg);
	}
	json_decref(ans);
	return 0;
}

static int apikey_cmd(struct cli *cli, const char *sub, int argc, char **argv)
{
	const char *name = NULL, *expiry = NULL, *pos[1];
	bool as_json = false;
	const struct opt create_opts[] = {
		{ "--name", true, &name, NULL },
		{ "--expiration", true, &expiry, NULL },
		{ NULL },
	};
	const struct opt list_opts[] = { { "--json", false, NULL, &as_json }, { NULL } };
	json_t *ans, *k, *body;
	size_t i;
	int npos, r;

	if (strcmp(sub, "create") == 0) {
		if (opts_parse(argc, argv, create_opts, pos, 0, &npos) || duration_check(expiry))
			return 1;
		body = json_object();
		if (name)
			json_object_set_new(body, "name", json_string(name));
		if (expiry)
			json_object_set_new(body, "expiration", json_string(expiry));
		return key_create(cli, "apikeys", body);
	}
	if (strcmp(sub, "revoke") == 0)
		return key_revoke(cli, "apikeys", "apikey revoke ID", argc, argv);
	if (opts_parse(argc, argv, list_opts, pos, 0, &npos))
		return 1;
	r = list_fetch(cli, "apikeys", NULL, NULL, as_json, &ans);
	if (r || !ans)
		return r;
	printf("%-26s %-20s %-20s %-20s %s\n", "ID", "NAME", "CREATED", "EXPIRES", "STATUS");
	json_array_foreach(ans, i, k) {
		char cr[32], exp[32];

		time_format(cr, sizeof(cr), i_(k, "created"));
		time_format(exp, sizeof(exp), i_(k, "expires"));
		printf("%-26s %-20s %-20s %-20s %s\n", s_(k, "id"), s_(k, "name"), cr, exp,
		       s_(k, "status"));
	}
	json_decref(ans);
	return 0;
}

/*
 * A tailnet setting's switch (tailnets set NAME --SETTING=VALUE): on or off, or true or false
 * as the issue writes them. 0 with *ret set, or 1 (said why).
 */
static int switch_parse(const char *opt, const char *v, bool *ret)
{
	if (!v)
		return 0;
	if (!strcmp(v, "on") || !strcmp(v, "true"))
		*ret = true;
	else if (!strcmp(v, "off") || !strcmp(v, "false"))
		*ret = false;
	else
		return fail("%s takes on or off, not \"%s\"", opt, v);
	return 0;
}

static int tailnets_cmd(struct cli *cli, const char *sub, int argc, char **argv)
{
	const char *key_expiry = NULL, *eph = NULL, *approval = NULL, *mfa = NULL, *mcert = NULL,
		   *flog = NULL, *flog_iv = NULL, *fret = NULL, *pos[1];
	bool as_json = false;
	const struct opt opts[] = {
	    {"--key-expiry", true, &key_expiry, NULL},
	    {"--ephemeral-timeout", true, &eph, NULL},
	    {"--device-approval", true, &approval, NULL},
	    {"--require-2fa", true, &mfa, NULL},
	    {"--require-machine-cert", true, &mcert, NULL},
	    {"--flow-log", true, &flog, NULL},
	    {"--flow-log-interval", true, &flog_iv, NULL},
	    {"--flow-retention", true, &fret, NULL},
	    {"--json", false, NULL, &as_json},
	    {NULL},
	};
	char target[512];
	json_t *ans, *t, *body;
	bool approval_on = false, mfa_on = false, mcert_on = false, flog_on = false;
	int64_t v;
	size_t i;
	int npos, r;

	if (opts_parse(argc, argv, opts, pos, 1, &npos))
		return 1;
	if (strcmp(sub, "create") == 0 || strcmp(sub, "set") == 0) {
		bool create = strcmp(sub, "create") == 0;

		if (npos != 1)
			return fail("usage: tailnets %s NAME [--key-expiry DUR] "
				    "[--ephemeral-timeout DUR] [--device-approval on|off]",
				    sub);
		if (duration_check(key_expiry))
			return 1;
		if (eph && (admin_duration_parse(eph, &v) < 0 || v == 0))
			return fail("bad duration \"%s\" (examples: 90s, 30m, 12h, 7d)", eph);
		if (switch_parse("--device-approval", approval, &approval_on) ||
		    switch_parse("--require-2fa", mfa, &mfa_on) ||
		    switch_parse("--require-machine-cert", mcert, &mcert_on) ||
		    switch_parse("--flow-log", flog, &flog_on))
			return 1;
		if (flog_iv && (admin_duration_parse(flog_iv, &v) < 0 || v < 1 || v > 3600))
			return fail("--flow-log-interval: bad duration \"%s\" (1s to 1h: 2s, 30s, 5m)",
				    flog_iv);
		if (fret && admin_duration_parse(fret, &v) < 0)
			return fail("--flow-retention: bad duration \"%s\" (30d, 12h; 0: forever)",
				    fret);
		if (path_arg_check(pos[0]))
			return 1;
		if (!create && !key_expiry && !eph && !approval && !mfa && !mcert && !flog &&
		    !flog_iv && !fret)
			return fail("nothing to change (--key-expiry, --ephemeral-timeout, "
				    "--device-approval, --require-2fa, --require-machine-cert, "
				    "--flow-log, --flow-log-interval, --flow-retention)");
		if (create && (mfa || mcert || flog || flog_iv || fret))
			return fail("%s: create the tailnet, then tailnets set",
				    mfa	    ? "--require-2fa"
				    : mcert ? "--require-machine-cert"
				    : flog  ? "--flow-log"
				    : fret  ? "--flow-retention"
					    : "--flow-log-interval");
		body = create ? json_pack("{s:s}", "name", pos[0]) : json_object();
		if (key_expiry)
			json_object_set_new(body, "key_expiry", json_string(key_expiry));
		if (eph)
			json_object_set_new(body, "ephemeral_timeout", json_string(eph));
		if (approval)
			json_object_set_new(body, "device_approval", json_boolean(approval_on));
		if (mfa)
			json_object_set_new(body, "require_2fa", json_boolean(mfa_on));
		if (mcert)
			json_object_set_new(body, "require_machine_cert", json_boolean(mcert_on));
		if (flog)
			json_object_set_new(body, "flow_log", json_boolean(flog_on));
		if (flog_iv)
			json_object_set_new(body, "flow_log_interval", json_string(flog_iv));
		if (fret)
			json_object_set_new(body, "flow_retention", json_string(fret));
		target_make(target, sizeof(target), "tailnets", create ? NULL : pos[0], NULL);
		return call_json(cli, create ? "POST" : "PATCH", target, body, NULL);
	}
	target_make(target, sizeof(target), "tailnets", NULL, NULL);
	if (npos || key_expiry || eph || approval || mfa || mcert || flog || flog_iv || fret)
		return fail("usage: tailnets list [--json]");
	r = list_fetch(cli, "tailnets", NULL, NULL, as_json, &ans);
	if (r || !ans)
		return r;
	printf("%-5s %-24s %-12s %-18s %-16s %-12s %-13s %-10s %s\n", "ID", "NAME", "KEY-EXPIRY",
	       "EPHEMERAL-TIMEOUT", "DEVICE-APPROVAL", "REQUIRE-2FA", "MACHINE-CERT", "FLOW-LOG",
	       "NODES");
	json_array_foreach(ans, i, t) {
		char flow[32];

		/* "on/5s": the interval stays set while flow logs are off */
		snprintf(flow, sizeof(flow), "%s/%" JSON_INTEGER_FORMAT "s",
			 json_is_true(json_object_get(t, "flow_log")) ? "on" : "off",
			 i_(t, "flow_log_interval_ms") / 1000);
		printf("%-5" JSON_INTEGER_FORMAT " %-24s %-12" JSON_INTEGER_FORMAT
		       " %-18" JSON_INTEGER_FORMAT " %-16s %-12s %-13s %-10s %" JSON_INTEGER_FORMAT
		       "\n",
		       i_(t, "id"), s_(t, "name"), i_(t, "key_expiry_sec"),
		       i_(t, "ephemeral_timeout_sec"), b_(t, "device_approval"),
		       b_(t, "require_2fa"), b_(t, "require_machine_cert"), flow, i_(t, "nodes"));
	}
	json_decref(ans);
	return 0;
}

/*
 * `users add --totp`: the second factor the server enrolled, for the person to scan now
 * (shown once: the server keeps the recovery codes hashed only).
 */
static int enrolment_print(json_t *ans)
{
	const char *uri = s_(ans, "otpauth_uri"), *secret = s_(ans, "totp_secret");
	json_t *codes = json_object_get(ans, "recovery_codes"), *c;
	size_t i;

	if (!uri[0] || !secret[0] || !json_is_array(codes))
		return fail("the server did not enrol a second factor");
	printf("\nSecond factor (TOTP): scan this code with an authenticator app, or enter the "
	       "secret.\n\n");
	if (users_cli_qr_print(stdout, uri, isatty(1)) < 0)
		printf("(the QR code does not fit: enter the secret)\n");
	printf("\n%s\nsecret: %s\n\nRecovery codes (each signs in once; they are not shown "
	       "again):\n",
	       uri, secret);
	json_array_foreach(codes, i, c)
		printf("  %s\n", json_string_value(c) ? json_string_value(c) : "?");
	return 0;
}

#define CONFIRM_TRIES 3

static int totp_confirm(struct cli *cli, const char *email, const char *code)
{
	char target[512];

	target_make(target, sizeof(target), "accounts", email, NULL);
	snprintf(target + strlen(target), sizeof(target) - strlen(target), "/confirm-2fa");
	return call_json(cli, "POST", target, json_pack("{s:s}", "code", code), NULL);
}

/*
 * After `users add --totp`: the factor counts once the app proves it holds the secret (as the
 * web enrolment asks). On a terminal, a code now; a wrong one is refused and asked again.
 * 0 (confirmed, or left pending by choice or without a terminal), 1 (only wrong codes).
 */
static int totp_confirm_ask(struct cli *cli, const char *email)
{
	char code[USERS_CLI_CODE_MAX];
	int wrong = 0, n;

	for (int i = 0; isatty(0) && i < CONFIRM_TRIES; i++) {
		n = users_cli_code_read(stdin, stderr, email, code);
		if (n == -EINVAL) {
			fail("that is not a code from the app");
			wrong++;
			continue;
		}
		if (n <= 0)
			break;
		if (totp_confirm(cli, email, code) == 0) {
			printf("\nThe second factor of %s is confirmed.\n", email);
			return 0;
		}
		wrong++;
	}
	printf("\nThe second factor is pending: it counts once a code from the app confirms it, "
	       "with\n  trellis-control users confirm-2fa %s\nor at the first sign-in.\n",
	       email);
	return wrong ? 1 : 0;
}

/* users confirm-2fa EMAIL: a code from the terminal or one line of stdin. */
static int confirm_cmd(struct cli *cli, int argc, char **argv)
{
	char code[USERS_CLI_CODE_MAX] = "0";
	const char *pos[1];
	int npos, n;

	if (opts_parse(argc, argv, (const struct opt[]){{NULL}}, pos, 1, &npos))
		return 1;
	if (npos != 1)
		return fail("usage: users confirm-2fa EMAIL");
	if (path_arg_check(pos[0]) < 0 || !strchr(pos[0], '@'))
		return fail("not an email address: \"%s\"", pos[0]);
	if (!cli->dry) {
		n = users_cli_code_read(stdin, isatty(0) ? stderr : NULL, pos[0], code);
		if (n <= 0)
			return fail(n == -EINVAL ? "that is not a code from the app"
						 : "no code given (on stdin or a terminal)");
	}
	n = totp_confirm(cli, pos[0], code);
	if (n == 0 && !cli->dry)
		printf("%s: second factor confirmed\n", pos[0]);
	return n;
}

/* users add|passwd|delete|reset-2fa EMAIL: local accounts (users.h). */
static int account_cmd(struct cli *cli, const char *sub, int argc, char **argv)
{
	const char *pos[1];
	bool admin = false, totp = false;
	const struct opt opts[] = {
		{ "--totp", false, NULL, &totp },
		{ "--admin", false, NULL, &admin },
		{ NULL },
	};
	bool add = strcmp(sub, "add") == 0, pw = add || strcmp(sub, "passwd") == 0;
	char target[512], hash[PASSWORD_HASH_MAX] = "";
	json_t *body = NULL, *ans = NULL;
	int npos, r;

	if (opts_parse(argc, argv, add ? opts : opts + 2, pos, 1, &npos))
		return 1;
	if (npos != 1)
		return fail("usage: users %s EMAIL%s", sub, add ? " [--admin] [--totp]" : "");
	if (path_arg_check(pos[0]) < 0 || !strchr(pos[0], '@'))
		return fail("not an email address: \"%s\"", pos[0]);
	/* The password is read and hashed once, on the pass that calls the server. */
	if (pw && !cli->dry && users_cli_password_hash(pos[0], hash) < 0)
		return 1;
	if (add) {
		body = json_pack("{s:s, s:s, s:b}", "email", pos[0], "password_hash", hash, "admin",
				 admin);
		if (totp)
			json_object_set_new(body, "totp", json_true());
		target_make(target, sizeof(target), "accounts", NULL, NULL);
	} else {
		target_make(target, sizeof(target), "accounts", pos[0], NULL);
		snprintf(target + strlen(target), sizeof(target) - strlen(target), "/%s", sub);
		if (pw)
			body = json_pack("{s:s}", "password_hash", hash);
	}
	r = call_json(cli, "POST", target, body, totp ? &ans : NULL);
	if (r == 0 && !cli->dry)
		printf("%s: %s\n", pos[0],
		       add ? "local account added" : pw ? "password changed"
		       : strcmp(sub, "delete") == 0 ? "local account deleted"
						     : "second factor reset");
	if (r == 0 && !cli->dry && totp)
		r = enrolment_print(ans);
	if (r == 0 && !cli->dry && totp)
		r = totp_confirm_ask(cli, pos[0]);
	json_decref(ans);
	return r;
}

static int users_cmd(struct cli *cli, const char *sub, int argc, char **argv)
{
	const char *tailnet = NULL, *pos[1];
	bool as_json = false;
	const struct opt opts[] = {
		{ "--tailnet", true, &tailnet, NULL },
		{ "--json", false, NULL, &as_json },
		{ NULL },
	};
	char target[512];
	json_t *ans, *u, *body;
	size_t i;
	int npos, r;

	if (strcmp(sub, "add") == 0 || strcmp(sub, "passwd") == 0 || strcmp(sub, "delete") == 0 ||
	    strcmp(sub, "reset-2fa") == 0)
		return account_cmd(cli, sub, argc, argv);
	if (strcmp(sub, "confirm-2fa") == 0)
		return confirm_cmd(cli, argc, argv);
	if (opts_parse(argc, argv, opts, pos, 1, &npos))
		return 1;
	if (strcmp(sub, "create") == 0) {
		if (npos != 1)
			return fail("usage: users create NAME [--tailnet NAME]");
		body = json_pack("{s:s}", "name", pos[0]);
		if (tailnet)
			json_object_set_new(body, "tailnet", json_string(tailnet));
		return call_json(cli, "POST",
				 target_make(target, sizeof(target), "users", NULL, NULL), body,
				 NULL);
	}
	if (npos)
		return fail("usage: users list [--tailnet NAME] [--json]");
	r = list_fetch(cli, "users", NULL, tailnet, as_json, &ans);
	if (r || !ans)
		return r;
	printf("%-5s %-32s %s\n", "ID", "NAME", "TAILNET");
	json_array_foreach(ans, i, u)
		printf("%-5" JSON_INTEGER_FORMAT " %-32s %s\n", i_(u, "id"), s_(u, "name"),
		       s_(u, "tailnet"));
	json_decref(ans);
	/* Local accounts, which have no tailnet before their first login. */
	r = list_fetch(cli, "accounts", NULL, NULL, false, &ans);
	if (r || !ans || !json_array_size(ans)) {
		json_decref(ans);
		return r;
	}
	printf("\n%-5s %-40s %-6s %-7s %s\n", "ID", "LOCAL ACCOUNT", "ADMIN", "2FA", "RECOVERY");
	json_array_foreach(ans, i, u)
		printf("%-5" JSON_INTEGER_FORMAT " %-40s %-6s %-7s %" JSON_INTEGER_FORMAT "\n",
		       i_(u, "id"), s_(u, "email"), b_(u, "admin"),
		       json_is_true(json_object_get(u, "totp_pending")) ? "pending" : b_(u, "totp"),
		       i_(u, "recovery_codes"));
	json_decref(ans);
	return 0;
}

static void node_row(json_t *n)
{
	char exp[32], seen[32];
	json_t *online = json_object_get(n, "online");

	if (json_is_true(json_object_get(n, "expiry_disabled")))
		snprintf(exp, sizeof(exp), "disabled");
	else
		time_format(exp, sizeof(exp), i_(n, "key_expiry"));
	time_format(seen, sizeof(seen), i_(n, "last_seen"));
	printf("%-5" JSON_INTEGER_FORMAT " %-20s %-12s %-15s %-26s %-8s %-8s %-7s %-20s %s\n",
	       i_(n, "id"), s_(n, "name"), s_(n, "tailnet"), s_(n, "ipv4"), s_(n, "ipv6"),
	       s_(n, "os"), s_(n, "state"),
	       !online ? "-" : json_is_true(online) ? "yes" : "no", exp, seen);
}

static int nodes_cmd(struct cli *cli, const char *sub, int argc, char **argv)
{
	const char *tailnet = NULL, *pos[2];
	bool as_json = false;
	const struct opt opts[] = {
		{ "--tailnet", true, &tailnet, NULL },
		{ "--json", false, NULL, &as_json },
		{ NULL },
	};
	const struct opt act_opts[] = {
		{ "--tailnet", true, &tailnet, NULL },
		{ NULL },
	};
	char target[512], path[256];
	json_t *ans, *n, *body = NULL;
	size_t i;
	int npos, want, r;

	if (strcmp(sub, "list") == 0 || strcmp(sub, "show") == 0) {
		want = strcmp(sub, "show") == 0;
		if (opts_parse(argc, argv, opts, pos, want, &npos))
			return 1;
		if (npos != want)
			return fail("usage: nodes show ID|NAME [--tailnet NAME] [--json]");
		if (want && path_arg_check(pos[0]))
			return 1;
		r = list_fetch(cli, "nodes", want ? pos[0] : NULL, tailnet, as_json, &ans);
		if (r || !ans)
			return r;
		printf("%-5s %-20s %-12s %-15s %-26s %-8s %-8s %-7s %-20s %s\n", "ID", "NAME",
		       "TAILNET", "IPV4", "IPV6", "OS", "STATE", "ONLINE", "KEY-EXPIRY",
		       "LAST-SEEN");
		if (want) {
			node_row(ans);
			printf("node key:  %s\naudit key: %s\n", s_(ans, "node_key"),
			       json_is_string(json_object_get(ans, "audit_key"))
				   ? s_(ans, "audit_key")
				   : "(none: flow logs of this node cannot be verified)");
		}
		json_array_foreach(ans, i, n)
			node_row(n);
		json_decref(ans);
		return 0;
	}
	if (strcmp(sub, "pending") == 0) {
		if (opts_parse(argc, argv, opts, pos, 0, &npos))
			return 1;
		r = list_fetch(cli, "pending", NULL, tailnet, as_json, &ans);
		if (r || !ans)
			return r;
		printf("%-16s %-12s %-20s %-8s %-20s %s\n", "CODE", "TAILNET", "HOSTNAME", "OS",
		       "EXPIRES", "MACHINE-KEY");
		json_array_foreach(ans, i, n) {
			char exp[32];

			time_format(exp, sizeof(exp), i_(n, "expires"));
			printf("%-16s %-12s %-20s %-8s %-20s %s\n", s_(n, "code"), s_(n, "tailnet"),
			       s_(n, "hostname"), s_(n, "os"), exp, s_(n, "machine_key"));
		}
		json_decref(ans);
		return 0;
	}
	if (strcmp(sub, "approve") && strcmp(sub, "rename") && strcmp(sub, "expire") &&
	    strcmp(sub, "delete") && strcmp(sub, "set-expiry"))
		return fail("unknown command \"%s\" (list, show, pending, approve, rename, expire, "
			    "delete, set-expiry)", sub);
	if (opts_parse(argc, argv, act_opts, pos, 2, &npos))
		return 1;
	want = strcmp(sub, "rename") == 0 || strcmp(sub, "set-expiry") == 0 ? 2 : 1;
	if (npos != want) {
		if (strcmp(sub, "rename") == 0)
			return fail("usage: nodes rename ID NAME");
		if (strcmp(sub, "set-expiry") == 0)
			return fail("usage: nodes set-expiry ID on|off");
		return fail("usage: nodes %s ID", sub);
	}
	if (strcmp(sub, "set-expiry") == 0 && strcmp(pos[1], "on") && strcmp(pos[1], "off"))
		return fail("expected on or off, not \"%s\"", pos[1]);
	if (path_arg_check(pos[0]) || (tailnet && path_arg_check(tailnet)))
		return 1;
	if (strcmp(sub, "rename") == 0)
		body = json_pack("{s:s}", "name", pos[1]);
	else if (strcmp(sub, "set-expiry") == 0)
		body = json_pack("{s:b}", "enabled", strcmp(pos[1], "on") == 0);
	snprintf(path, sizeof(path), "%s/%s", pos[0],
		 strcmp(sub, "set-expiry") == 0 ? "expiry" : sub);
	return call_json(cli, "POST", target_make(target, sizeof(target), "nodes", path, tailnet),
			 body, NULL);
}

/* The whole file (or stdin for "-"), capped: a relay map is small. */
static int file_read_max(const char *path, size_t max, char **ret, size_t *ret_len)
{
	FILE *f = strcmp(path, "-") ? fopen(path, "r") : stdin;
	size_t cap = max + 1, n;
	char *buf;

	if (!f)
		return fail("cannot open %s: %s", path, strerror(errno));
	buf = malloc(cap);
	if (!buf) {
		if (f != stdin)
			fclose(f);
		return fail("out of memory");
	}
	n = fread(buf, 1, cap, f);
	if (ferror(f)) {
		free(buf);
		if (f != stdin)
			fclose(f);
		return fail("cannot read %s", path);
	}
	if (f != stdin)
		fclose(f);
	if (n == cap) {
		free(buf);
		return fail("%s: larger than %zu bytes", path, max);
	}
	*ret = buf;
	*ret_len = n;
	return 0;
}

static int file_read(const char *path, char **ret, size_t *ret_len)
{
	return file_read_max(path, RELAYMAP_TEXT_MAX, ret, ret_len);
}

static int relaymap_cmd(struct cli *cli, const char *sub, int argc, char **argv)
{
	bool as_json = false;
	const struct opt opts[] = { { "--json", false, NULL, &as_json }, { 0 } };
	const char *pos[1];
	char target[512], *text = NULL;
	json_t *ans, *map, *g, *n;
	size_t len, i, j;
	int npos, r;

	target_make(target, sizeof(target), "relaymap", NULL, NULL);
	if (strcmp(sub, "set") == 0) {
		if (opts_parse(argc, argv, NULL, pos, 1, &npos))
			return 1;
		if (npos != 1)
			return fail("usage: relaymap set FILE (JSON; - for stdin)");
		if (cli->dry) /* stdin is read once */
			return DRY_STOP;
		if (file_read(pos[0], &text, &len))
			return 1;
		/* admin_op's message says where in the file; name the file before it. */
		cli->what = strcmp(pos[0], "-") ? pos[0] : "stdin";
		r = call(cli, "PUT", target, text, len, NULL);
		free(text);
		return r;
	}
	if (strcmp(sub, "reset") == 0) {
		if (opts_parse(argc, argv, NULL, pos, 0, &npos))
			return 1;
		return call(cli, "DELETE", target, NULL, 0, NULL);
	}
	if (opts_parse(argc, argv, opts, pos, 0, &npos))
		return 1;
	r = call(cli, "GET", target, NULL, 0, &ans);
	if (r)
		return r;
	map = json_object_get(ans, "map");
	if (as_json) {
		json_print(json_incref(map));
		json_decref(ans);
		return 0;
	}
	printf("%s relay map, %zu region%s\n",
	       json_is_true(json_object_get(ans, "default")) ? "default (embedded)" : "admin's",
	       json_array_size(json_object_get(map, "regions")),
	       json_array_size(json_object_get(map, "regions")) == 1 ? "" : "s");
	printf("%-6s %-16s %-24s %s\n", "ID", "CODE", "NAME", "RELAYS");
	json_array_foreach(json_object_get(map, "regions"), i, g) {
		printf("%-6" JSON_INTEGER_FORMAT " %-16s %-24s", i_(g, "id"), s_(g, "code"),
		       s_(g, "name"));
		json_array_foreach(json_object_get(g, "nodes"), j, n) {
			const char *host = json_string_value(json_object_get(n, "host"));
			json_int_t port = i_(n, "relay_port");

			if (!host && !json_object_get(n, "ipv4") && !json_object_get(n, "ipv6"))
				printf(" %s(control server)", j ? "," : "");
			else
				printf(" %s%s%s:%" JSON_INTEGER_FORMAT, j ? "," : "",
				       json_is_true(json_object_get(n, "tls")) ? "https://" : "",
				       host ? host : s_(n, "name"), port);
		}
		printf("\n");
	}
	json_decref(ans);
	return 0;
}

/* --since: a duration ago, a UTC date or time, or Unix seconds. 0 or exit status. */
static int since_parse(const char *s, int64_t *ret)
{
	struct tm tm = { 0 };
	const char *end;
	int64_t v;

	if (admin_duration_parse(s, &v) == 0 && v > 0) {
		*ret = time_wall_s() - v;
		return 0;
	}
	end = strptime(s, "%Y-%m-%dT%H:%M:%SZ", &tm);
	if (!end || *end) {
		memset(&tm, 0, sizeof(tm));
		end = strptime(s, "%Y-%m-%d", &tm);
	}
	if (end && !*end) {
		*ret = (int64_t)timegm(&tm);
		return 0;
	}
	if (s[0] && strspn(s, "0123456789") == strlen(s) && strlen(s) < 19) {
		*ret = strtoll(s, NULL, 10);
		return 0;
	}
	return fail("bad time \"%s\" (examples: 2h, 7d, 2026-12-01, 2026-12-01T19:00:00Z)", s);
}

/* The members of after that differ from before: "approved: false -> true". */
static void changes_print(json_t *before, json_t *after)
{
	const char *key;
	json_t *v, *all = json_is_object(after) ? after : before;
	int n = 0;

	if (!json_is_object(before) || !json_is_object(after)) {
		printf("%s", json_is_object(after) ? "created" : json_is_object(before) ? "removed"
											  : "-");
		return;
	}
	json_object_foreach(all, key, v) {
		json_t *o = json_object_get(before, key);
		char *a, *b;

		if (o && json_equal(o, v))
			continue;
		b = o ? json_dumps(o, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
		a = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
		printf("%s%s: %.60s -> %.60s", n++ ? ", " : "", key, b ? b : "-", a ? a : "-");
		free(a);
		free(b);
	}
	if (!n)
		printf("no change");
}

static void flow_end_print(json_t *e)
{
	char ep[2][INET6_ADDRSTRLEN + 8];

	snprintf(ep[0], sizeof(ep[0]), "%s:%" JSON_INTEGER_FORMAT, s_(e, "src"), i_(e, "src_port"));
	snprintf(ep[1], sizeof(ep[1]), "%s:%" JSON_INTEGER_FORMAT, s_(e, "dst"), i_(e, "dst_port"));
	printf("%-12s %-22s %-22s %10" JSON_INTEGER_FORMAT "/%-12" JSON_INTEGER_FORMAT
	       " %10" JSON_INTEGER_FORMAT "/%-12" JSON_INTEGER_FORMAT " %" JSON_INTEGER_FORMAT,
	       s_(e, "name"), ep[0], ep[1], i_(e, "tx_packets"), i_(e, "tx_bytes"),
	       i_(e, "rx_packets"), i_(e, "rx_bytes"), i_(e, "denied"));
}

/* flows prune: chunk calls until the server says nothing more is old enough. */
static int flows_prune_cmd(struct cli *cli, int argc, char **argv)
{
	const char *tailnet = NULL, *before = NULL, *older = NULL, *pos[1];
	const struct opt opts[] = {
	    {"--tailnet", true, &tailnet, NULL},
	    {"--before", true, &before, NULL},
	    {"--older-than", true, &older, NULL},
	    {NULL},
	};
	int64_t t = INT64_MIN;
	json_int_t removed = 0;
	json_t *ans;
	bool more;
	int npos, r;

	if (opts_parse(argc, argv, opts, pos, 0, &npos) || (before && since_parse(before, &t)) ||
	    duration_check(older))
		return 1;
	if (!before == !older)
		return fail(
		    "usage: flows prune [--tailnet NAME] --before T | --older-than DURATION");
	if (tailnet && path_arg_check(tailnet))
		return 1;
	if (cli->dry)
		return DRY_STOP;
	do {
		json_t *body = older ? json_pack("{s:s}", "older_than", older)
				     : json_pack("{s:I}", "before", (json_int_t)t);

		if (tailnet)
			json_object_set_new(body, "tailnet", json_string(tailnet));
		r = call_json(cli, "POST", ADMIN_API_PREFIX "flows/prune", body, &ans);
		if (r)
			return r;
		removed += i_(ans, "removed");
		more = json_is_true(json_object_get(ans, "more"));
		/* The cut-off the server took stays put while the chunks go on. */
		if (older) {
			older = NULL;
			t = i_(ans, "before");
		}
		json_decref(ans);
	} while (more);
	printf("%" JSON_INTEGER_FORMAT " flow-log batches removed\n", removed);
	return 0;
}

static int flows_cmd(struct cli *cli, const char *sub, int argc, char **argv)
{
	const char *since = NULL, *node = NULL, *pos[1];
	bool as_json = false, flagged = false;
	const struct opt opts[] = {
	    {"--node", true, &node, NULL},
	    {"--since", true, &since, NULL},
	    {"--flagged", false, NULL, &flagged},
	    {"--json", false, NULL, &as_json},
	    {NULL},
	};
	char target[256], *end;
	int64_t t = INT64_MIN;
	uint64_t id = 0;
	json_t *ans, *f;
	size_t i;
	int npos, r;

	if (strcmp(sub, "prune") == 0)
		return flows_prune_cmd(cli, argc, argv);
	if (opts_parse(argc, argv, opts, pos, 0, &npos) || (since && since_parse(since, &t)))
		return 1;
	if (node && path_arg_check(node))
		return 1;
	if (cli->dry)
		return DRY_STOP;
	if (node) {
		errno = 0;
		id = strtoull(node, &end, 10);
		if (errno || *end || !id) {
			r = list_fetch(cli, "nodes", node, NULL, false, &ans);
			if (r)
				return r;
			id = (uint64_t)i_(ans, "id");
			json_decref(ans);
		}
	}
	snprintf(target, sizeof(target), "%sflows?flagged=%d", ADMIN_API_PREFIX, flagged);
	if (id)
		snprintf(target + strlen(target), sizeof(target) - strlen(target), "&node=%" PRIu64,
			 id);
	if (t != INT64_MIN)
		snprintf(target + strlen(target), sizeof(target) - strlen(target),
			 "&since=%" PRId64, t);
	r = call(cli, "GET", target, NULL, 0, &ans);
	if (r)
		return r;
	if (!as_json)
		printf("%-10s %-5s %-12s %-22s %-22s %23s %23s %s\n", "VERDICT", "PROTO", "NODE",
		       "SRC", "DST", "TX PKTS/BYTES", "RX PKTS/BYTES", "DENIED");
	json_array_foreach(ans, i, f)
	{
		json_t *b = json_object_get(f, "b");

		if (as_json) {
			json_line_print(f);
			continue;
		}
		printf("%-10s %-5" JSON_INTEGER_FORMAT " ", s_(f, "verdict"), i_(f, "proto"));
		flow_end_print(json_object_get(f, "a"));
		printf("\n");
		if (json_is_object(b)) {
			printf("%-10s %-5s ", "", "");
			flow_end_print(b);
			printf("\n");
		}
	}
	json_decref(ans);
	return 0;
}

static int audit_cmd(struct cli *cli, const char *sub, int argc, char **argv)
{
	const char *since = NULL, *keep = NULL, *pos[1];
	bool as_json = false;
	const struct opt log_opts[] = {
		{ "--since", true, &since, NULL },
		{ "--json", false, NULL, &as_json },
		{ NULL },
	};
	const struct opt prune_opts[] = { { "--keep", true, &keep, NULL }, { NULL } };
	const struct opt no_opts[] = { { NULL } };
	char target[256];
	uint64_t after = 0;
	int64_t t = INT64_MIN;
	json_t *ans, *e;
	size_t i, n;
	int npos, r;

	if (strcmp(sub, "prune") == 0) {
		if (opts_parse(argc, argv, prune_opts, pos, 0, &npos) || duration_check(keep))
			return 1;
		if (!keep)
			return fail("usage: audit prune --keep DURATION (30d)");
		r = call_json(cli, "POST", ADMIN_API_PREFIX "audit/prune",
			      json_pack("{s:s}", "keep", keep), &ans);
		if (r)
			return r;
		printf("%" JSON_INTEGER_FORMAT " entries removed\n", i_(ans, "removed"));
		json_decref(ans);
		return 0;
	}
	if (strcmp(sub, "verify") == 0) {
		if (opts_parse(argc, argv, no_opts, pos, 0, &npos))
			return 1;
		r = call(cli, "GET", ADMIN_API_PREFIX "audit/verify", NULL, 0, &ans);
		if (r)
			return r;
		if (!json_is_true(json_object_get(ans, "ok"))) {
			r = fail("%s", s_(ans, "problem"));
		} else {
			json_t *f = json_object_get(ans, "flows");

			printf("audit log: %" JSON_INTEGER_FORMAT " entries verified (%" JSON_INTEGER_FORMAT
			       "-%" JSON_INTEGER_FORMAT "), head %s\n",
			       i_(ans, "entries"), i_(ans, "anchor_seq") + 1, i_(ans, "last_seq"),
			       s_(ans, "head"));
			printf("flow logs: %" JSON_INTEGER_FORMAT " batches (%" JSON_INTEGER_FORMAT
			       " records) of %" JSON_INTEGER_FORMAT " nodes verified",
			       i_(f, "batches"), i_(f, "records"), i_(f, "nodes"));
			if (i_(f, "anchors"))
				printf(", %" JSON_INTEGER_FORMAT " chains from pruning anchors",
				       i_(f, "anchors"));
			printf("\n");
		}
		json_decref(ans);
		return r;
	}
	if (opts_parse(argc, argv, log_opts, pos, 0, &npos) || (since && since_parse(since, &t)))
		return 1;
	if (cli->dry)
		return DRY_STOP;
	if (!as_json)
		printf("%-6s %-20s %-20s %-16s %-24s %s\n", "SEQ", "TIME", "ACTOR", "ACTION",
		       "TARGET", "CHANGES");
	/* Page by page: the server answers AUDIT_PAGE_MAX entries at most. */
	do {
		char tb[32];

		if (t != INT64_MIN)
			snprintf(target, sizeof(target), "%saudit?after=%" PRIu64 "&since=%" PRId64,
				 ADMIN_API_PREFIX, after, t);
		else
			snprintf(target, sizeof(target), "%saudit?after=%" PRIu64,
				 ADMIN_API_PREFIX, after);
		r = call(cli, "GET", target, NULL, 0, &ans);
		if (r)
			return r;
		n = json_array_size(ans);
		json_array_foreach(ans, i, e) {
			after = (uint64_t)i_(e, "seq");
			if (as_json) {
				json_line_print(e);
				continue;
			}
			time_format(tb, sizeof(tb), i_(e, "time"));
			printf("%-6" JSON_INTEGER_FORMAT " %-20s %-20s %-16s %-24s ", i_(e, "seq"), tb,
			       s_(e, "actor"), s_(e, "action"), s_(e, "target"));
			changes_print(json_object_get(e, "before"), json_object_get(e, "after"));
			printf("\n");
		}
		json_decref(ans);
	} while (n >= AUDIT_PAGE_MAX);
	return 0;
}

static int policy_cmd(struct cli *cli, const char *sub, int argc, char **argv)
{
	const char *tailnet = NULL, *proto = NULL, *pos[3];
	bool as_json = false;
	const struct opt opts[] = { { "--tailnet", true, &tailnet, NULL },
				    { "--json", false, NULL, &as_json },
				    { "--proto", true, &proto, NULL },
				    { 0 } };
	char target[512], path[256], *text = NULL;
	json_t *ans, *e;
	size_t len, i;
	int npos, r;

	if (opts_parse(argc, argv, opts, pos, 3, &npos))
		return 1;
	if (tailnet && path_arg_check(tailnet))
		return 1;
	snprintf(path, sizeof(path), "tailnets/%s/policy", tailnet ? tailnet : ADMIN_DEFAULT_TAILNET);
	if (strcmp(sub, "check") == 0) {
		struct admin_op_ctx c = { .actor = cli->actor };

		if (npos != 1 || tailnet || proto || as_json)
			return fail("usage: policy check FILE (- for stdin)");
		/* Needs no server: a policy is checked on its own (its tests included). */
		if (file_read_max(pos[0], STORE_POLICY_MAX, &text, &len))
			return 1;
		r = admin_op_policy_check(&c, text, len);
		free(text);
		if (r < 0)
			return fail("%s:%s", strcmp(pos[0], "-") ? pos[0] : "stdin", c.err);
		printf("%s: ok\n", pos[0]);
		return 0;
	}
	if (strcmp(sub, "set") == 0) {
		if (npos != 1 || proto || as_json)
			return fail("usage: policy set FILE [--tailnet NAME] (- for stdin)");
		if (cli->dry) /* stdin is read once */
			return DRY_STOP;
		if (file_read_max(pos[0], STORE_POLICY_MAX, &text, &len))
			return 1;
		if (!len) {
			free(text);
			return fail("%s: empty (policy reset removes the policy)", pos[0]);
		}
		/* admin_op's message says where in the file; name the file before it. */
		cli->what = strcmp(pos[0], "-") ? pos[0] : "stdin";
		target_make(target, sizeof(target), path, NULL, NULL);
		r = call(cli, "PUT", target, text, len, NULL);
		free(text);
		return r;
	}
	if (strcmp(sub, "reset") == 0) {
		if (npos || proto || as_json)
			return fail("usage: policy reset [--tailnet NAME]");
		target_make(target, sizeof(target), path, NULL, NULL);
		return call(cli, "DELETE", target, NULL, 0, NULL);
	}
	if (strcmp(sub, "get") == 0) {
		if (npos || proto)
			return fail("usage: policy get [--tailnet NAME] [--json]");
		target_make(target, sizeof(target), path, NULL, NULL);
		r = call(cli, "GET", target, NULL, 0, &ans);
		if (r)
			return r;
		if (as_json) {
			json_print(ans);
			return 0;
		}
		fputs(s_(ans, "policy"), stdout);
		json_decref(ans);
		return 0;
	}
	if (strcmp(sub, "explain") == 0) {
		json_t *body;
		char *end;
		long port = -1;

		if (npos < 2)
			return fail("usage: policy explain SRC DST [PORT] [--proto P] [--tailnet NAME]");
		if (npos == 3) {
			errno = 0;
			port = strtol(pos[2], &end, 10);
			if (errno || *end || !pos[2][0] || port < 0 || port > 65535)
				return fail("bad port \"%s\"", pos[2]);
		}
		if (proto && policy_proto_parse(proto) < 0)
			return fail("unknown protocol \"%s\" (tcp, udp, icmp, ... or 1-255)", proto);
		body = json_pack("{s:s, s:s}", "src", pos[0], "dst", pos[1]);
		if (!body)
			return fail("out of memory");
		if (port >= 0)
			json_object_set_new(body, "port", json_integer(port));
		if (proto)
			json_object_set_new(body, "proto", json_string(proto));
		snprintf(path + strlen(path), sizeof(path) - strlen(path), "/explain");
		target_make(target, sizeof(target), path, NULL, NULL);
		r = call_json(cli, "POST", target, body, &ans);
		if (r)
			return r;
		if (as_json) {
			json_print(ans);
			return 0;
		}
		printf("%s\n", s_(ans, "why"));
		r = json_is_true(json_object_get(ans, "allowed")) ? 0 : 1;
		json_decref(ans);
		return r;
	}
	/* matrix */
	if (npos || proto)
		return fail("usage: policy matrix [--tailnet NAME] [--json]");
	snprintf(path + strlen(path), sizeof(path) - strlen(path), "/matrix");
	target_make(target, sizeof(target), path, NULL, NULL);
	r = call(cli, "GET", target, NULL, 0, &ans);
	if (r)
		return r;
	if (as_json) {
		json_print(ans);
		return 0;
	}
	printf("%-24s %-24s %s\n", "SRC", "DST", "ALLOWED (PORTS/PROTO)");
	json_array_foreach(ans, i, e)
		printf("%-24s %-24s %s\n", s_(e, "src"), s_(e, "dst"), s_(e, "allow"));
	json_decref(ans);
	return 0;
}

/* ca list's filters as the admin API takes them (certs?revoked=1&expiring=SEC). */
static const char *certs_query(char *buf, size_t len, bool revoked, int64_t expiring)
{
	snprintf(buf, len, "%s%s", revoked ? "revoked=1" : "", revoked && expiring ? "&" : "");
	if (expiring)
		snprintf(buf + strlen(buf), len - strlen(buf), "expiring=%" PRId64, expiring);
	return buf;
}

/* ca init|show|sign|revoke|list: machine certificates (ca.h). */
/* ca show --all, ca list: what the server answered, as text. */
static int ca_print(const char *sub, json_t *ans, bool all)
{
	char when[32];
	json_t *e;
	size_t i;

	if (!strcmp(sub, "show")) {
		if (!all) {
			fputs(s_(ans, "cert"), stdout);
			return 0;
		}
		json_array_foreach(ans, i, e)
		{
			time_format(when, sizeof(when), i_(e, "retired_at"));
			printf("# CA %" JSON_INTEGER_FORMAT " key id %s, %s%s\n", i_(e, "id"),
			       s_(e, "key_id"), i_(e, "retired_at") ? "retired " : "trusted",
			       i_(e, "retired_at") ? when : "");
			fputs(s_(e, "cert"), stdout);
		}
		return 0;
	}
	printf("%-34s %-8s %-5s %-24s %-21s %s\n", "SERIAL", "TAILNET", "CA", "SUBJECT",
	       "NOT-AFTER", "STATUS");
	json_array_foreach(ans, i, e)
	{
		time_format(when, sizeof(when), i_(e, "not_after"));
		printf("%-34s %-8" JSON_INTEGER_FORMAT " %-5" JSON_INTEGER_FORMAT " %-24s %-21s %s\n",
		       s_(e, "serial"), i_(e, "tailnet_id"), i_(e, "ca_id"), s_(e, "subject"), when,
		       s_(e, "status"));
	}
	return 0;
}

static int ca_cmd(struct cli *cli, const char *sub, int argc, char **argv)
{
	const char *tailnet = NULL, *validity = NULL, *icert = NULL, *ikey = NULL, *pos[1];
	const char *which = NULL, *expiring = NULL;
	bool as_json = false, all = false, force = false, revoked = false;
	const struct opt opts[] = {
	    {"--tailnet", true, &tailnet, NULL},   {"--validity", true, &validity, NULL},
	    {"--import-cert", true, &icert, NULL}, {"--import-key", true, &ikey, NULL},
	    {"--json", false, NULL, &as_json},	   {"--all", false, NULL, &all},
	    {"--force", false, NULL, &force},	   {"--revoked", false, NULL, &revoked},
	    {"--expiring", true, &expiring, NULL}, {"--ca", true, &which, NULL},
	    {NULL},
	};
	char target[512], path[64], query[64], *a = NULL, *b = NULL, when[32];
	bool init = !strcmp(sub, "init") || !strcmp(sub, "rotate"), sign = !strcmp(sub, "sign");
	bool renew = !strcmp(sub, "renew"), retire = !strcmp(sub, "retire");
	bool show = !strcmp(sub, "show"), list = !strcmp(sub, "list"), crl = !strcmp(sub, "crl");
	int64_t exp_sec = 0;
	json_t *body, *ans = NULL;
	size_t la, lb;
	int npos, r;

	if (opts_parse(argc, argv, opts, pos, 1, &npos))
		return 1;
	if ((init || sign || renew) && duration_check(validity))
		return 1;
	if (!init && (icert || ikey))
		return fail("--import-cert and --import-key go with ca init or ca rotate");
	if (!init && !sign && !renew && validity)
		return fail("--validity goes with ca init, rotate, sign or renew");
	if (init && !icert != !ikey)
		return fail("an imported CA needs --import-cert and --import-key");
	if (init && icert && validity)
		return fail("an imported CA keeps its own validity");
	if ((all && !show) || (force && !retire) || ((revoked || expiring) && !list) ||
	    (which && !crl))
		return fail("%s does not go with ca %s",
			    all ? "--all" : force ? "--force" : which ? "--ca" : "--revoked/--expiring",
			    sub);
	if (expiring && (admin_duration_parse(expiring, &exp_sec) < 0 || exp_sec <= 0))
		return fail("--expiring takes a duration (30d)");
	if (tailnet && path_arg_check(tailnet))
		return 1;
	if (which && path_arg_check(which))
		return 1;
	if ((sign || renew || retire || !strcmp(sub, "revoke")) != (npos == 1))
		return fail("usage: ca %s%s [--tailnet NAME]", sub,
			    sign		      ? " CSR|-"
			    : retire		      ? " ID|KEYID"
			    : renew || !strcmp(sub, "revoke") ? " SERIAL"
						      : "");
	if (show || list) {
		const char *noun = list ? "certs" : all ? "cas" : "ca";

		/* Filtered by the server (certs?revoked=1&expiring=SEC): --json lists as the table. */
		if (list)
			certs_query(query, sizeof(query), revoked, exp_sec);
		r = list_fetch_query(cli, noun, NULL, tailnet, list ? query : NULL, as_json, &ans);
		if (r || !ans)
			return r;
		r = ca_print(sub, ans, all);
		json_decref(ans);
		return r;
	}
	if (crl) {
		if (which)
			snprintf(path, sizeof(path), "%s/crl", which);
		r = call_json(cli, "GET",
			      target_make(target, sizeof(target), "ca", which ? path : "crl",
					  tailnet),
			      NULL, &ans);
		if (r)
			return r;
		fputs(s_(ans, "crl"), stdout);
		json_decref(ans);
		return 0;
	}
	if (cli->dry) /* stdin is read once */
		return DRY_STOP;
	body = json_object();
	if (validity)
		json_object_set_new(body, "validity", json_string(validity));
	if (sign || icert) {
		if (file_read_max(sign ? pos[0] : icert, MCERT_PEM_MAX - 1, &a, &la) ||
		    (icert && file_read_max(ikey, MCERT_PEM_MAX - 1, &b, &lb))) {
			json_decref(body);
			free(a);
			return 1;
		}
		json_object_set_new(body, sign ? "csr" : "cert", json_stringn(a, la));
		if (b)
			json_object_set_new(body, "key", json_stringn(b, lb));
	}
	if (renew || !strcmp(sub, "revoke"))
		json_object_set_new(body, "serial", json_string(pos[0]));
	if (retire) {
		json_object_set_new(body, "ca", json_string(pos[0]));
		if (force)
			json_object_set_new(body, "force", json_true());
	}
	snprintf(path, sizeof(path), "%s", sub);
	r = call_json(cli, "POST", target_make(target, sizeof(target), "ca", path, tailnet), body,
		      &ans);
	if (a)
		crypto_wipe(a, la);
	if (b)
		crypto_wipe(b, lb);
	free(a);
	free(b);
	if (r)
		return r;
	if (init || sign || renew)
		fputs(s_(ans, "cert"), stdout);
	else if (retire)
		printf("CA %s retired; %" JSON_INTEGER_FORMAT " node(s) expired\n", pos[0],
		       i_(ans, "nodes_expired"));
	else
		printf("certificate %s revoked; %" JSON_INTEGER_FORMAT " node(s) expired\n", pos[0],
		       i_(ans, "nodes_expired"));
	if (sign || renew)
		fprintf(stderr, "serial %s, valid until %s\n", s_(ans, "serial"),
			(time_format(when, sizeof(when), i_(ans, "not_after")), when));
	json_decref(ans);
	return 0;
}

static bool verb_known(const struct noun *noun, const char *sub)
{
	size_t n = strlen(sub);

	for (const char *v = noun->verbs; *v;) {
		size_t l = strcspn(v, ",");

		if (l == n && strncmp(v, sub, n) == 0)
			return true;
		v += l;
		while (*v == ',' || *v == ' ')
			v++;
	}
	return false;
}

static int command_run(struct cli *cli, const char *cmd, const char *sub, int argc, char **argv)
{
	if (strcmp(cmd, "authkey") == 0)
		return authkey_cmd(cli, sub, argc, argv);
	if (strcmp(cmd, "apikey") == 0)
		return apikey_cmd(cli, sub, argc, argv);
	if (strcmp(cmd, "tailnets") == 0)
		return tailnets_cmd(cli, sub, argc, argv);
	if (strcmp(cmd, "users") == 0)
		return users_cmd(cli, sub, argc, argv);
	if (strcmp(cmd, "relaymap") == 0)
		return relaymap_cmd(cli, sub, argc, argv);
	if (strcmp(cmd, "audit") == 0)
		return audit_cmd(cli, sub, argc, argv);
	if (strcmp(cmd, "flows") == 0)
		return flows_cmd(cli, sub, argc, argv);
	if (strcmp(cmd, "policy") == 0)
		return policy_cmd(cli, sub, argc, argv);
	if (strcmp(cmd, "ca") == 0)
		return ca_cmd(cli, sub, argc, argv);
	return nodes_cmd(cli, sub, argc, argv);
}

/* Who runs the command, for the audit log: "cli:" and the effective user's name. */
static const char *actor_name(char *buf, size_t len)
{
	struct passwd pw, *res = NULL;
	char pbuf[1024];
	uid_t uid = geteuid();

	if (getpwuid_r(uid, &pw, pbuf, sizeof(pbuf), &res) == 0 && res)
		snprintf(buf, len, "cli:%s", res->pw_name);
	else
		snprintf(buf, len, "cli:uid%u", (unsigned)uid);
	return buf;
}

int admin_run(const char *state_dir, bool offline, int argc, char **argv)
{
	static char name[64];
	struct cli cli = { .state_dir = state_dir, .offline = offline, .lock_fd = -1 };
	const struct noun *noun;
	const char *cmd, *sub;
	int r, skip = 2;

	if (argc < 1 || is_help(argv[0])) {
		if (argc >= 2 && (noun = noun_find(argv[1]))) {
			fputs(noun->help, stdout);
			return 0;
		}
		usage(argc < 1 ? stderr : stdout);
		return argc < 1;
	}
	cmd = argv[0];
	noun = noun_find(cmd);
	if (!noun)
		return fail("unknown command \"%s\" (try --help)", cmd);
	/* --help anywhere after the noun: that noun's help, nothing run. */
	for (int i = 1; i < argc; i++)
		if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0 ||
		    (i == 1 && strcmp(argv[i], "help") == 0)) {
			fputs(noun->help, stdout);
			return 0;
		}
	/* `flows` lists without a verb too. */
	if (strcmp(cmd, "flows") == 0 && (argc < 2 || argv[1][0] == '-')) {
		sub = "list";
		skip = 1;
	} else if (argc < 2) {
		return fail("%s: missing subcommand (%s; try %s --help)", cmd, noun->verbs, cmd);
	} else {
		sub = argv[1];
	}
	snprintf(name, sizeof(name), "%s %s", cmd, sub);
	cmd_name = name;
	if (!verb_known(noun, sub))
		return fail("unknown command \"%s\" (%s)", sub, noun->verbs);
	actor_name(cli.actor, sizeof(cli.actor));
	/*
	 * Arguments are checked before the server is looked for, so that a
	 * mistake is named whether or not one runs: a dry pass parses and stops
	 * at its call; then the real pass.
	 */
	cli.dry = true;
	r = command_run(&cli, cmd, sub, argc - skip, argv + skip);
	if (r != DRY_STOP)
		goto out;
	cli.dry = false;
	r = cli_connect(&cli);
	if (r == 0)
		r = command_run(&cli, cmd, sub, argc - skip, argv + skip);
out:
	store_free(cli.store);
	if (cli.lock_fd >= 0)
		close(cli.lock_fd);
	return r;
}
