/*
 * tlsctx.c - server and client SSL_CTX construction; OpenSSL verify results
 * to TLS-RPT result types.  See tlsctx.h.
 */
#include <stdio.h>
#include <string.h>

#include <stdlib.h>

#include <openssl/err.h>
#include <openssl/sha.h>
#include <openssl/x509v3.h>

#include "certs/tlsctx.h"

/* TLS 1.2 suites: ECDHE/DHE key exchange with AEAD only (forward secrecy). */
#define TLSCTX_CIPHERS \
	"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:" \
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:" \
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:" \
	"DHE-RSA-AES256-GCM-SHA384:DHE-RSA-AES128-GCM-SHA256"

static void tlsctx_client_cache(SSL_CTX *ctx);
static SSL_CTX *tlsctx_fail(SSL_CTX *ctx, const char *what, const char *file, char *err,
    size_t errlen);

void
tlsctx_errors(char *buf, size_t len)
{
	unsigned long e;
	size_t used = 0;

	buf[0] = '\0';
	while ((e = ERR_get_error()) != 0) {
		if (used + 2 >= len)
			continue;
		if (used > 0) {
			buf[used++] = ';';
			buf[used] = '\0';
		}
		ERR_error_string_n(e, buf + used, len - used);
		used = strlen(buf);
	}
}

static SSL_CTX *
tlsctx_fail(SSL_CTX *ctx, const char *what, const char *file, char *err, size_t errlen)
{
	char ossl[512];

	tlsctx_errors(ossl, sizeof(ossl));
	snprintf(err, errlen, "%s%s%s: %s", what, file ? " " : "", file ? file : "",
	    ossl[0] ? ossl : "failed");
	SSL_CTX_free(ctx);
	return NULL;
}

static void
tlsctx_common(SSL_CTX *ctx, int min_version)
{
	SSL_CTX_set_min_proto_version(ctx, min_version);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
	    SSL_OP_CIPHER_SERVER_PREFERENCE);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
}

SSL_CTX *
tlsctx_server_new(const char *cert, const char *key, int min_version, char *err,
    size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

	if (ctx == NULL)
		return tlsctx_fail(ctx, "SSL_CTX_new", NULL, err, errlen);
	tlsctx_common(ctx, min_version);
	if (SSL_CTX_set_cipher_list(ctx, TLSCTX_CIPHERS) != 1)
		return tlsctx_fail(ctx, "cipher list", NULL, err, errlen);
	if (tlsctx_server_add_cert(ctx, cert, key, err, errlen) < 0) {
		SSL_CTX_free(ctx);
		return NULL;
	}
	SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"tlsrelay", 8);
	return ctx;
}

/*
 * One certificate chain and its key; a second call with another key type
 * (ECDSA beside RSA, like Postfix's smtpd_tls_eccert_file) adds it, and
 * OpenSSL picks per client by its signature algorithms.
 */
int
tlsctx_server_add_cert(SSL_CTX *ctx, const char *cert, const char *key, char *err,
    size_t errlen)
{
	if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1)
		return tlsctx_fail(NULL, "cannot load certificate", cert, err, errlen), -1;
	if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1)
		return tlsctx_fail(NULL, "cannot load private key", key, err, errlen), -1;
	if (SSL_CTX_check_private_key(ctx) != 1)
		return tlsctx_fail(NULL, "private key does not match certificate", cert, err,
		    errlen), -1;
	return 0;
}

/*
 * The handshake goes on whatever the client certificate is: it is asked
 * for, never required, and only logged (Postfix smtpd_tls_ask_ccert).  The
 * verdict is read afterwards with SSL_get_verify_result() and grants
 * nothing; this callback is not a "skip verification" switch.
 */
static int
tlsctx_ask_cb(int preverify_ok, X509_STORE_CTX *x)
{
	(void)preverify_ok;
	(void)x;
	return 1;
}

int
tlsctx_server_ask_client_cert(SSL_CTX *ctx, const char *ca_file, char *err, size_t errlen)
{
	STACK_OF(X509_NAME) *names;

	if (SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
		tlsctx_fail(NULL, "cannot load client CA file", ca_file, err, errlen);
		return -1;
	}
	names = SSL_load_client_CA_file(ca_file);
	if (names != NULL)
		SSL_CTX_set_client_CA_list(ctx, names);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_CLIENT_ONCE, tlsctx_ask_cb);
	return 0;
}

void
tlsctx_peer_names(SSL *ssl, char *subject, char *issuer, size_t len)
{
	X509 *peer = SSL_get0_peer_certificate(ssl);

	subject[0] = issuer[0] = '\0';
	if (peer == NULL)
		return;
	X509_NAME_oneline(X509_get_subject_name(peer), subject, (int)len);
	X509_NAME_oneline(X509_get_issuer_name(peer), issuer, (int)len);
}

SSL_CTX *
tlsctx_client_new(const char *ca_file, char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

	if (ctx == NULL)
		return tlsctx_fail(ctx, "SSL_CTX_new", NULL, err, errlen);
	tlsctx_common(ctx, TLS1_2_VERSION);
	if (ca_file != NULL && SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1)
		return tlsctx_fail(ctx, "cannot load CA file", ca_file, err, errlen);
	if (ca_file == NULL && SSL_CTX_set_default_verify_paths(ctx) != 1)
		return tlsctx_fail(ctx, "cannot load default CA paths", NULL, err, errlen);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	tlsctx_client_cache(ctx);
	if (SSL_CTX_dane_enable(ctx) <= 0)
		return tlsctx_fail(ctx, "SSL_CTX_dane_enable", NULL, err, errlen);
	return ctx;
}

/*
 * Client session cache: one process-wide table of SSL_SESSIONs, keyed by a
 * digest of everything the session was verified under (address, names,
 * level, TLSA records), so a resumed session never crosses policies
 * (ANCHORS DANE-11; Postfix keys its cache the same way).  TLS 1.3 tickets
 * arrive after the handshake, hence the new-session callback.
 */
#define TLSCTX_CACHE_SLOTS 512

static struct {
	char key[65];
	SSL_SESSION *sess;
} tlsctx_cache[TLSCTX_CACHE_SLOTS];
static int tlsctx_key_idx = -1;

static void
tlsctx_key_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
	(void)parent;
	(void)ad;
	(void)idx;
	(void)argl;
	(void)argp;
	free(ptr);
}

static size_t
tlsctx_slot(const char *key)
{
	unsigned long h = 2166136261UL;

	for (; *key != '\0'; key++)
		h = (h ^ (unsigned char)*key) * 16777619UL;
	return h % TLSCTX_CACHE_SLOTS;
}

static int
tlsctx_new_session(SSL *ssl, SSL_SESSION *sess)
{
	const char *key = SSL_get_ex_data(ssl, tlsctx_key_idx);
	size_t i;

	if (key == NULL || !SSL_SESSION_is_resumable(sess))
		return 0;
	i = tlsctx_slot(key);
	if (tlsctx_cache[i].sess != NULL)
		SSL_SESSION_free(tlsctx_cache[i].sess);
	snprintf(tlsctx_cache[i].key, sizeof(tlsctx_cache[i].key), "%s", key);
	tlsctx_cache[i].sess = sess;
	return 1;       /* we keep the reference */
}

static void
tlsctx_client_cache(SSL_CTX *ctx)
{
	if (tlsctx_key_idx < 0)
		tlsctx_key_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, tlsctx_key_free);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT |
	    SSL_SESS_CACHE_NO_INTERNAL_STORE);
	SSL_CTX_sess_set_new_cb(ctx, tlsctx_new_session);
}

int
tlsctx_client_resume(SSL *ssl, const char *policy)
{
	unsigned char md[SHA256_DIGEST_LENGTH];
	char *key = malloc(65);
	size_t i;

	if (key == NULL || tlsctx_key_idx < 0)
		goto fail;
	SHA256((const unsigned char *)policy, strlen(policy), md);
	for (i = 0; i < sizeof(md); i++)
		snprintf(key + i * 2, 3, "%02x", md[i]);
	if (SSL_set_ex_data(ssl, tlsctx_key_idx, key) != 1)
		goto fail;
	i = tlsctx_slot(key);
	if (tlsctx_cache[i].sess != NULL && strcmp(tlsctx_cache[i].key, key) == 0)
		SSL_set_session(ssl, tlsctx_cache[i].sess);
	return 0;
fail:
	free(key);
	return -1;
}

void
tlsctx_client_cache_flush(void)
{
	size_t i;

	for (i = 0; i < TLSCTX_CACHE_SLOTS; i++) {
		if (tlsctx_cache[i].sess != NULL)
			SSL_SESSION_free(tlsctx_cache[i].sess);
		tlsctx_cache[i].sess = NULL;
	}
}

/* RFC 8460 §4.3.2: certificate failures, from X509_V_ERR_* (x509_vfy.h). */
const char *
tlsctx_result_type(long v)
{
	switch (v) {
	case X509_V_ERR_HOSTNAME_MISMATCH:
	case X509_V_ERR_IP_ADDRESS_MISMATCH:
		return "certificate-host-mismatch";
	case X509_V_ERR_CERT_HAS_EXPIRED:
	case X509_V_ERR_CERT_NOT_YET_VALID:
		return "certificate-expired";
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
	case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
	case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
	case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
	case X509_V_ERR_CERT_UNTRUSTED:
	case X509_V_ERR_INVALID_CA:
		return "certificate-not-trusted";
	default:
		return "validation-failure";
	}
}

void
tlsctx_peer_sha256(SSL *ssl, char *hex, size_t len)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0, i;
	X509 *peer = SSL_get1_peer_certificate(ssl);

	hex[0] = '\0';
	if (peer == NULL)
		return;
	if (X509_digest(peer, EVP_sha256(), md, &mdlen) == 1 && len > mdlen * 2)
		for (i = 0; i < mdlen; i++)
			snprintf(hex + i * 2, 3, "%02x", md[i]);
	X509_free(peer);
}
