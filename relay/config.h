/*
 * config.h - relay.ini as one struct (DESIGN.md, "Configuration contract").
 *
 * Lifecycle: config_load() fills defaults, parses the file with inih through
 * one table of rows, checks cross-field rules and returns the struct or NULL
 * after printing every error as "file:line: message".  The struct is then
 * read-only: pass const struct relay_config * around; there are no globals.
 */
#ifndef RELAY_CONFIG_H
#define RELAY_CONFIG_H

#include <stddef.h>
#include <sys/socket.h>

#include "policy/level.h"

#define CONFIG_MAX_ADDRS   8
#define CONFIG_MAX_LIST    64

enum listener_mode { MODE_GATEWAY, MODE_SMARTHOST };
enum require_tls { REQUIRE_TLS_NO, REQUIRE_TLS_WHITELIST, REQUIRE_TLS_YES };
enum proxy_proto { PROXY_NO, PROXY_V1, PROXY_V2 };

struct cidr {
	int family;                 /* AF_INET or AF_INET6 */
	unsigned char addr[16];
	int bits;
};

struct listener_config {
	char *name;
	enum listener_mode mode;
	size_t naddrs;
	struct sockaddr_storage addrs[CONFIG_MAX_ADDRS];
	socklen_t addrlens[CONFIG_MAX_ADDRS];
	char *tls_cert, *tls_key;
	char *tls_ecdsa_cert, *tls_ecdsa_key;   /* a second chain of another key type */
	int tls_min_version;        /* TLS1_2_VERSION ... */
	enum require_tls require_tls;
	size_t nnetworks;
	struct cidr networks[CONFIG_MAX_LIST];
	size_t ndomains;
	char *domains[CONFIG_MAX_LIST];   /* lower case, no trailing dot */
	int local_subdomains;
	char *next_hop_host;        /* gateway: host (name or literal) */
	int next_hop_port;
	enum tls_level next_hop_tls;
	char *next_hop_tls_name;
	enum proxy_proto proxy_protocol;
	int max_connections;
	int max_connections_per_ip;
	int max_recipients;
	int max_command_line;
	int max_line_length;
	char *banner;
	int trace_headers;          /* prepend Received: (and X-TLS-Policy: on a gateway) */
	int tls_ask_client_cert;    /* request (never require) a client certificate */
	char *tls_client_ca;        /* trust anchors for client certificates */
	int line;                   /* where the section starts, for errors */
	int lists_set;              /* config.c: list keys seen (later ones append) */
	struct listener_config *next;
};

/* What to do when the _mta-sts TXT lookup fails (SERVFAIL, timeout). */
enum sts_dns_failure { STS_DNS_INHERIT = -1, STS_DNS_DEFER, STS_DNS_DELIVER };

struct domain_config {
	char *name;                 /* lower case, no trailing dot */
	enum tls_level level;
	enum sts_dns_failure sts_dns_failure;
	int line;
	struct domain_config *next;
};

struct relay_config {
	char *path;
	/* [relay] */
	char *hostname;
	char *user;
	int workers;                /* 0 = auto */
	char *state_dir;
	char *log_file;
	char *syslog;               /* "off" or a facility name (daemon, mail, local0..7) */
	char *log_addresses;        /* "yes" (default), "hash" or "omit": privacy of e-mail addresses */
	char *metrics_listen;       /* addr:port of the Prometheus endpoint, NULL = off */
	long long max_message_size;
	char *pidfile;
	int shutdown_timeout;       /* seconds */
	int command_timeout;
	int data_timeout;
	/* [outbound] */
	enum tls_level default_level;
	int dane;
	int mta_sts;
	int mta_sts_timeout;        /* seconds for one policy fetch */
	enum sts_dns_failure mta_sts_dns_failure;
	int mta_sts_port;           /* 443; other values only for tests */
	int port;
	char *ca_file;
	char *helo_name;
	int connect_timeout;
	int out_command_timeout;
	int out_data_timeout;
	int out_final_timeout;
	/* [dns] */
	char *unbound_conf;
	char *trust_anchor_file;
	char *resolver;
	/* [whitelist] */
	char *whitelist_file;
	/* [listener:*], [domain:*] */
	struct listener_config *listeners;
	struct domain_config *domains;
	struct relay_config *next_old;  /* main.c: configurations replaced by SIGHUP */
};

/* config_load - read path; NULL after printing file:line errors to stderr. */
struct relay_config *config_load(const char *path);
void config_free(struct relay_config **cfg);

/* cidr_match - 1 when sa lies in c. */
int cidr_match(const struct cidr *c, const struct sockaddr *sa);
/* cidr_parse - "10.0.0.0/8", "::1/128", or a bare address. 0 or -1. */
int cidr_parse(const char *s, struct cidr *c);
/* addr_parse - "127.0.0.1:25", "[::1]:25"; 0 or -1. */
int addr_parse(const char *s, struct sockaddr_storage *ss, socklen_t *len);
/* hostport_parse - "host:port" or "[v6]:port" into malloc'd host and port. */
int hostport_parse(const char *s, char **host, int *port);

#endif
