/*
 * fuzz_reply.c - libFuzzer target for relay/reply.c and relay/line.c.
 *
 * The input is a next hop's byte stream.  Lines are taken with line_read()
 * (over-long ones skipped with line_skip()) and fed to reply_feed(); every
 * complete reply also goes through reply_ehlo_caps().  The struct invariants
 * are checked after every line, and the whole run is repeated with the input
 * arriving one byte at a time: both runs must see the same lines and replies.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "relay/line.h"
#include "relay/reply.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x) do { if (!(x)) __builtin_trap(); } while (0)
#define LINE_MAX_FUZZ 600

/* What one run saw, as a running hash (FNV-1a) and a count. */
struct run {
	struct smtp_reply r;
	uint64_t hash;
	size_t events;
	int skipping;
};

static void
run_mix(struct run *run, const void *p, size_t n)
{
	const unsigned char *u = p;
	size_t i;

	for (i = 0; i < n; i++)
		run->hash = (run->hash ^ u[i]) * 1099511628211ULL;
	run->events++;
}

static void
check_reply(const struct smtp_reply *r)
{
	CHECK(r->text_len < REPLY_TEXT_MAX && r->text[r->text_len] == '\0');
	CHECK(r->lines >= 0 && r->lines <= REPLY_LINES_MAX);
	CHECK(memchr(r->enh, '\0', sizeof(r->enh)) != NULL);
	CHECK(r->lines == 0 || (r->code >= 200 && r->code <= 599));
}

/* run_line - feed one line to the reply parser. */
static void
run_line(struct run *run, const char *line, size_t len)
{
	const char *why = NULL;
	enum reply_status st = reply_feed(&run->r, line, len, &why);
	long long size;
	unsigned caps;

	check_reply(&run->r);
	run_mix(run, &st, sizeof(st));
	if (st == REPLY_ERROR) {
		CHECK(why != NULL);
		reply_init(&run->r);
	} else if (st == REPLY_DONE) {
		CHECK(run->r.done);
		caps = reply_ehlo_caps(&run->r, &size);
		CHECK(size >= 0);
		CHECK(caps == 0 || run->r.code == 250);
		run_mix(run, &caps, sizeof(caps));
		run_mix(run, run->r.text, run->r.text_len);
		reply_init(&run->r);
	}
}

/* run_drain - take every complete line out of buf. */
static void
run_drain(struct run *run, struct evbuffer *buf)
{
	char line[LINE_MAX_FUZZ];
	enum line_status st;
	size_t len;

	for (;;) {
		if (run->skipping && !line_skip(buf))
			return;
		run->skipping = 0;
		st = line_read(buf, line, sizeof(line), &len);
		if (st == LINE_NEED_MORE)
			return;
		run_mix(run, &st, sizeof(st));
		if (st == LINE_TOO_LONG) {
			run->skipping = 1;
			continue;
		}
		CHECK(len < sizeof(line) && line[len] == '\0');
		run_mix(run, line, len);
		run_line(run, line, len);
	}
}

static void
run_input(struct run *run, const uint8_t *data, size_t size, size_t chunk)
{
	struct evbuffer *buf = evbuffer_new();
	size_t off, n;

	CHECK(buf != NULL);
	memset(run, 0, sizeof(*run));
	run->hash = 14695981039346656037ULL;
	reply_init(&run->r);
	for (off = 0; off < size; off += n) {
		n = size - off < chunk ? size - off : chunk;
		evbuffer_add(buf, data + off, n);
		run_drain(run, buf);
	}
	run_mix(run, &run->skipping, sizeof(run->skipping));
	n = evbuffer_get_length(buf);
	run_mix(run, &n, sizeof(n));
	evbuffer_free(buf);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct run whole, trickle;

	run_input(&whole, data, size, size ? size : 1);
	run_input(&trickle, data, size, 1);
	CHECK(whole.events == trickle.events && whole.hash == trickle.hash);
	return 0;
}
