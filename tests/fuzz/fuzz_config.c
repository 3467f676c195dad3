/*
 * fuzz_config.c - libFuzzer target for config_load() (relay/config.c).
 *
 * The input is a relay.ini.  It is written to a memfd that config_load()
 * opens as /proc/self/fd/N, then the result is freed with config_free().
 * Besides memory errors and leaks it checks the contract in relay/config.h:
 * a loaded configuration passed the cross-field checks (at least one
 * listener; each has a mode and an address; a gateway has next_hop and
 * local_domains; tls_cert and tls_key go together; every [domain:] has a
 * level or an mta_sts_dns_failure; counts within their arrays).  The error messages config_load()
 * prints go to /dev/null: stderr (the FILE) is redirected, fd 2 is kept so
 * sanitizer reports still show.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "relay/config.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x) do { if (!(x)) __builtin_trap(); } while (0)

static int fuzz_fd = -1;
static char fuzz_path[64];

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	FILE *null = fopen("/dev/null", "w");

	(void)argc;
	(void)argv;
	if (null != NULL)
		stderr = null;
	fuzz_fd = memfd_create("fuzz_config.ini", MFD_CLOEXEC);
	CHECK(fuzz_fd >= 0);
	snprintf(fuzz_path, sizeof(fuzz_path), "/proc/self/fd/%d", fuzz_fd);
	return 0;
}

static void
fuzz_check_listener(const struct listener_config *l)
{
	CHECK(l->name != NULL);
	CHECK(l->mode == MODE_GATEWAY || l->mode == MODE_SMARTHOST);
	CHECK(l->naddrs >= 1 && l->naddrs <= CONFIG_MAX_ADDRS);
	CHECK(l->nnetworks <= CONFIG_MAX_LIST);
	CHECK(l->ndomains <= CONFIG_MAX_LIST);
	CHECK((l->tls_cert == NULL) == (l->tls_key == NULL));
	if (l->mode == MODE_GATEWAY) {
		CHECK(l->next_hop_host != NULL);
		CHECK(l->next_hop_port >= 1 && l->next_hop_port <= 65535);
		CHECK(l->ndomains >= 1);
	}
	if (l->require_tls != REQUIRE_TLS_NO)
		CHECK(l->tls_cert != NULL);
}

static void
fuzz_check(const struct relay_config *c)
{
	const struct listener_config *l;
	const struct domain_config *d;

	CHECK(c->listeners != NULL);
	CHECK(c->hostname != NULL && c->helo_name != NULL);
	CHECK(c->max_message_size >= 1024);
	CHECK(c->port >= 1 && c->port <= 65535);
	for (l = c->listeners; l != NULL; l = l->next)
		fuzz_check_listener(l);
	for (d = c->domains; d != NULL; d = d->next)
		CHECK(d->name != NULL && (d->level != TLS_LEVEL_INVALID ||
		    d->sts_dns_failure != STS_DNS_INHERIT));
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct relay_config *cfg;

	CHECK(ftruncate(fuzz_fd, 0) == 0);
	CHECK(pwrite(fuzz_fd, data, size, 0) == (ssize_t)size);
	cfg = config_load(fuzz_path);
	if (cfg != NULL) {
		fuzz_check(cfg);
		config_free(&cfg);
		CHECK(cfg == NULL);
	}
	return 0;
}
