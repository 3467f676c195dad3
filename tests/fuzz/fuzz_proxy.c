/*
 * fuzz_proxy.c - libFuzzer target for proxy_parse().
 *
 * The first input byte picks the version (even: 1, odd: 2); the rest is the
 * connection's first bytes.  Besides memory errors it checks the contract in
 * relay/proxy.h: a header of length k is reported as k on the header alone
 * and 0 on its proper prefixes; a -1 stays -1 for longer buffers; *out is
 * consistent with the result.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sys/socket.h>

#include "relay/proxy.h"

static int
fuzz_parse(const uint8_t *b, size_t n, int version, struct proxy_hdr *h)
{
	const char *why = NULL;
	int r = proxy_parse(b, n, version, h, &why);

	if (r < -1 || (size_t)(r > 0 ? r : 0) > n || (r < 0 && why == NULL))
		abort();
	return r;
}

static void
fuzz_check_hdr(const struct proxy_hdr *h, int version)
{
	if (h->version != version)
		abort();
	if (h->local ? h->family != AF_UNSPEC :
	    (h->family != AF_INET && h->family != AF_INET6))
		abort();
	if (!h->local && (h->src.ss_family != h->family || h->dst.ss_family != h->family))
		abort();
}

/* Proper prefixes of a k-byte header give 0 (all of them for short ones). */
static void
fuzz_prefixes(const uint8_t *b, int k, int version)
{
	struct proxy_hdr h;
	int step = k > 256 ? k / 64 : 1;

	for (int i = 0; i < k; i += step)
		if (fuzz_parse(b, (size_t)i, version, &h) != 0)
			abort();
	if (fuzz_parse(b, (size_t)k - 1, version, &h) != 0)
		abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct proxy_hdr h;
	int version, r;

	if (size == 0)
		return 0;
	version = (data[0] & 1) ? 2 : 1;
	data++;
	size--;
	r = fuzz_parse(data, size, version, &h);
	if (r > 0) {
		fuzz_check_hdr(&h, version);
		if (fuzz_parse(data, (size_t)r, version, &h) != r)
			abort();
		fuzz_prefixes(data, r, version);
	} else if (r == -1 && size < 4096) {
		uint8_t *more = malloc(size + 16);
		if (more == NULL)
			return 0;
		memcpy(more, data, size);
		memset(more + size, '\n', 16);
		if (fuzz_parse(more, size + 16, version, &h) != -1)
			abort();
		free(more);
	}
	return 0;
}
