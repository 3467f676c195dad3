"""End-to-end tests of the smarthost listener (MX routing + outbound TLS levels).

The relay ($TLSRELAY_BIN) runs in smarthost mode against the test internet of
testnet.py: a signed DNS zone set (nsd) whose MX records point at destination
SMTP servers on their own loopback addresses, each with a different TLS
defect.  A client on 127.0.0.1 (in relay_networks) sends one transaction per
case; the test then checks three things that must agree:

  * what the client got (the destination's own replies, or 4xx/5xx from the relay),
  * what each destination recorded (delivered, over TLS or not, or nothing),
  * the relay's "delivery" events (one per attempt per MX, RFC 8460 names).

Cases are data (tables below), run by one driver, check().
"""

import itertools
import os
import re
import socket
import time
from dataclasses import dataclass

import pytest

from smtpclient import SMTPClient
from testnet import TABLE_KINDS

SENDER = "app@internal.test"
OUTSIDE = "127.0.0.2"               # a client address outside relay_networks

# RFC 8460 section 4.3 result types (TLS negotiation and policy failures).
RESULT_TYPES = {
    "starttls-not-supported", "certificate-host-mismatch", "certificate-expired",
    "certificate-not-trusted", "validation-failure", "tlsa-invalid", "dnssec-invalid",
    "dane-required", "sts-policy-fetch-error", "sts-policy-invalid", "sts-webpki-invalid",
}

_seq = itertools.count(1)


def token(tag):
    """A local part unique in this run, so shared destinations can be filtered."""
    return "%s-%d-%d" % (tag, os.getpid(), next(_seq))


# --- client side ---------------------------------------------------------------

class Client(SMTPClient):
    """SMTPClient that may bind its source address (an 'outside' client)."""

    def __init__(self, port, source=None, timeout=30.0):
        self.sock = socket.create_connection(
            ("127.0.0.1", port), timeout=timeout,
            source_address=(source, 0) if source else None)
        self.timeout = timeout
        self.buf = b""
        self.tls = False


@dataclass
class Sent:
    banner: object
    mail: object
    rcpts: list
    data: object = None
    final: object = None
    seconds: float = 0.0

    def __str__(self):
        return "MAIL %s | RCPT %s | DATA %s | final %s" % (
            self.mail, " / ".join(map(str, self.rcpts)), self.data, self.final)


def send(port, rcpts, source=None, timeout=30.0):
    """One transaction: EHLO, MAIL, every RCPT, DATA (when a RCPT got 250)."""
    t0 = time.monotonic()
    with Client(port, source=source, timeout=timeout) as c:
        banner = c.banner()
        assert banner.code == 220, banner
        e = c.ehlo("app.internal.test")
        assert e.code == 250, e
        s = Sent(banner, c.cmd("MAIL FROM:<%s>" % SENDER), [])
        for r in rcpts:
            s.rcpts.append(c.cmd("RCPT TO:<%s>" % r))
        if any(r.code == 250 for r in s.rcpts):
            s.data = c.cmd("DATA")
            if s.data.code == 354:
                c.send(b"From: <app@internal.test>\r\nTo: <%s>\r\nSubject: smarthost test\r\n"
                       b"Message-Id: <%s@internal.test>\r\n\r\nhello\r\n.\r\n"
                       % (rcpts[0].encode(), token("m").encode()))
                s.final = c.reply()
        c.quit()
    s.seconds = time.monotonic() - t0
    return s


def expect(reply, pattern, what=""):
    assert reply is not None and re.match(pattern, str(reply), re.S), \
        "%s: got %r, want /%s/" % (what, str(reply), pattern)


# --- relay events ----------------------------------------------------------------

def deliveries(relay, domain):
    return [e for e in relay.events()
            if e.get("event") == "delivery" and e.get("policy_domain") == domain]


def wait_deliveries(relay, domain, pred, timeout=5.0):
    relay.wait_events(lambda _: pred(deliveries(relay, domain)), timeout)
    return deliveries(relay, domain)


def is_tls_version(v):
    return v in ("TLSv1.2", "TLSv1.3")


def plaintext_version(v):
    return v in (None, "", "none")


# --- the driver ------------------------------------------------------------------

@dataclass
class Want:
    """outcome: 'tls' | 'plain' (delivered) | 'deferred'.  server: who receives
    it (delivered).  result_type: for deferred; '*' = any RFC 8460 type."""
    outcome: str
    server: str = None
    result_type: str = None
    mx: str = None          # MX host name, when not the server's own name


def parse_want(cell, server):
    if cell in ("tls", "plain"):
        return Want(cell, server)
    return Want("deferred", None, cell)


def check(relay, tn, domain, want, local=None):
    """Send one message to local@domain and compare client replies, destination
    records and delivery events with want.  Returns a list of problems."""
    rcpt = "%s@%s" % (local or token("t"), domain)
    s = send(relay.port, [rcpt])
    errs = []
    where = "%s (%s)" % (domain, want.outcome + ("/" + want.result_type if want.result_type else ""))
    got = tn.all_messages(rcpt)
    if want.outcome in ("tls", "plain"):
        srv = tn.server(want.server)
        if s.rcpts[0].code != 250 or s.final is None or s.final.code != 250:
            errs.append("%s: client got %s, want 250 to RCPT and to the final dot" % (where, s))
        if list(got) != [want.server] or len(got[want.server]) != 1:
            errs.append("%s: destinations recorded %r, want one message at %s"
                        % (where, {k: len(v) for k, v in got.items()}, want.server))
        elif got[want.server][0].tls != (want.outcome == "tls"):
            errs.append("%s: message arrived with tls=%s" % (where, got[want.server][0].tls))
        ev = wait_deliveries(relay, domain, lambda e: any(x.get("result") == "success" for x in e))
        ok = [e for e in ev if e.get("result") == "success"]
        if not ok:
            errs.append("%s: no delivery event with result success: %r" % (where, ev))
            return errs
        e = ok[-1]
        for k, v in (("outcome", "delivered"), ("policy_type", "no-policy-found"),
                     ("mx_host", want.mx or srv.host), ("receiving_ip", srv.addr)):
            if e.get(k) != v:
                errs.append("%s: event %s = %r, want %r" % (where, k, e.get(k), v))
        tv = e.get("tls_version")
        if (want.outcome == "tls" and not is_tls_version(tv)) or \
                (want.outcome == "plain" and not plaintext_version(tv)):
            errs.append("%s: event tls_version = %r" % (where, tv))
    else:
        r = s.rcpts[0]
        rt = want.result_type
        if not re.match(r"^451 4\.[47]\.\d{1,3} ", str(r)):
            errs.append("%s: RCPT got %r, want 451 4.4.x/4.7.x" % (where, str(r)))
        elif rt not in (None, "*") and rt not in r.text:
            errs.append("%s: RCPT reply %r does not name %s" % (where, str(r), rt))
        elif rt not in (None, "*") and not str(r).startswith("451 4.7."):
            errs.append("%s: TLS policy failure %r should be 451 4.7.x" % (where, str(r)))
        if got:
            errs.append("%s: deferred but destinations recorded %r" % (where, list(got)))
        ev = wait_deliveries(relay, domain, lambda e: any(x.get("result") == "failure" for x in e))
        if not ev:
            errs.append("%s: no delivery event" % where)
            return errs
        bad = [(x.get("mx_host"), x.get("result"), x.get("smtp_reply")) for x in ev
               if x.get("result") != "failure"]
        if bad:     # nothing negotiated, nothing delivered: not an RFC 8460 success
            errs.append("%s: deferred, but attempts logged result != failure: %r" % (where, bad))
        e = ev[-1]
        if e.get("outcome") != "deferred":
            errs.append("%s: last event outcome = %r, want deferred" % (where, e.get("outcome")))
        if rt == "*":
            if e.get("result_type") not in RESULT_TYPES:
                errs.append("%s: event result_type = %r, want an RFC 8460 type"
                            % (where, e.get("result_type")))
        elif rt is not None and e.get("result_type") != rt:
            errs.append("%s: event result_type = %r, want %r" % (where, e.get("result_type"), rt))
    return errs


def run_cases(relay, tn, cases):
    errs = []
    for domain, want in cases:
        errs += check(relay, tn, domain, want)
    assert not errs, "\n" + "\n".join(errs)


def smarthost(relay, tn, **kw):
    return relay(tn.relay_config(**kw))


# --- 1. level x destination ----------------------------------------------------------
#
# plain / tls: delivered without / with TLS; anything else: deferred (451 4.7.x)
# with that RFC 8460 result type ('*': some RFC 8460 type, not specified).
# badtls offers STARTTLS and then fails the handshake: "may" retries in plaintext.

LEVEL_TABLE = """
kind       none   may    encrypt                 verify                     secure
good       plain  tls    tls                     tls                        tls
wrongname  plain  tls    tls                     certificate-host-mismatch  certificate-host-mismatch
expired    plain  tls    tls                     certificate-expired        certificate-expired
untrusted  plain  tls    tls                     certificate-not-trusted    certificate-not-trusted
notls      plain  plain  starttls-not-supported  starttls-not-supported     starttls-not-supported
badtls     plain  plain  *                       *                          *
"""


def level_table():
    rows = [line.split() for line in LEVEL_TABLE.strip().splitlines()]
    levels = rows[0][1:]
    out = {lv: [] for lv in levels}
    for row in rows[1:]:
        for lv, cell in zip(levels, row[1:]):
            out[lv].append(("%s.secure.test" % row[0], parse_want(cell, row[0])))
    assert sorted(r[0] for r in rows[1:]) == sorted(TABLE_KINDS)
    return out


@pytest.mark.parametrize("level", ["none", "may", "encrypt", "verify", "secure"])
def test_level_table(testnet, relay, level):
    r = smarthost(relay, testnet, default_level=level)
    run_cases(r, testnet, level_table()[level])


# --- 2. routing ----------------------------------------------------------------------

def test_mx_preference_and_reply_passthrough(testnet, relay):
    """pref.secure.test: MX 20 backup listed before MX 10 good -> good gets it,
    and the client sees good's own reply to the final dot."""
    r = smarthost(relay, testnet, default_level="verify")
    rcpt = token("pref") + "@pref.secure.test"
    s = send(r.port, [rcpt])
    expect(s.rcpts[0], r"250 2\.1\.5", "RCPT")
    expect(s.final, r"250 .*queued by mx-good", "final dot (destination's own reply)")
    assert len(testnet.messages("good", rcpt)) == 1
    assert testnet.messages("backup", rcpt) == []
    ev = wait_deliveries(r, "pref.secure.test", lambda e: e)
    assert [e.get("mx_host") for e in ev] == ["mx.good.secure.test"], ev


def test_destination_rcpt_refusal_passed_through(testnet, relay):
    r = smarthost(relay, testnet, default_level="verify")
    s = send(r.port, ["reject-%s@good.secure.test" % token("x")])
    expect(s.rcpts[0], r"550 5\.1\.1 User unknown", "RCPT refused by the destination")
    assert s.data is None


def test_mx_fallback_when_preferred_is_down(testnet, relay):
    r = smarthost(relay, testnet, default_level="verify")
    errs = check(r, testnet, "fallback.secure.test", Want("tls", "backup"))
    ev = deliveries(r, "fallback.secure.test")
    hosts = [(e.get("mx_host"), e.get("result")) for e in ev]
    assert hosts == [("mx.down.secure.test", "failure"),
                     ("mx.backup.secure.test", "success")], (errs, ev)
    assert ev[0].get("receiving_ip") in (None, "", testnet.server("down").addr), ev[0]
    assert not errs, errs


def test_mx_fallback_after_tls_policy_failure(testnet, relay):
    """MX 10 has a wrong-name certificate: at verify the next MX is tried."""
    r = smarthost(relay, testnet, default_level="may",
                  domains={"tlsfallback.secure.test": "verify"})
    errs = check(r, testnet, "tlsfallback.secure.test", Want("tls", "backup"))
    ev = deliveries(r, "tlsfallback.secure.test")
    assert [(e.get("mx_host"), e.get("result"), e.get("result_type")) for e in ev][:1] == \
        [("mx.wrongname.secure.test", "failure", "certificate-host-mismatch")], ev
    assert not errs, errs


def test_no_mx_reachable(testnet, relay):
    r = smarthost(relay, testnet, default_level="may")
    run_cases(r, testnet, [("down.secure.test", Want("deferred"))])


def test_implicit_mx(testnet, relay):
    """No MX, an A record: the domain itself is the MX (RFC 5321 section 5.1)."""
    r = smarthost(relay, testnet, default_level="verify")
    errs = check(r, testnet, "implicit.secure.test", Want("tls", "implicit"))
    assert not errs, "\n".join(errs)


def test_null_mx(testnet, relay):
    """MX 0 . : the domain accepts no mail (RFC 7505 section 3) -> 556 5.1.10."""
    r = smarthost(relay, testnet, default_level="may")
    rcpt = token("null") + "@nullmx.secure.test"
    s = send(r.port, [rcpt])
    expect(s.rcpts[0], r"556 5\.1\.10 ", "RCPT to a null-MX domain")
    assert s.final is None
    assert testnet.all_messages(rcpt) == {}


def test_bogus_mx_deferred_not_routed(testnet, relay):
    """The MX answer for mail.bogus.test fails DNSSEC validation: defer with
    dnssec-invalid and never connect to the (unvalidated) MX."""
    before = len(testnet.sessions("sink"))
    r = smarthost(relay, testnet, default_level="may")
    rcpt = token("bogus") + "@mail.bogus.test"
    s = send(r.port, [rcpt])
    expect(s.rcpts[0], r"451 4\.7\.5 .*dnssec-invalid", "RCPT to a bogus-MX domain")
    assert testnet.all_messages(rcpt) == {}
    time.sleep(0.5)
    assert len(testnet.sessions("sink")) == before, \
        "the relay connected to the bogus MX: %r" % testnet.sessions("sink")[before:]
    ev = deliveries(r, "mail.bogus.test")
    assert all(e.get("outcome") != "delivered" for e in ev), ev


def test_secure_level_accepts_mx_name_only_with_dnssec(testnet, relay):
    """secure: the certificate must name the recipient domain (or a subdomain);
    the MX host name counts only when the MX RRset is DNSSEC-secure.  verify
    always accepts the MX host name."""
    r = smarthost(relay, testnet, default_level="may", domains={
        "hosted.secure.test": "secure", "hosted.insecure.test": "secure",
        "other.insecure.test": "verify"})
    run_cases(r, testnet, [
        ("hosted.secure.test", Want("tls", "provider")),
        ("hosted.insecure.test", Want("deferred", result_type="certificate-host-mismatch")),
        ("other.insecure.test", Want("tls", "provider", mx="mx.provider.insecure.test")),
    ])


# --- 3. levels from the whitelist and [domain:] ---------------------------------------

def test_whitelist_forces_verify(testnet, relay):
    r = smarthost(relay, testnet, default_level="may", whitelist=[
        "# assessed domains", "wl-good.secure.test", "wl-wrongname.secure.test",
        "wl-notls.secure.test", ".wlsub.secure.test"])
    run_cases(r, testnet, [
        ("wl-good.secure.test", Want("tls", "good")),
        ("wl-wrongname.secure.test", Want("deferred", result_type="certificate-host-mismatch")),
        ("wl-notls.secure.test", Want("deferred", result_type="starttls-not-supported")),
        ("a.wlsub.secure.test", Want("deferred", result_type="certificate-host-mismatch")),
        # not whitelisted, same MX: default may delivers
        ("wrongname.secure.test", Want("tls", "wrongname")),
    ])


def test_domain_level_wins_over_default_not_over_whitelist(testnet, relay):
    r = smarthost(relay, testnet, default_level="encrypt",
                  whitelist=["wl-wrongname.secure.test"],
                  domains={"notls.secure.test": "none",
                           "wrongname.secure.test": "verify",
                           "wl-wrongname.secure.test": "may"})
    run_cases(r, testnet, [
        ("notls.secure.test", Want("plain", "notls")),
        ("wrongname.secure.test", Want("deferred", result_type="certificate-host-mismatch")),
        ("wl-wrongname.secure.test", Want("deferred", result_type="certificate-host-mismatch")),
        ("expired.secure.test", Want("tls", "expired")),        # default encrypt
    ])


# --- 4. not an open relay ----------------------------------------------------------

TRICKS = [
    # RCPT sent; server that may receive it; recipient it must see there
    ("{t}@good.secure.test", "good", "{t}@good.secure.test"),
    ("{t}%backup.secure.test@good.secure.test", "good", "{t}%backup.secure.test@good.secure.test"),
    ('"{t}@backup.secure.test"@good.secure.test', "good", '"{t}@backup.secure.test"@good.secure.test'),
    ("@backup.secure.test:{t}@good.secure.test", "good", "{t}@good.secure.test"),
]


def mine(tn, t):
    """{server: [rcpt_tos]} of the messages whose recipients contain t."""
    out = {}
    for k, v in tn.all_messages().items():
        hits = [m.rcpt_tos for m in v if any(t + "@" in x or t + "%" in x for x in m.rcpt_tos)]
        if hits:
            out[k] = hits
    return out


def test_outside_relay_networks_refused(testnet, relay):
    r = smarthost(relay, testnet, default_level="may")
    errs = []
    for sent, _, _ in TRICKS:
        t = token("out")
        rcpt = sent.format(t=t)
        s = send(r.port, [rcpt], source=OUTSIDE)
        if not re.match(r"^554 5\.7\.1 <[^>]*>: Relay access denied", str(s.rcpts[0])):
            errs.append("%s from %s: got %r, want 554 5.7.1 <..>: Relay access denied"
                        % (rcpt, OUTSIDE, str(s.rcpts[0])))
        got = mine(testnet, t)
        if got:
            errs.append("%s from outside: delivered to %r" % (rcpt, list(got)))
    s = send(r.port, ["plain-%s@good.secure.test" % token("o")], source=OUTSIDE)
    expect(s.rcpts[0], r"554 5\.7\.1 <plain-[^>]+@good\.secure\.test>: Relay access denied$")
    assert not errs, "\n".join(errs)


def test_relay_tricks_go_to_the_recipient_domain_only(testnet, relay):
    r = smarthost(relay, testnet, default_level="may")
    errs = []
    for sent, server, seen in TRICKS:
        t = token("trick")
        s = send(r.port, [sent.format(t=t)])
        got = mine(testnet, t)
        if s.rcpts[0].code != 250 or got != {server: [[seen.format(t=t)]]}:
            errs.append("RCPT <%s>: client %s; destinations recorded %r, want %s: [[%s]]"
                        % (sent.format(t=t), s, got, server, seen.format(t=t)))
    assert not errs, "\n".join(errs)


# --- 5. transaction shape and timeouts ------------------------------------------------

def test_second_domain_in_transaction_gets_452(testnet, relay):
    r = smarthost(relay, testnet, default_level="may")
    a = token("first") + "@good.secure.test"
    b = token("second") + "@backup.secure.test"
    s = send(r.port, [a, b])
    expect(s.rcpts[0], r"250 ", "RCPT first domain")
    expect(s.rcpts[1], r"452 4\.5\.3 ", "RCPT second domain")
    expect(s.final, r"250 ", "final dot")
    msgs = testnet.messages("good", a)
    assert len(msgs) == 1 and msgs[0].rcpt_tos == [a], msgs
    assert testnet.all_messages(b) == {}


def test_slow_destination_hits_command_timeout(testnet, relay):
    """Every reply of mx.slow takes 6 s; with command_timeout = 2 the relay
    gives up (4xx to the client) well before the destination would answer."""
    r = smarthost(relay, testnet, default_level="may",
                  outbound={"connect_timeout": 2, "command_timeout": 2})
    rcpt = token("slow") + "@slow.secure.test"
    s = send(r.port, [rcpt], timeout=30)
    expect(s.rcpts[0], r"4\d\d 4\.\d\.\d+ ", "RCPT to a slow destination")
    assert s.seconds < 5.5, "client waited %.1fs: the relay did not time out" % s.seconds
    assert testnet.all_messages(rcpt) == {}
    ev = wait_deliveries(r, "slow.secure.test", lambda e: e)
    assert ev and all(e.get("result") == "failure" for e in ev) \
        and ev[-1].get("outcome") == "deferred", ev


def test_delivery_event_fields(testnet, relay):
    r = smarthost(relay, testnet, default_level="verify")
    send(r.port, [token("ev") + "@good.secure.test"])
    ev = wait_deliveries(r, "good.secure.test", lambda e: e)
    assert len(ev) == 1, ev
    e = ev[0]
    for k in ("ts", "host", "session", "policy_type", "policy_domain", "mx_host", "result",
              "receiving_ip", "receiving_mx_hostname", "tls_version", "outcome", "smtp_reply"):
        assert k in e, "delivery event lacks %s: %r" % (k, e)
    assert e["receiving_mx_hostname"] == "mx.good.secure.test", e
    assert e["policy_type"] == "no-policy-found", e
    assert "queued by mx-good" in str(e["smtp_reply"]), e       # the destination's reply
    assert e.get("outcome") == "delivered" and e.get("result") == "success", e
    assert "result_type" not in e or e["result_type"] in (None, ""), e
