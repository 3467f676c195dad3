/*
 * policy/mtasts.h - MTA-STS (RFC 8461) policy discovery, HTTPS fetch on the
 * event loop, and the persistent policy cache.
 *
 * One struct mtasts per event base (per worker process).  A lookup for a
 * policy domain runs, all without blocking:
 *
 *   TXT _mta-sts.<domain> (policy/resolver, CNAME followed)  RFC 8461 §3.1
 *   -> cached policy with the same id and unexpired: use it   §3.3, §5.1
 *   -> else A/AAAA mta-sts.<domain> (policy/resolver, never the system
 *      resolver), HTTPS GET https://mta-sts.<domain>/.well-known/mta-sts.txt
 *      to the IP literal with SNI and Host = the name, PKIX against ca_file,
 *      TLS 1.2+, no redirects, 200 only, text/plain only, body <= 64 KiB,
 *      a total timeout                                        §3.3
 *   -> sts_policy_parse(); the cache (memory + state_dir/mta-sts/<domain>,
 *      written atomically) is updated                         §3.2, §3.3
 *
 * Contract:
 *  - mtasts_lookup() never calls the callback before it returns; the
 *    callback runs exactly once, later, from the event loop, unless the
 *    request was cancelled or the mtasts was freed.  After the callback
 *    returns the handle is dead (mtasts_cancel on it from inside its own
 *    callback is a no-op that NULLs the pointer).
 *  - struct mtasts_result and the policy it points to are valid only during
 *    the callback: copy what you keep.
 *  - Concurrent lookups for one domain share one TXT lookup and one fetch
 *    (a waiting list).  Cancelling every waiter does not abort the fetch: it
 *    finishes (bounded by fetch_timeout) and fills the cache.
 *  - mtasts_free() frees everything in flight (DNS queries, HTTPS
 *    connections, timers) without calling callbacks.  Call it before
 *    resolver_free() and event_base_free(), never from inside a callback.
 *  - Failed fetches are retried at most once per 5 minutes per domain and
 *    id (RFC 8461 §3.3; ANCHORS STS-13); a failed fetch or refresh never
 *    erases an unexpired cached policy (STS-11).
 *  - Policies that were used are refreshed proactively from a timer, with
 *    jitter, before they expire (RFC 8461 §10.2; ANCHORS STS-13).
 *  - Every lookup that ends writes one "policy_fetch" event (relay/evlog.h).
 *
 * Decisions:
 *  - TXT lookup failure (SERVFAIL, timeout, DNSSEC bogus) without a valid
 *    cached policy: txt_fail chooses.  The default (0, MTASTS_TXT_FAIL_DEFER)
 *    is MTASTS_TEMPFAIL: the caller answers 4xx and the sender's queue
 *    retries.  RFC 8461 gives no rule for it; deferring is what the relay
 *    does for bogus or failed DANE lookups (never downgrade on a failed
 *    lookup), and a 4xx is temporary.  MTASTS_TXT_FAIL_NOPOLICY delivers as
 *    without a policy (postfix-mta-sts-resolver's behaviour).  The result's
 *    txt_failed flag lets a caller apply a per-domain choice instead.
 *  - A Content-Type other than text/plain (parameters allowed) is a
 *    sts-policy-fetch-error, not sts-policy-invalid: the body is never
 *    parsed, so nothing was "validated" (RFC 8460 §4.3.2.2 defines
 *    sts-policy-invalid as a validation error of a retrieved policy).
 *  - 3xx and every other non-200 status are sts-policy-fetch-error; so are
 *    connection failures, timeouts, TLS failures other than certificate
 *    verification, and a body over 64 KiB (reading stops as soon as the
 *    limit is passed; nothing is parsed).  Certificate verification
 *    failures are sts-webpki-invalid.
 *  - A policy with mode "none" is returned as MTASTS_POLICY with
 *    policy->mode == STS_MODE_NONE (the caller applies no STS) and replaces
 *    the cached policy at once (STS-10).
 */
#ifndef TLSRELAY_POLICY_MTASTS_H
#define TLSRELAY_POLICY_MTASTS_H

#include <stddef.h>
#include <time.h>

#include "policy/sts.h"

struct event_base;
struct evbuffer;
struct resolver;
struct mtasts;
struct mtasts_req;

#define MTASTS_BODY_MAX        65536   /* policy body limit, RFC 8461 §3.3 */
#define MTASTS_FETCH_TIMEOUT   60      /* seconds, RFC 8461 §3.3 suggestion */
#define MTASTS_RETRY_INTERVAL  300     /* failed fetches: once per 5 min per id */
#define MTASTS_DOMAIN_MAX      244     /* "_mta-sts." + domain fits in 253 */
#define MTASTS_DETAIL_MAX      256

enum mtasts_txt_fail {
	MTASTS_TXT_FAIL_DEFER = 0,     /* default: MTASTS_TEMPFAIL */
	MTASTS_TXT_FAIL_NOPOLICY = 1   /* MTASTS_NONE */
};

struct mtasts_config {
	const char *state_dir;  /* cache in state_dir/mta-sts/; NULL: memory only */
	const char *ca_file;    /* PEM trust anchors; NULL: $SSL_CERT_FILE or
	                           OpenSSL's default CA file */
	int fetch_timeout;      /* seconds for resolve+connect+TLS+HTTP; 0: 60 */
	int txt_fail;           /* enum mtasts_txt_fail */
	int https_port;         /* 0: 443 (tests may use another port) */
	int refresh_min;        /* seconds, shortest refresh interval; 0: 300 */
};

enum mtasts_status {
	MTASTS_NONE,            /* no policy: deliver as without MTA-STS */
	MTASTS_POLICY,          /* policy set (mode may be none) */
	MTASTS_TEMPFAIL         /* TXT lookup failed, txt_fail = defer */
};

struct mtasts_result {
	int status;                       /* enum mtasts_status */
	const struct sts_policy *policy;  /* MTASTS_POLICY only, else NULL */
	char id[STS_ID_MAX + 1];          /* the policy's id, else the TXT id, or "" */
	time_t expires;                   /* policy expiry (fetched + max_age) */
	int from_cache;                   /* policy not fetched by this lookup */
	int txt_failed;                   /* TXT lookup failed, no cache used */
	/* NULL, or the RFC 8460 result type of the failed fetch (this one or
	 * the rate-limited previous one): sts-policy-fetch-error,
	 * sts-policy-invalid, sts-webpki-invalid.  Also set when a cached
	 * policy was used because the fetch failed. */
	const char *failure;
	char detail[MTASTS_DETAIL_MAX];   /* human-readable reason, or "" */
};

typedef void (*mtasts_cb)(void *arg, const struct mtasts_result *res);

/*
 * mtasts_new - load the on-disk cache (expired and corrupt files are
 * skipped and logged) and build the HTTPS client context.  NULL with err
 * filled when ca_file holds no usable (CA, unexpired) certificate, when
 * state_dir/mta-sts cannot be created, or on allocation failure.
 */
struct mtasts *mtasts_new(struct event_base *base, struct resolver *res,
    const struct mtasts_config *cfg, char *err, size_t errlen);

/* Frees everything, requests in flight included (no callbacks); NULLs *mp. */
void mtasts_free(struct mtasts **mp);

/*
 * mtasts_lookup - the policy for a recipient domain (exact domain, A-label
 * form, one trailing dot ignored; RFC 8461 has no parent-domain lookup).
 * session names the session in events (may be NULL).  Returns NULL when the
 * domain is not a DNS name that can have a policy (IP literal, empty, too
 * long, non-ASCII) or on allocation failure: treat that as MTASTS_NONE.
 */
struct mtasts_req *mtasts_lookup(struct mtasts *m, const char *domain,
    const char *session, mtasts_cb cb, void *arg);

/* The callback will never run; NULLs *rp.  Safe on NULL. */
void mtasts_cancel(struct mtasts_req **rp);

const char *mtasts_status_name(int status);

/*
 * The cache file format (state_dir/mta-sts/<domain>), exposed for the
 * fuzzer and tests.  Header lines end in LF, in this order, numbers in
 * decimal without leading zeros, then the raw policy body of exactly
 * "length" bytes (one spelling per content: format(parse(x)) == x):
 *
 *   tlsrelay-mta-sts-cache: 1
 *   domain: <lowercase domain>
 *   id: <1*32 ALPHA / DIGIT>
 *   fetched: <unix seconds>
 *   expires: <unix seconds>
 *   length: <body bytes, <= MTASTS_BODY_MAX>
 *   <empty line>
 *   <body>
 */
struct mtasts_cache_rec {
	char domain[MTASTS_DOMAIN_MAX + 1];
	char id[STS_ID_MAX + 1];
	long long fetched, expires;
	const char *body;       /* points into the parsed buffer */
	size_t body_len;
};

/* 0 with rec filled, or -1 with *why set to a static description. */
int mtasts_cache_parse(const char *buf, size_t len, struct mtasts_cache_rec *rec,
    const char **why);

/* Appends rec in the format above; 0, or -1 on a field out of range. */
int mtasts_cache_format(const struct mtasts_cache_rec *rec, struct evbuffer *out);

/*
 * mtasts_domain_norm - lowercase, one trailing dot removed, checked to be
 * an ASCII host name of LDH labels (1..63 each, no leading or trailing
 * hyphen, total <= MTASTS_DOMAIN_MAX) whose last label is not all digits (no
 * IP literal).  Returns 0 with out filled, or -1.
 */
int mtasts_domain_norm(const char *in, char out[MTASTS_DOMAIN_MAX + 1]);

#endif /* TLSRELAY_POLICY_MTASTS_H */
