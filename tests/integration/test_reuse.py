"""Next-hop connection reuse across client sessions (the connection cache)
and TLS session resumption on the client side (issue 8, "Make it fast").

Both are keyed by the target and its whole TLS policy, so a reused
connection or a resumed session never crosses policies."""

import time

from smtpclient import SMTPClient
from test_foundation import GOOD_RCPT, SENDER, gateway


def one_message(port, i):
    c = SMTPClient(port)
    c.reply()
    c.ehlo()
    rs = c.transaction(SENDER, [GOOD_RCPT], b"Subject: r%d\r\n\r\nbody\r\n" % i, ehlo=False)
    c.quit()
    return rs[-1].code


def deliveries(r):
    return [e for e in r.events() if e["event"] == "delivery"]


def test_idle_connection_reused_by_next_session(relay, nexthop, pki):
    nh = nexthop(tls_cert=pki.leaf("nexthop")[0], tls_key=pki.leaf("nexthop")[1])
    r = relay(gateway(nh.port, next_hop_tls="verify", next_hop_tls_name="localhost",
                      outbound={"ca_file": pki.ca}))
    assert [one_message(r.port, i) for i in range(3)] == [250, 250, 250]
    assert len(nh.wait_for(3)) == 3
    assert nh.handler.sessions == 2, "EHLOs at the next hop (1 before + 1 after STARTTLS)"
    ev = deliveries(r)
    assert [e["connection_reused"] for e in ev] == [False, True, True], ev
    assert all(e["tls_version"].startswith("TLSv1.") for e in ev)


def test_no_reuse_across_policies(relay, nexthop, pki):
    """Two listeners to the same next hop with different TLS levels never
    share a connection."""
    nh = nexthop(tls_cert=pki.leaf("nexthop")[0], tls_key=pki.leaf("nexthop")[1])
    cfg = gateway(nh.port, next_hop_tls="encrypt")
    cfg["listener:other"] = dict(cfg["listener:in"], next_hop_tls="may", listen="127.0.0.1:0")
    from harness import free_port
    cfg["listener:other"]["listen"] = "127.0.0.1:%d" % free_port()
    r = relay(cfg)
    assert one_message(r.ports["in"], 1) == 250
    assert one_message(r.ports["other"], 2) == 250
    ev = deliveries(r)
    assert [e["connection_reused"] for e in ev] == [False, False], ev
    assert [e["policy_level"] for e in ev] == ["encrypt", "may"]


def test_tls_session_resumed_after_idle_close(relay, nexthop, pki):
    nh = nexthop(tls_cert=pki.leaf("nexthop")[0], tls_key=pki.leaf("nexthop")[1])
    r = relay(gateway(nh.port, next_hop_tls="encrypt"))
    assert one_message(r.port, 1) == 250
    time.sleep(6.5)             # past CONNCACHE_IDLE: the cached connection is closed
    assert one_message(r.port, 2) == 250
    ev = deliveries(r)
    assert [e["connection_reused"] for e in ev] == [False, False], ev
    assert [e.get("tls_resumed") for e in ev] == [False, True], ev
