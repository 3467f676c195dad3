"""End-to-end tests of outbound DANE (RFC 7672 / RFC 7671, ANCHORS.md DANE-01..14).

The relay ($TLSRELAY_BIN, smarthost mode, [outbound] dane = yes) runs against a
test internet of its own (DaneNet: testnet.TestNet with DANE-specific
destinations and zones): destination SMTP servers on loopback, and nsd serving
secure.test. (signed), insecure.test. (unsigned) and bogus.test. (expired
signatures), with TLSA records computed from the destinations' certificates.
Some signed records are tampered with after signing (their RRSIG no longer
matches) to make one RRset bogus while its neighbours stay secure.

    server     certificate                               chain sent
    good       test CA, names of every "good" MX host    leaf + test CA
    ee         self-signed, CN selfsigned.example        leaf
    wrongname  test CA, mx.elsewhere.test                leaf + test CA
    expired    test CA, expired 2020-01-31               leaf + test CA
    untrusted  second CA (not the relay's ca_file)       leaf + ca2
    notls      no STARTTLS

Each case sends one message to a unique recipient at its own domain and checks
what the client got, what the destinations recorded and the relay's
"delivery" events.  One relay serves the whole module.
"""

import hashlib
import itertools
import os
import re
import shutil
import signal
import subprocess

import pytest

from dnsfixture import DnsFixture
from dns_fixture_plugin import TOOLS as DNS_TOOLS, free_port as dns_free_port
from harness import Relay
from smtpclient import SMTPClient
import testnet
from testnet import Server, TestNet

SENDER = "app@internal.test"
SEC = "secure.test"
INS = "insecure.test"
BOG = "bogus.test"
TLS_VERSIONS = ("TLSv1.2", "TLSv1.3")

# Names in the "good" server's certificate (test CA): every MX host whose
# DANE-TA test needs a matching name.  alias.cname3 only (not mx.cname3): the
# CNAME-expanded TLSA base domain is a reference identifier (RFC 7672 3.2.2).
GOOD_NAMES = tuple("%s.%s" % (h, SEC) for h in (
    "mx.ta", "mx.nomatch-ta", "mx.nomatch-ee", "mx.roll2", "mx.mixed", "alias.cname3",
    "mx.bogtlsa", "mx.v211", "mx.v202")) + ("mx.dmx.bogus.test", "mx.bogaddr.bogus.test")

DANE_SERVERS = [
    Server("good", 41, "mx.ta.secure.test", names=GOOD_NAMES),
    Server("ee", 42, "mx.ee.secure.test", cert="selfsigned", names=("selfsigned.example",)),
    Server("wrongname", 43, "mx.tawrong.secure.test", cert="wrongname",
           names=("mx.elsewhere.test",)),
    Server("expired", 44, "mx.taexp.secure.test", cert="expired"),
    Server("untrusted", 45, "mx.pkix.secure.test", cert="untrusted"),
    Server("notls", 46, "mx.notls.secure.test", cert="none"),
]

# [domain:NAME] levels of the module's relay (default_level = may, dane = yes).
DOMAIN_LEVELS = {
    "donly.secure.test": "dane-only",
    "donly-ok.secure.test": "dane-only",
    "dlevel.secure.test": "dane",
    "dplain.secure.test": "dane",
    "tlsains2.insecure.test": "dane-only",
}

_seq = itertools.count(1)


def token(tag):
    return "%s-%d-%d" % (tag, os.getpid(), next(_seq))


# --- the DANE test internet ------------------------------------------------------

def _openssl(args, data=None):
    p = subprocess.run(["openssl"] + args, input=data, capture_output=True, timeout=30)
    if p.returncode != 0:
        raise testnet.TestNetError("openssl %s: %s" % (" ".join(args), p.stderr.decode(errors="replace")))
    return p.stdout


def tlsa_data(path):
    """TLSA association data for the (first) certificate in path:
    cert = x 0 1, cert512 = x 0 2, certder = x 0 0, spki = x 1 1, spki512 = x 1 2."""
    der = _openssl(["x509", "-in", path, "-outform", "DER"])
    pem = _openssl(["x509", "-in", path, "-noout", "-pubkey"])
    spki = _openssl(["pkey", "-pubin", "-outform", "DER"], pem)
    return {"cert": hashlib.sha256(der).hexdigest(), "cert512": hashlib.sha512(der).hexdigest(),
            "certder": der.hex(), "spki": hashlib.sha256(spki).hexdigest(),
            "spki512": hashlib.sha512(spki).hexdigest()}


NOMATCH = hashlib.sha256(b"no certificate has this digest").hexdigest()
NOMATCH512 = hashlib.sha512(b"no certificate has this digest").hexdigest()


class TamperingDns(DnsFixture):
    """DnsFixture that rewrites the rdata of some records after signing, so
    their RRSIG no longer verifies: that one RRset is bogus, the rest of the
    zone stays secure.  tamper: [(zone, owner FQDN, type, new rdata or
    a function old rdata -> new)]."""

    def __init__(self, *args, tamper=(), **kw):
        self.tamper = list(tamper)
        super().__init__(*args, **kw)

    def _sign(self, zone):
        out = super()._sign(zone)
        todo = [t[1:] for t in self.tamper if t[0] == zone]
        if not todo or not out.endswith(".signed"):
            return out
        lines = open(out).read().splitlines()
        done = set()
        for i, line in enumerate(lines):
            f = line.split()
            for owner, rtype, rdata in todo:
                if len(f) >= 5 and f[0].lower() == owner and f[3] == rtype:
                    new = rdata(" ".join(f[4:])) if callable(rdata) else rdata
                    lines[i] = "\t".join(f[:4] + [new])
                    done.add((owner, rtype))
        missing = [t[:2] for t in todo if t[:2] not in done]
        if missing:
            raise RuntimeError("tamper: no %r in %s" % (missing, out))
        with open(out, "w") as fh:
            fh.write("\n".join(lines) + "\n")
        return out


class DaneNet(TestNet):
    """TestNet with DANE_SERVERS, self-signed leaves, chains that include
    their CA (RFC 7672 3.2.1: a DANE-TA server sends its TA) and the zones
    of dane_zone_records()."""

    __test__ = False

    def __init__(self, workdir):
        super().__init__(workdir, servers=DANE_SERVERS)
        self.tlsa = {}

    def _make_pki(self):
        self._mkcerts(str(self.pki))
        for s in self.servers.values():
            if not s.tls:
                continue
            names = s.names or (s.host,)
            san = ",".join("DNS:" + n for n in names)
            extra = {"expired": ["--expired"], "untrusted": ["--untrusted-ca"],
                     "selfsigned": ["--self-signed"]}.get(s.cert, [])
            self._mkcerts("--leaf", str(self.pki), s.name, names[0], san, *extra)
        for s in self.servers.values():
            if not s.tls:
                continue
            crt = self.pki / (s.name + ".crt")
            self.tlsa[s.name] = tlsa_data(str(crt))
            ca = {"good": "ca", "wrongname": "ca", "expired": "ca", "untrusted": "ca2"}.get(s.cert)
            if ca:
                with open(crt, "a") as f:
                    f.write((self.pki / (ca + ".crt")).read_text())
        self.tlsa["CA"] = tlsa_data(str(self.pki / "ca.crt"))
        self.tlsa["ca"] = self.tlsa["CA"]["cert"]
        self.tlsa["ca2"] = tlsa_data(str(self.pki / "ca2.crt"))["cert"]

    def _start_dns(self):
        records, tamper = dane_zone_records(self)
        last = None
        for i in range(3):
            try:
                self.dns = TamperingDns(self.dir / ("dns%d" % i), dns_free_port(), records,
                                        tamper=tamper)
                return
            except RuntimeError as e:
                last = e
        raise testnet.TestNetError("DNS fixture did not start: %s" % last)

    def addr(self, name):
        return self.servers[name].addr


# label -> (server, TLSA record from the tlsa table, expected depth of the match)
VARIANTS = {
    "v301": ("ee", "3 0 1 {ee[cert]}", 0),
    "v312": ("ee", "3 1 2 {ee[spki512]}", 0),
    "v300": ("ee", "3 0 0 {ee[certder]}", 0),
    "v211": ("good", "2 1 1 {CA[spki]}", 1),
    "v202": ("good", "2 0 2 {CA[cert512]}", 1),
}


def variant_records(t):
    return [(label, server, rec.format(**t)) for label, (server, rec, _) in VARIANTS.items()]


def dane_zone_records(tn):
    """(records per zone, tamper list) for every case of this module."""
    a = tn.addr
    t = tn.tlsa
    ee, good = t["ee"]["spki"], t["good"]["spki"]

    def host(label, server, *tlsa):
        out = ["%s A %s" % (label, a(server))]
        out += ["_25._tcp.%s TLSA %s" % (label, rec) for rec in tlsa]
        return out

    sec = []
    sec += ["ee MX 10 mx.ee"] + host("mx.ee", "ee", "3 1 1 " + ee)
    sec += ["ta MX 10 mx.ta"] + host("mx.ta", "good", "2 0 1 " + t["ca"])
    sec += ["tawrong MX 10 mx.tawrong"] + host("mx.tawrong", "wrongname", "2 0 1 " + t["ca"])
    sec += ["taexp MX 10 mx.taexp"] + host("mx.taexp", "expired", "2 0 1 " + t["ca"])
    sec += ["eeexp MX 10 mx.eeexp"] + host("mx.eeexp", "expired",
                                           "3 1 1 " + t["expired"]["spki"])
    sec += ["eewrong MX 10 mx.eewrong"] + host("mx.eewrong", "wrongname",
                                               "3 1 1 " + t["wrongname"]["spki"])
    sec += ["nomatch-ee MX 10 mx.nomatch-ee"] + host("mx.nomatch-ee", "good", "3 1 1 " + NOMATCH)
    sec += ["nomatch-ta MX 10 mx.nomatch-ta"] + host("mx.nomatch-ta", "good",
                                                     "2 0 1 " + t["ca2"])
    sec += ["dnotls MX 10 mx.dnotls"] + host("mx.dnotls", "notls", "3 1 1 " + ee)
    # PKIX-TA/EE only (unusable, RFC 7672 3.1.3) -> encrypt-only
    sec += ["pkix MX 10 mx.pkix"] + host("mx.pkix", "untrusted",
                                         "1 1 1 " + t["untrusted"]["spki"],
                                         "0 0 1 " + t["ca2"])
    sec += ["pkixnotls MX 10 mx.pkixnotls"] + host("mx.pkixnotls", "notls",
                                                   "1 1 1 " + t["untrusted"]["spki"])
    # unusable parameters (DANE-05): selector 2, short digest, usage 4
    sec += ["badparams MX 10 mx.badparams"] + host(
        "mx.badparams", "untrusted", "3 2 1 " + t["untrusted"]["spki"],
        "3 1 1 " + t["untrusted"]["spki"][:32], "4 1 1 " + t["untrusted"]["spki"])
    # rollover: the same two-record RRset at two hosts, each with one of the keys
    roll = ("3 1 1 " + ee, "3 1 1 " + good)
    sec += ["roll1 MX 10 mx.roll1"] + host("mx.roll1", "ee", *roll)
    sec += ["roll2 MX 10 mx.roll2"] + host("mx.roll2", "good", *roll)
    # mixed EE + TA, one matches
    sec += ["mixed MX 10 mx.mixed"] + host("mx.mixed", "good", "3 1 1 " + ee, "2 0 1 " + t["ca"])
    sec += ["mixed2 MX 10 mx.mixed2"] + host("mx.mixed2", "ee", "3 1 1 " + ee,
                                             "2 0 1 " + t["ca"])
    # other selector / matching-type combinations (a host each, see VARIANTS)
    for label, server, rec in variant_records(t):
        sec += ["%s MX 10 mx.%s" % (label, label)] + host("mx." + label, server, rec)
    # digest agility (RFC 7671 9, DANE-09): only the strongest mtype per
    # usage/selector counts
    sec += ["agil1 MX 10 mx.agil1"] + host("mx.agil1", "ee", "3 1 1 " + NOMATCH,
                                           "3 1 2 " + t["ee"]["spki512"])
    sec += ["agil2 MX 10 mx.agil2"] + host("mx.agil2", "ee", "3 1 1 " + ee,
                                           "3 1 2 " + NOMATCH512)
    # two MX: the preferred one fails DANE, the second passes
    sec += ["twomx MX 10 mx.tlsabad", "twomx MX 20 mx.ta"]
    sec += host("mx.tlsabad", "wrongname", "3 1 1 " + NOMATCH)
    # no TLSA (secure denial) for the level tests
    sec += ["donly MX 10 mx.notlsa", "dlevel MX 10 mx.notlsa", "dplain MX 10 mx.plain",
            "donly-ok MX 10 mx.ee"]
    sec += host("mx.notlsa", "wrongname") + host("mx.plain", "notls")
    # secure CNAME for the MX host (RFC 7672 2.2.2)
    sec += ["cname MX 10 mx.cname", "mx.cname CNAME alias.cname"]
    sec += host("alias.cname", "ee", "3 1 1 " + ee)
    sec += ["cname2 MX 10 mx.cname2", "mx.cname2 CNAME alias.cname2",
            "alias.cname2 A %s" % a("ee"), "_25._tcp.mx.cname2 TLSA 3 1 1 " + ee]
    sec += ["cname3 MX 10 mx.cname3", "mx.cname3 CNAME alias.cname3"]
    sec += host("alias.cname3", "good", "2 0 1 " + t["ca"])
    # half-DANE targets (their MX RRsets live in insecure.test.)
    sec += host("mx.half", "ee", "3 1 1 " + ee)
    sec += host("mx.halfbad", "good", "3 1 1 " + NOMATCH)
    # bogus TLSA (tampered below) with secure MX and A; and as the first of two MX
    sec += ["bogtlsa MX 10 mx.bogtlsa"] + host("mx.bogtlsa", "good", "3 1 1 " + NOMATCH)
    sec += ["bogfirst MX 10 mx.bogtlsa", "bogfirst MX 20 mx.ta"]
    # secure MX -> host in the bogus zone
    sec += ["bogaddr MX 10 mx.bogaddr.bogus.test."]
    sec += ["bogaddr2 MX 10 mx.bogaddr.bogus.test.", "bogaddr2 MX 20 mx.ta"]
    # DANE-02: secure A, bogus AAAA (tampered below)
    sec += ["v6broken MX 10 mx.v6broken", "mx.v6broken AAAA ::2"]
    sec += host("mx.v6broken", "ee", "3 1 1 " + ee)
    # DANE-02 (maddy#292): secure A, bogus AAAA denial (its NSEC tampered below)
    sec += ["v6denial MX 10 mx.v6denial"] + host("mx.v6denial", "ee", "3 1 1 " + ee)

    ins = ["tlsains MX 10 mx.tlsains"] + host("mx.tlsains", "wrongname", "3 1 1 " + NOMATCH)
    ins += ["tlsains2 MX 10 mx.tlsains"]
    ins += ["half MX 10 mx.half.secure.test.", "halfbad MX 10 mx.halfbad.secure.test."]

    bog = ["dmx MX 10 mx.dmx"] + host("mx.dmx", "good", "3 1 1 " + good)
    bog += host("mx.bogaddr", "good", "3 1 1 " + good)

    tamper = [
        # signed over NOMATCH, served as the good server's key: bogus, and it
        # would authenticate if the relay ignored the validation status
        ("secure.test.", "_25._tcp.mx.bogtlsa.secure.test.", "TLSA", "3 1 1 " + good),
        ("secure.test.", "mx.v6broken.secure.test.", "AAAA", "::3"),
        ("secure.test.", "mx.v6denial.secure.test.", "NSEC", lambda old: old + " TXT"),
    ]
    return {"secure.test.": sec, "insecure.test.": ins, "bogus.test.": bog}, tamper


# --- fixtures ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def danenet(tmp_path_factory):
    missing = [t for t in tuple(DNS_TOOLS) + ("openssl", "faketime") if shutil.which(t) is None]
    if missing:
        pytest.skip("DANE test internet needs %s" % ", ".join(missing))
    tn = DaneNet(tmp_path_factory.mktemp("danenet")).start()
    try:
        yield tn
    finally:
        tn.stop()


@pytest.fixture(scope="module")
def drelay(danenet, relay_bin, tmp_path_factory):
    cfg = danenet.relay_config(default_level="may", domains=DOMAIN_LEVELS,
                               outbound={"dane": "yes"})
    r = Relay(relay_bin, tmp_path_factory.mktemp("danerelay"), cfg).start()
    try:
        yield r
    finally:
        r.stop()


# --- client and checks ---------------------------------------------------------------

class Sent:
    def __init__(self, rcpt):
        self.rcpt = rcpt
        self.mail = self.rcpt_reply = self.data = self.final = None

    def __str__(self):
        return "RCPT <%s>: %s | DATA %s | final %s" % (self.rcpt, self.rcpt_reply, self.data,
                                                         self.final)


def send(port, domain, tag="d"):
    rcpt = "%s@%s" % (token(tag), domain)
    s = Sent(rcpt)
    with SMTPClient(port, timeout=40) as c:
        assert c.banner().code == 220
        assert c.ehlo("app.internal.test").code == 250
        s.mail = c.cmd("MAIL FROM:<%s>" % SENDER)
        s.rcpt_reply = c.cmd("RCPT TO:<%s>" % rcpt)
        if s.rcpt_reply.code == 250:
            s.data = c.cmd("DATA")
            if s.data.code == 354:
                c.send(b"From: <%s>\r\nTo: <%s>\r\nSubject: dane test\r\n\r\nhello\r\n.\r\n"
                       % (SENDER.encode(), rcpt.encode()))
                s.final = c.reply()
        c.quit()
    return s


def deliveries(relay, domain):
    return [e for e in relay.events()
            if e.get("event") == "delivery" and e.get("policy_domain") == domain]


def wait_deliveries(relay, domain, pred, timeout=5.0):
    relay.wait_events(lambda _: pred(deliveries(relay, domain)), timeout)
    return deliveries(relay, domain)


def norm_tlsa(recs):
    return sorted(" ".join(r.split()).lower() for r in recs)


def fmt(events):
    keys = ("mx_host", "receiving_ip", "policy_type", "policy_level", "result", "result_type",
            "dane_match", "dane_depth", "halfdane", "outcome", "tls_version", "smtp_reply")
    return "\n".join("  " + repr({k: e.get(k) for k in keys if k in e}) for e in events)


def session_counts(tn):
    return {n: len(tn.sessions(n)) for n in tn.servers}


def delivered(relay, tn, domain, server, tls=True, mx=None, tag="d", **fields):
    """Send to domain; assert it arrived once at server (over TLS when tls) and
    that the success event has fields (policy_string given as a list of
    records is compared as a set).  Returns (event, all events)."""
    s = send(relay.port, domain, tag)
    errs = []
    if s.rcpt_reply.code != 250 or s.final is None or s.final.code != 250:
        errs.append("client got %s, want 250 to RCPT and to the final dot" % s)
    got = tn.all_messages(s.rcpt)
    if list(got) != [server] or len(got[server]) != 1:
        errs.append("destinations recorded %r, want one message at %s"
                    % ({k: len(v) for k, v in got.items()}, server))
    elif got[server][0].tls != tls:
        errs.append("message arrived with tls=%s, want %s" % (got[server][0].tls, tls))
    want_result = fields.pop("result", "success")
    ev = wait_deliveries(relay, domain, lambda e: any(x.get("outcome") == "delivered"
                                                      for x in e))
    ok = [e for e in ev if e.get("outcome") == "delivered"]
    if not ok:
        errs.append("no delivery event with outcome delivered:\n%s" % fmt(ev))
        assert not errs, "%s:\n%s" % (domain, "\n".join(errs))
    e = ok[-1]
    want = {"result": want_result, "mx_host": mx or tn.server(server).host,
            "receiving_ip": tn.addr(server)}
    want.update(fields)
    for k, v in want.items():
        got_v = e.get(k)
        if k == "policy_string" and isinstance(got_v, list):
            if norm_tlsa(got_v) != norm_tlsa(v):
                errs.append("event policy_string = %r, want %r" % (got_v, v))
        elif got_v != v:
            errs.append("event %s = %r, want %r" % (k, got_v, v))
    if tls and e.get("tls_version") not in TLS_VERSIONS:
        errs.append("event tls_version = %r" % e.get("tls_version"))
    if want_result == "success" and "result_type" in e:
        errs.append("success event carries result_type %r" % e["result_type"])
    assert not errs, "%s: %s\n%s\nevents:\n%s" % (domain, s, "\n".join(errs), fmt(ev))
    return e, ev


def dane_ok(relay, tn, domain, server, match, depth, records, mx=None, halfdane=False,
            tag="d"):
    return delivered(relay, tn, domain, server, mx=mx, tag=tag, policy_type="tlsa",
                     policy_string=records, dane_match=match, dane_depth=depth,
                     halfdane=halfdane)


def deferred(relay, tn, domain, result_type, tag="d", untouched=(), **fields):
    """Send to domain; assert 451 4.7.x naming result_type, nothing delivered
    anywhere, no session at all at the servers in untouched, and failure
    events only, the last one with result_type and fields."""
    before = session_counts(tn)
    s = send(relay.port, domain, tag)
    errs = []
    r = s.rcpt_reply
    if not str(r).startswith("451 4.7."):
        errs.append("RCPT got %r, want 451 4.7.x" % str(r))
    elif result_type not in r.text:
        errs.append("RCPT reply %r does not name %s" % (str(r), result_type))
    got = tn.all_messages(s.rcpt)
    if got:
        errs.append("deferred but destinations recorded %r" % list(got))
    after = session_counts(tn)
    for n in untouched:
        if after[n] != before[n]:
            errs.append("server %s saw %d new SMTP session(s), want none"
                        % (n, after[n] - before[n]))
    ev = wait_deliveries(relay, domain, lambda e: any(x.get("result") == "failure" for x in e))
    if not ev:
        errs.append("no delivery event")
    else:
        bad = [x for x in ev if x.get("result") != "failure" or x.get("outcome") != "deferred"]
        if bad:
            errs.append("events that are not deferred failures:\n%s" % fmt(bad))
        e = ev[-1]
        want = {"result_type": result_type}
        want.update(fields)
        for k, v in want.items():
            if e.get(k) != v:
                errs.append("event %s = %r, want %r" % (k, e.get(k), v))
    assert not errs, "%s: %s\n%s\nevents:\n%s" % (domain, s, "\n".join(errs), fmt(ev))
    return ev


# --- DANE-EE / DANE-TA authentication ---------------------------------------------------

def test_dane_ee_self_signed(danenet, drelay):
    """3 1 1 of a self-signed certificate named selfsigned.example: authenticates."""
    dane_ok(drelay, danenet, "ee.secure.test", "ee", "3 1 1", 0,
            ["3 1 1 " + danenet.tlsa["ee"]["spki"]])


def test_dane_ta_right_name(danenet, drelay):
    """2 0 1 of the test CA, server certificate for the MX host: depth 1 (the CA)."""
    dane_ok(drelay, danenet, "ta.secure.test", "good", "2 0 1", 1,
            ["2 0 1 " + danenet.tlsa["ca"]])


def test_dane_ta_wrong_name_deferred(danenet, drelay):
    """DANE-TA checks the name (RFC 7672 3.2.2): test-CA certificate for another name."""
    deferred(drelay, danenet, "tawrong.secure.test", "certificate-host-mismatch",
             policy_type="tlsa", mx_host="mx.tawrong.secure.test")


def test_dane_ta_expired_deferred(danenet, drelay):
    deferred(drelay, danenet, "taexp.secure.test", "certificate-expired",
             policy_type="tlsa", mx_host="mx.taexp.secure.test")


@pytest.mark.parametrize("domain,server", [("eeexp.secure.test", "expired"),
                                           ("eewrong.secure.test", "wrongname")])
def test_dane_ee_ignores_name_and_expiry(danenet, drelay, domain, server):
    """RFC 7672 3.1.1 / DANE-07: DANE-EE checks neither name nor validity dates."""
    dane_ok(drelay, danenet, domain, server, "3 1 1", 0,
            ["3 1 1 " + danenet.tlsa[server]["spki"]], mx="mx.%s" % domain)


@pytest.mark.parametrize("domain,record", [("nomatch-ee.secure.test", "3 1 1 NOMATCH"),
                                           ("nomatch-ta.secure.test", "2 0 1 ca2")])
def test_tlsa_matching_nothing_deferred(danenet, drelay, domain, record):
    """The server has a PKIX-valid certificate for its name (test CA, in
    ca_file), but the TLSA records do not match it: DANE decides."""
    deferred(drelay, danenet, domain, "validation-failure", policy_type="tlsa",
             mx_host="mx." + domain)


@pytest.mark.parametrize("label", sorted(VARIANTS))
def test_selector_mtype_variants(danenet, drelay, label):
    """Cert/SPKI x Full/SHA-256/SHA-512, for DANE-EE and DANE-TA."""
    server, rec, depth = VARIANTS[label]
    rec = rec.format(**danenet.tlsa)
    dane_ok(drelay, danenet, label + ".secure.test", server, " ".join(rec.split()[:3]), depth,
            [rec], mx="mx.%s.secure.test" % label)


def test_digest_agility(danenet, drelay):
    """RFC 7671 9 / DANE-09: with 3 1 1 and 3 1 2 published, only 3 1 2 is
    used: a matching SHA-512 authenticates whatever the SHA-256 says, and a
    matching SHA-256 does not help when the SHA-512 does not match."""
    t = danenet.tlsa
    dane_ok(drelay, danenet, "agil1.secure.test", "ee", "3 1 2", 0,
            ["3 1 1 " + NOMATCH, "3 1 2 " + t["ee"]["spki512"]], mx="mx.agil1.secure.test")
    deferred(drelay, danenet, "agil2.secure.test", "validation-failure", policy_type="tlsa")


def test_tlsa_without_starttls_deferred(danenet, drelay):
    """DANE-10: usable TLSA and no STARTTLS: never plaintext."""
    deferred(drelay, danenet, "dnotls.secure.test", "starttls-not-supported",
             policy_type="tlsa")
    assert not [m for m in danenet.messages("notls") if "dnotls" in " ".join(m.rcpt_tos)]


# --- unusable records: encrypt-only (RFC 7672 2.2, DANE-05/06) ---------------------------

@pytest.mark.parametrize("domain", ["pkix.secure.test", "badparams.secure.test"])
def test_unusable_tlsa_is_encrypt_only(danenet, drelay, domain):
    """Only PKIX-TA/EE (or malformed) records: delivered over TLS to a
    certificate nothing trusts, reported as tlsa-invalid."""
    e, _ = delivered(drelay, danenet, domain, "untrusted", mx="mx." + domain,
                     result="failure", result_type="tlsa-invalid", policy_type="tlsa",
                     outcome="delivered")
    assert "dane_match" not in e, e


def test_unusable_tlsa_without_starttls_deferred(danenet, drelay):
    """encrypt-only is mandatory TLS: no plaintext to a host without STARTTLS."""
    deferred(drelay, danenet, "pkixnotls.secure.test", "starttls-not-supported")


# --- several records ------------------------------------------------------------------

def test_rollover_either_key(danenet, drelay):
    """Two 3 1 1 records (old and new key): the server with either key passes."""
    t = danenet.tlsa
    recs = ["3 1 1 " + t["ee"]["spki"], "3 1 1 " + t["good"]["spki"]]
    dane_ok(drelay, danenet, "roll1.secure.test", "ee", "3 1 1", 0, recs,
            mx="mx.roll1.secure.test")
    dane_ok(drelay, danenet, "roll2.secure.test", "good", "3 1 1", 0, recs,
            mx="mx.roll2.secure.test")


def test_mixed_ee_ta_single_match(danenet, drelay):
    """DANE-09: EE + TA records, only one matches: authenticated (either way)."""
    t = danenet.tlsa
    recs = ["3 1 1 " + t["ee"]["spki"], "2 0 1 " + t["ca"]]
    dane_ok(drelay, danenet, "mixed.secure.test", "good", "2 0 1", 1, recs,
            mx="mx.mixed.secure.test")
    dane_ok(drelay, danenet, "mixed2.secure.test", "ee", "3 1 1", 0, recs,
            mx="mx.mixed2.secure.test")


def test_first_mx_fails_dane_second_passes(danenet, drelay):
    e, ev = dane_ok(drelay, danenet, "twomx.secure.test", "good", "2 0 1", 1,
                    ["2 0 1 " + danenet.tlsa["ca"]])
    first = [x for x in ev if x.get("mx_host") == "mx.tlsabad.secure.test"]
    assert first and all(x.get("result") == "failure" for x in first), fmt(ev)
    assert first[-1].get("result_type") == "validation-failure", fmt(ev)
    assert first[-1].get("policy_type") == "tlsa", fmt(ev)


# --- where TLSA records count -----------------------------------------------------------

def test_tlsa_in_unsigned_zone_ignored(danenet, drelay):
    """Insecure TLSA (and MX, A) -> no DANE: default level may, even though
    the TLSA would not match and the certificate is for another name."""
    e, _ = delivered(drelay, danenet, "tlsains.insecure.test", "wrongname",
                     mx="mx.tlsains.insecure.test", policy_type="no-policy-found",
                     policy_string=[])
    assert "dane_match" not in e and not e.get("halfdane"), e


def test_tlsa_in_unsigned_zone_does_not_satisfy_dane_only(danenet, drelay):
    deferred(drelay, danenet, "tlsains2.insecure.test", "dane-required",
             untouched=("wrongname",))


def test_bogus_mx_deferred(danenet, drelay):
    deferred(drelay, danenet, "dmx.bogus.test", "dnssec-invalid", untouched=("good",))


def test_bogus_address_deferred(danenet, drelay):
    """Secure MX RRset naming a host whose A (and TLSA) answers are bogus."""
    deferred(drelay, danenet, "bogaddr.secure.test", "dnssec-invalid", untouched=("good",))


def test_bogus_address_first_mx_then_second(danenet, drelay):
    """A host with only bogus addresses is skipped (logged dnssec-invalid);
    the next MX delivers."""
    e, ev = dane_ok(drelay, danenet, "bogaddr2.secure.test", "good", "2 0 1", 1,
                    ["2 0 1 " + danenet.tlsa["ca"]])
    first = [x for x in ev if x.get("mx_host") == "mx.bogaddr.bogus.test"]
    assert first and first[-1].get("result_type") == "dnssec-invalid", fmt(ev)
    assert first[-1].get("result") == "failure", fmt(ev)


def test_bogus_tlsa_deferred(danenet, drelay):
    """Secure MX and A, bogus TLSA RRset (its data would match): DANE-03."""
    deferred(drelay, danenet, "bogtlsa.secure.test", "dnssec-invalid", untouched=("good",),
             mx_host="mx.bogtlsa.secure.test")


def test_bogus_tlsa_first_mx_then_second(danenet, drelay):
    """DANE-03: a bogus TLSA makes that host unusable; the next MX is tried."""
    e, ev = dane_ok(drelay, danenet, "bogfirst.secure.test", "good", "2 0 1", 1,
                    ["2 0 1 " + danenet.tlsa["ca"]])
    first = [x for x in ev if x.get("mx_host") == "mx.bogtlsa.secure.test"]
    assert first and first[-1].get("result_type") == "dnssec-invalid", fmt(ev)


def test_secure_cname_tlsa_at_alias(danenet, drelay):
    """RFC 7672 2.2.2 / DANE-04: mx.cname CNAME alias.cname, TLSA at the alias."""
    dane_ok(drelay, danenet, "cname.secure.test", "ee", "3 1 1", 0,
            ["3 1 1 " + danenet.tlsa["ee"]["spki"]], mx="mx.cname.secure.test")


def test_secure_cname_tlsa_at_original_name(danenet, drelay):
    """No TLSA at the alias (secure denial) -> the original name's TLSA."""
    dane_ok(drelay, danenet, "cname2.secure.test", "ee", "3 1 1", 0,
            ["3 1 1 " + danenet.tlsa["ee"]["spki"]], mx="mx.cname2.secure.test")


def test_secure_cname_dane_ta_alias_name(danenet, drelay):
    """DANE-TA through a CNAME: the certificate names only the alias (the TLSA
    base domain, a reference identifier per RFC 7672 3.2.2)."""
    dane_ok(drelay, danenet, "cname3.secure.test", "good", "2 0 1", 1,
            ["2 0 1 " + danenet.tlsa["ca"]], mx="mx.cname3.secure.test")


def test_halfdane(danenet, drelay):
    """DANE-01: insecure MX RRset -> signed MX host with TLSA: DANE applies, halfdane."""
    dane_ok(drelay, danenet, "half.insecure.test", "ee", "3 1 1", 0,
            ["3 1 1 " + danenet.tlsa["ee"]["spki"]], mx="mx.half.secure.test",
            halfdane=True)


def test_halfdane_mismatch_deferred(danenet, drelay):
    """Half-DANE is still DANE: a TLSA mismatch defers (not may)."""
    deferred(drelay, danenet, "halfbad.insecure.test", "validation-failure",
             policy_type="tlsa", halfdane=True)


@pytest.mark.parametrize("label", ["v6broken", "v6denial"])
def test_broken_aaaa_does_not_block_dane(danenet, drelay, label):
    """DANE-02: secure A + bogus AAAA RRset (v6broken) or bogus AAAA denial
    (v6denial, maddy#292): the IPv4 address is used, with DANE."""
    dane_ok(drelay, danenet, label + ".secure.test", "ee", "3 1 1", 0,
            ["3 1 1 " + danenet.tlsa["ee"]["spki"]], mx="mx.%s.secure.test" % label)


# --- levels ------------------------------------------------------------------------------

def test_dane_only_without_tlsa_deferred(danenet, drelay):
    deferred(drelay, danenet, "donly.secure.test", "dane-required", untouched=("wrongname",))


def test_dane_only_with_tlsa_delivered(danenet, drelay):
    dane_ok(drelay, danenet, "donly-ok.secure.test", "ee", "3 1 1", 0,
            ["3 1 1 " + danenet.tlsa["ee"]["spki"]])


def test_dane_level_without_tlsa_is_may(danenet, drelay):
    """level = dane, no TLSA: opportunistic TLS (certificate for another name
    accepted) and plaintext when there is no STARTTLS."""
    delivered(drelay, danenet, "dlevel.secure.test", "wrongname", mx="mx.notlsa.secure.test",
              policy_type="no-policy-found")
    delivered(drelay, danenet, "dplain.secure.test", "notls", tls=False,
              mx="mx.plain.secure.test", policy_type="no-policy-found")


# --- start-up ------------------------------------------------------------------------------

def test_dane_without_trust_anchor_refuses_to_start(danenet, relay_bin, tmp_path):
    """DANE-13: dane = yes and an unbound.conf without trust anchor."""
    conf = danenet.dns.write_unbound_conf(str(tmp_path / "noanchor.conf"), anchor=False)
    cfg = danenet.relay_config(outbound={"dane": "yes"})
    cfg["dns"] = {"unbound_conf": conf}
    r = Relay(relay_bin, tmp_path / "relay", cfg)       # writes relay.ini, not started
    p = subprocess.Popen([str(relay_bin), "-f", "-c", str(r.ini)], cwd=str(r.dir),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         stdin=subprocess.DEVNULL)
    try:
        out, err = p.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        os.kill(p.pid, signal.SIGKILL)
        p.communicate(timeout=10)
        pytest.fail("tlsrelay kept running with dane = yes and no trust anchor")
    text = (out + err).decode(errors="replace")
    assert p.returncode != 0, "exit 0 with dane = yes and no trust anchor:\n" + text
    assert re.search(r"trust.anchor", text, re.I), "no clear error:\n" + text
    assert "AddressSanitizer" not in text, text


# --- the log -------------------------------------------------------------------------------

def test_event_log_schema(danenet, drelay):
    """Every line this module produced matches docs/events.schema.json (runs last)."""
    from eventcheck import check_event_lines
    check_event_lines(drelay.raw_log().splitlines(), str(drelay.log))


def test_domain_level_none_does_not_weaken_dane(danenet, relay_bin, tmp_path):
    """DESIGN.md: a [domain:] level wins over the default but never weakens DANE,
    not even "none": published TLSA still authenticate the MX."""
    cfg = danenet.relay_config(default_level="may", domains={"ee.secure.test": "none"},
                               outbound={"dane": "yes"})
    r = Relay(relay_bin, tmp_path / "nonerelay", cfg).start()
    try:
        dane_ok(r, danenet, "ee.secure.test", "ee", "3 1 1", 0,
                ["3 1 1 " + danenet.tlsa["ee"]["spki"]], tag="none")
    finally:
        r.stop()
