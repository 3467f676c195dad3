/*
 * mx.h - where mail for a domain goes (RFC 5321 §5.1, RFC 7505, RFC 7672
 * §2.2.1): the MX RRset in preference order, random among equals, the
 * implicit MX when there is none, the null MX, and the addresses of each
 * host - with the DNSSEC status of every RRset, which DANE needs.
 *
 * mx_lookup() runs the queries on the resolver and calls back exactly once
 * (never before it returns) unless cancelled; after the callback the handle
 * is dead.  The route passed to the callback is valid during the callback.
 */
#ifndef POLICY_MX_H
#define POLICY_MX_H

#include <stddef.h>

#include "policy/resolver.h"

#define MX_MAX_HOSTS 8
#define MX_MAX_ADDRS 4      /* per host and family */

enum mx_status {
	MX_OK,          /* at least one host has an address */
	MX_NULL,        /* RFC 7505 null MX: the domain accepts no mail */
	MX_NXDOMAIN,    /* the domain does not exist */
	MX_TEMPFAIL,    /* lookup failed (SERVFAIL, timeout): try later */
	MX_BOGUS,       /* DNSSEC validation failed: dnssec-invalid, never routed */
	MX_NOADDR       /* MX hosts found, none has a usable address */
};

struct mx_host {
	char name[DNS_NAME_MAX];
	char canon[DNS_NAME_MAX];   /* CNAME-expanded name of a secure chain, or "" */
	int pref;
	int implicit;               /* the domain itself (no MX RRset) */
	int addr_secure;            /* A or AAAA RRset DNSSEC-secure (RFC 7672 §2.2.1) */
	int bogus_family;           /* the A or AAAA answer was bogus (that family unused) */
	int bogus;                  /* bogus and no address left: host unusable */
	size_t naddr;
	struct dns_addr addrs[MX_MAX_ADDRS * 2];
};

struct mx_route {
	enum mx_status status;
	int mx_secure;              /* MX RRset (or its NODATA proof) DNSSEC-secure */
	size_t nhosts;
	struct mx_host hosts[MX_MAX_HOSTS];
	char detail[300];           /* why, for failures */
};

struct mx_lookup;

struct mx_lookup *mx_lookup(struct resolver *r, const char *domain,
    void (*cb)(void *arg, const struct mx_route *route), void *arg);
/* mx_lookup_host - only the addresses of host (a next hop given by name). */
struct mx_lookup *mx_lookup_host(struct resolver *r, const char *host,
    void (*cb)(void *arg, const struct mx_route *route), void *arg);
void mx_cancel(struct mx_lookup **lp);
const char *mx_status_name(enum mx_status st);

#endif
