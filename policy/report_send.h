/*
 * report_send.h - delivery of RFC 8460 reports (`tlsrelay report --send`):
 * discovery of the policy domain's reporting policy (RFC 8460 §3) and
 * delivery to each of its rua URIs (§5.3 mailto:, §5.4 https:).
 *
 * Per report, without blocking (one libevent loop, libunbound on it):
 *
 *   TXT _smtp._tls.<policy-domain> (policy/resolver)           §3
 *   -> report_send_txt_select(): exactly one valid v=TLSRPTv1 record
 *   -> for each usable rua URI, one after the other:
 *        mailto:  a multipart/report message (§5.3) submitted by SMTP to the
 *                 relay's own smarthost listener (--submit), which delivers
 *                 it under the outbound policy (relay/upstream.c as client)
 *        https:   POST of the gzip'd report, Content-Type
 *                 application/tlsrpt+gzip, to the host's address found
 *                 through the resolver (IP literal, SNI and Host = the name,
 *                 PKIX against [outbound] ca_file via SSL_set1_host)
 *   Each attempt prints one line on stdout:
 *        sent DOMAIN URI: DETAIL | failed DOMAIN URI: DETAIL
 *   and a report that is not sent anywhere one line:
 *        skipped DOMAIN: WHY     (no policy: nothing to deliver, not a failure)
 *        failed DOMAIN: WHY      (the TXT lookup failed: SERVFAIL, bogus, timeout)
 *   An ignored rua URI is reported on stderr and is not an attempt.
 *
 * Decisions where RFC 8460 leaves room (ANCHORS §4.3 RPT-01, RPT-05, RPT-07):
 *  - A record counts as TLSRPT when it starts with "v=TLSRPTv1" followed by
 *    optional WSP and ';' (the §3 prose "begin with v=TLSRPTv1;" plus the
 *    ABNF field-delim); field names are case-sensitive (RFC 7405 %s), so
 *    "V=tlsrptv1" or "RUA=" do not count.
 *  - An unusable rua URI (not mailto: or https:, a bare address, a raw '!',
 *    a mailto: with several addresses, userinfo or an IP literal in an
 *    https: URI, longer than REPORT_URI_MAX - 1) is ignored with a note, and
 *    the others are used (tlsrpt-reporter#54).  A record whose usable URIs
 *    are none is valid but sends nothing.  Only a malformed field (no '=',
 *    a bad name, an extension value outside the §3 grammar, a NUL) makes the
 *    whole record invalid, which §3 treats as "no TLSRPT".
 *  - Empty fields (";;", a trailing ';') are tolerated; a second rua= is
 *    ignored with a note; duplicate URIs are used once.
 *  - mailto: hfields ("?subject=...") are ignored; the address must be one
 *    dot-atom addr-spec after percent-decoding (no SMTPUTF8, no quoting).
 *  - The From: domain is the submitter (§5.3: TLS-Report-Submitter "MUST
 *    match ... the [RFC5322].From domain").
 *  - The report mail carries "TLS-Required: No" (RFC 8689 §4; RFC 8460 §3:
 *    reports are delivered "despite any TLS-related failures") so the relay
 *    may deliver it where a policy fails, and its TLS-Report-Domain header
 *    lets the relay mark the delivery "report_mail" (RPT-07).
 *  - Not done: DKIM signing (§5.3 requires a DKIM signature for mail
 *    reports: sign on the way out, e.g. with a milter on the next hop), and
 *    the §5.5 retries: each rua gets one attempt; the exit status says
 *    whether to run again.
 */
#ifndef POLICY_REPORT_SEND_H
#define POLICY_REPORT_SEND_H

#include <stddef.h>
#include <time.h>

struct evbuffer;
struct relay_config;
struct report_send;

#define REPORT_RUA_MAX      8     /* URIs used per record; the rest ignored */
#define REPORT_URI_MAX      512   /* bytes of one URI, NUL included */
#define REPORT_ADDR_MAX     255   /* addr-spec: 64 + "@" + 189, NUL included */
#define REPORT_HOST_MAX     254   /* host name, NUL included */
#define REPORT_NOTES_MAX    4     /* notes kept about ignored URIs */
#define REPORT_NOTE_LEN     200
#define REPORT_SEND_TIMEOUT 60    /* seconds per delivery attempt */

enum report_rua_kind { REPORT_RUA_MAILTO, REPORT_RUA_HTTPS };

struct report_rua {
	enum report_rua_kind kind;
	char uri[REPORT_URI_MAX];   /* as published */
	char addr[REPORT_ADDR_MAX]; /* mailto: the decoded address, domain lower case */
	char host[REPORT_HOST_MAX]; /* https: the host name, lower case, no trailing dot */
	int port;                   /* https: 443 unless the URI says otherwise */
	char path[REPORT_URI_MAX];  /* https: path and query, "/" when empty */
};

/* A parsed reporting policy (RFC 8460 §3). */
struct report_tlsrpt {
	size_t nrua;
	struct report_rua rua[REPORT_RUA_MAX];
	size_t nignored;            /* URIs (and fields) ignored */
	size_t nnotes;              /* why, for the first REPORT_NOTES_MAX of them */
	char notes[REPORT_NOTES_MAX][REPORT_NOTE_LEN];
	const char *why;            /* static text: why the record is not used */
};

/*
 * report_send_txt_parse - classify one TXT record txt[0..len) (NULs allowed,
 * strings already concatenated).  Returns 1 for a valid TLSRPTv1 record (*rec
 * filled; nrua may be 0 when every URI was ignored), 0 for a record that is
 * not TLSRPTv1 (discarded before counting), -1 for a TLSRPTv1 record that is
 * malformed (rec->why set).  Pure: no I/O, no allocation.
 */
int report_send_txt_parse(const char *txt, size_t len, struct report_tlsrpt *rec);

/*
 * report_send_txt_select - RFC 8460 §3 over the n TXT records of the name:
 * returns 1 when exactly one is TLSRPTv1 and it is valid (*rec filled),
 * else 0 with rec->why set: the domain does not implement TLSRPT.
 */
int report_send_txt_select(const char *const *txts, const size_t *lens, size_t n,
    struct report_tlsrpt *rec);

/* One report, as report.c made it.  report_send_add() copies everything. */
struct report_send_item {
	const char *domain;         /* policy domain, lower case */
	const char *report_id;      /* RFC 8460 §4.4 report-id, "id-left@id-right" */
	const char *filename;       /* RFC 8460 §5.3 file name (as written by --out) */
	const unsigned char *gz;    /* the gzip'd JSON report */
	size_t gzlen;
};

/* What the message needs besides the report (report_send_message). */
struct report_send_mail {
	const char *from;           /* addr-spec, domain = submitter */
	const char *to;             /* addr-spec from the rua */
	const char *submitter;
	const char *unique;         /* alphanumerics for Message-ID and boundary */
	time_t now;                 /* for Date: */
};

/*
 * report_send_message - the RFC 8460 §5.3 message for it into out: CRLF
 * lines, 7bit, multipart/report; report-type="tlsrpt" with a text/plain
 * part and the report as application/tlsrpt+gzip in base64.  No SMTP
 * dot-stuffing.  Returns 0, or -1 when out of memory.
 */
int report_send_message(struct evbuffer *out, const struct report_send_item *it,
    const struct report_send_mail *m);

struct report_send_opts {
	const struct relay_config *cfg; /* [dns], [outbound] ca_file, helo_name,
	                                   [listener:*]; NULL: defaults */
	const char *submit;         /* "IP:PORT" / "[IPv6]:PORT"; NULL: the first
	                               listen address of the first smarthost listener */
	const char *from;           /* NULL: noreply-tlsrpt@<submitter> */
	const char *submitter;      /* lower-case domain name */
	int timeout;                /* seconds per attempt; 0: REPORT_SEND_TIMEOUT */
};

/*
 * report_send_new - event loop, resolver and TLS contexts for sending.
 * NULL with err filled on a configuration error (bad --submit, no submit
 * address, --from not in the submitter's domain, resolver set-up).
 */
struct report_send *report_send_new(const struct report_send_opts *o, char *err,
    size_t errlen);

/* report_send_add - queue one report (copied).  0, or -1 out of memory. */
int report_send_add(struct report_send *rs, const struct report_send_item *it);

/*
 * report_send_run - deliver every queued report (a few at a time) and
 * return when all are done: 0 when every report reached every usable rua
 * of its policy (or had no policy), 1 otherwise.  Call once.
 */
int report_send_run(struct report_send *rs);

/* report_send_free - everything, including what is in flight; NULLs *rsp. */
void report_send_free(struct report_send **rsp);

#endif
