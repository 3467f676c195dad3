/*
 * proxy.h - HAProxy PROXY protocol header parser, versions 1 and 2
 * (https://www.haproxy.org/download/2.8/doc/proxy-protocol.txt).
 *
 * A listener with proxy_protocol = v1 | v2 reads the header before anything
 * else, feeding whatever bytes it has; no bytes are consumed until the whole
 * header is there.  Pure: no I/O, no allocation.  Only TCP over IPv4/IPv6 is
 * accepted (SMTP runs on TCP); UDP and AF_UNIX addresses are refused.
 *
 * "local" means: use the real connection endpoints.  It is set for a v2
 * LOCAL command (the proxy's own health check) and a v1 "PROXY UNKNOWN".
 * A v2 PROXY command with family UNSPEC is refused rather than treated as
 * local, so a proxy cannot lend its own (possibly relay-permitted) address
 * to an unknown client by accident.
 */
#ifndef RELAY_PROXY_H
#define RELAY_PROXY_H

#include <stddef.h>
#include <sys/socket.h>

#define PROXY_V1_MAX          107    /* whole v1 line, CRLF included (§2.1) */
#define PROXY_V2_HDR          16     /* signature, ver/cmd, family, length */
#define PROXY_V2_MAX_PAYLOAD  2048   /* address block + TLVs we accept */

struct proxy_hdr {
	int version;                   /* 1 or 2 */
	int local;                     /* 1: no addresses; use the connection's own */
	int family;                    /* AF_INET, AF_INET6, or AF_UNSPEC when local */
	struct sockaddr_storage src;   /* the client: address and port */
	struct sockaddr_storage dst;   /* the address the client connected to */
};

/*
 * proxy_parse - parse a PROXY header of the given version (1 or 2) at the
 * start of buf[0..len).
 * Returns the header length (> 0: discard that many bytes, the SMTP stream
 * follows), 0 when buf is a proper prefix of a header that may still be
 * valid (read more), or -1 when it is not a valid header (*why gets a static
 * description; drop the connection).  *out is written only when > 0.
 */
int proxy_parse(const unsigned char *buf, size_t len, int version,
    struct proxy_hdr *out, const char **why);

#endif
