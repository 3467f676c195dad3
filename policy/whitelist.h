/*
 * whitelist.h - the domains that passed the secure-email assessment.
 *
 * File format: one domain per line; '#' starts a comment; blank lines are
 * ignored; a leading "." (".example.org") also covers every subdomain.
 * Outbound, TLS with a validated certificate is mandatory to these domains;
 * inbound (require_tls = whitelist), senders from them must use STARTTLS.
 *
 * whitelist_load() parses the whole file first and only then replaces the
 * list, so a broken file on reload keeps the old list.
 */
#ifndef POLICY_WHITELIST_H
#define POLICY_WHITELIST_H

#include <stddef.h>

struct whitelist;

struct whitelist *whitelist_new(void);
void whitelist_free(struct whitelist **wl);
/* whitelist_load - (re)read path; 0, or -1 with "path:line: why" in err. */
int whitelist_load(struct whitelist *wl, const char *path, char *err, size_t errlen);
/* whitelist_match - 1 when domain (any case, trailing dot ignored) is listed. */
int whitelist_match(const struct whitelist *wl, const char *domain);
size_t whitelist_count(const struct whitelist *wl);

#endif
