/*
 * test_proxy.c - relay/proxy.c: PROXY protocol v1 and v2 headers.
 *
 * Each case runs on the whole header, on the header followed by SMTP bytes
 * (the return value must still be the header length), and trickled: every
 * proper prefix of a valid header gives 0; for an invalid one, once a prefix
 * gives -1 every longer one does, and the full input does.  Inputs are exact
 * heap copies so ASan sees reads past len.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cmocka.h>

#include "relay/proxy.h"

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* The v2 signature and the addresses used in the v2 cases, as hex. */
#define SIG   "0d0a0d0a000d0a515549540a"
#define A4    "c0000201 c6336401 dc04 0019"   /* 192.0.2.1:56324 -> 198.51.100.1:25 */
#define A6    "20010db8000000000000000000000001 20010db8000000000000000000000002 ffff 0000"

#define MAX6  "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"

struct proxy_case {
	const char *name;
	int version;
	const char *in;     /* text (v1) or hex with optional spaces (hex = 1) */
	int hex;
	int want;           /* header length, 0 need more, -1 invalid */
	int local;
	int family;
	const char *src, *dst;
	unsigned sport, dport;
};

static const struct proxy_case cases[] = {
	/* v1, valid */
	{ "v1 tcp4", 1, "PROXY TCP4 192.0.2.1 198.51.100.1 56324 25\r\n", 0, 44, 0, AF_INET,
	  "192.0.2.1", "198.51.100.1", 56324, 25 },
	{ "v1 tcp6", 1, "PROXY TCP6 2001:db8::1 2001:db8::2 65535 0\r\n", 0, 44, 0, AF_INET6,
	  "2001:db8::1", "2001:db8::2", 65535, 0 },
	{ "v1 tcp6 mapped", 1, "PROXY TCP6 ::ffff:192.0.2.1 ::1 1 2\r\n", 0, 37, 0, AF_INET6,
	  "::ffff:192.0.2.1", "::1", 1, 2 },
	{ "v1 tcp6 longest", 1, "PROXY TCP6 " MAX6 " " MAX6 " 65535 65535\r\n", 0, 104, 0,
	  AF_INET6, MAX6, MAX6, 65535, 65535 },
	{ "v1 unknown", 1, "PROXY UNKNOWN\r\n", 0, 15, 1, AF_UNSPEC, NULL, NULL, 0, 0 },
	{ "v1 unknown with args 107", 1, "PROXY UNKNOWN " MAX6 " " MAX6 " 65535 65535\r\n",
	  0, 107, 1, AF_UNSPEC, NULL, NULL, 0, 0 },
	/* v1, incomplete */
	{ "v1 empty", 1, "", 0, 0, 0, 0, NULL, NULL, 0, 0 },
	{ "v1 missing CRLF", 1, "PROXY TCP4 192.0.2.1 198.51.100.1 56324 25", 0, 0, 0, 0, NULL, NULL, 0, 0 },
	{ "v1 missing LF", 1, "PROXY TCP4 192.0.2.1 198.51.100.1 56324 25\r", 0, 0, 0, 0, NULL, NULL, 0, 0 },
	/* v1, invalid */
	{ "v1 bare LF", 1, "PROXY TCP4 192.0.2.1 198.51.100.1 56324 25\n", 0, -1, 0, 0, NULL, NULL, 0, 0 },
	{ "v1 CR CR LF", 1, "PROXY TCP4 192.0.2.1 198.51.100.1 56324 25\r\r\n", 0, -1, 0, 0, NULL, NULL, 0, 0 },
	{ "v1 too long", 1, "PROXY UNKNOWN " MAX6 " " MAX6 " 65535 65535x\r\n", 0, -1, 0, 0, NULL, NULL, 0, 0 },
	{ "v1 no CRLF in 107", 1, "PROXY UNKNOWN " MAX6 " " MAX6 " 65535 65535xxxxxxxxxx", 0, -1, 0, 0, NULL, NULL, 0, 0 },
	{ "v1 double space 1", 1, "PROXY  TCP4 192.0.2.1 198.51.100.1 1 2\r\n", 0, -1, 0, 0, NULL, NULL, 0, 0 },
	{ "v1 double space 2", 1, "PROXY TCP4 192.0.2.1  198.51.100.1 1 2\r\n", 0, -1, 0, 0, NULL, NULL, 0, 0 },
	{ "v1 trailing space", 1, "PROXY TCP4 192.0.2.1 198.51.100.1 1 2 \r\n", 0, -1, 0, 0, NULL, NULL, 0, 0 },
	{ "v1 tab", 1, "PROXY TCP4 192.0.2.1\t198.51.100.1 1 2\r\n", 0, -1, 0, 0, NULL, NULL, 0, 0 },
	{ "v1 extra field", 1, "PROXY TCP4 192.0.2.1 198.51.100.1 1 2 3\r\n", 0, -1, 0, 0, NULL, NULL, 0, 0 },
	{ "v1 missing port", 1, "PROXY TCP4 192.0.2.1 198.51.100.1 1\r\n", 0, -1, 0, 0, NULL, NULL, 0, 0 },
	{ "v1 port 65536", 1, "PROXY TCP4 192.0.2.1 198.51.100.1 65536 25\r\n", 0, -1, 0, 0, NULL, NULL, 0, 0 },
	{ "v1 port 999999", 1, "PROXY TCP4 192.0.2.1 198.51.100.1 999999 25\r\n", 0, -1, 0, 0, NULL, NULL, 0, 0 },
	{ "v1 port plus", 1, "PROXY TCP4 192.0.2.1 198.51.100.1 +25 25\r\n", 0, -1, 0, 0, NULL, NULL, 0, 0 },
	{ "v1 port minus", 1, "PROXY TCP4 192.0.2.1 198.51.100.1 -1 25\r\n", 0, -1, 0, 0, NULL, NULL, 0, 0 },
	{ "v1 port leading zero", 1, "PROXY TCP4 192.0.2.1 198.51.100.1 025 25\r\n", 0, -1, 0, 0, NULL, NULL, 0, 0 },
	{ "v1 port hex", 1, "PROXY TCP4 192.0.2.1 198.51.100.1 0x19 25\r\n", 0, -1, 0, 0, NULL, NULL, 0, 0 },
	{ "v1 port letters", 1, "PROXY TCP4 192.0.2.1 198.51.100.1 25a 25\r\n", 0, -1, 0, 0, NULL, NULL, 0, 0 },
	{ "v1 bad ipv4", 1, "PROXY TCP4 192.0.2.256 198.51.100.1 1 2\r\n", 0, -1, 0, 0, NULL, NULL, 0, 0 },
	{ "v1 short ipv4", 1, "PROXY TCP4 192.0.2 198.51.100.1 1 2\r\n", 0, -1, 0, 0, NULL, NULL, 0, 0 },
	{ "v1 ipv6 in tcp4", 1, "PROXY TCP4 2001:db8::1 198.51.100.1 1 2\r\n", 0, -1, 0, 0, NULL, NULL, 0, 0 },
	{ "v1 ipv4 in tcp6", 1, "PROXY TCP6 192.0.2.1 2001:db8::2 1 2\r\n", 0, -1, 0, 0, NULL, NULL, 0, 0 },
	{ "v1 host name", 1, "PROXY TCP4 localhost 198.51.100.1 1 2\r\n", 0, -1, 0, 0, NULL, NULL, 0, 0 },
	{ "v1 udp4", 1, "PROXY UDP4 192.0.2.1 198.51.100.1 1 2\r\n", 0, -1, 0, 0, NULL, NULL, 0, 0 },
	{ "v1 lower case", 1, "PROXY tcp4 192.0.2.1 198.51.100.1 1 2\r\n", 0, -1, 0, 0, NULL, NULL, 0, 0 },
	{ "v1 proxy lower", 1, "proxy TCP4 192.0.2.1 198.51.100.1 1 2\r\n", 0, -1, 0, 0, NULL, NULL, 0, 0 },
	{ "v1 unknownx", 1, "PROXY UNKNOWNX\r\n", 0, -1, 0, 0, NULL, NULL, 0, 0 },
	{ "v1 proxy only", 1, "PROXY\r\n", 0, -1, 0, 0, NULL, NULL, 0, 0 },
	{ "v1 proxy sp", 1, "PROXY \r\n", 0, -1, 0, 0, NULL, NULL, 0, 0 },
	{ "v1 tcp4 no args", 1, "PROXY TCP4\r\n", 0, -1, 0, 0, NULL, NULL, 0, 0 },
	{ "v1 smtp", 1, "EHLO client.example\r\n", 0, -1, 0, 0, NULL, NULL, 0, 0 },
	{ "v1 given v2", 1, SIG "2111000c" A4, 1, -1, 0, 0, NULL, NULL, 0, 0 },
	{ "v1 high byte", 1, "PROXY UNKNOWN \xff\r\n", 0, -1, 0, 0, NULL, NULL, 0, 0 },
	{ "v1 NUL", 1, "PROXY UNKNOWN \0\r\n", 0, -1, 0, 0, NULL, NULL, 0, 0 },

	/* v2, valid */
	{ "v2 tcp4", 2, SIG "2111000c" A4, 1, 28, 0, AF_INET,
	  "192.0.2.1", "198.51.100.1", 56324, 25 },
	{ "v2 tcp6", 2, SIG "21210024" A6, 1, 52, 0, AF_INET6,
	  "2001:db8::1", "2001:db8::2", 65535, 0 },
	{ "v2 tcp4 tlvs", 2, SIG "21110017" A4 "01 0002 6832  04 0003 000000", 1, 39, 0, AF_INET,
	  "192.0.2.1", "198.51.100.1", 56324, 25 },
	{ "v2 tcp6 empty tlv", 2, SIG "21210027" A6 "04 0000", 1, 55, 0, AF_INET6,
	  "2001:db8::1", "2001:db8::2", 65535, 0 },
	{ "v2 local", 2, SIG "20000000", 1, 16, 1, AF_UNSPEC, NULL, NULL, 0, 0 },
	{ "v2 local with addresses", 2, SIG "2011000c" A4, 1, 28, 1, AF_UNSPEC, NULL, NULL, 0, 0 },
	{ "v2 local any family", 2, SIG "20ff0003 010203", 1, 19, 1, AF_UNSPEC, NULL, NULL, 0, 0 },
	/* v2, incomplete */
	{ "v2 signature only", 2, SIG, 1, 0, 0, 0, NULL, NULL, 0, 0 },
	{ "v2 head only", 2, SIG "2111000c", 1, 0, 0, 0, NULL, NULL, 0, 0 },
	{ "v2 short address", 2, SIG "2111000c c0000201c6336401dc04", 1, 0, 0, 0, NULL, NULL, 0, 0 },
	/* v2, invalid */
	{ "v2 bad signature", 2, "0d0a0d0a000d0a515549540b 2111000c" A4, 1, -1, 0, 0, NULL, NULL, 0, 0 },
	{ "v2 bad sig first byte", 2, "0e", 1, -1, 0, 0, NULL, NULL, 0, 0 },
	{ "v2 version 1", 2, SIG "1111000c" A4, 1, -1, 0, 0, NULL, NULL, 0, 0 },
	{ "v2 version 3", 2, SIG "3111000c" A4, 1, -1, 0, 0, NULL, NULL, 0, 0 },
	{ "v2 command 2", 2, SIG "2211000c" A4, 1, -1, 0, 0, NULL, NULL, 0, 0 },
	{ "v2 udp4", 2, SIG "2112000c" A4, 1, -1, 0, 0, NULL, NULL, 0, 0 },
	{ "v2 udp6", 2, SIG "21220024" A6, 1, -1, 0, 0, NULL, NULL, 0, 0 },
	{ "v2 unix stream", 2, SIG "213100d8", 1, -1, 0, 0, NULL, NULL, 0, 0 },
	{ "v2 unspec proxy", 2, SIG "21000000", 1, -1, 0, 0, NULL, NULL, 0, 0 },
	{ "v2 unknown family", 2, SIG "2141000c" A4, 1, -1, 0, 0, NULL, NULL, 0, 0 },
	{ "v2 tcp4 transport 0", 2, SIG "2110000c" A4, 1, -1, 0, 0, NULL, NULL, 0, 0 },
	{ "v2 length < tcp4 block", 2, SIG "2111000b c0000201c6336401dc0400", 1, -1, 0, 0, NULL, NULL, 0, 0 },
	{ "v2 length < tcp6 block", 2, SIG "2121000c" A4, 1, -1, 0, 0, NULL, NULL, 0, 0 },
	{ "v2 length too big", 2, SIG "21110801", 1, -1, 0, 0, NULL, NULL, 0, 0 },
	{ "v2 tlv truncated", 2, SIG "2111000e" A4 "0100", 1, -1, 0, 0, NULL, NULL, 0, 0 },
	{ "v2 tlv overrun", 2, SIG "21110010" A4 "01000268", 1, -1, 0, 0, NULL, NULL, 0, 0 },
	{ "v2 given v1", 2, "PROXY TCP4 192.0.2.1 198.51.100.1 56324 25\r\n", 0, -1, 0, 0, NULL, NULL, 0, 0 },
	{ "v2 smtp", 2, "EHLO x\r\n", 0, -1, 0, 0, NULL, NULL, 0, 0 },
};

/* Decode hex, skipping spaces; returns the byte count. */
static size_t
unhex(const char *s, unsigned char *out)
{
	size_t n = 0;
	unsigned hi = 0;
	int half = 0;

	for (; *s; s++) {
		unsigned v;
		if (*s == ' ')
			continue;
		v = (unsigned)(*s <= '9' ? *s - '0' : (*s | 0x20) - 'a' + 10);
		if (half)
			out[n++] = (unsigned char)(hi << 4 | v);
		else
			hi = v;
		half = !half;
	}
	assert_int_equal(half, 0);
	return n;
}

/* The case's bytes; the v1 NUL case needs its length spelled out. */
static size_t
case_bytes(const struct proxy_case *c, unsigned char *out)
{
	size_t n;

	if (c->hex)
		return unhex(c->in, out);
	n = strlen(c->in);
	if (strcmp(c->name, "v1 NUL") == 0)
		n = 17;
	memcpy(out, c->in, n);
	return n;
}

static int
parse_exact(const struct proxy_case *c, const unsigned char *b, size_t n,
    struct proxy_hdr *h)
{
	unsigned char *copy = malloc(n > 0 ? n : 1);
	const char *why = NULL;
	int r;

	assert_non_null(copy);
	memcpy(copy, b, n);
	r = proxy_parse(copy, n, c->version, h, &why);
	if (r < 0 && why == NULL)
		fail_msg("%s: -1 without a reason", c->name);
	free(copy);
	return r;
}

static void
check_addr(const struct proxy_case *c, const struct sockaddr_storage *ss,
    const char *want, unsigned port)
{
	char got[INET6_ADDRSTRLEN];
	const void *a;
	unsigned p;

	if (ss->ss_family != c->family)
		fail_msg("%s: family %d, want %d", c->name, ss->ss_family, c->family);
	if (c->family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
		a = &sin->sin_addr;
		p = ntohs(sin->sin_port);
	} else {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
		a = &sin6->sin6_addr;
		p = ntohs(sin6->sin6_port);
	}
	assert_non_null(inet_ntop(c->family, a, got, sizeof(got)));
	if (strcmp(got, want) != 0 || p != port)
		fail_msg("%s: address %s port %u, want %s %u", c->name, got, p, want, port);
}

static void
check_result(const struct proxy_case *c, const struct proxy_hdr *h)
{
	if (h->version != c->version || h->local != c->local || h->family != c->family)
		fail_msg("%s: version %d local %d family %d, want %d %d %d", c->name,
		    h->version, h->local, h->family, c->version, c->local, c->family);
	if (!c->local) {
		check_addr(c, &h->src, c->src, c->sport);
		check_addr(c, &h->dst, c->dst, c->dport);
	}
}

/* Every prefix: 0 before a valid header is complete; -1 is final. */
static void
check_trickle(const struct proxy_case *c, const unsigned char *b, size_t n)
{
	struct proxy_hdr h;
	int seen_invalid = 0;

	for (size_t k = 0; k < n; k++) {
		int r = parse_exact(c, b, k, &h);
		if (c->want >= 0 && r != 0)
			fail_msg("%s: prefix %zu: got %d, want 0", c->name, k, r);
		if (r > 0 || (seen_invalid && r != -1))
			fail_msg("%s: prefix %zu: got %d after -1", c->name, k, r);
		seen_invalid |= (r == -1);
	}
}

static void
run_case(const struct proxy_case *c)
{
	static const char smtp[] = "EHLO client.example\r\n";
	unsigned char b[512];
	struct proxy_hdr h;
	size_t n = case_bytes(c, b);
	int r;

	r = parse_exact(c, b, n, &h);
	if (r != c->want)
		fail_msg("%s: got %d, want %d", c->name, r, c->want);
	if (r > 0)
		check_result(c, &h);
	check_trickle(c, b, n);
	if (c->want == 0)
		return;
	memcpy(b + n, smtp, sizeof(smtp) - 1);
	r = parse_exact(c, b, n + sizeof(smtp) - 1, &h);
	if (r != c->want)
		fail_msg("%s: with SMTP after it: got %d, want %d", c->name, r, c->want);
}

static void
test_proxy_cases(void **state)
{
	(void)state;
	for (size_t i = 0; i < NELEM(cases); i++)
		run_case(&cases[i]);
}

/* A v2 header at the largest accepted length, all of it one TLV. */
static void
test_proxy_v2_max(void **state)
{
	size_t n = PROXY_V2_HDR + PROXY_V2_MAX_PAYLOAD;
	unsigned char *b = calloc(1, n);
	const char *why = NULL;
	struct proxy_hdr h;
	size_t tlv = PROXY_V2_MAX_PAYLOAD - 12 - 3;

	(void)state;
	assert_non_null(b);
	assert_int_equal(unhex(SIG "2111" "0800" A4, b), 28);
	b[28] = 0xee;
	b[29] = (unsigned char)(tlv >> 8);
	b[30] = (unsigned char)tlv;
	assert_int_equal(proxy_parse(b, n, 2, &h, &why), (int)n);
	assert_int_equal(proxy_parse(b, n - 1, 2, &h, &why), 0);
	b[30]++;
	assert_int_equal(proxy_parse(b, n, 2, &h, &why), -1);
	free(b);
}

static void
test_proxy_bad_version(void **state)
{
	const char *why = NULL;
	struct proxy_hdr h;

	(void)state;
	assert_int_equal(proxy_parse((const unsigned char *)"PROXY ", 6, 3, &h, &why), -1);
	assert_non_null(why);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_proxy_cases),
		cmocka_unit_test(test_proxy_v2_max),
		cmocka_unit_test(test_proxy_bad_version),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
