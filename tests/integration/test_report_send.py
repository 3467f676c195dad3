"""`tlsrelay report --send` end to end (issue 7, RFC 8460 §3, §5.3, §5.4).

A signed test zone (dns_fixture_plugin) publishes the _smtp._tls TXT records;
an aiosmtpd server (smtpserver.NextHop) stands in for the relay's smarthost
listener at the submit address; Python HTTPS servers with certificates from
certs/mkcerts.sh stand in for https: rua endpoints.  Everything is on
loopback and stopped at teardown.  The messages are read back with Python's
email package and checked against RFC 8460 §5.3 (not against report_send.c).

  (a) mailto: -> a multipart/report whose application/tlsrpt+gzip part is the
      report written by --out, with the §5.3 headers and TLS-Required: No
  (b) https:  -> one POST, Content-Type application/tlsrpt+gzip, same body
  (c) broken rua URIs are ignored with a message, the others used, no crash
  (d) no TXT record, or not exactly one valid one -> nothing sent, exit 0
  plus failures (refused recipient, HTTP 500, wrong certificate, bogus DNS)
  -> "failed" lines and exit status 1.
"""

import email
import email.policy
import gzip
import json
import os
import random
import re
import socket
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from harness import REPO, free_port, relay_binary, sanitizer_report
from smtpserver import NextHop

DAY = "2026-12-04"
SUBMITTER = "relay.test"
NAME = re.compile(r"^relay\.test!(?P<domain>[^!]+)!1796342400!1796428799"
                  r"!(?P<uid>[A-Za-z0-9]+)\.json\.gz$")      # RFC 8460 §5.3
SUBJECT = re.compile(r"^Report Domain: (?P<domain>\S+) Submitter: (?P<submitter>\S+) "
                     r"Report-ID: <(?P<id>[^<>@\s]+@[^<>@\s]+)>$")   # §5.3 ABNF


# --- HTTPS endpoints ------------------------------------------------------------

class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n)
        with self.server.lock:
            self.server.requests.append({"path": self.path, "headers": dict(self.headers),
                                         "body": body})
        code = 500 if self.path.startswith("/fail") else 200
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.send_header("Connection", "close")
        self.end_headers()


class HttpsEndpoint:
    """A threaded HTTPS server on addr:port recording every POST."""

    def __init__(self, addr, port, cert, key):
        self.addr, self.port = addr, port
        self.httpd = ThreadingHTTPServer((addr, port), _Handler)
        self.httpd.lock = threading.Lock()
        self.httpd.requests = []
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(cert, key)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def requests(self):
        with self.httpd.lock:
            return list(self.httpd.requests)

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


def _https_addr():
    """Port 443 on a random 127.X.Y.Z when we may bind it (the URI then has no
    port), else a free port on 127.0.0.1."""
    rnd = random.Random()
    for _ in range(20):
        addr = "127.%d.%d.%d" % (rnd.randint(1, 254), rnd.randint(0, 254), rnd.randint(2, 254))
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((addr, 443))
                return addr, 443
            except OSError:
                continue
    return "127.0.0.1", free_port()


def _mkleaf(pki, name, cn, san):
    r = subprocess.run(["sh", str(REPO / "certs" / "mkcerts.sh"), "--leaf", str(pki.dir),
                        name, cn, san], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return pki.leaf(name)


# --- the world ------------------------------------------------------------------

def _records(https, bad):
    """The zone lines of secure.test and bogus.test."""
    good = "https://reports.good.secure.test%s/v1" % (
        "" if https.port == 443 else ":%d" % https.port)
    fail = "https://reports.fail.secure.test:%d/fail" % https.port
    wrong = "https://reports.wrongname.secure.test:%d/v1" % bad.port
    rpt = "v=TLSRPTv1; rua="
    secure = [
        '_smtp._tls.good TXT "%smailto:tlsrpt@good.secure.test,%s"' % (rpt, good),
        '_smtp._tls.mailonly TXT "%smailto:tls-rpt+x@MailOnly.secure.test"' % rpt,
        '_smtp._tls.webonly TXT "v=TLSRPTv1;rua=%s" "?split=strings"' % good,
        '_smtp._tls.broken TXT "%stlsrpt@broken.secure.test,mailto:a@b.secure.test!10m"' % rpt,
        '_smtp._tls.mixed TXT "%sjunk, tlsrpt@mixed.secure.test ,,mailto:tlsrpt@mixed'
        '.secure.test,ftp://mixed.secure.test/x"' % rpt,
        '_smtp._tls.mixed TXT "v=spf1 -all"',
        '_smtp._tls.two TXT "%smailto:one@two.secure.test"' % rpt,
        '_smtp._tls.two TXT "%smailto:two@two.secure.test"' % rpt,
        '_smtp._tls.invalid TXT "%smailto:a@invalid.secure.test; x=a b"' % rpt,
        '_smtp._tls.fail TXT "%smailto:reject@fail.secure.test,%s"' % (rpt, fail),
        '_smtp._tls.wrongname TXT "%s%s"' % (rpt, wrong),
        '_smtp._tls.noaddr TXT "%shttps://reports.noaddr.secure.test/"' % rpt,
        "reports.good A %s" % https.addr,
        "reports.fail A %s" % https.addr,
        "reports.wrongname A %s" % bad.addr,
    ]
    bogus = ['_smtp._tls.x TXT "%smailto:tlsrpt@x.bogus.test"' % rpt]
    return {"secure.test.": secure, "bogus.test.": bogus}


@pytest.fixture(scope="module")
def world(dns_module_factory, pki, tmp_path_factory):
    b = relay_binary()
    if not b.exists():
        pytest.skip("relay binary %s does not exist (make build/asan/tlsrelay)" % b)
    d = tmp_path_factory.mktemp("report_send")
    names = ["reports.good.secure.test", "reports.fail.secure.test"]
    cert, key = _mkleaf(pki, "reports", names[0], ",".join("DNS:" + n for n in names))
    addr, port = _https_addr()
    https = HttpsEndpoint(addr, port, cert, key)
    bad = HttpsEndpoint("127.0.0.1", free_port(), *pki.leaf("wrongname"))
    smtp = None
    try:
        fx = dns_module_factory(_records(https, bad))
        smtp = NextHop(free_port(), hostname="smarthost.test").start()
        ini = d / "relay.ini"
        ini.write_text("[relay]\nhostname = Relay.Test\n"
                       "[outbound]\nca_file = %s\n"
                       "[dns]\nunbound_conf = %s\n"
                       "[listener:submit]\nmode = smarthost\nlisten = 127.0.0.1:%d\n"
                       "relay_networks = 127.0.0.0/8\n" % (pki.ca, fx.unbound_conf, smtp.port))
        yield type("World", (), {"dir": d, "ini": ini, "https": https, "bad": bad,
                                 "smtp": smtp})
    finally:
        if smtp is not None:
            smtp.stop()
        https.stop()
        bad.stop()


# --- running the command ----------------------------------------------------------

def delivery(domain, result="success", rtype=None):
    ev = {"ts": DAY + "T10:00:00.000Z", "event": "delivery", "host": SUBMITTER,
          "session": "0123456789abcdef", "policy_type": "no-policy-found",
          "policy_domain": domain, "policy_string": [], "mx_host": "mx." + domain,
          "result": result, "sending_mta_ip": "127.0.0.1",
          "receiving_mx_hostname": "mx." + domain, "receiving_ip": "127.0.0.1",
          "outcome": "delivered", "smtp_reply": "250 ok"}
    if rtype:
        ev["result_type"] = rtype
    return json.dumps(ev) + "\n"


def run_report(world, tmp_path, domains, *args, out=True):
    log = tmp_path / "events.jsonl"
    log.write_text("".join(delivery(d) for d in domains) +
                   delivery(domains[0], "failure", "certificate-expired"))
    outdir = tmp_path / "out"
    outdir.mkdir(exist_ok=True)
    cmd = [str(relay_binary()), "report", "--day", DAY, "-c", str(world.ini), "--send",
           "--timeout", "20"] + (["--out", str(outdir)] if out else []) + list(args) + [str(log)]
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1")
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120,
                       env=env)
    err = r.stderr.decode("utf-8", "replace")
    assert not sanitizer_report(err), "sanitizer report:\n" + err[-6000:]
    return r.returncode, r.stdout.decode(), err, outdir


def lines(stdout, verdict):
    """{(domain, uri or None): detail} of the stdout lines with that verdict."""
    out = {}
    for line in stdout.splitlines():
        m = re.match(r"^(sent|failed|skipped) (\S+)(?: (\S+))?: (.*)$", line)
        if m and m.group(1) == verdict:
            out[(m.group(2), m.group(3))] = m.group(4)
    return out


def written(outdir):
    """{policy-domain: (file name, decompressed JSON bytes)} of --out."""
    res = {}
    for p in outdir.iterdir():
        m = NAME.match(p.name)
        assert m, p.name
        res[m.group("domain")] = (p.name, gzip.decompress(p.read_bytes()))
    return res


def new_messages(world, before):
    return world.smtp.messages[before:]


def new_posts(endpoint, before):
    return endpoint.requests()[before:]


# --- (a) mailto: --------------------------------------------------------------------

def check_report_mail(msg, domain, rcpt, name, report_json):
    """RFC 8460 §5.3, field by field, on the message as received."""
    assert msg.mail_from == "noreply-tlsrpt@relay.test"
    assert msg.rcpt_tos == [rcpt]
    raw = msg.raw
    assert b"\n" not in raw.replace(b"\r\n", b""), "bare LF in the message"
    m = email.message_from_bytes(raw, policy=email.policy.default)
    assert m["From"].addresses[0].domain == SUBMITTER       # = TLS-Report-Submitter
    assert m["To"].addresses[0].addr_spec == rcpt
    assert m["Date"].datetime is not None
    assert re.match(r"^<[^<>@\s]+@relay\.test>$", m["Message-ID"])
    s = SUBJECT.match(" ".join(str(m["Subject"]).split()))
    assert s, m["Subject"]
    assert s.group("domain") == domain and s.group("submitter") == SUBMITTER
    assert m["TLS-Report-Domain"] == domain
    assert m["TLS-Report-Submitter"] == SUBMITTER
    assert m["TLS-Required"] == "No"                        # RFC 8689, ANCHORS RPT-07
    assert m["MIME-Version"] == "1.0"
    assert m.get_content_type() == "multipart/report"
    assert m.get_param("report-type") == "tlsrpt"
    parts = list(m.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "application/tlsrpt+gzip"]
    att = parts[1]
    assert att.get_content_disposition() == "attachment"
    assert att.get_filename() == name                        # the --out file name
    assert att["Content-Transfer-Encoding"] == "base64"
    payload = att.get_content()
    assert payload[:2] == b"\x1f\x8b"
    body = gzip.decompress(payload)
    assert body == report_json
    report = json.loads(body)
    assert report["report-id"] == s.group("id")
    assert report["policies"][0]["policy"]["policy-domain"] == domain
    return report


def test_mailto_report_is_rfc8460_mime(world, tmp_path):
    n = len(world.smtp.messages)
    rc, out, err, outdir = run_report(world, tmp_path, ["mailonly.secure.test"])
    assert rc == 0, (out, err)
    sent = lines(out, "sent")
    uri = "mailto:tls-rpt+x@MailOnly.secure.test"
    assert ("mailonly.secure.test", uri) in sent, out
    assert sent[("mailonly.secure.test", uri)].startswith("250"), out
    msgs = new_messages(world, n)
    assert len(msgs) == 1, msgs
    name, body = written(outdir)["mailonly.secure.test"]
    report = check_report_mail(msgs[0], "mailonly.secure.test",
                               "tls-rpt+x@mailonly.secure.test", name, body)
    assert report["policies"][0]["summary"] == {"total-successful-session-count": 1,
                                                "total-failure-session-count": 1}


# --- (b) https: and both kinds for one domain ----------------------------------------

def check_post(req, host, path, report_json):
    assert req["path"] == path
    h = {k.lower(): v for k, v in req["headers"].items()}
    assert h["content-type"] == "application/tlsrpt+gzip"
    assert h["host"] == host
    assert gzip.decompress(req["body"]) == report_json


def test_https_post_and_mailto_for_one_domain(world, tmp_path):
    n, p = len(world.smtp.messages), len(world.https.requests())
    rc, out, err, outdir = run_report(world, tmp_path, ["good.secure.test"])
    assert rc == 0, (out, err)
    sent = lines(out, "sent")
    assert len(sent) == 2 and not lines(out, "failed"), out
    name, body = written(outdir)["good.secure.test"]
    msgs = new_messages(world, n)
    assert len(msgs) == 1
    check_report_mail(msgs[0], "good.secure.test", "tlsrpt@good.secure.test", name, body)
    posts = new_posts(world.https, p)
    assert len(posts) == 1, posts
    host = "reports.good.secure.test" + ("" if world.https.port == 443
                                         else ":%d" % world.https.port)
    check_post(posts[0], host, "/v1", body)


def test_https_only_without_out_dir(world, tmp_path):
    """--send alone: nothing written; a TXT of two strings is concatenated."""
    n, p = len(world.smtp.messages), len(world.https.requests())
    rc, out, err, outdir = run_report(world, tmp_path, ["webonly.secure.test"], out=False)
    assert rc == 0, (out, err)
    assert list(outdir.iterdir()) == []
    posts = new_posts(world.https, p)
    assert len(posts) == 1 and len(new_messages(world, n)) == 0
    assert posts[0]["path"] == "/v1?split=strings"
    report = json.loads(gzip.decompress(posts[0]["body"]))
    assert report["policies"][0]["policy"]["policy-domain"] == "webonly.secure.test"


# --- (c) broken rua, (d) no policy ---------------------------------------------------

def test_broken_rua_ignored_and_no_policy_sends_nothing(world, tmp_path):
    n, p = len(world.smtp.messages), len(world.https.requests())
    domains = ["broken.secure.test", "none.secure.test", "two.secure.test",
               "invalid.secure.test", "mixed.secure.test"]
    rc, out, err, outdir = run_report(world, tmp_path, domains)
    assert rc == 0, (out, err)
    skipped = lines(out, "skipped")
    assert "no usable rua" in skipped[("broken.secure.test", None)]
    assert "nxdomain" in skipped[("none.secure.test", None)].lower()
    assert "more than one" in skipped[("two.secure.test", None)]
    assert "grammar" in skipped[("invalid.secure.test", None)]
    assert "mailto: missing" in err and "'!'" in err, err
    # mixed: the junk and the bare address are ignored, the mailto: is used once
    sent = lines(out, "sent")
    assert list(sent) == [("mixed.secure.test", "mailto:tlsrpt@mixed.secure.test")], out
    msgs = new_messages(world, n)
    assert [m.rcpt_tos for m in msgs] == [["tlsrpt@mixed.secure.test"]]
    assert len(new_posts(world.https, p)) == 0
    assert len(written(outdir)) == len(domains)


# --- failures --------------------------------------------------------------------

def test_failures_exit_1_and_do_not_stop_the_others(world, tmp_path):
    n, p = len(world.smtp.messages), len(world.https.requests())
    b = len(world.bad.requests())
    domains = ["fail.secure.test", "wrongname.secure.test", "noaddr.secure.test",
               "x.bogus.test", "mailonly.secure.test"]
    rc, out, err, outdir = run_report(world, tmp_path, domains)
    assert rc == 1, (out, err)
    failed = lines(out, "failed")
    assert failed[("fail.secure.test", "mailto:reject@fail.secure.test")].startswith(
        "RCPT TO: 550"), out
    fail_uri = "https://reports.fail.secure.test:%d/fail" % world.https.port
    assert "HTTP 500" in failed[("fail.secure.test", fail_uri)], out
    wrong = [v for (d, _), v in failed.items() if d == "wrongname.secure.test"]
    assert len(wrong) == 1 and "certificate" in wrong[0], out
    noaddr = [v for (d, _), v in failed.items() if d == "noaddr.secure.test"]
    assert len(noaddr) == 1 and "no address" in noaddr[0], out
    assert "lookup failed" in failed[("x.bogus.test", None)], out
    assert ("mailonly.secure.test", "mailto:tls-rpt+x@MailOnly.secure.test") in \
        lines(out, "sent"), out
    assert len(new_messages(world, n)) == 1                    # mailonly only
    assert [r["path"] for r in new_posts(world.https, p)] == ["/fail"]
    assert len(world.bad.requests()) == b, "a POST went to a host with a wrong certificate"


def test_explicit_submit_and_from(world, tmp_path):
    n = len(world.smtp.messages)
    rc, out, err, _ = run_report(world, tmp_path, ["mailonly.secure.test"], "--submit",
                                 "127.0.0.1:%d" % world.smtp.port, "--from",
                                 "tlsrpt@relay.test")
    assert rc == 0, (out, err)
    msgs = new_messages(world, n)
    assert [m.mail_from for m in msgs] == ["tlsrpt@relay.test"]


@pytest.mark.parametrize("args, message", [
    (["--from", "tlsrpt@elsewhere.test"], "submitter"),
    (["--submit", "localhost:25"], "--submit"),
    (["--timeout", "0"], "--timeout"),
])
def test_option_errors(world, tmp_path, args, message):
    n = len(world.smtp.messages)
    rc, out, err, outdir = run_report(world, tmp_path, ["mailonly.secure.test"], *args)
    assert rc == 1 and message in err, (rc, out, err)
    assert list(outdir.iterdir()) == [] and len(world.smtp.messages) == n


def test_submit_refused(world, tmp_path):
    rc, out, err, _ = run_report(world, tmp_path, ["mailonly.secure.test"], "--submit",
                                 "127.0.0.1:%d" % free_port())
    assert rc == 1, (out, err)
    assert "connect" in lines(out, "failed")[("mailonly.secure.test",
                                               "mailto:tls-rpt+x@MailOnly.secure.test")]


def test_slow_submit_times_out(world, tmp_path):
    """Each attempt has a deadline (--timeout): a stalled peer ends in a
    "failed" line, not a hang."""
    slow = NextHop(free_port(), slow=5).start()
    try:
        t0 = time.monotonic()
        rc, out, err, _ = run_report(world, tmp_path, ["mailonly.secure.test"], "--submit",
                                     "127.0.0.1:%d" % slow.port, "--timeout", "1")
        elapsed = time.monotonic() - t0
    finally:
        slow.stop()
    assert rc == 1, (out, err)
    assert "timeout" in lines(out, "failed")[("mailonly.secure.test",
                                               "mailto:tls-rpt+x@MailOnly.secure.test")]
    assert elapsed < 10, elapsed
