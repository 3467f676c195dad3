/*
 * sink.c - a fast SMTP sink for the tlsrelay benchmark (tests/bench/run): the
 * far side of both the relay and Postfix.
 *
 * One process, one libevent loop.  Accepts every connection, sender and
 * recipient; offers PIPELINING and, unless --no-tls, STARTTLS (RFC 3207;
 * whatever the client pipelined behind STARTTLS is discarded).  A message is
 * read up to its final "<CRLF>.<CRLF>" by a matcher that never copies the
 * data, counted, and thrown away; the 250 is sent at once.  Replies to
 * pipelined commands leave in one write.
 *
 * Counters: messages, message bytes (up to and including the final dot
 * line), connections, TLS handshakes, resumed handshakes, sessions open, and
 * the wall-clock time (ms since the epoch) of the first and the last message.
 * They are written as one "key=value ..." line to --stats FILE every
 * --interval seconds (atomically: temporary file, then rename) and printed
 * on stdout at SIGTERM/SIGINT, after which the sink exits 0.  SIGUSR1 writes
 * the file at once.
 *
 * Exit status: 0 after a signal, 1 when it cannot start, 2 for usage.
 */
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#define SINK_LINE_MAX   2048      /* longest command line (RFC 5321: 512 + params) */
#define SINK_TIMEOUT    300       /* seconds without input or output progress */

enum sconn_state { C_CMD, C_DATA, C_STARTTLS, C_HANDSHAKE, C_QUIT };

struct sink_counters {
	unsigned long long msgs, bytes, conns, tls, resumed, active;
	long long first_ms, last_ms;
};

struct sink {
	struct event_base *base;
	SSL_CTX *ctx;                /* NULL with --no-tls */
	struct evconnlistener *lev;
	struct sink_counters n;
	const char *stats, *hostname;
	double interval;
	struct event *ev_int, *ev_term, *ev_usr1, *ev_tick;
};

struct sconn {
	struct sink *sk;
	int fd;
	struct bufferevent *bev;
	SSL *ssl;
	enum sconn_state state;
	int match;                   /* bytes of "\r\n.\r\n" matched so far */
	size_t msgbytes;
};

static void sink_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void sconn_send(struct sconn *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void sconn_install(struct sconn *c);

static void
sink_die(const char *fmt, ...)
{
	va_list ap;

	fputs("sink: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

static long long
sink_now_ms(void)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	return (long long)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

/* ---- counters --------------------------------------------------------- */

static void
sink_format(const struct sink_counters *n, FILE *f)
{
	fprintf(f, "msgs=%llu bytes=%llu conns=%llu tls=%llu resumed=%llu active=%llu "
	    "first_ms=%lld last_ms=%lld\n", n->msgs, n->bytes, n->conns, n->tls, n->resumed,
	    n->active, n->first_ms, n->last_ms);
}

/* Replace --stats atomically, so a reader never sees half a line. */
static void
sink_stats_write(const struct sink *sk)
{
	char tmp[4096];
	FILE *f;

	if (sk->stats == NULL)
		return;
	snprintf(tmp, sizeof(tmp), "%s.tmp", sk->stats);
	if ((f = fopen(tmp, "w")) == NULL) {
		fprintf(stderr, "sink: %s: %s\n", tmp, strerror(errno));
		return;
	}
	sink_format(&sk->n, f);
	if (fclose(f) != 0 || rename(tmp, sk->stats) != 0)
		fprintf(stderr, "sink: %s: %s\n", sk->stats, strerror(errno));
}

static void
sink_message(struct sink *sk, size_t bytes)
{
	long long now = sink_now_ms();

	sk->n.msgs++;
	sk->n.bytes += bytes;
	if (sk->n.first_ms == 0)
		sk->n.first_ms = now;
	sk->n.last_ms = now;
}

/* ---- connections ------------------------------------------------------ */

static void
sconn_send(struct sconn *c, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	evbuffer_add_vprintf(bufferevent_get_output(c->bev), fmt, ap);
	va_end(ap);
}

static void
sconn_free(struct sconn *c)
{
	if (c->bev != NULL)
		bufferevent_free(c->bev);   /* closes fd (and frees SSL) */
	else if (c->fd >= 0)
		close(c->fd);
	c->sk->n.active--;
	free(c);
}

/* The plain bufferevent does not own the fd, so STARTTLS can take it over. */
static void
sconn_tls_begin(struct sconn *c)
{
	SSL *ssl = SSL_new(c->sk->ctx);

	bufferevent_setcb(c->bev, NULL, NULL, NULL, NULL);
	bufferevent_disable(c->bev, EV_READ | EV_WRITE);
	bufferevent_free(c->bev);
	c->bev = NULL;
	if (ssl != NULL)
		c->bev = bufferevent_openssl_socket_new(c->sk->base, c->fd, ssl,
		    BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
	if (c->bev == NULL) {
		SSL_free(ssl);
		sconn_free(c);
		return;
	}
	c->ssl = ssl;
	c->state = C_HANDSHAKE;
	sconn_install(c);
}

static void
sconn_ehlo(struct sconn *c)
{
	sconn_send(c, "250-%s\r\n250-PIPELINING\r\n250-SIZE 1073741824\r\n250-8BITMIME\r\n%s"
	    "250 ENHANCEDSTATUSCODES\r\n", c->sk->hostname,
	    c->sk->ctx != NULL && c->ssl == NULL ? "250-STARTTLS\r\n" : "");
}

/* RFC 3207 §4.2: drop anything pipelined behind STARTTLS; TLS once 220 left. */
static void
sconn_starttls(struct sconn *c)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);

	if (c->sk->ctx == NULL || c->ssl != NULL) {
		sconn_send(c, "503 5.5.1 STARTTLS not available\r\n");
		return;
	}
	sconn_send(c, "220 2.0.0 Ready to start TLS\r\n");
	evbuffer_drain(in, evbuffer_get_length(in));
	c->state = C_STARTTLS;
	bufferevent_disable(c->bev, EV_READ);
}

static int
sconn_is(const char *line, const char *cmd)
{
	size_t n = strlen(cmd);

	return strncasecmp(line, cmd, n) == 0 && (line[n] == '\0' || line[n] == ' ' ||
	    line[n] == ':');
}

/* One command line: reply, and change state for DATA, STARTTLS and QUIT. */
static void
sconn_command(struct sconn *c, const char *line)
{
	if (sconn_is(line, "EHLO"))
		sconn_ehlo(c);
	else if (sconn_is(line, "HELO"))
		sconn_send(c, "250 %s\r\n", c->sk->hostname);
	else if (sconn_is(line, "MAIL"))
		sconn_send(c, "250 2.1.0 Ok\r\n");
	else if (sconn_is(line, "RCPT"))
		sconn_send(c, "250 2.1.5 Ok\r\n");
	else if (sconn_is(line, "DATA")) {
		sconn_send(c, "354 End data with <CR><LF>.<CR><LF>\r\n");
		c->state = C_DATA;
		c->match = 2;            /* the DATA line's CRLF starts the match */
		c->msgbytes = 0;
	} else if (sconn_is(line, "RSET") || sconn_is(line, "NOOP"))
		sconn_send(c, "250 2.0.0 Ok\r\n");
	else if (sconn_is(line, "STARTTLS"))
		sconn_starttls(c);
	else if (sconn_is(line, "QUIT")) {
		sconn_send(c, "221 2.0.0 Bye\r\n");
		c->state = C_QUIT;
		bufferevent_disable(c->bev, EV_READ);
	} else
		sconn_send(c, "502 5.5.2 Error: command not recognized\r\n");
}

/*
 * Advance the "\r\n.\r\n" matcher over p[0..n).  Returns 1 with *used = the
 * bytes up to and including the terminator when it ends here, else 0 with
 * *used = n.  The pattern's only self-overlap is a '\r' restarting it.
 */
static int
sconn_scan(struct sconn *c, const char *p, size_t n, size_t *used)
{
	static const char pat[] = "\r\n.\r\n";
	const char *cr;
	size_t i = 0;

	while (i < n) {
		if (c->match == 0) {
			if ((cr = memchr(p + i, '\r', n - i)) == NULL)
				break;
			i = (size_t)(cr - p);
		}
		if (p[i] == pat[c->match])
			c->match++;
		else
			c->match = p[i] == '\r';
		i++;
		if (c->match == 5) {
			*used = i;
			return 1;
		}
	}
	*used = n;
	return 0;
}

/* Consume message data; returns 1 when the message ended (250 sent). */
static int
sconn_data(struct sconn *c, struct evbuffer *in)
{
	struct evbuffer_iovec v[16];
	int i, nv;
	size_t used, total;

	while ((nv = evbuffer_peek(in, -1, NULL, v, 16)) > 0) {
		total = 0;
		for (i = 0; i < nv && i < 16; i++) {
			if (sconn_scan(c, v[i].iov_base, v[i].iov_len, &used)) {
				total += used;
				evbuffer_drain(in, total);
				sink_message(c->sk, c->msgbytes + total);
				sconn_send(c, "250 2.0.0 Ok: queued\r\n");
				c->state = C_CMD;
				return 1;
			}
			total += used;
		}
		evbuffer_drain(in, total);
		c->msgbytes += total;
	}
	return 0;
}

/*
 * One CRLF line into buf (NUL-terminated, no CRLF): its length, -1 when no
 * full line is there yet, -2 when too long.
 */
static int
sconn_getline(struct evbuffer *in, char *buf, size_t max)
{
	size_t eol = 0;
	struct evbuffer_ptr p = evbuffer_search_eol(in, NULL, &eol, EVBUFFER_EOL_CRLF);

	if (p.pos < 0)
		return evbuffer_get_length(in) >= max ? -2 : -1;
	if ((size_t)p.pos >= max)
		return -2;
	evbuffer_remove(in, buf, (size_t)p.pos);
	buf[p.pos] = '\0';
	evbuffer_drain(in, eol);
	return (int)p.pos;
}

static void
sconn_tls_done(struct sconn *c)
{
	c->sk->n.tls++;
	c->sk->n.resumed += SSL_session_reused(c->ssl) == 1;
	c->state = C_CMD;
}

static void
sconn_read_cb(struct bufferevent *bev, void *arg)
{
	struct sconn *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	char line[SINK_LINE_MAX];
	int n;

	if (c->state == C_HANDSHAKE)
		sconn_tls_done(c);      /* data before the CONNECTED event */
	while (c->state == C_CMD || c->state == C_DATA) {
		if (c->state == C_DATA) {
			if (!sconn_data(c, in))
				return;
			continue;
		}
		if ((n = sconn_getline(in, line, sizeof(line))) == -1)
			return;
		if (n == -2) {
			sconn_free(c);
			return;
		}
		sconn_command(c, line);
	}
}

/* Output drained: the 220 to STARTTLS or the 221 to QUIT has left. */
static void
sconn_write_cb(struct bufferevent *bev, void *arg)
{
	struct sconn *c = arg;

	(void)bev;
	if (c->state == C_STARTTLS)
		sconn_tls_begin(c);
	else if (c->state == C_QUIT)
		sconn_free(c);
}

static void
sconn_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct sconn *c = arg;

	(void)bev;
	if (what & BEV_EVENT_CONNECTED) {
		if (c->state == C_HANDSHAKE)
			sconn_tls_done(c);
		return;
	}
	ERR_clear_error();
	sconn_free(c);
}

static void
sconn_install(struct sconn *c)
{
	struct timeval tv = { SINK_TIMEOUT, 0 };

	bufferevent_setcb(c->bev, sconn_read_cb, sconn_write_cb, sconn_event_cb, c);
	bufferevent_set_timeouts(c->bev, &tv, &tv);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

static void
sink_accept_cb(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa,
    int salen, void *arg)
{
	struct sink *sk = arg;
	struct sconn *c = calloc(1, sizeof(*c));
	int one = 1;

	(void)lev;
	(void)sa;
	(void)salen;
	if (c == NULL || (c->bev = bufferevent_socket_new(sk->base, fd, 0)) == NULL) {
		free(c);
		close(fd);
		return;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->sk = sk;
	c->fd = fd;
	sk->n.conns++;
	sk->n.active++;
	sconn_install(c);
	sconn_send(c, "220 %s ESMTP sink\r\n", sk->hostname);
}

/* ---- setup ------------------------------------------------------------ */

static SSL_CTX *
sink_ssl_ctx(const char *cert, const char *key)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

	if (ctx == NULL)
		sink_die("SSL_CTX_new failed");
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1)
		sink_die("cannot load certificate %s", cert);
	if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1)
		sink_die("cannot load key %s", key);
	SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"sink", 4);
	return ctx;
}

static void
sink_signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct sink *sk = arg;

	(void)what;
	sink_stats_write(sk);
	if (sig == SIGUSR1)
		return;
	event_base_loopbreak(sk->base);
}

static void
sink_tick_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	sink_stats_write(arg);
}

static void
sink_events(struct sink *sk)
{
	struct timeval tv;

	sk->ev_int = evsignal_new(sk->base, SIGINT, sink_signal_cb, sk);
	sk->ev_term = evsignal_new(sk->base, SIGTERM, sink_signal_cb, sk);
	sk->ev_usr1 = evsignal_new(sk->base, SIGUSR1, sink_signal_cb, sk);
	sk->ev_tick = event_new(sk->base, -1, EV_PERSIST, sink_tick_cb, sk);
	if (sk->ev_int == NULL || sk->ev_term == NULL || sk->ev_usr1 == NULL ||
	    sk->ev_tick == NULL)
		sink_die("cannot create events");
	evsignal_add(sk->ev_int, NULL);
	evsignal_add(sk->ev_term, NULL);
	evsignal_add(sk->ev_usr1, NULL);
	tv.tv_sec = (time_t)sk->interval;
	tv.tv_usec = (suseconds_t)((sk->interval - (double)tv.tv_sec) * 1e6);
	if (sk->stats != NULL)
		event_add(sk->ev_tick, &tv);
}

static void
sink_listen(struct sink *sk, const char *addr)
{
	struct sockaddr_storage ss;
	int len = sizeof(ss);

	if (evutil_parse_sockaddr_port(addr, (struct sockaddr *)&ss, &len) < 0)
		sink_die("bad listen address '%s'", addr);
	sk->lev = evconnlistener_new_bind(sk->base, sink_accept_cb, sk,
	    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 4096, (struct sockaddr *)&ss, len);
	if (sk->lev == NULL)
		sink_die("cannot listen on %s: %s", addr, strerror(errno));
}

static void
sink_usage(void)
{
	fprintf(stderr,
	    "usage: sink [-l ADDR:PORT] [--cert FILE --key FILE | --no-tls]\n"
	    "            [--stats FILE] [--interval SECS] [--hostname NAME]\n"
	    "  -l, --listen ADDR:PORT  (127.0.0.1:10025)\n");
	exit(2);
}

static const struct option sink_longopts[] = {
	{ "listen", required_argument, NULL, 'l' },
	{ "cert", required_argument, NULL, 'C' },
	{ "key", required_argument, NULL, 'K' },
	{ "no-tls", no_argument, NULL, 'N' },
	{ "stats", required_argument, NULL, 'S' },
	{ "interval", required_argument, NULL, 'I' },
	{ "hostname", required_argument, NULL, 'H' },
	{ NULL, 0, NULL, 0 }
};

int
main(int argc, char **argv)
{
	static struct sink sk = { .hostname = "sink.bench.test", .interval = 1 };
	const char *listen = "127.0.0.1:10025", *cert = NULL, *key = NULL;
	int c, notls = 0;

	while ((c = getopt_long(argc, argv, "l:", sink_longopts, NULL)) != -1) {
		switch (c) {
		case 'l': listen = optarg; break;
		case 'C': cert = optarg; break;
		case 'K': key = optarg; break;
		case 'N': notls = 1; break;
		case 'S': sk.stats = optarg; break;
		case 'I': sk.interval = atof(optarg); break;
		case 'H': sk.hostname = optarg; break;
		default: sink_usage();
		}
	}
	if (optind != argc || sk.interval <= 0 || (!notls && (cert == NULL || key == NULL)))
		sink_usage();
	signal(SIGPIPE, SIG_IGN);
	if ((sk.base = event_base_new()) == NULL)
		sink_die("event_base_new failed");
	if (!notls)
		sk.ctx = sink_ssl_ctx(cert, key);
	sink_listen(&sk, listen);
	sink_events(&sk);
	sink_stats_write(&sk);
	event_base_dispatch(sk.base);
	sink_format(&sk.n, stdout);
	return 0;
}
