/*
 * evlog.c - JSON-lines event emitter (see evlog.h).
 *
 * Outputs.  The log file: one process writes one line at a time with a
 * single write(2) on an O_APPEND descriptor, so lines from several worker
 * processes never interleave (POSIX guarantees atomic appends for regular
 * files).  Syslog: the same JSON, unchanged, as the message of one datagram
 * to /dev/log, so rsyslog or syslog-ng forward it to Splunk, Elastic or
 * Sentinel as it is (their RFC 5424 forwarding templates carry it as MSG).
 *
 * Why not syslog(3).  Checked on Debian 12 (glibc 2.36) against a private
 * /dev/log: openlog(LOG_NDELAY) only connects early; the socket is a
 * *blocking* SOCK_DGRAM, and once the receiver stopped reading
 * (net.unix.max_dgram_qlen datagrams queued) syslog() sat in send() until
 * the receiver went away 7.5 s later.  If /dev/log is a stream socket,
 * glibc falls back to SOCK_STREAM, which blocks as soon as the socket
 * buffer is full.  Either way a stalled
 * syslog daemon would stall the event loop and so every session.  So this
 * file sends the datagram itself: SOCK_DGRAM | SOCK_NONBLOCK, MSG_DONTWAIT,
 * and in the very format glibc's syslog(3) writes to /dev/log
 * ("<PRI>Mmm dd hh:mm:ss tlsrelay[PID]: MSG", RFC 3164 style, which is
 * what journald, rsyslog's imuxsock and syslog-ng's unix-dgram source
 * parse).  A full queue or an absent daemon drops the line and counts it.
 * A stream /dev/log is refused (EPROTOTYPE): framing on a non-blocking
 * stream would need a buffer of its own, and every current daemon (journald,
 * rsyslog, syslog-ng's system()) offers a datagram socket.  Receivers
 * truncate long messages (rsyslog: $MaxMessageSize, default 8 KiB): raise it
 * if events with long policy strings must arrive whole.
 */
#include <syslog.h>             /* before relay/log.h: see the #undef below */

/* relay/log.h names its own levels LOG_ERR, LOG_INFO and LOG_DEBUG. */
enum { EVLOG_SEVERITY = LOG_INFO };
#undef LOG_ERR
#undef LOG_INFO
#undef LOG_DEBUG

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <openssl/evp.h>

#include "relay/evlog.h"
#include "relay/json.h"
#include "relay/log.h"

#define EVLOG_SYSLOG_PATH "/dev/log"
#define EVLOG_SYSLOG_IDENT "tlsrelay"

struct evline {
	struct evbuffer *buf;
	struct evlog_fields f;
};

static struct {
	int fd;
	char *path;
	char *host;
	unsigned long dropped_file, dropped_sys;
	struct evline line;
	enum evlog_addr_mode addr_mode;
	struct evbuffer *scratch;   /* evlog_text: the scrubbed text */
	EVP_MD_CTX *md;             /* evlog_addr_hash */
	int sys_on;                 /* syslog output configured */
	int sys_fd;                 /* -1: not connected */
	int sys_facility;
	int sys_warned;             /* the operator was told it is failing */
	time_t sys_last_try;        /* monotonic seconds of the last connect */
	evlog_observer *observer;
	void *observer_arg;
} evlog = { .fd = 1, .sys_fd = -1 };

int
evlog_open(const char *path, const char *host)
{
	free(evlog.host);
	evlog.host = xstrdup(host);
	if (evlog.line.buf == NULL && (evlog.line.buf = evbuffer_new()) == NULL)
		return -1;
	free(evlog.path);
	evlog.path = NULL;
	if (path == NULL || strcmp(path, "-") == 0) {
		evlog.fd = STDOUT_FILENO;
		return 0;
	}
	evlog.path = xstrdup(path);
	return evlog_reopen();
}

int
evlog_reopen(void)
{
	int fd;

	if (evlog.path == NULL)
		return 0;
	fd = open(evlog.path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	if (fd < 0)
		return -1;
	if (evlog.fd > STDERR_FILENO)
		close(evlog.fd);
	evlog.fd = fd;
	return 0;
}

static void
evlog_syslog_close(void)
{
	if (evlog.sys_fd >= 0)
		close(evlog.sys_fd);
	evlog.sys_fd = -1;
}

void
evlog_close(void)
{
	if (evlog.fd > STDERR_FILENO)
		close(evlog.fd);
	evlog.fd = STDOUT_FILENO;
	if (evlog.line.buf != NULL)
		evbuffer_free(evlog.line.buf);
	if (evlog.scratch != NULL)
		evbuffer_free(evlog.scratch);
	evlog.line.buf = evlog.scratch = NULL;
	EVP_MD_CTX_free(evlog.md);
	evlog.md = NULL;
	free(evlog.path);
	free(evlog.host);
	evlog.path = evlog.host = NULL;
	evlog_syslog_close();
	evlog.sys_on = evlog.sys_warned = 0;
	evlog.addr_mode = EVLOG_ADDR_YES;
	evlog.dropped_file = evlog.dropped_sys = 0;
	evlog.observer = NULL;
	evlog.observer_arg = NULL;
}

unsigned long
evlog_dropped(void)
{
	return evlog.dropped_file + evlog.dropped_sys;
}

void
evlog_drops(unsigned long *file, unsigned long *sys)
{
	*file = evlog.dropped_file;
	*sys = evlog.dropped_sys;
}

void
evlog_set_observer(evlog_observer *fn, void *arg)
{
	evlog.observer = fn;
	evlog.observer_arg = arg;
}

/* --- syslog ------------------------------------------------------------- */

static const struct {
	const char *name;
	int facility;
} evlog_facilities[] = {
	{ "daemon", LOG_DAEMON }, { "mail", LOG_MAIL }, { "user", LOG_USER },
	{ "local0", LOG_LOCAL0 }, { "local1", LOG_LOCAL1 }, { "local2", LOG_LOCAL2 },
	{ "local3", LOG_LOCAL3 }, { "local4", LOG_LOCAL4 }, { "local5", LOG_LOCAL5 },
	{ "local6", LOG_LOCAL6 }, { "local7", LOG_LOCAL7 },
};

int
evlog_facility_parse(const char *name, int *facility)
{
	size_t i;

	if (strcasecmp(name, "off") == 0) {
		*facility = -1;
		return 0;
	}
	for (i = 0; i < sizeof(evlog_facilities) / sizeof(evlog_facilities[0]); i++)
		if (strcasecmp(name, evlog_facilities[i].name) == 0) {
			*facility = evlog_facilities[i].facility;
			return 0;
		}
	return -1;
}

static time_t
evlog_monotonic(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec;
}

/* A connected non-blocking datagram socket to /dev/log, or -1 (errno). */
static int
evlog_syslog_connect(void)
{
	struct sockaddr_un sun;
	int fd, saved;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	memcpy(sun.sun_path, EVLOG_SYSLOG_PATH, sizeof(EVLOG_SYSLOG_PATH));
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0)
		return fd;
	saved = errno;
	close(fd);
	errno = saved;
	return -1;
}

/* Tell the operator once per outage, on stderr (never in the event log). */
static void
evlog_syslog_trouble(const char *what)
{
	if (evlog.sys_warned)
		return;
	evlog.sys_warned = 1;
	log_msg(LOG_WARN, "syslog %s: %s: %s; events are dropped from syslog (still written "
	    "to log_file) until it works again", what, EVLOG_SYSLOG_PATH, strerror(errno));
}

/* 1 when a socket is connected; connects at most once a second. */
static int
evlog_syslog_ready(void)
{
	time_t now;

	if (evlog.sys_fd >= 0)
		return 1;
	now = evlog_monotonic();
	if (now == evlog.sys_last_try)
		return 0;
	evlog.sys_last_try = now;
	evlog.sys_fd = evlog_syslog_connect();
	if (evlog.sys_fd < 0) {
		evlog_syslog_trouble("connect");
		return 0;
	}
	if (evlog.sys_warned)
		log_msg(LOG_INFO, "syslog: %s works again", EVLOG_SYSLOG_PATH);
	evlog.sys_warned = 0;
	return 1;
}

int
evlog_syslog_open(const char *name)
{
	int facility;

	if (evlog_facility_parse(name, &facility) < 0) {
		errno = EINVAL;
		return -1;
	}
	evlog_syslog_close();
	evlog.sys_on = facility >= 0;
	evlog.sys_facility = facility;
	evlog.sys_warned = 0;
	if (!evlog.sys_on)
		return 0;
	evlog.sys_last_try = evlog_monotonic();
	evlog.sys_fd = evlog_syslog_connect();
	if (evlog.sys_fd < 0 && errno == EPROTOTYPE) {
		evlog.sys_on = 0;
		return -1;
	}
	if (evlog.sys_fd < 0)
		evlog_syslog_trouble("connect");
	return 0;
}

/* glibc's header for /dev/log: "<PRI>Mmm dd hh:mm:ss ident[pid]: ". */
static int
evlog_syslog_header(char *buf, size_t size)
{
	time_t now = time(NULL);
	struct tm tm;
	char ts[32];

	localtime_r(&now, &tm);
	strftime(ts, sizeof(ts), "%b %e %H:%M:%S", &tm);
	return snprintf(buf, size, "<%d>%s %s[%ld]: ", evlog.sys_facility | EVLOG_SEVERITY,
	    ts, EVLOG_SYSLOG_IDENT, (long)getpid());
}

/*
 * One datagram: header + json[0..len).  Never waits: a full queue
 * (EAGAIN), an oversized line (EMSGSIZE) or a lost daemon drops the line and
 * counts it; a lost daemon also closes the socket for a later reconnect.
 */
static void
evlog_syslog_send(const unsigned char *json, size_t len)
{
	char hdr[128];
	struct iovec iov[2];
	struct msghdr msg;
	ssize_t n;
	int hlen;

	if (!evlog_syslog_ready()) {
		evlog.dropped_sys++;
		return;
	}
	hlen = evlog_syslog_header(hdr, sizeof(hdr));
	iov[0].iov_base = hdr;
	iov[0].iov_len = hlen > 0 && (size_t)hlen < sizeof(hdr) ? (size_t)hlen : 0;
	iov[1].iov_base = (void *)json;
	iov[1].iov_len = len;
	memset(&msg, 0, sizeof(msg));
	msg.msg_iov = iov;
	msg.msg_iovlen = 2;
	do
		n = sendmsg(evlog.sys_fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	if (n >= 0)
		return;
	evlog.dropped_sys++;
	if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS || errno == EMSGSIZE)
		return;
	evlog_syslog_trouble("send");
	evlog_syslog_close();
}

/* --- privacy -------------------------------------------------------------- */

static const char *const evlog_addr_mode_names[] = { "yes", "hash", "omit" };

int
evlog_addr_mode_parse(const char *name)
{
	int i;

	for (i = 0; i < 3; i++)
		if (strcasecmp(name, evlog_addr_mode_names[i]) == 0)
			return i;
	return -1;
}

int
evlog_set_addr_mode(const char *name)
{
	int m = evlog_addr_mode_parse(name);

	if (m < 0)
		return -1;
	evlog.addr_mode = (enum evlog_addr_mode)m;
	return 0;
}

void
evlog_addr_hash(const char *addr, size_t n, char out[EVLOG_ADDR_HASH_LEN + 1])
{
	static const char hex[] = "0123456789abcdef";
	unsigned char md[EVP_MAX_MD_SIZE], low[256];
	unsigned int mdlen;
	size_t i, k;

	if (evlog.md == NULL && (evlog.md = EVP_MD_CTX_new()) == NULL)
		die("out of memory");
	if (EVP_DigestInit_ex(evlog.md, EVP_sha256(), NULL) != 1)
		die_bug("evlog_addr_hash: SHA-256 unavailable");
	for (i = 0; i < n; i += k) {
		for (k = 0; k < sizeof(low) && i + k < n; k++)
			low[k] = (unsigned char)tolower((unsigned char)addr[i + k]);
		EVP_DigestUpdate(evlog.md, low, k);
	}
	EVP_DigestFinal_ex(evlog.md, md, &mdlen);
	memcpy(out, "sha256:", 7);
	for (i = 0; i < 8; i++) {
		out[7 + 2 * i] = hex[md[i] >> 4];
		out[8 + 2 * i] = hex[md[i] & 0xf];
	}
	out[EVLOG_ADDR_HASH_LEN] = '\0';
}

/* --- building a line ---------------------------------------------------------- */

static void
evlog_key(struct evline *e, const char *key)
{
	evbuffer_add(e->buf, ",", 1);
	json_escape_str(e->buf, key);
	evbuffer_add(e->buf, ":", 1);
}

/* RFC 3339 UTC with milliseconds: 2026-12-04T16:00:00.123Z */
static void
evlog_ts(struct evbuffer *buf)
{
	struct timeval tv;
	struct tm tm;
	char ts[32];

	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
	evbuffer_add_printf(buf, "{\"ts\":\"%s.%03ldZ\"", ts, (long)(tv.tv_usec / 1000));
}

static void
evlog_fields_reset(struct evlog_fields *f)
{
	memset(f, 0, sizeof(*f));
	f->code = f->refresh = -1;
}

/* Keep val when key is one evlog_fields records; "?" when it does not fit. */
static void
evlog_capture(struct evline *e, const char *key, const char *val)
{
	static const struct {
		const char *key;
		size_t off, size;
	} rec[] = {
#define F(name) { #name, offsetof(struct evlog_fields, name), \
		    sizeof(((struct evlog_fields *)0)->name) }
		F(event), F(outcome), F(result), F(result_type), F(cache),
#undef F
	};
	size_t i, len;
	char *dst;

	if (val == NULL)
		return;
	for (i = 0; i < sizeof(rec) / sizeof(rec[0]); i++) {
		if (strcmp(key, rec[i].key) != 0)
			continue;
		dst = (char *)&e->f + rec[i].off;
		len = strlen(val);
		if (len >= rec[i].size) {
			val = "?";
			len = 1;
		}
		memcpy(dst, val, len + 1);
		return;
	}
}

struct evline *
evlog_begin(const char *event, const char *session)
{
	struct evline *e = &evlog.line;

	if (e->buf == NULL && (e->buf = evbuffer_new()) == NULL)
		die("out of memory");
	evbuffer_drain(e->buf, evbuffer_get_length(e->buf));
	evlog_fields_reset(&e->f);
	evlog_ts(e->buf);
	evlog_str(e, "event", event);
	evlog_str(e, "host", evlog.host != NULL ? evlog.host : "");
	evlog_str(e, "session", session != NULL ? session : "");
	return e;
}

void
evlog_str(struct evline *e, const char *key, const char *val)
{
	evlog_key(e, key);
	json_escape_str(e->buf, val);
	evlog_capture(e, key, val);
}

void
evlog_strn(struct evline *e, const char *key, const char *val, size_t n)
{
	evlog_key(e, key);
	json_escape(e->buf, val, n);
}

void
evlog_int(struct evline *e, const char *key, long long val)
{
	evlog_key(e, key);
	evbuffer_add_printf(e->buf, "%lld", val);
	if (strcmp(key, "code") == 0)
		e->f.code = val >= 0 && val <= 999 ? (int)val : -1;
}

void
evlog_bool(struct evline *e, const char *key, int val)
{
	evlog_key(e, key);
	evbuffer_add_printf(e->buf, "%s", val ? "true" : "false");
	if (strcmp(key, "refresh") == 0)
		e->f.refresh = val != 0;
}

void
evlog_strarr(struct evline *e, const char *key, const char *const *v, size_t n)
{
	size_t i;

	evlog_key(e, key);
	evbuffer_add(e->buf, "[", 1);
	for (i = 0; i < n; i++) {
		if (i > 0)
			evbuffer_add(e->buf, ",", 1);
		json_escape_str(e->buf, v[i]);
	}
	evbuffer_add(e->buf, "]", 1);
}

void
evlog_addr(struct evline *e, const char *key, const char *addr)
{
	char h[EVLOG_ADDR_HASH_LEN + 1];

	switch (evlog.addr_mode) {
	case EVLOG_ADDR_OMIT:
		return;
	case EVLOG_ADDR_HASH:
		if (addr != NULL && addr[0] != '\0') {
			evlog_addr_hash(addr, strlen(addr), h);
			addr = h;
		}
		break;
	case EVLOG_ADDR_YES:
		break;
	}
	evlog_key(e, key);
	json_escape_str(e->buf, addr);
}

/* Characters that end a word of free text when looking for addresses. */
static int
evlog_word_end(unsigned char c)
{
	return c <= ' ' || strchr("<>()\"',;:", c) != NULL;
}

/* 1 when t[0..n) holds '@' with something on either side. */
static int
evlog_is_addr(const char *t, size_t n)
{
	const char *at = n > 2 ? memchr(t + 1, '@', n - 2) : NULL;

	return at != NULL;
}

/* Append t[0..n) to out with each address word replaced (evlog_text). */
static void
evlog_scrub(struct evbuffer *out, const char *t, size_t n)
{
	char h[EVLOG_ADDR_HASH_LEN + 1];
	size_t i = 0, start, end;

	while (i < n) {
		for (start = i; i < n && !evlog_word_end((unsigned char)t[i]); i++)
			;
		for (end = i; end > start && t[end - 1] == '.'; end--)
			;
		if (evlog_is_addr(t + start, end - start)) {
			if (evlog.addr_mode == EVLOG_ADDR_HASH) {
				evlog_addr_hash(t + start, end - start, h);
				evbuffer_add(out, h, EVLOG_ADDR_HASH_LEN);
			} else
				evbuffer_add(out, "[address]", 9);
			start = end;
		}
		evbuffer_add(out, t + start, i - start);
		if (i < n)
			evbuffer_add(out, t + i++, 1);
	}
}

void
evlog_textn(struct evline *e, const char *key, const char *text, size_t n)
{
	size_t len;

	if (text == NULL) {
		evlog_key(e, key);
		json_escape_str(e->buf, NULL);
		return;
	}
	if (evlog.addr_mode == EVLOG_ADDR_YES || memchr(text, '@', n) == NULL) {
		evlog_key(e, key);
		json_escape(e->buf, text, n);
		return;
	}
	if (evlog.scratch == NULL && (evlog.scratch = evbuffer_new()) == NULL)
		die("out of memory");
	evlog_scrub(evlog.scratch, text, n);
	len = evbuffer_get_length(evlog.scratch);
	evlog_key(e, key);
	json_escape(e->buf, (const char *)evbuffer_pullup(evlog.scratch, (ssize_t)len), len);
	evbuffer_drain(evlog.scratch, len);
}

void
evlog_text(struct evline *e, const char *key, const char *text)
{
	evlog_textn(e, key, text, text != NULL ? strlen(text) : 0);
}

/* --- writing ------------------------------------------------------------- */

static void
evlog_write_file(const unsigned char *p, size_t len)
{
	ssize_t n;

	do
		n = write(evlog.fd, p, len);
	while (n < 0 && errno == EINTR);
	if (n < 0 || (size_t)n != len)
		evlog.dropped_file++;
}

/*
 * The line goes to the file, then (without its newline) to syslog; the
 * observer sees it last, so a drop it reads is already counted.
 */
void
evlog_end(struct evline *e)
{
	size_t len;
	unsigned char *p;

	evbuffer_add(e->buf, "}\n", 2);
	len = evbuffer_get_length(e->buf);
	p = evbuffer_pullup(e->buf, (ssize_t)len);
	evlog_write_file(p, len);
	if (evlog.sys_on)
		evlog_syslog_send(p, len - 1);
	if (evlog.observer != NULL)
		evlog.observer(&e->f, evlog.observer_arg);
	evbuffer_drain(e->buf, len);
}
