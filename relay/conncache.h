/*
 * conncache.h - idle next-hop connections kept for the next transaction to
 * the same destination under the same policy (Postfix's connection cache,
 * smtp_connection_cache_*): no new TCP and TLS handshake per session.
 *
 * A connection is cached only between transactions (READY, no open
 * transaction), keyed by a digest of its target and policy (address, names,
 * level, TLSA records, MTA-STS mode), so a reused connection never crosses
 * policies.  It is closed after CONNCACHE_IDLE seconds unused or
 * CONNCACHE_USES transactions, and whenever the peer closes it.
 */
#ifndef RELAY_CONNCACHE_H
#define RELAY_CONNCACHE_H

struct event_base;
struct upstream;
struct upstream_target;

#define CONNCACHE_SLOTS 64
#define CONNCACHE_IDLE  5       /* seconds */
#define CONNCACHE_USES  100     /* transactions per connection */

/* conncache_put - keep *upp for reuse (or close it); *upp becomes NULL. */
void conncache_put(struct upstream **upp, struct event_base *base);
/* conncache_get - a cached connection for exactly this target and policy, or NULL. */
struct upstream *conncache_get(const struct upstream_target *t);
/* conncache_flush - close everything (shutdown). */
void conncache_flush(void);

#endif
