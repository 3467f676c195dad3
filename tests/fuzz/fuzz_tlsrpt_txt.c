/*
 * fuzz_tlsrpt_txt.c - libFuzzer target for report_send_txt_parse() and
 * report_send_txt_select() (the RFC 8460 §3 "_smtp._tls" TXT record).
 *
 * The input is one TXT record as a whole, and also split at '\n' into up to
 * eight records for the selection.  Checks: no memory error, results in
 * range, every kept URI safe to put into an SMTP command, a mail header or
 * an HTTP request line (printable ASCII, no space), https: ports in range
 * and paths starting with '/', notes printable and bounded, and selection
 * agreeing with the per-record results.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "policy/report_send.h"

#define FUZZ_RECORDS 8

static struct report_tlsrpt fuzz_rec;

static void
fuzz_check_text(const char *s, size_t cap, int space_ok)
{
	size_t n = strnlen(s, cap);

	if (n == cap)
		abort();
	for (size_t i = 0; i < n; i++)
		if (s[i] < (space_ok ? 0x20 : 0x21) || s[i] > 0x7e)
			abort();
}

static void
fuzz_check_rua(const struct report_rua *u)
{
	fuzz_check_text(u->uri, sizeof(u->uri), 0);
	if (u->kind == REPORT_RUA_MAILTO) {
		fuzz_check_text(u->addr, sizeof(u->addr), 0);
		if (strchr(u->addr, '@') == NULL || strpbrk(u->addr, "<>,\"") != NULL)
			abort();
		return;
	}
	if (u->kind != REPORT_RUA_HTTPS || u->port < 1 || u->port > 65535 || u->path[0] != '/')
		abort();
	fuzz_check_text(u->host, sizeof(u->host), 0);
	fuzz_check_text(u->path, sizeof(u->path), 0);
	for (const char *p = u->host; *p != '\0'; p++)
		if (*p >= 'A' && *p <= 'Z')
			abort();
}

static void
fuzz_check_rec(int r)
{
	if (r < -1 || r > 1 || fuzz_rec.nrua > REPORT_RUA_MAX || fuzz_rec.nnotes > REPORT_NOTES_MAX ||
	    fuzz_rec.nnotes > fuzz_rec.nignored || (r != 1 && fuzz_rec.why == NULL))
		abort();
	for (size_t i = 0; i < fuzz_rec.nnotes; i++)
		fuzz_check_text(fuzz_rec.notes[i], REPORT_NOTE_LEN, 1);
	for (size_t i = 0; r == 1 && i < fuzz_rec.nrua; i++)
		fuzz_check_rua(&fuzz_rec.rua[i]);
}

static void
fuzz_select(const char *s, size_t len)
{
	const char *recs[FUZZ_RECORDS];
	size_t lens[FUZZ_RECORDS], n = 0, start = 0, tlsrpt = 0, valid = 0;
	int r;

	for (size_t i = 0; i <= len && n < FUZZ_RECORDS; i++) {
		if (i < len && s[i] != '\n')
			continue;
		recs[n] = s + start;
		lens[n] = i - start;
		n++;
		start = i + 1;
	}
	for (size_t i = 0; i < n; i++) {
		r = report_send_txt_parse(recs[i], lens[i], &fuzz_rec);
		tlsrpt += (r != 0);
		valid += (r == 1);
	}
	r = report_send_txt_select(recs, lens, n, &fuzz_rec);
	fuzz_check_rec(r);
	if (r != (tlsrpt == 1 && valid == 1))
		abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *s = (const char *)data;

	fuzz_check_rec(report_send_txt_parse(s, size, &fuzz_rec));
	fuzz_select(s, size);
	return 0;
}
