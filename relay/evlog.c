/*
 * evlog.c - JSON-lines event emitter (see evlog.h).
 *
 * One process writes one line at a time with a single write(2) on an
 * O_APPEND descriptor, so lines from several worker processes never
 * interleave (POSIX guarantees atomic appends for regular files).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "relay/evlog.h"
#include "relay/json.h"
#include "relay/log.h"

struct evline {
	struct evbuffer *buf;
};

static struct {
	int fd;
	char *path;
	char *host;
	unsigned long dropped;
	struct evline line;
} evlog = { .fd = 1 };

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

void
evlog_close(void)
{
	if (evlog.fd > STDERR_FILENO)
		close(evlog.fd);
	evlog.fd = STDOUT_FILENO;
	if (evlog.line.buf != NULL)
		evbuffer_free(evlog.line.buf);
	evlog.line.buf = NULL;
	free(evlog.path);
	free(evlog.host);
	evlog.path = evlog.host = NULL;
}

unsigned long
evlog_dropped(void)
{
	return evlog.dropped;
}

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

struct evline *
evlog_begin(const char *event, const char *session)
{
	struct evline *e = &evlog.line;

	if (e->buf == NULL && (e->buf = evbuffer_new()) == NULL)
		die("out of memory");
	evbuffer_drain(e->buf, evbuffer_get_length(e->buf));
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
}

void
evlog_bool(struct evline *e, const char *key, int val)
{
	evlog_key(e, key);
	evbuffer_add_printf(e->buf, "%s", val ? "true" : "false");
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
evlog_end(struct evline *e)
{
	size_t len;
	ssize_t n;
	unsigned char *p;

	evbuffer_add(e->buf, "}\n", 2);
	len = evbuffer_get_length(e->buf);
	p = evbuffer_pullup(e->buf, (ssize_t)len);
	do
		n = write(evlog.fd, p, len);
	while (n < 0 && errno == EINTR);
	if (n < 0 || (size_t)n != len)
		evlog.dropped++;
	evbuffer_drain(e->buf, len);
}
