/*
 * test_tlsctx.c - OpenSSL verify results to RFC 8460 result types, and the
 * server context's refusal of a key that does not match its certificate.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/x509_vfy.h>

#include "certs/tlsctx.h"

static const struct {
	long verify;
	const char *want;
} result_cases[] = {
	{ X509_V_ERR_HOSTNAME_MISMATCH, "certificate-host-mismatch" },
	{ X509_V_ERR_IP_ADDRESS_MISMATCH, "certificate-host-mismatch" },
	{ X509_V_ERR_CERT_HAS_EXPIRED, "certificate-expired" },
	{ X509_V_ERR_CERT_NOT_YET_VALID, "certificate-expired" },
	{ X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY, "certificate-not-trusted" },
	{ X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT, "certificate-not-trusted" },
	{ X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT, "certificate-not-trusted" },
	{ X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN, "certificate-not-trusted" },
	{ X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE, "certificate-not-trusted" },
	{ X509_V_ERR_CERT_UNTRUSTED, "certificate-not-trusted" },
	{ X509_V_ERR_DANE_NO_MATCH, "validation-failure" },
	{ X509_V_ERR_CERT_SIGNATURE_FAILURE, "validation-failure" },
	{ X509_V_ERR_CERT_REVOKED, "validation-failure" },
	{ X509_V_ERR_EE_KEY_TOO_SMALL, "validation-failure" },
};

static void
test_result_types(void **state)
{
	size_t i;
	const char *got;

	(void)state;
	for (i = 0; i < sizeof(result_cases) / sizeof(result_cases[0]); i++) {
		got = tlsctx_result_type(result_cases[i].verify);
		if (strcmp(got, result_cases[i].want) != 0)
			fail_msg("%s: got %s, want %s",
			    X509_verify_cert_error_string(result_cases[i].verify), got,
			    result_cases[i].want);
	}
}

static void
test_server_ctx_errors(void **state)
{
	char err[512];

	(void)state;
	assert_null(tlsctx_server_new("/nonexistent.crt", "/nonexistent.key", TLS1_2_VERSION,
	    err, sizeof(err)));
	assert_non_null(strstr(err, "cannot load certificate /nonexistent.crt"));
	assert_null(tlsctx_client_new("/nonexistent-ca.pem", err, sizeof(err)));
	assert_non_null(strstr(err, "cannot load CA file"));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_result_types),
		cmocka_unit_test(test_server_ctx_errors),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
