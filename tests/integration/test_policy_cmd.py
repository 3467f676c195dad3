"""tlsrelay policy DOMAIN: the operator's view of what would be enforced.

Runs the real binary against the loopback test internet (testnet.py: signed
DNS zones, destination servers) and checks what it prints and its exit
status: 0 when some MX host may be used, 1 when mail would be deferred or
refused, 2 on usage errors.
"""

import subprocess

from harness import write_ini


def policy(relay_bin, tmp_path, testnet, domain, **kw):
    cfg = testnet.relay_config(**kw)
    cfg.setdefault("relay", {})["state_dir"] = str(tmp_path / "state")
    cfg["listener:out"]["listen"] = "127.0.0.1:1"
    ini = tmp_path / "relay.ini"
    write_ini(ini, cfg)
    p = subprocess.run([str(relay_bin), "policy", "-c", str(ini), domain],
                       capture_output=True, text=True, timeout=60)
    assert "AddressSanitizer" not in p.stderr and "runtime error" not in p.stderr, p.stderr
    return p


def test_static_default(relay_bin, tmp_path, testnet):
    p = policy(relay_bin, tmp_path, testnet, "good.secure.test")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "static level: may (default)" in p.stdout
    assert "MX RRset: DNSSEC-secure" in p.stdout
    assert "MX 10 mx.good.secure.test: 1 address(es), DNSSEC-secure" in p.stdout
    assert "-> level may" in p.stdout


def test_whitelist_and_domain_level(relay_bin, tmp_path, testnet):
    p = policy(relay_bin, tmp_path, testnet, "wl-good.secure.test",
               whitelist=["wl-good.secure.test"])
    assert "static level: verify (whitelist), whitelisted" in p.stdout, p.stdout
    assert "-> level verify" in p.stdout
    p = policy(relay_bin, tmp_path, testnet, "good.secure.test",
               domains={"good.secure.test": "encrypt"})
    assert "static level: encrypt (domain)" in p.stdout, p.stdout


def test_null_mx_and_bogus(relay_bin, tmp_path, testnet):
    p = policy(relay_bin, tmp_path, testnet, "nullmx.secure.test")
    assert p.returncode == 1 and "MX lookup: null-mx" in p.stdout, p.stdout
    p = policy(relay_bin, tmp_path, testnet, "mail.bogus.test")
    assert p.returncode == 1 and "MX lookup: bogus" in p.stdout, p.stdout


def test_dane_only_without_tlsa_is_refused(relay_bin, tmp_path, testnet):
    p = policy(relay_bin, tmp_path, testnet, "good.secure.test",
               domains={"good.secure.test": "dane-only"})
    assert p.returncode == 1, p.stdout
    assert "-> not used: dane-required" in p.stdout


def test_usage_errors(relay_bin, tmp_path):
    p = subprocess.run([str(relay_bin), "policy"], capture_output=True, text=True)
    assert p.returncode == 2 and "usage: tlsrelay policy" in p.stderr
    p = subprocess.run([str(relay_bin), "policy", "-c", str(tmp_path / "none.ini"), "x.test"],
                       capture_output=True, text=True)
    assert p.returncode == 2 and "cannot open" in p.stderr
