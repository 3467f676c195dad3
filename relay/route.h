/*
 * route.h - where a transaction goes and under which TLS policy.
 *
 * Gateway: the configured next hop.  Smarthost: the recipient domain's MX
 * hosts (policy/mx.c), its MTA-STS policy (policy/mtasts.c, looked up at the
 * same time) and the TLSA records of its MX hosts (policy/dane.c), merged
 * with the static level ([outbound] default_level, [domain:], whitelist)
 * into an ordered list of targets, each with the level and reference names
 * its connection must satisfy (DESIGN.md "Policy semantics"):
 *
 *   1. usable DNSSEC-secure TLSA for the host -> DANE decides (RFC 8461 §2)
 *   2. else MTA-STS enforce -> only MX hosts matching the policy, PKIX and
 *      the MX host name; testing -> the same checks, failures only logged
 *   3. else the static level.
 *
 * route_start() is asynchronous; it ends by connecting the first target
 * (inline_connect_target) or by answering the RCPT in flight (inline_answer).
 */
#ifndef RELAY_ROUTE_H
#define RELAY_ROUTE_H

#include <sys/time.h>

#include "policy/dane.h"
#include "policy/level.h"
#include "policy/mtasts.h"
#include "policy/mx.h"

struct relay_config;
struct session;
struct upstream;
struct upstream_target;
struct whitelist;

/* What the MTA-STS lookup said, kept for the route's lifetime. */
struct route_sts {
	int status;                     /* enum mtasts_status */
	int has_policy;                 /* policy is valid (mode may be none) */
	struct sts_policy policy;
	const char *failure;            /* RFC 8460 type of a failed fetch, or NULL */
	char detail[MTASTS_DETAIL_MAX];
};

/* The policy one MX host gets (the order of precedence above). */
struct route_host {
	enum tls_level level;           /* TLS_LEVEL_INVALID: do not use the host */
	const char *why;                /* RFC 8460 type when refused */
	const char *detail;
	const struct sts_policy *sts;   /* MTA-STS policy applied (enforce or testing) */
	int sts_testing;
	const char *sts_failure;        /* testing: what enforce would have refused */
};

/*
 * route_static_level - the level before DANE and MTA-STS (default,
 * [domain:], whitelist; [outbound] dane = yes raises a weaker default to
 * dane); *source names the winner, *want_dane whether TLSA is looked up.
 */
enum tls_level route_static_level(const struct relay_config *cfg, const struct whitelist *wl,
    const char *domain, const char **source, int *want_dane);

/* route_host_policy - the level one MX host gets, given its TLSA and the STS policy. */
void route_host_policy(const struct route_sts *sts, enum tls_level level,
    const struct mx_host *h, const struct dane_host *d, struct route_host *hp);

void route_start(struct session *s);
/* route_cancel - drop every lookup in flight and the route's state. */
void route_cancel(struct session *s);
/* route_free - at session end: everything route_start() allocated. */
void route_free(struct session *s);

/*
 * route_delivery_event - the DESIGN.md delivery event, one per attempt: t
 * the target tried, up its connection (NULL when none was made),
 * result_type NULL for success, else the RFC 8460 type, or "" for a failure
 * that is not a TLS failure (connection refused, timeout).
 */
void route_delivery_event(struct session *s, const struct upstream_target *t,
    struct upstream *up, const char *outcome, const char *result_type, int code,
    const char *reply);

long long route_ms_since(const struct timeval *t);

#endif
