"""policy/resolver.c against the signed nsd fixture, through build/asan/dnsprobe.

Every probe run is under ASan/LSan: a leak, a use-after-free or a callback
after cancel makes the probe exit non-zero, and every test checks that.
"""

import json
import os
import socket
import subprocess
import time

import pytest

from dns_fixture_plugin import dns_factory, dns_module_factory  # noqa: F401

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PROBE = os.environ.get("DNSPROBE_BIN",
                       os.path.join(ROOT, "build", "asan", "dnsprobe"))

HASH = "0123456789abcdef" * 4                        # 32 bytes, SHA2-256 size
FULL = "30820122300d06092a864886f70d01010105000382010f00" + "ab" * 270
MANY = 70                                            # > DNS_MAX_RECORDS (64)

RECORDS = {
    "secure.test.": [
        "@ MX 10 mx1", "@ MX 20 MX2",
        "mx1 A 127.0.0.21", "mx1 AAAA 2001:db8::21", "mx2 A 127.0.0.22",
        "www CNAME alias", "alias CNAME mx1", "dangling CNAME nothere",
        "_25._tcp.mx1 TLSA 3 1 1 " + HASH,
        "_25._tcp.mx1 TLSA 2 0 0 " + FULL,
        '_mta-sts TXT "v=STSv1; " "id=20240101T000000"',
        'two TXT "first"', 'two TXT "sec" "ond"',
    ] + ["many A 127.0.1.%d" % i for i in range(MANY)],
    "insecure.test.": ["@ MX 10 mx", "mx A 127.0.0.31",
                       "_25._tcp.mx TLSA 3 1 1 " + HASH],
    "bogus.test.": ["@ MX 10 mx", "mx A 127.0.0.41",
                    "_25._tcp.mx TLSA 3 1 1 " + HASH],
}


@pytest.fixture(scope="module")
def fx(dns_module_factory):
    if not os.access(PROBE, os.X_OK):
        pytest.skip("%s not built: run `make build/asan/dnsprobe`" % PROBE)
    return dns_module_factory(RECORDS)


def probe(args, conf=None, timeout=60):
    """Run dnsprobe; assert it exited 0 with a sanitizer-clean stderr;
    return its JSON lines."""
    cmd = [PROBE] + (["--conf", conf] if conf else []) + list(args)
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:halt_on_error=1",
               UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1")
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                       env=env)
    assert "Sanitizer" not in p.stderr, p.stderr
    assert p.returncode == 0, "%s: rc %d\n%s\n%s" % (cmd, p.returncode,
                                                     p.stdout, p.stderr)
    return [json.loads(line) for line in p.stdout.splitlines()]


def one(fx, name, rrtype, *extra):
    out = probe(list(extra) + [name, rrtype], fx.unbound_conf)
    assert len(out) == 1, out
    a = out[0]
    assert a["early"] is False, "callback ran inside resolver_query()"
    return a


def test_secure_mx_and_addresses(fx):
    a = one(fx, "secure.test", "MX")
    assert (a["sec"], a["status"], a["rcode"]) == ("secure", "ok", 0), a
    assert a["has_ta"] is True
    assert sorted((r["pref"], r["host"]) for r in a["records"]) == [
        (10, "mx1.secure.test"), (20, "mx2.secure.test")]
    assert a["ttl"] == 300
    a = one(fx, "MX1.Secure.Test.", "A")
    assert (a["sec"], a["status"]) == ("secure", "ok"), a
    assert a["canon"] == "mx1.secure.test"
    assert [(r["family"], r["addr"]) for r in a["records"]] == [
        (socket.AF_INET, "127.0.0.21")]
    a = one(fx, "mx1.secure.test", "AAAA")
    assert a["sec"] == "secure"
    assert [(r["family"], r["addr"]) for r in a["records"]] == [
        (socket.AF_INET6, "2001:db8::21")]


def test_insecure_zone_is_insecure(fx):
    for name, rrtype in (("insecure.test", "MX"), ("mx.insecure.test", "A"),
                         ("_25._tcp.mx.insecure.test", "TLSA")):
        a = one(fx, name, rrtype)
        assert (a["sec"], a["status"]) == ("insecure", "ok"), a
        assert len(a["records"]) == 1


def test_bogus_is_fail_never_data_or_nodata(fx):
    # RFC 7672 §2.1: a bogus answer is a lookup failure, not "no record".
    for name, rrtype in (("bogus.test", "MX"), ("mx.bogus.test", "A"),
                         ("_25._tcp.mx.bogus.test", "TLSA"),
                         ("mx.bogus.test", "AAAA"),       # would be NODATA
                         ("nothere.bogus.test", "A")):    # would be NXDOMAIN
        a = one(fx, name, rrtype)
        assert a["sec"] == "bogus", a
        assert a["status"] == "fail", a
        assert a["records"] == [] and a["rcode"] == 2, a
        assert "expired" in a["why"], a


def test_nxdomain_secure(fx):
    a = one(fx, "nothere.secure.test", "A")
    assert (a["sec"], a["status"], a["rcode"]) == ("secure", "nxdomain", 3), a
    assert a["records"] == []
    assert a["ttl"] == 60          # min(SOA TTL 300, SOA MINIMUM 60)


def test_nodata_secure(fx):
    for name, rrtype, status, rcode in (
            ("mx2.secure.test", "AAAA", "nodata", 0),
            ("secure.test", "TLSA", "nodata", 0),
            ("_25._tcp.mx2.secure.test", "TLSA", "nxdomain", 3)):
        a = one(fx, name, rrtype)
        assert (a["sec"], a["status"], a["rcode"]) == (
            "secure", status, rcode), a
        assert a["records"] == [] and a["ttl"] == 60, a


def test_cname_chain_followed(fx):
    a = one(fx, "www.secure.test", "A")
    assert (a["sec"], a["status"]) == ("secure", "ok"), a
    assert a["canon"] == "mx1.secure.test"
    assert [r["addr"] for r in a["records"]] == ["127.0.0.21"]
    a = one(fx, "www.secure.test", "CNAME")       # not followed for CNAME
    assert a["canon"] == "www.secure.test"
    assert [r["target"] for r in a["records"]] == ["alias.secure.test"]
    a = one(fx, "dangling.secure.test", "A")
    assert (a["sec"], a["status"]) == ("secure", "nxdomain"), a
    assert a["canon"] == "nothere.secure.test"


def test_tlsa_parsed(fx):
    a = one(fx, "_25._tcp.mx1.secure.test", "TLSA")
    assert (a["sec"], a["status"]) == ("secure", "ok"), a
    got = sorted((r["usage"], r["selector"], r["mtype"], r["len"], r["text"])
                 for r in a["records"])
    assert got == [(2, 0, 0, len(FULL) // 2, "2 0 0 " + FULL),
                   (3, 1, 1, 32, "3 1 1 " + HASH)]


def test_txt_strings_concatenated(fx):
    a = one(fx, "_mta-sts.secure.test", "TXT")
    assert (a["sec"], a["status"]) == ("secure", "ok"), a
    assert [r["text"] for r in a["records"]] == ["v=STSv1; id=20240101T000000"]
    a = one(fx, "two.secure.test", "TXT")
    assert sorted(r["text"] for r in a["records"]) == ["first", "second"]


def test_records_bounded(fx):
    a = one(fx, "many.secure.test", "A")
    assert (a["sec"], a["status"]) == ("secure", "ok"), a
    assert len(a["records"]) == 64 and a["truncated"] is True


def test_cache_hit_delivered_after_return(fx):
    # --warm: the printed round is answered from libunbound's cache, whose
    # callback fires inside ub_resolve_event(); it must still be deferred.
    out = probe(["--warm", "secure.test", "MX", "mx1.secure.test", "A"],
                fx.unbound_conf)
    assert len(out) == 2
    assert all(a["early"] is False and a["status"] == "ok" for a in out), out


@pytest.mark.parametrize("warm", [False, True], ids=["network", "cached"])
def test_cancel_no_callback_no_leak(fx, warm):
    args = (["--warm"] if warm else []) + ["--cancel", "--wait", "2000",
                                          "secure.test", "MX",
                                          "bogus.test", "MX"]
    t0 = time.monotonic()
    out = probe(args, fx.unbound_conf)
    assert out == [{"cancelled": 2, "callbacks": 0}]
    assert time.monotonic() - t0 >= 2.0    # the loop ran while answers came


def test_free_with_queries_in_flight(fx):
    out = probe(["--free-pending", "secure.test", "MX", "mx.bogus.test", "A"],
                fx.unbound_conf)
    assert out == [{"freed": 2, "callbacks": 0}]


def _unused_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dead_server_fails_within_timeout(fx, tmp_path):
    closed = fx.write_unbound_conf(str(tmp_path / "closed.conf"),
                                   port=_unused_port())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as hole:
        hole.bind(("127.0.0.1", 0))          # bound, never answers
        silent = fx.write_unbound_conf(str(tmp_path / "silent.conf"),
                                       port=hole.getsockname()[1])
        for conf in (closed, silent):
            t0 = time.monotonic()
            out = probe(["--timeout", "1500", "secure.test", "MX"], conf)
            took = time.monotonic() - t0
            assert len(out) == 1
            a = out[0]
            assert a["status"] == "fail" and a["records"] == [], a
            assert a["sec"] != "secure"
            assert 1.4 <= a["elapsed_ms"] / 1000.0 <= 3.0, a
            assert took < 10, took


def test_trust_anchor_detection(fx, tmp_path):
    noanchor = fx.write_unbound_conf(str(tmp_path / "noanchor.conf"),
                                     anchor=False)
    a = probe(["secure.test", "MX"], noanchor)[0]
    assert a["has_ta"] is False
    assert (a["sec"], a["status"]) == ("insecure", "ok"), a
    # the anchor given as trust_anchor_file instead of in unbound.conf
    a = probe(["--ta", fx.trust_anchor, "secure.test", "MX"], noanchor)[0]
    assert a["has_ta"] is True and a["sec"] == "secure", a
    # an inline trust-anchor: in unbound.conf counts too
    with open(fx.trust_anchor) as f:
        dnskey = " ".join(f.read().split())
    inline = fx.write_unbound_conf(
        str(tmp_path / "inline.conf"), anchor=False,
        extra_server_lines=['trust-anchor: "%s"' % dnskey])
    a = probe(["secure.test", "MX"], inline)[0]
    assert a["has_ta"] is True and a["sec"] == "secure", a
    # an anchor without the validator module validates nothing
    noval = fx.write_unbound_conf(
        str(tmp_path / "noval.conf"),
        extra_server_lines=['module-config: "iterator"'])
    a = probe(["secure.test", "MX"], noval)[0]
    assert a["has_ta"] is False and a["sec"] == "insecure", a
    # an unreadable anchor is a start-up error, not a silent "insecure"
    p = subprocess.run([PROBE, "--conf", noanchor, "--ta",
                        str(tmp_path / "missing.key"), "secure.test", "MX"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 1, p
    assert "error" in json.loads(p.stdout.splitlines()[0])


def test_forwarder_list(fx, tmp_path):
    conf = fx.write_unbound_conf(str(tmp_path / "fwd.conf"), stubs=False)
    fwd = "127.0.0.1@%d, 127.0.0.1@%d" % (fx.port, fx.port)
    a = probe(["--fwd", fwd, "secure.test", "MX"], conf)[0]
    assert (a["sec"], a["status"]) == ("secure", "ok"), a
    p = subprocess.run([PROBE, "--conf", conf, "--fwd", "not-an-ip",
                        "secure.test", "MX"], capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 1 and "not-an-ip" in p.stdout, p


def test_update_changes_records(dns_factory):
    if not os.access(PROBE, os.X_OK):
        pytest.skip("%s not built: run `make build/asan/dnsprobe`" % PROBE)
    f = dns_factory({"secure.test.": ["mx1 A 127.0.0.21"]})
    a = one(f, "mx1.secure.test", "A")
    assert [r["addr"] for r in a["records"]] == ["127.0.0.21"]
    pid = f.proc.pid
    f.update({"secure.test.": ["mx1 A 127.0.0.99"]})
    assert f.proc.pid != pid
    a = one(f, "mx1.secure.test", "A")
    assert a["sec"] == "secure"
    assert [r["addr"] for r in a["records"]] == ["127.0.0.99"]
    f.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_default_root_anchor_and_local_zone(fx):
    # No unbound_conf, no trust_anchor_file: Debian's root.key is the anchor.
    # "localhost" is answered by unbound's built-in local zone, inside
    # ub_resolve_event(): no packet leaves the host, and it must still be
    # delivered after resolver_query() returned.
    if not os.access("/usr/share/dns/root.key", os.R_OK):
        pytest.skip("/usr/share/dns/root.key missing (dns-root-data)")
    a = probe(["localhost", "A"])[0]
    assert a["has_ta"] is True and a["early"] is False, a
    assert (a["status"], [r["addr"] for r in a["records"]]) == (
        "ok", ["127.0.0.1"]), a
