/*
 * tlsa.c - TLSA record usability classification and presentation form.
 *
 * Owns the rules that make a TLSA record usable for SMTP before OpenSSL sees
 * it: RFC 7672 §3.1.3 drops the PKIX usages, RFC 6698 §2.1 fixes the field
 * values and RFC 6234 the digest lengths.  What a usable record matches is
 * OpenSSL's business (SSL_dane_tlsa_add, which also rejects bad Full(0) DER).
 */
#include "policy/tlsa.h"

#include <limits.h>
#include <stdio.h>

/*
 * RFC 7672 §3.1.3: "TLSA records published for SMTP servers ... with
 * certificate usages PKIX-TA(0) or PKIX-EE(1) SHOULD NOT be used" and SMTP
 * clients treat them as unusable (DANE-05).
 */
static enum tlsa_usable
tlsa_check_usage(int usage)
{
	if (usage == TLSA_PKIX_TA || usage == TLSA_PKIX_EE)
		return TLSA_UNUSABLE_PKIX;
	if (usage != TLSA_DANE_TA && usage != TLSA_DANE_EE)
		return TLSA_UNUSABLE_USAGE;
	return TLSA_USABLE;
}

/*
 * RFC 6698 §2.1.3 / §2.1.2: matching type 0 carries the whole selected
 * content; types 1 and 2 carry a SHA2-256 / SHA2-512 digest of it.
 */
static enum tlsa_usable
tlsa_check_data(int mtype, size_t len)
{
	if (len == 0)
		return TLSA_UNUSABLE_EMPTY;
	if (mtype == TLSA_MT_SHA256 && len != TLSA_SHA256_LEN)
		return TLSA_UNUSABLE_LENGTH;
	if (mtype == TLSA_MT_SHA512 && len != TLSA_SHA512_LEN)
		return TLSA_UNUSABLE_LENGTH;
	return TLSA_USABLE;
}

enum tlsa_usable
tlsa_classify(int usage, int selector, int mtype, const unsigned char *data,
    size_t len)
{
	enum tlsa_usable u = tlsa_check_usage(usage);

	(void)data;
	if (u != TLSA_USABLE)
		return u;
	if (selector != TLSA_SEL_CERT && selector != TLSA_SEL_SPKI)
		return TLSA_UNUSABLE_SELECTOR;
	if (mtype != TLSA_MT_FULL && mtype != TLSA_MT_SHA256 && mtype != TLSA_MT_SHA512)
		return TLSA_UNUSABLE_MTYPE;
	return tlsa_check_data(mtype, len);
}

const char *
tlsa_reason(enum tlsa_usable u)
{
	switch (u) {
	case TLSA_USABLE:
		return "usable";
	case TLSA_UNUSABLE_PKIX:
		return "PKIX usage not used for SMTP";
	case TLSA_UNUSABLE_USAGE:
		return "unknown certificate usage";
	case TLSA_UNUSABLE_SELECTOR:
		return "unknown selector";
	case TLSA_UNUSABLE_MTYPE:
		return "unknown matching type";
	case TLSA_UNUSABLE_EMPTY:
		return "empty association data";
	case TLSA_UNUSABLE_LENGTH:
		return "digest length does not match the matching type";
	}
	return "unknown";
}

static int
tlsa_field_ok(int v)
{
	return v >= 0 && v <= 255;
}

int
tlsa_present(const unsigned char *data, size_t len, int usage, int selector,
    int mtype, char *out, size_t outlen)
{
	static const char hex[] = "0123456789abcdef";
	int n;

	if (outlen > 0)
		out[0] = '\0';
	if (outlen > INT_MAX)
		outlen = INT_MAX;   /* the length is returned as an int */
	if (!tlsa_field_ok(usage) || !tlsa_field_ok(selector) || !tlsa_field_ok(mtype))
		return -1;
	n = snprintf(out, outlen, len > 0 ? "%d %d %d " : "%d %d %d", usage, selector, mtype);
	if (n < 0 || (size_t)n >= outlen || len > (outlen - (size_t)n - 1) / 2) {
		if (outlen > 0)
			out[0] = '\0';
		return -1;
	}
	for (size_t i = 0; i < len; i++) {
		out[n++] = hex[data[i] >> 4];
		out[n++] = hex[data[i] & 0xf];
	}
	out[n] = '\0';
	return n;
}
