/*
 * fuzz_sts_policy.c - libFuzzer target for sts_policy_parse() and matching.
 *
 * Parses the input as a policy body, checks the invariants of a parsed
 * policy, then matches host names taken from the input's lines (and built
 * from the parsed patterns) with sts_mx_match() / sts_pattern_match().
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "policy/sts.h"

#define FUZZ_HOST_MAX 300

static void
fuzz_check_policy(const struct sts_policy *p)
{
	if (p->nmx > STS_MX_MAX || p->max_age < 0 || p->max_age > STS_MAX_AGE_MAX)
		abort();
	if (p->mode != STS_MODE_NONE && p->nmx == 0)
		abort();
	if (p->nlines > STS_LINES_MAX)
		abort();
	for (size_t i = 0; i < p->nlines; i++)
		if (strlen(sts_policy_line(p, i)) >= STS_TEXT_MAX)
			abort();
	for (size_t i = 0; i < p->nmx; i++) {
		size_t n = strnlen(p->mx[i], STS_HOST_MAX);
		if (n == 0 || n == STS_HOST_MAX)
			abort();
	}
}

/* Each pattern matches itself (exact) or "x." + base (wildcard), never base. */
static void
fuzz_self_match(const struct sts_policy *p)
{
	char host[STS_HOST_MAX + 2];

	for (size_t i = 0; i < p->nmx; i++) {
		const char *pat = p->mx[i];
		if (pat[0] != '*') {
			if (!sts_mx_match(p, pat))
				abort();
			continue;
		}
		memcpy(host, "x", 2);
		strcat(host, pat + 1);
		if (!sts_pattern_match(pat, host) || sts_pattern_match(pat, pat + 2))
			abort();
	}
}

/* Every input line, as a NUL-terminated host name, against the policy. */
static void
fuzz_match_lines(const struct sts_policy *p, const char *s, size_t len)
{
	char host[FUZZ_HOST_MAX];
	size_t start = 0;

	for (size_t i = 0; i <= len; i++) {
		size_t n;
		if (i < len && s[i] != '\n')
			continue;
		n = i - start;
		if (n >= sizeof(host))
			n = sizeof(host) - 1;
		memcpy(host, s + start, n);
		host[n] = '\0';
		(void)sts_mx_match(p, host);
		if (p->nmx > 0)
			(void)sts_pattern_match(host, p->mx[0]);
		start = i + 1;
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct sts_policy p;
	const char *why = NULL;
	const char *s = (const char *)data;

	if (sts_policy_parse(s, size, &p, &why) == 0) {
		fuzz_check_policy(&p);
		fuzz_self_match(&p);
	} else if (why == NULL) {
		abort();
	}
	fuzz_match_lines(&p, s, size);
	return 0;
}
