/*
 * policy/resolver.h - DNSSEC-validating asynchronous DNS on the relay's
 * libevent loop (libunbound's event API, answers parsed with libldns).
 *
 * Contract:
 *  - resolver_query() never calls the callback before it returns; the
 *    callback runs exactly once, later, from the event loop, unless the
 *    query was cancelled with resolver_cancel() or the resolver was freed.
 *  - After the callback returns the query handle is dead: the caller must
 *    forget it (cancelling it from inside its own callback is a no-op).
 *  - Every query ends within the configured deadline (timeout_ms), with
 *    status DNS_FAIL if the resolver had no answer by then.
 *  - A bogus answer (RFC 4035 section 5.5) always has sec DNS_BOGUS, status
 *    DNS_FAIL and no records: it is never "no record" (RFC 7672 section 2.1).
 *  - struct dns_answer and everything it points to belong to the resolver
 *    and are valid only during the callback.
 *  - resolver_free() must not be called from inside a dns_cb.
 *  - One resolver per event_base (per worker process, created after fork).
 *  - No function here blocks or logs; errors go to the caller's err buffer.
 */
#ifndef TLSRELAY_POLICY_RESOLVER_H
#define TLSRELAY_POLICY_RESOLVER_H

#include <stddef.h>
#include <stdint.h>
#include <netinet/in.h>
#include <sys/socket.h>

struct event_base;
struct resolver;
struct dns_query;

/* RR types understood by the typed record parser (IANA numbers). */
#define DNS_T_A      1
#define DNS_T_CNAME  5
#define DNS_T_MX    15
#define DNS_T_TXT   16
#define DNS_T_AAAA  28
#define DNS_T_TLSA  52

#define DNS_MAX_RECORDS 64            /* records kept per answer; extras dropped */
#define DNS_NAME_MAX    256           /* presentation name incl. NUL */
#define DNS_MAX_CNAMES  16            /* CNAME links followed in one answer */
#define RESOLVER_DEFAULT_TIMEOUT_MS 10000

/* Filled from relay.ini [dns] by the config module. */
struct resolver_config {
	const char *unbound_conf;      /* unbound.conf for the context, or NULL */
	const char *trust_anchor_file; /* NULL: /usr/share/dns/root.key if no unbound_conf */
	const char *resolver;          /* "addr[@port], ..." forwarders, or NULL */
	int timeout_ms;                /* per-query deadline; 0 = default */
};

/* RFC 4035 section 4.3 states; "indeterminate" is reported as insecure. */
enum dns_sec { DNS_INSECURE, DNS_SECURE, DNS_BOGUS };

enum dns_status {
	DNS_OK,        /* records of the asked type present (n > 0) */
	DNS_NODATA,    /* name exists, no records of that type */
	DNS_NXDOMAIN,  /* name (or CNAME target) does not exist */
	DNS_FAIL       /* SERVFAIL, timeout, bogus, malformed, other rcode */
};

struct dns_mx {
	int pref;
	char host[DNS_NAME_MAX];   /* lowercase, no trailing dot; "" = null MX (RFC 7505) */
};

struct dns_addr {
	struct sockaddr_storage ss; /* AF_INET or AF_INET6, port 0 */
	socklen_t sslen;
	char text[INET6_ADDRSTRLEN];
};

struct dns_tlsa {
	uint8_t usage, selector, mtype;
	const unsigned char *data;
	size_t len;
	const char *text;          /* "3 1 1 abcd..." (lowercase hex) */
};

struct dns_txt {
	const char *text;          /* one RR's strings concatenated, NUL-terminated */
	size_t len;                /* may contain NULs: use len */
};

struct dns_rr {
	int type;                  /* DNS_T_* */
	uint32_t ttl;
	union {
		struct dns_mx mx;
		struct dns_addr addr;  /* A and AAAA */
		struct dns_tlsa tlsa;
		struct dns_txt txt;
		char cname[DNS_NAME_MAX];
	} u;
};

struct dns_answer {
	const char *qname;         /* as asked */
	int qtype;
	enum dns_sec sec;
	int rcode;                 /* DNS rcode; SERVFAIL for bogus and timeouts */
	int status;                /* enum dns_status */
	int ttl;                   /* min TTL of the chain; negative: RFC 2308 section 5 */
	char why_bogus[256];       /* reason for DNS_FAIL/DNS_BOGUS, else "" */
	char canon[DNS_NAME_MAX];  /* owner after the CNAME chain, lowercase, no dot */
	size_t n;                  /* entries in rr[] */
	int truncated;             /* more than DNS_MAX_RECORDS were present */
	const struct dns_rr *rr;
};

typedef void (*dns_cb)(void *arg, const struct dns_answer *ans);

/* Returns NULL and fills err on a configuration or initialisation error. */
struct resolver *resolver_new(struct event_base *base,
    const struct resolver_config *cfg, char *err, size_t errlen);

/* Frees the resolver and every pending query without calling callbacks.
 * Call it before event_base_free(); NULLs *rp. */
void resolver_free(struct resolver **rp);

/* 1 if a trust anchor is configured and the validator module runs. */
int resolver_has_trust_anchor(const struct resolver *r);

/* rrtype must be one of DNS_T_*.  NULL on immediate failure (bad name or
 * type, no memory); otherwise cb(arg, ans) runs exactly once, later. */
struct dns_query *resolver_query(struct resolver *r, const char *name,
    int rrtype, dns_cb cb, void *arg);

/* The callback will never run; NULLs *qp. Safe on NULL. */
void resolver_cancel(struct dns_query **qp);

/* resolver_latency - queries answered by this process and their total time
 * from resolver_query() to the answer (timeouts included), for metrics. */
void resolver_latency(unsigned long long *count, double *seconds);

/* dns_addrs_v4_first - reorder text addresses: IPv4 first, else as answered. */
void dns_addrs_v4_first(char (*addr)[INET6_ADDRSTRLEN], size_t n);

const char *dns_sec_name(enum dns_sec sec);
const char *dns_status_name(int status);

#endif /* TLSRELAY_POLICY_RESOLVER_H */
