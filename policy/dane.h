/*
 * dane.h - TLSA lookups for the MX hosts of a route (RFC 7672 §2.2, RFC 7671).
 *
 * For every MX host whose address RRset is DNSSEC-secure (RFC 7672 §2.2.1;
 * either family suffices, ANCHORS DANE-02), look up TLSA at
 * _PORT._tcp.<host> - first at the CNAME-expanded name when the host is a
 * secure alias, then at the original name (§2.2.2) - and classify:
 *
 *   DANE_USABLE    secure RRset with at least one usable record: the host
 *                  must be authenticated by DANE (OpenSSL does the matching)
 *   DANE_UNUSABLE  secure RRset, no usable record: mandatory TLS without
 *                  authentication (§2.2, DANE-06); reported as tlsa-invalid
 *   DANE_NONE      no TLSA, an insecure answer, or the host not eligible
 *   DANE_FAIL      bogus or failed lookup: the host is unusable (DANE-03),
 *                  never downgraded; reported as dnssec-invalid
 *
 * Calls back exactly once, never before dane_lookup() returns, unless
 * cancelled.  The result belongs to the caller (dane_result_free).
 */
#ifndef POLICY_DANE_H
#define POLICY_DANE_H

#include <stddef.h>
#include <stdint.h>

#include "policy/mx.h"

#define DANE_MAX_RECS 8

enum dane_state { DANE_NONE, DANE_USABLE, DANE_UNUSABLE, DANE_FAIL };

struct dane_rec {
	uint8_t usage, selector, mtype;
	unsigned char *data;
	size_t len;
	char *text;                 /* presentation form, for events */
	int usable;
};

struct dane_host {
	enum dane_state state;
	int halfdane;               /* MX RRset insecure, host signed (Postfix 3.11 term) */
	char base[DNS_NAME_MAX];    /* TLSA base domain where the RRset was found */
	size_t n;
	struct dane_rec recs[DANE_MAX_RECS];
	char detail[300];
};

struct dane_result {
	size_t nhosts;              /* = route->nhosts, same order */
	struct dane_host hosts[MX_MAX_HOSTS];
};

struct dane_lookup;

/* dane_needed - 1 when some host of route is eligible for a TLSA lookup. */
int dane_needed(const struct mx_route *route);
/* dane_lookup - NULL when nothing could be asked (see dane_needed()). */
typedef void (*dane_cb)(void *arg, const struct mx_route *route, struct dane_result *res);

struct dane_lookup *dane_lookup(struct resolver *r, const struct mx_route *route, int port,
    dane_cb cb, void *arg);
void dane_cancel(struct dane_lookup **lp);
void dane_result_free(struct dane_result **resp);
const char *dane_state_name(enum dane_state st);

#endif
