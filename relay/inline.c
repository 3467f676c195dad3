/*
 * inline.c - the in-line relay: each client transaction is replayed on a
 * client connection to the next hop, and the client gets the next hop's own
 * answers (DESIGN.md guarantee "Nothing lost": 250 to DATA only after the
 * next hop's 250).
 *
 * The connection is opened at the first RCPT (where to, and under which TLS
 * policy, is relay/route.c's business), reused for the session's later
 * transactions and, when the session ends between transactions, kept in the
 * connection cache (relay/conncache.c) for the next one.  MAIL is answered
 * locally and sent to the next hop before the first RCPT.  The message streams through with back-pressure
 * (never whole in memory); when it must be refused midway, the next-hop
 * connection is closed before the final dot, so no partial message can be
 * delivered.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>

#include "relay/evlog.h"
#include "relay/listener.h"
#include "relay/conncache.h"
#include "relay/route.h"
#include "relay/session.h"
#include "relay/trace.h"

#define INLINE_BODY_HIWAT (256 * 1024)   /* queued toward the next hop */

static void inline_up_cb(void *arg, enum upstream_event ev, const struct smtp_reply *r);

int
inline_connect_target(struct session *s)
{
	struct upstream_params p = {
		.base = s->base,
		.ssl_ctx = s->listener->client_ctx,
		.helo_name = s->cfg->helo_name,
		.session = s->id,
		.connect_timeout = s->cfg->connect_timeout,
		.command_timeout = s->cfg->out_command_timeout,
		.data_timeout = s->cfg->out_data_timeout,
		.final_timeout = s->cfg->out_final_timeout,
	};

	gettimeofday(&s->up_start, NULL);
	s->up_was_ready = 0;
	s->up_in_txn = 0;
	s->up = conncache_get(&s->targets[s->target]);
	if (s->up != NULL && upstream_adopt(s->up, &s->targets[s->target], inline_up_cb, s) < 0)
		upstream_free(&s->up);
	if (s->up == NULL)
		s->up = upstream_connect(&p, &s->targets[s->target], inline_up_cb, s);
	return s->up ? 0 : -1;
}

/* Finish the pending operation with a reply of our own and go on. */
void
inline_answer(struct session *s, int code, const char *enh, const char *text)
{
	enum session_op op = s->op;

	s->op = OP_NONE;
	session_reply(s, code, enh, "%s", text);
	if (op == OP_DOT || op == OP_RSET) {
		txn_free(&s->txn);
		session_enter(s, S_HELO);
	} else
		session_enter(s, s->txn && s->txn->naccepted ? S_RCPT : S_MAIL);
	session_resume(s);
}

/* MAIL as forwarded: only the parameters the next hop announced. */
static int
inline_send_mail(struct session *s)
{
	struct txn *t = s->txn;
	unsigned caps = upstream_caps(s->up);
	int n;

	if (t->params.smtputf8 && !(caps & EHLO_SMTPUTF8)) {
		inline_answer(s, 553, "5.6.7", "Error: next hop does not support SMTPUTF8");
		return -1;
	}
	n = snprintf(t->mail_line, sizeof(t->mail_line), "MAIL FROM:<%s>", t->from.addr);
	if (t->params.size >= 0 && (caps & EHLO_SIZE))
		n += snprintf(t->mail_line + n, sizeof(t->mail_line) - (size_t)n, " SIZE=%lld",
		    t->params.size);
	if (t->params.body == 8 && (caps & EHLO_8BITMIME))
		n += snprintf(t->mail_line + n, sizeof(t->mail_line) - (size_t)n, " BODY=8BITMIME");
	if (t->params.smtputf8)
		snprintf(t->mail_line + n, sizeof(t->mail_line) - (size_t)n, " SMTPUTF8");
	if (upstream_command(s->up, t->mail_line) < 0)
		return -1;
	s->up_txn_pending = 1;
	return 0;
}

static int
inline_send_rcpt(struct session *s)
{
	snprintf(s->txn->rcpt_line, sizeof(s->txn->rcpt_line), "RCPT TO:<%s>",
	    s->txn->rcpt.addr);
	return upstream_command(s->up, s->txn->rcpt_line);
}

/* The next hop is ready for the RCPT in flight: MAIL first if needed. */
static void
inline_proceed_rcpt(struct session *s)
{
	int rc = s->up_in_txn ? inline_send_rcpt(s) : inline_send_mail(s);

	if (rc < 0 && s->op == OP_RCPT)
		inline_answer(s, 451, "4.4.2", "Error: next hop not ready");
}

static void
inline_rcpt_event(struct session *s, const struct smtp_reply *r)
{
	struct evline *e = evlog_begin("rcpt", s->id);

	evlog_str(e, "client_ip", s->peer_ip);
	evlog_addr(e, "from", s->txn->from.addr);
	evlog_addr(e, "rcpt", s->txn->rcpt.addr);
	evlog_int(e, "code", r->code);
	evlog_textn(e, "reply", r->text, r->text_len);
	evlog_end(e);
}


/*
 * RCPT: one destination per transaction until a spool exists (RFC 5321
 * §3.3): a recipient for another domain gets 452 4.5.3 and the client's
 * queue sends it separately.
 */
int
inline_rcpt(struct session *s)
{
	struct txn *t = s->txn;
	int smarthost = s->lc->mode == MODE_SMARTHOST;
	const char *dest = smarthost ? t->rcpt.domain : "next-hop";

	if (smarthost && (t->rcpt.postmaster || t->rcpt.domain_literal)) {
		session_reply(s, 550, "5.1.1", "<%s>: no such destination on this relay", t->rcpt.addr);
		return 1;
	}
	if (smarthost && t->domain[0] && strcasecmp(t->domain, dest) != 0 &&
	    (t->naccepted > 0 || s->up_in_txn)) {
		session_reply(s, 452, "4.5.3", "Error: one destination domain per transaction: "
		    "send <%s> in a new transaction", t->rcpt.addr);
		return 1;
	}
	if (s->up != NULL && (!upstream_ready(s->up) || strcasecmp(s->up_domain, dest) != 0))
		inline_release(s);
	snprintf(t->domain, sizeof(t->domain), "%s", t->rcpt.domain);
	s->op = OP_RCPT;
	session_enter(s, S_WAIT);
	if (s->up != NULL) {
		inline_proceed_rcpt(s);
		return 0;
	}
	snprintf(s->up_domain, sizeof(s->up_domain), "%s", dest);
	route_start(s);
	return 0;
}

int
inline_data(struct session *s)
{
	if (!upstream_ready(s->up)) {
		session_reply(s, 451, "4.4.2", "Error: next hop connection lost");
		return 1;
	}
	s->op = OP_DATA;
	session_enter(s, S_WAIT);
	upstream_command(s->up, "DATA");
	return 0;
}

/* RSET: the next hop's transaction goes too.  1 when done, 0 when waiting. */
int
inline_rset(struct session *s)
{
	if (!upstream_ready(s->up) || !s->up_in_txn)
		return 1;
	s->op = OP_RSET;
	s->up_in_txn = 0;
	session_enter(s, S_WAIT);
	upstream_command(s->up, "RSET");
	return 0;
}

/*
 * The session is done with its next-hop connection: an idle one (between
 * transactions) goes to the connection cache, anything else is closed.
 */
void
inline_release(struct session *s)
{
	inline_txn_end(s);
	route_cancel(s);
	if (s->up != NULL && upstream_ready(s->up) && !s->up_in_txn && s->op == OP_NONE)
		conncache_put(&s->up, s->base);
	inline_abort(s);
}

/*
 * A transaction that used the next hop ends without a final reply (all
 * recipients refused, RSET, the client gone): its session still counts for
 * TLS-RPT, so it gets its delivery event too.
 */
void
inline_txn_end(struct session *s)
{
	int code;

	if (s->up == NULL || !s->up_txn_pending || s->txn == NULL) {
		s->up_txn_pending = 0;
		return;
	}
	code = s->txn->last_rcpt_code ? s->txn->last_rcpt_code : 451;
	route_delivery_event(s, upstream_target(s->up), s->up, s->txn->naccepted == 0 &&
	    code / 100 == 5 ? "rejected" : "deferred", NULL, code, s->txn->naccepted ?
	    "transaction abandoned before the end of DATA" : "no recipient accepted");
}

/* Close the next-hop connection now (before any final dot). */
void
inline_abort(struct session *s)
{
	inline_txn_end(s);
	route_cancel(s);
	upstream_free(&s->up);
	s->up_in_txn = 0;
	s->op = OP_NONE;
}

/* Reply to our MAIL (sent for the RCPT in flight) or to the RCPT itself. */
static void
inline_on_rcpt_reply(struct session *s, const struct smtp_reply *r)
{
	if (!s->up_in_txn) {
		if (r->code / 100 == 2) {
			s->up_in_txn = 1;
			if (inline_send_rcpt(s) < 0)
				inline_answer(s, 451, "4.4.2", "Error: next hop not ready");
			return;
		}
		/* The next hop refused the sender: that is this RCPT's answer. */
	} else if (r->code / 100 == 2) {
		if (s->txn->naccepted++ == 0)
			snprintf(s->txn->first_rcpt, sizeof(s->txn->first_rcpt), "%s",
			    s->txn->rcpt.addr);
	}
	s->txn->last_rcpt_code = r->code;
	inline_rcpt_event(s, r);
	s->op = OP_NONE;
	session_relay_reply(s, r);
	session_enter(s, s->txn->naccepted ? S_RCPT : S_MAIL);
	session_resume(s);
}

static void
inline_on_data_reply(struct session *s, const struct smtp_reply *r)
{
	char trace[2048];
	size_t n;

	s->op = OP_NONE;
	if (r->code != 354) {
		session_relay_reply(s, r);
		session_enter(s, S_RCPT);
		session_resume(s);
		return;
	}
	datascan_init(&s->txn->ds, (size_t)s->lc->max_line_length);
	gettimeofday(&s->txn->data_start, NULL);
	session_reply(s, 354, NULL, "End data with <CR><LF>.<CR><LF>");
	n = trace_headers(s, trace, sizeof(trace));
	if (n > 0)
		upstream_body_add(s->up, trace, n);
	s->txn->in_headers = 1;
	session_enter(s, S_DATA);
	session_resume(s);
}

static void
inline_data_event(struct session *s, int code, const char *reply, size_t len)
{
	struct evline *e = evlog_begin("data", s->id);

	evlog_str(e, "client_ip", s->peer_ip);
	evlog_addr(e, "from", s->txn->from.addr);
	evlog_int(e, "rcpts", s->txn->naccepted);
	evlog_int(e, "size", (long long)s->txn->size);
	evlog_int(e, "code", code);
	evlog_textn(e, "reply", reply, len);
	evlog_str(e, "next_hop", s->up ? upstream_target(s->up)->host : "");
	evlog_int(e, "duration_ms", route_ms_since(&s->txn->data_start));
	evlog_end(e);
}

static void
inline_on_dot_reply(struct session *s, const struct smtp_reply *r)
{
	const char *outcome = r->code / 100 == 2 ? "delivered" :
	    r->code / 100 == 4 ? "deferred" : "rejected";

	inline_data_event(s, r->code, r->text, r->text_len);
	const struct upstream_target *t = upstream_target(s->up);

	/* DANE-06: delivered over mandatory TLS, but the TLSA RRset is unusable. */
	route_delivery_event(s, t, s->up, outcome, t->dane && t->dane->state == DANE_UNUSABLE ?
	    "tlsa-invalid" : NULL, r->code, r->text);
	s->op = OP_NONE;
	s->up_in_txn = 0;
	s->transactions++;
	session_relay_reply(s, r);
	txn_free(&s->txn);
	session_enter(s, S_HELO);
	session_resume(s);
}

static void
inline_on_reply(struct session *s, const struct smtp_reply *r)
{
	switch (s->op) {
	case OP_RCPT:
		inline_on_rcpt_reply(s, r);
		break;
	case OP_DATA:
		inline_on_data_reply(s, r);
		break;
	case OP_DOT:
		inline_on_dot_reply(s, r);
		break;
	case OP_RSET:
		if (r->code / 100 != 2) {
			upstream_free(&s->up);
			s->up_in_txn = 0;
		}
		inline_answer(s, 250, "2.0.0", "Ok");
		break;
	case OP_NONE:
		die_bug("inline: reply %d with no operation pending", r->code);
	}
}

/* Stop taking the body: close the next hop before its final dot. */
static void
inline_discard(struct session *s, enum discard_reason why, int code, const char *enh,
    const char *text)
{
	struct txn *t = s->txn;

	upstream_free(&s->up);
	s->up_in_txn = 0;
	t->discard = why;
	t->discard_err.code = code;
	t->discard_err.enh = enh;
	t->discard_err.text = text;
	session_enter(s, S_DISCARD);
}

/* The connection failed while setting up: next target, or a 4xx. */
static void
inline_on_setup_fail(struct session *s, const struct upstream_failure *f)
{
	char text[400];

	route_delivery_event(s, upstream_target(s->up), s->up, "deferred",
	    f->result_type ? f->result_type : "", f->code, f->detail);
	upstream_free(&s->up);
	while (++s->target < s->ntargets)
		if (inline_connect_target(s) == 0)
			return;
	snprintf(text, sizeof(text), "Error: next hop not available: %s%s%s",
	    f->result_type ? f->result_type : "", f->result_type ? ": " : "", f->detail);
	inline_answer(s, 451, f->enh[0] ? f->enh : "4.4.1", text);
}

static void
inline_on_fail(struct session *s)
{
	const struct upstream_failure *f = upstream_failure(s->up);

	if (!s->up_was_ready) {
		inline_on_setup_fail(s, f);
		return;
	}
	if (s->state == S_DATA) {
		route_delivery_event(s, upstream_target(s->up), s->up, "deferred",
		    f->result_type ? f->result_type : "", 451, f->detail);
		inline_discard(s, DISCARD_UPSTREAM, 451, "4.4.2",
		    "Error: next hop connection lost, message not delivered");
		session_unpause(s, PAUSE_UPSTREAM);
		return;
	}
	if (s->op == OP_DOT)
		inline_data_event(s, 451, f->detail, strlen(f->detail));
	if (s->op != OP_NONE)
		route_delivery_event(s, upstream_target(s->up), s->up, "deferred",
		    f->result_type ? f->result_type : "", f->code, f->detail);
	upstream_free(&s->up);
	s->up_in_txn = 0;
	if (s->op == OP_RSET)
		inline_answer(s, 250, "2.0.0", "Ok");
	else if (s->op != OP_NONE)
		inline_answer(s, 451, "4.4.2", "Error: next hop connection lost");
}

static void
inline_up_cb(void *arg, enum upstream_event ev, const struct smtp_reply *r)
{
	struct session *s = arg;

	switch (ev) {
	case UP_READY:
		s->up_was_ready = 1;
		if (s->op == OP_RCPT)
			inline_proceed_rcpt(s);
		break;
	case UP_REPLY:
		inline_on_reply(s, r);
		break;
	case UP_FAIL:
		inline_on_fail(s);
		break;
	case UP_DRAIN:
		session_unpause(s, PAUSE_UPSTREAM);
		break;
	}
}

/* Bytes p[0..n) of the stream are the message's: forward or drop them. */
static void
inline_take(struct session *s, struct evbuffer *in, size_t n)
{
	struct txn *t = s->txn;

	session_data_progress(s, n);
	t->size += n;
	if (s->state == S_DATA && t->size > (size_t)s->cfg->max_message_size + 5)
		inline_discard(s, DISCARD_SIZE, 552, "5.3.4", "Message size exceeds fixed limit");
	if (s->state == S_DATA)
		upstream_body(s->up, in, n);
	else
		evbuffer_drain(in, n);
}

/* End of data: wait for the next hop's verdict, or give ours. */
static void
inline_end_of_data(struct session *s)
{
	struct txn *t = s->txn;

	if (s->state == S_DATA) {
		upstream_body_done(s->up);
		s->op = OP_DOT;
		session_enter(s, S_WAIT);
		return;
	}
	inline_data_event(s, t->discard_err.code, t->discard_err.text,
	    strlen(t->discard_err.text));
	session_reject_event(s, "DATA", t->discard_err.code, t->discard_err.text);
	session_reply_err(s, &t->discard_err);
	txn_free(&s->txn);
	session_enter(s, S_HELO);
}

/*
 * RFC 5321 §4.1.1.4: a bare CR or LF in the message is refused and the
 * session ends (Postfix smtpd_forbid_bare_newline = reject): no later byte
 * can be taken as a new command or a new message (SMTP smuggling).
 */
static void
inline_bare(struct session *s, const char *what)
{
	char text[64];

	upstream_free(&s->up);
	s->up_in_txn = 0;
	if (strcmp(what, "NUL") == 0)
		snprintf(text, sizeof(text), "Error: NUL character received");
	else
		snprintf(text, sizeof(text), "Error: bare <%s> received", what);
	inline_data_event(s, 550, text, strlen(text));
	session_reject_event(s, "DATA", 550, text);
	session_reply(s, 550, "5.5.2", "%s", text);
	txn_free(&s->txn);
	session_quit(s, "bare newline in DATA");
}

/* What the scanner said about bytes at the head of the input. */
static int
inline_scan_result(struct session *s, struct evbuffer *in, enum ds_status st, size_t used)
{
	switch (st) {
	case DS_NEED_MORE:
		inline_take(s, in, used);
		return 1;
	case DS_END:
		inline_take(s, in, used);
		inline_end_of_data(s);
		return 1;
	case DS_LINE_TOO_LONG:
		inline_take(s, in, used);
		if (s->state == S_DATA)
			inline_discard(s, DISCARD_LINE, 500, "5.5.2", "Error: message line too long");
		return 1;
	case DS_BARE_LF:
		inline_bare(s, "LF");
		return 0;
	case DS_BARE_CR:
		inline_bare(s, "CR");
		return 0;
	case DS_NUL:
		/* RFC 6152 §2: not even 8BITMIME allows NUL; a next hop that drops
		 * it could see an end of data we did not (SMTP smuggling). */
		inline_bare(s, "NUL");
		return 0;
	}
	return 0;
}

static void
inline_header_removed_event(struct session *s)
{
	struct evline *e = evlog_begin("header_removed", s->id);

	evlog_str(e, "client_ip", s->peer_ip);
	evlog_str(e, "header", TRACE_HEADER_NAME);
	evlog_addr(e, "from", s->txn->from.addr);
	evlog_end(e);
}

/*
 * One complete header line (already scanned): the empty line ends the
 * header section; an X-TLS-Policy: field from outside is dropped with its
 * continuation lines (RFC 5322 §2.2.3), so the one we add cannot be forged.
 */
static void
inline_header_line(struct session *s, struct evbuffer *in, const char *line, size_t n)
{
	struct txn *t = s->txn;

	if (n == 2 && line[0] == '\r') {
		t->in_headers = 0;
		t->dropping = 0;
	} else if (line[0] == ' ' || line[0] == '\t') {
		/* a continuation of the field before: same fate */
	} else {
		t->dropping = trace_is_policy_field(line, n);
		if (t->dropping)
			inline_header_removed_event(s);
		/* RFC 8460 §5.3 / ANCHORS RPT-07: report mail stays out of reports. */
		if (n > 18 && strncasecmp(line, "TLS-Report-Domain:", 18) == 0)
			t->report_mail = 1;
	}
	if (t->dropping) {
		t->size += n;
		evbuffer_drain(in, n);
	} else
		inline_take(s, in, n);
}

/* Header section: whole lines, so fields can be recognised. */
static int
inline_header_input(struct session *s, struct evbuffer *in)
{
	struct evbuffer_ptr eol;
	size_t eol_len, n, used, avail = evbuffer_get_length(in);
	const char *line;
	enum ds_status st;

	if (avail == 0)
		return 0;
	eol = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_LF);
	if (eol.pos < 0) {
		if (avail <= (size_t)s->lc->max_line_length + 1)
			return 0;
		s->txn->in_headers = 0;     /* no line end in sight: the body path measures it */
		return 1;
	}
	n = (size_t)eol.pos + 1;
	line = (const char *)evbuffer_pullup(in, (ssize_t)n);
	st = datascan_feed(&s->txn->ds, line, n, &used);
	if (st != DS_NEED_MORE)
		return inline_scan_result(s, in, st, used);
	inline_header_line(s, in, line, n);
	return 1;
}

/*
 * inline_data_input - feed the client's bytes through the scanner.
 * Returns 1 when the read loop may go on, 0 when it must wait (no input,
 * back-pressure, or the session is ending).
 */
int
inline_data_input(struct session *s)
{
	struct evbuffer *in = bufferevent_get_input(s->bev);
	struct evbuffer_iovec v;
	size_t used;
	enum ds_status st;

	if (s->state == S_DATA && upstream_pending(s->up) > INLINE_BODY_HIWAT) {
		session_pause(s, PAUSE_UPSTREAM);
		return 0;
	}
	if (s->txn->in_headers)
		return inline_header_input(s, in);
	if (evbuffer_peek(in, -1, NULL, &v, 1) < 1 || v.iov_len == 0)
		return 0;
	st = datascan_feed(&s->txn->ds, v.iov_base, v.iov_len, &used);
	return inline_scan_result(s, in, st, used);
}
