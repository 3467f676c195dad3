/*
 * tlsctx.h - TLS contexts for both legs, and what OpenSSL's verdicts mean in
 * TLS-RPT terms.
 *
 * certs/ matches nothing by hand: chains, host names and DANE are checked by
 * OpenSSL (SSL_set1_host, SSL_dane_*); this module builds the contexts and
 * maps OpenSSL's verify results to RFC 8460 result types.
 */
#ifndef CERTS_TLSCTX_H
#define CERTS_TLSCTX_H

#include <stddef.h>

#include <openssl/ssl.h>

/*
 * tlsctx_server_new - context for STARTTLS on a listener: certificate chain
 * and key (checked to match), TLS >= min_version, forward-secret AEAD
 * ciphers, no renegotiation.  NULL with err filled on failure.
 */
SSL_CTX *tlsctx_server_new(const char *cert, const char *key, int min_version,
    char *err, size_t errlen);

/* tlsctx_server_add_cert - add a chain + key of another key type; 0 or -1 + err. */
int tlsctx_server_add_cert(SSL_CTX *ctx, const char *cert, const char *key, char *err,
    size_t errlen);

/*
 * tlsctx_server_ask_client_cert - ask clients for a certificate (never
 * require one), with ca_file as the trust anchors and the CA names sent.
 * 0, or -1 with err filled.
 */
int tlsctx_server_ask_client_cert(SSL_CTX *ctx, const char *ca_file, char *err, size_t errlen);

/* tlsctx_peer_names - one-line subject and issuer of the peer certificate, or "". */
void tlsctx_peer_names(SSL *ssl, char *subject, char *issuer, size_t len);

/*
 * tlsctx_client_new - context for outbound STARTTLS: TLS 1.2+, trust anchors
 * from ca_file (NULL: OpenSSL defaults), DANE enabled.  Verification never
 * aborts the handshake (SSL_VERIFY_NONE): the caller reads
 * SSL_get_verify_result() and decides by policy level.  NULL + err on failure.
 */
SSL_CTX *tlsctx_client_new(const char *ca_file, char *err, size_t errlen);

/*
 * tlsctx_client_resume - before the handshake: offer the session cached for
 * this exact policy (a string naming address, names, level, TLSA records),
 * and have the new session stored under it.  0, or -1 without resumption.
 */
int tlsctx_client_resume(SSL *ssl, const char *policy);
/* tlsctx_client_cache_flush - free the cached sessions (at exit). */
void tlsctx_client_cache_flush(void);

/*
 * tlsctx_result_type - RFC 8460 §4.3 result type for a failed verification:
 * certificate-host-mismatch, certificate-expired, certificate-not-trusted,
 * or validation-failure.
 */
const char *tlsctx_result_type(long verify_result);

/* tlsctx_errors - drain OpenSSL's error queue into buf ("" when empty). */
void tlsctx_errors(char *buf, size_t len);

/* tlsctx_peer_sha256 - hex SHA-256 of the peer certificate (DER) or "". */
void tlsctx_peer_sha256(SSL *ssl, char *hex, size_t len);

#endif
