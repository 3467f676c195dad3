/*
 * metrics.h - Prometheus counters for the relay, served over HTTP
 * ([relay] metrics_listen).
 *
 * The counters are computed from the event log itself: evlog_end() hands
 * every line's evlog_fields to metrics_count() (relay/evlog.h observer), so
 * the numbers agree with the log by construction and no other module knows
 * about metrics.  What each counter counts:
 *
 *   tlsrelay_sessions_total                 "connect" events
 *   tlsrelay_sessions_active (gauge)        "connect" minus "disconnect"
 *   tlsrelay_messages_total{outcome}        "data" events (one per transaction
 *                                           that reached DATA) by the reply to
 *                                           the client: 2xx delivered, 4xx
 *                                           deferred, 5xx rejected
 *   tlsrelay_deliveries_total{result}       "delivery" events (one per attempt,
 *                                           per MX) by result: success|failure
 *   tlsrelay_tls_failures_total{result_type} "delivery" events with an RFC 8460
 *                                           result_type; anything else "other"
 *   tlsrelay_policy_cache_total{result}     MTA-STS "policy_fetch" events that
 *                                           were lookups (not refreshes): cache
 *                                           "hit" (outcome cache / cache hit),
 *                                           "miss" (a fetch was made)
 *   tlsrelay_events_dropped_total{output}   lines lost per output: file, syslog
 *
 * DNS latency is not exported: no event carries it, and policy/resolver.c
 * would need a hook of its own.
 *
 * Label values come from fixed tables only, never from peer text.
 */
#ifndef RELAY_METRICS_H
#define RELAY_METRICS_H

#include <stddef.h>

#include "relay/evlog.h"

struct event_base;
struct evbuffer;
struct relay_config;
struct metrics;

enum { METRICS_OUT_DELIVERED, METRICS_OUT_DEFERRED, METRICS_OUT_REJECTED, METRICS_NOUT };
enum { METRICS_RES_SUCCESS, METRICS_RES_FAILURE, METRICS_NRES };
enum { METRICS_CACHE_HIT, METRICS_CACHE_MISS, METRICS_NCACHE };
#define METRICS_NTYPES 12       /* the eleven RFC 8460 result types + "other" */

struct metrics_counters {
	unsigned long long sessions, sessions_ended;
	unsigned long long messages[METRICS_NOUT];
	unsigned long long deliveries[METRICS_NRES];
	unsigned long long tls_failures[METRICS_NTYPES];
	unsigned long long cache[METRICS_NCACHE];
};

/* metrics_count - add one event line to c (an evlog_observer with arg = c). */
void metrics_count(const struct evlog_fields *f, void *c);

/* metrics_render - c in the Prometheus text format 0.0.4, appended to out. */
void metrics_render(const struct metrics_counters *c, struct evbuffer *out);

/*
 * metrics_new - listen on cfg->metrics_listen (must be set) and serve
 * GET/HEAD /metrics; other paths get 404, other methods on it 405.  Registers
 * the evlog observer.  Call before dropping privileges.  NULL with err set
 * when the address cannot be parsed or bound.
 */
struct metrics *metrics_new(struct event_base *base, const struct relay_config *cfg,
    char *err, size_t errlen);
/* metrics_free - stop serving, unregister the observer; NULLs *mp. */
void metrics_free(struct metrics **mp);

#endif
