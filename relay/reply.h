/*
 * reply.h - parsing SMTP replies from a next hop (RFC 5321 §4.2).
 *
 *   Reply-line = *( Reply-code "-" [ textstring ] CRLF )
 *                   Reply-code [ SP textstring ] CRLF
 *
 * A reply is fed line by line (lines from line_read(), CRLF removed) into a
 * struct smtp_reply until it is complete.  Bounded: a hostile peer sending
 * endless continuation lines gets REPLY_ERROR, not unbounded memory.
 */
#ifndef RELAY_REPLY_H
#define RELAY_REPLY_H

#include <stddef.h>

#define REPLY_TEXT_MAX  4096   /* all lines' text kept, joined with '\n', truncated */
#define REPLY_LINES_MAX 128    /* continuation lines accepted */

struct smtp_reply {
	int code;                   /* 200..599 */
	char enh[16];               /* enhanced status code of the first line, or "" */
	char text[REPLY_TEXT_MAX];  /* text of the lines (without code, separator and a
	                               leading enh + SP on any line), '\n' joined, NUL
	                               terminated; raw peer bytes: escape before use */
	size_t text_len;
	int lines;                  /* lines seen */
	int done;
};

enum reply_status { REPLY_DONE, REPLY_MORE, REPLY_ERROR };

/* reply_init - empty the reply before the first line. */
void reply_init(struct smtp_reply *r);

/*
 * reply_feed - add one line.  Returns REPLY_MORE after a continuation line,
 * REPLY_DONE after the last line, REPLY_ERROR when the line is not a reply
 * line (code not 2xx..5xx three digits, separator not SP/'-'/end, code
 * differing from the first line's), REPLY_LINES_MAX lines in all are
 * exceeded, or the reply was already done.  *why gets a static description on
 * error.  The enh is recognised only when its class equals the code's first
 * digit (RFC 2034 §3).
 */
enum reply_status reply_feed(struct smtp_reply *r, const char *line, size_t len,
    const char **why);

/* EHLO keywords we care about (RFC 5321 §4.1.1.1). */
#define EHLO_PIPELINING  0x01
#define EHLO_STARTTLS    0x02
#define EHLO_SIZE        0x04
#define EHLO_8BITMIME    0x08
#define EHLO_SMTPUTF8    0x10
#define EHLO_ENHANCED    0x20
#define EHLO_CHUNKING    0x40

/*
 * reply_ehlo_caps - the keywords in a complete 250 EHLO reply (all lines but
 * the first).  *size gets the SIZE value (0 when absent or without value).
 */
unsigned reply_ehlo_caps(const struct smtp_reply *r, long long *size);

#endif
