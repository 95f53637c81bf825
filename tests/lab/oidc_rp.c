// SPDX-License-Identifier: MIT
/*
 * oidc-rp: the relying party of src/oidc as a command, for lab/test_oidc's checks of
 * the library alone (lab/test_oidc_web tests the control server's login page). Each
 * command is one step of a login and goes through the library's own paths (the login's
 * end through the worker-pool job, as a server runs it):
 *
 *   oidc-rp OPTIONS discover                   discovery and JWKS
 *   oidc-rp OPTIONS begin REQUEST-FILE         a new request; prints its URL
 *   oidc-rp OPTIONS finish REQUEST-FILE QUERY  the callback's query -> identity
 *   oidc-rp OPTIONS verify NONCE TOKEN         an ID token -> identity
 *
 * OPTIONS: --issuer URL --client-id ID --secret-file F [--ca-file F] [--redirect-uri U]
 * [--allowed-domains LIST] [--allowed-groups LIST] [--allow-unverified-email]
 * [--timeout-ms N] [--token-auth M]
 * [--jwks-refetch-ns N]
 *
 * Prints "email=E verified=0|1 sub=S name=N" on success; the library's error on stderr
 * and exit 1 otherwise.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/loop.h"
#include "base/workq.h"
#include "oidc/client.h"

static int usage(void)
{
	fprintf(
	    stderr,
	    "usage: oidc-rp --issuer URL --client-id ID --secret-file F [--ca-file F]\n"
	    "  [--redirect-uri U] [--allowed-domains L] [--allowed-groups L]\n"
	    "  [--allow-unverified-email]\n"
	    "  [--timeout-ms N] discover | begin FILE | finish FILE QUERY | verify NONCE TOKEN\n");
	return 2;
}

static void print_identity(const struct oidc_identity *id)
{
	printf("email=%s verified=%d sub=%s name=%s\n", id->email, id->email_verified, id->sub,
	       id->name);
}

static int read_line(const char *path, char *buf, size_t cap)
{
	FILE *f = fopen(path, "r");
	size_t n;

	if (!f || !fgets(buf, (int)cap, f)) {
		if (f)
			fclose(f);
		return -1;
	}
	fclose(f);
	n = strcspn(buf, "\r\n");
	buf[n] = '\0';
	return 0;
}

static int request_save(const char *path, const struct oidc_request *r)
{
	FILE *f = fopen(path, "w");

	if (!f)
		return -1;
	fprintf(f, "%s\n%s\n%s\n", r->state, r->nonce, r->verifier);
	return fclose(f);
}

static int request_load(const char *path, struct oidc_request *r)
{
	FILE *f = fopen(path, "r");
	int n;

	memset(r, 0, sizeof(*r));
	if (!f)
		return -1;
	n = fscanf(f, "%43s %43s %43s", r->state, r->nonce, r->verifier);
	fclose(f);
	return n == 3 ? 0 : -1;
}

struct finish {
	struct oidc_finish_job j;
	struct loop *loop;
};

static void finish_done(struct oidc_finish_job *j, int err)
{
	struct finish *f = (struct finish *)j;

	(void)err;
	loop_stop(f->loop);
}

/* The login's end as the server runs it: on a worker, done back on the loop. */
static int finish(struct oidc_client *c, const struct oidc_request *req, const char *query)
{
	struct finish *f = calloc(1, sizeof(*f));
	struct workq *q = NULL;
	int r;

	f->loop = loop_new();
	if (!f->loop || workq_new(f->loop, 1, 4, &q) < 0 ||
	    oidc_finish_submit(q, &f->j, c, req, query, finish_done) < 0) {
		fprintf(stderr, "oidc-rp: cannot start the worker\n");
		return 1;
	}
	loop_run(f->loop);
	workq_free(q);
	r = f->j.r;
	if (r == 0)
		print_identity(&f->j.identity);
	else
		fprintf(stderr, "oidc-rp: %s\n", f->j.err);
	loop_free(f->loop);
	free(f);
	return r == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
	struct oidc_config cfg = {0};
	const char *secret_file = NULL;
	char secret[512], err[OIDC_ERR_MAX];
	struct oidc_client *c = NULL;
	struct oidc_identity id;
	struct oidc_request req;
	int i, r = 1;

	for (i = 1; i < argc && !strncmp(argv[i], "--", 2); i++) {
		const char **dst = NULL;

		if (!strcmp(argv[i], "--allow-unverified-email")) {
			cfg.allow_unverified_email = true;
			continue;
		}
		if (i + 1 >= argc)
			return usage();
		if (!strcmp(argv[i], "--issuer"))
			dst = &cfg.issuer;
		else if (!strcmp(argv[i], "--client-id"))
			dst = &cfg.client_id;
		else if (!strcmp(argv[i], "--secret-file"))
			dst = &secret_file;
		else if (!strcmp(argv[i], "--ca-file"))
			dst = &cfg.ca_file;
		else if (!strcmp(argv[i], "--redirect-uri"))
			dst = &cfg.redirect_uri;
		else if (!strcmp(argv[i], "--token-auth"))
			dst = &cfg.token_auth;
		else if (!strcmp(argv[i], "--allowed-domains"))
			dst = &cfg.allowed_domains;
		else if (!strcmp(argv[i], "--allowed-groups"))
			dst = &cfg.allowed_groups;
		else if (!strcmp(argv[i], "--jwks-refetch-ns"))
			cfg.jwks_refetch_ns = strtoull(argv[i + 1], NULL, 10);
		else if (!strcmp(argv[i], "--timeout-ms"))
			cfg.timeout_ms = (unsigned)atoi(argv[i + 1]);
		else
			return usage();
		if (dst)
			*dst = argv[i + 1];
		i++;
	}
	if (i >= argc || !secret_file || read_line(secret_file, secret, sizeof(secret)) < 0)
		return usage();
	cfg.client_secret = secret;
	if (oidc_client_new(&cfg, &c, err, sizeof(err)) < 0) {
		fprintf(stderr, "oidc-rp: %s\n", err);
		return 1;
	}
	if (!strcmp(argv[i], "discover") && argc == i + 1) {
		r = oidc_client_discover(c, err, sizeof(err)) < 0;
		if (!r)
			printf("discovered\n");
	} else if (!strcmp(argv[i], "begin") && argc == i + 2) {
		r = oidc_client_request_new(c, &req, err, sizeof(err)) < 0;
		if (!r && request_save(argv[i + 1], &req) < 0) {
			snprintf(err, sizeof(err), "cannot write %s", argv[i + 1]);
			r = 1;
		}
		if (!r)
			printf("%s\n", req.url);
	} else if (!strcmp(argv[i], "finish") && argc == i + 3) {
		if (request_load(argv[i + 1], &req) < 0) {
			fprintf(stderr, "oidc-rp: cannot read %s\n", argv[i + 1]);
			r = 1;
		} else {
			r = finish(c, &req, argv[i + 2]);
		}
		oidc_client_free(c);
		return r;
	} else if (!strcmp(argv[i], "verify") && argc == i + 3) {
		r = oidc_client_id_token_verify(c, argv[i + 2], argv[i + 1], &id, err,
						sizeof(err)) < 0;
		if (!r)
			print_identity(&id);
	} else {
		oidc_client_free(c);
		return usage();
	}
	if (r)
		fprintf(stderr, "oidc-rp: %s\n", err);
	oidc_client_free(c);
	return r;
}
