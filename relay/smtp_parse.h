/*
 * smtp_parse.h - pure parsers for what an SMTP client sends (RFC 5321 §4.1).
 *
 * No I/O and no allocation: each function takes one command line (CRLF
 * already removed, NUL-terminated: refuse lines with NUL bytes first) and
 * fills a caller struct, or returns an error with the reply the server
 * should send.  Used by relay/session.c; fuzzed by
 * tests/fuzz/fuzz_smtp_parse.c.
 */
#ifndef RELAY_SMTP_PARSE_H
#define RELAY_SMTP_PARSE_H

#include <stddef.h>

/* RFC 5321 §4.5.3.1 size limits. */
#define SMTP_LOCAL_MAX  64
#define SMTP_DOMAIN_MAX 255
#define SMTP_PATH_MAX   256

/* An error: the reply code, the enhanced status code and the text. */
struct smtp_err {
	int code;          /* e.g. 501 */
	const char *enh;   /* e.g. "5.1.7" */
	const char *text;  /* e.g. "Bad sender address syntax" (static) */
};

/*
 * smtp_cmd_split - split "VERB args" into the verb (upper-cased into verb,
 * at most verbmax-1 chars) and a pointer to the arguments (past one or more
 * spaces, may be ""). Returns 0, or -1 when the verb is not 1..verbmax-1
 * ASCII letters followed by end or SP.
 */
int smtp_cmd_split(const char *line, char *verb, size_t verbmax, const char **args);

/* A mailbox from a reverse-path or forward-path. */
struct smtp_path {
	int null;                          /* <> (reverse-path only) */
	int postmaster;                    /* RCPT TO:<Postmaster> without domain */
	int source_route;                  /* an A-d-l ("@a,@b:") was present and dropped */
	int utf8;                          /* non-ASCII octets in local part or domain */
	int quoted;                        /* local part was a Quoted-string */
	int local_special;                 /* dequoted local part contains '@', '%' or '!' */
	int domain_literal;                /* domain is an address literal [..] */
	char local[SMTP_LOCAL_MAX * 2 + 3];/* local part as sent (quotes kept) */
	char domain[SMTP_DOMAIN_MAX + 1];  /* domain as sent, trailing dot removed, or literal */
	char addr[SMTP_PATH_MAX + 1];      /* "local@domain", "" for <>, "Postmaster" */
};

/* ESMTP parameters we advertise (RFC 1870, 6152, 6531). */
struct smtp_params {
	long long size;        /* SIZE=, -1 when absent */
	int body;              /* 0 absent, 7 for 7BIT, 8 for 8BITMIME */
	int smtputf8;          /* SMTPUTF8 given */
};

/*
 * smtp_parse_mail - parse the arguments of MAIL: "FROM:<path> [params]".
 * smtputf8_ok: whether SMTPUTF8 is offered (non-ASCII is only allowed with
 * the SMTPUTF8 parameter, RFC 6531 §3.4).  Returns 0 or -1 with *err set.
 * Errors: 501 5.5.4 syntax, 501 5.1.7 bad address, 555 5.5.4 unknown or
 * malformed parameter, 553 5.6.7 non-ASCII without SMTPUTF8.
 */
int smtp_parse_mail(const char *args, int smtputf8_ok, struct smtp_path *path,
    struct smtp_params *params, struct smtp_err *err);

/*
 * smtp_parse_rcpt - parse the arguments of RCPT: "TO:<path> [params]".
 * smtputf8: whether this transaction's MAIL had SMTPUTF8.  <> is refused,
 * <Postmaster> (any case, RFC 5321 §4.5.1) accepted.  No RCPT parameters are
 * offered, so any parameter gets 555 5.5.4.  Errors as smtp_parse_mail with
 * 501 5.1.3 for a bad address.
 */
int smtp_parse_rcpt(const char *args, int smtputf8, struct smtp_path *path,
    struct smtp_err *err);

/*
 * smtp_parse_helo - check a HELO/EHLO argument: a domain (RFC 5321
 * Domain, letters/digits/hyphen labels, optional trailing dot) or an address
 * literal, then only spaces.  Underscores and 8-bit octets are refused.
 * Returns 0 when acceptable, else -1 with 501 5.5.4 in *err.
 */
int smtp_parse_helo(const char *args, struct smtp_err *err);

#endif
