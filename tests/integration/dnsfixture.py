"""A DNSSEC-signed "test internet" served by a private nsd on loopback.

DnsFixture(workdir, port, records) builds, signs and serves:

  test.           signed (KSK+ZSK, ECDSAP256SHA256); its KSK is the trust anchor
  secure.test.    signed child, DS in test.          -> answers are secure
  insecure.test.  unsigned child, no DS in test.     -> answers are insecure
  bogus.test.     signed child, DS in test., but every signature expired
                  in 2020                             -> answers are bogus

plus any extra child zones passed as extra_zones={"name.test.": "secure" |
"insecure" | "bogus"}.  `records` maps a zone name to zone-file lines that
are added before signing, relative to the zone origin:

    {"secure.test.": ["@ MX 10 mx1", "mx1 A 127.0.0.21",
                      "_25._tcp.mx1 TLSA 3 1 1 <hex>"]}

fx.unbound_conf is an unbound.conf for the relay's libunbound: stub zones to
127.0.0.1@port, the test. trust anchor, no query ever leaves loopback.
fx.update(records) re-signs (same keys, so the anchor stays valid) and
restarts nsd.  fx.stop() ends nsd by PID.  Every zone lives under workdir.

Run with Debian's /usr/bin/python3 (dnspython from python3-dnspython).
"""

import os
import signal
import subprocess
import time

import dns.message
import dns.query
import dns.rdatatype

KINDS = ("secure", "insecure", "bogus")
BASE_ZONES = {"secure.test.": "secure", "insecure.test.": "insecure",
              "bogus.test.": "bogus"}
TLD = "test."
TTL = 300
SOA_MINIMUM = 60            # negative TTL = min(SOA TTL, this) (RFC 2308 §5)
ALGO = "ECDSAP256SHA256"


def _run(args, cwd=None):
    """Run a tool, return stdout; raise with its stderr on failure."""
    p = subprocess.run(args, cwd=cwd, capture_output=True, text=True,
                       timeout=60)
    if p.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (args[0], p.returncode,
                                                   p.stderr.strip()))
    return p.stdout


def _date(offset_days):
    return time.strftime("%Y%m%d%H%M%S",
                         time.gmtime(time.time() + offset_days * 86400))


class DnsFixture:
    """One nsd instance serving test. and its children on 127.0.0.1:port."""

    def __init__(self, workdir, port, records=None, extra_zones=None,
                 start=True):
        self.workdir = os.path.abspath(str(workdir))
        self.port = int(port)
        self.zones = dict(BASE_ZONES)
        for name, kind in (extra_zones or {}).items():
            name = self._zone_name(name)
            if kind not in KINDS or not name.endswith("." + TLD):
                raise ValueError("bad extra zone %r: %r" % (name, kind))
            self.zones[name] = kind
        self.records = {}
        self.proc = None
        self.serial = int(time.time())
        self.keydir = os.path.join(self.workdir, "keys")
        self.zonedir = os.path.join(self.workdir, "zones")
        for d in (self.keydir, self.zonedir):
            os.makedirs(d, exist_ok=True)
        self.keys = {}
        self._set_records(records)
        self._make_keys()
        self.trust_anchor = self._write_trust_anchor()
        self.nsd_conf = self._write_nsd_conf()
        self.unbound_conf = self.write_unbound_conf(
            os.path.join(self.workdir, "unbound.conf"))
        self.sign_all()
        if start:
            self.start()

    # ---- zone data -------------------------------------------------------

    @staticmethod
    def _zone_name(name):
        name = name.lower()
        return name if name.endswith(".") else name + "."

    def _set_records(self, records):
        self.records = {}
        for zone, lines in (records or {}).items():
            zone = self._zone_name(zone)
            if zone != TLD and zone not in self.zones:
                raise ValueError("records for unknown zone %r" % zone)
            if isinstance(lines, str):
                lines = [lines]
            self.records[zone] = list(lines)

    def _signed(self, zone):
        return zone == TLD or self.zones[zone] != "insecure"

    def _make_keys(self):
        """KSK+ZSK per signed zone; kept across update() so the DS and the
        trust anchor stay valid."""
        for zone in [TLD] + sorted(self.zones):
            if not self._signed(zone):
                continue
            ksk = _run(["ldns-keygen", "-a", ALGO, "-k", zone],
                       cwd=self.keydir).strip()
            zsk = _run(["ldns-keygen", "-a", ALGO, zone],
                       cwd=self.keydir).strip()
            self.keys[zone] = (os.path.join(self.keydir, zsk),
                               os.path.join(self.keydir, ksk))

    def _ds(self, zone):
        ksk = self.keys[zone][1]
        return _run(["ldns-key2ds", "-n", "-2", ksk + ".key"]).strip()

    def _write_trust_anchor(self):
        path = os.path.join(self.workdir, "test.anchor")
        with open(self.keys[TLD][1] + ".key") as f:
            dnskey = f.read()
        with open(path, "w") as f:
            f.write(dnskey)
        return path

    def _zone_text(self, zone):
        lines = ["$ORIGIN %s" % zone, "$TTL %d" % TTL,
                 "@ IN SOA ns.%s hostmaster.%s %d 3600 600 86400 %d"
                 % (zone, zone, self.serial, SOA_MINIMUM),
                 "@ IN NS ns", "ns IN A 127.0.0.1"]
        if zone == TLD:
            for child in sorted(self.zones):
                label = child[:-len("." + TLD)]
                lines += ["%s IN NS ns.%s" % (label, child),
                          "ns.%s IN A 127.0.0.1" % label]
                if self._signed(child):
                    lines.append(self._ds(child))
        lines += self.records.get(zone, [])
        return "\n".join(lines) + "\n"

    def _sign(self, zone):
        """Write and sign one zone; return the file nsd serves."""
        src = os.path.join(self.zonedir, zone + "zone")
        with open(src, "w") as f:
            f.write(self._zone_text(zone))
        if not self._signed(zone):
            return src
        out = src + ".signed"
        if self.zones.get(zone) == "bogus":
            # Signatures valid Jan 2020 only: expired, so validation fails
            # (RFC 4035 §5.3.1) and libunbound reports bogus.
            inception, expiration = "20200101000000", "20200201000000"
        else:
            inception, expiration = _date(-1), _date(30)
        zsk, ksk = self.keys[zone]
        _run(["ldns-signzone", "-i", inception, "-e", expiration,
              "-o", zone, "-f", out, src, zsk, ksk])
        return out

    def sign_all(self):
        self.zonefiles = {zone: self._sign(zone)
                          for zone in [TLD] + sorted(self.zones)}
        self._write_nsd_zones()

    # ---- configuration files -------------------------------------------

    def _write_nsd_conf(self):
        path = os.path.join(self.workdir, "nsd.conf")
        w = self.workdir
        with open(path, "w") as f:
            f.write("""server:
    ip-address: 127.0.0.1@%d
    do-ip6: no
    username: ""
    chroot: ""
    database: ""
    zonesdir: "%s"
    zonelistfile: "%s/zone.list"
    xfrdfile: "%s/xfrd.state"
    xfrdir: "%s"
    pidfile: "%s/nsd.pid"
    logfile: "%s/nsd.log"
    server-count: 1
    verbosity: 1
    hide-version: yes
    reuseport: no
    refuse-any: no
remote-control:
    control-enable: no
include: "%s/zones.conf"
""" % (self.port, self.zonedir, w, w, w, w, w, w))
        return path

    def _write_nsd_zones(self):
        with open(os.path.join(self.workdir, "zones.conf"), "w") as f:
            for zone, path in self.zonefiles.items():
                f.write('zone:\n    name: "%s"\n    zonefile: "%s"\n'
                        % (zone, path))

    def write_unbound_conf(self, path, port=None, anchor=True, stubs=True,
                           extra_server_lines=()):
        """unbound.conf for libunbound: stubs for test. and every child to
        127.0.0.1@port (default: this nsd), the test. anchor, loopback only.
        Another port, anchor=False or stubs=False (use forwarders instead)
        make configs for failure and forwarding tests."""
        port = self.port if port is None else port
        server = [
            "do-not-query-localhost: no",
            'module-config: "validator iterator"',
            # test. is an RFC 6761 default local zone in unbound: unblock it.
            'local-zone: "test." nodefault',
            "qname-minimisation: no",
            'target-fetch-policy: "0 0 0 0 0"',
            "prefetch: no",
            "do-ip6: no",
            "use-syslog: no",
            'logfile: "%s"' % os.path.join(self.workdir, "unbound.log"),
            "verbosity: 0",
            # 2: why_bogus carries the detailed reason (e.g. "expired").
            "val-log-level: 2",
        ]
        if anchor:
            server.append('trust-anchor-file: "%s"' % self.trust_anchor)
        server += list(extra_server_lines)
        text = "server:\n" + "".join("    %s\n" % s for s in server)
        for zone in ([TLD] + sorted(self.zones)) if stubs else []:
            text += ('stub-zone:\n    name: "%s"\n    stub-addr: 127.0.0.1@%d\n'
                     % (zone, port))
        with open(path, "w") as f:
            f.write(text)
        return path

    # ---- nsd process -----------------------------------------------------

    def start(self, timeout=10.0):
        if self.proc is not None:
            raise RuntimeError("nsd already running")
        _run(["nsd-checkconf", self.nsd_conf])
        log = open(os.path.join(self.workdir, "nsd.stderr"), "ab")
        # Own session: nsd's xfrd and server children share the group id
        # (= nsd's PID), so stop() can make sure none of them outlives it.
        self.proc = subprocess.Popen(["/usr/sbin/nsd", "-d", "-c",
                                      self.nsd_conf],
                                     stdout=log, stderr=log,
                                     stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        log.close()
        self._wait_ready(timeout)

    def _wait_ready(self, timeout):
        """Until nsd answers SOA for every zone with the current serial."""
        deadline = time.monotonic() + timeout
        pending = [TLD] + sorted(self.zones)
        while pending:
            if self.proc.poll() is not None:
                raise RuntimeError("nsd exited %d: %s" % (
                    self.proc.returncode, self.log_tail()))
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("nsd not answering for %s: %s"
                                   % (pending, self.log_tail()))
            if self._serves(pending[0]):
                pending.pop(0)
            else:
                time.sleep(0.05)

    def _serves(self, zone):
        q = dns.message.make_query(zone, dns.rdatatype.SOA)
        try:
            r = dns.query.udp(q, "127.0.0.1", port=self.port, timeout=0.5)
        except Exception:
            return False
        return any(rr.serial == self.serial for rrset in r.answer
                   for rr in rrset if rrset.rdtype == dns.rdatatype.SOA)

    def log_tail(self, n=2000):
        out = ""
        for name in ("nsd.log", "nsd.stderr"):
            p = os.path.join(self.workdir, name)
            if os.path.exists(p):
                with open(p, errors="replace") as f:
                    out += f.read()[-n:]
        return out

    def stop(self):
        """SIGTERM nsd by PID and wait; then wait for its children (process
        group = its PID) to be gone, SIGKILLing the group after 5 s."""
        if self.proc is None:
            return
        p, self.proc = self.proc, None
        if p.poll() is None:
            os.kill(p.pid, signal.SIGTERM)
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=5)
        deadline = time.monotonic() + 5
        while self._group_alive(p.pid):
            if time.monotonic() > deadline:
                os.killpg(p.pid, signal.SIGKILL)
                break
            time.sleep(0.02)

    @staticmethod
    def _group_alive(pgid):
        """True while a live (non-zombie) process of group pgid exists."""
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % pid) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z" and int(fields[2]) == pgid:
                return True
        return False

    def update(self, records):
        """Replace the added records, re-sign with the same keys, restart nsd
        (nsd-control is disabled).  Caches in resolvers are not flushed."""
        self._set_records(records)
        self.serial += 1
        self.sign_all()
        self.stop()
        self.start()

    restart = update

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
