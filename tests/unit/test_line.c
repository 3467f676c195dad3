/*
 * test_line.c - unit tests for relay/line.c (the strict CRLF line reader).
 *
 * Each case is a byte stream and a line buffer size; the driver reads every
 * line out of it (skipping over-long ones as a session would) and writes a
 * transcript: "OK:<line>", "LF:<line>" (bare LF), "LONG" (too long, skipped),
 * and at the end "PARTIAL" (bytes left for a later line) or "SKIPPING" (an
 * over-long line still going on).  Every case runs on the whole buffer and
 * fed 1, 2, 3 and 7 bytes at a time: the transcripts must be the same.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <event2/buffer.h>

#include "relay/line.h"

#define TR_MAX 8192

struct line_case {
	const char *name;
	const char *in;
	size_t len;
	size_t max;
	const char *want;  /* transcript, non-printables as \xHH */
};

#define S(x) x, sizeof(x) - 1

static const struct line_case line_cases[] = {
	{ "command", S("HELO a\r\n"), 512, "OK:HELO a" },
	{ "empty input", S(""), 512, "" },
	{ "empty line", S("\r\n"), 512, "OK:" },
	{ "two lines", S("a\r\nb\r\n"), 512, "OK:a|OK:b" },
	{ "pipelined partial", S("a\r\nbc"), 512, "OK:a|PARTIAL" },
	{ "partial with CR", S("abc\r"), 512, "PARTIAL" },
	{ "bare LF then CRLF", S("a\nb\r\n"), 512, "LF:a|OK:b" },
	{ "lone LF", S("\n"), 512, "LF:" },
	{ "CR CR LF", S("a\r\r\n"), 512, "OK:a\\x0d" },
	{ "CR inside line", S("a\rb\r\n"), 512, "OK:a\\x0db" },
	{ "NUL inside line", S("a\0b\r\n"), 512, "OK:a\\x00b" },
	{ "NUL only", S("\0\r\n"), 512, "OK:\\x00" },
	{ "8-bit", S("\xff\xfe\r\n"), 512, "OK:\\xff\\xfe" },
	{ "smuggle LF.LF", S("\n.\n"), 512, "LF:|LF:." },
	{ "smuggle CR.CRLF", S("\r.\r\n"), 512, "OK:\\x0d." },
	{ "smuggle CRLF.LF", S("\r\n.\n"), 512, "OK:|LF:." },
	{ "smuggle LF.CRLF", S("\n.\r\n"), 512, "LF:|OK:." },
	{ "data then LF.LF", S("QUIT\n.\r\n"), 512, "LF:QUIT|OK:." },
	{ "max fits", S("abc\r\n"), 4, "OK:abc" },
	{ "max fits bare LF", S("abc\n"), 4, "LF:abc" },
	{ "one over", S("abcd\r\n"), 4, "LONG" },
	{ "one over bare LF", S("abcd\n"), 4, "LONG" },
	{ "over then next", S("abcd\r\nxy\r\n"), 4, "LONG|OK:xy" },
	{ "over LF then next", S("abcd\nxy\r\n"), 4, "LONG|OK:xy" },
	{ "over no end", S("abcdefgh"), 4, "LONG|SKIPPING" },
	{ "CR at limit then junk", S("abc\rX\r\nok\r\n"), 4, "LONG|OK:ok" },
	{ "CR at limit", S("abc\r"), 4, "PARTIAL" },
	{ "max 1 empty", S("\r\n"), 1, "OK:" },
	{ "max 1 char", S("a\r\n"), 1, "LONG" },
	{ "max 0", S("a\r\n"), 0, "LONG" },
	{ "max 0 empty", S(""), 0, "" },
	{ "long then many", S("aaaaaaaaaa\r\nb\r\nc\nd\r\n"), 5, "LONG|OK:b|LF:c|OK:d" },
	{ "two long", S("aaaaaaa\r\nbbbbbbbbb\r\nc\r\n"), 5, "LONG|LONG|OK:c" },
	{ "long split CRLF", S("aaaaa\r\r\n\r\n"), 5, "LONG|OK:" },
};

/* tr_add - append a token to the transcript, escaping non-printables. */
static void
tr_add(char *tr, const char *tok, const char *data, size_t n)
{
	size_t len = strlen(tr), i;

	if (len > 0)
		len += (size_t)snprintf(tr + len, TR_MAX - len, "|");
	len += (size_t)snprintf(tr + len, TR_MAX - len, "%s", tok);
	for (i = 0; i < n && len < TR_MAX - 8; i++) {
		unsigned char c = (unsigned char)data[i];

		if (c >= 0x20 && c < 0x7f)
			tr[len++] = (char)c;
		else
			len += (size_t)snprintf(tr + len, TR_MAX - len, "\\x%02x", c);
	}
	tr[len] = '\0';
}

/* line_drain - read every complete line from buf; returns the new skip flag. */
static int
line_drain(struct evbuffer *buf, size_t max, int skipping, char *tr)
{
	char out[4096];
	size_t len;
	enum line_status st;

	for (;;) {
		if (skipping) {
			if (!line_skip(buf))
				return 1;
			skipping = 0;
			continue;
		}
		st = line_read(buf, out, max, &len);
		if (st == LINE_NEED_MORE)
			return 0;
		if (st == LINE_TOO_LONG) {
			tr_add(tr, "LONG", "", 0);
			skipping = 1;
			continue;
		}
		assert_true(len < max);
		assert_int_equal(out[len], '\0');
		tr_add(tr, st == LINE_OK ? "OK:" : "LF:", out, len);
	}
}

/* line_run - feed c->in in chunks of chunk bytes, transcript into tr. */
static void
line_run(const struct line_case *c, size_t chunk, char *tr)
{
	struct evbuffer *buf = evbuffer_new();
	size_t off, n;
	int skipping = 0;

	assert_non_null(buf);
	tr[0] = '\0';
	for (off = 0; off < c->len; off += n) {
		n = c->len - off < chunk ? c->len - off : chunk;
		evbuffer_add(buf, c->in + off, n);
		skipping = line_drain(buf, c->max, skipping, tr);
	}
	if (skipping)
		tr_add(tr, "SKIPPING", "", 0);
	else if (evbuffer_get_length(buf) > 0)
		tr_add(tr, "PARTIAL", "", 0);
	evbuffer_free(buf);
}

static void
test_line_cases(void **state)
{
	static const size_t chunks[] = { SIZE_MAX, 1, 2, 3, 7 };
	static char tr[TR_MAX];
	size_t i, k;
	int failed = 0;

	(void)state;
	for (i = 0; i < sizeof(line_cases) / sizeof(line_cases[0]); i++) {
		for (k = 0; k < sizeof(chunks) / sizeof(chunks[0]); k++) {
			line_run(&line_cases[i], chunks[k], tr);
			if (strcmp(tr, line_cases[i].want) == 0)
				continue;
			print_error("%s (chunk %zu, 0 = whole): got \"%s\", want \"%s\"\n",
			    line_cases[i].name, chunks[k] == SIZE_MAX ? 0 : chunks[k],
			    tr, line_cases[i].want);
			failed++;
		}
	}
	assert_int_equal(failed, 0);
}

/* A NUL inside a line is copied: callers compare strlen() with *len. */
static void
test_line_nul_visible(void **state)
{
	struct evbuffer *buf = evbuffer_new();
	char out[16];
	size_t len;

	(void)state;
	evbuffer_add(buf, "MAIL\0x\r\n", 8);
	assert_int_equal(line_read(buf, out, sizeof(out), &len), LINE_OK);
	assert_int_equal(len, 6);
	assert_int_equal(strlen(out), 4);
	evbuffer_free(buf);
}

/* An over-long line is left in place until line_skip() removes it. */
static void
test_line_too_long_keeps_input(void **state)
{
	struct evbuffer *buf = evbuffer_new();
	char out[4];
	size_t len = 99;

	(void)state;
	evbuffer_add(buf, "abcdef\r\nok\r\n", 12);
	assert_int_equal(line_read(buf, out, sizeof(out), &len), LINE_TOO_LONG);
	assert_int_equal(len, 0);
	assert_int_equal(evbuffer_get_length(buf), 12);
	assert_int_equal(line_skip(buf), 1);
	assert_int_equal(evbuffer_get_length(buf), 4);
	assert_int_equal(line_read(buf, out, sizeof(out), &len), LINE_OK);
	assert_string_equal(out, "ok");
	assert_int_equal(line_skip(buf), 0);
	evbuffer_free(buf);
}

/* A megabyte without LF is refused and skipped without copying it. */
static void
test_line_big_buffer(void **state)
{
	static char big[1 << 20];
	struct evbuffer *buf = evbuffer_new();
	char out[1001];
	size_t len;

	(void)state;
	memset(big, 'a', sizeof(big));
	evbuffer_add(buf, big, 1000);
	evbuffer_add(buf, "\r\n", 2);
	assert_int_equal(line_read(buf, out, sizeof(out), &len), LINE_OK);
	assert_int_equal(len, 1000);
	evbuffer_add(buf, big, sizeof(big));
	assert_int_equal(line_read(buf, out, sizeof(out), &len), LINE_TOO_LONG);
	assert_int_equal(line_skip(buf), 0);
	assert_int_equal(evbuffer_get_length(buf), 0);
	evbuffer_free(buf);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_line_cases),
		cmocka_unit_test(test_line_nul_visible),
		cmocka_unit_test(test_line_too_long_keeps_input),
		cmocka_unit_test(test_line_big_buffer),
	};

	return cmocka_run_group_tests_name("line", tests, NULL, NULL);
}
