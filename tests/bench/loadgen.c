/*
 * loadgen.c - SMTP load generator for the tlsrelay benchmark (tests/bench/run).
 *
 * One process, one libevent loop, non-blocking sockets.  -c N slots each run
 * SMTP sessions back to back against HOST:PORT: connect (TCP_NODELAY), read
 * the greeting, EHLO, optionally STARTTLS and EHLO again (--resume offers the
 * slot's last TLS session), then -m messages of -s bytes to -r recipients
 * each, then QUIT.  With --pipeline (RFC 2920, when the server offers it)
 * MAIL, the RCPTs and DATA leave in one write; the message and its final dot
 * always leave in one write.  The run ends after -n messages in all or after
 * -d seconds: no transaction starts after that, the ones under way finish.
 *
 * --idle: each slot connects, does STARTTLS (with --tls) and EHLO, and then
 * holds the session.  At most --ramp sessions are being set up at a time.
 * "READY sessions=N failed=F" is printed once every slot is idle or failed;
 * the sessions are held until SIGTERM/SIGINT or --hold seconds.
 *
 * Output: readable lines, then one "RESULT key=value ..." line for scripts:
 * messages completed, msgs/s (completed / time from start to the last 250),
 * latency p50/p90/p99/max per message (from writing MAIL to the 250 after the
 * final dot), errors by reply code or kind (connect, eof, tls, timeout,
 * proto), TLS handshakes and resumptions, and this process's own CPU time
 * (getrusage), to show that it costs less than what it measures.
 *
 * Exit status: 0 when there was no error, 1 when there was one, 2 for usage.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/util.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#define LG_LINE_MAX    1024          /* longest reply line accepted */
#define LG_ADDR_MAX    256           /* longest --from / --to */
#define LG_RCPT_MAX    1000          /* -r ceiling */
#define LG_ERR_KINDS   32            /* distinct error labels counted */
#define LG_LINE_BYTES  78            /* body line incl. CRLF */
#define LG_NEED_MORE   (-1)
#define LG_TOO_LONG    (-2)

enum lg_state {
	ST_CONNECT, ST_GREETING, ST_EHLO, ST_STARTTLS, ST_HANDSHAKE, ST_IDLE,
	ST_MAIL, ST_RCPT, ST_DATA, ST_PIPE, ST_BODY, ST_QUIT
};

struct lg_opts {
	struct sockaddr_storage addr;
	int addrlen;
	char host[256];
	int conc, rcpts, ramp, timeout;
	int tls, resume, pipeline, idle;
	long count, per_conn, size, max_errors;
	double duration, hold;
	const char *from, *to, *ca, *helo;
};

struct lg_err {
	char label[16];
	long n;
};

struct lg_lat {
	uint32_t *v;                 /* microseconds */
	size_t n, cap;
};

struct lg_stats {
	long started, done, errors, conns, handshakes, resumed;
	struct lg_err err[LG_ERR_KINDS];
	int nerr;
	struct lg_lat lat;           /* per message: MAIL to the 250 after the dot */
	struct lg_lat setup;         /* per session: connect to the last EHLO's 250 */
	double t0, tlast;
};

struct lg;

struct slot {
	struct lg *lg;
	int fd;
	unsigned gen;                /* bumped whenever bev changes */
	struct bufferevent *bev;
	SSL *ssl;
	SSL_SESSION *sess;           /* --resume: last session the server gave */
	enum lg_state state;
	int active, tls_on, can_starttls, can_pipeline;
	long msgs;                   /* completed in this session */
	int rcpt_sent, pending;
	char fail[16];               /* first failed reply of a pipelined group */
	double t_mail, t_conn;
};

struct lg {
	struct lg_opts o;
	struct lg_stats st;
	struct event_base *base;
	SSL_CTX *ctx;
	struct slot *slots;
	char *msg, *cmdbuf;
	size_t msglen, cmdcap;
	int stopping, grace, active, next, ready_printed;
	long idle_ready, idle_failed;
	struct event *ev_int, *ev_term, *ev_timer;
};

static void slot_start(struct slot *s);
static void slot_txn_begin(struct slot *s);
static void lg_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void slot_send(struct slot *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static double
lg_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
lg_die(const char *fmt, ...)
{
	va_list ap;

	fputs("loadgen: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(2);
}

/* ---- statistics ------------------------------------------------------ */

/* Count one error under label (a reply code or a kind). */
static void
lg_error(struct lg *lg, const char *label)
{
	struct lg_stats *st = &lg->st;
	int i;

	st->errors++;
	for (i = 0; i < st->nerr; i++)
		if (strcmp(st->err[i].label, label) == 0)
			break;
	if (i == st->nerr) {
		if (st->nerr == LG_ERR_KINDS)
			i = LG_ERR_KINDS - 1;     /* last slot collects the rest */
		else
			snprintf(st->err[st->nerr++].label, sizeof(st->err[0].label), "%s", label);
	}
	st->err[i].n++;
	if (lg->o.max_errors > 0 && st->errors >= lg->o.max_errors && !lg->stopping) {
		fprintf(stderr, "loadgen: %ld errors, stopping\n", st->errors);
		lg->stopping = 1;
	}
}

static void
lg_record(struct lg_lat *l, double secs)
{
	uint32_t *n;

	if (l->n == l->cap) {
		l->cap = l->cap ? l->cap * 2 : 4096;
		if ((n = realloc(l->v, l->cap * sizeof(*n))) == NULL)
			lg_die("out of memory");
		l->v = n;
	}
	l->v[l->n++] = secs * 1e6 > UINT32_MAX ? UINT32_MAX : (uint32_t)(secs * 1e6);
}

static int
lg_cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

/* Nearest-rank percentile q (0..1) of sorted latencies, in ms. */
static double
lg_pct(const struct lg_lat *l, double q)
{
	size_t i;

	if (l->n == 0)
		return 0;
	i = (size_t)(q * (double)l->n + 0.999999);
	i = i == 0 ? 0 : i - 1;
	if (i >= l->n)
		i = l->n - 1;
	return l->v[i] / 1000.0;
}

static void
lg_report_lat(const char *what, struct lg_lat *l)
{
	if (l->n > 0)
		qsort(l->v, l->n, sizeof(*l->v), lg_cmp_u32);
	printf("%s: p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms\n", what,
	    lg_pct(l, 0.5), lg_pct(l, 0.9), lg_pct(l, 0.99), lg_pct(l, 1.0));
}

static void
lg_report_errors(const struct lg_stats *st)
{
	int i;

	printf("errors: %ld", st->errors);
	for (i = 0; i < st->nerr; i++)
		printf("%s%s x%ld", i ? ", " : " (", st->err[i].label, st->err[i].n);
	printf("%s\n", st->nerr ? ")" : "");
}

static void
lg_report(struct lg *lg)
{
	struct lg_stats *st = &lg->st;
	struct rusage ru;
	double secs, rate, cpu, usr, sys;

	secs = (st->tlast > 0 ? st->tlast : lg_now()) - st->t0;
	rate = secs > 0 ? (double)st->done / secs : 0;
	getrusage(RUSAGE_SELF, &ru);
	usr = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6;
	sys = (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
	cpu = usr + sys;
	printf("loadgen: %ld messages in %.3f s = %.1f msgs/s (%d sessions, %ld msg/session, "
	    "%ld bytes, %d rcpt%s%s%s)\n", st->done, secs, rate, lg->o.conc, lg->o.per_conn,
	    lg->o.size, lg->o.rcpts, lg->o.tls ? ", tls" : "", lg->o.resume ? ", resume" : "",
	    lg->o.pipeline ? ", pipelined" : "");
	lg_report_lat("latency", &st->lat);
	lg_report_lat("session setup", &st->setup);
	lg_report_errors(st);
	printf("sessions: %ld connections, %ld TLS handshakes, %ld resumed\n", st->conns,
	    st->handshakes, st->resumed);
	if (lg->o.idle)
		printf("idle: %ld sessions held, %ld failed\n", lg->idle_ready, lg->idle_failed);
	printf("cpu: %.3f s (user %.3f, sys %.3f) = %.3f ms/msg, %.0f%% of one core\n", cpu, usr,
	    sys, st->done ? cpu * 1000 / (double)st->done : 0, secs > 0 ? cpu * 100 / secs : 0);
	printf("RESULT msgs=%ld secs=%.3f rate=%.1f p50_ms=%.2f p99_ms=%.2f setup_p50_ms=%.2f "
	    "setup_p99_ms=%.2f errors=%ld handshakes=%ld resumed=%ld cpu_ms=%.0f idle=%ld\n",
	    st->done, secs, rate, lg_pct(&st->lat, 0.5), lg_pct(&st->lat, 0.99),
	    lg_pct(&st->setup, 0.5), lg_pct(&st->setup, 0.99), st->errors, st->handshakes,
	    st->resumed, cpu * 1000, lg->idle_ready);
	fflush(stdout);
}

/* ---- the message ------------------------------------------------------ */

/*
 * The message, exactly o->size bytes of headers and CRLF lines (none starts
 * with a dot, so no dot-stuffing), then the final ".\r\n".  Lines are spread
 * evenly so that every size from the header length up can be met exactly.
 */
static char *
lg_message_new(const struct lg_opts *o, size_t *len)
{
	char *m = malloc((size_t)o->size + 4), *p;
	int h;
	long rem, k, i, line;

	if (m == NULL)
		lg_die("out of memory");
	h = snprintf(m, (size_t)o->size + 4, "From: <%s>\r\nTo: <%s>\r\n"
	    "Subject: tlsrelay benchmark\r\nDate: Thu, 01 Jan 2026 00:00:00 +0000\r\n"
	    "Message-ID: <bench@loadgen.bench.test>\r\n\r\n", o->from, o->to);
	rem = o->size - h;
	if (h < 0 || rem < 0 || rem == 1)
		lg_die("-s %ld: too small for the headers (%d bytes)", o->size, h);
	p = m + h;
	k = (rem + LG_LINE_BYTES - 1) / LG_LINE_BYTES;
	for (i = 0; i < k; i++) {
		line = rem / k + (i < rem % k);
		memset(p, 'x', (size_t)line - 2);
		memcpy(p + line - 2, "\r\n", 2);
		p += line;
	}
	memcpy(p, ".\r\n", 3);
	*len = (size_t)o->size + 3;
	return m;
}

/* ---- TLS ----------------------------------------------------------------- */

/* --resume: keep the newest session the server sent to this slot. */
static int
lg_new_session(SSL *ssl, SSL_SESSION *sess)
{
	struct slot *s = SSL_get_app_data(ssl);

	if (s == NULL)
		return 0;
	SSL_SESSION_free(s->sess);
	s->sess = sess;
	return 1;
}

static SSL_CTX *
lg_ssl_ctx(const struct lg_opts *o)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

	if (ctx == NULL)
		lg_die("SSL_CTX_new failed");
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	if (o->ca != NULL) {
		if (SSL_CTX_load_verify_locations(ctx, o->ca, NULL) != 1)
			lg_die("cannot load CA file %s", o->ca);
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	}
	if (o->resume) {
		/* Sessions live in the slots only; nothing is kept in the context. */
		SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT |
		    SSL_SESS_CACHE_NO_INTERNAL_STORE);
		SSL_CTX_sess_set_new_cb(ctx, lg_new_session);
	} else {
		SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	}
	return ctx;
}

/* A new SSL for slot s: resumption and, with --ca, the name or IP check. */
static SSL *
lg_ssl_new(struct slot *s)
{
	SSL *ssl = SSL_new(s->lg->ctx);
	const char *host = s->lg->o.host;
	int ok = 1;

	if (ssl == NULL)
		return NULL;
	SSL_set_app_data(ssl, s);
	if (s->lg->o.resume && s->sess != NULL)
		SSL_set_session(ssl, s->sess);
	if (s->lg->o.ca != NULL && X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host) != 1)
		ok = SSL_set1_host(ssl, host) == 1 && SSL_set_tlsext_host_name(ssl, host) == 1;
	if (!ok) {
		SSL_free(ssl);
		return NULL;
	}
	return ssl;
}

/* ---- slots: I/O ------------------------------------------------------- */

static void
slot_send(struct slot *s, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	evbuffer_add_vprintf(bufferevent_get_output(s->bev), fmt, ap);
	va_end(ap);
}

static void
slot_timeouts(struct slot *s, int on)
{
	struct timeval tv = { s->lg->o.timeout, 0 };

	bufferevent_set_timeouts(s->bev, on ? &tv : NULL, on ? &tv : NULL);
}

/* Free the connection; a TLS session stays resumable (we did QUIT). */
static void
slot_close(struct slot *s)
{
	if (s->ssl != NULL)
		SSL_set_shutdown(s->ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
	if (s->bev != NULL)
		bufferevent_free(s->bev);
	if (s->ssl == NULL && s->fd >= 0)
		close(s->fd);         /* the TLS bufferevent closed it otherwise */
	s->bev = NULL;
	s->ssl = NULL;
	s->fd = -1;
	s->gen++;
}

static int
lg_more_work(const struct lg *lg)
{
	return !lg->stopping && (lg->o.count == 0 || lg->st.started < lg->o.count);
}

static void
lg_finish(struct lg *lg)
{
	event_base_loopbreak(lg->base);
}

static void
lg_hold_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	lg_finish(arg);
}

/* --idle: keep --ramp set-ups in flight; announce when all are settled. */
static void
lg_idle_progress(struct lg *lg)
{
	long settled = lg->idle_ready + lg->idle_failed;
	struct timeval tv;

	while (lg->next < lg->o.conc && lg->next - settled < lg->o.ramp)
		slot_start(&lg->slots[lg->next++]);
	if (settled < lg->o.conc || lg->ready_printed)
		return;
	lg->ready_printed = 1;
	printf("READY sessions=%ld failed=%ld secs=%.3f\n", lg->idle_ready, lg->idle_failed,
	    lg_now() - lg->st.t0);
	fflush(stdout);
	if (lg->o.hold > 0) {
		tv.tv_sec = (time_t)lg->o.hold;
		tv.tv_usec = (suseconds_t)((lg->o.hold - (double)tv.tv_sec) * 1e6);
		evtimer_del(lg->ev_timer);
		evtimer_assign(lg->ev_timer, lg->base, lg_hold_cb, lg);
		evtimer_add(lg->ev_timer, &tv);
	}
}

/*
 * The session on slot s is over: err is NULL after QUIT, else the error
 * label.  The slot starts a new session while there is work, else retires.
 */
static void
slot_end(struct slot *s, const char *err)
{
	struct lg *lg = s->lg;
	int retire = s->state == ST_CONNECT;   /* no hot loop on connect errors */

	if (err != NULL)
		lg_error(lg, err);
	if (lg->o.idle && s->state == ST_IDLE)
		lg->idle_ready--;
	slot_close(s);
	if (lg->o.idle) {
		lg->idle_failed++;
		s->active = 0;
		lg->active--;
		lg_idle_progress(lg);
		return;
	}
	if (!retire && lg_more_work(lg)) {
		slot_start(s);
		return;
	}
	s->active = 0;
	if (--lg->active == 0)
		lg_finish(lg);
}

static void
slot_fail_code(struct slot *s, int code)
{
	char label[16];

	snprintf(label, sizeof(label), "%d", code);
	slot_end(s, label);
}

/* ---- slots: the SMTP dialogue ----------------------------------------- */

static void
slot_ehlo(struct slot *s)
{
	s->can_starttls = s->can_pipeline = 0;
	slot_send(s, "EHLO %s\r\n", s->lg->o.helo);
	s->state = ST_EHLO;
}

static void slot_install(struct slot *s);

/* 220 to STARTTLS: hand the socket to OpenSSL (nothing is buffered). */
static void
slot_tls_begin(struct slot *s)
{
	SSL *ssl = lg_ssl_new(s);

	bufferevent_setcb(s->bev, NULL, NULL, NULL, NULL);
	bufferevent_disable(s->bev, EV_READ | EV_WRITE);
	bufferevent_free(s->bev);
	s->bev = NULL;
	s->gen++;
	if (ssl != NULL)
		s->bev = bufferevent_openssl_socket_new(s->lg->base, s->fd, ssl,
		    BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE);
	if (s->bev == NULL) {
		SSL_free(ssl);
		slot_end(s, "tls");
		return;
	}
	s->ssl = ssl;
	s->state = ST_HANDSHAKE;
	slot_install(s);
}

static void
slot_after_ehlo(struct slot *s)
{
	struct lg *lg = s->lg;

	if (lg->o.tls && !s->tls_on) {
		if (!s->can_starttls) {
			slot_end(s, "nostarttls");
			return;
		}
		slot_send(s, "STARTTLS\r\n");
		s->state = ST_STARTTLS;
		return;
	}
	lg_record(&lg->st.setup, lg_now() - s->t_conn);
	if (!lg->o.idle) {
		slot_txn_begin(s);
		return;
	}
	s->state = ST_IDLE;
	slot_timeouts(s, 0);
	lg->idle_ready++;
	lg_idle_progress(lg);
}

/* MAIL, every RCPT and DATA in one write (RFC 2920 §3.1). */
static void
slot_send_pipelined(struct slot *s)
{
	struct lg *lg = s->lg;
	size_t n;
	int i;

	n = (size_t)snprintf(lg->cmdbuf, lg->cmdcap, "MAIL FROM:<%s>\r\n", lg->o.from);
	for (i = 0; i < lg->o.rcpts; i++)
		n += (size_t)snprintf(lg->cmdbuf + n, lg->cmdcap - n, "RCPT TO:<%.*s%.0d%s>\r\n",
		    (int)strcspn(lg->o.to, "@"), lg->o.to, i, lg->o.to + strcspn(lg->o.to, "@"));
	n += (size_t)snprintf(lg->cmdbuf + n, lg->cmdcap - n, "DATA\r\n");
	evbuffer_add(bufferevent_get_output(s->bev), lg->cmdbuf, n);
	s->pending = lg->o.rcpts + 2;
	s->fail[0] = '\0';
	s->state = ST_PIPE;
}

/* Recipient i: --to itself for 0, local part + i for the others (user1@...). */
static void
slot_send_rcpt(struct slot *s)
{
	const char *to = s->lg->o.to;
	int at = (int)strcspn(to, "@");

	slot_send(s, "RCPT TO:<%.*s%.0d%s>\r\n", at, to, s->rcpt_sent, to + at);
	s->rcpt_sent++;
	s->state = ST_RCPT;
}

static void
slot_txn_begin(struct slot *s)
{
	struct lg *lg = s->lg;

	if (s->msgs >= lg->o.per_conn || !lg_more_work(lg)) {
		slot_send(s, "QUIT\r\n");
		s->state = ST_QUIT;
		return;
	}
	lg->st.started++;
	s->t_mail = lg_now();
	s->rcpt_sent = 0;
	if (lg->o.pipeline && s->can_pipeline) {
		slot_send_pipelined(s);
		return;
	}
	slot_send(s, "MAIL FROM:<%s>\r\n", lg->o.from);
	s->state = ST_MAIL;
}

static void
slot_body(struct slot *s)
{
	evbuffer_add_reference(bufferevent_get_output(s->bev), s->lg->msg, s->lg->msglen,
	    NULL, NULL);
	s->state = ST_BODY;
}

static void
slot_msg_done(struct slot *s)
{
	struct lg *lg = s->lg;
	double now = lg_now();

	lg_record(&lg->st.lat, now - s->t_mail);
	lg->st.done++;
	lg->st.tlast = now;
	s->msgs++;
	slot_txn_begin(s);
}

/* One reply of a pipelined group: 2xx to MAIL and RCPTs, 354 to DATA. */
static void
slot_pipe_reply(struct slot *s, int code)
{
	int last = --s->pending == 0;
	int ok = last ? code == 354 : code / 100 == 2;

	if (!ok && s->fail[0] == '\0')
		snprintf(s->fail, sizeof(s->fail), "%d", code);
	if (!last)
		return;
	if (s->fail[0] != '\0') {
		slot_end(s, s->fail);  /* closing also aborts a DATA that got 354 */
		return;
	}
	slot_body(s);
}

static int
slot_expect(struct slot *s, int code, int want)
{
	if (code == want || (want == 250 && code == 251))
		return 1;
	slot_fail_code(s, code);
	return 0;
}

/* A complete reply (its last line) arrived: act on it for the state. */
static void
slot_reply(struct slot *s, int code)
{
	switch (s->state) {
	case ST_GREETING:
		if (slot_expect(s, code, 220))
			slot_ehlo(s);
		break;
	case ST_EHLO:
		if (slot_expect(s, code, 250))
			slot_after_ehlo(s);
		break;
	case ST_STARTTLS:
		if (slot_expect(s, code, 220))
			slot_tls_begin(s);
		break;
	case ST_MAIL:
		if (slot_expect(s, code, 250))
			slot_send_rcpt(s);
		break;
	case ST_RCPT:
		if (!slot_expect(s, code, 250))
			break;
		if (s->rcpt_sent < s->lg->o.rcpts) {
			slot_send_rcpt(s);
			break;
		}
		slot_send(s, "DATA\r\n");
		s->state = ST_DATA;
		break;
	case ST_DATA:
		if (slot_expect(s, code, 354))
			slot_body(s);
		break;
	case ST_PIPE:
		slot_pipe_reply(s, code);
		break;
	case ST_BODY:
		if (slot_expect(s, code, 250))
			slot_msg_done(s);
		break;
	case ST_QUIT:
		slot_end(s, NULL);
		break;
	default:
		slot_fail_code(s, code);       /* e.g. 421 while idle */
		break;
	}
}

/* EHLO keyword lines: "250-PIPELINING", "250 STARTTLS". */
static void
slot_capability(struct slot *s, const char *line)
{
	const char *kw = line + 4;

	if (strncasecmp(kw, "STARTTLS", 8) == 0 && (kw[8] == '\0' || kw[8] == ' '))
		s->can_starttls = 1;
	if (strncasecmp(kw, "PIPELINING", 10) == 0 && (kw[10] == '\0' || kw[10] == ' '))
		s->can_pipeline = 1;
}

/*
 * One CRLF line from in into buf (NUL-terminated, without the CRLF).
 * Returns its length, LG_NEED_MORE when no full line is there, or
 * LG_TOO_LONG.
 */
static int
lg_getline(struct evbuffer *in, char *buf, size_t max)
{
	size_t eol = 0;
	struct evbuffer_ptr p = evbuffer_search_eol(in, NULL, &eol, EVBUFFER_EOL_CRLF);

	if (p.pos < 0)
		return evbuffer_get_length(in) >= max ? LG_TOO_LONG : LG_NEED_MORE;
	if ((size_t)p.pos >= max)
		return LG_TOO_LONG;
	evbuffer_remove(in, buf, (size_t)p.pos);
	buf[p.pos] = '\0';
	evbuffer_drain(in, eol);
	return (int)p.pos;
}

/* Returns 1 when the line ended a reply (*code set), 0 otherwise, -1 bad. */
static int
slot_line(struct slot *s, const char *line, int len, int *code)
{
	if (len < 3 || line[0] < '2' || line[0] > '5' || line[1] < '0' || line[1] > '9' ||
	    line[2] < '0' || line[2] > '9' || (len > 3 && line[3] != ' ' && line[3] != '-'))
		return -1;
	if (s->state == ST_EHLO && len > 4)
		slot_capability(s, line);
	*code = atoi(line);
	return len == 3 || line[3] == ' ';
}

static void
slot_read_cb(struct bufferevent *bev, void *arg)
{
	struct slot *s = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	unsigned gen = s->gen;
	char line[LG_LINE_MAX];
	int n, code = 0, r;

	while (s->gen == gen && (n = lg_getline(in, line, sizeof(line))) != LG_NEED_MORE) {
		r = n < 0 ? -1 : slot_line(s, line, n, &code);
		if (r < 0) {
			slot_end(s, "proto");
			return;
		}
		if (r == 1)
			slot_reply(s, code);
	}
}

static void
slot_log_ssl_error(struct slot *s)
{
	static int shown;
	unsigned long e = ERR_get_error();
	char buf[256];

	if (e == 0 || shown++ >= 5)
		return;
	ERR_error_string_n(e, buf, sizeof(buf));
	fprintf(stderr, "loadgen: TLS error (state %d): %s\n", s->state, buf);
	ERR_clear_error();
}

static void
slot_connected(struct slot *s)
{
	struct lg *lg = s->lg;

	if (s->state == ST_CONNECT) {
		lg->st.conns++;
		s->state = ST_GREETING;
		return;
	}
	if (s->state != ST_HANDSHAKE)
		return;
	lg->st.handshakes++;
	lg->st.resumed += SSL_session_reused(s->ssl) == 1;
	s->tls_on = 1;
	slot_ehlo(s);
}

static void
slot_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct slot *s = arg;

	(void)bev;
	if (what & BEV_EVENT_CONNECTED) {
		slot_connected(s);
		return;
	}
	if (what & BEV_EVENT_TIMEOUT)
		slot_end(s, "timeout");
	else if (s->state == ST_QUIT)
		slot_end(s, NULL);               /* closed after 221: fine */
	else if (s->state == ST_CONNECT)
		slot_end(s, "connect");
	else if (s->state == ST_HANDSHAKE) {
		slot_log_ssl_error(s);
		slot_end(s, "tls");
	} else
		slot_end(s, (what & BEV_EVENT_EOF) ? "eof" : "error");
}

static void
slot_install(struct slot *s)
{
	bufferevent_setcb(s->bev, slot_read_cb, NULL, slot_event_cb, s);
	slot_timeouts(s, 1);
	bufferevent_enable(s->bev, EV_READ | EV_WRITE);
}

/* A new session on slot s: non-blocking connect with TCP_NODELAY. */
static void
slot_start(struct slot *s)
{
	struct lg *lg = s->lg;
	int one = 1;

	if (!s->active) {
		s->active = 1;
		lg->active++;
	}
	s->state = ST_CONNECT;
	s->tls_on = 0;
	s->msgs = 0;
	s->t_conn = lg_now();
	s->fd = socket(lg->o.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (s->fd < 0) {
		fprintf(stderr, "loadgen: socket: %s\n", strerror(errno));
		slot_end(s, "socket");
		return;
	}
	setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	s->bev = bufferevent_socket_new(lg->base, s->fd, 0);
	s->gen++;
	if (s->bev == NULL) {
		slot_end(s, "socket");
		return;
	}
	slot_install(s);
	if (bufferevent_socket_connect(s->bev, (struct sockaddr *)&lg->o.addr,
	    lg->o.addrlen) < 0)
		slot_end(s, "connect");
}

/* ---- run control ------------------------------------------------------ */

static void
lg_signal_cb(evutil_socket_t sig, short what, void *arg)
{
	(void)sig;
	(void)what;
	lg_finish(arg);
}

/*
 * -d: the first expiry stops new transactions; the second, --timeout
 * seconds later, ends the run even if sessions are still busy.
 */
static void
lg_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	struct lg *lg = arg;
	struct timeval tv = { lg->o.timeout, 0 };

	(void)fd;
	(void)what;
	if (lg->grace) {
		fprintf(stderr, "loadgen: sessions still busy %d s after the deadline\n",
		    lg->o.timeout);
		lg_finish(lg);
		return;
	}
	lg->stopping = lg->grace = 1;
	evtimer_add(lg->ev_timer, &tv);
}

static void
lg_setup_events(struct lg *lg)
{
	struct timeval tv;

	lg->ev_int = evsignal_new(lg->base, SIGINT, lg_signal_cb, lg);
	lg->ev_term = evsignal_new(lg->base, SIGTERM, lg_signal_cb, lg);
	lg->ev_timer = evtimer_new(lg->base, lg_deadline_cb, lg);
	if (lg->ev_int == NULL || lg->ev_term == NULL || lg->ev_timer == NULL)
		lg_die("cannot create events");
	evsignal_add(lg->ev_int, NULL);
	evsignal_add(lg->ev_term, NULL);
	if (lg->o.duration > 0 && !lg->o.idle) {
		tv.tv_sec = (time_t)lg->o.duration;
		tv.tv_usec = (suseconds_t)((lg->o.duration - (double)tv.tv_sec) * 1e6);
		evtimer_add(lg->ev_timer, &tv);
	}
}

static void
lg_run(struct lg *lg)
{
	int i;

	lg->st.t0 = lg_now();
	for (i = 0; i < lg->o.conc; i++) {
		lg->slots[i].lg = lg;
		lg->slots[i].fd = -1;
	}
	if (lg->o.idle) {
		lg_idle_progress(lg);
	} else {
		for (i = 0; i < lg->o.conc; i++)
			slot_start(&lg->slots[i]);
	}
	event_base_dispatch(lg->base);
}

/* ---- options ----------------------------------------------------------- */

static void
lg_usage(void)
{
	fprintf(stderr,
	    "usage: loadgen [options] HOST:PORT\n"
	    "  -c, --concurrency N   parallel sessions (1)\n"
	    "  -n, --count N         messages in all (0 = no limit; then -d is needed)\n"
	    "  -d, --duration SECS   start no transaction after SECS\n"
	    "  -m, --per-conn N      messages per session (1)\n"
	    "  -s, --size BYTES      message size (10240)\n"
	    "  -r, --rcpts N         recipients per message (1)\n"
	    "      --tls             STARTTLS (required)\n"
	    "      --resume          offer each slot's previous TLS session\n"
	    "      --pipeline        MAIL, RCPTs and DATA in one write (if offered)\n"
	    "      --idle            connect, STARTTLS, EHLO and hold (see --hold, --ramp)\n"
	    "      --hold SECS       --idle: end after holding SECS (0 = until SIGTERM)\n"
	    "      --ramp N          --idle: session set-ups in flight (200)\n"
	    "      --from ADDR       envelope sender (loadgen@bench.test)\n"
	    "      --to ADDR         recipient; more get the index appended (user@example.org)\n"
	    "      --helo NAME       EHLO name (loadgen.bench.test)\n"
	    "      --ca FILE         verify the server certificate against FILE\n"
	    "      --timeout SECS    per-reply timeout (60)\n"
	    "      --max-errors N    stop after N errors (100; 0 = never)\n");
	exit(2);
}

static long
lg_num(const char *s, long min, long max, const char *what)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || *s == '\0' || *end != '\0' || v < min || v > max)
		lg_die("%s: bad value '%s' (%ld..%ld)", what, s, min, max);
	return v;
}

static double
lg_secs(const char *s, const char *what)
{
	char *end;
	double v = strtod(s, &end);

	if (*s == '\0' || *end != '\0' || v < 0 || v > 1e6)
		lg_die("%s: bad value '%s'", what, s);
	return v;
}

enum { O_TLS = 256, O_RESUME, O_PIPE, O_IDLE, O_HOLD, O_RAMP, O_FROM, O_TO, O_HELO, O_CA,
	O_TIMEOUT, O_MAXERR };

static const struct option lg_longopts[] = {
	{ "concurrency", required_argument, NULL, 'c' },
	{ "count", required_argument, NULL, 'n' },
	{ "duration", required_argument, NULL, 'd' },
	{ "per-conn", required_argument, NULL, 'm' },
	{ "size", required_argument, NULL, 's' },
	{ "rcpts", required_argument, NULL, 'r' },
	{ "tls", no_argument, NULL, O_TLS },
	{ "resume", no_argument, NULL, O_RESUME },
	{ "pipeline", no_argument, NULL, O_PIPE },
	{ "idle", no_argument, NULL, O_IDLE },
	{ "hold", required_argument, NULL, O_HOLD },
	{ "ramp", required_argument, NULL, O_RAMP },
	{ "from", required_argument, NULL, O_FROM },
	{ "to", required_argument, NULL, O_TO },
	{ "helo", required_argument, NULL, O_HELO },
	{ "ca", required_argument, NULL, O_CA },
	{ "timeout", required_argument, NULL, O_TIMEOUT },
	{ "max-errors", required_argument, NULL, O_MAXERR },
	{ NULL, 0, NULL, 0 }
};

static void
lg_opt(struct lg_opts *o, int c, const char *arg)
{
	switch (c) {
	case 'c': o->conc = (int)lg_num(arg, 1, 1000000, "-c"); break;
	case 'n': o->count = lg_num(arg, 0, LONG_MAX, "-n"); break;
	case 'd': o->duration = lg_secs(arg, "-d"); break;
	case 'm': o->per_conn = lg_num(arg, 1, LONG_MAX, "-m"); break;
	case 's': o->size = lg_num(arg, 1, 1L << 30, "-s"); break;
	case 'r': o->rcpts = (int)lg_num(arg, 1, LG_RCPT_MAX, "-r"); break;
	case O_TLS: o->tls = 1; break;
	case O_RESUME: o->resume = 1; break;
	case O_PIPE: o->pipeline = 1; break;
	case O_IDLE: o->idle = 1; break;
	case O_HOLD: o->hold = lg_secs(arg, "--hold"); break;
	case O_RAMP: o->ramp = (int)lg_num(arg, 1, 1000000, "--ramp"); break;
	case O_FROM: o->from = arg; break;
	case O_TO: o->to = arg; break;
	case O_HELO: o->helo = arg; break;
	case O_CA: o->ca = arg; break;
	case O_TIMEOUT: o->timeout = (int)lg_num(arg, 1, 86400, "--timeout"); break;
	case O_MAXERR: o->max_errors = lg_num(arg, 0, LONG_MAX, "--max-errors"); break;
	default: lg_usage();
	}
}

static void
lg_target(struct lg_opts *o, const char *hostport)
{
	const char *colon = strrchr(hostport, ':');
	size_t n;

	o->addrlen = sizeof(o->addr);
	if (colon == NULL || evutil_parse_sockaddr_port(hostport, (struct sockaddr *)&o->addr,
	    &o->addrlen) < 0)
		lg_die("bad HOST:PORT '%s'", hostport);
	n = (size_t)(colon - hostport);
	if (hostport[0] == '[' && n >= 2) {
		hostport++;
		n -= 2;
	}
	snprintf(o->host, sizeof(o->host), "%.*s", (int)n, hostport);
}

static void
lg_options(struct lg_opts *o, int argc, char **argv)
{
	int c;

	*o = (struct lg_opts){ .conc = 1, .per_conn = 1, .size = 10240, .rcpts = 1,
	    .ramp = 200, .timeout = 60, .max_errors = 100, .from = "loadgen@bench.test",
	    .to = "user@example.org", .helo = "loadgen.bench.test" };
	while ((c = getopt_long(argc, argv, "c:n:d:m:s:r:", lg_longopts, NULL)) != -1)
		lg_opt(o, c, optarg);
	if (optind != argc - 1)
		lg_usage();
	lg_target(o, argv[optind]);
	if (!o->idle && o->count == 0 && o->duration == 0)
		lg_die("give -n or -d");
	if (o->resume && !o->tls)
		lg_die("--resume needs --tls");
	if (strlen(o->from) > LG_ADDR_MAX || strlen(o->to) > LG_ADDR_MAX)
		lg_die("address longer than %d", LG_ADDR_MAX);
}

int
main(int argc, char **argv)
{
	static struct lg lg;

	lg_options(&lg.o, argc, argv);
	signal(SIGPIPE, SIG_IGN);
	if ((lg.base = event_base_new()) == NULL)
		lg_die("event_base_new failed");
	if (lg.o.tls)
		lg.ctx = lg_ssl_ctx(&lg.o);
	lg.msg = lg_message_new(&lg.o, &lg.msglen);
	lg.cmdcap = (size_t)(lg.o.rcpts + 2) * (LG_ADDR_MAX + 32);
	lg.slots = calloc((size_t)lg.o.conc, sizeof(*lg.slots));
	lg.cmdbuf = malloc(lg.cmdcap);
	if (lg.slots == NULL || lg.cmdbuf == NULL)
		lg_die("out of memory");
	lg_setup_events(&lg);
	lg_run(&lg);
	lg_report(&lg);
	return lg.st.errors > 0;
}
