/*
 * datascan.c - the DATA stream scanner (RFC 5321 §4.1.1.4, §4.5.2).
 *
 * Owns: finding the end of a message in the client's byte stream and refusing
 * the line endings that enable SMTP smuggling (CVE-2023-51764/5/6).  It only
 * looks at the bytes; the caller forwards them unchanged.
 *
 *   RFC 5321 §4.1.1.4: "The mail data is terminated by a line containing only
 *   a period, that is, the character sequence "<CRLF>.<CRLF>", where the first
 *   <CRLF> is actually the terminator of the previous line."
 *   ... "SMTP server implementations MUST NOT recognize [a bare LF] as a line
 *   ending."
 *   RFC 5321 §4.5.2: "Before sending a line of mail text, the SMTP client
 *   checks the first character of the line.  If it is a period, one additional
 *   period is inserted at the beginning of the line."
 *
 * The scanner starts at the start of a line (the CRLF of the DATA command is
 * the "first <CRLF>"), so a message whose first line is ".\r\n" is empty and
 * ends there.  A dot-stuffed line ("..x") is an ordinary line.
 *
 * What *used means for each status (offsets are into the p given to this call):
 *   DS_NEED_MORE      n: every byte was consumed.
 *   DS_END            offset just past the LF of the final ".\r\n": the bytes
 *                     p[0..used) are message stream including the terminator;
 *                     p[used..n) is what the client pipelined after it.
 *   DS_BARE_LF        offset of the offending LF.
 *   DS_BARE_CR        offset of the byte that follows the bare CR (the CR
 *                     itself may have come in an earlier call).
 *   DS_LINE_TOO_LONG  offset of the first byte beyond max_line.  That byte is
 *                     NOT consumed: to go on looking for the end of data, feed
 *                     again from p + used.  The rest of that line is not
 *                     measured; the next line is.
 * After DS_BARE_LF / DS_BARE_CR the scanner stays failed (every later call
 * returns the same status with *used = 0); after DS_END every later call
 * returns DS_END with *used = 0 until datascan_init().  Every byte is handled
 * by one state transition, so any split of the stream gives the same results.
 */
#include <stdint.h>

#include "relay/datascan.h"

/* ds->state: low bits are the position in the line grammar ... */
enum ds_state {
	DS_S_BOL,     /* at the start of a line */
	DS_S_DOT,     /* "." at the start of a line */
	DS_S_DOT_CR,  /* ".\r" at the start of a line */
	DS_S_TEXT,    /* inside a line */
	DS_S_CR,      /* a CR inside a line (or ending an empty line) */
	DS_S_END,     /* end of data seen */
	DS_S_BAD_LF,  /* failed on a bare LF */
	DS_S_BAD_CR,  /* failed on a bare CR */
	DS_S_BAD_NUL  /* failed on a NUL */
};
#define DS_STATE_MASK  0xff
/* ... and this bit is set once the current line was reported too long. */
#define DS_LONG_SEEN   0x100

/* datascan_step - the state after byte c in state st (a DS_S_* value). */
static enum ds_state
datascan_step(enum ds_state st, unsigned char c)
{
	switch (st) {
	case DS_S_BOL:
		if (c == '.')
			return DS_S_DOT;
		/* FALLTHROUGH */
	case DS_S_TEXT:
		if (c == '\n')
			return DS_S_BAD_LF;
		return c == '\r' ? DS_S_CR : DS_S_TEXT;
	case DS_S_DOT:
		if (c == '\n')
			return DS_S_BAD_LF;
		return c == '\r' ? DS_S_DOT_CR : DS_S_TEXT;
	case DS_S_DOT_CR:
		return c == '\n' ? DS_S_END : DS_S_BAD_CR;
	case DS_S_CR:
		return c == '\n' ? DS_S_BOL : DS_S_BAD_CR;
	default:
		return st;
	}
}

/* datascan_final - the status to repeat once the scanner is done or failed. */
static int
datascan_final(enum ds_state st, enum ds_status *status)
{
	switch (st) {
	case DS_S_END:    *status = DS_END; return 1;
	case DS_S_BAD_LF: *status = DS_BARE_LF; return 1;
	case DS_S_BAD_CR: *status = DS_BARE_CR; return 1;
	case DS_S_BAD_NUL: *status = DS_NUL; return 1;
	default:          return 0;
	}
}

/* datascan_too_long - 1 when one more byte would exceed max_line now. */
static int
datascan_too_long(const struct datascan *ds)
{
	return ds->max_line != 0 && !(ds->state & DS_LONG_SEEN) &&
	    ds->line_len >= ds->max_line;
}

void
datascan_init(struct datascan *ds, size_t max_line)
{
	ds->max_line = max_line;
	ds->line_len = 0;
	ds->state = DS_S_BOL;
}

enum ds_status
datascan_feed(struct datascan *ds, const char *p, size_t n, size_t *used)
{
	enum ds_state st = (enum ds_state)(ds->state & DS_STATE_MASK), next;
	enum ds_status status;
	size_t i;

	*used = 0;
	if (datascan_final(st, &status))
		return status;
	for (i = 0; i < n; i++) {
		next = p[i] == '\0' ? DS_S_BAD_NUL : datascan_step(st, (unsigned char)p[i]);
		*used = i;
		if (next == DS_S_BAD_NUL) {
			ds->state = (int)next;
			return DS_NUL;
		}
		if (next == DS_S_BAD_LF || next == DS_S_BAD_CR) {
			ds->state = (int)next;
			return next == DS_S_BAD_LF ? DS_BARE_LF : DS_BARE_CR;
		}
		if (datascan_too_long(ds)) {
			ds->state |= DS_LONG_SEEN;
			return DS_LINE_TOO_LONG;
		}
		/* RFC 5321 §4.5.2: the transparency dot is not part of the line. */
		if (ds->line_len < SIZE_MAX && !(st == DS_S_BOL && next == DS_S_DOT))
			ds->line_len++;
		st = next;
		ds->state = (int)st | (ds->state & DS_LONG_SEEN);
		if (st == DS_S_BOL) {
			ds->line_len = 0;
			ds->state = DS_S_BOL;
		} else if (st == DS_S_END) {
			*used = i + 1;
			return DS_END;
		}
	}
	*used = n;
	return DS_NEED_MORE;
}
