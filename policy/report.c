/*
 * report.c - `tlsrelay report`: RFC 8460 aggregate reports from event logs.
 *
 * Owns reading event logs (plain or gzip, through zlib), selecting one UTC
 * day of "delivery" events, aggregating them per policy domain and per
 * policy, and writing each domain's RFC 8460 §4.4 report gzip'd under its
 * §5.3 file name.  The contract is in report.h.
 *
 * The aggregate lives in jansson objects, so no hand-written container is
 * needed:
 *   domains:  policy-domain -> { policy key -> entry }
 *   entry:    { "type", "strings", "mx": { host -> true }, "ok", "fail",
 *               "details": { detail key -> failure-details object } }
 * A key is the compact, key-sorted JSON text of what identifies the thing,
 * so equal policies (and equal failure groups) meet under one key.
 *
 * Deviation from the first brief, on purpose: RFC 8460 §4.4 defines
 * "additional-information" as a URI, and "failure-reason-code" as "a text
 * field to include a TLS-related error code or error message".  The
 * delivery event's smtp_reply text therefore goes to failure-reason-code;
 * additional-information is only copied from an event's
 * "additional_information" field, when there is one.
 *
 * With --send each report is also gzip'd in memory and handed to
 * policy/report_send.c, which finds the domain's rua URIs and delivers it.
 */
#include "policy/report.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <zlib.h>

#include "policy/report_send.h"
#include "relay/config.h"

#define REPORT_DAY            86400
#define REPORT_LINE_MAX       (1024 * 1024) /* longer lines are unparsable */
#define REPORT_REASON_MAX     200           /* bytes of failure-reason-code */
#define REPORT_WARN_MAX       10            /* per-line warnings printed */
#define REPORT_DOMAIN_MAX     253           /* RFC 1035 §2.3.4, text form */
#define REPORT_PATH_MAX       4096

struct report_opts {
	time_t start;                   /* the UTC day [start, start + 86400) */
	char day[11];                   /* YYYY-MM-DD */
	const char *org, *contact, *submitter, *out;
	char host[256];                 /* default submitter: [relay] hostname or gethostname() */
	char contact_buf[300];
	char **files;
	int nfiles;
	int send;                       /* --send: deliver to the domains' rua URIs */
	const char *config, *submit, *from;
	int timeout;
	struct relay_config *cfg;       /* -c relay.ini, or NULL */
};

struct report_agg {
	time_t start;
	json_t *domains;
	unsigned long lines, unparsable, outside, reused, own, nontls, unusable, sessions;
	unsigned warned;
};

/* The buffered line reader over one gzFile (zlib reads plain files as is). */
struct report_in {
	gzFile gz;
	const char *name;
	unsigned long lineno;
	char chunk[16384];
	size_t off, len;
	int eof;
	char *line;
	size_t cap, used;
	int toolong;
};

/* RFC 8460 §4.3: the eleven result types. */
static const char *const report_result_types[] = {
	"starttls-not-supported", "certificate-host-mismatch", "certificate-expired",
	"certificate-not-trusted", "validation-failure", "tlsa-invalid",
	"dnssec-invalid", "dane-required", "sts-policy-fetch-error",
	"sts-policy-invalid", "sts-webpki-invalid",
};

/* RFC 8460 §4.4 "policy-type". */
static const char *const report_policy_types[] = { "tlsa", "sts", "no-policy-found" };

static void
report_usage(FILE *fp)
{
	fprintf(fp, "usage: tlsrelay report [--day YYYY-MM-DD] [--org NAME] [--contact URI]\n"
	    "                       [--submitter NAME] [-c relay.ini] [--out DIR]\n"
	    "                       [--send [--submit IP:PORT] [--from ADDRESS] [--timeout S]]\n"
	    "                       LOGFILE...\n"
	    "  RFC 8460 TLS reports, one per policy domain, from event logs\n"
	    "  (LOGFILE - is stdin; gzip'd logs are read as well).  --day defaults\n"
	    "  to yesterday (UTC), --submitter to [relay] hostname of -c or this\n"
	    "  host's name, --org to the submitter, --contact to postmaster@submitter.\n"
	    "  --out DIR writes the reports; --send delivers them to the rua URIs of\n"
	    "  each domain's _smtp._tls TXT record: mailto: through the relay's\n"
	    "  smarthost listener (--submit, default: the first one in -c), https:\n"
	    "  by POST.  --from defaults to noreply-tlsrpt@submitter.\n");
}

static void __attribute__((format(printf, 1, 2)))
report_err(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "tlsrelay report: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* A per-line problem: printed for the first REPORT_WARN_MAX only. */
static void __attribute__((format(printf, 3, 4)))
report_warn(struct report_agg *agg, const struct report_in *in, const char *fmt, ...)
{
	va_list ap;

	if (agg->warned++ >= REPORT_WARN_MAX)
		return;
	fprintf(stderr, "tlsrelay report: %s:%lu: ", in->name, in->lineno);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static int
report_in_list(const char *s, const char *const *list, size_t n)
{
	size_t i;

	for (i = 0; s != NULL && i < n; i++)
		if (strcmp(s, list[i]) == 0)
			return 1;
	return 0;
}

/* ---- dates ------------------------------------------------------------ */

/* n decimal digits at s, or -1. */
static int
report_digits(const char *s, int n)
{
	int i, v = 0;

	for (i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	return v;
}

/* y-m-d h:m:s UTC to epoch seconds; -1 unless it names a real instant. */
static int
report_mktime(int y, int mo, int d, int h, int mi, int s, time_t *t)
{
	struct tm tm;

	if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || s > 60)
		return -1;
	memset(&tm, 0, sizeof(tm));
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = s == 60 ? 59 : s;   /* RFC 3339 §5.7 leap second */
	*t = timegm(&tm);
	return tm.tm_mday == d && tm.tm_mon == mo - 1 ? 0 : -1;   /* no Feb 30 */
}

int
report_parse_day(const char *s, time_t *start)
{
	int y, mo, d;

	if (s == NULL || strlen(s) != 10 || s[4] != '-' || s[7] != '-')
		return -1;
	y = report_digits(s, 4);
	mo = report_digits(s + 5, 2);
	d = report_digits(s + 8, 2);
	if (y < 0 || mo < 0 || d < 0)
		return -1;
	return report_mktime(y, mo, d, 0, 0, 0, start);
}

/* RFC 3339 §5.6 time-offset: "Z" or ("+" / "-") time-hour ":" time-minute. */
static int
report_parse_offset(const char *p, long *off)
{
	int h, m;

	if ((p[0] == 'Z' || p[0] == 'z') && p[1] == '\0') {
		*off = 0;
		return 0;
	}
	if ((p[0] != '+' && p[0] != '-') || strlen(p) != 6 || p[3] != ':')
		return -1;
	h = report_digits(p + 1, 2);
	m = report_digits(p + 4, 2);
	if (h < 0 || h > 23 || m < 0 || m > 59)
		return -1;
	*off = (h * 3600L + m * 60L) * (p[0] == '-' ? -1 : 1);
	return 0;
}

/* RFC 3339 §5.6 date-time: full-date "T" partial-time time-offset. */
int
report_parse_ts(const char *s, time_t *t)
{
	int f[6];
	static const int pos[6] = { 0, 5, 8, 11, 14, 17 }, len[6] = { 4, 2, 2, 2, 2, 2 };
	const char *p;
	long off;
	int i;

	if (s == NULL || strlen(s) < 20 || s[4] != '-' || s[7] != '-' || s[13] != ':' ||
	    s[16] != ':' || (s[10] != 'T' && s[10] != 't'))
		return -1;
	for (i = 0; i < 6; i++)
		if ((f[i] = report_digits(s + pos[i], len[i])) < 0)
			return -1;
	p = s + 19;
	if (*p == '.') {
		if (p[1] < '0' || p[1] > '9')
			return -1;
		for (p++; *p >= '0' && *p <= '9'; p++)
			;
	}
	if (report_parse_offset(p, &off) < 0 ||
	    report_mktime(f[0], f[1], f[2], f[3], f[4], f[5], t) < 0)
		return -1;
	*t -= off;
	return 0;
}

/* ---- reading ---------------------------------------------------------- */

/* 1 data buffered, 0 end of input, -1 error (reported). */
static int
report_in_fill(struct report_in *in)
{
	int n, zerr;

	if (in->off < in->len)
		return 1;
	if (in->eof)
		return 0;
	n = gzread(in->gz, in->chunk, sizeof(in->chunk));
	if (n > 0) {
		in->off = 0;
		in->len = (size_t)n;
		return 1;
	}
	in->eof = 1;
	if (n == 0)
		return 0;
	gzerror(in->gz, &zerr);
	if (zerr == Z_BUF_ERROR) {
		/* A rotated log still being compressed: use what is there. */
		report_err("%s: truncated gzip input, read up to line %lu", in->name, in->lineno);
		return 0;
	}
	report_err("%s: %s", in->name, zerr == Z_ERRNO ? strerror(errno) : gzerror(in->gz, &zerr));
	return -1;
}

/* Append to the line; past REPORT_LINE_MAX the rest is dropped. 0 or -1. */
static int
report_in_append(struct report_in *in, const char *p, size_t n)
{
	size_t cap;
	char *line;

	if (in->toolong || in->used + n > REPORT_LINE_MAX) {
		in->toolong = 1;
		return 0;
	}
	if (in->used + n + 1 > in->cap) {
		cap = in->cap ? in->cap : 4096;
		while (cap < in->used + n + 1)
			cap *= 2;
		if ((line = realloc(in->line, cap)) == NULL) {
			report_err("out of memory");
			return -1;
		}
		in->line = line;
		in->cap = cap;
	}
	memcpy(in->line + in->used, p, n);
	in->used += n;
	in->line[in->used] = '\0';
	return 0;
}

/* The next line (without LF) in in->line[0..used).  1, 0 at end, -1 error. */
static int
report_in_getline(struct report_in *in)
{
	const char *p, *nl;
	size_t n;
	int r;

	in->used = 0;
	in->toolong = 0;
	for (;;) {
		if ((r = report_in_fill(in)) <= 0) {
			if (r == 0 && (in->used > 0 || in->toolong))
				break;          /* a last line without LF */
			return r;
		}
		p = in->chunk + in->off;
		nl = memchr(p, '\n', in->len - in->off);
		n = nl != NULL ? (size_t)(nl - p) : in->len - in->off;
		if (report_in_append(in, p, n) < 0)
			return -1;
		in->off += n + (nl != NULL);
		if (nl != NULL)
			break;
	}
	in->lineno++;
	if (in->used > 0 && in->line[in->used - 1] == '\r')
		in->line[--in->used] = '\0';
	return 1;
}

/* ---- aggregation ------------------------------------------------------ */

/* The string member key of ev; NULL when absent, not a string, or holding
 * a NUL (lines are parsed with JSON_ALLOW_NUL so one such member does not
 * cost the whole event). */
static const char *
report_get(json_t *ev, const char *key)
{
	json_t *v = json_object_get(ev, key);
	const char *s = json_string_value(v);

	return s != NULL && strlen(s) == json_string_length(v) ? s : NULL;
}

/*
 * The policy domain, lowercased into out.  RFC 8460 §4.4: an IDN policy
 * domain "MUST consist of the Punycode-encoded A-labels"; anything but
 * LDH labels (underscore tolerated) is refused, which also keeps '/' and
 * '!' out of the §5.3 file name.  Returns 0 or -1.
 */
static int
report_domain(const char *d, char *out)
{
	size_t i, n = d != NULL ? strlen(d) : 0;
	unsigned char c;

	if (n == 0 || n > REPORT_DOMAIN_MAX || d[0] == '.' || d[0] == '-' || d[n - 1] == '.')
		return -1;
	for (i = 0; i <= n; i++) {
		c = (unsigned char)d[i];
		if (c >= 'A' && c <= 'Z')
			c = (unsigned char)(c - 'A' + 'a');
		if (c != '\0' && !(c >= 'a' && c <= 'z') && !(c >= '0' && c <= '9') &&
		    c != '-' && c != '.' && c != '_')
			return -1;
		if (c == '.' && d[i + 1] == '.')
			return -1;
		out[i] = (char)c;
	}
	return 0;
}

/* A compact, key-sorted JSON text of v (caller frees), NULL on ENOMEM. */
static char *
report_key(json_t *v)
{
	return json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
}

/* The string elements of the event's policy_string array (a new array). */
static json_t *
report_policy_strings(json_t *ev)
{
	json_t *out = json_array(), *v;
	size_t i;

	json_array_foreach(json_object_get(ev, "policy_string"), i, v)
		if (json_is_string(v))
			json_array_append(out, v);
	return out;
}

static json_t *
report_entry_new(const char *type, json_t *strings)
{
	return json_pack("{s:s, s:O, s:{}, s:i, s:i, s:{}}", "type", type, "strings", strings,
	    "mx", "ok", 0, "fail", 0, "details");
}

/* Note the MX host(s) of the attempt: mx_host is a name or a list. */
static void
report_entry_mx(json_t *entry, json_t *ev)
{
	json_t *mx = json_object_get(entry, "mx"), *v = json_object_get(ev, "mx_host"), *e;
	size_t i;

	if (json_is_string(v) && json_string_length(v) > 0)
		json_object_set_new(mx, json_string_value(v), json_true());
	json_array_foreach(v, i, e)
		if (json_is_string(e) && json_string_length(e) > 0)
			json_object_set_new(mx, json_string_value(e), json_true());
}

/*
 * The entry for the event's policy (created on first use): one per policy
 * domain, policy-type and policy-string.  NULL with *why set when the
 * event cannot be attributed to a policy.
 */
static json_t *
report_entry(struct report_agg *agg, json_t *ev, const char **why)
{
	char domain[REPORT_DOMAIN_MAX + 1], *key = NULL;
	const char *type = report_get(ev, "policy_type");
	json_t *dom, *entry = NULL, *strings = report_policy_strings(ev), *id;

	if (type == NULL)
		type = "no-policy-found";
	*why = "unknown policy_type";
	if (!report_in_list(type, report_policy_types, 3))
		goto out;
	*why = "missing or invalid policy_domain";
	if (report_domain(report_get(ev, "policy_domain"), domain) < 0)
		goto out;
	*why = "out of memory";
	id = json_pack("[s,O]", type, strings);
	key = report_key(id);
	json_decref(id);
	if (key == NULL)
		goto out;
	if ((dom = json_object_get(agg->domains, domain)) == NULL) {
		dom = json_object();
		json_object_set_new(agg->domains, domain, dom);
	}
	if ((entry = json_object_get(dom, key)) == NULL) {
		entry = report_entry_new(type, strings);
		json_object_set_new(dom, key, entry);
	}
	report_entry_mx(entry, ev);
out:
	json_decref(strings);
	free(key);
	return entry;
}

static void
report_set_opt(json_t *obj, const char *key, const char *val)
{
	if (val != NULL && val[0] != '\0')
		json_object_set_new(obj, key, json_string(val));
}

/*
 * failure-reason-code: the event's own failure_reason_code, else its
 * smtp_reply, cut to REPORT_REASON_MAX bytes on a UTF-8 boundary.  A
 * result_type outside RFC 8460 §4.3 is reported as validation-failure
 * ("SHOULD utilize the failure-reason-code"), so its name goes in front.
 */
static json_t *
report_reason(json_t *ev, const char *rt, int standard)
{
	const char *r = report_get(ev, "failure_reason_code");
	char buf[REPORT_REASON_MAX + 80];
	size_t n;

	if (r == NULL || r[0] == '\0')
		r = report_get(ev, "smtp_reply");
	if (!standard && rt != NULL && rt[0] != '\0')
		snprintf(buf, sizeof(buf), "%.60s%s%s", rt, r != NULL && r[0] ? ": " : "", r ? r : "");
	else if (r != NULL && r[0] != '\0')
		snprintf(buf, sizeof(buf), "%s", r);
	else
		return NULL;
	n = strlen(buf);
	if (n > REPORT_REASON_MAX)
		n = REPORT_REASON_MAX;
	while (n > 0 && ((unsigned char)buf[n] & 0xC0) == 0x80)
		n--;
	return n > 0 ? json_stringn(buf, n) : NULL;
}

/* RFC 8460 §4.4 failure-details, grouped: equal fields add to one count. */
static int
report_add_failure(json_t *entry, json_t *ev)
{
	const char *rt = report_get(ev, "result_type");
	int standard = report_in_list(rt, report_result_types, 11);
	json_t *d = json_object(), *details = json_object_get(entry, "details"), *old, *r;
	char *key;

	json_object_set_new(d, "result-type", json_string(standard ? rt : "validation-failure"));
	report_set_opt(d, "sending-mta-ip", report_get(ev, "sending_mta_ip"));
	report_set_opt(d, "receiving-mx-hostname", report_get(ev, "receiving_mx_hostname"));
	report_set_opt(d, "receiving-mx-helo", report_get(ev, "receiving_mx_helo"));
	report_set_opt(d, "receiving-ip", report_get(ev, "receiving_ip"));
	json_object_set_new(d, "failed-session-count", json_integer(0));
	report_set_opt(d, "additional-information", report_get(ev, "additional_information"));
	if ((r = report_reason(ev, rt, standard)) != NULL)
		json_object_set_new(d, "failure-reason-code", r);
	if ((key = report_key(d)) == NULL)
		return json_decref(d), -1;
	if ((old = json_object_get(details, key)) != NULL) {
		json_decref(d);
		d = old;
	} else
		json_object_set_new(details, key, d);
	free(key);
	old = json_object_get(d, "failed-session-count");
	return json_integer_set(old, json_integer_value(old) + 1);
}

/*
 * 1 success, 0 TLS failure, -1 neither, -2 a failure before any TLS
 * negotiation (connection refused, timeout: the emitter gives no
 * result_type).  RFC 8460 §4.4 counts failures "to negotiate an encrypted
 * session" and has no result-type for them, so -2 is left out.
 */
static int
report_result(json_t *ev)
{
	const char *r = report_get(ev, "result"), *rt = report_get(ev, "result_type");
	json_t *tls = json_object_get(ev, "tls");

	/* A plaintext delivery (no STARTTLS at "may") is not a TLS session. */
	if (r != NULL && strcmp(r, "success") == 0)
		return json_is_false(tls) ? -2 : 1;
	if ((r != NULL && strcmp(r, "failure") == 0) || (r == NULL && rt != NULL))
		return rt != NULL && rt[0] != '\0' ? 0 : -2;
	return -1;
}

static void
report_count(json_t *entry, const char *key)
{
	json_t *n = json_object_get(entry, key);

	json_integer_set(n, json_integer_value(n) + 1);
}

/* One "delivery" event: counted, or skipped with the reason counted. */
static void
report_delivery(struct report_agg *agg, const struct report_in *in, json_t *ev)
{
	const char *why = "missing or invalid result";
	json_t *entry;
	time_t t;
	int ok;

	if (report_parse_ts(report_get(ev, "ts"), &t) < 0) {
		agg->unusable++;
		report_warn(agg, in, "delivery without a valid RFC 3339 ts");
		return;
	}
	if (t < agg->start || t >= agg->start + REPORT_DAY) {
		agg->outside++;
		return;
	}
	/* RFC 8460 §5.3: report mail "SHOULD NOT" be in the next report. */
	if (json_is_true(json_object_get(ev, "report_mail"))) {
		agg->own++;
		return;
	}
	/* No new handshake: the session was counted with its first message. */
	if (json_is_true(json_object_get(ev, "connection_reused"))) {
		agg->reused++;
		return;
	}
	if ((ok = report_result(ev)) == -2) {
		agg->nontls++;
		return;
	}
	if (ok < 0 || (entry = report_entry(agg, ev, &why)) == NULL) {
		agg->unusable++;
		report_warn(agg, in, "delivery not counted: %s", why);
		return;
	}
	if (ok == 0 && report_add_failure(entry, ev) < 0) {
		agg->unusable++;
		report_warn(agg, in, "delivery not counted: out of memory");
		return;
	}
	report_count(entry, ok ? "ok" : "fail");
	agg->sessions++;
}

static void
report_line(struct report_agg *agg, const struct report_in *in)
{
	json_error_t jerr;
	json_t *ev;
	const char *event;

	agg->lines++;
	if (in->used == 0 && !in->toolong)
		return;
	ev = in->toolong ? NULL : json_loadb(in->line, in->used, JSON_ALLOW_NUL, &jerr);
	if (!json_is_object(ev)) {
		agg->unparsable++;
		report_warn(agg, in, "unparsable line: %s", in->toolong ? "too long" :
		    ev == NULL ? jerr.text : "not a JSON object");
		json_decref(ev);
		return;
	}
	event = report_get(ev, "event");
	if (event != NULL && strcmp(event, "delivery") == 0)
		report_delivery(agg, in, ev);
	json_decref(ev);
}

/* Read one log ("-" = stdin) into agg.  0, or -1 with a message. */
static int
report_read(struct report_agg *agg, const char *path)
{
	struct report_in in;
	int fd, r;

	memset(&in, 0, sizeof(in));
	in.name = strcmp(path, "-") == 0 ? "(stdin)" : path;
	fd = strcmp(path, "-") == 0 ? dup(STDIN_FILENO) : open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		report_err("%s: %s", in.name, strerror(errno));
		return -1;
	}
	if ((in.gz = gzdopen(fd, "rb")) == NULL) {
		report_err("%s: cannot read: %s", in.name, strerror(errno ? errno : ENOMEM));
		close(fd);
		return -1;
	}
	while ((r = report_in_getline(&in)) > 0)
		report_line(agg, &in);
	gzclose(in.gz);
	free(in.line);
	return r;
}

/* ---- writing ---------------------------------------------------------- */

static int
report_strcmp(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* obj's keys, sorted (caller frees the array, not the keys); NULL if none. */
static const char **
report_keys(json_t *obj, size_t *n)
{
	const char **keys, *k;
	json_t *v;

	*n = 0;
	if (json_object_size(obj) == 0 ||
	    (keys = calloc(json_object_size(obj), sizeof(*keys))) == NULL)
		return NULL;
	json_object_foreach(obj, k, v)
		keys[(*n)++] = k;
	qsort(keys, *n, sizeof(*keys), report_strcmp);
	return keys;
}

/*
 * RFC 8460 §4.4 "mx-host": for sts the MX patterns of the applied policy,
 * read from its "mx:" lines (RFC 8461 §3.2); otherwise, and for an sts
 * policy string without them, the MX hosts the sessions went to.
 */
static json_t *
report_mx_hosts(json_t *entry)
{
	json_t *out = json_array(), *v;
	const char **keys, *s;
	size_t i, n;

	if (strcmp(json_string_value(json_object_get(entry, "type")), "sts") == 0)
		json_array_foreach(json_object_get(entry, "strings"), i, v) {
			s = json_string_value(v);
			if (strncmp(s, "mx:", 3) == 0)
				json_array_append_new(out, json_string(s + 3 + strspn(s + 3, " \t")));
		}
	if (json_array_size(out) > 0)
		return out;
	keys = report_keys(json_object_get(entry, "mx"), &n);
	for (i = 0; i < n; i++)
		json_array_append_new(out, json_string(keys[i]));
	free(keys);
	return out;
}

/* One policies[] element of RFC 8460 §4.4. */
static json_t *
report_policy_json(const char *domain, json_t *entry)
{
	json_t *policy, *failures = json_array(), *mx = report_mx_hosts(entry);
	const char **keys;
	size_t i, n;

	policy = json_pack("{s:O, s:O, s:s}", "policy-type", json_object_get(entry, "type"),
	    "policy-string", json_object_get(entry, "strings"), "policy-domain", domain);
	if (json_array_size(mx) > 0)
		json_object_set(policy, "mx-host", mx);
	json_decref(mx);
	keys = report_keys(json_object_get(entry, "details"), &n);
	for (i = 0; i < n; i++)
		json_array_append(failures, json_object_get(json_object_get(entry, "details"), keys[i]));
	free(keys);
	return json_pack("{s:o, s:{s:O, s:O}, s:o}", "policy", policy, "summary",
	    "total-successful-session-count", json_object_get(entry, "ok"),
	    "total-failure-session-count", json_object_get(entry, "fail"),
	    "failure-details", failures);
}

/* The RFC 8460 §4.4 report for one policy domain; NULL on ENOMEM. */
static json_t *
report_json(const struct report_opts *o, const char *domain, json_t *dom, const char *uid)
{
	char start[32], end[32], id[REPORT_DOMAIN_MAX * 2 + 64];
	json_t *report, *policies = json_array();
	const char **keys;
	size_t i, n;

	/* §4.1: "The report SHOULD cover a full day, from 0000-2400 UTC." */
	snprintf(start, sizeof(start), "%sT00:00:00Z", o->day);
	snprintf(end, sizeof(end), "%sT23:59:59Z", o->day);
	snprintf(id, sizeof(id), "%s_%s_%s@%s", o->day, domain, uid, o->submitter);
	keys = report_keys(dom, &n);
	for (i = 0; i < n; i++)
		json_array_append_new(policies,
		    report_policy_json(domain, json_object_get(dom, keys[i])));
	free(keys);
	report = json_pack("{s:s, s:{s:s, s:s}, s:s, s:s, s:o}", "organization-name", o->org,
	    "date-range", "start-datetime", start, "end-datetime", end,
	    "contact-info", o->contact, "report-id", id, "policies", policies);
	return report;
}

/* §5.3 unique-id = 1*(ALPHA / DIGIT): 16 hex digits. */
static void
report_unique_id(char out[17])
{
	unsigned char r[8];
	unsigned long long x;
	size_t i;

	if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r)) {
		x = (unsigned long long)time(NULL) ^ ((unsigned long long)getpid() << 32);
		memcpy(r, &x, sizeof(r));
	}
	for (i = 0; i < sizeof(r); i++)
		snprintf(out + 2 * i, 3, "%02x", r[i]);
}

/* text gzip'd into a new file tmp, then renamed to path.  0 or -1. */
static int
report_write_gz(const char *tmp, const char *path, const char *text)
{
	size_t len = strlen(text);
	gzFile gz;
	int fd, ok;

	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644)) < 0) {
		report_err("%s: %s", tmp, strerror(errno));
		return -1;
	}
	if ((gz = gzdopen(fd, "wb9")) == NULL) {
		close(fd);
		unlink(tmp);
		report_err("%s: cannot compress", tmp);
		return -1;
	}
	ok = gzwrite(gz, text, (unsigned)len) == (int)len;
	ok = (gzclose(gz) == Z_OK) && ok;
	if (!ok || rename(tmp, path) < 0) {
		report_err("%s: write failed: %s", ok ? path : tmp, strerror(errno));
		unlink(tmp);
		return -1;
	}
	return 0;
}

/* text gzip'd into o->out under its file name, whose path is printed.  0 or -1. */
static int
report_write(const struct report_opts *o, const char *name, const char *text)
{
	char path[REPORT_PATH_MAX], tmp[REPORT_PATH_MAX];

	if (snprintf(path, sizeof(path), "%s/%s", o->out, name) >= (int)sizeof(path) ||
	    snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", o->out, name) >= (int)sizeof(tmp)) {
		report_err("%s: output path too long", o->out);
		return -1;
	}
	if (report_write_gz(tmp, path, text) < 0)
		return -1;
	printf("%s\n", path);
	return 0;
}

/* text gzip'd in memory (RFC 1952) into a new *out.  0, or -1 out of memory. */
static int
report_gzip(const char *text, unsigned char **out, size_t *outlen)
{
	size_t len = strlen(text), cap;
	unsigned char *buf;
	z_stream z;
	int rc;

	memset(&z, 0, sizeof(z));
	if (deflateInit2(&z, 9, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
		return -1;
	cap = deflateBound(&z, (uLong)len);
	if ((buf = malloc(cap)) == NULL) {
		deflateEnd(&z);
		return -1;
	}
	z.next_in = (Bytef *)(uintptr_t)text;
	z.avail_in = (uInt)len;
	z.next_out = buf;
	z.avail_out = (uInt)cap;
	rc = deflate(&z, Z_FINISH);
	*outlen = z.total_out;
	deflateEnd(&z);
	if (rc != Z_STREAM_END) {
		free(buf);
		return -1;
	}
	*out = buf;
	return 0;
}

/* The report handed to report_send (which copies it).  0 or -1. */
static int
report_queue(struct report_send *rs, const char *domain, const char *name, json_t *report,
    const char *text)
{
	struct report_send_item it = { .domain = domain, .filename = name,
	    .report_id = json_string_value(json_object_get(report, "report-id")) };
	unsigned char *gz = NULL;
	int rc = -1;

	if (report_gzip(text, &gz, &it.gzlen) == 0) {
		it.gz = gz;
		rc = report_send_add(rs, &it);
	}
	free(gz);
	if (rc < 0)
		report_err("out of memory");
	return rc;
}

/*
 * One domain's report: written to --out, queued for --send (rs), or both,
 * under its RFC 8460 §5.3 name: filename = sender "!" policy-domain "!"
 * begin-timestamp "!" end-timestamp [ "!" unique-id ] "." extension, the
 * timestamps in seconds since the epoch.  0 or -1.
 */
static int
report_emit(const struct report_opts *o, struct report_send *rs, const char *domain,
    json_t *dom)
{
	char uid[17], name[REPORT_PATH_MAX], *text = NULL;
	json_t *report;
	int rc = -1;

	report_unique_id(uid);
	snprintf(name, sizeof(name), "%s!%s!%lld!%lld!%s.json.gz", o->submitter, domain,
	    (long long)o->start, (long long)o->start + REPORT_DAY - 1, uid);
	report = report_json(o, domain, dom, uid);
	text = report != NULL ? json_dumps(report, JSON_INDENT(2)) : NULL;
	if (text == NULL) {
		report_err("out of memory");
		goto out;
	}
	rc = o->out != NULL ? report_write(o, name, text) : 0;
	if (rc == 0 && rs != NULL)
		rc = report_queue(rs, domain, name, report, text);
out:
	free(text);
	json_decref(report);
	return rc;
}

/* ---- command line ----------------------------------------------------- */

/* The default submitter: [relay] hostname of -c (lower-cased), else ours. */
static void
report_default_submitter(struct report_opts *o)
{
	size_t i;

	if (o->cfg != NULL && o->cfg->hostname != NULL)
		snprintf(o->host, sizeof(o->host), "%s", o->cfg->hostname);
	else if (gethostname(o->host, sizeof(o->host) - 1) < 0)
		o->host[0] = '\0';
	for (i = 0; o->host[i] != '\0'; i++)
		o->host[i] = (char)tolower((unsigned char)o->host[i]);
	o->submitter = o->host;
}

static int
report_opts_defaults(struct report_opts *o)
{
	char dom[REPORT_DOMAIN_MAX + 1];

	if (o->submitter == NULL)
		report_default_submitter(o);
	if (report_domain(o->submitter, dom) < 0 || strcmp(dom, o->submitter) != 0) {
		report_err("submitter \"%s\" is not a lower-case domain name; use --submitter",
		    o->submitter);
		return -1;
	}
	if (o->org == NULL)
		o->org = o->submitter;
	if (o->contact == NULL) {
		snprintf(o->contact_buf, sizeof(o->contact_buf), "postmaster@%s", o->submitter);
		o->contact = o->contact_buf;
	}
	return 0;
}

/* The day: --day, else yesterday (UTC).  0 or -1. */
static int
report_opts_day(struct report_opts *o, const char *day)
{
	struct tm tm;
	time_t now = time(NULL);

	if (day != NULL && report_parse_day(day, &o->start) < 0) {
		report_err("--day %s: not a date of the form YYYY-MM-DD", day);
		return -1;
	}
	if (day == NULL)
		o->start = now - now % REPORT_DAY - REPORT_DAY;
	gmtime_r(&o->start, &tm);
	strftime(o->day, sizeof(o->day), "%Y-%m-%d", &tm);
	return 0;
}

static const struct option report_options[] = {
	{ "day", required_argument, NULL, 'd' },
	{ "org", required_argument, NULL, 'o' },
	{ "contact", required_argument, NULL, 'C' },
	{ "submitter", required_argument, NULL, 's' },
	{ "out", required_argument, NULL, 'O' },
	{ "config", required_argument, NULL, 'c' },
	{ "send", no_argument, NULL, 'S' },
	{ "submit", required_argument, NULL, 'u' },
	{ "from", required_argument, NULL, 'f' },
	{ "timeout", required_argument, NULL, 't' },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

/* One recognised option into o.  0, or -1 on a bad value (reported). */
static int
report_opt(struct report_opts *o, int c, const char *arg, const char **day)
{
	char *end;
	long v;

	switch (c) {
	case 'd': *day = arg; break;
	case 'o': o->org = arg; break;
	case 'C': o->contact = arg; break;
	case 's': o->submitter = arg; break;
	case 'O': o->out = arg; break;
	case 'c': o->config = arg; break;
	case 'S': o->send = 1; break;
	case 'u': o->submit = arg; break;
	case 'f': o->from = arg; break;
	case 't':
		v = strtol(arg, &end, 10);
		if (*arg == '\0' || *end != '\0' || v < 1 || v > 3600) {
			report_err("--timeout %s: not a number of seconds (1..3600)", arg);
			return -1;
		}
		o->timeout = (int)v;
		break;
	}
	return 0;
}

/* What the options ask for is possible.  0, or 1 (reported). */
static int
report_opts_check(struct report_opts *o)
{
	struct stat st;

	if ((o->out == NULL && !o->send) || o->nfiles == 0) {
		report_err(o->nfiles > 0 || o->out == NULL ? "--out DIR is required (or --send)" :
		    "no LOGFILE given");
		report_usage(stderr);
		return 1;
	}
	if (!o->send && (o->submit != NULL || o->from != NULL || o->timeout != 0)) {
		report_err("--submit, --from and --timeout need --send");
		return 1;
	}
	if (o->out != NULL && stat(o->out, &st) < 0) {
		report_err("--out %s: %s", o->out, strerror(errno));
		return 1;
	}
	if (o->out != NULL && !S_ISDIR(st.st_mode)) {
		report_err("--out %s: not a directory", o->out);
		return 1;
	}
	/* config_load prints every error as file:line. */
	return o->config != NULL && (o->cfg = config_load(o->config)) == NULL;
}

/* 0 run, 1 usage error (reported), 2 --help (printed). */
static int
report_opts_parse(struct report_opts *o, int argc, char **argv)
{
	const char *day = NULL;
	int c;

	optind = 0;     /* glibc: a full reset, so report_main may run twice */
	opterr = 0;
	while ((c = getopt_long(argc, argv, "c:h", report_options, NULL)) != -1) {
		if (c == 'h') {
			report_usage(stdout);
			return 2;
		}
		if (c == '?' || c == ':') {
			report_err("bad option %s", argv[optind - 1]);
			report_usage(stderr);
			return 1;
		}
		if (report_opt(o, c, optarg, &day) < 0)
			return 1;
	}
	o->files = argv + optind;
	o->nfiles = argc - optind;
	if (report_opts_check(o) != 0)
		return 1;
	return report_opts_day(o, day) < 0 || report_opts_defaults(o) < 0;
}

static void
report_summary(const struct report_opts *o, const struct report_agg *agg)
{
	if (agg->warned > REPORT_WARN_MAX)
		report_err("... %u more problems not shown", agg->warned - REPORT_WARN_MAX);
	report_err("%s: %lu sessions counted for %zu policy domains (%lu lines; skipped: "
	    "%lu reused connections, %lu report mail, %lu failures before TLS, %lu outside "
	    "the day, %lu unusable deliveries, %lu unparsable lines)", o->day, agg->sessions,
	    json_object_size(agg->domains), agg->lines, agg->reused, agg->own, agg->nontls,
	    agg->outside, agg->unusable, agg->unparsable);
}

/* --send: the sender, set up before any log is read.  NULL on error (reported). */
static struct report_send *
report_sender(const struct report_opts *o)
{
	struct report_send_opts so = { .cfg = o->cfg, .submit = o->submit, .from = o->from,
	    .submitter = o->submitter, .timeout = o->timeout };
	struct report_send *rs;
	char err[512];

	if ((rs = report_send_new(&so, err, sizeof(err))) == NULL)
		report_err("%s", err);
	return rs;
}

/* Read every log, then emit each domain's report.  0 or -1 (reported). */
static int
report_run(const struct report_opts *o, struct report_agg *agg, struct report_send *rs)
{
	const char **keys;
	size_t i, n = 0;
	int rc = 0;

	for (i = 0; i < (size_t)o->nfiles && rc == 0; i++)
		rc = report_read(agg, o->files[i]);
	if (rc != 0)
		return rc;
	keys = report_keys(agg->domains, &n);
	for (i = 0; i < n && rc == 0; i++)
		rc = report_emit(o, rs, keys[i], json_object_get(agg->domains, keys[i]));
	report_summary(o, agg);
	free(keys);
	return rc;
}

int
report_main(int argc, char **argv)
{
	struct report_opts o;
	struct report_agg agg;
	struct report_send *rs = NULL;
	int rc;

	memset(&o, 0, sizeof(o));
	memset(&agg, 0, sizeof(agg));
	if ((rc = report_opts_parse(&o, argc, argv)) != 0) {
		config_free(&o.cfg);
		return rc == 2 ? 0 : 1;
	}
	agg.start = o.start;
	rc = -1;
	if (o.send && (rs = report_sender(&o)) == NULL)
		goto out;
	if ((agg.domains = json_object()) == NULL) {
		report_err("out of memory");
		goto out;
	}
	rc = report_run(&o, &agg, rs);
	/* Nothing is sent unless every log was read and every report made. */
	if (rc == 0 && rs != NULL)
		rc = report_send_run(rs) == 0 ? 0 : -1;
out:
	report_send_free(&rs);
	json_decref(agg.domains);
	config_free(&o.cfg);
	return rc == 0 ? 0 : 1;
}
