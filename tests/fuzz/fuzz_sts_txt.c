/*
 * fuzz_sts_txt.c - libFuzzer target for sts_txt_parse() and sts_txt_select().
 *
 * The input is one TXT record as a whole, and also split at '\n' into up to
 * eight records for the STS-01 selection.  Checks: no memory error, results
 * in range, a returned id is 1..32 alphanumerics, and selection agrees with
 * the per-record results.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "policy/sts.h"

#define FUZZ_RECORDS 8

static void
fuzz_check_id(const char *id)
{
	size_t n = strlen(id);

	if (n == 0 || n > STS_ID_MAX)
		abort();
	for (size_t i = 0; i < n; i++)
		if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'z') ||
		    (id[i] >= 'A' && id[i] <= 'Z')))
			abort();
}

static void
fuzz_select(const char *s, size_t len)
{
	const char *recs[FUZZ_RECORDS];
	size_t lens[FUZZ_RECORDS], n = 0, start = 0, stsv1 = 0, valid = 0;
	char id[STS_ID_MAX + 1];

	for (size_t i = 0; i <= len && n < FUZZ_RECORDS; i++) {
		if (i < len && s[i] != '\n')
			continue;
		recs[n] = s + start;
		lens[n] = i - start;
		n++;
		start = i + 1;
	}
	for (size_t i = 0; i < n; i++) {
		int r = sts_txt_parse(recs[i], lens[i], id);
		stsv1 += (r != 0);
		valid += (r == 1);
	}
	if (sts_txt_select(recs, lens, n, id) != (stsv1 == 1 && valid == 1))
		abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *s = (const char *)data;
	char id[STS_ID_MAX + 1];
	int r = sts_txt_parse(s, size, id);

	if (r < -1 || r > 1)
		abort();
	if (r == 1)
		fuzz_check_id(id);
	fuzz_select(s, size);
	return 0;
}
