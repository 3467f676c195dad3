/*
 * test_evlog.c - unit tests for relay/evlog.c (privacy of addresses, field
 * capture, JSON validity of hostile input) and relay/metrics.c (counters
 * from synthetic event sequences, the Prometheus text).
 *
 * Every test writes its lines to a temporary file through the real emitter,
 * reads them back and parses each with jansson: a line must be exactly one
 * JSON object followed by "\n".
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/buffer.h>
#include <jansson.h>

#include "relay/evlog.h"
#include "relay/metrics.h"

#define S(x) x, sizeof(x) - 1
#define MAX_LINES 64

struct logfile {
	char path[64];
	json_t *lines[MAX_LINES];
	size_t n;
};

static int
setup(void **state)
{
	struct logfile *lf = calloc(1, sizeof(*lf));
	int fd;

	assert_non_null(lf);
	strcpy(lf->path, "/tmp/test_evlog.XXXXXX");
	fd = mkstemp(lf->path);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(evlog_open(lf->path, "relay.test"), 0);
	*state = lf;
	return 0;
}

static int
teardown(void **state)
{
	struct logfile *lf = *state;
	size_t i;

	evlog_close();
	for (i = 0; i < lf->n; i++)
		json_decref(lf->lines[i]);
	unlink(lf->path);
	free(lf);
	return 0;
}

/* Read every line written so far; fail on a partial or unparsable line. */
static void
read_lines(struct logfile *lf)
{
	char buf[65536];
	FILE *fp = fopen(lf->path, "r");
	json_error_t jerr;
	size_t len;

	assert_non_null(fp);
	while (lf->n > 0)
		json_decref(lf->lines[--lf->n]);
	while (fgets(buf, sizeof(buf), fp) != NULL) {
		len = strlen(buf);
		if (len == 0 || buf[len - 1] != '\n')
			fail_msg("partial line: %s", buf);
		assert_true(lf->n < MAX_LINES);
		lf->lines[lf->n] = json_loads(buf, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
		if (lf->lines[lf->n] == NULL || !json_is_object(lf->lines[lf->n]))
			fail_msg("line %zu: %s: %s", lf->n + 1, jerr.text, buf);
		lf->n++;
	}
	fclose(fp);
}

static const char *
field(const json_t *obj, const char *key)
{
	return json_string_value(json_object_get(obj, key));
}

/* --- hashing -------------------------------------------------------------- */

struct hash_case {
	const char *name;
	const char *in;
	const char *want;       /* from Python: sha256(in.lower()).hexdigest()[:16] */
};

static const struct hash_case hash_cases[] = {
	{ "plain", "a@example.org", "sha256:e16bfe08be114c7b" },
	{ "mixed case", "B@Sender.test", "sha256:b2fbeef3d8c6d7fb" },
	{ "lower of mixed", "b@sender.test", "sha256:b2fbeef3d8c6d7fb" },
	{ "address literal", "user@[192.0.2.1]", "sha256:b64fa007623ca123" },
	{ "non-ASCII kept", "caf\xc3\xa9@example.org", "sha256:6d2abc92d4671f10" },
};

static void
test_addr_hash(void **state)
{
	char out[EVLOG_ADDR_HASH_LEN + 1], long_addr[320];
	size_t i;
	int failed = 0;

	(void)state;
	for (i = 0; i < sizeof(hash_cases) / sizeof(hash_cases[0]); i++) {
		evlog_addr_hash(hash_cases[i].in, strlen(hash_cases[i].in), out);
		if (strcmp(out, hash_cases[i].want) != 0) {
			print_error("%s: got %s, want %s\n", hash_cases[i].name, out,
			    hash_cases[i].want);
			failed++;
		}
	}
	/* longer than the 256-byte lower-casing chunk */
	memset(long_addr, 'x', 300);
	strcpy(long_addr + 300, "@Example.org");
	evlog_addr_hash(long_addr, strlen(long_addr), out);
	if (strcmp(out, "sha256:09c64bd540659e1b") != 0) {
		print_error("long: got %s, want sha256:09c64bd540659e1b\n", out);
		failed++;
	}
	assert_int_equal(failed, 0);
}

static void
test_addr_mode_parse(void **state)
{
	int f;

	(void)state;
	assert_int_equal(evlog_addr_mode_parse("yes"), EVLOG_ADDR_YES);
	assert_int_equal(evlog_addr_mode_parse("HASH"), EVLOG_ADDR_HASH);
	assert_int_equal(evlog_addr_mode_parse("omit"), EVLOG_ADDR_OMIT);
	assert_int_equal(evlog_addr_mode_parse("no"), -1);
	assert_int_equal(evlog_addr_mode_parse(""), -1);
	assert_int_equal(evlog_set_addr_mode("sha1"), -1);
	assert_int_equal(evlog_facility_parse("off", &f), 0);
	assert_int_equal(f, -1);
	assert_int_equal(evlog_facility_parse("local3", &f), 0);
	assert_int_equal(f, 19 << 3);
	assert_int_equal(evlog_facility_parse("Mail", &f), 0);
	assert_int_equal(f, 2 << 3);
	assert_int_equal(evlog_facility_parse("local8", &f), -1);
	assert_int_equal(evlog_facility_parse("kern", &f), -1);
	assert_int_equal(evlog_syslog_open("bogus"), -1);
}

/* One "mail"-like line per mode; read back and check from/empty/null. */
static void
test_addr_modes(void **state)
{
	struct logfile *lf = *state;
	static const char *const modes[] = { "yes", "hash", "omit" };
	struct evline *e;
	size_t i;

	for (i = 0; i < 3; i++) {
		assert_int_equal(evlog_set_addr_mode(modes[i]), 0);
		e = evlog_begin("mail", "0123456789abcdef");
		evlog_addr(e, "from", "B@Sender.test");
		evlog_addr(e, "null_sender", "");
		evlog_addr(e, "none", NULL);
		evlog_str(e, "client_ip", "127.0.0.1");
		evlog_end(e);
	}
	read_lines(lf);
	assert_int_equal(lf->n, 3);
	assert_string_equal(field(lf->lines[0], "from"), "B@Sender.test");
	assert_string_equal(field(lf->lines[1], "from"), "sha256:b2fbeef3d8c6d7fb");
	assert_string_equal(field(lf->lines[1], "null_sender"), "");
	assert_true(json_is_null(json_object_get(lf->lines[1], "none")));
	for (i = 0; i < 3; i++)
		assert_string_equal(field(lf->lines[i], "client_ip"), "127.0.0.1");
	assert_null(json_object_get(lf->lines[2], "from"));
	assert_null(json_object_get(lf->lines[2], "null_sender"));
	assert_null(json_object_get(lf->lines[2], "none"));
}

struct text_case {
	const char *name;
	const char *in;
	const char *hash, *omit;
};

static const struct text_case text_cases[] = {
	{ "no address", "250 2.0.0 Ok: queued as 4AB", "250 2.0.0 Ok: queued as 4AB",
	  "250 2.0.0 Ok: queued as 4AB" },
	{ "bracketed", "550 5.1.1 <a@example.org>: Recipient address rejected",
	  "550 5.1.1 <sha256:e16bfe08be114c7b>: Recipient address rejected",
	  "550 5.1.1 <[address]>: Recipient address rejected" },
	{ "bare, sentence end", "unknown user A@Example.org.",
	  "unknown user sha256:e16bfe08be114c7b.", "unknown user [address]." },
	{ "two", "a@example.org,b@sender.test",
	  "sha256:e16bfe08be114c7b,sha256:b2fbeef3d8c6d7fb", "[address],[address]" },
	{ "lone at", "@ x@ @y", "@ x@ @y", "@ x@ @y" },
	{ "empty", "", "", "" },
};

static void
test_text_scrub(void **state)
{
	struct logfile *lf = *state;
	struct evline *e;
	size_t i, n = sizeof(text_cases) / sizeof(text_cases[0]);
	int failed = 0;

	for (i = 0; i < 2 * n; i++) {
		assert_int_equal(evlog_set_addr_mode(i < n ? "hash" : "omit"), 0);
		e = evlog_begin("reject", "0123456789abcdef");
		evlog_text(e, "reason", text_cases[i % n].in);
		evlog_end(e);
	}
	read_lines(lf);
	assert_int_equal(lf->n, 2 * n);
	for (i = 0; i < 2 * n; i++) {
		const struct text_case *c = &text_cases[i % n];
		const char *want = i < n ? c->hash : c->omit, *got = field(lf->lines[i], "reason");

		if (got == NULL || strcmp(got, want) != 0) {
			print_error("%s (%s): got %s, want %s\n", c->name, i < n ? "hash" : "omit",
			    got ? got : "(absent)", want);
			failed++;
		}
	}
	assert_int_equal(failed, 0);
}

/* --- JSON validity of hostile input --------------------------------------------- */

struct hostile {
	const char *name;
	const char *s;
	size_t len;
};

static const struct hostile hostile[] = {
	{ "quote and backslash", S("\"}\\\",{\"event\":\"x") },
	{ "newline injection", S("a\n{\"event\":\"forged\"}\n") },
	{ "CR LF", S("250 ok\r\n") },
	{ "NUL inside", S("a\0b@example.org") },
	{ "controls", S("\x01\x1b[31m\x7f") },
	{ "invalid UTF-8", S("\xff\xfe\xc0\xaf@\xed\xa0\x80") },
	{ "U+2028", S("x\xe2\x80\xa8y@example.org") },
	{ "at signs", S("<<@@>>@@") },
};

static void
emit_hostile(const struct hostile *h)
{
	const char *arr[2] = { h->s, "ok" };
	struct evline *e = evlog_begin(h->s, h->s);

	evlog_str(e, h->s, h->s);
	evlog_strn(e, "strn", h->s, h->len);
	evlog_addr(e, "from", h->s);
	evlog_textn(e, "reply", h->s, h->len);
	evlog_strarr(e, "policy_string", arr, 2);
	evlog_int(e, "code", -1);
	evlog_end(e);
}

static void
test_json_hostile(void **state)
{
	struct logfile *lf = *state;
	static const char *const modes[] = { "yes", "hash", "omit" };
	size_t i, m, n = sizeof(hostile) / sizeof(hostile[0]);
	json_t *v;

	for (m = 0; m < 3; m++) {
		assert_int_equal(evlog_set_addr_mode(modes[m]), 0);
		for (i = 0; i < n; i++)
			emit_hostile(&hostile[i]);
	}
	read_lines(lf);
	assert_int_equal(lf->n, 3 * n);
	for (i = 0; i < lf->n; i++) {
		assert_string_equal(field(lf->lines[i], "host"), "relay.test");
		assert_non_null(field(lf->lines[i], "ts"));
		v = json_object_get(lf->lines[i], "strn");
		assert_true(json_is_string(v));
		/* "strn" holds the raw bytes: lossless when they were UTF-8 */
		if (strcmp(hostile[i % n].name, "NUL inside") == 0)
			assert_int_equal(json_string_length(v), hostile[i % n].len);
	}
}

/* --- metrics ------------------------------------------------------------------- */

static void
ev(const char *event, const char *k1, const char *v1, const char *k2, const char *v2, int code)
{
	struct evline *e = evlog_begin(event, "0123456789abcdef");

	if (k1 != NULL)
		evlog_str(e, k1, v1);
	if (k2 != NULL)
		evlog_str(e, k2, v2);
	if (code >= 0)
		evlog_int(e, "code", code);
	evlog_end(e);
}

static void
synthetic_sequence(void)
{
	struct evline *e;

	ev("connect", "listener", "in", NULL, NULL, -1);
	ev("connect", "listener", "in", NULL, NULL, -1);
	ev("connect", "listener", "in", NULL, NULL, -1);
	ev("disconnect", "reason", "quit", NULL, NULL, -1);
	ev("data", NULL, NULL, NULL, NULL, 250);
	ev("data", NULL, NULL, NULL, NULL, 250);
	ev("data", NULL, NULL, NULL, NULL, 451);
	ev("data", NULL, NULL, NULL, NULL, 554);
	ev("data", NULL, NULL, NULL, NULL, -1);                 /* no code: not counted */
	ev("delivery", "result", "success", "outcome", "delivered", 250);
	ev("delivery", "result", "failure", "result_type", "certificate-expired", 451);
	ev("delivery", "result", "failure", "result_type", "certificate-expired", 451);
	ev("delivery", "result", "failure", "result_type", "dane-required", 451);
	ev("delivery", "result", "failure", NULL, NULL, 451);   /* never reached TLS */
	ev("delivery", "result", "failure", "result_type",
	    "a-result-type-longer-than-the-buffer-holds", 451);
	ev("delivery", "result", "failure", "result_type", "made-up", 451);
	ev("policy_fetch", "outcome", "cache", NULL, NULL, -1);
	ev("policy_fetch", "outcome", "success", NULL, NULL, -1);
	ev("policy_fetch", "outcome", "failure", NULL, NULL, -1);
	ev("policy_fetch", "outcome", "none", NULL, NULL, -1);  /* no policy: not a lookup */
	ev("policy_fetch", "cache", "hit", "outcome", "success", -1);
	e = evlog_begin("policy_fetch", "");
	evlog_str(e, "outcome", "success");
	evlog_bool(e, "refresh", 1);                            /* background: not counted */
	evlog_end(e);
	ev("reject", "command", "RCPT", "result", "failure", 550);  /* other events: nothing */
	ev("mail", "outcome", "delivered", NULL, NULL, 250);
}

static void
test_metrics_count(void **state)
{
	struct logfile *lf = *state;
	struct metrics_counters c;

	memset(&c, 0, sizeof(c));
	evlog_set_observer(metrics_count, &c);
	synthetic_sequence();
	evlog_set_observer(NULL, NULL);
	ev("connect", NULL, NULL, NULL, NULL, -1);              /* after unregistering */
	read_lines(lf);
	assert_int_equal(lf->n, 25);
	assert_int_equal(c.sessions, 3);
	assert_int_equal(c.sessions_ended, 1);
	assert_int_equal(c.messages[METRICS_OUT_DELIVERED], 2);
	assert_int_equal(c.messages[METRICS_OUT_DEFERRED], 1);
	assert_int_equal(c.messages[METRICS_OUT_REJECTED], 1);
	assert_int_equal(c.deliveries[METRICS_RES_SUCCESS], 1);
	assert_int_equal(c.deliveries[METRICS_RES_FAILURE], 6);
	assert_int_equal(c.tls_failures[2], 2);                 /* certificate-expired */
	assert_int_equal(c.tls_failures[7], 1);                 /* dane-required */
	assert_int_equal(c.tls_failures[METRICS_NTYPES - 1], 2); /* "?" and made-up */
	assert_int_equal(c.cache[METRICS_CACHE_HIT], 2);
	assert_int_equal(c.cache[METRICS_CACHE_MISS], 2);
}

static char *
render(const struct metrics_counters *c)
{
	struct evbuffer *b = evbuffer_new();
	size_t n;
	char *s;

	assert_non_null(b);
	metrics_render(c, b);
	n = evbuffer_get_length(b);
	s = malloc(n + 1);
	assert_non_null(s);
	evbuffer_remove(b, s, n);
	s[n] = '\0';
	evbuffer_free(b);
	return s;
}

static void
test_metrics_render(void **state)
{
	static const char *const want[] = {
		"# TYPE tlsrelay_sessions_total counter\ntlsrelay_sessions_total 3\n",
		"# TYPE tlsrelay_sessions_active gauge\ntlsrelay_sessions_active 2\n",
		"tlsrelay_messages_total{outcome=\"delivered\"} 2\n",
		"tlsrelay_messages_total{outcome=\"deferred\"} 1\n",
		"tlsrelay_messages_total{outcome=\"rejected\"} 1\n",
		"tlsrelay_deliveries_total{result=\"failure\"} 6\n",
		"tlsrelay_tls_failures_total{result_type=\"certificate-expired\"} 2\n",
		"tlsrelay_tls_failures_total{result_type=\"sts-webpki-invalid\"} 0\n",
		"tlsrelay_tls_failures_total{result_type=\"other\"} 2\n",
		"tlsrelay_policy_cache_total{result=\"hit\"} 2\n",
		"tlsrelay_events_dropped_total{output=\"file\"} 0\n",
		"tlsrelay_events_dropped_total{output=\"syslog\"} 0\n",
	};
	struct metrics_counters c;
	size_t i;
	char *text, *line, *save = NULL;
	int failed = 0;

	(void)state;
	memset(&c, 0, sizeof(c));
	evlog_set_observer(metrics_count, &c);
	synthetic_sequence();
	evlog_set_observer(NULL, NULL);
	text = render(&c);
	for (i = 0; i < sizeof(want) / sizeof(want[0]); i++)
		if (strstr(text, want[i]) == NULL) {
			print_error("missing %s", want[i]);
			failed++;
		}
	assert_int_equal(text[strlen(text) - 1], '\n');
	/* every line: a comment starting "# HELP " / "# TYPE ", or "name[{...}] value" */
	for (line = strtok_r(text, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save))
		if (line[0] == '#' ? strncmp(line, "# HELP tlsrelay_", 16) != 0 &&
		    strncmp(line, "# TYPE tlsrelay_", 16) != 0 : strncmp(line, "tlsrelay_", 9) != 0 ||
		    strchr(line, ' ') == NULL) {
			print_error("bad line: %s\n", line);
			failed++;
		}
	free(text);
	assert_int_equal(failed, 0);
}

/* A line that cannot be written is counted, and the counter is exported. */
static void
test_dropped(void **state)
{
	struct logfile *lf = *state;
	struct metrics_counters c;
	unsigned long file, sys;
	char *text;

	assert_int_equal(evlog_open("/dev/full", "relay.test"), 0);
	ev("connect", NULL, NULL, NULL, NULL, -1);
	ev("connect", NULL, NULL, NULL, NULL, -1);
	evlog_drops(&file, &sys);
	assert_int_equal(file, 2);
	assert_int_equal(sys, 0);
	assert_int_equal(evlog_dropped(), 2);
	memset(&c, 0, sizeof(c));
	text = render(&c);
	assert_non_null(strstr(text, "tlsrelay_events_dropped_total{output=\"file\"} 2\n"));
	free(text);
	assert_int_equal(evlog_open(lf->path, "relay.test"), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_addr_hash),
		cmocka_unit_test(test_addr_mode_parse),
		cmocka_unit_test_setup_teardown(test_addr_modes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_text_scrub, setup, teardown),
		cmocka_unit_test_setup_teardown(test_json_hostile, setup, teardown),
		cmocka_unit_test_setup_teardown(test_metrics_count, setup, teardown),
		cmocka_unit_test_setup_teardown(test_metrics_render, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dropped, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
