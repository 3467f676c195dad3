/*
 * trace.c - Received: and X-TLS-Policy: header fields.  See trace.h.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "policy/whitelist.h"
#include "relay/listener.h"
#include "relay/session.h"
#include "relay/trace.h"

/* RFC 3848 / RFC 6531 §4.3 "with" protocol names. */
static const char *
trace_protocol(const struct session *s)
{
	int tls = session_tls_active(s);

	if (s->txn != NULL && s->txn->params.smtputf8)
		return tls ? "UTF8SMTPS" : "UTF8SMTP";
	if (!s->esmtp)
		return tls ? "SMTPS" : "SMTP";
	return tls ? "ESMTPS" : "ESMTP";
}

/* RFC 5322 §3.3 date-time, UTC. */
static void
trace_date(char *buf, size_t len)
{
	time_t now = time(NULL);
	struct tm tm;

	gmtime_r(&now, &tm);
	strftime(buf, len, "%a, %d %b %Y %H:%M:%S +0000 (UTC)", &tm);
}

static size_t
trace_received(const struct session *s, char *buf, size_t len)
{
	char date[64], tls[200] = "", rcpt[SMTP_PATH_MAX + 16] = "";
	int n;

	trace_date(date, sizeof(date));
	if (session_tls_active(s))
		snprintf(tls, sizeof(tls), "\r\n\t(using %s with cipher %s (%d/%d bits))",
		    SSL_get_version(s->ssl), SSL_get_cipher_name(s->ssl),
		    SSL_get_cipher_bits(s->ssl, NULL), SSL_get_cipher_bits(s->ssl, NULL));
	/* Like Postfix: "for" only with one recipient, so Bcc stays private. */
	if (s->txn != NULL && s->txn->naccepted == 1)
		snprintf(rcpt, sizeof(rcpt), "\r\n\tfor <%s>", s->txn->first_rcpt);
	n = snprintf(buf, len, "Received: from %s ([%s])%s\r\n\tby %s (tlsrelay) with %s id %s%s;"
	    "\r\n\t%s\r\n", s->helo[0] ? s->helo : "unknown", s->peer_ip, tls, s->cfg->hostname,
	    trace_protocol(s), s->id, rcpt, date);
	return n < 0 || (size_t)n >= len ? 0 : (size_t)n;
}

static size_t
trace_policy(const struct session *s, char *buf, size_t len)
{
	const char *domain = s->txn ? s->txn->from.domain : "";
	int tls = session_tls_active(s);
	int listed = domain[0] && whitelist_match(s->listener->whitelist, domain);
	int required = s->lc->require_tls == REQUIRE_TLS_YES ||
	    (s->lc->require_tls == REQUIRE_TLS_WHITELIST && listed);
	int n;

	n = snprintf(buf, len, "%s: verdict=%s; tls=%s; required=%s; whitelisted=%s;\r\n"
	    "\tsender-domain=%s; relay=%s\r\n", TRACE_HEADER_NAME,
	    tls ? (required ? "pass" : "tls") : "plaintext",
	    tls ? SSL_get_version(s->ssl) : "none", required ? "yes" : "no",
	    listed ? "yes" : "no", domain[0] ? domain : "none", s->cfg->hostname);
	return n < 0 || (size_t)n >= len ? 0 : (size_t)n;
}

size_t
trace_headers(const struct session *s, char *buf, size_t len)
{
	size_t n;

	if (!s->lc->trace_headers)
		return 0;
	n = trace_received(s, buf, len);
	if (s->lc->mode == MODE_GATEWAY)
		n += trace_policy(s, buf + n, len - n);
	return n;
}

/* field-name ":" (RFC 5322 §2.2; obsolete WSP before the colon, §4.5). */
int
trace_is_policy_field(const char *line, size_t n)
{
	size_t k = sizeof(TRACE_HEADER_NAME) - 1;

	if (n <= k || strncasecmp(line, TRACE_HEADER_NAME, k) != 0)
		return 0;
	while (k < n && (line[k] == ' ' || line[k] == '\t'))
		k++;
	return k < n && line[k] == ':';
}
