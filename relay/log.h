/*
 * log.h - diagnostics for operators (stderr), and the three error tiers.
 *
 *   die_bug()  a broken invariant: print and abort() for a core dump.
 *   die()      a start-up or configuration error: print and exit(1).
 *   log_msg()  everything else worth telling the operator on stderr.
 *
 * Session errors are never fatal: they become an SMTP reply, an event in the
 * JSON log (relay/evlog.h) and a close.
 */
#ifndef RELAY_LOG_H
#define RELAY_LOG_H

#include <stddef.h>

#define PRINTF_LIKE(f, a) __attribute__((format(printf, f, a)))

enum log_level { LOG_ERR, LOG_WARN, LOG_INFO, LOG_DEBUG };

void log_set_level(enum log_level level);
void log_msg(enum log_level level, const char *fmt, ...) PRINTF_LIKE(2, 3);
void die(const char *fmt, ...) PRINTF_LIKE(1, 2) __attribute__((noreturn));
void die_bug(const char *fmt, ...) PRINTF_LIKE(1, 2) __attribute__((noreturn));

/* xmalloc family: allocation failure at start-up is fatal (die). */
void *xcalloc(size_t n, size_t size);
char *xstrdup(const char *s);

#endif
