/*
 * line.c - the one strict CRLF line reader (RFC 5321 §2.3.8, §4.1.1.4).
 *
 * Owns: taking one SMTP line out of an evbuffer (line_read) and throwing away
 * the rest of an over-long one (line_skip).  Nothing here allocates: the line
 * is copied into the caller's fixed buffer, and only after its length has been
 * checked against that buffer's size.
 *
 *   RFC 5321 §2.3.8: "Lines consist of zero or more data characters
 *   terminated by the sequence ASCII character "CR" (hex value 0D) followed
 *   immediately by ASCII character "LF" (hex value 0A)."  ... "SMTP client
 *   implementations MUST NOT transmit these characters except when they are
 *   intended as line terminators".
 *
 * Returns (see line.h): LINE_OK with the content in out (CRLF removed and a NUL
 * added), LINE_NEED_MORE while the line may still fit, LINE_TOO_LONG as soon as
 * it cannot (nothing removed), LINE_BARE_LF for a line ended by LF alone (the
 * line is removed, so the caller can answer and go on or close).
 *
 * Bytes other than LF are not interpreted: a NUL or a CR inside the line is
 * copied into out as is, and callers that need C strings check
 * strlen(out) == *len.  The decision is the same whatever the split of the
 * input, one byte at a time included.
 */
#include <string.h>

#include <event2/buffer.h>

#include "relay/line.h"

/*
 * line_find_lf - offset of the first LF among the first limit bytes of in, or
 * -1.  The search is bounded so that a peer that never sends LF costs at most
 * limit bytes of scanning per call, however much is buffered.
 */
static ev_ssize_t
line_find_lf(struct evbuffer *in, size_t limit)
{
	struct evbuffer_ptr end, found;

	if (evbuffer_ptr_set(in, &end, limit, EVBUFFER_PTR_SET) < 0)
		return -1;
	found = evbuffer_search_range(in, "\n", 1, NULL, &end);
	return found.pos;
}

/* line_byte_at - the byte at offset pos of in (pos < length). */
static unsigned char
line_byte_at(struct evbuffer *in, size_t pos)
{
	struct evbuffer_ptr p;
	unsigned char c = 0;

	if (evbuffer_ptr_set(in, &p, pos, EVBUFFER_PTR_SET) == 0)
		(void)evbuffer_copyout_from(in, &p, &c, 1);
	return c;
}

/*
 * line_pending - the status when no LF is among the buffered bytes.
 * The longest acceptable line is max - 1 content bytes + CR + LF, so the line
 * is already too long once max bytes are buffered, unless the max-th byte is
 * the CR that may end it.
 */
static enum line_status
line_pending(struct evbuffer *in, size_t max)
{
	size_t have = evbuffer_get_length(in);

	if (have < max)
		return LINE_NEED_MORE;
	if (have == max && line_byte_at(in, max - 1) == '\r')
		return LINE_NEED_MORE;
	return LINE_TOO_LONG;
}

enum line_status
line_read(struct evbuffer *in, char *out, size_t max, size_t *len)
{
	size_t have = evbuffer_get_length(in);
	size_t content;
	ev_ssize_t lf;
	enum line_status st = LINE_OK;

	*len = 0;
	if (max == 0)
		return have > 0 ? LINE_TOO_LONG : LINE_NEED_MORE;
	/* An LF at offset max still ends an acceptable line (CR at max - 1). */
	lf = line_find_lf(in, have <= max ? have : max + 1);
	if (lf < 0)
		return line_pending(in, max);
	content = (size_t)lf;
	if (content > 0 && line_byte_at(in, content - 1) == '\r')
		content--;
	else
		st = LINE_BARE_LF;
	if (content > max - 1)
		return LINE_TOO_LONG;
	if (evbuffer_copyout(in, out, content) != (ev_ssize_t)content)
		return LINE_NEED_MORE;
	out[content] = '\0';
	(void)evbuffer_drain(in, (size_t)lf + 1);
	*len = content;
	return st;
}

int
line_skip(struct evbuffer *in)
{
	struct evbuffer_ptr lf;
	size_t eol_len = 0;

	lf = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_LF);
	if (lf.pos < 0) {
		(void)evbuffer_drain(in, evbuffer_get_length(in));
		return 0;
	}
	(void)evbuffer_drain(in, (size_t)lf.pos + eol_len);
	return 1;
}
