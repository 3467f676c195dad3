/*
 * report_send.c - delivery of RFC 8460 reports; the contract and the
 * decisions are in report_send.h.
 *
 * Owns: the parser of the "_smtp._tls" TXT record (pure), the §5.3 report
 * message (pure), and the delivery engine: one struct rs_report per policy
 * domain, a few of them in flight, each running
 *
 *   LOOKUP (TXT) -> NEXT -> ATTEMPT (one rua) -> NEXT -> ... -> DONE
 *
 * Callbacks from the resolver, relay/upstream.c and evhttp only record what
 * happened and activate the report's step event; connections are freed and
 * the next step taken from that event (rs_step_cb), never from inside
 * evhttp (freeing an evhttp_connection from its own callbacks is a
 * use-after-free).  Every attempt has a deadline timer, so the run ends.
 *
 * SMTP is relay/upstream.c's client state machine (at level "may", toward
 * the relay's own smarthost listener); TLS verification for https: is
 * OpenSSL's (SSL_VERIFY_PEER + SSL_set1_host); DNS is policy/resolver.c's
 * (evhttp gets IP literals through an evdns_base without nameservers, so
 * the libc resolver, getaddrinfo, is never called).
 */
#include "policy/report_send.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <arpa/inet.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/http.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "certs/tlsctx.h"
#include "policy/resolver.h"
#include "relay/config.h"
#include "relay/upstream.h"

#define RS_PARALLEL      4          /* reports in flight at once */
#define RS_ADDRS_MAX     4          /* addresses tried per https: host */
#define RS_HTTP_MAX      65536      /* response headers and body read at most */
#define RS_DETAIL_MAX    320
#define RS_B64_IN        57         /* bytes per base64 line: 76 characters */
#define RS_QNAME_PREFIX  "_smtp._tls."

static const char rs_version[] = "v=TLSRPTv1";

/* ====================================================================== */
/* The "_smtp._tls" TXT record (RFC 8460 §3)                              */
/* ====================================================================== */

static int
rs_wsp(char c)
{
	return c == ' ' || c == '\t';
}

static int
rs_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* s[0..n) with control, space and non-ASCII bytes shown as '?'. */
static void
rs_printable(char *dst, size_t cap, const char *s, size_t n)
{
	size_t i;

	if (cap == 0)
		return;
	if (n > cap - 1)
		n = cap - 1;
	for (i = 0; i < n; i++)
		dst[i] = s[i] > ' ' && s[i] < 0x7f ? s[i] : s[i] == ' ' || s[i] == '\n' ? ' ' : '?';
	dst[n] = '\0';
}

/* A URI (or field) left out: counted, and the first few say why. */
static void __attribute__((format(printf, 2, 3)))
rs_ignore(struct report_tlsrpt *rec, const char *fmt, ...)
{
	va_list ap;

	rec->nignored++;
	if (rec->nnotes >= REPORT_NOTES_MAX)
		return;
	va_start(ap, fmt);
	vsnprintf(rec->notes[rec->nnotes++], REPORT_NOTE_LEN, fmt, ap);
	va_end(ap);
}

/* tlsrpt-ext-name = (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / ".") */
static int
rs_ext_name(const char *s, size_t n)
{
	size_t i;

	if (n == 0 || n > 32 || !rs_alnum(s[0]))
		return 0;
	for (i = 1; i < n; i++)
		if (!rs_alnum(s[i]) && s[i] != '_' && s[i] != '-' && s[i] != '.')
			return 0;
	return 1;
}

/* tlsrpt-ext-value = 1*(%x21-3A / %x3C / %x3E-7E) */
static int
rs_ext_value(const char *s, size_t n)
{
	size_t i;

	if (n == 0)
		return 0;
	for (i = 0; i < n; i++)
		if (s[i] < 0x21 || s[i] > 0x7e || s[i] == ';' || s[i] == '=')
			return 0;
	return 1;
}

/*
 * A host name in place: one trailing dot dropped, lower-cased, LDH labels
 * (underscore tolerated) of 1..63, at most 253 in all, not an IP address.
 * 0, or -1 with *why set.
 */
static int
rs_host_norm(char *h, const char **why)
{
	size_t n = strlen(h), i, label = 0;
	unsigned char addr[16];

	if (n > 0 && h[n - 1] == '.')
		h[--n] = '\0';
	*why = "not a host name";
	if (n == 0 || n > 253)
		return -1;
	if (inet_pton(AF_INET, h, addr) == 1 || inet_pton(AF_INET6, h, addr) == 1) {
		*why = "an IP address instead of a host name";
		return -1;
	}
	for (i = 0; i <= n; i++) {
		if (i == n || h[i] == '.') {
			if (label == 0 || label > 63 || h[i - 1] == '-' || h[i - label] == '-')
				return -1;
			label = 0;
			continue;
		}
		if (h[i] >= 'A' && h[i] <= 'Z')
			h[i] = (char)(h[i] - 'A' + 'a');
		if (!rs_alnum(h[i]) && h[i] != '-' && h[i] != '_')
			return -1;
		label++;
	}
	return 0;
}

static int
rs_hex(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* RFC 3986 §2.1 percent-decoding of s[0..n) into dst; the result must be
 * VCHARs.  0, or -1 (bad escape, control byte, too long). */
static int
rs_pct_decode(const char *s, size_t n, char *dst, size_t cap)
{
	size_t i, o = 0;
	int c;

	for (i = 0; i < n; i++) {
		c = (unsigned char)s[i];
		if (c == '%') {
			if (i + 2 >= n || rs_hex(s[i + 1]) < 0 || rs_hex(s[i + 2]) < 0)
				return -1;
			c = rs_hex(s[i + 1]) * 16 + rs_hex(s[i + 2]);
			i += 2;
		}
		if (c < 0x21 || c > 0x7e || o + 1 >= cap)
			return -1;
		dst[o++] = (char)c;
	}
	dst[o] = '\0';
	return 0;
}

/* RFC 5322 §3.2.3 atext. */
static int
rs_atext(char c)
{
	return rs_alnum(c) || (c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

/*
 * addr-spec = dot-atom "@" domain, the local part at most 64 bytes
 * (RFC 5321 §4.5.3.1.1); the domain is normalised in place.  0 or -1.
 */
static int
rs_addr_valid(char *addr, const char **why)
{
	char *at = strrchr(addr, '@');
	size_t i, n;

	*why = strchr(addr, ',') != NULL ? "several addresses" : "not an address (local@domain)";
	if (at == NULL || at == addr || (n = (size_t)(at - addr)) > 64)
		return -1;
	if (addr[0] == '.' || at[-1] == '.')
		return -1;
	for (i = 0; i < n; i++)
		if ((!rs_atext(addr[i]) && addr[i] != '.') || (addr[i] == '.' && addr[i + 1] == '.'))
			return -1;
	return rs_host_norm(at + 1, why);
}

/*
 * RFC 6068 §2: mailto:to[?hfields]; "to" must be one addr-spec here.
 * p follows "mailto:".  0, or -1 with *why set.
 */
static int
rs_mailto(struct report_rua *u, const char *p, const char **why)
{
	const char *q = strchr(p, '?');
	size_t n = q != NULL ? (size_t)(q - p) : strlen(p);

	*why = "bad percent-encoding or an over-long address";
	if (n == 0) {
		*why = "no address after mailto:";
		return -1;
	}
	if (rs_pct_decode(p, n, u->addr, sizeof(u->addr)) < 0)
		return -1;
	if (rs_addr_valid(u->addr, why) < 0)
		return -1;
	u->kind = REPORT_RUA_MAILTO;
	return 0;
}

/* authority = host [ ":" port ] (no userinfo, no IP literal).  0 or -1. */
static int
rs_authority(struct report_rua *u, const char *a, size_t n, const char **why)
{
	const char *colon = memchr(a, ':', n);
	size_t hlen = colon != NULL ? (size_t)(colon - a) : n, i;
	long port = 443;

	*why = "userinfo in an https: URI";
	if (memchr(a, '@', n) != NULL)
		return -1;
	*why = "an IP literal host";
	if (n > 0 && a[0] == '[')
		return -1;
	*why = "a bad port";
	if (colon != NULL) {
		if (n - hlen < 2 || n - hlen > 6)
			return -1;
		for (port = 0, i = hlen + 1; i < n; i++) {
			if (a[i] < '0' || a[i] > '9')
				return -1;
			port = port * 10 + (a[i] - '0');
		}
		if (port < 1 || port > 65535)
			return -1;
	}
	*why = "not a host name";
	if (hlen == 0 || hlen >= sizeof(u->host))
		return -1;
	memcpy(u->host, a, hlen);
	u->host[hlen] = '\0';
	u->port = (int)port;
	return rs_host_norm(u->host, why);
}

/*
 * RFC 3986 §3: "https:" "//" authority path-abempty [ "?" query ]
 * [ "#" fragment ]; the fragment is not sent.  p follows "https:".
 */
static int
rs_https(struct report_rua *u, const char *p, const char **why)
{
	size_t alen, plen;
	const char *rest;

	*why = "no \"//\" after https:";
	if (strncmp(p, "//", 2) != 0)
		return -1;
	p += 2;
	alen = strcspn(p, "/?#");
	if (rs_authority(u, p, alen, why) < 0)
		return -1;
	rest = p + alen;
	plen = strcspn(rest, "#");
	snprintf(u->path, sizeof(u->path), "%s%.*s", plen == 0 || rest[0] == '?' ? "/" : "",
	    (int)plen, rest);
	u->kind = REPORT_RUA_HTTPS;
	return 0;
}

/*
 * One tlsrpt-uri.  "commas (ASCII 0x2C) and exclamation points (ASCII
 * 0x21) MUST be encoded" (§3); only mailto: and https: are defined (§3).
 */
static int
rs_uri_parse(struct report_rua *u, const char **why)
{
	const char *s = u->uri;
	size_t i;

	for (i = 0; s[i] != '\0'; i++) {
		*why = "a control, space or non-ASCII byte";
		if (s[i] < 0x21 || s[i] > 0x7e)
			return -1;
		*why = "a raw '!' (RFC 8460 section 3: must be percent-encoded)";
		if (s[i] == '!')
			return -1;
	}
	if (strncasecmp(s, "mailto:", 7) == 0)
		return rs_mailto(u, s + 7, why);
	if (strncasecmp(s, "https:", 6) == 0)
		return rs_https(u, s + 6, why);
	*why = strchr(s, ':') == NULL && strchr(s, '@') != NULL ?
	    "a bare address (mailto: missing)" : "not a mailto: or https: URI";
	return -1;
}

static int
rs_rua_same(const struct report_rua *a, const struct report_rua *b)
{
	if (a->kind != b->kind)
		return 0;
	if (a->kind == REPORT_RUA_MAILTO)
		return strcmp(a->addr, b->addr) == 0;
	return strcmp(a->host, b->host) == 0 && a->port == b->port &&
	    strcmp(a->path, b->path) == 0;
}

/* One element of the rua list, s[0..n) without surrounding WSP. */
static void
rs_rua_one(struct report_tlsrpt *rec, const char *s, size_t n)
{
	struct report_rua *u = &rec->rua[rec->nrua];
	char shown[81];
	const char *why;
	size_t i;

	rs_printable(shown, sizeof(shown), s, n);
	if (n == 0) {
		rs_ignore(rec, "an empty URI in rua=");
		return;
	}
	if (n >= REPORT_URI_MAX) {
		rs_ignore(rec, "\"%s...\": longer than %d bytes", shown, REPORT_URI_MAX - 1);
		return;
	}
	if (rec->nrua == REPORT_RUA_MAX) {
		rs_ignore(rec, "\"%s\": more than %d URIs", shown, REPORT_RUA_MAX);
		return;
	}
	memset(u, 0, sizeof(*u));
	memcpy(u->uri, s, n);
	if (memchr(s, '\0', n) != NULL || rs_uri_parse(u, &why) < 0) {
		rs_ignore(rec, "\"%s\": %s", shown, memchr(s, '\0', n) ? "a NUL byte" : why);
		return;
	}
	for (i = 0; i < rec->nrua; i++)
		if (rs_rua_same(&rec->rua[i], u)) {
			rs_ignore(rec, "\"%s\": a duplicate", shown);
			return;
		}
	rec->nrua++;
}

/* tlsrpt-rua = %s"rua=" tlsrpt-uri *(*WSP "," *WSP tlsrpt-uri) */
static void
rs_rua_list(struct report_tlsrpt *rec, const char *v, size_t n)
{
	size_t pos = 0, end, a, b;
	const char *comma;

	if (n == 0) {
		rs_ignore(rec, "rua= is empty");
		return;
	}
	while (pos <= n) {
		comma = memchr(v + pos, ',', n - pos);
		end = comma != NULL ? (size_t)(comma - v) : n;
		for (a = pos; a < end && rs_wsp(v[a]); a++)
			;
		for (b = end; b > a && rs_wsp(v[b - 1]); b--)
			;
		rs_rua_one(rec, v + a, b - a);
		pos = end + 1;
	}
}

/*
 * One field f[0..n): tlsrpt-rua / tlsrpt-extension.  0 (used or ignored),
 * -1 when malformed (rec->why set).  *seen: a rua= was already taken.
 */
static int
rs_field(struct report_tlsrpt *rec, const char *f, size_t n, int *seen)
{
	const char *eq;
	size_t nlen;

	while (n > 0 && rs_wsp(f[0]))
		f++, n--;
	while (n > 0 && rs_wsp(f[n - 1]))
		n--;
	if (n == 0)
		return 0;               /* ";;" or a trailing ';' */
	rec->why = "a field without '='";
	if ((eq = memchr(f, '=', n)) == NULL)
		return -1;
	nlen = (size_t)(eq - f);
	rec->why = "a malformed field name";
	if (!rs_ext_name(f, nlen))
		return -1;
	if (nlen == 3 && memcmp(f, "rua", 3) == 0) {
		if (*seen)
			rs_ignore(rec, "a second rua= field");
		else
			rs_rua_list(rec, eq + 1, n - nlen - 1);
		*seen = 1;
		return 0;
	}
	rec->why = "an extension value outside the RFC 8460 section 3 grammar";
	if (!rs_ext_value(eq + 1, n - nlen - 1))
		return -1;
	if (nlen == 3 && strncasecmp(f, "rua", 3) == 0)
		rs_ignore(rec, "\"%.3s=\": field names are case-sensitive", f);
	return 0;
}

/*
 * RFC 8460 §3:
 *   tlsrpt-record = tlsrpt-version 1*(field-delim tlsrpt-field) [field-delim]
 *   field-delim   = *WSP ";" *WSP
 *   tlsrpt-field  = tlsrpt-rua / tlsrpt-extension  ; rua is required
 *   tlsrpt-version = %s"v=TLSRPTv1"
 * "Parsers MUST accept TXT records that are syntactically valid ... and
 * implementing a superset of this specification, in which case unknown
 * fields SHALL be ignored."
 */
int
report_send_txt_parse(const char *txt, size_t len, struct report_tlsrpt *rec)
{
	size_t pos = sizeof(rs_version) - 1, start, end;
	const char *semi;
	int seen = 0;

	memset(rec, 0, sizeof(*rec));
	rec->why = "not a v=TLSRPTv1 record";
	if (len < pos || memcmp(txt, rs_version, pos) != 0)
		return 0;
	while (pos < len && rs_wsp(txt[pos]))
		pos++;
	if (pos == len || txt[pos] != ';')
		return 0;
	while (pos < len) {             /* txt[pos] == ';' */
		start = pos + 1;
		semi = memchr(txt + start, ';', len - start);
		end = semi != NULL ? (size_t)(semi - txt) : len;
		if (rs_field(rec, txt + start, end - start, &seen) < 0)
			return -1;
		pos = end;
	}
	rec->why = "no rua= field";
	if (!seen)
		return -1;
	rec->why = NULL;
	return 1;
}

/*
 * RFC 8460 §3: "records that do not begin with "v=TLSRPTv1;" are
 * discarded.  If the number of resulting records is not one, or if the
 * resulting record is syntactically invalid, senders MUST assume the
 * recipient domain does not implement TLSRPT."
 */
int
report_send_txt_select(const char *const *txts, const size_t *lens, size_t n,
    struct report_tlsrpt *rec)
{
	size_t i, found = 0, which = 0;

	for (i = 0; i < n; i++)
		if (report_send_txt_parse(txts[i], lens[i], rec) != 0) {
			found++;
			which = i;
		}
	if (found != 1) {
		memset(rec, 0, sizeof(*rec));
		rec->why = found == 0 ? "no v=TLSRPTv1 record" :
		    "more than one v=TLSRPTv1 record";
		return 0;
	}
	return report_send_txt_parse(txts[which], lens[which], rec) == 1;
}

/* ====================================================================== */
/* The report message (RFC 8460 §5.3)                                     */
/* ====================================================================== */

static void __attribute__((format(printf, 3, 4)))
rs_put(struct evbuffer *out, int *failed, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	if (evbuffer_add_vprintf(out, fmt, ap) < 0)
		*failed = 1;
	va_end(ap);
}

/* RFC 2045 §6.8 base64 in lines of 76 characters. */
static void
rs_base64(struct evbuffer *out, int *failed, const unsigned char *p, size_t n)
{
	unsigned char line[80];
	size_t k;
	int len;

	while (n > 0) {
		k = n < RS_B64_IN ? n : RS_B64_IN;
		len = EVP_EncodeBlock(line, p, (int)k);
		if (evbuffer_add(out, line, (size_t)len) < 0 || evbuffer_add(out, "\r\n", 2) < 0)
			*failed = 1;
		p += k;
		n -= k;
	}
}

/*
 * RFC 8460 §5.3: the Subject "SHOULD conform to" tlsrpt-subject =
 *   %s"Report" FWS %s"Domain:" FWS domain-name FWS %s"Submitter:" FWS
 *   domain-name FWS %s"Report-ID:" FWS "<" id-left "@" id-right ">" [CFWS]
 * and "TLS-Report-Domain" / "TLS-Report-Submitter" "MUST be included".
 * RFC 8689 §4: "TLS-Required: No" asks for delivery despite TLS failures.
 */
static void
rs_message_headers(struct evbuffer *out, int *failed, const struct report_send_item *it,
    const struct report_send_mail *m, const char *boundary)
{
	char date[64];
	struct tm tm;

	gmtime_r(&m->now, &tm);
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000", &tm);
	rs_put(out, failed, "From: %s\r\nTo: %s\r\nDate: %s\r\nMessage-ID: <%s@%s>\r\n",
	    m->from, m->to, date, m->unique, m->submitter);
	rs_put(out, failed, "Subject: Report Domain: %s\r\n Submitter: %s\r\n Report-ID: <%s>\r\n",
	    it->domain, m->submitter, it->report_id);
	rs_put(out, failed, "TLS-Report-Domain: %s\r\nTLS-Report-Submitter: %s\r\n"
	    "TLS-Required: No\r\nAuto-Submitted: auto-generated\r\nMIME-Version: 1.0\r\n"
	    "Content-Type: multipart/report; report-type=\"tlsrpt\";\r\n"
	    "\tboundary=\"%s\"\r\n\r\n", it->domain, m->submitter, boundary);
}

int
report_send_message(struct evbuffer *out, const struct report_send_item *it,
    const struct report_send_mail *m)
{
	char boundary[96];
	int failed = 0;

	/* '=' and '_' never start a base64 line; "--" never occurs in one. */
	snprintf(boundary, sizeof(boundary), "=_tlsrpt_%s", m->unique);
	rs_message_headers(out, &failed, it, m, boundary);
	rs_put(out, &failed, "This is a multipart message in MIME format.\r\n\r\n--%s\r\n"
	    "Content-Type: text/plain; charset=\"us-ascii\"\r\n"
	    "Content-Transfer-Encoding: 7bit\r\n\r\n"
	    "This is an aggregate TLS report (RFC 8460) from\r\n  %s\r\n"
	    "about the policy domain\r\n  %s.\r\n\r\nReport-ID: <%s>\r\n\r\n"
	    "The report is attached as application/tlsrpt+gzip:\r\n  %s\r\n\r\n",
	    boundary, m->submitter, it->domain, it->report_id, it->filename);
	rs_put(out, &failed, "--%s\r\nContent-Type: application/tlsrpt+gzip\r\n"
	    "Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment;\r\n"
	    "\tfilename=\"%s\"\r\n\r\n", boundary, it->filename);
	rs_base64(out, &failed, it->gz, it->gzlen);
	rs_put(out, &failed, "\r\n--%s--\r\n", boundary);
	return failed ? -1 : 0;
}

/* ====================================================================== */
/* The delivery engine                                                    */
/* ====================================================================== */

enum rs_state { RS_LOOKUP, RS_NEXT, RS_ATTEMPT, RS_DONE };
enum rs_smtp { RSS_CONNECT, RSS_MAIL, RSS_RCPT, RSS_DATA, RSS_DOT, RSS_QUIT };

struct report_send {
	struct event_base *base;
	struct resolver *res;
	struct evdns_base *dns;         /* no nameservers: IP literals only */
	SSL_CTX *smtp_ctx, *https_ctx;
	struct sockaddr_storage submit;
	socklen_t submitlen;
	char submit_ip[INET6_ADDRSTRLEN];
	char from[REPORT_ADDR_MAX];
	char submitter[REPORT_HOST_MAX];
	char helo[256];
	char nonce[17];
	unsigned long serial;
	int timeout;
	struct rs_report *reports, **tail, *next_start;
	int active, pending, failed;
};

struct rs_attempt;

struct rs_report {
	struct report_send *rs;
	char *domain, *report_id, *filename;
	unsigned char *gz;
	size_t gzlen;
	enum rs_state state;
	struct event *step;             /* every transition runs from here */
	struct dns_query *txt_q;
	struct report_tlsrpt *rec;
	size_t next;                    /* the next rua to try */
	struct rs_attempt *att;         /* the one in flight */
	int failed, done;
	struct rs_report *next_report;
};

struct rs_attempt {
	struct rs_report *r;
	const struct report_rua *rua;
	struct event *timer;            /* the attempt's deadline */
	int finished, ok, retry;
	char detail[RS_DETAIL_MAX];
	/* mailto: */
	enum rs_smtp sstep;
	struct upstream *up;
	struct evbuffer *msg;
	/* https: */
	struct dns_query *a_q, *aaaa_q;
	int naddr, next_addr;
	char addr[RS_ADDRS_MAX][INET6_ADDRSTRLEN];
	struct evhttp_connection *conn;
	long verify_err;
	int tls_done;
};

static void rs_step_cb(evutil_socket_t fd, short what, void *arg);

/* One line of the run's result on stdout (report_send.h). */
static void __attribute__((format(printf, 4, 5)))
rs_line(const struct rs_report *r, const char *verdict, const char *uri, const char *fmt, ...)
{
	va_list ap;

	printf("%s %s%s%s: ", verdict, r->domain, uri != NULL ? " " : "", uri != NULL ? uri : "");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
}

static void
rs_wake(struct rs_report *r)
{
	event_active(r->step, EV_TIMEOUT, 1);
}

/* The attempt is over (first call wins); the step event takes it from here. */
static void __attribute__((format(printf, 3, 4)))
rs_finish(struct rs_attempt *a, int ok, const char *fmt, ...)
{
	char raw[RS_DETAIL_MAX];
	va_list ap;

	if (a->finished)
		return;
	a->finished = 1;
	a->ok = ok;
	va_start(ap, fmt);
	vsnprintf(raw, sizeof(raw), fmt, ap);
	va_end(ap);
	rs_printable(a->detail, sizeof(a->detail), raw, strlen(raw));
	evtimer_del(a->timer);
	rs_wake(a->r);
}

static void
rs_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct rs_attempt *a = arg;

	(void)fd;
	(void)what;
	if (a->ok)      /* the message was taken; only the QUIT is late */
		rs_finish(a, 1, "%s", a->detail);
	else
		rs_finish(a, 0, "timeout after %d s", a->r->rs->timeout);
}

/* ---- mailto: through the relay's smarthost listener -------------------- */

/* RFC 5321 §4.5.2: a line starting with "." gets one more. */
static int
rs_dot_stuff(struct upstream *up, struct evbuffer *msg)
{
	size_t n = evbuffer_get_length(msg), i, start = 0;
	const char *p = (const char *)evbuffer_pullup(msg, -1);

	if (p == NULL && n > 0)
		return -1;
	for (i = 0; i < n; i++) {
		if ((i == 0 || p[i - 1] == '\n') && p[i] == '.') {
			upstream_body_add(up, p + start, i - start);
			upstream_body_add(up, ".", 1);
			start = i;
		}
	}
	upstream_body_add(up, p + start, n - start);
	upstream_body_add(up, ".\r\n", 3);
	return 0;
}

static void __attribute__((format(printf, 3, 4)))
rs_smtp_send(struct rs_attempt *a, enum rs_smtp next, const char *fmt, ...)
{
	char line[600];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	a->sstep = next;
	if (upstream_command(a->up, line) < 0)
		rs_finish(a, 0, "cannot send %.20s", line);
}

static const char *const rs_smtp_names[] = {
	"connect", "MAIL FROM", "RCPT TO", "DATA", "end of data", "QUIT"
};

/* The reply to the command of the step: on to the next one, or fail. */
static void
rs_smtp_reply(struct rs_attempt *a, const struct smtp_reply *rp)
{
	int want = a->sstep == RSS_DATA ? 3 : 2;

	if (a->sstep == RSS_QUIT) {
		rs_finish(a, 1, "%s", a->detail);
		return;
	}
	if (rp->code / 100 != want) {
		rs_finish(a, 0, "%s: %d %s%s%.200s", rs_smtp_names[a->sstep], rp->code, rp->enh,
		    rp->enh[0] ? " " : "", rp->text);
		return;
	}
	switch (a->sstep) {
	case RSS_MAIL:
		rs_smtp_send(a, RSS_RCPT, "RCPT TO:<%s>", a->rua->addr);
		break;
	case RSS_RCPT:
		rs_smtp_send(a, RSS_DATA, "DATA");
		break;
	case RSS_DATA:
		a->sstep = RSS_DOT;
		if (rs_dot_stuff(a->up, a->msg) < 0)
			rs_finish(a, 0, "out of memory");
		else
			upstream_body_done(a->up);
		break;
	case RSS_DOT:
		snprintf(a->detail, sizeof(a->detail), "%d %s%s%.200s", rp->code, rp->enh,
		    rp->enh[0] ? " " : "", rp->text);
		a->ok = 1;
		rs_smtp_send(a, RSS_QUIT, "QUIT");
		break;
	default:
		break;
	}
}

static void
rs_smtp_cb(void *arg, enum upstream_event ev, const struct smtp_reply *rp)
{
	struct rs_attempt *a = arg;
	const struct upstream_failure *f;

	if (a->finished)
		return;
	switch (ev) {
	case UP_READY:
		rs_smtp_send(a, RSS_MAIL, "MAIL FROM:<%s>", a->r->rs->from);
		break;
	case UP_REPLY:
		rs_smtp_reply(a, rp);
		break;
	case UP_FAIL:
		f = upstream_failure(a->up);
		if (a->ok)      /* the message was taken; only the QUIT went wrong */
			rs_finish(a, 1, "%s", a->detail);
		else
			rs_finish(a, 0, "%s: %s", rs_smtp_names[a->sstep], f->detail);
		break;
	case UP_DRAIN:
		break;
	}
}

/* Level "may": the relay's listener may offer STARTTLS; no name to verify. */
static int
rs_smtp_start(struct rs_attempt *a)
{
	struct report_send *rs = a->r->rs;
	struct report_send_item it = { .domain = a->r->domain, .report_id = a->r->report_id,
	    .filename = a->r->filename, .gz = a->r->gz, .gzlen = a->r->gzlen };
	struct report_send_mail m = { .from = rs->from, .to = a->rua->addr,
	    .submitter = rs->submitter, .now = time(NULL) };
	struct upstream_params p = { .base = rs->base, .ssl_ctx = rs->smtp_ctx,
	    .helo_name = rs->helo, .session = "report", .connect_timeout = rs->timeout,
	    .command_timeout = rs->timeout, .data_timeout = rs->timeout,
	    .final_timeout = rs->timeout };
	struct upstream_target t;
	char unique[40];

	snprintf(unique, sizeof(unique), "%s%lu%lld", rs->nonce, ++rs->serial,
	    (long long)m.now);
	m.unique = unique;
	if ((a->msg = evbuffer_new()) == NULL || report_send_message(a->msg, &it, &m) < 0)
		return -1;
	memset(&t, 0, sizeof(t));
	snprintf(t.host, sizeof(t.host), "%s", rs->submit_ip);
	snprintf(t.ip, sizeof(t.ip), "%s", rs->submit_ip);
	memcpy(&t.addr, &rs->submit, sizeof(t.addr));
	t.addrlen = rs->submitlen;
	t.level = TLS_MAY;
	a->sstep = RSS_CONNECT;
	a->up = upstream_connect(&p, &t, rs_smtp_cb, a);
	return a->up != NULL ? 0 : -1;
}

/* ---- https: POST (RFC 8460 §5.4) ----------------------------------------- */

/* Records OpenSSL's first verification error; never changes its verdict. */
static int
rs_verify_cb(int ok, X509_STORE_CTX *xs)
{
	SSL *ssl = X509_STORE_CTX_get_ex_data(xs, SSL_get_ex_data_X509_STORE_CTX_idx());
	struct rs_attempt *a = ssl != NULL ? SSL_get_app_data(ssl) : NULL;

	if (!ok && a != NULL && a->verify_err == X509_V_OK)
		a->verify_err = X509_STORE_CTX_get_error(xs);
	return ok;
}

static void
rs_info_cb(const SSL *ssl, int where, int ret)
{
	struct rs_attempt *a = SSL_get_app_data(ssl);

	(void)ret;
	if ((where & SSL_CB_HANDSHAKE_DONE) != 0 && a != NULL)
		a->tls_done = 1;
}

static const char *
rs_evreq_name(enum evhttp_request_error err)
{
	switch (err) {
	case EVREQ_HTTP_TIMEOUT:
		return "timeout";
	case EVREQ_HTTP_EOF:
		return "connection closed";
	case EVREQ_HTTP_INVALID_HEADER:
		return "invalid HTTP response";
	case EVREQ_HTTP_BUFFER_ERROR:
		return "connection error";
	case EVREQ_HTTP_DATA_TOO_LONG:
		return "response too long";
	default:
		return "request cancelled";
	}
}

static const char *
rs_peer(const struct rs_attempt *a)
{
	return a->next_addr > 0 ? a->addr[a->next_addr - 1] : "?";
}

/*
 * A request that got no HTTP status.  A connection that failed before TLS
 * completed is retried on the host's next address (from the step event);
 * a certificate that does not verify is final.
 */
static void
rs_https_failed(struct rs_attempt *a, const char *what, int saved_errno)
{
	char ossl[160] = "", one[120];
	struct bufferevent *bev = a->conn ? evhttp_connection_get_bufferevent(a->conn) : NULL;
	unsigned long e;

	if (a->finished || a->retry)
		return;

	while (bev != NULL && (e = bufferevent_get_openssl_error(bev)) != 0)
		if (ossl[0] == '\0') {
			ERR_error_string_n(e, one, sizeof(one));
			snprintf(ossl, sizeof(ossl), " (%s)", one);
		}
	if (a->verify_err != X509_V_OK)
		rs_finish(a, 0, "%s: certificate: %s", rs_peer(a),
		    X509_verify_cert_error_string(a->verify_err));
	else if (!a->tls_done && a->next_addr < a->naddr) {
		a->retry = 1;
		rs_wake(a->r);
	} else
		rs_finish(a, 0, "%s: %s%s%s%s%s", rs_peer(a), a->tls_done ? "" :
		    "before TLS completed: ", what, saved_errno ? ": " : "",
		    saved_errno ? strerror(saved_errno) : "", ossl);
}

static void
rs_https_error_cb(enum evhttp_request_error err, void *arg)
{
	int saved = errno;

	rs_https_failed(arg, rs_evreq_name(err),
	    err == EVREQ_HTTP_EOF || err == EVREQ_HTTP_BUFFER_ERROR ? saved : 0);
}

/*
 * RFC 8460 §5.4: the submitter should expect a successful response,
 * typically 200 or 201; other codes may mean the delivery failed.  Any 2xx
 * counts as delivered here.  req is NULL after an error (the error callback
 * ran first); status 0 means the connection failed.
 */
static void
rs_https_done_cb(struct evhttp_request *req, void *arg)
{
	struct rs_attempt *a = arg;
	const char *line;
	int code;

	if (req == NULL || a->finished || a->retry)
		return;
	code = evhttp_request_get_response_code(req);
	line = evhttp_request_get_response_code_line(req);
	if (code == 0)
		rs_https_failed(a, "connection refused or failed", 0);
	else
		rs_finish(a, code >= 200 && code < 300, "%s: HTTP %d %.100s", rs_peer(a), code,
		    line != NULL ? line : "");
}

/* The POST: Host = the name, the report as the body. */
static struct evhttp_request *
rs_https_request(struct rs_attempt *a)
{
	struct evhttp_request *req = evhttp_request_new(rs_https_done_cb, a);
	const struct report_rua *u = a->rua;
	struct evkeyvalq *h;
	char host[REPORT_HOST_MAX + 8], len[24];

	if (req == NULL)
		return NULL;
	evhttp_request_set_error_cb(req, rs_https_error_cb);
	if (u->port == 443)
		snprintf(host, sizeof(host), "%s", u->host);
	else
		snprintf(host, sizeof(host), "%s:%d", u->host, u->port);
	snprintf(len, sizeof(len), "%zu", a->r->gzlen);
	h = evhttp_request_get_output_headers(req);
	if (evhttp_add_header(h, "Host", host) != 0 ||
	    evhttp_add_header(h, "Content-Type", "application/tlsrpt+gzip") != 0 ||
	    evhttp_add_header(h, "Content-Length", len) != 0 ||
	    evhttp_add_header(h, "Connection", "close") != 0 ||
	    evhttp_add_header(h, "User-Agent", "tlsrelay TLSRPT") != 0 ||
	    evbuffer_add(evhttp_request_get_output_buffer(req), a->r->gz, a->r->gzlen) != 0) {
		evhttp_request_free(req);
		return NULL;
	}
	return req;
}

/* SNI and the checked name are the URI's host; no partial wildcards. */
static SSL *
rs_https_ssl(struct rs_attempt *a)
{
	SSL *ssl = SSL_new(a->r->rs->https_ctx);

	if (ssl == NULL)
		return NULL;
	if (SSL_set_tlsext_host_name(ssl, a->rua->host) != 1 ||
	    SSL_set1_host(ssl, a->rua->host) != 1) {
		SSL_free(ssl);
		return NULL;
	}
	SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
	SSL_set_app_data(ssl, a);
	SSL_set_info_callback(ssl, rs_info_cb);
	return ssl;
}

/* evhttp over bufferevent_openssl to the next address.  0 under way, -1 not. */
static int
rs_https_connect(struct rs_attempt *a)
{
	struct report_send *rs = a->r->rs;
	const char *ip = a->addr[a->next_addr++];
	struct evhttp_request *req;
	struct bufferevent *bev;
	SSL *ssl;

	a->tls_done = 0;
	a->verify_err = X509_V_OK;
	if ((ssl = rs_https_ssl(a)) == NULL)
		return -1;
	bev = bufferevent_openssl_socket_new(rs->base, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
	    BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	if (bev == NULL) {
		SSL_free(ssl);
		return -1;
	}
	a->conn = evhttp_connection_base_bufferevent_new(rs->base, rs->dns, bev, ip,
	    (ev_uint16_t)a->rua->port);
	if (a->conn == NULL) {
		bufferevent_free(bev);
		return -1;
	}
	evhttp_connection_set_timeout(a->conn, rs->timeout);
	evhttp_connection_set_retries(a->conn, 0);
	evhttp_connection_set_max_headers_size(a->conn, RS_HTTP_MAX);
	evhttp_connection_set_max_body_size(a->conn, RS_HTTP_MAX);
	if ((req = rs_https_request(a)) == NULL)
		return -1;
	return evhttp_make_request(a->conn, req, EVHTTP_REQ_POST, a->rua->path);
}

static void
rs_https_next(struct rs_attempt *a)
{
	if (a->conn != NULL)
		evhttp_connection_free(a->conn);
	a->conn = NULL;
	a->retry = 0;
	if (rs_https_connect(a) != 0)
		rs_finish(a, 0, "%s: cannot start the HTTPS request", rs_peer(a));
}

/* A/AAAA of the host through the resolver; connect once both answered. */
static void
rs_https_addr_cb(void *arg, const struct dns_answer *ans)
{
	struct rs_attempt *a = arg;
	size_t i;

	if (ans->qtype == DNS_T_A)
		a->a_q = NULL;
	else
		a->aaaa_q = NULL;
	for (i = 0; ans->status == DNS_OK && i < ans->n; i++)
		if (ans->rr[i].type == ans->qtype && a->naddr < RS_ADDRS_MAX)
			snprintf(a->addr[a->naddr++], INET6_ADDRSTRLEN, "%s", ans->rr[i].u.addr.text);
	if (a->a_q != NULL || a->aaaa_q != NULL || a->finished)
		return;
	if (a->naddr == 0) {
		rs_finish(a, 0, "%s: no address (%s)", a->rua->host, dns_status_name(ans->status));
		return;
	}
	dns_addrs_v4_first(a->addr, (size_t)a->naddr);   /* no racing */
	rs_https_next(a);
}

static int
rs_https_start(struct rs_attempt *a)
{
	struct resolver *res = a->r->rs->res;

	a->verify_err = X509_V_OK;
	a->a_q = resolver_query(res, a->rua->host, DNS_T_A, rs_https_addr_cb, a);
	if (a->a_q == NULL)
		return -1;
	a->aaaa_q = resolver_query(res, a->rua->host, DNS_T_AAAA, rs_https_addr_cb, a);
	return 0;
}

/* ---- attempts --------------------------------------------------------------- */

static void
rs_attempt_free(struct rs_attempt **ap)
{
	struct rs_attempt *a = *ap;

	if (a == NULL)
		return;
	*ap = NULL;
	upstream_free(&a->up);
	resolver_cancel(&a->a_q);
	resolver_cancel(&a->aaaa_q);
	if (a->conn != NULL)
		evhttp_connection_free(a->conn);
	if (a->msg != NULL)
		evbuffer_free(a->msg);
	if (a->timer != NULL)
		event_free(a->timer);
	free(a);
}

/* An attempt for one rua; NULL only when out of memory.  A start that
 * fails at once leaves a finished attempt behind. */
static struct rs_attempt *
rs_attempt_new(struct rs_report *r, const struct report_rua *u)
{
	struct rs_attempt *a = calloc(1, sizeof(*a));
	struct timeval tv = { r->rs->timeout, 0 };
	int rc;

	if (a == NULL)
		return NULL;
	a->r = r;
	a->rua = u;
	if ((a->timer = evtimer_new(r->rs->base, rs_timeout_cb, a)) == NULL) {
		free(a);
		return NULL;
	}
	evtimer_add(a->timer, &tv);
	rc = u->kind == REPORT_RUA_MAILTO ? rs_smtp_start(a) : rs_https_start(a);
	if (rc < 0)
		rs_finish(a, 0, "%s", u->kind == REPORT_RUA_MAILTO ?
		    "cannot connect to the submit address" : "cannot resolve the host");
	return a;
}

/* ---- reports: the state machine --------------------------------------------- */

/* What the TXT answer says: the rua list, or why nothing is sent. */
static void
rs_txt_answer(struct rs_report *r, const struct dns_answer *ans)
{
	const char *txts[DNS_MAX_RECORDS];
	size_t lens[DNS_MAX_RECORDS], i, n = 0;
	char why[sizeof(ans->why_bogus)];

	r->state = RS_DONE;
	if (ans->status == DNS_FAIL) {
		r->failed = 1;
		rs_printable(why, sizeof(why), ans->why_bogus, strlen(ans->why_bogus));
		rs_line(r, "failed", NULL, "TXT %s%s: lookup failed (%s%s)", RS_QNAME_PREFIX,
		    r->domain, ans->sec == DNS_BOGUS ? "DNSSEC bogus: " : "",
		    why[0] ? why : "no answer");
		return;
	}
	for (i = 0; ans->status == DNS_OK && i < ans->n; i++)
		if (ans->rr[i].type == DNS_T_TXT) {
			txts[n] = ans->rr[i].u.txt.text;
			lens[n++] = ans->rr[i].u.txt.len;
		}
	if ((r->rec = malloc(sizeof(*r->rec))) == NULL) {
		r->failed = 1;
		rs_line(r, "failed", NULL, "out of memory");
		return;
	}
	if (!report_send_txt_select(txts, lens, n, r->rec))
		rs_line(r, "skipped", NULL, "no TLSRPT policy: %s", n == 0 ?
		    dns_status_name(ans->status) : r->rec->why);
	else
		r->state = RS_NEXT;
}

/* Ignored URIs, on stderr. */
static void
rs_notes(const struct rs_report *r)
{
	size_t i;

	for (i = 0; i < r->rec->nnotes; i++)
		fprintf(stderr, "tlsrelay report: %s: rua ignored: %s\n", r->domain, r->rec->notes[i]);
	if (r->rec->nignored > r->rec->nnotes)
		fprintf(stderr, "tlsrelay report: %s: ... and %zu more ignored\n", r->domain,
		    r->rec->nignored - r->rec->nnotes);
	if (r->rec->nrua == 0)
		rs_line(r, "skipped", NULL, "no usable rua URI in the TLSRPT policy");
}

static void
rs_txt_cb(void *arg, const struct dns_answer *ans)
{
	struct rs_report *r = arg;

	r->txt_q = NULL;
	rs_txt_answer(r, ans);
	if (r->state == RS_NEXT)
		rs_notes(r);
	rs_wake(r);
}

static int
rs_process_next(struct rs_report *r)
{
	if (r->next >= r->rec->nrua) {
		r->state = RS_DONE;
		return 1;
	}
	r->att = rs_attempt_new(r, &r->rec->rua[r->next++]);
	if (r->att == NULL) {
		r->failed = 1;
		rs_line(r, "failed", r->rec->rua[r->next - 1].uri, "out of memory");
		return 1;
	}
	r->state = RS_ATTEMPT;
	return 1;
}

/* 1 when the attempt is over (its line printed), 0 while it runs. */
static int
rs_process_attempt(struct rs_report *r)
{
	struct rs_attempt *a = r->att;

	if (a->retry && !a->finished)
		rs_https_next(a);
	if (!a->finished)
		return 0;
	rs_line(r, a->ok ? "sent" : "failed", a->rua->uri, "%s", a->detail);
	if (!a->ok)
		r->failed = 1;
	rs_attempt_free(&r->att);
	r->state = RS_NEXT;
	return 1;
}

static void rs_start_more(struct report_send *rs);

static void
rs_report_done(struct rs_report *r)
{
	struct report_send *rs = r->rs;

	if (r->done)
		return;
	r->done = 1;
	rs->active--;
	rs->pending--;
	if (r->failed)
		rs->failed++;
	free(r->gz);
	r->gz = NULL;
	rs_start_more(rs);
	if (rs->pending == 0)
		event_base_loopexit(rs->base, NULL);
}

static void
rs_step_cb(evutil_socket_t fd, short what, void *arg)
{
	struct rs_report *r = arg;
	int cont = 1;

	(void)fd;
	(void)what;
	while (cont && !r->done) {
		switch (r->state) {
		case RS_LOOKUP:
			cont = 0;
			break;
		case RS_NEXT:
			cont = rs_process_next(r);
			break;
		case RS_ATTEMPT:
			cont = rs_process_attempt(r);
			break;
		case RS_DONE:
			rs_report_done(r);
			cont = 0;
			break;
		}
	}
}

/* Look up the report's policy; a query that cannot start ends it. */
static void
rs_report_start(struct rs_report *r)
{
	char qname[DNS_NAME_MAX + 16];

	r->rs->active++;
	snprintf(qname, sizeof(qname), "%s%s", RS_QNAME_PREFIX, r->domain);
	r->state = RS_LOOKUP;
	r->txt_q = resolver_query(r->rs->res, qname, DNS_T_TXT, rs_txt_cb, r);
	if (r->txt_q == NULL) {
		r->failed = 1;
		rs_line(r, "failed", NULL, "TXT %s: cannot look up", qname);
		r->state = RS_DONE;
		rs_wake(r);
	}
}

static void
rs_start_more(struct report_send *rs)
{
	while (rs->active < RS_PARALLEL && rs->next_start != NULL) {
		struct rs_report *r = rs->next_start;

		rs->next_start = r->next_report;
		rs_report_start(r);
	}
}

/* ---- set-up and API ------------------------------------------------------------ */

/* --submit, else the first listen address of the first smarthost listener
 * (a wildcard address becomes loopback).  0 or -1 with err. */
static int
rs_submit_addr(struct report_send *rs, const struct report_send_opts *o, char *err,
    size_t errlen)
{
	const struct listener_config *l = NULL;
	struct sockaddr_in *sin = (struct sockaddr_in *)&rs->submit;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&rs->submit;

	if (o->submit != NULL) {
		if (addr_parse(o->submit, &rs->submit, &rs->submitlen) == 0)
			goto found;
		snprintf(err, errlen, "--submit %s: not IP:PORT or [IPv6]:PORT", o->submit);
		return -1;
	}
	for (l = o->cfg != NULL ? o->cfg->listeners : NULL; l != NULL; l = l->next)
		if (l->mode == MODE_SMARTHOST && l->naddrs > 0)
			break;
	if (l == NULL) {
		snprintf(err, errlen, "--send needs --submit IP:PORT or a relay.ini (-c) with a "
		    "mode = smarthost listener");
		return -1;
	}
	memcpy(&rs->submit, &l->addrs[0], sizeof(rs->submit));
	rs->submitlen = l->addrlens[0];
	if (rs->submit.ss_family == AF_INET && sin->sin_addr.s_addr == htonl(INADDR_ANY))
		sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (rs->submit.ss_family == AF_INET6 && IN6_IS_ADDR_UNSPECIFIED(&sin6->sin6_addr))
		sin6->sin6_addr = in6addr_loopback;
found:
	inet_ntop(rs->submit.ss_family, rs->submit.ss_family == AF_INET ?
	    (const void *)&sin->sin_addr : (const void *)&sin6->sin6_addr, rs->submit_ip,
	    sizeof(rs->submit_ip));
	return 0;
}

/* --from, else noreply-tlsrpt@submitter; its domain must be the submitter. */
static int
rs_from(struct report_send *rs, const struct report_send_opts *o, char *err, size_t errlen)
{
	const char *why;

	snprintf(rs->submitter, sizeof(rs->submitter), "%s", o->submitter);
	if (o->from == NULL)
		snprintf(rs->from, sizeof(rs->from), "noreply-tlsrpt@%s", o->submitter);
	else if (snprintf(rs->from, sizeof(rs->from), "%s", o->from) >= (int)sizeof(rs->from)) {
		snprintf(err, errlen, "--from: too long");
		return -1;
	}
	if (rs_addr_valid(rs->from, &why) < 0) {
		snprintf(err, errlen, "--from %.100s: %s", rs->from, why);
		return -1;
	}
	/* RFC 8460 §5.3: TLS-Report-Submitter "MUST match ... the From domain". */
	if (strcmp(strrchr(rs->from, '@') + 1, rs->submitter) != 0) {
		snprintf(err, errlen, "--from %.100s: the domain must be the submitter %s "
		    "(RFC 8460 section 5.3)", rs->from, rs->submitter);
		return -1;
	}
	return 0;
}

/* HTTPS: PKIX against ca_file, the handshake fails on a bad certificate. */
static int
rs_tls(struct report_send *rs, const struct relay_config *cfg, char *err, size_t errlen)
{
	const char *ca = cfg != NULL ? cfg->ca_file : NULL;

	if ((rs->smtp_ctx = tlsctx_client_new(ca, err, errlen)) == NULL ||
	    (rs->https_ctx = tlsctx_client_new(ca, err, errlen)) == NULL)
		return -1;
	SSL_CTX_set_min_proto_version(rs->https_ctx, TLS1_2_VERSION);
	SSL_CTX_set_verify(rs->https_ctx, SSL_VERIFY_PEER, rs_verify_cb);
	return 0;
}

static int
rs_loop(struct report_send *rs, const struct relay_config *cfg, char *err, size_t errlen)
{
	struct resolver_config rc = { NULL, NULL, NULL, 0 };
	char rerr[400];

	if (cfg != NULL) {
		rc.unbound_conf = cfg->unbound_conf;
		rc.trust_anchor_file = cfg->trust_anchor_file;
		rc.resolver = cfg->resolver;
	}
	if ((rs->base = event_base_new()) == NULL || (rs->dns = evdns_base_new(rs->base, 0)) == NULL) {
		snprintf(err, errlen, "cannot create the event loop");
		return -1;
	}
	if ((rs->res = resolver_new(rs->base, &rc, rerr, sizeof(rerr))) == NULL) {
		snprintf(err, errlen, "[dns]: %s", rerr);
		return -1;
	}
	return 0;
}

struct report_send *
report_send_new(const struct report_send_opts *o, char *err, size_t errlen)
{
	struct report_send *rs = calloc(1, sizeof(*rs));
	unsigned char r[8];
	size_t i;

	if (rs == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	rs->tail = &rs->reports;
	rs->timeout = o->timeout > 0 ? o->timeout : REPORT_SEND_TIMEOUT;
	snprintf(rs->helo, sizeof(rs->helo), "%s", o->cfg != NULL && o->cfg->helo_name != NULL ?
	    o->cfg->helo_name : o->submitter);
	if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r))
		memset(r, 0x5a, sizeof(r));
	for (i = 0; i < sizeof(r); i++)
		snprintf(rs->nonce + 2 * i, 3, "%02x", r[i]);
	if (rs_from(rs, o, err, errlen) < 0 || rs_submit_addr(rs, o, err, errlen) < 0 ||
	    rs_tls(rs, o->cfg, err, errlen) < 0 || rs_loop(rs, o->cfg, err, errlen) < 0) {
		report_send_free(&rs);
		return NULL;
	}
	return rs;
}

int
report_send_add(struct report_send *rs, const struct report_send_item *it)
{
	struct rs_report *r = calloc(1, sizeof(*r));

	if (r == NULL)
		return -1;
	r->rs = rs;
	r->domain = strdup(it->domain);
	r->report_id = strdup(it->report_id);
	r->filename = strdup(it->filename);
	r->gz = malloc(it->gzlen > 0 ? it->gzlen : 1);
	r->step = event_new(rs->base, -1, 0, rs_step_cb, r);
	*rs->tail = r;          /* linked first, so report_send_free frees it */
	rs->tail = &r->next_report;
	if (r->domain == NULL || r->report_id == NULL || r->filename == NULL || r->gz == NULL ||
	    r->step == NULL)
		return -1;
	memcpy(r->gz, it->gz, it->gzlen);
	r->gzlen = it->gzlen;
	rs->pending++;
	if (rs->next_start == NULL)
		rs->next_start = r;
	return 0;
}

int
report_send_run(struct report_send *rs)
{
	signal(SIGPIPE, SIG_IGN);       /* a peer closing early is an error, not a kill */
	rs_start_more(rs);
	if (rs->pending > 0)
		event_base_dispatch(rs->base);
	return rs->failed > 0 || rs->pending > 0 ? 1 : 0;
}

void
report_send_free(struct report_send **rsp)
{
	struct report_send *rs = *rsp;
	struct rs_report *r;

	if (rs == NULL)
		return;
	*rsp = NULL;
	while ((r = rs->reports) != NULL) {
		rs->reports = r->next_report;
		resolver_cancel(&r->txt_q);
		rs_attempt_free(&r->att);
		if (r->step != NULL)
			event_free(r->step);
		free(r->domain);
		free(r->report_id);
		free(r->filename);
		free(r->gz);
		free(r->rec);
		free(r);
	}
	if (rs->base != NULL)
		event_base_loop(rs->base, EVLOOP_NONBLOCK);     /* upstream's deferred frees */
	resolver_free(&rs->res);
	if (rs->dns != NULL)
		evdns_base_free(rs->dns, 0);
	SSL_CTX_free(rs->smtp_ctx);
	SSL_CTX_free(rs->https_ctx);
	if (rs->base != NULL)
		event_base_free(rs->base);
	free(rs);
}
