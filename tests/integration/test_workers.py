"""[relay] workers = N: N processes share the listeners (SO_REUSEPORT), the
supervisor restarts a worker that dies, and SIGTERM stops them all."""

import os
import signal
import time

from smtpclient import SMTPClient
from test_foundation import GOOD_RCPT, SENDER, gateway


def children(pid):
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(d))
    return sorted(out)


def wait_children(pid, n, timeout=10, gone=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        kids = children(pid)
        if len(kids) == n and gone not in kids:
            return kids
        time.sleep(0.05)
    raise AssertionError("want %d workers, have %s" % (n, children(pid)))


def send(port, i):
    c = SMTPClient(port)
    c.reply()
    c.ehlo()
    rs = c.transaction(SENDER, [GOOD_RCPT], b"Subject: w%d\r\n\r\nbody %d\r\n" % (i, i))
    c.quit()
    return rs[-1].code


def test_two_workers_restart_and_stop(relay, nexthop):
    nh = nexthop()
    r = relay(gateway(nh.port, relay={"workers": "2"}))
    kids = wait_children(r.pid, 2)
    assert [send(r.port, i) for i in range(20)] == [250] * 20
    sessions = {e["session"][:12] for e in r.events() if e["event"] == "connect"}
    assert len(sessions) == 2, "connections were not spread over both workers: %s" % sessions

    os.kill(kids[0], signal.SIGKILL)
    new = wait_children(r.pid, 2, gone=kids[0])
    assert kids[0] not in new, "the killed worker was not replaced"
    assert [send(r.port, 100 + i) for i in range(5)] == [250] * 5
    assert len(nh.wait_for(25)) == 25

    r.stop()
    assert children(r.pid) == []
