/*
 * cmd.c - the SMTP command table and one handler per command (RFC 5321
 * §4.1.1, RFC 3207, RFC 2920).
 *
 * cmd_dispatch() applies the gates of a command's row (state order, TLS
 * required) before any handler runs, so a handler only does its own work.
 * Each handler checks its arguments (replying on error) and then proceeds;
 * handlers that need the next hop hand over to inline.c, which answers
 * later.  Every refusal is also an event (session_reject_event).
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "policy/whitelist.h"
#include "relay/evlog.h"
#include "relay/listener.h"
#include "relay/session.h"

#define CMD_NEED_HELO   0x01    /* after EHLO/HELO */
#define CMD_NEED_MAIL   0x02    /* inside a transaction */
#define CMD_NEED_RCPT   0x04    /* after RCPT */
#define CMD_NO_TXN      0x08    /* not inside a transaction */
#define CMD_TLS_GATE    0x10    /* subject to require_tls */

struct cmd {
	const char *verb;
	void (*handler)(struct session *s, const char *args);
	int flags;
};

static void cmd_helo(struct session *s, const char *args);
static void cmd_ehlo(struct session *s, const char *args);
static void cmd_mail(struct session *s, const char *args);
static void cmd_rcpt(struct session *s, const char *args);
static void cmd_data(struct session *s, const char *args);
static void cmd_rset(struct session *s, const char *args);
static void cmd_noop(struct session *s, const char *args);
static void cmd_quit(struct session *s, const char *args);
static void cmd_help(struct session *s, const char *args);
static void cmd_vrfy(struct session *s, const char *args);
static void cmd_expn(struct session *s, const char *args);
static void cmd_starttls(struct session *s, const char *args);
static void cmd_not_offered(struct session *s, const char *args);

static const struct cmd cmd_table[] = {
	{ "EHLO", cmd_ehlo, 0 },
	{ "HELO", cmd_helo, 0 },
	{ "MAIL", cmd_mail, CMD_NEED_HELO | CMD_NO_TXN | CMD_TLS_GATE },
	{ "RCPT", cmd_rcpt, CMD_NEED_MAIL | CMD_TLS_GATE },
	{ "DATA", cmd_data, CMD_NEED_RCPT | CMD_TLS_GATE },
	{ "RSET", cmd_rset, 0 },
	{ "NOOP", cmd_noop, 0 },
	{ "QUIT", cmd_quit, 0 },
	{ "HELP", cmd_help, 0 },
	{ "VRFY", cmd_vrfy, 0 },
	{ "EXPN", cmd_expn, 0 },
	{ "STARTTLS", cmd_starttls, CMD_NO_TXN },
	/* Known, not offered: a clear 502 rather than "unrecognized". */
	{ "AUTH", cmd_not_offered, 0 },
	{ "BDAT", cmd_not_offered, 0 },
	{ "ETRN", cmd_not_offered, 0 },
	{ "TURN", cmd_not_offered, 0 },
	{ "ATRN", cmd_not_offered, 0 },
};

static void
cmd_refuse(struct session *s, const char *verb, int code, const char *enh, const char *text)
{
	session_reply(s, code, enh, "%s", text);
	session_reject_event(s, verb, code, text);
}

void
txn_free(struct txn **t)
{
	free(*t);
	*t = NULL;
}

/* The gates of a row; returns 0 when the command may run (else replied). */
static int
cmd_gates(struct session *s, const struct cmd *c)
{
	if ((c->flags & CMD_TLS_GATE) && s->lc->require_tls == REQUIRE_TLS_YES &&
	    !session_tls_active(s)) {
		cmd_refuse(s, c->verb, 530, "5.7.0", "Must issue a STARTTLS command first");
		return -1;
	}
	if ((c->flags & CMD_NEED_HELO) && s->state == S_INIT) {
		cmd_refuse(s, c->verb, 503, "5.5.1", "Error: send HELO/EHLO first");
		return -1;
	}
	if ((c->flags & CMD_NO_TXN) && s->txn != NULL) {
		cmd_refuse(s, c->verb, 503, "5.5.1", strcmp(c->verb, "MAIL") == 0 ?
		    "Error: nested MAIL command" : "Error: MAIL transaction in progress");
		return -1;
	}
	if ((c->flags & CMD_NEED_MAIL) && s->txn == NULL) {
		cmd_refuse(s, c->verb, 503, "5.5.1", "Error: need MAIL command");
		return -1;
	}
	if ((c->flags & CMD_NEED_RCPT) && (s->txn == NULL || s->txn->nrcpt == 0)) {
		cmd_refuse(s, c->verb, 503, "5.5.1", "Error: need RCPT command");
		return -1;
	}
	return 0;
}

/* cmd_dispatch - run one command line. */
int
cmd_dispatch(struct session *s, char *line, size_t len)
{
	char verb[16];
	const char *args;
	size_t i;

	(void)len;
	if (smtp_cmd_split(line, verb, sizeof(verb), &args) < 0) {
		cmd_refuse(s, "", 500, "5.5.2", "Error: command not recognized");
		return 0;
	}
	for (i = 0; i < sizeof(cmd_table) / sizeof(cmd_table[0]); i++) {
		if (strcmp(verb, cmd_table[i].verb) != 0)
			continue;
		if (cmd_gates(s, &cmd_table[i]) == 0)
			cmd_table[i].handler(s, args);
		return 0;
	}
	cmd_refuse(s, verb, 500, "5.5.2", "Error: command not recognized");
	return 0;
}

static void
cmd_helo_event(struct session *s, const char *verb)
{
	struct evline *e = evlog_begin("helo", s->id);

	evlog_str(e, "client_ip", s->peer_ip);
	evlog_str(e, "command", verb);
	evlog_str(e, "helo", s->helo);
	evlog_bool(e, "helo_valid", s->helo_valid);
	evlog_bool(e, "tls", session_tls_active(s));
	evlog_end(e);
}

/*
 * Like Postfix (smtpd_helo_restrictions empty), any printable name without
 * spaces is accepted, so printers and Windows hosts ("DESKTOP_1") can send;
 * whether it was a valid domain or address literal goes into the event.
 */
static int
cmd_helo_printable(const char *args)
{
	const unsigned char *p = (const unsigned char *)args;

	if (*p == '\0')
		return 0;
	for (; *p != '\0'; p++)
		if (*p <= 0x20 || *p >= 0x7f)
			return 0;
	return 1;
}

/* EHLO/HELO: RFC 5321 §4.1.4, a new greeting resets any transaction. */
static int
cmd_greet(struct session *s, const char *verb, const char *args)
{
	struct smtp_err err;

	s->helo_valid = smtp_parse_helo(args, &err) == 0;
	if (!s->helo_valid && !cmd_helo_printable(args)) {
		cmd_refuse(s, verb, err.code, err.enh, strcmp(verb, "EHLO") == 0 ?
		    "Syntax: EHLO hostname" : "Syntax: HELO hostname");
		return -1;
	}
	if (s->txn != NULL) {
		inline_abort(s);
		txn_free(&s->txn);
	}
	snprintf(s->helo, sizeof(s->helo), "%s", args);
	s->esmtp = strcmp(verb, "EHLO") == 0;
	session_enter(s, S_HELO);
	cmd_helo_event(s, verb);
	return 0;
}

static void
cmd_helo(struct session *s, const char *args)
{
	if (cmd_greet(s, "HELO", args) == 0)
		session_reply(s, 250, NULL, "%s", s->cfg->hostname);
}

static void
cmd_ehlo(struct session *s, const char *args)
{
	char line[300];

	if (cmd_greet(s, "EHLO", args) < 0)
		return;
	session_reply_cont(s, 250, NULL, "%s", s->cfg->hostname);
	session_reply_cont(s, 250, NULL, "PIPELINING");
	snprintf(line, sizeof(line), "SIZE %lld", s->cfg->max_message_size);
	session_reply_cont(s, 250, NULL, "%s", line);
	if (s->listener->server_ctx != NULL && !session_tls_active(s))
		session_reply_cont(s, 250, NULL, "STARTTLS");
	session_reply_cont(s, 250, NULL, "ENHANCEDSTATUSCODES");
	session_reply_cont(s, 250, NULL, "8BITMIME");
	session_reply(s, 250, NULL, "SMTPUTF8");
}

static void
cmd_mail_event(struct session *s)
{
	struct evline *e = evlog_begin("mail", s->id);

	evlog_str(e, "client_ip", s->peer_ip);
	evlog_addr(e, "from", s->txn->from.addr);
	if (s->txn->params.size >= 0)
		evlog_int(e, "size", s->txn->params.size);
	evlog_bool(e, "smtputf8", s->txn->params.smtputf8);
	evlog_bool(e, "tls", session_tls_active(s));
	evlog_end(e);
}

/*
 * require_tls = whitelist (ANCHORS TLS-02): a sender from an assessed
 * domain must arrive over TLS; the verdict is an event either way.
 */
static int
cmd_mail_tls_required(struct session *s, const struct smtp_path *from)
{
	struct evline *e;
	int listed;

	if (s->lc->require_tls != REQUIRE_TLS_WHITELIST || from->null)
		return 0;
	listed = whitelist_match(s->listener->whitelist, from->domain);
	e = evlog_begin("policy", s->id);
	evlog_str(e, "direction", "inbound");
	evlog_str(e, "client_ip", s->peer_ip);
	evlog_str(e, "sender_domain", from->domain);
	evlog_bool(e, "whitelisted", listed);
	evlog_bool(e, "tls", session_tls_active(s));
	evlog_str(e, "verdict", listed && !session_tls_active(s) ? "reject" : "accept");
	evlog_end(e);
	return listed && !session_tls_active(s);
}

static void
cmd_mail(struct session *s, const char *args)
{
	struct smtp_path path;
	struct smtp_params params;
	struct smtp_err err;

	if (smtp_parse_mail(args, 1, &path, &params, &err) < 0) {
		cmd_refuse(s, "MAIL", err.code, err.enh, err.text);
		return;
	}
	if (cmd_mail_tls_required(s, &path)) {
		cmd_refuse(s, "MAIL", 530, "5.7.0", "Must issue a STARTTLS command first");
		return;
	}
	/* RFC 1870 §6.2: refuse a declared size above the limit at once. */
	if (params.size > s->cfg->max_message_size) {
		cmd_refuse(s, "MAIL", 552, "5.3.4", "Message size exceeds fixed limit");
		return;
	}
	s->txn = calloc(1, sizeof(*s->txn));
	if (s->txn == NULL) {
		session_reply(s, 421, "4.3.0", "%s Error: out of resources", s->cfg->hostname);
		session_quit(s, "out of memory");
		return;
	}
	s->txn->from = path;
	s->txn->params = params;
	session_enter(s, S_MAIL);
	cmd_mail_event(s);
	session_reply(s, 250, "2.1.0", "Ok");
}

/* Is domain one of the gateway's local domains (or a subdomain when allowed)? */
static int
cmd_local_domain(const struct listener_config *lc, const char *domain)
{
	size_t i, dl = strlen(domain), ll;

	for (i = 0; i < lc->ndomains; i++) {
		ll = strlen(lc->domains[i]);
		if (strcasecmp(domain, lc->domains[i]) == 0)
			return 1;
		if (lc->local_subdomains && dl > ll && domain[dl - ll - 1] == '.' &&
		    strcasecmp(domain + dl - ll, lc->domains[i]) == 0)
			return 1;
	}
	return 0;
}

static int
cmd_client_trusted(const struct session *s)
{
	size_t i;

	for (i = 0; i < s->lc->nnetworks; i++)
		if (cidr_match(&s->lc->networks[i], (const struct sockaddr *)&s->peer))
			return 1;
	return 0;
}

/*
 * May this recipient be relayed?  Gateway: only its local domains, and no
 * address that hides another destination in its local part ('%' hack, '!'
 * paths, quoted "a@b"); source routes were dropped by the parser (RFC 5321
 * §C).  Smarthost: only clients in relay_networks.
 */
static int
cmd_rcpt_allowed(const struct session *s, const struct smtp_path *p)
{
	if (s->lc->mode == MODE_SMARTHOST)
		return cmd_client_trusted(s);
	if (p->postmaster)
		return 1;
	if (p->local_special || p->domain_literal)
		return 0;
	return cmd_local_domain(s->lc, p->domain);
}

static void
cmd_rcpt(struct session *s, const char *args)
{
	struct txn *t = s->txn;
	struct smtp_err err;
	char text[SMTP_PATH_MAX + 64];

	if (smtp_parse_rcpt(args, t->params.smtputf8, &t->rcpt, &err) < 0) {
		cmd_refuse(s, "RCPT", err.code, err.enh, err.text);
		return;
	}
	if (t->nrcpt >= s->lc->max_recipients) {
		cmd_refuse(s, "RCPT", 452, "4.5.3", "Error: too many recipients");
		return;
	}
	if (!cmd_rcpt_allowed(s, &t->rcpt)) {
		snprintf(text, sizeof(text), "<%s>: Relay access denied", t->rcpt.addr);
		cmd_refuse(s, "RCPT", 554, "5.7.1", text);
		return;
	}
	t->nrcpt++;
	inline_rcpt(s);
}

static void
cmd_data(struct session *s, const char *args)
{
	if (args[0] != '\0') {
		cmd_refuse(s, "DATA", 501, "5.5.4", "Syntax: DATA");
		return;
	}
	if (s->txn->naccepted == 0) {
		cmd_refuse(s, "DATA", 554, "5.5.1", "Error: no valid recipients");
		return;
	}
	inline_data(s);
}

static void
cmd_rset(struct session *s, const char *args)
{
	(void)args;
	if (s->state == S_INIT) {
		session_reply(s, 250, "2.0.0", "Ok");
		return;
	}
	inline_txn_end(s);
	txn_free(&s->txn);
	session_enter(s, S_HELO);
	if (inline_rset(s))
		session_reply(s, 250, "2.0.0", "Ok");
}

static void
cmd_noop(struct session *s, const char *args)
{
	(void)args;
	session_reply(s, 250, "2.0.0", "Ok");
}

static void
cmd_quit(struct session *s, const char *args)
{
	(void)args;
	session_reply(s, 221, "2.0.0", "Bye");
	session_quit(s, "quit");
}

static void
cmd_help(struct session *s, const char *args)
{
	(void)args;
	session_reply(s, 214, "2.0.0", "Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT "
	    "HELP VRFY STARTTLS");
}

/* RFC 5321 §3.5.3: 252 says nothing about whether the user exists. */
static void
cmd_vrfy(struct session *s, const char *args)
{
	if (args[0] == '\0') {
		cmd_refuse(s, "VRFY", 501, "5.5.4", "Syntax: VRFY address");
		return;
	}
	session_reply(s, 252, "2.5.2", "Cannot VRFY user, but will accept message and "
	    "attempt delivery");
}

static void
cmd_expn(struct session *s, const char *args)
{
	(void)args;
	cmd_refuse(s, "EXPN", 502, "5.5.1", "Error: EXPN not available");
}

static void
cmd_not_offered(struct session *s, const char *args)
{
	(void)args;
	cmd_refuse(s, "", 502, "5.5.1", "Error: command not implemented");
}

/* RFC 3207 §4: STARTTLS takes no argument and is offered once. */
static void
cmd_starttls(struct session *s, const char *args)
{
	if (s->listener->server_ctx == NULL) {
		cmd_refuse(s, "STARTTLS", 502, "5.5.1", "Error: command not implemented");
		return;
	}
	if (session_tls_active(s)) {
		cmd_refuse(s, "STARTTLS", 554, "5.5.1", "Error: TLS already active");
		return;
	}
	if (args[0] != '\0') {
		cmd_refuse(s, "STARTTLS", 501, "5.5.4", "Syntax: STARTTLS");
		return;
	}
	session_reply(s, 220, "2.0.0", "Ready to start TLS");
	session_starttls(s);
}
