"""`tlsrelay report` end to end (issue 7): the real binary ($TLSRELAY_BIN, default
build/asan/tlsrelay) turns event logs into RFC 8460 reports.

- synthetic logs (plain, gzip'd, stdin) -> exact counts, grouping, file names;
- the relay's own deliveries (success, reused connection, and each certificate /
  STARTTLS failure kind against real next hops) -> the report of those events;
- every report is checked against RFC 8460 §4.4 by rfc8460_problems(), written
  from the RFC field by field (not from policy/report.c).

Skipped, with the reason printed, until relay/main.c dispatches `report`.
Also holds the self-tests of eventcheck.py (docs/events.schema.json).
"""

import gzip
import ipaddress
import json
import os
import re
import subprocess
import time
from datetime import datetime, timezone

import pytest

from eventcheck import check_event_lines, event_line_errors, have_jsonschema
from harness import relay_binary, sanitizer_report
from smtpclient import SMTPClient

DAY = "2026-12-04"
DAY_START = 1796342400                   # 2026-12-04T00:00:00Z
SUBMITTER = "relay.test"
NAME = re.compile(r"^(?P<submitter>[^!]+)!(?P<domain>[^!]+)!(?P<begin>[0-9]+)!(?P<end>[0-9]+)"
                  r"!(?P<uid>[A-Za-z0-9]+)\.json\.gz$")      # RFC 8460 §5.3

# RFC 8460 §4.3
RESULT_TYPES = {
    "starttls-not-supported", "certificate-host-mismatch", "certificate-expired",
    "certificate-not-trusted", "validation-failure", "tlsa-invalid", "dnssec-invalid",
    "dane-required", "sts-policy-fetch-error", "sts-policy-invalid", "sts-webpki-invalid",
}


# --- running the binary ----------------------------------------------------

def run_report(*args, stdin=None):
    env = dict(os.environ)
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
    r = subprocess.run([str(relay_binary()), "report"] + [str(a) for a in args], input=stdin,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120, env=env)
    err = r.stderr.decode("utf-8", "replace")
    assert not sanitizer_report(err), "sanitizer report:\n" + err[-6000:]
    return r.returncode, r.stdout.decode(), err


@pytest.fixture(scope="module")
def report_cmd():
    b = relay_binary()
    if not b.exists():
        reason = "relay binary %s does not exist (make build/asan/tlsrelay)" % b
        print(reason)
        pytest.skip(reason)
    r = subprocess.run([str(b), "report", "--help"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=30)
    if r.returncode != 0 or b"usage: tlsrelay report" not in r.stdout:
        reason = ("`%s report --help` is not recognized yet (exit %d): relay/main.c does not "
                  "dispatch `report` to report_main() (policy/report.h)" % (b, r.returncode))
        print(reason)
        pytest.skip(reason)
    return run_report


def reports_from(stdout):
    """{policy-domain: (file name, parsed report)} from the paths printed."""
    out = {}
    for line in stdout.splitlines():
        path = line.strip()
        name = os.path.basename(path)
        m = NAME.match(name)
        assert m, "not an RFC 8460 §5.3 file name: %r" % name
        with open(path, "rb") as f:
            raw = f.read()
        assert raw[:2] == b"\x1f\x8b", "%s is not gzip" % name
        report = json.loads(gzip.decompress(raw).decode("utf-8"))
        problems = rfc8460_problems(report)
        assert not problems, "%s:\n%s" % (name, "\n".join(problems))
        assert m.group("domain") not in out, "two reports for %s" % m.group("domain")
        out[m.group("domain")] = (name, report)
    return out


# --- RFC 8460 §4.4, field by field ------------------------------------------

def is_datetime(v):
    if not isinstance(v, str):
        return False
    try:
        datetime.strptime(v, "%Y-%m-%dT%H:%M:%SZ")
        return True
    except ValueError:
        return False


def is_ip(v):
    try:
        ipaddress.ip_address(v)
        return True
    except (ValueError, TypeError):
        return False


def is_count(v, least=0):
    return isinstance(v, int) and not isinstance(v, bool) and v >= least


def is_strings(v):
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def only(what, obj, allowed, out):
    for k in obj:
        if k not in allowed:
            out.append("%s: unexpected member %r" % (what, k))


def failure_problems(f, out):
    """One failure-details entry; returns its failed-session-count."""
    if not isinstance(f, dict):
        out.append("failure-details[]: not an object")
        return 0
    only("failure-details[]", f, {"result-type", "sending-mta-ip", "receiving-mx-hostname",
                                  "receiving-mx-helo", "receiving-ip", "failed-session-count",
                                  "additional-information", "failure-reason-code"}, out)
    if f.get("result-type") not in RESULT_TYPES:
        out.append("result-type %r is not an RFC 8460 §4.3 type" % f.get("result-type"))
    # sending-mta-ip may be absent (RPT-09); the IP strings must be addresses
    for k in ("sending-mta-ip", "receiving-ip"):
        if k in f and not is_ip(f[k]):
            out.append("%s %r is not an IP address" % (k, f[k]))
    for k in ("receiving-mx-hostname", "receiving-mx-helo", "failure-reason-code"):
        if k in f and not (isinstance(f[k], str) and f[k]):
            out.append("%s is not a non-empty string" % k)
    if "additional-information" in f and not (isinstance(f["additional-information"], str)
                                              and ":" in f["additional-information"]):
        out.append("additional-information is not a URI")
    if not is_count(f.get("failed-session-count"), 1):
        out.append("failed-session-count is not an integer >= 1")
        return 0
    return f["failed-session-count"]


def policy_problems(p, out):
    if not isinstance(p, dict):
        out.append("policies[]: not an object")
        return
    only("policies[]", p, {"policy", "summary", "failure-details"}, out)
    pol, summ = p.get("policy"), p.get("summary")
    if not isinstance(pol, dict):
        out.append("policy: missing")
        pol = {}
    only("policy", pol, {"policy-type", "policy-string", "policy-domain", "mx-host"}, out)
    if pol.get("policy-type") not in ("tlsa", "sts", "no-policy-found"):
        out.append("policy-type %r" % pol.get("policy-type"))
    if not is_strings(pol.get("policy-string")):
        out.append("policy-string is not an array of strings")
    if not (isinstance(pol.get("policy-domain"), str) and pol["policy-domain"]):
        out.append("policy-domain missing (RPT-08)")
    if "mx-host" in pol and not is_strings(pol["mx-host"]):
        out.append("mx-host is not an array of strings")
    if not isinstance(summ, dict):
        out.append("summary: missing")
        summ = {}
    only("summary", summ, {"total-successful-session-count", "total-failure-session-count"}, out)
    for k in ("total-successful-session-count", "total-failure-session-count"):
        if not is_count(summ.get(k)):
            out.append("%s is not a count" % k)
    details = p.get("failure-details", [])
    if not isinstance(details, list):
        out.append("failure-details is not an array")
        details = []
    total = sum(failure_problems(f, out) for f in details)
    if total != summ.get("total-failure-session-count"):
        out.append("failure-details add up to %d, summary says %r"
                   % (total, summ.get("total-failure-session-count")))


def rfc8460_problems(r):
    """Everything in report r that does not follow RFC 8460 §4.4; [] when it does."""
    out = []
    if not isinstance(r, dict):
        return ["report: not an object"]
    only("report", r, {"organization-name", "date-range", "contact-info", "report-id",
                       "policies"}, out)
    if not isinstance(r.get("organization-name"), str):
        out.append("organization-name is not a string")
    dr = r.get("date-range")
    if not isinstance(dr, dict):
        out.append("date-range: missing")
        dr = {}
    only("date-range", dr, {"start-datetime", "end-datetime"}, out)
    for k in ("start-datetime", "end-datetime"):
        if not is_datetime(dr.get(k)):
            out.append("%s %r is not an RFC 3339 date-time" % (k, dr.get(k)))
    if not isinstance(r.get("contact-info"), str):
        out.append("contact-info is not a string")
    if not (isinstance(r.get("report-id"), str) and r["report-id"]):
        out.append("report-id missing")
    pols = r.get("policies")
    if not (isinstance(pols, list) and pols):
        out.append("policies is not a non-empty array")
        pols = []
    for p in pols:
        policy_problems(p, out)
    return out


def policy(report, ptype):
    found = [p for p in report["policies"] if p["policy"]["policy-type"] == ptype]
    assert len(found) == 1, "want one %s policy in %r" % (ptype, report["policies"])
    return found[0]


def failures(p):
    """{result-type: failed-session-count} of a policies[] element."""
    out = {}
    for f in p.get("failure-details", []):
        out[f["result-type"]] = out.get(f["result-type"], 0) + f["failed-session-count"]
    return out


# --- synthetic logs ------------------------------------------------------------

def delivery(ts, domain, result_type=None, **extra):
    e = {"ts": ts, "event": "delivery", "host": "relay.test", "session": "89cee3b2923ef091",
         "policy_type": "no-policy-found", "policy_domain": domain, "policy_string": [],
         "policy_level": "may", "mx_host": "mx." + domain,
         "result": "failure" if result_type else "success",
         "sending_mta_ip": "192.0.2.1", "receiving_mx_hostname": "mx." + domain,
         "receiving_mx_helo": "nexthop.test", "receiving_ip": "198.51.100.7",
         "tls_version": "TLSv1.3", "tls_cipher": "TLS_AES_256_GCM_SHA384",
         "peer_cert_sha256": "ab" * 32, "connection_reused": False,
         "outcome": "deferred" if result_type else "delivered",
         "code": 451 if result_type else 250,
         "smtp_reply": "TLS handshake failed" if result_type else "Ok", "duration_ms": 2}
    if result_type:
        e["result_type"] = result_type
    e.update(extra)
    return json.dumps(e) + "\n"


def test_synthetic_logs(report_cmd, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    t = DAY + "T%02d:00:00.000Z"
    plain = tmp_path / "events.jsonl"
    plain.write_text(
        delivery(t % 1, "example.org") +
        delivery(t % 1, "example.org", connection_reused=True) +          # same session
        delivery(t % 2, "example.org", "certificate-expired") +
        delivery(t % 3, "example.org", "certificate-expired") +
        delivery(t % 4, "example.org", report_mail=True) +                # RPT-07
        delivery(t % 4, "example.org", result="failure", outcome="deferred",  # before TLS
                 smtp_reply="connect to mx.example.org: Connection refused") +
        delivery("2026-12-03T23:59:59.999Z", "example.org") +             # other day
        "this line is not JSON\n" +
        '{"ts":"%s","event":"connect","host":"relay.test","session":"x"}\n' % (t % 5))
    rotated = tmp_path / "events.jsonl.1.gz"
    rotated.write_bytes(gzip.compress(delivery(t % 6, "example.net").encode()))
    stdin = delivery(t % 7, "example.net", "starttls-not-supported").encode()
    rc, stdout, err = report_cmd("--day", DAY, "--submitter", SUBMITTER, "--org", "Test Org",
                                 "--contact", "mailto:tls@relay.test", "--out", out,
                                 plain, rotated, "-", stdin=stdin)
    assert rc == 0, err
    assert "unparsable line" in err, err
    reps = reports_from(stdout)
    assert sorted(reps) == ["example.net", "example.org"]
    name, r = reps["example.org"]
    m = NAME.match(name)
    assert (m.group("submitter"), int(m.group("begin")), int(m.group("end"))) == \
        (SUBMITTER, DAY_START, DAY_START + 86399)
    assert r["organization-name"] == "Test Org"
    assert r["contact-info"] == "mailto:tls@relay.test"
    assert r["date-range"] == {"start-datetime": DAY + "T00:00:00Z",
                               "end-datetime": DAY + "T23:59:59Z"}
    p = policy(r, "no-policy-found")
    assert p["policy"]["policy-domain"] == "example.org"                  # RPT-08
    assert p["summary"] == {"total-successful-session-count": 1,
                            "total-failure-session-count": 2}
    assert failures(p) == {"certificate-expired": 2}
    assert len(p["failure-details"]) == 1
    p = policy(reps["example.net"][1], "no-policy-found")
    assert p["summary"] == {"total-successful-session-count": 1,
                            "total-failure-session-count": 1}
    assert failures(p) == {"starttls-not-supported": 1}
    assert reps["example.org"][1]["report-id"] != reps["example.net"][1]["report-id"]


def test_default_day_is_yesterday(report_cmd, tmp_path):
    now = int(time.time())
    start = now - now % 86400 - 86400
    if now % 86400 > 86400 - 60:
        pytest.skip("too close to midnight UTC for a stable 'yesterday'")
    ts = datetime.fromtimestamp(start + 3600, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    log = tmp_path / "events.jsonl"
    log.write_text(delivery(ts, "example.org"))
    rc, stdout, err = report_cmd("--submitter", SUBMITTER, "--out", tmp_path, log)
    assert rc == 0, err
    name = reports_from(stdout)["example.org"][0]
    assert int(NAME.match(name).group("begin")) == start


@pytest.mark.parametrize("args, message", [
    (["--day", DAY], "--out DIR is required"),
    (["--day", "2026-02-30", "--out", "{out}", "{log}"], "--day 2026-02-30"),
    (["--out", "{out}", "--day", DAY], "no LOGFILE"),
    (["--out", "{out}/missing-dir", "{log}"], "missing-dir"),
    (["--day", DAY, "--out", "{out}", "{log}", "{out}/no-such.log"], "no-such.log"),
    (["--frobnicate", "--out", "{out}", "{log}"], "--frobnicate"),
])
def test_usage_and_io_errors(report_cmd, tmp_path, args, message):
    out = tmp_path / "out"
    out.mkdir()
    log = tmp_path / "events.jsonl"
    log.write_text(delivery(DAY + "T01:00:00.000Z", "example.org"))
    args = [a.format(out=out, log=log) for a in args]
    rc, stdout, err = report_cmd("--submitter", SUBMITTER, *args)
    assert rc == 1, (rc, stdout, err)
    assert message in err, err
    assert list(out.iterdir()) == [], "a report was written despite the error"


# --- the relay's own deliveries -----------------------------------------------

def relay_config(pki, ports):
    """One gateway listener per next hop (name -> (port, next_hop_tls))."""
    cfg = {"outbound": {"ca_file": pki.ca, "connect_timeout": "5"}}
    for name, (port, level) in ports.items():
        cfg["listener:" + name] = {
            "mode": "gateway", "local_domains": "example.org, example.net",
            "next_hop": "127.0.0.1:%d" % port, "next_hop_tls": level}
    return cfg


def send(port, rcpt, n):
    """n transactions on one client session; returns [(RCPT code, last code)]."""
    c = SMTPClient(port)
    assert c.banner().code == 220
    assert c.ehlo().code == 250
    body = b"From: b@sender.test\r\nTo: %s\r\nSubject: report\r\n\r\nhello\r\n" % rcpt.encode()
    codes = []
    for _ in range(n):
        rs = c.transaction("b@sender.test", [rcpt], body)
        codes.append((rs[1].code, rs[-1].code))
    c.quit()
    return codes


def test_report_of_relay_deliveries(report_cmd, relay, nexthop, pki, tmp_path):
    hops = {"ok": (nexthop(tls_cert=pki.leaf("nexthop")[0], tls_key=pki.leaf("nexthop")[1]),
                   "verify"),
            "expired": (nexthop(tls_cert=pki.leaf("expired")[0], tls_key=pki.leaf("expired")[1]),
                        "verify"),
            "untrusted": (nexthop(tls_cert=pki.leaf("untrusted")[0],
                                  tls_key=pki.leaf("untrusted")[1]), "verify"),
            "wrongname": (nexthop(tls_cert=pki.leaf("wrongname")[0],
                                  tls_key=pki.leaf("wrongname")[1]), "verify"),
            "nostarttls": (nexthop(), "encrypt")}
    r = relay(relay_config(pki, {k: (nh.port, lvl) for k, (nh, lvl) in hops.items()}))
    assert send(r.ports["ok"], "a@example.org", 2) == [(250, 250), (250, 250)]
    for name in ("expired", "untrusted", "wrongname", "nostarttls"):
        rcpt, _ = send(r.ports[name], "a@example.net", 1)[0]
        assert rcpt // 100 == 4, "%s: RCPT got %d" % (name, rcpt)
    r.wait_events(lambda ev: sum(e.get("event") == "delivery" for e in ev) >= 6)
    r.stop()
    check_event_lines(r.raw_log().split(b"\n"), str(r.log))
    days = {e["ts"][:10] for e in r.events() if e.get("event") == "delivery"}
    if len(days) != 1:
        pytest.skip("deliveries straddled midnight UTC: %s" % sorted(days))
    out = tmp_path / "reports"
    out.mkdir()
    rc, stdout, err = report_cmd("--day", days.pop(), "--submitter", SUBMITTER, "--out", out,
                                 r.log)
    assert rc == 0, err
    reps = reports_from(stdout)
    assert sorted(reps) == ["example.net", "example.org"], stdout
    ok = policy(reps["example.org"][1], "no-policy-found")
    # two messages, one TLS session: the second reused the connection (RPT-04)
    assert ok["summary"] == {"total-successful-session-count": 1,
                             "total-failure-session-count": 0}
    bad = policy(reps["example.net"][1], "no-policy-found")
    assert bad["summary"] == {"total-successful-session-count": 0,
                              "total-failure-session-count": 4}
    assert failures(bad) == {"certificate-expired": 1, "certificate-not-trusted": 1,
                             "certificate-host-mismatch": 1, "starttls-not-supported": 1}
    for f in bad["failure-details"]:
        assert f["receiving-ip"] == "127.0.0.1" and f["sending-mta-ip"] == "127.0.0.1", f


# --- eventcheck.py / docs/events.schema.json ----------------------------------

GOOD_DELIVERY = ('{"ts":"2026-12-04T16:15:31.886Z","event":"delivery","host":"relay.test",'
                 '"session":"89cee3b2923ef091","policy_type":"no-policy-found",'
                 '"policy_domain":"example.org","policy_string":[],"policy_level":"none",'
                 '"mx_host":"mx.example.org","result":"success","sending_mta_ip":"127.0.0.1",'
                 '"receiving_mx_hostname":"mx.example.org","receiving_mx_helo":"nexthop.test",'
                 '"receiving_ip":"127.0.0.1","tls_version":"TLSv1.3",'
                 '"tls_cipher":"TLS_AES_256_GCM_SHA384","peer_cert_sha256":"%s",'
                 '"connection_reused":false,"outcome":"delivered","code":250,"smtp_reply":"Ok",'
                 '"duration_ms":2}' % ("ab" * 32))


def mutate(line, **change):
    e = json.loads(line)
    for k, v in change.items():
        if v is None:
            e.pop(k, None)
        else:
            e[k] = v
    return json.dumps(e)


BAD_LINES = {
    "not json": "delivery {",
    "array": "[1]",
    "no ts": mutate(GOOD_DELIVERY, ts=None),
    "ts without ms": mutate(GOOD_DELIVERY, ts="2026-12-04T16:15:31Z"),
    "ts not UTC": mutate(GOOD_DELIVERY, ts="2026-12-04T16:15:31.886+01:00"),
    "no session": mutate(GOOD_DELIVERY, session=None),
    "unknown event": mutate(GOOD_DELIVERY, event="teleport"),
    "success with result_type": mutate(GOOD_DELIVERY, result_type="certificate-expired"),
    "result_type not RFC 8460": mutate(GOOD_DELIVERY, result="failure",
                                       result_type="certificate-bad"),
    "policy_string not array": mutate(GOOD_DELIVERY, policy_string="x"),
    "no policy_domain": mutate(GOOD_DELIVERY, policy_domain=None),
    "code as string": mutate(GOOD_DELIVERY, code="250"),
    "outcome unknown": mutate(GOOD_DELIVERY, outcome="lost"),
}


def test_eventcheck_accepts_the_documented_lines():
    lines = [GOOD_DELIVERY,
             mutate(GOOD_DELIVERY, result="failure", result_type="certificate-host-mismatch",
                    outcome="deferred", code=451),
             mutate(GOOD_DELIVERY, result="failure", outcome="deferred", code=451,  # no TLS
                    tls_version="", tls_cipher="", peer_cert_sha256="", sending_mta_ip=""),
             '{"ts":"2026-12-04T16:15:31.000Z","event":"connect","host":"relay.test",'
             '"session":"89cee3b2923ef091","listener":"in","mode":"gateway",'
             '"client_ip":"::1","client_port":40000}',
             '{"ts":"2026-12-04T16:15:31.000Z","event":"reject","host":"relay.test",'
             '"session":"","listener":"in","client_ip":"192.0.2.9","command":"connect",'
             '"code":421,"reason":"too many connections"}',
             ""]
    assert check_event_lines(lines) == 6


@pytest.mark.parametrize("name", list(BAD_LINES))
def test_eventcheck_rejects(name):
    if not have_jsonschema() and name not in ("not json", "array", "no ts", "no session",
                                              "unknown event"):
        pytest.skip("python3-jsonschema is not installed (scripts/install-deps.sh test)")
    errors = event_line_errors([BAD_LINES[name]])
    assert errors, "%s: accepted %s" % (name, BAD_LINES[name])
    with pytest.raises(AssertionError):
        check_event_lines([BAD_LINES[name]])
