/*
 * policy/resolver.c - DNSSEC-validating asynchronous DNS for the relay.
 *
 * Owns: one libunbound context driven by the relay's libevent loop
 * (ub_ctx_create_event + ub_resolve_event), the queries in flight, and the
 * parsed answers handed to callbacks.  Answers are wire packets from
 * libunbound, parsed with libldns into the typed struct dns_answer of
 * resolver.h.  Nothing here blocks, logs, or calls getaddrinfo/res_query.
 *
 * The libevent contract: unbound-event.h requires that libunbound was built
 * against the same libevent as the caller.  Debian 12's libunbound8 links
 * libevent-2.1-7 (`ldd /usr/lib/x86_64-linux-gnu/libunbound.so.8`), which is
 * the libevent_core we link, so the struct event_base is shared safely.
 *
 * Cancellation: ub_cancel() is NOT used.  For contexts made by
 * ub_ctx_create_event, libunbound 1.17's ub_cancel frees its ctx_query while
 * the mesh still holds it (use-after-free when the answer arrives) and
 * writes the cancel into a pipe nobody reads.  Instead a cancelled (or
 * timed-out) query is "detached": it stays on our pending list until
 * libunbound's callback for it fires, which then only frees it.  Memory is
 * bounded because libunbound ends every mesh state eventually.
 *
 * Security semantics (RFC 4035 section 4.3): sec=2 from libunbound is
 * "secure", 1 is "bogus", 0 is insecure or indeterminate.  A bogus answer
 * carries rcode NOERROR and the unvalidated data; we drop that data and
 * report DNS_FAIL, as a validating resolver answers SERVFAIL
 * (RFC 4035 section 5.5), so that no caller can read "no TLSA record" from
 * it (RFC 7672 section 2.1: bogus is a lookup failure, never "no record").
 */
#include "policy/resolver.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <event2/event.h>
#include <ldns/ldns.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>
#include <unbound.h>
#include <unbound-event.h>

#define DEFAULT_ROOT_KEY "/usr/share/dns/root.key"
/* A name that is never a local zone: removing it only finalizes the ctx. */
#define FINALIZE_NAME "tlsrelay-finalize.invalid."

struct resolver {
	struct event_base *base;
	struct ub_ctx *ctx;
	int has_ta;
	int timeout_ms;
	struct dns_query *pending;      /* every query libunbound or we still hold */
};

struct dns_query {
	struct resolver *r;
	struct dns_query *prev, *next;
	dns_cb cb;
	void *arg;
	char qname[DNS_NAME_MAX];
	int qtype;
	struct event *timer;            /* deadline, or deferred delivery */
	unsigned in_unbound : 1;        /* libunbound's callback has not fired */
	unsigned detached : 1;          /* the user callback must never run (again) */
	unsigned ready : 1;             /* ans holds a result to deliver */
	struct timeval t0;              /* when it was asked (latency statistics) */
	struct dns_answer ans;
	struct dns_rr *rr;              /* ans.rr storage, DNS_MAX_RECORDS at most */
	void *blob[DNS_MAX_RECORDS];    /* per-record TXT/TLSA storage */
};

static void errf(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
errf(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

const char *
dns_sec_name(enum dns_sec sec)
{
	switch (sec) {
	case DNS_INSECURE: return "insecure";
	case DNS_SECURE: return "secure";
	case DNS_BOGUS: return "bogus";
	}
	return "unknown";
}

const char *
dns_status_name(int status)
{
	switch (status) {
	case DNS_OK: return "ok";
	case DNS_NODATA: return "nodata";
	case DNS_NXDOMAIN: return "nxdomain";
	case DNS_FAIL: return "fail";
	}
	return "unknown";
}

/* ---- configuration ---------------------------------------------------- */

/* Adds each "addr[@port]" of a comma/space separated list as a forwarder.
 * Returns 0, or -1 with err set. */
static int
resolver_set_forwarders(struct ub_ctx *ctx, const char *list, char *err,
    size_t errlen)
{
	char *copy, *tok, *save = NULL;
	int rc = 0, ub;

	if ((copy = strdup(list)) == NULL) {
		errf(err, errlen, "resolver: out of memory");
		return -1;
	}
	for (tok = strtok_r(copy, ", \t", &save); tok != NULL;
	    tok = strtok_r(NULL, ", \t", &save)) {
		if ((ub = ub_ctx_set_fwd(ctx, tok)) != 0) {
			errf(err, errlen, "resolver \"%s\": %s", tok,
			    ub_strerror(ub));
			rc = -1;
			break;
		}
	}
	free(copy);
	return rc;
}

/* Applies unbound_conf, trust_anchor_file and resolver.  When neither an
 * unbound.conf nor a trust anchor file is given, Debian's root key is used if
 * it is readable (otherwise there is no anchor and has_trust_anchor says so).
 * Returns 0, or -1 with err set. */
static int
resolver_configure(struct ub_ctx *ctx, const struct resolver_config *cfg,
    char *err, size_t errlen)
{
	const char *ta = cfg->trust_anchor_file;
	int ub;

	if (cfg->unbound_conf != NULL &&
	    (ub = ub_ctx_config(ctx, cfg->unbound_conf)) != 0) {
		errf(err, errlen, "unbound_conf %s: %s", cfg->unbound_conf,
		    ub_strerror(ub));
		return -1;
	}
	if (ta == NULL && cfg->unbound_conf == NULL &&
	    access(DEFAULT_ROOT_KEY, R_OK) == 0)
		ta = DEFAULT_ROOT_KEY;
	if (ta != NULL && (ub = ub_ctx_add_ta_file(ctx, ta)) != 0) {
		errf(err, errlen, "trust_anchor_file %s: %s", ta,
		    ub_strerror(ub));
		return -1;
	}
	if (cfg->resolver != NULL && cfg->resolver[0] != '\0')
		return resolver_set_forwarders(ctx, cfg->resolver, err, errlen);
	return 0;
}

/* 1 if the unbound option (a list) has at least one entry. */
static int
option_nonempty(struct ub_ctx *ctx, const char *opt)
{
	char *val = NULL;
	int yes;

	if (ub_ctx_get_option(ctx, opt, &val) != 0 || val == NULL)
		return 0;
	yes = strspn(val, " \t\r\n") != strlen(val);
	free(val);
	return yes;
}

/* Trust anchor check, chosen to be cheap and exact: ask the finalized
 * context itself.  ub_ctx_add_ta_file() and every anchor directive of
 * unbound.conf (including include: files) end up in these option lists, and
 * finalizing already failed if any listed anchor could not be loaded.  Without
 * the validator module nothing is ever secure either (DANE-13). */
static int
resolver_detect_ta(struct ub_ctx *ctx)
{
	static const char *const opts[] = { "trust-anchor-file",
	    "auto-trust-anchor-file", "trust-anchor", "trusted-keys-file" };
	char *mods = NULL;
	int validator, any = 0;
	size_t i;

	if (ub_ctx_get_option(ctx, "module-config", &mods) != 0 || mods == NULL)
		return 0;
	validator = strstr(mods, "validator") != NULL;
	free(mods);
	for (i = 0; i < sizeof(opts) / sizeof(opts[0]); i++)
		any |= option_nonempty(ctx, opts[i]);
	return validator && any;
}

struct resolver *
resolver_new(struct event_base *base, const struct resolver_config *cfg,
    char *err, size_t errlen)
{
	struct resolver *r;
	int ub;

	if ((r = calloc(1, sizeof(*r))) == NULL) {
		errf(err, errlen, "resolver: out of memory");
		return NULL;
	}
	r->base = base;
	r->timeout_ms = cfg->timeout_ms > 0 ? cfg->timeout_ms :
	    RESOLVER_DEFAULT_TIMEOUT_MS;
	if ((r->ctx = ub_ctx_create_event(base)) == NULL) {
		errf(err, errlen, "ub_ctx_create_event failed");
		goto fail;
	}
	if (resolver_configure(r->ctx, cfg, err, errlen) != 0)
		goto fail;
	/* Finalize now, so a bad option or unreadable anchor fails at start-up
	 * rather than on the first query. */
	if ((ub = ub_ctx_zone_remove(r->ctx, FINALIZE_NAME)) != 0) {
		errf(err, errlen, "resolver init: %s (bad unbound.conf option "
		    "or unreadable trust anchor?)", ub_strerror(ub));
		goto fail;
	}
	r->has_ta = resolver_detect_ta(r->ctx);
	return r;
fail:
	if (r->ctx != NULL)
		ub_ctx_delete(r->ctx);
	free(r);
	return NULL;
}

int
resolver_has_trust_anchor(const struct resolver *r)
{
	return r != NULL && r->has_ta;
}

/* ---- query bookkeeping ------------------------------------------------ */

static void
query_link(struct resolver *r, struct dns_query *q)
{
	q->next = r->pending;
	if (r->pending != NULL)
		r->pending->prev = q;
	r->pending = q;
}

static void
query_unlink(struct dns_query *q)
{
	if (q->prev != NULL)
		q->prev->next = q->next;
	else
		q->r->pending = q->next;
	if (q->next != NULL)
		q->next->prev = q->prev;
	q->prev = q->next = NULL;
}

/* Frees the parsed records of q's answer. */
static void
answer_clear(struct dns_query *q)
{
	size_t i;

	for (i = 0; i < DNS_MAX_RECORDS; i++) {
		free(q->blob[i]);
		q->blob[i] = NULL;
	}
	free(q->rr);
	q->rr = NULL;
	memset(&q->ans, 0, sizeof(q->ans));
	q->ready = 0;
}

/* Frees q unless libunbound still holds it; then its callback frees it. */
static void
query_release(struct dns_query *q)
{
	if (q->timer != NULL)
		event_del(q->timer);
	if (q->in_unbound)
		return;
	answer_clear(q);
	query_unlink(q);
	if (q->timer != NULL)
		event_free(q->timer);
	free(q);
}

/* Runs the user callback once, then releases q. */
static void
query_deliver(struct dns_query *q)
{
	q->detached = 1;
	if (q->timer != NULL)
		event_del(q->timer);
	q->cb(q->arg, &q->ans);
	answer_clear(q);
	query_release(q);
}

/* ---- answer parsing (libldns) ----------------------------------------- */

/* Presentation form of a domain name: lowercase, no trailing dot, "" for
 * the root.  Returns 0, or -1 if it is not a name or does not fit. */
static int
name_text(const ldns_rdf *rdf, char *buf, size_t len)
{
	char *s, *p;
	size_t n;

	if (rdf == NULL || ldns_rdf_get_type(rdf) != LDNS_RDF_TYPE_DNAME ||
	    (s = ldns_rdf2str(rdf)) == NULL)
		return -1;
	n = strlen(s);
	if (n > 0 && s[n - 1] == '.')
		s[--n] = '\0';
	for (p = s; *p != '\0'; p++)
		*p = (char)tolower((unsigned char)*p);
	if (n >= len) {
		free(s);
		return -1;
	}
	memcpy(buf, s, n + 1);
	free(s);
	return 0;
}

/* canon for failed answers: the asked name, lowercase, no trailing dot. */
static void
name_norm(const char *in, char *out, size_t len)
{
	size_t i, n = strlen(in);

	if (n > 0 && in[n - 1] == '.')
		n--;
	if (n >= len)
		n = len - 1;
	for (i = 0; i < n; i++)
		out[i] = (char)tolower((unsigned char)in[i]);
	out[n] = '\0';
}

static void
answer_fail(struct dns_query *q, int rcode, const char *why)
{
	answer_clear(q);
	q->ans.qname = q->qname;
	q->ans.qtype = q->qtype;
	q->ans.sec = DNS_INSECURE;
	q->ans.rcode = rcode;
	q->ans.status = DNS_FAIL;
	snprintf(q->ans.why_bogus, sizeof(q->ans.why_bogus), "%s", why);
	name_norm(q->qname, q->ans.canon, sizeof(q->ans.canon));
	q->ready = 1;
}

static void
ttl_min(struct dns_answer *ans, uint32_t ttl)
{
	if (ttl > INT32_MAX)
		ttl = INT32_MAX;
	if (ans->ttl < 0 || (int)ttl < ans->ttl)
		ans->ttl = (int)ttl;
}

/* Follows the CNAME chain in the answer section from qname (DANE-04 needs
 * the expanded name).  Returns the final owner (qname or an rdf inside pkt),
 * or NULL on a loop or an over-long chain. */
static const ldns_rdf *
answer_chase(struct dns_answer *ans, const ldns_pkt *pkt,
    const ldns_rdf *qname, int qtype)
{
	const ldns_rr_list *an = ldns_pkt_answer(pkt);
	const ldns_rdf *cur = qname;
	size_t i, hops = 0;
	int moved = 1;

	while (qtype != DNS_T_CNAME && moved) {
		moved = 0;
		for (i = 0; i < ldns_rr_list_rr_count(an); i++) {
			const ldns_rr *rr = ldns_rr_list_rr(an, i);

			if (ldns_rr_get_type(rr) != LDNS_RR_TYPE_CNAME ||
			    ldns_rr_rd_count(rr) < 1 ||
			    ldns_dname_compare(ldns_rr_owner(rr), cur) != 0)
				continue;
			if (++hops > DNS_MAX_CNAMES)
				return NULL;
			ttl_min(ans, ldns_rr_ttl(rr));
			cur = ldns_rr_rdf(rr, 0);
			moved = 1;
			break;
		}
	}
	return cur;
}

/* TXT: the character-strings of one RR concatenated (RFC 7208 section 3.3,
 * RFC 8461 section 3.1).  Returns 0 or -1. */
static int
rr_parse_txt(const ldns_rr *rr, struct dns_rr *out, void **blob)
{
	size_t i, total = 0, off = 0;
	char *s;

	for (i = 0; i < ldns_rr_rd_count(rr); i++)
		total += ldns_rdf_size(ldns_rr_rdf(rr, i));
	if ((s = malloc(total + 1)) == NULL)
		return -1;
	for (i = 0; i < ldns_rr_rd_count(rr); i++) {
		const ldns_rdf *f = ldns_rr_rdf(rr, i);
		const uint8_t *d = ldns_rdf_data(f);
		size_t sz = ldns_rdf_size(f);

		if (sz < 1 || (size_t)d[0] != sz - 1) {
			free(s);
			return -1;
		}
		memcpy(s + off, d + 1, sz - 1);
		off += sz - 1;
	}
	s[off] = '\0';
	out->u.txt.text = s;
	out->u.txt.len = off;
	*blob = s;
	return 0;
}

/* TLSA (RFC 6698 section 2.1): usage, selector, mtype, data; plus the
 * presentation form "U S M hex".  Returns 0 or -1. */
static int
rr_parse_tlsa(const ldns_rr *rr, struct dns_rr *out, void **blob)
{
	static const char hex[] = "0123456789abcdef";
	const uint8_t *d = NULL;
	size_t i, len = 0, tlen;
	unsigned char *mem;
	char *t;
	int n;

	if (ldns_rr_rd_count(rr) < 3)
		return -1;
	for (i = 0; i < 3; i++)
		if (ldns_rdf_size(ldns_rr_rdf(rr, i)) != 1)
			return -1;
	if (ldns_rr_rd_count(rr) > 3) {
		d = ldns_rdf_data(ldns_rr_rdf(rr, 3));
		len = ldns_rdf_size(ldns_rr_rdf(rr, 3));
	}
	tlen = 12 + 2 * len + 1;
	if ((mem = malloc(len + tlen)) == NULL)
		return -1;
	if (len > 0)
		memcpy(mem, d, len);
	out->u.tlsa.usage = ldns_rdf_data(ldns_rr_rdf(rr, 0))[0];
	out->u.tlsa.selector = ldns_rdf_data(ldns_rr_rdf(rr, 1))[0];
	out->u.tlsa.mtype = ldns_rdf_data(ldns_rr_rdf(rr, 2))[0];
	t = (char *)mem + len;
	n = snprintf(t, tlen, "%u %u %u ", out->u.tlsa.usage,
	    out->u.tlsa.selector, out->u.tlsa.mtype);
	for (i = 0; i < len; i++) {
		t[n + 2 * i] = hex[mem[i] >> 4];
		t[n + 2 * i + 1] = hex[mem[i] & 0xf];
	}
	t[n + 2 * len] = '\0';
	out->u.tlsa.data = mem;
	out->u.tlsa.len = len;
	out->u.tlsa.text = t;
	*blob = mem;
	return 0;
}

static int
rr_parse_addr(const ldns_rr *rr, int type, struct dns_rr *out)
{
	const ldns_rdf *f = ldns_rr_rdf(rr, 0);
	struct dns_addr *a = &out->u.addr;
	struct sockaddr_in *s4 = (struct sockaddr_in *)&a->ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&a->ss;
	size_t want = type == DNS_T_A ? 4 : 16;

	if (f == NULL || ldns_rdf_size(f) != want)
		return -1;
	memset(&a->ss, 0, sizeof(a->ss));
	if (type == DNS_T_A) {
		s4->sin_family = AF_INET;
		memcpy(&s4->sin_addr, ldns_rdf_data(f), 4);
		a->sslen = sizeof(*s4);
		inet_ntop(AF_INET, &s4->sin_addr, a->text, sizeof(a->text));
	} else {
		s6->sin6_family = AF_INET6;
		memcpy(&s6->sin6_addr, ldns_rdf_data(f), 16);
		a->sslen = sizeof(*s6);
		inet_ntop(AF_INET6, &s6->sin6_addr, a->text, sizeof(a->text));
	}
	return 0;
}

/* One record of the asked type into out.  Returns 0 or -1 (malformed). */
static int
rr_parse(const ldns_rr *rr, int type, struct dns_rr *out, void **blob)
{
	out->type = type;
	out->ttl = ldns_rr_ttl(rr);
	switch (type) {
	case DNS_T_MX:
		if (ldns_rr_rd_count(rr) < 2 ||
		    ldns_rdf_size(ldns_rr_rdf(rr, 0)) != 2)
			return -1;
		out->u.mx.pref = ldns_rdf2native_int16(ldns_rr_rdf(rr, 0));
		return name_text(ldns_rr_rdf(rr, 1), out->u.mx.host,
		    sizeof(out->u.mx.host));
	case DNS_T_A:
	case DNS_T_AAAA:
		return rr_parse_addr(rr, type, out);
	case DNS_T_CNAME:
		return name_text(ldns_rr_rdf(rr, 0), out->u.cname,
		    sizeof(out->u.cname));
	case DNS_T_TXT:
		return rr_parse_txt(rr, out, blob);
	case DNS_T_TLSA:
		return rr_parse_tlsa(rr, out, blob);
	}
	return -1;
}

/* Collects the records of qtype owned by owner.  Returns the number found
 * in the packet (may exceed what is kept), or -1 on a malformed record. */
static int
answer_collect(struct dns_query *q, const ldns_pkt *pkt, const ldns_rdf *owner)
{
	const ldns_rr_list *an = ldns_pkt_answer(pkt);
	size_t i;
	int found = 0;

	q->rr = calloc(DNS_MAX_RECORDS, sizeof(*q->rr));
	if (q->rr == NULL)
		return -1;
	for (i = 0; i < ldns_rr_list_rr_count(an); i++) {
		const ldns_rr *rr = ldns_rr_list_rr(an, i);

		if ((int)ldns_rr_get_type(rr) != q->qtype ||
		    ldns_rr_get_class(rr) != LDNS_RR_CLASS_IN ||
		    ldns_dname_compare(ldns_rr_owner(rr), owner) != 0)
			continue;
		if (++found > DNS_MAX_RECORDS) {
			q->ans.truncated = 1;
			continue;
		}
		if (rr_parse(rr, q->qtype, &q->rr[q->ans.n], &q->blob[q->ans.n]))
			return -1;
		ttl_min(&q->ans, q->rr[q->ans.n].ttl);
		q->ans.n++;
	}
	q->ans.rr = q->rr;
	return found;
}

/* Negative-answer TTL: min(SOA TTL, SOA MINIMUM) (RFC 2308 section 5). */
static void
answer_negative_ttl(struct dns_answer *ans, const ldns_pkt *pkt)
{
	const ldns_rr_list *au = ldns_pkt_authority(pkt);
	size_t i;

	for (i = 0; i < ldns_rr_list_rr_count(au); i++) {
		const ldns_rr *rr = ldns_rr_list_rr(au, i);

		if (ldns_rr_get_type(rr) != LDNS_RR_TYPE_SOA ||
		    ldns_rr_rd_count(rr) < 7)
			continue;
		ttl_min(ans, ldns_rr_ttl(rr));
		ttl_min(ans, ldns_rdf2native_int32(ldns_rr_rdf(rr, 6)));
		return;
	}
	ans->ttl = 0;   /* no SOA: do not cache the negative answer */
}

/* Fills q->ans from a parsed, non-bogus packet.  Returns 0, or -1 with
 * *why set when the answer cannot be used. */
static int
answer_fill(struct dns_query *q, const ldns_pkt *pkt, const ldns_rdf *qname,
    const char **why)
{
	struct dns_answer *ans = &q->ans;
	const ldns_rdf *owner;
	int rcode = ldns_pkt_get_rcode(pkt), found;

	ans->rcode = rcode;
	if (rcode != LDNS_RCODE_NOERROR && rcode != LDNS_RCODE_NXDOMAIN) {
		*why = "error rcode in answer";
		return -1;
	}
	if ((owner = answer_chase(ans, pkt, qname, q->qtype)) == NULL) {
		*why = "CNAME chain too long or looping";
		return -1;
	}
	if (name_text(owner, ans->canon, sizeof(ans->canon)) != 0 ||
	    (found = answer_collect(q, pkt, owner)) < 0) {
		*why = "malformed record in answer";
		return -1;
	}
	if (found > 0)
		ans->status = DNS_OK;
	else {
		ans->status = rcode == LDNS_RCODE_NXDOMAIN ? DNS_NXDOMAIN :
		    DNS_NODATA;
		answer_negative_ttl(ans, pkt);
	}
	if (ans->ttl < 0)
		ans->ttl = 0;
	return 0;
}

/* Builds q->ans from libunbound's result (see the file header for the
 * bogus rule). */
static void
answer_build(struct dns_query *q, int rcode, const void *packet, int len,
    int sec, const char *why_bogus)
{
	ldns_pkt *pkt = NULL;
	ldns_rdf *qname = NULL;
	const char *why = NULL;

	if (rcode != 0 || packet == NULL || len <= 0) {
		answer_fail(q, rcode != 0 ? rcode : LDNS_RCODE_SERVFAIL,
		    rcode == LDNS_RCODE_SERVFAIL ? "SERVFAIL" : "resolver error");
		return;
	}
	if (sec == 1) {
		answer_fail(q, LDNS_RCODE_SERVFAIL,
		    why_bogus != NULL ? why_bogus : "DNSSEC bogus");
		q->ans.sec = DNS_BOGUS;
		return;
	}
	answer_clear(q);
	q->ans.qname = q->qname;
	q->ans.qtype = q->qtype;
	q->ans.sec = sec == 2 ? DNS_SECURE : DNS_INSECURE;
	q->ans.ttl = -1;
	if (ldns_wire2pkt(&pkt, packet, (size_t)len) != LDNS_STATUS_OK)
		why = "unparseable answer packet";
	else if ((qname = ldns_dname_new_frm_str(q->qname)) == NULL)
		why = "bad query name";
	if (why != NULL || answer_fill(q, pkt, qname, &why) != 0)
		answer_fail(q, LDNS_RCODE_SERVFAIL, why);
	q->ready = 1;
	ldns_rdf_deep_free(qname);
	ldns_pkt_free(pkt);
}

/* Latency of the answered queries of this process (metrics). */
static struct {
	unsigned long long count;
	double seconds;
} resolver_latency_stats;

static void
resolver_account(const struct timeval *t0)
{
	struct timeval now;

	gettimeofday(&now, NULL);
	resolver_latency_stats.count++;
	resolver_latency_stats.seconds += (double)(now.tv_sec - t0->tv_sec) +
	    (double)(now.tv_usec - t0->tv_usec) / 1e6;
}

void
dns_addrs_v4_first(char (*addr)[INET6_ADDRSTRLEN], size_t n)
{
	char tmp[INET6_ADDRSTRLEN];
	size_t i, k, v4 = 0;

	for (i = 0; i < n; i++) {
		if (strchr(addr[i], ':') != NULL)
			continue;
		memcpy(tmp, addr[i], sizeof(tmp));
		for (k = i; k > v4; k--)
			memcpy(addr[k], addr[k - 1], sizeof(tmp));
		memcpy(addr[v4++], tmp, sizeof(tmp));
	}
}

void
resolver_latency(unsigned long long *count, double *seconds)
{
	*count = resolver_latency_stats.count;
	*seconds = resolver_latency_stats.seconds;
}

/* ---- libunbound and libevent callbacks -------------------------------- */

/* libunbound's answer.  It can run inside ub_resolve_event() (a cache or
 * local-zone hit for this query, or another mesh state finishing while a
 * new query is attached), so delivery is always deferred to the loop: user
 * callbacks run only from the event loop, never inside a resolver_*() call,
 * and resolver_query() has returned the handle before its callback runs. */
static void
query_ub_cb(void *arg, int rcode, void *packet, int len, int sec,
    char *why_bogus, int was_ratelimited)
{
	struct dns_query *q = arg;

	(void)was_ratelimited;
	q->in_unbound = 0;
	if (q->detached) {
		query_release(q);
		return;
	}
	answer_build(q, rcode, packet, len, sec, why_bogus);
	event_del(q->timer);
	event_active(q->timer, EV_TIMEOUT, 1);
}

/* Deadline reached, or a deferred answer to deliver. */
static void
query_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct dns_query *q = arg;
	char why[64];

	(void)fd;
	(void)what;
	if (!q->ready) {
		snprintf(why, sizeof(why), "timeout after %d ms",
		    q->r->timeout_ms);
		answer_fail(q, LDNS_RCODE_SERVFAIL, why);
	}
	resolver_account(&q->t0);
	query_deliver(q);
}

struct dns_query *
resolver_query(struct resolver *r, const char *name, int rrtype, dns_cb cb,
    void *arg)
{
	struct timeval tv;
	struct dns_query *q;
	int ub;

	if (r == NULL || name == NULL || cb == NULL ||
	    strlen(name) >= DNS_NAME_MAX || (rrtype != DNS_T_A &&
	    rrtype != DNS_T_AAAA && rrtype != DNS_T_MX && rrtype != DNS_T_TXT &&
	    rrtype != DNS_T_TLSA && rrtype != DNS_T_CNAME))
		return NULL;
	if ((q = calloc(1, sizeof(*q))) == NULL)
		return NULL;
	if ((q->timer = evtimer_new(r->base, query_timer_cb, q)) == NULL) {
		free(q);
		return NULL;
	}
	q->r = r;
	q->cb = cb;
	q->arg = arg;
	q->qtype = rrtype;
	gettimeofday(&q->t0, NULL);
	memcpy(q->qname, name, strlen(name) + 1);
	query_link(r, q);
	q->in_unbound = 1;
	ub = ub_resolve_event(r->ctx, name, rrtype, LDNS_RR_CLASS_IN, q,
	    query_ub_cb, NULL);
	if (ub != 0 && q->in_unbound) {
		q->in_unbound = 0;
		query_release(q);
		return NULL;
	}
	if (q->ready)           /* answered synchronously: already active */
		return q;
	tv.tv_sec = r->timeout_ms / 1000;
	tv.tv_usec = (r->timeout_ms % 1000) * 1000;
	evtimer_add(q->timer, &tv);
	return q;
}

void
resolver_cancel(struct dns_query **qp)
{
	struct dns_query *q;

	if (qp == NULL || (q = *qp) == NULL)
		return;
	*qp = NULL;
	if (q->detached)        /* inside or after its own callback */
		return;
	q->detached = 1;
	query_release(q);
}

/* Detaches every query, lets libunbound end its own (their callbacks only
 * free them), then frees what is left.  No user callback runs. */
void
resolver_free(struct resolver **rp)
{
	struct resolver *r;
	struct dns_query *q;

	if (rp == NULL || (r = *rp) == NULL)
		return;
	*rp = NULL;
	for (q = r->pending; q != NULL; q = q->next) {
		q->detached = 1;
		if (q->timer != NULL)
			event_del(q->timer);
	}
	ub_ctx_delete(r->ctx);
	while ((q = r->pending) != NULL) {
		q->in_unbound = 0;
		query_release(q);
	}
	free(r);
}
