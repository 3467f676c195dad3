#!/usr/bin/python3
"""demo.py - the smarthost against the loopback "test internet", for a person.

    /usr/bin/python3 tests/integration/demo.py --relay ./tlsrelay      (or: make demo)

Starts testnet.TestNet (signed DNS on nsd + one SMTP server per kind of
destination, see testnet.py), starts the relay in smarthost mode with a static
level per destination, sends one message to each destination with smtplib,
prints what happened (read back from the relay's JSON event log and from what
each destination recorded), stops everything by PID and exits 0.  Exit 1 only
when the demo itself could not run (relay did not start, tools missing).
Needs root for port 25 on 127.0.0.N (otherwise one high port is used).
"""

import argparse
import os
import shutil
import smtplib
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import Relay            # noqa: E402
from testnet import DOMAINS, TestNet  # noqa: E402

DEFAULT_LEVEL = "may"
WHITELIST = ["# domains that passed the secure-email assessment",
             "wl-wrongname.secure.test"]

# destination, [domain:] level (None = default / whitelist)
CASES = [
    ("good.secure.test", "verify"),
    ("wrongname.secure.test", "verify"),
    ("expired.secure.test", "verify"),
    ("untrusted.secure.test", "verify"),
    ("notls.secure.test", "encrypt"),
    ("a.wlsub.secure.test", None),          # same wrong-name MX, default may
    ("badtls.secure.test", None),
    ("hosted.secure.test", "secure"),
    ("hosted.insecure.test", "secure"),
    ("pref.secure.test", None),
    ("fallback.secure.test", None),
    ("down.secure.test", None),
    ("slow.secure.test", None),
    ("implicit.secure.test", None),
    ("nullmx.secure.test", None),
    ("mail.bogus.test", None),
    ("wl-wrongname.secure.test", None),
]


def send(port, rcpt):
    """One message; returns the reply that decided it as 'NNN text'."""
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
            s.ehlo("demo.internal.test")
            s.mail("demo@internal.test")
            code, text = s.rcpt(rcpt)
            if code != 250:
                return "%d %s" % (code, text.decode(errors="replace"))
            code, text = s.data(b"From: <demo@internal.test>\r\nTo: <%s>\r\n"
                                b"Subject: tlsrelay demo\r\n\r\nhello\r\n" % rcpt.encode())
            return "%d %s" % (code, text.decode(errors="replace"))
    except (OSError, smtplib.SMTPException) as e:
        return "error: %s" % e


def table(rows, header):
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    fmt = "  ".join("%%-%ds" % w for w in widths)
    out = [fmt % tuple(header), fmt % tuple("-" * w for w in widths)]
    out += [fmt % tuple(str(c) for c in r) for r in rows]
    return "\n".join(out)


def run(relay_bin, workdir, keep):
    tn = TestNet(Path(workdir) / "testnet")
    relay = None
    try:
        print("starting the test internet (nsd + destination servers) in %s ..." % workdir)
        tn.start()
        print(tn.describe())
        domains = {dom: level for dom, level in CASES if level}
        cfg = tn.relay_config(default_level=DEFAULT_LEVEL, whitelist=WHITELIST,
                              domains=domains,
                              outbound={"connect_timeout": 3, "command_timeout": 3})
        relay = Relay(relay_bin, Path(workdir) / "relay", cfg).start()
        print("relay %s listening on 127.0.0.1:%d (smarthost), config %s\n"
              % (relay_bin, relay.port, relay.ini))
        rows = []
        for n, (target, level) in enumerate(CASES):
            rcpt = "demo%d@%s" % (n, target)
            reply = send(relay.port, rcpt)
            ev = [e for e in relay.wait_events(
                lambda evs: any(e.get("event") == "delivery" and
                                e.get("policy_domain") == target for e in evs), 3.0)
                if e.get("event") == "delivery" and e.get("policy_domain") == target]
            last = ev[-1] if ev else {}
            if last.get("outcome"):
                outcome = last["outcome"]
            else:
                outcome = {"2": "delivered", "4": "deferred", "5": "rejected"}.get(reply[:1], "?")
            got = [k for k, v in tn.all_messages(rcpt).items() if v]
            rows.append((target, last.get("policy_level") or level or DEFAULT_LEVEL,
                         outcome, last.get("tls_version") or "-",
                         last.get("policy_type") or "-",
                         last.get("result_type") or "-",
                         ",".join(got) or "-", len(ev), reply[:60]))
        print(table(rows, ("destination", "level", "outcome", "TLS", "policy type",
                           "result type", "received by", "attempts", "client got")))
        print("\nwhat the destinations are:")
        for dom, _ in CASES:
            what = DOMAINS.get(dom, ("", ""))[0]
            if dom == "a.wlsub.secure.test":
                what = "wrong-name MX, not whitelisted here"
            elif any(dom == w for w in WHITELIST):
                what += " (whitelisted)"
            print("  %-26s %s" % (dom, what))
        print("\nevent log: %s%s" % (relay.log, "" if keep else " (removed at exit; --keep keeps it)"))
        return 0
    finally:
        if relay is not None:
            try:
                relay.stop()
            except BaseException as e:          # pytest.fail outside pytest
                print("relay stop: %s" % e, file=sys.stderr)
        tn.stop()
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description="tlsrelay smarthost demo on loopback")
    ap.add_argument("--relay", default="./tlsrelay", help="the tlsrelay binary")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    a = ap.parse_args(argv)
    relay_bin = Path(a.relay).resolve()
    if not os.access(relay_bin, os.X_OK):
        print("demo: %s is not an executable (make tlsrelay)" % relay_bin, file=sys.stderr)
        return 1
    missing = [t for t in ("/usr/sbin/nsd", "ldns-signzone", "openssl", "faketime")
               if shutil.which(t) is None]
    if missing:
        print("demo: needs %s (make deps-test)" % ", ".join(missing), file=sys.stderr)
        return 1
    workdir = tempfile.mkdtemp(prefix="tlsrelay-demo-")
    try:
        return run(relay_bin, workdir, a.keep or bool(os.environ.get("DEMO_KEEP")))
    except BaseException as e:      # pytest.fail (Relay) is a BaseException
        if isinstance(e, KeyboardInterrupt):
            raise
        print("demo: %s" % e, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
