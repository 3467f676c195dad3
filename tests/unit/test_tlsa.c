/*
 * test_tlsa.c - policy/tlsa.c: TLSA usability (DANE-05) and presentation.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "policy/tlsa.h"

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

static const struct classify_case {
	int usage, selector, mtype;
	size_t len;
	enum tlsa_usable want;
} classify_cases[] = {
	{ 3, 1, 1, 32, TLSA_USABLE },
	{ 3, 0, 1, 32, TLSA_USABLE },
	{ 2, 0, 1, 32, TLSA_USABLE },
	{ 2, 1, 2, 64, TLSA_USABLE },
	{ 3, 1, 2, 64, TLSA_USABLE },
	{ 3, 0, 0, 800, TLSA_USABLE },
	{ 2, 1, 0, 1, TLSA_USABLE },
	{ 0, 0, 1, 32, TLSA_UNUSABLE_PKIX },
	{ 1, 1, 1, 32, TLSA_UNUSABLE_PKIX },
	{ 1, 9, 9, 0, TLSA_UNUSABLE_PKIX },
	{ 4, 1, 1, 32, TLSA_UNUSABLE_USAGE },
	{ 255, 1, 1, 32, TLSA_UNUSABLE_USAGE },
	{ -1, 1, 1, 32, TLSA_UNUSABLE_USAGE },
	{ 256, 1, 1, 32, TLSA_UNUSABLE_USAGE },
	{ 3, 2, 1, 32, TLSA_UNUSABLE_SELECTOR },
	{ 3, 255, 1, 32, TLSA_UNUSABLE_SELECTOR },
	{ 3, -1, 1, 32, TLSA_UNUSABLE_SELECTOR },
	{ 3, 1, 3, 32, TLSA_UNUSABLE_MTYPE },
	{ 3, 1, 255, 32, TLSA_UNUSABLE_MTYPE },
	{ 3, 1, -1, 32, TLSA_UNUSABLE_MTYPE },
	{ 3, 1, 1, 0, TLSA_UNUSABLE_EMPTY },
	{ 3, 1, 0, 0, TLSA_UNUSABLE_EMPTY },
	{ 3, 1, 2, 0, TLSA_UNUSABLE_EMPTY },
	{ 3, 1, 1, 31, TLSA_UNUSABLE_LENGTH },
	{ 3, 1, 1, 33, TLSA_UNUSABLE_LENGTH },
	{ 3, 1, 1, 64, TLSA_UNUSABLE_LENGTH },
	{ 2, 0, 2, 32, TLSA_UNUSABLE_LENGTH },
	{ 2, 0, 2, 63, TLSA_UNUSABLE_LENGTH },
	{ 2, 0, 2, 65, TLSA_UNUSABLE_LENGTH },
};

static void
test_classify(void **state)
{
	unsigned char data[1024];

	(void)state;
	memset(data, 0xab, sizeof(data));
	for (size_t i = 0; i < NELEM(classify_cases); i++) {
		const struct classify_case *c = &classify_cases[i];
		unsigned char *d = malloc(c->len > 0 ? c->len : 1);
		enum tlsa_usable got;

		assert_non_null(d);
		memcpy(d, data, c->len);
		got = tlsa_classify(c->usage, c->selector, c->mtype, d, c->len);
		if (got != c->want)
			fail_msg("%d %d %d len %zu: got %d (%s), want %d (%s)", c->usage,
			    c->selector, c->mtype, c->len, (int)got, tlsa_reason(got),
			    (int)c->want, tlsa_reason(c->want));
		free(d);
	}
}

static void
test_reason(void **state)
{
	(void)state;
	for (int u = TLSA_USABLE; u <= TLSA_UNUSABLE_LENGTH; u++) {
		const char *r = tlsa_reason((enum tlsa_usable)u);
		assert_non_null(r);
		assert_true(strlen(r) > 0);
		assert_string_not_equal(r, "unknown");
	}
	assert_string_equal(tlsa_reason(TLSA_USABLE), "usable");
}

static void
test_present(void **state)
{
	static const unsigned char d[] = { 0xab, 0x12, 0x00, 0xff, 0x0f };
	char out[64];

	(void)state;
	assert_int_equal(tlsa_present(d, sizeof(d), 3, 1, 1, out, sizeof(out)), 16);
	assert_string_equal(out, "3 1 1 ab1200ff0f");
	assert_int_equal(tlsa_present(d, 1, 2, 0, 2, out, sizeof(out)), 8);
	assert_string_equal(out, "2 0 2 ab");
	assert_int_equal(tlsa_present(d, 0, 3, 1, 1, out, sizeof(out)), 5);
	assert_string_equal(out, "3 1 1");
	assert_int_equal(tlsa_present(d, 1, 255, 255, 255, out, sizeof(out)), 14);
	assert_string_equal(out, "255 255 255 ab");
}

static void
test_present_bounds(void **state)
{
	static const unsigned char d[] = { 0xab, 0x12 };
	char out[16];

	(void)state;
	/* "3 1 1 ab12" is 10 chars: needs 11 bytes */
	assert_int_equal(tlsa_present(d, 2, 3, 1, 1, out, 11), 10);
	assert_string_equal(out, "3 1 1 ab12");
	memset(out, 'x', sizeof(out));
	assert_int_equal(tlsa_present(d, 2, 3, 1, 1, out, 10), -1);
	assert_string_equal(out, "");
	memset(out, 'x', sizeof(out));
	assert_int_equal(tlsa_present(d, 2, 3, 1, 1, out, 7), -1);
	assert_string_equal(out, "");
	memset(out, 'x', sizeof(out));
	assert_int_equal(tlsa_present(d, 2, 3, 1, 1, out, 3), -1);
	assert_string_equal(out, "");
	assert_int_equal(tlsa_present(d, 2, 3, 1, 1, NULL, 0), -1);
	assert_int_equal(tlsa_present(d, 2, 256, 1, 1, out, sizeof(out)), -1);
	assert_int_equal(tlsa_present(d, 2, 3, -1, 1, out, sizeof(out)), -1);
	assert_int_equal(tlsa_present(d, 2, 3, 1, 1000, out, sizeof(out)), -1);
	assert_string_equal(out, "");
}

/* A SHA2-512 record fits in the buffer size a caller would use. */
static void
test_present_sha512(void **state)
{
	unsigned char d[TLSA_SHA512_LEN];
	char out[6 + 2 * TLSA_SHA512_LEN + 1];

	(void)state;
	for (size_t i = 0; i < sizeof(d); i++)
		d[i] = (unsigned char)i;
	assert_int_equal(tlsa_present(d, sizeof(d), 3, 1, 2, out, sizeof(out)),
	    (int)sizeof(out) - 1);
	assert_int_equal(strncmp(out, "3 1 2 000102", 12), 0);
	assert_string_equal(out + sizeof(out) - 5, "3e3f");
	assert_int_equal(tlsa_classify(3, 1, 2, d, sizeof(d)), TLSA_USABLE);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_classify),
		cmocka_unit_test(test_reason),
		cmocka_unit_test(test_present),
		cmocka_unit_test(test_present_bounds),
		cmocka_unit_test(test_present_sha512),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
