/*
 * tests/integration/mtasts_probe.c - test driver for policy/mtasts.c.
 *
 *   mtasts_probe [--conf F] [--state DIR] [--ca F] [--port N] [--timeout S]
 *                [--txt-fail defer|nopolicy] [--refresh-min S] [--log F]
 *                [--concurrent N] [--twice MS] [--hold MS]
 *                [--cancel-after MS | --free-after MS] [--wait MS]
 *                DOMAIN [DOMAIN ...]
 *
 * Runs the libevent loop with a resolver (unbound.conf F) and an mtasts
 * (state_dir DIR, CA file F, HTTPS port N, fetch timeout S), looks up every
 * DOMAIN N times at once (default 1) and prints one JSON line per result:
 *   {"domain":..,"round":1,"n":0,"status":"policy"|"none"|"tempfail",
 *    "id":..,"mode":..,"max_age":..,"mx":[..],"expires":..,
 *    "from_cache":..,"txt_failed":..,"failure":null|"sts-...","detail":..,
 *    "elapsed_ms":..,"early":false}
 * --twice MS looks everything up again MS after the first round ended
 * (round 2, same process: the in-memory cache).  --hold MS keeps the loop
 * running MS after the last result (proactive refresh).  --cancel-after MS
 * cancels every pending lookup after MS, runs the loop --wait MS (default
 * 1000) more and prints {"cancelled":N,"late_callbacks":C}.  --free-after
 * MS frees the mtasts with the lookups in flight and prints
 * {"freed":N,"late_callbacks":C}.  Events go to --log F (default
 * /dev/null).  Exit: 0 done, 1 set-up error (prints {"error":..}), 2 usage,
 * 3 contract broken (a callback before mtasts_lookup returned, or after
 * cancel/free).  Built with ASan/LSan (build/asan), so a leak or a
 * use-after-free also fails the run.
 */
#include "policy/mtasts.h"
#include "policy/resolver.h"
#include "relay/evlog.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAXSLOT 256

struct probe;

struct slot {
	struct probe *p;
	const char *domain;
	int n;
	struct mtasts_req *req;
	int returned;       /* mtasts_lookup() has returned */
	int pending;
};

struct opts {
	struct resolver_config rcfg;
	struct mtasts_config mcfg;
	const char *log;
	int concurrent, twice_ms, hold_ms, cancel_ms, free_ms, wait_ms;
};

struct probe {
	struct opts o;
	struct event_base *base;
	struct resolver *r;
	struct mtasts *m;
	const char *domains[MAXSLOT];
	int ndomains;
	struct slot slot[MAXSLOT];
	int nslot;
	int round;
	int outstanding;
	int late;           /* callbacks after cancel or free */
	int stopped;        /* cancel or free happened */
	int early;
	struct timespec t0;
	struct event *timer;
};

static void
json_str(const char *s)
{
	putchar('"');
	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			printf("\\%c", c);
		else if (c < 0x20 || c >= 0x7f)
			printf("\\u%04x", c);
		else
			putchar(c);
	}
	putchar('"');
}

static long
elapsed_ms(const struct probe *p)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (now.tv_sec - p->t0.tv_sec) * 1000 +
	    (now.tv_nsec - p->t0.tv_nsec) / 1000000;
}

static void
print_policy(const struct sts_policy *pol)
{
	size_t i;

	printf(",\"mode\":\"%s\",\"max_age\":%ld,\"mx\":[",
	    sts_mode_name(pol->mode), pol->max_age);
	for (i = 0; i < pol->nmx; i++) {
		if (i > 0)
			putchar(',');
		json_str(pol->mx[i]);
	}
	putchar(']');
}

static void
print_result(struct slot *s, const struct mtasts_result *r)
{
	printf("{\"domain\":");
	json_str(s->domain);
	printf(",\"round\":%d,\"n\":%d,\"status\":\"%s\",\"id\":", s->p->round,
	    s->n, mtasts_status_name(r->status));
	json_str(r->id);
	if (r->policy != NULL)
		print_policy(r->policy);
	printf(",\"expires\":%lld,\"from_cache\":%s,\"txt_failed\":%s,"
	    "\"failure\":", (long long)r->expires, r->from_cache ? "true" :
	    "false", r->txt_failed ? "true" : "false");
	if (r->failure != NULL)
		json_str(r->failure);
	else
		printf("null");
	printf(",\"detail\":");
	json_str(r->detail);
	printf(",\"elapsed_ms\":%ld,\"early\":%s}\n", elapsed_ms(s->p),
	    s->returned ? "false" : "true");
	fflush(stdout);
}

static void round_start(struct probe *p);

static void
timer_add(struct probe *p, int ms, event_callback_fn fn)
{
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

	if (p->timer != NULL)
		event_free(p->timer);
	p->timer = evtimer_new(p->base, fn, p);
	evtimer_add(p->timer, &tv);
}

static void
stop_cb(evutil_socket_t fd, short what, void *arg)
{
	struct probe *p = arg;

	(void)fd;
	(void)what;
	event_base_loopbreak(p->base);
}

static void
again_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	round_start(arg);
}

/* The round is over: another round, a hold, or the end. */
static void
round_done(struct probe *p)
{
	if (p->o.twice_ms > 0 && p->round == 1)
		timer_add(p, p->o.twice_ms, again_cb);
	else if (p->o.hold_ms > 0)
		timer_add(p, p->o.hold_ms, stop_cb);
	else if (p->o.cancel_ms == 0 && p->o.free_ms == 0)
		event_base_loopbreak(p->base);
}

static void
probe_cb(void *arg, const struct mtasts_result *r)
{
	struct slot *s = arg;
	struct probe *p = s->p;

	if (!s->returned)
		p->early++;
	if (p->stopped || !s->pending) {
		p->late++;
		return;
	}
	s->req = NULL;
	s->pending = 0;
	print_result(s, r);
	if (--p->outstanding == 0)
		round_done(p);
}

static void
round_start(struct probe *p)
{
	int i;

	p->round++;
	for (i = 0; i < p->nslot; i++) {
		struct slot *s = &p->slot[i];

		s->returned = 0;
		s->pending = 1;
		p->outstanding++;
		s->req = mtasts_lookup(p->m, s->domain, "probe", probe_cb, s);
		s->returned = 1;
		if (s->req == NULL) {
			s->pending = 0;
			p->outstanding--;
			printf("{\"domain\":");
			json_str(s->domain);
			printf(",\"round\":%d,\"n\":%d,\"error\":\"mtasts_lookup "
			    "returned NULL\"}\n", p->round, s->n);
		}
	}
	if (p->outstanding == 0)
		round_done(p);
}

static int
pending_count(struct probe *p)
{
	int i, n = 0;

	for (i = 0; i < p->nslot; i++)
		n += p->slot[i].pending;
	return n;
}

static void
cancel_cb(evutil_socket_t fd, short what, void *arg)
{
	struct probe *p = arg;
	int i, n = pending_count(p);

	(void)fd;
	(void)what;
	for (i = 0; i < p->nslot; i++)
		mtasts_cancel(&p->slot[i].req);
	p->stopped = 1;
	printf("{\"cancelled\":%d}\n", n);
	fflush(stdout);
	timer_add(p, p->o.wait_ms, stop_cb);
}

static void
free_cb(evutil_socket_t fd, short what, void *arg)
{
	struct probe *p = arg;

	(void)fd;
	(void)what;
	printf("{\"freed\":%d}\n", pending_count(p));
	fflush(stdout);
	mtasts_free(&p->m);
	p->stopped = 1;
	timer_add(p, p->o.wait_ms, stop_cb);
}

static int
usage(void)
{
	fprintf(stderr, "usage: mtasts_probe [--conf F] [--state DIR] [--ca F] "
	    "[--port N] [--timeout S] [--txt-fail defer|nopolicy] "
	    "[--refresh-min S] [--log F] [--concurrent N] [--twice MS] "
	    "[--hold MS] [--cancel-after MS | --free-after MS] [--wait MS] "
	    "DOMAIN...\n");
	return 2;
}

/* One "--name value" option; 0, or -1 when unknown. */
static int
parse_opt(struct opts *o, const char *a, const char *v)
{
	if (strcmp(a, "--conf") == 0)
		o->rcfg.unbound_conf = v;
	else if (strcmp(a, "--state") == 0)
		o->mcfg.state_dir = v;
	else if (strcmp(a, "--ca") == 0)
		o->mcfg.ca_file = v;
	else if (strcmp(a, "--port") == 0)
		o->mcfg.https_port = atoi(v);
	else if (strcmp(a, "--timeout") == 0)
		o->mcfg.fetch_timeout = atoi(v);
	else if (strcmp(a, "--txt-fail") == 0)
		o->mcfg.txt_fail = strcmp(v, "nopolicy") == 0 ?
		    MTASTS_TXT_FAIL_NOPOLICY : MTASTS_TXT_FAIL_DEFER;
	else if (strcmp(a, "--refresh-min") == 0)
		o->mcfg.refresh_min = atoi(v);
	else if (strcmp(a, "--log") == 0)
		o->log = v;
	else if (strcmp(a, "--concurrent") == 0)
		o->concurrent = atoi(v);
	else if (strcmp(a, "--twice") == 0)
		o->twice_ms = atoi(v);
	else if (strcmp(a, "--hold") == 0)
		o->hold_ms = atoi(v);
	else if (strcmp(a, "--cancel-after") == 0)
		o->cancel_ms = atoi(v);
	else if (strcmp(a, "--free-after") == 0)
		o->free_ms = atoi(v);
	else if (strcmp(a, "--wait") == 0)
		o->wait_ms = atoi(v);
	else
		return -1;
	return 0;
}

static int
parse_args(int argc, char **argv, struct probe *p)
{
	int i, k;

	for (i = 1; i + 1 < argc && strncmp(argv[i], "--", 2) == 0; i += 2)
		if (parse_opt(&p->o, argv[i], argv[i + 1]) != 0)
			return -1;
	if (p->o.concurrent < 1)
		p->o.concurrent = 1;
	for (; i < argc; i++)
		for (k = 0; k < p->o.concurrent && p->nslot < MAXSLOT; k++) {
			struct slot *s = &p->slot[p->nslot++];

			s->p = p;
			s->domain = argv[i];
			s->n = k;
		}
	return p->nslot > 0 ? 0 : -1;
}

static int
probe_run(struct probe *p)
{
	char err[512] = "";

	p->m = mtasts_new(p->base, p->r, &p->o.mcfg, err, sizeof(err));
	if (p->m == NULL) {
		printf("{\"error\":");
		json_str(err);
		printf("}\n");
		return 1;
	}
	clock_gettime(CLOCK_MONOTONIC, &p->t0);
	if (p->o.cancel_ms > 0)
		timer_add(p, p->o.cancel_ms, cancel_cb);
	else if (p->o.free_ms > 0)
		timer_add(p, p->o.free_ms, free_cb);
	round_start(p);
	event_base_dispatch(p->base);
	if (p->o.cancel_ms > 0 || p->o.free_ms > 0)
		printf("{\"late_callbacks\":%d}\n", p->late);
	return p->early > 0 || p->late > 0 ? 3 : 0;
}

int
main(int argc, char **argv)
{
	static struct probe p;
	char err[512] = "";
	int rc;

	p.o.wait_ms = 1000;
	if (parse_args(argc, argv, &p) != 0)
		return usage();
	if ((p.base = event_base_new()) == NULL)
		return 1;
	if (evlog_open(p.o.log != NULL ? p.o.log : "/dev/null", "mtasts-probe") != 0)
		return 1;
	if ((p.r = resolver_new(p.base, &p.o.rcfg, err, sizeof(err))) == NULL) {
		printf("{\"error\":");
		json_str(err);
		printf("}\n");
		rc = 1;
	} else
		rc = probe_run(&p);
	mtasts_free(&p.m);
	resolver_free(&p.r);
	if (p.timer != NULL)
		event_free(p.timer);
	evlog_close();
	event_base_free(p.base);
	return rc;
}
