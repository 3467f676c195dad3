/*
 * fuzz_smtp_parse.c - libFuzzer target for relay/smtp_parse.c.
 *
 * The input, cut at its first NUL as a command line would be, goes through
 * smtp_cmd_split() and then, whatever the verb, through smtp_parse_mail(),
 * smtp_parse_rcpt() (with and without SMTPUTF8) and smtp_parse_helo().  Besides
 * the sanitizers, it checks what callers rely on: results are NUL-terminated
 * within their buffers, addr is local "@" domain, non-ASCII only with SMTPUTF8
 * and then valid UTF-8, and errors carry a known code and static texts.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "relay/json.h"
#include "relay/smtp_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x) do { if (!(x)) __builtin_trap(); } while (0)

static int
has_8bit(const char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s >= 0x80)
			return 1;
	return 0;
}

static void
check_err(const struct smtp_err *e)
{
	CHECK(e->code == 501 || e->code == 553 || e->code == 555);
	CHECK(e->enh != NULL && e->text != NULL && e->text[0] != '\0');
}

static void
check_path(const struct smtp_path *p, int utf8_allowed)
{
	char want[sizeof(p->addr)];

	CHECK(memchr(p->local, '\0', sizeof(p->local)) != NULL);
	CHECK(memchr(p->domain, '\0', sizeof(p->domain)) != NULL);
	CHECK(memchr(p->addr, '\0', sizeof(p->addr)) != NULL);
	if (p->null) {
		CHECK(p->addr[0] == '\0');
		return;
	}
	if (p->postmaster) {
		CHECK(strcmp(p->addr, "Postmaster") == 0);
		return;
	}
	CHECK(strlen(p->local) + 1 + strlen(p->domain) < sizeof(want));
	strcpy(want, p->local);
	strcat(want, "@");
	strcat(want, p->domain);
	CHECK(strcmp(want, p->addr) == 0);
	CHECK(strlen(p->domain) <= SMTP_DOMAIN_MAX && p->domain[0] != '\0');
	CHECK(p->utf8 == has_8bit(p->addr));
	CHECK(!p->utf8 || utf8_allowed);
	CHECK(!p->utf8 || utf8_valid(p->addr, strlen(p->addr)));
}

static void
fuzz_args(const char *args)
{
	struct smtp_path path;
	struct smtp_params params;
	struct smtp_err err;
	int ok;

	for (ok = 0; ok < 2; ok++) {
		if (smtp_parse_mail(args, ok, &path, &params, &err) == 0) {
			check_path(&path, params.smtputf8);
			CHECK(!params.smtputf8 || ok);
			CHECK(params.size >= -1);
			CHECK(params.body == 0 || params.body == 7 || params.body == 8);
		} else {
			check_err(&err);
		}
		if (smtp_parse_rcpt(args, ok, &path, &err) == 0) {
			CHECK(!path.null);
			check_path(&path, ok);
		} else {
			check_err(&err);
		}
	}
	if (smtp_parse_helo(args, &err) != 0)
		check_err(&err);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *line = malloc(size + 1);
	char verb[16];
	const char *args;

	if (line == NULL)
		return 0;
	memcpy(line, data, size);
	line[size] = '\0';
	if (smtp_cmd_split(line, verb, sizeof(verb), &args) == 0) {
		CHECK(strlen(verb) > 0 && strlen(verb) < sizeof(verb));
		CHECK(args >= line && args <= line + strlen(line));
		fuzz_args(args);
	}
	fuzz_args(line);
	free(line);
	return 0;
}
