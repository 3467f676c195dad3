"""End-to-end tests of the inbound gateway policy (issue 6): the whitelist of
assessed domains (require_tls = whitelist / yes / no, reload on SIGHUP),
local domains only (the relay-trick table), recipient verification by the
legacy server, the trace fields the legacy server is given (Received: and
X-TLS-Policy:, forged copies removed), the PROXY protocol (v1 and v2 through
Debian's haproxy in front of two relays, malformed headers dropped) and
client certificates (asked for and logged, never required).

Every test runs the real binary ($TLSRELAY_BIN) on loopback against the
aiosmtpd next hop in smtpserver.py (Message.raw = what arrived, .trace = the
fields the relay prepended, .content = what the client sent).
"""

import email.utils
import hashlib
import re
import signal
import socket
import ssl
import struct
import time
from datetime import datetime, timezone

import pytest

import haproxy
from harness import free_port
from smtpclient import SMTPClient

LOCAL = "example.org, example.net"
RCPT = "a@example.org"
HOSTNAME = "relay.test"
CLIENT_SRC = "127.0.0.5"        # the "real" client behind haproxy (haproxy itself: 127.0.0.1)

WHITELIST = """\
# domains that passed the secure-email assessment
assessed.test
.gov.test          # the domain and every subdomain
Mixed.Case.TEST
"""

# Over plaintext these senders must get 530 (whitelisted, subdomain of a
# "."-entry, case-insensitive).
LISTED_SENDERS = ["a@assessed.test", "A@ASSESSED.Test", "a@gov.test", "a@sub.gov.test",
                  "a@deep.sub.GOV.test", "a@mixed.case.test"]
# ... and these are not whitelisted: relayed over plaintext.
UNLISTED_SENDERS = ["a@notassessed.test", "a@xassessed.test", "a@sub.assessed.test",
                    "a@assessed.test.evil.test", "a@xgov.test", "a@gov.test.evil.test"]

MUST_STARTTLS = r"530 5\.7\.0 Must issue a STARTTLS command first"
RELAY_DENIED = r"554 5\.7\.1 <.*>: Relay access denied$"


# --- configuration ---------------------------------------------------------------

def write_whitelist(path, text=WHITELIST):
    path.write_text(text)
    return str(path)


def listener(nh_port, pki, **kw):
    l = {"mode": "gateway", "local_domains": LOCAL,
         "next_hop": "127.0.0.1:%d" % nh_port, "next_hop_tls": "none",
         "tls_cert": pki.cert, "tls_key": pki.key, "require_tls": "whitelist",
         "max_connections": "1000", "max_connections_per_ip": "1000"}
    l.update({k: str(v) for k, v in kw.items()})
    return l


def gateway(nh_port, pki, wl, relay=None, outbound=None, **kw):
    cfg = {"relay": dict(relay or {}), "whitelist": {"file": wl},
           "listener:in": listener(nh_port, pki, **kw)}
    if outbound:
        cfg["outbound"] = dict(outbound)
    return cfg


@pytest.fixture
def wl(tmp_path):
    return write_whitelist(tmp_path / "whitelist")


# --- client side -----------------------------------------------------------------

def connect(port, source=None, timeout=10.0):
    c = SMTPClient.__new__(SMTPClient)
    c.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                      source_address=(source, 0) if source else None)
    c.timeout = timeout
    c.buf = b""
    c.tls = False
    return c


def expect(reply, pattern):
    assert re.match(pattern, str(reply), re.S), "got %r, want /%s/" % (str(reply), pattern)


def session(port, source=None, name="client.test"):
    """A client past the banner and EHLO."""
    c = connect(port, source)
    expect(c.banner(), r"220 relay\.test ")
    expect(c.ehlo(name), r"250[ -]relay\.test")
    return c


def start_tls(c, pki, version=None, cert=None):
    """STARTTLS on c with the client's TLS version forced to `version` (an
    ssl.TLSVersion; None: 1.2 or newer) and optionally a client certificate
    (crt, key).  Returns the handshake message types the client received
    (to see whether the server sent a CertificateRequest)."""
    seen = []
    ctx = ssl.create_default_context(cafile=pki.ca)
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    else:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None:
        ctx.load_cert_chain(*cert)

    def cb(conn, direction, ver, content_type, msg_type, data):
        if direction == "read" and content_type == ssl._TLSContentType.HANDSHAKE:
            seen.append(msg_type)
    ctx._msg_callback = cb
    expect(c.cmd("STARTTLS"), r"220 2\.0\.0 ")
    assert c.buf == b"", "plaintext after 220 to STARTTLS: %r" % c.buf
    c.sock = ctx.wrap_socket(c.sock, server_hostname=HOSTNAME)
    c.tls = True
    return seen


def cert_requested(seen):
    return ssl._TLSMessageType.CERTIFICATE_REQUEST in seen


def body(tag, extra=b""):
    return (b"From: <sender@outside.test>\r\nTo: <a@example.org>\r\nSubject: %s\r\n"
            b"Message-Id: <%s@outside.test>\r\n%s\r\nhello %s\r\n.. a dot line\r\n"
            % (tag.encode(), tag.encode(), extra, tag.encode()))


def stuff(b):
    return b"\r\n".join((b"." + l) if l.startswith(b".") else l for l in b.split(b"\r\n"))


def send_message(c, sender, rcpts, data):
    """One transaction; returns the replies.  data is unstuffed, CRLF-ended."""
    return c.transaction(sender, rcpts, stuff(data))


def local_port(c):
    return c.sock.getsockname()[1]


# --- events ----------------------------------------------------------------------

def session_id(r, port, ip="127.0.0.1", timeout=5.0):
    """The session of the client whose connect event has client_port == port."""
    def find(ev):
        return [e for e in ev if e.get("event") == "connect" and e.get("client_port") == port
                and e.get("client_ip") == ip]
    hits = find(r.wait_events(lambda ev: find(ev), timeout))
    assert len(hits) == 1, "no single connect event for %s:%d: %r" % (ip, port, r.events())
    return hits[0]["session"]


def events_of(r, sid, name=None):
    return [e for e in r.events() if e.get("session") == sid and
            (name is None or e.get("event") == name)]


def wait_event(r, pred, timeout=5.0):
    ev = r.wait_events(lambda ev: any(pred(e) for e in ev), timeout)
    return [e for e in ev if pred(e)]


# --- trace fields ----------------------------------------------------------------

RECEIVED_RE = re.compile(
    r"Received: from (?P<helo>\S+) \(\[(?P<ip>[^\]]+)\]\)"
    r"(?: \(using (?P<tlsver>\S+) with cipher (?P<cipher>\S+)"
    r" \((?P<bits>\d+)/(?P<bits2>\d+) bits\)\))?"
    r" by (?P<by>\S+) \(tlsrelay\) with (?P<proto>[A-Z0-9]+) id (?P<id>[0-9a-f]{16})"
    r"(?: for <(?P<rcpt>[^>]*)>)?; (?P<date>.+)$")


def unfold(field):
    return re.sub(r"\r\n[ \t]+", " ", field)


def header_section(raw):
    return raw.split(b"\r\n\r\n", 1)[0] + b"\r\n"


def header_fields(raw):
    """[(name, unfolded value)] of the header section of raw."""
    out = []
    for f in re.split(rb"\r\n(?![ \t])", header_section(raw).rstrip(b"\r\n")):
        name, _, value = f.partition(b":")
        out.append((name.decode("latin-1"), unfold(value.decode("latin-1")).strip()))
    return out


def trace(msg):
    """(Received match, X-TLS-Policy as a dict) of a message the relay passed on;
    fails unless the relay's fields come first and exactly one X-TLS-Policy
    is in the header section."""
    raw = msg.raw
    assert raw.startswith(b"Received: from "), "no Received: first: %r" % raw[:300]
    tr = msg.trace.decode("latin-1")
    assert tr, "no tlsrelay trace fields at the top: %r" % raw[:400]
    fields = re.split(r"\r\n(?![ \t])", tr.rstrip("\r\n"))
    assert len(fields) == 2, "want Received + X-TLS-Policy, got %r" % fields
    for line in tr.split("\r\n")[:-1]:
        assert len(line) <= 998, "trace line over 998 octets: %r" % line
    rec = RECEIVED_RE.match(unfold(fields[0]))
    assert rec, "Received: not in the expected form: %r" % fields[0]
    name, _, value = fields[1].partition(":")
    assert name == "X-TLS-Policy", fields[1]
    pol = {}
    for item in unfold(value).split(";"):
        k, sep, v = item.strip().partition("=")
        assert sep, "X-TLS-Policy item without '=': %r in %r" % (item, fields[1])
        pol[k] = v
    assert list(pol) == ["verdict", "tls", "required", "whitelisted", "sender-domain",
                         "relay"], fields[1]
    n = [k for k, _ in header_fields(raw) if k.strip().lower() == "x-tls-policy"]
    assert len(n) == 1, "%d X-TLS-Policy fields in the header: %r" % (
        len(n), header_section(raw).decode("latin-1"))
    return rec, pol


def check_date(text):
    d = email.utils.parsedate_to_datetime(text)
    assert d.tzinfo is not None, text
    skew = abs((datetime.now(timezone.utc) - d).total_seconds())
    assert skew < 600, "Received date %r is %.0fs off" % (text, skew)


def policy(verdict, tls, required, whitelisted, domain):
    return {"verdict": verdict, "tls": tls, "required": required, "whitelisted": whitelisted,
            "sender-domain": domain, "relay": HOSTNAME}


def assert_nothing_delivered(nh, wait=0.5):
    time.sleep(wait)
    assert nh.messages == [], "next hop received: %r" % nh.messages
    assert nh.handler.sessions == 0, "next hop was contacted (%d EHLO)" % nh.handler.sessions


# === 1. whitelist: TLS required for assessed senders =============================

def test_whitelisted_sender_over_plaintext_refused(relay, nexthop, pki, wl):
    nh = nexthop()
    r = relay(gateway(nh.port, pki, wl))
    c = session(r.port)
    sid = session_id(r, local_port(c))
    for sender in LISTED_SENDERS:
        expect(c.cmd("MAIL FROM:<%s>" % sender), MUST_STARTTLS)
    # A trailing dot does not get round it.
    rr = c.cmd("MAIL FROM:<a@assessed.test.>")
    assert rr.code != 250 and rr.code // 100 == 5, "a@assessed.test. over plaintext: %r" % rr
    # Pipelined behind the refused MAIL: nothing of the transaction runs.
    c.send(b"MAIL FROM:<a@sub.gov.test>\r\nRCPT TO:<a@example.org>\r\nDATA\r\n")
    expect(c.reply(), MUST_STARTTLS)
    expect(c.reply(), r"503 5\.5\.1 ")
    expect(c.reply(), r"503 5\.5\.1 ")
    expect(c.cmd("NOOP"), r"250 ")          # 530s do not end the session
    c.quit()
    assert_nothing_delivered(nh)
    pol = [(e["sender_domain"].lower(), e["whitelisted"], e["tls"], e["verdict"], e["client_ip"])
           for e in events_of(r, sid, "policy")]
    want = [(s.split("@")[1].lower(), True, False, "reject", "127.0.0.1")
            for s in LISTED_SENDERS]
    assert pol[:len(want)] == want, "policy events: %r" % pol
    assert all(p[3] == "reject" for p in pol), pol
    assert not events_of(r, sid, "mail"), "a MAIL was accepted: %r" % events_of(r, sid, "mail")
    rejects = [e for e in events_of(r, sid, "reject") if e["code"] == 530]
    assert len(rejects) >= len(LISTED_SENDERS) + 1 and all(e["command"] == "MAIL" for e in rejects)


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3],
                         ids=["tls1.2", "tls1.3"])
def test_whitelisted_sender_over_tls_relayed_with_trace(version, relay, nexthop, pki, wl):
    want_ver = {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]
    nh = nexthop()
    r = relay(gateway(nh.port, pki, wl))
    c = session(r.port)
    sid = session_id(r, local_port(c))
    seen = start_tls(c, pki, version)
    assert c.sock.version() == want_ver
    cipher, _, bits = c.sock.cipher()
    expect(c.ehlo(), r"250[ -]")
    sent = [("a@assessed.test", body("tls-1")), ("x@deep.sub.gov.test", body("tls-2")),
            ("m@MIXED.case.test", body("tls-3"))]
    for sender, data in sent:
        rs = send_message(c, sender, [RCPT], data)
        assert [x.code for x in rs] == [250, 250, 354, 250], (sender, rs)
    c.quit()
    msgs = nh.wait_for(3)
    assert [(m.mail_from, m.rcpt_tos) for m in msgs] == [(s, [RCPT]) for s, _ in sent]
    for m, (sender, data) in zip(msgs, sent):
        assert m.content == data, "content changed: %r" % m.raw
        rec, pol = trace(m)
        assert (rec["helo"], rec["ip"], rec["by"], rec["proto"], rec["id"], rec["rcpt"]) == \
            ("client.test", "127.0.0.1", HOSTNAME, "ESMTPS", sid, RCPT), rec.group(0)
        assert (rec["tlsver"], rec["cipher"], rec["bits"]) == (want_ver, cipher, str(bits)), \
            "Received names %r, the client negotiated %s %s %d" % (rec.group(0), want_ver,
                                                                  cipher, bits)
        check_date(rec["date"])
        assert pol == policy("pass", want_ver, "yes", "yes", sender.split("@")[1]), pol
    st = events_of(r, sid, "starttls")
    assert [(e["result"], e["tls_version"], e["tls_cipher"]) for e in st] == \
        [("success", want_ver, cipher)], st
    # The default listener does not ask for a client certificate.
    assert not cert_requested(seen), "CertificateRequest from a default listener: %r" % seen
    assert "client_cert" not in st[0], st[0]
    pol = [(e["sender_domain"], e["whitelisted"], e["tls"], e["verdict"])
           for e in events_of(r, sid, "policy")]
    assert pol == [(s.split("@")[1], True, True, "accept") for s, _ in sent], pol


def test_unlisted_sender_over_plaintext_relayed_with_verdict(relay, nexthop, pki, wl):
    nh = nexthop()
    r = relay(gateway(nh.port, pki, wl))
    c = session(r.port)
    sid = session_id(r, local_port(c))
    for i, sender in enumerate(UNLISTED_SENDERS):
        rs = send_message(c, sender, [RCPT], body("plain-%d" % i))
        assert [x.code for x in rs] == [250, 250, 354, 250], (sender, rs)
    # the same session after STARTTLS: TLS used though not required
    start_tls(c, pki)
    c.ehlo()
    rs = send_message(c, "a@notassessed.test", [RCPT], body("tls-unlisted"))
    assert rs[-1].code == 250, rs
    ver = c.sock.version()
    c.quit()
    n = len(UNLISTED_SENDERS)
    msgs = nh.wait_for(n + 1)
    assert [m.mail_from for m in msgs] == UNLISTED_SENDERS + ["a@notassessed.test"]
    errs = []
    for i, (m, sender) in enumerate(zip(msgs, UNLISTED_SENDERS)):
        assert m.content == body("plain-%d" % i)
        rec, pol = trace(m)
        if rec["tlsver"] is not None or rec["proto"] != "ESMTP" or rec["ip"] != "127.0.0.1":
            errs.append("%s: Received %r" % (sender, rec.group(0)))
        if pol != policy("plaintext", "none", "no", "no", sender.split("@")[1]):
            errs.append("%s: X-TLS-Policy %r" % (sender, pol))
    rec, pol = trace(msgs[n])
    if rec["proto"] != "ESMTPS" or rec["tlsver"] != ver:
        errs.append("over TLS: Received %r" % rec.group(0))
    if pol != policy("tls", ver, "no", "no", "notassessed.test"):
        errs.append("over TLS: X-TLS-Policy %r" % pol)
    assert not errs, "\n".join(errs)
    pol = [(e["whitelisted"], e["verdict"]) for e in events_of(r, sid, "policy")]
    assert pol == [(False, "accept")] * (n + 1), pol


def test_require_tls_yes_and_no(relay, nexthop, pki, wl):
    nh = nexthop()
    cfg = {"whitelist": {"file": wl},
           "listener:yes": listener(nh.port, pki, require_tls="yes"),
           "listener:no": listener(nh.port, pki, require_tls="no")}
    r = relay(cfg)
    # no: a whitelisted sender may use plaintext (and the header says so)
    c = session(r.ports["no"])
    sid_no = session_id(r, local_port(c))
    rs = send_message(c, "a@assessed.test", [RCPT], body("no"))
    assert rs[-1].code == 250, rs
    c.quit()
    # yes: everyone needs TLS, whitelisted or not
    c = session(r.ports["yes"])
    expect(c.cmd("MAIL FROM:<a@notassessed.test>"), MUST_STARTTLS)
    expect(c.cmd("MAIL FROM:<a@assessed.test>"), MUST_STARTTLS)
    start_tls(c, pki)
    c.ehlo()
    rs = send_message(c, "a@notassessed.test", [RCPT], body("yes"))
    assert rs[-1].code == 250, rs
    ver = c.sock.version()
    c.quit()
    msgs = nh.wait_for(2)
    assert [m.mail_from for m in msgs] == ["a@assessed.test", "a@notassessed.test"]
    assert trace(msgs[0])[1] == policy("plaintext", "none", "no", "yes", "assessed.test")
    assert trace(msgs[1])[1] == policy("pass", ver, "yes", "no", "notassessed.test")
    assert events_of(r, sid_no, "policy") == [], "require_tls = no made a policy verdict"


# === 2. forged X-TLS-Policy removed ==============================================

FORGED = {
    # name: (what the client sends, what the next hop must get after the trace)
    "mixed": (b"X-TLS-Policy: verdict=pass; tls=TLSv1.3; required=yes; whitelisted=yes;\r\n"
              b"\tsender-domain=assessed.test; relay=relay.test\r\n"
              b"From: <b@notassessed.test>\r\n"
              b"x-tls-policy:verdict=pass\r\n"
              b"To: <a@example.org>\r\n"
              b"X-Tls-Policy \t: verdict=pass\r\n"
              b"X-TLS-POLICY: verdict=pass;\r\n  more=1;\r\n\tand=2\r\n"
              b"X-TLS-Policy-Note: kept\r\n"
              b"X-Original-X-TLS-Policy: kept\r\n"
              b"Received: from evil.test (evil.test [192.0.2.66])\r\n\tby mx.evil.test; kept\r\n"
              b"Subject: forged\r\n"
              b"\r\n"
              b"X-TLS-Policy: in the body: kept\r\n"
              b"body\r\n",
              b"From: <b@notassessed.test>\r\n"
              b"To: <a@example.org>\r\n"
              b"X-TLS-Policy-Note: kept\r\n"
              b"X-Original-X-TLS-Policy: kept\r\n"
              b"Received: from evil.test (evil.test [192.0.2.66])\r\n\tby mx.evil.test; kept\r\n"
              b"Subject: forged\r\n"
              b"\r\n"
              b"X-TLS-Policy: in the body: kept\r\n"
              b"body\r\n", 4),
    # The forged field is the last one: the empty line after it must stay,
    # or the body's first line becomes a header the relay never looked at.
    "last-before-body": (b"Subject: last\r\n"
                         b"X-TLS-Policy: verdict=pass;\r\n folded\r\n"
                         b"\r\n"
                         b"X-TLS-Policy: verdict=pass; whitelisted=yes; forged=yes\r\n"
                         b"\r\n"
                         b"body\r\n",
                         b"Subject: last\r\n"
                         b"\r\n"
                         b"X-TLS-Policy: verdict=pass; whitelisted=yes; forged=yes\r\n"
                         b"\r\n"
                         b"body\r\n", 1),
}


@pytest.mark.parametrize("name", sorted(FORGED))
def test_forged_policy_header_removed(name, relay, nexthop, pki, wl):
    sent, want, nforged = FORGED[name]
    nh = nexthop()
    r = relay(gateway(nh.port, pki, wl))
    c = session(r.port)
    sid = session_id(r, local_port(c))
    rs = send_message(c, "b@notassessed.test", [RCPT], sent)
    assert rs[-1].code == 250, rs
    c.quit()
    m = nh.wait_for(1)[0]
    assert m.content == want, "after the trace fields:\n%s\nwant:\n%s" % (
        m.content.decode("latin-1"), want.decode("latin-1"))
    _, pol = trace(m)       # exactly one X-TLS-Policy in the header: the relay's
    assert pol == policy("plaintext", "none", "no", "no", "notassessed.test"), pol
    rm = wait_event(r, lambda e: e.get("event") == "header_removed" and e["session"] == sid)
    assert len(rm) == nforged and all(e["header"].lower() == "x-tls-policy" for e in rm), rm


# === 3. whitelist reload on SIGHUP ===============================================

def test_whitelist_reload_on_sighup(relay, nexthop, pki, tmp_path):
    wlp = tmp_path / "wl-reload"
    write_whitelist(wlp, "assessed.test\n")
    nh = nexthop()
    r = relay(gateway(nh.port, pki, str(wlp)))
    early = session(r.port)                  # opened before the reload, plaintext
    rs = send_message(early, "a@newly.test", [RCPT], body("before"))
    assert rs[-1].code == 250, rs
    expect(early.cmd("MAIL FROM:<a@assessed.test>"), MUST_STARTTLS)

    def reload(n):
        r.signal(signal.SIGHUP)
        ev = r.wait_events(lambda ev: sum(e.get("event") == "reload" for e in ev) >= n)
        ev = [e for e in ev if e.get("event") == "reload"]
        assert len(ev) >= n, "no reload event after SIGHUP %d: %r" % (n, r.events())
        return ev[n - 1]

    write_whitelist(wlp, "# assessment of 2026\nnewly.test\n")
    ev = reload(1)
    assert (ev["result"], ev.get("whitelist_domains")) == ("success", 1), ev
    # the session opened before the reload: still there, new rules
    expect(early.cmd("MAIL FROM:<a@newly.test>"), MUST_STARTTLS)
    rs = send_message(early, "a@assessed.test", [RCPT], body("after-early"))
    assert [x.code for x in rs] == [250, 250, 354, 250], rs
    # a new session: the same
    late = session(r.port)
    expect(late.cmd("MAIL FROM:<b@newly.test>"), MUST_STARTTLS)
    rs = send_message(late, "b@assessed.test", [RCPT], body("after-late"))
    assert rs[-1].code == 250, rs
    # a broken file keeps the previous list (not even its valid first line)
    write_whitelist(wlp, "other.test\nnot a domain!\n")
    ev = reload(2)
    assert ev["result"] == "failure" and ev.get("whitelist_domains") == 1, ev
    assert ev.get("error"), ev
    expect(late.cmd("MAIL FROM:<c@newly.test>"), MUST_STARTTLS)
    rs = send_message(late, "c@other.test", [RCPT], body("broken-other"))
    assert rs[-1].code == 250, "other.test from the broken file was applied: %r" % rs
    rs = send_message(early, "c@assessed.test", [RCPT], body("broken-early"))
    assert rs[-1].code == 250, rs
    # a missing file: the same
    wlp.unlink()
    ev = reload(3)
    assert ev["result"] == "failure" and ev.get("whitelist_domains") == 1, ev
    expect(early.cmd("MAIL FROM:<d@newly.test>"), MUST_STARTTLS)
    early.quit()
    late.quit()
    assert r.alive()
    msgs = nh.wait_for(5)
    assert [m.mail_from for m in msgs] == ["a@newly.test", "a@assessed.test", "b@assessed.test",
                                           "c@other.test", "c@assessed.test"]
    assert [trace(m)[1]["whitelisted"] for m in msgs] == ["no"] * 5


# === 4. local domains only: the relay-trick table ================================

TRICKS = [
    # (RCPT address, reply pattern)
    ("user%other.example@example.org", RELAY_DENIED),
    ("other.example!user@example.org", RELAY_DENIED),
    ("other.example!user%third.example@example.net", RELAY_DENIED),
    ('"user@other.example"@example.org', RELAY_DENIED),
    ('"user%other.example"@example.org', RELAY_DENIED),
    ("@example.org:user@other.example", RELAY_DENIED),
    ("@example.org,@example.net:user@other.example", RELAY_DENIED),
    ("user@[127.0.0.1]", RELAY_DENIED),
    ("user@[IPv6:::1]", RELAY_DENIED),
    ("user@other.example", RELAY_DENIED),
    ("user@example.org.other.example", RELAY_DENIED),
    ("user@sub.example.org", RELAY_DENIED),
    ("user@xexample.org", RELAY_DENIED),
    ("user@other.example.", r"5[0-9][0-9] "),
    ("user@example.org@other.example", r"5[0-9][0-9] "),
]

# (RCPT address, what the next hop must be asked for)
ACCEPTED = [
    ("user1@example.org", "user1@example.org"),
    ("User2@EXAMPLE.Org", "User2@EXAMPLE.Org"),
    ("user3@example.net.", None),                          # trailing dot ignored
    ("@other.example:user4@example.org", "user4@example.org"),
    ("@other.example,@third.example:user5@example.net", "user5@example.net"),
]


def test_relay_tricks_refused(relay, nexthop, pki, wl):
    nh = nexthop()
    r = relay(gateway(nh.port, pki, wl))
    c = session(r.port)
    expect(c.cmd("MAIL FROM:<b@notassessed.test>"), r"250 ")
    errs = []
    for addr, want in TRICKS:
        rr = c.cmd("RCPT TO:<%s>" % addr)
        if not re.match(want, str(rr)):
            errs.append("RCPT TO:<%s>: got %r, want /%s/" % (addr, str(rr), want))
    expect(c.cmd("DATA"), r"5[0-9][0-9] ")
    c.quit()
    # the trusted case: local recipients (case, trailing dot, a source route
    # to a local domain) - and the legacy server verifies the user
    c = session(r.port)
    expect(c.cmd("MAIL FROM:<b@notassessed.test>"), r"250 ")
    for addr, _ in ACCEPTED:
        rr = c.cmd("RCPT TO:<%s>" % addr)
        if rr.code != 250:
            errs.append("RCPT TO:<%s>: got %r, want 250" % (addr, str(rr)))
    rr = c.cmd("RCPT TO:<reject.me@example.org>")
    if not re.match(r"550 5\.1\.1 .*User unknown", str(rr)):
        errs.append("unknown user: got %r, want the next hop's 550 5.1.1" % str(rr))
    expect(c.cmd("DATA"), r"354 ")
    c.send(stuff(body("tricks")) + b".\r\n")
    expect(c.reply(), r"250 ")
    c.quit()
    assert not errs, "\n".join(errs)
    m = nh.wait_for(1)[0]
    assert len(m.rcpt_tos) == len(ACCEPTED), m.rcpt_tos
    for got, (addr, want) in zip(m.rcpt_tos, ACCEPTED):
        if want is None:
            assert got.rstrip(".").lower() == addr.rstrip(".").lower(), (addr, got)
        else:
            assert got == want, "RCPT TO:<%s> relayed as <%s>, want <%s>" % (addr, got, want)
    # no trick ever reached the next hop
    asked = {e["rcpt"] for e in r.events() if e.get("event") == "rcpt"}
    leaked = asked & {a for a, _ in TRICKS} | {a for a in asked if "other.example" in a and
                                                 not a.startswith("@other.example")}
    assert not leaked, "sent to the next hop: %r" % leaked


def test_local_subdomains(relay, nexthop, pki, wl):
    nh = nexthop()
    r = relay(gateway(nh.port, pki, wl, local_subdomains="yes"))
    c = session(r.port)
    expect(c.cmd("MAIL FROM:<b@notassessed.test>"), r"250 ")
    errs = []
    for addr, want in [("u@sub.example.org", r"250 "), ("u@a.b.EXAMPLE.net", r"250 "),
                       ("u@example.org", r"250 "), ("u@subexample.org", RELAY_DENIED),
                       ("u@sub.example.org.evil.test", RELAY_DENIED),
                       ("u%evil.test@sub.example.org", RELAY_DENIED),
                       ("@sub.example.org:u@evil.test", RELAY_DENIED)]:
        rr = c.cmd("RCPT TO:<%s>" % addr)
        if not re.match(want, str(rr)):
            errs.append("RCPT TO:<%s>: got %r, want /%s/" % (addr, str(rr), want))
    c.quit()
    assert not errs, "\n".join(errs)


def test_received_for_names_only_the_one_accepted_recipient(relay, nexthop, pki, wl):
    """'for <rcpt>' only with a single recipient - and then the one that was
    accepted, not the last one the client tried."""
    nh = nexthop()
    r = relay(gateway(nh.port, pki, wl))
    c = session(r.port)
    cases = [
        ([RCPT], RCPT),
        ([RCPT, "reject.me@example.org"], RCPT),           # the next hop's 550
        ([RCPT, "victim@elsewhere.test"], RCPT),           # our 554
        (["reject.me@example.org", RCPT], RCPT),
        ([RCPT, "b@example.net"], None),                   # two: no "for"
    ]
    for i, (rcpts, _) in enumerate(cases):
        rs = send_message(c, "s%d@notassessed.test" % i, rcpts, body("for-%d" % i))
        assert rs[-1].code == 250, rs
    c.quit()
    msgs = nh.wait_for(len(cases))
    errs = []
    for m, (rcpts, want) in zip(msgs, cases):
        rec, _ = trace(m)
        if rec["rcpt"] != want:
            errs.append("RCPT %s: Received says for <%s>, want %s" % (
                rcpts, rec["rcpt"], "<%s>" % want if want else "no 'for'"))
    assert not errs, "\n".join(errs)


def test_next_hop_down_gives_4xx(relay, pki, wl):
    dead = free_port()
    r = relay(gateway(dead, pki, wl, outbound={"connect_timeout": "3"}))
    c = session(r.port)
    start_tls(c, pki)
    c.ehlo()
    for sender in ("a@assessed.test", "a@notassessed.test"):
        expect(c.cmd("MAIL FROM:<%s>" % sender), r"250 ")
        rr = c.cmd("RCPT TO:<%s>" % RCPT, timeout=20)
        assert rr.code // 100 == 4, "RCPT with the next hop down: %r" % rr
        rr = c.cmd("DATA")
        assert rr.code // 100 == 5 and rr.code != 354, "DATA after a 4xx RCPT: %r" % rr
        expect(c.cmd("RSET"), r"250 ")
    c.quit()


# === 5. PROXY protocol ==========================================================

V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v1(src, sport, dst="127.0.0.1", dport=25, fam="TCP4"):
    return b"PROXY %s %s %s %d %d\r\n" % (fam.encode(), src.encode(), dst.encode(), sport, dport)


def v2(src, sport, dst="127.0.0.1", dport=25, tlvs=b"", cmd=0x21, famproto=None):
    fam = socket.AF_INET6 if ":" in src else socket.AF_INET
    if famproto is None:
        famproto = 0x21 if fam == socket.AF_INET6 else 0x11
    addrs = (socket.inet_pton(fam, src) + socket.inet_pton(fam, dst) +
             struct.pack("!HH", sport, dport))
    payload = addrs + tlvs
    return V2_SIG + bytes([cmd, famproto]) + struct.pack("!H", len(payload)) + payload


@pytest.fixture
def haproxy_factory(tmp_path):
    why = haproxy.available()
    if why:
        pytest.skip(why)
    started = []

    def make(servers, send):
        hp = haproxy.HAProxy(tmp_path / ("haproxy%d" % len(started)), servers, send=send)
        started.append(hp)
        ok, out = hp.check()
        assert ok, "haproxy -c refused %s:\n%s" % (hp.cfg, out)
        return hp.start()

    yield make
    for hp in started:
        hp.stop()


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_haproxy_in_front_of_two_relays(version, relay, nexthop, pki, wl, haproxy_factory):
    nh = nexthop()
    relays = [relay(gateway(nh.port, pki, wl, proxy_protocol=version)) for _ in range(2)]
    # the harness's readiness probe (a connection from 127.0.0.1 without a
    # header) is already in the log: only what comes after counts
    before = [len(r.wait_events(lambda ev: any(e.get("event") == "disconnect" for e in ev), 3))
              for r in relays]
    hp = haproxy_factory([("127.0.0.1", r.port) for r in relays],
                         "send-proxy" if version == "v1" else "send-proxy-v2")
    plan = ["plain", "listed-plain", "listed-tls", "plain"]
    ports = {}
    for i, kind in enumerate(plan):
        c = session(hp.port, source=CLIENT_SRC)
        ports[local_port(c)] = kind
        if kind == "listed-plain":
            expect(c.cmd("MAIL FROM:<a@assessed.test>"), MUST_STARTTLS)
        else:
            sender = "a@notassessed.test"
            if kind == "listed-tls":
                start_tls(c, pki)
                c.ehlo()
                sender = "a@assessed.test"
            rs = send_message(c, sender, [RCPT], body("haproxy-%s-%d" % (version, i)))
            assert rs[-1].code == 250, (kind, rs)
        c.quit()
    msgs = nh.wait_for(3)
    assert len(msgs) == 3
    for m in msgs:
        rec, _ = trace(m)
        assert rec["ip"] == CLIENT_SRC, "Received names %r, the client was %s" % (
            rec.group(0), CLIENT_SRC)
    served = {}
    for n, r in enumerate(relays):
        ev = r.wait_events(lambda ev: sum(e.get("event") == "disconnect"
                                          for e in ev[before[n]:]) >= 2, 5)[before[n]:]
        conns = [e for e in ev if e.get("event") == "connect"]
        for e in conns:
            assert (e["client_ip"], e.get("proxy_ip")) == (CLIENT_SRC, "127.0.0.1"), e
            assert e["client_port"] in ports, "connect from an unknown port: %r" % e
            served[e["client_port"]] = n
        bad = [e for e in ev if "client_ip" in e and e["client_ip"] != CLIENT_SRC]
        assert not bad, "relay %d logged another client address: %r" % (n, bad)
        assert not [e for e in ev if e.get("event") == "reject" and e["command"] == "PROXY"], ev
    assert sorted(served) == sorted(ports), "connections not seen by any relay: %r" % ports
    assert set(served.values()) == {0, 1}, "roundrobin did not reach both relays: %r" % served
    listed = [e for r in relays for e in r.events() if e.get("event") == "policy" and
              e["verdict"] == "reject"]
    assert [(e["client_ip"], e["sender_domain"]) for e in listed] == \
        [(CLIENT_SRC, "assessed.test")], listed


def proxy_relay(relay, nh, pki, wl):
    cfg = {"relay": {"command_timeout": "2"}, "whitelist": {"file": wl},
           "listener:v1": listener(nh.port, pki, proxy_protocol="v1"),
           "listener:v2": listener(nh.port, pki, proxy_protocol="v2")}
    return relay(cfg)


GOOD_V1 = v1(CLIENT_SRC, 40000)
GOOD_V2 = v2(CLIENT_SRC, 40000)

MALFORMED = [
    ("v1", "garbage", b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(range(40))),
    ("v1", "text-garbage", b"HELLO THERE\r\n"),
    ("v1", "plain-smtp", b"EHLO client.test\r\n"),
    ("v1", "bad-address", b"PROXY TCP4 127.0.0.300 127.0.0.1 40000 25\r\n"),
    ("v1", "v6-in-tcp4", b"PROXY TCP4 ::1 127.0.0.1 40000 25\r\n"),
    ("v1", "bad-port", b"PROXY TCP4 127.0.0.5 127.0.0.1 65536 25\r\n"),
    ("v1", "missing-field", b"PROXY TCP4 127.0.0.5 127.0.0.1 40000\r\n"),
    ("v1", "lower-case", b"proxy TCP4 127.0.0.5 127.0.0.1 40000 25\r\n"),
    ("v1", "bare-lf", b"PROXY TCP4 127.0.0.5 127.0.0.1 40000 25\n"),
    ("v1", "too-long", b"PROXY TCP4 " + b"1" * 200 + b"\r\n"),
    ("v1", "v2-header", GOOD_V2),
    ("v2", "wrong-signature", b"\r\n\r\n\x00\r\nQUIT\r" + GOOD_V2[12:]),
    ("v2", "v1-header", GOOD_V1),
    ("v2", "plain-smtp", b"EHLO client.test\r\n"),
    ("v2", "garbage", bytes(range(200, 256)) * 2),
    ("v2", "bad-version", v2(CLIENT_SRC, 40000, cmd=0x31)),
    ("v2", "udp", v2(CLIENT_SRC, 40000, famproto=0x12)),
    ("v2", "short-length", V2_SIG + b"\x21\x11\x00\x04" + b"\x7f\x00\x00\x05"),
    ("v2", "tlv-overrun", v2(CLIENT_SRC, 40000, tlvs=b"\x04\x00\x64" + b"x" * 3)),
]


def test_malformed_proxy_headers_dropped(relay, nexthop, pki, wl):
    nh = nexthop()
    r = proxy_relay(relay, nh, pki, wl)
    errs = []
    for lname, case, data in MALFORMED:
        c = connect(r.ports[lname])
        try:
            c.send(data)
            if not c.closed_by_peer(5):
                errs.append("%s/%s: not closed (got %r)" % (lname, case, c.buf[:100]))
        except OSError as e:
            errs.append("%s/%s: %s" % (lname, case, e))
        finally:
            c.close()
    # a client that sends nothing at all: dropped at the command timeout, silently
    c = connect(r.ports["v1"])
    t0 = time.monotonic()
    if not c.closed_by_peer(8):
        errs.append("silent client: not closed within 8s (got %r)" % c.buf[:100])
    elif time.monotonic() - t0 < 1.0:
        errs.append("silent client: closed after %.1fs, before the timeout" %
                    (time.monotonic() - t0))
    c.close()
    assert not errs, "\n".join(errs)
    ev = r.wait_events(lambda ev: sum(e.get("event") == "reject" for e in ev) >= len(MALFORMED))
    rej = [e for e in ev if e.get("event") == "reject" and e["command"] == "PROXY"]
    assert len(rej) == len(MALFORMED), "PROXY reject events: %r" % rej
    assert not [e for e in ev if e.get("event") == "connect"], \
        "a connection without a valid header was greeted: %r" % ev
    assert nh.handler.sessions == 0


def test_valid_proxy_headers(relay, nexthop, pki, wl):
    """The controls for the test above: valid headers are taken, in pieces or
    with SMTP pipelined behind them, and their address is the client's."""
    nh = nexthop()
    r = proxy_relay(relay, nh, pki, wl)
    cases = [
        ("v1", "tcp4", [GOOD_V1], CLIENT_SRC, 40000),
        ("v1", "split", [v1(CLIENT_SRC, 40005)[:4], v1(CLIENT_SRC, 40005)[4:20],
                         v1(CLIENT_SRC, 40005)[20:]], CLIENT_SRC, 40005),
        ("v1", "tcp6", [v1("2001:db8::5", 40001, "::1", fam="TCP6")], "2001:db8::5", 40001),
        ("v1", "unknown", [b"PROXY UNKNOWN\r\n"], "127.0.0.1", None),
        ("v2", "tcp4", [v2(CLIENT_SRC, 40006)], CLIENT_SRC, 40006),
        ("v2", "split", [v2(CLIENT_SRC, 40007)[:5], v2(CLIENT_SRC, 40007)[5:15],
                         v2(CLIENT_SRC, 40007)[15:]], CLIENT_SRC, 40007),
        ("v2", "tcp6", [v2("2001:db8::6", 40002, "::1")], "2001:db8::6", 40002),
        ("v2", "tlv", [v2("192.0.2.7", 40003, tlvs=b"\x04\x00\x02ab")], "192.0.2.7", 40003),
        ("v2", "local", [V2_SIG + b"\x20\x00\x00\x00"], "127.0.0.1", None),
    ]
    errs = []
    for lname, case, pieces, ip, port in cases:
        c = connect(r.ports[lname])
        for i, p in enumerate(pieces):
            if i:
                time.sleep(0.2)
            c.send(p)
        try:
            b = c.banner()
            if b.code != 220:
                errs.append("%s/%s: banner %r" % (lname, case, b))
            want_port = port or local_port(c)
            ev = wait_event(r, lambda e: e.get("event") == "connect" and
                            e.get("client_port") == want_port and e.get("client_ip") == ip)
            if len(ev) != 1 or ev[0].get("proxy_ip") != "127.0.0.1":
                errs.append("%s/%s: want one connect event client_ip=%s client_port=%s "
                            "proxy_ip=127.0.0.1, got %r" % (lname, case, ip, want_port, ev))
        except (EOFError, OSError) as e:
            errs.append("%s/%s: %s" % (lname, case, e))
        c.close()
    # header and EHLO in one write; the transaction's Received names the client
    c = connect(r.ports["v2"])
    c.send(v2("2001:db8::7", 40004, "::1") + b"EHLO client.test\r\n")
    expect(c.banner(), r"220 ")
    expect(c.reply(), r"250[ -]")
    rs = send_message(c, "a@notassessed.test", [RCPT], body("proxy-v6"))
    assert rs[-1].code == 250, rs
    c.quit()
    rec, _ = trace(nh.wait_for(1)[0])
    if rec["ip"] not in ("2001:db8::7", "IPv6:2001:db8::7"):
        errs.append("Received names %r, want [2001:db8::7]" % rec.group(0))
    assert not errs, "\n".join(errs)


def test_proxy_address_used_for_smarthost_relay_check(relay, pki):
    """relay_networks is checked against the address the balancer reports."""
    lst = {"mode": "smarthost", "relay_networks": "%s/32" % CLIENT_SRC, "proxy_protocol": "v1",
           "max_connections": "100", "max_connections_per_ip": "100"}
    r = relay({"listener:out": lst, "outbound": {"dane": "no", "mta_sts": "no"}})
    got = {}
    for src in (CLIENT_SRC, "192.0.2.7"):
        c = connect(r.port)         # from 127.0.0.1, which is not in relay_networks
        c.send(v1(src, 40010))
        expect(c.banner(), r"220 ")
        expect(c.ehlo(), r"250[ -]")
        expect(c.cmd("MAIL FROM:<app@internal.test>"), r"250 ")
        got[src] = c.cmd("RCPT TO:<u@[192.0.2.1]>", timeout=20)
        c.quit()
    assert not re.match(RELAY_DENIED, str(got[CLIENT_SRC])), \
        "client %s (in relay_networks, via PROXY) refused: %r" % (CLIENT_SRC, got[CLIENT_SRC])
    expect(got["192.0.2.7"], RELAY_DENIED)


# === 6. client certificates ======================================================

def cert_sha256(path):
    der = ssl.PEM_cert_to_DER_cert(open(path).read())
    return hashlib.sha256(der).hexdigest()


def test_client_certificates_logged_never_required(relay, nexthop, pki, wl):
    nh = nexthop()
    cfg = {"whitelist": {"file": wl}, "outbound": {"ca_file": pki.ca},
           "listener:ask": listener(nh.port, pki, tls_ask_client_cert="yes",
                                    tls_client_ca=pki.ca),
           "listener:askdef": listener(nh.port, pki, tls_ask_client_cert="yes"),
           "listener:default": listener(nh.port, pki)}
    r = relay(cfg)
    trusted, untrusted = pki.leaf("nexthop"), pki.leaf("untrusted")
    v12, v13 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3
    cases = [
        # listener, client certificate, TLS version, requested?, verified (None: no cert)
        ("ask", trusted, v13, True, True),
        ("ask", trusted, v12, True, True),
        ("ask", untrusted, v13, True, False),
        ("ask", untrusted, v12, True, False),
        ("ask", None, v13, True, None),
        ("ask", None, v12, True, None),
        ("askdef", trusted, v13, True, True),
        ("askdef", untrusted, v13, True, False),
        ("default", trusted, v13, False, None),
        ("default", trusted, v12, False, None),
    ]
    errs = []
    for i, (lname, cert, ver, asked, verified) in enumerate(cases):
        what = "%s/%s/%s" % (lname, "none" if cert is None else
                             "trusted" if cert == trusted else "untrusted", ver.name)
        c = session(r.ports[lname])
        sid = session_id(r, local_port(c))
        seen = start_tls(c, pki, ver, cert)
        c.ehlo()
        # never required: mail from an assessed domain goes through whatever was offered
        rs = send_message(c, "a@assessed.test", [RCPT], body("cert-%d" % i))
        if rs[-1].code != 250:
            errs.append("%s: transaction %r" % (what, rs))
        c.quit()
        if cert_requested(seen) != asked:
            errs.append("%s: CertificateRequest %s" % (what, "missing" if asked else "sent"))
        st = events_of(r, sid, "starttls")
        if len(st) != 1:
            errs.append("%s: starttls events %r" % (what, st))
            continue
        e = st[0]
        if not asked:
            if "client_cert" in e:
                errs.append("%s: client_cert logged without asking: %r" % (what, e))
            continue
        if e.get("client_cert") is not (cert is not None):
            errs.append("%s: client_cert=%r" % (what, e.get("client_cert")))
        if cert is None:
            if any(k.startswith("client_cert_") for k in e):
                errs.append("%s: certificate details without a certificate: %r" % (what, e))
            continue
        sha = re.sub(r"[^0-9a-f]", "", str(e.get("client_cert_sha256", "")).lower())
        want_issuer = "tlsrelay development CA" if verified else "ca2"
        if (e.get("client_cert_verified") is not verified or "CN=localhost" not in
                str(e.get("client_cert_subject")) or
                want_issuer not in str(e.get("client_cert_issuer")) or
                sha != cert_sha256(cert[0])):
            errs.append("%s: want verified=%s, subject CN=localhost, issuer ~%r, sha256 %s; "
                        "got %r" % (what, verified, want_issuer, cert_sha256(cert[0]), e))
    assert not errs, "\n".join(errs)
    assert len(nh.wait_for(len(cases))) == len(cases)
