/*
 * level.h - outbound TLS security levels, ordered (Postfix TLS_LEV_*).
 *
 * Levels are ordered values: merging two policies takes the maximum, so no
 * code path can weaken a requirement by accident.  Meanings follow Postfix's
 * smtp_tls_security_level (TLS_README):
 *   none       no TLS
 *   may        opportunistic: TLS when offered, a failed handshake retries in clear
 *   encrypt    TLS 1.2+ mandatory, no authentication
 *   dane       DANE when usable TLSA records are published, otherwise may
 *   dane-only  DANE mandatory
 *   verify     PKIX chain + the MX host name
 *   secure     PKIX chain + a name matching the next-hop domain (MX names not trusted)
 */
#ifndef POLICY_LEVEL_H
#define POLICY_LEVEL_H

enum tls_level {
	TLS_NONE,
	TLS_MAY,
	TLS_ENCRYPT,
	TLS_DANE,
	TLS_DANE_ONLY,
	TLS_VERIFY,
	TLS_SECURE,
	TLS_LEVEL_INVALID = -1
};

/* tls_level_parse - name to level, TLS_LEVEL_INVALID when unknown. */
enum tls_level tls_level_parse(const char *name);
const char *tls_level_name(enum tls_level level);

/* TLS required at all (no plaintext fallback). */
static inline int tls_must_encrypt(enum tls_level l) { return l >= TLS_ENCRYPT && l != TLS_DANE; }
/* PKIX chain and name verification required. */
static inline int tls_must_verify(enum tls_level l) { return l >= TLS_VERIFY; }

/*
 * tls_level_static - the level for a destination before DANE and MTA-STS:
 * the [domain:] level when there is one (it may be weaker than the default:
 * that is what a per-domain exception is for), else the default; a
 * whitelisted domain gets at least "verify" (a validated certificate; DANE
 * where published counts as validated too).  *source names the winner:
 * "default", "domain" or "whitelist".
 */
enum tls_level tls_level_static(enum tls_level def, enum tls_level domain_level,
    int whitelisted, const char **source);

#endif
