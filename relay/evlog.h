/*
 * evlog.h - the one event emitter: JSON lines for the SIEM (DESIGN.md,
 * "Event log contract").
 *
 * Every line is one JSON object, UTF-8, escaped by relay/json.c, and always
 * carries ts (RFC 3339 UTC, milliseconds), event, host and session.  An
 * event is built with evlog_begin(), fields added, then evlog_end() writes
 * the line with one write(2).  A failed or short write drops the line and is
 * counted; it never blocks or stops mail.
 *
 * Usage:
 *	struct evline *e = evlog_begin("rcpt", s->id);
 *	evlog_str(e, "rcpt", addr);
 *	evlog_int(e, "code", 250);
 *	evlog_end(e);
 */
#ifndef RELAY_EVLOG_H
#define RELAY_EVLOG_H

#include <stddef.h>

struct evline;

/* evlog_open - log to path ("-" or NULL = stdout).  Returns 0 or -1 (errno). */
int evlog_open(const char *path, const char *host);
/* evlog_reopen - reopen the same path (SIGUSR1, logrotate). */
int evlog_reopen(void);
void evlog_close(void);
/* evlog_dropped - lines lost to write errors since start. */
unsigned long evlog_dropped(void);

struct evline *evlog_begin(const char *event, const char *session);
void evlog_str(struct evline *e, const char *key, const char *val);
void evlog_strn(struct evline *e, const char *key, const char *val, size_t n);
void evlog_int(struct evline *e, const char *key, long long val);
void evlog_bool(struct evline *e, const char *key, int val);
void evlog_strarr(struct evline *e, const char *key, const char *const *v, size_t n);
void evlog_end(struct evline *e);

#endif
