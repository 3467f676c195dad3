/*
 * whitelist.c - the assessed-domains list.  See whitelist.h.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "policy/whitelist.h"

struct wl_entry {
	char *name;                 /* lower case, no leading or trailing dot */
	int subdomains;
};

struct whitelist {
	struct wl_entry *e;
	size_t n;
};

struct whitelist *
whitelist_new(void)
{
	return calloc(1, sizeof(struct whitelist));
}

static void
wl_clear(struct wl_entry *e, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		free(e[i].name);
	free(e);
}

void
whitelist_free(struct whitelist **wlp)
{
	if (*wlp == NULL)
		return;
	wl_clear((*wlp)->e, (*wlp)->n);
	free(*wlp);
	*wlp = NULL;
}

/* A domain: letters, digits, hyphens, dots; 1..253 octets. */
static int
wl_valid(const char *d)
{
	size_t len = strlen(d), i;

	if (len == 0 || len > 253 || d[0] == '.' || d[len - 1] == '.' || strstr(d, ".."))
		return 0;
	for (i = 0; i < len; i++)
		if (!isalnum((unsigned char)d[i]) && d[i] != '-' && d[i] != '.')
			return 0;
	return 1;
}

/* Parse one line into e; 1 entry, 0 nothing, -1 error. */
static int
wl_parse_line(char *line, struct wl_entry *e)
{
	char *p = line, *end;
	size_t i;

	if ((end = strchr(p, '#')) != NULL)
		*end = '\0';
	while (isspace((unsigned char)*p))
		p++;
	end = p + strlen(p);
	while (end > p && isspace((unsigned char)end[-1]))
		*--end = '\0';
	if (*p == '\0')
		return 0;
	e->subdomains = *p == '.';
	if (e->subdomains)
		p++;
	if (end > p && end[-1] == '.')
		*--end = '\0';
	for (i = 0; p[i] != '\0'; i++)
		p[i] = (char)tolower((unsigned char)p[i]);
	if (!wl_valid(p))
		return -1;
	e->name = strdup(p);
	return e->name ? 1 : -1;
}

int
whitelist_load(struct whitelist *wl, const char *path, char *err, size_t errlen)
{
	FILE *fp = fopen(path, "r");
	char line[1024];
	struct wl_entry *e = NULL, *ne;
	size_t n = 0, cap = 0;
	int lineno = 0, rc;

	if (fp == NULL) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	while (fgets(line, sizeof(line), fp) != NULL) {
		lineno++;
		if (n == cap) {
			cap = cap ? cap * 2 : 64;
			if ((ne = realloc(e, cap * sizeof(*e))) == NULL)
				goto fail;
			e = ne;
		}
		rc = wl_parse_line(line, &e[n]);
		if (rc < 0) {
			snprintf(err, errlen, "%s:%d: not a domain name", path, lineno);
			goto out;
		}
		n += (size_t)rc;
	}
	fclose(fp);
	wl_clear(wl->e, wl->n);
	wl->e = e;
	wl->n = n;
	return 0;
fail:
	snprintf(err, errlen, "%s: out of memory", path);
out:
	fclose(fp);
	wl_clear(e, n);
	return -1;
}

int
whitelist_match(const struct whitelist *wl, const char *domain)
{
	size_t i, dl = strlen(domain), nl;

	if (wl == NULL)
		return 0;
	if (dl > 0 && domain[dl - 1] == '.')
		dl--;
	for (i = 0; i < wl->n; i++) {
		nl = strlen(wl->e[i].name);
		if (dl == nl && strncasecmp(domain, wl->e[i].name, nl) == 0)
			return 1;
		if (wl->e[i].subdomains && dl > nl + 1 && domain[dl - nl - 1] == '.' &&
		    strncasecmp(domain + dl - nl, wl->e[i].name, nl) == 0)
			return 1;
	}
	return 0;
}

size_t
whitelist_count(const struct whitelist *wl)
{
	return wl ? wl->n : 0;
}
