/* SPDX-License-Identifier: MIT */
/*
 * trellisd: the Trellis node daemon.
 *
 *   trellisd --wg IFACE [--mtu N] [--workers N] [--log-level L]
 *       Plain WireGuard mode, a drop-in for `wireguard-go -f IFACE`: creates the
 *       TUN interface and serves wg(8) on /var/run/wireguard/IFACE.sock.
 *   trellisd [-f] IFACE
 *       The same, as `wireguard-go IFACE` does it for wg-quick
 *       (WG_QUICK_USERSPACE_IMPLEMENTATION=trellisd): returns once the interface
 *       and its UAPI socket are up and goes on in the background, unless -f or
 *       WG_PROCESS_FOREGROUND=1.
 *   trellisd [--state DIR] [--socket PATH] [--tun IFACE] [--port N]
 *            [--metrics-listen ADDR:PORT] [--portmap LIST] [--portmap-lifetime S]
 *            [--filter-reject[=N]]
 *       Control-plane mode (design.md §12, daemon.c): joins the tailnet that
 *       `trellis up` names and keeps the interface in line with its netmap.
 *
 * Exit status: 0 after SIGTERM/SIGINT (or when the interface is deleted), 1 when
 * the daemon cannot start, 2 on usage errors.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <malloc.h>
#include <net/if.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/log.h"
#include "base/version.h"
#include "crypto/crypto.h"
#include "node/daemon.h"
#include "node/localapi.h"
#include "os/sd_notify.h"
#include "node/state.h"
#include "node/wgdev.h"
#include "filter/filter.h"
#include "portmap/portmap.h"
#include "wg/device.h"

#define DEFAULT_MTU 1420
#define MIN_MTU 68 /* RFC 791: the smallest MTU IPv4 allows */
#define MAX_WORKERS 256

static void usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: trellisd --wg IFACE [--mtu N] [--workers N] [--log-level LEVEL]\n"
	    "       trellisd [-f] [--mtu N] [--workers N] [--log-level LEVEL] IFACE\n"
	    "       trellisd [--state DIR] [--socket PATH] [--tun IFACE] [--port N]\n"
	    "                [--metrics-listen ADDR:PORT]\n"
	    "                [--portmap LIST] [--portmap-lifetime S] [--filter-reject[=N]]\n"
	    "\n"
	    "  --wg IFACE         plain WireGuard mode: create TUN IFACE, configure with wg(8)\n"
	    "                     through /var/run/wireguard/IFACE.sock (like wireguard-go -f)\n"
	    "  IFACE              the same, in the background once the interface is up (like\n"
	    "                     wireguard-go IFACE, for wg-quick)\n"
	    "  -f, --foreground   with IFACE: stay in the foreground (also\n"
	    "                     WG_PROCESS_FOREGROUND=1)\n"
	    "  --mtu N            interface MTU (default %d, at most %d)\n"
	    "  --workers N        crypto worker threads (0: crypto inline on the I/O\n"
	    "                     threads; default: one per online CPU, 0 with 2 or fewer)\n"
	    "  --no-offload       no TUN offloads (TSO, GRO) nor UDP GSO/GRO\n"
	    "                     (TRELLIS_NO_OFFLOAD=1 too)\n"
	    "  --log-level LEVEL  err, warn, info (default) or debug\n"
	    "  --state DIR        control-plane mode: state directory (default %s)\n"
	    "  --socket PATH      local API socket (default %s)\n"
	    "  --tun IFACE        TUN interface (default %s)\n"
	    "  --port N           WireGuard UDP port (default %d)\n"
	    "  --metrics-listen ADDR:PORT\n"
	    "                     serve Prometheus text on http://ADDR:PORT/metrics (default:\n"
	    "                     none; e.g. 127.0.0.1:9101)\n"
	    "  --portmap LIST     port mapping at the gateway: auto (default), off, or any of\n"
	    "                     pcp,nat-pmp,upnp\n"
	    "  --portmap-lifetime S  lifetime asked for a mapping, seconds (default %d)\n"
	    "  --filter-reject[=N]  answer packets the policy refuses: a TCP RST, else ICMP\n"
	    "                     \"administratively prohibited\"; at most N a second (default\n"
	    "                     %d; without it refused packets are dropped silently)\n"
	    "  --version          print the version\n"
	    "  -h, --help         this text\n"
	    "\n"
	    "example: trellisd --wg wg0 --mtu 1420\n",
	    DEFAULT_MTU, WG_MTU_MAX, STATE_DEFAULT_DIR, LOCALAPI_DEFAULT_SOCKET, DAEMON_DEFAULT_TUN,
	    DAEMON_DEFAULT_PORT, PORTMAP_LIFETIME_DEFAULT_S, FILTER_REJECT_RATE_DEFAULT);
}

/* Whole-string unsigned decimal within [min, max]; false otherwise. */
static bool parse_uint(const char *s, unsigned long min, unsigned long max, unsigned long *ret)
{
	unsigned long v;
	char *end;

	if (!*s || *s == '-' || *s == '+')
		return false;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || *end || v < min || v > max)
		return false;
	*ret = v;
	return true;
}

/*
 * Daemonizing for wg-quick: the parent returns only once the child has the interface
 * and the UAPI socket up (wg-quick configures them next), with 0, or 1 if the child
 * failed to start. The fork comes before any thread exists. Stdin and stdout go to
 * /dev/null; stderr stays, for the log.
 */
static int ready_fd = -1;

static void daemon_ready(void *arg)
{
	int r;

	(void)arg;
	/* Under systemd (Type=notify) as for wg-quick: the interface and UAPI socket are up. */
	r = sd_notify_send("READY=1");
	if (r < 0)
		log_warn("sd_notify READY=1: %s", strerror(-r));
	if (ready_fd < 0)
		return;
	if (write(ready_fd, "1", 1) < 0)
		log_warn("cannot tell the parent we are up: %s", strerror(errno));
	close(ready_fd);
	ready_fd = -1;
}

static int daemonize(void)
{
	int p[2], fd, st;
	pid_t pid;
	char c;
	ssize_t n;

	if (pipe2(p, O_CLOEXEC) < 0) {
		fprintf(stderr, "trellisd: pipe: %s\n", strerror(errno));
		return -1;
	}
	pid = fork();
	if (pid < 0) {
		fprintf(stderr, "trellisd: fork: %s\n", strerror(errno));
		return -1;
	}
	if (pid > 0) {
		close(p[1]);
		do
			n = read(p[0], &c, 1);
		while (n < 0 && errno == EINTR);
		if (n == 1)
			_exit(0);
		/* The child exited before it was up; it said why on stderr. */
		while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
			;
		_exit(1);
	}
	close(p[0]);
	ready_fd = p[1];
	if (setsid() < 0)
		log_warn("setsid: %s", strerror(errno));
	fd = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (fd >= 0) {
		dup2(fd, STDIN_FILENO);
		dup2(fd, STDOUT_FILENO);
		if (fd > STDERR_FILENO)
			close(fd);
	}
	return 0;
}

static int parse_level(const char *s)
{
	static const char *const names[] = {"err", "warn", "info", "debug"};
	int i;

	for (i = 0; i < 4; i++)
		if (!strcmp(s, names[i]))
			return i;
	if (!strcmp(s, "error"))
		return LOG_LEVEL_ERR;
	if (!strcmp(s, "warning"))
		return LOG_LEVEL_WARN;
	return -1;
}

int main(int argc, char **argv)
{
	enum {
		OPT_WG = 256,
		OPT_MTU,
		OPT_WORKERS,
		OPT_LOG,
		OPT_STATE,
		OPT_SOCKET,
		OPT_TUN,
		OPT_PORT,
		OPT_METRICS,
		OPT_PORTMAP,
		OPT_PORTMAP_LIFETIME,
		OPT_FILTER_REJECT,
		OPT_VERSION,
		OPT_NO_OFFLOAD
	};
	static const struct option longopts[] = {
	    {"wg", required_argument, NULL, OPT_WG},
	    {"mtu", required_argument, NULL, OPT_MTU},
	    {"workers", required_argument, NULL, OPT_WORKERS},
	    {"no-offload", no_argument, NULL, OPT_NO_OFFLOAD},
	    {"log-level", required_argument, NULL, OPT_LOG},
	    {"state", required_argument, NULL, OPT_STATE},
	    {"socket", required_argument, NULL, OPT_SOCKET},
	    {"tun", required_argument, NULL, OPT_TUN},
	    {"port", required_argument, NULL, OPT_PORT},
	    {"metrics-listen", required_argument, NULL, OPT_METRICS},
	    {"portmap", required_argument, NULL, OPT_PORTMAP},
	    {"portmap-lifetime", required_argument, NULL, OPT_PORTMAP_LIFETIME},
	    {"filter-reject", optional_argument, NULL, OPT_FILTER_REJECT},
	    {"foreground", no_argument, NULL, 'f'},
	    {"version", no_argument, NULL, OPT_VERSION},
	    {"help", no_argument, NULL, 'h'},
	    {0},
	};
	struct wgdev_opts opts = {.mtu = DEFAULT_MTU, .workers = -1};
	struct daemon_opts dopts = {.port = DAEMON_DEFAULT_PORT, .portmap = PORTMAP_ALL};
	const char *cp_opt = NULL; /* a control-plane option that was given */
	const char *fg_env = getenv("WG_PROCESS_FOREGROUND");
	bool foreground = fg_env && !strcmp(fg_env, "1");
	bool background = false;
	unsigned long v;
	int c, r;

	/*
	 * Before any thread exists. Every socket write we make says MSG_NOSIGNAL,
	 * but a library's write() (a TLS BIO, say) to a reset connection must
	 * come back as EPIPE, not end the daemon.
	 */
	signal(SIGPIPE, SIG_IGN);
	/*
	 * One malloc arena for every thread (issue 14): nothing on the packet path allocates,
	 * so per-thread arenas buy no speed, only memory: each thread that ever allocated kept
	 * its own, 0.5 MiB together on an idle node with 100 peers.
	 */
	mallopt(M_ARENA_MAX, 1);
	/*
	 * OpenSSL's setup before any other OpenSSL call: it keeps OpenSSL from loading its
	 * error strings (0.3 MiB of libcrypto made resident; src/crypto/crypto.c). A failure
	 * here (no ChaCha20-Poly1305) is reported where the cipher is needed.
	 */
	crypto_init();
	log_init();
	while ((c = getopt_long(argc, argv, "fh", longopts, NULL)) != -1) {
		switch (c) {
		case OPT_WG:
			if (!*optarg || strlen(optarg) >= IF_NAMESIZE || strchr(optarg, '/')) {
				fprintf(stderr, "trellisd: --wg: invalid interface name \"%s\"\n",
					optarg);
				return 2;
			}
			opts.ifname = optarg;
			break;
		case OPT_MTU:
			if (!parse_uint(optarg, MIN_MTU, WG_MTU_MAX, &v)) {
				fprintf(stderr,
					"trellisd: --mtu: \"%s\" is not a number in %d..%d\n",
					optarg, MIN_MTU, WG_MTU_MAX);
				return 2;
			}
			opts.mtu = (unsigned)v;
			break;
		case OPT_WORKERS:
			if (!parse_uint(optarg, 0, MAX_WORKERS, &v)) {
				fprintf(stderr,
					"trellisd: --workers: \"%s\" is not a number in 0..%d\n",
					optarg, MAX_WORKERS);
				return 2;
			}
			opts.workers = (int)v;
			break;
		case OPT_NO_OFFLOAD:
			opts.no_offload = true;
			break;
		case OPT_LOG:
			r = parse_level(optarg);
			if (r < 0) {
				fprintf(stderr,
					"trellisd: --log-level: \"%s\" is not one of "
					"err, warn, info, debug\n",
					optarg);
				return 2;
			}
			log_set_level(r);
			break;
		case OPT_PORT:
			if (!parse_uint(optarg, 0, 65535, &v)) {
				fprintf(stderr, "trellisd: --port: \"%s\" is not a port number\n",
					optarg);
				return 2;
			}
			dopts.port = (uint16_t)v;
			cp_opt = "--port";
			break;
		case OPT_PORTMAP:
			if (portmap_protocols_parse(optarg, &dopts.portmap) < 0) {
				fprintf(stderr,
					"trellisd: --portmap: \"%s\" is not auto, off or a list of "
					"pcp, nat-pmp, upnp (comma-separated)\n",
					optarg);
				return 2;
			}
			cp_opt = "--portmap";
			break;
		case OPT_PORTMAP_LIFETIME:
			if (!parse_uint(optarg, PORTMAP_LIFETIME_MIN_S, UINT32_MAX, &v)) {
				fprintf(stderr,
					"trellisd: --portmap-lifetime: \"%s\" is not a number of "
					"seconds >= %d\n",
					optarg, PORTMAP_LIFETIME_MIN_S);
				return 2;
			}
			dopts.portmap_lifetime_s = (uint32_t)v;
			cp_opt = "--portmap-lifetime";
			break;
		case OPT_FILTER_REJECT:
			v = FILTER_REJECT_RATE_DEFAULT;
			if (optarg && !parse_uint(optarg, 1, 1000000, &v)) {
				fprintf(stderr,
					"trellisd: --filter-reject: \"%s\" is not a number of "
					"replies a second (1-1000000)\n",
					optarg);
				return 2;
			}
			dopts.filter_reject_rate = (unsigned)v;
			cp_opt = "--filter-reject";
			break;
		case OPT_STATE:
			if (!*optarg) {
				fprintf(stderr, "trellisd: --state: empty directory name\n");
				return 2;
			}
			dopts.state_dir = optarg;
			cp_opt = "--state";
			break;
		case OPT_SOCKET:
			if (!*optarg || strlen(optarg) >= 108) {
				fprintf(stderr, "trellisd: --socket: invalid path \"%s\"\n",
					optarg);
				return 2;
			}
			dopts.socket_path = optarg;
			cp_opt = "--socket";
			break;
		case OPT_METRICS:
			if (!*optarg || !strchr(optarg, ':')) {
				fprintf(stderr,
					"trellisd: --metrics-listen: \"%s\" is not ADDR:PORT (e.g. "
					"127.0.0.1:9101)\n",
					optarg);
				return 2;
			}
			dopts.metrics_listen = optarg;
			cp_opt = "--metrics-listen";
			break;
		case OPT_TUN:
			if (!*optarg || strlen(optarg) >= IF_NAMESIZE || strchr(optarg, '/')) {
				fprintf(stderr, "trellisd: --tun: invalid interface name \"%s\"\n",
					optarg);
				return 2;
			}
			dopts.ifname = optarg;
			cp_opt = "--tun";
			break;
		case 'f':
			foreground = true;
			break;
		case OPT_VERSION:
			printf("trellisd %s\n", trellis_version);
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc && !opts.ifname && !cp_opt) {
		/* trellisd IFACE: as wireguard-go IFACE, for wg-quick. */
		if (!*argv[optind] || strlen(argv[optind]) >= IF_NAMESIZE ||
		    strchr(argv[optind], '/')) {
			fprintf(stderr, "trellisd: invalid interface name \"%s\"\n", argv[optind]);
			return 2;
		}
		opts.ifname = argv[optind++];
		background = !foreground;
	}
	if (optind < argc) {
		fprintf(stderr, "trellisd: unexpected argument \"%s\"\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	log_info("trellisd %s", trellis_version);
	if (!opts.ifname) {
		dopts.mtu = opts.mtu;
		dopts.workers = opts.workers;
		dopts.no_offload = opts.no_offload;
		r = daemon_run(&dopts);
		return r < 0 ? 1 : 0;
	}
	if (cp_opt) {
		fprintf(stderr,
			"trellisd: %s belongs to the control-plane mode and cannot be "
			"combined with --wg\n",
			cp_opt);
		return 2;
	}
	if (background && daemonize() < 0)
		return 1;
	opts.ready = daemon_ready;
	r = wgdev_run(&opts);
	return r < 0 ? 1 : 0;
}
