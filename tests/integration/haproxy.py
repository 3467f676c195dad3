"""haproxy.py - Debian's haproxy in front of relay instances, for integration tests.

    hp = HAProxy(workdir, [("127.0.0.1", p1), ("127.0.0.1", p2)], send="send-proxy-v2")
    hp.start()          # foreground (-db), private haproxy.cfg in workdir
    ... connect to 127.0.0.1:hp.port ...
    hp.stop()           # SIGTERM by PID, then SIGKILL by PID

TCP mode, balance roundrobin, one frontend on 127.0.0.1.  Readiness is read
from /proc/net/tcp (the frontend is LISTENing), not probed with a connection:
a probe would be forwarded to a relay and show up in its events.
"""

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from harness import free_port

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"

CONFIG = """\
global
    maxconn 200
    nbthread 1
    log stderr format raw local0 info

defaults
    mode tcp
    log global
    option tcplog
    timeout connect 5s
    timeout client 30s
    timeout server 30s

frontend smtp_in
    bind 127.0.0.1:{port}
    default_backend relays

backend relays
    balance roundrobin
{servers}
"""


def available():
    """None when haproxy can be run, else why not."""
    if not os.path.exists(HAPROXY):
        return "haproxy not installed (apt-get install haproxy)"
    return None


def listening(port):
    """Is something LISTENing on 127.0.0.1:port (or 0.0.0.0:port)?"""
    want = {"0100007F:%04X" % port, "00000000:%04X" % port}
    try:
        with open("/proc/net/tcp") as f:
            next(f)
            for line in f:
                fields = line.split()
                if fields[1] in want and fields[3] == "0A":
                    return True
    except OSError:
        pass
    return False


class HAProxy:
    def __init__(self, workdir, servers, send="send-proxy", port=None):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.cfg = self.dir / "haproxy.cfg"
        self.stderr_path = self.dir / "haproxy-stderr.txt"
        lines = ["    server r%d %s:%d %s" % (i + 1, h, p, send)
                 for i, (h, p) in enumerate(servers)]
        self.cfg.write_text(CONFIG.format(port=self.port, servers="\n".join(lines)))
        self.proc = None

    @property
    def pid(self):
        return self.proc.pid

    def log(self):
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def check(self):
        """haproxy -c on the config: (ok, output)."""
        r = subprocess.run([HAPROXY, "-c", "-f", str(self.cfg)], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=30)
        return r.returncode == 0, r.stdout

    def start(self, timeout=10.0):
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen([HAPROXY, "-db", "-f", str(self.cfg)],
                                         stdout=err, stderr=err, stdin=subprocess.DEVNULL,
                                         cwd=str(self.dir))
        deadline = time.monotonic() + timeout
        while not listening(self.port):
            if self.proc.poll() is not None:
                raise RuntimeError("haproxy exited with %s:\n%s" % (self.proc.returncode,
                                                                    self.log()[-3000:]))
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("haproxy not listening on 127.0.0.1:%d after %.0fs:\n%s"
                                   % (self.port, timeout, self.log()[-3000:]))
            time.sleep(0.05)
        return self

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
