"""End-to-end tests of the foundation (issue 2): the gateway listener relaying
in-line to a next hop, the SMTP server side's protocol contract, STARTTLS,
hostile input, limits, timeouts, the JSON event log, `-t` and SIGTERM.

Every test runs the real binary ($TLSRELAY_BIN) on loopback against the
aiosmtpd next hop in smtpserver.py.  Protocol checks are written as data
(client line -> expected reply) and run by one driver, scenario().
"""

import asyncio
import hashlib
import re
import signal
import socket
import subprocess
import time

import pytest

from harness import can_connect, free_port, swaks
from smtpclient import SMTPClient, dot_stuff

LOCAL = "example.org, example.net"
GOOD_RCPT = "a@example.org"
SENDER = "b@sender.test"


def gateway(nh_port, pki=None, relay=None, outbound=None, **listener):
    """Config sections for one gateway listener relaying to 127.0.0.1:nh_port."""
    l = {"mode": "gateway", "local_domains": LOCAL,
         "next_hop": "127.0.0.1:%d" % nh_port, "next_hop_tls": "none",
         "max_connections": "1000", "max_connections_per_ip": "1000"}
    if pki is not None:
        l.update(tls_cert=pki.cert, tls_key=pki.key)
    l.update({k: str(v) for k, v in listener.items()})
    cfg = {"relay": dict(relay or {}), "listener:in": l}
    if outbound:
        cfg["outbound"] = dict(outbound)
    return cfg


def body(n=0, extra=b""):
    return (b"From: b@sender.test\r\nTo: a@example.org\r\nSubject: test %d\r\n"
            b"Message-Id: <%d@sender.test>\r\n\r\nhello %d\r\n" % (n, n, n)) + extra


def client(relay_or_port, **kw):
    port = relay_or_port if isinstance(relay_or_port, int) else relay_or_port.port
    return SMTPClient(port, **kw)


def session(r, name="client.test"):
    """Connected client past the banner and EHLO."""
    c = client(r)
    b = c.banner()
    assert b.code == 220, b
    e = c.ehlo(name)
    assert e.code == 250, e
    return c


def assert_nothing_delivered(nh, wait=1.0):
    time.sleep(wait)
    assert nh.messages == [], "next hop received: %r" % nh.messages


def expect(reply, pattern):
    assert re.match(pattern, str(reply), re.S), "got %r, want /%s/" % (str(reply), pattern)


# --- protocol scenarios, as data ---------------------------------------------
#
# Each scenario: (options, steps).  Each step: (str to send as one command
# line, or None to only read; regex the whole reply must match from its
# start).  "CLOSED" as the regex: the server must close the connection.
# options: "relay"/"listener" config overrides, "tls" (listener gets the dev
# certificate), "events" (event names the log must contain afterwards).

HELLO = [(None, r"220 relay\.test ESMTP tlsrelay"), ("EHLO client.test", r"250-relay\.test")]
TO_RCPT = HELLO + [("MAIL FROM:<b@sender.test>", r"250 ")]

SCENARIOS = {
    "banner": ({}, [(None, r"220 relay\.test ESMTP tlsrelay(\s|$)")]),
    "helo": ({"events": {"connect", "helo", "mail", "rcpt"}}, [(None, "220"), ("HELO client.test", r"250 "),
                  ("MAIL FROM:<b@sender.test>", r"250 "), ("RCPT TO:<a@example.org>", r"250 ")]),
    "noop-rset-help": ({}, HELLO + [("NOOP", r"250 "), ("RSET", r"250 "), ("HELP", r"214[ -]")]),
    "vrfy-reveals-nothing": ({}, HELLO + [("VRFY reject@example.org", r"252 2\.5\.2 "),
                                          ("VRFY postmaster", r"252 2\.5\.2 ")]),
    "expn": ({}, HELLO + [("EXPN staff", r"502 5\.5\.1")]),
    "unknown-command": ({"events": {"reject"}}, HELLO + [("FROBNICATE now", r"500 5\.5\.2"), ("NOOP", r"250 ")]),
    "mail-before-ehlo": ({"events": {"reject"}}, [(None, "220"), ("MAIL FROM:<b@sender.test>", r"503 5\.5\.1")]),
    "rcpt-before-mail": ({}, HELLO + [("RCPT TO:<a@example.org>", r"503 ")]),
    "data-before-rcpt": ({}, TO_RCPT + [("DATA", r"5[0-9][0-9] ")]),
    "quit": ({"events": {"connect", "helo", "disconnect"}}, HELLO + [("QUIT", r"221 "), (None, "CLOSED")]),
    "long-line-1100": ({"events": {"reject"}}, HELLO + [("NOOP " + "x" * 1100, r"500 5\.5\.2 Line too long"),
                                    ("NOOP", r"250 ")]),
    "long-line-70000": ({}, HELLO + [("NOOP " + "x" * 70000, r"500 5\.5\.2 Line too long"),
                                     ("NOOP", r"250 ")]),
    "long-mail-line": ({}, HELLO + [("MAIL FROM:<" + "a" * 1200 + "@sender.test>",
                                     r"500 5\.5\.2 Line too long"),
                                    ("MAIL FROM:<b@sender.test>", r"250 ")]),
    "size-param-too-big": ({"relay": {"max_message_size": "20000"}},
                           HELLO + [("MAIL FROM:<b@sender.test> SIZE=20001",
                                     r"552 5\.3\.4 Message size exceeds fixed limit"),
                                    ("MAIL FROM:<b@sender.test> SIZE=20000", r"250 ")]),
    "relay-denied": ({"events": {"mail", "reject"}}, TO_RCPT + [("RCPT TO:<a@elsewhere.test>",
                                     r"554 5\.7\.1 <a@elsewhere\.test>: Relay access denied")]),
    "relay-denied-suffix": ({}, TO_RCPT + [
        ("RCPT TO:<a@evilexample.org>", r"554 5\.7\.1 "),
        ("RCPT TO:<a@example.org.evil.test>", r"554 5\.7\.1 "),
        ("RCPT TO:<a@example.organic>", r"554 5\.7\.1 ")]),
    "relay-denied-source-route": ({}, TO_RCPT + [("RCPT TO:<@example.org:a@evil.test>", r"5[0-9][0-9] ")]),
    "local-domain-case-and-dot": ({}, TO_RCPT + [("RCPT TO:<a@EXAMPLE.Org>", r"250 "),
                                                 ("RCPT TO:<c@example.net.>", r"(250|553) ")]),
    "max-recipients": ({"listener": {"max_recipients": "3"}}, TO_RCPT + [
        ("RCPT TO:<r1@example.org>", r"250 "), ("RCPT TO:<r2@example.org>", r"250 "),
        ("RCPT TO:<r3@example.org>", r"250 "),
        ("RCPT TO:<r4@example.org>", r"(?i)452 4\.5\.3 (error: )?too many recipients")]),
    "require-tls-yes": ({"tls": True, "events": {"reject"}, "listener": {"require_tls": "yes"}}, HELLO + [
        ("MAIL FROM:<b@sender.test>", r"530 5\.7\.0 Must issue a STARTTLS command first")]),
}


def run_steps(c, steps):
    for i, (send, want) in enumerate(steps):
        if send is not None:
            c.send((send.encode("utf-8") if isinstance(send, str) else send) + b"\r\n")
        if want == "CLOSED":
            assert c.closed_by_peer(5), "step %d: connection still open" % i
            continue
        r = c.reply()
        assert re.match(want, str(r), re.S), \
            "step %d %r: got %r, want /%s/" % (i, (send or "")[:60], str(r)[:300], want)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenario(name, relay, nexthop, pki):
    opts, steps = SCENARIOS[name]
    nh = nexthop()
    r = relay(gateway(nh.port, pki if opts.get("tls") else None, relay=opts.get("relay"),
                      **opts.get("listener", {})))
    with client(r) as c:
        run_steps(c, steps)
    want = opts.get("events", set())
    ev = r.wait_events(lambda ev: want <= {e.get("event") for e in ev})
    missing = want - {e.get("event") for e in ev}
    assert not missing, "events %s missing from the log: %r" % (sorted(missing), ev)


def test_ehlo_capabilities(relay, nexthop, pki):
    nh = nexthop()
    plain = relay(gateway(nh.port, relay={"max_message_size": "20000"}))
    tls = relay(gateway(nh.port, pki, relay={"max_message_size": "20000"}))
    for r, with_tls in ((plain, False), (tls, True)):
        with client(r) as c:
            c.banner()
            e = c.ehlo()
            assert e.code == 250 and e.lines[0].startswith("relay.test"), e
            kw = [l.split()[0].upper() for l in e.lines[1:] if l.strip()]
            for k in ("PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8"):
                assert k in kw, "%s missing from %r" % (k, e)
            assert "SIZE 20000" in [l.strip().upper() for l in e.lines], e
            assert ("STARTTLS" in kw) == with_tls, e


# --- relaying ------------------------------------------------------------------

def legal_body():
    """Lines starting with '.', '..', 8-bit bytes, a 998-octet line; no final
    CRLF (swaks adds one).  The 998-octet line starting with '.' (999 octets on
    the wire) has its own test below."""
    return (b"From: b@sender.test\r\nTo: a@example.org\r\nSubject: dots and bytes\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: 8bit\r\n\r\n"
            b".\r\n..\r\n...\r\n.leading dot\r\n..two dots\r\n \r\n.\t\r\n"
            b"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x93\xa7 latin1 \xe4\xf6\xfc raw \xff\xfe\x80\r\n"
            + b"L" * 998 + b"\r\n" + b"." + b"D" * 996 + b"\r\n"
            + b"\r\n".join(b"line %d" % i for i in range(2000)) + b"\r\nlast line")


@pytest.mark.parametrize("first", [b"L", b"."], ids=["plain", "dot"])
def test_998_octet_line_relayed(first, relay, nexthop):
    """RFC 5321 4.5.3.1.6: a text line may be 1000 octets with CRLF, not counting
    the transparency dot - so 999 octets + CRLF on the wire when it starts with '.'."""
    nh = nexthop()
    r = relay(gateway(nh.port))
    line = first + b"x" * 997
    c = session(r)
    rs = c.transaction(SENDER, [GOOD_RCPT], dot_stuff(b"Subject: long\r\n\r\n" + line + b"\r\n"))
    c.quit()
    assert rs[-1].code == 250, "998-octet line starting with %r: %r" % (first, rs[-1])
    assert [m.content for m in nh.wait_for(1)] == [b"Subject: long\r\n\r\n" + line + b"\r\n"]


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "starttls"])
def test_swaks_content_unchanged(tls, relay, nexthop, pki, tmp_path):
    nh = nexthop()
    r = relay(gateway(nh.port, pki))
    data = legal_body()
    f = tmp_path / "msg.eml"
    f.write_bytes(data)
    args = ["--to", GOOD_RCPT, "--from", SENDER, "--data", "@%s" % f]
    if tls:
        args += ["--tls", "--tls-verify", "--tls-ca-path", pki.ca]
    p = swaks(r.port, *args)
    out = p.stdout.decode("latin-1")
    assert p.returncode == 0, out[-3000:]
    if tls:
        assert "TLS started" in out, out[:3000]
    msgs = nh.wait_for(1)
    assert len(msgs) == 1, out[-2000:]
    sent = data + b"\r\n"      # swaks terminates the last line
    assert hashlib.sha256(msgs[0].content).hexdigest() == hashlib.sha256(sent).hexdigest(), \
        "content differs: first difference at byte %d" % next(
            (i for i, (a, b) in enumerate(zip(msgs[0].content, sent)) if a != b),
            min(len(msgs[0].content), len(sent)))
    assert msgs[0].mail_from == SENDER and msgs[0].rcpt_tos == [GOOD_RCPT]


def test_pipelined_transactions_in_one_write(relay, nexthop):
    nh = nexthop()
    r = relay(gateway(nh.port))
    c = session(r)
    bodies = [body(i, b".dot line %d\r\n" % i) for i in range(3)]
    w = b""
    for i, b in enumerate(bodies):
        w += b"MAIL FROM:<s%d@sender.test>\r\n" % i
        if i == 1:
            w += b"RCPT TO:<reject%d@example.org>\r\n" % i
        w += b"RCPT TO:<t%d@example.org>\r\nDATA\r\n" % i + dot_stuff(b) + b".\r\n"
    w += b"QUIT\r\n"
    c.send(w)
    for i in range(3):
        expect(c.reply(), r"250 ")                              # MAIL
        if i == 1:
            expect(c.reply(), r"550 5\.1\.1 ")                  # next hop's refusal
        expect(c.reply(), r"250 ")                              # RCPT
        expect(c.reply(), r"354 ")                              # DATA
        expect(c.reply(), r"250 ")                              # final dot
    expect(c.reply(), r"221 ")
    c.close()
    msgs = nh.wait_for(3)
    assert [(m.mail_from, m.rcpt_tos, m.content) for m in msgs] == \
        [("s%d@sender.test" % i, ["t%d@example.org" % i], bodies[i]) for i in range(3)]


def test_next_hop_connection_opened_at_rcpt_and_reused(relay, nexthop):
    nh = nexthop()
    r = relay(gateway(nh.port))
    c = session(r)
    expect(c.cmd("MAIL FROM:<b@sender.test>"), r"250 ")
    time.sleep(0.3)
    assert nh.handler.sessions == 0, "next hop contacted before the first RCPT"
    expect(c.cmd("RCPT TO:<a@example.org>"), r"250 ")
    expect(c.cmd("DATA"), r"354 ")
    c.send(body(1) + b".\r\n")
    expect(c.reply(), r"250 ")
    for rc in c.transaction(SENDER, [GOOD_RCPT], body(2)):
        assert rc.code in (250, 354), rc
    c.quit()
    msgs = nh.wait_for(2)
    assert len(msgs) == 2
    assert msgs[0].peer == msgs[1].peer, "a new next-hop connection per transaction"
    assert nh.handler.sessions == 1, "next hop got %d EHLOs" % nh.handler.sessions


def test_next_hop_rejects_rcpt(relay, nexthop):
    nh = nexthop()
    r = relay(gateway(nh.port))
    c = session(r)
    expect(c.cmd("MAIL FROM:<b@sender.test>"), r"250 ")
    expect(c.cmd("RCPT TO:<reject.me@example.org>"), r"550 5\.1\.1 User unknown")
    expect(c.cmd("RCPT TO:<a@example.org>"), r"250 ")
    expect(c.cmd("DATA"), r"354 ")
    c.send(body(1) + b".\r\n")
    expect(c.reply(), r"250 ")
    c.quit()
    assert [m.rcpt_tos for m in nh.wait_for(1)] == [[GOOD_RCPT]]


@pytest.mark.parametrize("reply", ["554 5.6.0 Content rejected by next hop",
                                   "452 4.3.1 Next hop storage full",
                                   "250 2.0.0 Ok: queued as NH4711"])
def test_next_hop_data_reply_passed_through(reply, relay, nexthop):
    nh = nexthop(data_reply=reply)
    r = relay(gateway(nh.port))
    c = session(r)
    rs = c.transaction(SENDER, [GOOD_RCPT], body(1))
    c.quit()
    assert [x.code for x in rs[:3]] == [250, 250, 354], rs
    code, enh, text = reply.split(" ", 2)
    expect(rs[3], r"%s %s .*%s" % (code, re.escape(enh), re.escape(text.split()[-1])))


def test_next_hop_down_gives_4xx(relay):
    dead = free_port()
    r = relay(gateway(dead, outbound={"connect_timeout": "3"}))
    c = session(r)
    expect(c.cmd("MAIL FROM:<b@sender.test>"), r"250 ")
    rr = c.cmd("RCPT TO:<a@example.org>", timeout=20)
    assert rr.code in (451, 421) and rr.lines[0].startswith(("4.4.1", "4.")), rr


def test_next_hop_killed_between_transactions(relay, nexthop_proc):
    nhp = nexthop_proc()
    r = relay(gateway(nhp.port, outbound={"connect_timeout": "3"}))
    c = session(r)
    rs = c.transaction(SENDER, [GOOD_RCPT], body(1))
    assert rs[-1].code == 250, rs
    assert len(nhp.records()) == 1
    nhp.kill()
    # same session: the cached next-hop connection is dead now
    expect(c.cmd("MAIL FROM:<b@sender.test>"), r"250 ")
    try:
        rr = c.cmd("RCPT TO:<a@example.org>", timeout=20)
        assert rr.code // 100 == 4, "RCPT after next hop died: %r" % rr
    except EOFError:
        pass        # a 421 + close would also be acceptable, but not silence
    c.close()
    # a new session
    c2 = session(r)
    expect(c2.cmd("MAIL FROM:<b@sender.test>"), r"250 ")
    rr = c2.cmd("RCPT TO:<a@example.org>", timeout=20)
    assert rr.code // 100 == 4, rr
    c2.quit()


def test_oversize_data_552_and_nothing_at_next_hop(relay, nexthop):
    nh = nexthop()
    r = relay(gateway(nh.port, relay={"max_message_size": "10000"}))
    c = session(r)
    expect(c.cmd("MAIL FROM:<b@sender.test>"), r"250 ")
    expect(c.cmd("RCPT TO:<a@example.org>"), r"250 ")
    expect(c.cmd("DATA"), r"354 ")
    c.send(body(1, b"".join(b"%05d %s\r\n" % (i, b"z" * 70) for i in range(300))) + b".\r\n")
    expect(c.reply(), r"552 5\.3\.4 ")
    assert_nothing_delivered(nh)


@pytest.mark.parametrize("inject", [b"RSET\r\nNOOP\r\n", b"HELP\r\nVRFY x\r\n",
                                    b"EHLO evil.test\r\nMAIL FROM:<x@evil.test>\r\n"],
                         ids=["rset-noop", "help-vrfy", "ehlo-mail"])
def test_starttls_pipelined_commands_discarded(inject, relay, nexthop, pki):
    nh = nexthop()
    r = relay(gateway(nh.port, pki))
    c = session(r)
    c.send(b"STARTTLS\r\n" + inject)
    expect(c.reply(), r"220 2\.0\.0 Ready to start TLS")
    c.handshake(pki.ca)          # fails if plaintext replies followed the 220
    # the first reply after the handshake answers our next real command
    expect(c.cmd("HELP"), r"214[ -]")
    expect(c.cmd("MAIL FROM:<b@sender.test>"), r"503 5\.5\.1")   # injected EHLO/MAIL gone
    expect(c.cmd("NOOP"), r"250 ")
    c.quit()


def test_starttls_resets_state(relay, nexthop, pki):
    nh = nexthop()
    r = relay(gateway(nh.port, pki))
    c = session(r)                                          # EHLO before TLS ...
    expect(c.starttls(pki.ca), r"220 2\.0\.0 Ready to start TLS")
    assert c.sock.version() in ("TLSv1.2", "TLSv1.3")
    expect(c.cmd("MAIL FROM:<b@sender.test>"), r"503 5\.5\.1")  # ... is forgotten
    e = c.ehlo()
    assert e.code == 250 and not any(l.upper().startswith("STARTTLS") for l in e.lines), e
    expect(c.cmd("STARTTLS"), r"(503|554) 5\.5\.1")
    rs = c.transaction(SENDER, [GOOD_RCPT], body(7))
    assert rs[-1].code == 250, rs
    c.quit()
    assert [m.content for m in nh.wait_for(1)] == [body(7)]


def test_require_tls_yes_then_starttls(relay, nexthop, pki):
    nh = nexthop()
    r = relay(gateway(nh.port, pki, require_tls="yes"))
    c = session(r)
    expect(c.cmd("MAIL FROM:<b@sender.test>"),
           r"530 5\.7\.0 Must issue a STARTTLS command first")
    c.starttls(pki.ca)
    c.ehlo()
    rs = c.transaction(SENDER, [GOOD_RCPT], body(3))
    assert rs[-1].code == 250, rs
    c.quit()
    assert len(nh.wait_for(1)) == 1


SMUGGLE = {
    "lf-inside-line": (b"a\nb\r\n", "LF"),
    "lf-dot-lf": (b"hello\n.\nMAIL FROM:<x@evil.test>\r\nRCPT TO:<victim@example.org>\r\n"
                  b"DATA\r\nsmuggled\r\n", "LF"),
    "cr-dot-crlf": (b"hello\r.\r\nMAIL FROM:<x@evil.test>\r\nRCPT TO:<victim@example.org>\r\n"
                    b"DATA\r\nsmuggled\r\n", "CR"),
    "cr-inside-line": (b"a\rb\r\n", "CR"),
}


@pytest.mark.parametrize("name", sorted(SMUGGLE))
def test_bare_cr_lf_in_data(name, relay, nexthop):
    payload, which = SMUGGLE[name]
    nh = nexthop()
    r = relay(gateway(nh.port))
    c = session(r)
    expect(c.cmd("MAIL FROM:<b@sender.test>"), r"250 ")
    expect(c.cmd("RCPT TO:<a@example.org>"), r"250 ")
    expect(c.cmd("DATA"), r"354 ")
    c.send(b"Subject: smuggle\r\n\r\n" + payload + b".\r\n")
    expect(c.reply(), r"550 5\.5\.2 Error: bare <%s> received" % which)
    assert c.closed_by_peer(5), "connection left open after bare <%s>" % which
    assert_nothing_delivered(nh)


def test_200_concurrent_sessions(relay, nexthop):
    nh = nexthop()
    r = relay(gateway(nh.port))
    n = 200

    async def reply(reader):
        while True:
            line = await reader.readline()
            if not line:
                raise EOFError("closed")
            if line[3:4] != b"-":
                return line

    async def connect(i):
        reader, writer = await asyncio.open_connection("127.0.0.1", r.port)
        assert (await reply(reader)).startswith(b"220"), i
        return reader, writer

    async def transact(i, reader, writer):
        out = []
        for cmd in (b"EHLO c%d.test" % i, b"MAIL FROM:<s%d@sender.test>" % i,
                    b"RCPT TO:<u%d@example.org>" % i, b"DATA"):
            writer.write(cmd + b"\r\n")
            out.append(await reply(reader))
        writer.write(body(i) + b".\r\n")
        out.append(await reply(reader))
        writer.write(b"QUIT\r\n")
        out.append(await reply(reader))
        writer.close()
        return [l[:3] for l in out]

    async def main():
        conns = await asyncio.gather(*(connect(i) for i in range(n)))   # all open at once
        return await asyncio.gather(*(transact(i, *rw) for i, rw in enumerate(conns)),
                                    return_exceptions=True)

    res = asyncio.run(asyncio.wait_for(main(), 90))
    bad = [(i, x) for i, x in enumerate(res) if x != [b"250", b"250", b"250", b"354", b"250", b"221"]]
    assert not bad, "%d sessions failed, e.g. %r" % (len(bad), bad[:3])
    msgs = nh.wait_for(n)
    assert len(msgs) == n
    assert sorted(m.content for m in msgs) == sorted(body(i) for i in range(n))


def test_command_timeout(relay, nexthop):
    nh = nexthop()
    r = relay(gateway(nh.port, relay={"command_timeout": "2"}))
    c = session(r)
    t0 = time.monotonic()
    rr = c.reply(timeout=15)
    expect(rr, r"421 4\.4\.2 relay\.test Error: timeout exceeded")
    assert time.monotonic() - t0 >= 1.0
    assert c.closed_by_peer(5)


def test_data_timeout(relay, nexthop):
    nh = nexthop()
    r = relay(gateway(nh.port, relay={"command_timeout": "60", "data_timeout": "2s"}))
    c = session(r)
    expect(c.cmd("MAIL FROM:<b@sender.test>"), r"250 ")
    expect(c.cmd("RCPT TO:<a@example.org>"), r"250 ")
    expect(c.cmd("DATA"), r"354 ")
    c.send(b"Subject: half a message\r\n\r\nand then silence")
    expect(c.reply(timeout=15), r"421 4\.4\.2 ")
    assert c.closed_by_peer(5)
    assert_nothing_delivered(nh, 0.5)


def test_max_connections_per_ip(relay, nexthop):
    nh = nexthop()
    r = relay(gateway(nh.port, max_connections_per_ip="2"))
    time.sleep(0.3)             # let the relay see the readiness probe's close
    a, b = client(r), client(r)
    expect(a.banner(), r"220 ")
    expect(b.banner(), r"220 ")
    c = client(r)
    expect(c.reply(), r"421 4\.7\.0 ")
    assert c.closed_by_peer(5)
    c.close()
    a.quit()
    # the slot is free again once a session ended
    deadline = time.monotonic() + 3
    while True:
        d = client(r)
        rr = d.reply()
        d.close()
        if rr.code == 220 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert rr.code == 220, rr
    b.quit()


def test_listen_on_ipv4_and_ipv6(relay, nexthop):
    if not can_bind6():
        pytest.skip("no IPv6 loopback (::1) in this environment")
    nh = nexthop()
    p = free_port()
    relay(gateway(nh.port, listen="127.0.0.1:%d, [::1]:%d" % (p, p)))
    for host in ("127.0.0.1", "::1"):
        with SMTPClient(p, host=host) as c:
            expect(c.banner(), r"220 relay\.test")


def can_bind6():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


# --- next hop TLS ----------------------------------------------------------------

NEXT_HOP_TLS = {
    # name: (next_hop_tls, next hop certificate or None, delivered?, via TLS?)
    "none-plain": ("none", None, True, False),
    "may-plain": ("may", None, True, False),
    "may-tls": ("may", "selfsigned", True, True),
    "encrypt-selfsigned": ("encrypt", "selfsigned", True, True),
    "encrypt-no-starttls": ("encrypt", None, False, None),
    "verify-trusted": ("verify", "nexthop", True, True),
    "verify-untrusted-ca": ("verify", "untrusted", False, None),
    "verify-expired": ("verify", "expired", False, None),
    "verify-wrong-name": ("verify", "wrongname", False, None),
}


@pytest.mark.parametrize("name", list(NEXT_HOP_TLS))
def test_next_hop_tls(name, relay, nexthop, pki):
    level, leaf, delivered, via_tls = NEXT_HOP_TLS[name]
    kw = {}
    if leaf:
        kw["tls_cert"], kw["tls_key"] = pki.leaf(leaf)
    nh = nexthop(**kw)
    r = relay(gateway(nh.port, next_hop_tls=level, outbound={"ca_file": pki.ca}))
    c = session(r)
    expect(c.cmd("MAIL FROM:<b@sender.test>"), r"250 ")
    rr = c.cmd("RCPT TO:<a@example.org>", timeout=20)
    if not delivered:
        assert rr.code // 100 == 4, "next_hop_tls=%s with %s: RCPT got %r" % (level, leaf, rr)
        c.quit()
        assert_nothing_delivered(nh, 0.3)
        return
    assert rr.code == 250, rr
    expect(c.cmd("DATA"), r"354 ")
    c.send(body(1) + b".\r\n")
    expect(c.reply(), r"250 ")
    c.quit()
    msgs = nh.wait_for(1)
    assert len(msgs) == 1 and msgs[0].tls == via_tls, msgs


# --- event log ---------------------------------------------------------------------

TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def test_event_log_fields_and_names(relay, nexthop, pki):
    nh = nexthop()
    r = relay(gateway(nh.port, pki))
    c = session(r)
    c.starttls(pki.ca)
    c.ehlo()
    expect(c.cmd("MAIL FROM:<b@sender.test>"), r"250 ")
    expect(c.cmd("RCPT TO:<a@elsewhere.test>"), r"554 ")
    rs = c.transaction(SENDER, [GOOD_RCPT], body(1))
    assert rs[-1].code == 250, rs
    c.quit()
    need = {"connect", "helo", "starttls", "mail", "rcpt", "data", "reject", "disconnect",
            "delivery"}
    ev = r.wait_events(lambda ev: need <= {e.get("event") for e in ev})
    for e in ev:
        for k in ("ts", "event", "host", "session"):
            assert k in e, "event without %r: %r" % (k, e)
        assert TS.match(str(e["ts"])), "ts not RFC 3339 UTC with ms: %r" % e
    names = {e.get("event") for e in ev}
    assert need <= names, "missing events %s; got %s" % (sorted(need - names), sorted(names))
    sessions = {e["session"] for e in ev if e.get("event") == "starttls"}
    assert len(sessions) == 1


def test_event_log_escapes_attacker_strings(relay, nexthop):
    """Quotes, backslashes, control characters and invalid UTF-8 from the client
    (and from the next hop's reply text) never break a log line; what the relay
    accepted is logged exactly."""
    nh = nexthop(data_reply='250 2.0.0 queued "as" \\x\x01\x1b[31m-NH')
    r = relay(gateway(nh.port))
    c = client(r)
    c.banner()
    hostile = [b'EHLO evil"quote\\back\x01\x1b[31m\x7f\xff\xfe\xc3(',
               b'X\x01\xff"\\Y', b'\x1b[31m\xc0\xaf \x00 arg',
               b'EHLO ok.test', b'MAIL FROM:<"q\\"\x01\xff"@evil.test>',
               b'MAIL FROM:<\xff\xfe@evil.test> SMTPUTF8']
    for line in hostile:
        c.send(line + b"\r\n")
        rr = c.reply()
        assert rr.code >= 400 or line == b"EHLO ok.test", (line, rr)
    quoted = '"q\\"uo\\\\te"@evil.test'                    # "q\"uo\\te"@evil.test
    expect(c.cmd("MAIL FROM:<%s>" % quoted), r"250 ")
    expect(c.cmd("RSET"), r"250 ")
    expect(c.cmd("MAIL FROM:<\u00e9v\u00efl@evil.test> SMTPUTF8"), r"250 ")
    expect(c.cmd("RCPT TO:<%s>" % quoted.replace("evil.test", "elsewhere.test")), r"554 5\.7\.1 ")
    expect(c.cmd("RSET"), r"250 ")
    rs = c.transaction(SENDER, [GOOD_RCPT], body(1))
    assert rs[-1].code == 250, rs
    c.quit()
    r.stop()                  # everything flushed; events() fails on an unparsable line
    ev = r.events()
    froms = [e.get("from") for e in ev if e.get("event") == "mail"]
    assert quoted in froms, "quoted sender not logged exactly: %r" % froms
    assert "\u00e9v\u00efl@evil.test" in froms, froms
    blob = "\n".join(str(v) for e in ev for v in e.values())
    assert quoted.replace("evil.test", "elsewhere.test") in blob, "rejected RCPT not logged"
    assert 'queued "as" \\x' in blob, "next hop reply text not logged"
    assert not re.search(rb"[\x00-\x1f\x7f]", r.raw_log().replace(b"\n", b"")), \
        "raw control character in the log"


# --- command line and signals ------------------------------------------------------

def run_check(relay_bin, path):
    return subprocess.run([str(relay_bin), "-t", "-c", str(path)], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, timeout=20)


def ini_text(pki, port, mode="gateway", listen=None, extra_relay="", extra_listener=""):
    return ("[relay]\n"                                              # 1
            "hostname = relay.test\n"                                # 2
            "log_file = -\n"                                         # 3
            "max_message_size = 10M\n"                               # 4
            "command_timeout = 5m\n"                                 # 5
            + extra_relay +                                          # 6 (if any)
            "\n"
            "[listener:in]\n"
            "mode = %s\n"
            "listen = %s\n"
            "tls_cert = %s\n"
            "tls_key = %s\n"
            "local_domains = example.org\n"
            "next_hop = 127.0.0.1:%d\n"
            "next_hop_tls = none\n"
            % (mode, listen or "127.0.0.1:%d" % port, pki.cert, pki.key, port)
            + extra_listener)


def line_of(text, needle):
    return next(i for i, l in enumerate(text.splitlines(), 1) if needle in l)


def test_config_check_valid(relay_bin, pki, tmp_path):
    f = tmp_path / "ok.ini"
    f.write_text(ini_text(pki, free_port()) + "\n[outbound]\nca_file = %s\n" % pki.ca)
    p = run_check(relay_bin, f)
    assert p.returncode == 0, p.stdout.decode(errors="replace")


BAD_CONFIG = {
    "unknown-key": dict(extra_relay="frobnication_level = 11\n", needle="frobnication_level"),
    "bad-mode": dict(mode="relay-everything", needle="mode = relay-everything"),
    "bad-listen-port": dict(listen="127.0.0.1:99999", needle="listen = 127.0.0.1:99999"),
    "bad-listen-addr": dict(listen="not an address", needle="listen = not an address"),
}


@pytest.mark.parametrize("name", sorted(BAD_CONFIG))
def test_config_check_names_file_and_line(name, relay_bin, pki, tmp_path):
    kw = dict(BAD_CONFIG[name])
    needle = kw.pop("needle")
    f = tmp_path / "bad.ini"
    text = ini_text(pki, free_port(), **kw)
    f.write_text(text)
    p = run_check(relay_bin, f)
    out = p.stdout.decode(errors="replace")
    assert p.returncode != 0, "bad config accepted:\n" + text
    want = "%s:%d:" % (f, line_of(text, needle))
    assert want in out, "want %r in output:\n%s" % (want, out)


def test_config_check_reports_every_error(relay_bin, pki, tmp_path):
    f = tmp_path / "bad.ini"
    text = ini_text(pki, free_port(), mode="sideways", listen="127.0.0.1:http-alt",
                    extra_relay="no_such_key = 1\n")
    f.write_text(text)
    p = run_check(relay_bin, f)
    out = p.stdout.decode(errors="replace")
    assert p.returncode != 0
    for needle in ("no_such_key", "mode = sideways", "listen = 127.0.0.1:http-alt"):
        want = "%s:%d:" % (f, line_of(text, needle))
        assert want in out, "want %r (%s) in output:\n%s" % (want, needle, out)


def test_sigterm_lets_running_session_finish(relay, nexthop):
    nh = nexthop()
    r = relay(gateway(nh.port, relay={"shutdown_timeout": "30"}))
    c = session(r)
    expect(c.cmd("MAIL FROM:<b@sender.test>"), r"250 ")
    r.signal(signal.SIGTERM)
    deadline = time.monotonic() + 3
    while can_connect("127.0.0.1", r.port) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not can_connect("127.0.0.1", r.port), "still accepting after SIGTERM"
    assert r.alive(), "exited with a session still running"
    expect(c.cmd("RCPT TO:<a@example.org>"), r"250 ")
    expect(c.cmd("DATA"), r"354 ")
    c.send(body(5) + b".\r\n")
    expect(c.reply(), r"250 ")
    expect(c.cmd("QUIT"), r"221 ")
    c.close()
    rc = r.wait(10)
    assert rc is not None, "did not exit within 10 s after the last session ended"
    r.check_exit(rc)
    assert [m.content for m in nh.messages] == [body(5)]


def test_sigterm_shutdown_timeout_bounds_idle_sessions(relay, nexthop):
    nh = nexthop()
    r = relay(gateway(nh.port, relay={"shutdown_timeout": "2", "command_timeout": "300"}))
    c = session(r)
    t0 = time.monotonic()
    r.signal(signal.SIGTERM)
    rc = r.wait(15)
    took = time.monotonic() - t0
    assert rc is not None, "still running 15 s after SIGTERM with shutdown_timeout = 2"
    r.check_exit(rc)
    assert took < 10, took
    assert c.closed_by_peer(2) or c.reply(timeout=1).code == 421
