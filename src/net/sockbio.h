/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_NET_SOCKBIO_H
#define TRELLIS_NET_SOCKBIO_H

/*
 * An OpenSSL BIO over a socket that sends with MSG_NOSIGNAL. OpenSSL's own
 * socket BIO writes with write(), which raises SIGPIPE when the peer has reset
 * the connection: one client that closes at the right moment would kill the
 * process. Both ends of TLS (dial.c, httpd.c) use this one.
 */

struct bio_st;

/* A BIO over fd (the socket is not closed with the BIO), or NULL. Thread safe. */
struct bio_st *sockbio_new(int fd);

#endif
