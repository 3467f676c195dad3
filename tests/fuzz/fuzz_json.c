/*
 * fuzz_json.c - libFuzzer target for relay/json.c.
 *
 * Escapes the input and checks with jansson that the result is exactly one
 * JSON string, that it is valid UTF-8, and that when the input was well-formed
 * UTF-8 the decoded string equals the input byte for byte (NULs included, as
 * \u0000).  utf8_valid() is cross-checked against jansson's own UTF-8 check.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <event2/buffer.h>
#include <jansson.h>

#include "relay/json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x) do { if (!(x)) __builtin_trap(); } while (0)

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct evbuffer *out = evbuffer_new();
	const char *in = (const char *)data;
	json_error_t jerr;
	json_t *j, *k;
	size_t n;
	char *s;
	int valid = utf8_valid(in, size);

	CHECK(out != NULL);
	json_escape(out, in, size);
	n = evbuffer_get_length(out);
	s = (char *)evbuffer_pullup(out, -1);
	CHECK(s != NULL && n >= 2);
	CHECK(utf8_valid(s, n));
	j = json_loadb(s, n, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
	CHECK(j != NULL && json_is_string(j));
	if (valid) {
		CHECK(json_string_length(j) == size);
		CHECK(memcmp(json_string_value(j), in, size) == 0);
	}
	/* jansson refuses invalid UTF-8 in strings: both must agree. */
	k = json_stringn(in, size);
	CHECK((k != NULL) == valid);
	json_decref(k);
	json_decref(j);
	evbuffer_free(out);
	return 0;
}
