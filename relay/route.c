/*
 * route.c - targets and TLS policy for a transaction.  See route.h.
 *
 * The smarthost's lookups run at once: MX (then TLSA for the MX hosts) and
 * the MTA-STS policy; route_decide() runs when both are in.  Nothing here
 * verifies anything: OpenSSL does that on the connection (relay/upstream.c)
 * with the names and records chosen here.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "policy/mtasts.h"
#include "policy/whitelist.h"
#include "relay/evlog.h"
#include "relay/listener.h"
#include "relay/route.h"
#include "relay/session.h"


long long
route_ms_since(const struct timeval *t)
{
	struct timeval now;

	gettimeofday(&now, NULL);
	return (now.tv_sec - t->tv_sec) * 1000LL + (now.tv_usec - t->tv_usec) / 1000;
}

/* policy_type and policy_string (RFC 8460 §4.3) of a target. */
static void
route_event_policy(struct evline *e, const struct session *s, const struct upstream_target *t)
{
	const char *strs[STS_LINES_MAX > DANE_MAX_RECS ? STS_LINES_MAX : DANE_MAX_RECS];
	size_t i, n = 0;

	if (t != NULL && t->dane != NULL && (t->dane->state == DANE_USABLE ||
	    t->dane->state == DANE_UNUSABLE)) {
		for (i = 0; i < t->dane->n; i++)
			strs[n++] = t->dane->recs[i].text;
		evlog_str(e, "policy_type", "tlsa");
		evlog_strarr(e, "policy_string", strs, n);
		evlog_bool(e, "halfdane", t->dane->halfdane);
		return;
	}
	if (t != NULL && t->sts != NULL) {
		for (i = 0; i < t->sts->nlines && n < STS_LINES_MAX; i++)
			strs[n++] = sts_policy_line(t->sts, i);
		evlog_str(e, "policy_type", "sts");
		evlog_strarr(e, "policy_string", strs, n);
		evlog_str(e, "policy_mode", sts_mode_name(t->sts->mode));
		return;
	}
	/* A policy that could not be fetched is still an sts failure (RFC 8460 §4.3.2.2). */
	evlog_str(e, "policy_type", s->sts && s->sts->failure && !s->sts->has_policy ?
	    "sts" : "no-policy-found");
	evlog_strarr(e, "policy_string", NULL, 0);
}

static void
route_event_dane(struct evline *e, struct upstream *up)
{
	int usage, selector, mtype, depth;
	char buf[64];

	if (up == NULL || !upstream_dane_match(up, &usage, &selector, &mtype, &depth))
		return;
	snprintf(buf, sizeof(buf), "%d %d %d", usage, selector, mtype);
	evlog_str(e, "dane_match", buf);
	evlog_int(e, "dane_depth", depth);
}

/*
 * A success on the wire can still be a policy failure to report: an
 * MTA-STS policy that could not be fetched, or a "testing" policy whose
 * checks failed (RFC 8461 §5: deliver, report as enforce would have).
 */
static const char *
route_result_type(const struct session *s, const struct upstream_target *t,
    struct upstream *up, const char *result_type)
{
	if (result_type != NULL)
		return result_type;
	if (up != NULL && upstream_sts_failure(up) != NULL)
		return upstream_sts_failure(up);
	if (t != NULL && t->sts_failure != NULL)
		return t->sts_failure;
	if (s->sts != NULL && !s->sts->has_policy && s->sts->failure != NULL &&
	    (t == NULL || t->dane == NULL || t->dane->state != DANE_USABLE))
		return s->sts->failure;
	return NULL;
}

void
route_delivery_event(struct session *s, const struct upstream_target *t,
    struct upstream *up, const char *outcome, const char *result_type, int code,
    const char *reply)
{
	const char *v = up ? upstream_tls_version(up) : NULL;
	struct evline *e = evlog_begin("delivery", s->id);

	if (up != NULL && up == s->up)
		s->up_txn_pending = 0;

	result_type = route_result_type(s, t, up, result_type);
	route_event_policy(e, s, t);
	evlog_str(e, "policy_domain", s->txn && s->txn->domain[0] ? s->txn->domain : s->up_domain);
	evlog_str(e, "policy_level", t ? tls_level_name(t->level) : "");
	evlog_str(e, "policy_source", s->level_source ? s->level_source : "");
	evlog_str(e, "mx_host", t ? t->host : "");
	evlog_str(e, "result", result_type ? "failure" : "success");
	if (result_type != NULL && result_type[0] != '\0')
		evlog_str(e, "result_type", result_type);
	route_event_dane(e, up);
	evlog_str(e, "sending_mta_ip", up ? upstream_local_ip(up) : "");
	evlog_str(e, "receiving_mx_hostname", t ? t->host : "");
	evlog_str(e, "receiving_mx_helo", up ? upstream_helo(up) : "");
	evlog_str(e, "receiving_ip", t ? t->ip : "");
	evlog_bool(e, "tls", v != NULL);
	if (v != NULL)
		evlog_bool(e, "tls_resumed", upstream_tls_resumed(up));
	evlog_str(e, "tls_version", v ? v : "");
	evlog_str(e, "tls_cipher", v ? upstream_tls_cipher(up) : "");
	evlog_str(e, "peer_cert_sha256", up ? upstream_peer_sha256(up) : "");
	evlog_bool(e, "connection_reused", up && upstream_uses(up) > 1);
	if (s->txn != NULL && s->txn->report_mail)
		evlog_bool(e, "report_mail", 1);
	evlog_str(e, "outcome", outcome);
	evlog_int(e, "code", code);
	evlog_text(e, "smtp_reply", reply);
	evlog_int(e, "duration_ms", route_ms_since(&s->up_start));
	evlog_end(e);
}

static struct upstream_target *
route_targets_alloc(struct session *s, size_t n)
{
	free(s->targets);
	s->targets = calloc(n, sizeof(*s->targets));
	s->ntargets = 0;
	s->target = 0;
	return s->targets;
}

/* One gateway target: the next hop at address sa (port from next_hop). */
static void
route_nexthop_target(struct session *s, struct upstream_target *t,
    const struct sockaddr_storage *ss, socklen_t len, const char *ip)
{
	const struct listener_config *lc = s->lc;
	struct sockaddr_in *sin = (struct sockaddr_in *)&t->addr;  /* port: same offset in v6 */

	memset(t, 0, sizeof(*t));
	snprintf(t->host, sizeof(t->host), "%s", lc->next_hop_host);
	memcpy(&t->addr, ss, len);
	t->addrlen = len;
	sin->sin_port = htons((uint16_t)lc->next_hop_port);
	snprintf(t->ip, sizeof(t->ip), "%s", ip);
	t->level = lc->next_hop_tls;
	snprintf(t->verify_names[0], sizeof(t->verify_names[0]), "%s",
	    lc->next_hop_tls_name ? lc->next_hop_tls_name : lc->next_hop_host);
	t->nverify = 1;
}

/* The next hop given by name: its addresses, in order (IPv4 first). */
static void
route_nexthop_cb(void *arg, const struct mx_route *r)
{
	struct session *s = arg;
	const struct mx_host *h = &r->hosts[0];
	size_t i;

	s->mx = NULL;
	if (r->status != MX_OK || route_targets_alloc(s, h->naddr) == NULL) {
		inline_answer(s, 451, "4.4.3", r->status != MX_OK ? r->detail :
		    "Error: out of memory");
		return;
	}
	for (i = 0; i < h->naddr; i++)
		route_nexthop_target(s, &s->targets[s->ntargets++], &h->addrs[i].ss,
		    h->addrs[i].sslen, h->addrs[i].text);
	if (inline_connect_target(s) < 0)
		inline_answer(s, 451, "4.3.0", "Error: cannot connect to next hop");
}

/* Gateway route: the configured next hop, an address or a name to resolve. */
static int
route_nexthop(struct session *s)
{
	const struct listener_config *lc = s->lc;
	struct sockaddr_storage ss;
	socklen_t len;
	char spec[300];

	s->level_source = "next_hop_tls";
	snprintf(spec, sizeof(spec), strchr(lc->next_hop_host, ':') ? "[%s]:%d" : "%s:%d",
	    lc->next_hop_host, lc->next_hop_port);
	if (addr_parse(spec, &ss, &len) == 0) {
		if (route_targets_alloc(s, 1) == NULL)
			return -1;
		route_nexthop_target(s, &s->targets[s->ntargets++], &ss, len, lc->next_hop_host);
		return inline_connect_target(s);
	}
	if (s->listener->resolver != NULL)
		s->mx = mx_lookup_host(s->listener->resolver, lc->next_hop_host,
		    route_nexthop_cb, s);
	return s->mx != NULL ? 0 : -1;
}

/* The [domain:NAME] level for domain, or TLS_LEVEL_INVALID. */
static enum tls_level
route_domain_level(const struct relay_config *cfg, const char *domain)
{
	const struct domain_config *d;

	for (d = cfg->domains; d != NULL; d = d->next)
		if (strcasecmp(d->name, domain) == 0)
			return d->level;
	return TLS_LEVEL_INVALID;
}

/* Reference identifiers for the certificate (Postfix TLS_README). */
static void
route_verify_names(struct upstream_target *t, const char *domain, const char *mxhost,
    int mx_secure)
{
	t->nverify = 0;
	if (t->level == TLS_SECURE) {
		/* The recipient domain or a subdomain; the MX name only if DNSSEC-secure. */
		snprintf(t->verify_names[t->nverify++], sizeof(t->verify_names[0]), "%s", domain);
		snprintf(t->verify_names[t->nverify++], sizeof(t->verify_names[0]), ".%s", domain);
		if (!mx_secure)
			return;
	}
	snprintf(t->verify_names[t->nverify++], sizeof(t->verify_names[0]), "%s", mxhost);
}


static void
route_host_sts(const struct route_sts *sts, const char *mxhost, struct route_host *hp)
{
	int match = sts_mx_match(&sts->policy, mxhost);

	hp->sts = &sts->policy;
	if (sts->policy.mode == STS_MODE_TESTING) {
		hp->sts_testing = 1;
		hp->sts_failure = match ? NULL : "validation-failure";
		return;
	}
	/* RFC 8461 §4.1: enforce uses only MX hosts the policy names ... */
	if (!match) {
		hp->level = TLS_LEVEL_INVALID;
		hp->why = "validation-failure";
		hp->detail = "MX host not listed in the MTA-STS policy";
		return;
	}
	/* ... and §4.2: a PKIX-valid certificate for the MX host name. */
	if (hp->level < TLS_VERIFY)
		hp->level = TLS_VERIFY;
}

void
route_host_policy(const struct route_sts *sts, enum tls_level level, const struct mx_host *h,
    const struct dane_host *d, struct route_host *hp)
{
	enum dane_state st = d ? d->state : DANE_NONE;

	memset(hp, 0, sizeof(*hp));
	hp->level = level;
	if (st == DANE_FAIL) {
		hp->level = TLS_LEVEL_INVALID;
		hp->why = "dnssec-invalid";
		return;
	}
	if (st == DANE_USABLE) {        /* RFC 7672 §2.2, RFC 8461 §2: DANE decides */
		hp->level = TLS_DANE_ONLY;
		return;
	}
	if (level == TLS_DANE_ONLY) {
		hp->level = TLS_LEVEL_INVALID;
		hp->why = "dane-required";
		return;
	}
	if (level == TLS_DANE)
		hp->level = TLS_MAY;
	/* DANE-06: an unusable TLSA RRset still makes TLS mandatory. */
	if (st == DANE_UNUSABLE && hp->level < TLS_ENCRYPT)
		hp->level = TLS_ENCRYPT;
	if (sts != NULL && sts->has_policy && sts->policy.mode != STS_MODE_NONE)
		route_host_sts(sts, h->name, hp);
}

/* A host that cannot be used: its delivery event (TLS-RPT sees the failure). */
static void
route_host_refused(struct session *s, const struct mx_host *h, const struct dane_host *d,
    const struct route_host *hp)
{
	struct upstream_target t;

	memset(&t, 0, sizeof(t));
	snprintf(t.host, sizeof(t.host), "%s", h->name);
	if (h->naddr > 0)
		snprintf(t.ip, sizeof(t.ip), "%s", h->addrs[0].text);
	t.level = s->route_level;
	t.dane = d;
	t.sts = hp->sts;
	route_delivery_event(s, &t, NULL, "deferred", hp->why, 451, hp->detail ? hp->detail :
	    d && d->detail[0] ? d->detail : hp->why);
}

static void
route_host_targets(struct session *s, const struct mx_route *r, size_t i,
    const struct dane_host *d, const struct route_host *hp, size_t max)
{
	const struct mx_host *h = &r->hosts[i];
	struct upstream_target *t;
	struct sockaddr_in *sin;
	size_t j;

	for (j = 0; j < h->naddr && s->ntargets < max; j++) {
		t = &s->targets[s->ntargets++];
		snprintf(t->host, sizeof(t->host), "%s", h->name);
		memcpy(&t->addr, &h->addrs[j].ss, h->addrs[j].sslen);
		t->addrlen = h->addrs[j].sslen;
		sin = (struct sockaddr_in *)&t->addr;   /* same offset in sockaddr_in6 */
		sin->sin_port = htons((uint16_t)s->cfg->port);
		snprintf(t->ip, sizeof(t->ip), "%s", h->addrs[j].text);
		t->level = hp->level;
		t->dane = d;
		t->sts = hp->sts;
		t->sts_testing = hp->sts_testing;
		t->sts_failure = hp->sts_failure;
		route_verify_names(t, s->txn->domain, h->name, r->mx_secure);
	}
}

/* One target per address of every usable MX host, in route order. */
static size_t
route_targets(struct session *s, const struct mx_route *r, const char **why)
{
	const struct dane_host *d;
	struct route_host hp;
	size_t i, max = 16;

	if (route_targets_alloc(s, max) == NULL)
		return 0;
	for (i = 0; i < r->nhosts; i++) {
		d = s->dane ? &s->dane->hosts[i] : NULL;
		if (r->hosts[i].bogus) {
			memset(&hp, 0, sizeof(hp));
			hp.why = "dnssec-invalid";
			route_host_refused(s, &r->hosts[i], NULL, &hp);
			*why = hp.why;
			continue;
		}
		if (r->hosts[i].naddr == 0)
			continue;
		route_host_policy(s->sts, s->route_level, &r->hosts[i], d, &hp);
		if (hp.level == TLS_LEVEL_INVALID) {
			route_host_refused(s, &r->hosts[i], d, &hp);
			*why = hp.why;
		} else
			route_host_targets(s, r, i, d, &hp, max);
	}
	return s->ntargets;
}

/* Connect along the route, or say why no host may be used. */
static void
route_go(struct session *s)
{
	const char *why = NULL;
	char text[400];

	if (route_targets(s, s->route, &why) > 0 && inline_connect_target(s) == 0)
		return;
	if (why == NULL) {
		inline_answer(s, 451, "4.3.0", "Error: cannot connect to the destination");
		return;
	}
	snprintf(text, sizeof(text), "Error: %s: no mail server of %s passes its %s policy",
	    why, s->txn->domain, strcmp(why, "dnssec-invalid") == 0 ? "DNSSEC" :
	    strcmp(why, "validation-failure") == 0 ? "MTA-STS" : "DANE");
	inline_answer(s, 451, "4.7.5", text);
}

/* One policy_fetch event per TLSA lookup (issue 7: every policy lookup is logged). */
static void
route_dane_events(struct session *s, const struct mx_route *r, const struct dane_result *res)
{
	const char *strs[DANE_MAX_RECS];
	const struct dane_host *d;
	struct evline *e;
	size_t i, j;

	for (i = 0; i < res->nhosts; i++) {
		if (!r->hosts[i].addr_secure || r->hosts[i].naddr == 0)
			continue;           /* not looked up (RFC 7672 §2.2.1) */
		d = &res->hosts[i];
		for (j = 0; j < d->n; j++)
			strs[j] = d->recs[j].text;
		e = evlog_begin("policy_fetch", s->id);
		evlog_str(e, "policy_type", "tlsa");
		evlog_str(e, "policy_domain", s->txn->domain);
		evlog_str(e, "mx_host", r->hosts[i].name);
		evlog_str(e, "tlsa_base", d->base);
		evlog_strarr(e, "policy_string", strs, d->n);
		evlog_str(e, "dane", dane_state_name(d->state));
		evlog_str(e, "result", d->state == DANE_FAIL || d->state == DANE_UNUSABLE ?
		    "failure" : "success");
		if (d->state == DANE_FAIL)
			evlog_str(e, "result_type", "dnssec-invalid");
		else if (d->state == DANE_UNUSABLE)
			evlog_str(e, "result_type", "tlsa-invalid");
		if (d->detail[0] != '\0')
			evlog_str(e, "detail", d->detail);
		evlog_end(e);
	}
}

static void
route_dane_cb(void *arg, const struct mx_route *r, struct dane_result *res)
{
	struct session *s = arg;

	route_dane_events(s, r, res);
	s->dane_l = NULL;
	dane_result_free(&s->dane);
	s->dane = res;
	route_go(s);
}

/*
 * The static level (default, [domain:], whitelist) and whether DANE is
 * looked for: [outbound] dane = yes makes "dane" the floor of a default
 * that is weaker, and DANE (when published) also satisfies the levels that
 * demand authentication.
 */
enum tls_level
route_static_level(const struct relay_config *cfg, const struct whitelist *wl,
    const char *domain, const char **source, int *want_dane)
{
	enum tls_level level;

	level = tls_level_static(cfg->default_level, route_domain_level(cfg, domain),
	    whitelist_match(wl, domain), source);
	if (cfg->dane && strcmp(*source, "default") == 0 && level < TLS_DANE)
		level = TLS_DANE;
	/* DESIGN.md: a [domain:] level never weakens DANE, even "none". */
	*want_dane = level == TLS_DANE || level == TLS_DANE_ONLY || cfg->dane;
	return level;
}

/* MX and MTA-STS both answered: TLSA lookups, then connect. */
static void
route_decide(struct session *s)
{
	int want_dane;
	char text[400];

	if (s->sts != NULL && s->sts->status == MTASTS_TEMPFAIL) {
		s->sts->failure = "sts-policy-fetch-error";
		route_delivery_event(s, NULL, NULL, "deferred", s->sts->failure, 451,
		    s->sts->detail);
		snprintf(text, sizeof(text), "Error: %s: cannot look up the MTA-STS policy of %s",
		    s->sts->failure, s->txn->domain);
		inline_answer(s, 451, "4.7.5", text);
		return;
	}
	s->route_level = route_static_level(s->cfg, s->listener->whitelist, s->txn->domain,
	    &s->level_source, &want_dane);
	dane_result_free(&s->dane);
	if (want_dane && dane_needed(s->route)) {
		s->dane_l = dane_lookup(s->listener->resolver, s->route, s->cfg->port,
		    route_dane_cb, s);
		if (s->dane_l == NULL)
			inline_answer(s, 451, "4.3.0", "Error: cannot look up TLSA records");
		return;
	}
	route_go(s);
}

/* One of the two lookups is in: decide when the other is too. */
static void
route_one_done(struct session *s)
{
	if (--s->route_wait == 0)
		route_decide(s);
}

/* MX routing answered (smarthost): keep the route, or answer the RCPT. */
static void
route_mx_cb(void *arg, const struct mx_route *r)
{
	struct session *s = arg;

	s->mx = NULL;
	if (r->status == MX_OK) {
		free(s->route);
		s->route = malloc(sizeof(*s->route));
		if (s->route != NULL) {
			*s->route = *r;
			route_one_done(s);
			return;
		}
	}
	mtasts_cancel(&s->sts_req);
	s->route_wait = 0;
	switch (r->status) {
	case MX_OK:
		inline_answer(s, 451, "4.3.0", "Error: out of memory");
		return;
	case MX_NULL:
		inline_answer(s, 556, "5.1.10", r->detail);
		return;
	case MX_NXDOMAIN:
		inline_answer(s, 550, "5.1.2", r->detail);
		return;
	case MX_BOGUS:
		route_delivery_event(s, NULL, NULL, "deferred", "dnssec-invalid", 451, r->detail);
		inline_answer(s, 451, "4.7.5", "Error: dnssec-invalid: DNSSEC validation failed "
		    "for the destination's MX records");
		return;
	case MX_TEMPFAIL:
		inline_answer(s, 451, "4.4.3", r->detail);
		return;
	case MX_NOADDR:
		inline_answer(s, 451, "4.4.4", r->detail);
		return;
	}
}

/*
 * When the _mta-sts TXT lookup itself fails: defer (the default) or deliver
 * as without a policy, per domain ([domain:] mta_sts_dns_failure) or for
 * all ([outbound]); the policy_fetch event is written either way.
 */
static int
route_sts_dns_defer(const struct session *s)
{
	const struct domain_config *d;

	for (d = s->cfg->domains; d != NULL; d = d->next)
		if (strcasecmp(d->name, s->txn->domain) == 0 &&
		    d->sts_dns_failure != STS_DNS_INHERIT)
			return d->sts_dns_failure == STS_DNS_DEFER;
	return s->cfg->mta_sts_dns_failure == STS_DNS_DEFER;
}

/* The MTA-STS policy (or its absence) for the destination domain. */
static void
route_sts_cb(void *arg, const struct mtasts_result *res)
{
	struct session *s = arg;
	struct route_sts *st = s->sts;

	s->sts_req = NULL;
	st->status = res->status;
	if (res->status == MTASTS_NONE && res->txt_failed && route_sts_dns_defer(s))
		st->status = MTASTS_TEMPFAIL;
	st->has_policy = res->status == MTASTS_POLICY && res->policy != NULL;
	if (st->has_policy)
		st->policy = *res->policy;
	st->failure = res->failure;
	snprintf(st->detail, sizeof(st->detail), "%s", res->detail);
	route_one_done(s);
}

static void
route_start_sts(struct session *s)
{
	free(s->sts);
	s->sts = NULL;
	if (!s->cfg->mta_sts || s->listener->mtasts == NULL)
		return;
	s->sts = calloc(1, sizeof(*s->sts));
	if (s->sts == NULL)
		return;
	s->sts_req = mtasts_lookup(s->listener->mtasts, s->txn->domain, s->id, route_sts_cb, s);
	if (s->sts_req != NULL)
		s->route_wait++;
}

/* Start the connection for the RCPT in flight: static next hop or MX. */
void
route_start(struct session *s)
{
	if (s->lc->mode == MODE_GATEWAY) {
		if (route_nexthop(s) < 0)
			inline_answer(s, 451, "4.3.0", "Error: cannot connect to next hop");
		return;
	}
	gettimeofday(&s->up_start, NULL);   /* events before any connection time from here */
	s->route_wait = 1;
	if (s->listener->resolver != NULL)
		s->mx = mx_lookup(s->listener->resolver, s->txn->domain, route_mx_cb, s);
	if (s->mx == NULL) {
		s->route_wait = 0;
		inline_answer(s, 451, "4.3.0", "Error: cannot resolve the destination");
		return;
	}
	route_start_sts(s);
}

void
route_cancel(struct session *s)
{
	mx_cancel(&s->mx);
	dane_cancel(&s->dane_l);
	mtasts_cancel(&s->sts_req);
	s->route_wait = 0;
}

void
route_free(struct session *s)
{
	route_cancel(s);
	free(s->targets);
	s->targets = NULL;
	dane_result_free(&s->dane);
	free(s->route);
	s->route = NULL;
	free(s->sts);
	s->sts = NULL;
}
