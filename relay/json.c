/*
 * json.c - JSON string escaping for the event log (RFC 8259 §7, RFC 3629).
 *
 * Owns: turning arbitrary bytes (attacker-supplied HELO names, addresses, peer
 * replies) into one quoted JSON string that is valid UTF-8 whatever the input,
 * and the UTF-8 well-formedness check the SMTP parsers share.
 *
 * Output contract:
 *   - '"' and '\' are escaped; \b \f \n \r \t use their short forms and every
 *     other control character (U+0000..U+001F, U+007F) becomes \u00XX;
 *   - U+2028 and U+2029 become \u2028 / \u2029 (valid raw in JSON, but they
 *     end lines for some JavaScript-based log viewers);
 *   - a well-formed UTF-8 sequence is copied unchanged;
 *   - each byte that does not start a well-formed sequence is replaced by one
 *     \ufffd, and scanning resumes at the next byte (so "\xE2\x82A" gives
 *     \ufffd\ufffdA);
 *   - '/' is not escaped (RFC 8259 allows it raw).
 * Nothing is allocated beyond what evbuffer_add needs for the output.
 */
#include <stdio.h>
#include <string.h>

#include <event2/buffer.h>

#include "relay/json.h"

/*
 * RFC 3629 §4:
 *   UTF8-2 = %xC2-DF UTF8-tail
 *   UTF8-3 = %xE0 %xA0-BF UTF8-tail / %xE1-EC 2( UTF8-tail ) /
 *            %xED %x80-9F UTF8-tail / %xEE-EF 2( UTF8-tail )
 *   UTF8-4 = %xF0 %x90-BF 2( UTF8-tail ) / %xF1-F3 3( UTF8-tail ) /
 *            %xF4 %x80-8F 2( UTF8-tail )
 *   UTF8-tail = %x80-BF
 * utf8_lead - the sequence length for lead byte c (0 when c cannot lead) and
 * the allowed range of the second byte, which is where overlongs, surrogates
 * and code points above U+10FFFF are excluded.
 */
static size_t
utf8_lead(unsigned char c, unsigned char *lo, unsigned char *hi)
{
	*lo = 0x80;
	*hi = 0xBF;
	if (c < 0x80)
		return 1;
	if (c >= 0xC2 && c <= 0xDF)
		return 2;
	if (c == 0xE0)
		*lo = 0xA0;
	else if (c == 0xED)
		*hi = 0x9F;
	if (c >= 0xE0 && c <= 0xEF)
		return 3;
	if (c == 0xF0)
		*lo = 0x90;
	else if (c == 0xF4)
		*hi = 0x8F;
	if (c >= 0xF0 && c <= 0xF4)
		return 4;
	return 0;
}

/* utf8_seq_len - length of the well-formed sequence at s[0..n), 0 if none. */
static size_t
utf8_seq_len(const unsigned char *s, size_t n)
{
	unsigned char lo, hi;
	size_t len, i;

	len = utf8_lead(s[0], &lo, &hi);
	if (len == 0 || len > n)
		return 0;
	if (len > 1 && (s[1] < lo || s[1] > hi))
		return 0;
	for (i = 2; i < len; i++)
		if (s[i] < 0x80 || s[i] > 0xBF)
			return 0;
	return len;
}

int
utf8_valid(const char *s, size_t n)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t i = 0, len;

	while (i < n) {
		len = utf8_seq_len(u + i, n - i);
		if (len == 0)
			return 0;
		i += len;
	}
	return 1;
}

/*
 * json_short_escape - the two-character escape for c, or NULL.
 * RFC 8259 §7: escape = %x22 / %x5C / %x2F / %x62 / %x66 / %x6E / %x72 / %x74
 */
static const char *
json_short_escape(unsigned char c)
{
	switch (c) {
	case '"':  return "\\\"";
	case '\\': return "\\\\";
	case '\b': return "\\b";
	case '\f': return "\\f";
	case '\n': return "\\n";
	case '\r': return "\\r";
	case '\t': return "\\t";
	default:   return NULL;
	}
}

/* json_is_plain - 1 when the ASCII byte c is copied as is. */
static int
json_is_plain(unsigned char c)
{
	return c >= 0x20 && c < 0x7F && c != '"' && c != '\\';
}

/* json_is_line_sep - 1 for the UTF-8 forms of U+2028 and U+2029. */
static int
json_is_line_sep(const unsigned char *s, size_t len)
{
	return len == 3 && s[0] == 0xE2 && s[1] == 0x80 &&
	    (s[2] == 0xA8 || s[2] == 0xA9);
}

/*
 * json_escape_one - write the escaped form of the non-plain item at s[0..n)
 * and return how many input bytes it used (always >= 1).
 */
static size_t
json_escape_one(struct evbuffer *out, const unsigned char *s, size_t n)
{
	const char *esc;
	char hex[8];
	size_t len;

	if (s[0] < 0x80) {
		esc = json_short_escape(s[0]);
		if (esc == NULL) {
			(void)snprintf(hex, sizeof(hex), "\\u%04x", s[0]);
			esc = hex;
		}
		evbuffer_add(out, esc, strlen(esc));
		return 1;
	}
	len = utf8_seq_len(s, n);
	if (len == 0) {
		evbuffer_add(out, "\\ufffd", 6);
		return 1;
	}
	if (json_is_line_sep(s, len))
		evbuffer_add(out, s[2] == 0xA8 ? "\\u2028" : "\\u2029", 6);
	else
		evbuffer_add(out, s, len);
	return len;
}

void
json_escape(struct evbuffer *out, const char *s, size_t n)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t i = 0, run;

	evbuffer_add(out, "\"", 1);
	while (i < n) {
		/* Copy runs of plain ASCII in one call. */
		for (run = i; run < n && json_is_plain(u[run]); run++)
			;
		if (run > i)
			evbuffer_add(out, u + i, run - i);
		i = run;
		if (i < n)
			i += json_escape_one(out, u + i, n - i);
	}
	evbuffer_add(out, "\"", 1);
}

void
json_escape_str(struct evbuffer *out, const char *s)
{
	if (s == NULL)
		evbuffer_add(out, "null", 4);
	else
		json_escape(out, s, strlen(s));
}
