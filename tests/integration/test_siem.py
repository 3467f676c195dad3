"""The SIEM outputs of issue 7, end to end on loopback with the real binary:

- syslog: every event line also reaches /dev/log as one datagram, the JSON
  unchanged; a syslog daemon that stops reading never stalls mail (lines are
  dropped and counted); a restarted daemon is found again.  The relay runs in
  a private mount namespace (`unshare -m`) whose /dev/log is a socket of this
  test, so the host's /dev is never touched; skipped (reason printed) where
  that is not possible;
- log_addresses = hash | omit: no address reaches the log;
- SIGUSR1 reopen under load: the rotated files and the new one together hold
  every line exactly once, and no partial line;
- /metrics: strict Prometheus text format 0.0.4 (parser below, with its own
  self-test), and the counters equal what the event log of real sessions says;
- bad values of the three keys are refused by `-t` with file:line.
"""

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest

from harness import Relay, free_port, relay_binary, write_ini
from smtpclient import SMTPClient

LOCAL = "example.org"
RCPT = "a@example.org"
SYSLOG_LOCAL3_INFO = 19 * 8 + 6


def gateway(nh_port, **relay_keys):
    return {
        "relay": {k: str(v) for k, v in relay_keys.items()},
        "listener:in": {"mode": "gateway", "local_domains": LOCAL,
                        "next_hop": "127.0.0.1:%d" % nh_port, "next_hop_tls": "none",
                        "max_connections": "1000", "max_connections_per_ip": "1000"},
    }


def body(tag):
    return (b"From: <%s>\r\nTo: <%s>\r\nSubject: siem %s\r\n\r\nhello\r\n"
            % (tag.encode(), RCPT.encode(), tag.encode()))


def session(port, sender, n=1, rcpt=RCPT, size=0):
    """One client session of n transactions; returns the final reply codes."""
    codes = []
    with SMTPClient(port) as c:
        assert c.banner().code == 220
        assert c.ehlo("client.test").code == 250
        for i in range(n):
            frm = sender % i if "%" in sender else sender
            data = body(frm) + (b"x" * 70 + b"\r\n") * (size // 72)
            codes.append(c.transaction(frm, [rcpt], data)[-1].code)
        c.quit()
    return codes


def count(events, name):
    return sum(1 for e in events if e.get("event") == name)


def wait_closed(relay, timeout=10.0):
    """Events once every connect has its disconnect."""
    return relay.wait_events(lambda ev: count(ev, "connect") == count(ev, "disconnect")
                             and count(ev, "connect") > 0, timeout)


# --- Prometheus text format 0.0.4, strictly --------------------------------

METRIC = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r"[a-zA-Z_][a-zA-Z0-9_]*"
FLOAT = r"[+-]?(?:Inf|NaN|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)"
HELP_RE = re.compile(r"^[ \t]*#[ \t]*HELP[ \t]+(%s)(?:[ \t]+((?:[^\\\n]|\\\\|\\n)*))?$" % METRIC)
TYPE_RE = re.compile(r"^[ \t]*#[ \t]*TYPE[ \t]+(%s)[ \t]+(counter|gauge|histogram|summary|untyped)[ \t]*$"
                     % METRIC)
NAME_RE = re.compile(r"[ \t]*(%s)" % METRIC)
LABEL_RE = re.compile(r'(%s)[ \t]*=[ \t]*"((?:[^"\\\n]|\\\\|\\"|\\n)*)"' % LABEL)
SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count")}


class ExpositionError(AssertionError):
    pass


def skip_blanks(text, pos):
    while pos < len(text) and text[pos] in " \t":
        pos += 1
    return pos


def parse_labels(text, where):
    """text starts with '{': ({label: value}, index after the closing '}').
    Label values may hold '}' and ',' (quoted), so this scans, not splits."""
    out, pos = {}, 1
    while True:
        pos = skip_blanks(text, pos)
        if pos < len(text) and text[pos] == "}":
            return out, pos + 1
        m = LABEL_RE.match(text, pos)
        if not m:
            raise ExpositionError("%s: bad label syntax at %r" % (where, text[pos:]))
        name = m.group(1)
        if name.startswith("__") or name in out:
            raise ExpositionError("%s: reserved or repeated label %r" % (where, name))
        out[name] = re.sub(r'\\(.)', lambda e: "\n" if e.group(1) == "n" else e.group(1),
                           m.group(2))
        pos = skip_blanks(text, m.end())
        if pos < len(text) and text[pos] == ",":
            pos += 1
        elif pos >= len(text) or text[pos] != "}":
            raise ExpositionError("%s: want ',' or '}' after a label" % where)


def parse_sample(line, where):
    """'name{labels} value [timestamp]' -> (name, labels, float)."""
    m = NAME_RE.match(line)
    if not m:
        raise ExpositionError("%s: bad metric name" % where)
    name, rest, labels = m.group(1), line[m.end():], {}
    if rest.lstrip(" \t").startswith("{"):
        rest = rest.lstrip(" \t")
        labels, used = parse_labels(rest, where)
        rest = rest[used:]
    elif rest[:1] not in (" ", "\t"):
        raise ExpositionError("%s: bad metric name" % where)
    toks = re.split(r"[ \t]+", rest.strip(" \t"))
    if len(toks) not in (1, 2) or not re.fullmatch(FLOAT, toks[0]) or \
            (len(toks) == 2 and not re.fullmatch(r"-?[0-9]+", toks[1])):
        raise ExpositionError("%s: want 'value [timestamp]'" % where)
    return name, labels, float(toks[0].replace("Inf", "inf").replace("NaN", "nan"))


def family_of(name, types):
    if name in types:
        return name
    for fam, kind in types.items():
        if any(name == fam + s for s in SUFFIXES.get(kind, ())):
            return fam
    return None


def parse_comment(line, where, types, helps, seen_sample):
    """HELP and TYPE lines (other comments are ignored)."""
    h, t = HELP_RE.match(line), TYPE_RE.match(line)
    word = re.match(r"[ \t]*#[ \t]*(\S*)", line).group(1)
    if word == "HELP" and not h:
        raise ExpositionError("%s: bad HELP" % where)
    if word == "TYPE" and not t:
        raise ExpositionError("%s: bad TYPE" % where)
    if h:
        if h.group(1) in helps:
            raise ExpositionError("%s: second HELP" % where)
        helps[h.group(1)] = h.group(2) or ""
    if t:
        if t.group(1) in types or t.group(1) in seen_sample:
            raise ExpositionError("%s: TYPE repeated or after samples" % where)
        types[t.group(1)] = t.group(2)


def parse_exposition(text):
    """Samples {(name, ((label, value), ...)): float}, plus types and helps.
    Raises ExpositionError on anything the 0.0.4 text format does not allow,
    or that Prometheus would refuse (sample before/without its TYPE, a
    family's TYPE or HELP twice, a series twice, a negative counter)."""
    if not text.endswith("\n"):
        raise ExpositionError("exposition must end with a newline")
    types, helps, samples, seen_sample = {}, {}, {}, set()
    for i, line in enumerate(text[:-1].split("\n"), 1):
        where = "line %d %r" % (i, line)
        if line.strip(" \t") == "":
            continue
        if line.lstrip(" \t").startswith("#"):
            parse_comment(line, where, types, helps, seen_sample)
            continue
        name, labels, val = parse_sample(line, where)
        fam = family_of(name, types)
        if fam is None:
            raise ExpositionError("%s: sample without a TYPE" % where)
        seen_sample.add(fam)
        key = (name, tuple(sorted(labels.items())))
        if key in samples:
            raise ExpositionError("%s: series repeated" % where)
        if types[fam] == "counter" and not val >= 0:
            raise ExpositionError("%s: negative counter" % where)
        samples[key] = val
    return samples, types, helps


BAD_EXPOSITIONS = [
    ("no final newline", "# TYPE a counter\na 1"),
    ("sample before TYPE", "a 1\n# TYPE a counter\n"),
    ("bad metric name", "# TYPE 1a counter\n1a 1\n"),
    ("bad label name", '# TYPE a counter\na{1x="y"} 1\n'),
    ("unquoted label", "# TYPE a counter\na{x=y} 1\n"),
    ("bad escape", '# TYPE a counter\na{x="\\q"} 1\n'),
    ("missing value", "# TYPE a counter\na\n"),
    ("bad value", "# TYPE a counter\na one\n"),
    ("unterminated labels", '# TYPE a counter\na{x="1" 1\n'),
    ("name glued to labels value", "# TYPE a counter\na{}1x\n"),
    ("bad HELP escape", "# HELP a x\\qy\n# TYPE a counter\na 1\n"),
    ("bad timestamp", "# TYPE a counter\na 1 1.5\n"),
    ("repeated series", '# TYPE a counter\na{x="1"} 1\na{x="1"} 2\n'),
    ("negative counter", "# TYPE a counter\na -1\n"),
    ("bad type", "# TYPE a countr\na 1\n"),
    ("TYPE twice", "# TYPE a counter\n# TYPE a gauge\na 1\n"),
    ("reserved label", '# TYPE a counter\na{__x="1"} 1\n'),
]


@pytest.mark.parametrize("name,text", BAD_EXPOSITIONS, ids=[b[0] for b in BAD_EXPOSITIONS])
def test_exposition_parser_is_strict(name, text):
    with pytest.raises(ExpositionError):
        parse_exposition(text)


def test_exposition_parser_accepts_valid():
    text = ('# HELP a_total Things, with a \\\\ and a \\n.\n# TYPE a_total counter\n'
            'a_total{x="q\\"uote}",y = "2" ,} 3 1700000000000\n# a comment\n\n'
            '# TYPE g gauge\ng -1.5e3\n# TYPE s summary\ns_sum 2\ns_count 1\ns{quantile="0.5"} +Inf\n')
    samples, types, helps = parse_exposition(text)
    assert samples[("a_total", (("x", 'q"uote}'), ("y", "2")))] == 3
    assert samples[("g", ())] == -1500
    assert types == {"a_total": "counter", "g": "gauge", "s": "summary"}
    assert helps["a_total"] == "Things, with a \\\\ and a \\n."


def http(method, url, timeout=5):
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read().decode("utf-8")
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode("utf-8", "replace")


def scrape(port):
    status, headers, text = http("GET", "http://127.0.0.1:%d/metrics" % port)
    assert status == 200, text
    assert headers.get("Content-Type") == "text/plain; version=0.0.4; charset=utf-8", headers
    samples, types, _ = parse_exposition(text)
    return samples, types


def value(samples, name, **labels):
    key = (name, tuple(sorted(labels.items())))
    assert key in samples, "no series %s%r in /metrics" % (name, labels)
    return samples[key]


def expected_from_events(events):
    """What the counters must say, computed from the event log alone."""
    exp = {("tlsrelay_sessions_total", ()): count(events, "connect"),
           ("tlsrelay_sessions_active", ()): count(events, "connect") - count(events, "disconnect")}
    for outcome, lo in (("delivered", 200), ("deferred", 400), ("rejected", 500)):
        exp[("tlsrelay_messages_total", (("outcome", outcome),))] = sum(
            1 for e in events if e["event"] == "data" and lo <= e.get("code", 0) < lo + 100)
    for result in ("success", "failure"):
        exp[("tlsrelay_deliveries_total", (("result", result),))] = sum(
            1 for e in events if e["event"] == "delivery" and e.get("result") == result)
    for e in events:
        if e["event"] == "delivery" and e.get("result_type"):
            k = ("tlsrelay_tls_failures_total", (("result_type", e["result_type"]),))
            exp[k] = exp.get(k, 0) + 1
    return exp


def test_metrics_match_events(relay, nexthop):
    nh = nexthop()
    mport = free_port()
    r = relay(gateway(nh.port, metrics_listen="127.0.0.1:%d" % mport,
                      max_message_size="2k"))
    probes = count(wait_closed(r), "connect")        # the harness's readiness probe
    samples, types = scrape(mport)
    assert value(samples, "tlsrelay_sessions_total") == probes
    for name in ("tlsrelay_sessions_total", "tlsrelay_messages_total",
                 "tlsrelay_deliveries_total", "tlsrelay_tls_failures_total",
                 "tlsrelay_policy_cache_total", "tlsrelay_events_dropped_total"):
        assert types.get(name) == "counter", (name, types)
    assert types.get("tlsrelay_sessions_active") == "gauge"

    for i in range(3):
        assert session(r.port, "s%d-%%d@sender.test" % i, n=2) == [250, 250]
    assert session(r.port, "big@sender.test", size=4096) == [552]
    held = SMTPClient(r.port)                 # an open session shows in the gauge
    assert held.banner().code == 220
    r.wait_events(lambda ev: count(ev, "connect") == probes + 5 and
                  count(ev, "disconnect") == probes + 4)
    samples, _ = scrape(mport)
    assert value(samples, "tlsrelay_sessions_active") == 1
    held.quit()
    events = wait_closed(r)
    nh.wait_for(6)

    samples, _ = scrape(mport)
    exp = expected_from_events(events)
    assert exp[("tlsrelay_sessions_total", ())] == probes + 5
    assert exp[("tlsrelay_messages_total", (("outcome", "delivered"),))] == 6
    assert exp[("tlsrelay_messages_total", (("outcome", "rejected"),))] == 1
    assert exp[("tlsrelay_deliveries_total", (("result", "success"),))] >= 1
    for key, want in exp.items():
        got = samples.get(key)
        assert got == want, "%s%s: got %s, want %d (from the event log)" % (key[0], key[1], got, want)
    for key, v in samples.items():
        if key[0] == "tlsrelay_tls_failures_total" and key not in exp:
            assert v == 0, "%s: %s without a matching event" % (key, v)
    assert value(samples, "tlsrelay_events_dropped_total", output="file") == 0


def test_metrics_http_surface(relay, nexthop):
    nh = nexthop()
    mport = free_port()
    relay(gateway(nh.port, metrics_listen="127.0.0.1:%d" % mport))
    base = "http://127.0.0.1:%d" % mport
    status, _, text = http("GET", base + "/metrics?x=1")
    assert status == 200 and "tlsrelay_sessions_total" in text
    for path in ("/", "/metric", "/metrics/x", "/../metrics"):
        status, _, _ = http("GET", base + path)
        assert status == 404, "%s: got %d, want 404" % (path, status)
    status, headers, text = http("HEAD", base + "/metrics")
    assert status == 200 and text == ""
    status, _, _ = http("POST", base + "/metrics")
    assert status == 405, "POST: got %d, want 405" % status


# --- log_addresses -----------------------------------------------------------

def sha(addr):
    return "sha256:" + hashlib.sha256(addr.lower().encode()).hexdigest()[:16]


ADDRESS_KEYS = ("from", "rcpt")


def privacy_run(relay, nexthop, mode):
    nh = nexthop()
    r = relay(gateway(nh.port, log_addresses=mode))
    assert session(r.port, "Someone.Private@Sender.TEST") == [250]
    with SMTPClient(r.port) as c:          # a recipient the next hop refuses
        assert c.banner().code == 220 and c.ehlo("client.test").code == 250
        assert c.cmd("MAIL FROM:<other@sender.test>").code == 250
        assert c.cmd("RCPT TO:<reject-me@example.org>").code == 550
        c.quit()
    events = wait_closed(r)
    nh.wait_for(1)
    raw = r.raw_log().decode("utf-8").lower()
    for leak in ("someone.private@", "a@example.org", "other@sender.test", "reject-me@"):
        assert leak not in raw, "address %r in the event log with log_addresses = %s" % (leak, mode)
    return events


def test_log_addresses_hash(relay, nexthop):
    events = privacy_run(relay, nexthop, "hash")
    mail = [e for e in events if e["event"] == "mail"]
    rcpt = [e for e in events if e["event"] == "rcpt" and e.get("code") == 250]
    assert mail and rcpt, [e["event"] for e in events]
    assert mail[0]["from"] == sha("someone.private@sender.test")
    assert rcpt[0]["rcpt"] == sha(RCPT)
    for e in events:
        for k in ADDRESS_KEYS:
            if e.get(k):
                assert re.match(r"^sha256:[0-9a-f]{16}$", e[k]), (e["event"], k, e[k])


def test_log_addresses_omit(relay, nexthop):
    events = privacy_run(relay, nexthop, "omit")
    assert count(events, "mail") >= 2
    for e in events:
        for k in ADDRESS_KEYS:
            assert k not in e, "%s has %r with log_addresses = omit" % (e["event"], k)


# --- SIGUSR1 reopen under load -----------------------------------------------

def test_reopen_under_load(relay, nexthop):
    """8 concurrent clients, 96 sessions, 480 messages; the log is renamed and
    SIGUSR1 sent after every 40 messages the next hop receives."""
    threads_n, sessions_per_thread, msgs = 8, 12, 5
    sessions, total = threads_n * sessions_per_thread, threads_n * sessions_per_thread * msgs
    nh = nexthop()
    r = relay(gateway(nh.port))
    probes = count(wait_closed(r), "connect")
    errors = []

    def worker(t):
        try:
            for s in range(sessions_per_thread):
                codes = session(r.port, "t%ds%dm%%d@sender.test" % (t, s), n=msgs)
                assert codes == [250] * msgs, codes
        except BaseException as e:      # noqa: B902 - reported below
            errors.append("thread %d: %r" % (t, e))

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(threads_n)]
    for t in threads:
        t.start()
    rotated, mark, signalled = [], 40, time.monotonic()
    try:
        while any(t.is_alive() for t in threads):
            time.sleep(0.002)
            if len(nh.messages) < mark:
                continue
            if not r.log.exists():      # SIGUSR1 not handled yet: it must be, soon
                assert time.monotonic() - signalled < 5, "no new log file 5s after SIGUSR1"
                continue
            dest = r.log.with_name("events.jsonl.%d" % len(rotated))
            os.rename(r.log, dest)
            rotated.append(dest)
            r.signal(signal.SIGUSR1)
            signalled, mark = time.monotonic(), mark + 40
    finally:
        for t in threads:
            t.join(120)
    assert not errors, errors
    assert len(rotated) >= 4, "only %d rotations during the load" % len(rotated)
    deadline = time.monotonic() + 15
    while True:
        lines = collect_lines(rotated + [r.log])
        if count(lines, "disconnect") >= probes + sessions or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    per_session = {}
    for l in lines:
        per_session.setdefault(l["session"], []).append(l["event"])
    loaded = {sid: evs for sid, evs in per_session.items() if "mail" in evs}
    assert count(lines, "connect") == probes + sessions, count(lines, "connect")
    assert count(lines, "disconnect") == probes + sessions, count(lines, "disconnect")
    assert len(loaded) == sessions, len(loaded)
    assert count(lines, "mail") == total and count(lines, "data") == total
    for sid, evs in loaded.items():
        assert evs[0] == "connect" and evs[-1] == "disconnect", (sid, evs)
        want = {"connect": 1, "helo": 1, "mail": msgs, "rcpt": msgs, "data": msgs,
                "delivery": msgs, "disconnect": 1}
        got = {k: evs.count(k) for k in set(evs)}
        assert got == want, "session %s: got %s, want %s" % (sid, got, want)
    assert len(nh.messages) == total
    spread = [p.name for p in rotated if p.stat().st_size > 0]
    assert len(spread) >= 3, "lines did not spread over the rotated files: %s" % spread


def collect_lines(paths):
    """Every line of every file, parsed; fails on a partial line, on a line
    that is not one JSON object, and on a line naming a sender (unique per
    message here) that appears twice.  Other lines may legitimately repeat
    byte for byte (two "delivery" lines of one session in one millisecond):
    the caller counts them per session."""
    seen, out = set(), []
    for p in paths:
        data = p.read_bytes() if p.exists() else b""
        assert data == b"" or data.endswith(b"\n"), "%s ends in a partial line" % p
        for raw in data.split(b"\n")[:-1]:
            obj = json.loads(raw)
            assert isinstance(obj, dict), raw
            if "from" in obj:
                assert raw not in seen, "line twice: %r" % raw
                seen.add(raw)
            out.append(obj)
    out.sort(key=lambda o: o["ts"])
    return out


# --- syslog through a private /dev/log --------------------------------------

NS_WRAPPER = """#!/bin/sh
# The relay in a private mount namespace whose /dev is a directory of links
# to the real nodes plus log -> the test's socket.  unshare execs (no fork),
# so the PID the harness signals is the relay's.
exec unshare -m --propagation private /bin/sh -c \\
  'mount --rbind /dev "$1" && mount --bind "$2" /dev && shift 2 && exec "$@"' \\
  sh {realdev} {newdev} {binary} "$@"
"""


def private_dev(tmp_path, sock_path, binary):
    """A wrapper executable that runs binary with /dev/log = sock_path."""
    realdev, newdev = tmp_path / "realdev", tmp_path / "newdev"
    realdev.mkdir()
    newdev.mkdir()
    for name in os.listdir("/dev"):
        if name != "log":
            os.symlink(str(realdev / name), str(newdev / name))
    os.symlink(str(sock_path), str(newdev / "log"))
    wrapper = tmp_path / "in-namespace.sh"
    wrapper.write_text(NS_WRAPPER.format(realdev=realdev, newdev=newdev, binary=binary))
    wrapper.chmod(0o755)
    return wrapper


@pytest.fixture
def syslog_ns(relay_bin, tmp_path):
    """(make_relay(config), receiver): relays whose /dev/log is receiver's
    socket.  Skips, saying why, when a mount namespace cannot be made here."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) for a private /dev/log (mount namespace)")
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "/bin/sh", "-c",
                            "mount --bind %s %s" % (tmp_path, tmp_path)],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if probe.returncode != 0:
        pytest.skip("cannot make a mount namespace here: %s" % probe.stdout.strip())
    rx = SyslogReceiver(tmp_path / "devlog.sock")
    wrapper = private_dev(tmp_path, rx.path, relay_bin)
    started = []

    def make(config):
        r = Relay(wrapper, tmp_path / ("relay%d" % len(started)), config)
        started.append(r)
        return r.start()

    yield make, rx
    rx.close()
    errors = []
    for r in started:
        try:
            r.stop()
        except BaseException as e:      # noqa: B902
            errors.append("relay in %s: %s" % (r.dir, e))
    if errors:
        pytest.fail("relay teardown:\n" + "\n".join(errors))


class SyslogReceiver:
    """A datagram socket standing in for the syslog daemon's /dev/log."""

    def __init__(self, path):
        self.path = path
        self.sock = None
        self.bind()

    def bind(self):
        if os.path.exists(self.path):
            os.unlink(self.path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        os.chmod(str(self.path), 0o666)

    def restart(self):
        self.sock.close()
        self.bind()

    def start_reader(self):
        """Read continuously in a thread (a daemon that keeps up); see got()."""
        self.got_list, self.stop_flag = [], False
        self.sock.settimeout(0.1)

        def run():
            while not self.stop_flag:
                try:
                    self.got_list.append(self.sock.recv(1 << 20))
                except socket.timeout:
                    continue
                except OSError:
                    return
        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def got(self, settle=0.5):
        """Stop the reader once nothing arrived for `settle` seconds."""
        n = -1
        while n != len(self.got_list):
            n = len(self.got_list)
            time.sleep(settle)
        self.stop_flag = True
        self.thread.join(5)
        return list(self.got_list)

    def recv_all(self, settle=0.5):
        """Every datagram until none arrives for `settle` seconds."""
        out = []
        self.sock.settimeout(settle)
        while True:
            try:
                out.append(self.sock.recv(1 << 20))
            except socket.timeout:
                return out

    def close(self):
        self.sock.close()


SYSLOG_RE = re.compile(rb"^<(\d+)>([A-Z][a-z]{2} [ 1-3][0-9] \d\d:\d\d:\d\d) tlsrelay\[(\d+)\]: (.*)$",
                       re.S)


def parse_datagram(d):
    m = SYSLOG_RE.match(d)
    assert m, "not a syslog(3)-style datagram: %r" % d[:200]
    return int(m.group(1)), int(m.group(3)), m.group(4)


def test_syslog_carries_every_line(syslog_ns, nexthop):
    make, rx = syslog_ns
    nh = nexthop()
    rx.start_reader()
    r = make(gateway(nh.port, syslog="local3"))
    probes = count(wait_closed(r), "connect")
    for i in range(3):
        session(r.port, "s%d-%%d@sender.test" % i, n=2)
    wait_closed(r)
    got = rx.got()
    file_lines = r.raw_log().splitlines()
    msgs = []
    for d in got:
        pri, pid, msg = parse_datagram(d)
        assert pri == SYSLOG_LOCAL3_INFO, "PRI %d, want local3.info = %d" % (pri, SYSLOG_LOCAL3_INFO)
        assert pid == r.pid
        assert not msg.endswith(b"\n")
        msgs.append(msg)
    assert msgs == file_lines, ("syslog and log_file differ: %d datagrams, %d lines"
                                % (len(msgs), len(file_lines)))
    assert count([json.loads(m) for m in msgs], "disconnect") == probes + 3


def test_syslog_never_stalls_mail(syslog_ns, nexthop):
    """The daemon stops reading: sessions go on at full speed, the file keeps
    every line, syslog drops are counted; a restarted daemon gets lines again."""
    make, rx = syslog_ns
    nh = nexthop()
    mport = free_port()
    r = make(gateway(nh.port, syslog="mail", metrics_listen="127.0.0.1:%d" % mport))
    probes = count(wait_closed(r), "connect")
    t0 = time.monotonic()
    for i in range(20):                    # ~200 lines, far more than the queue holds
        s0 = time.monotonic()
        assert session(r.port, "n%d-%%d@sender.test" % i) == [250]
        assert time.monotonic() - s0 < 3, "a session took %.1fs" % (time.monotonic() - s0)
    elapsed = time.monotonic() - t0
    events = wait_closed(r)
    assert count(events, "disconnect") == probes + 20
    samples, _ = scrape(mport)
    dropped = value(samples, "tlsrelay_events_dropped_total", output="syslog")
    queued = len(rx.recv_all(0.3))
    assert dropped > 0, "nothing dropped although the receiver never read"
    assert queued + dropped == len(r.raw_log().splitlines()), (queued, dropped)
    assert value(samples, "tlsrelay_events_dropped_total", output="file") == 0
    assert elapsed < 30

    rx.restart()                           # a new daemon on the same path
    session(r.port, "after-restart@sender.test")
    time.sleep(1.2)                        # the relay reconnects at most once a second
    session(r.port, "after-reconnect@sender.test")
    wait_closed(r)
    msgs = [parse_datagram(d)[2] for d in rx.recv_all()]
    assert any(b'"event":"disconnect"' in m for m in msgs), "no line after the daemon restarted"


# --- configuration -----------------------------------------------------------

BAD_VALUES = [
    ("syslog", "kern", "bad syslog"),
    ("syslog", "local8", "bad syslog"),
    ("log_addresses", "no", "bad log_addresses"),
    ("metrics_listen", "localhost:9125", "bad metrics_listen"),
    ("metrics_listen", "127.0.0.1", "bad metrics_listen"),
]


@pytest.mark.parametrize("key,val,msg", BAD_VALUES, ids=["%s=%s" % b[:2] for b in BAD_VALUES])
def test_config_rejects(tmp_path, relay_bin, key, val, msg):
    ini = tmp_path / "relay.ini"
    cfg = gateway(2525)
    cfg["relay"] = {"hostname": "relay.test", key: val}
    cfg["listener:in"]["listen"] = "127.0.0.1:%d" % free_port()
    write_ini(ini, cfg)
    line = ini.read_text().splitlines().index("%s = %s" % (key, val)) + 1
    p = subprocess.run([str(relay_bin), "-t", "-c", str(ini)], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=30)
    assert p.returncode == 1, p
    assert "%s:%d: %s" % (ini, line, msg) in p.stderr, p.stderr


def test_config_accepts(tmp_path, relay_bin):
    ini = tmp_path / "relay.ini"
    cfg = gateway(2525)
    cfg["relay"] = {"hostname": "relay.test", "syslog": "LOCAL7", "log_addresses": "hash",
                    "metrics_listen": "[::1]:9125"}
    cfg["listener:in"]["listen"] = "127.0.0.1:%d" % free_port()
    write_ini(ini, cfg)
    p = subprocess.run([str(relay_bin), "-t", "-c", str(ini)], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
