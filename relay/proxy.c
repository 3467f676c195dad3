/*
 * proxy.c - HAProxy PROXY protocol v1 and v2 header parser.
 *
 * Owns the byte-level grammar of both versions (proxy-protocol.txt §2.1,
 * §2.2) and nothing else: the listener decides which version to expect and
 * what to do with the addresses.  Contract (see proxy.h): the result for a
 * buffer depends only on its bytes; a valid header of length k gives 0 for
 * every proper prefix and k for every buffer that starts with it; once a
 * prefix is invalid (-1), every longer buffer is too.  Strict on purpose: a
 * header comes from a proxy we configured, so anything unusual is refused.
 * Fuzzed by tests/fuzz/fuzz_proxy.c.
 */
#include "relay/proxy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

static void
proxy_set_in4(struct sockaddr_storage *ss, const void *addr, unsigned port)
{
	struct sockaddr_in sin;

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons((unsigned short)port);
	memcpy(&sin.sin_addr, addr, 4);
	memset(ss, 0, sizeof(*ss));
	memcpy(ss, &sin, sizeof(sin));
}

static void
proxy_set_in6(struct sockaddr_storage *ss, const void *addr, unsigned port)
{
	struct sockaddr_in6 sin6;

	memset(&sin6, 0, sizeof(sin6));
	sin6.sin6_family = AF_INET6;
	sin6.sin6_port = htons((unsigned short)port);
	memcpy(&sin6.sin6_addr, addr, 16);
	memset(ss, 0, sizeof(*ss));
	memcpy(ss, &sin6, sizeof(sin6));
}

/* ------------------------------------------------------------------ */
/* Version 1 (§2.1): a single line of US-ASCII text                    */
/* ------------------------------------------------------------------ */

/*
 * "a decimal integer in the range [0..65535] inclusive": 1..5 digits, no
 * sign and no leading zero.  Returns the port or -1.
 */
static long
proxy_v1_port(const char *s)
{
	size_t n = strlen(s);
	long v = 0;

	if (n == 0 || n > 5 || (n > 1 && s[0] == '0'))
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	return v <= 65535 ? v : -1;
}

/*
 * Split s at single spaces into exactly n non-empty tokens.  Returns 0, or
 * -1 when there are more or fewer tokens or two spaces in a row.
 */
static int
proxy_v1_split(char *s, char **tok, int n)
{
	int i = 0;

	for (;;) {
		char *sp = strchr(s, ' ');
		if (*s == '\0' || *s == ' ' || i == n)
			return -1;
		tok[i++] = s;
		if (sp == NULL)
			break;
		*sp = '\0';
		s = sp + 1;
	}
	return i == n ? 0 : -1;
}

/*
 * "PROXY" SP ( "TCP4" / "TCP6" ) SP src SP dst SP sport SP dport CRLF, with
 * addresses in the inet_pton() form of the announced family.  args is the
 * text after "TCP4 " / "TCP6 ".
 */
static int
proxy_v1_tcp(char *args, int af, struct proxy_hdr *h, const char **why)
{
	unsigned char a[2][16];
	char *tok[4];
	long sport, dport;

	if (proxy_v1_split(args, tok, 4) < 0) {
		*why = "PROXY v1: expected 4 space-separated fields";
		return -1;
	}
	if (inet_pton(af, tok[0], a[0]) != 1 || inet_pton(af, tok[1], a[1]) != 1) {
		*why = "PROXY v1: bad address";
		return -1;
	}
	sport = proxy_v1_port(tok[2]);
	dport = proxy_v1_port(tok[3]);
	if (sport < 0 || dport < 0) {
		*why = "PROXY v1: bad port";
		return -1;
	}
	h->family = af;
	if (af == AF_INET) {
		proxy_set_in4(&h->src, a[0], (unsigned)sport);
		proxy_set_in4(&h->dst, a[1], (unsigned)dport);
	} else {
		proxy_set_in6(&h->src, a[0], (unsigned)sport);
		proxy_set_in6(&h->dst, a[1], (unsigned)dport);
	}
	return 0;
}

/*
 * One complete line, CRLF removed (n <= PROXY_V1_MAX - 2).  "For
 * "UNKNOWN", the rest of the line before the CRLF may be omitted by the
 * sender, and the receiver must ignore anything presented before the CRLF".
 */
static int
proxy_v1_line(const unsigned char *buf, size_t n, struct proxy_hdr *h, const char **why)
{
	char line[PROXY_V1_MAX];

	memcpy(line, buf, n);
	line[n] = '\0';
	if (strncmp(line, "PROXY UNKNOWN", 13) == 0 && (line[13] == '\0' || line[13] == ' ')) {
		h->local = 1;
		h->family = AF_UNSPEC;
		return 0;
	}
	if (strncmp(line, "PROXY TCP4 ", 11) == 0)
		return proxy_v1_tcp(line + 11, AF_INET, h, why);
	if (strncmp(line, "PROXY TCP6 ", 11) == 0)
		return proxy_v1_tcp(line + 11, AF_INET6, h, why);
	*why = "PROXY v1: protocol is not TCP4, TCP6 or UNKNOWN";
	return -1;
}

/*
 * Scan the bytes present for the line end.  Returns the index of the LF of
 * a CRLF, 0 when more bytes are needed, -1 when the bytes cannot start a
 * valid line: wrong prefix, a byte outside SP..'~', a CR not followed by LF,
 * a bare LF, or no CRLF within PROXY_V1_MAX bytes.
 */
static long
proxy_v1_scan(const unsigned char *buf, size_t len, const char **why)
{
	static const char prefix[] = "PROXY ";
	size_t n = len < PROXY_V1_MAX ? len : PROXY_V1_MAX;

	if (memcmp(buf, prefix, n < 6 ? n : 6) != 0) {
		*why = "PROXY v1: no \"PROXY \" prefix";
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		if (buf[i] == '\r' && i + 1 < n && buf[i + 1] == '\n')
			return (long)(i + 1);
		if (buf[i] == '\r' && i + 1 == len)
			return 0;
		if (buf[i] < 0x20 || buf[i] > 0x7e) {
			*why = "PROXY v1: bad character or line ending";
			return -1;
		}
	}
	if (len >= PROXY_V1_MAX) {
		*why = "PROXY v1: line longer than 107 bytes";
		return -1;
	}
	return 0;
}

static int
proxy_v1(const unsigned char *buf, size_t len, struct proxy_hdr *h, const char **why)
{
	long lf = proxy_v1_scan(buf, len, why);

	if (lf <= 0)
		return (int)lf;
	if (proxy_v1_line(buf, (size_t)lf - 1, h, why) < 0)
		return -1;
	h->version = 1;
	return (int)lf + 1;
}

/* ------------------------------------------------------------------ */
/* Version 2 (§2.2): binary                                            */
/* ------------------------------------------------------------------ */

static const unsigned char proxy_v2_sig[12] = {
	0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A
};

#define PROXY_V2_LOCAL  0x0
#define PROXY_V2_PROXY  0x1

/*
 * The 14th byte: "The highest 4 bits contain the address family, the
 * lowest 4 bits contain the protocol."  We take TCP over IPv4 (0x11, 12
 * address bytes) and TCP over IPv6 (0x21, 36 bytes).  Returns the address
 * block length, or -1 with *why.
 */
static int
proxy_v2_family(unsigned fam, const char **why)
{
	switch (fam) {
	case 0x11:
		return 12;
	case 0x21:
		return 36;
	case 0x00:
		*why = "PROXY v2: PROXY command with family UNSPEC";
		return -1;
	case 0x12:
	case 0x22:
		*why = "PROXY v2: UDP is not SMTP";
		return -1;
	case 0x31:
	case 0x32:
		*why = "PROXY v2: AF_UNIX addresses not supported";
		return -1;
	}
	*why = "PROXY v2: unknown address family or protocol";
	return -1;
}

/*
 * The fixed 16 bytes: signature, "\x2" version with LOCAL or PROXY command
 * ("Receivers must drop connections presenting unexpected values here"),
 * family and length.  Returns the payload length, or -1 with *why.
 */
static long
proxy_v2_head(const unsigned char *b, int *alen, const char **why)
{
	unsigned vercmd = b[12], plen = (unsigned)b[14] << 8 | b[15];

	if (vercmd >> 4 != 2 || (vercmd & 0xf) > PROXY_V2_PROXY) {
		*why = "PROXY v2: bad version or command";
		return -1;
	}
	if (plen > PROXY_V2_MAX_PAYLOAD) {
		*why = "PROXY v2: header too long";
		return -1;
	}
	*alen = 0;
	if ((vercmd & 0xf) == PROXY_V2_PROXY) {
		if ((*alen = proxy_v2_family(b[13], why)) < 0)
			return -1;
		if (plen < (unsigned)*alen) {
			*why = "PROXY v2: length shorter than the address block";
			return -1;
		}
	}
	return (long)plen;
}

/*
 * TLVs fill the rest of the payload: type (1), length (2, network order),
 * value.  We use none of them but refuse any that overruns the payload.
 */
static int
proxy_v2_tlvs(const unsigned char *p, size_t n, const char **why)
{
	size_t i = 0;

	while (i < n) {
		size_t vlen;
		if (n - i < 3) {
			*why = "PROXY v2: truncated TLV";
			return -1;
		}
		vlen = (size_t)p[i + 1] << 8 | p[i + 2];
		if (vlen > n - i - 3) {
			*why = "PROXY v2: TLV overruns the header";
			return -1;
		}
		i += 3 + vlen;
	}
	return 0;
}

static void
proxy_v2_addrs(const unsigned char *a, int alen, struct proxy_hdr *h)
{
	if (alen == 12) {
		h->family = AF_INET;
		proxy_set_in4(&h->src, a, (unsigned)a[8] << 8 | a[9]);
		proxy_set_in4(&h->dst, a + 4, (unsigned)a[10] << 8 | a[11]);
	} else {
		h->family = AF_INET6;
		proxy_set_in6(&h->src, a, (unsigned)a[32] << 8 | a[33]);
		proxy_set_in6(&h->dst, a + 16, (unsigned)a[34] << 8 | a[35]);
	}
}

static int
proxy_v2(const unsigned char *buf, size_t len, struct proxy_hdr *h, const char **why)
{
	long plen;
	int alen;

	if (memcmp(buf, proxy_v2_sig, len < 12 ? len : 12) != 0) {
		*why = "PROXY v2: bad signature";
		return -1;
	}
	if (len < PROXY_V2_HDR)
		return 0;
	if ((plen = proxy_v2_head(buf, &alen, why)) < 0)
		return -1;
	if (len < PROXY_V2_HDR + (size_t)plen)
		return 0;
	h->version = 2;
	if (alen == 0) {
		/* LOCAL: "discard the protocol block including the family" */
		h->local = 1;
		h->family = AF_UNSPEC;
		return PROXY_V2_HDR + (int)plen;
	}
	if (proxy_v2_tlvs(buf + PROXY_V2_HDR + alen, (size_t)(plen - alen), why) < 0)
		return -1;
	proxy_v2_addrs(buf + PROXY_V2_HDR, alen, h);
	return PROXY_V2_HDR + (int)plen;
}

int
proxy_parse(const unsigned char *buf, size_t len, int version,
    struct proxy_hdr *out, const char **why)
{
	struct proxy_hdr h;
	int r;

	memset(&h, 0, sizeof(h));
	if (version == 1)
		r = proxy_v1(buf, len, &h, why);
	else if (version == 2)
		r = proxy_v2(buf, len, &h, why);
	else {
		*why = "PROXY: version is not 1 or 2";
		r = -1;
	}
	if (r > 0)
		*out = h;
	return r;
}
