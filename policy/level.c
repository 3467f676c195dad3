/*
 * level.c - the one name <-> level table for outbound TLS security levels.
 */
#include <strings.h>

#include "policy/level.h"

static const char *const tls_level_names[] = {
	[TLS_NONE] = "none",
	[TLS_MAY] = "may",
	[TLS_ENCRYPT] = "encrypt",
	[TLS_DANE] = "dane",
	[TLS_DANE_ONLY] = "dane-only",
	[TLS_VERIFY] = "verify",
	[TLS_SECURE] = "secure",
};

enum tls_level
tls_level_parse(const char *name)
{
	int i;

	for (i = TLS_NONE; i <= TLS_SECURE; i++)
		if (strcasecmp(name, tls_level_names[i]) == 0)
			return (enum tls_level)i;
	return TLS_LEVEL_INVALID;
}

const char *
tls_level_name(enum tls_level level)
{
	if (level < TLS_NONE || level > TLS_SECURE)
		return "invalid";
	return tls_level_names[level];
}

enum tls_level
tls_level_static(enum tls_level def, enum tls_level domain_level, int whitelisted,
    const char **source)
{
	enum tls_level l = def;

	*source = "default";
	if (domain_level != TLS_LEVEL_INVALID) {
		l = domain_level;
		*source = "domain";
	}
	if (whitelisted && l < TLS_VERIFY) {
		l = TLS_VERIFY;
		*source = "whitelist";
	}
	return l;
}
