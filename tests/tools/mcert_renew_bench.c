// SPDX-License-Identifier: MIT
/*
 * What serve --machine-cert-auto-renew costs the server every 5 s (bench/mcert_renew.sh):
 * a store of N machine certificates (one per machine, ending uniformly over the next year,
 * DER kept as `ca sign` keeps it), and the two ways of finding the due ones, in turns:
 *   list  every certificate and CA read (store_mcert_list, store_ca_list), then ca_renew_due:
 *         what the server did before;
 *   due   store_mcert_due: the certificates ending within the window (an index range),
 *         each checked to be its machine's newest: what it does now.
 * Both must find the same certificates (exit status 1 otherwise). Prints "key value" lines:
 * the median wall time of a tick (µs) of each and how many were due.
 *
 *   mcert_renew_bench [-n CERTS] [-r ROUNDS] [-w WINDOW_SEC] DIR
 */
#include <errno.h>
#include <getopt.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "control/ca.h"
#include "control/store.h"

#define YEAR (365 * 86400LL)

static double now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int dbl_cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* The certificates, written in one transaction straight to the database (not the benchmark). */
static int fill(const char *path, uint64_t tailnet_id, uint64_t ca_id, long n, int64_t now)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	unsigned char der[420], key[32];
	int rc;

	if (sqlite3_open(path, &db) != SQLITE_OK)
		return -EIO;
	rc = sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_prepare_v2(
		    db,
		    "INSERT INTO machine_certs (tailnet_id, serial, machine_key, subject,"
		    " not_before, not_after, created, revoked, revoked_at, ca_id, pub, der)"
		    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, 0, ?8, ?9, ?10)",
		    -1, &st, NULL);
	srandom(1);
	for (long i = 0; rc == SQLITE_OK && i < n; i++) {
		int64_t na = now + 60 + random() % YEAR;
		char serial[40], subject[32];

		for (size_t j = 0; j < sizeof(der); j++)
			der[j] = (unsigned char)random();
		memcpy(key, der, sizeof(key)); /* a machine key of its own */
		snprintf(serial, sizeof(serial), "%032lx", (unsigned long)i + 1);
		snprintf(subject, sizeof(subject), "host-%ld", i);
		sqlite3_bind_int64(st, 1, (int64_t)tailnet_id);
		sqlite3_bind_text(st, 2, serial, -1, SQLITE_TRANSIENT);
		sqlite3_bind_blob(st, 3, key, sizeof(key), SQLITE_TRANSIENT);
		sqlite3_bind_text(st, 4, subject, -1, SQLITE_TRANSIENT);
		sqlite3_bind_int64(st, 5, na - YEAR - MCERT_BACKDATE_SEC);
		sqlite3_bind_int64(st, 6, na);
		sqlite3_bind_int64(st, 7, na - YEAR);
		sqlite3_bind_int64(st, 8, (int64_t)ca_id);
		sqlite3_bind_blob(st, 9, der + 32, 32, SQLITE_TRANSIENT);
		sqlite3_bind_blob(st, 10, der, sizeof(der), SQLITE_TRANSIENT);
		rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
		sqlite3_reset(st);
	}
	sqlite3_finalize(st);
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
	if (rc != SQLITE_OK)
		fprintf(stderr, "mcert_renew_bench: fill: %s\n", sqlite3_errmsg(db));
	sqlite3_close(db);
	return rc == SQLITE_OK ? 0 : -EIO;
}

/* The server's tick before: every certificate and CA, then ca_renew_due. How many due. */
static int tick_list(struct store *s, int64_t now, int64_t window)
{
	struct control_mcert *all = NULL;
	struct control_ca *cas = NULL;
	size_t n = 0, n_cas = 0, *due = NULL;
	int k = -1;

	if (store_mcert_list(s, &all, &n) == 0 && store_ca_list(s, &cas, &n_cas) == 0) {
		due = malloc((n ? n : 1) * sizeof(*due));
		k = due ? ca_renew_due(all, n, cas, n_cas, now, window, due) : -1;
	}
	free(all);
	free(cas);
	free(due);
	return k;
}

/* And now: store_mcert_due. */
static int tick_due(struct store *s, int64_t now, int64_t window)
{
	struct control_mcert *due = NULL;
	size_t n = 0;
	int r = store_mcert_due(s, now, window, &due, &n);

	free(due);
	return r < 0 ? r : (int)n;
}

int main(int argc, char **argv)
{
	long n = 10000, rounds = 50;
	int64_t window = 7 * 86400, now = (int64_t)time(NULL);
	struct control_tailnet t = {0};
	struct store_op op = {.kind = STORE_OP_CA_PUT};
	struct store *s = NULL;
	char path[4096];
	double *tl, *td;
	uint64_t ca_id;
	int c, k_list = 0, k_due = 0;

	while ((c = getopt(argc, argv, "n:r:w:")) != -1) {
		if (c == 'n')
			n = atol(optarg);
		else if (c == 'r')
			rounds = atol(optarg);
		else if (c == 'w')
			window = atol(optarg);
		else
			return 2;
	}
	if (optind != argc - 1 || n < 1 || rounds < 1) {
		fprintf(stderr, "usage: mcert_renew_bench [-n CERTS] [-r ROUNDS] [-w SEC] DIR\n");
		return 2;
	}
	snprintf(path, sizeof(path), "%s/%s", argv[optind], STORE_DB_NAME);
	if (store_open(path, &s) < 0)
		return 1;
	snprintf(t.name, sizeof(t.name), "bench");
	op.ca.created = now;
	snprintf(op.ca.cert, sizeof(op.ca.cert), "not read here");
	snprintf(op.ca.key_file, sizeof(op.ca.key_file), "1.key");
	if (store_tailnet_create(s, &t) < 0) {
		store_free(s);
		return 1;
	}
	op.ca.tailnet_id = t.id;
	if (store_write(s, &op, &ca_id) < 0 || fill(path, t.id, ca_id, n, now) < 0) {
		store_free(s);
		return 1;
	}
	tl = calloc((size_t)rounds, sizeof(*tl));
	td = calloc((size_t)rounds, sizeof(*td));
	if (!tl || !td)
		return 1;
	/* Warm both (the page cache, the prepared statements), then take turns. */
	tick_list(s, now, window);
	tick_due(s, now, window);
	for (long i = 0; i < rounds; i++) {
		double t0 = now_us();

		k_list = tick_list(s, now, window);
		tl[i] = now_us() - t0;
		t0 = now_us();
		k_due = tick_due(s, now, window);
		td[i] = now_us() - t0;
		if (k_list != k_due) {
			fprintf(stderr, "mcert_renew_bench: list found %d due, the query %d\n",
				k_list, k_due);
			return 1;
		}
	}
	qsort(tl, (size_t)rounds, sizeof(*tl), dbl_cmp);
	qsort(td, (size_t)rounds, sizeof(*td), dbl_cmp);
	printf("certs %ld\nwindow_sec %lld\ndue %d\nlist_us %.0f\ndue_us %.0f\n", n,
	       (long long)window, k_due, tl[rounds / 2], td[rounds / 2]);
	free(tl);
	free(td);
	store_free(s);
	return 0;
}
