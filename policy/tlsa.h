/*
 * tlsa.h - TLSA record usability for SMTP DANE (RFC 7672 §2.2, RFC 7671,
 * RFC 6698 §2; ANCHORS DANE-05/06/09).
 *
 * The resolver hands each DNSSEC-secure TLSA record here before giving it to
 * OpenSSL (SSL_dane_tlsa_add, which also checks Full(0) DER).  Records that
 * are not usable are dropped with the reason logged; when none is usable the
 * caller falls back to mandatory unauthenticated TLS (DANE-06, "tlsa-invalid").
 * Pure functions, no allocation.
 */
#ifndef POLICY_TLSA_H
#define POLICY_TLSA_H

#include <stddef.h>

enum tlsa_usage    { TLSA_PKIX_TA = 0, TLSA_PKIX_EE = 1, TLSA_DANE_TA = 2, TLSA_DANE_EE = 3 };
enum tlsa_selector { TLSA_SEL_CERT = 0, TLSA_SEL_SPKI = 1 };
enum tlsa_mtype    { TLSA_MT_FULL = 0, TLSA_MT_SHA256 = 1, TLSA_MT_SHA512 = 2 };

#define TLSA_SHA256_LEN 32
#define TLSA_SHA512_LEN 64

enum tlsa_usable {
	TLSA_USABLE = 0,
	TLSA_UNUSABLE_PKIX,       /* usage PKIX-TA(0) / PKIX-EE(1): RFC 7672 §3.1.3 */
	TLSA_UNUSABLE_USAGE,      /* usage not 0..3 */
	TLSA_UNUSABLE_SELECTOR,   /* selector not Cert(0) / SPKI(1) */
	TLSA_UNUSABLE_MTYPE,      /* matching type not Full(0) / SHA2-256(1) / SHA2-512(2) */
	TLSA_UNUSABLE_EMPTY,      /* no certificate association data */
	TLSA_UNUSABLE_LENGTH      /* digest length differs from the matching type's */
};

/*
 * tlsa_classify - whether one record (fields as in the RDATA, data[0..len))
 * is usable for SMTP.  Checks in this order: usage, selector, mtype, empty
 * data, digest length.  Returns TLSA_USABLE or the first reason.
 */
enum tlsa_usable tlsa_classify(int usage, int selector, int mtype,
    const unsigned char *data, size_t len);

/* tlsa_reason - a short static text for a classification, e.g. for logs. */
const char *tlsa_reason(enum tlsa_usable u);

/*
 * tlsa_present - the presentation form "3 1 1 ab12..." (RFC 6698 §2.2;
 * lower-case hex, no spaces inside the data; "3 1 1" alone for empty data)
 * into out[0..outlen).  Returns the length written (without the NUL), or -1
 * when a field is outside 0..255 or out is too small (out is then "" if
 * outlen > 0).
 */
int tlsa_present(const unsigned char *data, size_t len, int usage, int selector,
    int mtype, char *out, size_t outlen);

#endif
