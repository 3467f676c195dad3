/*
 * session.c - SMTP server session: I/O, state, replies, STARTTLS, close.
 *
 * session_enter() is the only writer of s->state and sets each state's
 * timeout (RFC 5321 §4.5.3.2).  session_input() is the one read loop: it
 * takes complete lines while the session is not waiting on the next hop and
 * answers in order (RFC 2920), or feeds the DATA stream.  session_reply() is
 * the one reply function.  Commands live in cmd.c, the in-line relay in
 * inline.c.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/rand.h>

#include "certs/tlsctx.h"
#include "relay/evlog.h"
#include "relay/line.h"
#include "relay/listener.h"
#include "relay/proxy.h"
#include "relay/route.h"
#include "relay/session.h"

#define SESSION_INPUT_MAX   (64 * 1024)   /* read watermark: input parked beyond */
#define SESSION_OUTPUT_MAX  (64 * 1024)   /* replies a client has not read */
#define SESSION_BAD_MAX     20            /* errors before 421 (Postfix smtpd_hard_error_limit) */
#define SESSION_DATA_PROGRESS 512         /* DATA bytes that restart the deadline */

static const char *const session_state_names[] = {
	"proxy", "init", "helo", "mail", "rcpt", "wait", "data", "discard", "starttls",
	"handshake", "quit", "closed"
};

static struct session *session_list;

static void session_read_cb(struct bufferevent *bev, void *arg);
static int session_proxy_step(struct session *s, struct evbuffer *in);
static void session_peer(struct session *s, const struct sockaddr *sa, int salen);
static void session_write_cb(struct bufferevent *bev, void *arg);
static void session_event_cb(struct bufferevent *bev, short what, void *arg);

const char *
session_state_name(enum session_state st)
{
	return session_state_names[st];
}

int
session_tls_active(const struct session *s)
{
	return s->ssl != NULL;
}

static void
session_new_id(struct session *s)
{
	static unsigned long long base, counter;

	if (base == 0 && RAND_bytes((unsigned char *)&base, sizeof(base)) != 1)
		base = (unsigned long long)getpid() << 32;
	snprintf(s->id, sizeof(s->id), "%016llx", base + ++counter);
}

/*
 * session_arm - restart the deadline of the state.  It is a deadline, not
 * an idle timer: it restarts only when a whole command has been read (or,
 * in DATA, every SESSION_DATA_PROGRESS bytes), so a client dripping a byte
 * at a time (slowloris) is cut off all the same.  Waiting on the next hop,
 * the next hop's own timeouts apply.
 */
void
session_arm(struct session *s)
{
	struct timeval tv = { s->cfg->command_timeout, 0 };

	evtimer_del(s->timer);
	s->data_progress = 0;
	if (s->state == S_WAIT || s->state == S_QUIT || s->state == S_CLOSED)
		return;
	if (s->state == S_DATA || s->state == S_DISCARD)
		tv.tv_sec = s->cfg->data_timeout;
	evtimer_add(s->timer, &tv);
}

/* DATA made progress: n more bytes of the message arrived. */
void
session_data_progress(struct session *s, size_t n)
{
	s->data_progress += n;
	if (s->data_progress >= SESSION_DATA_PROGRESS)
		session_arm(s);
}

static void
session_set_timeouts(struct session *s)
{
	struct timeval wr = { s->cfg->command_timeout, 0 };

	/* A client that does not read its replies is cut off by the write timeout. */
	bufferevent_set_timeouts(s->bev, NULL, &wr);
	session_arm(s);
}

static void
session_timeout(struct session *s)
{
	if (s->state == S_PROXY || s->state == S_STARTTLS || s->state == S_HANDSHAKE) {
		session_close(s, "timeout");
		return;
	}
	session_reject_event(s, session_state_names[s->state], 421, "timeout");
	session_reply(s, 421, "4.4.2", "%s Error: timeout exceeded", s->cfg->hostname);
	bufferevent_enable(s->bev, EV_WRITE);
	session_quit(s, "timeout");
}

static void
session_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	session_timeout(arg);
}

/* The only writer of s->state. */
void
session_enter(struct session *s, enum session_state st)
{
	if (s->state == S_CLOSED)
		return;
	log_msg(LOG_DEBUG, "%s %s -> %s", s->id, session_state_names[s->state],
	    session_state_names[st]);
	s->state = st;
	if (s->bev != NULL && st != S_CLOSED)
		session_set_timeouts(s);
}

/* Copy text for a reply line: printable ASCII only, at most 400 bytes. */
static void
session_printable(char *dst, size_t dstlen, const char *src, size_t n)
{
	size_t i, j = 0;

	for (i = 0; i < n && j + 1 < dstlen && j < 400; i++) {
		unsigned char c = (unsigned char)src[i];

		dst[j++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
	}
	dst[j] = '\0';
}

static void
session_write_line(struct session *s, int code, char sep, const char *enh, const char *text)
{
	struct evbuffer *out = bufferevent_get_output(s->bev);

	if (enh != NULL && enh[0] != '\0')
		evbuffer_add_printf(out, "%03d%c%s %s\r\n", code, sep, enh, text);
	else
		evbuffer_add_printf(out, "%03d%c%s\r\n", code, sep, text);
}

static void
session_vreply(struct session *s, int code, char sep, const char *enh, const char *fmt,
    va_list ap)
{
	char raw[512], text[512];
	int n;

	if (code < 200 || code > 599)
		die_bug("session_reply: bad code %d", code);
	if (s->bev == NULL || s->state == S_CLOSED)
		return;
	n = vsnprintf(raw, sizeof(raw), fmt, ap);
	if (n < 0)
		raw[0] = '\0';
	session_printable(text, sizeof(text), raw, strlen(raw));
	session_write_line(s, code, sep, enh, text);
	if (sep == ' ' && code >= 500 && code != 530)
		s->bad_commands++;
}

/*
 * session_reply - the one reply function.  code must be 2xx..5xx (a bug
 * otherwise); enh is the RFC 3463 code or NULL; the text is made printable.
 * session_reply_cont() writes a continuation line ("250-...") before it.
 */
void
session_reply(struct session *s, int code, const char *enh, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	session_vreply(s, code, ' ', enh, fmt, ap);
	va_end(ap);
}

void
session_reply_cont(struct session *s, int code, const char *enh, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	session_vreply(s, code, '-', enh, fmt, ap);
	va_end(ap);
}

void
session_reply_err(struct session *s, const struct smtp_err *e)
{
	session_reply(s, e->code, e->enh, "%s", e->text);
}

/* Pass a next hop's reply on, line by line (each line made printable). */
void
session_relay_reply(struct session *s, const struct smtp_reply *r)
{
	char text[512];
	const char *p = r->text, *nl;
	size_t n;

	if (s->bev == NULL || s->state == S_CLOSED)
		return;
	for (;;) {
		nl = memchr(p, '\n', r->text_len - (size_t)(p - r->text));
		n = nl ? (size_t)(nl - p) : r->text_len - (size_t)(p - r->text);
		session_printable(text, sizeof(text), p, n);
		session_write_line(s, r->code, nl ? '-' : ' ', r->enh, text);
		if (nl == NULL)
			break;
		p = nl + 1;
	}
}

void
session_reject_event(struct session *s, const char *cmd, int code, const char *reason)
{
	struct evline *e = evlog_begin("reject", s->id);

	evlog_str(e, "client_ip", s->peer_ip);
	evlog_str(e, "command", cmd);
	evlog_int(e, "code", code);
	evlog_text(e, "reason", reason);
	evlog_end(e);
}

static void
session_release(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	free(arg);
}

/* session_close - end the session now; the struct is freed from the loop. */
void
session_close(struct session *s, const char *reason)
{
	struct evline *e;
	struct timeval now;

	if (s->state == S_CLOSED)
		return;
	gettimeofday(&now, NULL);
	e = evlog_begin("disconnect", s->id);
	evlog_str(e, "client_ip", s->peer_ip);
	evlog_str(e, "reason", reason);
	evlog_int(e, "transactions", s->transactions);
	evlog_int(e, "duration_ms", (now.tv_sec - s->start.tv_sec) * 1000LL +
	    (now.tv_usec - s->start.tv_usec) / 1000);
	evlog_end(e);
	inline_release(s);
	txn_free(&s->txn);
	route_free(s);
	if (s->timer != NULL)
		event_free(s->timer);
	s->timer = NULL;
	if (s->bev != NULL) {
		bufferevent_setcb(s->bev, NULL, NULL, NULL, NULL);
		bufferevent_disable(s->bev, EV_READ | EV_WRITE);
		bufferevent_free(s->bev);
	}
	if (s->ssl == NULL && s->fd >= 0)
		close(s->fd);
	s->bev = NULL;
	s->fd = -1;
	s->state = S_CLOSED;
	if (s->prev != NULL)
		s->prev->next = s->next;
	else
		session_list = s->next;
	if (s->next != NULL)
		s->next->prev = s->prev;
	listener_gone(s->listener, (struct sockaddr *)&s->accept_peer);
	if (event_base_once(s->base, -1, EV_TIMEOUT, session_release, s, NULL) < 0)
		die_bug("event_base_once failed");
}

void
session_close_all(const char *reason)
{
	while (session_list != NULL)
		session_close(session_list, reason);
}

/* session_quit - close once the replies written so far have been flushed. */
void
session_quit(struct session *s, const char *reason)
{
	if (s->state == S_CLOSED)
		return;
	inline_release(s);
	session_enter(s, S_QUIT);
	bufferevent_disable(s->bev, EV_READ);
	if (evbuffer_get_length(bufferevent_get_output(s->bev)) == 0)
		session_close(s, reason);
}

static void
session_line(struct session *s, char *line, size_t len, enum line_status ls)
{
	if (ls == LINE_BARE_LF) {
		session_reply(s, 500, "5.5.2", "Syntax error: bare <LF> received");
		session_reject_event(s, "", 500, "bare LF in command");
		return;
	}
	if (strlen(line) != len) {
		session_reply(s, 500, "5.5.2", "Syntax error: NUL character in command");
		session_reject_event(s, "", 500, "NUL in command");
		return;
	}
	cmd_dispatch(s, line, len);
}

/* One step of the command loop: 1 to go on, 0 to wait for more input. */
static int
session_command_step(struct session *s, struct evbuffer *in)
{
	static char line[65536];
	size_t len, max = (size_t)s->lc->max_command_line - 1;
	enum line_status ls;

	if (s->skipping) {
		if (!line_skip(in))
			return 0;
		s->skipping = 0;
		return 1;
	}
	ls = line_read(in, line, max, &len);
	if (ls == LINE_NEED_MORE)
		return 0;
	if (ls == LINE_TOO_LONG) {
		session_reply(s, 500, "5.5.2", "Line too long");
		session_reject_event(s, "", 500, "command line too long");
		s->skipping = 1;
		return 1;
	}
	session_line(s, line, len, ls);
	if (s->state != S_CLOSED)
		session_arm(s);
	return 1;
}

/*
 * session_input - the read loop (RFC 2920: answer pipelined commands in
 * order).  Stops while the session waits on the next hop, while the client
 * has not read its replies, and once the session ends.
 */
static void
session_input(struct session *s)
{
	struct evbuffer *in, *out;

	while (s->state != S_CLOSED && s->state != S_QUIT) {
		in = bufferevent_get_input(s->bev);
		out = bufferevent_get_output(s->bev);
		if (s->state == S_WAIT || s->state == S_STARTTLS || s->state == S_HANDSHAKE)
			return;
		if (evbuffer_get_length(out) > SESSION_OUTPUT_MAX) {
			session_pause(s, PAUSE_OUTPUT);
			return;
		}
		if (s->paused)
			return;
		if (s->state == S_DATA || s->state == S_DISCARD) {
			if (!inline_data_input(s))
				return;
			continue;
		}
		if (s->state == S_PROXY) {
			if (!session_proxy_step(s, in))
				return;
			continue;
		}
		if (!session_command_step(s, in))
			return;
		if (s->bad_commands > SESSION_BAD_MAX) {
			session_reply(s, 421, "4.7.0", "%s Error: too many errors", s->cfg->hostname);
			session_quit(s, "too many errors");
		}
	}
}

/* session_resume - the next hop answered: go on with parked input. */
void
session_resume(struct session *s)
{
	if (s->state == S_CLOSED || s->state == S_QUIT || s->paused)
		return;
	bufferevent_enable(s->bev, EV_READ);
	session_input(s);
}

/* Back-pressure: stop reading from the client for reason why. */
void
session_pause(struct session *s, int why)
{
	s->paused |= why;
	bufferevent_disable(s->bev, EV_READ);
}

void
session_unpause(struct session *s, int why)
{
	if (!(s->paused & why))
		return;
	s->paused &= ~why;
	session_resume(s);
}

static void
session_read_cb(struct bufferevent *bev, void *arg)
{
	(void)bev;
	session_input(arg);
}

/*
 * session_starttls - after "220 Ready to start TLS" (cmd.c).  RFC 3207 §4.2
 * and CVE-2011-0411: anything the client pipelined behind STARTTLS is
 * discarded; the TLS layer starts once the 220 has left.
 */
void
session_starttls(struct session *s)
{
	struct evbuffer *in = bufferevent_get_input(s->bev);

	evbuffer_drain(in, evbuffer_get_length(in));
	session_enter(s, S_STARTTLS);
	bufferevent_disable(s->bev, EV_READ);
	bufferevent_enable(s->bev, EV_WRITE);
}

static void
session_tls_begin(struct session *s)
{
	SSL *ssl = SSL_new(s->listener->server_ctx);

	bufferevent_setcb(s->bev, NULL, NULL, NULL, NULL);
	bufferevent_disable(s->bev, EV_READ | EV_WRITE);
	bufferevent_free(s->bev);
	s->bev = NULL;
	if (ssl != NULL)
		s->bev = bufferevent_openssl_socket_new(s->base, s->fd, ssl,
		    BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
	if (s->bev == NULL) {
		SSL_free(ssl);
		session_close(s, "out of memory");
		return;
	}
	s->ssl = ssl;
	bufferevent_setcb(s->bev, session_read_cb, session_write_cb, session_event_cb, s);
	bufferevent_setwatermark(s->bev, EV_READ, 0, SESSION_INPUT_MAX);
	session_enter(s, S_HANDSHAKE);
	bufferevent_enable(s->bev, EV_READ | EV_WRITE);
}

/* A client certificate, when one was asked for and offered: logged only. */
static void
session_client_cert_event(struct session *s, struct evline *e)
{
	char subject[512], issuer[512], sha[65];

	if (!s->lc->tls_ask_client_cert)
		return;
	tlsctx_peer_names(s->ssl, subject, issuer, sizeof(subject));
	evlog_bool(e, "client_cert", subject[0] != '\0');
	if (subject[0] == '\0')
		return;
	tlsctx_peer_sha256(s->ssl, sha, sizeof(sha));
	evlog_str(e, "client_cert_subject", subject);
	evlog_str(e, "client_cert_issuer", issuer);
	evlog_str(e, "client_cert_sha256", sha);
	evlog_bool(e, "client_cert_verified", SSL_get_verify_result(s->ssl) == X509_V_OK);
}

static void
session_tls_done(struct session *s)
{
	struct evline *e = evlog_begin("starttls", s->id);

	evlog_str(e, "client_ip", s->peer_ip);
	evlog_str(e, "result", "success");
	evlog_str(e, "tls_version", SSL_get_version(s->ssl));
	evlog_str(e, "tls_cipher", SSL_get_cipher_name(s->ssl));
	session_client_cert_event(s, e);
	evlog_end(e);
	/* RFC 3207 §4.2: forget everything learnt before TLS. */
	s->helo[0] = '\0';
	s->esmtp = 0;
	txn_free(&s->txn);
	session_enter(s, S_INIT);
	session_input(s);
}

static void
session_tls_failed(struct session *s)
{
	struct evline *e = evlog_begin("starttls", s->id);
	char err[256] = "";
	unsigned long code = bufferevent_get_openssl_error(s->bev);

	if (code != 0)
		ERR_error_string_n(code, err, sizeof(err));
	evlog_str(e, "client_ip", s->peer_ip);
	evlog_str(e, "result", "failure");
	evlog_str(e, "error", err[0] ? err : "connection closed during handshake");
	evlog_end(e);
	session_close(s, "TLS handshake failed");
}

static void
session_write_cb(struct bufferevent *bev, void *arg)
{
	struct session *s = arg;

	if (evbuffer_get_length(bufferevent_get_output(bev)) > 0)
		return;
	if (s->state == S_QUIT)
		session_close(s, "quit");
	else if (s->state == S_STARTTLS)
		session_tls_begin(s);
	else
		session_unpause(s, PAUSE_OUTPUT);
}

static void
session_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct session *s = arg;

	(void)bev;
	if (what & BEV_EVENT_CONNECTED) {
		session_tls_done(s);
		return;
	}
	if (s->state == S_HANDSHAKE) {
		session_tls_failed(s);
		return;
	}
	session_close(s, (what & BEV_EVENT_TIMEOUT) ? "timeout" :
	    (what & BEV_EVENT_EOF) ? "client disconnected" : "connection error");
}

/* The text form and port of an IPv4 or IPv6 socket address. */
static void
session_addr_text(const struct sockaddr *sa, char *ip, size_t iplen, int *port)
{
	const void *a;

	if (sa->sa_family == AF_INET6) {
		a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
		*port = ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
	} else {
		a = &((const struct sockaddr_in *)sa)->sin_addr;
		*port = ntohs(((const struct sockaddr_in *)sa)->sin_port);
	}
	if (inet_ntop(sa->sa_family, a, ip, (socklen_t)iplen) == NULL)
		snprintf(ip, iplen, "unknown");
}

static void
session_peer(struct session *s, const struct sockaddr *sa, int salen)
{
	memcpy(&s->peer, sa, (size_t)salen);
	session_addr_text(sa, s->peer_ip, sizeof(s->peer_ip), &s->peer_port);
}

static void
session_connect_event(struct session *s)
{
	struct evline *e = evlog_begin("connect", s->id);

	evlog_str(e, "listener", s->lc->name);
	evlog_str(e, "mode", s->lc->mode == MODE_GATEWAY ? "gateway" : "smarthost");
	evlog_str(e, "client_ip", s->peer_ip);
	evlog_int(e, "client_port", s->peer_port);
	if (s->lc->proxy_protocol != PROXY_NO) {
		char ip[INET6_ADDRSTRLEN];
		int port;

		session_addr_text((struct sockaddr *)&s->accept_peer, ip, sizeof(ip), &port);
		evlog_str(e, "proxy_ip", ip);
	}
	evlog_end(e);
}

/* The client is known: log it and greet (RFC 5321 §3.1). */
static void
session_greet(struct session *s)
{
	session_connect_event(s);
	session_enter(s, S_INIT);
	session_reply(s, 220, NULL, "%s %s", s->cfg->hostname,
	    s->lc->banner ? s->lc->banner : "ESMTP tlsrelay");
}

/*
 * PROXY protocol (proxy_protocol = v1|v2): the header comes first; the
 * client address in policy decisions, headers and events is the one the
 * balancer reports.  A connection without a valid header is dropped.
 */
static int
session_proxy_step(struct session *s, struct evbuffer *in)
{
	size_t max = PROXY_V2_HDR + PROXY_V2_MAX_PAYLOAD, avail = evbuffer_get_length(in);
	size_t n = avail < max ? avail : max;
	const char *why = "header too long";
	struct proxy_hdr hdr;
	int rc;

	rc = proxy_parse(evbuffer_pullup(in, (ssize_t)n), n,
	    s->lc->proxy_protocol == PROXY_V1 ? 1 : 2, &hdr, &why);
	if (rc == 0 && avail < max)
		return 0;
	if (rc <= 0) {
		session_reject_event(s, "PROXY", 421, why);
		session_close(s, "bad PROXY protocol header");
		return 0;
	}
	evbuffer_drain(in, (size_t)rc);
	if (!hdr.local)
		session_peer(s, (struct sockaddr *)&hdr.src, sizeof(hdr.src));
	session_greet(s);
	return 1;
}

/*
 * session_accept - a new client on l (limits already checked by the
 * listener).  Allocation failure answers 421 4.3.0 and closes.
 */
void
session_accept(struct listener *l, int fd, const struct sockaddr *sa, int salen)
{
	static const char oom[] = "421 4.3.0 Error: out of resources\r\n";
	struct session *s = calloc(1, sizeof(*s));

	if (s != NULL) {
		s->bev = bufferevent_socket_new(l->base, fd, 0);
		s->timer = evtimer_new(l->base, session_timer_cb, s);
	}
	if (s == NULL || s->bev == NULL || s->timer == NULL) {
		if (s != NULL && s->bev != NULL)
			bufferevent_free(s->bev);
		if (s != NULL && s->timer != NULL)
			event_free(s->timer);
		if (write(fd, oom, sizeof(oom) - 1) < 0)
			log_msg(LOG_WARN, "out of memory and cannot tell the client");
		close(fd);
		free(s);
		listener_gone(l, sa);
		return;
	}
	s->listener = l;
	s->cfg = l->cfg;
	s->lc = l->lc;
	s->base = l->base;
	s->fd = fd;
	s->next = session_list;
	if (session_list != NULL)
		session_list->prev = s;
	session_list = s;
	gettimeofday(&s->start, NULL);
	session_new_id(s);
	memcpy(&s->accept_peer, sa, (size_t)salen);
	session_peer(s, sa, salen);
	bufferevent_setcb(s->bev, session_read_cb, session_write_cb, session_event_cb, s);
	bufferevent_setwatermark(s->bev, EV_READ, 0, SESSION_INPUT_MAX);
	if (s->lc->proxy_protocol != PROXY_NO)
		session_enter(s, S_PROXY);
	else
		session_greet(s);
	bufferevent_enable(s->bev, EV_READ | EV_WRITE);
}
