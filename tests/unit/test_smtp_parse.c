/*
 * test_smtp_parse.c - unit tests for relay/smtp_parse.c (RFC 5321 §4.1.2
 * paths, ESMTP parameters, HELO, command splitting).
 *
 * MAIL and RCPT cases give the arguments and either the address wanted plus
 * the path flags ("N" null, "P" postmaster, "R" source route, "U" UTF-8,
 * "Q" quoted, "S" special local part, "L" address literal) or "ERR code enh".
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "relay/smtp_parse.h"

/* path_flags - the flags of p as letters. */
static const char *
path_flags(const struct smtp_path *p, char *buf)
{
	char *s = buf;

	if (p->null) *s++ = 'N';
	if (p->postmaster) *s++ = 'P';
	if (p->source_route) *s++ = 'R';
	if (p->utf8) *s++ = 'U';
	if (p->quoted) *s++ = 'Q';
	if (p->local_special) *s++ = 'S';
	if (p->domain_literal) *s++ = 'L';
	*s = '\0';
	return buf;
}

/* result - "ERR code enh" or the address, into buf. */
static const char *
result(int rc, const struct smtp_path *p, const struct smtp_err *e, char *buf,
    size_t n)
{
	if (rc < 0)
		(void)snprintf(buf, n, "ERR %d %s", e->code, e->enh);
	else
		(void)snprintf(buf, n, "%s", p->addr);
	return buf;
}

/* check_str - 0 when got equals want, else print and return 1. */
static int
check_str(const char *name, const char *what, const char *got, const char *want)
{
	if (strcmp(got, want) == 0)
		return 0;
	print_error("%s: %s: got \"%s\", want \"%s\"\n", name, what, got, want);
	return 1;
}

struct mail_case {
	const char *name;
	const char *args;
	int utf8_ok;
	const char *want;    /* address, or "ERR 501 5.5.4" */
	const char *flags;
	const char *params;  /* "size/body/smtputf8"; NULL = "-1/0/0" */
};

static const struct mail_case mail_cases[] = {
	{ "simple", "FROM:<a@b.example>", 1, "a@b.example", "", NULL },
	{ "lower case verb arg", "from:<a@b.example>", 1, "a@b.example", "", NULL },
	{ "space after colon", "FROM: <a@b.example>", 1, "a@b.example", "", NULL },
	{ "spaces after colon", "FROM:   <a@b.example>", 1, "a@b.example", "", NULL },
	{ "null path", "FROM:<>", 1, "", "N", NULL },
	{ "null with SIZE", "FROM:<> SIZE=1000", 1, "", "N", "1000/0/0" },
	{ "SIZE and BODY", "FROM:<a@b.example> SIZE=0 BODY=8BITMIME", 1,
	  "a@b.example", "", "0/8/0" },
	{ "body 7bit any case", "FROM:<a@b.example> body=7bit", 1, "a@b.example", "",
	  "-1/7/0" },
	{ "SMTPUTF8", "FROM:<a@b.example> SMTPUTF8", 1, "a@b.example", "", "-1/0/1" },
	{ "smtputf8 lower", "FROM:<a@b.example> smtputf8", 1, "a@b.example", "",
	  "-1/0/1" },
	{ "extra spaces", "FROM:<a@b.example>  SIZE=5  ", 1, "a@b.example", "",
	  "5/0/0" },
	{ "trailing space", "FROM:<a@b.example> ", 1, "a@b.example", "", NULL },
	{ "SIZE max", "FROM:<a@b> SIZE=9223372036854775807", 1, "a@b", "",
	  "9223372036854775807/0/0" },
	{ "SIZE leading zeros", "FROM:<a@b> SIZE=007", 1, "a@b", "", "7/0/0" },
	{ "trailing dot", "FROM:<a@b.example.>", 1, "a@b.example", "", NULL },
	{ "source route", "FROM:<@r1.example,@r2.example:a@b.example>", 1,
	  "a@b.example", "R", NULL },
	{ "one-hop route", "FROM:<@r1.example:a@b.example>", 1, "a@b.example", "R",
	  NULL },
	{ "quoted at", "FROM:<\"a@b\"@c.example>", 1, "\"a@b\"@c.example", "QS",
	  NULL },
	{ "percent hack", "FROM:<a%b@c.example>", 1, "a%b@c.example", "S", NULL },
	{ "bang path", "FROM:<b!a@c.example>", 1, "b!a@c.example", "S", NULL },
	{ "quoted pair", "FROM:<\"a\\\"b\"@c.example>", 1, "\"a\\\"b\"@c.example",
	  "Q", NULL },
	{ "quoted escaped percent", "FROM:<\"a\\%b\"@c.example>", 1,
	  "\"a\\%b\"@c.example", "QS", NULL },
	{ "empty quoted", "FROM:<\"\"@c.example>", 1, "\"\"@c.example", "Q", NULL },
	{ "quoted space", "FROM:<\"a b\"@c.example>", 1, "\"a b\"@c.example", "Q",
	  NULL },
	{ "quoted gt", "FROM:<\"a>b\"@c.example>", 1, "\"a>b\"@c.example", "Q",
	  NULL },
	{ "IPv4 literal", "FROM:<a@[192.0.2.1]>", 1, "a@[192.0.2.1]", "L", NULL },
	{ "IPv6 literal", "FROM:<a@[IPv6:2001:db8::1]>", 1, "a@[IPv6:2001:db8::1]",
	  "L", NULL },
	{ "IPv6 tag case", "FROM:<a@[ipv6:::1]>", 1, "a@[ipv6:::1]", "L", NULL },
	{ "atext", "FROM:<a.b+c=d/e{f}~g@x-y.example>", 1,
	  "a.b+c=d/e{f}~g@x-y.example", "", NULL },
	{ "digit labels", "FROM:<a@1.2.3.4>", 1, "a@1.2.3.4", "", NULL },
	{ "UTF-8 with SMTPUTF8", "FROM:<j\xc3\xb6s\xc3\xa9@ex\xc3\xa4mple.org> SMTPUTF8",
	  1, "j\xc3\xb6s\xc3\xa9@ex\xc3\xa4mple.org", "U", "-1/0/1" },
	{ "UTF-8 quoted", "FROM:<\"j\xc3\xb6 s\"@example.org> SMTPUTF8", 1,
	  "\"j\xc3\xb6 s\"@example.org", "UQ", "-1/0/1" },

	{ "no colon", "FROM<a@b.example>", 1, "ERR 501 5.5.4", "", NULL },
	{ "no FROM", "TO:<a@b.example>", 1, "ERR 501 5.5.4", "", NULL },
	{ "empty", "", 1, "ERR 501 5.5.4", "", NULL },
	{ "no brackets", "FROM:a@b.example", 1, "ERR 501 5.5.4", "", NULL },
	{ "no closing bracket", "FROM:<a@b.example", 1, "ERR 501 5.5.4", "", NULL },
	{ "junk after path", "FROM:<a@b.example>x", 1, "ERR 501 5.5.4", "", NULL },
	{ "tab before param", "FROM:<a@b.example>\tSIZE=1", 1, "ERR 501 5.5.4", "",
	  NULL },
	{ "unterminated quote", "FROM:<\"abc@example.org>", 1, "ERR 501 5.5.4", "",
	  NULL },
	{ "8-bit outside path", "FROM:\xc3\xa9<a@b>", 1, "ERR 501 5.5.4", "", NULL },
	{ "no domain", "FROM:<a>", 1, "ERR 501 5.1.7", "", NULL },
	{ "postmaster not for MAIL", "FROM:<Postmaster>", 1, "ERR 501 5.1.7", "",
	  NULL },
	{ "route only", "FROM:<@b.example>", 1, "ERR 501 5.1.7", "", NULL },
	{ "route empty mailbox", "FROM:<@b.example:>", 1, "ERR 501 5.1.7", "", NULL },
	{ "route missing at", "FROM:<@a.example,b.example:x@y>", 1, "ERR 501 5.1.7",
	  "", NULL },
	{ "route empty domain", "FROM:<@:x@y>", 1, "ERR 501 5.1.7", "", NULL },
	{ "route bad domain", "FROM:<@a_b:x@y>", 1, "ERR 501 5.1.7", "", NULL },
	{ "route trailing comma", "FROM:<@a,:x@y>", 1, "ERR 501 5.1.7", "", NULL },
	{ "empty domain", "FROM:<a@>", 1, "ERR 501 5.1.7", "", NULL },
	{ "domain only dot", "FROM:<a@.>", 1, "ERR 501 5.1.7", "", NULL },
	{ "leading hyphen", "FROM:<a@-b.example>", 1, "ERR 501 5.1.7", "", NULL },
	{ "trailing hyphen", "FROM:<a@b-.example>", 1, "ERR 501 5.1.7", "", NULL },
	{ "empty label", "FROM:<a@b..example>", 1, "ERR 501 5.1.7", "", NULL },
	{ "leading dot domain", "FROM:<a@.example>", 1, "ERR 501 5.1.7", "", NULL },
	{ "two trailing dots", "FROM:<a@b.example..>", 1, "ERR 501 5.1.7", "", NULL },
	{ "underscore", "FROM:<a@b_c.example>", 1, "ERR 501 5.1.7", "", NULL },
	{ "leading dot local", "FROM:<.a@b>", 1, "ERR 501 5.1.7", "", NULL },
	{ "trailing dot local", "FROM:<a.@b>", 1, "ERR 501 5.1.7", "", NULL },
	{ "double dot local", "FROM:<a..b@c>", 1, "ERR 501 5.1.7", "", NULL },
	{ "two ats", "FROM:<a@b@c>", 1, "ERR 501 5.1.7", "", NULL },
	{ "space in local", "FROM:<a b@c>", 1, "ERR 501 5.1.7", "", NULL },
	{ "nested brackets", "FROM:<<a@b.example>>", 1, "ERR 501 5.1.7", "", NULL },
	{ "control in local", "FROM:<a\x01" "b@example.org>", 1, "ERR 501 5.1.7", "",
	  NULL },
	{ "control in quoted", "FROM:<\"a\x01\"@example.org>", 1, "ERR 501 5.1.7", "",
	  NULL },
	{ "quoted pair control", "FROM:<\"a\\\x01\"@example.org>", 1,
	  "ERR 501 5.1.7", "", NULL },
	{ "quoted pair 8-bit", "FROM:<\"a\\\xc3\xa9\"@example.org> SMTPUTF8", 1,
	  "ERR 501 5.1.7", "", NULL },
	{ "junk after quoted", "FROM:<\"a\"b@example.org>", 1, "ERR 501 5.1.7", "",
	  NULL },
	{ "IPv4 octet range", "FROM:<a@[192.0.2.256]>", 1, "ERR 501 5.1.7", "", NULL },
	{ "IPv4 short", "FROM:<a@[1.2.3]>", 1, "ERR 501 5.1.7", "", NULL },
	{ "IPv6 bad", "FROM:<a@[IPv6:zz::1]>", 1, "ERR 501 5.1.7", "", NULL },
	{ "IPv6 without tag", "FROM:<a@[2001:db8::1]>", 1, "ERR 501 5.1.7", "", NULL },
	{ "general literal", "FROM:<a@[x-tag:foo]>", 1, "ERR 501 5.1.7", "", NULL },
	{ "open literal", "FROM:<a@[192.0.2.1>", 1, "ERR 501 5.1.7", "", NULL },
	{ "empty literal", "FROM:<a@[]>", 1, "ERR 501 5.1.7", "", NULL },
	{ "literal junk", "FROM:<a@[192.0.2.1]x>", 1, "ERR 501 5.1.7", "", NULL },
	{ "unknown param", "FROM:<a@b.example> FOO=bar", 1, "ERR 555 5.5.4", "", NULL },
	{ "RCPT param on MAIL", "FROM:<a@b.example> NOTIFY=NEVER", 1, "ERR 555 5.5.4",
	  "", NULL },
	{ "duplicate SIZE", "FROM:<a@b.example> SIZE=1 SIZE=2", 1, "ERR 555 5.5.4", "",
	  NULL },
	{ "duplicate BODY", "FROM:<a@b> BODY=7BIT BODY=7BIT", 1, "ERR 555 5.5.4", "",
	  NULL },
	{ "duplicate SMTPUTF8", "FROM:<a@b> SMTPUTF8 SMTPUTF8", 1, "ERR 555 5.5.4", "",
	  NULL },
	{ "SIZE empty", "FROM:<a@b.example> SIZE=", 1, "ERR 555 5.5.4", "", NULL },
	{ "SIZE no value", "FROM:<a@b.example> SIZE", 1, "ERR 555 5.5.4", "", NULL },
	{ "SIZE letters", "FROM:<a@b.example> SIZE=12a", 1, "ERR 555 5.5.4", "", NULL },
	{ "SIZE negative", "FROM:<a@b.example> SIZE=-1", 1, "ERR 555 5.5.4", "", NULL },
	{ "SIZE LLONG_MAX+1", "FROM:<a@b> SIZE=9223372036854775808", 1,
	  "ERR 555 5.5.4", "", NULL },
	{ "SIZE overflow", "FROM:<a@b.example> SIZE=99999999999999999999", 1,
	  "ERR 555 5.5.4", "", NULL },
	{ "BODY binary", "FROM:<a@b.example> BODY=BINARYMIME", 1, "ERR 555 5.5.4", "",
	  NULL },
	{ "BODY no value", "FROM:<a@b.example> BODY", 1, "ERR 555 5.5.4", "", NULL },
	{ "SMTPUTF8 value", "FROM:<a@b.example> SMTPUTF8=yes", 1, "ERR 555 5.5.4", "",
	  NULL },
	{ "SMTPUTF8 not offered", "FROM:<a@b.example> SMTPUTF8", 0, "ERR 555 5.5.4",
	  "", NULL },
	{ "param no keyword", "FROM:<a@b.example> =x", 1, "ERR 555 5.5.4", "", NULL },
	{ "param leading hyphen", "FROM:<a@b.example> -X", 1, "ERR 555 5.5.4", "",
	  NULL },
	{ "param double equals", "FROM:<a@b.example> X=a=b", 1, "ERR 555 5.5.4", "",
	  NULL },
	{ "param 8-bit", "FROM:<a@b.example> SIZE=1\xff", 1, "ERR 555 5.5.4", "",
	  NULL },
	{ "second path", "FROM:<a@b.example> <c@d>", 1, "ERR 555 5.5.4", "", NULL },
	{ "UTF-8 without SMTPUTF8", "FROM:<j\xc3\xb6s\xc3\xa9@example.org>", 1,
	  "ERR 553 5.6.7", "", NULL },
	{ "UTF-8 domain without SMTPUTF8", "FROM:<a@ex\xc3\xa4mple.org>", 1,
	  "ERR 553 5.6.7", "", NULL },
	{ "UTF-8 not offered", "FROM:<a@ex\xc3\xa4mple.org> SMTPUTF8", 0,
	  "ERR 555 5.5.4", "", NULL },
	{ "invalid UTF-8", "FROM:<\xff@example.org> SMTPUTF8", 1, "ERR 501 5.1.7", "",
	  NULL },
	{ "overlong UTF-8", "FROM:<\xc0\xaf@example.org> SMTPUTF8", 1,
	  "ERR 501 5.1.7", "", NULL },
	{ "surrogate UTF-8", "FROM:<a@\xed\xa0\x80.org> SMTPUTF8", 1,
	  "ERR 501 5.1.7", "", NULL },
	{ "8-bit literal", "FROM:<a@[\xc3\xa9]> SMTPUTF8", 1, "ERR 501 5.1.7", "",
	  NULL },
};

/* params_str - "size/body/smtputf8". */
static const char *
params_str(const struct smtp_params *p, char *buf, size_t n)
{
	(void)snprintf(buf, n, "%lld/%d/%d", p->size, p->body, p->smtputf8);
	return buf;
}

static int
mail_check(const struct mail_case *c)
{
	struct smtp_path path;
	struct smtp_params params;
	struct smtp_err err = { 0, NULL, NULL };
	char got[512], buf[64];
	int rc, failed;

	rc = smtp_parse_mail(c->args, c->utf8_ok, &path, &params, &err);
	failed = check_str(c->name, "result",
	    result(rc, &path, &err, got, sizeof(got)), c->want);
	if (rc < 0) {
		if (err.text == NULL || err.text[0] == '\0')
			failed += check_str(c->name, "text", "", "(some text)");
		return failed;
	}
	failed += check_str(c->name, "flags", path_flags(&path, buf), c->flags);
	failed += check_str(c->name, "params", params_str(&params, buf, sizeof(buf)),
	    c->params ? c->params : "-1/0/0");
	return failed;
}

static void
test_mail(void **state)
{
	size_t i;
	int failed = 0;

	(void)state;
	for (i = 0; i < sizeof(mail_cases) / sizeof(mail_cases[0]); i++)
		failed += mail_check(&mail_cases[i]);
	assert_int_equal(failed, 0);
}

struct rcpt_case {
	const char *name;
	const char *args;
	int smtputf8;
	const char *want;
	const char *flags;
};

static const struct rcpt_case rcpt_cases[] = {
	{ "simple", "TO:<a@b.example>", 0, "a@b.example", "" },
	{ "lower, space", "to: <a@b.example>", 0, "a@b.example", "" },
	{ "Postmaster", "TO:<Postmaster>", 0, "Postmaster", "P" },
	{ "postmaster any case", "TO:<postMASTER>", 0, "Postmaster", "P" },
	{ "postmaster at domain", "TO:<postmaster@b.example>", 0,
	  "postmaster@b.example", "" },
	{ "source route", "TO:<@r.example:a@b.example>", 0, "a@b.example", "R" },
	{ "percent hack", "TO:<a%b@c.example>", 0, "a%b@c.example", "S" },
	{ "bang path", "TO:<c!b!a@d.example>", 0, "c!b!a@d.example", "S" },
	{ "quoted at", "TO:<\"a@b\"@c.example>", 0, "\"a@b\"@c.example", "QS" },
	{ "literal", "TO:<a@[IPv6:::1]>", 0, "a@[IPv6:::1]", "L" },
	{ "UTF-8 in SMTPUTF8 txn", "TO:<j\xc3\xb6s\xc3\xa9@example.org>", 1,
	  "j\xc3\xb6s\xc3\xa9@example.org", "U" },
	{ "null path", "TO:<>", 0, "ERR 501 5.1.3", "" },
	{ "postmaster prefix", "TO:<postmasterx>", 0, "ERR 501 5.1.3", "" },
	{ "bad domain", "TO:<a@b..c>", 0, "ERR 501 5.1.3", "" },
	{ "no brackets", "TO:a@b", 0, "ERR 501 5.5.4", "" },
	{ "no TO", "FROM:<a@b>", 0, "ERR 501 5.5.4", "" },
	{ "junk after", "TO:<a@b.example>x", 0, "ERR 501 5.5.4", "" },
	{ "param", "TO:<a@b.example> NOTIFY=NEVER", 0, "ERR 555 5.5.4", "" },
	{ "SIZE on RCPT", "TO:<a@b.example> SIZE=1", 0, "ERR 555 5.5.4", "" },
	{ "postmaster param", "TO:<Postmaster> X", 0, "ERR 555 5.5.4", "" },
	{ "bad param", "TO:<a@b.example> =", 0, "ERR 555 5.5.4", "" },
	{ "UTF-8 without SMTPUTF8", "TO:<j\xc3\xb6s\xc3\xa9@example.org>", 0,
	  "ERR 553 5.6.7", "" },
	{ "invalid UTF-8", "TO:<\xe2\x82@example.org>", 1, "ERR 501 5.1.3", "" },
};

static int
rcpt_check(const struct rcpt_case *c)
{
	struct smtp_path path;
	struct smtp_err err = { 0, NULL, NULL };
	char got[512], buf[16];
	int rc, failed;

	rc = smtp_parse_rcpt(c->args, c->smtputf8, &path, &err);
	failed = check_str(c->name, "result",
	    result(rc, &path, &err, got, sizeof(got)), c->want);
	if (rc == 0)
		failed += check_str(c->name, "flags", path_flags(&path, buf), c->flags);
	return failed;
}

static void
test_rcpt(void **state)
{
	size_t i;
	int failed = 0;

	(void)state;
	for (i = 0; i < sizeof(rcpt_cases) / sizeof(rcpt_cases[0]); i++)
		failed += rcpt_check(&rcpt_cases[i]);
	assert_int_equal(failed, 0);
}

struct helo_case {
	const char *name;
	const char *args;
	int want;
};

static const struct helo_case helo_cases[] = {
	{ "domain", "mx.example.org", 0 },
	{ "trailing dot", "mx.example.org.", 0 },
	{ "single label", "localhost", 0 },
	{ "one char", "a", 0 },
	{ "digits", "1.2.3.4", 0 },
	{ "hyphen inside", "mx-1.example.org", 0 },
	{ "IPv4 literal", "[192.0.2.1]", 0 },
	{ "IPv6 literal", "[IPv6:::1]", 0 },
	{ "trailing spaces", "mx.example.org  ", 0 },
	{ "empty", "", -1 },
	{ "spaces only", "   ", -1 },
	{ "leading hyphen", "-a.example", -1 },
	{ "trailing hyphen", "a-.example", -1 },
	{ "empty label", "a..b", -1 },
	{ "dot only", ".", -1 },
	{ "two dots", "..", -1 },
	{ "underscore", "DESKTOP_1", -1 },
	{ "space inside", "ex ample", -1 },
	{ "two words", "mx.example.org extra", -1 },
	{ "8-bit", "ex\xc3\xa4mple.org", -1 },
	{ "control", "a.b\x01", -1 },
	{ "open literal", "[1.2.3.4", -1 },
	{ "literal junk", "[1.2.3.4]x", -1 },
	{ "bad literal", "[1.2.3.4.5]", -1 },
	{ "bare IPv6", "::1", -1 },
	{ "label 63", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.b",
	  0 },
	{ "label 64", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.b",
	  -1 },
};

static void
test_helo(void **state)
{
	struct smtp_err err = { 0, NULL, NULL };
	size_t i;
	int failed = 0, got;

	(void)state;
	for (i = 0; i < sizeof(helo_cases) / sizeof(helo_cases[0]); i++) {
		got = smtp_parse_helo(helo_cases[i].args, &err);
		if (got == helo_cases[i].want && (got == 0 || (err.code == 501 &&
		    strcmp(err.enh, "5.5.4") == 0)))
			continue;
		print_error("%s: got %d, want %d\n", helo_cases[i].name, got,
		    helo_cases[i].want);
		failed++;
	}
	assert_int_equal(failed, 0);
}

/* make_domain - n octets of "aa.aa..." (labels of label octets) into buf. */
static void
make_domain(char *buf, size_t n, size_t label)
{
	size_t i;

	for (i = 0; i < n; i++)
		buf[i] = (i % (label + 1) == label) ? '.' : 'a';
	buf[n] = '\0';
}

/* RFC 5321 §4.5.3.1: local part 64, domain 255, path 256 octets. */
static void
test_limits(void **state)
{
	struct smtp_path path;
	struct smtp_params params;
	struct smtp_err err;
	char dom[300], line[700], local[80];

	(void)state;
	make_domain(dom, 255, 9);
	assert_int_equal(smtp_parse_helo(dom, &err), 0);
	make_domain(dom, 256, 9);
	assert_int_equal(smtp_parse_helo(dom, &err), -1);

	memset(local, 'l', 64);
	local[64] = '\0';
	(void)snprintf(line, sizeof(line), "FROM:<%s@b>", local);
	assert_int_equal(smtp_parse_mail(line, 0, &path, &params, &err), 0);
	assert_string_equal(path.local, local);
	(void)snprintf(line, sizeof(line), "FROM:<\"%s\"@b>", local);
	assert_int_equal(smtp_parse_mail(line, 0, &path, &params, &err), 0);
	(void)snprintf(line, sizeof(line), "FROM:<l%s@b>", local);
	assert_int_equal(smtp_parse_mail(line, 0, &path, &params, &err), -1);
	assert_int_equal(err.code, 501);
	assert_string_equal(err.enh, "5.1.7");

	/* 64 quoted-pairs: 130 octets as sent, 64 once dequoted. */
	memset(line, 0, sizeof(line));
	strcpy(line, "TO:<\"");
	for (size_t i = 0; i < 64; i++)
		strcat(line, "\\x");
	strcat(line, "\"@b>");
	assert_int_equal(smtp_parse_rcpt(line, 0, &path, &err), 0);
	assert_int_equal(strlen(path.local), 130);

	/* "<" + 63 + "@" + 190 + ">" = 256 octets; one more is too long. */
	memset(local, 'l', 63);
	local[63] = '\0';
	make_domain(dom, 190, 63);
	(void)snprintf(line, sizeof(line), "TO:<%s@%s>", local, dom);
	assert_int_equal(smtp_parse_rcpt(line, 0, &path, &err), 0);
	make_domain(dom, 191, 63);
	(void)snprintf(line, sizeof(line), "TO:<%s@%s>", local, dom);
	assert_int_equal(smtp_parse_rcpt(line, 0, &path, &err), -1);
	assert_int_equal(err.code, 501);
	assert_string_equal(err.enh, "5.1.3");
}

/* The fields a caller uses besides addr. */
static void
test_path_fields(void **state)
{
	struct smtp_path path;
	struct smtp_params params;
	struct smtp_err err;

	(void)state;
	assert_int_equal(smtp_parse_mail("FROM:<@r.example:\"a b\"@B.Example.>", 0,
	    &path, &params, &err), 0);
	assert_string_equal(path.local, "\"a b\"");
	assert_string_equal(path.domain, "B.Example");
	assert_string_equal(path.addr, "\"a b\"@B.Example");
	assert_int_equal(smtp_parse_rcpt("TO:<a@[192.0.2.1]>", 0, &path, &err), 0);
	assert_string_equal(path.domain, "[192.0.2.1]");
	assert_int_equal(smtp_parse_rcpt("TO:<PostMaster>", 0, &path, &err), 0);
	assert_string_equal(path.local, "PostMaster");
	assert_string_equal(path.domain, "");
}

struct split_case {
	const char *name;
	const char *line;
	size_t verbmax;
	int want;
	const char *verb;
	const char *args;
};

static const struct split_case split_cases[] = {
	{ "MAIL", "MAIL FROM:<a@b>", 16, 0, "MAIL", "FROM:<a@b>" },
	{ "lower case", "mail FROM:<a>", 16, 0, "MAIL", "FROM:<a>" },
	{ "no args", "QUIT", 16, 0, "QUIT", "" },
	{ "trailing space", "QUIT ", 16, 0, "QUIT", "" },
	{ "many spaces", "EHLO   x y", 16, 0, "EHLO", "x y" },
	{ "fits exactly", "STARTTLS", 9, 0, "STARTTLS", "" },
	{ "too long", "STARTTLS", 8, -1, "", "" },
	{ "empty", "", 16, -1, "", "" },
	{ "leading space", " QUIT", 16, -1, "", "" },
	{ "tab", "QUIT\t", 16, -1, "", "" },
	{ "digit", "MA1L x", 16, -1, "", "" },
	{ "colon", "MAIL:", 16, -1, "", "" },
	{ "8-bit", "\xc3\x89HLO x", 16, -1, "", "" },
	{ "8-bit after verb", "HELO\xc3\xa9", 16, -1, "", "" },
	{ "CR", "QUIT\r", 16, -1, "", "" },
};

static void
test_cmd_split(void **state)
{
	char verb[16];
	const char *args;
	size_t i;
	int failed = 0, got;

	(void)state;
	for (i = 0; i < sizeof(split_cases) / sizeof(split_cases[0]); i++) {
		const struct split_case *c = &split_cases[i];

		args = "";
		verb[0] = '\0';
		got = smtp_cmd_split(c->line, verb, c->verbmax, &args);
		if (got != c->want) {
			print_error("%s: got %d, want %d\n", c->name, got, c->want);
			failed++;
		} else if (got == 0) {
			failed += check_str(c->name, "verb", verb, c->verb);
			failed += check_str(c->name, "args", args, c->args);
		}
	}
	assert_int_equal(failed, 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_mail),
		cmocka_unit_test(test_rcpt),
		cmocka_unit_test(test_helo),
		cmocka_unit_test(test_limits),
		cmocka_unit_test(test_path_fields),
		cmocka_unit_test(test_cmd_split),
	};

	return cmocka_run_group_tests_name("smtp_parse", tests, NULL, NULL);
}
