/*
 * report.h - `tlsrelay report`: RFC 8460 aggregate reports from the JSON
 * event log (DESIGN.md, "Event log contract"; ANCHORS §4.3 RPT-02..09).
 *
 *   tlsrelay report [--day YYYY-MM-DD] [--org NAME] [--contact URI]
 *                   [--submitter NAME] [-c relay.ini] [--out DIR]
 *                   [--send [--submit IP:PORT] [--from ADDRESS] [--timeout S]]
 *                   LOGFILE...
 *
 * Reads event logs (LOGFILE "-" is stdin; gzip'd files are recognised by
 * their content, whatever their name), keeps the "delivery" events of one
 * UTC day (default: yesterday), and makes one RFC 8460 §4.4 JSON report per
 * policy domain.  With --out DIR each is written gzip'd into DIR under its
 * §5.3 file name
 *   submitter!policy-domain!begin-timestamp!end-timestamp!unique-id.json.gz
 * and its path printed on stdout.  With --send each is delivered to the rua
 * URIs of the domain's "_smtp._tls" TXT record (policy/report_send.h; one
 * line per attempt on stdout); with --out and no --send nothing is sent.
 * -c reads relay.ini: [dns] for the resolver, [outbound] ca_file and
 * helo_name, the first smarthost listener as the default --submit, and
 * [relay] hostname as the default --submitter.
 *
 * Counting rules: one delivery event is one TLS session, except events with
 * "connection_reused": true (a further message on a session already
 * counted; RFC 8460 counts sessions, RPT-04) and events with
 * "report_mail": true (the relay's own report mail, RFC 8460 §5.3, RPT-07)
 * and failures without a result_type (no TLS negotiation was reached:
 * connection refused, timeout; RFC 8460 has no result-type for them).
 * Unparsable lines and unusable deliveries are reported on stderr and never
 * fatal.  Nothing is written or sent unless every LOGFILE was read.
 *
 * report_main returns the process exit status: 0 done (also when the day
 * had no deliveries, and with --send when every report reached every usable
 * rua of its domain or the domain has no TLSRPT policy), 1 usage, I/O or
 * configuration error, or a failed delivery or TXT lookup (a message is on
 * stderr or a "failed" line on stdout).
 */
#ifndef POLICY_REPORT_H
#define POLICY_REPORT_H

#include <time.h>

/* report_main - the subcommand; argv[0] is "report".  Not reentrant
 * across threads (getopt). */
int report_main(int argc, char **argv);

/* report_parse_day - "YYYY-MM-DD" (a real calendar day) to the epoch second
 * of its 00:00:00 UTC.  Returns 0, or -1 when s is not such a day. */
int report_parse_day(const char *s, time_t *start);

/* report_parse_ts - an RFC 3339 date-time ("2026-12-04T16:15:31.886Z",
 * any offset, optional fraction) to epoch seconds.  Returns 0 or -1. */
int report_parse_ts(const char *s, time_t *t);

#endif
