/* SPDX-License-Identifier: MIT */
/*
 * The state directory (see state.h for the files). Keys are created on first
 * start; a key rotation is node.key.next until the server confirms it, so a
 * crash mid-rotation retries with the same pending key instead of losing the
 * identity the server knows.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/base64.h"
#include "base/log.h"
#include "crypto/crypto.h"
#include "node/state.h"
#include "proto/ctrlmsg.h"

/* prefs.json is tiny; the netmap cache is at most one control message. */
#define PREFS_MAX (64U << 10)
#define KEY_FILE_MAX 128
#define PATH_FILE_MAX 1024

struct state {
	char dir[PATH_MAX / 2];
	uint8_t machine_key[X25519_KEY_LEN];
	uint8_t node_key[X25519_KEY_LEN];
	uint8_t audit_key[ED25519_KEY_LEN], audit_pub[ED25519_KEY_LEN];
	uint8_t next_key[X25519_KEY_LEN];
	bool has_next_key;
	uint8_t disco_key[X25519_KEY_LEN];
	struct state_path path;
	struct state_prefs prefs;
	uint64_t netmap_saved_ns; /* 0 = never */
	bool netmap_dirty;
};

static int path_of(char *buf, size_t len, const struct state *st, const char *name)
{
	int n = snprintf(buf, len, "%s/%s", st->dir, name);

	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

static int fsync_dir_of(const char *path)
{
	char dir[PATH_MAX];
	char *slash;
	int fd, ret = 0;

	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	if (!slash)
		strcpy(dir, ".");
	else if (slash == dir)
		dir[1] = '\0';
	else
		*slash = '\0';
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fsync(fd) < 0)
		ret = -errno;
	close(fd);
	return ret;
}

int state_file_write_atomic(const char *path, const void *data, size_t len, unsigned mode)
{
	char tmp[PATH_MAX];
	const char *p = data;
	int fd = -1, ret;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
	if (fd < 0)
		return -errno;
	/* O_CREAT does not change the mode of a leftover temp file. */
	if (fchmod(fd, mode) < 0)
		goto fail;
	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			goto fail;
		p += n;
		len -= (size_t)n;
	}
	if (fsync(fd) < 0)
		goto fail;
	if (close(fd) < 0) {
		fd = -1;
		goto fail;
	}
	fd = -1;
	if (rename(tmp, path) < 0)
		goto fail;
	return fsync_dir_of(path);
fail:
	ret = -errno;
	if (fd >= 0)
		close(fd);
	unlink(tmp);
	return ret;
}

/* Whole file into a malloc'd NUL-terminated buffer of at most max bytes. */
static int file_read(const char *path, size_t max, char **ret, size_t *ret_len)
{
	char *buf = NULL;
	size_t len = 0;
	int fd, err;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	buf = malloc(max + 1);
	if (!buf) {
		err = -ENOMEM;
		goto out;
	}
	for (;;) {
		ssize_t n = read(fd, buf + len, max + 1 - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			err = -errno;
			goto out;
		}
		if (n == 0)
			break;
		len += (size_t)n;
		if (len > max) {
			err = -EFBIG;
			goto out;
		}
	}
	buf[len] = '\0';
	*ret = buf;
	*ret_len = len;
	buf = NULL;
	err = 0;
out:
	if (buf) {
		crypto_wipe(buf, max + 1);
		free(buf);
	}
	close(fd);
	return err;
}

int state_file_read(const char *path, size_t max, char **ret, size_t *ret_len)
{
	return file_read(path, max, ret, ret_len);
}

static int key_load(const char *path, uint8_t ret_key[X25519_KEY_LEN])
{
	char *buf = NULL;
	size_t len = 0;
	int r;

	r = file_read(path, KEY_FILE_MAX, &buf, &len);
	if (r == -EFBIG)
		r = -EBADMSG;
	if (r < 0)
		return r;
	while (len && (buf[len - 1] == '\n' || buf[len - 1] == '\r' || buf[len - 1] == ' '))
		buf[--len] = '\0';
	r = key_from_base64(ret_key, buf) < 0 ? -EBADMSG : 0;
	crypto_wipe(buf, len);
	free(buf);
	return r;
}

static int key_store(const char *path, const uint8_t key[X25519_KEY_LEN])
{
	char text[KEY_BASE64_LEN + 2];
	int r;

	key_to_base64(text, key);
	text[KEY_BASE64_LEN] = '\n';
	text[KEY_BASE64_LEN + 1] = '\0';
	r = state_file_write_atomic(path, text, KEY_BASE64_LEN + 1, 0600);
	crypto_wipe(text, sizeof(text));
	return r;
}

/* Loads path, or creates a new key there if it does not exist. */
static int key_load_or_create(const char *path, uint8_t ret_key[X25519_KEY_LEN],
			      int (*generate)(uint8_t ret_priv[32]))
{
	uint8_t key[X25519_KEY_LEN];
	int r;

	r = key_load(path, ret_key);
	if (r == -EBADMSG)
		log_err("state: %s: not a base64 private key (remove it to make a new "
			"identity)",
			path);
	if (r != -ENOENT)
		return r;
	r = generate(key);
	if (r < 0)
		return r;
	r = key_store(path, key);
	if (r < 0) {
		log_err("state: %s: %s", path, strerror(-r));
	} else {
		memcpy(ret_key, key, sizeof(key));
		log_info("state: created %s", path);
	}
	crypto_wipe(key, sizeof(key));
	return r;
}

static void copy_str(char *dst, size_t cap, const char *src)
{
	snprintf(dst, cap, "%s", src ? src : "");
}

static int prefs_load(struct state *st)
{
	char path[PATH_MAX];
	json_error_t jerr;
	json_t *root = NULL, *v;
	char *buf = NULL;
	size_t len = 0;
	int r;

	r = path_of(path, sizeof(path), st, "prefs.json");
	if (r < 0)
		return r;
	r = file_read(path, PREFS_MAX, &buf, &len);
	if (r == -ENOENT)
		return 0; /* first start: defaults */
	if (r < 0) {
		log_err("state: %s: %s", path, r == -EFBIG ? "too large" : strerror(-r));
		return r == -EFBIG ? -EBADMSG : r;
	}
	root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root || !json_is_object(root)) {
		log_err("state: %s:%d: %s (remove the file to reset the preferences)", path,
			root ? 1 : jerr.line, root ? "not a JSON object" : jerr.text);
		r = -EBADMSG;
		goto out;
	}
#define GET_STR(name, field)                                                                       \
	do {                                                                                       \
		v = json_object_get(root, name);                                                   \
		if (v && !json_is_string(v))                                                       \
			goto bad;                                                                  \
		if (v && json_string_length(v) >= sizeof(st->prefs.field))                         \
			goto bad;                                                                  \
		copy_str(st->prefs.field, sizeof(st->prefs.field), v ? json_string_value(v) : ""); \
	} while (0)
	GET_STR("login_server", login_server);
	GET_STR("hostname", hostname);
	GET_STR("last_error", last_error);
#undef GET_STR
	v = json_object_get(root, "want_up");
	if (v && !json_is_boolean(v))
		goto bad;
	st->prefs.want_up = v && json_is_true(v);
	v = json_object_get(root, "registered");
	if (v && !json_is_boolean(v))
		goto bad;
	st->prefs.registered = v && json_is_true(v);
	v = json_object_get(root, "node_id");
	if (v && (!json_is_integer(v) || json_integer_value(v) < 0))
		goto bad;
	st->prefs.node_id = v ? (uint64_t)json_integer_value(v) : 0;
	r = 0;
	goto out;
bad:
	log_err("state: %s: a field has the wrong type or is too long (remove the file to reset "
		"the preferences)",
		path);
	memset(&st->prefs, 0, sizeof(st->prefs));
	r = -EBADMSG;
out:
	json_decref(root);
	free(buf);
	return r;
}

/* Writes root (consumed; NULL: -ENOMEM) to the file name, mode 0600, and wipes the text. */
static int json_file_write(struct state *st, const char *name, json_t *root)
{
	char *text = root ? json_dumps(root, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
	char path[PATH_MAX];
	int r;

	json_decref(root);
	if (!text)
		return -ENOMEM;
	r = path_of(path, sizeof(path), st, name);
	if (r == 0)
		r = state_file_write_atomic(path, text, strlen(text), 0600);
	if (r < 0)
		log_err("state: %s/%s: %s", st->dir, name, strerror(-r));
	crypto_wipe(text, strlen(text));
	free(text);
	return r;
}

int state_prefs_save(struct state *st, const struct state_prefs *prefs)
{
	json_t *root;

	if (prefs != &st->prefs)
		st->prefs = *prefs;
	root = json_pack("{s:s, s:s, s:b, s:b, s:I, s:s}", "login_server",
			 st->prefs.login_server, "hostname", st->prefs.hostname, "want_up",
			 st->prefs.want_up, "registered", st->prefs.registered, "node_id",
			 (json_int_t)st->prefs.node_id, "last_error", st->prefs.last_error);
	return json_file_write(st, "prefs.json", root);
}

/* path.json: {"disco_key": base64 private key, "home_region": N, "mapping_varies": B}. */
static int path_write(struct state *st)
{
	char key[KEY_BASE64_LEN + 1];
	json_t *root;

	key_to_base64(key, st->disco_key);
	root =
	    json_pack("{s:s, s:I, s:b}", "disco_key", key, "home_region",
		      (json_int_t)st->path.home_region, "mapping_varies", st->path.mapping_varies);
	crypto_wipe(key, sizeof(key));
	return json_file_write(st, "path.json", root);
}

/* 0 when path.json was read whole; -ENOENT; -EBADMSG (why is logged); -errno. */
static int path_read(struct state *st, const char *path)
{
	struct state_path p = {0};
	uint8_t key[X25519_KEY_LEN];
	json_error_t jerr;
	json_t *root = NULL, *v;
	char *buf = NULL;
	size_t len = 0;
	int r;

	r = file_read(path, PATH_FILE_MAX, &buf, &len);
	if (r == -EFBIG) {
		log_warn("state: %s: too large", path);
		return -EBADMSG;
	}
	if (r < 0)
		return r;
	root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root || !json_is_object(root)) {
		log_warn("state: %s:%d: %s", path, root ? 1 : jerr.line,
			 root ? "not a JSON object" : jerr.text);
		goto bad;
	}
	v = json_object_get(root, "disco_key");
	if (!json_is_string(v) || key_from_base64(key, json_string_value(v)) < 0) {
		log_warn("state: %s: disco_key is not a base64 private key", path);
		goto bad;
	}
	v = json_object_get(root, "home_region");
	if (v && (!json_is_integer(v) || json_integer_value(v) < 0 ||
		  json_integer_value(v) > UINT32_MAX)) {
		log_warn("state: %s: home_region is not a region id", path);
		goto bad;
	}
	p.home_region = v ? (uint32_t)json_integer_value(v) : 0;
	v = json_object_get(root, "mapping_varies");
	if (v && !json_is_boolean(v)) {
		log_warn("state: %s: mapping_varies is not true or false", path);
		goto bad;
	}
	p.mapping_varies = v && json_is_true(v);
	memcpy(st->disco_key, key, sizeof(key));
	st->path = p;
	r = 0;
	goto out;
bad:
	r = -EBADMSG;
out:
	crypto_wipe(key, sizeof(key));
	json_decref(root);
	crypto_wipe(buf, len);
	free(buf);
	return r;
}

/* Reads path.json; missing or corrupt: a new disco key and nothing known, written at once. */
static int path_load(struct state *st)
{
	char path[PATH_MAX];
	int r;

	r = path_of(path, sizeof(path), st, "path.json");
	if (r < 0)
		return r;
	r = path_read(st, path);
	if (r == 0)
		return 0;
	if (r != -ENOENT && r != -EBADMSG)
		log_warn("state: %s: %s", path, strerror(-r));
	if (r == -EBADMSG)
		log_warn("state: %s: corrupt, starting with a new disco key", path);
	memset(&st->path, 0, sizeof(st->path));
	r = x25519_private_generate(st->disco_key);
	if (r < 0)
		return r;
	/* Not fatal: the daemon runs with this key, only a restart would lose it. */
	path_write(st);
	return 0;
}

const uint8_t *state_disco_key(const struct state *st)
{
	return st->disco_key;
}

const struct state_path *state_path(const struct state *st)
{
	return &st->path;
}

int state_path_save(struct state *st, const struct state_path *p)
{
	if (p->home_region == st->path.home_region && p->mapping_varies == st->path.mapping_varies)
		return 0;
	st->path = *p;
	return path_write(st);
}

static int mkdir_p(const char *dir, mode_t mode)
{
	char buf[PATH_MAX];
	char *p;

	if (snprintf(buf, sizeof(buf), "%s", dir) >= (int)sizeof(buf))
		return -ENAMETOOLONG;
	for (p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, 0755) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(buf, mode) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

int state_open(const char *dir, struct state **ret)
{
	char path[PATH_MAX];
	struct state *st;
	int r;

	st = calloc(1, sizeof(*st));
	if (!st)
		return -ENOMEM;
	if (!dir || !*dir || strlen(dir) >= sizeof(st->dir)) {
		r = -EINVAL;
		goto fail;
	}
	strcpy(st->dir, dir);
	r = mkdir_p(dir, 0700);
	/* The keys are in here: tighten an existing directory too. */
	if (r == 0 && chmod(dir, 0700) < 0)
		r = -errno;
	if (r < 0) {
		log_err("state: %s: %s", dir, strerror(-r));
		goto fail;
	}
	if ((r = path_of(path, sizeof(path), st, "machine.key")) < 0 ||
	    (r = key_load_or_create(path, st->machine_key, x25519_private_generate)) < 0)
		goto fail;
	if ((r = path_of(path, sizeof(path), st, "node.key")) < 0 ||
	    (r = key_load_or_create(path, st->node_key, x25519_private_generate)) < 0)
		goto fail;
	if ((r = path_of(path, sizeof(path), st, "audit.key")) < 0 ||
	    (r = key_load_or_create(path, st->audit_key, ed25519_private_generate)) < 0 ||
	    (r = ed25519_public_from_private(st->audit_pub, st->audit_key)) < 0)
		goto fail;
	if ((r = path_of(path, sizeof(path), st, "node.key.next")) < 0)
		goto fail;
	r = key_load(path, st->next_key);
	if (r == 0) {
		st->has_next_key = true;
	} else if (r == -EBADMSG) {
		/* Never confirmed, so nothing depends on it: start the rotation over. */
		log_warn("state: %s: corrupt, discarding the pending key rotation", path);
		unlink(path);
	} else if (r != -ENOENT) {
		goto fail;
	}
	r = prefs_load(st);
	if (r < 0)
		goto fail;
	r = path_load(st);
	if (r < 0)
		goto fail;
	*ret = st;
	return 0;
fail:
	state_free(st);
	return r;
}

void state_free(struct state *st)
{
	if (!st)
		return;
	crypto_wipe(st, sizeof(*st));
	free(st);
}

const char *state_dir(const struct state *st)
{
	return st->dir;
}

const uint8_t *state_machine_key(const struct state *st)
{
	return st->machine_key;
}

const uint8_t *state_node_key(const struct state *st)
{
	return st->node_key;
}

const uint8_t *state_audit_key(const struct state *st)
{
	return st->audit_key;
}

const uint8_t *state_audit_pub(const struct state *st)
{
	return st->audit_pub;
}

const uint8_t *state_node_key_pending(const struct state *st)
{
	return st->has_next_key ? st->next_key : NULL;
}

int state_node_key_rotate_begin(struct state *st, const uint8_t **ret_key)
{
	char path[PATH_MAX];
	uint8_t key[X25519_KEY_LEN];
	int r;

	if (!st->has_next_key) {
		if ((r = path_of(path, sizeof(path), st, "node.key.next")) < 0)
			return r;
		if ((r = x25519_private_generate(key)) < 0)
			return r;
		r = key_store(path, key);
		if (r == 0) {
			memcpy(st->next_key, key, sizeof(key));
			st->has_next_key = true;
		}
		crypto_wipe(key, sizeof(key));
		if (r < 0)
			return r;
	}
	*ret_key = st->next_key;
	return 0;
}

int state_node_key_rotate_commit(struct state *st)
{
	char from[PATH_MAX], to[PATH_MAX];
	int r;

	if (!st->has_next_key)
		return -ENOENT;
	if ((r = path_of(from, sizeof(from), st, "node.key.next")) < 0 ||
	    (r = path_of(to, sizeof(to), st, "node.key")) < 0)
		return r;
	if (rename(from, to) < 0)
		return -errno;
	r = fsync_dir_of(to);
	memcpy(st->node_key, st->next_key, X25519_KEY_LEN);
	crypto_wipe(st->next_key, sizeof(st->next_key));
	st->has_next_key = false;
	return r;
}

int state_node_key_rotate_abort(struct state *st)
{
	char path[PATH_MAX];
	int r;

	if (!st->has_next_key)
		return 0;
	if ((r = path_of(path, sizeof(path), st, "node.key.next")) < 0)
		return r;
	if (unlink(path) < 0 && errno != ENOENT)
		return -errno;
	crypto_wipe(st->next_key, sizeof(st->next_key));
	st->has_next_key = false;
	return fsync_dir_of(path);
}

const struct state_prefs *state_prefs(const struct state *st)
{
	return &st->prefs;
}

int state_netmap_load(struct state *st, struct netmap **ret)
{
	struct ctrl_msg m = {0};
	char path[PATH_MAX];
	char *buf = NULL;
	size_t len = 0;
	int r;

	if ((r = path_of(path, sizeof(path), st, "netmap.json")) < 0)
		return r;
	r = file_read(path, CTRL_MSG_MAX, &buf, &len);
	if (r == -EFBIG)
		r = -EBADMSG;
	if (r < 0) {
		if (r != -ENOENT)
			log_warn("state: %s: %s", path, strerror(-r));
		return r;
	}
	r = ctrl_msg_decode(buf, len, &m);
	free(buf);
	if (r < 0 || m.type != CTRL_MSG_NETMAP || !m.netmap) {
		log_warn("state: %s: not a cached netmap, ignoring it", path);
		ctrl_msg_clear(&m);
		return r == -ENOMEM ? r : -EBADMSG;
	}
	*ret = m.netmap;
	m.netmap = NULL;
	m.type = CTRL_MSG_UNKNOWN;
	return 0;
}

static int netmap_write(struct state *st, const struct netmap *nm, uint64_t now_ns)
{
	struct ctrl_msg m = {.type = CTRL_MSG_NETMAP};
	char path[PATH_MAX];
	char *text = NULL;
	size_t len = 0;
	int r;

	if ((r = path_of(path, sizeof(path), st, "netmap.json")) < 0)
		return r;
	/* The message does not own nm here: no ctrl_msg_clear. */
	m.netmap = (struct netmap *)nm;
	r = ctrl_msg_encode(&m, &text, &len);
	if (r < 0)
		return r;
	r = state_file_write_atomic(path, text, len, 0600);
	free(text);
	if (r < 0) {
		log_warn("state: %s: %s", path, strerror(-r));
		return r;
	}
	st->netmap_saved_ns = now_ns ? now_ns : 1;
	st->netmap_dirty = false;
	return 0;
}

int64_t state_netmap_save(struct state *st, const struct netmap *nm, uint64_t now_ns)
{
	uint64_t due = st->netmap_saved_ns + STATE_NETMAP_SAVE_INTERVAL_NS;

	if (!st->netmap_saved_ns || now_ns >= due)
		return netmap_write(st, nm, now_ns);
	st->netmap_dirty = true;
	return (int64_t)due;
}

int state_netmap_flush(struct state *st, const struct netmap *nm, uint64_t now_ns)
{
	if (!st->netmap_dirty)
		return 0;
	return netmap_write(st, nm, now_ns);
}

int state_netmap_remove(struct state *st)
{
	char path[PATH_MAX];
	int r;

	if ((r = path_of(path, sizeof(path), st, "netmap.json")) < 0)
		return r;
	st->netmap_dirty = false;
	if (unlink(path) < 0)
		return errno == ENOENT ? 0 : -errno;
	return fsync_dir_of(path);
}
