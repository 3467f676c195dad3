/*
 * reply.c - parsing SMTP replies from a next hop (RFC 5321 §4.2, RFC 2034,
 * RFC 3463) and the EHLO keywords in them (RFC 5321 §4.1.1.1).
 *
 * Owns: accumulating the lines of one (possibly multi-line) reply into a
 * fixed-size struct smtp_reply, and reading the capabilities out of a 250
 * EHLO reply.  No allocation; memory per reply is sizeof(struct smtp_reply)
 * whatever the peer sends.
 *
 * What ends up in the struct:
 *   code   the three-digit code of the first line (all lines must agree);
 *   enh    the enhanced status code at the start of the first line's text
 *          ("X.Y.Z", class equal to the code's first digit), or "";
 *   text   each line's text, without the code, the separator and a leading
 *          enhanced status code (with its one following SP), joined with
 *          '\n' and NUL-terminated; truncated to REPLY_TEXT_MAX - 1 bytes.
 *          The bytes are the peer's, unfiltered (8-bit, control characters
 *          other than LF, even NUL): escape before logging or quoting them.
 *   lines  lines accepted, at most REPLY_LINES_MAX in total.
 */
#include <limits.h>
#include <string.h>
#include <strings.h>

#include "relay/reply.h"

void
reply_init(struct smtp_reply *r)
{
	r->code = 0;
	r->enh[0] = '\0';
	r->text[0] = '\0';
	r->text_len = 0;
	r->lines = 0;
	r->done = 0;
}

/* reply_digits - how many ASCII digits start s[0..n), at most max + 1. */
static size_t
reply_digits(const char *s, size_t n, size_t max)
{
	size_t i;

	for (i = 0; i < n && i <= max && s[i] >= '0' && s[i] <= '9'; i++)
		;
	return i;
}

/*
 * RFC 3463 §2:
 *   status-code = class "." subject "." detail
 *   class   = "2" / "4" / "5"
 *   subject = 1*3digit
 *   detail  = 1*3digit
 * RFC 2034 §3: the class "must match the first digit of the reply code".
 * reply_enh_len - length of the status code at the start of s[0..n) when it is
 * followed by SP or the end of the text, else 0.
 */
static size_t
reply_enh_len(const char *s, size_t n, int code)
{
	size_t i = 2, d;

	if (n < 5 || s[0] != (char)('0' + code / 100) || s[1] != '.')
		return 0;
	if (s[0] != '2' && s[0] != '4' && s[0] != '5')
		return 0;
	d = reply_digits(s + i, n - i, 3);
	if (d == 0 || d > 3 || i + d >= n || s[i + d] != '.')
		return 0;
	i += d + 1;
	d = reply_digits(s + i, n - i, 3);
	if (d == 0 || d > 3)
		return 0;
	i += d;
	return i == n || s[i] == ' ' ? i : 0;
}

/* reply_append - add s[0..n) to the text, silently truncating. */
static void
reply_append(struct smtp_reply *r, const char *s, size_t n)
{
	size_t room = sizeof(r->text) - 1 - r->text_len;

	if (n > room)
		n = room;
	memcpy(r->text + r->text_len, s, n);
	r->text_len += n;
	r->text[r->text_len] = '\0';
}

/* reply_add_text - add one line's text (after "NNN" and the separator). */
static void
reply_add_text(struct smtp_reply *r, const char *s, size_t n)
{
	size_t enh = reply_enh_len(s, n, r->code);

	if (enh > 0 && r->lines == 1) {
		memcpy(r->enh, s, enh);
		r->enh[enh] = '\0';
	}
	if (enh > 0) {
		enh += enh < n;      /* the SP after it */
		s += enh;
		n -= enh;
	}
	if (r->lines > 1)
		reply_append(r, "\n", 1);
	reply_append(r, s, n);
}

/*
 * Reply-code = %x32-35 %x30-35 %x30-39
 * (RFC 5321 §4.2 narrows the second digit to 0..5; we accept 0..9 since the
 * first digit alone decides what to do.)
 * reply_code - the code at the start of line, or -1.
 */
static int
reply_code(const char *line, size_t len)
{
	if (len < 3 || line[0] < '2' || line[0] > '5')
		return -1;
	if (line[1] < '0' || line[1] > '9' || line[2] < '0' || line[2] > '9')
		return -1;
	return (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
}

/* reply_fail - set *why and return REPLY_ERROR. */
static enum reply_status
reply_fail(const char **why, const char *text)
{
	if (why != NULL)
		*why = text;
	return REPLY_ERROR;
}

enum reply_status
reply_feed(struct smtp_reply *r, const char *line, size_t len, const char **why)
{
	int code = reply_code(line, len);

	if (r->done)
		return reply_fail(why, "line after the last line of the reply");
	if (code < 0)
		return reply_fail(why, "malformed reply code");
	if (len > 3 && line[3] != ' ' && line[3] != '-')
		return reply_fail(why, "malformed reply separator");
	if (r->lines > 0 && code != r->code)
		return reply_fail(why, "reply code changed within a multi-line reply");
	if (r->lines >= REPLY_LINES_MAX)
		return reply_fail(why, "too many lines in a multi-line reply");
	r->code = code;
	r->lines++;
	reply_add_text(r, line + (len > 3 ? 4 : 3), len > 3 ? len - 4 : 0);
	r->done = len == 3 || line[3] == ' ';
	return r->done ? REPLY_DONE : REPLY_MORE;
}

/* The EHLO keywords we act on; everything else is ignored. */
static const struct {
	const char *name;
	unsigned flag;
} reply_ehlo_table[] = {
	{ "PIPELINING", EHLO_PIPELINING },
	{ "STARTTLS", EHLO_STARTTLS },
	{ "SIZE", EHLO_SIZE },
	{ "8BITMIME", EHLO_8BITMIME },
	{ "SMTPUTF8", EHLO_SMTPUTF8 },
	{ "ENHANCEDSTATUSCODES", EHLO_ENHANCED },
	{ "CHUNKING", EHLO_CHUNKING },
};

/*
 * RFC 1870 §4: size-param = "SIZE" [ SP 1*20DIGIT ]; "0" means no fixed limit.
 * reply_ehlo_size - the value in s[0..n) (what follows "SIZE "), 0 when it is
 * not all digits or does not fit in a long long.
 */
static long long
reply_ehlo_size(const char *s, size_t n)
{
	long long x = 0;
	size_t i;

	for (i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return 0;
		if (x > (LLONG_MAX - (s[i] - '0')) / 10)
			return 0;
		x = x * 10 + (s[i] - '0');
	}
	return x;
}

/*
 * ehlo-line    = ehlo-keyword *( SP ehlo-param )
 * ehlo-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
 * reply_ehlo_line - the flag for one line s[0..n); keywords are compared
 * without regard to case (RFC 5321 §2.4).
 */
static unsigned
reply_ehlo_line(const char *s, size_t n, long long *size)
{
	const char *sp = memchr(s, ' ', n);
	size_t kn = sp != NULL ? (size_t)(sp - s) : n;
	size_t i;

	for (i = 0; i < sizeof(reply_ehlo_table) / sizeof(reply_ehlo_table[0]); i++) {
		if (strlen(reply_ehlo_table[i].name) != kn ||
		    strncasecmp(s, reply_ehlo_table[i].name, kn) != 0)
			continue;
		if (reply_ehlo_table[i].flag == EHLO_SIZE && sp != NULL)
			*size = reply_ehlo_size(sp + 1, n - kn - 1);
		return reply_ehlo_table[i].flag;
	}
	return 0;
}

unsigned
reply_ehlo_caps(const struct smtp_reply *r, long long *size)
{
	const char *s = r->text, *end = r->text + r->text_len, *nl;
	unsigned caps = 0;

	*size = 0;
	if (!r->done || r->code != 250)
		return 0;
	/* The first line is the greeting ("mx.example.org Hello ..."). */
	nl = memchr(s, '\n', (size_t)(end - s));
	while (nl != NULL) {
		s = nl + 1;
		nl = memchr(s, '\n', (size_t)(end - s));
		caps |= reply_ehlo_line(s, (size_t)((nl != NULL ? nl : end) - s), size);
	}
	return caps;
}
