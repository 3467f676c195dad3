/*
 * test_report_send.c - policy/report_send.c: the "_smtp._tls" TXT record
 * parser (RFC 8460 §3, ANCHORS RPT-01), the selection rule, the §5.3 report
 * message, and report_send_new()'s option checks.
 *
 * Table-driven.  Every parser case runs on an exact-length heap copy of its
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

#include <event2/buffer.h>
#include <openssl/evp.h>

#include "policy/report_send.h"

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

#define A1 "mailto:a@example.com"

/* A heap copy of s[0..n) with nothing after it. */
static char *
exact_copy(const char *s, size_t n)
{
	char *p = malloc(n > 0 ? n : 1);

	assert_non_null(p);
	memcpy(p, s, n);
	return p;
}

/* ---- report_send_txt_parse ------------------------------------------ */

static const struct txt_case {
	const char *in;
	size_t len;             /* 0: strlen(in) */
	int want;               /* 1, 0, -1 */
	size_t nrua, nignored;  /* when want == 1 (nignored also for -1) */
	const char *rua0;       /* mailto: addr or https: host:port path of rua[0] */
	const char *rua1;
} txt_cases[] = {
	/* valid */
	{ "v=TLSRPTv1; rua=" A1, 0, 1, 1, 0, "a@example.com", NULL },
	{ "v=TLSRPTv1;rua=" A1 ",https://reports.example.com/v1", 0, 1, 2, 0, "a@example.com",
	  "reports.example.com:443 /v1" },
	{ "v=TLSRPTv1; rua=" A1 " ,\thttps://r.example.com", 0, 1, 2, 0, "a@example.com",
	  "r.example.com:443 /" },
	{ "v=TLSRPTv1 ; rua=" A1, 0, 1, 1, 0, "a@example.com", NULL },
	{ "v=TLSRPTv1;\trua=" A1 ";\t", 0, 1, 1, 0, "a@example.com", NULL },
	{ "v=TLSRPTv1; rua=" A1 ";;", 0, 1, 1, 0, "a@example.com", NULL },
	{ "v=TLSRPTv1;; rua=" A1 " ", 0, 1, 1, 0, "a@example.com", NULL },
	{ "v=TLSRPTv1; rua=" A1 "; ext=1; x.y_z-1=abc:def/<>", 0, 1, 1, 0, "a@example.com", NULL },
	{ "v=TLSRPTv1; ext=1; rua=" A1, 0, 1, 1, 0, "a@example.com", NULL },
	{ "v=TLSRPTv1; rua=" A1 "; v=TLSRPTv2", 0, 1, 1, 0, "a@example.com", NULL },
	{ "v=TLSRPTv1; rua=MAILTO:first.last+tag@EXAMPLE.COM.", 0, 1, 1, 0,
	  "first.last+tag@example.com", NULL },
	{ "v=TLSRPTv1; rua=mailto:tls%2Brpt@example.com?subject=x", 0, 1, 1, 0,
	  "tls+rpt@example.com", NULL },
	{ "v=TLSRPTv1; rua=mailto:a%21b@example.com", 0, 1, 1, 0, "a!b@example.com", NULL },
	{ "v=TLSRPTv1; rua=https://reports.example.com:8443/v1?x=1#frag", 0, 1, 1, 0,
	  "reports.example.com:8443 /v1?x=1", NULL },
	{ "v=TLSRPTv1; rua=HTTPS://Reports.Example.COM", 0, 1, 1, 0, "reports.example.com:443 /",
	  NULL },
	{ "v=TLSRPTv1; rua=https://r.example.com?q", 0, 1, 1, 0, "r.example.com:443 /?q", NULL },
	/* URIs ignored, the rest used */
	{ "v=TLSRPTv1; rua=a@example.com", 0, 1, 0, 1, NULL, NULL },
	{ "v=TLSRPTv1; rua=", 0, 1, 0, 1, NULL, NULL },
	{ "v=TLSRPTv1; rua=" A1 ",junk,http://x.example/,ftp://x.example/", 0, 1, 1, 3,
	  "a@example.com", NULL },
	{ "v=TLSRPTv1; rua=tlsrpt@example.com," A1, 0, 1, 1, 1, "a@example.com", NULL },
	{ "v=TLSRPTv1; rua=" A1 ",,", 0, 1, 1, 2, "a@example.com", NULL },
	{ "v=TLSRPTv1; rua=mailto:a@example.com!10m", 0, 1, 0, 1, NULL, NULL },
	{ "v=TLSRPTv1; rua=mailto:a%40b@example.com", 0, 1, 0, 1, NULL, NULL },
	{ "v=TLSRPTv1; rua=mailto:a%2Cb@example.com", 0, 1, 0, 1, NULL, NULL },
	{ "v=TLSRPTv1; rua=mailto:a%0D%0Ab@example.com", 0, 1, 0, 1, NULL, NULL },
	{ "v=TLSRPTv1; rua=mailto:a%4@example.com", 0, 1, 0, 1, NULL, NULL },
	{ "v=TLSRPTv1; rua=mailto:a@example.com%", 0, 1, 0, 1, NULL, NULL },
	{ "v=TLSRPTv1; rua=mailto:", 0, 1, 0, 1, NULL, NULL },
	{ "v=TLSRPTv1; rua=mailto:?to=a@example.com", 0, 1, 0, 1, NULL, NULL },
	{ "v=TLSRPTv1; rua=mailto:\"a b\"@example.com", 0, 1, 0, 1, NULL, NULL },
	{ "v=TLSRPTv1; rua=mailto:.a@example.com", 0, 1, 0, 1, NULL, NULL },
	{ "v=TLSRPTv1; rua=mailto:a..b@example.com", 0, 1, 0, 1, NULL, NULL },
	{ "v=TLSRPTv1; rua=mailto:a@-example.com", 0, 1, 0, 1, NULL, NULL },
	{ "v=TLSRPTv1; rua=mailto:a@127.0.0.1", 0, 1, 0, 1, NULL, NULL },
	{ "v=TLSRPTv1; rua=mailto:a@[127.0.0.1]", 0, 1, 0, 1, NULL, NULL },
	{ "v=TLSRPTv1; rua=mailto:a@ex ample.com", 0, 1, 0, 1, NULL, NULL },
	{ "v=TLSRPTv1; rua=mailto:a@example.com\x01", 0, 1, 0, 1, NULL, NULL },
	{ "v=TLSRPTv1; rua=mailto:a@\xc3\xa9xample.com", 0, 1, 0, 1, NULL, NULL },
	{ "v=TLSRPTv1; rua=mailto:"
	  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@example.com",
	  0, 1, 0, 1, NULL, NULL },
	{ "v=TLSRPTv1; rua=mailto:a@"
	  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.com",
	  0, 1, 0, 1, NULL, NULL },
	{ "v=TLSRPTv1; rua=https://user@r.example.com/", 0, 1, 0, 1, NULL, NULL },
	{ "v=TLSRPTv1; rua=https://[::1]/", 0, 1, 0, 1, NULL, NULL },
	{ "v=TLSRPTv1; rua=https://127.0.0.1/", 0, 1, 0, 1, NULL, NULL },
	{ "v=TLSRPTv1; rua=https://r.example.com:0/", 0, 1, 0, 1, NULL, NULL },
	{ "v=TLSRPTv1; rua=https://r.example.com:99999/", 0, 1, 0, 1, NULL, NULL },
	{ "v=TLSRPTv1; rua=https://r.example.com:/", 0, 1, 0, 1, NULL, NULL },
	{ "v=TLSRPTv1; rua=https://r.example.com:8x/", 0, 1, 0, 1, NULL, NULL },
	{ "v=TLSRPTv1; rua=https:r.example.com", 0, 1, 0, 1, NULL, NULL },
	{ "v=TLSRPTv1; rua=https://", 0, 1, 0, 1, NULL, NULL },
	{ "v=TLSRPTv1; rua=https:///v1", 0, 1, 0, 1, NULL, NULL },
	{ "v=TLSRPTv1; rua=https://r.example.com/a b", 0, 1, 0, 1, NULL, NULL },
	{ "v=TLSRPTv1; rua=" A1 "; rua=mailto:b@example.com", 0, 1, 1, 1, "a@example.com", NULL },
	{ "v=TLSRPTv1; rua=" A1 "," A1, 0, 1, 1, 1, "a@example.com", NULL },
	{ "v=TLSRPTv1; rua=" A1 ",mailto:A@example.com", 0, 1, 2, 0, "a@example.com",
	  "A@example.com" },
	{ "v=TLSRPTv1; rua=mailto:a@example.com\0x", 38, 1, 0, 1, NULL, NULL },
	/* not TLSRPTv1: discarded */
	{ "rua=" A1 "; v=TLSRPTv1", 0, 0, 0, 0, NULL, NULL },
	{ " v=TLSRPTv1; rua=" A1, 0, 0, 0, 0, NULL, NULL },
	{ "v=TLSRPTv1", 0, 0, 0, 0, NULL, NULL },
	{ "v=TLSRPTv1 ", 0, 0, 0, 0, NULL, NULL },
	{ "v=TLSRPTv1 rua=" A1, 0, 0, 0, 0, NULL, NULL },
	{ "v=TLSRPTv10; rua=" A1, 0, 0, 0, 0, NULL, NULL },
	{ "V=TLSRPTv1; rua=" A1, 0, 0, 0, 0, NULL, NULL },
	{ "v=tlsrptv1; rua=" A1, 0, 0, 0, 0, NULL, NULL },
	{ "v=TLSRPTv2; rua=" A1, 0, 0, 0, 0, NULL, NULL },
	{ "v = TLSRPTv1; rua=" A1, 0, 0, 0, 0, NULL, NULL },
	{ "v=TLSRPTv1\0; rua=" A1, 37, 0, 0, 0, NULL, NULL },
	{ "v=STSv1; id=1", 0, 0, 0, 0, NULL, NULL },
	{ "v=spf1 -all", 0, 0, 0, 0, NULL, NULL },
	{ "", 0, 0, 0, 0, NULL, NULL },
	{ "v=TLSRP", 0, 0, 0, 0, NULL, NULL },
	/* TLSRPTv1 but malformed: no TLSRPT */
	{ "v=TLSRPTv1;", 0, -1, 0, 0, NULL, NULL },
	{ "v=TLSRPTv1; ", 0, -1, 0, 0, NULL, NULL },
	{ "v=TLSRPTv1; foo=bar", 0, -1, 0, 0, NULL, NULL },
	{ "v=TLSRPTv1; RUA=" A1, 0, -1, 0, 1, NULL, NULL },
	{ "v=TLSRPTv1; Rua=" A1, 0, -1, 0, 1, NULL, NULL },
	{ "v=TLSRPTv1; rua=" A1 "; bad ext=1", 0, -1, 0, 0, NULL, NULL },
	{ "v=TLSRPTv1; rua=" A1 "; x=a b", 0, -1, 0, 0, NULL, NULL },
	{ "v=TLSRPTv1; rua=" A1 "; x=a=b", 0, -1, 0, 0, NULL, NULL },
	{ "v=TLSRPTv1; rua=" A1 "; x=", 0, -1, 0, 0, NULL, NULL },
	{ "v=TLSRPTv1; rua=" A1 "; noequals", 0, -1, 0, 0, NULL, NULL },
	{ "v=TLSRPTv1; rua=" A1 "; =x", 0, -1, 0, 0, NULL, NULL },
	{ "v=TLSRPTv1; rua=" A1 "; _x=1", 0, -1, 0, 0, NULL, NULL },
	{ "v=TLSRPTv1; rua=" A1 "; x=\xc3\xa9", 0, -1, 0, 0, NULL, NULL },
	{ "v=TLSRPTv1; rua=" A1 "; x=a\0b", 43, -1, 0, 0, NULL, NULL },
	{ "v=TLSRPTv1; rua=" A1 "; aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa=x", 0, -1, 0, 0, NULL, NULL },
	{ "v=TLSRPTv1; rua=" A1 "; aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa=x", 0, 1, 1, 0,
	  "a@example.com", NULL },
	{ "v=TLSRPTv1; rua =" A1, 0, -1, 0, 0, NULL, NULL },
	{ "v=TLSRPTv1; rua", 0, -1, 0, 0, NULL, NULL },
};

/* "addr" for mailto:, "host:port path" for https:. */
static void
rua_text(const struct report_rua *u, char *buf, size_t len)
{
	if (u->kind == REPORT_RUA_MAILTO)
		snprintf(buf, len, "%s", u->addr);
	else
		snprintf(buf, len, "%s:%d %s", u->host, u->port, u->path);
}

static void
check_rua(size_t i, const struct report_tlsrpt *rec, size_t k, const char *want)
{
	char got[REPORT_URI_MAX + REPORT_HOST_MAX + 16];

	if (want == NULL)
		return;
	rua_text(&rec->rua[k], got, sizeof(got));
	if (strcmp(got, want) != 0)
		fail_msg("case %zu: rua[%zu] \"%s\", want \"%s\"", i, k, got, want);
}

static void
test_txt_parse(void **state)
{
	struct report_tlsrpt *rec = malloc(sizeof(*rec));

	(void)state;
	assert_non_null(rec);
	for (size_t i = 0; i < NELEM(txt_cases); i++) {
		const struct txt_case *c = &txt_cases[i];
		size_t len = c->len ? c->len : strlen(c->in);
		char *in = exact_copy(c->in, len);
		int got = report_send_txt_parse(in, len, rec);

		if (got != c->want)
			fail_msg("case %zu \"%s\": got %d, want %d (%s)", i, c->in, got, c->want,
			    rec->why ? rec->why : "");
		if (got != 1 && rec->why == NULL)
			fail_msg("case %zu: no why", i);
		if (got == 1 && rec->nrua != c->nrua)
			fail_msg("case %zu \"%s\": nrua %zu, want %zu", i, c->in, rec->nrua, c->nrua);
		if (got != 0 && rec->nignored != c->nignored)
			fail_msg("case %zu \"%s\": nignored %zu, want %zu", i, c->in, rec->nignored,
			    c->nignored);
		if (rec->nnotes != (rec->nignored < REPORT_NOTES_MAX ? rec->nignored :
		    REPORT_NOTES_MAX))
			fail_msg("case %zu: %zu notes for %zu ignored", i, rec->nnotes, rec->nignored);
		if (got == 1) {
			check_rua(i, rec, 0, c->rua0);
			check_rua(i, rec, 1, c->rua1);
		}
		free(in);
	}
	free(rec);
}

/* More than REPORT_RUA_MAX URIs; one over-long; notes stay bounded. */
static void
test_txt_limits(void **state)
{
	struct report_tlsrpt *rec = malloc(sizeof(*rec));
	char *txt = malloc(20000), *p;
	int i;

	(void)state;
	assert_non_null(rec);
	assert_non_null(txt);
	p = txt + sprintf(txt, "v=TLSRPTv1; rua=");
	for (i = 0; i < 12; i++)
		p += sprintf(p, "%smailto:r%d@example.com", i ? "," : "", i);
	p += sprintf(p, ",https://r.example.com/");
	memset(p, 'a', 600);
	p += 600;
	*p = '\0';
	assert_int_equal(report_send_txt_parse(txt, strlen(txt), rec), 1);
	assert_int_equal(rec->nrua, REPORT_RUA_MAX);
	assert_int_equal(rec->nignored, 12 - REPORT_RUA_MAX + 1);
	assert_int_equal(rec->nnotes, REPORT_NOTES_MAX);
	assert_string_equal(rec->rua[7].addr, "r7@example.com");
	for (i = 0; i < REPORT_NOTES_MAX; i++)
		assert_true(strlen(rec->notes[i]) < REPORT_NOTE_LEN);
	/* An over-long URI alone. */
	p = txt + sprintf(txt, "v=TLSRPTv1; rua=mailto:a@");
	memset(p, 'b', 700);
	strcpy(p + 700, ".example.com");
	assert_int_equal(report_send_txt_parse(txt, strlen(txt), rec), 1);
	assert_int_equal(rec->nrua, 0);
	assert_int_equal(rec->nignored, 1);
	assert_non_null(strstr(rec->notes[0], "longer than"));
	free(txt);
	free(rec);
}

/* The notes name the problem, printable only. */
static void
test_txt_notes(void **state)
{
	static const char txt[] = "v=TLSRPTv1; rua=tlsrpt@example.com,mailto:x@y.example!5m,"
	    "mailto:a\x01@example.com";
	struct report_tlsrpt rec;
	size_t i, k;

	(void)state;
	assert_int_equal(report_send_txt_parse(txt, sizeof(txt) - 1, &rec), 1);
	assert_int_equal(rec.nignored, 3);
	assert_non_null(strstr(rec.notes[0], "mailto: missing"));
	assert_non_null(strstr(rec.notes[1], "'!'"));
	for (i = 0; i < rec.nnotes; i++)
		for (k = 0; rec.notes[i][k] != '\0'; k++)
			if (rec.notes[i][k] < 0x20 || rec.notes[i][k] > 0x7e)
				fail_msg("note %zu has byte 0x%02x", i, (unsigned char)rec.notes[i][k]);
}

/* ---- report_send_txt_select ----------------------------------------- */

static const struct select_case {
	const char *rec[4];
	size_t n;
	int want;
	const char *rua0;
} select_cases[] = {
	{ { NULL }, 0, 0, NULL },
	{ { "v=TLSRPTv1; rua=" A1 }, 1, 1, "a@example.com" },
	{ { "v=spf1 -all", "v=TLSRPTv1; rua=" A1 }, 2, 1, "a@example.com" },
	{ { "v=TLSRPTv1; rua=" A1, "v=STSv1; id=1" }, 2, 1, "a@example.com" },
	{ { "v=TLSRPTv1", "v=TLSRPTv1; rua=" A1 }, 2, 1, "a@example.com" },
	{ { "v=TLSRPTv10; rua=mailto:b@example.com", "v=TLSRPTv1; rua=" A1 }, 2, 1,
	  "a@example.com" },
	{ { "v=TLSRPTv1; rua=" A1, "v=TLSRPTv1; rua=mailto:b@example.com" }, 2, 0, NULL },
	{ { "v=TLSRPTv1; rua=" A1, "v=TLSRPTv1; rua=" A1 }, 2, 0, NULL },
	{ { "v=TLSRPTv1; rua=" A1, "v=TLSRPTv1;" }, 2, 0, NULL },
	{ { "v=TLSRPTv1;" }, 1, 0, NULL },
	{ { "v=TLSRPTv1; rua=" A1 "; x=a b" }, 1, 0, NULL },
	{ { "x", "y", "z", "v=TLSRPTv1 ; rua=" A1 }, 4, 1, "a@example.com" },
};

static void
test_txt_select(void **state)
{
	struct report_tlsrpt rec;

	(void)state;
	for (size_t i = 0; i < NELEM(select_cases); i++) {
		const struct select_case *c = &select_cases[i];
		char *bufs[4];
		size_t lens[4];
		int got;

		for (size_t k = 0; k < c->n; k++) {
			lens[k] = strlen(c->rec[k]);
			bufs[k] = exact_copy(c->rec[k], lens[k]);
		}
		got = report_send_txt_select((const char *const *)bufs, lens, c->n, &rec);
		if (got != c->want)
			fail_msg("select %zu: got %d, want %d", i, got, c->want);
		if (got == 0 && rec.why == NULL)
			fail_msg("select %zu: no why", i);
		if (got == 1)
			check_rua(i, &rec, 0, c->rua0);
		for (size_t k = 0; k < c->n; k++)
			free(bufs[k]);
	}
}

/* ---- report_send_message -------------------------------------------- */

static const unsigned char gz[] = {
	0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0xab, 0xae, 0x05, 0x00,
	0x43, 0xbf, 0xa6, 0xa3, 0x02, 0x00, 0x00, 0x00,
};

static char *
message_text(const unsigned char *data, size_t len, struct evbuffer **bp)
{
	struct report_send_item it = { .domain = "example.net",
	    .report_id = "2026-12-04_example.net_0011@relay.test",
	    .filename = "relay.test!example.net!1796342400!1796428799!0011.json.gz",
	    .gz = data, .gzlen = len };
	struct report_send_mail m = { .from = "noreply-tlsrpt@relay.test",
	    .to = "tlsrpt@example.net", .submitter = "relay.test", .unique = "abc123",
	    .now = 1796342400 };
	struct evbuffer *b = evbuffer_new();

	assert_non_null(b);
	assert_int_equal(report_send_message(b, &it, &m), 0);
	evbuffer_add(b, "", 1);
	*bp = b;
	return (char *)evbuffer_pullup(b, -1);
}

/* Every line ends in CRLF and is at most 78 characters (RFC 5322 §2.1.1). */
static void
check_lines(const char *t)
{
	const char *p = t, *nl;

	while ((nl = strchr(p, '\n')) != NULL) {
		if (nl == p || nl[-1] != '\r')
			fail_msg("bare LF at offset %zu", (size_t)(nl - t));
		if (nl - p - 1 > 78)
			fail_msg("line of %zu characters at offset %zu", (size_t)(nl - p - 1),
			    (size_t)(p - t));
		p = nl + 1;
	}
	assert_string_equal(p, "");
}

/* The base64 body of the attachment decodes to data. */
static void
check_attachment(const char *t, const unsigned char *data, size_t len)
{
	const char *start = strstr(t, "filename=\"relay.test!example.net!1796342400!1796428799!"
	    "0011.json.gz\"\r\n\r\n"), *end;
	unsigned char b64[8192], out[8192];
	size_t n = 0;
	int got;

	assert_non_null(start);
	start = strstr(start, "\r\n\r\n") + 4;
	end = strstr(start, "\r\n--=_tlsrpt_abc123--\r\n");
	assert_non_null(end);
	for (; start < end; start++)
		if (*start != '\r' && *start != '\n')
			b64[n++] = (unsigned char)*start;
	got = EVP_DecodeBlock(out, b64, (int)n);
	assert_true(got >= (int)len);
	assert_memory_equal(out, data, len);
}

static void
test_message(void **state)
{
	static const char *const want[] = {
		"From: noreply-tlsrpt@relay.test\r\n",
		"To: tlsrpt@example.net\r\n",
		"Date: Fri, 04 Dec 2026 00:00:00 +0000\r\n",
		"Message-ID: <abc123@relay.test>\r\n",
		"Subject: Report Domain: example.net\r\n Submitter: relay.test\r\n"
		" Report-ID: <2026-12-04_example.net_0011@relay.test>\r\n",
		"TLS-Report-Domain: example.net\r\n",
		"TLS-Report-Submitter: relay.test\r\n",
		"TLS-Required: No\r\n",
		"MIME-Version: 1.0\r\n",
		"Content-Type: multipart/report; report-type=\"tlsrpt\";\r\n"
		"\tboundary=\"=_tlsrpt_abc123\"\r\n\r\n",
		"\r\n--=_tlsrpt_abc123\r\nContent-Type: text/plain",
		"\r\n--=_tlsrpt_abc123\r\nContent-Type: application/tlsrpt+gzip\r\n"
		"Content-Transfer-Encoding: base64\r\n",
		"\r\n--=_tlsrpt_abc123--\r\n",
	};
	struct evbuffer *b;
	const char *t = message_text(gz, sizeof(gz), &b);
	size_t i;

	(void)state;
	for (i = 0; i < NELEM(want); i++)
		if (strstr(t, want[i]) == NULL)
			fail_msg("missing %s in:\n%s", want[i], t);
	/* Headers end before the first blank line; TLS-Required: No is one of them. */
	assert_true(strstr(t, "TLS-Required: No") < strstr(t, "\r\n\r\n"));
	check_lines(t);
	check_attachment(t, gz, sizeof(gz));
	evbuffer_free(b);
}

/* A bigger attachment: several base64 lines, every length mod 3. */
static void
test_message_sizes(void **state)
{
	unsigned char data[1000];
	struct evbuffer *b;
	size_t len, i;

	(void)state;
	for (i = 0; i < sizeof(data); i++)
		data[i] = (unsigned char)(i * 7 + 3);
	for (len = 0; len <= 200; len += 1) {
		const char *t = message_text(data, len, &b);

		check_lines(t);
		if (len > 0)
			check_attachment(t, data, len);
		evbuffer_free(b);
	}
}

/* ---- report_send_new: option checks ---------------------------------- */

static const struct new_case {
	const char *submit, *from, *submitter;
	const char *err;        /* substring; NULL: accepted */
} new_cases[] = {
	{ "127.0.0.1:2525", NULL, "relay.test", NULL },
	{ "[::1]:2525", "tlsrpt@relay.test", "relay.test", NULL },
	{ "127.0.0.1:2525", "TLSRPT@Relay.Test.", "relay.test", NULL },
	{ "127.0.0.1:2525", "tlsrpt@other.test", "relay.test", "submitter" },
	{ "127.0.0.1:2525", "not an address", "relay.test", "--from" },
	{ "127.0.0.1:2525", "a@b@relay.test", "relay.test", "--from" },
	{ "localhost:25", NULL, "relay.test", "--submit" },
	{ "127.0.0.1", NULL, "relay.test", "--submit" },
	{ "127.0.0.1:0", NULL, "relay.test", "--submit" },
	{ NULL, NULL, "relay.test", "--submit" },
};

static void
test_new(void **state)
{
	(void)state;
	for (size_t i = 0; i < NELEM(new_cases); i++) {
		const struct new_case *c = &new_cases[i];
		struct report_send_opts o = { .submit = c->submit, .from = c->from,
		    .submitter = c->submitter };
		char err[512] = "";
		struct report_send *rs = report_send_new(&o, err, sizeof(err));

		if (c->err == NULL && rs == NULL)
			fail_msg("new %zu: refused: %s", i, err);
		if (c->err != NULL && (rs != NULL || strstr(err, c->err) == NULL))
			fail_msg("new %zu: err \"%s\", want \"%s\"", i, err, c->err);
		/* Nothing queued: the run ends at once, with success. */
		if (rs != NULL)
			assert_int_equal(report_send_run(rs), 0);
		report_send_free(&rs);
		assert_null(rs);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_txt_parse),
		cmocka_unit_test(test_txt_limits),
		cmocka_unit_test(test_txt_notes),
		cmocka_unit_test(test_txt_select),
		cmocka_unit_test(test_message),
		cmocka_unit_test(test_message_sizes),
		cmocka_unit_test(test_new),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
