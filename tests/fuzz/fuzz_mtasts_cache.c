/*
 * fuzz_mtasts_cache.c - libFuzzer target for the MTA-STS cache file format
 * (mtasts_cache_parse / mtasts_cache_format) and mtasts_domain_norm().
 *
 * The format is strict, so it is canonical: every input that parses must
 * format back to exactly the same bytes, and the parsed fields must obey the
 * documented limits.  Each input line is also fed to mtasts_domain_norm(),
 * whose output must be a fixed point and free of upper case.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "policy/mtasts.h"

static void
fuzz_check_rec(const struct mtasts_cache_rec *rec, const char *buf, size_t len)
{
	char dom[MTASTS_DOMAIN_MAX + 1];
	size_t idlen = strlen(rec->id);

	if (mtasts_domain_norm(rec->domain, dom) != 0 || strcmp(dom, rec->domain) != 0)
		abort();
	if (idlen == 0 || idlen > STS_ID_MAX || rec->expires < rec->fetched ||
	    rec->fetched < 0 || rec->body_len > MTASTS_BODY_MAX)
		abort();
	if (rec->body < buf || rec->body + rec->body_len != buf + len)
		abort();
}

/* format(parse(x)) == x, byte for byte. */
static void
fuzz_roundtrip(const struct mtasts_cache_rec *rec, const char *buf, size_t len)
{
	struct evbuffer *out = evbuffer_new();
	unsigned char *p;

	if (out == NULL)
		return;
	if (mtasts_cache_format(rec, out) != 0)
		abort();
	p = evbuffer_pullup(out, -1);
	if (evbuffer_get_length(out) != len || (len > 0 && memcmp(p, buf, len) != 0))
		abort();
	evbuffer_free(out);
}

static void
fuzz_domain_lines(const char *s, size_t len)
{
	char line[MTASTS_DOMAIN_MAX + 8], a[MTASTS_DOMAIN_MAX + 1], b[MTASTS_DOMAIN_MAX + 1];
	size_t start = 0, i, n, k;

	for (i = 0; i <= len; i++) {
		if (i < len && s[i] != '\n')
			continue;
		n = i - start < sizeof(line) - 1 ? i - start : sizeof(line) - 1;
		memcpy(line, s + start, n);
		line[n] = '\0';
		start = i + 1;
		if (mtasts_domain_norm(line, a) != 0)
			continue;
		if (mtasts_domain_norm(a, b) != 0 || strcmp(a, b) != 0)
			abort();
		for (k = 0; a[k] != '\0'; k++)
			if (a[k] >= 'A' && a[k] <= 'Z')
				abort();
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mtasts_cache_rec rec;
	const char *s = (const char *)data;
	const char *why = NULL;

	if (mtasts_cache_parse(s, size, &rec, &why) == 0) {
		fuzz_check_rec(&rec, s, size);
		fuzz_roundtrip(&rec, s, size);
	} else if (why == NULL) {
		abort();
	}
	fuzz_domain_lines(s, size);
	return 0;
}
