/*
 * test_reply.c - unit tests for relay/reply.c (multi-line replies, enhanced
 * status codes, EHLO keywords).
 *
 * Each case is what a next hop sends; the driver takes lines with line_read()
 * and feeds them to reply_feed(), writing a transcript: "code [enh] text" per
 * complete reply (text escaped, lines joined by "/"), "ERR:<why>" per refused
 * line, "LF" per bare-LF line, and "MORE" when input ends mid-reply.  Every
 * case runs on the whole buffer and fed 1, 2 and 5 bytes at a time.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/buffer.h>

#include "relay/line.h"
#include "relay/reply.h"

#define TR_MAX 16384

struct reply_case {
	const char *name;
	const char *in;
	size_t len;
	const char *want;
};

#define S(x) x, sizeof(x) - 1

static const struct reply_case reply_cases[] = {
	{ "simple", S("250 OK\r\n"), "250 [] OK" },
	{ "enhanced", S("250 2.0.0 Ok: queued as X\r\n"), "250 [2.0.0] Ok: queued as X" },
	{ "code only", S("250\r\n"), "250 [] " },
	{ "code and space", S("250 \r\n"), "250 [] " },
	{ "enh only", S("250 2.0.0\r\n"), "250 [2.0.0] " },
	{ "multi-line", S("250-mx.example.org\r\n250-PIPELINING\r\n250 SIZE 1000\r\n"),
	  "250 [] mx.example.org/PIPELINING/SIZE 1000" },
	{ "multi-line enh", S("550-5.1.1 No such\r\n550 5.1.1 user\r\n"),
	  "550 [5.1.1] No such/user" },
	{ "empty continuation", S("250-\r\n250 \r\n"), "250 [] /" },
	{ "354", S("354 End data with <CR><LF>.<CR><LF>\r\n"),
	  "354 [] End data with <CR><LF>.<CR><LF>" },
	{ "421 enh", S("421 4.7.0 Try again later\r\n"), "421 [4.7.0] Try again later" },
	{ "three-digit parts", S("550 5.123.456 x\r\n"), "550 [5.123.456] x" },
	{ "class mismatch", S("250 5.0.0 x\r\n"), "250 [] 5.0.0 x" },
	{ "class 3", S("354 3.0.0 go\r\n"), "354 [] 3.0.0 go" },
	{ "subject too long", S("250 2.1000.0 x\r\n"), "250 [] 2.1000.0 x" },
	{ "detail too long", S("250 2.0.0000 x\r\n"), "250 [] 2.0.0000 x" },
	{ "no space after enh", S("250 2.0.0x\r\n"), "250 [] 2.0.0x" },
	{ "empty subject", S("250 2..0 x\r\n"), "250 [] 2..0 x" },
	{ "empty detail", S("250 2.0. x\r\n"), "250 [] 2.0. x" },
	{ "two parts", S("250 2.0 x\r\n"), "250 [] 2.0 x" },
	{ "enh later in text", S("250 Ok 2.0.0\r\n"), "250 [] Ok 2.0.0" },
	{ "NUL in text", S("250 a\0b\r\n"), "250 [] a\\x00b" },
	{ "8-bit text", S("250 \xc3\xa9\r\n"), "250 [] \\xc3\\xa9" },
	{ "pipelined", S("250 a\r\n250 b\r\n"), "250 [] a|250 [] b" },
	{ "partial", S("250-a\r\n250"), "MORE" },
	{ "too short", S("25 OK\r\n"), "ERR:malformed reply code" },
	{ "empty line", S("\r\n"), "ERR:malformed reply code" },
	{ "code 600", S("600 x\r\n"), "ERR:malformed reply code" },
	{ "code 199", S("199 x\r\n"), "ERR:malformed reply code" },
	{ "letters", S("abc\r\n"), "ERR:malformed reply code" },
	{ "NUL in code", S("2\0" "5 x\r\n"), "ERR:malformed reply code" },
	{ "bad separator", S("250x\r\n"), "ERR:malformed reply separator" },
	{ "tab separator", S("250\tOK\r\n"), "ERR:malformed reply separator" },
	{ "code changed", S("250-a\r\n251 b\r\n"),
	  "ERR:reply code changed within a multi-line reply" },
	{ "bare LF line", S("250 OK\n"), "LF" },
	{ "bare LF in multi-line", S("250-a\n250 b\r\n"), "LF|250 [] b" },
};

/* tr_add - append a token, escaping non-printables. */
static void
tr_add(char *tr, const char *tok, const char *data, size_t n)
{
	size_t len = strlen(tr), i;

	if (len > 0)
		len += (size_t)snprintf(tr + len, TR_MAX - len, "|");
	len += (size_t)snprintf(tr + len, TR_MAX - len, "%s", tok);
	for (i = 0; i < n && len < TR_MAX - 8; i++) {
		unsigned char c = (unsigned char)data[i];

		if (c == '\n')
			tr[len++] = '/';
		else if (c >= 0x20 && c < 0x7f)
			tr[len++] = (char)c;
		else
			len += (size_t)snprintf(tr + len, TR_MAX - len, "\\x%02x", c);
	}
	tr[len] = '\0';
}

/* reply_take - feed every complete line in buf to r, transcript into tr. */
static void
reply_take(struct evbuffer *buf, struct smtp_reply *r, char *tr)
{
	char line[1024], head[64];
	const char *why = NULL;
	enum line_status ls;
	enum reply_status rs;
	size_t len;

	while ((ls = line_read(buf, line, sizeof(line), &len)) != LINE_NEED_MORE) {
		assert_true(ls != LINE_TOO_LONG);
		if (ls == LINE_BARE_LF) {
			tr_add(tr, "LF", "", 0);
			reply_init(r);
			continue;
		}
		rs = reply_feed(r, line, len, &why);
		if (rs == REPLY_ERROR) {
			tr_add(tr, "ERR:", why, strlen(why));
			reply_init(r);
		} else if (rs == REPLY_DONE) {
			assert_true(r->done);
			assert_int_equal(r->text[r->text_len], '\0');
			(void)snprintf(head, sizeof(head), "%d [%s] ", r->code, r->enh);
			tr_add(tr, head, r->text, r->text_len);
			reply_init(r);
		}
	}
}

/* reply_run - feed in[0..len) in chunks of chunk bytes. */
static void
reply_run(const char *in, size_t len, size_t chunk, char *tr)
{
	struct evbuffer *buf = evbuffer_new();
	struct smtp_reply *r = malloc(sizeof(*r));
	size_t off, n;

	assert_non_null(buf);
	assert_non_null(r);
	tr[0] = '\0';
	reply_init(r);
	for (off = 0; off < len; off += n) {
		n = len - off < chunk ? len - off : chunk;
		evbuffer_add(buf, in + off, n);
		reply_take(buf, r, tr);
	}
	if (r->lines > 0 || evbuffer_get_length(buf) > 0)
		tr_add(tr, "MORE", "", 0);
	free(r);
	evbuffer_free(buf);
}

static const size_t reply_chunks[] = { SIZE_MAX, 1, 2, 5 };

/* reply_check - run every split; returns the number of mismatches. */
static int
reply_check(const char *name, const char *in, size_t len, const char *want)
{
	static char tr[TR_MAX];
	size_t k;
	int failed = 0;

	for (k = 0; k < sizeof(reply_chunks) / sizeof(reply_chunks[0]); k++) {
		reply_run(in, len, reply_chunks[k], tr);
		if (strcmp(tr, want) == 0)
			continue;
		print_error("%s (chunk %zu, 0 = whole): got \"%s\", want \"%s\"\n",
		    name, reply_chunks[k] == SIZE_MAX ? 0 : reply_chunks[k], tr, want);
		failed++;
	}
	return failed;
}

static void
test_reply_cases(void **state)
{
	size_t i;
	int failed = 0;

	(void)state;
	for (i = 0; i < sizeof(reply_cases) / sizeof(reply_cases[0]); i++)
		failed += reply_check(reply_cases[i].name, reply_cases[i].in,
		    reply_cases[i].len, reply_cases[i].want);
	assert_int_equal(failed, 0);
}

/* repeat - n copies of line into a malloc'd buffer, then last; *len set. */
static char *
repeat(const char *line, int n, const char *last, size_t *len)
{
	size_t a = strlen(line), b = strlen(last);
	char *s = malloc(a * (size_t)n + b + 1);
	int i;

	assert_non_null(s);
	for (i = 0; i < n; i++)
		memcpy(s + a * (size_t)i, line, a);
	memcpy(s + a * (size_t)n, last, b + 1);
	*len = a * (size_t)n + b;
	return s;
}

/* REPLY_LINES_MAX lines in all are accepted; one more is refused. */
static void
test_reply_line_limit(void **state)
{
	char *in, want[REPLY_LINES_MAX * 2 + 16];
	size_t len;
	int failed = 0, i;

	(void)state;
	strcpy(want, "250 [] ");
	for (i = 0; i < REPLY_LINES_MAX; i++)
		strcat(want, i ? "/x" : "x");
	in = repeat("250-x\r\n", REPLY_LINES_MAX - 1, "250 x\r\n", &len);
	failed += reply_check("128 lines", in, len, want);
	free(in);
	in = repeat("250-x\r\n", REPLY_LINES_MAX, "250 x\r\n", &len);
	failed += reply_check("129 lines", in, len,
	    "ERR:too many lines in a multi-line reply");
	free(in);
	assert_int_equal(failed, 0);
}

/* The text is truncated at REPLY_TEXT_MAX - 1 bytes, and stays a C string. */
static void
test_reply_text_limit(void **state)
{
	struct smtp_reply *r = malloc(sizeof(*r));
	char line[1004];
	const char *why;
	int i;

	(void)state;
	assert_non_null(r);
	memset(line, 'y', sizeof(line));
	memcpy(line, "250-", 4);
	reply_init(r);
	for (i = 0; i < 9; i++)
		assert_int_equal(reply_feed(r, line, sizeof(line), &why), REPLY_MORE);
	assert_int_equal(reply_feed(r, "250 end", 7, &why), REPLY_DONE);
	assert_int_equal(r->text_len, REPLY_TEXT_MAX - 1);
	assert_int_equal(r->text[REPLY_TEXT_MAX - 1], '\0');
	assert_int_equal(r->lines, 10);
	assert_int_equal(reply_feed(r, "250 more", 8, &why), REPLY_ERROR);
	free(r);
}

struct ehlo_case {
	const char *name;
	const char *in;
	unsigned want;
	long long size;
};

static const struct ehlo_case ehlo_cases[] = {
	{ "all", "250-mx.example.org Hello\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n"
	  "250-8BITMIME\r\n250-STARTTLS\r\n250-ENHANCEDSTATUSCODES\r\n"
	  "250-SMTPUTF8\r\n250 CHUNKING\r\n",
	  EHLO_PIPELINING | EHLO_SIZE | EHLO_8BITMIME | EHLO_STARTTLS |
	  EHLO_ENHANCED | EHLO_SMTPUTF8 | EHLO_CHUNKING, 10240000 },
	{ "lower case, SIZE without value", "250-mx\r\n250-starttls\r\n250 size\r\n",
	  EHLO_STARTTLS | EHLO_SIZE, 0 },
	{ "first line ignored", "250 mx PIPELINING\r\n", 0, 0 },
	{ "greeting only", "250 mx.example.org\r\n", 0, 0 },
	{ "SIZE overflow", "250-mx\r\n250-SIZE 99999999999999999999999\r\n250 X\r\n",
	  EHLO_SIZE, 0 },
	{ "SIZE junk", "250-mx\r\n250 SIZE 12a\r\n", EHLO_SIZE, 0 },
	{ "SIZE negative", "250-mx\r\n250 SIZE -1\r\n", EHLO_SIZE, 0 },
	{ "SIZE twice", "250-mx\r\n250-SIZE\r\n250 SIZE 5\r\n", EHLO_SIZE, 5 },
	{ "SIZE max", "250-mx\r\n250 SIZE 9223372036854775807\r\n", EHLO_SIZE,
	  9223372036854775807LL },
	{ "near misses", "250-mx\r\n250-STARTTLSX\r\n250-XSTARTTLS\r\n250-START TLS\r\n"
	  "250 AUTH PLAIN STARTTLS\r\n", 0, 0 },
	{ "with enh codes", "250-2.0.0 mx\r\n250-2.0.0 STARTTLS\r\n250 2.0.0 PIPELINING\r\n",
	  EHLO_STARTTLS | EHLO_PIPELINING, 0 },
	{ "not 250", "550-mx\r\n550 STARTTLS\r\n", 0, 0 },
};

/* ehlo_caps - feed in line by line; the caps of the complete reply. */
static unsigned
ehlo_caps(const char *in, long long *size)
{
	struct evbuffer *buf = evbuffer_new();
	struct smtp_reply *r = malloc(sizeof(*r));
	char line[1024];
	const char *why;
	size_t len;
	unsigned caps;

	assert_non_null(buf);
	assert_non_null(r);
	evbuffer_add(buf, in, strlen(in));
	reply_init(r);
	while (line_read(buf, line, sizeof(line), &len) == LINE_OK)
		assert_int_not_equal(reply_feed(r, line, len, &why), REPLY_ERROR);
	caps = reply_ehlo_caps(r, size);
	free(r);
	evbuffer_free(buf);
	return caps;
}

static void
test_ehlo_caps(void **state)
{
	long long size;
	unsigned got;
	size_t i;
	int failed = 0;

	(void)state;
	for (i = 0; i < sizeof(ehlo_cases) / sizeof(ehlo_cases[0]); i++) {
		size = -1;
		got = ehlo_caps(ehlo_cases[i].in, &size);
		if (got != ehlo_cases[i].want || size != ehlo_cases[i].size) {
			print_error("%s: got %d, want %d (size %lld, want %lld)\n",
			    ehlo_cases[i].name, (int)got, (int)ehlo_cases[i].want,
			    size, ehlo_cases[i].size);
			failed++;
		}
	}
	assert_int_equal(failed, 0);
}

/* An incomplete reply has no capabilities. */
static void
test_ehlo_incomplete(void **state)
{
	struct smtp_reply r;
	long long size = -1;
	const char *why;

	(void)state;
	reply_init(&r);
	assert_int_equal(reply_feed(&r, "250-mx", 6, &why), REPLY_MORE);
	assert_int_equal(reply_feed(&r, "250-STARTTLS", 12, &why), REPLY_MORE);
	assert_int_equal(reply_ehlo_caps(&r, &size), 0);
	assert_int_equal(size, 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_reply_cases),
		cmocka_unit_test(test_reply_line_limit),
		cmocka_unit_test(test_reply_text_limit),
		cmocka_unit_test(test_ehlo_caps),
		cmocka_unit_test(test_ehlo_incomplete),
	};

	return cmocka_run_group_tests_name("reply", tests, NULL, NULL);
}
