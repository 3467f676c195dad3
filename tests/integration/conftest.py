"""Fixtures for the integration tests: the relay, its next hop, certificates.

Run with Debian's interpreter (it has python3-pytest and python3-aiosmtpd):
    make integration
    TLSRELAY_BIN=build/asan/tlsrelay /usr/bin/python3 -m pytest -q tests/integration
"""

import subprocess
from types import SimpleNamespace

import pytest

from harness import REPO, NextHopProcess, Relay, free_port, relay_binary
from smtpserver import NextHop
from dns_fixture_plugin import dns_factory, dns_module_factory  # noqa: F401
from testnet_plugin import testnet  # noqa: F401


def pytest_configure(config):
    # Always say why a test was skipped.
    rc = getattr(config.option, "reportchars", "") or ""
    if "s" not in rc and "a" not in rc and "A" not in rc:
        config.option.reportchars = rc + "s"


@pytest.fixture(scope="session")
def relay_bin():
    b = relay_binary()
    if not b.exists():
        pytest.skip("relay binary %s does not exist (make build/asan/tlsrelay, or set "
                    "TLSRELAY_BIN)" % b)
    return b


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    """Development CA + relay certificate from certs/mkcerts.sh, plus test leaves:
    nexthop (trusted, DNS:localhost IP:127.0.0.1), untrusted (signed by ca2),
    expired, wrongname, selfsigned."""
    d = tmp_path_factory.mktemp("pki")
    script = str(REPO / "certs" / "mkcerts.sh")

    def run(*args):
        r = subprocess.run(["sh", script] + list(args), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
        assert r.returncode == 0, "mkcerts.sh %s failed:\n%s" % (" ".join(args), r.stdout)

    run(str(d))
    san = "DNS:localhost,IP:127.0.0.1"
    run("--leaf", str(d), "nexthop", "localhost", san)
    run("--leaf", str(d), "untrusted", "localhost", san, "--untrusted-ca")
    run("--leaf", str(d), "expired", "localhost", san, "--expired")
    run("--leaf", str(d), "wrongname", "wrong.test", "DNS:wrong.test")
    run("--leaf", str(d), "selfsigned", "localhost", san, "--self-signed")

    def leaf(name):
        return str(d / (name + ".crt")), str(d / (name + ".key"))

    return SimpleNamespace(dir=d, ca=str(d / "ca.crt"), ca_key=str(d / "ca.key"),
                           cert=str(d / "relay.crt"), key=str(d / "relay.key"),
                           ca2=str(d / "ca2.crt"), leaf=leaf)


@pytest.fixture
def nexthop():
    """Factory: nexthop(**NextHop options) -> a started in-process next hop on a
    free port.  All are stopped at teardown."""
    started = []

    def make(**kw):
        port = kw.pop("port", None) or free_port()
        nh = NextHop(port, **kw).start()
        started.append(nh)
        return nh

    yield make
    for nh in started:
        nh.stop()


@pytest.fixture
def nexthop_proc(tmp_path):
    """Factory: nexthop_proc(*smtpserver.py args) -> NextHopProcess started as
    a separate process; stopped by PID at teardown."""
    started = []

    def make(*args, port=None):
        p = NextHopProcess(tmp_path / ("nexthop%d" % len(started)), port=port, args=args)
        started.append(p)
        return p.start()

    yield make
    for p in started:
        p.stop()


@pytest.fixture
def relay(relay_bin, tmp_path):
    """Factory: relay(config_sections) -> a running Relay.  Every relay is
    stopped at teardown with SIGTERM, and must exit 0 without a sanitizer
    report."""
    started = []

    def make(config, start=True):
        r = Relay(relay_bin, tmp_path / ("relay%d" % len(started)), config)
        started.append(r)
        return r.start() if start else r

    yield make
    errors = []
    for r in started:
        try:
            r.stop()
        except BaseException as e:      # pytest.fail raises an OutcomeException
            errors.append("relay in %s: %s" % (r.dir, e))
    if errors:
        pytest.fail("relay teardown:\n" + "\n".join(errors))
