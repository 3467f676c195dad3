/*
 * json.h - JSON string escaping for the event log (RFC 8259 §7).
 *
 * Attacker-supplied text (HELO names, addresses, peer replies) reaches the
 * SIEM through these functions only.  Output is always valid UTF-8 JSON:
 * control characters, quote and backslash are escaped, and every byte that is
 * not part of a well-formed UTF-8 sequence (RFC 3629: no overlongs, no
 * surrogates, nothing above U+10FFFF) is replaced by \ufffd.
 */
#ifndef RELAY_JSON_H
#define RELAY_JSON_H

#include <stddef.h>

struct evbuffer;

/* json_escape - append s[0..n) to out as a quoted JSON string. */
void json_escape(struct evbuffer *out, const char *s, size_t n);

/* json_escape_str - json_escape() of a NUL-terminated string; NULL gives null. */
void json_escape_str(struct evbuffer *out, const char *s);

/* utf8_valid - 1 when s[0..n) is well-formed UTF-8 (RFC 3629), else 0. */
int utf8_valid(const char *s, size_t n);

#endif
