"""Hostile peers (issue 9): the SMTP front end against hostile clients, and the
outbound client against a hostile next hop.

A. A table-driven battery (BATTERY) against a live gateway relay and the
   aiosmtpd next hop: each case is a list of steps (bytes sent in one packet
   or trickled, the replies expected in order), what must become of the
   session afterwards (still usable, closed by the relay, or abandoned by
   the client) and what the next hop must have recorded.  After every case
   the relay must still be alive and a fresh session must deliver a message.
   The SMTP-smuggling end-of-data variants (CVE-2023-51764/5/6) are also run
   against a raw recording next hop (HostileNextHop in "normal" mode), which
   checks the wire: no end-of-data, no injected command, nothing of what
   followed the bare CR/LF ever reached it.

B. HostileNextHop: a tiny scripted SMTP server on raw asyncio sockets that
   sends endless multi-line replies, a 10 MB banner, bad reply codes, garbage
   instead of a TLS handshake, a reply injected before the TLS handshake, and
   resets the connection at every state.  The relay's client must get a 4xx
   (never a 250 for a message that was not delivered), the relay stays alive,
   the event log has a delivery event with outcome "deferred", and the
   hostile server checks it never saw a final dot it should not have.

Run: TLSRELAY_BIN=$PWD/build/asan/tlsrelay /usr/bin/python3 -m pytest -q \
         tests/integration/test_hostile.py
"""

import asyncio
import re
import socket
import ssl
import struct
import threading
import time

import pytest

from harness import free_port
from smtpclient import REPLY_LINE, SMTPClient, dot_stuff

LOCAL = "example.org, example.net"
SENDER = "b@sender.test"
GOOD_RCPT = "a@example.org"


def gateway(nh_port, pki=None, relay=None, outbound=None, **listener):
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
    return (b"From: b@sender.test\r\nTo: a@example.org\r\nSubject: hostile %d\r\n"
            b"Message-Id: <%d@sender.test>\r\n\r\nhello %d\r\n" % (n, n, n)) + extra


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for pid %d" % pid)


def read_replies(c, n, timeout=20.0):
    """n complete replies from SMTPClient c, fast for thousands of them.
    Returns a list of (code, first line text)."""
    out, deadline = [], time.monotonic() + timeout
    first = None
    while len(out) < n:
        while b"\r\n" not in c.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("only %d of %d replies within %.0fs; last %r"
                                     % (len(out), n, timeout, out[-3:]))
            c._fill(left)
        lines = c.buf.split(b"\r\n")
        c.buf = lines.pop()
        for i, raw in enumerate(lines):
            m = REPLY_LINE.match(raw)
            assert m, "not a reply line: %r" % raw
            if first is None:
                first = raw
            if m.group(2) == b" ":
                out.append((int(m.group(1)), first.decode("latin-1")))
                first = None
                if len(out) == n:
                    rest = lines[i + 1:]
                    if rest or c.buf:
                        c.buf = b"\r\n".join(rest + [c.buf]) if rest else c.buf
                    break
    return out


# --- the battery's vocabulary ---------------------------------------------------

class Trickle:
    """Send data in chunks of `chunk` bytes, `delay` seconds apart."""

    def __init__(self, data, chunk=1, delay=0.005):
        self.data, self.chunk, self.delay = data, chunk, delay

    def __repr__(self):
        return "Trickle(%d bytes by %d)" % (len(self.data), self.chunk)


class Many:
    """n replies, the i-th matching patterns[i % len(patterns)] (order checked)."""

    def __init__(self, n, *patterns):
        self.n, self.patterns = n, patterns


class Codes:
    """One reply whose code is in codes (for cases where the RFCs allow more
    than one answer); the reply is passed to check(reply) when given."""

    def __init__(self, *codes, check=None):
        self.codes, self.check = codes, check


HANDSHAKE = "HANDSHAKE"     # step: STARTTLS handshake on the open socket
CLOSE = "CLOSE"             # step: the client closes (abandons) the session
CLOSED = "CLOSED"           # expectation: the relay closes the connection
NOTHING = ()                # next hop: nothing recorded


def run_step(c, send, expects, pki, case):
    if send is HANDSHAKE:
        c.handshake(pki.ca)              # raises if plaintext followed the 220
    elif send is CLOSE:
        c.close()
        return
    elif isinstance(send, Trickle):
        for i in range(0, len(send.data), send.chunk):
            c.send(send.data[i:i + send.chunk])
            time.sleep(send.delay)
    elif send is not None:
        c.send(send)
    for want in expects:
        where = "%s: after sending %r" % (case, send if isinstance(send, (str, Trickle))
                                          else (send or b"")[:80])
        if want is CLOSED:
            assert c.closed_by_peer(5), "%s: connection still open (pending %r)" \
                % (where, c.pending[:200])
        elif isinstance(want, Many):
            got = read_replies(c, want.n)
            for i, (code, text) in enumerate(got):
                pat = want.patterns[i % len(want.patterns)]
                assert re.match(pat, text), "%s: reply %d of %d is %r, want /%s/" \
                    % (where, i, want.n, text, pat)
        elif isinstance(want, Codes):
            r = c.reply(timeout=30)
            assert r.code in want.codes, "%s: got %r, want one of %s" % (where, str(r),
                                                                         want.codes)
            if want.check:
                want.check(r)
        else:
            r = c.reply(timeout=30)
            assert re.match(want, str(r), re.S), "%s: got %r, want /%s/" \
                % (where, str(r)[:300], want)


def L(*lines):
    """Command lines, CRLF-terminated, in one packet."""
    return b"".join((l.encode("utf-8", "surrogateescape") if isinstance(l, str) else l)
                    + b"\r\n" for l in lines)


TO_DATA = L("MAIL FROM:<b@sender.test>", "RCPT TO:<a@example.org>", "DATA")
TO_DATA_REPLIES = [r"250 ", r"250 ", r"354 "]
SMUGGLED = (b"MAIL FROM:<x@evil.test>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\n"
            b"Subject: smuggled\r\n\r\nevil\r\n.\r\n")
BARE_550 = r"550 5\.5\.2 Error: bare <(CR|LF)> received"

# End-of-data variants published for CVE-2023-51764/5/6 (SEC Consult, Postfix,
# Sendmail, Exim advisories) plus bare CR / LF anywhere.  Each is followed by
# a smuggled second transaction and then the real end of data.
SMUGGLE_VARIANTS = {
    "lf.lf": b"\n.\n",
    "cr.lf": b"\r.\n",
    "lf.crlf": b"\n.\r\n",
    "crlf.lf": b"\r\n.\n",
    "crlf.cr": b"\r\n.\r",
    "cr.crlf": b"\r.\r\n",
    "cr.cr": b"\r.\r",
    "crlf.cr-crlf": b"\r\n.\r\r\n",
    "lf-lf.crlf": b"\n\n.\r\n",
    "bare-lf-mid-line": b"\r\nab\ncd\r\n.\r\n",
    "bare-cr-mid-line": b"\r\nab\rcd\r\n.\r\n",
    "bare-cr-at-eol": b"\r\nabc\r\r\n.\r\n",
}


def smuggle_payload(variant):
    return b"Subject: smuggle\r\n\r\nhello" + variant + SMUGGLED + b"\r\n.\r\n"


def utf8_case(line, *want):
    return [(L("EHLO client.test", line), [r"250[ -]"] + list(want))]


# BATTERY[name] = (steps, after, next hop expectation, options)
#   steps:  [(send, [expectation, ...]), ...] where send is bytes (one packet),
#           Trickle, HANDSHAKE, CLOSE or None; expectations are regexes for one
#           reply, Many, Codes or CLOSED.
#   after:  "usable" (NOOP must still work), "closed" (the relay closed it),
#           "gone" (the client abandoned it).
#   next hop: NOTHING, a list of message contents, or a callable(messages).
#   options: "tls" (listener has the certificate), "listener"/"relay" overrides,
#           "ehlo" (False: no EHLO before the steps).
BATTERY = {
    # -- over-long lines
    "cmd-line-1000-ok": ([(L("NOOP " + "x" * 993), [r"250 "])], "usable", NOTHING, {}),
    "cmd-line-1001": ([(L("NOOP " + "x" * 994), [r"500 5\.5\.2 Line too long"])],
                      "usable", NOTHING, {}),
    "cmd-line-1MB-one-packet": ([(L("NOOP " + "x" * 1_000_000) + L("NOOP"),
                                  [r"500 5\.5\.2 Line too long", r"250 "])],
                                "usable", NOTHING, {}),
    "cmd-line-long-trickled": ([(Trickle(L("NOOP " + "y" * 3000), chunk=97, delay=0.002),
                                 [r"500 5\.5\.2 Line too long"])], "usable", NOTHING, {}),
    "mail-line-no-crlf-1MB": ([(b"MAIL FROM:<" + b"a" * 1_000_000, [r"500 5\.5\.2 Line too long"]),
                               (b">\r\nNOOP\r\n", [r"250 "])], "usable", NOTHING, {}),
    "text-line-1001": ([(TO_DATA, TO_DATA_REPLIES),
                        (b"Subject: long\r\n\r\n" + b"z" * 999 + b"\r\n.\r\n",
                         [r"5(00|52) 5\.[35]\.[24] "])], "usable", NOTHING, {}),
    "text-line-1MB": ([(TO_DATA, TO_DATA_REPLIES),
                       (b"Subject: long\r\n\r\n" + b"z" * 1_000_000 + b"\r\n.\r\n",
                        [r"5(00|52) 5\.[35]\.[24] "])], "usable", NOTHING, {}),
    # -- NUL and 8-bit bytes
    "nul-in-verb": ([(L(b"NO\x00OP"), [r"500 5\.5\.2 "])], "usable", NOTHING, {}),
    "nul-in-mail": ([(L(b"MAIL FROM:<b\x00@sender.test>"), [r"50[01] 5\.5\.[24] "]),
                     (L("RCPT TO:<a@example.org>"), [r"503 5\.5\.1 "])], "usable", NOTHING, {}),
    # RFC 6152 §2: NUL is never SMTP data; refused like a bare CR/LF (a next hop
    # that drops NULs could otherwise be smuggled to), nothing relayed.
    "nul-in-data": ([(TO_DATA, TO_DATA_REPLIES),
                     (b"Subject: nul\r\n\r\na\x00b\r\n.\r\n", [r"550 5\.5\.2 ", CLOSED])],
                    "closed", NOTHING, {}),
    "8bit-in-verb": ([(L(b"N\xc3\x96OP", b"\xff\xfe\r\x00"), [r"500 5\.5\.2 ", r"500 5\.5\.2 "])],
                     "usable", NOTHING, {}),
    "8bit-helo": ([(L(b"EHLO \xff\xfe.test"), [r"501 5\.5\.[24] "])], "usable", NOTHING,
                  {"ehlo": False}),
    "8bit-mail-without-smtputf8": (utf8_case(b"MAIL FROM:<caf\xc3\xa9@sender.test>",
                                             r"553 5\.6\.7 "), "usable", NOTHING, {"ehlo": False}),
    "utf8-mail-with-smtputf8": (utf8_case(b"MAIL FROM:<caf\xc3\xa9@sender.test> SMTPUTF8",
                                          r"250 "), "usable", NOTHING, {"ehlo": False}),
    "bad-utf8-mail-with-smtputf8": (utf8_case(b"MAIL FROM:<\xc3\x28@sender.test> SMTPUTF8",
                                              r"5(01|53) 5\.") , "usable", NOTHING, {"ehlo": False}),
    "overlong-utf8-smtputf8": (utf8_case(b"MAIL FROM:<a\xc0\xafb@sender.test> SMTPUTF8",
                                         r"5(01|53) 5\."), "usable", NOTHING, {"ehlo": False}),
    "surrogate-utf8-smtputf8": (utf8_case(b"MAIL FROM:<a\xed\xa0\x80b@sender.test> SMTPUTF8",
                                          r"5(01|53) 5\."), "usable", NOTHING, {"ehlo": False}),
    "bad-utf8-rcpt-smtputf8": ([(L(b"MAIL FROM:<b@sender.test> SMTPUTF8",
                                   b"RCPT TO:<\xf8\x88\x80\x80\x80@example.org>"),
                                 [r"250 ", r"5(01|53) 5\."])], "usable", NOTHING, {}),
    "8bit-rcpt-without-smtputf8": ([(L("MAIL FROM:<b@sender.test>",
                                       b"RCPT TO:<j\xc3\xb6rg@example.org>"),
                                     [r"250 ", r"553 5\.6\.7 "])], "usable", NOTHING, {}),
    # -- pipelining abuse
    "pipelined-5000-noop-help-vrfy": ([(L("NOOP", "HELP", "VRFY x") * 1667,
                                        [Many(5001, r"250 ", r"214", r"252 ")])],
                                      "usable", NOTHING, {}),
    "pipelined-4000-mail-rset": ([(L("MAIL FROM:<b@sender.test>", "RSET") * 2000,
                                   [Many(4000, r"250 2\.1\.0", r"250 2\.0\.0")])],
                                 "usable", NOTHING, {}),
    "pipelined-5000-bad-commands": ([(L("FROB") * 5000,
                                      [Many(21, r"500 5\.5\.2"), r"421 4\.7\.0 ", CLOSED])],
                                    "closed", NOTHING, {}),
    # -- STARTTLS abuse
    "starttls-twice": ([(L("STARTTLS"), [r"220 2\.0\.0 "]), (HANDSHAKE, []),
                        (L("EHLO client.test"), [r"250[ -]"]),
                        (L("STARTTLS"), [r"(503|554) 5\.5\.1 "])], "usable", NOTHING,
                       {"tls": True}),
    "starttls-twice-pipelined": ([(L("STARTTLS", "STARTTLS", "NOOP"), [r"220 2\.0\.0 "]),
                                  (HANDSHAKE, []), (L("NOOP"), [r"250 "]),
                                  (L("MAIL FROM:<b@sender.test>"), [r"503 5\.5\.1 "])],
                                 "usable", NOTHING, {"tls": True}),
    "starttls-pipelined-transaction": ([(L("STARTTLS") + TO_DATA + b"injected\r\n.\r\n",
                                         [r"220 2\.0\.0 "]), (HANDSHAKE, []),
                                        (L("RCPT TO:<a@example.org>"), [r"503 5\.5\.1 "])],
                                       "usable", NOTHING, {"tls": True}),
    "starttls-with-argument": ([(L("STARTTLS now"), [r"501 5\.5\.4 "])], "usable", NOTHING,
                               {"tls": True}),
    "starttls-not-offered": ([(L("STARTTLS"), [r"502 5\.5\.1 "])], "usable", NOTHING, {}),
    "starttls-in-transaction": ([(L("MAIL FROM:<b@sender.test>", "STARTTLS"),
                                  [r"250 ", r"503 5\.5\.1 "])], "usable", NOTHING, {"tls": True}),
    # -- commands not offered, wrong order
    "auth-not-offered": ([(L("AUTH PLAIN AGIAYw=="), [r"502 5\.5\.1 "])], "usable", NOTHING, {}),
    "bdat-not-offered": ([(L("MAIL FROM:<b@sender.test>", "RCPT TO:<a@example.org>",
                             "BDAT 0 LAST"), [r"250 ", r"250 ", r"502 5\.5\.1 "])],
                         "usable", NOTHING, {}),
    "rcpt-before-mail": ([(L("RCPT TO:<a@example.org>"), [r"503 5\.5\.1 "])], "usable",
                         NOTHING, {}),
    "data-without-rcpt": ([(L("MAIL FROM:<b@sender.test>", "DATA"),
                            [r"250 ", r"503 5\.5\.1 "])], "usable", NOTHING, {}),
    "data-without-mail": ([(L("DATA"), [r"503 5\.5\.1 "])], "usable", NOTHING, {}),
    "mail-twice": ([(L("MAIL FROM:<b@sender.test>", "MAIL FROM:<c@sender.test>"),
                     [r"250 ", r"503 5\.5\.1 "])], "usable", NOTHING, {}),
    "mail-before-helo": ([(L("MAIL FROM:<b@sender.test>"), [r"503 5\.5\.1 "])], "usable",
                         NOTHING, {"ehlo": False}),
    # -- recipients
    "max-recipients-5": ([(L("MAIL FROM:<b@sender.test>",
                             *["RCPT TO:<r%d@example.org>" % i for i in range(7)]),
                           [Many(6, r"250 "), r"452 4\.5\.3 ", r"452 4\.5\.3 "]),
                          (L("DATA"), [r"354 "]), (body(1) + b".\r\n", [r"250 "])],
                         "usable", lambda msgs: [m.rcpt_tos for m in msgs] ==
                         [["r%d@example.org" % i for i in range(5)]],
                         {"listener": {"max_recipients": "5"}}),
    "rcpt-1000-pipelined-one-write": ([(L("MAIL FROM:<b@sender.test>",
                                          *["RCPT TO:<u%04d@example.org>" % i for i in range(1001)]),
                                        [Many(1001, r"250 "), r"452 4\.5\.3 "]),
                                       (L("DATA"), [r"354 "]), (body(2) + b".\r\n", [r"250 "])],
                                      "usable", lambda msgs: [len(m.rcpt_tos) for m in msgs] == [1000],
                                      {"listener": {"max_recipients": "1000"}}),
    # -- HELO abuse
    "helo-junk-control": ([(L(b"HELO \x01\x02\x1b[31m"), [r"501 5\.5\.[24] "])], "usable",
                          NOTHING, {"ehlo": False}),
    "helo-empty": ([(L("HELO"), [r"501 5\.5\.[24] "]), (L("EHLO"), [r"501 5\.5\.[24] "])],
                   "usable", NOTHING, {"ehlo": False}),
    "helo-spaces": ([(L("HELO a b c"), [Codes(250, 501)])], "usable", NOTHING, {"ehlo": False}),
    "helo-very-long-fits": ([(L("EHLO " + "a" * 993), [Codes(250, 501)])], "usable", NOTHING,
                            {"ehlo": False}),
    "helo-very-long-5000": ([(L("EHLO " + "a" * 5000), [r"500 5\.5\.2 Line too long"])],
                            "usable", NOTHING, {"ehlo": False}),
    # -- a client that goes away mid-message
    "close-mid-message": ([(TO_DATA, TO_DATA_REPLIES),
                           (b"Subject: half\r\n\r\n" + b"line\r\n" * 1000, []), (CLOSE, [])],
                          "gone", NOTHING, {}),
    "close-after-crlf-dot": ([(TO_DATA, TO_DATA_REPLIES),
                              (b"Subject: almost\r\n\r\nall of it\r\n.", []), (CLOSE, [])],
                             "gone", NOTHING, {}),
    "close-after-crlf-dot-cr": ([(TO_DATA, TO_DATA_REPLIES),
                                 (b"Subject: almost\r\n\r\nall of it\r\n.\r", []), (CLOSE, [])],
                                "gone", NOTHING, {}),
    "close-mid-message-big": ([(TO_DATA, TO_DATA_REPLIES),
                               (b"Subject: big\r\n\r\n" + b"0123456789" * 60 + b"\r\n", []),
                               (b"x" * 100 + b"\r\n" * 1, []),
                               (b"".join(b"%06d %s\r\n" % (i, b"q" * 80) for i in range(20000)), []),
                               (CLOSE, [])], "gone", NOTHING, {}),
    # -- legitimate controls (no false positive): the real end of data, split anywhere
    "eod-split-byte-by-byte": ([(TO_DATA, TO_DATA_REPLIES),
                                (Trickle(b"Subject: split\r\n\r\n.dot\r\n..\r\nend\r\n.\r\n",
                                         chunk=1, delay=0.002), [r"250 "])],
                               "usable", [b"Subject: split\r\n\r\ndot\r\n.\r\nend\r\n"], {}),
}
for _name, _v in SMUGGLE_VARIANTS.items():
    BATTERY["smuggle-" + _name] = ([(TO_DATA, TO_DATA_REPLIES),
                                    (smuggle_payload(_v), [BARE_550, CLOSED])],
                                   "closed", NOTHING, {})
    # split right after the variant's first byte: a CR alone at the end of a
    # packet must be held until its successor arrives
    _cut = len(smuggle_payload(b"")) - len(SMUGGLED) - len(b"\r\n.\r\n") + 1
    _p = smuggle_payload(_v)
    if _p[:_cut].endswith(b"\n"):          # the first byte is already the bare LF
        _steps = [(Trickle(_p[:_cut], chunk=3, delay=0.01), [BARE_550, CLOSED])]
    else:
        _steps = [(Trickle(_p[:_cut], chunk=3, delay=0.01), []), (None, []),
                  (_p[_cut:], [BARE_550, CLOSED])]
    BATTERY["smuggle-" + _name + "-split"] = ([(TO_DATA, TO_DATA_REPLIES)] + _steps,
                                              "closed", NOTHING, {})
BATTERY["smuggle-bare-lf-first-byte"] = ([(TO_DATA, TO_DATA_REPLIES),
                                          (b"\n.\r\n" + SMUGGLED + b".\r\n", [BARE_550, CLOSED])],
                                         "closed", NOTHING, {})


def fresh_session_works(r, nh, n_before, tag):
    """The relay is alive and a new session delivers a message."""
    assert r.alive(), "relay died (rc %r)\n--- stderr:\n%s" % (r.proc.poll(), r.stderr()[-4000:])
    with SMTPClient(r.port) as c:
        assert c.banner().code == 220
        assert c.ehlo().code == 250
        rs = c.transaction(SENDER, [GOOD_RCPT], body(4242, b"after " + tag.encode() + b"\r\n"))
        assert [x.code for x in rs] == [250, 250, 354, 250], "fresh session after %s: %r" % (tag, rs)
        c.quit()
    msgs = nh.wait_for(n_before + 1)
    assert len(msgs) == n_before + 1 and msgs[-1].content.endswith(b"after " + tag.encode() + b"\r\n"), \
        "fresh message not delivered after %s: %r" % (tag, msgs[n_before:])


@pytest.mark.parametrize("name", list(BATTERY))
def test_hostile_input(name, relay, nexthop, pki):
    steps, after, want_nh, opts = BATTERY[name]
    nh = nexthop()
    r = relay(gateway(nh.port, pki if opts.get("tls") else None, relay=opts.get("relay"),
                      **opts.get("listener", {})))
    rss0 = rss_kb(r.pid)
    c = SMTPClient(r.port, timeout=20)
    try:
        assert c.banner().code == 220
        if opts.get("ehlo", True):
            assert c.ehlo().code == 250
        for send, expects in steps:
            run_step(c, send, expects, pki, name)
        if after == "usable":
            rr = c.cmd("NOOP")
            assert rr.code == 250, "%s: session not usable afterwards: %r" % (name, rr)
            c.cmd("RSET")
        elif after == "closed":
            assert c.closed_by_peer(5), "%s: relay left the session open" % name
        c.close()
    finally:
        c.close()
    time.sleep(0.4)                # let anything the relay might still send arrive
    msgs = nh.messages
    if callable(want_nh):
        assert want_nh(msgs) is not False, "%s: next hop recorded %r" % (name, msgs)
    else:
        assert [m.content for m in msgs] == list(want_nh), \
            "%s: next hop recorded %r" % (name, [m.content[:200] for m in msgs])
    if name == "nul-in-data":
        # consistency: a refusal must mean nothing at the next hop, and vice versa
        ev = [e for e in r.events() if e.get("event") == "data"]
        assert ev and ((ev[-1].get("code") == 250) == bool(msgs)), (ev, msgs)
    rss1 = rss_kb(r.pid)
    assert rss1 - rss0 < 32 * 1024, "%s: relay RSS grew %d kB -> %d kB" % (name, rss0, rss1)
    fresh_session_works(r, nh, len(msgs), name)


# --- the raw recording / hostile next hop ----------------------------------------

class Conn:
    """What the hostile server saw on one connection."""

    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer
        self.lines = []             # command lines received (bytes, without CRLF)
        self.body = bytearray()     # DATA bytes received
        self.saw_dot = False        # the final "\r\n.\r\n" arrived
        self.peer_closed = False    # the relay closed (EOF / reset / broken pipe)
        self.tls_lines = []         # command lines received after STARTTLS
        self.tls = False
        self.notes = []

    async def send(self, data):
        try:
            self.writer.write(data)
            await self.writer.drain()
            return True
        except (ConnectionError, OSError):
            self.peer_closed = True
            return False

    async def line(self, timeout=15):
        try:
            raw = await asyncio.wait_for(self.reader.readuntil(b"\r\n"), timeout)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            self.peer_closed = True
            return None
        except asyncio.LimitOverrunError:
            self.notes.append("line too long")
            return None
        l = raw[:-2]
        (self.tls_lines if self.tls else self.lines).append(l)
        return l

    async def read_body(self, limit=None, timeout=15):
        """Body until the final dot (True), EOF (False), or limit bytes (None)."""
        tail = b"\r\n"   # the DATA command's CRLF starts the first line
        while True:
            try:
                chunk = await asyncio.wait_for(self.reader.read(65536), timeout)
            except (ConnectionError, OSError):
                chunk = b""
            if not chunk:
                self.peer_closed = True
                return False
            self.body += chunk
            if b"\r\n.\r\n" in tail + bytes(self.body[-(len(chunk) + 4):]) or \
                    bytes(self.body).startswith(b".\r\n"):
                self.saw_dot = True
                return True
            if limit is not None and len(self.body) >= limit:
                return None

    def reset(self):
        """Close with RST (SO_LINGER 0)."""
        sock = self.writer.get_extra_info("socket")
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.writer.transport.abort()

    async def wait_closed_by_peer(self, timeout=15):
        try:
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
            while data:
                data = await asyncio.wait_for(self.reader.read(65536), timeout)
        except (ConnectionError, OSError):
            pass
        except asyncio.TimeoutError:
            return False
        self.peer_closed = True
        return True


EHLO_CAPS = b"250-nexthop.test\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-8BITMIME\r\n" \
            b"250 ENHANCEDSTATUSCODES\r\n"


async def normal_session(c, hs, reset_at=None, replies=None, caps=EHLO_CAPS, body_limit=None):
    """A correct SMTP server, except: reset_at=STAGE resets the connection there;
    replies={STAGE: bytes} replaces the reply of that stage.  Stages: greeting,
    EHLO, MAIL, RCPT, DATA, 354, body, DOT."""
    replies = replies or {}
    if reset_at == "connect":
        c.reset()
        return
    if not await c.send(replies.get("greeting", b"220 nexthop.test ESMTP hostile\r\n")):
        return
    if reset_at == "greeting":
        await asyncio.sleep(0.05)
        c.reset()
        return
    while True:
        l = await c.line()
        if l is None:
            return
        verb = l.split(b" ", 1)[0].upper().split(b":")[0]
        stage = {b"EHLO": "EHLO", b"HELO": "EHLO", b"MAIL": "MAIL", b"RCPT": "RCPT",
                 b"DATA": "DATA", b"RSET": "RSET", b"QUIT": "QUIT"}.get(verb, "other")
        if stage == reset_at:
            c.reset()
            return
        if stage == "EHLO":
            out = replies.get("EHLO", caps)
        elif stage == "DATA":
            out = replies.get("DATA", b"354 go ahead\r\n")
        elif stage == "QUIT":
            await c.send(b"221 2.0.0 bye\r\n")
            c.writer.close()
            return
        elif stage == "other":
            out = b"502 5.5.2 what\r\n"
        else:
            out = replies.get(stage, b"250 2.0.0 ok\r\n")
        if not await c.send(out):
            return
        if stage != "DATA" or not out.startswith(b"354"):
            continue
        if reset_at == "354":
            await asyncio.sleep(0.05)
            c.reset()
            return
        got = await c.read_body(limit=body_limit if reset_at == "body" else None)
        if got is None or reset_at == "body":
            c.reset()
            return
        if got is False:
            return
        if reset_at == "DOT":
            c.reset()
            return
        hs.delivered.append(bytes(c.body))
        if not await c.send(replies.get("DOT", b"250 2.0.0 queued by hostile\r\n")):
            return
        c.body = bytearray()


class HostileNextHop:
    """A scripted next hop on 127.0.0.1 in a thread of its own.
    handler(conn, hs) is a coroutine run for each connection; set hs.handler
    to change the behaviour for later connections."""

    def __init__(self, handler=None):
        self.handler = handler or (lambda c, hs: normal_session(c, hs))
        self.conns = []
        self.delivered = []         # message bodies that got a 250 to the final dot
        self.errors = []
        self.port = None
        self.loop = None
        self.thread = None
        self._ready = threading.Event()

    def start(self):
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self._ready.wait(10), "hostile next hop did not start"
        return self

    def _run(self):
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)

        async def main():
            self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0,
                                                     limit=1 << 20)
            self.port = self.server.sockets[0].getsockname()[1]
            self._ready.set()
            async with self.server:
                await self.server.serve_forever()

        try:
            self.loop.run_until_complete(main())
        except asyncio.CancelledError:
            pass
        finally:
            self.loop.close()

    async def _serve(self, reader, writer):
        c = Conn(reader, writer)
        self.conns.append(c)
        try:
            await self.handler(c, self)
        except Exception as e:          # recorded, reported by the test
            self.errors.append("%s: %r" % (type(e).__name__, e))
        finally:
            try:
                writer.transport.abort()
            except Exception:
                pass

    def stop(self):
        if self.loop is None:
            return

        def shutdown():
            for t in asyncio.all_tasks(self.loop):
                t.cancel()
        self.loop.call_soon_threadsafe(shutdown)
        self.thread.join(10)


@pytest.fixture
def hostile():
    started = []

    def make(handler=None):
        hs = HostileNextHop(handler).start()
        started.append(hs)
        return hs

    yield make
    for hs in started:
        hs.stop()


@pytest.mark.parametrize("variant", list(SMUGGLE_VARIANTS))
def test_smuggling_wire_level(variant, relay, hostile):
    """The next hop's wire: after a smuggling attempt it saw no end of data, no
    second MAIL, and none of the bytes that followed the bare CR/LF."""
    hs = hostile()
    r = relay(gateway(hs.port))
    c = SMTPClient(r.port)
    c.banner()
    c.ehlo()
    for want, line in zip(TO_DATA_REPLIES, (b"MAIL FROM:<b@sender.test>",
                                            b"RCPT TO:<a@example.org>", b"DATA")):
        rr = c.cmd(line)
        assert re.match(want, str(rr)), rr
    c.send(smuggle_payload(SMUGGLE_VARIANTS[variant]))
    rr = c.reply()
    assert re.match(BARE_550, str(rr)), rr
    assert c.closed_by_peer(5)
    c.close()
    time.sleep(0.5)
    assert hs.delivered == [], "next hop got a complete message: %r" % hs.delivered
    for conn in hs.conns:
        assert not conn.saw_dot, "final dot reached the next hop: %r" % bytes(conn.body)
        seen = b"\r\n".join(conn.lines) + bytes(conn.body)
        assert b"evil" not in seen and b"smuggled" not in seen, \
            "bytes after the bare CR/LF reached the next hop: %r" % seen[-300:]
        assert sum(1 for l in conn.lines if l.upper().startswith(b"MAIL")) <= 1, conn.lines
    assert r.alive()


# --- B. hostile next hops ----------------------------------------------------------

SHORT_OUT = {"connect_timeout": "3", "command_timeout": "3", "data_timeout": "3",
             "final_timeout": "3"}


def deferred_events(r):
    return [e for e in r.events() if e.get("event") == "delivery" and e.get("outcome") == "deferred"]


def client_transaction(r, mail_extra="", pause_mid_body=0.0):
    """MAIL, RCPT, DATA, body: stop at the first reply that is not 250/354.
    pause_mid_body: send half the body, wait that long, then the rest.
    Returns the list of replies."""
    out = []
    c = SMTPClient(r.port, timeout=30)
    try:
        c.banner()
        c.ehlo()
        out.append(c.cmd("MAIL FROM:<b@sender.test>" + mail_extra))
        if out[-1].code != 250:
            return out
        out.append(c.cmd("RCPT TO:<a@example.org>", timeout=30))
        if out[-1].code != 250:
            return out
        out.append(c.cmd("DATA", timeout=30))
        if out[-1].code != 354:
            return out
        msg = body(9, b"".join(b"%05d %s\r\n" % (i, b"m" * 70) for i in range(3000))) + b".\r\n"
        if pause_mid_body:
            c.send(msg[:len(msg) // 2])
            time.sleep(pause_mid_body)
            msg = msg[len(msg) // 2:]
        c.send(msg)
        out.append(c.reply(timeout=30))
        c.quit()
        return out
    finally:
        c.close()


def assert_deferred(r, hs, replies, what):
    last = replies[-1]
    assert 400 <= last.code < 500, "%s: the client got %r (want a 4xx), replies %r" \
        % (what, last, replies)
    assert all(x.code in (250, 354) for x in replies[:-1]), replies
    ev = r.wait_events(lambda ev: deferred_events(r))
    assert deferred_events(r), "%s: no delivery event with outcome deferred; events: %r" \
        % (what, [(e.get("event"), e.get("outcome"), e.get("reason") or e.get("smtp_reply"))
                  for e in ev])
    assert r.alive(), "%s: relay died\n%s" % (what, r.stderr()[-3000:])


def then_normal_delivery_works(r, hs):
    hs.handler = lambda c, h: normal_session(c, h)
    n = len(hs.delivered)
    rs = client_transaction(r)
    assert [x.code for x in rs] == [250, 250, 354, 250], "relay unusable afterwards: %r" % rs
    assert len(hs.delivered) == n + 1


RESET_STAGES = ["connect", "greeting", "EHLO", "MAIL", "RCPT", "DATA", "354", "body", "DOT"]


@pytest.mark.parametrize("stage", RESET_STAGES)
def test_next_hop_resets(stage, relay, hostile):
    hs = hostile(lambda c, h: normal_session(c, h, reset_at=stage, body_limit=2000))
    r = relay(gateway(hs.port, outbound=SHORT_OUT))
    # at 354 and mid-body the reset must be seen while the client is still
    # sending: the relay has to refuse the message at the client's final dot
    replies = client_transaction(r, pause_mid_body=0.7 if stage in ("354", "body") else 0)
    assert_deferred(r, hs, replies, "reset at %s" % stage)
    if stage != "DOT":
        assert not any(c.saw_dot for c in hs.conns), "the final dot reached the next hop"
    assert hs.delivered == []
    then_normal_delivery_works(r, hs)


BAD_REPLIES = {
    "greeting-99": {"greeting": b"99 x\r\n"},
    "greeting-abc": {"greeting": b"abc\r\n"},
    "greeting-6xx": {"greeting": b"600 nexthop.test hello\r\n"},
    "greeting-bad-separator": {"greeting": b"220_nexthop.test\r\n"},
    "greeting-bare-lf": {"greeting": b"220 nexthop.test\n"},
    "ehlo-abc": {"EHLO": b"abc\r\n"},
    "ehlo-code-changes": {"EHLO": b"250-nexthop.test\r\n251 PIPELINING\r\n"},
    "mail-6xx": {"MAIL": b"650 2.1.0 ok\r\n"},
    "rcpt-99": {"RCPT": b"99 x\r\n"},
    "rcpt-1xx": {"RCPT": b"150 2.1.5 ok\r\n"},
    "data-35": {"DATA": b"35 go\r\n"},
    "dot-2500": {"DOT": b"2500 ok\r\n"},
    "dot-abc": {"DOT": b"abc\r\n"},
    "dot-6xx": {"DOT": b"600 queued\r\n"},
    "dot-two-replies": {"DOT": b"250-ok\r\n251 queued\r\n"},
}


@pytest.mark.parametrize("name", list(BAD_REPLIES))
def test_next_hop_bad_reply_codes(name, relay, hostile):
    hs = hostile(lambda c, h: normal_session(c, h, replies=BAD_REPLIES[name]))
    r = relay(gateway(hs.port, outbound=SHORT_OUT))
    replies = client_transaction(r)
    assert_deferred(r, hs, replies, name)
    then_normal_delivery_works(r, hs)


async def endless_multiline(c, hs, where, line=b"250-x\r\n", cap=64 << 20, delay=0.0,
                            max_s=12):
    """Multi-line reply that never ends, at the greeting or as the EHLO reply."""
    if where == "EHLO":
        await c.send(b"220 nexthop.test\r\n")
        if await c.line() is None:
            return
    sent, t0 = 0, time.monotonic()
    chunk = line * (1 if delay else 4096)
    while sent < cap and time.monotonic() - t0 < max_s:
        if not await c.send(chunk):
            hs.sent = sent
            return
        sent += len(chunk)
        if delay:
            await asyncio.sleep(delay)
    hs.sent = sent
    hs.errors.append("relay still reading after %d bytes / %.0fs of one reply"
                     % (sent, time.monotonic() - t0))


async def huge_banner(c, hs):
    data = b"220 " + b"x" * (10 << 20) + b"\r\n"
    ok = await c.send(data)
    hs.sent = len(data) if ok else -1
    if ok:
        await c.wait_closed_by_peer(10)


OUTBOUND_FLOODS = {
    "greeting-250-x-forever": lambda c, h: endless_multiline(c, h, "greeting", b"220-x\r\n"),
    "ehlo-250-x-forever": lambda c, h: endless_multiline(c, h, "EHLO"),
    "ehlo-250-long-lines-forever": lambda c, h: endless_multiline(c, h, "EHLO",
                                                                  b"250-" + b"y" * 2000 + b"\r\n"),
    "greeting-10MB-one-line": huge_banner,
    "greeting-10MB-multiline": lambda c, h: endless_multiline(
        c, h, "greeting", b"220-" + b"z" * 1000 + b"\r\n", cap=10 << 20),
    # one continuation line every 0.2 s: REPLY_LINES_MAX ends it, not the timer
    "ehlo-250-x-slowly": lambda c, h: endless_multiline(c, h, "EHLO", delay=0.05),
    # one byte every 0.5 s inside the greeting: only a per-state deadline ends it
    "greeting-drip-1-byte-per-0.5s": lambda c, h: endless_multiline(c, h, "greeting", b"2",
                                                                    delay=0.5),
}


@pytest.mark.parametrize("name", list(OUTBOUND_FLOODS))
def test_next_hop_floods(name, relay, hostile):
    hs = hostile(OUTBOUND_FLOODS[name])
    hs.sent = None
    r = relay(gateway(hs.port, outbound=SHORT_OUT))
    rss0 = rss_kb(r.pid)
    t0 = time.monotonic()
    replies = client_transaction(r)
    took = time.monotonic() - t0
    rss1 = rss_kb(r.pid)
    assert not hs.errors, "%s: %s" % (name, hs.errors)
    assert_deferred(r, hs, replies, name)
    assert took < 15, "%s: the client waited %.1fs for its 4xx (command_timeout = 3s)" % (name, took)
    assert rss1 - rss0 < 32 * 1024, "%s: relay RSS %d -> %d kB" % (name, rss0, rss1)
    then_normal_delivery_works(r, hs)


def tls_server_ctx(pki):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(*pki.leaf("nexthop"))
    return ctx


async def starttls_garbage(c, hs):
    await c.send(b"220 nexthop.test ESMTP\r\n")
    while True:
        l = await c.line()
        if l is None:
            return
        v = l.upper()
        if v.startswith(b"EHLO"):
            await c.send(b"250-nexthop.test\r\n250-STARTTLS\r\n250 8BITMIME\r\n")
        elif v == b"STARTTLS":
            await c.send(b"220 2.0.0 go ahead\r\n")
            await asyncio.sleep(0.1)
            await c.send(b"HTTP/1.1 400 Bad Request\r\nthis is not TLS\r\n" + b"\x00" * 100)
            await c.wait_closed_by_peer(10)
            return
        else:
            await c.send(b"250 ok\r\n")


@pytest.mark.parametrize("level", ["encrypt", "verify"])
def test_next_hop_starttls_then_garbage(level, relay, hostile, pki):
    hs = hostile(starttls_garbage)
    r = relay(gateway(hs.port, next_hop_tls=level, outbound=dict(SHORT_OUT, ca_file=pki.ca)))
    replies = client_transaction(r)
    assert_deferred(r, hs, replies, "STARTTLS then garbage (%s)" % level)
    assert replies[-1].lines[0].startswith("4.7."), replies[-1]
    assert not any(c.saw_dot or any(l.upper().startswith(b"MAIL") for l in c.lines)
                   for c in hs.conns), "MAIL sent in clear at next_hop_tls=%s" % level
    ev = deferred_events(r)
    assert any(e.get("result_type") for e in ev), "no RFC 8460 result_type: %r" % ev


def injection_session(pki):
    ctx = tls_server_ctx(pki)

    async def run(c, hs):
        await c.send(b"220 nexthop.test ESMTP\r\n")
        l = await c.line()
        if l is None or not l.upper().startswith(b"EHLO"):
            return
        # before TLS: SIZE and SMTPUTF8 announced (the relay must forget both)
        await c.send(b"250-nexthop.test\r\n250-STARTTLS\r\n250-SIZE 1000\r\n"
                     b"250-SMTPUTF8\r\n250 8BITMIME\r\n")
        l = await c.line()
        if l is None or l.upper() != b"STARTTLS":
            hs.errors.append("expected STARTTLS, got %r" % l)
            return
        # the injection: a second reply in the same packet as the 220
        await c.send(b"220 2.0.0 go ahead\r\n250 injected\r\n")
        try:
            await asyncio.wait_for(c.writer.start_tls(ctx), 10)
        except Exception as e:
            hs.errors.append("TLS handshake failed: %r" % e)
            return
        c.tls = True
        l = await c.line()
        if l is None or not l.upper().startswith(b"EHLO"):
            hs.errors.append("first command after TLS is %r, not EHLO: the injected "
                             "reply was taken as the EHLO answer" % l)
            return
        await c.send(b"250-nexthop.test\r\n250 8BITMIME\r\n")
        while True:
            l = await c.line()
            if l is None:
                return
            v = l.upper()
            if v.startswith(b"MAIL"):
                if b"SIZE=" in v or b"SMTPUTF8" in v:
                    hs.errors.append("MAIL uses capabilities learnt before TLS: %r" % l)
                await c.send(b"250 2.1.0 ok\r\n")
            elif v == b"DATA":
                await c.send(b"354 go\r\n")
                if await c.read_body():
                    hs.delivered.append(bytes(c.body))
                    c.body = bytearray()
                    await c.send(b"250 2.0.0 queued over TLS\r\n")
            elif v == b"QUIT":
                await c.send(b"221 bye\r\n")
                return
            else:
                await c.send(b"250 2.0.0 ok\r\n")
    return run


def test_next_hop_starttls_response_injection(relay, hostile, pki):
    hs = hostile(injection_session(pki))
    r = relay(gateway(hs.port, next_hop_tls="verify", outbound=dict(SHORT_OUT, ca_file=pki.ca)))
    replies = client_transaction(r, mail_extra=" SIZE=500")
    assert not hs.errors, hs.errors
    assert [x.code for x in replies] == [250, 250, 354, 250], replies
    assert len(hs.delivered) == 1 and hs.conns[0].tls
    assert hs.conns[0].tls_lines[0].upper().startswith(b"EHLO"), hs.conns[0].tls_lines
    ev = [e for e in r.events() if e.get("event") == "delivery"]
    assert ev and ev[-1].get("outcome") == "delivered" and ev[-1].get("tls_version"), ev
    # SMTPUTF8 was announced only before TLS: the relay must not use it
    rs = client_transaction(r, mail_extra=" SMTPUTF8")
    assert rs[-1].code // 100 in (4, 5) and len(hs.delivered) == 1, rs
    assert not hs.errors, hs.errors
