/*
 * dane.c - TLSA lookups and classification for a route.  See dane.h.
 *
 * Nothing here matches certificates: the usable records go to OpenSSL
 * (SSL_dane_tlsa_add) on the connection (relay/upstream.c).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy/dane.h"
#include "policy/tlsa.h"

struct dane_query {
	struct dane_lookup *l;
	struct dns_query *q;
	size_t host;
	int second;                 /* now asking at the original (non-CNAME) name */
};

struct dane_lookup {
	struct resolver *r;
	int port;
	dane_cb cb;
	void *arg;
	struct mx_route route;
	struct dane_query dq[MX_MAX_HOSTS];
	size_t pending;
	struct dane_result *res;
};

static const char *const dane_state_names[] = { "none", "usable", "unusable", "fail" };

const char *
dane_state_name(enum dane_state st)
{
	return dane_state_names[st];
}

void
dane_result_free(struct dane_result **resp)
{
	struct dane_result *res = *resp;
	size_t i, j;

	if (res == NULL)
		return;
	for (i = 0; i < res->nhosts; i++)
		for (j = 0; j < res->hosts[i].n; j++) {
			free(res->hosts[i].recs[j].data);
			free(res->hosts[i].recs[j].text);
		}
	free(res);
	*resp = NULL;
}

static void
dane_done(struct dane_lookup *l)
{
	if (--l->pending > 0)
		return;
	l->cb(l->arg, &l->route, l->res);
	free(l);
}

static void dane_tlsa_cb(void *arg, const struct dns_answer *a);

static int
dane_ask(struct dane_lookup *l, struct dane_query *dq, const char *base)
{
	char name[DNS_NAME_MAX + 16];

	snprintf(l->res->hosts[dq->host].base, DNS_NAME_MAX, "%s", base);
	snprintf(name, sizeof(name), "_%d._tcp.%s", l->port, base);
	dq->q = resolver_query(l->r, name, DNS_T_TLSA, dane_tlsa_cb, dq);
	return dq->q ? 0 : -1;
}

/* Keep one record (a copy: the answer dies with the callback). */
static void
dane_keep(struct dane_host *h, const struct dns_tlsa *t)
{
	struct dane_rec *rec;

	if (h->n == DANE_MAX_RECS)
		return;
	rec = &h->recs[h->n];
	rec->data = malloc(t->len ? t->len : 1);
	rec->text = strdup(t->text);
	if (rec->data == NULL || rec->text == NULL) {
		free(rec->data);
		free(rec->text);
		rec->data = NULL;
		rec->text = NULL;
		return;
	}
	memcpy(rec->data, t->data, t->len);
	rec->len = t->len;
	rec->usage = t->usage;
	rec->selector = t->selector;
	rec->mtype = t->mtype;
	rec->usable = tlsa_classify(t->usage, t->selector, t->mtype, t->data, t->len) ==
	    TLSA_USABLE;
	h->n++;
}

static void
dane_secure_rrset(struct dane_host *h, const struct dns_answer *a)
{
	size_t i, usable = 0;

	for (i = 0; i < a->n; i++)
		if (a->rr[i].type == DNS_T_TLSA)
			dane_keep(h, &a->rr[i].u.tlsa);
	for (i = 0; i < h->n; i++)
		usable += (size_t)h->recs[i].usable;
	h->state = usable > 0 ? DANE_USABLE : DANE_UNUSABLE;
	if (usable == 0)
		snprintf(h->detail, sizeof(h->detail), "no usable TLSA record at %s", a->qname);
}

/*
 * RFC 7672 §2.2 / ANCHORS DANE-03: secure RRset -> DANE; secure or insecure
 * denial, or an insecure RRset -> no DANE; bogus, SERVFAIL, timeout -> the
 * host is unusable.  After a denial at the CNAME-expanded name, the
 * original name is asked (§2.2.2).
 */
static void
dane_tlsa_cb(void *arg, const struct dns_answer *a)
{
	struct dane_query *dq = arg;
	struct dane_lookup *l = dq->l;
	struct dane_host *h = &l->res->hosts[dq->host];
	const struct mx_host *mh = &l->route.hosts[dq->host];

	dq->q = NULL;
	if (a->sec == DNS_BOGUS || a->status == DNS_FAIL) {
		h->state = DANE_FAIL;
		snprintf(h->detail, sizeof(h->detail), "TLSA lookup at %s failed: %s", a->qname,
		    a->why_bogus[0] ? a->why_bogus : "server failure");
	} else if (a->status == DNS_OK && a->sec == DNS_SECURE) {
		dane_secure_rrset(h, a);
	} else if (!dq->second && mh->canon[0] != '\0' && a->status != DNS_OK) {
		dq->second = 1;
		if (dane_ask(l, dq, mh->name) == 0)
			return;
		h->state = DANE_FAIL;
		snprintf(h->detail, sizeof(h->detail), "cannot query TLSA for %s", mh->name);
	} else {
		h->state = DANE_NONE;
	}
	dane_done(l);
}

int
dane_needed(const struct mx_route *route)
{
	size_t i;

	for (i = 0; i < route->nhosts; i++)
		if (route->hosts[i].addr_secure && route->hosts[i].naddr > 0)
			return 1;
	return 0;
}

struct dane_lookup *
dane_lookup(struct resolver *r, const struct mx_route *route, int port, dane_cb cb,
    void *arg)
{
	struct dane_lookup *l = calloc(1, sizeof(*l));
	const struct mx_host *mh;
	size_t i;

	if (l == NULL || (l->res = calloc(1, sizeof(*l->res))) == NULL) {
		free(l);
		return NULL;
	}
	l->r = r;
	l->port = port;
	l->cb = cb;
	l->arg = arg;
	l->route = *route;
	l->res->nhosts = route->nhosts;
	l->pending = 1;         /* held until every query is started */
	for (i = 0; i < route->nhosts; i++) {
		mh = &route->hosts[i];
		l->res->hosts[i].halfdane = !route->mx_secure;
		l->dq[i].l = l;
		l->dq[i].host = i;
		/* RFC 7672 §2.2.1: only hosts with secure addresses get TLSA lookups. */
		if (!mh->addr_secure || mh->naddr == 0)
			continue;
		if (dane_ask(l, &l->dq[i], mh->canon[0] ? mh->canon : mh->name) == 0)
			l->pending++;
		else
			l->res->hosts[i].state = DANE_FAIL;
	}
	if (l->pending == 1) {
		/* Nothing asked (see dane_needed()): no callback, no lookup. */
		dane_result_free(&l->res);
		free(l);
		return NULL;
	}
	l->pending--;
	return l;
}

void
dane_cancel(struct dane_lookup **lp)
{
	struct dane_lookup *l = *lp;
	size_t i;

	if (l == NULL)
		return;
	*lp = NULL;
	for (i = 0; i < MX_MAX_HOSTS; i++)
		resolver_cancel(&l->dq[i].q);
	dane_result_free(&l->res);
	free(l);
}
