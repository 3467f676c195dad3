/*
 * main.c - tlsrelay's command line, start-up, signals and shutdown.
 *
 *   tlsrelay [-f] [-d] [-c relay.ini]   run (-f: foreground, -d: debug log)
 *   tlsrelay -t [-c relay.ini]          check the configuration and exit
 *   tlsrelay -V                          version and library versions
 *
 * Start-up order matters for least privilege: read the configuration, load
 * keys and bind the listeners as root, then drop to [relay] user.
 */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>
#include <ini.h>
#include <openssl/crypto.h>
#include <openssl/ssl.h>
#include <unbound.h>

#include "certs/tlsctx.h"
#include "policy/mtasts.h"
#include "policy/report.h"
#include "policy/resolver.h"
#include "policy/whitelist.h"
#include "relay/config.h"
#include "relay/conncache.h"
#include "relay/evlog.h"
#include "relay/listener.h"
#include "relay/metrics.h"
#include "relay/log.h"
#include "relay/policycmd.h"
#include "relay/session.h"
#include "relay/workers.h"

#define TLSRELAY_VERSION "0.1.0"
#define RELAY_RELOAD_MAX 64             /* listeners a SIGHUP can reload */

struct relay {
	struct relay_config *cfg;
	struct relay_config *old_cfgs;  /* replaced by SIGHUP, still used by sessions */
	struct event_base *base;
	SSL_CTX *client_ctx;
	struct resolver *resolver;
	struct whitelist *whitelist;
	struct mtasts *mtasts;
	struct listener *listeners;
	struct event *sig[5];
	struct event *deadline;
	struct metrics *metrics;     /* NULL unless [relay] metrics_listen */
	int nworkers;                /* processes sharing the listeners */
	int *fds;                    /* bound sockets: relay_fd() */
	SSL_CTX **server_ctxs;       /* per listener, built before privileges drop */
	size_t nlisteners;
	int pidfile_owner;           /* this process wrote the pidfile */
};

/* The socket of listener li, address ai, for worker w. */
static int *
relay_fd(struct relay *r, size_t li, size_t ai, int w)
{
	return &r->fds[(li * CONFIG_MAX_ADDRS + ai) * (size_t)r->nworkers + (size_t)w];
}

static void
usage(void)
{
	fprintf(stderr, "usage: tlsrelay [-f] [-d] [-c relay.ini]\n"
	    "       tlsrelay -t [-c relay.ini]\n"
	    "       tlsrelay report [-c relay.ini] [--day YYYY-MM-DD] [--org NAME] [--contact URI]\n"
	    "                       [--out DIR] [--send] LOG...\n"
	    "       tlsrelay policy [-c relay.ini] DOMAIN\n"
	    "       tlsrelay -V\n");
	exit(2);
}

static void
version(void)
{
	printf("tlsrelay %s\n", TLSRELAY_VERSION);
	printf("libevent %s\n", event_get_version());
	printf("%s\n", OpenSSL_version(OPENSSL_VERSION));
	printf("libunbound %s\n", ub_version());
	exit(0);
}

static void
relay_drop_privileges(const struct relay_config *cfg)
{
	struct passwd *pw;

	if (cfg->user == NULL || cfg->user[0] == '\0')
		return;
	pw = getpwnam(cfg->user);
	if (pw == NULL)
		die("user %s: no such user", cfg->user);
	if (setgroups(1, &pw->pw_gid) < 0 || setgid(pw->pw_gid) < 0 || setuid(pw->pw_uid) < 0)
		die("cannot drop privileges to %s: %s", cfg->user, strerror(errno));
	if (setuid(0) == 0)
		die("privileges not dropped: setuid(0) still works");
	log_msg(LOG_INFO, "running as %s (uid %d)", cfg->user, (int)pw->pw_uid);
}

/* Raise the descriptor limit to the hard limit and say what we got. */
static void
relay_raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return;
	rl.rlim_cur = rl.rlim_max;
	setrlimit(RLIMIT_NOFILE, &rl);
	getrlimit(RLIMIT_NOFILE, &rl);
	log_msg(LOG_INFO, "file descriptor limit %llu", (unsigned long long)rl.rlim_cur);
}

static void
relay_shutdown_now(evutil_socket_t fd, short what, void *arg)
{
	struct relay *r = arg;

	(void)fd;
	(void)what;
	log_msg(LOG_WARN, "shutdown deadline reached with %d sessions open", listener_sessions());
	event_base_loopbreak(r->base);
}

/* SIGTERM/SIGINT: stop accepting, let sessions finish up to the deadline. */
static void
relay_on_term(struct relay *r)
{
	struct listener *l;
	struct timeval tv = { r->cfg->shutdown_timeout, 0 };

	if (r->deadline != NULL)
		return;
	log_msg(LOG_INFO, "shutting down: %d sessions open", listener_sessions());
	for (l = r->listeners; l != NULL; l = l->next)
		listener_stop(l);
	if (listener_sessions() == 0) {
		event_base_loopexit(r->base, NULL);
		return;
	}
	r->deadline = evtimer_new(r->base, relay_shutdown_now, r);
	if (r->deadline == NULL)
		die("out of memory");
	evtimer_add(r->deadline, &tv);
}

static void
relay_reload_event(const char *result, const char *error, const struct whitelist *wl)
{
	struct evline *e = evlog_begin("reload", "");

	evlog_str(e, "what", "configuration");
	evlog_str(e, "result", result);
	if (error != NULL)
		evlog_str(e, "error", error);
	evlog_int(e, "whitelist_domains", (long long)whitelist_count(wl));
	evlog_end(e);
	if (error != NULL)
		log_msg(LOG_ERR, "reload failed, the running configuration stays: %s", error);
	else
		log_msg(LOG_INFO, "reloaded (whitelist: %zu domains)", whitelist_count(wl));
}

/* Listeners must keep their names, modes and addresses: sockets stay bound. */
static int
relay_same_listeners(const struct relay_config *a, const struct relay_config *b)
{
	const struct listener_config *x = a->listeners, *y = b->listeners;

	for (; x != NULL && y != NULL; x = x->next, y = y->next)
		if (strcmp(x->name, y->name) != 0 || x->mode != y->mode || x->naddrs != y->naddrs ||
		    memcmp(x->addrs, y->addrs, x->naddrs * sizeof(x->addrs[0])) != 0)
			return 0;
	return x == NULL && y == NULL;
}

/* The new certificates, keys and whitelist; all of them or nothing. */
static int
relay_reload_load(struct relay *r, struct relay_config *cfg, SSL_CTX **ctxs,
    struct whitelist **wl, char *err, size_t errlen)
{
	const struct listener_config *lc;
	size_t i = 0;
	int failed;

	for (lc = cfg->listeners; lc != NULL; lc = lc->next, i++) {
		if (i == RELAY_RELOAD_MAX) {
			snprintf(err, errlen, "more than %d listeners", RELAY_RELOAD_MAX);
			return -1;
		}
		ctxs[i] = listener_server_ctx(cfg, lc, &failed, err, errlen);
		if (failed)
			return -1;
	}
	if (cfg->whitelist_file != NULL && ((*wl = whitelist_new()) == NULL ||
	    whitelist_load(*wl, cfg->whitelist_file, err, errlen) < 0))
		return -1;
	(void)r;
	return 0;
}

/* Hand the new configuration to the listeners: new sessions use it. */
static void
relay_reload_commit(struct relay *r, struct relay_config *cfg, SSL_CTX **ctxs,
    struct whitelist *wl)
{
	struct listener *l;
	const struct listener_config *lc = cfg->listeners;
	size_t i = 0;

	for (l = r->listeners; l != NULL; l = l->next, lc = lc->next, i++) {
		SSL_CTX_free(l->server_ctx);     /* open sessions hold their own reference */
		l->server_ctx = ctxs[i];
		l->cfg = cfg;
		l->lc = lc;
		l->whitelist = wl;
	}
	whitelist_free(&r->whitelist);
	r->whitelist = wl;
	evlog_set_addr_mode(cfg->log_addresses);
	if (evlog_syslog_open(cfg->syslog) < 0)
		log_msg(LOG_ERR, "reload: [relay] syslog = %s: %s", cfg->syslog, strerror(errno));
	/* Sessions keep pointers into the old configuration: it lives until exit. */
	r->cfg->next_old = r->old_cfgs;
	r->old_cfgs = r->cfg;
	r->cfg = cfg;
}

/*
 * SIGHUP: re-read relay.ini, certificates, keys and the whitelist; new
 * sessions use them, open sessions go on with what they started with.  A
 * broken file, an unreadable key or changed listener addresses keep the
 * running configuration (and say why).  DNS, MTA-STS and outbound CA
 * settings are read at start-up only.
 */
static void
relay_reload(struct relay *r)
{
	char err[512] = "";
	struct relay_config *cfg = config_load(r->cfg->path);
	SSL_CTX *ctxs[RELAY_RELOAD_MAX] = { NULL };
	struct whitelist *wl = NULL;
	size_t i;

	if (cfg == NULL)
		snprintf(err, sizeof(err), "%s has errors (see the log on stderr)", r->cfg->path);
	else if (!relay_same_listeners(r->cfg, cfg))
		snprintf(err, sizeof(err), "listener names, modes or addresses changed: restart");
	else if (relay_reload_load(r, cfg, ctxs, &wl, err, sizeof(err)) == 0) {
		relay_reload_commit(r, cfg, ctxs, wl);
		relay_reload_event("success", NULL, r->whitelist);
		return;
	}
	for (i = 0; i < sizeof(ctxs) / sizeof(ctxs[0]); i++)
		SSL_CTX_free(ctxs[i]);
	whitelist_free(&wl);
	config_free(&cfg);
	relay_reload_event("failure", err, r->whitelist);
}

static void
relay_signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct relay *r = arg;

	(void)what;
	switch (sig) {
	case SIGTERM: case SIGINT:
		relay_on_term(r);
		break;
	case SIGUSR1:
		if (evlog_reopen() < 0)
			log_msg(LOG_ERR, "cannot reopen the event log: %s", strerror(errno));
		break;
	case SIGHUP:
		relay_reload(r);
		break;
	}
}

static void
relay_block_signals(int how)
{
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGUSR1);
	sigprocmask(how, &set, NULL);
}

static void
relay_signals(struct relay *r)
{
	static const int sigs[] = { SIGTERM, SIGINT, SIGHUP, SIGUSR1 };
	size_t i;

	signal(SIGPIPE, SIG_IGN);
	for (i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
		r->sig[i] = evsignal_new(r->base, sigs[i], relay_signal_cb, r);
		if (r->sig[i] == NULL || evsignal_add(r->sig[i], NULL) < 0)
			die("cannot install signal handler");
	}
}

static int
relay_needs_dns(const struct relay_config *cfg)
{
	const struct listener_config *lc;

	struct sockaddr_storage ss;
	socklen_t len;
	char spec[300];

	for (lc = cfg->listeners; lc != NULL; lc = lc->next) {
		if (lc->mode == MODE_SMARTHOST)
			return 1;
		/* A next hop given by name is resolved through libunbound too. */
		snprintf(spec, sizeof(spec), strchr(lc->next_hop_host, ':') ? "[%s]:%d" : "%s:%d",
		    lc->next_hop_host, lc->next_hop_port);
		if (addr_parse(spec, &ss, &len) < 0)
			return 1;
	}
	return 0;
}

/*
 * The resolver for MX, DANE and MTA-STS lookups.  Without a trust anchor
 * nothing validates and DANE would silently turn off (DESIGN.md): refuse.
 */
static void
relay_resolver(struct relay *r)
{
	struct resolver_config rc = {
		.unbound_conf = r->cfg->unbound_conf,
		.trust_anchor_file = r->cfg->trust_anchor_file,
		.resolver = r->cfg->resolver,
	};
	char err[512];

	if (!relay_needs_dns(r->cfg))
		return;
	r->resolver = resolver_new(r->base, &rc, err, sizeof(err));
	if (r->resolver == NULL)
		die("%s: [dns]: %s", r->cfg->path, err);
	if (r->cfg->dane && !resolver_has_trust_anchor(r->resolver))
		die("%s: [outbound] dane = yes but the resolver has no DNSSEC trust anchor "
		    "(set [dns] trust_anchor_file or a trust-anchor in unbound_conf, or dane = no)",
		    r->cfg->path);
}

/* MTA-STS: refuses to start when ca_file holds no usable CA certificate. */
static void
relay_mtasts(struct relay *r)
{
	struct mtasts_config mc = {
		.state_dir = r->cfg->state_dir,
		.ca_file = r->cfg->ca_file,
		.fetch_timeout = r->cfg->mta_sts_timeout,
		.txt_fail = MTASTS_TXT_FAIL_NOPOLICY,  /* route.c applies mta_sts_dns_failure */
		.https_port = r->cfg->mta_sts_port,
	};
	char err[512];

	if (r->resolver == NULL || !r->cfg->mta_sts)
		return;
	r->mtasts = mtasts_new(r->base, r->resolver, &mc, err, sizeof(err));
	if (r->mtasts == NULL)
		die("%s: [outbound] mta_sts = yes: %s", r->cfg->path, err);
}

static void
relay_whitelist(struct relay *r)
{
	char err[512];

	if (r->cfg->whitelist_file == NULL)
		return;
	r->whitelist = whitelist_new();
	if (r->whitelist == NULL)
		die("out of memory");
	if (whitelist_load(r->whitelist, r->cfg->whitelist_file, err, sizeof(err)) < 0)
		die("[whitelist] file: %s", err);
	log_msg(LOG_INFO, "whitelist: %zu domains", whitelist_count(r->whitelist));
}

/*
 * Bind every address of every listener once per worker (SO_REUSEPORT with
 * several workers), and build the STARTTLS contexts: both need the
 * privileges that relay_drop_privileges() gives up.
 */
static void
relay_bind(struct relay *r)
{
	const struct listener_config *lc;
	size_t li = 0, ai, n = 0;
	int w, failed;
	char err[512];

	for (lc = r->cfg->listeners; lc != NULL; lc = lc->next)
		n++;
	r->nlisteners = n;
	r->fds = xcalloc(n * CONFIG_MAX_ADDRS * (size_t)r->nworkers, sizeof(int));
	r->server_ctxs = xcalloc(n ? n : 1, sizeof(SSL_CTX *));
	for (lc = r->cfg->listeners; lc != NULL; lc = lc->next, li++) {
		r->server_ctxs[li] = listener_server_ctx(r->cfg, lc, &failed, err, sizeof(err));
		if (failed)
			die("%s:%d: [listener:%s]: %s", r->cfg->path, lc->line, lc->name, err);
		for (ai = 0; ai < lc->naddrs; ai++)
			for (w = 0; w < r->nworkers; w++) {
				*relay_fd(r, li, ai, w) = listener_bind((const struct sockaddr *)
				    &lc->addrs[ai], lc->addrlens[ai], r->nworkers > 1, err, sizeof(err));
				if (*relay_fd(r, li, ai, w) < 0)
					die("%s:%d: [listener:%s]: cannot listen on address %zu: %s",
					    r->cfg->path, lc->line, lc->name, ai + 1, err);
			}
	}
	r->client_ctx = tlsctx_client_new(r->cfg->ca_file, err, sizeof(err));
	if (r->client_ctx == NULL)
		die("%s: [outbound] ca_file: %s", r->cfg->path, err);
}

/* Worker w: its own sockets become listeners; the other workers' are closed. */
static void
relay_listen(struct relay *r, int w)
{
	const struct listener_config *lc;
	struct listener *l, **tail = &r->listeners;
	size_t li = 0, ai;
	int fds[CONFIG_MAX_ADDRS], v;
	char err[512];

	for (lc = r->cfg->listeners; lc != NULL; lc = lc->next, li++) {
		for (ai = 0; ai < lc->naddrs; ai++) {
			fds[ai] = *relay_fd(r, li, ai, w);
			for (v = 0; v < r->nworkers; v++)
				if (v != w)
					close(*relay_fd(r, li, ai, v));
		}
		l = listener_new(r->base, r->cfg, lc, r->client_ctx, r->server_ctxs[li], fds,
		    err, sizeof(err));
		if (l == NULL)
			die("%s:%d: %s", r->cfg->path, lc->line, err);
		r->server_ctxs[li] = NULL;      /* the listener's now */
		l->resolver = r->resolver;
		l->whitelist = r->whitelist;
		l->mtasts = r->mtasts;
		*tail = l;
		tail = &l->next;
	}
}

static void
relay_metrics(struct relay *r)
{
	char err[512];

	if (r->cfg->metrics_listen == NULL)
		return;
	r->metrics = metrics_new(r->base, r->cfg, err, sizeof(err));
	if (r->metrics == NULL)
		die("%s: [relay] metrics_listen: %s", r->cfg->path, err);
}

static void
relay_pidfile(const struct relay_config *cfg)
{
	FILE *fp;

	if (cfg->pidfile == NULL)
		return;
	fp = fopen(cfg->pidfile, "w");
	if (fp == NULL)
		die("pidfile %s: %s", cfg->pidfile, strerror(errno));
	fprintf(fp, "%ld\n", (long)getpid());
	fclose(fp);
}

static void
relay_free(struct relay *r)
{
	struct listener *l;
	struct relay_config *old;
	size_t i;

	session_close_all("shutdown");
	conncache_flush();
	if (r->base != NULL)
		event_base_loop(r->base, EVLOOP_NONBLOCK);      /* run the deferred frees */
	while ((l = r->listeners) != NULL) {
		r->listeners = l->next;
		listener_free(&l);
	}
	for (i = 0; i < sizeof(r->sig) / sizeof(r->sig[0]); i++)
		if (r->sig[i] != NULL)
			event_free(r->sig[i]);
	if (r->deadline != NULL)
		event_free(r->deadline);
	SSL_CTX_free(r->client_ctx);
	tlsctx_client_cache_flush();
	for (i = 0; i < r->nlisteners; i++)
		SSL_CTX_free(r->server_ctxs[i]);
	free(r->server_ctxs);
	free(r->fds);
	mtasts_free(&r->mtasts);
	metrics_free(&r->metrics);
	resolver_free(&r->resolver);
	whitelist_free(&r->whitelist);
	if (r->base != NULL)
		event_base_free(r->base);
	if (r->cfg->pidfile != NULL && r->pidfile_owner)
		unlink(r->cfg->pidfile);
	config_free(&r->cfg);
	while ((old = r->old_cfgs) != NULL) {
		r->old_cfgs = old->next_old;
		config_free(&old);
	}
	evlog_close();
}

/* One worker: its event loop, resolver, policy cache and listeners. */
static int
relay_worker(struct relay *r, int w)
{
	r->base = event_base_new();
	if (r->base == NULL)
		die("cannot create the event loop");
	relay_resolver(r);
	relay_mtasts(r);
	if (w == 0)
		relay_metrics(r);
	relay_signals(r);
	relay_listen(r, w);             /* last: connections are taken from here on */
	relay_block_signals(SIG_UNBLOCK);
	log_msg(LOG_INFO, "tlsrelay %s ready%s", TLSRELAY_VERSION, r->nworkers > 1 ?
	    " (worker)" : "");
	event_base_dispatch(r->base);
	log_msg(LOG_INFO, "stopped");
	relay_free(r);
	return 0;
}

static int
relay_worker_main(void *arg, int w)
{
	return relay_worker(arg, w);
}

/*
 * Start-up order matters for least privilege: sockets and keys as root,
 * then drop to [relay] user, then the workers (each its own event loop).
 */
static int
relay_run(struct relay_config *cfg, int foreground)
{
	struct relay r;
	int rc;

	memset(&r, 0, sizeof(r));
	r.cfg = cfg;
	if (evlog_open(cfg->log_file, cfg->hostname) < 0)
		die("log_file %s: %s", cfg->log_file, strerror(errno));
	evlog_set_addr_mode(cfg->log_addresses);        /* checked by config_load */
	if (evlog_syslog_open(cfg->syslog) < 0)
		die("[relay] syslog = %s: /dev/log: %s%s", cfg->syslog, strerror(errno),
		    errno == EPROTOTYPE ? " (a stream socket: tlsrelay sends datagrams only)" : "");
	r.nworkers = cfg->workers > 0 ? cfg->workers : (int)sysconf(_SC_NPROCESSORS_ONLN);
	if (r.nworkers < 1)
		r.nworkers = 1;
	/* The port accepts before the handlers exist: signals wait until then. */
	relay_block_signals(SIG_BLOCK);
	relay_raise_nofile();
	relay_whitelist(&r);
	relay_bind(&r);
	if (!foreground && daemon(1, 0) < 0)
		die("cannot daemonize: %s", strerror(errno));
	relay_pidfile(cfg);             /* as root: /run is root's */
	r.pidfile_owner = 1;
	relay_drop_privileges(cfg);
	if (r.nworkers == 1)
		return relay_worker(&r, 0);
	rc = workers_supervise(r.nworkers, relay_worker_main, &r, &r.pidfile_owner);
	relay_free(&r);
	return rc;
}

int
main(int argc, char **argv)
{
	const char *path = "relay.ini";
	int c, check = 0, foreground = 0;
	struct relay_config *cfg;

	if (argc > 1 && strcmp(argv[1], "report") == 0)
		return report_main(argc - 1, argv + 1);
	if (argc > 1 && strcmp(argv[1], "policy") == 0)
		return policy_main(argc - 1, argv + 1);
	while ((c = getopt(argc, argv, "c:dftV")) != -1) {
		switch (c) {
		case 'c': path = optarg; break;
		case 'd': log_set_level(LOG_DEBUG); break;
		case 'f': foreground = 1; break;
		case 't': check = 1; break;
		case 'V': version(); break;
		default: usage();
		}
	}
	if (optind != argc)
		usage();
	cfg = config_load(path);
	if (cfg == NULL)
		return 1;
	if (check) {
		printf("%s: configuration OK\n", path);
		config_free(&cfg);
		return 0;
	}
	return relay_run(cfg, foreground);
}
