/*
 * listener.c - accept loop and connection limits.
 *
 * Limits are applied before a session exists: a client over
 * max_connections (per listener) or max_connections_per_ip gets one
 * "421 4.7.0" line written without blocking and is closed, and an event is
 * logged.  Nothing is allocated for it.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/listener.h>

#include "relay/evlog.h"
#include "relay/listener.h"
#include "relay/log.h"
#include "certs/tlsctx.h"
#include "relay/session.h"

struct ip_count {
	int family;
	unsigned char addr[16];
	int count;
};

static struct {
	int sessions;
	struct event_base *draining;    /* set by listener_stop: exit when idle */
} listeners;

static const unsigned char *
listener_addr_bytes(const struct sockaddr *sa, size_t *len)
{
	if (sa->sa_family == AF_INET6) {
		*len = 16;
		return (const unsigned char *)&((const struct sockaddr_in6 *)sa)->sin6_addr;
	}
	*len = 4;
	return (const unsigned char *)&((const struct sockaddr_in *)sa)->sin_addr;
}

/* The per-IP slot of sa (created with count 0 when create is set), or NULL. */
static struct ip_count *
listener_ip(struct listener *l, const struct sockaddr *sa, int create)
{
	size_t i, len;
	const unsigned char *a = listener_addr_bytes(sa, &len);
	struct ip_count *n;

	for (i = 0; i < l->nips; i++)
		if (l->ips[i].family == sa->sa_family && memcmp(l->ips[i].addr, a, len) == 0)
			return &l->ips[i];
	if (!create)
		return NULL;
	if (l->nips == l->ipcap) {
		n = realloc(l->ips, (l->ipcap ? l->ipcap * 2 : 64) * sizeof(*n));
		if (n == NULL)
			return NULL;
		l->ips = n;
		l->ipcap = l->ipcap ? l->ipcap * 2 : 64;
	}
	n = &l->ips[l->nips++];
	memset(n, 0, sizeof(*n));
	n->family = sa->sa_family;
	memcpy(n->addr, a, len);
	return n;
}

static void
listener_refuse(struct listener *l, int fd, const struct sockaddr *sa, const char *why)
{
	char line[512], ip[INET6_ADDRSTRLEN] = "";
	size_t len;
	struct evline *e;

	inet_ntop(sa->sa_family, listener_addr_bytes(sa, &len), ip, sizeof(ip));
	snprintf(line, sizeof(line), "421 4.7.0 %s Error: %s\r\n", l->cfg->hostname, why);
	if (send(fd, line, strlen(line), MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
		log_msg(LOG_DEBUG, "refusing %s: %s", ip, strerror(errno));
	close(fd);
	e = evlog_begin("reject", "");
	evlog_str(e, "listener", l->lc->name);
	evlog_str(e, "client_ip", ip);
	evlog_str(e, "command", "connect");
	evlog_int(e, "code", 421);
	evlog_str(e, "reason", why);
	evlog_end(e);
}

static void
listener_accept_cb(struct evconnlistener *evl, evutil_socket_t fd, struct sockaddr *sa,
    int salen, void *arg)
{
	struct listener *l = arg;
	struct ip_count *ic;
	int one = 1;

	(void)evl;
	if (l->nconn >= l->lc->max_connections) {
		listener_refuse(l, fd, sa, "too many connections");
		return;
	}
	ic = listener_ip(l, sa, 1);
	if (ic == NULL || ic->count >= l->lc->max_connections_per_ip) {
		listener_refuse(l, fd, sa, "too many connections from your address");
		return;
	}
	ic->count++;
	l->nconn++;
	listeners.sessions++;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	session_accept(l, fd, sa, salen);
}

void
listener_gone(struct listener *l, const struct sockaddr *sa)
{
	struct ip_count *ic = listener_ip(l, sa, 0);

	if (ic != NULL && --ic->count == 0)
		*ic = l->ips[--l->nips];
	l->nconn--;
	listeners.sessions--;
	if (listeners.draining != NULL && listeners.sessions == 0)
		event_base_loopexit(listeners.draining, NULL);
}

int
listener_sessions(void)
{
	return listeners.sessions;
}

static void
listener_error_cb(struct evconnlistener *evl, void *arg)
{
	struct listener *l = arg;
	int err = EVUTIL_SOCKET_ERROR();

	(void)evl;
	/* EMFILE/ENFILE: libevent retries on the next readiness; say so once per event. */
	log_msg(LOG_WARN, "listener %s: accept: %s", l->lc->name, evutil_socket_error_to_string(err));
}

/*
 * listener_bind - one socket bound to sa (before privileges are dropped;
 * listener_new() starts listening on it).  reuseport: SO_REUSEPORT, so that each worker process has its
 * own socket and the kernel spreads connections across them.
 */
int
listener_bind(const struct sockaddr *sa, socklen_t len, int reuseport, char *err,
    size_t errlen)
{
	int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;

	if (fd < 0)
		goto fail;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0))
		goto fail;
	if (sa->sa_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	/* listen() comes later (listener_new), once the process is ready. */
	if (bind(fd, sa, len) < 0)
		goto fail;
	return fd;
fail:
	snprintf(err, errlen, "%s", strerror(errno));
	if (fd >= 0)
		close(fd);
	return -1;
}

/*
 * listener_server_ctx - the STARTTLS context of lc, or NULL (no tls_cert,
 * or an error in err: *failed set).  Keys are read here, before privileges
 * are dropped.
 */
SSL_CTX *
listener_server_ctx(const struct relay_config *cfg, const struct listener_config *lc,
    int *failed, char *err, size_t errlen)
{
	SSL_CTX *ctx;

	*failed = 0;
	if (lc->tls_cert == NULL)
		return NULL;
	ctx = tlsctx_server_new(lc->tls_cert, lc->tls_key, lc->tls_min_version, err, errlen);
	if (ctx != NULL && ((lc->tls_ecdsa_cert != NULL && tlsctx_server_add_cert(ctx,
	    lc->tls_ecdsa_cert, lc->tls_ecdsa_key, err, errlen) < 0) ||
	    (lc->tls_ask_client_cert && tlsctx_server_ask_client_cert(ctx,
	    lc->tls_client_ca ? lc->tls_client_ca : cfg->ca_file, err, errlen) < 0))) {
		SSL_CTX_free(ctx);
		ctx = NULL;
	}
	*failed = ctx == NULL;
	return ctx;
}

struct listener *
listener_new(struct event_base *base, const struct relay_config *cfg,
    const struct listener_config *lc, SSL_CTX *client_ctx, SSL_CTX *server_ctx,
    const int *fds, char *err, size_t errlen)
{
	struct listener *l = xcalloc(1, sizeof(*l));
	size_t i;

	l->cfg = cfg;
	l->lc = lc;
	l->base = base;
	l->client_ctx = client_ctx;
	l->server_ctx = server_ctx;
	for (i = 0; i < lc->naddrs; i++) {
		l->evl[i] = evconnlistener_new(base, listener_accept_cb, l,
		    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 511, fds[i]);
		if (l->evl[i] == NULL) {
			snprintf(err, errlen, "listener %s: address %zu: %s", lc->name, i + 1,
			    strerror(errno));
			listener_free(&l);
			return NULL;
		}
		evconnlistener_set_error_cb(l->evl[i], listener_error_cb);
		l->nevl = i + 1;
	}
	return l;
}

void
listener_stop(struct listener *l)
{
	size_t i;

	for (i = 0; i < l->nevl; i++) {
		evconnlistener_free(l->evl[i]);
		l->evl[i] = NULL;
	}
	l->nevl = 0;
	listeners.draining = l->base;
}

void
listener_free(struct listener **lp)
{
	struct listener *l = *lp;

	if (l == NULL)
		return;
	listener_stop(l);
	SSL_CTX_free(l->server_ctx);
	free(l->ips);
	free(l);
	*lp = NULL;
}
