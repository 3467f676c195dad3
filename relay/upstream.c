/*
 * upstream.c - the SMTP client side of the in-line relay.
 *
 * One struct upstream per connection.  upstream_enter() is the only writer
 * of the state; it sends the command that belongs to the new state and sets
 * the state's timeout (RFC 5321 §4.5.3.2).  up_reply() hands a complete
 * reply to the one process_<state>() function for the state being waited
 * in (OpenSMTPD mta_enter_state/mta_response; Postfix xfer_*[] tables).
 *
 * TLS follows the target's level (policy/level.h): at "may" a refused or
 * failed STARTTLS falls back to plaintext on a new connection (as Postfix
 * does); at "encrypt" and above it is a failure with the RFC 8460 result
 * type.  The certificate is checked by OpenSSL (SSL_set1_host); we only read
 * its verdict.  Anything the server sent after its 220 to STARTTLS is
 * discarded before the handshake (response injection, ANCHORS TLS-01).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <arpa/inet.h>
#include <netinet/tcp.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/util.h>
#include <openssl/err.h>
#include <openssl/sha.h>
#include <openssl/x509v3.h>

#include "certs/tlsctx.h"
#include "relay/line.h"
#include "relay/log.h"
#include "relay/upstream.h"

#define UP_LINE_MAX     2048            /* longest reply line accepted */
#define UP_BODY_HIWAT   (256 * 1024)    /* back-pressure toward the client */
#define UP_BODY_LOWAT   (64 * 1024)

enum up_state {
	UPS_CONNECT, UPS_GREETING, UPS_EHLO, UPS_HELO, UPS_STARTTLS, UPS_HANDSHAKE,
	UPS_EHLO_TLS, UPS_READY, UPS_CMD, UPS_DATA, UPS_BODY, UPS_DOT, UPS_DEAD
};

static const char *const up_state_names[] = {
	"connect", "greeting", "ehlo", "helo", "starttls", "handshake",
	"ehlo-tls", "ready", "command", "data", "body", "dot", "dead"
};

struct upstream {
	struct upstream_params p;
	struct upstream_target t;
	enum tls_level level;           /* may drop to none after a failed "may" handshake */
	upstream_cb cb;
	void *arg;
	enum up_state state;
	int fd;
	struct bufferevent *bev;
	struct event *timer;            /* deadline of the state */
	SSL *ssl;                       /* owned by bev once the TLS bev exists */
	struct smtp_reply reply;
	unsigned caps;
	int uses;
	char helo[256];
	char peer_sha256[65];
	char local_ip[INET6_ADDRSTRLEN];
	const char *sts_failure;        /* MTA-STS testing: what enforce would have failed */
	int dane_records;               /* usable TLSA records OpenSSL took */
	int dane_depth;                 /* depth of the DANE match, -1 none */
	uint8_t dane_usage, dane_selector, dane_mtype;
	struct upstream_failure fail;
	int freed;
};

static void up_read_cb(struct bufferevent *bev, void *arg);
static void up_write_cb(struct bufferevent *bev, void *arg);
static void up_event_cb(struct bufferevent *bev, short what, void *arg);
static void up_connected(struct upstream *up);
static void up_timer_cb(evutil_socket_t fd, short what, void *arg);
static void up_fail(struct upstream *up, const char *stage, const char *result_type,
    const char *enh, const char *fmt, ...) PRINTF_LIKE(5, 6);
static int up_open(struct upstream *up);

/* Timeout of each state, in seconds, from the params (0 = none). */
static int
up_timeout(const struct upstream *up, enum up_state st)
{
	switch (st) {
	case UPS_CONNECT:
		return up->p.connect_timeout;
	case UPS_DATA: case UPS_BODY:
		return up->p.data_timeout;
	case UPS_DOT:
		return up->p.final_timeout;
	case UPS_READY: case UPS_DEAD:
		return 0;
	default:
		return up->p.command_timeout;
	}
}

/*
 * A state's timeout is a deadline for the whole reply (RFC 5321 §4.5.3.2
 * times a command, not a read), so a peer dripping one byte at a time
 * cannot hold the connection open; only the body, which we write, uses a
 * per-write timeout.
 */
static void
up_set_timeouts(struct upstream *up)
{
	struct timeval tv = { up_timeout(up, up->state), 0 };
	const struct timeval *t = tv.tv_sec ? &tv : NULL;

	evtimer_del(up->timer);
	if (up->state == UPS_BODY) {
		bufferevent_set_timeouts(up->bev, NULL, t);
		return;
	}
	bufferevent_set_timeouts(up->bev, NULL, up->state == UPS_CONNECT ||
	    up->state == UPS_HANDSHAKE ? t : NULL);
	if (t != NULL)
		evtimer_add(up->timer, t);
}

static void
up_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct upstream *up = arg;

	(void)fd;
	(void)what;
	up_fail(up, up_state_names[up->state], NULL, "4.4.2", "timeout while %s",
	    up_state_names[up->state]);
}

static void PRINTF_LIKE(2, 3)
up_send(struct upstream *up, const char *fmt, ...)
{
	va_list ap;
	struct evbuffer *out = bufferevent_get_output(up->bev);

	va_start(ap, fmt);
	evbuffer_add_vprintf(out, fmt, ap);
	va_end(ap);
	evbuffer_add(out, "\r\n", 2);
}

/* The only writer of up->state. */
static void
upstream_enter(struct upstream *up, enum up_state st)
{
	log_msg(LOG_DEBUG, "%s upstream %s: %s -> %s", up->p.session, up->t.ip,
	    up_state_names[up->state], up_state_names[st]);
	up->state = st;
	switch (st) {
	case UPS_EHLO: case UPS_EHLO_TLS:
		up_send(up, "EHLO %s", up->p.helo_name);
		break;
	case UPS_HELO:
		up_send(up, "HELO %s", up->p.helo_name);
		break;
	case UPS_STARTTLS:
		up_send(up, "STARTTLS");
		break;
	default:
		break;
	}
	if (up->bev != NULL)
		up_set_timeouts(up);
}

static void
up_notify(struct upstream *up, enum upstream_event ev, const struct smtp_reply *r)
{
	if (!up->freed)
		up->cb(up->arg, ev, r);
}

/*
 * up_fail - the connection is unusable: record why, close it, tell the owner.
 * code/enh are what the owner should answer its client (always 4xx: the
 * sender's queue retries, DESIGN.md policy semantics 4).
 */
static void PRINTF_LIKE(5, 6)
up_fail(struct upstream *up, const char *stage, const char *result_type,
    const char *enh, const char *fmt, ...)
{
	va_list ap;

	if (up->state == UPS_DEAD)
		return;
	up->fail.stage = stage;
	up->fail.result_type = result_type;
	up->fail.code = 451;
	snprintf(up->fail.enh, sizeof(up->fail.enh), "%s", enh);
	va_start(ap, fmt);
	vsnprintf(up->fail.detail, sizeof(up->fail.detail), fmt, ap);
	va_end(ap);
	upstream_enter(up, UPS_DEAD);
	evtimer_del(up->timer);
	bufferevent_disable(up->bev, EV_READ | EV_WRITE);
	up_notify(up, UP_FAIL, NULL);
}

static int
up_open(struct upstream *up)
{
	int one = 1;

	up->fd = socket(up->t.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (up->fd < 0)
		return -1;
	setsockopt(up->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	up->bev = bufferevent_socket_new(up->p.base, up->fd, 0);
	if (up->bev == NULL)
		return -1;
	bufferevent_setcb(up->bev, up_read_cb, up_write_cb, up_event_cb, up);
	reply_init(&up->reply);
	up->state = UPS_CONNECT;
	up_set_timeouts(up);
	if (bufferevent_socket_connect(up->bev, (struct sockaddr *)&up->t.addr,
	    (int)up->t.addrlen) < 0)
		return -1;
	bufferevent_enable(up->bev, EV_READ | EV_WRITE);
	return 0;
}

/* Close the connection but keep the struct (for a retry or the deferred free). */
static void
up_close(struct upstream *up)
{
	if (up->bev != NULL) {
		bufferevent_setcb(up->bev, NULL, NULL, NULL, NULL);
		bufferevent_disable(up->bev, EV_READ | EV_WRITE);
		bufferevent_free(up->bev);
	}
	if (up->ssl == NULL && up->fd >= 0)
		close(up->fd);
	up->bev = NULL;
	up->ssl = NULL;
	up->fd = -1;
}

struct upstream *
upstream_connect(const struct upstream_params *p, const struct upstream_target *t,
    upstream_cb cb, void *arg)
{
	struct upstream *up = calloc(1, sizeof(*up));

	if (up == NULL)
		return NULL;
	up->p = *p;
	up->t = *t;
	up->level = t->level;
	up->cb = cb;
	up->arg = arg;
	up->fd = -1;
	up->timer = evtimer_new(p->base, up_timer_cb, up);
	if (up->timer == NULL || up_open(up) < 0) {
		if (up->timer != NULL)
			event_free(up->timer);
		up_close(up);
		free(up);
		return NULL;
	}
	return up;
}

static void
up_release(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	free(arg);
}

void
upstream_free(struct upstream **upp)
{
	struct upstream *up = *upp;

	if (up == NULL)
		return;
	*upp = NULL;
	/* A healthy TLS connection ends with close_notify: OpenSSL keeps its
	 * session resumable only after a proper shutdown. */
	if (up->ssl != NULL && up->state != UPS_DEAD && up->state != UPS_HANDSHAKE)
		SSL_shutdown(up->ssl);
	up->freed = 1;
	up->state = UPS_DEAD;
	up_close(up);
	event_free(up->timer);
	up->timer = NULL;
	/* Released from the loop: a callback up the stack may still read it. */
	if (event_base_once(up->p.base, -1, EV_TIMEOUT, up_release, up, NULL) < 0)
		die_bug("event_base_once failed");
}

/* A "may" handshake failed: reconnect and go on in clear (Postfix behaviour). */
static void
up_retry_plain(struct upstream *up, const char *why)
{
	log_msg(LOG_INFO, "%s %s[%s]: TLS failed (%s), retrying in clear", up->p.session,
	    up->t.host, up->t.ip, why);
	if (up->t.sts_testing)
		up->sts_failure = "validation-failure";
	up_close(up);
	up->level = TLS_NONE;
	if (up_open(up) < 0)
		up_fail(up, "connect", NULL, "4.4.1", "cannot reconnect: %s", strerror(errno));
}

/*
 * DANE (RFC 7672 §3): OpenSSL matches; we hand it the usable records, the
 * reference identifiers for DANE-TA name checks (the TLSA base domain and
 * the MX host name, §3.2.2), and skip name checks for DANE-EE (§3.1.1,
 * DANE_FLAG_NO_DANE_EE_NAMECHECKS).  SNI is the base domain (§8.1).
 */
static int
up_dane_setup(struct upstream *up, SSL *ssl)
{
	const struct dane_host *d = up->t.dane;
	size_t i;

	if (SSL_set_tlsext_host_name(ssl, d->base) != 1 || SSL_dane_enable(ssl, d->base) <= 0)
		return -1;
	if (strcmp(d->base, up->t.host) != 0 && SSL_add1_host(ssl, up->t.host) != 1)
		return -1;
	SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
	SSL_dane_set_flags(ssl, DANE_FLAG_NO_DANE_EE_NAMECHECKS);
	for (i = 0; i < d->n; i++)
		if (d->recs[i].usable && SSL_dane_tlsa_add(ssl, d->recs[i].usage,
		    d->recs[i].selector, d->recs[i].mtype, d->recs[i].data, d->recs[i].len) > 0)
			up->dane_records++;
	return 0;
}

/*
 * upstream_policy_key - a digest of the target and everything its TLS was
 * (or will be) verified under: address, SNI, level, reference names, TLSA
 * records and MTA-STS mode.  Keys the TLS session cache and the connection
 * cache, so neither ever crosses policies (DANE-11).
 */
void
upstream_policy_key(const struct upstream_target *t, char key[65])
{
	struct evbuffer *b = evbuffer_new();
	unsigned char md[SHA256_DIGEST_LENGTH];
	size_t i;

	key[0] = '\0';
	if (b == NULL)
		return;
	evbuffer_add_printf(b, "%s|%s|%d|%d|%d|%d", t->ip, t->host,
	    ntohs(((const struct sockaddr_in *)&t->addr)->sin_port), (int)t->level,
	    t->sts ? (int)t->sts->mode : -1, t->sts_testing);
	for (i = 0; i < t->nverify; i++)
		evbuffer_add_printf(b, "|n:%s", t->verify_names[i]);
	for (i = 0; t->dane != NULL && i < t->dane->n; i++)
		evbuffer_add_printf(b, "|t:%s", t->dane->recs[i].text);
	SHA256(evbuffer_pullup(b, -1), evbuffer_get_length(b), md);
	for (i = 0; i < sizeof(md); i++)
		snprintf(key + i * 2, 3, "%02x", md[i]);
	evbuffer_free(b);
}

static void
up_resume(struct upstream *up, SSL *ssl)
{
	char key[65];

	upstream_policy_key(&up->t, key);
	if (key[0] != '\0')
		tlsctx_client_resume(ssl, key);
}

/* Parked in the connection cache: new owner, and no pointers into the old one's route. */
void
upstream_detach(struct upstream *up, upstream_cb cb, void *arg)
{
	up->cb = cb;
	up->arg = arg;
	up->t.dane = NULL;
	up->t.sts = NULL;
	up->t.sts_failure = NULL;
	up->sts_failure = NULL;
}

static void
up_ready_later(evutil_socket_t fd, short what, void *arg)
{
	struct upstream *up = arg;

	(void)fd;
	(void)what;
	if (!up->freed && up->state == UPS_READY)
		up_notify(up, UP_READY, NULL);
}

/*
 * upstream_adopt - a cached connection for t (same policy key) taken by a
 * new owner: UP_READY is delivered from the event loop, never from here.
 */
int
upstream_adopt(struct upstream *up, const struct upstream_target *t, upstream_cb cb,
    void *arg)
{
	up->t = *t;
	up->cb = cb;
	up->arg = arg;
	return event_base_once(up->p.base, -1, EV_TIMEOUT, up_ready_later, up, NULL);
}

static int
up_tls_setup(struct upstream *up, SSL *ssl)
{
	size_t i;

	up->dane_records = 0;
	up->dane_depth = -1;
	up_resume(up, ssl);
	if (up->t.dane != NULL && up->t.dane->state == DANE_USABLE)
		return up_dane_setup(up, ssl);
	if (SSL_set_tlsext_host_name(ssl, up->t.host) != 1)
		return -1;
	if (up->t.sts_testing) {
		/* RFC 8461 §4.2 checks, for the report only: PKIX and the MX host name. */
		SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
		if (SSL_set1_host(ssl, up->t.host) != 1)
			return -1;
	}
	if (!tls_must_verify(up->level))
		return 0;
	SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
	for (i = 0; i < up->t.nverify; i++)
		if ((i == 0 ? SSL_set1_host(ssl, up->t.verify_names[i]) :
		    SSL_add1_host(ssl, up->t.verify_names[i])) != 1)
			return -1;
	return 0;
}

/*
 * RFC 3207 §4.2 / ANCHORS TLS-01: after the 220, nothing the server sent in
 * clear may be used; drop it, then hand the socket to OpenSSL.
 */
static void
up_starttls(struct upstream *up)
{
	struct evbuffer *in = bufferevent_get_input(up->bev);
	size_t junk = evbuffer_get_length(in);
	SSL *ssl;

	if (junk > 0)
		log_msg(LOG_WARN, "%s %s[%s]: discarded %zu bytes sent after 220 to STARTTLS",
		    up->p.session, up->t.host, up->t.ip, junk);
	ssl = SSL_new(up->p.ssl_ctx);
	if (ssl == NULL || up_tls_setup(up, ssl) < 0) {
		SSL_free(ssl);
		up_fail(up, "starttls", "validation-failure", "4.7.5", "TLS setup failed");
		return;
	}
	bufferevent_setcb(up->bev, NULL, NULL, NULL, NULL);
	bufferevent_disable(up->bev, EV_READ | EV_WRITE);
	bufferevent_free(up->bev);
	up->bev = bufferevent_openssl_socket_new(up->p.base, up->fd, ssl,
	    BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE);
	if (up->bev == NULL) {
		SSL_free(ssl);
		up_fail(up, "starttls", NULL, "4.3.0", "out of memory");
		return;
	}
	up->ssl = ssl;
	bufferevent_openssl_set_allow_dirty_shutdown(up->bev, 1);
	bufferevent_setcb(up->bev, up_read_cb, up_write_cb, up_event_cb, up);
	upstream_enter(up, UPS_HANDSHAKE);
	bufferevent_enable(up->bev, EV_READ | EV_WRITE);
}

/* Handshake finished: apply the level's authentication requirement. */
static void
up_tls_done(struct upstream *up)
{
	long v = SSL_get_verify_result(up->ssl);

	tlsctx_peer_sha256(up->ssl, up->peer_sha256, sizeof(up->peer_sha256));
	if (up->dane_records > 0) {
		if (v != X509_V_OK) {
			up_fail(up, "tls", v == X509_V_ERR_DANE_NO_MATCH ? "validation-failure" :
			    tlsctx_result_type(v), "4.7.5", "DANE authentication failed: %s",
			    X509_verify_cert_error_string(v));
			return;
		}
		up->dane_depth = SSL_get0_dane_tlsa(up->ssl, &up->dane_usage, &up->dane_selector,
		    &up->dane_mtype, NULL, NULL);
	} else if (up->t.dane != NULL && up->t.dane->state == DANE_USABLE) {
		/* OpenSSL refused every record: unusable after all (DANE-05/06). */
		log_msg(LOG_INFO, "%s %s: no TLSA record usable by OpenSSL", up->p.session,
		    up->t.host);
	} else if (up->t.sts_testing && v != X509_V_OK && !tls_must_verify(up->level)) {
		/* RFC 8461 §5: testing delivers anyway (unless the level itself
		 * demands verification); the failure is reported. */
		up->sts_failure = tlsctx_result_type(v);
	} else if (tls_must_verify(up->level) && v != X509_V_OK) {
		up_fail(up, "tls", tlsctx_result_type(v), "4.7.5",
		    "certificate verification failed: %s", X509_verify_cert_error_string(v));
		return;
	}
	upstream_enter(up, UPS_EHLO_TLS);
}

/* Greeting (RFC 5321 §4.3.1): 220 proceeds; 4xx/5xx means try elsewhere. */
static void
process_greeting(struct upstream *up)
{
	const char *sp;
	size_t n;

	if (up->reply.code != 220) {
		up_fail(up, "greeting", NULL, "4.4.0", "greeting: %d %.200s", up->reply.code,
		    up->reply.text);
		return;
	}
	/* RFC 8460 receiving-mx-helo: the name the server announces. */
	sp = strpbrk(up->reply.text, " \n");
	n = sp ? (size_t)(sp - up->reply.text) : strlen(up->reply.text);
	if (n >= sizeof(up->helo))
		n = sizeof(up->helo) - 1;
	memcpy(up->helo, up->reply.text, n);
	up->helo[n] = '\0';
	upstream_enter(up, UPS_EHLO);
}

static void
process_ehlo(struct upstream *up)
{
	long long size;

	if (up->reply.code / 100 != 2) {
		if (tls_must_encrypt(up->level)) {
			up_fail(up, "ehlo", "starttls-not-supported", "4.7.4",
			    "EHLO refused (%d), TLS required", up->reply.code);
			return;
		}
		upstream_enter(up, UPS_HELO);
		return;
	}
	up->caps = reply_ehlo_caps(&up->reply, &size);
	if (up->level == TLS_NONE) {
		upstream_enter(up, UPS_READY);
		up_notify(up, UP_READY, NULL);
	} else if (up->caps & EHLO_STARTTLS) {
		upstream_enter(up, UPS_STARTTLS);
	} else if (tls_must_encrypt(up->level)) {
		up_fail(up, "ehlo", "starttls-not-supported", "4.7.4",
		    "STARTTLS not offered by %s[%s]", up->t.host, up->t.ip);
	} else {
		if (up->t.sts_testing)
			up->sts_failure = "starttls-not-supported";
		upstream_enter(up, UPS_READY);
		up_notify(up, UP_READY, NULL);
	}
}

static void
process_helo(struct upstream *up)
{
	if (up->reply.code / 100 != 2) {
		up_fail(up, "helo", NULL, "4.4.0", "HELO refused: %d %.200s", up->reply.code,
		    up->reply.text);
		return;
	}
	up->caps = 0;
	upstream_enter(up, UPS_READY);
	up_notify(up, UP_READY, NULL);
}

static void
process_starttls(struct upstream *up)
{
	if (up->reply.code == 220) {
		up_starttls(up);
		return;
	}
	if (tls_must_encrypt(up->level)) {
		up_fail(up, "starttls", "starttls-not-supported", "4.7.4",
		    "STARTTLS refused: %d %.200s", up->reply.code, up->reply.text);
		return;
	}
	/* RFC 3207 §4: a refused STARTTLS at "may" continues in clear. */
	upstream_enter(up, UPS_READY);
	up_notify(up, UP_READY, NULL);
}

static void
process_ehlo_tls(struct upstream *up)
{
	long long size;

	if (up->reply.code / 100 != 2) {
		up_fail(up, "ehlo", NULL, "4.4.0", "EHLO after STARTTLS refused: %d %.200s",
		    up->reply.code, up->reply.text);
		return;
	}
	/* RFC 3207 §4.2: forget what was learnt in clear. */
	up->caps = reply_ehlo_caps(&up->reply, &size);
	upstream_enter(up, UPS_READY);
	up_notify(up, UP_READY, NULL);
}

/* Reply to MAIL, RCPT, RSET, DATA or the final dot: hand it to the owner. */
static void
process_command(struct upstream *up)
{
	enum up_state was = up->state;

	if (was == UPS_DATA && up->reply.code == 354) {
		upstream_enter(up, UPS_BODY);
		bufferevent_setwatermark(up->bev, EV_WRITE, UP_BODY_LOWAT, 0);
	} else if (up->reply.code == 421) {
		/* RFC 5321 §3.8: the server is closing the channel. */
		snprintf(up->fail.detail, sizeof(up->fail.detail), "%d %.200s",
		    up->reply.code, up->reply.text);
		up->fail.stage = up_state_names[was];
		up->fail.code = 421;
		upstream_enter(up, UPS_DEAD);
		evtimer_del(up->timer);
		bufferevent_disable(up->bev, EV_READ | EV_WRITE);
	} else {
		if (was == UPS_DOT)
			up->uses++;
		upstream_enter(up, UPS_READY);
	}
	up_notify(up, UP_REPLY, &up->reply);
}

static void
up_reply(struct upstream *up)
{
	switch (up->state) {
	case UPS_GREETING:
		process_greeting(up);
		break;
	case UPS_EHLO:
		process_ehlo(up);
		break;
	case UPS_HELO:
		process_helo(up);
		break;
	case UPS_STARTTLS:
		process_starttls(up);
		break;
	case UPS_EHLO_TLS:
		process_ehlo_tls(up);
		break;
	case UPS_CMD: case UPS_DATA: case UPS_DOT:
		process_command(up);
		break;
	default:
		/* Unsolicited (e.g. 421 while idle): the connection is done. */
		up_fail(up, up_state_names[up->state], NULL, "4.4.2",
		    "unexpected reply while %s: %d %.200s", up_state_names[up->state],
		    up->reply.code, up->reply.text);
		break;
	}
}

static void
up_read_cb(struct bufferevent *bev, void *arg)
{
	struct upstream *up = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	char line[UP_LINE_MAX];
	size_t len;
	const char *why;
	enum line_status ls;

	if (up->state == UPS_CONNECT)
		up_connected(up);
	while (!up->freed && up->state != UPS_DEAD && up->bev == bev) {
		ls = line_read(in, line, sizeof(line), &len);
		if (ls == LINE_NEED_MORE)
			return;
		if (ls != LINE_OK) {
			up_fail(up, up_state_names[up->state], NULL, "4.4.2",
			    ls == LINE_TOO_LONG ? "reply line too long" : "bare LF in reply");
			return;
		}
		switch (reply_feed(&up->reply, line, len, &why)) {
		case REPLY_MORE:
			break;
		case REPLY_ERROR:
			up_fail(up, up_state_names[up->state], NULL, "4.4.2", "bad reply: %s", why);
			return;
		case REPLY_DONE:
			up_reply(up);
			reply_init(&up->reply);
			break;
		}
	}
}

static void
up_write_cb(struct bufferevent *bev, void *arg)
{
	struct upstream *up = arg;

	(void)bev;
	if (up->state == UPS_BODY)
		up_notify(up, UP_DRAIN, NULL);
}

/* RFC 8460 sending-mta-ip: our address on this connection. */
static void
up_local_ip(struct upstream *up)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	const void *a;

	up->local_ip[0] = '\0';
	if (getsockname(up->fd, (struct sockaddr *)&ss, &len) < 0)
		return;
	a = ss.ss_family == AF_INET ? (const void *)&((struct sockaddr_in *)&ss)->sin_addr :
	    (const void *)&((struct sockaddr_in6 *)&ss)->sin6_addr;
	inet_ntop(ss.ss_family, a, up->local_ip, sizeof(up->local_ip));
}

/* TCP is up (the greeting may arrive before libevent reports the connect). */
static void
up_connected(struct upstream *up)
{
	up_local_ip(up);
	upstream_enter(up, UPS_GREETING);
}

static const char *
up_tls_error(struct upstream *up, char *buf, size_t len)
{
	unsigned long e = bufferevent_get_openssl_error(up->bev);

	if (e != 0)
		ERR_error_string_n(e, buf, len);
	else
		snprintf(buf, len, "%s", strerror(EVUTIL_SOCKET_ERROR()));
	return buf;
}

static void
up_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct upstream *up = arg;
	char err[256];
	const char *stage = up_state_names[up->state];

	(void)bev;
	if (what & BEV_EVENT_CONNECTED) {
		if (up->state == UPS_CONNECT)
			up_connected(up);
		else if (up->state == UPS_HANDSHAKE)
			up_tls_done(up);
		return;
	}
	if (up->state == UPS_HANDSHAKE) {
		up_tls_error(up, err, sizeof(err));
		if (up->level == TLS_MAY)
			up_retry_plain(up, err);
		else
			up_fail(up, "tls", "validation-failure", "4.7.5", "TLS handshake failed: %s", err);
		return;
	}
	if (what & BEV_EVENT_TIMEOUT)
		up_fail(up, stage, NULL, "4.4.2", "timeout while %s", stage);
	else if (up->state == UPS_CONNECT)
		up_fail(up, stage, NULL, "4.4.1", "connect to %s[%s]: %s", up->t.host, up->t.ip,
		    strerror(EVUTIL_SOCKET_ERROR()));
	else
		up_fail(up, stage, NULL, "4.4.2", "connection lost while %s%s%s", stage,
		    (what & BEV_EVENT_ERROR) ? ": " : "",
		    (what & BEV_EVENT_ERROR) ? up_tls_error(up, err, sizeof(err)) : "");
}

int
upstream_command(struct upstream *up, const char *line)
{
	if (up == NULL || up->state != UPS_READY)
		return -1;
	up_send(up, "%s", line);
	upstream_enter(up, strcasecmp(line, "DATA") == 0 ? UPS_DATA : UPS_CMD);
	return 0;
}

void
upstream_body(struct upstream *up, struct evbuffer *src, size_t n)
{
	if (up->state != UPS_BODY)
		die_bug("upstream_body in state %s", up_state_names[up->state]);
	evbuffer_remove_buffer(src, bufferevent_get_output(up->bev), n);
}

void
upstream_body_add(struct upstream *up, const char *data, size_t n)
{
	if (up->state != UPS_BODY)
		die_bug("upstream_body_add in state %s", up_state_names[up->state]);
	evbuffer_add(bufferevent_get_output(up->bev), data, n);
}

void
upstream_body_done(struct upstream *up)
{
	if (up->state != UPS_BODY)
		die_bug("upstream_body_done in state %s", up_state_names[up->state]);
	bufferevent_setwatermark(up->bev, EV_WRITE, 0, 0);
	upstream_enter(up, UPS_DOT);
}

size_t
upstream_pending(const struct upstream *up)
{
	return up->bev ? evbuffer_get_length(bufferevent_get_output(up->bev)) : 0;
}

int
upstream_ready(const struct upstream *up)
{
	return up != NULL && up->state == UPS_READY;
}

const struct upstream_failure *
upstream_failure(const struct upstream *up)
{
	return &up->fail;
}

const struct upstream_target *
upstream_target(const struct upstream *up)
{
	return &up->t;
}

unsigned
upstream_caps(const struct upstream *up)
{
	return up->caps;
}

const char *
upstream_helo(const struct upstream *up)
{
	return up->helo;
}

const char *
upstream_tls_version(const struct upstream *up)
{
	return up->ssl ? SSL_get_version(up->ssl) : NULL;
}

const char *
upstream_tls_cipher(const struct upstream *up)
{
	return up->ssl ? SSL_get_cipher_name(up->ssl) : NULL;
}

const char *
upstream_peer_sha256(const struct upstream *up)
{
	return up->peer_sha256;
}

const char *
upstream_local_ip(const struct upstream *up)
{
	return up->local_ip;
}

int
upstream_dane_match(const struct upstream *up, int *usage, int *selector, int *mtype,
    int *depth)
{
	if (up->dane_depth < 0 || up->dane_records == 0)
		return 0;
	*usage = up->dane_usage;
	*selector = up->dane_selector;
	*mtype = up->dane_mtype;
	*depth = up->dane_depth;
	return 1;
}

int
upstream_tls_resumed(const struct upstream *up)
{
	return up->ssl != NULL && SSL_session_reused(up->ssl);
}

const char *
upstream_sts_failure(const struct upstream *up)
{
	return up->sts_failure;
}

int
upstream_uses(const struct upstream *up)
{
	return up->uses;
}
