/*
 * datascan.h - the DATA stream scanner (RFC 5321 §4.1.1.4, §4.5.2).
 *
 * Scans the client's message bytes as they arrive, without copying them, to
 * find the end-of-data "<CRLF>.<CRLF>" and to refuse what enables SMTP
 * smuggling (CVE-2023-51764/5/6): a bare LF or a bare CR anywhere.  The bytes
 * themselves, dot-stuffing included, are forwarded unchanged by the caller, so
 * the next hop receives the message byte-identical.
 *
 * The scanner is a pure function of its state and the bytes given; it may be
 * fed any split of the stream (one byte at a time gives the same result).
 */
#ifndef RELAY_DATASCAN_H
#define RELAY_DATASCAN_H

#include <stddef.h>

enum ds_status {
	DS_NEED_MORE,     /* all n bytes consumed, no end of data yet */
	DS_END,           /* end of data: *used bytes up to and including the final CRLF */
	DS_BARE_LF,       /* LF not preceded by CR at p[*used] */
	DS_BARE_CR,       /* CR not followed by LF; *used is the offset of the byte after the CR */
	DS_LINE_TOO_LONG, /* a line longer than max_line (CRLF included) at p[*used];
	                     that byte is not consumed: feed again from p + *used */
	DS_NUL            /* a NUL octet at p[*used] (RFC 6152 §2: never in SMTP data);
	                     the stream is unusable, as after a bare CR or LF */
};

struct datascan {
	size_t max_line;   /* longest text line including CRLF; 0 = no limit */
	size_t line_len;   /* bytes of the current line so far (CRLF included once seen) */
	int state;         /* internal */
};

/* datascan_init - start of a message: the scanner stands at the start of a line. */
void datascan_init(struct datascan *ds, size_t max_line);

/*
 * datascan_feed - scan p[0..n).
 * *used receives how many bytes belong to the message stream up to the point
 * reported (see enum ds_status).  After DS_LINE_TOO_LONG the caller may keep
 * feeding (the line is then no longer measured) to find the end of data;
 * after DS_BARE_LF / DS_BARE_CR the stream is unusable and must be dropped.
 * DS_NEED_MORE sets *used = n.  DS_END's *used includes the terminating
 * ".\r\n"; p[*used..n) is what the client pipelined after it.  Once ended or
 * failed, later calls repeat the status with *used = 0 until datascan_init().
 * NUL and 8-bit bytes are not refused here.
 */
enum ds_status datascan_feed(struct datascan *ds, const char *p, size_t n, size_t *used);

#endif
