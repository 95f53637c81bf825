/* SPDX-License-Identifier: MIT */
#include <regex.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/log.h"

/* stderr goes to a temporary file for the test; its lines are read back. */
static int saved_stderr = -1;
static FILE *capture;

static int setup(void **state)
{
	(void)state;
	fflush(stderr);
	capture = tmpfile();
	assert_non_null(capture);
	saved_stderr = dup(STDERR_FILENO);
	assert_true(saved_stderr >= 0);
	assert_int_equal(dup2(fileno(capture), STDERR_FILENO), STDERR_FILENO);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	fflush(stderr);
	dup2(saved_stderr, STDERR_FILENO);
	close(saved_stderr);
	fclose(capture);
	unsetenv("JOURNAL_STREAM");
	log_set_prefix(NULL);
	return 0;
}

/* The captured output so far. */
static const char *captured(void)
{
	static char buf[4096];
	size_t n;

	fflush(stderr);
	rewind(capture);
	n = fread(buf, 1, sizeof(buf) - 1, capture);
	buf[n] = '\0';
	return buf;
}

static void assert_matches(const char *s, const char *re)
{
	regex_t r;

	assert_int_equal(regcomp(&r, re, REG_EXTENDED | REG_NOSUB), 0);
	if (regexec(&r, s, 0, NULL, 0) != 0)
		fail_msg("\"%s\" does not match /%s/", s, re);
	regfree(&r);
}

static void test_timestamped(void **state)
{
	(void)state;
	unsetenv("JOURNAL_STREAM");
	log_init();
	log_set_prefix("wg0");
	log_info("hello %d", 42);
	assert_matches(
	    captured(),
	    "^20[0-9]{2}-[01][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-6][0-9]\\.[0-9]{3}Z "
	    "wg0: info: hello 42\n$");
}

/* Under systemd, JOURNAL_STREAM names stderr: no time, the priority for journald. */
static void test_journal(void **state)
{
	struct stat st;
	char js[64];

	(void)state;
	assert_int_equal(fstat(STDERR_FILENO, &st), 0);
	snprintf(js, sizeof(js), "%llu:%llu", (unsigned long long)st.st_dev,
		 (unsigned long long)st.st_ino);
	setenv("JOURNAL_STREAM", js, 1);
	log_init();
	log_err("bad %s", "thing");
	log_warn("hmm");
	log_info("fine");
	assert_string_equal(captured(), "<3>error: bad thing\n<4>warning: hmm\n<6>info: fine\n");
}

/* A JOURNAL_STREAM inherited from elsewhere (stderr redirected since) is not believed. */
static void test_journal_other_stream(void **state)
{
	(void)state;
	setenv("JOURNAL_STREAM", "1:2", 1);
	log_init();
	log_info("x");
	assert_matches(captured(), "^20[0-9-]{8}T[0-9:.]{12}Z info: x\n$");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_timestamped, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_journal, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_journal_other_stream, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
