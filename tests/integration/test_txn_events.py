"""A transaction that used the next hop but never completed DATA (all
recipients refused, RSET, client gone) still gets its delivery event: the
TLS session happened and TLS-RPT counts it."""

from smtpclient import SMTPClient
from test_foundation import SENDER, gateway


def deliveries(r):
    return [e for e in r.events() if e["event"] == "delivery"]


def test_all_recipients_refused(relay, nexthop, pki):
    nh = nexthop(tls_cert=pki.leaf("nexthop")[0], tls_key=pki.leaf("nexthop")[1])
    r = relay(gateway(nh.port, next_hop_tls="encrypt"))
    c = SMTPClient(r.port)
    c.reply()
    c.ehlo()
    assert c.cmd("MAIL FROM:<%s>" % SENDER).code == 250
    assert c.cmd("RCPT TO:<reject.me@example.org>").code == 550
    c.quit()
    r.stop()
    ev = deliveries(r)
    assert len(ev) == 1, ev
    assert ev[0]["outcome"] == "rejected" and ev[0]["code"] == 550, ev
    assert ev[0]["result"] == "success" and ev[0]["tls_version"].startswith("TLSv1."), ev


def test_rset_after_accepted_recipient(relay, nexthop):
    nh = nexthop()
    r = relay(gateway(nh.port))
    c = SMTPClient(r.port)
    c.reply()
    c.ehlo()
    assert c.cmd("MAIL FROM:<%s>" % SENDER).code == 250
    assert c.cmd("RCPT TO:<a@example.org>").code == 250
    assert c.cmd("RSET").code == 250
    ev = deliveries(r)
    assert len(ev) == 1 and ev[0]["outcome"] == "deferred", ev
    c.quit()
    r.stop()
    assert len(deliveries(r)) == 1, "the RSET transaction was counted twice"
    assert nh.messages == []
