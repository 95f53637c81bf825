/* SPDX-License-Identifier: MIT */
/* The CLI side of the local API (docs/localapi.md): connect, one request line, reply lines. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "cli/cli.h"

#define LINE_MAX_BYTES (64U << 20)

const char *cli_socket_path(const struct cli_global *g)
{
	return g->socket_path ? g->socket_path : CLI_DEFAULT_SOCKET;
}

int cli_api_open(const char *cmd, const struct cli_global *g, json_t *req, struct cli_api **ret)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	const char *path = cli_socket_path(g);
	struct cli_api *api;
	char *text;
	size_t len, off = 0;
	int fd;

	if (strlen(path) >= sizeof(sun.sun_path)) {
		fprintf(stderr, "trellis: %s: socket path too long\n", cmd);
		return -ENAMETOOLONG;
	}
	strcpy(sun.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
		fprintf(stderr, "trellis: cannot reach trellisd at %s: is it running?\n", path);
		if (fd >= 0)
			close(fd);
		return -ECONNREFUSED;
	}
	text = json_dumps(req, JSON_COMPACT);
	if (!text) {
		close(fd);
		return -ENOMEM;
	}
	len = strlen(text);
	text[len++] = '\n'; /* json_dumps leaves room for the NUL we overwrite */
	while (off < len) {
		ssize_t n = send(fd, text + off, len - off, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			fprintf(stderr, "trellis: %s: sending to trellisd: %s\n", cmd,
				strerror(errno));
			free(text);
			close(fd);
			return -errno;
		}
		off += (size_t)n;
	}
	free(text);
	api = calloc(1, sizeof(*api));
	if (!api) {
		close(fd);
		return -ENOMEM;
	}
	api->fd = fd;
	api->cmd = cmd;
	*ret = api;
	return 0;
}

int cli_api_next(struct cli_api *api, json_t **ret)
{
	json_error_t jerr;
	json_t *msg;

	for (;;) {
		char *nl = api->buf ? memchr(api->buf, '\n', api->len) : NULL;
		ssize_t n;

		if (nl) {
			size_t line = (size_t)(nl - api->buf);

			msg = json_loadb(api->buf, line, 0, &jerr);
			memmove(api->buf, nl + 1, api->len - line - 1);
			api->len -= line + 1;
			if (!msg || !json_is_object(msg)) {
				json_decref(msg);
				fprintf(stderr, "trellis: %s: bad reply from trellisd\n", api->cmd);
				return -EBADMSG;
			}
			*ret = msg;
			return 0;
		}
		if (api->len == api->cap) {
			size_t cap = api->cap ? api->cap * 2 : 4096;
			char *b;

			if (cap > LINE_MAX_BYTES)
				return -EMSGSIZE;
			b = realloc(api->buf, cap);
			if (!b)
				return -ENOMEM;
			api->buf = b;
			api->cap = cap;
		}
		n = recv(api->fd, api->buf + api->len, api->cap - api->len, 0);
		if (n < 0 && errno == EINTR)
			continue;
		/* SO_RCVTIMEO (up --timeout) ran out. */
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			fprintf(stderr, "trellis: %s: timed out waiting for trellisd\n", api->cmd);
			return -ETIMEDOUT;
		}
		if (n <= 0) {
			fprintf(stderr, "trellis: %s: trellisd closed the connection\n", api->cmd);
			return n < 0 ? -errno : -ECONNRESET;
		}
		api->len += (size_t)n;
	}
}

void cli_api_free(struct cli_api *api)
{
	if (!api)
		return;
	close(api->fd);
	free(api->buf);
	free(api);
}

int cli_api_call(const char *cmd, const struct cli_global *g, json_t *req, json_t **ret)
{
	struct cli_api *api = NULL;
	json_t *msg = NULL;
	int r;

	r = cli_api_open(cmd, g, req, &api);
	if (r == 0)
		r = cli_api_next(api, &msg);
	cli_api_free(api);
	if (r < 0)
		return r;
	if (!json_is_true(json_object_get(msg, "ok"))) {
		json_t *e = json_object_get(msg, "error");

		fprintf(stderr, "trellis: %s: %s\n", cmd,
			json_is_string(e) ? json_string_value(e) : "failed");
		json_decref(msg);
		return -EIO;
	}
	*ret = msg;
	return 0;
}

int cli_status_call(const char *cmd, const struct cli_global *g, json_t **ret)
{
	json_t *req = json_pack("{s:s}", "cmd", "status");
	int r = req ? cli_api_call(cmd, g, req, ret) : -ENOMEM;

	json_decref(req);
	return r;
}
