"""MTA-STS (RFC 8461) end to end through the smarthost (issue 5, ANCHORS STS-01..17).

test_mtasts.py tests policy/mtasts.c alone through a probe; this module sends
real mail through $TLSRELAY_BIN ([outbound] mta_sts = yes, dane = no,
default_level = may, ca_file = the test CA) into a test internet of its own
(StsNet, a testnet.TestNet), everything on loopback and stopped by PID:

  * destination SMTP servers on 127.x.y.N:25 (testnet.py serve):
        good       test CA, every name in GOOD_NAMES
        wrongname  test CA, mx.elsewhere.test only
        expired    test CA, right names, expired 2020-01-31
        untrusted  second CA (not in ca_file), right names
        unlisted   test CA, valid names, but never named by the policy
        deep       test CA, a.b.deep.secure.test
        notls      no STARTTLS
  * nsd serving secure.test. (signed): MX, _mta-sts TXT and mta-sts.<d> A
    records per case, TLSA records for the DANE-vs-STS cases, and two
    _mta-sts TXT RRsets tampered with after signing (bogus -> SERVFAIL);
  * nginx serving https://mta-sts.<d>/.well-known/mta-sts.txt (test CA
    certificate for every mta-sts.<d>) on WEB:443: policy files, a 404, a
    301, text/html, > 64 KiB, invalid policies;
  * test_mtasts.PyServer on PY:443, whose answer for mta-sts.slow.* takes 60 s.

Each case sends one message to a unique recipient and checks the client's
replies, what the destinations recorded and the relay's delivery events.
Most policies would defer if wrongly applied (MX certificate for another
name), so "delivered as without a policy" is visible, and vice versa.
"""

import os
import shutil
import socket
import subprocess
import threading
import time
import itertools

import pytest

import testnet
from dns_fixture_plugin import TOOLS as DNS_TOOLS, free_port as dns_free_port
from harness import Relay
from smtpclient import SMTPClient
from testnet import Server, TestNet
from test_dane import TamperingDns, tlsa_data
from test_mtasts import NGINX, PyServer, _stop, _wait_listening

SENDER = "app@internal.test"
SEC = "secure.test"
TLS_VERSIONS = ("TLSv1.2", "TLSv1.3")
STS_TIMEOUT = 4             # [outbound] mta_sts_timeout of the module's relay
_seq = itertools.count(1)


def fq(label):
    return "%s.%s" % (label, SEC)


GOOD_NAMES = tuple(fq(h) for h in (
    "mx.enf", "mx2.nolist2", "mx.wild", "mx.testnolist", "mx.slow", "mx.fast",
    "mx.danests2", "mx.txtfail", "mx2.enffallback"))

STS_SERVERS = [
    Server("good", 61, fq("mx.enf"), names=GOOD_NAMES),
    Server("wrongname", 62, fq("mx.enfwrong"), cert="wrongname", names=("mx.elsewhere.test",)),
    Server("expired", 63, fq("mx.enfexp"), cert="expired",
           names=(fq("mx.enfexp"), fq("mx.testexp"))),
    Server("untrusted", 64, fq("mx.enfuntr"), cert="untrusted",
           names=(fq("mx.enfuntr"), fq("mx.testuntr"))),
    Server("unlisted", 65, fq("mx.nolist"), names=(fq("mx.nolist"), fq("mx.nolist2"))),
    Server("deep", 66, fq("a.b.deep"), names=(fq("a.b.deep"),)),
    Server("notls", 67, fq("mx.enfnotls"), cert="none"),
]


def policy(mode, *mx, age=86400):
    return "version: STSv1\nmode: %s\n%smax_age: %d\n" % (
        mode, "".join("mx: %s\n" % m for m in mx), age)


def lines(text):
    return [l for l in text.splitlines() if l.strip()]


# label -> ([(pref, MX host label, server)], policy body or None for no file)
CASES = {
    "enf": ([(10, "mx.enf", "good")], policy("enforce", fq("mx.enf"))),
    "enfwrong": ([(10, "mx.enfwrong", "wrongname")], policy("enforce", fq("mx.enfwrong"))),
    "enfexp": ([(10, "mx.enfexp", "expired")], policy("enforce", fq("mx.enfexp"))),
    "enfuntr": ([(10, "mx.enfuntr", "untrusted")], policy("enforce", fq("mx.enfuntr"))),
    "enfnotls": ([(10, "mx.enfnotls", "notls")], policy("enforce", fq("mx.enfnotls"))),
    "enfnone": ([(10, "mx.enfnone", "wrongname")], policy("enforce", fq("mx.enfnone"))),
    "enfcase": ([(10, "mx.enfcase", "wrongname")], policy("enforce", fq("mx.enfcase"))),
    "enffallback": ([(10, "mx.enffallback", "wrongname"), (20, "mx2.enffallback", "good")],
                    policy("enforce", "*." + fq("enffallback"))),
    "nolist": ([(10, "mx.nolist", "unlisted")], policy("enforce", fq("mx.other.nolist"))),
    "nolist2": ([(10, "mx.nolist2", "unlisted"), (20, "mx2.nolist2", "good")],
                policy("enforce", fq("mx2.nolist2"))),
    "wild": ([(10, "mx.wild", "good")], policy("enforce", "*." + fq("wild"))),
    "deep": ([(10, "a.b.deep", "deep")], policy("enforce", "*." + fq("deep"))),
    "testwrong": ([(10, "mx.testwrong", "wrongname")], policy("testing", fq("mx.testwrong"))),
    "testexp": ([(10, "mx.testexp", "expired")], policy("testing", fq("mx.testexp"))),
    "testuntr": ([(10, "mx.testuntr", "untrusted")], policy("testing", fq("mx.testuntr"))),
    "testnolist": ([(10, "mx.testnolist", "good")],
                   policy("testing", fq("mx.other.testnolist"))),
    "testverify": ([(10, "mx.testverify", "wrongname")],
                   policy("testing", fq("mx.testverify"))),
    "testnotls": ([(10, "mx.testnotls", "notls")], policy("testing", fq("mx.testnotls"))),
    # fetch failures: every one would defer (wrong-name MX) if it were applied
    "f404": ([(10, "mx.f404", "wrongname")], None),
    "fredir": ([(10, "mx.fredir", "wrongname")], None),
    "fctype": ([(10, "mx.fctype", "wrongname")], policy("enforce", fq("mx.fctype"))),
    "fbig": ([(10, "mx.fbig", "wrongname")], policy("enforce", fq("mx.fbig")) +
             ("x-pad: " + "b" * 90 + "\n") * 800),
    "finvalid": ([(10, "mx.finvalid", "wrongname")],
                 "version: STSv1\nmode: bogus\nmx: %s\nmax_age: 86400\n" % fq("mx.finvalid")),
    "fnomx": ([(10, "mx.fnomx", "wrongname")], policy("enforce")),
    "cache": ([(10, "mx.cache", "wrongname")], policy("enforce", fq("mx.cache"))),
    "restart": ([(10, "mx.restart", "wrongname")], policy("enforce", fq("mx.restart"))),
    "idchg": ([(10, "mx.idchg", "wrongname")], policy("enforce", fq("mx.idchg"))),
    "slow": ([(10, "mx.slow", "good")], None),
    "fast": ([(10, "mx.fast", "good")], policy("enforce", fq("mx.fast"))),
    "danests": ([(10, "mx.danests", "wrongname")], policy("enforce", fq("mx.danests"))),
    "danests2": ([(10, "mx.danests2", "good")], policy("enforce", fq("mx.other.danests2"))),
    "txtfail": ([(10, "mx.txtfail", "good")], policy("enforce", fq("mx.txtfail"))),
    "txtfail2": ([(10, "mx.txtfail2", "wrongname")], policy("enforce", fq("mx.txtfail2"))),
}
# _mta-sts TXT RRsets rewritten after signing: DNSSEC-bogus, the resolver SERVFAILs.
BOGUS_TXT = ("txtfail", "txtfail2")


# --- the test internet -----------------------------------------------------------

class StsNet(TestNet):
    __test__ = False

    def __init__(self, workdir):
        super().__init__(workdir, servers=STS_SERVERS)
        self.web_port = 443 if os.geteuid() == 0 else None
        self.txt_ids = {label: "1" for label in CASES}
        self.www = self.dir / "www"
        self.nginx = self.py = None
        self.web = self.pyaddr = None

    def _make_pki(self):
        super()._make_pki()
        names = ["mta-sts." + fq(l) for l in CASES]
        self._mkcerts("--leaf", str(self.pki), "sts", names[0],
                      ",".join("DNS:" + n for n in names))
        self.spki = {n: tlsa_data(str(self.pki / (n + ".crt")))["spki"]
                     for n in ("good", "wrongname")}

    def records(self):
        a = lambda n: self.servers[n].addr          # noqa: E731
        sec, hosts = [], {}
        for label, (mxs, _) in CASES.items():
            for pref, host, server in mxs:
                sec.append("%s MX %d %s" % (label, pref, host))
                hosts[host] = server
            ttl = "1 IN " if label == "idchg" else ""
            sec.append('_mta-sts.%s %sTXT "v=STSv1; id=%s"' % (label, ttl, self.txt_ids[label]))
            sec.append("mta-sts.%s A %s" % (label, self.pyaddr if label == "slow" else self.web))
        sec += ["%s A %s" % (h, a(s)) for h, s in hosts.items()]
        sec += ["_25._tcp.mx.danests TLSA 3 1 1 " + self.spki["wrongname"],
                "_25._tcp.mx.danests2 TLSA 3 1 1 " + self.spki["good"]]
        return {"secure.test.": sec}

    def _start_dns(self):
        self.web, self.pyaddr = self.base + "70", self.base + "71"
        if self.web_port is None:
            self.web_port = dns_free_port()
        for addr in (self.web, self.pyaddr):
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind((addr, self.web_port))
                except OSError as e:
                    raise testnet.TestNetError("%s:%d busy: %s" % (addr, self.web_port, e))
        tamper = [("secure.test.", "_mta-sts.%s.secure.test." % l, "TXT", '"v=STSv1; id=9"')
                  for l in BOGUS_TXT]
        last = None
        for i in range(3):
            try:
                self.dns = TamperingDns(self.dir / ("dns%d" % i), dns_free_port(),
                                        self.records(), tamper=tamper)
                return
            except RuntimeError as e:
                last = e
        raise testnet.TestNetError("DNS fixture did not start: %s" % last)

    def set_txt_id(self, label, ident):
        self.txt_ids[label] = ident
        self.dns.update(self.records())

    # -- policy web servers --
    def write_policy(self, label, text):
        p = self.www / fq(label) / ".well-known" / "mta-sts.txt"
        p.parent.mkdir(parents=True, exist_ok=True)
        if text is None:
            if p.exists():
                p.unlink()
            return
        p.with_suffix(".tmp").write_text(text)
        os.replace(p.with_suffix(".tmp"), p)

    def _nginx_conf(self):
        d = self.dir / "nginx"
        srv = """    server {
        listen %s:%d ssl%%s;
        server_name %%s;
        ssl_certificate %s;
        ssl_certificate_key %s;
%%s    }
""" % (self.web, self.web_port, self.pki / "sts.crt", self.pki / "sts.key")
        servers = [
            srv % (" default_server", r"~^mta-sts\.(?<dom>.+)$",
                   "        root %s/$dom;\n" % self.www),
            srv % ("", "mta-sts." + fq("fredir"), "        return 301 https://mta-sts.%s"
                   "/.well-known/mta-sts.txt;\n" % fq("enf")),
            srv % ("", "mta-sts." + fq("fctype"), "        root %s/%s;\n        types { }\n"
                   "        default_type text/html;\n" % (self.www, fq("fctype"))),
        ]
        tmp = "".join("    %s_temp_path %s/tmp/%s;\n" % (k, d, k)
                      for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        return ("daemon off;\nmaster_process on;\nworker_processes 1;\n%s"
                "pid %s/nginx.pid;\nerror_log %s/error.log info;\n"
                "events { worker_connections 256; }\nhttp {\n"
                "    log_format sts '$host $status $request_uri';\n"
                "    access_log %s/access.log sts;\n%s"
                "    types { text/plain txt; }\n    default_type application/octet-stream;\n"
                "    ssl_protocols TLSv1.2 TLSv1.3;\n%s}\n"
                % ("user root;\n" if os.geteuid() == 0 else "", d, d, d, tmp,
                   "".join(servers)))

    def start_nginx(self):
        d = self.dir / "nginx"
        (d / "tmp").mkdir(parents=True, exist_ok=True)
        conf = d / "nginx.conf"
        conf.write_text(self._nginx_conf())
        with open(d / "stderr.txt", "ab") as log:
            self.nginx = subprocess.Popen(
                [NGINX, "-p", str(d), "-c", str(conf), "-e", str(d / "error.log")],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        _wait_listening(self.web, self.web_port, self.nginx, "nginx")

    def stop_nginx(self):
        _stop(self.nginx)
        self.nginx = None

    def requests(self, label):
        p = self.dir / "nginx" / "access.log"
        if not p.exists():
            return 0
        host = "mta-sts." + fq(label)
        return sum(1 for l in p.read_text().splitlines() if l.split(" ", 1)[0] == host)

    def start(self):
        super().start()
        try:
            for label, (_, text) in CASES.items():
                self.write_policy(label, text)
            self.start_nginx()
            self.py = PyServer(str(self.dir), self.pyaddr, self.web_port,
                               str(self.pki / "sts.crt"), str(self.pki / "sts.key"))
            self.py.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self):
        self.stop_nginx()
        if self.py is not None:
            self.py.stop()
        super().stop()


@pytest.fixture(scope="module")
def stsnet(tmp_path_factory):
    missing = [t for t in tuple(DNS_TOOLS) + ("openssl", "faketime") if shutil.which(t) is None]
    if missing:
        pytest.skip("MTA-STS test internet needs %s (apt-get install nsd ldnsutils "
                    "openssl faketime)" % ", ".join(missing))
    if not os.access(NGINX, os.X_OK):
        pytest.skip("nginx not installed (apt-get install nginx-light)")
    net = StsNet(tmp_path_factory.mktemp("stsnet")).start()
    try:
        yield net
    finally:
        net.stop()


def relay_cfg(net, dane="no"):
    cfg = net.relay_config(
        default_level="may", domains={fq("testverify"): "verify", fq("enfnone"): "none"}, relay={"workers": "1"},
        outbound={"mta_sts": "yes", "dane": dane, "mta_sts_timeout": str(STS_TIMEOUT),
                  "mta_sts_port": str(net.web_port)})
    cfg["domain:" + fq("txtfail2")] = {"mta_sts_dns_failure": "deliver"}
    return cfg


def start_relay(relay_bin, net, workdir, **kw):
    r = Relay(relay_bin, workdir, relay_cfg(net, **kw))
    return r.start()


@pytest.fixture(scope="module")
def srelay(stsnet, relay_bin, tmp_path_factory):
    r = start_relay(relay_bin, stsnet, tmp_path_factory.mktemp("stsrelay"))
    try:
        yield r
    finally:
        r.stop()


# --- sending and checking -------------------------------------------------------------

class Sent:
    def __init__(self, rcpt):
        self.rcpt = rcpt
        self.rcpt_reply = self.final = None
        self.elapsed = 0.0

    def __str__(self):
        return "RCPT <%s>: %s | final %s" % (self.rcpt, self.rcpt_reply, self.final)


def send(port, label, tag="s"):
    rcpt = "%s-%d-%d@%s" % (tag, os.getpid(), next(_seq), fq(label))
    s = Sent(rcpt)
    t0 = time.monotonic()
    with SMTPClient(port, timeout=40) as c:
        assert c.banner().code == 220
        assert c.ehlo("app.internal.test").code == 250
        assert c.cmd("MAIL FROM:<%s>" % SENDER).code == 250
        s.rcpt_reply = c.cmd("RCPT TO:<%s>" % rcpt)
        if s.rcpt_reply.code == 250:
            assert c.cmd("DATA").code == 354
            c.send(b"From: <%s>\r\nTo: <%s>\r\nSubject: sts\r\n\r\nhello\r\n.\r\n"
                   % (SENDER.encode(), rcpt.encode()))
            s.final = c.reply()
        c.quit()
    s.elapsed = time.monotonic() - t0
    return s


def send_session(port, labels):
    """One SMTP session, one transaction per label; [(rcpt, RCPT reply, final)]."""
    out = []
    with SMTPClient(port, timeout=40) as c:
        assert c.banner().code == 220
        assert c.ehlo("app.internal.test").code == 250
        for label in labels:
            rcpt = "m-%d-%d@%s" % (os.getpid(), next(_seq), fq(label))
            assert c.cmd("MAIL FROM:<%s>" % SENDER).code == 250
            r = c.cmd("RCPT TO:<%s>" % rcpt)
            final = None
            if r.code == 250:
                assert c.cmd("DATA").code == 354
                c.send(b"Subject: sts\r\n\r\nhello\r\n.\r\n")
                final = c.reply()
            else:
                assert c.cmd("RSET").code == 250
            out.append((rcpt, r, final))
        c.quit()
    return out


def deliveries(relay, label):
    return [e for e in relay.events() if e.get("event") == "delivery" and
            e.get("policy_domain", "").lower() == fq(label).lower()]


def fetches(relay, label):
    return [e for e in relay.events() if e.get("event") == "policy_fetch" and
            e.get("domain", "").lower() == fq(label).lower()]


def fmt(events):
    keys = ("mx_host", "policy_type", "policy_mode", "policy_level", "result", "result_type",
            "outcome", "dane_match", "smtp_reply")
    return "\n".join("  " + repr({k: e.get(k) for k in keys if k in e}) for e in events)


def session_counts(net):
    return {n: len(net.sessions(n)) for n in net.servers}


def check_fields(e, fields, errs):
    for k, v in fields.items():
        if e.get(k) != v:
            errs.append("event %s = %r, want %r" % (k, e.get(k), v))


def delivered(relay, net, label, server, result="success", untouched=(), tls=True, **fields):
    """Send to label; assert one message at server (over TLS if tls) and a delivered
    event with result and fields.  Returns (event, Sent)."""
    before = session_counts(net)
    s = send(relay.port, label)
    errs = []
    if s.rcpt_reply.code != 250 or s.final is None or s.final.code != 250:
        errs.append("client got %s, want 250 to RCPT and to the final dot" % s)
    got = net.all_messages(s.rcpt)
    if list(got) != [server] or len(got[server]) != 1:
        errs.append("destinations recorded %r, want one message at %s"
                    % ({k: len(v) for k, v in got.items()}, server))
    elif got[server][0].tls != tls:
        errs.append("message arrived with tls=%s, want %s" % (got[server][0].tls, tls))
    after = session_counts(net)
    for n in untouched:
        if after[n] != before[n]:
            errs.append("server %s saw %d SMTP session(s), want none" % (n, after[n] - before[n]))
    relay.wait_events(lambda _: any(x.get("outcome") == "delivered"
                                    for x in deliveries(relay, label)))
    ev = deliveries(relay, label)
    ok = [x for x in ev if x.get("outcome") == "delivered"]
    e = ok[-1] if ok else {}
    if not ok:
        errs.append("no delivery event with outcome delivered")
    else:
        check_fields(e, dict({"result": result, "receiving_ip": net.server(server).addr},
                             **fields), errs)
        if tls and e.get("tls_version") not in TLS_VERSIONS:
            errs.append("event tls_version = %r" % e.get("tls_version"))
        if result == "success" and "result_type" in e:
            errs.append("success event carries result_type %r" % e["result_type"])
    assert not errs, "%s: %s\n%s\nevents:\n%s" % (label, s, "\n".join(errs), fmt(ev))
    return e, s


def deferred(relay, net, label, result_type, untouched=(), enh="4.7.5", **fields):
    """Send to label; assert 451 <enh> naming result_type, nothing delivered,
    no session at the servers in untouched, only deferred failure events, the
    last one with result_type and fields.  Returns the last event."""
    before = session_counts(net)
    s = send(relay.port, label)
    errs = []
    r = s.rcpt_reply
    if not str(r).startswith("451 " + enh):
        errs.append("RCPT got %r, want 451 %s" % (str(r), enh))
    elif result_type not in r.text:
        errs.append("RCPT reply %r does not name %s" % (str(r), result_type))
    got = net.all_messages(s.rcpt)
    if got:
        errs.append("deferred but destinations recorded %r" % list(got))
    after = session_counts(net)
    for n in untouched:
        if after[n] != before[n]:
            errs.append("server %s saw %d SMTP session(s), want none" % (n, after[n] - before[n]))
    relay.wait_events(lambda _: any(x.get("result") == "failure"
                                    for x in deliveries(relay, label)))
    ev = deliveries(relay, label)
    e = {}
    if not ev:
        errs.append("no delivery event")
    else:
        bad = [x for x in ev if x.get("result") != "failure" or x.get("outcome") != "deferred"]
        if bad:
            errs.append("events that are not deferred failures:\n%s" % fmt(bad))
        e = ev[-1]
        check_fields(e, dict({"result_type": result_type}, **fields), errs)
    assert not errs, "%s: %s\n%s\nevents:\n%s" % (label, s, "\n".join(errs), fmt(ev))
    return e


def sts_fields(label, mode="enforce", mx=None):
    return {"policy_type": "sts", "policy_mode": mode,
            "policy_string": lines(CASES[label][1]),
            "mx_host": fq(mx or "mx." + label)}


# --- enforce --------------------------------------------------------------------------

def test_enforce_valid_certificate_delivered(stsnet, srelay):
    e, _ = delivered(srelay, stsnet, "enf", "good", **sts_fields("enf"))
    assert e["policy_string"] == ["version: STSv1", "mode: enforce", "mx: mx.enf.secure.test",
                                  "max_age: 86400"], e
    f = fetches(srelay, "enf")
    assert [(x["outcome"], x.get("mode")) for x in f] == [("success", "enforce")], f


@pytest.mark.parametrize("label,rtype", [
    ("enfwrong", "certificate-host-mismatch"),
    ("enfexp", "certificate-expired"),
    ("enfuntr", "certificate-not-trusted")])
def test_enforce_bad_certificate_deferred(stsnet, srelay, label, rtype):
    deferred(srelay, stsnet, label, rtype, **sts_fields(label))


def test_enforce_without_starttls_deferred(stsnet, srelay):
    deferred(srelay, stsnet, "enfnotls", "starttls-not-supported", enh="4.7.",
             **sts_fields("enfnotls"))


def test_static_level_none_does_not_weaken_enforce(stsnet, srelay):
    """[domain:enfnone] level = none: a static level never weakens MTA-STS."""
    deferred(srelay, stsnet, "enfnone", "certificate-host-mismatch", **sts_fields("enfnone"))


def test_enforce_first_mx_fails_second_delivers(stsnet, srelay):
    """A certificate failure at MX 10 (listed): the next listed MX is tried."""
    e, _ = delivered(srelay, stsnet, "enffallback", "good",
                     **sts_fields("enffallback", mx="mx2.enffallback"))
    first = [x for x in deliveries(srelay, "enffallback")
             if x.get("mx_host") == fq("mx.enffallback")]
    assert first and first[-1]["result_type"] == "certificate-host-mismatch", fmt(first)
    assert first[-1]["outcome"] == "deferred" and first[-1]["policy_mode"] == "enforce"


def test_recipient_domain_case_does_not_matter(stsnet, srelay):
    """STS-17: RCPT to ...@EnfCase.secure.test finds and enforces the policy."""
    deferred(srelay, stsnet, "EnfCase", "certificate-host-mismatch",
             **sts_fields("enfcase"))


def test_enforce_mx_not_in_policy_not_used(stsnet, srelay):
    """STS-09: the only MX matches no pattern: not even connected to."""
    deferred(srelay, stsnet, "nolist", "validation-failure", untouched=("unlisted",),
             **sts_fields("nolist"))


def test_enforce_skips_unlisted_mx_for_listed_one(stsnet, srelay):
    """MX 10 is not in the policy (never connected), MX 20 is: delivered there."""
    delivered(srelay, stsnet, "nolist2", "good", untouched=("unlisted",),
              **sts_fields("nolist2", mx="mx2.nolist2"))


def test_wildcard_matches_one_label_only(stsnet, srelay):
    """STS-08: *.wild.secure.test matches mx.wild.secure.test; *.deep.secure.test
    does not match a.b.deep.secure.test (whose certificate is valid)."""
    delivered(srelay, stsnet, "wild", "good", **sts_fields("wild"))
    deferred(srelay, stsnet, "deep", "validation-failure", untouched=("deep",),
             **sts_fields("deep", mx="a.b.deep"))


# --- testing ---------------------------------------------------------------------------

@pytest.mark.parametrize("label,server,rtype", [
    ("testwrong", "wrongname", "certificate-host-mismatch"),
    ("testexp", "expired", "certificate-expired"),
    ("testuntr", "untrusted", "certificate-not-trusted")])
def test_testing_bad_certificate_delivered_and_reported(stsnet, srelay, label, server, rtype):
    """STS-10: deliver, and report what enforce would have refused."""
    delivered(srelay, stsnet, label, server, result="failure", result_type=rtype,
              **sts_fields(label, mode="testing"))


def test_testing_mx_not_in_policy_delivered_and_reported(stsnet, srelay):
    delivered(srelay, stsnet, "testnolist", "good", result="failure",
              result_type="validation-failure", **sts_fields("testnolist", mode="testing"))


def test_testing_without_starttls_delivered_and_reported(stsnet, srelay):
    delivered(srelay, stsnet, "testnotls", "notls", tls=False, result="failure",
              result_type="starttls-not-supported", **sts_fields("testnotls", mode="testing"))


def test_testing_does_not_weaken_static_verify(stsnet, srelay):
    """[domain:] level = verify and an STS policy in testing: the static level
    still demands a valid certificate (DESIGN: no downgrade)."""
    deferred(srelay, stsnet, "testverify", "certificate-host-mismatch",
             **sts_fields("testverify", mode="testing"))


# --- policy fetch failures: no policy (STS-04/05/07/12) ------------------------------------

@pytest.mark.parametrize("label,rtype", [
    ("f404", "sts-policy-fetch-error"),
    ("fredir", "sts-policy-fetch-error"),
    ("fctype", "sts-policy-fetch-error"),
    ("fbig", "sts-policy-fetch-error"),
    ("finvalid", "sts-policy-invalid"),
    ("fnomx", "sts-policy-invalid")])
def test_fetch_failure_delivers_as_without_policy(stsnet, srelay, label, rtype):
    """Wrong-name MX at default may: delivered; the event reports the failure."""
    enf_before = stsnet.requests("enf")
    e, _ = delivered(srelay, stsnet, label, "wrongname", result="failure", result_type=rtype,
                     policy_type="sts", mx_host=fq("mx." + label))
    assert e.get("policy_string") == [] and "policy_mode" not in e, e
    f = fetches(srelay, label)
    assert f and f[-1]["outcome"] == "failure" and f[-1]["result_type"] == rtype, f
    if label == "fredir":           # 3xx is not followed
        time.sleep(0.2)
        assert stsnet.requests("enf") == enf_before


# --- the cache (STS-11, STS-13) --------------------------------------------------------------

def test_cached_policy_used_when_policy_server_down(stsnet, srelay):
    deferred(srelay, stsnet, "cache", "certificate-host-mismatch", **sts_fields("cache"))
    stsnet.stop_nginx()
    try:
        deferred(srelay, stsnet, "cache", "certificate-host-mismatch", **sts_fields("cache"))
    finally:
        stsnet.start_nginx()
    assert stsnet.requests("cache") == 1
    f = fetches(srelay, "cache")
    assert [x["outcome"] for x in f] == ["success", "cache"], f


def test_restart_keeps_cache(stsnet, relay_bin, tmp_path):
    d = tmp_path / "relay"
    r1 = start_relay(relay_bin, stsnet, d)
    try:
        deferred(r1, stsnet, "restart", "certificate-host-mismatch", **sts_fields("restart"))
    finally:
        r1.stop()
    state = d / "state"
    assert (state / "mta-sts" / fq("restart")).exists(), list(state.rglob("*"))
    stsnet.stop_nginx()
    r2 = None
    try:
        r2 = start_relay(relay_bin, stsnet, d)      # same relay.ini, same state_dir
        assert r2.sections["relay"]["state_dir"] == str(state)
        deferred(r2, stsnet, "restart", "certificate-host-mismatch", **sts_fields("restart"))
        f = fetches(r2, "restart")
        assert f and f[-1]["outcome"] == "cache" and f[-1]["from_cache"] is True, f
    finally:
        if r2 is not None:
            r2.stop()
        stsnet.start_nginx()
    assert stsnet.requests("restart") == 1


def test_id_change_refetches(stsnet, srelay):
    deferred(srelay, stsnet, "idchg", "certificate-host-mismatch", **sts_fields("idchg"))
    before = stsnet.requests("idchg")
    new = policy("testing", fq("mx.idchg"))
    stsnet.write_policy("idchg", new)
    stsnet.set_txt_id("idchg", "2")
    time.sleep(1.5)                 # the TXT TTL is 1 s
    e, _ = delivered(srelay, stsnet, "idchg", "wrongname", result="failure",
                     result_type="certificate-host-mismatch", policy_type="sts",
                     policy_mode="testing", policy_string=lines(new), mx_host=fq("mx.idchg"))
    assert stsnet.requests("idchg") == before + 1
    f = fetches(srelay, "idchg")
    assert f[-1]["outcome"] == "success" and f[-1]["id"] == "2", f


# --- DANE and STS (STS-16) ---------------------------------------------------------------------

def test_dane_decides_over_sts(stsnet, srelay, relay_bin, tmp_path):
    # Control: without DANE the STS enforce policy refuses the wrong-name MX.
    deferred(srelay, stsnet, "danests", "certificate-host-mismatch", **sts_fields("danests"))
    r = start_relay(relay_bin, stsnet, tmp_path / "dane", dane="yes")
    try:
        # DANE-EE authenticates a certificate STS's PKIX name check would refuse.
        e, _ = delivered(r, stsnet, "danests", "wrongname", policy_type="tlsa",
                         mx_host=fq("mx.danests"), dane_match="3 1 1",
                         policy_string=["3 1 1 " + stsnet.spki["wrongname"]])
        assert "policy_mode" not in e, e
        # The MX is not in the STS policy, but it has usable TLSA: DANE decides.
        delivered(r, stsnet, "danests2", "good", policy_type="tlsa", mx_host=fq("mx.danests2"),
                  dane_match="3 1 1")
        # No TLSA (secure denial): dane = yes does not switch STS off.
        deferred(r, stsnet, "enfwrong", "certificate-host-mismatch", **sts_fields("enfwrong"))
    finally:
        r.stop()


# --- no blocking ----------------------------------------------------------------------------------

def test_slow_policy_server_does_not_delay_other_domains(stsnet, srelay):
    out = {}
    th = threading.Thread(target=lambda: out.setdefault("slow", send(srelay.port, "slow")))
    th.start()
    try:
        time.sleep(0.7)                     # the slow fetch is in flight
        fast = send(srelay.port, "fast")
        slow_done = "slow" in out
    finally:
        th.join(60)
    assert fast.final is not None and fast.final.code == 250, str(fast)
    assert fast.elapsed < 2.5 and not slow_done, (fast.elapsed, out)
    slow = out["slow"]
    assert slow.final is not None and slow.final.code == 250, str(slow)
    assert slow.elapsed >= STS_TIMEOUT - 1.5, slow.elapsed
    assert stsnet.messages("good", rcpt=fast.rcpt) and stsnet.messages("good", rcpt=slow.rcpt)
    ev = deliveries(srelay, "fast")
    assert ev and ev[-1]["result"] == "success" and ev[-1]["policy_mode"] == "enforce", fmt(ev)
    ev = deliveries(srelay, "slow")
    assert ev and ev[-1]["outcome"] == "delivered", fmt(ev)
    assert ev[-1].get("result_type") == "sts-policy-fetch-error", fmt(ev)


# --- _mta-sts TXT lookup failure ---------------------------------------------------------------

def test_txt_servfail_defers_by_default(stsnet, srelay):
    """Bogus _mta-sts TXT (SERVFAIL), mta_sts_dns_failure = defer (default):
    451 4.7.5 (DESIGN: the reply names the result type), no fetch, MX good."""
    before = stsnet.requests("txtfail")
    s = send(srelay.port, "txtfail")
    errs = []
    if not str(s.rcpt_reply).startswith("451 4.7.5"):
        errs.append("RCPT got %r, want 451 4.7.5" % str(s.rcpt_reply))
    if stsnet.all_messages(s.rcpt):
        errs.append("deferred but delivered")
    srelay.wait_events(lambda _: deliveries(srelay, "txtfail"))
    ev = deliveries(srelay, "txtfail")
    e = ev[-1] if ev else {}
    if (e.get("outcome"), e.get("result")) != ("deferred", "failure"):
        errs.append("no deferred failure event")
    rtype = e.get("result_type")
    if rtype not in ("sts-policy-fetch-error", "dnssec-invalid"):
        errs.append("event result_type = %r" % rtype)
    elif rtype not in s.rcpt_reply.text:
        errs.append("the 451 does not name the result type %s" % rtype)
    f = fetches(srelay, "txtfail")
    if not f or (f[-1]["outcome"], f[-1]["txt"]) != ("failure", "fail"):
        errs.append("policy_fetch events: %r" % f)
    if stsnet.requests("txtfail") != before:
        errs.append("the policy was fetched")
    assert not errs, "%s\n%s\nevents:\n%s" % (s, "\n".join(errs), fmt(ev))


def test_txt_servfail_deliver_per_domain(stsnet, srelay):
    """[domain:txtfail2] mta_sts_dns_failure = deliver: as without a policy
    (the enforce policy nginx has for it is never fetched)."""
    e, _ = delivered(srelay, stsnet, "txtfail2", "wrongname", policy_type="no-policy-found",
                     mx_host=fq("mx.txtfail2"))
    f = fetches(srelay, "txtfail2")
    assert f and f[-1]["outcome"] == "failure" and f[-1]["txt"] == "fail", f
    assert stsnet.requests("txtfail2") == 0


def test_policy_per_transaction_in_one_session(stsnet, srelay):
    """Several transactions in one SMTP session: each gets its own domain's
    policy (no state kept from the previous one), also when the connection
    to the MX is reused for the same domain."""
    labels = ["testwrong", "testwrong", "enfwrong", "enf", "testnolist", "enf"]
    out = send_session(srelay.port, labels)
    want = {"testwrong": ("wrongname", "certificate-host-mismatch", "testing"),
            "enfwrong": (None, "certificate-host-mismatch", "enforce"),
            "enf": ("good", None, "enforce"),
            "testnolist": ("good", "validation-failure", "testing")}
    srelay.wait_events(lambda ev: sum(1 for e in ev if e.get("event") == "delivery" and
                                      e.get("session") == srelay_session(ev, out)) >= 6)
    errs = []
    events = [e for e in srelay.events() if e.get("event") == "delivery"]
    for (rcpt, r, final), label in zip(out, labels):
        server, rtype, mode = want[label]
        got = stsnet.all_messages(rcpt)
        if server is None:
            if r.code != 451 or got:
                errs.append("%s: RCPT %s, recorded %r, want 451 and nothing" % (rcpt, r, list(got)))
            continue
        if final is None or final.code != 250 or list(got) != [server]:
            errs.append("%s: RCPT %s final %s recorded %r" % (rcpt, r, final, list(got)))
    sess = srelay_session(srelay.events(), out)
    mine = [e for e in events if e.get("session") == sess]
    got_ev = [(e.get("policy_domain"), e.get("policy_mode"), e.get("result_type"), e.get("outcome"))
              for e in mine]
    want_ev = [(fq(l), want[l][2], want[l][1], "deferred" if want[l][0] is None else "delivered")
               for l in labels]
    if got_ev != want_ev:
        errs.append("delivery events:\n  %s\nwant\n  %s" % ("\n  ".join(map(str, got_ev)),
                                                          "\n  ".join(map(str, want_ev))))
    assert not errs, "\n".join(errs)


def srelay_session(events, out):
    """The relay's session id of the SMTP session that sent out[0]."""
    return next((e.get("session") for e in events
                 if e.get("event") == "rcpt" and e.get("rcpt") == out[0][0]), None)


def test_delivery_event_durations(stsnet, srelay):
    """duration_ms is the attempt's duration, also for a host refused before
    any connection (not in the policy) and for a TXT-failure deferral: never
    milliseconds since 1970 or since another attempt's connect (runs last)."""
    bad = [(e.get("policy_domain"), e.get("mx_host"), e.get("result_type"), e["duration_ms"])
           for e in srelay.events() if e.get("event") == "delivery" and
           not 0 <= e.get("duration_ms", -1) < 60000]
    assert not bad, "delivery events with a bogus duration_ms:\n" + "\n".join(map(str, bad))


def test_event_log_schema(stsnet, srelay):
    from eventcheck import check_event_lines
    check_event_lines(srelay.raw_log().splitlines(), str(srelay.log))
