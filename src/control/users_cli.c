/* SPDX-License-Identifier: MIT */
#include "control/users_cli.h"

#include <errno.h>
#include <qrencode.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "crypto/crypto.h"

#define PASSWORD_MIN 8

/* One line from fd 0 without its newline. Length, or -EINVAL (too long), -EIO (EOF). */
static int line_read(char *buf, size_t cap, const char *prompt, bool tty)
{
	struct termios old, quiet;
	size_t n;
	bool ok;

	if (tty) {
		fputs(prompt, stderr);
		fflush(stderr);
		tcgetattr(0, &old);
		quiet = old;
		quiet.c_lflag &= ~(tcflag_t)ECHO;
		tcsetattr(0, TCSAFLUSH, &quiet);
	}
	ok = fgets(buf, (int)cap, stdin) != NULL;
	if (tty) {
		tcsetattr(0, TCSAFLUSH, &old);
		fputc('\n', stderr);
	}
	if (!ok)
		return -EIO;
	n = strlen(buf);
	if (n && buf[n - 1] == '\n')
		buf[--n] = '\0';
	else if (n == cap - 1)
		return -EINVAL;
	if (n && buf[n - 1] == '\r')
		buf[--n] = '\0';
	return (int)n;
}

int users_cli_password_hash(const char *email, char ret[PASSWORD_HASH_MAX])
{
	struct password_params params = PASSWORD_PARAMS_DEFAULT;
	static char a[PASSWORD_MAX + 2], b[PASSWORD_MAX + 2];
	bool tty = isatty(0);
	char prompt[200];
	int n, r = -EINVAL;

	snprintf(prompt, sizeof(prompt), "password for %s: ", email);
	n = line_read(a, sizeof(a), prompt, tty);
	if (n == -EIO) {
		fprintf(stderr, "trellis-control: no password given (on stdin or a terminal)\n");
		r = -EIO;
		goto out;
	}
	if (n < 0 || n > PASSWORD_MAX) {
		fprintf(stderr, "trellis-control: the password is longer than %d bytes\n",
			PASSWORD_MAX);
		goto out;
	}
	if (n < PASSWORD_MIN) {
		fprintf(stderr, "trellis-control: the password needs at least %d characters\n",
			PASSWORD_MIN);
		goto out;
	}
	if (tty && (line_read(b, sizeof(b), "again: ", tty) < 0 || strcmp(a, b) != 0)) {
		fprintf(stderr, "trellis-control: the passwords differ\n");
		goto out;
	}
	r = password_hash(a, &params, ret);
	if (r < 0)
		fprintf(stderr, "trellis-control: cannot hash the password: %s\n", strerror(-r));
out:
	crypto_wipe(a, sizeof(a));
	crypto_wipe(b, sizeof(b));
	return r;
}

int users_cli_code_read(FILE *in, FILE *prompt, const char *email, char ret[USERS_CLI_CODE_MAX])
{
	size_t n = 0;
	bool long_line = false;
	int ch;

	if (prompt) {
		fprintf(prompt, "code from the authenticator app for %s (Enter: later): ", email);
		fflush(prompt);
	}
	while ((ch = fgetc(in)) != EOF && ch != '\n') {
		if (ch == ' ' || ch == '\t' || ch == '\r')
			continue;
		if (n + 1 < USERS_CLI_CODE_MAX)
			ret[n++] = (char)ch;
		else
			long_line = true;
	}
	ret[n] = '\0';
	if (ch == EOF && n == 0 && !long_line)
		return -EIO;
	if (long_line) {
		ret[0] = '\0';
		return -EINVAL;
	}
	return (int)n;
}

/* Module (x, y) of q, light outside the symbol (the quiet zone). */
static bool dark(const QRcode *q, int x, int y)
{
	return x >= 0 && y >= 0 && x < q->width && y < q->width && (q->data[y * q->width + x] & 1);
}

int users_cli_qr_print(FILE *f, const char *text, bool ansi)
{
	static const char *const cell[4] = {" ", "\u2580", "\u2584", "\u2588"};
	QRcode *q = QRcode_encodeString(text, 0, QR_ECLEVEL_M, QR_MODE_8, 1);
	int m = USERS_CLI_QR_MARGIN, r = 0;

	if (!q)
		return -EINVAL;
	for (int y = -m; y < q->width + m; y += 2) {
		if (ansi)
			fputs("\033[30;47m", f);
		for (int x = -m; x < q->width + m; x++)
			fputs(cell[dark(q, x, y) | dark(q, x, y + 1) << 1], f);
		fputs(ansi ? "\033[0m\n" : "\n", f);
	}
	if (ferror(f))
		r = -EIO;
	QRcode_free(q);
	return r;
}
