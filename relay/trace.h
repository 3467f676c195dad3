/*
 * trace.h - what the next hop learns about a message's arrival: the
 * Received: header (RFC 5321 §4.4, protocol names of RFC 3848 / RFC 6531)
 * and, on a gateway, the X-TLS-Policy: verdict header.
 *
 *   X-TLS-Policy: verdict=pass; tls=TLSv1.3; required=yes; whitelisted=yes;
 *           sender-domain=example.com; relay=mx.example.org
 *
 * verdict is "pass" (TLS was required and used), "tls" (used, not required)
 * or "plaintext" (not required, not used); a message that needed TLS and
 * did not use it never gets this far (530 at MAIL).  Any X-TLS-Policy:
 * field arriving from outside is removed, so downstream filters can trust
 * the one we add.
 */
#ifndef RELAY_TRACE_H
#define RELAY_TRACE_H

#include <stddef.h>

struct session;

#define TRACE_HEADER_NAME "X-TLS-Policy"

/* trace_headers - the header lines to prepend (CRLF-terminated) into buf. */
size_t trace_headers(const struct session *s, char *buf, size_t len);

/* trace_is_policy_field - 1 when line starts the X-TLS-Policy: field. */
int trace_is_policy_field(const char *line, size_t n);

#endif
