"""Operations (issue 9): install layout, man pages true to the code, the
systemd unit, `-t` on the shipped example, `-V`, privilege drop after binding
a port below 1024, pidfile, SIGTERM drain, and a TLS audit with testssl.sh.

Run: TLSRELAY_BIN=$PWD/build/asan/tlsrelay /usr/bin/python3 -m pytest -q \\
         tests/integration/test_ops.py
"""

import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

from harness import REPO, can_connect
from smtpclient import SMTPClient

LOCAL = "example.org, example.net"
MAN8 = REPO / "docs" / "tlsrelay.8"
MAN5 = REPO / "docs" / "relay.ini.5"
UNIT = REPO / "dist" / "tlsrelay.service"
EXAMPLE = REPO / "relay.ini.example"


def gateway(nh_port, relay=None, **listener):
    l = {"mode": "gateway", "local_domains": LOCAL,
         "next_hop": "127.0.0.1:%d" % nh_port, "next_hop_tls": "none"}
    l.update({k: str(v) for k, v in listener.items()})
    return {"relay": dict(relay or {}), "listener:in": l}


def body(n, lines=0):
    return (b"From: b@sender.test\r\nTo: a@example.org\r\nSubject: ops %d\r\n"
            b"Message-ID: <%d@ops.test>\r\n\r\nhello %d\r\n" % (n, n, n)) + \
        (b"y" * 70 + b"\r\n") * lines


def deliver(port, n, nh):
    before = len(nh.messages)
    with SMTPClient(port) as c:
        assert c.banner().code == 220
        assert c.ehlo().code == 250
        rs = c.transaction("b@sender.test", ["a@example.org"], body(n))
        assert [x.code for x in rs] == [250, 250, 354, 250], rs
        c.quit()
    got = nh.wait_for(before + 1, 10)
    assert any(m.content == body(n) for m in got), "message %d not at the next hop" % n


def run(cmd, **kw):
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          stdin=subprocess.DEVNULL, timeout=kw.pop("timeout", 300), **kw)


# --- the configuration table, read from relay/config.c ------------------------

def config_table():
    """[(section, key)] from cfg_rows[] in relay/config.c; section is "relay",
    "outbound", "dns", "whitelist", "listener:NAME" or "domain:NAME"."""
    src = (REPO / "relay" / "config.c").read_text()
    table = src[src.index("cfg_rows[] = {"):]
    table = table[:table.index("};")]
    rows = []
    for m in re.finditer(r'^\s*G\("([a-z]+)", "([a-z_]+)",', table, re.M):
        rows.append((m.group(1), m.group(2)))
    for m in re.finditer(r'^\s*L\("([a-z_]+)",', table, re.M):
        rows.append(("listener:NAME", m.group(1)))
    for m in re.finditer(r'^\s*D\("([a-z_]+)",', table, re.M):
        rows.append(("domain:NAME", m.group(1)))
    assert len(rows) > 40, "could not read cfg_rows[] from relay/config.c (%d rows)" % len(rows)
    return rows


def man_sections(text):
    """{section name: roff text} for the .SH "SECTION [x]" parts of relay.ini.5."""
    out = {}
    parts = re.split(r'^\.SH "SECTION \[([^\]]+)\]"\n', text, flags=re.M)
    for name, part in zip(parts[1::2], parts[2::2]):
        out[name] = part.split("\n.SH ", 1)[0]
    return out


def test_relay_ini_5_documents_every_config_key():
    sections = man_sections(MAN5.read_text())
    missing = []
    for section, key in config_table():
        text = sections.get(section)
        # a key is documented by a .TP/.TQ tag line starting with it
        if text is None or not re.search(r"^\.BR %s(?: |$)" % re.escape(key), text, re.M) \
                and not re.search(r"^\.BR \S+ \", \" %s " % re.escape(key), text, re.M):
            missing.append("[%s] %s" % (section, key))
    assert not missing, "relay.ini.5 does not document these keys of relay/config.c's " \
        "cfg_rows[]: %s" % ", ".join(missing)
    table = {(s, k) for s, k in config_table()}
    extra = []
    for section, text in sections.items():
        for m in re.finditer(r"^\.BR ([a-z_]+) \"", text, re.M):
            if (section, m.group(1)) not in table:
                extra.append("[%s] %s" % (section, m.group(1)))
    assert not extra, "relay.ini.5 documents keys that relay/config.c does not have: %s" % extra


def test_relay_ini_example_only_uses_real_keys():
    """Every key in relay.ini.example, set or commented out, is in the table."""
    table = {(s, k) for s, k in config_table()}
    section, bad = None, []
    for n, line in enumerate(EXAMPLE.read_text().splitlines(), 1):
        m = re.match(r"^#?\s?\[([a-z]+)(:[^\]]+)?\]\s*$", line)
        if m:
            section = m.group(1) + (":NAME" if m.group(2) else "")
            continue
        m = re.match(r"^#?([a-z_]+) = ", line)
        if m and (section, m.group(1)) not in table:
            bad.append("%d: [%s] %s" % (n, section, m.group(1)))
    assert not bad, "relay.ini.example names keys relay/config.c does not know:\n" + \
        "\n".join(bad)


def test_tlsrelay_8_documents_every_option():
    text = MAN8.read_text()
    main_c = (REPO / "relay" / "main.c").read_text()
    opts = re.search(r'getopt\(argc, argv, "([^"]+)"\)', main_c).group(1).replace(":", "")
    missing = [o for o in opts if not re.search(r"^\.BI? \\-%s\b" % o, text, re.M)]
    report_c = (REPO / "policy" / "report.c").read_text()
    longopts = re.findall(r'^\s*\{ "([a-z-]+)", (?:required|no)_argument', report_c, re.M)
    assert longopts, "no long options found in policy/report.c"
    missing += ["--" + o for o in longopts
                if not re.search(r"^\.BI? \\-\\-%s\b" % re.escape(o), text, re.M)]
    policy_c = (REPO / "relay" / "policycmd.c").read_text()
    popts = re.search(r'getopt\(argc, argv, "([^"]+)"\)', policy_c).group(1).replace(":", "")
    policy_part = text[text.index('.SH "THE POLICY SUBCOMMAND"'):]
    missing += ["policy -%s" % o for o in popts
                if not re.search(r"^\.BI? \\-%s\b" % o, policy_part, re.M)]
    for sig in ("SIGTERM", "SIGINT", "SIGHUP", "SIGUSR1"):
        if not re.search(r"^\.BR? .*\b%s\b" % sig, text, re.M):
            missing.append(sig)
    assert not missing, "tlsrelay.8 does not document: %s" % missing


# --- make install, man pages, systemd unit -----------------------------------

def make_install(prefix, destdir):
    cmd = ["make", "-C", str(REPO), "--no-print-directory"]
    if (REPO / "tlsrelay").exists():
        cmd += ["-o", "tlsrelay"]      # install what is built; this test is not a build
    cmd += ["install", "PREFIX=%s" % prefix, "DESTDIR=%s" % destdir]
    p = run(cmd)
    assert p.returncode == 0, "make install failed:\n" + p.stdout.decode(errors="replace")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    dest = tmp_path_factory.mktemp("destdir")
    make_install("/usr", str(dest))
    return dest


def test_make_install_layout(installed):
    want = {
        "usr/sbin/tlsrelay": 0o755,
        "usr/share/man/man8/tlsrelay.8": 0o644,
        "usr/share/man/man5/relay.ini.5": 0o644,
        "usr/lib/systemd/system/tlsrelay.service": 0o644,
        "usr/share/doc/tlsrelay/relay.ini.example": 0o644,
        "usr/share/doc/tlsrelay/README.md": 0o644,
    }
    problems = []
    for rel, mode in want.items():
        p = installed / rel
        if not p.is_file():
            problems.append("%s: missing" % rel)
        elif p.stat().st_mode & 0o777 != mode:
            problems.append("%s: mode %o, want %o" % (rel, p.stat().st_mode & 0o777, mode))
    assert not problems, problems
    assert (installed / "usr/share/man/man8/tlsrelay.8").read_bytes() == MAN8.read_bytes()
    unit = (installed / "usr/lib/systemd/system/tlsrelay.service").read_text()
    assert "ExecStart=/usr/sbin/tlsrelay -f -c /etc/tlsrelay/relay.ini" in unit, unit
    p = run([str(installed / "usr/sbin/tlsrelay"), "-V"])
    assert p.returncode == 0 and p.stdout.startswith(b"tlsrelay "), p.stdout


def render(path):
    """(tool, text, warnings) - man -l if man is installed, else groff, else None."""
    env = dict(os.environ, MANWIDTH="200", LANG="C.UTF-8")
    if shutil.which("man"):
        p = subprocess.run(["man", "--warnings", "-l", str(path)], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, env=env, timeout=60)
        assert p.returncode == 0, p.stderr.decode(errors="replace")
        text = re.sub(r".\x08", "", p.stdout.decode())      # overstrike bold/underline
        return "man", text, p.stderr.decode()
    if shutil.which("groff"):
        p = subprocess.run(["groff", "-man", "-Tutf8", "-ww", str(path)], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, env=env, timeout=60)
        assert p.returncode == 0, p.stderr.decode(errors="replace")
        return "groff", p.stdout.decode(), p.stderr.decode()
    return None, None, None


def roff_minimal_check(text):
    """Without a formatter: the page has .TH, NAME and SYNOPSIS, every request
    line names a known man(7) macro, and quotes are balanced on them."""
    known = {"TH", "SH", "SS", "TP", "TQ", "PP", "IP", "RS", "RE", "B", "I", "BR", "BI",
             "IB", "IR", "RB", "RI", "nf", "fi", "br", "sp", "\\\""}
    bad = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.startswith(".") and not line.startswith('.\\"'):
            name = line[1:].split(" ", 1)[0]
            if name not in known or line.count('"') % 2:
                bad.append("%d: %s" % (n, line))
    assert text.startswith(".\\\"") or text.startswith(".TH"), "no header"
    assert re.search(r"^\.TH ", text, re.M) and "\n.SH NAME\n" in text, "no .TH or NAME"
    assert not bad, "roff lines with unknown macros or unbalanced quotes: %s" % bad[:10]


@pytest.mark.parametrize("page,needles", [
    ("usr/share/man/man8/tlsrelay.8", ["SYNOPSIS", "SIGHUP", "EXIT STATUS", "report",
                                       "relay.ini(5)"]),
    ("usr/share/man/man5/relay.ini.5", ["SECTION [relay]", "SECTION [listener:NAME]",
                                        "shutdown_timeout", "tlsrelay(8)"]),
])
def test_man_page_renders(installed, page, needles):
    path = installed / page
    roff_minimal_check(path.read_text())
    tool, text, warnings = render(path)
    if tool is None:
        print("\nneither man nor groff is installed: only the minimal roff check ran")
        return
    assert not warnings.strip(), "%s warnings for %s:\n%s" % (tool, page, warnings)
    missing = [n for n in needles if n not in text]
    assert not missing, "%s output of %s lacks %s" % (tool, page, missing)


def test_systemd_unit(tmp_path):
    unit = UNIT.read_text()
    for line in ("ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
                 "NoNewPrivileges=yes", "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
                 "ExecStart=/usr/sbin/tlsrelay -f -c /etc/tlsrelay/relay.ini",
                 "ExecReload=/bin/kill -HUP $MAINPID", "KillSignal=SIGTERM"):
        assert re.search(r"^%s$" % re.escape(line), unit, re.M), "unit lacks %s" % line
    assert re.search(r"^RestrictAddressFamilies=.*AF_INET6", unit, re.M)
    assert re.search(r"^ReadWritePaths=.*/var/lib/tlsrelay", unit, re.M)
    stop = int(re.search(r"^TimeoutStopSec=(\d+)s?$", unit, re.M).group(1))
    assert stop > 30, "TimeoutStopSec=%d leaves no margin over shutdown_timeout's 30 s" % stop
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed: the unit file was checked by "
                    "text only")
    # installed with PREFIX under tmp_path, the unit's ExecStart= and man pages
    # exist, so verify checks them too
    prefix = tmp_path / "usr"
    make_install(str(prefix), "")
    path = prefix / "lib/systemd/system/tlsrelay.service"
    env = dict(os.environ, MANPATH=str(prefix / "share/man"))
    p = run(["systemd-analyze", "verify", str(path)], env=env)
    out = p.stdout.decode(errors="replace")
    assert p.returncode == 0 and not out.strip(), "systemd-analyze verify:\n" + out
    p = run(["systemd-analyze", "security", "--offline=yes", str(path)], env=env)
    out = p.stdout.decode(errors="replace")
    m = re.search(r"Overall exposure level for tlsrelay.service: ([0-9.]+)", out)
    assert m, "systemd-analyze security said:\n" + out[-3000:]
    print("\nsystemd-analyze security: exposure %s" % m.group(1))
    assert float(m.group(1)) <= 2.0, "exposure %s (want <= 2.0):\n%s" % (m.group(1), out)


# --- command line ---------------------------------------------------------------

def test_check_shipped_example(relay_bin):
    p = run([str(relay_bin), "-t", "-c", "relay.ini.example"], cwd=str(REPO))
    out = p.stdout.decode(errors="replace")
    assert p.returncode == 0, "tlsrelay -t on relay.ini.example:\n" + out
    assert "configuration OK" in out, out


def test_version(relay_bin):
    p = run([str(relay_bin), "-V"])
    out = p.stdout.decode(errors="replace")
    assert p.returncode == 0, out
    lines = out.splitlines()
    assert re.match(r"^tlsrelay \d+\.\d+\.\d+$", lines[0]), out
    for lib in (r"^libevent \d", r"^OpenSSL 3\.", r"^libunbound \d"):
        assert any(re.match(lib, l) for l in lines), "want a line /%s/ in:\n%s" % (lib, out)


def test_bad_usage_exits_2(relay_bin):
    p = run([str(relay_bin), "-Z"])
    assert p.returncode == 2 and b"usage:" in p.stdout, p.stdout


# --- privileges, pidfile, SIGTERM ------------------------------------------------

def free_low_port():
    for port in list(range(1023, 900, -1)) + [25]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    return None


def proc_ids(pid):
    ids = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(("Uid:", "Gid:", "Groups:", "CapEff:", "CapPrm:")):
                k, v = line.split(":", 1)
                ids[k] = v.split()
    return ids


def test_runs_unprivileged_after_binding_low_port(relay, nexthop):
    if os.geteuid() != 0:
        pytest.skip("needs root to bind a port below 1024 and drop privileges "
                    "(running as uid %d)" % os.geteuid())
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user 'nobody' on this machine")
    port = free_low_port()
    if port is None:
        pytest.skip("no free port below 1024 on 127.0.0.1")
    run_dir = tempfile.mkdtemp(prefix="tlsrelay-run-")
    try:
        os.chmod(run_dir, 0o755)
        os.chown(run_dir, nobody.pw_uid, nobody.pw_gid)
        pidfile = os.path.join(run_dir, "tlsrelay.pid")
        nh = nexthop()
        r = relay(gateway(nh.port, relay={"user": "nobody", "pidfile": pidfile},
                          listen="127.0.0.1:%d" % port))
        ids = proc_ids(r.pid)
        print("\nrelay on 127.0.0.1:%d as %s" % (port, ids))
        assert ids["Uid"] == [str(nobody.pw_uid)] * 4, "Uid line %s, want %d (nobody) for " \
            "real, effective, saved and fs uid" % (ids["Uid"], nobody.pw_uid)
        assert ids["Gid"] == [str(nobody.pw_gid)] * 4, "Gid line %s" % ids["Gid"]
        assert ids.get("Groups", []) in ([], [str(nobody.pw_gid)]), \
            "supplementary groups kept: %s" % ids["Groups"]
        assert int(ids["CapEff"][0], 16) == 0, "effective capabilities %s" % ids["CapEff"]
        assert int(ids["CapPrm"][0], 16) == 0, "permitted capabilities %s" % ids["CapPrm"]
        with open(pidfile) as f:
            assert f.read().strip() == str(r.pid), "pidfile does not hold the relay's PID"
        deliver(port, 1, nh)
        r.stop()
        assert not os.path.exists(pidfile), "pidfile %s left behind after exit" % pidfile
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def test_pidfile_written_and_removed(relay, nexthop, tmp_path):
    nh = nexthop()
    pidfile = tmp_path / "relay.pid"
    r = relay(gateway(nh.port, relay={"pidfile": str(pidfile)}))
    assert pidfile.read_text() == "%d\n" % r.pid
    r.stop()
    assert not pidfile.exists(), "pidfile left behind after SIGTERM"


def test_sigterm_drains_transaction_in_data(relay, nexthop):
    """SIGTERM while a client is in the middle of its message, and the next
    hop is slow: the listener closes at once, the message still completes
    and is delivered, another idle session is closed at shutdown_timeout at
    the latest, and the relay exits 0 right after."""
    nh = nexthop(slow=1.0)
    r = relay(gateway(nh.port, relay={"shutdown_timeout": "8"}))
    c = SMTPClient(r.port, timeout=20)
    assert c.banner().code == 220
    assert c.ehlo().code == 250
    assert c.cmd("MAIL FROM:<b@sender.test>").code == 250
    assert c.cmd("RCPT TO:<a@example.org>").code == 250
    assert c.cmd("DATA").code == 354
    msg = body(7, lines=1000)
    c.send(msg[:len(msg) // 2])
    t0 = time.monotonic()
    r.signal(signal.SIGTERM)
    deadline = time.monotonic() + 3
    while can_connect("127.0.0.1", r.port) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not can_connect("127.0.0.1", r.port), "still accepting 3 s after SIGTERM"
    time.sleep(1.0)
    assert r.alive(), "exited with a transaction in progress"
    c.send(msg[len(msg) // 2:] + b".\r\n")
    reply = c.reply()
    assert reply.code == 250, "final dot after SIGTERM: %s" % reply
    took = time.monotonic() - t0
    assert took < 8, "the transaction took %.1f s, past shutdown_timeout" % took
    q = c.cmd("QUIT")
    assert q.code == 221, q
    c.close()
    rc = r.wait(5)
    assert rc is not None, "still running 5 s after the last session ended"
    r.check_exit(rc)
    assert [m.content for m in nh.messages] == [msg], "message not delivered exactly once"
    ev = r.events()
    assert any(e.get("event") == "delivery" and e.get("outcome") == "delivered" for e in ev)


# --- TLS audit -------------------------------------------------------------------

TESTSSL = shutil.which("testssl") or shutil.which("testssl.sh")
FS_KX = re.compile(r"\b(ECDH|DH|X25519|X448)\b")


def test_testssl_audit(relay, nexthop, pki, tmp_path):
    """testssl.sh --starttls smtp against a listener with the development
    certificate: no HIGH/CRITICAL finding, TLS 1.2 and 1.3 only, every
    offered cipher with an ephemeral (EC)DH key exchange."""
    if TESTSSL is None:
        pytest.skip("testssl.sh is not installed (scripts/install-deps.sh test installs it)")
    nh = nexthop()
    r = relay(gateway(nh.port, tls_cert=pki.cert, tls_key=pki.key))
    out = tmp_path / "testssl.json"
    cmd = [TESTSSL, "--starttls", "smtp", "-p", "-s", "-f", "-U", "-E", "--quiet",
           "--color", "0", "--warnings", "off", "--connect-timeout", "10",
           "--openssl-timeout", "10", "--jsonfile", str(out), "127.0.0.1:%d" % r.port]
    p = run(cmd, timeout=600)
    text = p.stdout.decode(errors="replace")
    (tmp_path / "testssl.txt").write_text(text)
    assert out.exists(), "testssl.sh wrote no JSON (exit %d):\n%s" % (p.returncode, text[-3000:])
    findings = json.loads(out.read_text())
    by_id = {f["id"]: f for f in findings}
    print("\ntestssl.sh %s: %d findings, severities %s" % (
        " ".join(cmd[1:-1]), len(findings),
        sorted({f["severity"] for f in findings})))
    assert "TLS1_2" in by_id and "TLS1_3" in by_id, "protocol checks missing:\n" + text[-3000:]
    bad = [f for f in findings if f["severity"] in ("HIGH", "CRITICAL")]
    assert not bad, "HIGH/CRITICAL findings:\n" + "\n".join(
        "%s: %s" % (f["id"], f["finding"]) for f in bad)
    fatal = [f for f in findings if f["severity"] == "FATAL" or f["id"] == "scanProblem"]
    assert not fatal, "testssl.sh could not complete: %s" % fatal
    protos = {k: by_id[k]["finding"] for k in ("SSLv2", "SSLv3", "TLS1", "TLS1_1",
                                                "TLS1_2", "TLS1_3")}
    for k in ("SSLv2", "SSLv3", "TLS1", "TLS1_1"):
        assert protos[k].startswith("not offered"), "%s: %s" % (k, protos[k])
    for k in ("TLS1_2", "TLS1_3"):
        assert protos[k].startswith("offered"), "%s: %s" % (k, protos[k])
    ciphers = [f["finding"] for f in findings if f["id"].startswith("cipher-tls")]
    assert ciphers, "no per-protocol cipher list (-E) in the JSON"
    not_fs = [c for c in ciphers if not FS_KX.search(c)]
    assert not not_fs, "ciphers without forward secrecy offered:\n" + "\n".join(not_fs)
    for cat in ("cipherlist_NULL", "cipherlist_aNULL", "cipherlist_EXPORT", "cipherlist_LOW",
                "cipherlist_3DES_IDEA", "cipherlist_AVERAGE"):
        assert by_id[cat]["finding"] == "not offered", "%s: %s" % (cat, by_id[cat]["finding"])
    vulns = ("heartbleed", "CCS", "ROBOT", "secure_renego", "secure_client_renego", "CRIME_TLS",
             "POODLE_SSL", "fallback_SCSV", "SWEET32", "FREAK", "DROWN", "LOGJAM", "BEAST",
             "LUCKY13", "RC4")
    summary = ["%-22s %s" % (k, by_id[k]["finding"]) for k in vulns if k in by_id]
    print("protocols: %s" % protos)
    print("ciphers:\n  " + "\n  ".join(ciphers))
    print("vulnerabilities:\n  " + "\n  ".join(summary))
    assert r.alive()
