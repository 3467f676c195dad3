/*
 * session.h - the SMTP server side: one struct session per client
 * connection, shared by session.c (I/O, state, replies), cmd.c (the
 * command table and handlers) and inline.c (the in-line relay to the next
 * hop: upstream orchestration and the DATA stream).
 *
 * Data flows one way (DESIGN.md): listener -> session -> policy decision ->
 * upstream -> next hop.  A session is freed only from the event loop
 * (session_close() schedules it), so a handler never frees the struct under
 * its own feet.
 */
#ifndef RELAY_SESSION_H
#define RELAY_SESSION_H

#include <stddef.h>
#include <sys/time.h>
#include <netinet/in.h>

#include <openssl/ssl.h>

#include "relay/config.h"
#include "relay/datascan.h"
#include "relay/log.h"
#include "relay/reply.h"
#include "relay/smtp_parse.h"
#include "relay/upstream.h"
#include "policy/dane.h"
#include "policy/mx.h"

struct event_base;
struct bufferevent;
struct listener;

enum session_state {
	S_PROXY,        /* waiting for the PROXY protocol header, nothing sent yet */
	S_INIT,         /* greeting sent, no EHLO/HELO yet */
	S_HELO,         /* EHLO/HELO done, no transaction */
	S_MAIL,         /* MAIL accepted */
	S_RCPT,         /* at least one RCPT accepted */
	S_WAIT,         /* waiting for the next hop: input is parked */
	S_DATA,         /* streaming the message to the next hop */
	S_DISCARD,      /* message refused midway: reading to end of data */
	S_STARTTLS,     /* 220 sent, waiting for it to be flushed */
	S_HANDSHAKE,    /* TLS handshake in progress */
	S_QUIT,         /* last reply queued: close once flushed */
	S_CLOSED
};

/* What the session waits for from the next hop (S_WAIT). */
enum session_op {
	OP_NONE, OP_RCPT, OP_DATA, OP_DOT, OP_RSET
};

/* Why a message was refused midway (S_DISCARD). */
enum discard_reason {
	DISCARD_NONE, DISCARD_SIZE, DISCARD_LINE, DISCARD_UPSTREAM
};

/* One transaction: MAIL to the end of DATA or RSET.  RSET is txn_free(). */
struct txn {
	struct smtp_path from;
	struct smtp_params params;
	char mail_line[SMTP_PATH_MAX + 64];   /* MAIL command as forwarded */
	char rcpt_line[SMTP_PATH_MAX + 16];   /* RCPT in flight */
	struct smtp_path rcpt;                /* RCPT in flight */
	char first_rcpt[SMTP_PATH_MAX + 1];   /* first recipient the next hop accepted */
	char domain[SMTP_DOMAIN_MAX + 1];     /* destination domain of the transaction */
	int nrcpt;                            /* RCPT commands seen */
	int naccepted;                        /* RCPTs the next hop accepted */
	int last_rcpt_code;                   /* the next hop's last RCPT (or MAIL) reply */
	struct datascan ds;
	int in_headers;                       /* still in the header section */
	int dropping;                         /* inside a header field being removed */
	int report_mail;                      /* a TLS report (TLS-Report-Domain: header) */
	size_t size;                          /* message bytes received */
	enum discard_reason discard;
	struct smtp_err discard_err;
	struct timeval data_start;
};

struct session {
	char id[17];
	struct listener *listener;
	const struct relay_config *cfg;
	const struct listener_config *lc;
	struct event_base *base;
	int fd;
	struct bufferevent *bev;
	struct event *timer;        /* deadline of the state (session_arm) */
	size_t data_progress;       /* DATA bytes since the deadline was restarted */
	SSL *ssl;                   /* set once the TLS bufferevent owns the socket */
	enum session_state state;
	enum session_op op;
	struct sockaddr_storage peer;         /* the client (as a PROXY header says) */
	struct sockaddr_storage accept_peer;  /* the TCP peer: what the listener counted */
	char peer_ip[INET6_ADDRSTRLEN];
	int peer_port;
	char helo[256];
	int esmtp;
	int helo_valid;             /* the HELO name is a domain or address literal */
	int bad_commands;
	int skipping;               /* discarding the rest of an over-long line */
	int paused;                 /* PAUSE_* reasons reading is off */
	int transactions;
	struct txn *txn;
	struct upstream *up;
	int up_in_txn;              /* the next hop has an open transaction */
	int up_txn_pending;         /* ... and no delivery event was written for it yet */
	int up_was_ready;           /* its setup finished (failures after are not setup failures) */
	char up_domain[SMTP_DOMAIN_MAX + 1];  /* destination the upstream serves */
	struct mx_lookup *mx;                 /* MX routing in progress (smarthost) */
	struct mtasts_req *sts_req;           /* MTA-STS lookup in progress */
	struct route_sts *sts;                /* its result (route.c) */
	struct mx_route *route;               /* the MX route being used */
	int route_wait;                       /* lookups route_decide() waits for */
	struct dane_lookup *dane_l;           /* TLSA lookups in progress */
	struct dane_result *dane;             /* TLSA RRsets of the route's hosts */
	struct upstream_target *targets;      /* route of the pending connection */
	size_t ntargets, target;
	const char *level_source;             /* why targets have their level */
	enum tls_level route_level;           /* static level of the route being built */
	struct timeval start, up_start;
	struct session *prev, *next;          /* all live sessions of the process */
};

#define PAUSE_OUTPUT    0x01    /* the client is not reading its replies */
#define PAUSE_UPSTREAM  0x02    /* the next hop is not taking the body fast enough */

/* session.c */
void session_accept(struct listener *l, int fd, const struct sockaddr *sa, int salen);
void session_reply(struct session *s, int code, const char *enh, const char *fmt, ...)
    PRINTF_LIKE(4, 5);
void session_reply_cont(struct session *s, int code, const char *enh, const char *fmt, ...)
    PRINTF_LIKE(4, 5);
void session_reply_err(struct session *s, const struct smtp_err *e);
void session_relay_reply(struct session *s, const struct smtp_reply *r);
void session_enter(struct session *s, enum session_state st);
void session_close(struct session *s, const char *reason);
/* session_close_all - end every session (shutdown deadline). */
void session_close_all(const char *reason);
void session_quit(struct session *s, const char *reason);
void session_resume(struct session *s);
void session_arm(struct session *s);
void session_data_progress(struct session *s, size_t n);
void session_pause(struct session *s, int why);
void session_unpause(struct session *s, int why);
void session_starttls(struct session *s);
void session_reject_event(struct session *s, const char *cmd, int code, const char *reason);
const char *session_state_name(enum session_state st);
int session_tls_active(const struct session *s);

/* cmd.c */
int cmd_dispatch(struct session *s, char *line, size_t len);
void txn_free(struct txn **t);

/* inline.c */
void inline_answer(struct session *s, int code, const char *enh, const char *text);
int inline_connect_target(struct session *s);
int inline_rcpt(struct session *s);
int inline_data(struct session *s);
int inline_rset(struct session *s);
int inline_data_input(struct session *s);
void inline_abort(struct session *s);
void inline_release(struct session *s);
void inline_txn_end(struct session *s);

#endif
