/*
 * config.c - relay.ini parsing: one table of rows, one inih handler.
 *
 * Each row names a section ("relay", "outbound", "dns", "whitelist", or the
 * prefixes "listener:" and "domain:"), a key, a value type, the offset of
 * the field and, for numbers, the accepted range.  Errors are printed as
 * "file:line: message" and parsing goes on so that every error is reported
 * at once; config_load() then returns NULL.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <ini.h>
#include <openssl/ssl.h>

#include "relay/config.h"
#include "relay/evlog.h"
#include "relay/log.h"

enum cfg_type {
	CFG_STR, CFG_INT, CFG_TIME, CFG_SIZE, CFG_BOOL, CFG_LEVEL, CFG_MODE,
	CFG_REQTLS, CFG_PROXY, CFG_LISTEN, CFG_CIDRS, CFG_DOMAINS, CFG_HOSTPORT,
	CFG_TLSVER, CFG_WORKERS, CFG_NEXTHOP_TLS, CFG_STSFAIL,
	CFG_SYSLOG, CFG_LOGADDR, CFG_ADDRPORT   /* strings, checked before they are kept */
};

enum cfg_scope { SCOPE_GLOBAL, SCOPE_LISTENER, SCOPE_DOMAIN };

struct cfg_row {
	enum cfg_scope scope;
	const char *section;        /* for SCOPE_GLOBAL */
	const char *key;
	enum cfg_type type;
	size_t offset;
	long long min, max;
};

#define G(sec, key, type, field, min, max) \
	{ SCOPE_GLOBAL, sec, key, type, offsetof(struct relay_config, field), min, max }
#define L(key, type, field, min, max) \
	{ SCOPE_LISTENER, NULL, key, type, offsetof(struct listener_config, field), min, max }
#define D(key, type, field) \
	{ SCOPE_DOMAIN, NULL, key, type, offsetof(struct domain_config, field), 0, 0 }

static const struct cfg_row cfg_rows[] = {
	G("relay", "hostname", CFG_STR, hostname, 0, 0),
	G("relay", "user", CFG_STR, user, 0, 0),
	G("relay", "workers", CFG_WORKERS, workers, 0, 256),
	G("relay", "state_dir", CFG_STR, state_dir, 0, 0),
	G("relay", "log_file", CFG_STR, log_file, 0, 0),
	G("relay", "syslog", CFG_SYSLOG, syslog, 0, 0),
	G("relay", "log_addresses", CFG_LOGADDR, log_addresses, 0, 0),
	G("relay", "metrics_listen", CFG_ADDRPORT, metrics_listen, 0, 0),
	G("relay", "max_message_size", CFG_SIZE, max_message_size, 1024, 1LL << 40),
	G("relay", "pidfile", CFG_STR, pidfile, 0, 0),
	G("relay", "shutdown_timeout", CFG_TIME, shutdown_timeout, 0, 3600),
	G("relay", "command_timeout", CFG_TIME, command_timeout, 1, 3600),
	G("relay", "data_timeout", CFG_TIME, data_timeout, 1, 3600),
	G("outbound", "default_level", CFG_LEVEL, default_level, 0, 0),
	G("outbound", "dane", CFG_BOOL, dane, 0, 1),
	G("outbound", "mta_sts", CFG_BOOL, mta_sts, 0, 1),
	G("outbound", "mta_sts_timeout", CFG_TIME, mta_sts_timeout, 1, 600),
	G("outbound", "mta_sts_dns_failure", CFG_STSFAIL, mta_sts_dns_failure, 0, 0),
	G("outbound", "mta_sts_port", CFG_INT, mta_sts_port, 1, 65535),
	G("outbound", "port", CFG_INT, port, 1, 65535),
	G("outbound", "ca_file", CFG_STR, ca_file, 0, 0),
	G("outbound", "helo_name", CFG_STR, helo_name, 0, 0),
	G("outbound", "connect_timeout", CFG_TIME, connect_timeout, 1, 3600),
	G("outbound", "command_timeout", CFG_TIME, out_command_timeout, 1, 3600),
	G("outbound", "data_timeout", CFG_TIME, out_data_timeout, 1, 3600),
	G("outbound", "final_timeout", CFG_TIME, out_final_timeout, 1, 3600),
	G("dns", "unbound_conf", CFG_STR, unbound_conf, 0, 0),
	G("dns", "trust_anchor_file", CFG_STR, trust_anchor_file, 0, 0),
	G("dns", "resolver", CFG_STR, resolver, 0, 0),
	G("whitelist", "file", CFG_STR, whitelist_file, 0, 0),
	L("mode", CFG_MODE, mode, 0, 0),
	L("listen", CFG_LISTEN, naddrs, 0, 0),
	L("tls_cert", CFG_STR, tls_cert, 0, 0),
	L("tls_key", CFG_STR, tls_key, 0, 0),
	L("tls_ecdsa_cert", CFG_STR, tls_ecdsa_cert, 0, 0),
	L("tls_ecdsa_key", CFG_STR, tls_ecdsa_key, 0, 0),
	L("tls_min_version", CFG_TLSVER, tls_min_version, 0, 0),
	L("require_tls", CFG_REQTLS, require_tls, 0, 0),
	L("relay_networks", CFG_CIDRS, nnetworks, 0, 0),
	L("local_domains", CFG_DOMAINS, ndomains, 0, 0),
	L("local_subdomains", CFG_BOOL, local_subdomains, 0, 1),
	L("next_hop", CFG_HOSTPORT, next_hop_host, 0, 0),
	L("next_hop_tls", CFG_NEXTHOP_TLS, next_hop_tls, 0, 0),
	L("next_hop_tls_name", CFG_STR, next_hop_tls_name, 0, 0),
	L("proxy_protocol", CFG_PROXY, proxy_protocol, 0, 0),
	L("max_connections", CFG_INT, max_connections, 1, 1000000),
	L("max_connections_per_ip", CFG_INT, max_connections_per_ip, 1, 1000000),
	L("max_recipients", CFG_INT, max_recipients, 1, 100000),
	L("max_command_line", CFG_INT, max_command_line, 512, 65536),
	L("max_line_length", CFG_INT, max_line_length, 1000, 1 << 20),
	L("banner", CFG_STR, banner, 0, 0),
	L("trace_headers", CFG_BOOL, trace_headers, 0, 1),
	L("tls_ask_client_cert", CFG_BOOL, tls_ask_client_cert, 0, 1),
	L("tls_client_ca", CFG_STR, tls_client_ca, 0, 0),
	D("level", CFG_LEVEL, level),
	D("mta_sts_dns_failure", CFG_STSFAIL, sts_dns_failure),
};

/* Parser state: inih calls our reader once per line, so we know the line. */
struct cfg_parse {
	struct relay_config *cfg;
	FILE *fp;
	int line;
	int errors;
	int section_line;           /* line of the last [section] header */
	char section[128];
	void *current;              /* listener_config or domain_config being filled */
};

static void PRINTF_LIKE(3, 4) cfg_check_error(struct cfg_parse *p, int line,
    const char *fmt, ...);

static void PRINTF_LIKE(2, 3)
cfg_error(struct cfg_parse *p, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s:%d: ", p->cfg->path, p->line);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	p->errors++;
}

/* Reader for ini_parse_stream: one physical line per call, over-long refused. */
static char *
cfg_reader(char *str, int num, void *stream)
{
	struct cfg_parse *p = stream;
	size_t len;
	int c;

	if (fgets(str, num, p->fp) == NULL)
		return NULL;
	p->line++;
	if (str[strspn(str, " \t")] == '[')
		p->section_line = p->line;
	len = strlen(str);
	if (len > 0 && str[len - 1] != '\n' && !feof(p->fp)) {
		cfg_error(p, "line too long (at most %d characters)", num - 2);
		while ((c = fgetc(p->fp)) != EOF && c != '\n')
			;
		str[0] = '\0';
	}
	return str;
}

/* Numbers: decimal digits with an optional unit suffix from units[]. */
struct cfg_unit {
	const char *suffix;
	long long mult;
};

static const struct cfg_unit cfg_time_units[] = {
	{ "", 1 }, { "s", 1 }, { "m", 60 }, { "h", 3600 }, { "d", 86400 }, { NULL, 0 }
};
static const struct cfg_unit cfg_size_units[] = {
	{ "", 1 }, { "k", 1024 }, { "K", 1024 }, { "M", 1024 * 1024 },
	{ "G", 1024LL * 1024 * 1024 }, { NULL, 0 }
};
static const struct cfg_unit cfg_plain_units[] = { { "", 1 }, { NULL, 0 } };

static int
cfg_number(const char *v, const struct cfg_unit *units, long long *out)
{
	char *end;
	long long n;
	int i;

	if (!isdigit((unsigned char)v[0]))
		return -1;
	errno = 0;
	n = strtoll(v, &end, 10);
	if (errno != 0)
		return -1;
	for (i = 0; units[i].suffix != NULL; i++) {
		if (strcmp(end, units[i].suffix) != 0)
			continue;
		if (n > LLONG_MAX / units[i].mult)
			return -1;
		*out = n * units[i].mult;
		return 0;
	}
	return -1;
}

static int
cfg_keyword(const char *v, const char *const *names, int n)
{
	int i;

	for (i = 0; i < n; i++)
		if (strcasecmp(v, names[i]) == 0)
			return i;
	return -1;
}

/* Split a comma/space separated list in place; returns the count (<= max). */
static int
cfg_split(char *s, char **items, int max)
{
	int n = 0;
	char *tok, *save = NULL;

	for (tok = strtok_r(s, ", \t", &save); tok != NULL; tok = strtok_r(NULL, ", \t", &save)) {
		if (n == max)
			return -1;
		items[n++] = tok;
	}
	return n;
}

/* A domain as stored: lower case, without trailing dot. */
static char *
cfg_domain_dup(const char *s)
{
	char *d = xstrdup(s);
	size_t i, len = strlen(d);

	for (i = 0; i < len; i++)
		d[i] = (char)tolower((unsigned char)d[i]);
	if (len > 1 && d[len - 1] == '.')
		d[len - 1] = '\0';
	return d;
}

int
cidr_parse(const char *s, struct cidr *c)
{
	char buf[INET6_ADDRSTRLEN + 8], *slash, *end;
	long bits;
	int maxbits;

	if (strlen(s) >= sizeof(buf))
		return -1;
	strcpy(buf, s);
	slash = strchr(buf, '/');
	if (slash != NULL)
		*slash++ = '\0';
	memset(c, 0, sizeof(*c));
	if (inet_pton(AF_INET, buf, c->addr) == 1) {
		c->family = AF_INET;
		maxbits = 32;
	} else if (inet_pton(AF_INET6, buf, c->addr) == 1) {
		c->family = AF_INET6;
		maxbits = 128;
	} else
		return -1;
	c->bits = maxbits;
	if (slash == NULL)
		return 0;
	if (!isdigit((unsigned char)*slash))
		return -1;
	bits = strtol(slash, &end, 10);
	if (*end != '\0' || bits < 0 || bits > maxbits)
		return -1;
	c->bits = (int)bits;
	return 0;
}

int
cidr_match(const struct cidr *c, const struct sockaddr *sa)
{
	const unsigned char *a;
	int full, rest;

	if (sa->sa_family == AF_INET && c->family == AF_INET)
		a = (const unsigned char *)&((const struct sockaddr_in *)sa)->sin_addr;
	else if (sa->sa_family == AF_INET6 && c->family == AF_INET6)
		a = (const unsigned char *)&((const struct sockaddr_in6 *)sa)->sin6_addr;
	else
		return 0;
	full = c->bits / 8;
	rest = c->bits % 8;
	if (memcmp(a, c->addr, (size_t)full) != 0)
		return 0;
	if (rest == 0)
		return 1;
	return ((a[full] ^ c->addr[full]) & (0xff << (8 - rest))) == 0;
}

int
hostport_parse(const char *s, char **host, int *port)
{
	const char *colon, *hstart, *hend;
	char *end;
	long p;

	if (s[0] == '[') {
		hstart = s + 1;
		hend = strchr(s, ']');
		if (hend == NULL || hend[1] != ':')
			return -1;
		colon = hend + 1;
	} else {
		hstart = s;
		colon = strrchr(s, ':');
		if (colon == NULL || strchr(s, ':') != colon)
			return -1;
		hend = colon;
	}
	if (hend == hstart || !isdigit((unsigned char)colon[1]))
		return -1;
	p = strtol(colon + 1, &end, 10);
	if (*end != '\0' || p < 1 || p > 65535)
		return -1;
	*host = strndup(hstart, (size_t)(hend - hstart));
	if (*host == NULL)
		die("out of memory");
	*port = (int)p;
	return 0;
}

int
addr_parse(const char *s, struct sockaddr_storage *ss, socklen_t *len)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
	char *host;
	int port, rc = 0;

	if (hostport_parse(s, &host, &port) < 0)
		return -1;
	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)port);
		*len = sizeof(*sin);
	} else if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)port);
		*len = sizeof(*sin6);
	} else
		rc = -1;
	free(host);
	return rc;
}

static const char *const cfg_mode_names[] = { "gateway", "smarthost" };
static const char *const cfg_reqtls_names[] = { "no", "whitelist", "yes" };
static const char *const cfg_proxy_names[] = { "no", "v1", "v2" };
static const char *const cfg_bool_names[] = { "no", "yes" };
static const char *const cfg_bool_alt_names[] = { "false", "true" };
static const char *const cfg_stsfail_names[] = { "defer", "deliver" };

/* One list item at index i; -1 (after a file:line error) when it is bad. */
static int
cfg_list_item(struct cfg_parse *p, struct listener_config *l, enum cfg_type type,
    size_t i, const char *item)
{
	if (type == CFG_LISTEN) {
		if (i >= CONFIG_MAX_ADDRS || addr_parse(item, &l->addrs[i], &l->addrlens[i]) < 0) {
			cfg_error(p, "bad listen address \"%s\" (want 127.0.0.1:2525 or [::1]:2525, "
			    "at most %d)", item, CONFIG_MAX_ADDRS);
			return -1;
		}
		l->naddrs = i + 1;
	} else if (type == CFG_CIDRS) {
		if (cidr_parse(item, &l->networks[i]) < 0) {
			cfg_error(p, "bad network \"%s\" (want 10.0.0.0/8 or ::1/128)", item);
			return -1;
		}
		l->nnetworks = i + 1;
	} else {
		l->domains[i] = cfg_domain_dup(item);
		l->ndomains = i + 1;
	}
	return 0;
}

/*
 * A list value.  The first occurrence in a section replaces the default;
 * a repeated key or an indented continuation line (inih passes it with the
 * same key) adds to it, so long lists can span lines.
 */
static int
cfg_set_list(struct cfg_parse *p, struct listener_config *l, enum cfg_type type,
    const char *value)
{
	char *copy = xstrdup(value), *items[CONFIG_MAX_LIST];
	int n = cfg_split(copy, items, CONFIG_MAX_LIST), rc = 0, bit = 1 << (type - CFG_LISTEN);
	size_t *count = type == CFG_LISTEN ? &l->naddrs : type == CFG_CIDRS ? &l->nnetworks :
	    &l->ndomains;
	int i;

	if (!(l->lists_set & bit)) {
		l->lists_set |= bit;
		while (type == CFG_DOMAINS && l->ndomains > 0)
			free(l->domains[--l->ndomains]);
		*count = 0;
	}
	if (n < 0 || *count + (size_t)n > CONFIG_MAX_LIST) {
		cfg_error(p, "too many items (at most %d)", CONFIG_MAX_LIST);
		n = 0;
		rc = -1;
	}
	for (i = 0; i < n && rc == 0; i++)
		rc = cfg_list_item(p, l, type, *count, items[i]);
	free(copy);
	return rc;
}

static int
cfg_set_enum(struct cfg_parse *p, int *field, const char *value,
    const char *const *names, int n, const char *what, const char *want)
{
	int v = cfg_keyword(value, names, n);

	if (v < 0) {
		cfg_error(p, "bad %s \"%s\" (want %s)", what, value, want);
		return -1;
	}
	*field = v;
	return 0;
}

static int
cfg_set_number(struct cfg_parse *p, const struct cfg_row *r, void *field, const char *value)
{
	const struct cfg_unit *units = r->type == CFG_TIME ? cfg_time_units :
	    r->type == CFG_SIZE ? cfg_size_units : cfg_plain_units;
	long long n;

	if (r->type == CFG_WORKERS && strcasecmp(value, "auto") == 0) {
		*(int *)field = 0;
		return 0;
	}
	if (cfg_number(value, units, &n) < 0 || n < r->min || n > r->max) {
		cfg_error(p, "%s = \"%s\": want a number from %lld to %lld%s", r->key, value,
		    r->min, r->max, r->type == CFG_TIME ? " seconds (suffix s, m, h allowed)" :
		    r->type == CFG_SIZE ? " bytes (suffix k, M, G allowed)" : "");
		return -1;
	}
	if (r->type == CFG_SIZE)
		*(long long *)field = n;
	else
		*(int *)field = (int)n;
	return 0;
}

static int
cfg_set_level(struct cfg_parse *p, int *field, const char *value, int nexthop)
{
	enum tls_level l = tls_level_parse(value);

	if (l == TLS_LEVEL_INVALID || (nexthop && l != TLS_NONE && l != TLS_MAY &&
	    l != TLS_ENCRYPT && l != TLS_VERIFY)) {
		cfg_error(p, "bad TLS level \"%s\" (want %s)", value, nexthop ?
		    "none, may, encrypt or verify" :
		    "none, may, encrypt, dane, dane-only, verify or secure");
		return -1;
	}
	*field = (int)l;
	return 0;
}

static int
cfg_set_tlsver(struct cfg_parse *p, int *field, const char *value)
{
	if (strcmp(value, "1.2") == 0)
		*field = TLS1_2_VERSION;
	else if (strcmp(value, "1.3") == 0)
		*field = TLS1_3_VERSION;
	else {
		cfg_error(p, "bad TLS version \"%s\" (want 1.2 or 1.3)", value);
		return -1;
	}
	return 0;
}

static int
cfg_set_bool(struct cfg_parse *p, int *field, const char *value)
{
	int v = cfg_keyword(value, cfg_bool_names, 2);

	if (v < 0)
		v = cfg_keyword(value, cfg_bool_alt_names, 2);
	if (v < 0) {
		cfg_error(p, "bad boolean \"%s\" (want yes or no)", value);
		return -1;
	}
	*field = v;
	return 0;
}

/* [relay] syslog, log_addresses, metrics_listen: kept as text once valid. */
static int
cfg_set_checked_str(struct cfg_parse *p, enum cfg_type type, char **field, const char *value)
{
	struct sockaddr_storage ss;
	socklen_t len;
	int facility;

	if (type == CFG_SYSLOG && evlog_facility_parse(value, &facility) < 0) {
		cfg_error(p, "bad syslog \"%s\" (want off, daemon, mail, user or local0..local7)",
		    value);
		return -1;
	}
	if (type == CFG_LOGADDR && evlog_addr_mode_parse(value) < 0) {
		cfg_error(p, "bad log_addresses \"%s\" (want yes, hash or omit)", value);
		return -1;
	}
	if (type == CFG_ADDRPORT && addr_parse(value, &ss, &len) < 0) {
		cfg_error(p, "bad metrics_listen \"%s\" (want 127.0.0.1:9125 or [::1]:9125)", value);
		return -1;
	}
	free(*field);
	*field = xstrdup(value);
	return 0;
}

static int
cfg_set(struct cfg_parse *p, const struct cfg_row *r, void *base, const char *value)
{
	void *field = (char *)base + r->offset;
	struct listener_config *l = base;

	switch (r->type) {
	case CFG_STR:
		free(*(char **)field);
		*(char **)field = xstrdup(value);
		return 0;
	case CFG_INT: case CFG_TIME: case CFG_SIZE: case CFG_WORKERS:
		return cfg_set_number(p, r, field, value);
	case CFG_BOOL:
		return cfg_set_bool(p, field, value);
	case CFG_LEVEL: case CFG_NEXTHOP_TLS:
		return cfg_set_level(p, field, value, r->type == CFG_NEXTHOP_TLS);
	case CFG_MODE:
		return cfg_set_enum(p, field, value, cfg_mode_names, 2, "mode", "gateway or smarthost");
	case CFG_REQTLS:
		return cfg_set_enum(p, field, value, cfg_reqtls_names, 3, "require_tls", "no, whitelist or yes");
	case CFG_PROXY:
		return cfg_set_enum(p, field, value, cfg_proxy_names, 3, "proxy_protocol", "no, v1 or v2");
	case CFG_TLSVER:
		return cfg_set_tlsver(p, field, value);
	case CFG_SYSLOG: case CFG_LOGADDR: case CFG_ADDRPORT:
		return cfg_set_checked_str(p, r->type, field, value);
	case CFG_STSFAIL:
		return cfg_set_enum(p, field, value, cfg_stsfail_names, 2, "mta_sts_dns_failure",
		    "defer or deliver");
	case CFG_HOSTPORT:
		free(l->next_hop_host);
		l->next_hop_host = NULL;
		if (hostport_parse(value, &l->next_hop_host, &l->next_hop_port) == 0)
			return 0;
		cfg_error(p, "bad next_hop \"%s\" (want host:port or [v6addr]:port)", value);
		return -1;
	case CFG_LISTEN: case CFG_CIDRS: case CFG_DOMAINS:
		return cfg_set_list(p, l, r->type, value);
	}
	die_bug("cfg_set: bad type %d", r->type);
}

static void
cfg_listener_defaults(struct listener_config *l)
{
	l->mode = (enum listener_mode)-1;
	l->tls_min_version = TLS1_2_VERSION;
	l->require_tls = REQUIRE_TLS_NO;
	l->next_hop_tls = TLS_MAY;
	l->proxy_protocol = PROXY_NO;
	l->max_connections = 1000;
	l->max_connections_per_ip = 50;
	l->max_recipients = 1000;
	l->max_command_line = 1000;
	l->max_line_length = 1000;
	l->trace_headers = 1;
	l->nnetworks = 2;
	cidr_parse("127.0.0.0/8", &l->networks[0]);
	cidr_parse("::1/128", &l->networks[1]);
}

static void
cfg_defaults(struct relay_config *c)
{
	char host[256];

	if (gethostname(host, sizeof(host)) != 0)
		strcpy(host, "localhost");
	host[sizeof(host) - 1] = '\0';
	c->hostname = xstrdup(host);
	c->workers = 1;
	c->state_dir = xstrdup("/var/lib/tlsrelay");
	c->log_file = xstrdup("-");
	c->syslog = xstrdup("off");
	c->log_addresses = xstrdup("yes");
	c->max_message_size = 25LL * 1024 * 1024;
	c->shutdown_timeout = 30;
	c->command_timeout = 300;
	c->data_timeout = 180;
	c->default_level = TLS_MAY;
	c->dane = 1;
	c->mta_sts = 1;
	c->mta_sts_timeout = 60;
	c->mta_sts_dns_failure = STS_DNS_DEFER;
	c->mta_sts_port = 443;
	c->port = 25;
	c->ca_file = xstrdup("/etc/ssl/certs/ca-certificates.crt");
	c->connect_timeout = 30;
	c->out_command_timeout = 300;
	c->out_data_timeout = 180;
	c->out_final_timeout = 600;
}

/* Enter a new [section]: returns the struct rows of its scope are written to. */
static void *
cfg_section(struct cfg_parse *p, const char *section)
{
	struct listener_config *l, **lp;
	struct domain_config *d, **dp;

	if (strncmp(section, "listener:", 9) == 0 && section[9] != '\0') {
		for (lp = &p->cfg->listeners; *lp != NULL; lp = &(*lp)->next)
			if (strcmp((*lp)->name, section + 9) == 0)
				return *lp;
		l = *lp = xcalloc(1, sizeof(*l));
		l->name = xstrdup(section + 9);
		l->line = p->section_line;
		cfg_listener_defaults(l);
		return l;
	}
	if (strncmp(section, "domain:", 7) == 0 && section[7] != '\0') {
		for (dp = &p->cfg->domains; *dp != NULL; dp = &(*dp)->next)
			if (strcasecmp((*dp)->name, section + 7) == 0)
				return *dp;
		d = *dp = xcalloc(1, sizeof(*d));
		d->name = cfg_domain_dup(section + 7);
		d->line = p->section_line;
		d->level = TLS_LEVEL_INVALID;
		d->sts_dns_failure = STS_DNS_INHERIT;
		return d;
	}
	return p->cfg;
}

static enum cfg_scope
cfg_scope_of(const char *section)
{
	if (strncmp(section, "listener:", 9) == 0)
		return SCOPE_LISTENER;
	if (strncmp(section, "domain:", 7) == 0)
		return SCOPE_DOMAIN;
	return SCOPE_GLOBAL;
}

static const struct cfg_row *
cfg_find(const char *section, const char *key)
{
	enum cfg_scope scope = cfg_scope_of(section);
	size_t i;

	for (i = 0; i < sizeof(cfg_rows) / sizeof(cfg_rows[0]); i++) {
		const struct cfg_row *r = &cfg_rows[i];

		if (r->scope != scope || strcmp(r->key, key) != 0)
			continue;
		if (scope != SCOPE_GLOBAL || strcmp(r->section, section) == 0)
			return r;
	}
	return NULL;
}

static int
cfg_known_section(const char *section)
{
	static const char *const globals[] = { "relay", "outbound", "dns", "whitelist" };
	size_t i;

	if (cfg_scope_of(section) != SCOPE_GLOBAL)
		return strchr(section, ':')[1] != '\0';
	for (i = 0; i < sizeof(globals) / sizeof(globals[0]); i++)
		if (strcmp(section, globals[i]) == 0)
			return 1;
	return 0;
}

static int
cfg_handler(void *user, const char *section, const char *key, const char *value)
{
	struct cfg_parse *p = user;
	const struct cfg_row *r;

	if (!cfg_known_section(section)) {
		if (strcmp(section, p->section) != 0)
			cfg_check_error(p, p->section_line, "unknown section [%s]", section);
		snprintf(p->section, sizeof(p->section), "%s", section);
		return 1;
	}
	if (strcmp(section, p->section) != 0) {
		snprintf(p->section, sizeof(p->section), "%s", section);
		p->current = cfg_section(p, section);
	}
	r = cfg_find(section, key);
	if (r == NULL) {
		cfg_error(p, "unknown key \"%s\" in [%s]", key, section);
		return 1;
	}
	cfg_set(p, r, p->current, value);
	return 1;
}

static void
cfg_check_error(struct cfg_parse *p, int line, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s:%d: ", p->cfg->path, line);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	p->errors++;
}

static void
cfg_check_listener(struct cfg_parse *p, const struct listener_config *l)
{
	if ((int)l->mode < 0)
		cfg_check_error(p, l->line, "[listener:%s]: mode is required (gateway or smarthost)", l->name);
	if (l->naddrs == 0)
		cfg_check_error(p, l->line, "[listener:%s]: listen is required", l->name);
	if ((l->tls_cert == NULL) != (l->tls_key == NULL))
		cfg_check_error(p, l->line, "[listener:%s]: tls_cert and tls_key go together", l->name);
	if ((l->tls_ecdsa_cert == NULL) != (l->tls_ecdsa_key == NULL) ||
	    (l->tls_ecdsa_cert != NULL && l->tls_cert == NULL))
		cfg_check_error(p, l->line, "[listener:%s]: tls_ecdsa_cert and tls_ecdsa_key go "
		    "together, beside tls_cert and tls_key", l->name);
	if (l->require_tls != REQUIRE_TLS_NO && l->tls_cert == NULL)
		cfg_check_error(p, l->line, "[listener:%s]: require_tls needs tls_cert and tls_key", l->name);
	if (l->require_tls == REQUIRE_TLS_WHITELIST && p->cfg->whitelist_file == NULL)
		cfg_check_error(p, l->line, "[listener:%s]: require_tls = whitelist needs [whitelist] file", l->name);
	if (l->mode == MODE_GATEWAY && l->next_hop_host == NULL)
		cfg_check_error(p, l->line, "[listener:%s]: a gateway needs next_hop", l->name);
	if (l->mode == MODE_GATEWAY && l->ndomains == 0)
		cfg_check_error(p, l->line, "[listener:%s]: a gateway needs local_domains", l->name);
}

static void
cfg_check(struct cfg_parse *p)
{
	const struct listener_config *l;
	const struct domain_config *d;

	if (p->cfg->listeners == NULL)
		cfg_check_error(p, p->line, "no [listener:NAME] section: nothing to listen on");
	for (l = p->cfg->listeners; l != NULL; l = l->next)
		cfg_check_listener(p, l);
	for (d = p->cfg->domains; d != NULL; d = d->next)
		if (d->level == TLS_LEVEL_INVALID && d->sts_dns_failure == STS_DNS_INHERIT)
			cfg_check_error(p, d->line, "[domain:%s]: level is required", d->name);
	if (p->cfg->helo_name == NULL)
		p->cfg->helo_name = xstrdup(p->cfg->hostname);
}

struct relay_config *
config_load(const char *path)
{
	struct cfg_parse p;
	struct relay_config *cfg = xcalloc(1, sizeof(*cfg));
	int rc;

	memset(&p, 0, sizeof(p));
	p.cfg = cfg;
	cfg->path = xstrdup(path);
	cfg_defaults(cfg);
	p.fp = fopen(path, "r");
	if (p.fp == NULL) {
		fprintf(stderr, "%s: cannot open: %s\n", path, strerror(errno));
		config_free(&cfg);
		return NULL;
	}
	rc = ini_parse_stream(cfg_reader, &p, cfg_handler, &p);
	fclose(p.fp);
	if (rc > 0 && p.errors == 0)
		cfg_check_error(&p, rc, "syntax error (want key = value or [section])");
	if (rc > 0)
		p.errors++;
	cfg_check(&p);
	if (p.errors > 0) {
		config_free(&cfg);
		return NULL;
	}
	return cfg;
}

static void
cfg_free_listener(struct listener_config *l)
{
	size_t i;

	free(l->name);
	free(l->tls_cert);
	free(l->tls_key);
	free(l->tls_ecdsa_cert);
	free(l->tls_ecdsa_key);
	for (i = 0; i < l->ndomains; i++)
		free(l->domains[i]);
	free(l->next_hop_host);
	free(l->next_hop_tls_name);
	free(l->banner);
	free(l->tls_client_ca);
	free(l);
}

void
config_free(struct relay_config **cfgp)
{
	struct relay_config *c = *cfgp;
	struct listener_config *l;
	struct domain_config *d;
	size_t i;

	if (c == NULL)
		return;
	char **strs[] = { &c->path, &c->hostname, &c->user, &c->state_dir, &c->log_file,
	    &c->syslog, &c->log_addresses, &c->metrics_listen, &c->pidfile, &c->ca_file, &c->helo_name, &c->unbound_conf,
	    &c->trust_anchor_file, &c->resolver, &c->whitelist_file };
	for (i = 0; i < sizeof(strs) / sizeof(strs[0]); i++)
		free(*strs[i]);
	while ((l = c->listeners) != NULL) {
		c->listeners = l->next;
		cfg_free_listener(l);
	}
	while ((d = c->domains) != NULL) {
		c->domains = d->next;
		free(d->name);
		free(d);
	}
	free(c);
	*cfgp = NULL;
}
