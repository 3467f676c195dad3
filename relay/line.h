/*
 * line.h - the one strict CRLF line reader (RFC 5321 §2.3.8, §4.1.1.4).
 *
 * Every place that reads SMTP lines (server commands, upstream replies) uses
 * line_read().  It checks the length before copying, accepts only CRLF as a
 * line end and never treats a bare LF as one.
 */
#ifndef RELAY_LINE_H
#define RELAY_LINE_H

#include <stddef.h>

struct evbuffer;

enum line_status {
	LINE_OK,        /* a line was removed from the buffer; out holds it without CRLF */
	LINE_NEED_MORE, /* no complete line yet, and what is buffered may still fit */
	LINE_TOO_LONG,  /* the line cannot fit (known as soon as max bytes are buffered
	                   without LF, unless the max-th is CR); nothing removed:
	                   call line_skip() until it returns 1 */
	LINE_BARE_LF    /* the line ended in LF without CR; it was removed (out holds it) */
};

/*
 * line_read - take one line from in.
 * max is the size of out including the terminating NUL, so the longest line
 * accepted is max - 1 bytes of content plus CRLF.  *len receives the content
 * length.  A NUL byte inside the line is copied as is: callers that need C
 * strings must check strlen(out) == *len.
 */
enum line_status line_read(struct evbuffer *in, char *out, size_t max, size_t *len);

/*
 * line_skip - discard input up to and including the next LF.
 * Returns 1 when the LF was found (the over-long line is fully gone), 0 when
 * all buffered input was discarded and the line goes on.
 */
int line_skip(struct evbuffer *in);

#endif
