/*
 * metrics.c - Prometheus counters from the event log, and the evhttp
 * listener that serves them (see metrics.h for what each counter counts).
 *
 * Exposition: the Prometheus text format, version 0.0.4: for each metric a
 * "# HELP name text" and a "# TYPE name counter|gauge" line, then its
 * samples "name{label=\"value\"} value", each line ending in "\n".  Every
 * labelled series is written even when zero, so a rate() has a start.
 *
 * The listener is for a scraper on loopback or a management network: no
 * authentication, GET and HEAD only, a 10 s timeout, small header and body
 * limits.  One worker process serves its own counters ([relay] workers = 1
 * is the only mode implemented).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>

#include "relay/config.h"
#include "relay/evlog.h"
#include "relay/log.h"
#include "policy/resolver.h"
#include "relay/metrics.h"

#define METRICS_PATH "/metrics"
#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

struct metrics {
	struct evhttp *http;
	struct metrics_counters c;
};

static const char *const metrics_outcomes[METRICS_NOUT] = {
	"delivered", "deferred", "rejected"
};
static const char *const metrics_results[METRICS_NRES] = { "success", "failure" };
static const char *const metrics_cache_names[METRICS_NCACHE] = { "hit", "miss" };

/* RFC 8460 §4.3; the last slot collects anything else. */
static const char *const metrics_types[METRICS_NTYPES] = {
	"starttls-not-supported", "certificate-host-mismatch", "certificate-expired",
	"certificate-not-trusted", "validation-failure", "tlsa-invalid", "dnssec-invalid",
	"dane-required", "sts-policy-fetch-error", "sts-policy-invalid",
	"sts-webpki-invalid", "other",
};

/* Index of s in names[0..n), or -1. */
static int
metrics_index(const char *s, const char *const *names, int n)
{
	int i;

	for (i = 0; i < n; i++)
		if (strcmp(s, names[i]) == 0)
			return i;
	return -1;
}

/* "data": the client's reply class is the message's fate. */
static void
metrics_count_message(struct metrics_counters *c, int code)
{
	if (code >= 200 && code < 300)
		c->messages[METRICS_OUT_DELIVERED]++;
	else if (code >= 400 && code < 500)
		c->messages[METRICS_OUT_DEFERRED]++;
	else if (code >= 500 && code < 600)
		c->messages[METRICS_OUT_REJECTED]++;
}

static void
metrics_count_delivery(struct metrics_counters *c, const struct evlog_fields *f)
{
	int i = metrics_index(f->result, metrics_results, METRICS_NRES);

	if (i >= 0)
		c->deliveries[i]++;
	if (f->result_type[0] == '\0')
		return;
	i = metrics_index(f->result_type, metrics_types, METRICS_NTYPES - 1);
	c->tls_failures[i >= 0 ? i : METRICS_NTYPES - 1]++;
}

/*
 * "policy_fetch" (policy/mtasts.c): a lookup answered from the cache has
 * outcome "cache"; "success" and "failure" made a fetch.  "none" (no
 * policy published) and background refreshes are not cache lookups.  A
 * "cache" member (hit | miss | stale | refresh, docs/events.md) wins.
 */
static void
metrics_count_cache(struct metrics_counters *c, const struct evlog_fields *f)
{
	if (f->refresh == 1)
		return;
	if (f->cache[0] != '\0') {
		c->cache[strcmp(f->cache, "hit") == 0 ? METRICS_CACHE_HIT : METRICS_CACHE_MISS]++;
		return;
	}
	if (strcmp(f->outcome, "cache") == 0)
		c->cache[METRICS_CACHE_HIT]++;
	else if (strcmp(f->outcome, "success") == 0 || strcmp(f->outcome, "failure") == 0)
		c->cache[METRICS_CACHE_MISS]++;
}

void
metrics_count(const struct evlog_fields *f, void *arg)
{
	struct metrics_counters *c = arg;

	if (strcmp(f->event, "connect") == 0)
		c->sessions++;
	else if (strcmp(f->event, "disconnect") == 0)
		c->sessions_ended++;
	else if (strcmp(f->event, "data") == 0)
		metrics_count_message(c, f->code);
	else if (strcmp(f->event, "delivery") == 0)
		metrics_count_delivery(c, f);
	else if (strcmp(f->event, "policy_fetch") == 0)
		metrics_count_cache(c, f);
}

static void
metrics_head(struct evbuffer *out, const char *name, const char *type, const char *help)
{
	evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void
metrics_labelled(struct evbuffer *out, const char *name, const char *label,
    const char *const *values, const unsigned long long *v, int n)
{
	int i;

	for (i = 0; i < n; i++)
		evbuffer_add_printf(out, "%s{%s=\"%s\"} %llu\n", name, label, values[i], v[i]);
}

void
metrics_render(const struct metrics_counters *c, struct evbuffer *out)
{
	static const char *const outputs[] = { "file", "syslog" };
	unsigned long file, sys;
	unsigned long long drops[2], dns_count;
	double dns_seconds;

	metrics_head(out, "tlsrelay_sessions_total", "counter",
	    "Client sessions accepted (connect events).");
	evbuffer_add_printf(out, "tlsrelay_sessions_total %llu\n", c->sessions);
	metrics_head(out, "tlsrelay_sessions_active", "gauge",
	    "Client sessions open now (connect minus disconnect events).");
	evbuffer_add_printf(out, "tlsrelay_sessions_active %llu\n",
	    c->sessions > c->sessions_ended ? c->sessions - c->sessions_ended : 0);
	metrics_head(out, "tlsrelay_messages_total", "counter",
	    "Transactions that reached DATA, by the reply to the client (data events).");
	metrics_labelled(out, "tlsrelay_messages_total", "outcome", metrics_outcomes,
	    c->messages, METRICS_NOUT);
	metrics_head(out, "tlsrelay_deliveries_total", "counter",
	    "Delivery attempts on the next-hop leg by TLS result (delivery events).");
	metrics_labelled(out, "tlsrelay_deliveries_total", "result", metrics_results,
	    c->deliveries, METRICS_NRES);
	metrics_head(out, "tlsrelay_tls_failures_total", "counter",
	    "Failed delivery attempts by RFC 8460 result type.");
	metrics_labelled(out, "tlsrelay_tls_failures_total", "result_type", metrics_types,
	    c->tls_failures, METRICS_NTYPES);
	metrics_head(out, "tlsrelay_policy_cache_total", "counter",
	    "MTA-STS policy lookups answered from the cache (hit) or by a fetch (miss).");
	metrics_labelled(out, "tlsrelay_policy_cache_total", "result", metrics_cache_names,
	    c->cache, METRICS_NCACHE);
	resolver_latency(&dns_count, &dns_seconds);
	metrics_head(out, "tlsrelay_dns_query_seconds", "summary",
	    "Time from asking the resolver to its answer (MX, A/AAAA, TLSA, TXT).");
	evbuffer_add_printf(out, "tlsrelay_dns_query_seconds_sum %.6f\n", dns_seconds);
	evbuffer_add_printf(out, "tlsrelay_dns_query_seconds_count %llu\n", dns_count);
	evlog_drops(&file, &sys);
	drops[0] = file;
	drops[1] = sys;
	metrics_head(out, "tlsrelay_events_dropped_total", "counter",
	    "Event lines lost to write errors, per output.");
	metrics_labelled(out, "tlsrelay_events_dropped_total", "output", outputs, drops, 2);
}

static void
metrics_reply(struct evhttp_request *req, int code, const char *reason,
    struct evbuffer *body)
{
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
	    code == HTTP_OK ? METRICS_CONTENT_TYPE : "text/plain; charset=utf-8");
	evhttp_send_reply(req, code, reason, body);
}

/* RFC 9110 §15.5.6: a known resource, a method it does not support. */
static void
metrics_not_allowed(struct evhttp_request *req)
{
	evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
	metrics_reply(req, 405, "Method Not Allowed", NULL);
}

static void
metrics_serve(struct evhttp_request *req, void *arg)
{
	struct metrics *m = arg;
	enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
	struct evbuffer *body;

	if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
		metrics_not_allowed(req);
		return;
	}
	if ((body = evbuffer_new()) == NULL) {
		evhttp_send_error(req, HTTP_SERVUNAVAIL, NULL);
		return;
	}
	metrics_render(&m->c, body);
	metrics_reply(req, HTTP_OK, "OK", body);
	evbuffer_free(body);
}

static void
metrics_not_found(struct evhttp_request *req, void *arg)
{
	struct evbuffer *body = evbuffer_new();

	(void)arg;
	if (body != NULL)
		evbuffer_add_printf(body, "not found; try %s\n", METRICS_PATH);
	metrics_reply(req, HTTP_NOTFOUND, "Not Found", body);
	if (body != NULL)
		evbuffer_free(body);
}

/* Bind addr:port and hand the socket to evhttp.  0 or -1 with err set. */
static int
metrics_listen(struct metrics *m, struct event_base *base, const char *addr,
    char *err, size_t errlen)
{
	struct sockaddr_storage ss;
	socklen_t len;
	struct evconnlistener *lev;

	if (addr_parse(addr, &ss, &len) < 0) {
		snprintf(err, errlen, "bad address \"%s\" (want 127.0.0.1:9125 or [::1]:9125)", addr);
		return -1;
	}
	lev = evconnlistener_new_bind(base, NULL, NULL, LEV_OPT_CLOSE_ON_FREE |
	    LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC, -1, (struct sockaddr *)&ss, (int)len);
	if (lev == NULL) {
		snprintf(err, errlen, "cannot listen on %s: %s", addr, strerror(errno));
		return -1;
	}
	if (evhttp_bind_listener(m->http, lev) == NULL) {
		evconnlistener_free(lev);
		snprintf(err, errlen, "cannot serve HTTP on %s", addr);
		return -1;
	}
	return 0;
}

struct metrics *
metrics_new(struct event_base *base, const struct relay_config *cfg, char *err,
    size_t errlen)
{
	struct metrics *m;

	if (cfg->metrics_listen == NULL)
		die_bug("metrics_new: metrics_listen is not set");
	m = xcalloc(1, sizeof(*m));
	m->http = evhttp_new(base);
	if (m->http == NULL)
		die("out of memory");
	if (metrics_listen(m, base, cfg->metrics_listen, err, errlen) < 0) {
		evhttp_free(m->http);
		free(m);
		return NULL;
	}
	/* libevent answers 501 to methods outside this set; these get 405 */
	evhttp_set_allowed_methods(m->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST |
	    EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH);
	evhttp_set_timeout(m->http, 10);
	evhttp_set_max_headers_size(m->http, 8192);
	evhttp_set_max_body_size(m->http, 1024);
	evhttp_set_cb(m->http, METRICS_PATH, metrics_serve, m);
	evhttp_set_gencb(m->http, metrics_not_found, NULL);
	evlog_set_observer(metrics_count, &m->c);
	return m;
}

void
metrics_free(struct metrics **mp)
{
	struct metrics *m = *mp;

	if (m == NULL)
		return;
	evlog_set_observer(NULL, NULL);
	evhttp_free(m->http);
	free(m);
	*mp = NULL;
}
