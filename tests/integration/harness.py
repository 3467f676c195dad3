"""harness.py - run the relay and its peers on loopback for integration tests.

Everything started here is stopped by PID.  The fixtures in conftest.py wrap
these classes; tests may use them directly too.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest


from eventcheck import check_event_lines

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


def relay_binary():
    b = os.environ.get("TLSRELAY_BIN") or "build/asan/tlsrelay"
    p = Path(b)
    if not p.is_absolute():
        p = REPO / p
    return p


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def can_connect(host, port, timeout=0.5):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect((host, port))
            return True
        except OSError:
            return False


def parse_listen(value):
    """'127.0.0.1:25, [::1]:25' -> [('127.0.0.1', 25), ('::1', 25)]"""
    out = []
    for item in value.split(","):
        item = item.strip()
        m = re.match(r"^\[([^\]]+)\]:(\d+)$", item) or re.match(r"^([^:]+):(\d+)$", item)
        if not m:
            raise ValueError("bad listen address in test config: %r" % item)
        out.append((m.group(1), int(m.group(2))))
    return out


def write_ini(path, sections):
    """sections: {'relay': {...}, 'listener:in': {...}, ...} in order."""
    with open(path, "w") as f:
        for name, keys in sections.items():
            f.write("[%s]\n" % name)
            for k, v in keys.items():
                f.write("%s = %s\n" % (k, v))
            f.write("\n")


def seconds(value):
    """'30', '30s', '5m', '1h' -> seconds (the config's time syntax)."""
    m = re.match(r"^\s*(\d+)\s*([smhd]?)\s*$", str(value))
    if not m:
        return 30
    return int(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def sanitizer_report(text):
    return any(m in text for m in SANITIZER_MARKS)


class Relay:
    """One tlsrelay process: relay.ini written into workdir, run with -f."""

    def __init__(self, binary, workdir, config):
        self.binary = Path(binary)
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ini = self.dir / "relay.ini"
        self.log = self.dir / "events.jsonl"
        self.stderr_path = self.dir / "stderr.txt"
        self.stdout_path = self.dir / "stdout.txt"
        sections = {"relay": {"hostname": "relay.test", "log_file": str(self.log)}}
        for name, keys in config.items():
            sections.setdefault(name, {}).update(keys)
        sections["relay"]["log_file"] = str(self.log)
        sections["relay"].setdefault("hostname", "relay.test")
        sections["relay"].setdefault("state_dir", str(self.dir / "state"))
        # short, so a test that failed with a client still connected does not
        # hold up teardown; tests of shutdown set their own
        sections["relay"].setdefault("shutdown_timeout", "5")
        self.ports = {}
        self.addrs = []
        for name, keys in sections.items():
            if name.startswith("listener:"):
                if "listen" not in keys:
                    keys["listen"] = "127.0.0.1:%d" % free_port()
                addrs = parse_listen(keys["listen"])
                self.ports[name.split(":", 1)[1]] = addrs[0][1]
                self.addrs.extend(addrs)
        self.sections = sections
        write_ini(self.ini, sections)
        self.proc = None
        self.returncode = None
        self.checked = False

    @property
    def port(self):
        return next(iter(self.ports.values()))

    @property
    def pid(self):
        return self.proc.pid

    def start(self, ready_timeout=10.0):
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen([str(self.binary), "-f", "-c", str(self.ini)],
                                         stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                         cwd=str(self.dir), env=env)
        deadline = time.monotonic() + ready_timeout
        pending = list(self.addrs)
        while pending:
            if self.proc.poll() is not None:
                self.returncode = self.proc.returncode
                pytest.fail("tlsrelay exited with %d before listening\n--- config:\n%s"
                            "--- stderr:\n%s" % (self.proc.returncode, self.ini.read_text(),
                                                 self.stderr()[-4000:]))
            if can_connect(*pending[0]):
                pending.pop(0)
                continue
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail("tlsrelay did not accept on %s:%d within %.0fs\n--- stderr:\n%s"
                            % (pending[0][0], pending[0][1], ready_timeout,
                               self.stderr()[-4000:]))
            time.sleep(0.05)
        return self

    def stderr(self):
        try:
            return self.stderr_path.read_bytes().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def raw_log(self):
        try:
            return self.log.read_bytes()
        except FileNotFoundError:
            return b""

    def events(self):
        """Every line of the event log, parsed.  Fails the test on a line that is
        not UTF-8 or not one JSON object."""
        out = []
        data = self.raw_log()
        lines = data.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        elif lines and self.alive():
            lines.pop()       # the writer may be in the middle of the last line
        for i, raw in enumerate(lines, 1):
            try:
                text = raw.decode("utf-8")
                obj = json.loads(text)
            except (UnicodeDecodeError, ValueError) as e:
                pytest.fail("%s:%d: unparsable event line (%s): %r" % (self.log, i, e, raw))
            if not isinstance(obj, dict):
                pytest.fail("%s:%d: event is not a JSON object: %r" % (self.log, i, raw))
            out.append(obj)
        return out

    def wait_events(self, pred, timeout=5.0):
        """Poll the event log until pred(events) is true; return the events."""
        deadline = time.monotonic() + timeout
        while True:
            ev = self.events()
            if pred(ev) or time.monotonic() > deadline:
                return ev
            time.sleep(0.05)

    def signal(self, sig):
        os.kill(self.proc.pid, sig)

    def wait(self, timeout):
        try:
            self.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        return self.returncode

    def kill(self):
        if self.alive():
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def check_exit(self, rc):
        self.checked = True
        err = self.stderr()
        assert not sanitizer_report(err), "sanitizer report on relay stderr:\n" + err[-6000:]
        assert rc == 0, "tlsrelay exit code %s\n--- stderr:\n%s" % (rc, err[-4000:])

    def stop(self, timeout=None):
        """SIGTERM by PID, wait, assert exit code 0 and no sanitizer report
        (once: a test that already checked the exit is not reported twice)."""
        if self.proc is None or self.checked:
            return self.returncode
        if self.returncode is None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            if timeout is None:
                timeout = seconds(self.sections["relay"]["shutdown_timeout"]) + 15
            rc = self.wait(timeout)
            if rc is None:
                self.kill()
                pytest.fail("tlsrelay did not exit within %.0fs of SIGTERM\n--- stderr:\n%s"
                            % (timeout, self.stderr()[-4000:]))
        self.returncode = self.proc.returncode
        self.check_exit(self.returncode)
        check_event_lines(self.raw_log().splitlines(), str(self.log))
        return self.returncode


class NextHopProcess:
    """smtpserver.py as a separate process (so a test can kill it)."""

    def __init__(self, workdir, port=None, args=()):
        self.port = port or free_port()
        self.dir = Path(workdir)
        self.record = self.dir / "records"
        self.record.mkdir(parents=True, exist_ok=True)
        self.stderr_path = self.dir / "nexthop-stderr.txt"
        self.args = list(args)
        self.proc = None

    def start(self, timeout=10.0):
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(HERE / "smtpserver.py"), "--port", str(self.port),
                 "--record", str(self.record)] + self.args,
                stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not can_connect("127.0.0.1", self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail("next hop process did not start:\n" + self.stderr_path.read_text())
            time.sleep(0.05)
        return self

    @property
    def pid(self):
        return self.proc.pid

    def records(self):
        from smtpserver import read_records
        return read_records(str(self.record))

    def kill(self):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def swaks(port, *args, timeout=60):
    """Run swaks against 127.0.0.1:port; returns CompletedProcess (text)."""
    cmd = ["swaks", "--server", "127.0.0.1:%d" % port, "--protocol", "ESMTP",
           "--helo", "client.test", "--timeout", "20"] + list(args)
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          stdin=subprocess.DEVNULL, timeout=timeout)
