/*
 * tests/integration/dnsprobe.c - test driver for policy/resolver.c.
 *
 *   dnsprobe [--conf F] [--ta F] [--fwd LIST] [--timeout MS] [--wait MS]
 *            [--warm] [--cancel | --free-pending] NAME TYPE [NAME TYPE ...]
 *
 * Runs the libevent loop, resolves each NAME TYPE through resolver_query()
 * and prints one JSON line per answer:
 *   {"name":..,"type":..,"sec":"secure","status":"ok","rcode":0,
 *    "canon":..,"ttl":..,"why":..,"has_ta":true,"early":false,
 *    "truncated":false,"elapsed_ms":..,"records":[...]}
 * "early" is true if a callback ran before resolver_query() returned (the
 * contract says never).  --warm resolves everything once first (unprinted)
 * so the printed round is answered from libunbound's cache, which is the
 * synchronous-callback path.  --cancel cancels every query at once, runs the
 * loop for --wait ms (default 2000) and prints {"cancelled":N,"callbacks":C}.
 * --free-pending frees the resolver with the queries in flight and prints
 * {"freed":N,"callbacks":C}.  ASan/LSan (build/asan) prove no leak and no
 * use-after-free.  Exit: 0 done, 1 resolver error, 2 usage, 3 contract
 * broken (a callback after cancel/free, or an early callback).
 */
#include "policy/resolver.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define MAXQ 32

struct probe;

struct slot {
	struct probe *p;
	const char *name;
	const char *type;
	int rrtype;
	struct dns_query *q;
	int returned;       /* resolver_query() has returned */
	int print;
};

struct probe {
	struct event_base *base;
	struct resolver *r;
	struct slot slot[MAXQ];
	int nslot;
	int outstanding;
	int callbacks;
	int early;
	struct timespec t0;
};

static const struct {
	const char *name;
	int type;
} types[] = {
	{ "A", DNS_T_A }, { "AAAA", DNS_T_AAAA }, { "MX", DNS_T_MX },
	{ "TXT", DNS_T_TXT }, { "TLSA", DNS_T_TLSA }, { "CNAME", DNS_T_CNAME },
};

static int
type_num(const char *s)
{
	size_t i;

	for (i = 0; i < sizeof(types) / sizeof(types[0]); i++)
		if (strcasecmp(types[i].name, s) == 0)
			return types[i].type;
	return -1;
}

static void
json_str(const char *s, size_t len)
{
	size_t i;

	putchar('"');
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '"' || c == '\\')
			printf("\\%c", c);
		else if (c < 0x20 || c >= 0x7f)
			printf("\\u%04x", c);
		else
			putchar(c);
	}
	putchar('"');
}

static void
json_cstr(const char *s)
{
	json_str(s, strlen(s));
}

static void
print_rr(const struct dns_rr *rr)
{
	printf("{\"ttl\":%u,", rr->ttl);
	switch (rr->type) {
	case DNS_T_MX:
		printf("\"pref\":%d,\"host\":", rr->u.mx.pref);
		json_cstr(rr->u.mx.host);
		break;
	case DNS_T_A:
	case DNS_T_AAAA:
		printf("\"family\":%d,\"addr\":", rr->u.addr.ss.ss_family);
		json_cstr(rr->u.addr.text);
		break;
	case DNS_T_TLSA:
		printf("\"usage\":%u,\"selector\":%u,\"mtype\":%u,\"len\":%zu,"
		    "\"text\":", rr->u.tlsa.usage, rr->u.tlsa.selector,
		    rr->u.tlsa.mtype, rr->u.tlsa.len);
		json_cstr(rr->u.tlsa.text);
		break;
	case DNS_T_TXT:
		printf("\"len\":%zu,\"text\":", rr->u.txt.len);
		json_str(rr->u.txt.text, rr->u.txt.len);
		break;
	case DNS_T_CNAME:
		printf("\"target\":");
		json_cstr(rr->u.cname);
		break;
	}
	putchar('}');
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
print_answer(struct slot *s, const struct dns_answer *a)
{
	size_t i;

	printf("{\"name\":");
	json_cstr(s->name);
	printf(",\"type\":\"%s\",\"sec\":\"%s\",\"status\":\"%s\",\"rcode\":%d,"
	    "\"canon\":", s->type, dns_sec_name(a->sec),
	    dns_status_name(a->status), a->rcode);
	json_cstr(a->canon);
	printf(",\"ttl\":%d,\"why\":", a->ttl);
	json_cstr(a->why_bogus);
	printf(",\"has_ta\":%s,\"early\":%s,\"truncated\":%s,\"elapsed_ms\":%ld,"
	    "\"records\":[", resolver_has_trust_anchor(s->p->r) ? "true" :
	    "false", s->returned ? "false" : "true",
	    a->truncated ? "true" : "false", elapsed_ms(s->p));
	for (i = 0; i < a->n; i++) {
		if (i > 0)
			putchar(',');
		print_rr(&a->rr[i]);
	}
	printf("]}\n");
	fflush(stdout);
}

static void
probe_cb(void *arg, const struct dns_answer *a)
{
	struct slot *s = arg;

	s->p->callbacks++;
	if (!s->returned)
		s->p->early++;
	s->q = NULL;
	if (s->print)
		print_answer(s, a);
	if (--s->p->outstanding == 0)
		event_base_loopbreak(s->p->base);
}

/* Starts every query; returns the number started. */
static int
probe_start(struct probe *p, int print)
{
	int i, n = 0;

	for (i = 0; i < p->nslot; i++) {
		struct slot *s = &p->slot[i];

		s->returned = 0;
		s->print = print;
		p->outstanding++;
		s->q = resolver_query(p->r, s->name, s->rrtype, probe_cb, s);
		s->returned = 1;
		if (s->q == NULL) {
			p->outstanding--;
			printf("{\"name\":");
			json_cstr(s->name);
			printf(",\"error\":\"resolver_query failed\"}\n");
			continue;
		}
		n++;
	}
	return n;
}

static void
probe_run(struct probe *p, int wait_ms)
{
	struct timeval tv = { wait_ms / 1000, (wait_ms % 1000) * 1000 };

	if (wait_ms > 0)
		event_base_loopexit(p->base, &tv);
	if (p->outstanding > 0 || wait_ms > 0)
		event_base_dispatch(p->base);
}

static int
probe_cancel(struct probe *p, int wait_ms)
{
	int i, n = probe_start(p, 0);

	for (i = 0; i < p->nslot; i++)
		resolver_cancel(&p->slot[i].q);
	p->outstanding = 0;
	probe_run(p, wait_ms);
	printf("{\"cancelled\":%d,\"callbacks\":%d}\n", n, p->callbacks);
	return p->callbacks == 0 ? 0 : 3;
}

static int
probe_free_pending(struct probe *p)
{
	int n = probe_start(p, 0);

	resolver_free(&p->r);
	printf("{\"freed\":%d,\"callbacks\":%d}\n", n, p->callbacks);
	return p->callbacks == 0 ? 0 : 3;
}

static int
usage(void)
{
	fprintf(stderr, "usage: dnsprobe [--conf F] [--ta F] [--fwd LIST] "
	    "[--timeout MS] [--wait MS] [--warm] [--cancel|--free-pending] "
	    "NAME TYPE [NAME TYPE ...]\n");
	return 2;
}

struct opts {
	struct resolver_config cfg;
	int wait_ms, warm, cancel, free_pending;
};

/* Parses options into o and NAME TYPE pairs into p. Returns 0 or -1. */
static int
parse_args(int argc, char **argv, struct opts *o, struct probe *p)
{
	int i;

	for (i = 1; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (strcmp(a, "--warm") == 0)
			o->warm = 1;
		else if (strcmp(a, "--cancel") == 0)
			o->cancel = 1;
		else if (strcmp(a, "--free-pending") == 0)
			o->free_pending = 1;
		else if (v == NULL)
			return -1;
		else if (strcmp(a, "--conf") == 0)
			o->cfg.unbound_conf = v, i++;
		else if (strcmp(a, "--ta") == 0)
			o->cfg.trust_anchor_file = v, i++;
		else if (strcmp(a, "--fwd") == 0)
			o->cfg.resolver = v, i++;
		else if (strcmp(a, "--timeout") == 0)
			o->cfg.timeout_ms = atoi(v), i++;
		else if (strcmp(a, "--wait") == 0)
			o->wait_ms = atoi(v), i++;
		else
			return -1;
	}
	for (; i + 1 < argc && p->nslot < MAXQ; i += 2) {
		struct slot *s = &p->slot[p->nslot++];

		s->p = p;
		s->name = argv[i];
		s->type = argv[i + 1];
		if ((s->rrtype = type_num(argv[i + 1])) < 0)
			return -1;
	}
	return i == argc && p->nslot > 0 ? 0 : -1;
}

int
main(int argc, char **argv)
{
	static struct probe p;
	struct opts o = { .wait_ms = 2000 };
	char err[256] = "";
	int rc = 0;

	if (parse_args(argc, argv, &o, &p) != 0)
		return usage();
	if ((p.base = event_base_new()) == NULL)
		return 1;
	if ((p.r = resolver_new(p.base, &o.cfg, err, sizeof(err))) == NULL) {
		printf("{\"error\":");
		json_cstr(err);
		printf("}\n");
		event_base_free(p.base);
		return 1;
	}
	if (o.warm) {
		probe_start(&p, 0);
		probe_run(&p, 0);
		p.callbacks = 0;
	}
	clock_gettime(CLOCK_MONOTONIC, &p.t0);
	if (o.cancel)
		rc = probe_cancel(&p, o.wait_ms);
	else if (o.free_pending)
		rc = probe_free_pending(&p);
	else {
		probe_start(&p, 1);
		probe_run(&p, 0);
	}
	if (p.early > 0)
		rc = 3;
	resolver_free(&p.r);
	event_base_free(p.base);
	return rc;
}
