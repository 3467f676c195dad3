/*
 * fuzz_session.c - a whole SMTP server session (relay/session.c, cmd.c,
 * inline.c) driven over a socketpair by the fuzzer's bytes.
 *
 * The session is a gateway whose next hop is a closed loopback port, so
 * every relayed transaction ends in the 4xx paths.  Each input is written
 * to the client end, the write side shut, and the event loop run briefly;
 * then the session is closed and freed.  ASan/UBSan report anything unsafe.
 */
#include <fcntl.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "relay/config.h"
#include "relay/evlog.h"
#include "relay/listener.h"
#include "relay/session.h"

static struct relay_config *fuzz_cfg;
static struct event_base *fuzz_base;
static struct listener fuzz_listener;

static const char fuzz_ini[] =
    "[relay]\nhostname = fuzz.test\ncommand_timeout = 1\ndata_timeout = 1\n"
    "max_message_size = 4096\n"
    "[listener:in]\nmode = gateway\nlisten = 127.0.0.1:1\nlocal_domains = example.org\n"
    "next_hop = 127.0.0.1:1\nnext_hop_tls = none\nmax_recipients = 5\n";

static void
fuzz_init(void)
{
	char path[] = "/tmp/fuzz_session_XXXXXX";
	int fd = mkstemp(path);

	if (fd < 0 || write(fd, fuzz_ini, sizeof(fuzz_ini) - 1) < 0)
		abort();
	close(fd);
	fuzz_cfg = config_load(path);
	unlink(path);
	if (fuzz_cfg == NULL)
		abort();
	evlog_open("/dev/null", "fuzz.test");
	fuzz_base = event_base_new();
	fuzz_listener.cfg = fuzz_cfg;
	fuzz_listener.lc = fuzz_cfg->listeners;
	fuzz_listener.base = fuzz_base;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(12345) };
	struct timeval tv = { 0, 20000 };
	int sv[2];

	if (fuzz_base == NULL)
		fuzz_init();
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
		return 0;
	fcntl(sv[0], F_SETFL, O_NONBLOCK);
	fcntl(sv[1], F_SETFL, O_NONBLOCK);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	fuzz_listener.nconn++;
	session_accept(&fuzz_listener, sv[0], (struct sockaddr *)&sin, sizeof(sin));
	if (size > 0 && write(sv[1], data, size) < 0)
		size = 0;
	shutdown(sv[1], SHUT_WR);
	event_base_loopexit(fuzz_base, &tv);
	event_base_dispatch(fuzz_base);
	session_close_all("fuzz end");
	event_base_loop(fuzz_base, EVLOOP_NONBLOCK);
	close(sv[1]);
	return 0;
}
