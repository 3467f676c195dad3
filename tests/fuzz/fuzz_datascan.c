/*
 * fuzz_datascan.c - libFuzzer target for relay/datascan.c.
 *
 * The first input byte chooses the line limit (high nibble: 0 = none, else
 * 2 + nibble) and seeds the chunk sizes (1..32, varying); the rest is the
 * message stream.  It is scanned once whole and once in those chunks, and the
 * two event lists (status and absolute offset) must be identical: the
 * scanner's results may not depend on how the bytes arrive.  Each event is
 * also checked against the bytes it points at.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "relay/datascan.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x) do { if (!(x)) __builtin_trap(); } while (0)

struct ds_event {
	enum ds_status status;
	size_t off;
};

struct ds_log {
	struct ds_event *ev;
	size_t n, max;
};

/* ds_log_add - record an event; returns 1 when the scan is over. */
static int
ds_log_add(struct ds_log *log, enum ds_status st, size_t off)
{
	CHECK(log->n < log->max);
	log->ev[log->n].status = st;
	log->ev[log->n].off = off;
	log->n++;
	return st != DS_LINE_TOO_LONG;
}

/* ds_chunk - scan p[0..n) at absolute offset base; 1 when over. */
static int
ds_chunk(struct datascan *ds, const char *p, size_t n, size_t base,
    struct ds_log *log)
{
	size_t pos = 0, used;
	enum ds_status st;

	for (;;) {
		st = datascan_feed(ds, p + pos, n - pos, &used);
		CHECK(used <= n - pos);
		if (st == DS_NEED_MORE) {
			CHECK(used == n - pos);
			return 0;
		}
		if (ds_log_add(log, st, base + pos + used))
			return 1;
		CHECK(used < n - pos);
		pos += used;
	}
}

/* ds_scan - scan s[0..n) in chunks from the seed (0 = whole). */
static void
ds_scan(const char *s, size_t n, size_t max_line, unsigned seed,
    struct ds_log *log)
{
	struct datascan ds;
	size_t off = 0, len;

	datascan_init(&ds, max_line);
	while (off < n) {
		len = n - off;
		if (seed != 0) {
			seed = seed * 1103515245u + 12345u;
			if (len > 1 + (seed >> 16) % 32)
				len = 1 + (seed >> 16) % 32;
		}
		if (ds_chunk(&ds, s + off, len, off, log))
			return;
		off += len;
	}
	ds_log_add(log, DS_NEED_MORE, n);
}

/* ds_check_event - the event agrees with the bytes it names. */
static void
ds_check_event(const char *s, size_t n, const struct ds_event *e)
{
	switch (e->status) {
	case DS_END:
		CHECK(e->off >= 3 && e->off <= n);
		CHECK(memcmp(s + e->off - 3, ".\r\n", 3) == 0);
		CHECK(e->off == 3 || (e->off >= 5 && s[e->off - 4] == '\n' &&
		    s[e->off - 5] == '\r'));
		break;
	case DS_BARE_LF:
		CHECK(e->off < n && s[e->off] == '\n');
		CHECK(e->off == 0 || s[e->off - 1] != '\r');
		break;
	case DS_BARE_CR:
		CHECK(e->off >= 1 && e->off < n && s[e->off - 1] == '\r');
		CHECK(s[e->off] != '\n');
		break;
	case DS_LINE_TOO_LONG:
		CHECK(e->off < n);
		break;
	case DS_NUL:
		CHECK(e->off < n && s[e->off] == '\0');
		break;
	case DS_NEED_MORE:
		CHECK(e->off == n);
		break;
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ds_log whole, split;
	const char *s = (const char *)data + 1;
	size_t n, max_line, i;

	if (size == 0)
		return 0;
	n = size - 1;
	max_line = (data[0] >> 4) == 0 ? 0 : 2 + (data[0] >> 4);
	whole.max = split.max = n + 2;
	whole.n = split.n = 0;
	whole.ev = calloc(whole.max, sizeof(*whole.ev));
	split.ev = calloc(split.max, sizeof(*split.ev));
	CHECK(whole.ev != NULL && split.ev != NULL);
	ds_scan(s, n, max_line, 0, &whole);
	ds_scan(s, n, max_line, data[0] | 0x100u, &split);
	CHECK(whole.n == split.n);
	for (i = 0; i < whole.n; i++) {
		CHECK(whole.ev[i].status == split.ev[i].status);
		CHECK(whole.ev[i].off == split.ev[i].off);
		ds_check_event(s, n, &whole.ev[i]);
	}
	free(whole.ev);
	free(split.ev);
	return 0;
}
