/*
 * policycmd.c - "tlsrelay policy DOMAIN": what the relay would enforce for
 * mail to DOMAIN right now, and why - the command an administrator reaches
 * for when mail to one domain is stuck.
 *
 * It runs the smarthost's own lookups (MX, MTA-STS with the relay's policy
 * cache in state_dir, TLSA) on a private event loop and prints, for each
 * MX host, the policy relay/route.c would apply: DANE, MTA-STS (mode, id,
 * expiry, source) or the static level (default, [domain:], whitelist).
 * Nothing is delivered.  Exit status: 0 when some MX host may be used, 1
 * when mail would be deferred or refused, 2 on usage or configuration
 * errors.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "policy/whitelist.h"
#include "relay/config.h"
#include "relay/evlog.h"
#include "relay/policycmd.h"
#include "relay/route.h"

struct pcmd {
	struct relay_config *cfg;
	struct event_base *base;
	struct resolver *res;
	struct mtasts *sts;
	struct whitelist *wl;
	const char *domain;
	struct mx_route route;
	int have_route;
	struct route_sts sts_result;
	int have_sts;
	char sts_id[STS_ID_MAX + 1];
	time_t sts_expires;
	int sts_cached;
	struct dane_result *dane;
	int pending;
	int usable;
};

static void
pcmd_print_sts(const struct pcmd *p)
{
	const struct route_sts *st = &p->sts_result;
	char when[64];
	struct tm tm;
	size_t i;

	if (!p->have_sts) {
		printf("MTA-STS: not looked up (mta_sts = no)\n");
		return;
	}
	if (st->status == MTASTS_TEMPFAIL) {
		printf("MTA-STS: lookup failed (%s): mail is deferred\n", st->detail);
		return;
	}
	if (!st->has_policy) {
		printf("MTA-STS: no policy%s%s%s\n", st->failure ? " (" : "",
		    st->failure ? st->failure : "", st->failure ? ")" : "");
		return;
	}
	gmtime_r(&p->sts_expires, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
	printf("MTA-STS: mode %s, id %s, max_age %ld, expires %s, %s%s%s\n",
	    sts_mode_name(st->policy.mode), p->sts_id, st->policy.max_age, when,
	    p->sts_cached ? "from the cache" : "fetched now", st->failure ? "; last fetch: " : "",
	    st->failure ? st->failure : "");
	for (i = 0; i < st->policy.nmx; i++)
		printf("  mx: %s\n", st->policy.mx[i]);
}

static void
pcmd_print_host(struct pcmd *p, size_t i, enum tls_level level)
{
	const struct mx_host *h = &p->route.hosts[i];
	const struct dane_host *d = p->dane ? &p->dane->hosts[i] : NULL;
	struct route_host hp;
	size_t j;

	printf("MX %d %s: %zu address(es)%s%s\n", h->pref, h->name, h->naddr,
	    h->addr_secure ? ", DNSSEC-secure" : "", h->bogus ? ", BOGUS" : "");
	if (d != NULL && d->state != DANE_NONE)
		for (j = 0; j < d->n; j++)
			printf("  TLSA %s%s\n", d->recs[j].text, d->recs[j].usable ? "" : " (unusable)");
	if (h->bogus) {
		printf("  -> not used: dnssec-invalid\n");
		return;
	}
	route_host_policy(p->have_sts ? &p->sts_result : NULL, level, h, d, &hp);
	if (hp.level == TLS_LEVEL_INVALID) {
		printf("  -> not used: %s%s%s\n", hp.why, hp.detail ? ": " : "",
		    hp.detail ? hp.detail : "");
		return;
	}
	p->usable++;
	printf("  -> level %s%s%s\n", tls_level_name(hp.level),
	    d && d->state == DANE_USABLE ? " (DANE)" : hp.sts && !hp.sts_testing ?
	    " (MTA-STS enforce)" : hp.sts_testing ? " (MTA-STS testing: checked, not enforced)" : "",
	    d && d->halfdane && d->state == DANE_USABLE ? ", half-DANE (MX RRset insecure)" : "");
}

static void
pcmd_report(struct pcmd *p)
{
	const char *source;
	int want_dane;
	enum tls_level level;
	size_t i;

	level = route_static_level(p->cfg, p->wl, p->domain, &source, &want_dane);
	printf("domain: %s\n", p->domain);
	printf("static level: %s (%s)%s\n", tls_level_name(level), source,
	    whitelist_match(p->wl, p->domain) ? ", whitelisted" : "");
	pcmd_print_sts(p);
	if (!p->have_route)
		return;
	printf("MX RRset: %s\n", p->route.mx_secure ? "DNSSEC-secure" : "insecure");
	for (i = 0; i < p->route.nhosts; i++)
		pcmd_print_host(p, i, level);
}

static void
pcmd_done(struct pcmd *p)
{
	if (--p->pending == 0)
		event_base_loopexit(p->base, NULL);
}

static void
pcmd_dane_cb(void *arg, const struct mx_route *r, struct dane_result *res)
{
	struct pcmd *p = arg;

	(void)r;
	p->dane = res;
	pcmd_done(p);
}

static void
pcmd_mx_cb(void *arg, const struct mx_route *r)
{
	struct pcmd *p = arg;

	if (r->status != MX_OK) {
		printf("MX lookup: %s: %s\n", mx_status_name(r->status), r->detail);
		pcmd_done(p);
		return;
	}
	p->route = *r;
	p->have_route = 1;
	if (dane_needed(r) && dane_lookup(p->res, &p->route, p->cfg->port, pcmd_dane_cb, p))
		return;     /* pcmd_dane_cb finishes this lookup */
	pcmd_done(p);
}

static void
pcmd_sts_cb(void *arg, const struct mtasts_result *res)
{
	struct pcmd *p = arg;
	struct route_sts *st = &p->sts_result;

	st->status = res->status;
	st->has_policy = res->status == MTASTS_POLICY && res->policy != NULL;
	if (st->has_policy)
		st->policy = *res->policy;
	st->failure = res->failure;
	snprintf(st->detail, sizeof(st->detail), "%s", res->detail);
	snprintf(p->sts_id, sizeof(p->sts_id), "%s", res->id);
	p->sts_expires = res->expires;
	p->sts_cached = res->from_cache;
	p->have_sts = 1;
	pcmd_done(p);
}

static int
pcmd_setup(struct pcmd *p, char *err, size_t errlen)
{
	struct resolver_config rc = {
		.unbound_conf = p->cfg->unbound_conf,
		.trust_anchor_file = p->cfg->trust_anchor_file,
		.resolver = p->cfg->resolver,
	};
	struct mtasts_config mc = {
		.state_dir = p->cfg->state_dir,
		.ca_file = p->cfg->ca_file,
		.fetch_timeout = p->cfg->mta_sts_timeout,
		.txt_fail = MTASTS_TXT_FAIL_DEFER,
		.https_port = p->cfg->mta_sts_port,
	};

	if ((p->base = event_base_new()) == NULL)
		return -1;
	if ((p->res = resolver_new(p->base, &rc, err, errlen)) == NULL)
		return -1;
	if (p->cfg->whitelist_file != NULL && ((p->wl = whitelist_new()) == NULL ||
	    whitelist_load(p->wl, p->cfg->whitelist_file, err, errlen) < 0))
		return -1;
	if (p->cfg->mta_sts && (p->sts = mtasts_new(p->base, p->res, &mc, err, errlen)) == NULL)
		return -1;
	return 0;
}

static void
pcmd_free(struct pcmd *p)
{
	dane_result_free(&p->dane);
	mtasts_free(&p->sts);
	resolver_free(&p->res);
	whitelist_free(&p->wl);
	if (p->base != NULL)
		event_base_free(p->base);
	config_free(&p->cfg);
}

int
policy_main(int argc, char **argv)
{
	const char *path = "relay.ini";
	struct pcmd p;
	char err[512];
	int c, rc;

	memset(&p, 0, sizeof(p));
	optind = 1;
	while ((c = getopt(argc, argv, "c:")) != -1) {
		if (c != 'c') {
			fprintf(stderr, "usage: tlsrelay policy [-c relay.ini] DOMAIN\n");
			return 2;
		}
		path = optarg;
	}
	if (optind != argc - 1) {
		fprintf(stderr, "usage: tlsrelay policy [-c relay.ini] DOMAIN\n");
		return 2;
	}
	p.domain = argv[optind];
	if ((p.cfg = config_load(path)) == NULL)
		return 2;
	evlog_open("/dev/null", p.cfg->hostname);   /* lookups log events: not here */
	if (pcmd_setup(&p, err, sizeof(err)) < 0) {
		fprintf(stderr, "tlsrelay policy: %s\n", err[0] ? err : "out of memory");
		pcmd_free(&p);
		return 2;
	}
	p.pending = 1;
	if (mx_lookup(p.res, p.domain, pcmd_mx_cb, &p) == NULL)
		p.pending = 0;
	if (p.sts != NULL && mtasts_lookup(p.sts, p.domain, NULL, pcmd_sts_cb, &p) != NULL)
		p.pending++;
	if (p.pending > 0)
		event_base_dispatch(p.base);
	pcmd_report(&p);
	rc = p.usable > 0 && !(p.have_sts && p.sts_result.status == MTASTS_TEMPFAIL) ? 0 : 1;
	pcmd_free(&p);
	evlog_close();
	return rc;
}
