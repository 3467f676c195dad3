/*
 * evlog.h - the one event emitter: JSON lines for the SIEM (DESIGN.md,
 * "Event log contract").
 *
 * Every line is one JSON object, UTF-8, escaped by relay/json.c, and always
 * carries ts (RFC 3339 UTC, milliseconds), event, host and session.  An
 * event is built with evlog_begin(), fields added, then evlog_end() writes
 * the line with one write(2) and, with [relay] syslog, one datagram to the
 * local syslog daemon.  A failed or short write drops the line for that
 * output and is counted; it never blocks or stops mail.
 *
 * Usage:
 *	struct evline *e = evlog_begin("rcpt", s->id);
 *	evlog_addr(e, "rcpt", addr);
 *	evlog_int(e, "code", 250);
 *	evlog_end(e);
 *
 * E-mail addresses go through evlog_addr() (fields that are an address) or
 * evlog_text() (free text that may quote one, such as a peer's reply), so
 * that [relay] log_addresses = hash | omit applies to every one of them.
 */
#ifndef RELAY_EVLOG_H
#define RELAY_EVLOG_H

#include <stddef.h>

struct evline;

/* evlog_open - log to path ("-" or NULL = stdout).  Returns 0 or -1 (errno). */
int evlog_open(const char *path, const char *host);
/* evlog_reopen - reopen the same path (SIGUSR1, logrotate). */
int evlog_reopen(void);
/* evlog_close - close every output; the emitter is back to its defaults
 * (stdout, no syslog, addresses logged, drop counters zero, no observer). */
void evlog_close(void);
/* evlog_dropped - lines lost to write errors since start, all outputs. */
unsigned long evlog_dropped(void);
/* evlog_drops - the same, per output: the log file (or stdout), syslog. */
void evlog_drops(unsigned long *file, unsigned long *sys);

/*
 * Syslog output ([relay] syslog).  evlog_facility_parse() maps "off",
 * "daemon", "mail", "user", "local0".."local7" (any case) to -1 (off) or
 * the LOG_* facility, and returns 0; -1 for any other name.
 * evlog_syslog_open() starts sending each line to /dev/log as well; "off"
 * stops it.  Returns 0, or -1 with errno: EINVAL (bad name), EPROTOTYPE
 * (/dev/log is a stream socket, see evlog.c).  A syslog daemon that is not
 * running yet is not an error: lines are counted as dropped and the
 * connection is retried at most once a second.
 */
int evlog_facility_parse(const char *name, int *facility);
int evlog_syslog_open(const char *facility);

/*
 * Privacy of e-mail addresses ([relay] log_addresses): "yes" logs them,
 * "hash" replaces each by "sha256:" + the first 16 hex digits of
 * SHA-256(the address in ASCII lower case), "omit" leaves the field out.
 * evlog_addr_mode_parse() returns the mode or -1; evlog_set_addr_mode()
 * returns 0 or -1 (unknown name, mode unchanged).
 */
enum evlog_addr_mode { EVLOG_ADDR_YES, EVLOG_ADDR_HASH, EVLOG_ADDR_OMIT };
int evlog_addr_mode_parse(const char *name);
int evlog_set_addr_mode(const char *name);

#define EVLOG_ADDR_HASH_LEN (7 + 16)   /* "sha256:" + 16 hex */
/* evlog_addr_hash - out = "sha256:" + 16 hex of SHA-256(lower(addr[0..n))). */
void evlog_addr_hash(const char *addr, size_t n, char out[EVLOG_ADDR_HASH_LEN + 1]);

struct evline *evlog_begin(const char *event, const char *session);
void evlog_str(struct evline *e, const char *key, const char *val);
void evlog_strn(struct evline *e, const char *key, const char *val, size_t n);
void evlog_int(struct evline *e, const char *key, long long val);
void evlog_bool(struct evline *e, const char *key, int val);
void evlog_strarr(struct evline *e, const char *key, const char *const *v, size_t n);
/*
 * evlog_addr - an e-mail address field under log_addresses: as is, hashed,
 * or left out.  "" (the null reverse-path <>) stays "" when hashed, it names
 * nobody; NULL gives null.
 */
void evlog_addr(struct evline *e, const char *key, const char *addr);
/*
 * evlog_text, evlog_textn - free text (SMTP replies, reasons) that may quote
 * an address: with hash, every word containing '@' between other characters
 * (words end at space, <>()"',;: and trailing dots) is replaced by its hash;
 * with omit, by "[address]".  With yes, the same as evlog_str/evlog_strn.
 */
void evlog_text(struct evline *e, const char *key, const char *text);
void evlog_textn(struct evline *e, const char *key, const char *text, size_t n);
void evlog_end(struct evline *e);

/*
 * What evlog_end() saw of the line it writes, for counters that must agree
 * with the log by construction (relay/metrics.c).  Strings are "" when the
 * field was absent and "?" when it was longer than the buffer; code and
 * refresh are -1 when absent.  Only these keys are recorded, and only
 * from evlog_str/evlog_int/evlog_bool (never an address or free text).
 */
struct evlog_fields {
	char event[24];
	char outcome[16];
	char result[16];
	char result_type[32];
	char cache[16];
	int code;                   /* evlog_int "code", 0..999 */
	int refresh;                /* evlog_bool "refresh" */
};

typedef void evlog_observer(const struct evlog_fields *f, void *arg);
/* evlog_set_observer - fn(fields, arg) after every line (NULL: none). */
void evlog_set_observer(evlog_observer *fn, void *arg);

#endif
