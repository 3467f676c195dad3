"""SIGHUP: relay.ini, certificates, keys and the whitelist are re-read without
dropping sessions; a broken configuration or changed listener addresses keep
the running one (issue 9, "Operations")."""

import signal
import ssl
import time

from harness import write_ini
from smtpclient import SMTPClient
from test_foundation import GOOD_RCPT, SENDER, gateway


def reload(r, n_before):
    r.signal(signal.SIGHUP)
    deadline = time.time() + 5
    while time.time() < deadline:
        ev = [e for e in r.events() if e["event"] == "reload"]
        if len(ev) > n_before:
            return ev[-1]
        time.sleep(0.05)
    raise AssertionError("no reload event after SIGHUP")


def peer_cn(port, cafile):
    c = SMTPClient(port)
    c.reply()
    c.ehlo()
    c.starttls(cafile, server_hostname="localhost")
    der = c.sock.getpeercert(binary_form=True)
    c.close()
    return ssl.DER_cert_to_PEM_cert(der)


def test_reload_config_and_certificate(relay, nexthop, pki):
    nh = nexthop()
    cfg = gateway(nh.port, pki=pki, banner="ESMTP first")
    r = relay(cfg)
    old = SMTPClient(r.port)                      # a session open across the reload
    assert "ESMTP first" in old.reply().text
    assert old.ehlo().code == 250
    before = peer_cn(r.port, pki.ca)

    cert, key = pki.leaf("nexthop")
    r.sections["listener:in"].update(banner="ESMTP second", tls_cert=cert, tls_key=key)
    write_ini(r.ini, r.sections)
    ev = reload(r, 0)
    assert ev["result"] == "success", ev

    c = SMTPClient(r.port)
    assert "ESMTP second" in c.reply().text
    c.quit()
    assert peer_cn(r.port, pki.ca) != before, "the new certificate is not served"
    rs = old.transaction(SENDER, [GOOD_RCPT], b"Subject: old session\r\n\r\nstill here\r\n",
                         ehlo=False)
    assert rs[-1].code == 250, rs
    old.quit()
    assert len(nh.wait_for(1)) == 1


def test_broken_config_keeps_running_one(relay, nexthop, pki):
    nh = nexthop()
    cfg = gateway(nh.port, pki=pki, banner="ESMTP kept")
    r = relay(cfg)
    r.ini.write_text(r.ini.read_text() + "\n[listener:in]\nmode = nonsense\n")
    ev = reload(r, 0)
    assert ev["result"] == "failure" and "errors" in ev["error"], ev
    assert ":" in r.stderr() and "bad mode" in r.stderr()

    good = dict(r.sections["listener:in"])
    r.sections["listener:in"].update(tls_key=str(pki.dir / "missing.key"))
    write_ini(r.ini, r.sections)
    ev = reload(r, 1)
    assert ev["result"] == "failure" and "missing.key" in ev["error"], ev

    r.sections["listener:in"] = dict(good, listen="127.0.0.1:1")
    write_ini(r.ini, r.sections)
    ev = reload(r, 2)
    assert ev["result"] == "failure" and "restart" in ev["error"], ev

    c = SMTPClient(r.port)
    assert "ESMTP kept" in c.reply().text
    assert c.ehlo().code == 250
    rs = c.transaction(SENDER, [GOOD_RCPT], b"Subject: after failed reloads\r\n\r\nok\r\n",
                       ehlo=False)
    assert rs[-1].code == 250, rs
    c.quit()
