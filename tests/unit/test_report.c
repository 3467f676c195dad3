/*
 * test_report.c - policy/report.c: `tlsrelay report` from synthetic logs.
 *
 * Each test writes event logs into a fresh mkdtemp() directory, runs
 * report_main() exactly as the command line would, and reads the produced
 * .json.gz files back with zlib + jansson.  Every report is checked against
 * the structure of RFC 8460 §4.4 by rfc8460_check(), written from the RFC
 * field by field (not from report.c), before its counts are looked at.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <zlib.h>

#include "policy/report.h"

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))
#define DAY "2026-12-04"

struct fx {
	char dir[64];
	char out[96];
	char path[8][128];
	int nlog;
};

/* ---- fixture ---------------------------------------------------------- */

static int
fx_setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	snprintf(f->dir, sizeof(f->dir), "/tmp/test_report.XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->out, sizeof(f->out), "%s/out", f->dir);
	assert_int_equal(mkdir(f->out, 0700), 0);
	*state = f;
	return 0;
}

static int
fx_rm(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int
fx_teardown(void **state)
{
	struct fx *f = *state;

	nftw(f->dir, fx_rm, 8, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

/* A new log file in the fixture; returns its path (gzip'd when gz). */
static const char *
fx_log(struct fx *f, const char *name, const char *text, int gz)
{
	char *p = f->path[f->nlog++], tmp[sizeof(f->path[0])];
	FILE *fp;
	gzFile z;

	snprintf(tmp, sizeof(tmp), "%s/%s", f->dir, name);
	memcpy(p, tmp, sizeof(tmp));
	if (gz) {
		assert_non_null(z = gzopen(p, "wb"));
		assert_int_equal(gzwrite(z, text, (unsigned)strlen(text)), (int)strlen(text));
		assert_int_equal(gzclose(z), Z_OK);
	} else {
		assert_non_null(fp = fopen(p, "w"));
		fputs(text, fp);
		assert_int_equal(fclose(fp), 0);
	}
	return p;
}

/* report_main(argv = "report" args... NULL). */
static int
run_report(const char *first, ...)
{
	char *argv[32];
	int argc = 0;
	const char *a;
	va_list ap;

	argv[argc++] = (char *)"report";
	va_start(ap, first);
	for (a = first; a != NULL && argc < 31; a = va_arg(ap, const char *))
		argv[argc++] = (char *)a;
	va_end(ap);
	argv[argc] = NULL;
	fflush(stdout);
	return report_main(argc, argv);
}

/* ---- log lines -------------------------------------------------------- */

/* One delivery event as the relay writes it; extra is appended inside. */
static char *
delivery(char *buf, size_t size, const char *ts, const char *domain, const char *rt,
    const char *extra)
{
	snprintf(buf, size, "{\"ts\":\"%s\",\"event\":\"delivery\",\"host\":\"relay.test\","
	    "\"session\":\"89cee3b2923ef091\",\"policy_type\":\"no-policy-found\","
	    "\"policy_domain\":\"%s\",\"policy_string\":[],\"policy_level\":\"may\","
	    "\"mx_host\":\"mx.%s\",\"result\":\"%s\"%s%s%s,\"sending_mta_ip\":\"192.0.2.1\","
	    "\"receiving_mx_hostname\":\"mx.%s\",\"receiving_mx_helo\":\"helo.%s\","
	    "\"receiving_ip\":\"198.51.100.7\",\"tls_version\":\"TLSv1.3\","
	    "\"connection_reused\":false,\"outcome\":\"%s\",\"code\":%d,"
	    "\"smtp_reply\":\"%s\",\"duration_ms\":2%s}\n",
	    ts, domain, domain, rt ? "failure" : "success", rt ? ",\"result_type\":\"" : "",
	    rt ? rt : "", rt ? "\"" : "", domain, domain, rt ? "deferred" : "delivered",
	    rt ? 451 : 250, rt ? "4.7.5 TLS failure" : "Ok", extra ? extra : "");
	return buf;
}

/* Concatenate lines (NULL-terminated) into one malloc'd text. */
static char *
lines(const char *first, ...)
{
	size_t n = 1;
	char *out = calloc(1, 1);
	const char *s;
	va_list ap;

	va_start(ap, first);
	for (s = first; s != NULL; s = va_arg(ap, const char *)) {
		n += strlen(s);
		assert_non_null(out = realloc(out, n));
		strcat(out, s);
	}
	va_end(ap);
	return out;
}

/* ---- reading reports back --------------------------------------------- */

/* The gunzip'd, parsed content of path (must be gzip: magic 1f 8b). */
static json_t *
read_report(const char *path)
{
	unsigned char magic[2] = { 0, 0 }, buf[65536];
	json_error_t jerr;
	json_t *j;
	int fd, n;
	gzFile z;

	assert_true((fd = open(path, O_RDONLY)) >= 0);
	assert_int_equal(read(fd, magic, 2), 2);
	close(fd);
	assert_int_equal(magic[0], 0x1f);
	assert_int_equal(magic[1], 0x8b);
	assert_non_null(z = gzopen(path, "rb"));
	n = gzread(z, buf, sizeof(buf) - 1);
	gzclose(z);
	assert_true(n > 0);
	j = json_loadb((const char *)buf, (size_t)n, 0, &jerr);
	if (j == NULL)
		print_error("%s: %s\n", path, jerr.text);
	assert_non_null(j);
	return j;
}

/* Names in dir (sorted), at most max; returns how many. */
static int
list_out(const char *dir, char names[][512], int max)
{
	struct dirent *de;
	DIR *d = opendir(dir);
	int n = 0;

	assert_non_null(d);
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.' && n < max)
			snprintf(names[n++], 512, "%s", de->d_name);
	closedir(d);
	qsort(names, (size_t)n, 512, (int (*)(const void *, const void *))strcmp);
	return n;
}

/* ---- RFC 8460 §4.4, field by field ------------------------------------ */

static int
check_keys(const char *what, json_t *obj, const char *const *allowed, size_t n)
{
	const char *k;
	json_t *v;
	size_t i;
	int bad = 0;

	json_object_foreach(obj, k, v) {
		for (i = 0; i < n && strcmp(k, allowed[i]) != 0; i++)
			;
		if (i == n) {
			print_error("%s: unexpected member \"%s\"\n", what, k);
			bad++;
		}
	}
	return bad;
}

/* RFC 3339 date-time "YYYY-MM-DDTHH:MM:SSZ" (what a report writer emits). */
static int
is_datetime(json_t *v)
{
	struct tm tm;
	const char *s = json_string_value(v), *end;

	if (s == NULL || strlen(s) != 20)
		return 0;
	memset(&tm, 0, sizeof(tm));
	end = strptime(s, "%Y-%m-%dT%H:%M:%SZ", &tm);
	return end != NULL && *end == '\0';
}

static int
is_ip(json_t *v)
{
	unsigned char a[16];
	const char *s = json_string_value(v);

	return s != NULL && (inet_pton(AF_INET, s, a) == 1 || inet_pton(AF_INET6, s, a) == 1);
}

static int
is_count(json_t *v, long long min)
{
	return json_is_integer(v) && json_integer_value(v) >= min;
}

static int
is_strarray(json_t *v)
{
	json_t *e;
	size_t i;

	if (!json_is_array(v))
		return 0;
	json_array_foreach(v, i, e)
		if (!json_is_string(e))
			return 0;
	return 1;
}

#define CHECK(cond, ...) do { if (!(cond)) { print_error(__VA_ARGS__); bad++; } } while (0)

/* §4.3 result-type values. */
static const char *const rfc8460_result_types[] = {
	"starttls-not-supported", "certificate-host-mismatch", "certificate-expired",
	"certificate-not-trusted", "validation-failure", "tlsa-invalid", "dnssec-invalid",
	"dane-required", "sts-policy-fetch-error", "sts-policy-invalid", "sts-webpki-invalid",
};

static int
in_list(const char *s, const char *const *list, size_t n)
{
	size_t i;

	for (i = 0; s != NULL && i < n; i++)
		if (strcmp(s, list[i]) == 0)
			return 1;
	return 0;
}

/* One failure-details element; returns its failed-session-count via *count. */
static int
check_failure(json_t *f, long long *count)
{
	static const char *const keys[] = { "result-type", "sending-mta-ip",
		"receiving-mx-hostname", "receiving-mx-helo", "receiving-ip",
		"failed-session-count", "additional-information", "failure-reason-code" };
	json_t *v;
	int bad = 0;

	CHECK(json_is_object(f), "failure-details[]: not an object\n");
	bad += check_keys("failure-details[]", f, keys, NELEM(keys));
	CHECK(in_list(json_string_value(json_object_get(f, "result-type")),
	    rfc8460_result_types, NELEM(rfc8460_result_types)), "result-type: not an RFC 8460 type\n");
	/* "sending-mta-ip": the string IP of the sending MTA (RPT-09: may be absent) */
	v = json_object_get(f, "sending-mta-ip");
	CHECK(v == NULL || is_ip(v), "sending-mta-ip: not an IP address\n");
	v = json_object_get(f, "receiving-mx-hostname");
	CHECK(v == NULL || (json_is_string(v) && json_string_length(v) > 0),
	    "receiving-mx-hostname: not a non-empty string\n");
	v = json_object_get(f, "receiving-mx-helo");
	CHECK(v == NULL || (json_is_string(v) && json_string_length(v) > 0),
	    "receiving-mx-helo: not a non-empty string\n");
	v = json_object_get(f, "receiving-ip");
	CHECK(v == NULL || is_ip(v), "receiving-ip: not an IP address\n");
	v = json_object_get(f, "failed-session-count");
	CHECK(is_count(v, 1), "failed-session-count: not an integer >= 1\n");
	*count = json_integer_value(v);
	/* "additional-information": a URI (RFC 3986) */
	v = json_object_get(f, "additional-information");
	CHECK(v == NULL || (json_is_string(v) && strchr(json_string_value(v), ':') != NULL),
	    "additional-information: not a URI\n");
	v = json_object_get(f, "failure-reason-code");
	CHECK(v == NULL || json_is_string(v), "failure-reason-code: not a string\n");
	return bad;
}

/* One policies[] element: policy, summary, failure-details. */
static int
check_policy(json_t *p)
{
	static const char *const keys[] = { "policy", "summary", "failure-details" };
	static const char *const pkeys[] = { "policy-type", "policy-string", "policy-domain",
		"mx-host" };
	static const char *const skeys[] = { "total-successful-session-count",
		"total-failure-session-count" };
	static const char *const types[] = { "tlsa", "sts", "no-policy-found" };
	json_t *pol = json_object_get(p, "policy"), *sum = json_object_get(p, "summary");
	json_t *fd = json_object_get(p, "failure-details"), *v, *f;
	long long total = 0, c;
	size_t i;
	int bad = 0;

	bad += check_keys("policies[]", p, keys, NELEM(keys));
	CHECK(json_is_object(pol), "policy: missing\n");
	bad += check_keys("policy", pol, pkeys, NELEM(pkeys));
	CHECK(in_list(json_string_value(json_object_get(pol, "policy-type")), types, 3),
	    "policy-type: not tlsa|sts|no-policy-found\n");
	CHECK(is_strarray(json_object_get(pol, "policy-string")), "policy-string: not a string array\n");
	v = json_object_get(pol, "policy-domain");
	CHECK(json_is_string(v) && json_string_length(v) > 0, "policy-domain: missing (RPT-08)\n");
	v = json_object_get(pol, "mx-host");
	CHECK(v == NULL || is_strarray(v), "mx-host: not a string array\n");
	CHECK(json_is_object(sum), "summary: missing\n");
	bad += check_keys("summary", sum, skeys, NELEM(skeys));
	CHECK(is_count(json_object_get(sum, skeys[0]), 0), "%s: not a count\n", skeys[0]);
	CHECK(is_count(json_object_get(sum, skeys[1]), 0), "%s: not a count\n", skeys[1]);
	CHECK(fd == NULL || json_is_array(fd), "failure-details: not an array\n");
	json_array_foreach(fd, i, f) {
		c = 0;
		bad += check_failure(f, &c);
		total += c;
	}
	CHECK(total == json_integer_value(json_object_get(sum, skeys[1])),
	    "failure-details add up to %lld, summary says otherwise\n", total);
	return bad;
}

/* The whole report (RFC 8460 §4.4); 0 when it conforms. */
static int
rfc8460_check(json_t *r)
{
	static const char *const keys[] = { "organization-name", "date-range", "contact-info",
		"report-id", "policies" };
	static const char *const dkeys[] = { "start-datetime", "end-datetime" };
	json_t *dr = json_object_get(r, "date-range"), *pols = json_object_get(r, "policies"), *p;
	size_t i;
	int bad = 0;

	CHECK(json_is_object(r), "report: not an object\n");
	bad += check_keys("report", r, keys, NELEM(keys));
	CHECK(json_is_string(json_object_get(r, "organization-name")), "organization-name\n");
	CHECK(json_is_object(dr), "date-range: missing\n");
	bad += check_keys("date-range", dr, dkeys, NELEM(dkeys));
	CHECK(is_datetime(json_object_get(dr, "start-datetime")), "start-datetime: not RFC 3339\n");
	CHECK(is_datetime(json_object_get(dr, "end-datetime")), "end-datetime: not RFC 3339\n");
	CHECK(json_is_string(json_object_get(r, "contact-info")), "contact-info: not a string\n");
	CHECK(json_is_string(json_object_get(r, "report-id")) &&
	    json_string_length(json_object_get(r, "report-id")) > 0, "report-id: missing\n");
	CHECK(json_is_array(pols) && json_array_size(pols) > 0, "policies: not a non-empty array\n");
	json_array_foreach(pols, i, p)
		bad += check_policy(p);
	return bad;
}

/* The one report for domain in f->out, checked against §4.4; NULL if none. */
static json_t *
report_for(struct fx *f, const char *domain)
{
	char names[16][512], pat[300], path[700];
	int i, n = list_out(f->out, names, 16);
	json_t *r = NULL;

	snprintf(pat, sizeof(pat), "!%s!", domain);
	for (i = 0; i < n; i++) {
		if (strstr(names[i], pat) == NULL)
			continue;
		assert_null(r);
		assert_true(snprintf(path, sizeof(path), "%s/%s", f->out, names[i]) < (int)sizeof(path));
		r = read_report(path);
		assert_int_equal(rfc8460_check(r), 0);
	}
	return r;
}

/* policies[i] of r with the given policy-type. */
static json_t *
policy_of(json_t *r, const char *type)
{
	json_t *p;
	size_t i;

	json_array_foreach(json_object_get(r, "policies"), i, p)
		if (strcmp(json_string_value(json_object_get(json_object_get(p, "policy"),
		    "policy-type")), type) == 0)
			return p;
	return NULL;
}

static long long
summary(json_t *p, int failures)
{
	return json_integer_value(json_object_get(json_object_get(p, "summary"), failures ?
	    "total-failure-session-count" : "total-successful-session-count"));
}

/* ---- tests ------------------------------------------------------------ */

static const struct ts_case {
	const char *in;
	long long want;   /* -1: invalid */
} ts_cases[] = {
	{ "2026-12-04T16:15:31.886Z", 1796400931 },
	{ "2026-12-04T16:15:31Z", 1796400931 },
	{ "2026-12-04t16:15:31z", 1796400931 },
	{ "2026-12-04T17:15:31.5+01:00", 1796400931 },
	{ "2026-12-04T15:15:31-01:00", 1796400931 },
	{ "2026-12-04T00:00:00.000Z", 1796342400 },
	{ "2026-12-31T23:59:60Z", 1798761599 },
	{ "2026-12-04 16:15:31Z", -1 },
	{ "2026-12-04T16:15:31", -1 },
	{ "2026-12-04T16:15:31.Z", -1 },
	{ "2026-02-30T00:00:00Z", -1 },
	{ "2026-13-01T00:00:00Z", -1 },
	{ "2026-12-04T24:00:00Z", -1 },
	{ "2026-12-04T16:15:31+1:00", -1 },
	{ "2026-12-04T16:15:31Zjunk", -1 },
	{ "", -1 },
	{ NULL, -1 },
};

static void
test_parse_ts(void **state)
{
	time_t t;
	size_t i;
	int r, failed = 0;

	(void)state;
	for (i = 0; i < NELEM(ts_cases); i++) {
		t = 0;
		r = report_parse_ts(ts_cases[i].in, &t);
		if ((r < 0 ? -1 : (long long)t) != ts_cases[i].want) {
			print_error("%s: got %lld, want %lld\n", ts_cases[i].in ? ts_cases[i].in : "NULL",
			    r < 0 ? -1 : (long long)t, ts_cases[i].want);
			failed++;
		}
	}
	assert_int_equal(failed, 0);
}

static void
test_parse_day(void **state)
{
	time_t t;

	(void)state;
	assert_int_equal(report_parse_day("2026-12-04", &t), 0);
	assert_int_equal((long long)t, 1796342400LL);
	assert_int_equal(report_parse_day("2024-02-29", &t), 0);
	assert_int_equal(report_parse_day("2026-02-29", &t), -1);
	assert_int_equal(report_parse_day("2026-12-4", &t), -1);
	assert_int_equal(report_parse_day("2026-12-04T", &t), -1);
	assert_int_equal(report_parse_day("yesterday", &t), -1);
}

/* Two domains, successes and failures: one file each, exact counts. */
static void
test_counts_per_domain(void **state)
{
	struct fx *f = *state;
	char a[1024], b[1024], c[1024], d[1024], e[1024];
	char *text = lines(delivery(a, sizeof(a), DAY "T01:00:00.000Z", "example.org", NULL, NULL),
	    delivery(b, sizeof(b), DAY "T02:00:00.000Z", "example.org", NULL, NULL),
	    delivery(c, sizeof(c), DAY "T03:00:00.000Z", "Example.ORG", "certificate-expired", NULL),
	    delivery(d, sizeof(d), DAY "T04:00:00.000Z", "example.net", NULL, NULL),
	    delivery(e, sizeof(e), DAY "T05:00:00.000Z", "example.net", "starttls-not-supported", NULL),
	    NULL);
	const char *log = fx_log(f, "events.jsonl", text, 0);
	char names[8][512];
	json_t *r, *p;

	free(text);
	assert_int_equal(run_report("--day", DAY, "--submitter", "relay.test", "--out", f->out,
	    log, NULL), 0);
	assert_int_equal(list_out(f->out, names, 8), 2);
	assert_non_null(r = report_for(f, "example.org"));
	assert_int_equal(json_array_size(json_object_get(r, "policies")), 1);
	assert_non_null(p = policy_of(r, "no-policy-found"));
	assert_int_equal(summary(p, 0), 2);
	assert_int_equal(summary(p, 1), 1);
	/* RPT-08: no-policy-found still names its policy domain */
	assert_string_equal(json_string_value(json_object_get(json_object_get(p, "policy"),
	    "policy-domain")), "example.org");
	json_decref(r);
	assert_non_null(r = report_for(f, "example.net"));
	assert_non_null(p = policy_of(r, "no-policy-found"));
	assert_int_equal(summary(p, 0), 1);
	assert_int_equal(summary(p, 1), 1);
	json_decref(r);
}

/* Equal failures group into one failure-details entry with its count. */
static void
test_failures_grouped(void **state)
{
	struct fx *f = *state;
	char a[1024], b[1024], c[1024], d[1024];
	char *text = lines(
	    delivery(a, sizeof(a), DAY "T01:00:00Z", "example.org", "certificate-host-mismatch", NULL),
	    delivery(b, sizeof(b), DAY "T02:00:00Z", "example.org", "certificate-host-mismatch", NULL),
	    delivery(c, sizeof(c), DAY "T03:00:00Z", "example.org", "certificate-host-mismatch", NULL),
	    delivery(d, sizeof(d), DAY "T04:00:00Z", "example.org", "certificate-not-trusted", NULL),
	    NULL);
	json_t *r, *fd, *x;
	size_t i;
	int seen = 0;

	assert_int_equal(run_report("--day", DAY, "--submitter", "relay.test", "--out", f->out,
	    fx_log(f, "events.jsonl", text, 0), NULL), 0);
	free(text);
	assert_non_null(r = report_for(f, "example.org"));
	fd = json_object_get(policy_of(r, "no-policy-found"), "failure-details");
	assert_int_equal(json_array_size(fd), 2);
	json_array_foreach(fd, i, x) {
		const char *rt = json_string_value(json_object_get(x, "result-type"));
		long long n = json_integer_value(json_object_get(x, "failed-session-count"));

		seen |= strcmp(rt, "certificate-host-mismatch") == 0 && n == 3 ? 1 : 0;
		seen |= strcmp(rt, "certificate-not-trusted") == 0 && n == 1 ? 2 : 0;
		assert_string_equal(json_string_value(json_object_get(x, "sending-mta-ip")), "192.0.2.1");
		assert_string_equal(json_string_value(json_object_get(x, "receiving-ip")),
		    "198.51.100.7");
		assert_string_equal(json_string_value(json_object_get(x, "receiving-mx-hostname")),
		    "mx.example.org");
		assert_string_equal(json_string_value(json_object_get(x, "receiving-mx-helo")),
		    "helo.example.org");
		assert_string_equal(json_string_value(json_object_get(x, "failure-reason-code")),
		    "4.7.5 TLS failure");
	}
	assert_int_equal(seen, 3);
	json_decref(r);
}

/* Reused connections, the relay's own report mail and failures before TLS
 * are not counted as TLS sessions. */
static void
test_reused_and_report_mail(void **state)
{
	struct fx *f = *state;
	char a[1024], b[1024], c[1024], d[1024], e[1024];
	char *text = lines(
	    delivery(a, sizeof(a), DAY "T01:00:00Z", "example.org", NULL, NULL),
	    delivery(b, sizeof(b), DAY "T01:00:01Z", "example.org", NULL, ",\"connection_reused\":true"),
	    delivery(c, sizeof(c), DAY "T01:00:02Z", "example.org", NULL, ",\"connection_reused\":true"),
	    delivery(d, sizeof(d), DAY "T06:00:00Z", "example.org", "validation-failure",
		",\"report_mail\":true"),
	    delivery(e, sizeof(e), DAY "T06:00:00Z", "report-only.example", NULL,
		",\"report_mail\":true"),
	    /* a failure before TLS (no result_type): not a TLS session */
	    "{\"ts\":\"" DAY "T07:00:00Z\",\"event\":\"delivery\",\"policy_domain\":"
	    "\"example.org\",\"result\":\"failure\",\"smtp_reply\":\"connect: refused\"}\n",
	    "{\"ts\":\"" DAY "T07:00:00Z\",\"event\":\"delivery\",\"policy_domain\":"
	    "\"example.org\",\"result\":\"failure\",\"result_type\":\"\"}\n",
	    NULL);
	char names[8][512];
	json_t *r, *p;

	assert_int_equal(run_report("--day", DAY, "--submitter", "relay.test", "--out", f->out,
	    fx_log(f, "events.jsonl", text, 0), NULL), 0);
	free(text);
	assert_int_equal(list_out(f->out, names, 8), 1);   /* nothing for report-only.example */
	assert_non_null(r = report_for(f, "example.org"));
	p = policy_of(r, "no-policy-found");
	assert_int_equal(summary(p, 0), 1);
	assert_int_equal(summary(p, 1), 0);
	json_decref(r);
}

/* Only [00:00:00, 24:00:00) UTC of the day counts; offsets are honoured. */
static void
test_day_window(void **state)
{
	struct fx *f = *state;
	char a[1024], b[1024], c[1024], d[1024], e[1024], g[1024];
	char *text = lines(
	    delivery(a, sizeof(a), "2026-12-03T23:59:59.999Z", "example.org", NULL, NULL),
	    delivery(b, sizeof(b), DAY "T00:00:00.000Z", "example.org", NULL, NULL),
	    delivery(c, sizeof(c), DAY "T23:59:59.999Z", "example.org", NULL, NULL),
	    delivery(d, sizeof(d), "2026-12-05T00:00:00.000Z", "example.org", NULL, NULL),
	    delivery(e, sizeof(e), "2026-12-05T00:30:00+01:00", "example.org", NULL, NULL),
	    delivery(g, sizeof(g), "2026-12-04T00:30:00+01:00", "example.org", NULL, NULL),
	    NULL);
	json_t *r;

	assert_int_equal(run_report("--day", DAY, "--submitter", "relay.test", "--out", f->out,
	    fx_log(f, "events.jsonl", text, 0), NULL), 0);
	free(text);
	assert_non_null(r = report_for(f, "example.org"));
	assert_int_equal(summary(policy_of(r, "no-policy-found"), 0), 3);
	json_decref(r);
}

/* Garbage never stops a report: each bad line is skipped and counted. */
static void
test_malformed_lines(void **state)
{
	struct fx *f = *state;
	char a[1024], b[1024], *big, *text;
	json_t *r;

	assert_non_null(big = malloc(2 * 1024 * 1024 + 2));
	memset(big, 'x', 2 * 1024 * 1024);
	strcpy(big + 2 * 1024 * 1024, "\n");
	text = lines("not json at all\n", "{\"ts\":\"" DAY "T01:00:00Z\",\"event\":\"deliv\n",
	    "[1,2,3]\n", "\n", "\r\n", "42\n", big,
	    delivery(a, sizeof(a), DAY "T01:00:00Z", "example.org", NULL, NULL),
	    "{\"event\":\"delivery\",\"ts\":\"" DAY "T01:00:00Z\",\"result\":\"success\"}\n",
	    "{\"event\":\"delivery\",\"ts\":\"" DAY "T01:00:00Z\",\"result\":\"success\","
	    "\"policy_domain\":\"../../etc\"}\n",
	    "{\"event\":\"delivery\",\"ts\":\"yesterday\",\"policy_domain\":\"example.org\"}\n",
	    "{\"event\":\"delivery\",\"ts\":\"" DAY "T01:00:00Z\",\"policy_domain\":\"example.org\","
	    "\"result\":\"maybe\"}\n",
	    "{\"event\":\"connect\",\"ts\":\"" DAY "T01:00:00Z\",\"session\":\"x\"}\n",
	    /* minimal delivery: only what a report needs (RPT-09 spirit) */
	    "{\"event\":\"delivery\",\"ts\":\"" DAY "T02:00:00Z\",\"policy_domain\":\"example.org\","
	    "\"result\":\"failure\",\"result_type\":\"dnssec-invalid\"}\n",
	    /* last line without LF */
	    delivery(b, sizeof(b), DAY "T03:00:00Z", "example.org", NULL, NULL), NULL);
	text[strlen(text) - 1] = '\0';
	free(big);
	assert_int_equal(run_report("--day", DAY, "--submitter", "relay.test", "--out", f->out,
	    fx_log(f, "events.jsonl", text, 0), NULL), 0);
	free(text);
	assert_non_null(r = report_for(f, "example.org"));
	assert_int_equal(summary(policy_of(r, "no-policy-found"), 0), 2);
	assert_int_equal(summary(policy_of(r, "no-policy-found"), 1), 1);
	json_decref(r);
}

/* gzip'd logs (rotated files) are read whatever their name, with plain ones. */
static void
test_gzip_input(void **state)
{
	struct fx *f = *state;
	char a[1024], b[1024], c[1024];
	const char *l1, *l2, *l3;
	json_t *r;

	l1 = fx_log(f, "events.jsonl.1.gz", delivery(a, sizeof(a), DAY "T01:00:00Z", "example.org",
	    NULL, NULL), 1);
	l2 = fx_log(f, "events.jsonl.2", delivery(b, sizeof(b), DAY "T02:00:00Z", "example.org",
	    "tlsa-invalid", NULL), 1);
	l3 = fx_log(f, "events.jsonl", delivery(c, sizeof(c), DAY "T03:00:00Z", "example.org",
	    NULL, NULL), 0);
	assert_int_equal(run_report("--day", DAY, "--submitter", "relay.test", "--out", f->out,
	    l1, l2, l3, NULL), 0);
	assert_non_null(r = report_for(f, "example.org"));
	assert_int_equal(summary(policy_of(r, "no-policy-found"), 0), 2);
	assert_int_equal(summary(policy_of(r, "no-policy-found"), 1), 1);
	json_decref(r);
}

/* "-" reads stdin. */
static void
test_stdin(void **state)
{
	struct fx *f = *state;
	char a[1024];
	int fd, saved = dup(STDIN_FILENO), rc;
	json_t *r;

	fd = open(fx_log(f, "events.jsonl", delivery(a, sizeof(a), DAY "T01:00:00Z",
	    "example.org", NULL, NULL), 0), O_RDONLY);
	assert_true(fd >= 0 && saved >= 0);
	dup2(fd, STDIN_FILENO);
	close(fd);
	rc = run_report("--day", DAY, "--submitter", "relay.test", "--out", f->out, "-", NULL);
	dup2(saved, STDIN_FILENO);
	close(saved);
	assert_int_equal(rc, 0);
	assert_non_null(r = report_for(f, "example.org"));
	assert_int_equal(summary(policy_of(r, "no-policy-found"), 0), 1);
	json_decref(r);
}

/* RFC 8460 §5.3 file name and the report's own header fields. */
static void
test_naming_and_header(void **state)
{
	struct fx *f = *state;
	char a[1024], names[4][512], want[128], *bang;
	json_t *r, *dr;
	size_t i;

	assert_int_equal(run_report("--day", DAY, "--submitter", "relay.test", "--org", "Example Org",
	    "--contact", "mailto:tls@relay.test", "--out", f->out, fx_log(f, "e.jsonl",
	    delivery(a, sizeof(a), DAY "T01:00:00Z", "example.org", NULL, NULL), 0), NULL), 0);
	assert_int_equal(list_out(f->out, names, 4), 1);
	/* submitter!policy-domain!begin-timestamp!end-timestamp!unique-id.json.gz */
	snprintf(want, sizeof(want), "relay.test!example.org!1796342400!1796428799!");
	assert_int_equal(strncmp(names[0], want, strlen(want)), 0);
	bang = names[0] + strlen(want);
	assert_true(strlen(bang) > strlen(".json.gz"));
	assert_string_equal(bang + strlen(bang) - strlen(".json.gz"), ".json.gz");
	for (i = 0; i < strlen(bang) - strlen(".json.gz"); i++)   /* unique-id = 1*(ALPHA/DIGIT) */
		assert_true((bang[i] >= '0' && bang[i] <= '9') || (bang[i] >= 'a' && bang[i] <= 'z') ||
		    (bang[i] >= 'A' && bang[i] <= 'Z'));
	assert_non_null(r = report_for(f, "example.org"));
	assert_string_equal(json_string_value(json_object_get(r, "organization-name")), "Example Org");
	assert_string_equal(json_string_value(json_object_get(r, "contact-info")),
	    "mailto:tls@relay.test");
	dr = json_object_get(r, "date-range");
	assert_string_equal(json_string_value(json_object_get(dr, "start-datetime")),
	    DAY "T00:00:00Z");
	assert_string_equal(json_string_value(json_object_get(dr, "end-datetime")), DAY "T23:59:59Z");
	assert_non_null(strstr(json_string_value(json_object_get(r, "report-id")), "example.org"));
	json_decref(r);
}

/* sts and tlsa policies are separate entries; sts mx-host from its mx: lines. */
static void
test_policy_types(void **state)
{
	struct fx *f = *state;
	char *text = lines(
	    "{\"ts\":\"" DAY "T01:00:00Z\",\"event\":\"delivery\",\"policy_type\":\"sts\","
	    "\"policy_domain\":\"example.com\",\"policy_string\":[\"version: STSv1\","
	    "\"mode: enforce\",\"mx: *.mail.example.com\",\"max_age: 86400\"],"
	    "\"mx_host\":\"a.mail.example.com\",\"result\":\"success\"}\n",
	    "{\"ts\":\"" DAY "T02:00:00Z\",\"event\":\"delivery\",\"policy_type\":\"tlsa\","
	    "\"policy_domain\":\"example.com\",\"policy_string\":[\"3 1 1 AB12\"],"
	    "\"mx_host\":\"b.mail.example.com\",\"result\":\"failure\","
	    "\"result_type\":\"tlsa-invalid\",\"receiving_ip\":\"2001:db8::25\"}\n",
	    "{\"ts\":\"" DAY "T03:00:00Z\",\"event\":\"delivery\",\"policy_type\":\"tlsa\","
	    "\"policy_domain\":\"example.com\",\"policy_string\":[\"3 1 1 AB12\"],"
	    "\"mx_host\":\"b.mail.example.com\",\"result\":\"failure\","
	    "\"result_type\":\"some-new-type\",\"smtp_reply\":\"4.7.5 nope\"}\n", NULL);
	json_t *r, *p, *mx, *fd, *x;
	size_t i;

	assert_int_equal(run_report("--day", DAY, "--submitter", "relay.test", "--out", f->out,
	    fx_log(f, "events.jsonl", text, 0), NULL), 0);
	free(text);
	assert_non_null(r = report_for(f, "example.com"));
	assert_int_equal(json_array_size(json_object_get(r, "policies")), 2);
	assert_non_null(p = policy_of(r, "sts"));
	mx = json_object_get(json_object_get(p, "policy"), "mx-host");
	assert_int_equal(json_array_size(mx), 1);
	assert_string_equal(json_string_value(json_array_get(mx, 0)), "*.mail.example.com");
	assert_int_equal(summary(p, 0), 1);
	assert_non_null(p = policy_of(r, "tlsa"));
	assert_int_equal(summary(p, 1), 2);
	mx = json_object_get(json_object_get(p, "policy"), "mx-host");
	assert_string_equal(json_string_value(json_array_get(mx, 0)), "b.mail.example.com");
	fd = json_object_get(p, "failure-details");
	assert_int_equal(json_array_size(fd), 2);
	json_array_foreach(fd, i, x)   /* unknown type: validation-failure + reason code */
		if (strcmp(json_string_value(json_object_get(x, "result-type")), "validation-failure") == 0)
			assert_string_equal(json_string_value(json_object_get(x, "failure-reason-code")),
			    "some-new-type: 4.7.5 nope");
	json_decref(r);
}

/* failure-reason-code is cut to a sane length on a UTF-8 boundary; a NUL in
 * a peer's reply costs only that member, not the session. */
static void
test_reason_truncated(void **state)
{
	struct fx *f = *state;
	char line[2048], *p = line, *text;
	const char *s;
	json_t *r, *x;
	size_t i;

	p += sprintf(p, "{\"ts\":\"" DAY "T01:00:00Z\",\"event\":\"delivery\","
	    "\"policy_domain\":\"example.org\",\"result\":\"failure\","
	    "\"result_type\":\"certificate-expired\",\"smtp_reply\":\"");
	for (i = 0; i < 301; i++)
		p += sprintf(p, "\xc3\xa9");          /* é: 2 bytes each */
	sprintf(p, "\"}\n");
	text = lines(line, "{\"ts\":\"" DAY "T02:00:00Z\",\"event\":\"delivery\","
	    "\"policy_domain\":\"example.org\",\"result\":\"failure\",\"result_type\":"
	    "\"certificate-not-trusted\",\"smtp_reply\":\"a\\u0000b\"}\n", NULL);
	assert_int_equal(run_report("--day", DAY, "--submitter", "relay.test", "--out", f->out,
	    fx_log(f, "events.jsonl", text, 0), NULL), 0);
	free(text);
	assert_non_null(r = report_for(f, "example.org"));
	assert_int_equal(summary(policy_of(r, "no-policy-found"), 1), 2);
	json_array_foreach(json_object_get(policy_of(r, "no-policy-found"), "failure-details"), i, x) {
		s = json_string_value(json_object_get(x, "failure-reason-code"));
		if (strcmp(json_string_value(json_object_get(x, "result-type")), "certificate-expired") == 0)
			assert_int_equal(strlen(s), 200);
		else
			assert_null(s);
	}
	json_decref(r);
}

/* Usage and I/O errors: exit 1, nothing written. */
static void
test_errors(void **state)
{
	struct fx *f = *state;
	char a[1024], names[4][512], missing[200];
	const char *log = fx_log(f, "e.jsonl", delivery(a, sizeof(a), DAY "T01:00:00Z",
	    "example.org", NULL, NULL), 0);

	snprintf(missing, sizeof(missing), "%s/no-such-file", f->dir);
	assert_int_equal(run_report("--day", DAY, "--submitter", "relay.test", log, NULL), 1);
	assert_int_equal(run_report("--day", DAY, "--submitter", "relay.test", "--out", f->out,
	    NULL), 1);
	assert_int_equal(run_report("--day", "2026-13-01", "--submitter", "relay.test", "--out",
	    f->out, log, NULL), 1);
	assert_int_equal(run_report("--day", DAY, "--submitter", "a/b", "--out", f->out, log, NULL),
	    1);
	assert_int_equal(run_report("--day", DAY, "--submitter", "relay.test", "--out", log, log,
	    NULL), 1);
	assert_int_equal(run_report("--bogus", "--out", f->out, log, NULL), 1);
	assert_int_equal(run_report("--day", DAY, "--submitter", "relay.test", "--out", f->out,
	    log, missing, NULL), 1);
	assert_int_equal(list_out(f->out, names, 4), 0);
	assert_int_equal(run_report("--help", NULL), 0);
	/* a day without deliveries: success, no file */
	assert_int_equal(run_report("--day", "2026-12-01", "--submitter", "relay.test", "--out",
	    f->out, log, NULL), 0);
	assert_int_equal(list_out(f->out, names, 4), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_ts),
		cmocka_unit_test(test_parse_day),
		cmocka_unit_test_setup_teardown(test_counts_per_domain, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_failures_grouped, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_reused_and_report_mail, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_day_window, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_malformed_lines, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_gzip_input, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_stdin, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_naming_and_header, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_policy_types, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_reason_truncated, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_errors, fx_setup, fx_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
