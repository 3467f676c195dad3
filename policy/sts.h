/*
 * sts.h - MTA-STS (RFC 8461) text parsers and MX pattern matching.
 *
 * Pure functions: no I/O, no allocation, no event loop.  The discovery code
 * (DNS TXT lookup, HTTPS fetch, cache) feeds them bytes it already holds:
 *
 *   sts_txt_parse()    one "_mta-sts" TXT record (strings concatenated, §3.1)
 *   sts_txt_select()   the STS-01 rule over all TXT records of the name
 *   sts_policy_parse() the body of /.well-known/mta-sts.txt (§3.2)
 *   sts_mx_match()     whether an MX host is allowed by a policy (§4.1)
 *
 * Decisions where the RFC leaves room (ANCHORS STS-01..08):
 *   - Field names are case-sensitive (RFC 7405 %s in the ABNF): "Mode:" is an
 *     unknown extension, ignored, so the policy then lacks "mode".
 *   - version, mode and max_age must each be present; version need not come
 *     first (the §3.2 ABNF gives no order).  For a repeated non-mx field the
 *     first occurrence is the one used and validated; later ones are ignored.
 *   - max_age above 31557600 is capped to 31557600 (as tlspol does): rejecting
 *     would turn an intended policy into "no policy", a downgrade.  More than
 *     10 digits, a sign or anything but digits makes the policy invalid.
 *   - An mx value that is not a host name or "*." + host name (a partial
 *     wildcard such as "mx*.example.com", an IP literal, non-ASCII) is skipped
 *     and counted in mx_invalid; enforce/testing without any valid mx is
 *     invalid (STS-07).  Valid patterns beyond STS_MX_MAX are dropped and
 *     counted in mx_dropped: MX hosts they would allow are then refused in
 *     enforce mode (fail closed), which the caller should log.
 *   - WSP is tolerated around the key, around ':' and at the end of a line;
 *     lines holding only WSP are skipped (tlspol does the same).
 */
#ifndef POLICY_STS_H
#define POLICY_STS_H

#include <stddef.h>

#define STS_ID_MAX       32          /* sts-id = %s"id=" 1*32(ALPHA / DIGIT) */
#define STS_MAX_AGE_MAX  31557600L   /* §3.2: one year */
#define STS_MX_MAX       32          /* mx patterns kept */
#define STS_HOST_MAX     256         /* "*." + 253-char name + NUL */
#define STS_LINES_MAX    64          /* policy-string lines kept */
#define STS_TEXT_MAX     4096        /* bytes of policy-string lines kept, NULs included */

enum sts_mode {
	STS_MODE_NONE,
	STS_MODE_TESTING,
	STS_MODE_ENFORCE
};

struct sts_policy {
	enum sts_mode mode;
	long max_age;                        /* seconds, 0..STS_MAX_AGE_MAX */
	size_t nmx;                          /* patterns in mx[] */
	size_t mx_invalid;                   /* mx lines skipped as malformed */
	size_t mx_dropped;                   /* valid mx lines beyond STS_MX_MAX */
	char mx[STS_MX_MAX][STS_HOST_MAX];   /* lower case, no trailing dot */
	/*
	 * The RFC 8460 §4.3 "policy-string": every non-blank line, normalised to
	 * "key: value", in order.  Line i starts at text + line_off[i].  Lines
	 * that do not fit are left out and lines_truncated is set.
	 */
	size_t nlines;
	int lines_truncated;
	unsigned short line_off[STS_LINES_MAX];
	char text[STS_TEXT_MAX];
};

/*
 * sts_txt_parse - classify one TXT record txt[0..len) (NULs allowed).
 * Returns 1 for a valid STSv1 record (id gets the NUL-terminated id),
 * 0 for a record that is not STSv1 (does not start with "v=STSv1" followed by
 * end, WSP or ';'; such records are discarded before counting), and -1 for an
 * STSv1 record that is malformed.  id is written only when 1 is returned.
 */
int sts_txt_parse(const char *txt, size_t len, char id[STS_ID_MAX + 1]);

/*
 * sts_txt_select - apply STS-01 to the n TXT records txts[i][0..lens[i]).
 * Returns 1 when exactly one record is STSv1 and it is valid (id filled),
 * else 0: the domain has no MTA-STS policy.
 */
int sts_txt_select(const char *const *txts, const size_t *lens, size_t n,
    char id[STS_ID_MAX + 1]);

/*
 * sts_policy_parse - parse a policy body[0..len).  Returns 0 with *p filled,
 * or -1 with *why set to a static description (p is then unspecified).
 */
int sts_policy_parse(const char *body, size_t len, struct sts_policy *p,
    const char **why);

/* sts_policy_line - line i of the policy-string, or NULL when i >= nlines. */
const char *sts_policy_line(const struct sts_policy *p, size_t i);

/* sts_mode_name - "enforce", "testing" or "none". */
const char *sts_mode_name(enum sts_mode mode);

/*
 * sts_pattern_match - 1 when host matches one mx pattern, else 0.
 * Case-insensitive; one trailing dot on either side is ignored.  "*.d"
 * matches exactly one extra non-empty left-most label; any other '*' in a
 * pattern never matches.
 */
int sts_pattern_match(const char *pattern, const char *host);

/* sts_mx_match - 1 when mxhost matches any of p's mx patterns, else 0. */
int sts_mx_match(const struct sts_policy *p, const char *mxhost);

#endif
