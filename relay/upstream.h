/*
 * upstream.h - one SMTP client connection to a next hop or MX (RFC 5321,
 * RFC 3207 STARTTLS), driven by the in-line relay.
 *
 * Setup runs by itself: connect, greeting, EHLO (HELO fallback), STARTTLS as
 * the TLS level demands, handshake, policy check of the peer certificate,
 * EHLO again.  Then the owner sends one command at a time and gets exactly
 * one callback per command:
 *
 *   UP_READY  setup finished; commands may be sent
 *   UP_REPLY  the reply to the command in flight (any code)
 *   UP_FAIL   the connection is unusable (setup failed, timeout, reset, bad
 *             reply); upstream_failure() says why.  No more callbacks.
 *   UP_DRAIN  during the body: output drained below the low watermark
 *
 * Callbacks may call upstream_free(); the struct itself is released later
 * from the event loop, so no caller ever touches freed memory.
 */
#ifndef RELAY_UPSTREAM_H
#define RELAY_UPSTREAM_H

#include <stddef.h>
#include <sys/socket.h>
#include <netinet/in.h>

#include <openssl/ssl.h>

#include "policy/dane.h"
#include "policy/level.h"
#include "policy/sts.h"
#include "relay/reply.h"

struct event_base;
struct evbuffer;
struct upstream;

enum upstream_event { UP_READY, UP_REPLY, UP_FAIL, UP_DRAIN };

typedef void (*upstream_cb)(void *arg, enum upstream_event ev, const struct smtp_reply *r);

/* Where to connect and what TLS it must speak. */
struct upstream_target {
	char host[256];                 /* MX or next-hop name (SNI, logs); may be an IP */
	struct sockaddr_storage addr;
	socklen_t addrlen;
	char ip[INET6_ADDRSTRLEN];
	enum tls_level level;
	char verify_names[3][260];      /* reference identifiers for verify/secure */
	size_t nverify;                 /* (".example.org" also matches subdomains) */
	const struct dane_host *dane;   /* TLSA RRset of this host (owned by the caller) or NULL */
	const struct sts_policy *sts;   /* MTA-STS policy applied (owned by the caller) or NULL */
	int sts_testing;                /* mode testing: check as enforce, only report */
	const char *sts_failure;        /* testing: the MX host is not in the policy */
};

struct upstream_params {
	struct event_base *base;
	SSL_CTX *ssl_ctx;
	const char *helo_name;
	const char *session;            /* for log lines */
	int connect_timeout, command_timeout, data_timeout, final_timeout;
};

/* Why the connection failed (valid after UP_FAIL). */
struct upstream_failure {
	const char *stage;              /* "connect", "greeting", "starttls", "tls", ... */
	const char *result_type;        /* RFC 8460 result type, or NULL when not TLS */
	int code;                       /* reply code to give the client (4xx) */
	char enh[16];
	char detail[300];
};

struct upstream *upstream_connect(const struct upstream_params *p,
    const struct upstream_target *t, upstream_cb cb, void *arg);
void upstream_free(struct upstream **up);

/* upstream_policy_key - digest of t and its TLS policy (caches' key). */
void upstream_policy_key(const struct upstream_target *t, char key[65]);
/* upstream_detach - new owner while parked; drops pointers into the old route. */
void upstream_detach(struct upstream *up, upstream_cb cb, void *arg);
/* upstream_adopt - take a parked connection for t; UP_READY comes later. 0 or -1. */
int upstream_adopt(struct upstream *up, const struct upstream_target *t, upstream_cb cb,
    void *arg);

/* Send one command line (without CRLF).  Only in READY state; returns -1 otherwise. */
int upstream_command(struct upstream *up, const char *line);
/* After a 354 reply: body bytes are moved from src (n bytes). */
void upstream_body(struct upstream *up, struct evbuffer *src, size_t n);
/* After a 354 reply: bytes of our own (trace headers) ahead of the client's. */
void upstream_body_add(struct upstream *up, const char *data, size_t n);
/* The end-of-data has been written with the body: wait for the final reply. */
void upstream_body_done(struct upstream *up);
/* Bytes queued toward the peer (for back-pressure). */
size_t upstream_pending(const struct upstream *up);

int upstream_ready(const struct upstream *up);
const struct upstream_failure *upstream_failure(const struct upstream *up);
const struct upstream_target *upstream_target(const struct upstream *up);
/* Capabilities from the last EHLO (EHLO_* bits of reply.h). */
unsigned upstream_caps(const struct upstream *up);
/* The peer's name from its greeting (RFC 8460 receiving-mx-helo), or "". */
const char *upstream_helo(const struct upstream *up);
/* The negotiated TLS version/cipher, NULL in clear. */
const char *upstream_tls_version(const struct upstream *up);
const char *upstream_tls_cipher(const struct upstream *up);
const char *upstream_peer_sha256(const struct upstream *up);
/* Our address on this connection (RFC 8460 sending-mta-ip). */
const char *upstream_local_ip(const struct upstream *up);
/*
 * upstream_dane_match - 1 when the peer was authenticated by DANE: the
 * matching record's usage, selector, mtype and its depth in the chain.
 */
int upstream_dane_match(const struct upstream *up, int *usage, int *selector, int *mtype,
    int *depth);
/* The TLS session was resumed from the client session cache. */
int upstream_tls_resumed(const struct upstream *up);
/*
 * upstream_sts_failure - for an MTA-STS "testing" target: the RFC 8460
 * result type enforce mode would have failed this connection with, or NULL.
 */
const char *upstream_sts_failure(const struct upstream *up);
/* Transactions completed on this connection. */
int upstream_uses(const struct upstream *up);

#endif
