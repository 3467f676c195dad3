"""A gateway's next_hop given by name (DESIGN.md: next_hop = host:port) is
resolved through the relay's own resolver (libunbound, [dns]), never the
system resolver; a name that does not resolve gives a 4xx."""

from smtpclient import SMTPClient
from test_foundation import GOOD_RCPT, SENDER, gateway


def send(port):
    c = SMTPClient(port)
    c.reply()
    c.ehlo()
    rs = c.transaction(SENDER, [GOOD_RCPT], b"Subject: by name\r\n\r\nbody\r\n", ehlo=False)
    c.quit()
    return rs


def test_next_hop_by_name(relay, nexthop, dns_factory):
    fx = dns_factory({"secure.test.": ["legacy A 127.0.0.1"]})
    nh = nexthop()
    cfg = gateway(nh.port)
    cfg["listener:in"]["next_hop"] = "legacy.secure.test:%d" % nh.port
    cfg["dns"] = {"unbound_conf": fx.unbound_conf}
    r = relay(cfg)
    assert send(r.port)[-1].code == 250
    assert len(nh.wait_for(1)) == 1
    ev = [e for e in r.events() if e["event"] == "delivery"]
    assert ev[-1]["mx_host"] == "legacy.secure.test" and ev[-1]["receiving_ip"] == "127.0.0.1"


def test_next_hop_name_that_does_not_resolve(relay, nexthop, dns_factory):
    fx = dns_factory({"secure.test.": ["other A 127.0.0.1"]})
    nh = nexthop()
    cfg = gateway(nh.port)
    cfg["listener:in"]["next_hop"] = "missing.secure.test:%d" % nh.port
    cfg["dns"] = {"unbound_conf": fx.unbound_conf}
    r = relay(cfg)
    rs = send(r.port)
    assert rs[1].code == 451, rs
    assert nh.messages == []
