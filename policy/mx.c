/*
 * mx.c - MX routing over the asynchronous resolver.  See mx.h.
 *
 * One MX query, then A and AAAA for every host at once.  A bogus answer
 * anywhere is never read as "no record" (RFC 7672 §2.1): a bogus MX RRset
 * fails the lookup (dnssec-invalid), a bogus address RRset makes that host
 * unusable.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>

#include "policy/mx.h"
#include "relay/log.h"

struct mx_query {
	struct mx_lookup *l;
	struct dns_query *q;
	size_t host;
	int type;
};

struct mx_lookup {
	struct resolver *r;
	void (*cb)(void *arg, const struct mx_route *route);
	void *arg;
	char domain[DNS_NAME_MAX];
	struct dns_query *mxq;
	struct mx_query aq[MX_MAX_HOSTS * 2];
	size_t pending;
	struct mx_route route;
};

static const char *const mx_status_names[] = {
	"ok", "null-mx", "nxdomain", "tempfail", "bogus", "no-address"
};

const char *
mx_status_name(enum mx_status st)
{
	return mx_status_names[st];
}

static void
mx_done(struct mx_lookup *l)
{
	l->cb(l->arg, &l->route);
	free(l);
}

static void PRINTF_LIKE(3, 4)
mx_fail(struct mx_lookup *l, enum mx_status st, const char *fmt, ...)
{
	va_list ap;

	l->route.status = st;
	va_start(ap, fmt);
	vsnprintf(l->route.detail, sizeof(l->route.detail), fmt, ap);
	va_end(ap);
	mx_done(l);
}

/* IPv4 before IPv6 within a host, whichever answered first. */
static void
mx_sort_addrs(struct mx_host *h)
{
	struct dns_addr tmp;
	size_t i, j;

	for (i = 1; i < h->naddr; i++)
		for (j = i; j > 0 && h->addrs[j].ss.ss_family == AF_INET &&
		    h->addrs[j - 1].ss.ss_family != AF_INET; j--) {
			tmp = h->addrs[j];
			h->addrs[j] = h->addrs[j - 1];
			h->addrs[j - 1] = tmp;
		}
}

/* The last address query of a host answered: hand over the route. */
static void
mx_addr_done(struct mx_lookup *l)
{
	struct mx_host *h;
	size_t i, bogus = 0, usable = 0;

	if (--l->pending > 0)
		return;
	for (i = 0; i < l->route.nhosts; i++) {
		h = &l->route.hosts[i];
		mx_sort_addrs(h);
		h->bogus = h->bogus_family && h->naddr == 0;
		bogus += (size_t)h->bogus;
		usable += h->naddr > 0;
	}
	if (usable > 0) {
		l->route.status = MX_OK;
		mx_done(l);
	} else if (bogus > 0)
		mx_fail(l, MX_BOGUS, "address records of the mail servers of %s are bogus",
		    l->domain);
	else
		mx_fail(l, MX_NOADDR, "no usable address for the mail servers of %s", l->domain);
}

static void
mx_addr_cb(void *arg, const struct dns_answer *a)
{
	struct mx_query *mq = arg;
	struct mx_lookup *l = mq->l;
	struct mx_host *h = &l->route.hosts[mq->host];
	size_t i, kept = 0;

	mq->q = NULL;
	/* DANE-02: a bogus answer for one family must not block the other. */
	if (a->sec == DNS_BOGUS)
		h->bogus_family = 1;
	if (a->status == DNS_OK && a->sec == DNS_SECURE) {
		h->addr_secure = 1;
		/* RFC 7672 §2.2.2: a secure CNAME chain gives a second TLSA base name. */
		if (a->canon[0] != '\0' && strcmp(a->canon, h->name) != 0)
			snprintf(h->canon, sizeof(h->canon), "%s", a->canon);
	}
	for (i = 0; i < a->n && kept < MX_MAX_ADDRS; i++) {
		if (a->rr[i].type != mq->type)
			continue;
		h->addrs[h->naddr++] = a->rr[i].u.addr;
		kept++;
	}
	mx_addr_done(l);
}

/* Start A and AAAA queries for every host; the number started. */
static size_t
mx_start_addrs(struct mx_lookup *l)
{
	static const int types[2] = { DNS_T_A, DNS_T_AAAA };
	size_t i, t, n = 0;
	struct mx_query *mq;

	for (i = 0; i < l->route.nhosts; i++)
		for (t = 0; t < 2; t++) {
			mq = &l->aq[i * 2 + t];
			mq->l = l;
			mq->host = i;
			mq->type = types[t];
			mq->q = resolver_query(l->r, l->route.hosts[i].name, types[t], mx_addr_cb, mq);
			n += mq->q != NULL;
		}
	return n;
}

static void
mx_query_addrs(struct mx_lookup *l)
{
	l->pending = 1;         /* held until every query is started */
	l->pending += mx_start_addrs(l);
	mx_addr_done(l);
}

/* RFC 5321 §5.1: lowest preference first, random order among equals. */
static int
mx_cmp(const void *a, const void *b)
{
	const struct mx_host *x = a, *y = b;

	return x->pref - y->pref;
}

static void
mx_shuffle_equal(struct mx_route *r)
{
	size_t i, j, start = 0;
	unsigned char rnd;
	struct mx_host tmp;

	for (i = 1; i <= r->nhosts; i++) {
		if (i < r->nhosts && r->hosts[i].pref == r->hosts[start].pref)
			continue;
		for (j = i - 1; j > start; j--) {   /* Fisher-Yates on [start, i) */
			if (RAND_bytes(&rnd, 1) != 1)
				rnd = 0;
			size_t k = start + rnd % (j - start + 1);
			tmp = r->hosts[j];
			r->hosts[j] = r->hosts[k];
			r->hosts[k] = tmp;
		}
		start = i;
	}
}

static void
mx_add_host(struct mx_route *r, const char *name, int pref, int implicit)
{
	struct mx_host *h;

	if (r->nhosts == MX_MAX_HOSTS)
		return;
	h = &r->hosts[r->nhosts++];
	memset(h, 0, sizeof(*h));
	snprintf(h->name, sizeof(h->name), "%s", name);
	h->pref = pref;
	h->implicit = implicit;
}

/* RFC 7505 §3: a null MX is the only MX record; any real one wins. */
static int
mx_collect(struct mx_lookup *l, const struct dns_answer *a)
{
	size_t i, nulls = 0;

	for (i = 0; i < a->n; i++) {
		if (a->rr[i].type != DNS_T_MX)
			continue;
		if (a->rr[i].u.mx.host[0] == '\0')
			nulls++;
		else
			mx_add_host(&l->route, a->rr[i].u.mx.host, a->rr[i].u.mx.pref, 0);
	}
	if (l->route.nhosts == 0 && nulls > 0)
		return -1;
	qsort(l->route.hosts, l->route.nhosts, sizeof(l->route.hosts[0]), mx_cmp);
	mx_shuffle_equal(&l->route);
	return 0;
}

static void
mx_cb(void *arg, const struct dns_answer *a)
{
	struct mx_lookup *l = arg;

	l->mxq = NULL;
	l->route.mx_secure = a->sec == DNS_SECURE;
	if (a->sec == DNS_BOGUS)
		mx_fail(l, MX_BOGUS, "MX lookup for %s: %s", l->domain, a->why_bogus);
	else if (a->status == DNS_FAIL)
		mx_fail(l, MX_TEMPFAIL, "MX lookup for %s failed: %s", l->domain,
		    a->why_bogus[0] ? a->why_bogus : "server failure");
	else if (a->status == DNS_NXDOMAIN)
		mx_fail(l, MX_NXDOMAIN, "domain %s does not exist", l->domain);
	else if (a->status == DNS_NODATA) {
		/* RFC 5321 §5.1: no MX, the domain itself is the implicit MX. */
		mx_add_host(&l->route, l->domain, 0, 1);
		mx_query_addrs(l);
	} else if (mx_collect(l, a) < 0)
		mx_fail(l, MX_NULL, "domain %s accepts no mail (null MX)", l->domain);
	else
		mx_query_addrs(l);
}

static struct mx_lookup *
mx_new(struct resolver *r, const char *name,
    void (*cb)(void *arg, const struct mx_route *route), void *arg)
{
	struct mx_lookup *l = calloc(1, sizeof(*l));

	if (l == NULL)
		return NULL;
	l->r = r;
	l->cb = cb;
	l->arg = arg;
	snprintf(l->domain, sizeof(l->domain), "%s", name);
	return l;
}

struct mx_lookup *
mx_lookup(struct resolver *r, const char *domain,
    void (*cb)(void *arg, const struct mx_route *route), void *arg)
{
	struct mx_lookup *l = mx_new(r, domain, cb, arg);

	if (l == NULL)
		return NULL;
	l->mxq = resolver_query(r, domain, DNS_T_MX, mx_cb, l);
	if (l->mxq == NULL) {
		free(l);
		return NULL;
	}
	return l;
}

/* A configured host (a next hop given by name): its addresses, no MX lookup. */
struct mx_lookup *
mx_lookup_host(struct resolver *r, const char *host,
    void (*cb)(void *arg, const struct mx_route *route), void *arg)
{
	struct mx_lookup *l = mx_new(r, host, cb, arg);

	if (l == NULL)
		return NULL;
	mx_add_host(&l->route, host, 0, 1);
	l->pending = mx_start_addrs(l);
	if (l->pending == 0) {
		free(l);
		return NULL;
	}
	return l;
}

void
mx_cancel(struct mx_lookup **lp)
{
	struct mx_lookup *l = *lp;
	size_t i;

	if (l == NULL)
		return;
	*lp = NULL;
	resolver_cancel(&l->mxq);
	for (i = 0; i < MX_MAX_HOSTS * 2; i++)
		resolver_cancel(&l->aq[i].q);
	free(l);
}
