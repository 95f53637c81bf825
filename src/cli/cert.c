/* SPDX-License-Identifier: MIT */
/*
 * trellis cert request | install FILE|-: the node's machine certificate (docs/identity.md).
 * trellisd makes the key and the CSR in its state directory (the key never leaves it) and
 * checks a signed certificate before it keeps it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

#define PEM_MAX 8192

static int pem_read(const char *path, char *buf, size_t cap, size_t *ret_len)
{
	FILE *f = strcmp(path, "-") ? fopen(path, "r") : stdin;
	size_t n;

	if (!f) {
		fprintf(stderr, "trellis: cert install: cannot open %s\n", path);
		return -1;
	}
	n = fread(buf, 1, cap, f);
	if (f != stdin)
		fclose(f);
	if (n == 0 || n == cap) {
		fprintf(stderr, "trellis: cert install: %s: %s\n", path,
			n ? "too large for a certificate" : "empty");
		return -1;
	}
	*ret_len = n;
	return 0;
}

int cli_cert(int argc, char **argv, const struct cli_global *g)
{
	json_t *req = NULL, *reply = NULL;
	char *pem = NULL;
	size_t len;
	int r = -1;

	if (argc < 2 || (strcmp(argv[1], "request") && strcmp(argv[1], "install")))
		return cli_usage_error(argc, argv, argc < 2 ? argc : 1);
	if (!strcmp(argv[1], "request")) {
		if (argc != 2)
			return cli_usage_error(argc, argv, 2);
		req = json_pack("{s:s}", "cmd", "cert_request");
		r = req ? cli_api_call("cert request", g, req, &reply) : -1;
		if (r == 0)
			fputs(json_string_value(json_object_get(reply, "csr")) ?: "", stdout);
		goto out;
	}
	if (argc != 3)
		return cli_usage_error(argc, argv, argc < 3 ? argc : 3);
	pem = malloc(PEM_MAX);
	if (!pem || pem_read(argv[2], pem, PEM_MAX, &len) < 0)
		goto out;
	req = json_pack("{s:s, s:s%}", "cmd", "cert_install", "cert", pem, len);
	r = req ? cli_api_call("cert install", g, req, &reply) : -1;
	if (r == 0)
		fprintf(stderr,
			"trellis: certificate installed; the next registration presents it\n");
out:
	free(pem);
	json_decref(req);
	json_decref(reply);
	return r < 0 ? 1 : 0;
}
