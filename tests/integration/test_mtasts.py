"""policy/mtasts.c against a loopback MTA-STS world, through build/asan/mtasts_probe.

The world (module scope, everything stopped by PID):
  * the signed DNS fixture (nsd): _mta-sts TXT records and mta-sts.* A
    records for one domain per case (DOMAINS below);
  * a private nginx serving HTTPS on WEB:PORT, one server block per case:
    valid policies from files under www/<domain>/, 404, 301, text/html,
    a > 64 KiB body, invalid policies, and certificates with the wrong
    name, from an untrusted CA, expired, and with a partial wildcard;
  * a small Python HTTPS server on PY:PORT for what nginx cannot do: a
    response that never comes (slow) and a chunked body without end (stream).
PORT is 443 when running as root (as CI does), else one free high port
passed to the probe (mtasts_config.https_port).  WEB and PY are 127.X.Y.41/.42
in a random block that is free.

Every probe run is under ASan/LSan: a leak, a use-after-free or a callback
after cancel/free makes it exit non-zero, and every run checks that.
"""

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from dns_fixture_plugin import dns_module_factory  # noqa: F401

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PROBE = os.environ.get("MTASTS_PROBE_BIN",
                       os.path.join(ROOT, "build", "asan", "mtasts_probe"))
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

POLICY = ("version: STSv1\nmode: enforce\nmx: mx1.{d}\nmx: *.{d}\n"
          "max_age: {age}\n")
# Domains under secure.test whose mta-sts host is nginx, trusted certificate.
NGINX_OK = ["good", "charset", "notfound", "redirect", "ctype", "big",
            "invalid", "nomx", "cname", "concurrent", "cache1", "idfail",
            "idchange", "modenone", "norecord", "expire", "ratelimit",
            "refresh", "twotxt", "corrupt", "multiaddr"]
NGINX_BADCERT = ["wrongname", "untrusted", "expired", "partial"]
PY_DOMAINS = ["slow", "stream"]


def _free_block(port):
    """127.0.0. or a random 127.X.Y. block whose .41 and .42 can bind port."""
    rnd = random.Random()
    for i in range(40):
        base = "127.0.0." if i == 0 else "127.%d.%d." % (
            rnd.randint(1, 254), rnd.randint(0, 254))
        ok = True
        for n in (41, 42):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind((base + str(n), port))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free loopback block for port %d" % port)


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_listening(addr, port, proc, what, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("%s exited %d" % (what, proc.returncode))
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.3)
            if s.connect_ex((addr, port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError("%s not listening on %s:%d" % (what, addr, port))


def _stop(proc, timeout=5):
    """SIGTERM by PID, wait; SIGKILL the process group if it lingers."""
    if proc is None or proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)
    try:                        # nginx workers share the group id
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# ---- certificates ----------------------------------------------------------

def _mkcerts(d):
    script = os.path.join(ROOT, "certs", "mkcerts.sh")

    def run(*args):
        r = subprocess.run(["sh", script] + list(args), capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, "mkcerts.sh %s: %s" % (args, r.stderr)

    run(d)
    names = ["mta-sts.%s.secure.test" % n for n in NGINX_OK + PY_DOMAINS]
    names += ["mta-sts.plain.insecure.test"]
    run("--leaf", d, "sts", names[0], ",".join("DNS:" + n for n in names))
    run("--leaf", d, "wrongname", "wrong.test", "DNS:wrong.test")
    run("--leaf", d, "untrusted", "mta-sts.untrusted.secure.test",
        "DNS:mta-sts.untrusted.secure.test", "--untrusted-ca")
    run("--leaf", d, "partial", "mta-sts.partial.secure.test",
        "DNS:mta*.partial.secure.test")
    expired = shutil.which("faketime") is not None
    if expired:
        run("--leaf", d, "expired", "mta-sts.expired.secure.test",
            "DNS:mta-sts.expired.secure.test", "--expired")
    return expired


# ---- nginx -----------------------------------------------------------------

NGINX_SERVER = """
    server {
        listen %(addr)s:%(port)d ssl%(default)s;%(listen6)s
        server_name %(name)s;
        ssl_certificate %(pki)s/%(cert)s.crt;
        ssl_certificate_key %(pki)s/%(cert)s.key;
%(body)s
    }
"""


def _v6_free(port):
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as nginx
            s.bind(("::1", port))
        return True
    except OSError:
        return False


def _nginx_conf(d, addr, port, have_expired, v6):
    www = os.path.join(d, "www")
    servers = [
        # Every "normal" domain: the policy file under www/<domain>/.
        dict(name=r"~^mta-sts\.(?<dom>.+)$", cert="sts", default=" default_server",
             body="        root %s/$dom;\n" % www),
        dict(name="mta-sts.redirect.secure.test", cert="sts", default="",
             body="        return 301 https://mta-sts.good.secure.test"
                  "/.well-known/mta-sts.txt;\n"),
        dict(name="mta-sts.ctype.secure.test", cert="sts", default="",
             body="        root %s/$host;\n        types { }\n"
                  "        default_type text/html;\n" % www),
        dict(name="mta-sts.charset.secure.test", cert="sts", default="",
             body="        root %s/charset.secure.test;\n        charset utf-8;\n"
                  "        charset_types text/plain;\n" % www),
    ]
    for bad in NGINX_BADCERT:
        if bad == "expired" and not have_expired:
            continue
        servers.append(dict(name="mta-sts.%s.secure.test" % bad, cert=bad,
                            default="", body="        root %s/good.secure.test;\n"
                            % www))
    text = """daemon off;
master_process on;
worker_processes 1;
user root;
pid %(d)s/nginx.pid;
error_log %(d)s/error.log info;
events { worker_connections 256; }
http {
    log_format sts '$host $status $request_uri';
    access_log %(d)s/access.log sts;
    client_body_temp_path %(d)s/tmp/body;
    proxy_temp_path %(d)s/tmp/proxy;
    fastcgi_temp_path %(d)s/tmp/fastcgi;
    uwsgi_temp_path %(d)s/tmp/uwsgi;
    scgi_temp_path %(d)s/tmp/scgi;
    types { text/plain txt; }
    default_type application/octet-stream;
    ssl_protocols TLSv1.2 TLSv1.3;
""" % {"d": d}
    for s in servers:
        s.update(addr=addr, port=port, pki=os.path.join(d, "pki"), listen6="")
    if v6:
        servers[0]["listen6"] = "\n        listen [::1]:%d ssl default_server;" % port
    for s in servers:
        text += NGINX_SERVER % s
    return text + "}\n"


class Nginx:
    def __init__(self, d, addr, port, have_expired):
        self.dir, self.addr, self.port = d, addr, port
        os.makedirs(os.path.join(d, "tmp"), exist_ok=True)
        self.conf = os.path.join(d, "nginx.conf")
        self.v6 = _v6_free(port)
        with open(self.conf, "w") as f:
            f.write(_nginx_conf(d, addr, port, have_expired, self.v6))
        self.proc = None

    def start(self):
        log = open(os.path.join(self.dir, "nginx.stderr"), "ab")
        self.proc = subprocess.Popen(
            [NGINX, "-p", self.dir, "-c", self.conf, "-e",
             os.path.join(self.dir, "error.log")],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL,
            start_new_session=True)
        log.close()
        try:
            _wait_listening(self.addr, self.port, self.proc, "nginx")
        except RuntimeError as e:
            self.stop()
            raise RuntimeError("%s: %s" % (e, self.log_tail()))

    def stop(self):
        _stop(self.proc)
        self.proc = None

    def log_tail(self):
        out = ""
        for name in ("error.log", "nginx.stderr"):
            p = os.path.join(self.dir, name)
            if os.path.exists(p):
                with open(p, errors="replace") as f:
                    out += f.read()[-2000:]
        return out

    def requests(self, host):
        """Requests nginx logged for host so far (it logs when one ends)."""
        p = os.path.join(self.dir, "access.log")
        if not os.path.exists(p):
            return 0
        with open(p) as f:
            return sum(1 for line in f if line.split(" ", 1)[0] == host)


# ---- the Python HTTPS server (slow and endless responses) ------------------

PYSERVER = r'''
import ssl, sys, time
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
addr, port, cert, key, log = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a):
        pass
    def do_GET(self):
        host = self.headers.get("Host", "")
        with open(log, "a") as f:
            f.write(host + "\n")
        if host.startswith("mta-sts.slow."):
            time.sleep(60)
            body = b"version: STSv1\nmode: enforce\nmx: mx.slow.secure.test\nmax_age: 86400\n"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        # stream: a chunked body that never ends (valid policy lines).
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        line = b"version: STSv1\nmode: enforce\nmx: mx.stream.secure.test\nmax_age: 86400\n"
        pad = b"x-pad: " + b"a" * 1000 + b"\n"
        try:
            for i in range(100000):
                data = line if i == 0 else pad
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
                time.sleep(0.002)
        except OSError:
            pass

ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
srv = ThreadingHTTPServer((addr, port), H)
srv.daemon_threads = True
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
'''


class PyServer:
    def __init__(self, d, addr, port, cert, key):
        self.dir, self.addr, self.port = d, addr, port
        self.script = os.path.join(d, "pyserver.py")
        self.log = os.path.join(d, "pyserver.log")
        with open(self.script, "w") as f:
            f.write(PYSERVER)
        self.args = [sys.executable, self.script, addr, str(port), cert, key,
                     self.log]
        self.proc = None

    def start(self):
        err = open(os.path.join(self.dir, "pyserver.stderr"), "ab")
        self.proc = subprocess.Popen(self.args, stdout=err, stderr=err,
                                     stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        err.close()
        _wait_listening(self.addr, self.port, self.proc, "python https server")

    def stop(self):
        _stop(self.proc)
        self.proc = None

    def requests(self, host):
        if not os.path.exists(self.log):
            return 0
        with open(self.log) as f:
            return sum(1 for line in f if line.strip() == host)


# ---- the world -------------------------------------------------------------

def _records(web, py):
    sec = []
    for n in NGINX_OK + NGINX_BADCERT + ["noaddr"]:
        if n not in ("cname", "twotxt"):
            sec.append('_mta-sts.%s TXT "v=STSv1; id=1"' % n)
        if n not in ("noaddr", "multiaddr"):
            sec.append("mta-sts.%s A %s" % (n, web))
    for n in PY_DOMAINS:
        sec += ['_mta-sts.%s TXT "v=STSv1; id=1"' % n, "mta-sts.%s A %s" % (n, py)]
    # Four IPv4 addresses where nothing listens, then nginx on [::1].
    sec += ["mta-sts.multiaddr A %s%d" % (web[:-2], n) for n in (43, 44, 45, 46)]
    sec += ["mta-sts.multiaddr AAAA ::1"]
    sec += ["_mta-sts.cname CNAME _mta-sts.good",
            '_mta-sts.twotxt TXT "v=STSv1; id=1"',
            '_mta-sts.twotxt TXT "v=STSv1; id=2"']
    return {
        "secure.test.": sec,
        "insecure.test.": ['_mta-sts.plain TXT "v=STSv1; " "id=20240101"',
                           "mta-sts.plain A %s" % web],
        "bogus.test.": ['_mta-sts.x TXT "v=STSv1; id=1"', "mta-sts.x A %s" % web],
    }


class World:
    def __init__(self, d, dns, nginx, py, pki, port, have_expired):
        self.dir, self.dns, self.nginx, self.py = d, dns, nginx, py
        self.pki, self.port, self.have_expired = pki, port, have_expired
        self.records = None
        self.runs = 0

    def policy(self, dom, text):
        """Write www/<dom>/.well-known/mta-sts.txt (text None: remove it)."""
        p = os.path.join(self.dir, "www", dom, ".well-known", "mta-sts.txt")
        os.makedirs(os.path.dirname(p), exist_ok=True)
        if text is None:
            if os.path.exists(p):
                os.unlink(p)
            return
        tmp = p + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, p)

    def set_txt(self, label, value):
        """Replace the _mta-sts TXT of <label>.secure.test (None: remove)."""
        sec = [r for r in self.records["secure.test."]
               if not r.startswith("_mta-sts.%s " % label)]
        if value is not None:
            sec.append('_mta-sts.%s TXT "%s"' % (label, value))
        self.records["secure.test."] = sec
        self.dns.update(self.records)

    def state(self, name):
        d = os.path.join(self.dir, "state-" + name)
        os.makedirs(d, exist_ok=True)
        return d

    def probe(self, *domains, args=(), state=None, rc=0, timeout=120):
        """Run mtasts_probe; assert a clean exit; return (results, events)."""
        self.runs += 1
        log = os.path.join(self.dir, "events%d.log" % self.runs)
        cmd = [PROBE, "--conf", self.dns.unbound_conf, "--ca", self.pki + "/ca.crt",
               "--port", str(self.port), "--log", log,
               "--state", state or self.state("run%d" % self.runs)]
        cmd += list(args) + list(domains)
        env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:halt_on_error=1",
                   UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1")
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                           env=env)
        assert "Sanitizer" not in p.stderr and "runtime error" not in p.stderr, p.stderr
        assert p.returncode == rc, "%s: rc %d, want %d\n%s\n%s" % (
            cmd, p.returncode, rc, p.stdout, p.stderr)
        out = [json.loads(line) for line in p.stdout.splitlines()]
        events = []
        if os.path.exists(log):
            with open(log) as f:
                events = [json.loads(line) for line in f]
        for r in out:
            assert r.get("early") is not True, "callback before mtasts_lookup returned"
        self.stderr = p.stderr
        return out, events


@pytest.fixture(scope="module")
def world(dns_module_factory, tmp_path_factory):
    if not os.access(PROBE, os.X_OK):
        pytest.skip("%s not built: run `make build/asan/mtasts_probe`" % PROBE)
    if not os.access(NGINX, os.X_OK):
        pytest.skip("nginx not installed (apt-get install nginx-light)")
    d = str(tmp_path_factory.mktemp("mtasts"))
    port = 443 if os.geteuid() == 0 else _free_port()
    block = _free_block(port)
    web, py = block + "41", block + "42"
    pki = os.path.join(d, "pki")
    have_expired = _mkcerts(pki)
    dns = dns_module_factory(_records(web, py))
    nginx = Nginx(d, web, port, have_expired)
    pys = PyServer(d, py, port, pki + "/sts.crt", pki + "/sts.key")
    w = World(d, dns, nginx, pys, pki, port, have_expired)
    w.records = _records(web, py)
    for n in NGINX_OK:
        w.policy(n + ".secure.test", POLICY.format(d=n + ".secure.test", age=86400))
    w.policy("plain.insecure.test", POLICY.format(d="plain.insecure.test", age=86400))
    w.policy("notfound.secure.test", None)
    w.policy("ctype.secure.test", None)
    w.policy("mta-sts.ctype.secure.test",
             POLICY.format(d="ctype.secure.test", age=86400))
    w.policy("invalid.secure.test", "version: STSv1\nmode: bogus\nmx: mx\nmax_age: 1\n")
    w.policy("nomx.secure.test", "version: STSv1\nmode: enforce\nmax_age: 86400\n")
    # > 64 KiB; every prefix made of whole lines is itself a valid policy,
    # so only the size limit can make this fail.
    w.policy("big.secure.test", POLICY.format(d="big.secure.test", age=86400) +
             ("x-pad: " + "b" * 90 + "\n") * 800)
    try:
        nginx.start()
        pys.start()
    except BaseException:
        nginx.stop()
        pys.stop()
        raise
    yield w
    nginx.stop()
    pys.stop()


def one(results):
    assert len(results) == 1, results
    return results[0]


def fetch_events(events, domain):
    return [e for e in events if e["event"] == "policy_fetch" and e["domain"] == domain]


# ---- valid policies ----------------------------------------------------------

def test_valid_policy_fetched_cached_and_logged(world):
    state = world.state("valid")
    out, ev = world.probe("Good.Secure.Test.", state=state)
    r = one(out)
    assert (r["status"], r["id"], r["mode"], r["max_age"]) == ("policy", "1", "enforce", 86400), r
    assert r["mx"] == ["mx1.good.secure.test", "*.good.secure.test"]
    assert (r["from_cache"], r["failure"]) == (False, None), r
    assert abs(r["expires"] - (time.time() + 86400)) < 120
    e = one(fetch_events(ev, "good.secure.test"))
    assert (e["outcome"], e["mode"], e["max_age"], e["id"], e["session"]) == (
        "success", "enforce", 86400, "1", "probe"), e
    assert "result_type" not in e and e["duration_ms"] >= 0
    # On disk: one file per domain, private, in the documented format.
    path = os.path.join(state, "mta-sts", "good.secure.test")
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    with open(path, "rb") as f:
        head = f.read().split(b"\n\n", 1)[0].decode().splitlines()
    assert head[:3] == ["tlsrelay-mta-sts-cache: 1", "domain: good.secure.test", "id: 1"]
    assert [n for n in os.listdir(os.path.join(state, "mta-sts"))] == ["good.secure.test"]


def test_charset_parameter_insecure_zone_and_cname(world):
    out, _ = world.probe("charset.secure.test", "plain.insecure.test", "cname.secure.test")
    by = {r["domain"]: r for r in out}
    assert by["charset.secure.test"]["status"] == "policy", by   # text/plain; charset=utf-8
    assert by["plain.insecure.test"]["status"] == "policy", by   # DNSSEC not needed
    assert by["plain.insecure.test"]["id"] == "20240101"         # split TXT strings
    assert (by["cname.secure.test"]["status"], by["cname.secure.test"]["id"]) == ("policy", "1")


# ---- failures: result type, no policy, nothing cached -----------------------

FAILURES = [
    ("notfound", "sts-policy-fetch-error", "HTTP status 404"),
    ("redirect", "sts-policy-fetch-error", "HTTP status 301 (redirects are not followed)"),
    ("ctype", "sts-policy-fetch-error", 'Content-Type "text/html" is not text/plain'),
    ("big", "sts-policy-fetch-error", "exceeds 65536 bytes"),
    ("invalid", "sts-policy-invalid", ""),
    ("nomx", "sts-policy-invalid", "no valid mx"),
    ("noaddr", "sts-policy-fetch-error", "no address"),
    ("wrongname", "sts-webpki-invalid", "hostname mismatch"),
    ("untrusted", "sts-webpki-invalid", "unable to get local issuer certificate"),
    ("expired", "sts-webpki-invalid", "certificate has expired"),
    ("partial", "sts-webpki-invalid", "hostname mismatch"),
]


@pytest.mark.parametrize("label,rtype,detail", FAILURES, ids=[f[0] for f in FAILURES])
def test_fetch_failure(world, label, rtype, detail):
    if label == "expired" and not world.have_expired:
        pytest.skip("faketime is missing, so no expired certificate (apt-get install faketime)")
    dom = label + ".secure.test"
    state = world.state("fail-" + label)
    out, ev = world.probe(dom, state=state)
    r = one(out)
    assert (r["status"], r["failure"], r["from_cache"]) == ("none", rtype, False), r
    assert detail in r["detail"], r
    assert "mode" not in r
    e = one(fetch_events(ev, dom))
    assert (e["outcome"], e["result_type"], e["status"]) == ("failure", rtype, "none"), e
    assert not os.path.exists(os.path.join(state, "mta-sts", dom))


def test_redirect_is_not_followed(world):
    before = world.nginx.requests("mta-sts.good.secure.test")
    r = one(world.probe("redirect.secure.test")[0])
    assert r["failure"] == "sts-policy-fetch-error"
    time.sleep(0.2)
    assert world.nginx.requests("mta-sts.good.secure.test") == before


def test_endless_body_aborted_at_limit(world):
    out, _ = world.probe("stream.secure.test", args=["--timeout", "30"])
    r = one(out)
    assert (r["status"], r["failure"]) == ("none", "sts-policy-fetch-error"), r
    assert "exceeds 65536 bytes" in r["detail"], r
    assert r["elapsed_ms"] < 15000, "reading did not stop at the limit: %r" % r


def test_slow_policy_server_does_not_block_other_lookups(world):
    out, _ = world.probe("slow.secure.test", "good.secure.test", args=["--timeout", "3"])
    by = {r["domain"]: r for r in out}
    assert out[0]["domain"] == "good.secure.test", out
    assert by["good.secure.test"]["status"] == "policy"
    assert by["good.secure.test"]["elapsed_ms"] < 2000, by
    slow = by["slow.secure.test"]
    assert (slow["status"], slow["failure"]) == ("none", "sts-policy-fetch-error"), slow
    assert "within 3 s" in slow["detail"] and 2800 <= slow["elapsed_ms"] < 10000, slow


def test_next_address_after_refused_connection(world):
    # Addresses are tried in turn, IPv4 first: four refuse, [::1] answers.
    if not world.nginx.v6:
        pytest.skip("[::1]:%d cannot be bound here (no IPv6 loopback, or in use)"
                    % world.port)
    out, ev = world.probe("multiaddr.secure.test")
    r = one(out)
    assert (r["status"], r["failure"], r["detail"]) == ("policy", None, ""), r
    assert one(fetch_events(ev, "multiaddr.secure.test"))["connections"] == 5


def test_refused_connection_is_fetch_error(world):
    args = ["--port", str(world.port + 1 if world.port < 65535 else 1)]
    r = one(world.probe("good.secure.test", args=args)[0])
    assert (r["status"], r["failure"]) == ("none", "sts-policy-fetch-error"), r
    assert "connection refused or failed" in r["detail"], r


# ---- discovery ---------------------------------------------------------------

def test_two_sts_records_and_no_record_mean_no_policy(world):
    out, ev = world.probe("twotxt.secure.test", "nothing.secure.test")
    for r in out:
        assert (r["status"], r["failure"], r["id"]) == ("none", None, ""), r
    time.sleep(0.2)
    assert world.nginx.requests("mta-sts.twotxt.secure.test") == 0
    assert {e["outcome"] for e in ev if e["event"] == "policy_fetch"} == {"none"}


def test_txt_lookup_failure_defers_by_default(world):
    out, ev = world.probe("x.bogus.test")
    r = one(out)
    assert (r["status"], r["txt_failed"], r["failure"]) == ("tempfail", True, None), r
    assert "TXT _mta-sts.x.bogus.test: lookup failed" in r["detail"]
    e = one(fetch_events(ev, "x.bogus.test"))
    assert (e["outcome"], e["txt"], e["status"]) == ("failure", "fail", "tempfail"), e
    out, ev = world.probe("x.bogus.test", args=["--txt-fail", "nopolicy"])
    r = one(out)
    assert (r["status"], r["txt_failed"]) == ("none", True), r
    assert one(fetch_events(ev, "x.bogus.test"))["outcome"] == "failure"


def test_ip_literal_and_bad_names_are_not_looked_up(world):
    bad = ["192.0.2.1", "[192.0.2.1]", "a..b.test", "-", "a-.test", "\u00e9.test",
           "x" * 64 + ".test", ".test"]
    out, _ = world.probe(*bad)
    assert [r.get("error") for r in out] == ["mtasts_lookup returned NULL"] * len(bad), out


# ---- sharing, cancellation, freeing -------------------------------------------

def test_concurrent_lookups_share_one_fetch(world):
    out, ev = world.probe("concurrent.secure.test", args=["--concurrent", "8"])
    assert len(out) == 8
    assert {(r["status"], r["id"], r["from_cache"]) for r in out} == {("policy", "1", False)}
    time.sleep(0.2)
    assert world.nginx.requests("mta-sts.concurrent.secure.test") == 1
    assert len(fetch_events(ev, "concurrent.secure.test")) == 1


def test_cancel_mid_fetch(world):
    out, _ = world.probe("slow.secure.test", "slow.secure.test",
                         args=["--cancel-after", "700", "--wait", "500", "--timeout", "20"])
    assert out == [{"cancelled": 2}, {"late_callbacks": 0}], out


def test_free_with_fetches_in_flight(world):
    out, _ = world.probe("slow.secure.test", "stream.secure.test", "good.secure.test",
                         args=["--free-after", "600", "--wait", "300", "--timeout", "20"])
    assert out[-2:] == [{"freed": 1}, {"late_callbacks": 0}], out
    assert [r["domain"] for r in out[:-2]] == ["stream.secure.test", "good.secure.test"] or \
        [r["domain"] for r in out[:-2]] == ["good.secure.test", "stream.secure.test"], out


# ---- the cache ------------------------------------------------------------------

def test_cache_survives_restart_and_server_down(world):
    state = world.state("cache1")
    assert one(world.probe("cache1.secure.test", state=state)[0])["from_cache"] is False
    world.nginx.stop()
    try:
        out, ev = world.probe("cache1.secure.test", state=state)   # new process
    finally:
        world.nginx.start()
    r = one(out)
    assert (r["status"], r["from_cache"], r["id"], r["mode"]) == ("policy", True, "1", "enforce"), r
    assert one(fetch_events(ev, "cache1.secure.test"))["outcome"] == "cache"


def test_failed_fetch_keeps_cached_policy_and_is_rate_limited(world):
    state = world.state("idfail")
    one(world.probe("idfail.secure.test", state=state)[0])
    world.policy("idfail.secure.test", None)            # now 404
    world.set_txt("idfail", "v=STSv1; id=2")
    before = world.nginx.requests("mta-sts.idfail.secure.test")
    out, ev = world.probe("idfail.secure.test", state=state, args=["--twice", "100"])
    first, second = out
    for r in out:   # STS-11: the unexpired policy (id 1) stays in force
        assert (r["status"], r["id"], r["from_cache"]) == ("policy", "1", True), r
        assert r["failure"] == "sts-policy-fetch-error", r
    assert "HTTP status 404" in first["detail"]
    assert "not fetched again" in second["detail"], second  # STS-13
    time.sleep(0.2)
    assert world.nginx.requests("mta-sts.idfail.secure.test") == before + 1
    assert [e["rate_limited"] for e in fetch_events(ev, "idfail.secure.test")] == [False, True]


def test_id_change_refetches(world):
    dom = "idchange.secure.test"
    state = world.state("idchange")
    r = one(world.probe(dom, state=state)[0])
    assert (r["id"], r["mx"][0]) == ("1", "mx1." + dom)
    same, _ = world.probe(dom, state=state)
    assert one(same)["from_cache"] is True
    world.policy(dom, POLICY.format(d="new." + dom, age=3600))
    world.set_txt("idchange", "v=STSv1; id=2")
    before = world.nginx.requests("mta-sts." + dom)
    r = one(world.probe(dom, state=state)[0])
    assert (r["status"], r["id"], r["from_cache"], r["max_age"]) == ("policy", "2", False, 3600), r
    assert r["mx"][0] == "mx1.new." + dom
    time.sleep(0.2)
    assert world.nginx.requests("mta-sts." + dom) == before + 1


def test_mode_none_replaces_cache_at_once(world):
    dom = "modenone.secure.test"
    state = world.state("modenone")
    assert one(world.probe(dom, state=state)[0])["mode"] == "enforce"
    world.policy(dom, "version: STSv1\nmode: none\nmax_age: 86400\n")
    world.set_txt("modenone", "v=STSv1; id=2")
    r = one(world.probe(dom, state=state)[0])
    assert (r["status"], r["mode"], r["id"], r["from_cache"]) == ("policy", "none", "2", False), r
    r = one(world.probe(dom, state=state)[0])
    assert (r["mode"], r["from_cache"]) == ("none", True), r


def test_no_txt_record_uses_valid_cache(world):
    dom = "norecord.secure.test"
    state = world.state("norecord")
    one(world.probe(dom, state=state)[0])
    world.set_txt("norecord", None)
    r = one(world.probe(dom, state=state)[0])
    assert (r["status"], r["from_cache"], r["id"]) == ("policy", True, "1"), r   # RFC 8461 §3.3


def test_expired_cache_is_not_used(world):
    dom = "expire.secure.test"
    state = world.state("expire")
    world.policy(dom, POLICY.format(d=dom, age=2))
    assert one(world.probe(dom, state=state)[0])["max_age"] == 2
    assert os.path.exists(os.path.join(state, "mta-sts", dom))
    world.policy(dom, None)
    time.sleep(3)
    r = one(world.probe(dom, state=state)[0])
    assert (r["status"], r["failure"]) == ("none", "sts-policy-fetch-error"), r
    assert not os.path.exists(os.path.join(state, "mta-sts", dom))   # dropped at load


def test_rate_limit_without_cache(world):
    dom = "ratelimit.secure.test"
    world.policy(dom, None)
    before = world.nginx.requests("mta-sts." + dom)
    out, _ = world.probe(dom, args=["--twice", "100"])
    assert [r["failure"] for r in out] == ["sts-policy-fetch-error"] * 2
    assert [r["status"] for r in out] == ["none", "none"]
    assert "not fetched again" in out[1]["detail"], out
    time.sleep(0.2)
    assert world.nginx.requests("mta-sts." + dom) == before + 1


def test_proactive_refresh_of_used_policy(world):
    dom = "refresh.secure.test"
    world.policy(dom, POLICY.format(d=dom, age=6))
    before = world.nginx.requests("mta-sts." + dom)
    out, ev = world.probe(dom, args=["--refresh-min", "1", "--hold", "5000"])
    assert one(out)["status"] == "policy"
    refreshes = [e for e in fetch_events(ev, dom) if e["refresh"]]
    assert refreshes and refreshes[0]["outcome"] == "success", ev
    assert refreshes[0]["session"] == ""
    time.sleep(0.2)
    assert world.nginx.requests("mta-sts." + dom) >= before + 2


def test_corrupt_cache_file_is_ignored(world):
    dom = "corrupt.secure.test"
    state = world.state("corrupt")
    os.makedirs(os.path.join(state, "mta-sts"), exist_ok=True)
    with open(os.path.join(state, "mta-sts", dom), "w") as f:
        f.write("tlsrelay-mta-sts-cache: 1\ndomain: %s\nid: 9\nfetched: 1\n" % dom)
    r = one(world.probe(dom, state=state)[0])
    assert (r["status"], r["id"], r["from_cache"]) == ("policy", "1", False), r
    assert "ignoring %s" % dom in world.stderr


# ---- start-up -------------------------------------------------------------------

def test_ca_file_without_ca_certificate_is_refused(world, tmp_path):
    empty = tmp_path / "empty.pem"
    empty.write_text("")
    for ca in (world.pki + "/sts.crt", str(empty)):
        cmd = [PROBE, "--conf", world.dns.unbound_conf, "--ca", ca, "good.secure.test"]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert p.returncode == 1, (ca, p.stdout, p.stderr)
        err = json.loads(p.stdout.splitlines()[0])["error"]
        assert "CA" in err and ca in err, err
