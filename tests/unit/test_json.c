/*
 * test_json.c - unit tests for relay/json.c (JSON string escaping, UTF-8).
 *
 * Each case gives input bytes and the exact JSON text wanted.  Every output
 * is also parsed back with jansson: it must be one JSON string, and when the
 * input was well-formed UTF-8 the decoded string must equal the input.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/buffer.h>
#include <jansson.h>

#include "relay/json.h"

struct json_case {
	const char *name;
	const char *in;
	size_t len;
	const char *want;
};

#define S(x) x, sizeof(x) - 1

static const struct json_case json_cases[] = {
	{ "empty", S(""), "\"\"" },
	{ "plain", S("mx.example.org"), "\"mx.example.org\"" },
	{ "quote", S("a\"b"), "\"a\\\"b\"" },
	{ "backslash", S("a\\b"), "\"a\\\\b\"" },
	{ "slash raw", S("a/b"), "\"a/b\"" },
	{ "short escapes", S("\b\f\n\r\t"), "\"\\b\\f\\n\\r\\t\"" },
	{ "NUL", S("a\0b"), "\"a\\u0000b\"" },
	{ "control 01", S("\x01"), "\"\\u0001\"" },
	{ "control 1f", S("\x1f"), "\"\\u001f\"" },
	{ "escape char", S("\x1b[31m"), "\"\\u001b[31m\"" },
	{ "DEL", S("\x7f"), "\"\\u007f\"" },
	{ "2-byte", S("caf\xc3\xa9"), "\"caf\xc3\xa9\"" },
	{ "3-byte", S("\xe2\x82\xac"), "\"\xe2\x82\xac\"" },
	{ "4-byte", S("\xf0\x9f\x93\xa7"), "\"\xf0\x9f\x93\xa7\"" },
	{ "max code point", S("\xf4\x8f\xbf\xbf"), "\"\xf4\x8f\xbf\xbf\"" },
	{ "U+2028", S("a\xe2\x80\xa8" "b"), "\"a\\u2028b\"" },
	{ "U+2029", S("\xe2\x80\xa9"), "\"\\u2029\"" },
	{ "lone continuation", S("\x80"), "\"\\ufffd\"" },
	{ "lone FF", S("a\xff" "b"), "\"a\\ufffdb\"" },
	{ "overlong slash", S("\xc0\xaf"), "\"\\ufffd\\ufffd\"" },
	{ "overlong C1", S("\xc1\xbf"), "\"\\ufffd\\ufffd\"" },
	{ "overlong 3", S("\xe0\x80\xaf"), "\"\\ufffd\\ufffd\\ufffd\"" },
	{ "overlong 4", S("\xf0\x80\x80\xaf"), "\"\\ufffd\\ufffd\\ufffd\\ufffd\"" },
	{ "surrogate", S("\xed\xa0\x80"), "\"\\ufffd\\ufffd\\ufffd\"" },
	{ "above U+10FFFF", S("\xf4\x90\x80\x80"), "\"\\ufffd\\ufffd\\ufffd\\ufffd\"" },
	{ "F5 lead", S("\xf5\x80\x80\x80"), "\"\\ufffd\\ufffd\\ufffd\\ufffd\"" },
	{ "truncated at end", S("\xe2\x82"), "\"\\ufffd\\ufffd\"" },
	{ "truncated then ASCII", S("\xe2\x82" "A"), "\"\\ufffd\\ufffdA\"" },
	{ "truncated then quote", S("\xc3\""), "\"\\ufffd\\\"\"" },
	{ "valid after invalid", S("\xff\xc3\xa9"), "\"\\ufffd\xc3\xa9\"" },
	{ "SMTP reply", S("550 5.1.1 <a@b>: \"no\"\r\n"),
	  "\"550 5.1.1 <a@b>: \\\"no\\\"\\r\\n\"" },
};

/* json_out - the escaped form of in[0..len) as a malloc'd C string. */
static char *
json_out(const char *in, size_t len)
{
	struct evbuffer *buf = evbuffer_new();
	size_t n;
	char *s;

	assert_non_null(buf);
	json_escape(buf, in, len);
	n = evbuffer_get_length(buf);
	s = malloc(n + 1);
	assert_non_null(s);
	evbuffer_remove(buf, s, n);
	s[n] = '\0';
	evbuffer_free(buf);
	return s;
}

/* json_reparse - 0 when out parses as a string equal to in (if in is UTF-8). */
static int
json_reparse(const char *name, const char *out, const char *in, size_t len)
{
	json_error_t jerr;
	json_t *j = json_loads(out, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
	int bad = 0;

	if (j == NULL || !json_is_string(j)) {
		print_error("%s: jansson: %s\n", name, j ? "not a string" : jerr.text);
		bad = 1;
	} else if (utf8_valid(in, len) && (json_string_length(j) != len ||
	    memcmp(json_string_value(j), in, len) != 0)) {
		print_error("%s: round trip: got %d bytes, want %d\n", name,
		    (int)json_string_length(j), (int)len);
		bad = 1;
	}
	json_decref(j);
	return bad;
}

static void
test_json_cases(void **state)
{
	size_t i;
	int failed = 0;
	char *out;

	(void)state;
	for (i = 0; i < sizeof(json_cases) / sizeof(json_cases[0]); i++) {
		const struct json_case *c = &json_cases[i];

		out = json_out(c->in, c->len);
		if (strcmp(out, c->want) != 0) {
			print_error("%s: got %s, want %s\n", c->name, out, c->want);
			failed++;
		}
		failed += json_reparse(c->name, out, c->in, c->len);
		free(out);
	}
	assert_int_equal(failed, 0);
}

struct utf8_case {
	const char *name;
	const char *in;
	size_t len;
	int want;
};

static const struct utf8_case utf8_cases[] = {
	{ "empty", S(""), 1 },
	{ "ASCII", S("abc"), 1 },
	{ "NUL is UTF-8", S("a\0b"), 1 },
	{ "2-byte", S("\xc3\xa9"), 1 },
	{ "3-byte", S("\xe2\x82\xac"), 1 },
	{ "E0 min", S("\xe0\xa0\x80"), 1 },
	{ "ED max", S("\xed\x9f\xbf"), 1 },
	{ "4-byte", S("\xf0\x90\x80\x80"), 1 },
	{ "F4 max", S("\xf4\x8f\xbf\xbf"), 1 },
	{ "continuation", S("\x80"), 0 },
	{ "C0", S("\xc0\x80"), 0 },
	{ "C1", S("\xc1\xbf"), 0 },
	{ "E0 overlong", S("\xe0\x9f\xbf"), 0 },
	{ "surrogate", S("\xed\xa0\x80"), 0 },
	{ "F0 overlong", S("\xf0\x8f\xbf\xbf"), 0 },
	{ "F4 too big", S("\xf4\x90\x80\x80"), 0 },
	{ "F5", S("\xf5\x80\x80\x80"), 0 },
	{ "FF", S("\xff"), 0 },
	{ "truncated 2", S("\xc3"), 0 },
	{ "truncated 3", S("\xe2\x82"), 0 },
	{ "truncated 4", S("\xf0\x9f\x93"), 0 },
	{ "bad tail", S("\xe2\x28\xa1"), 0 },
	{ "tail not continuation", S("\xc3\x28"), 0 },
};

static void
test_utf8_valid(void **state)
{
	size_t i;
	int failed = 0, got;

	(void)state;
	for (i = 0; i < sizeof(utf8_cases) / sizeof(utf8_cases[0]); i++) {
		got = utf8_valid(utf8_cases[i].in, utf8_cases[i].len);
		if (got == utf8_cases[i].want)
			continue;
		print_error("%s: got %d, want %d\n", utf8_cases[i].name, got,
		    utf8_cases[i].want);
		failed++;
	}
	assert_int_equal(failed, 0);
}

static void
test_json_escape_str(void **state)
{
	struct evbuffer *buf = evbuffer_new();
	char out[32];
	size_t n;

	(void)state;
	json_escape_str(buf, NULL);
	evbuffer_add(buf, ",", 1);
	json_escape_str(buf, "a\tb");
	n = evbuffer_remove(buf, out, sizeof(out) - 1);
	out[n] = '\0';
	assert_string_equal(out, "null,\"a\\tb\"");
	evbuffer_free(buf);
}

/* Every single byte value gives valid JSON that jansson accepts. */
static void
test_json_all_bytes(void **state)
{
	char in[3] = { 'x', 0, 'y' };
	int c, failed = 0;
	char *out;

	(void)state;
	for (c = 0; c < 256; c++) {
		in[1] = (char)c;
		out = json_out(in, sizeof(in));
		failed += json_reparse("byte", out, in, sizeof(in));
		free(out);
	}
	assert_int_equal(failed, 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_json_cases),
		cmocka_unit_test(test_utf8_valid),
		cmocka_unit_test(test_json_escape_str),
		cmocka_unit_test(test_json_all_bytes),
	};

	return cmocka_run_group_tests_name("json", tests, NULL, NULL);
}
