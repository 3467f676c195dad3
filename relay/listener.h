/*
 * listener.h - listening sockets of one [listener:NAME] section, with the
 * connection limits (per listener and per client IP) applied at accept time,
 * before a session is allocated.
 */
#ifndef RELAY_LISTENER_H
#define RELAY_LISTENER_H

#include <sys/socket.h>

#include <openssl/ssl.h>

#include "relay/config.h"

struct event_base;
struct evconnlistener;

struct listener {
	const struct relay_config *cfg;
	const struct listener_config *lc;
	struct event_base *base;
	SSL_CTX *server_ctx;            /* NULL when no tls_cert: no STARTTLS */
	SSL_CTX *client_ctx;            /* outbound TLS (shared) */
	struct resolver *resolver;      /* DNS (shared; NULL when no listener needs it) */
	struct whitelist *whitelist;    /* assessed domains (shared; may be NULL) */
	struct mtasts *mtasts;          /* MTA-STS policies (shared; NULL when mta_sts = no) */
	struct evconnlistener *evl[CONFIG_MAX_ADDRS];
	size_t nevl;
	int nconn;
	struct ip_count *ips;           /* per-client-IP connection counts */
	size_t nips, ipcap;
	struct listener *next;
};

/* listener_bind - a listening socket for sa (SO_REUSEPORT when reuseport); -1 + err. */
int listener_bind(const struct sockaddr *sa, socklen_t len, int reuseport, char *err,
    size_t errlen);
/* listener_server_ctx - lc's STARTTLS context (NULL without tls_cert; *failed on error). */
SSL_CTX *listener_server_ctx(const struct relay_config *cfg, const struct listener_config *lc,
    int *failed, char *err, size_t errlen);
/*
 * listener_new - accept on the bound sockets fds[0..lc->naddrs) (they
 * become the listener's); server_ctx (may be NULL) becomes the listener's.
 */
struct listener *listener_new(struct event_base *base, const struct relay_config *cfg,
    const struct listener_config *lc, SSL_CTX *client_ctx, SSL_CTX *server_ctx,
    const int *fds, char *err, size_t errlen);
void listener_free(struct listener **l);
/* listener_stop - stop accepting (graceful shutdown). */
void listener_stop(struct listener *l);
/* listener_gone - a session of l ended: release its slot. */
void listener_gone(struct listener *l, const struct sockaddr *sa);
/* listener_sessions - open sessions across all listeners. */
int listener_sessions(void);

#endif
