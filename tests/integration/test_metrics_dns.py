"""/metrics on a smarthost: the DNS latency summary counts the resolver's
answered queries (MX, A/AAAA, ...) of real deliveries."""

from harness import free_port
from smtpclient import SMTPClient
from test_siem import scrape, value


def test_dns_latency_counted(testnet, relay):
    port = free_port()
    cfg = testnet.relay_config(relay={"metrics_listen": "127.0.0.1:%d" % port})
    r = relay(cfg)
    samples, types = scrape(port)
    assert types.get("tlsrelay_dns_query_seconds") == "summary", types
    assert value(samples, "tlsrelay_dns_query_seconds_count") == 0
    c = SMTPClient(r.port)
    c.reply()
    c.ehlo()
    rs = c.transaction("a@sender.test", ["u@good.secure.test"], b"Subject: m\r\n\r\nx\r\n",
                       ehlo=False)
    c.quit()
    assert rs[-1].code == 250, rs
    samples, _ = scrape(port)
    assert value(samples, "tlsrelay_dns_query_seconds_count") >= 3   # MX + A + AAAA
    assert 0 <= value(samples, "tlsrelay_dns_query_seconds_sum") < 60
