/* SPDX-License-Identifier: MIT */
/*
 * OpenSSL's error strings, loaded when the first TLS failure is told (dial.h,
 * dial_tls_reason). The process starts without them (src/crypto/crypto.c, issue 14):
 * once OpenSSL's initialisation has been told not to load them it never will, and the
 * per-library loaders, deprecated in OpenSSL 3 but kept, are the only way to load them
 * later. Only the libraries a TLS handshake reports from: the SSL library and what
 * certificate verification and record decoding use.
 */
#define OPENSSL_SUPPRESS_DEPRECATED /* ERR_load_*_strings: see above */
#include <pthread.h>
#include <stdio.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "net/dial.h"

static pthread_once_t strings_once = PTHREAD_ONCE_INIT;

static void strings_load(void)
{
	ERR_load_ERR_strings();
	ERR_load_SSL_strings();
	ERR_load_X509_strings();
	ERR_load_X509V3_strings();
	ERR_load_ASN1_strings();
	ERR_load_EVP_strings();
	ERR_load_PEM_strings();
	ERR_load_BIO_strings();
	ERR_load_CRYPTO_strings();
}

const char *dial_tls_reason(unsigned long e)
{
	static __thread char code[32];
	const char *s;

	pthread_once(&strings_once, strings_load);
	s = ERR_reason_error_string(e);
	if (s)
		return s;
	/* A library not loaded above: the code, for `openssl errstr`. */
	snprintf(code, sizeof(code), "OpenSSL error %08lX", e);
	return code;
}
