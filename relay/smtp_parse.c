/*
 * smtp_parse.c - pure parsers for what an SMTP client sends (RFC 5321 §4.1,
 * RFC 1870, RFC 6152, RFC 6531).
 *
 * Owns: splitting a command line into verb and arguments, the MAIL and RCPT
 * argument grammar (paths and ESMTP parameters) and the HELO/EHLO domain
 * check.  No I/O, no allocation, no logging: every function fills a caller
 * struct and, on failure, a struct smtp_err whose strings are static.
 *
 * Inputs are NUL-terminated command lines without CRLF; a caller that read a
 * line containing a NUL byte must refuse it before calling (line_read() copies
 * NULs, so check strlen(line) == len).
 *
 * Leniencies, on purpose (Postfix and Exim accept them too):
 *   - spaces between "FROM:"/"TO:" and the "<" ("MAIL FROM: <a@b>");
 *   - several spaces between parameters, and trailing spaces.
 * Strictness, on purpose: the angle brackets are required; an A-d-l source
 * route is checked and then dropped (RFC 5321 §4.1.1.3 "SHOULD ignore");
 * only IPv4 and IPv6 address literals are accepted; 8-bit octets anywhere but
 * in a local part or domain of a SMTPUTF8 transaction are refused.
 */
#include <arpa/inet.h>
#include <limits.h>
#include <string.h>
#include <strings.h>

#include "relay/json.h"
#include "relay/smtp_parse.h"

/* Which command is being parsed: the error codes differ (RFC 3463). */
struct sp_role {
	const char *enh_bad;     /* 5.1.7 sender, 5.1.3 recipient */
	const char *text_bad;
	const char *text_syntax;
	int allow_null;          /* "<>" */
	int allow_postmaster;    /* "<Postmaster>" */
};

static const struct sp_role sp_role_mail = {
	"5.1.7", "Bad sender address syntax", "Syntax: MAIL FROM:<address>", 1, 0
};
static const struct sp_role sp_role_rcpt = {
	"5.1.3", "Bad recipient address syntax", "Syntax: RCPT TO:<address>", 0, 1
};

/* sp_fail - fill err and return -1. */
static int
sp_fail(struct smtp_err *err, int code, const char *enh, const char *text)
{
	err->code = code;
	err->enh = enh;
	err->text = text;
	return -1;
}

static int
sp_is_alpha(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

static int
sp_is_letdig(unsigned char c)
{
	return sp_is_alpha(c) || (c >= '0' && c <= '9');
}

int
smtp_cmd_split(const char *line, char *verb, size_t verbmax, const char **args)
{
	size_t i;

	for (i = 0; sp_is_alpha((unsigned char)line[i]); i++) {
		if (i + 1 >= verbmax)
			return -1;
		verb[i] = (char)(line[i] & ~0x20);
	}
	if (i == 0 || (line[i] != '\0' && line[i] != ' '))
		return -1;
	verb[i] = '\0';
	while (line[i] == ' ')
		i++;
	*args = line + i;
	return 0;
}

/*
 * Domain     = sub-domain *("." sub-domain)
 * sub-domain = Let-dig [Ldh-str]
 * Ldh-str    = *( ALPHA / DIGIT / "-" ) Let-dig
 * RFC 6531 §3.3: sub-domain =/ U-label  (octets >= 0x80 when utf8_ok)
 * RFC 1035 §2.3.4: labels of 63 octets or less.
 * sp_label - 1 when s[0..n) is one acceptable label.
 */
static int
sp_label(const unsigned char *s, size_t n, int utf8_ok)
{
	size_t i;

	if (n == 0 || n > 63 || s[0] == '-' || s[n - 1] == '-')
		return 0;
	for (i = 0; i < n; i++) {
		if (sp_is_letdig(s[i]) || s[i] == '-')
			continue;
		if (s[i] < 0x80 || !utf8_ok)
			return 0;
	}
	return 1;
}

/*
 * sp_domain - 1 when s[0..n) is a Domain.  A trailing dot (absolute name)
 * must have been removed by the caller.  Length limit: RFC 5321 §4.5.3.1.2.
 */
static int
sp_domain(const char *s, size_t n, int utf8_ok)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t start = 0, i;

	if (n == 0 || n > SMTP_DOMAIN_MAX)
		return 0;
	for (i = 0; i <= n; i++) {
		if (i < n && u[i] != '.')
			continue;
		if (!sp_label(u + start, i - start, utf8_ok))
			return 0;
		start = i + 1;
	}
	return 1;
}

/* sp_strip_dot - n without one trailing dot ("example.org." is absolute). */
static size_t
sp_strip_dot(const char *s, size_t n)
{
	return n > 1 && s[n - 1] == '.' ? n - 1 : n;
}

/*
 * address-literal  = "[" ( IPv4-address-literal /
 *                    IPv6-address-literal / General-address-literal ) "]"
 * IPv6-address-literal  = "IPv6:" IPv6-addr
 * General-address-literal = Standardized-tag ":" 1*dcontent
 * No other tag is registered, so a General-address-literal is refused; the
 * addresses themselves are checked by inet_pton().
 */
static int
sp_literal(const char *s, size_t n)
{
	char buf[64];
	unsigned char addr[16];
	int af = AF_INET;

	if (n < 3 || s[0] != '[' || s[n - 1] != ']' || n - 2 >= sizeof(buf))
		return 0;
	memcpy(buf, s + 1, n - 2);
	buf[n - 2] = '\0';
	if (strncasecmp(buf, "IPv6:", 5) == 0)
		af = AF_INET6;
	return inet_pton(af, af == AF_INET6 ? buf + 5 : buf, addr) == 1;
}

/*
 * sp_host - 1 when s[0..n) is a Domain or an address literal; *dlen gets the
 * length to keep (without a trailing dot), *literal whether it was one.
 */
static int
sp_host(const char *s, size_t n, int utf8_ok, size_t *dlen, int *literal)
{
	*literal = n > 0 && s[0] == '[';
	*dlen = *literal ? n : sp_strip_dot(s, n);
	if (*literal)
		return sp_literal(s, n);
	return sp_domain(s, *dlen, utf8_ok);
}

/*
 * atext = ALPHA / DIGIT / "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" /
 *         "-" / "/" / "=" / "?" / "^" / "_" / "`" / "{" / "|" / "}" / "~"
 * RFC 6531 §3.3: atext =/ UTF8-non-ascii
 */
static int
sp_is_atext(unsigned char c)
{
	return sp_is_letdig(c) || c >= 0x80 ||
	    (c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

/* sp_is_special - local parts that route elsewhere (percent hack, UUCP). */
static int
sp_is_special(unsigned char c)
{
	return c == '@' || c == '%' || c == '!';
}

/*
 * Dot-string = Atom *("."  Atom)
 * Atom       = 1*atext
 * sp_dot_string - length of the Dot-string at s[0..n), stopping at the first
 * byte that is neither atext nor '.', or 0 when there is none or it is
 * malformed (empty atom).
 */
static size_t
sp_dot_string(const char *s, size_t n, int *special)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t i;

	for (i = 0; i < n && (sp_is_atext(u[i]) || u[i] == '.'); i++) {
		if (u[i] == '.' && (i == 0 || u[i - 1] == '.'))
			return 0;
		if (sp_is_special(u[i]))
			*special = 1;
	}
	if (i == 0 || u[i - 1] == '.')
		return 0;
	return i;
}

/*
 * Quoted-string   = DQUOTE *QcontentSMTP DQUOTE
 * QcontentSMTP    = qtextSMTP / quoted-pairSMTP
 * quoted-pairSMTP = %d92 %d32-126
 * qtextSMTP       = %d32-33 / %d35-91 / %d93-126
 * RFC 6531 §3.3:  qtextSMTP =/ UTF8-non-ascii
 * sp_quoted - length of the Quoted-string at s[0..n) including both quotes,
 * or 0 when malformed; *content gets the dequoted length.
 */
static size_t
sp_quoted(const char *s, size_t n, size_t *content, int *special)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t i;

	*content = 0;
	if (n == 0 || u[0] != '"')
		return 0;
	for (i = 1; i < n && u[i] != '"'; i++, (*content)++) {
		if (u[i] == '\\') {
			if (++i >= n || u[i] < 32 || u[i] > 126)
				return 0;
		} else if (u[i] < 32 || u[i] == 127) {
			return 0;
		}
		if (sp_is_special(u[i]))
			*special = 1;
	}
	return i < n ? i + 1 : 0;
}

/* sp_has_8bit - 1 when s[0..n) contains an octet >= 0x80. */
static int
sp_has_8bit(const char *s, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if ((unsigned char)s[i] >= 0x80)
			return 1;
	return 0;
}

/*
 * Local-part = Dot-string / Quoted-string
 * sp_local - parse the local part at the start of s[0..n) into path; returns
 * its length as sent, or 0 when malformed or longer than SMTP_LOCAL_MAX
 * octets once dequoted (RFC 5321 §4.5.3.1.1).
 */
static size_t
sp_local(struct smtp_path *path, const char *s, size_t n)
{
	size_t len, content;

	if (n > 0 && s[0] == '"') {
		len = sp_quoted(s, n, &content, &path->local_special);
		path->quoted = 1;
	} else {
		len = sp_dot_string(s, n, &path->local_special);
		content = len;
	}
	if (len == 0 || content > SMTP_LOCAL_MAX || len >= sizeof(path->local))
		return 0;
	memcpy(path->local, s, len);
	path->local[len] = '\0';
	return len;
}

/*
 * Mailbox = Local-part "@" ( Domain / address-literal )
 * sp_mailbox - parse s[0..n) as a whole Mailbox into path: 0 or -1.
 */
static int
sp_mailbox(struct smtp_path *path, const char *s, size_t n)
{
	size_t llen, dlen;

	llen = sp_local(path, s, n);
	if (llen == 0 || llen >= n || s[llen] != '@')
		return -1;
	s += llen + 1;
	n -= llen + 1;
	path->utf8 = sp_has_8bit(path->local, llen) || sp_has_8bit(s, n);
	if (!sp_host(s, n, path->utf8, &dlen, &path->domain_literal))
		return -1;
	if (path->utf8 && (!utf8_valid(path->local, llen) || !utf8_valid(s, dlen)))
		return -1;
	memcpy(path->domain, s, dlen);
	path->domain[dlen] = '\0';
	memcpy(path->addr, path->local, llen);
	path->addr[llen] = '@';
	memcpy(path->addr + llen + 1, s, dlen);
	path->addr[llen + 1 + dlen] = '\0';
	return 0;
}

/*
 * A-d-l     = At-domain *( "," At-domain )
 * At-domain = "@" Domain
 * RFC 5321 §4.1.1.3: servers "SHOULD ignore the routes".
 * sp_adl - length of the A-d-l and its ':' at s[0..n), or 0 when malformed.
 */
static size_t
sp_adl(const char *s, size_t n)
{
	const char *colon = memchr(s, ':', n);
	size_t end, start = 0, i;

	if (colon == NULL)
		return 0;
	end = (size_t)(colon - s);
	for (i = 0; i <= end; i++) {
		if (i < end && s[i] != ',')
			continue;
		if (i - start < 2 || s[start] != '@' ||
		    !sp_domain(s + start + 1, i - start - 1, 0))
			return 0;
		start = i + 1;
	}
	return end + 1;
}

/*
 * sp_path_inner - parse what is between "<" and ">": "" (null path),
 * "Postmaster", or [ A-d-l ":" ] Mailbox.  Returns 0 or -1 (bad address).
 */
static int
sp_path_inner(const struct sp_role *role, struct smtp_path *path,
    const char *s, size_t n)
{
	size_t adl = 0;

	if (n == 0) {
		path->null = 1;
		return role->allow_null ? 0 : -1;
	}
	if (s[0] == '@') {
		adl = sp_adl(s, n);
		if (adl == 0)
			return -1;
		path->source_route = 1;
	}
	if (role->allow_postmaster && n - adl == 10 &&
	    strncasecmp(s + adl, "Postmaster", 10) == 0) {
		path->postmaster = 1;
		memcpy(path->local, s + adl, 10);
		path->local[10] = '\0';
		strcpy(path->addr, "Postmaster");
		return 0;
	}
	return sp_mailbox(path, s + adl, n - adl);
}

/*
 * sp_path_end - offset of the ">" closing the path that starts at s[0] == '<',
 * or 0 when there is none.  Quoted strings may contain '>'.
 */
static size_t
sp_path_end(const char *s)
{
	size_t i;
	int quoted = 0;

	for (i = 1; s[i] != '\0'; i++) {
		if (quoted && s[i] == '\\' && s[i + 1] != '\0')
			i++;
		else if (s[i] == '"')
			quoted = !quoted;
		else if (!quoted && s[i] == '>')
			return i;
	}
	return 0;
}

/*
 * Path = "<" [ A-d-l ":" ] Mailbox ">"
 * RFC 5321 §4.5.3.1.3: "The maximum total length of a reverse-path or
 * forward-path is 256 octets (including the punctuation and element
 * separators)."
 * sp_path - parse the path at *pp, leave *pp just past the '>'.
 */
static int
sp_path(const struct sp_role *role, const char **pp, struct smtp_path *path,
    struct smtp_err *err)
{
	const char *s = *pp;
	size_t end;

	memset(path, 0, sizeof(*path));
	if (s[0] != '<' || (end = sp_path_end(s)) == 0)
		return sp_fail(err, 501, "5.5.4", role->text_syntax);
	if (end + 1 > SMTP_PATH_MAX)
		return sp_fail(err, 501, role->enh_bad, "Address too long");
	if (sp_path_inner(role, path, s + 1, end - 1) < 0)
		return sp_fail(err, 501, role->enh_bad, role->text_bad);
	*pp = s + end + 1;
	return 0;
}

/* sp_size - parse SIZE's value: 1*DIGIT that fits in a long long. */
static int
sp_size(const char *v, size_t n, long long *size)
{
	long long x = 0;
	size_t i;

	if (n == 0)
		return -1;
	for (i = 0; i < n; i++) {
		if (v[i] < '0' || v[i] > '9')
			return -1;
		if (x > (LLONG_MAX - (v[i] - '0')) / 10)
			return -1;
		x = x * 10 + (v[i] - '0');
	}
	*size = x;
	return 0;
}

/* sp_value_is - 1 when v[0..n) equals word, ignoring case. */
static int
sp_value_is(const char *v, size_t n, const char *word)
{
	return n == strlen(word) && strncasecmp(v, word, n) == 0;
}

/*
 * RFC 1870: size-param = "SIZE=" size-value; size-value = 1*20DIGIT
 * RFC 6152: body-value = "7BIT" / "8BITMIME"
 * RFC 6531 §3.4: "SMTPUTF8" takes no value.
 * sp_param_known - apply one parameter (keyword k[0..kn), value v[0..vn) or
 * v == NULL) to params: 0 or -1 with 555 in *err.
 */
static int
sp_param_known(const char *k, size_t kn, const char *v, size_t vn,
    int smtputf8_ok, struct smtp_params *params, struct smtp_err *err)
{
	if (sp_value_is(k, kn, "SIZE")) {
		if (params->size >= 0)
			return sp_fail(err, 555, "5.5.4", "Duplicate SIZE parameter");
		if (v == NULL || sp_size(v, vn, &params->size) < 0)
			return sp_fail(err, 555, "5.5.4", "Invalid SIZE parameter");
		return 0;
	}
	if (sp_value_is(k, kn, "BODY")) {
		if (params->body != 0)
			return sp_fail(err, 555, "5.5.4", "Duplicate BODY parameter");
		if (v != NULL && sp_value_is(v, vn, "7BIT"))
			params->body = 7;
		else if (v != NULL && sp_value_is(v, vn, "8BITMIME"))
			params->body = 8;
		else
			return sp_fail(err, 555, "5.5.4", "Invalid BODY parameter");
		return 0;
	}
	if (smtputf8_ok && sp_value_is(k, kn, "SMTPUTF8")) {
		if (params->smtputf8)
			return sp_fail(err, 555, "5.5.4", "Duplicate SMTPUTF8 parameter");
		if (v != NULL)
			return sp_fail(err, 555, "5.5.4", "SMTPUTF8 takes no value");
		params->smtputf8 = 1;
		return 0;
	}
	return sp_fail(err, 555, "5.5.4", "Unsupported parameter");
}

/*
 * esmtp-param   = esmtp-keyword ["=" esmtp-value]
 * esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
 * esmtp-value   = 1*(%d33-60 / %d62-126)
 * sp_param_syntax - 1 when t[0..n) is an esmtp-param; *kn gets the keyword
 * length (the value, if any, starts at t + *kn + 1).
 */
static int
sp_param_syntax(const char *s, size_t n, size_t *kn)
{
	const unsigned char *t = (const unsigned char *)s;
	size_t i;

	for (i = 0; i < n && (sp_is_letdig(t[i]) ||
	    (i > 0 && t[i] == '-')); i++)
		;
	*kn = i;
	if (i == 0)
		return 0;
	if (i == n)
		return 1;
	if (t[i] != '=' || i + 1 == n)
		return 0;
	for (i++; i < n; i++)
		if (t[i] < 33 || t[i] > 126 || t[i] == '=')
			return 0;
	return 1;
}

/*
 * Mail-parameters = esmtp-param *(SP esmtp-param)
 * sp_params - parse the parameters at s (after the path's '>').  With
 * params == NULL (RCPT: none offered) any parameter is refused.
 */
static int
sp_params(const struct sp_role *role, const char *s, int smtputf8_ok,
    struct smtp_params *params, struct smtp_err *err)
{
	size_t n, kn;

	if (*s != '\0' && *s != ' ')
		return sp_fail(err, 501, "5.5.4", role->text_syntax);
	for (;;) {
		while (*s == ' ')
			s++;
		if (*s == '\0')
			return 0;
		n = strcspn(s, " ");
		if (!sp_param_syntax(s, n, &kn))
			return sp_fail(err, 555, "5.5.4", "Syntax error in parameters");
		if (params == NULL)
			return sp_fail(err, 555, "5.5.4", "Unsupported parameter");
		if (sp_param_known(s, kn, kn < n ? s + kn + 1 : NULL,
		    kn < n ? n - kn - 1 : 0, smtputf8_ok, params, err) < 0)
			return -1;
		s += n;
	}
}

/* sp_verb_arg - skip "FROM:" / "TO:" (any case) and the spaces after it. */
static const char *
sp_verb_arg(const char *args, const char *word)
{
	size_t n = strlen(word);

	if (strncasecmp(args, word, n) != 0)
		return NULL;
	args += n;
	while (*args == ' ')
		args++;
	return args;
}

/*
 * mail = "MAIL FROM:" Reverse-path [SP Mail-parameters] CRLF
 * RFC 6531 §3.4: non-ASCII in the path needs the SMTPUTF8 parameter.
 */
int
smtp_parse_mail(const char *args, int smtputf8_ok, struct smtp_path *path,
    struct smtp_params *params, struct smtp_err *err)
{
	const char *s = sp_verb_arg(args, "FROM:");

	params->size = -1;
	params->body = 0;
	params->smtputf8 = 0;
	if (s == NULL) {
		memset(path, 0, sizeof(*path));
		return sp_fail(err, 501, "5.5.4", sp_role_mail.text_syntax);
	}
	if (sp_path(&sp_role_mail, &s, path, err) < 0)
		return -1;
	if (sp_params(&sp_role_mail, s, smtputf8_ok, params, err) < 0)
		return -1;
	if (path->utf8 && !params->smtputf8)
		return sp_fail(err, 553, "5.6.7",
		    "Non-ASCII addresses require the SMTPUTF8 parameter");
	return 0;
}

/* rcpt = "RCPT TO:" ( "<Postmaster@" Domain ">" / "<Postmaster>" /
 *        Forward-path ) [SP Rcpt-parameters] CRLF */
int
smtp_parse_rcpt(const char *args, int smtputf8, struct smtp_path *path,
    struct smtp_err *err)
{
	const char *s = sp_verb_arg(args, "TO:");

	if (s == NULL) {
		memset(path, 0, sizeof(*path));
		return sp_fail(err, 501, "5.5.4", sp_role_rcpt.text_syntax);
	}
	if (sp_path(&sp_role_rcpt, &s, path, err) < 0)
		return -1;
	if (sp_params(&sp_role_rcpt, s, 0, NULL, err) < 0)
		return -1;
	if (path->utf8 && !smtputf8)
		return sp_fail(err, 553, "5.6.7",
		    "Non-ASCII addresses require the SMTPUTF8 parameter");
	return 0;
}

/*
 * ehlo = "EHLO" SP ( Domain / address-literal ) CRLF
 * helo = "HELO" SP Domain CRLF
 * Trailing spaces are tolerated; 8-bit octets are not (no SMTPUTF8 before
 * MAIL).
 */
int
smtp_parse_helo(const char *args, struct smtp_err *err)
{
	size_t n = strlen(args), dlen;
	int literal;

	while (n > 0 && args[n - 1] == ' ')
		n--;
	if (n == 0)
		return sp_fail(err, 501, "5.5.4", "Syntax: EHLO hostname");
	if (!sp_host(args, n, 0, &dlen, &literal))
		return sp_fail(err, 501, "5.5.4", "Invalid domain name");
	return 0;
}
