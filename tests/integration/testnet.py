#!/usr/bin/python3
"""testnet.py - a small "test internet" on loopback for the smarthost.

TestNet(workdir).start() brings up, all on loopback and all stopped by PID:

  * a PKI made by certs/mkcerts.sh: the test CA (the relay's [outbound]
    ca_file), a leaf per destination, an expired leaf (faketime) and one from a
    second CA the relay does not trust;
  * one destination SMTP server per kind, each a separate process (this file
    run as `testnet.py serve ...`, an aiosmtpd server built from
    smtpserver.Recorder) on its own loopback address at port 25 (root) - or,
    without the privilege, at one high port shared by all addresses, which
    [outbound] port then names;
  * the signed DNS fixture (dnsfixture.DnsFixture, nsd) whose zones route one
    domain per case to those servers (table DOMAINS below).

    server     addr  MX host name                  STARTTLS / certificate
    good       .21   mx.good.secure.test           yes, test CA, MX host name
    wrongname  .22   mx.wrongname.secure.test      yes, test CA, mx.elsewhere.test
    expired    .23   mx.expired.secure.test        yes, test CA, expired 2020-01-31
    untrusted  .24   mx.untrusted.secure.test      yes, second CA (not trusted)
    notls      .25   mx.notls.secure.test          no STARTTLS
    down       .26   mx.down.secure.test           nothing listening
    backup     .27   mx.backup.secure.test         yes, test CA
    implicit   .28   implicit.secure.test (A only) yes, test CA
    sink       .29   mx.mail.bogus.test            yes, test CA (target of the bogus MX)
    provider   .30   mx.provider.{secure,insecure}.test  yes, test CA, both names
    slow       .31   mx.slow.secure.test           yes, every reply delayed SLOW s
    badtls     .32   mx.badtls.secure.test         offers STARTTLS, then sends
                                                   garbage instead of a handshake

Addresses are 127.0.0.N by default; if one is taken (another run of the tests
on the same host) a random 127.X.Y.N block is used instead: read them from
tn.server(name).addr, never hard-code them.

Every server records each accepted message (smtpserver.Message, written
atomically as JSON) and each EHLO/HELO with whether TLS was active, so a test
can assert "delivered", "delivered over TLS" and "not even connected":

    tn.messages("good", rcpt="x@good.secure.test")  -> [Message, ...]
    tn.sessions("sink")                              -> [{"ehlo", "tls", "peer"}]

Relay configuration:

    tn.relay_config(default_level="may", whitelist=[".wl.test"],
                    domains={"a.secure.test": "verify"}, outbound={...})
    -> {"listener:out": {...}, "outbound": {...}, "dns": {...}, ...}
       sections for harness.Relay / the conftest `relay` fixture.

Run with Debian's /usr/bin/python3 (python3-aiosmtpd, python3-dnspython).
"""

import argparse
import itertools
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

SLOW = 6.0                  # seconds the slow server waits before each reply
CA_CERT = "ca.crt"


@dataclass
class Server:
    """One destination.  names: DNS names in its certificate (first = CN)."""
    name: str
    host_no: int                    # last octet of its loopback address
    host: str                       # the MX (or A) host name that points at it
    cert: str = "good"              # good | wrongname | expired | untrusted | none
    names: tuple = ()
    listen: bool = True
    slow: float = 0.0
    badtls: bool = False
    addr: str = ""                  # filled by TestNet
    dir: Path = None                # filled by TestNet
    proc: object = field(default=None, repr=False)

    @property
    def tls(self):
        return self.listen and self.cert != "none"


SERVERS = [
    Server("good", 21, "mx.good.secure.test"),
    Server("wrongname", 22, "mx.wrongname.secure.test", cert="wrongname",
           names=("mx.elsewhere.test",)),
    Server("expired", 23, "mx.expired.secure.test", cert="expired"),
    Server("untrusted", 24, "mx.untrusted.secure.test", cert="untrusted"),
    Server("notls", 25, "mx.notls.secure.test", cert="none"),
    Server("down", 26, "mx.down.secure.test", cert="none", listen=False),
    Server("backup", 27, "mx.backup.secure.test"),
    Server("implicit", 28, "implicit.secure.test"),
    Server("sink", 29, "mx.mail.bogus.test"),
    Server("provider", 30, "mx.provider.secure.test",
           names=("mx.provider.secure.test", "mx.provider.insecure.test")),
    Server("slow", 31, "mx.slow.secure.test", slow=SLOW),
    Server("badtls", 32, "mx.badtls.secure.test", badtls=True),
]

# The kinds of the level x server table (test_smarthost, demo).
TABLE_KINDS = ("good", "wrongname", "expired", "untrusted", "notls", "badtls")

# domain -> (what it exercises, server that should receive its mail or None)
DOMAINS = {
    "good.secure.test": ("MX with a valid certificate for its name", "good"),
    "wrongname.secure.test": ("MX certificate for another name", "wrongname"),
    "expired.secure.test": ("MX certificate expired", "expired"),
    "untrusted.secure.test": ("MX certificate from an untrusted CA", "untrusted"),
    "notls.secure.test": ("MX without STARTTLS", "notls"),
    "badtls.secure.test": ("MX whose STARTTLS handshake fails", "badtls"),
    "down.secure.test": ("only MX has nothing listening", None),
    "slow.secure.test": ("MX slower than the relay's timeouts", None),
    "pref.secure.test": ("MX 10 good, MX 20 backup (both up)", "good"),
    "fallback.secure.test": ("MX 10 down, MX 20 backup", "backup"),
    "tlsfallback.secure.test": ("MX 10 wrongname, MX 20 backup", "backup"),
    "implicit.secure.test": ("no MX, an A record (RFC 5321 5.1)", "implicit"),
    "nullmx.secure.test": ("null MX (RFC 7505)", None),
    "hosted.secure.test": ("MX in another domain, secure MX RRset", "provider"),
    "hosted.insecure.test": ("MX in another domain, insecure zone", "provider"),
    "other.insecure.test": ("same MX as hosted.insecure.test", "provider"),
    "mail.bogus.test": ("MX answer is DNSSEC-bogus", None),
    "wl-good.secure.test": ("for the whitelist: valid MX", "good"),
    "wl-wrongname.secure.test": ("for the whitelist: wrong-name MX", "wrongname"),
    "wl-notls.secure.test": ("for the whitelist: MX without STARTTLS", "notls"),
    "a.wlsub.secure.test": ("for the whitelist (.wlsub): wrong-name MX", "wrongname"),
}


def zone_records(servers):
    """Zone-file lines (relative to each zone) for DnsFixture."""
    s = {srv.name: srv for srv in servers}
    sec = []
    for kind in ("good", "wrongname", "expired", "untrusted", "notls", "down",
                 "backup", "slow", "badtls"):
        sec += ["%s MX 10 mx.%s" % (kind, kind), "mx.%s A %s" % (kind, s[kind].addr)]
    sec += [
        # Listed backwards on purpose: the relay must sort by preference.
        "pref MX 20 mx.backup", "pref MX 10 mx.good",
        "fallback MX 10 mx.down", "fallback MX 20 mx.backup",
        "tlsfallback MX 10 mx.wrongname", "tlsfallback MX 20 mx.backup",
        "implicit A %s" % s["implicit"].addr,
        "nullmx MX 0 .",
        "hosted MX 10 mx.provider", "mx.provider A %s" % s["provider"].addr,
        "wl-good MX 10 mx.good", "wl-wrongname MX 10 mx.wrongname",
        "wl-notls MX 10 mx.notls", "a.wlsub MX 10 mx.wrongname",
    ]
    insec = ["hosted MX 10 mx.provider", "other MX 10 mx.provider",
             "mx.provider A %s" % s["provider"].addr]
    bogus = ["mail MX 10 mx.mail", "mx.mail A %s" % s["sink"].addr]
    return {"secure.test.": sec, "insecure.test.": insec, "bogus.test.": bogus}


def can_connect(addr, port, timeout=0.5):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect((addr, port))
            return True
        except OSError:
            return False


def _can_bind(addr, port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((addr, port))
            return True
        except PermissionError:
            raise
        except OSError:
            return False


class TestNetError(RuntimeError):
    pass


class TestNet:
    """The destinations + DNS.  start() / stop(); usable as a context manager."""

    __test__ = False            # not a pytest test class

    def __init__(self, workdir, servers=None):
        self.dir = Path(workdir).resolve()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.servers = {s.name: Server(**{k: getattr(s, k) for k in (
            "name", "host_no", "host", "cert", "names", "listen", "slow", "badtls")})
            for s in (servers or SERVERS)}
        self.port = None
        self.base = None
        self.dns = None
        self.pki = self.dir / "pki"
        self._nwl = itertools.count()

    # ---- lifecycle -------------------------------------------------------

    def start(self):
        try:
            self._make_pki()
            self._start_servers()
            self._start_dns()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self):
        """Every server process (SIGTERM by PID, SIGKILL after 5 s), then nsd."""
        for s in self.servers.values():
            self._stop_server(s)
        if self.dns is not None:
            self.dns.stop()
            self.dns = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ---- PKI ---------------------------------------------------------------

    def _mkcerts(self, *args):
        p = subprocess.run(["sh", str(REPO / "certs" / "mkcerts.sh")] + list(args),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=60)
        if p.returncode != 0:
            raise TestNetError("mkcerts.sh %s failed:\n%s" % (" ".join(args), p.stdout))

    def _make_pki(self):
        self._mkcerts(str(self.pki))
        for s in self.servers.values():
            if not s.tls:
                continue
            names = s.names or (s.host,)
            san = ",".join("DNS:" + n for n in names)
            extra = {"expired": ["--expired"], "untrusted": ["--untrusted-ca"]}.get(s.cert, [])
            self._mkcerts("--leaf", str(self.pki), s.name, names[0], san, *extra)

    @property
    def ca_file(self):
        """The CA the relay trusts ([outbound] ca_file)."""
        return str(self.pki / CA_CERT)

    def cert(self, name):
        return str(self.pki / (name + ".crt")), str(self.pki / (name + ".key"))

    # ---- destination servers ---------------------------------------------

    def _pick_port(self, addr):
        """25 when we may bind it (in use or not: then the block is busy);
        otherwise one high port, free on addr right now."""
        try:
            _can_bind(addr, 25)
            return 25
        except PermissionError:
            pass
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((addr, 0))
            return s.getsockname()[1]

    def _blocks(self):
        env = os.environ.get("TESTNET_BASE")        # e.g. "127.0.5."
        if env:
            yield env if env.endswith(".") else env + "."
            return
        yield "127.0.0."
        rnd = random.Random()
        for _ in range(8):
            yield "127.%d.%d." % (rnd.randint(1, 254), rnd.randint(0, 254))

    def _start_servers(self):
        last = "no address block tried"
        for base in self._blocks():
            for s in self.servers.values():
                s.addr = base + str(s.host_no)
            port = self._pick_port(self.servers["good"].addr)
            busy = [s.addr for s in self.servers.values() if can_connect(s.addr, port, 0.2)
                    or (s.listen and not _can_bind(s.addr, port))]
            if busy:
                last = "%s:%d in use" % (busy[0], port)
                continue
            self.base, self.port = base, port
            try:
                for s in self.servers.values():
                    self._spawn(s)
                for s in self.servers.values():
                    self._wait_ready(s)
                return
            except TestNetError as e:
                last = str(e)
                for s in self.servers.values():
                    self._stop_server(s)
        raise TestNetError("could not start the destination servers: " + last)

    def _spawn(self, s):
        s.dir = self.dir / "servers" / s.name
        (s.dir / "records").mkdir(parents=True, exist_ok=True)
        if not s.listen:
            return
        args = [sys.executable, str(Path(__file__).resolve()), "serve",
                "--addr", s.addr, "--port", str(self.port), "--name", s.name,
                "--hostname", s.host, "--record", str(s.dir / "records")]
        if s.tls:
            crt, key = self.cert(s.name)
            args += ["--tls-cert", crt, "--tls-key", key]
        if s.slow:
            args += ["--slow", str(s.slow)]
        if s.badtls:
            args += ["--badtls"]
        with open(s.dir / "stderr.txt", "wb") as err:
            s.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=err)

    def _wait_ready(self, s, timeout=15.0):
        if not s.listen:
            if can_connect(s.addr, self.port, 0.2):
                raise TestNetError("%s:%d should be down but accepts" % (s.addr, self.port))
            return
        deadline = time.monotonic() + timeout
        while not (s.dir / "ready").exists():
            if s.proc.poll() is not None or time.monotonic() > deadline:
                raise TestNetError("server %s on %s:%d did not start: %s" % (
                    s.name, s.addr, self.port,
                    (s.dir / "stderr.txt").read_text(errors="replace")[-2000:]))
            time.sleep(0.05)

    def _stop_server(self, s):
        p, s.proc = s.proc, None
        if p is None or p.poll() is not None:
            return
        os.kill(p.pid, signal.SIGTERM)
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            os.kill(p.pid, signal.SIGKILL)
            p.wait(5)
        try:
            (s.dir / "ready").unlink()
        except FileNotFoundError:
            pass

    def kill_server(self, name):
        """Stop one destination (a test can take an MX down)."""
        self._stop_server(self.servers[name])

    # ---- DNS ---------------------------------------------------------------

    def _start_dns(self):
        from dnsfixture import DnsFixture
        from dns_fixture_plugin import free_port
        last = None
        for i in range(3):          # a free port can be taken before nsd binds
            try:
                self.dns = DnsFixture(self.dir / ("dns%d" % i), free_port(),
                                      zone_records(self.servers.values()))
                return
            except RuntimeError as e:
                last = e
        raise TestNetError("DNS fixture did not start: %s" % last)

    @property
    def unbound_conf(self):
        return self.dns.unbound_conf

    # ---- what the servers saw --------------------------------------------

    def server(self, name):
        return self.servers[name]

    def messages(self, server, rcpt=None):
        """Messages server accepted (in order); only those for rcpt if given."""
        from smtpserver import read_records
        s = self.servers[server]
        if s.dir is None or not (s.dir / "records").is_dir():
            return []
        out = read_records(str(s.dir / "records"))
        if rcpt is not None:
            out = [m for m in out if rcpt in m.rcpt_tos]
        return out

    def all_messages(self, rcpt=None):
        """{server: [Message]} for every server that has any (for rcpt)."""
        out = {}
        for name in self.servers:
            m = self.messages(name, rcpt)
            if m:
                out[name] = m
        return out

    def sessions(self, server):
        """Every EHLO/HELO the server answered: {"ehlo", "tls", "peer"}."""
        s = self.servers[server]
        try:
            text = (s.dir / "sessions.jsonl").read_text()
        except (FileNotFoundError, TypeError):
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    # ---- relay configuration ---------------------------------------------

    def outbound(self, **overrides):
        o = {"default_level": "may", "port": str(self.port), "ca_file": self.ca_file,
             "dane": "no", "mta_sts": "no", "connect_timeout": "5",
             "command_timeout": "10"}
        o.update({k: str(v) for k, v in overrides.items()})
        return o

    def write_whitelist(self, domains, comment="test whitelist"):
        path = self.dir / ("whitelist%d.txt" % next(self._nwl))
        path.write_text("# %s\n%s\n" % (comment, "\n".join(domains)))
        return str(path)

    def relay_config(self, default_level="may", whitelist=None, domains=None,
                     listener=None, outbound=None, relay=None, name="out"):
        """Sections for a smarthost relay using this test internet.
        whitelist: list of lines for the [whitelist] file; domains: {domain:
        level} for [domain:NAME] sections; listener/outbound/relay: extra keys."""
        lst = {"mode": "smarthost", "relay_networks": "127.0.0.1/32",
               "max_connections": "1000", "max_connections_per_ip": "1000"}
        lst.update({k: str(v) for k, v in (listener or {}).items()})
        cfg = {"relay": dict(relay or {}), "listener:" + name: lst,
               "outbound": self.outbound(default_level=default_level, **(outbound or {})),
               "dns": {"unbound_conf": self.unbound_conf}}
        if whitelist is not None:
            cfg["whitelist"] = {"file": self.write_whitelist(whitelist)}
        for dom, level in (domains or {}).items():
            cfg["domain:" + dom] = {"level": level}
        return cfg

    def describe(self):
        lines = ["test internet: servers on %sN port %d, DNS on 127.0.0.1:%d"
                 % (self.base, self.port, self.dns.port if self.dns else 0)]
        for s in self.servers.values():
            lines.append("  %-9s %-14s %-28s %s" % (
                s.name, s.addr, s.host,
                "down" if not s.listen else ("no STARTTLS" if not s.tls else s.cert)
                + (" slow" if s.slow else "") + (" badtls" if s.badtls else "")))
        return "\n".join(lines)


# ---- the server process (testnet.py serve ...) ---------------------------

def _serve(a):
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import SMTP
    from smtpserver import Recorder, server_tls_context

    sessions_path = os.path.join(os.path.dirname(a.record), "sessions.jsonl")
    lock = threading.Lock()

    class SessionRecorder(Recorder):
        def _note(self, session, hostname):
            line = json.dumps({"ehlo": hostname, "tls": session.ssl is not None,
                               "peer": list(session.peer[:2]) if session.peer else []})
            with lock, open(sessions_path, "a") as f:
                f.write(line + "\n")

        async def handle_HELO(self, server, session, envelope, hostname):
            self._note(session, hostname)
            return await super().handle_HELO(server, session, envelope, hostname)

        async def handle_EHLO(self, server, session, envelope, hostname, responses):
            self._note(session, hostname)
            return await super().handle_EHLO(server, session, envelope, hostname, responses)

    class BadTLS(SMTP):
        """Offers STARTTLS, says 220, then sends plaintext: no handshake."""
        async def smtp_STARTTLS(self, arg):
            await self.push("220 2.0.0 Ready to start TLS")
            self.transport.write(b"this is not a TLS handshake\r\n")
            self.transport.close()

    class Ctl(Controller):
        def factory(self):
            cls = BadTLS if a.badtls else SMTP
            return cls(self.handler, **self.SMTP_kwargs)

    handler = SessionRecorder(data_reply="250 2.0.0 Ok: queued by mx-%s" % a.name,
                              slow=a.slow, record_dir=a.record)
    kw = {}
    if a.tls_cert:
        kw["tls_context"] = server_tls_context(a.tls_cert, a.tls_key)
    ctl = Ctl(handler, hostname=a.addr, port=a.port, decode_data=False,
              server_hostname=a.hostname, ready_timeout=10.0, **kw)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    ctl.start()
    ready = os.path.join(os.path.dirname(a.record), "ready")
    with open(ready, "w") as f:
        f.write("%d\n" % os.getpid())
    while not stop.wait(0.2):
        pass
    ctl.stop()
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description="testnet destination server / self-test")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sv = sub.add_parser("serve", help="one destination SMTP server (used by TestNet)")
    sv.add_argument("--addr", required=True)
    sv.add_argument("--port", type=int, required=True)
    sv.add_argument("--name", required=True)
    sv.add_argument("--hostname", required=True)
    sv.add_argument("--record", required=True)
    sv.add_argument("--tls-cert")
    sv.add_argument("--tls-key")
    sv.add_argument("--slow", type=float, default=0.0)
    sv.add_argument("--badtls", action="store_true")
    up = sub.add_parser("up", help="start the test internet, print it, wait for ^C")
    up.add_argument("--dir", default=None)
    a = ap.parse_args(argv)
    if a.cmd == "serve":
        return _serve(a)
    import tempfile
    d = a.dir or tempfile.mkdtemp(prefix="testnet-")
    with TestNet(d) as tn:
        print(tn.describe())
        print("unbound_conf =", tn.unbound_conf, "\nca_file =", tn.ca_file)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
