/*
 * test_sts.c - policy/sts.c: MTA-STS TXT records, policy bodies, MX patterns.
 *
 * Table-driven (cases after tlspol and Snawoot's postfix-mta-sts-resolver,
 * ANCHORS §5).  Every parser case runs on an exact-length heap copy of its
 * input without a terminating NUL, so ASan catches any read past len.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "policy/sts.h"

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* A heap copy of s[0..n) with nothing after it. */
static char *
exact_copy(const char *s, size_t n)
{
	char *p = malloc(n > 0 ? n : 1);

	assert_non_null(p);
	memcpy(p, s, n);
	return p;
}

/* ---- TXT records ---------------------------------------------------- */

static const struct txt_case {
	const char *in;
	size_t len;       /* 0: strlen(in) */
	int want;
	const char *id;   /* when want == 1 */
} txt_cases[] = {
	{ "v=STSv1; id=20190429T010101;", 0, 1, "20190429T010101" },
	{ "v=STSv1; id=20190429T010101", 0, 1, "20190429T010101" },
	{ "v=STSv1;id=abc", 0, 1, "abc" },
	{ "v=STSv1;\tid=abc\t;\t", 0, 1, "abc" },
	{ "v=STSv1 ; id=abc ; ", 0, 1, "abc" },
	{ "v=STSv1; id=abc ", 0, 1, "abc" },
	{ "v=STSv1; id=12345678901234567890123456789012", 0, 1,
	  "12345678901234567890123456789012" },
	{ "v=STSv1; foo=bar; id=X1; ext.a-b_c=x:y", 0, 1, "X1" },
	{ "v=STSv1; id=first; id=second", 0, 1, "first" },
	{ "v=STSv1; id=first; id=not-alnum", 0, 1, "first" },
	{ "v=STSv1; id=", 0, -1, NULL },
	{ "v=STSv1; id", 0, -1, NULL },
	{ "v=STSv1;", 0, -1, NULL },
	{ "v=STSv1", 0, -1, NULL },
	{ "v=STSv1 ", 0, -1, NULL },
	{ "v=STSv1; foo=bar", 0, -1, NULL },
	{ "v=STSv1; id=123456789012345678901234567890123", 0, -1, NULL },
	{ "v=STSv1; id=abc-def", 0, -1, NULL },
	{ "v=STSv1; id=abc.def", 0, -1, NULL },
	{ "v=STSv1; id=ab cd", 0, -1, NULL },
	{ "v=STSv1; id=\xc3\xa9t\xc3\xa9", 0, -1, NULL },
	{ "v=STSv1; id=abc; x=\xc3\xa9", 0, -1, NULL },
	{ "v=STSv1; id=abc\0def", 19, -1, NULL },
	{ "v=STSv1;; id=abc", 0, -1, NULL },
	{ "v=STSv1 id=abc", 0, -1, NULL },
	{ "v=STSv1; =abc; id=1", 0, -1, NULL },
	{ "v=STSv1; foo==bar; id=1", 0, -1, NULL },
	{ "v=STSv1; id=1; foo", 0, -1, NULL },
	{ "v=STSv1; ID=1", 0, -1, NULL },
	{ "v=STSv1; id=1,", 0, -1, NULL },
	{ "v=STSv1; id=abc; aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa=x", 0, -1, NULL },
	{ "v=STSv1; id=abc; aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa=x", 0, 1, "abc" },
	{ "v=STSv10; id=1", 0, 0, NULL },
	{ "v=STSv1x; id=1", 0, 0, NULL },
	{ "v=stsv1; id=1", 0, 0, NULL },
	{ " v=STSv1; id=1", 0, 0, NULL },
	{ "v=STSv2; id=1", 0, 0, NULL },
	{ "v=spf1 -all", 0, 0, NULL },
	{ "", 0, 0, NULL },
	{ "v=STS", 0, 0, NULL },
};

static void
test_txt_parse(void **state)
{
	(void)state;
	for (size_t i = 0; i < NELEM(txt_cases); i++) {
		const struct txt_case *c = &txt_cases[i];
		size_t len = c->len ? c->len : strlen(c->in);
		char *in = exact_copy(c->in, len);
		char id[STS_ID_MAX + 1] = "untouched";
		int got = sts_txt_parse(in, len, id);

		if (got != c->want)
			fail_msg("%zu \"%s\": got %d, want %d", i, c->in, got, c->want);
		if (c->want == 1 && strcmp(id, c->id) != 0)
			fail_msg("%zu \"%s\": id \"%s\", want \"%s\"", i, c->in, id, c->id);
		if (c->want != 1 && strcmp(id, "untouched") != 0)
			fail_msg("%zu \"%s\": id written on failure", i, c->in);
		free(in);
	}
}

static const struct select_case {
	const char *rec[4];
	size_t n;
	int want;
	const char *id;
} select_cases[] = {
	{ { NULL }, 0, 0, NULL },
	{ { "v=STSv1; id=a1" }, 1, 1, "a1" },
	{ { "v=spf1 -all", "v=STSv1; id=a1" }, 2, 1, "a1" },
	{ { "v=STSv1; id=a1", "google-site-verification=x" }, 2, 1, "a1" },
	{ { "v=STSv1; id=a1", "v=STSv1; id=a2" }, 2, 0, NULL },
	{ { "v=STSv1; id=a1", "v=STSv1; id=a1" }, 2, 0, NULL },
	{ { "v=STSv1; id=a1", "v=STSv1; id=" }, 2, 0, NULL },
	{ { "v=STSv1; id=" }, 1, 0, NULL },
	{ { "v=STSv1; id=toolong-" }, 1, 0, NULL },
	{ { "v=STSv10; id=1", "v=STSv1; id=a1" }, 2, 1, "a1" },
	{ { "v=stsv1; id=1", "v=STSv1; id=a1", "x" }, 3, 1, "a1" },
	{ { "v=STSv10; id=1" }, 1, 0, NULL },
	{ { "v=spf1", "x", "y", "z" }, 4, 0, NULL },
};

static void
test_txt_select(void **state)
{
	(void)state;
	for (size_t i = 0; i < NELEM(select_cases); i++) {
		const struct select_case *c = &select_cases[i];
		char *bufs[4];
		size_t lens[4];
		char id[STS_ID_MAX + 1] = "";
		int got;

		for (size_t k = 0; k < c->n; k++) {
			lens[k] = strlen(c->rec[k]);
			bufs[k] = exact_copy(c->rec[k], lens[k]);
		}
		got = sts_txt_select((const char *const *)bufs, lens, c->n, id);
		if (got != c->want)
			fail_msg("select %zu: got %d, want %d", i, got, c->want);
		if (c->want == 1 && strcmp(id, c->id) != 0)
			fail_msg("select %zu: id \"%s\", want \"%s\"", i, id, c->id);
		for (size_t k = 0; k < c->n; k++)
			free(bufs[k]);
	}
}

/* ---- Policy bodies -------------------------------------------------- */

#define GOOD "version: STSv1\r\nmode: enforce\r\nmx: mx1.example.com\r\nmax_age: 86400\r\n"

static const struct policy_case {
	const char *name;
	const char *body;
	size_t len;        /* 0: strlen(body) */
	int want;          /* 0 or -1 */
	enum sts_mode mode;
	long max_age;
	size_t nmx;
	const char *mx0;   /* first pattern, when nmx > 0 */
	size_t mx_invalid;
} policy_cases[] = {
	{ "crlf", GOOD, 0, 0, STS_MODE_ENFORCE, 86400, 1, "mx1.example.com", 0 },
	{ "lf", "version: STSv1\nmode: testing\nmx: *.example.com\nmax_age: 604800\n",
	  0, 0, STS_MODE_TESTING, 604800, 1, "*.example.com", 0 },
	{ "mixed, no final newline",
	  "version: STSv1\r\nmode: enforce\nmx: mx1.example.com\r\nmx: mx2.example.com\nmax_age: 1",
	  0, 0, STS_MODE_ENFORCE, 1, 2, "mx1.example.com", 0 },
	{ "version last", "mode: enforce\nmx: a.b\nmax_age: 5\nversion: STSv1\n",
	  0, 0, STS_MODE_ENFORCE, 5, 1, "a.b", 0 },
	{ "none without mx", "version: STSv1\nmode: none\nmax_age: 86400\n",
	  0, 0, STS_MODE_NONE, 86400, 0, NULL, 0 },
	{ "spaces around colon", "version :STSv1\nmode\t:\tenforce \t\nmx :  MX1.Example.COM.  \nmax_age : 60\n",
	  0, 0, STS_MODE_ENFORCE, 60, 1, "mx1.example.com", 0 },
	{ "leading WSP and blank lines", "\n  version: STSv1\n\n \t\nmode: enforce\nmx: m.example\nmax_age: 60\n\n\n",
	  0, 0, STS_MODE_ENFORCE, 60, 1, "m.example", 0 },
	{ "unknown keys", "version: STSv1\nfoo: bar baz\nx_y.z-1: \xc3\xa9t\xc3\xa9\nmode: enforce\nmx: m.example\nmax_age: 60\nempty:\n",
	  0, 0, STS_MODE_ENFORCE, 60, 1, "m.example", 0 },
	{ "duplicate mode, first wins", "version: STSv1\nmode: testing\nmode: enforce\nmx: m.example\nmax_age: 60\n",
	  0, 0, STS_MODE_TESTING, 60, 1, "m.example", 0 },
	{ "duplicate invalid mode ignored", "version: STSv1\nmode: none\nmode: bogus\nmax_age: 60\n",
	  0, 0, STS_MODE_NONE, 60, 0, NULL, 0 },
	{ "duplicate max_age, first wins", "version: STSv1\nmode: none\nmax_age: 60\nmax_age: 99999999999\n",
	  0, 0, STS_MODE_NONE, 60, 0, NULL, 0 },
	{ "duplicate version, first wins", "version: STSv1\nversion: STSv2\nmode: none\nmax_age: 60\n",
	  0, 0, STS_MODE_NONE, 60, 0, NULL, 0 },
	{ "max_age capped", "version: STSv1\nmode: none\nmax_age: 9999999999\n",
	  0, 0, STS_MODE_NONE, STS_MAX_AGE_MAX, 0, NULL, 0 },
	{ "max_age at limit", "version: STSv1\nmode: none\nmax_age: 31557600\n",
	  0, 0, STS_MODE_NONE, 31557600, 0, NULL, 0 },
	{ "max_age limit+1 capped", "version: STSv1\nmode: none\nmax_age: 31557601\n",
	  0, 0, STS_MODE_NONE, 31557600, 0, NULL, 0 },
	{ "max_age 0", "version: STSv1\nmode: none\nmax_age: 0\n",
	  0, 0, STS_MODE_NONE, 0, 0, NULL, 0 },
	{ "max_age leading zeros", "version: STSv1\nmode: none\nmax_age: 0000000060\n",
	  0, 0, STS_MODE_NONE, 60, 0, NULL, 0 },
	{ "bad mx skipped", "version: STSv1\nmode: enforce\nmx: mx*.example.com\nmx: 192.0.2.1\nmx: [192.0.2.1]\nmx: ok.example\nmx: -a.example\n"
	  "mx: a-.example\nmx: a..example\nmx: a_b.example\nmx: \xc3\xa9.example\nmx: a.example\t.\nmx: 1.2.3.4x\nmax_age: 60\n",
	  0, 0, STS_MODE_ENFORCE, 60, 2, "ok.example", 9 },
	{ "mx trailing dot stripped", "version: STSv1\nmode: enforce\nmx: *.Example.ORG.\nmax_age: 60\n",
	  0, 0, STS_MODE_ENFORCE, 60, 1, "*.example.org", 0 },

	{ "missing version", "mode: enforce\nmx: m.example\nmax_age: 60\n", 0, -1, 0, 0, 0, NULL, 0 },
	{ "version STSv2", "version: STSv2\nmode: none\nmax_age: 60\n", 0, -1, 0, 0, 0, NULL, 0 },
	{ "version lower case", "version: stsv1\nmode: none\nmax_age: 60\n", 0, -1, 0, 0, 0, NULL, 0 },
	{ "key upper case", "Version: STSv1\nmode: none\nmax_age: 60\n", 0, -1, 0, 0, 0, NULL, 0 },
	{ "Mode is an unknown key", "version: STSv1\nMode: enforce\nmx: m.example\nmax_age: 60\n", 0, -1, 0, 0, 0, NULL, 0 },
	{ "missing mode", "version: STSv1\nmx: m.example\nmax_age: 60\n", 0, -1, 0, 0, 0, NULL, 0 },
	{ "bad mode", "version: STSv1\nmode: enforcing\nmx: m.example\nmax_age: 60\n", 0, -1, 0, 0, 0, NULL, 0 },
	{ "mode upper case", "version: STSv1\nmode: ENFORCE\nmx: m.example\nmax_age: 60\n", 0, -1, 0, 0, 0, NULL, 0 },
	{ "missing max_age", "version: STSv1\nmode: none\n", 0, -1, 0, 0, 0, NULL, 0 },
	{ "max_age 11 digits", "version: STSv1\nmode: none\nmax_age: 10000000000\n", 0, -1, 0, 0, 0, NULL, 0 },
	{ "max_age negative", "version: STSv1\nmode: none\nmax_age: -1\n", 0, -1, 0, 0, 0, NULL, 0 },
	{ "max_age plus", "version: STSv1\nmode: none\nmax_age: +60\n", 0, -1, 0, 0, 0, NULL, 0 },
	{ "max_age empty", "version: STSv1\nmode: none\nmax_age:\n", 0, -1, 0, 0, 0, NULL, 0 },
	{ "max_age inner space", "version: STSv1\nmode: none\nmax_age: 6 0\n", 0, -1, 0, 0, 0, NULL, 0 },
	{ "enforce without mx", "version: STSv1\nmode: enforce\nmax_age: 60\n", 0, -1, 0, 0, 0, NULL, 0 },
	{ "testing without mx", "version: STSv1\nmode: testing\nmax_age: 60\n", 0, -1, 0, 0, 0, NULL, 0 },
	{ "enforce with only bad mx", "version: STSv1\nmode: enforce\nmx: mx*.example.com\nmx: *.\nmx:\nmax_age: 60\n", 0, -1, 0, 0, 0, NULL, 0 },
	{ "line without colon", GOOD "garbage\n", 0, -1, 0, 0, 0, NULL, 0 },
	{ "bad key", GOOD "two words: x\n", 0, -1, 0, 0, 0, NULL, 0 },
	{ "empty key", GOOD ": x\n", 0, -1, 0, 0, 0, NULL, 0 },
	{ "NUL byte", "version: STSv1\nmode: none\0\nmax_age: 60\n", 39, -1, 0, 0, 0, NULL, 0 },
	{ "bare CR", "version: STSv1\rmode: none\nmax_age: 60\n", 0, -1, 0, 0, 0, NULL, 0 },
	{ "CRCRLF", "version: STSv1\r\r\nmode: none\nmax_age: 60\n", 0, -1, 0, 0, 0, NULL, 0 },
	{ "BOM", "\xef\xbb\xbfversion: STSv1\nmode: none\nmax_age: 60\n", 0, -1, 0, 0, 0, NULL, 0 },
	{ "HTML", "<html><body>404</body></html>\n", 0, -1, 0, 0, 0, NULL, 0 },
	{ "empty body", "", 0, -1, 0, 0, 0, NULL, 0 },
	{ "TXT record as body", "v=STSv1; id=1\n", 0, -1, 0, 0, 0, NULL, 0 },
};

static void
check_policy_case(const struct policy_case *c)
{
	size_t len = c->len ? c->len : strlen(c->body);
	char *in = exact_copy(c->body, len);
	struct sts_policy *p = malloc(sizeof(*p));
	const char *why = NULL;
	int got;

	assert_non_null(p);
	got = sts_policy_parse(in, len, p, &why);
	if (got != c->want)
		fail_msg("%s: got %d, want %d (%s)", c->name, got, c->want, why ? why : "-");
	if (got < 0 && why == NULL)
		fail_msg("%s: no reason given", c->name);
	if (got == 0) {
		if (p->mode != c->mode || p->max_age != c->max_age || p->nmx != c->nmx)
			fail_msg("%s: got mode %d max_age %ld nmx %zu, want %d %ld %zu", c->name,
			    (int)p->mode, p->max_age, p->nmx, (int)c->mode, c->max_age, c->nmx);
		if (c->nmx > 0 && strcmp(p->mx[0], c->mx0) != 0)
			fail_msg("%s: mx[0] \"%s\", want \"%s\"", c->name, p->mx[0], c->mx0);
		if (p->mx_invalid != c->mx_invalid)
			fail_msg("%s: mx_invalid %zu, want %zu", c->name, p->mx_invalid, c->mx_invalid);
	}
	free(p);
	free(in);
}

static void
test_policy_parse(void **state)
{
	(void)state;
	for (size_t i = 0; i < NELEM(policy_cases); i++)
		check_policy_case(&policy_cases[i]);
}

/* The policy-string lines are normalised "key: value", blank lines dropped. */
static void
test_policy_lines(void **state)
{
	static const char body[] = "version :STSv1\r\n\r\nmode:enforce  \r\n"
	    "mx:\t*.mail.example\r\nfoo:\r\nmax_age: 86400";
	static const char *const want[] = {
		"version: STSv1", "mode: enforce", "mx: *.mail.example", "foo:", "max_age: 86400"
	};
	struct sts_policy p;
	const char *why = NULL;

	(void)state;
	assert_int_equal(sts_policy_parse(body, sizeof(body) - 1, &p, &why), 0);
	assert_int_equal(p.nlines, NELEM(want));
	assert_int_equal(p.lines_truncated, 0);
	for (size_t i = 0; i < NELEM(want); i++)
		assert_string_equal(sts_policy_line(&p, i), want[i]);
	assert_null(sts_policy_line(&p, NELEM(want)));
	assert_string_equal(sts_mode_name(p.mode), "enforce");
}

/* Valid mx beyond STS_MX_MAX are dropped (fail closed); lines are bounded. */
static void
test_policy_limits(void **state)
{
	size_t cap = 64 + (STS_MX_MAX + 40) * 32;
	char *body = malloc(cap);
	struct sts_policy *p = malloc(sizeof(*p));
	const char *why = NULL;
	size_t n;

	(void)state;
	assert_non_null(body);
	assert_non_null(p);
	n = (size_t)snprintf(body, cap, "version: STSv1\nmode: enforce\nmax_age: 60\n");
	for (int i = 0; i < STS_MX_MAX + 40; i++)
		n += (size_t)snprintf(body + n, cap - n, "mx: mx%d.example.com\n", i);
	assert_int_equal(sts_policy_parse(body, n, p, &why), 0);
	assert_int_equal(p->nmx, STS_MX_MAX);
	assert_int_equal(p->mx_dropped, 40);
	assert_int_equal(sts_mx_match(p, "mx0.example.com"), 1);
	assert_int_equal(sts_mx_match(p, "mx31.example.com"), 1);
	assert_int_equal(sts_mx_match(p, "mx32.example.com"), 0);
	assert_int_equal(p->nlines, STS_LINES_MAX);
	assert_int_equal(p->lines_truncated, 1);
	free(p);
	free(body);
}

/* A long mx value: 253-character name plus "*." is the longest accepted. */
static void
test_policy_long_mx(void **state)
{
	char name[300], body[1024];
	struct sts_policy p;
	const char *why = NULL;
	size_t n;

	(void)state;
	/* 3 labels of 63 + 1 of 61 + dots = 253 */
	memset(name, 'a', sizeof(name));
	name[63] = name[127] = name[191] = '.';
	name[253] = '\0';
	n = (size_t)snprintf(body, sizeof(body),
	    "version: STSv1\nmode: enforce\nmax_age: 60\nmx: *.%s.\nmx: x%s\n", name, name);
	assert_int_equal(sts_policy_parse(body, n, &p, &why), 0);
	assert_int_equal(p.nmx, 1);
	assert_int_equal(p.mx_invalid, 1);
	assert_int_equal(strlen(p.mx[0]), 255);
	n = (size_t)snprintf(body, sizeof(body), "x.%s", name);
	assert_int_equal(sts_mx_match(&p, body), 1);
	assert_int_equal(sts_mx_match(&p, name), 0);
}

/* ---- Pattern matching ----------------------------------------------- */

static const struct match_case {
	const char *pattern, *host;
	int want;
} match_cases[] = {
	{ "mx.example.com", "mx.example.com", 1 },
	{ "mx.example.com", "MX.Example.Com", 1 },
	{ "MX.EXAMPLE.COM", "mx.example.com", 1 },
	{ "mx.example.com", "mx.example.com.", 1 },
	{ "mx.example.com.", "mx.example.com", 1 },
	{ "mx.example.com.", "mx.example.com.", 1 },
	{ "mx.example.com", "mx.example.co", 0 },
	{ "mx.example.com", "xmx.example.com", 0 },
	{ "mx.example.com", "a.mx.example.com", 0 },
	{ "mx.example.com", "", 0 },
	{ "mx.example.com", ".", 0 },
	{ "*.example.com", "mx.example.com", 1 },
	{ "*.example.com", "MX.EXAMPLE.COM.", 1 },
	{ "*.example.com.", "mx.example.com", 1 },
	{ "*.example.com", "a.b.example.com", 0 },
	{ "*.example.com", "example.com", 0 },
	{ "*.example.com", ".example.com", 0 },
	{ "*.example.com", "xexample.com", 0 },
	{ "*.example.com", "mx.example.org", 0 },
	{ "*.example.com", "mx.example.com.evil", 0 },
	{ "*.example.com", "*.example.com", 0 },
	{ "*.example.com", "mx.xexample.com", 0 },
	{ "*.com", "example.com", 1 },
	{ "*.", "a.", 0 },
	{ "*", "a", 0 },
	{ "mx*.example.com", "mx1.example.com", 0 },
	{ "mx*.example.com", "mx*.example.com", 0 },
	{ "*mx.example.com", "amx.example.com", 0 },
	{ "*.*.example.com", "a.b.example.com", 0 },
	{ "", "", 0 },
	{ "", "a", 0 },
	{ ".", ".", 0 },
};

static void
test_pattern_match(void **state)
{
	(void)state;
	for (size_t i = 0; i < NELEM(match_cases); i++) {
		const struct match_case *c = &match_cases[i];
		int got = sts_pattern_match(c->pattern, c->host);

		if (got != c->want)
			fail_msg("\"%s\" vs \"%s\": got %d, want %d", c->pattern, c->host,
			    got, c->want);
	}
}

static void
test_mx_match(void **state)
{
	static const char body[] = "version: STSv1\nmode: enforce\nmx: mail.example.com\n"
	    "mx: *.mx.example.net\nmx: mx*.example.org\nmax_age: 86400\n";
	struct sts_policy p;
	const char *why = NULL;

	(void)state;
	assert_int_equal(sts_policy_parse(body, sizeof(body) - 1, &p, &why), 0);
	assert_int_equal(p.nmx, 2);
	assert_int_equal(p.mx_invalid, 1);
	assert_int_equal(sts_mx_match(&p, "mail.example.com"), 1);
	assert_int_equal(sts_mx_match(&p, "Mail.Example.Com."), 1);
	assert_int_equal(sts_mx_match(&p, "a.mx.example.net"), 1);
	assert_int_equal(sts_mx_match(&p, "mx.example.net"), 0);
	assert_int_equal(sts_mx_match(&p, "a.b.mx.example.net"), 0);
	assert_int_equal(sts_mx_match(&p, "mx1.example.org"), 0);
	assert_int_equal(sts_mx_match(&p, "evil.example"), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_txt_parse),
		cmocka_unit_test(test_txt_select),
		cmocka_unit_test(test_policy_parse),
		cmocka_unit_test(test_policy_lines),
		cmocka_unit_test(test_policy_limits),
		cmocka_unit_test(test_policy_long_mx),
		cmocka_unit_test(test_pattern_match),
		cmocka_unit_test(test_mx_match),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
