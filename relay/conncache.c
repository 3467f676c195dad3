/*
 * conncache.c - the next-hop connection cache.  See conncache.h.
 */
#include <string.h>

#include <event2/event.h>

#include "relay/conncache.h"
#include "relay/upstream.h"

struct cc_entry {
	char key[65];
	struct upstream *up;
	struct event *timer;
};

static struct cc_entry cc[CONNCACHE_SLOTS];

static void
cc_drop(struct cc_entry *e)
{
	if (e->timer != NULL)
		event_free(e->timer);
	e->timer = NULL;
	upstream_free(&e->up);
	e->key[0] = '\0';
}

static void
cc_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	cc_drop(arg);
}

/* Anything from an idle connection (421, a close, a timeout) ends it. */
static void
cc_up_cb(void *arg, enum upstream_event ev, const struct smtp_reply *r)
{
	(void)ev;
	(void)r;
	cc_drop(arg);
}

void
conncache_put(struct upstream **upp, struct event_base *base)
{
	struct timeval tv = { CONNCACHE_IDLE, 0 };
	struct upstream *up = *upp;
	struct cc_entry *e = NULL;
	size_t i;

	*upp = NULL;
	if (up == NULL)
		return;
	for (i = 0; i < CONNCACHE_SLOTS && e == NULL; i++)
		if (cc[i].up == NULL)
			e = &cc[i];
	if (e == NULL || !upstream_ready(up) || upstream_uses(up) >= CONNCACHE_USES ||
	    (e->timer = evtimer_new(base, cc_timer_cb, e)) == NULL) {
		upstream_free(&up);
		return;
	}
	upstream_policy_key(upstream_target(up), e->key);
	upstream_detach(up, cc_up_cb, e);
	e->up = up;
	evtimer_add(e->timer, &tv);
}

struct upstream *
conncache_get(const struct upstream_target *t)
{
	char key[65];
	struct upstream *up;
	size_t i;

	upstream_policy_key(t, key);
	for (i = 0; i < CONNCACHE_SLOTS; i++) {
		if (cc[i].up == NULL || strcmp(cc[i].key, key) != 0 || !upstream_ready(cc[i].up))
			continue;
		up = cc[i].up;
		cc[i].up = NULL;
		event_free(cc[i].timer);
		cc[i].timer = NULL;
		cc[i].key[0] = '\0';
		return up;
	}
	return NULL;
}

void
conncache_flush(void)
{
	size_t i;

	for (i = 0; i < CONNCACHE_SLOTS; i++)
		if (cc[i].up != NULL)
			cc_drop(&cc[i]);
}
