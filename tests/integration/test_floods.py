"""Floods and slow peers (issue 9): connection limits, slowloris, a client that
never reads its replies, and the memory cost of idle sessions.

Every test runs the real binary ($TLSRELAY_BIN) on loopback with the aiosmtpd
next hop, asserts the relay keeps serving other clients, and reads the
relay's resident set size from /proc/PID/status (VmRSS).  Bounds are for the
ASan build the tests normally run (ASan adds redzones and a quarantine; a
release build uses far less).

Run: TLSRELAY_BIN=$PWD/build/asan/tlsrelay /usr/bin/python3 -m pytest -q \
         tests/integration/test_floods.py
"""

import asyncio
import errno
import socket
import time

import pytest

from smtpclient import SMTPClient

LOCAL = "example.org, example.net"

# Upper bounds asserted below (kB of VmRSS, ASan build).
NEVER_READS_RSS_LIMIT_KB = 64 * 1024       # whole process, while a client never reads
NEVER_READS_GROWTH_LIMIT_KB = 8 * 1024     # growth caused by that client
IDLE_SESSION_LIMIT_KB = 160                # per idle session (500 of them)


def gateway(nh_port, relay=None, **listener):
    l = {"mode": "gateway", "local_domains": LOCAL,
         "next_hop": "127.0.0.1:%d" % nh_port, "next_hop_tls": "none",
         "max_connections": "1000", "max_connections_per_ip": "1000"}
    l.update({k: str(v) for k, v in listener.items()})
    return {"relay": dict(relay or {}), "listener:in": l}


def body(n):
    return b"From: b@sender.test\r\nSubject: flood %d\r\n\r\nhello %d\r\n" % (n, n)


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for pid %d" % pid)


class BoundClient(SMTPClient):
    """SMTPClient whose connection comes from a chosen loopback address."""

    def __init__(self, port, source, timeout=10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                             source_address=(source, 0))
        self.timeout = timeout
        self.buf = b""
        self.tls = False


def deliver_one(port, n, nh, source=None):
    """A full transaction on a new session; the next hop must get it."""
    before = len(nh.messages)
    c = BoundClient(port, source) if source else SMTPClient(port)
    with c:
        b = c.banner()
        assert b.code == 220, "new session refused: %r" % b
        assert c.ehlo().code == 250
        rs = c.transaction("b@sender.test", ["a@example.org"], body(n))
        assert [x.code for x in rs] == [250, 250, 354, 250], rs
        c.quit()
    assert any(m.content == body(n) for m in nh.wait_for(before + 1, 5)), \
        "message %d not at the next hop" % n


async def _banner(port, hold, source=None):
    """Connect, read the first line; keep the connection open when hold."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, local_addr=(source, 0) if source else None)
    line = await asyncio.wait_for(reader.readline(), 10)
    closed = False
    if not line.startswith(b"220"):
        rest = await asyncio.wait_for(reader.read(), 5)
        closed = rest == b""
    if not hold:
        writer.close()
    return line, closed, (reader, writer)


def flood(port, n, hold=True, source=None):
    """n connections at once; returns [(first line, closed after it, rw)]."""
    async def main():
        return await asyncio.gather(*(_banner(port, hold, source) for _ in range(n)))
    return asyncio.run(main())


def close_all(conns):
    for _, _, (_, w) in conns:
        try:
            w.transport.abort()
        except Exception:
            pass


def reject_events(r, reason_part):
    return [e for e in r.events() if e.get("event") == "reject" and e.get("command") == "connect"
            and e.get("code") == 421 and reason_part in str(e.get("reason", ""))]


def test_listener_max_connections_flood(relay, nexthop):
    nh = nexthop()
    r = relay(gateway(nh.port, max_connections="5"))
    time.sleep(0.3)                    # the readiness probe's connection is gone
    holders = [SMTPClient(r.port) for _ in range(5)]
    for h in holders:
        assert h.banner().code == 220
    t0 = time.monotonic()
    refused = flood(r.port, 200, hold=False)
    took = time.monotonic() - t0
    bad = [(l, c) for l, c, _ in refused if not (l.startswith(b"421 4.7.0 ") and c)]
    assert not bad, "%d of 200 flood connections not refused with one 421 4.7.0 line and " \
        "a close, e.g. %r" % (len(bad), bad[:3])
    assert took < 10, "refusing 200 connections took %.1fs" % took
    ev = r.wait_events(lambda ev: len(reject_events(r, "too many connections")) >= 200)
    assert len(reject_events(r, "too many connections")) >= 200, \
        "reject events: %d" % len(reject_events(r, "too many connections"))
    # the sessions inside the limit still work during and after the flood
    h = holders[0]
    assert h.ehlo().code == 250
    rs = h.transaction("b@sender.test", ["a@example.org"], body(1))
    assert [x.code for x in rs] == [250, 250, 354, 250], rs
    for h in holders:
        h.quit()
    # the slots are free again
    deadline = time.monotonic() + 3
    while True:
        try:
            deliver_one(r.port, 2, nh)
            break
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    assert r.alive()


def test_max_connections_per_ip_flood(relay, nexthop):
    nh = nexthop()
    r = relay(gateway(nh.port, max_connections="100", max_connections_per_ip="3"))
    time.sleep(0.3)
    held = flood(r.port, 3)
    try:
        assert [l[:4] for l, _, _ in held] == [b"220 "] * 3, [l for l, _, _ in held]
        refused = flood(r.port, 50, hold=False)
        bad = [(l, c) for l, c, _ in refused if not (l.startswith(b"421 4.7.0 ") and c)]
        assert not bad, "%d of 50 over-the-limit connections not refused, e.g. %r" \
            % (len(bad), bad[:3])
        ev = r.wait_events(lambda ev: len(reject_events(r, "from your address")) >= 50)
        rej = reject_events(r, "from your address")
        assert len(rej) >= 50 and all(e.get("client_ip") == "127.0.0.1" for e in rej), rej[:3]
        # another address is served while 127.0.0.1 is at its limit
        deliver_one(r.port, 3, nh, source="127.0.0.2")
        others = flood(r.port, 3, source="127.0.0.3")
        assert [l[:4] for l, _, _ in others] == [b"220 "] * 3, others
        close_all(others)
    finally:
        close_all(held)
    assert r.alive()


def slowloris(c, data, interval, limit_s):
    """Send data one byte per interval until the relay answers or closes, or
    limit_s passes.  Returns (seconds, what the relay sent, closed)."""
    t0 = time.monotonic()
    i = 0
    c.sock.setblocking(True)
    while time.monotonic() - t0 < limit_s:
        if i < len(data):
            try:
                c.sock.sendall(data[i:i + 1])
            except (BrokenPipeError, ConnectionResetError):
                return time.monotonic() - t0, c.buf, True
            i += 1
        c.sock.settimeout(interval)
        try:
            chunk = c.sock.recv(4096)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return time.monotonic() - t0, c.buf, True
        if not chunk:
            return time.monotonic() - t0, c.buf, True
        c.buf += chunk
        if c.buf.endswith(b"\r\n"):
            got, c.buf = c.buf, b""
            return time.monotonic() - t0, got, c.closed_by_peer(3)
    return time.monotonic() - t0, c.buf, False


@pytest.mark.parametrize("phase", ["command", "data"])
def test_slowloris_cut_off(phase, relay, nexthop):
    """One byte per second: the per-state timeout (2 s) must end the session
    within a few seconds, whatever the trickle - RFC 5321 §4.5.3.2 times the
    wait for a whole command (and issue 9: slowloris is cut off)."""
    nh = nexthop()
    r = relay(gateway(nh.port, relay={"command_timeout": "2", "data_timeout": "2"}))
    c = SMTPClient(r.port)
    assert c.banner().code == 220
    assert c.ehlo().code == 250
    if phase == "data":
        for line, code in (("MAIL FROM:<b@sender.test>", 250), ("RCPT TO:<a@example.org>", 250),
                           ("DATA", 354)):
            assert c.cmd(line).code == code
        data = b"Subject: slow\r\n\r\n" + b"s" * 200
    else:
        data = b"NOOP " + b"s" * 200
    took, got, closed = slowloris(c, data, 1.0, 11)
    c.close()
    assert got.startswith(b"421 4.4.2 "), \
        "%s phase, one byte per second for %.0fs with a 2 s timeout: relay sent %r " \
        "(want 421 4.4.2 and a close)" % (phase, took, got[:200])
    assert closed, "421 sent but the connection was left open"
    assert took < 7, "cut off only after %.1fs (timeout 2 s)" % took
    time.sleep(0.3)
    assert nh.messages == [], "a partial message reached the next hop"
    deliver_one(r.port, 7, nh)
    assert r.alive()


def relay_rx_queue(relay_port, client_port):
    """rx_queue of the relay's end of the connection (from /proc/net/tcp)."""
    want_local = "0100007F:%04X" % relay_port
    want_remote = "0100007F:%04X" % client_port
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            parts = line.split()
            if parts[1] == want_local and parts[2] == want_remote:
                return int(parts[4].split(":")[1], 16)
    return None


@pytest.mark.parametrize("verb", ["NOOP", "HELP"])
def test_client_never_reads_replies(verb, relay, nexthop):
    """100k pipelined NOOPs (or HELPs: 16 times more reply than command, more
    than the kernel's socket buffers hold) from a client that reads nothing:
    relay memory stays bounded, it serves others, and drops the stuck client
    after the timeout."""
    nh = nexthop()
    r = relay(gateway(nh.port, relay={"command_timeout": "4"}))
    deliver_one(r.port, 10, nh)               # warm up the allocator
    rss0 = rss_kb(r.pid)
    s = socket.create_connection(("127.0.0.1", r.port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.setblocking(False)
    port = s.getsockname()[1]
    data = b"EHLO flood.test\r\n" + (verb.encode() + b"\r\n") * 100_000
    sent, t0 = 0, time.monotonic()
    while sent < len(data) and time.monotonic() - t0 < 3:
        try:
            sent += s.send(data[sent:sent + 65536])
        except BlockingIOError:
            time.sleep(0.02)
    rss_peak = rss_kb(r.pid)
    # the relay still serves another client while this one is stuck
    deliver_one(r.port, 11, nh)
    rss_peak = max(rss_peak, rss_kb(r.pid))
    print("\nnever-reads (%s): client wrote %d of %d bytes in 3 s; relay VmRSS %d kB -> %d kB "
          "(growth %d kB)" % (verb, sent, len(data), rss0, rss_peak, rss_peak - rss0))
    # HELP: the replies overflow the kernel's buffers, so the relay must stop
    # reading: the rest waits in its socket's kernel receive queue
    rxq = relay_rx_queue(r.port, port)
    print("never-reads (%s): %s bytes unread in the relay's socket receive queue" % (verb, rxq))
    if verb == "HELP":
        assert rxq is not None and rxq > 0, "the relay read everything the client sent " \
            "(%d bytes) although the client reads no replies" % sent
    assert rss_peak < NEVER_READS_RSS_LIMIT_KB, "relay VmRSS %d kB" % rss_peak
    assert rss_peak - rss0 < NEVER_READS_GROWTH_LIMIT_KB, \
        "relay VmRSS grew %d kB for one client that never reads" % (rss_peak - rss0)
    # the write timeout (command_timeout = 4 s) ends the stuck session
    def gone(ev):
        sids = {e["session"] for e in ev if e.get("event") == "connect"
                and e.get("client_port") == port}
        return any(e.get("event") == "disconnect" and e.get("session") in sids for e in ev)
    ev = r.wait_events(gone, timeout=12)
    s.close()
    assert gone(ev), "the session of the client that never reads was not closed within " \
        "12 s (command_timeout = 4 s)"
    assert r.alive()


def test_rss_of_500_idle_sessions(relay, nexthop):
    nh = nexthop()
    r = relay(gateway(nh.port))
    deliver_one(r.port, 20, nh)
    time.sleep(0.2)
    rss0 = rss_kb(r.pid)
    n = 500

    async def main():
        conns = []
        for i in range(0, n, 100):
            conns += await asyncio.gather(*(_banner(r.port, True) for _ in range(100)))
        for _, _, (reader, writer) in conns:
            writer.write(b"EHLO idle.test\r\n")
        for _, _, (reader, writer) in conns:
            while True:
                line = await asyncio.wait_for(reader.readline(), 10)
                if line[3:4] != b"-":
                    break
        return conns

    loop = asyncio.new_event_loop()
    try:
        conns = loop.run_until_complete(main())
        assert [l[:4] for l, _, _ in conns] == [b"220 "] * n
        time.sleep(0.3)
        rss1 = rss_kb(r.pid)
        deliver_one(r.port, 21, nh)           # still serving with 500 sessions open
        for _, _, (_, w) in conns:
            w.transport.abort()
    finally:
        loop.close()
    per = (rss1 - rss0) / n
    print("\n500 idle sessions: relay VmRSS %d kB -> %d kB, %.1f kB per session"
          % (rss0, rss1, per))
    assert per < IDLE_SESSION_LIMIT_KB, "%.1f kB per idle session" % per
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if sum(1 for e in r.events() if e.get("event") == "disconnect") >= n + 2:
            break
        time.sleep(0.1)
    assert r.alive()
