/*
 * test_datascan.c - unit tests for relay/datascan.c (end of DATA, smuggling).
 *
 * Each case is a message stream (what follows the 354) and a max_line; the
 * driver feeds it and writes a transcript of events with absolute offsets:
 * "END@n" (n bytes belong to the message, terminator included), "LF@n",
 * "CR@n" (see datascan.h), "LONG@n" (then feeding goes on from n), and
 * "MORE" when the input ran out first.  Every case runs on the whole buffer
 * and fed 1, 2, 3, 5 and 7 bytes at a time: the transcripts must be equal.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "relay/datascan.h"

#define TR_MAX 1024

struct ds_case {
	const char *name;
	const char *in;
	size_t len;
	size_t max_line;
	const char *want;
};

#define S(x) x, sizeof(x) - 1

static const struct ds_case ds_cases[] = {
	{ "empty message", S(".\r\n"), 0, "END@3" },
	{ "one line", S("a\r\n.\r\n"), 0, "END@6" },
	{ "empty line", S("\r\n.\r\n"), 0, "END@5" },
	{ "stuffed dot line", S("..\r\n.\r\n"), 0, "END@7" },
	{ "stuffed text", S("..foo\r\n.\r\n"), 0, "END@10" },
	{ "dot text", S(".foo\r\n.\r\n"), 0, "END@9" },
	{ "dot mid line", S("x.\r\n.\r\n"), 0, "END@7" },
	{ "space dot", S(" .\r\n.\r\n"), 0, "END@7" },
	{ "pipelined after end", S("a\r\n.\r\nQUIT\r\n"), 0, "END@6" },
	{ "header body", S("hdr\r\n\r\n.\r\n\r\n"), 0, "END@10" },
	{ "dot x line", S("a\r\n.x\r\n.\r\n"), 0, "END@10" },
	/* RFC 6152 §2: NUL is never allowed (a next hop dropping it could be smuggled to). */
	{ "NUL in body", S("a\0b\r\n.\r\n"), 0, "NUL@1" },
	{ "8-bit body", S("\xff\r\n.\r\n"), 0, "END@6" },
	{ "no input", S(""), 0, "MORE" },
	{ "dot pending", S("a\r\n."), 0, "MORE" },
	{ "dot CR pending", S("a\r\n.\r"), 0, "MORE" },
	{ "stuffed not end", S("a\r\n..\r\n"), 0, "MORE" },
	{ "LF.LF", S("\n.\n"), 0, "LF@0" },
	{ "CR.CRLF", S("\r.\r\n"), 0, "CR@1" },
	{ "CRLF.LF", S("\r\n.\n"), 0, "LF@3" },
	{ "LF.CRLF", S("\n.\r\n"), 0, "LF@0" },
	{ "text LF.CRLF", S("a\n.\r\n"), 0, "LF@1" },
	{ "text CRLF.LF", S("a\r\n.\n"), 0, "LF@4" },
	{ "CRLF.CR.", S("a\r\n.\r.\r\n"), 0, "CR@5" },
	{ "CRLF.CRx", S("a\r\n.\rx"), 0, "CR@5" },
	{ "CR mid line", S("a\rb\r\n.\r\n"), 0, "CR@2" },
	{ "CR CR LF", S("a\r\r\n"), 0, "CR@2" },
	{ "BOL CR CR LF", S("\r\r\n"), 0, "CR@1" },
	{ "blank bare LF", S("a\r\n\n.\r\n"), 0, "LF@3" },
	{ "smuggle CRLF LF.CRLF", S("body\r\n\n.\r\nMAIL FROM:<x>\r\n"), 0, "LF@6" },
	{ "smuggle LF.CRLF", S("body\n.\r\n"), 0, "LF@4" },
	{ "smuggle .CRCRLF", S("body\r\n.\r\r\n"), 0, "CR@8" },
	{ "limit fits", S("abc\r\n.\r\n"), 5, "END@8" },
	{ "limit by one", S("abcd\r\n.\r\n"), 5, "LONG@5|END@9" },
	{ "limit once per line", S("abcdefgh\r\nxyz\r\n.\r\n"), 5, "LONG@5|END@18" },
	{ "limit two lines", S("abcdefgh\r\nxyzwvu\r\n.\r\n"), 5,
	  "LONG@5|LONG@15|END@21" },
	{ "limit then bare LF", S("abcdefg\n"), 5, "LONG@5|LF@7" },
	{ "limit terminator", S(".\r\n"), 3, "END@3" },
	/* The transparency dot is not counted (RFC 5321 §4.5.2). */
	{ "limit stuffed", S("..stuffed\r\n.\r\n"), 5, "LONG@6|END@14" },
};

/* tr_add - append "tok@off" to the transcript. */
static void
tr_add(char *tr, const char *tok, size_t off)
{
	size_t len = strlen(tr);

	(void)snprintf(tr + len, TR_MAX - len, "%s%s@%zu", len ? "|" : "", tok, off);
}

/*
 * ds_chunk - scan one chunk p[0..n) that starts at absolute offset base.
 * Returns 1 when the scan is over (end of data or a bare CR/LF).
 */
static int
ds_chunk(struct datascan *ds, const char *p, size_t n, size_t base, char *tr)
{
	size_t used, pos = 0;
	enum ds_status st;

	for (;;) {
		st = datascan_feed(ds, p + pos, n - pos, &used);
		switch (st) {
		case DS_NEED_MORE:
			assert_int_equal(used, n - pos);
			return 0;
		case DS_LINE_TOO_LONG:
			assert_true(used < n - pos);
			tr_add(tr, "LONG", base + pos + used);
			pos += used;
			break;
		case DS_END:
			tr_add(tr, "END", base + pos + used);
			return 1;
		case DS_BARE_LF:
			tr_add(tr, "LF", base + pos + used);
			return 1;
		case DS_BARE_CR:
			tr_add(tr, "CR", base + pos + used);
			return 1;
		case DS_NUL:
			tr_add(tr, "NUL", base + pos + used);
			return 1;
		}
	}
}

/* ds_run - feed in[0..len) in chunks of chunk bytes, transcript into tr. */
static void
ds_run(const char *in, size_t len, size_t max_line, size_t chunk, char *tr)
{
	struct datascan ds;
	size_t off, n;

	tr[0] = '\0';
	datascan_init(&ds, max_line);
	for (off = 0; off < len; off += n) {
		n = len - off < chunk ? len - off : chunk;
		if (ds_chunk(&ds, in + off, n, off, tr))
			return;
	}
	(void)snprintf(tr + strlen(tr), TR_MAX - strlen(tr), "%sMORE",
	    tr[0] ? "|" : "");
}

static const size_t ds_chunks[] = { SIZE_MAX, 1, 2, 3, 5, 7 };

/* ds_check - run every split; returns the number of mismatches. */
static int
ds_check(const char *name, const char *in, size_t len, size_t max_line,
    const char *want)
{
	char tr[TR_MAX];
	size_t k;
	int failed = 0;

	for (k = 0; k < sizeof(ds_chunks) / sizeof(ds_chunks[0]); k++) {
		ds_run(in, len, max_line, ds_chunks[k], tr);
		if (strcmp(tr, want) == 0)
			continue;
		print_error("%s (chunk %zu, 0 = whole): got \"%s\", want \"%s\"\n",
		    name, ds_chunks[k] == SIZE_MAX ? 0 : ds_chunks[k], tr, want);
		failed++;
	}
	return failed;
}

static void
test_ds_cases(void **state)
{
	size_t i;
	int failed = 0;

	(void)state;
	for (i = 0; i < sizeof(ds_cases) / sizeof(ds_cases[0]); i++)
		failed += ds_check(ds_cases[i].name, ds_cases[i].in,
		    ds_cases[i].len, ds_cases[i].max_line, ds_cases[i].want);
	assert_int_equal(failed, 0);
}

/* RFC 5321 §4.5.3.1.6: 1000 octets including CRLF is the text line limit. */
static void
test_ds_rfc_line_limit(void **state)
{
	char *buf = malloc(1200);
	int failed = 0;

	(void)state;
	assert_non_null(buf);
	memset(buf, 'a', 998);
	memcpy(buf + 998, "\r\n.\r\n", 5);
	failed += ds_check("998+CRLF", buf, 1003, 1000, "END@1003");
	memset(buf, 'a', 999);
	memcpy(buf + 999, "\r\n.\r\n", 5);
	failed += ds_check("999+CRLF", buf, 1004, 1000, "LONG@1000|END@1004");
	failed += ds_check("999+CRLF no limit", buf, 1004, 0, "END@1004");
	free(buf);
	assert_int_equal(failed, 0);
}

/* After the end, more input belongs to the next command: used stays 0. */
static void
test_ds_after_end(void **state)
{
	struct datascan ds;
	size_t used = 99;

	(void)state;
	datascan_init(&ds, 0);
	assert_int_equal(datascan_feed(&ds, ".\r\nQUIT\r\n", 9, &used), DS_END);
	assert_int_equal(used, 3);
	assert_int_equal(datascan_feed(&ds, "x", 1, &used), DS_END);
	assert_int_equal(used, 0);
	datascan_init(&ds, 0);
	assert_int_equal(datascan_feed(&ds, "x", 1, &used), DS_NEED_MORE);
	assert_int_equal(used, 1);
}

/* A bare LF or CR leaves the scanner failed for good. */
static void
test_ds_sticky_failure(void **state)
{
	struct datascan ds;
	size_t used = 99;

	(void)state;
	datascan_init(&ds, 0);
	assert_int_equal(datascan_feed(&ds, "a\nb", 3, &used), DS_BARE_LF);
	assert_int_equal(used, 1);
	assert_int_equal(datascan_feed(&ds, "\r\n.\r\n", 5, &used), DS_BARE_LF);
	assert_int_equal(used, 0);
	datascan_init(&ds, 0);
	assert_int_equal(datascan_feed(&ds, "a\r", 2, &used), DS_NEED_MORE);
	assert_int_equal(datascan_feed(&ds, "b", 1, &used), DS_BARE_CR);
	assert_int_equal(used, 0);
	assert_int_equal(datascan_feed(&ds, ".\r\n", 3, &used), DS_BARE_CR);
}

/* line_len is what datascan.h says: bytes of the current line so far. */
static void
test_ds_line_len(void **state)
{
	struct datascan ds;
	size_t used;

	(void)state;
	datascan_init(&ds, 0);
	assert_int_equal(datascan_feed(&ds, "abc", 3, &used), DS_NEED_MORE);
	assert_int_equal(ds.line_len, 3);
	assert_int_equal(datascan_feed(&ds, "\r\nx", 3, &used), DS_NEED_MORE);
	assert_int_equal(ds.line_len, 1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ds_cases),
		cmocka_unit_test(test_ds_rfc_line_limit),
		cmocka_unit_test(test_ds_after_end),
		cmocka_unit_test(test_ds_sticky_failure),
		cmocka_unit_test(test_ds_line_len),
	};

	return cmocka_run_group_tests_name("datascan", tests, NULL, NULL);
}
