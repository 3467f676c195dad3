/*
 * test_config.c - relay.ini parsing: valid files load, every error names
 * file:line, values are range-checked.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>
#include <arpa/inet.h>

#include <cmocka.h>

#include "relay/config.h"

struct config_case {
	const char *name;
	const char *text;
	int ok;                 /* config_load succeeds */
	const char *want_err;   /* substring of stderr ("" = none checked) */
};

#define GW "[listener:in]\nmode = gateway\nlisten = 127.0.0.1:2525\n" \
	"local_domains = example.org\nnext_hop = 127.0.0.1:2526\n"

static const struct config_case config_cases[] = {
	{ "minimal gateway", GW, 1, "" },
	{ "smarthost", "[listener:out]\nmode = smarthost\nlisten = 127.0.0.1:2525, [::1]:2525\n", 1, "" },
	{ "units", "[relay]\nmax_message_size = 10M\ncommand_timeout = 2m\n" GW, 1, "" },
	{ "unknown key", "[relay]\nhostname = x\nbogus = 1\n" GW, 0, ":3: unknown key \"bogus\"" },
	{ "unknown section", "[nosuch]\na = b\n" GW, 0, ":1: unknown section [nosuch]" },
	{ "bad mode", "[listener:in]\nmode = gatewy\n", 0, ":2: bad mode \"gatewy\"" },
	{ "bad port", GW "listen = 127.0.0.1:99999\n", 0, ":6: bad listen address" },
	{ "bad host", GW "listen = localhost:25\n", 0, ":6: bad listen address" },
	{ "number range", GW "max_recipients = 0\n", 0, ":6: max_recipients = \"0\"" },
	{ "number junk", "[relay]\ncommand_timeout = 5x\n" GW, 0, ":2: command_timeout" },
	{ "size overflow", "[relay]\nmax_message_size = 99999999999999999999\n" GW, 0, ":2: max_message_size" },
	{ "bad level", "[outbound]\ndefault_level = maybe\n" GW, 0, ":2: bad TLS level \"maybe\"" },
	{ "next_hop dane refused", GW "next_hop_tls = dane\n", 0, ":6: bad TLS level" },
	{ "bad cidr", GW "relay_networks = 10.0.0.0/33\n", 0, ":6: bad network" },
	{ "gateway needs next_hop", "[listener:in]\nmode = gateway\nlisten = 127.0.0.1:1\nlocal_domains = a\n",
	  0, ":1: [listener:in]: a gateway needs next_hop" },
	{ "cert without key", GW "tls_cert = /x\n", 0, "tls_cert and tls_key go together" },
	{ "require_tls needs cert", GW "require_tls = yes\n", 0, "require_tls needs tls_cert" },
	{ "no listener", "[relay]\nhostname = x\n", 0, "no [listener:NAME] section" },
	{ "domain without level", GW "[domain:example.com]\n", 1, "" },
	{ "domain bad level", GW "[domain:example.com]\nlevel = foo\n", 0, ":7: bad TLS level" },
	{ "syntax error", "[relay\n" GW, 0, ":1:" },
	{ "bool", "[outbound]\ndane = maybe\n" GW, 0, ":2: bad boolean" },
};

static char *
slurp(const char *path)
{
	static char buf[8192];
	FILE *fp = fopen(path, "r");
	size_t n = 0;

	if (fp != NULL) {
		n = fread(buf, 1, sizeof(buf) - 1, fp);
		fclose(fp);
	}
	buf[n] = '\0';
	return buf;
}

static void
test_config_table(void **state)
{
	char ini[] = "/tmp/test_config_XXXXXX", errpath[64];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(config_cases) / sizeof(config_cases[0]); i++) {
		const struct config_case *c = &config_cases[i];
		struct relay_config *cfg;
		int fd, saved = dup(2), efd;
		char *err;

		strcpy(ini, "/tmp/test_config_XXXXXX");
		fd = mkstemp(ini);
		assert_true(fd >= 0);
		assert_int_equal(write(fd, c->text, strlen(c->text)), (int)strlen(c->text));
		close(fd);
		snprintf(errpath, sizeof(errpath), "%s.err", ini);
		efd = open(errpath, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		fflush(stderr);
		dup2(efd, 2);
		cfg = config_load(ini);
		fflush(stderr);
		dup2(saved, 2);
		close(saved);
		close(efd);
		err = slurp(errpath);
		if ((cfg != NULL) != c->ok)
			fail_msg("%s: got ok=%d, want %d (stderr: %s)", c->name, cfg != NULL, c->ok, err);
		if (c->want_err[0] != '\0' && strstr(err, c->want_err) == NULL)
			fail_msg("%s: stderr \"%s\" lacks \"%s\"", c->name, err, c->want_err);
		if (!c->ok && strstr(err, ini) == NULL)
			fail_msg("%s: error does not name the file: %s", c->name, err);
		config_free(&cfg);
		assert_null(cfg);
		unlink(ini);
		unlink(errpath);
	}
}

static void
test_config_values(void **state)
{
	char ini[] = "/tmp/test_config_XXXXXX";
	const char *text = "[relay]\nmax_message_size = 10M\ncommand_timeout = 2m\n" GW
	    "relay_networks = 10.0.0.0/8\n[domain:Example.COM.]\nlevel = verify\n";
	int fd = mkstemp(ini);
	struct relay_config *cfg;
	struct cidr c;
	struct sockaddr_in sin = { .sin_family = AF_INET };

	(void)state;
	assert_int_equal(write(fd, text, strlen(text)), (int)strlen(text));
	close(fd);
	cfg = config_load(ini);
	unlink(ini);
	assert_non_null(cfg);
	assert_int_equal(cfg->max_message_size, 10 * 1024 * 1024);
	assert_int_equal(cfg->command_timeout, 120);
	assert_int_equal(cfg->listeners->mode, MODE_GATEWAY);
	assert_string_equal(cfg->listeners->domains[0], "example.org");
	assert_int_equal(cfg->listeners->next_hop_port, 2526);
	assert_string_equal(cfg->domains->name, "example.com");
	assert_int_equal(cfg->domains->level, TLS_VERIFY);
	inet_pton(AF_INET, "10.1.2.3", &sin.sin_addr);
	assert_true(cidr_match(&cfg->listeners->networks[0], (struct sockaddr *)&sin));
	inet_pton(AF_INET, "11.1.2.3", &sin.sin_addr);
	assert_false(cidr_match(&cfg->listeners->networks[0], (struct sockaddr *)&sin));
	assert_int_equal(cidr_parse("192.168.0.0/17", &c), 0);
	inet_pton(AF_INET, "192.168.127.255", &sin.sin_addr);
	assert_true(cidr_match(&c, (struct sockaddr *)&sin));
	inet_pton(AF_INET, "192.168.128.0", &sin.sin_addr);
	assert_false(cidr_match(&c, (struct sockaddr *)&sin));
	config_free(&cfg);
}

/* A repeated list key or an indented continuation adds to the list. */
static void
test_config_list_continuation(void **state)
{
	char ini[] = "/tmp/test_config_XXXXXX";
	const char *text = "[listener:in]\nmode = gateway\nlisten = 127.0.0.1:2525\n"
	    "next_hop = 127.0.0.1:2526\nlocal_domains = a.org, c.org\n  b.org\n"
	    "local_domains = d.org\nrelay_networks = 10.0.0.0/8\n";
	int fd = mkstemp(ini);
	struct relay_config *cfg;

	(void)state;
	assert_int_equal(write(fd, text, strlen(text)), (int)strlen(text));
	close(fd);
	cfg = config_load(ini);
	unlink(ini);
	assert_non_null(cfg);
	assert_int_equal(cfg->listeners->ndomains, 4);
	assert_string_equal(cfg->listeners->domains[2], "b.org");
	assert_string_equal(cfg->listeners->domains[3], "d.org");
	/* relay_networks given: the default (loopback) is replaced, not extended. */
	assert_int_equal(cfg->listeners->nnetworks, 1);
	config_free(&cfg);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_config_table),
		cmocka_unit_test(test_config_values),
		cmocka_unit_test(test_config_list_continuation),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
