// SPDX-License-Identifier: MIT
/* The MSG_NOSIGNAL socket BIO (see sockbio.h). */
#include <errno.h>
#include <openssl/bio.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/socket.h>

#include "net/sockbio.h"

static int bio_sock_write(BIO *b, const char *data, size_t len, size_t *written)
{
	ssize_t n;

	BIO_clear_retry_flags(b);
	n = send((int)(intptr_t)BIO_get_data(b), data, len, MSG_NOSIGNAL);
	if (n < 0) {
		if (errno == EAGAIN || errno == EINTR)
			BIO_set_retry_write(b);
		return 0;
	}
	*written = (size_t)n;
	return 1;
}

static int bio_sock_read(BIO *b, char *data, size_t len, size_t *readbytes)
{
	ssize_t n;

	BIO_clear_retry_flags(b);
	n = recv((int)(intptr_t)BIO_get_data(b), data, len, 0);
	if (n < 0) {
		if (errno == EAGAIN || errno == EINTR)
			BIO_set_retry_read(b);
		return 0;
	}
	if (n == 0)
		BIO_set_flags(b, BIO_FLAGS_IN_EOF);
	*readbytes = (size_t)n;
	return n > 0;
}

static long bio_sock_ctrl(BIO *b, int cmd, long num, void *ptr)
{
	(void)num;
	(void)ptr;
	switch (cmd) {
	case BIO_CTRL_FLUSH:
		return 1;
	case BIO_CTRL_EOF:
		return BIO_test_flags(b, BIO_FLAGS_IN_EOF) != 0;
	default:
		return 0; /* nothing else (no kTLS, no push/pop) */
	}
}

static int bio_sock_create(BIO *b)
{
	BIO_set_init(b, 1);
	return 1;
}

static BIO_METHOD *bio_sock_method;
static pthread_once_t bio_sock_once = PTHREAD_ONCE_INIT;

static void bio_sock_method_make(void)
{
	BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "trellis socket");

	if (!m)
		return;
	if (!BIO_meth_set_write_ex(m, bio_sock_write) || !BIO_meth_set_read_ex(m, bio_sock_read) ||
	    !BIO_meth_set_ctrl(m, bio_sock_ctrl) || !BIO_meth_set_create(m, bio_sock_create)) {
		BIO_meth_free(m);
		return;
	}
	bio_sock_method = m; /* lives as long as the process */
}

BIO *sockbio_new(int fd)
{
	BIO *b;

	pthread_once(&bio_sock_once, bio_sock_method_make);
	if (!bio_sock_method)
		return NULL;
	b = BIO_new(bio_sock_method);
	if (b)
		BIO_set_data(b, (void *)(intptr_t)fd);
	return b;
}
