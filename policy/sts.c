/*
 * sts.c - MTA-STS (RFC 8461) TXT record and policy parsing, MX matching.
 *
 * Owns the grammar of §3.1 (TXT record), §3.2 (policy body) and the §4.1
 * MX pattern rule.  Everything here is a pure function of its arguments:
 * inputs are (pointer, length) pairs that may hold any bytes, NULs included,
 * and nothing is allocated.  The decisions the RFC leaves open are listed in
 * sts.h.  Fuzzed by tests/fuzz/fuzz_sts_txt.c and fuzz_sts_policy.c.
 */
#include "policy/sts.h"

#include <string.h>

static int
sts_is_wsp(unsigned char c)
{
	return c == ' ' || c == '\t';
}

static int
sts_is_alpha(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int
sts_is_alnum(unsigned char c)
{
	return sts_is_alpha(c) || (c >= '0' && c <= '9');
}

static unsigned char
sts_lower(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') ? (unsigned char)(c - 'A' + 'a') : c;
}

static size_t
sts_skip_wsp(const char *s, size_t len, size_t i)
{
	while (i < len && sts_is_wsp((unsigned char)s[i]))
		i++;
	return i;
}

/*
 * sts-ext-name = (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / ".")
 * (§3.1; §3.2's sts-policy-ext-name is the same.)  Returns the index after
 * the longest name starting at s[i], or i when there is none.  A longer run
 * stops after 32 characters, so the caller sees a bad next character.
 */
static size_t
sts_span_name(const char *s, size_t len, size_t i)
{
	size_t start = i;

	if (i >= len || !sts_is_alnum((unsigned char)s[i]))
		return i;
	for (i++; i < len && i - start < 32; i++) {
		unsigned char c = (unsigned char)s[i];
		if (!sts_is_alnum(c) && c != '_' && c != '-' && c != '.')
			break;
	}
	return i;
}

/* ------------------------------------------------------------------ */
/* TXT record, RFC 8461 §3.1                                           */
/* ------------------------------------------------------------------ */

/* sts-ext-value = 1*(%x21-3A / %x3C / %x3E-7E) ; no "=", ";", SP, CTLs */
static int
sts_is_ext_vchar(unsigned char c)
{
	return c >= 0x21 && c <= 0x7e && c != ';' && c != '=';
}

/*
 * sts-field = sts-id / sts-extension
 * sts-id    = %s"id=" 1*32(ALPHA / DIGIT)
 * Parses the field at s[*i]; the first "id" fills id and sets *have_id, later
 * ones are ignored like any extension.  Returns 0 (*i past the field) or -1.
 */
static int
sts_txt_field(const char *s, size_t len, size_t *i, char *id, int *have_id)
{
	size_t name_end, v, end;

	name_end = sts_span_name(s, len, *i);
	if (name_end == *i || name_end >= len || s[name_end] != '=')
		return -1;
	v = name_end + 1;
	for (end = v; end < len && sts_is_ext_vchar((unsigned char)s[end]); end++)
		continue;
	if (end == v)
		return -1;
	if (name_end - *i == 2 && memcmp(s + *i, "id", 2) == 0 && !*have_id) {
		if (end - v > STS_ID_MAX)
			return -1;
		for (size_t k = v; k < end; k++)
			if (!sts_is_alnum((unsigned char)s[k]))
				return -1;
		memcpy(id, s + v, end - v);
		id[end - v] = '\0';
		*have_id = 1;
	}
	*i = end;
	return 0;
}

/*
 * sts-text-record = sts-version 1*(sts-field-delim sts-field)
 *                   [sts-field-delim]
 * sts-version     = %s"v=STSv1"
 * sts-field-delim = *WSP %x3B *WSP
 * "records that do not begin with "v=STSv1;" are discarded": a record is an
 * STSv1 record when "v=STSv1" is followed by end, WSP or ';' (errata 6285
 * notes the ABNF lets WSP come before the ';').  Trailing WSP is accepted.
 */
int
sts_txt_parse(const char *txt, size_t len, char id[STS_ID_MAX + 1])
{
	static const char version[] = "v=STSv1";
	const size_t vlen = sizeof(version) - 1;
	char tmp[STS_ID_MAX + 1];
	int have_id = 0;
	size_t i;

	if (len < vlen || memcmp(txt, version, vlen) != 0)
		return 0;
	if (len > vlen && txt[vlen] != ';' && !sts_is_wsp((unsigned char)txt[vlen]))
		return 0;
	for (i = vlen;;) {
		i = sts_skip_wsp(txt, len, i);
		if (i == len)
			break;
		if (txt[i] != ';')
			return -1;
		i = sts_skip_wsp(txt, len, i + 1);
		if (i == len)
			break;
		if (sts_txt_field(txt, len, &i, tmp, &have_id) < 0)
			return -1;
	}
	if (!have_id)
		return -1;
	memcpy(id, tmp, strlen(tmp) + 1);
	return 1;
}

/*
 * §3.1: "If multiple TXT records for "_mta-sts" are returned by the resolver,
 * records that do not begin with "v=STSv1;" are discarded.  If the number of
 * resulting records is not one, or if the resulting record is syntactically
 * invalid, senders MUST assume the recipient domain does not have an
 * available MTA-STS Policy" (STS-01).
 */
int
sts_txt_select(const char *const *txts, const size_t *lens, size_t n,
    char id[STS_ID_MAX + 1])
{
	char tmp[STS_ID_MAX + 1];
	size_t count = 0;
	int valid = 0;

	for (size_t i = 0; i < n; i++) {
		char one[STS_ID_MAX + 1];
		int r = sts_txt_parse(txts[i], lens[i], one);

		if (r == 0)
			continue;
		count++;
		valid = (r == 1);
		if (valid)
			memcpy(tmp, one, sizeof(tmp));
	}
	if (count != 1 || !valid)
		return 0;
	memcpy(id, tmp, strlen(tmp) + 1);
	return 1;
}

/* ------------------------------------------------------------------ */
/* Policy body, RFC 8461 §3.2                                          */
/* ------------------------------------------------------------------ */

enum sts_field_id { STS_F_VERSION, STS_F_MODE, STS_F_MAX_AGE, STS_F_MX, STS_F_COUNT };

/* The state of one sts_policy_parse() call. */
struct sts_parse {
	struct sts_policy *p;
	int seen[STS_F_COUNT];
	size_t text_used;
	const char *why;
};

/* sts-policy-version-value = %s"STSv1" */
static int
sts_f_version(struct sts_parse *st, const char *v, size_t n)
{
	if (n != 5 || memcmp(v, "STSv1", 5) != 0) {
		st->why = "version is not STSv1";
		return -1;
	}
	return 0;
}

/* sts-policy-mode-value = %s"testing" / %s"enforce" / %s"none" */
static int
sts_f_mode(struct sts_parse *st, const char *v, size_t n)
{
	static const enum sts_mode modes[] = {
		STS_MODE_NONE, STS_MODE_TESTING, STS_MODE_ENFORCE
	};

	for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
		const char *name = sts_mode_name(modes[i]);
		if (strlen(name) == n && memcmp(v, name, n) == 0) {
			st->p->mode = modes[i];
			return 0;
		}
	}
	st->why = "mode is not enforce, testing or none";
	return -1;
}

/*
 * sts-policy-max-age-value = 1*10(DIGIT)   (errata 7282 notes 8 would do)
 * "max_age: ... maximum value of 31557600": larger values are capped.
 */
static int
sts_f_max_age(struct sts_parse *st, const char *v, size_t n)
{
	unsigned long long age = 0;

	if (n == 0 || n > 10) {
		st->why = "max_age is not 1 to 10 digits";
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		if (v[i] < '0' || v[i] > '9') {
			st->why = "max_age is not 1 to 10 digits";
			return -1;
		}
		age = age * 10 + (unsigned long long)(v[i] - '0');
	}
	st->p->max_age = age > STS_MAX_AGE_MAX ? STS_MAX_AGE_MAX : (long)age;
	return 0;
}

/*
 * Domain     = sub-domain *("." sub-domain)      (RFC 5321 §4.1.2)
 * sub-domain = Let-dig [Ldh-str]
 * With the DNS limits (labels of 1..63 octets, at most 253 in all) and an
 * all-digit last label refused, so "192.0.2.1" is not taken for a name.
 */
static int
sts_domain_valid(const char *s, size_t n)
{
	size_t label = 0, digits = 0;

	if (n == 0 || n > 253)
		return 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '.') {
			if (label == 0 || s[i - 1] == '-')
				return 0;
			label = digits = 0;
		} else if (sts_is_alnum(c) || (c == '-' && label > 0)) {
			digits += (c >= '0' && c <= '9');
			if (++label > 63)
				return 0;
		} else {
			return 0;
		}
	}
	return s[n - 1] != '-' && s[n - 1] != '.' && digits < label;
}

/* sts-policy-mx-value = ["*."] Domain ; one trailing dot is tolerated */
static int
sts_mx_valid(const char *v, size_t n)
{
	if (n > 0 && v[n - 1] == '.')
		n--;
	if (n >= 2 && v[0] == '*' && v[1] == '.')
		return sts_domain_valid(v + 2, n - 2);
	return sts_domain_valid(v, n);
}

/* "mx: ... this field may be repeated": keep the first STS_MX_MAX valid ones. */
static int
sts_f_mx(struct sts_parse *st, const char *v, size_t n)
{
	struct sts_policy *p = st->p;

	if (!sts_mx_valid(v, n)) {
		p->mx_invalid++;
		return 0;
	}
	if (p->nmx == STS_MX_MAX) {
		p->mx_dropped++;
		return 0;
	}
	if (v[n - 1] == '.')
		n--;
	for (size_t i = 0; i < n; i++)
		p->mx[p->nmx][i] = (char)sts_lower((unsigned char)v[i]);
	p->mx[p->nmx][n] = '\0';
	p->nmx++;
	return 0;
}

static const struct sts_field {
	const char *name;
	int repeat;   /* only mx may repeat; a repeated other field: first wins */
	int (*parse)(struct sts_parse *, const char *, size_t);
} sts_fields[STS_F_COUNT] = {
	[STS_F_VERSION] = { "version", 0, sts_f_version },
	[STS_F_MODE]    = { "mode",    0, sts_f_mode },
	[STS_F_MAX_AGE] = { "max_age", 0, sts_f_max_age },
	[STS_F_MX]      = { "mx",      1, sts_f_mx },
};

/*
 * "If any non-repeated field -- i.e., all fields excluding "mx" -- is
 * duplicated, all entries except for the first SHOULD be ignored", and
 * unknown fields are ignored.  Names are case-sensitive (%s).
 */
static int
sts_field(struct sts_parse *st, const char *k, size_t kn, const char *v, size_t vn)
{
	for (int f = 0; f < STS_F_COUNT; f++) {
		const struct sts_field *d = &sts_fields[f];
		if (strlen(d->name) != kn || memcmp(d->name, k, kn) != 0)
			continue;
		if (st->seen[f] && !d->repeat)
			return 0;
		st->seen[f] = 1;
		return d->parse(st, v, vn);
	}
	return 0;
}

/* Keep "key: value" for the RFC 8460 policy-string, if it fits. */
static void
sts_add_line(struct sts_parse *st, const char *k, size_t kn, const char *v, size_t vn)
{
	struct sts_policy *p = st->p;
	size_t need = kn + 1 + (vn > 0 ? 1 + vn : 0) + 1;
	char *out;

	if (p->nlines == STS_LINES_MAX || need > STS_TEXT_MAX - st->text_used) {
		p->lines_truncated = 1;
		return;
	}
	out = p->text + st->text_used;
	memcpy(out, k, kn);
	out[kn] = ':';
	if (vn > 0) {
		out[kn + 1] = ' ';
		memcpy(out + kn + 2, v, vn);
	}
	out[need - 1] = '\0';
	p->line_off[p->nlines++] = (unsigned short)st->text_used;
	st->text_used += need;
}

/* Bytes allowed in a line: HTAB, SP..'~' and octets of UTF-8 (§3.2 vchar). */
static int
sts_line_chars(struct sts_parse *st, const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '\0') {
			st->why = "NUL byte";
			return -1;
		}
		if ((c < 0x20 && c != '\t') || c == 0x7f) {
			st->why = "control character";
			return -1;
		}
	}
	return 0;
}

/* Trim WSP on both sides of s[0..*n); returns the new start. */
static const char *
sts_trim(const char *s, size_t *n)
{
	while (*n > 0 && sts_is_wsp((unsigned char)s[0])) {
		s++;
		(*n)--;
	}
	while (*n > 0 && sts_is_wsp((unsigned char)s[*n - 1]))
		(*n)--;
	return s;
}

/*
 * sts-policy-field = <name> field-delim <value>,  field-delim = ":" *WSP
 * One line without its terminator.  Returns 0 or -1 with st->why set.
 */
static int
sts_line(struct sts_parse *st, const char *s, size_t n)
{
	const char *colon, *k, *v;
	size_t kn, vn;

	if (sts_line_chars(st, s, n) < 0)
		return -1;
	s = sts_trim(s, &n);
	if (n == 0)
		return 0;
	colon = memchr(s, ':', n);
	if (colon == NULL) {
		st->why = "line without ':'";
		return -1;
	}
	kn = (size_t)(colon - s);
	k = sts_trim(s, &kn);
	vn = n - (size_t)(colon - s) - 1;
	v = sts_trim(colon + 1, &vn);
	if (kn == 0 || sts_span_name(k, kn, 0) != kn) {
		st->why = "bad field name";
		return -1;
	}
	sts_add_line(st, k, kn, v, vn);
	return sts_field(st, k, kn, v, vn);
}

/*
 * sts-policy-term = LF / CRLF.  Sets *line and *n to the next line of body
 * starting at *pos (terminator removed; the last line may lack one) and
 * returns 1, or returns 0 at the end of the body.
 */
static int
sts_next_line(const char *body, size_t len, size_t *pos, const char **line, size_t *n)
{
	const char *lf;
	size_t end;

	if (*pos >= len)
		return 0;
	*line = body + *pos;
	lf = memchr(*line, '\n', len - *pos);
	end = lf ? (size_t)(lf - body) : len;
	*n = end - *pos;
	*pos = lf ? end + 1 : len;
	if (lf && *n > 0 && (*line)[*n - 1] == '\r')
		(*n)--;
	return 1;
}

/* The §3.2 requirements on the whole policy once every line was read. */
static int
sts_policy_check(struct sts_parse *st)
{
	if (!st->seen[STS_F_VERSION])
		st->why = "missing version";
	else if (!st->seen[STS_F_MODE])
		st->why = "missing mode";
	else if (!st->seen[STS_F_MAX_AGE])
		st->why = "missing max_age";
	else if (st->p->mode != STS_MODE_NONE && st->p->nmx == 0)
		st->why = "no valid mx in enforce or testing mode";
	else
		return 0;
	return -1;
}

int
sts_policy_parse(const char *body, size_t len, struct sts_policy *p,
    const char **why)
{
	struct sts_parse st;
	const char *line;
	size_t pos = 0, n;

	memset(p, 0, sizeof(*p));
	memset(&st, 0, sizeof(st));
	st.p = p;
	while (sts_next_line(body, len, &pos, &line, &n)) {
		if (sts_line(&st, line, n) < 0)
			goto fail;
	}
	if (sts_policy_check(&st) < 0)
		goto fail;
	return 0;
fail:
	*why = st.why;
	return -1;
}

const char *
sts_policy_line(const struct sts_policy *p, size_t i)
{
	return i < p->nlines ? p->text + p->line_off[i] : NULL;
}

const char *
sts_mode_name(enum sts_mode mode)
{
	switch (mode) {
	case STS_MODE_ENFORCE:
		return "enforce";
	case STS_MODE_TESTING:
		return "testing";
	case STS_MODE_NONE:
		break;
	}
	return "none";
}

/* ------------------------------------------------------------------ */
/* MX matching, RFC 8461 §4.1                                          */
/* ------------------------------------------------------------------ */

/* Length of a name without one trailing dot. */
static size_t
sts_name_len(const char *s)
{
	size_t n = strlen(s);

	return (n > 0 && s[n - 1] == '.') ? n - 1 : n;
}

static int
sts_name_eq(const char *a, const char *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (sts_lower((unsigned char)a[i]) != sts_lower((unsigned char)b[i]))
			return 0;
	return 1;
}

/*
 * §4.1: "Wildcards are ... allowed as the left-most label only ...
 * "*.example.com" ... would match "mail.example.com" but not
 * "example.com" or "foo.bar.example.com"" (STS-08).
 */
int
sts_pattern_match(const char *pattern, const char *host)
{
	size_t pn = sts_name_len(pattern), hn = sts_name_len(host);
	size_t bn, label;

	if (pn == 0 || hn == 0 || memchr(host, '*', hn) != NULL)
		return 0;
	if (pn < 2 || pattern[0] != '*' || pattern[1] != '.') {
		if (memchr(pattern, '*', pn) != NULL)
			return 0;
		return pn == hn && sts_name_eq(pattern, host, pn);
	}
	bn = pn - 2;
	if (bn == 0 || memchr(pattern + 2, '*', bn) != NULL || hn < bn + 2)
		return 0;
	label = hn - bn - 1;
	if (host[label] != '.' || memchr(host, '.', label) != NULL)
		return 0;
	return sts_name_eq(host + label + 1, pattern + 2, bn);
}

int
sts_mx_match(const struct sts_policy *p, const char *mxhost)
{
	for (size_t i = 0; i < p->nmx; i++)
		if (sts_pattern_match(p->mx[i], mxhost))
			return 1;
	return 0;
}
