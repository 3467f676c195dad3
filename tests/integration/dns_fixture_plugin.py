"""pytest fixtures around dnsfixture.DnsFixture (signed test. zones on nsd).

In tests/integration/conftest.py:

    from dns_fixture_plugin import dns_factory, dns_module_factory  # noqa: F401

In a test:

    def test_mx(dns_factory):
        fx = dns_factory({"secure.test.": ["@ MX 10 mx1",
                                           "mx1 A 127.0.0.21"]})
        # fx.unbound_conf -> [dns] unbound_conf of relay.ini
        # fx.port, fx.trust_anchor, fx.update(records), fx.stop()

dns_factory(records=None, extra_zones=None) starts one nsd per call on a
free loopback port in the test's tmp_path; all are stopped (by PID) at
teardown.  dns_module_factory is the same with module scope, for tests that
share one zone set.  If nsd or the ldns tools are missing the test is
skipped and says why.
"""

import os
import shutil
import socket

import pytest

from dnsfixture import DnsFixture

TOOLS = ("/usr/sbin/nsd", "ldns-keygen", "ldns-signzone", "ldns-key2ds")


def free_port():
    """A port free for both UDP and TCP on 127.0.0.1 right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free loopback port")


def _require_tools():
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        pytest.skip("DNS fixture needs %s (apt-get install nsd ldnsutils)"
                    % ", ".join(missing))


class _Factory:
    def __init__(self, basedir):
        self.basedir = basedir
        self.started = []

    def __call__(self, records=None, extra_zones=None):
        _require_tools()
        workdir = os.path.join(str(self.basedir), "dns%d" % len(self.started))
        last = None
        for _ in range(3):       # a free port can be taken before nsd binds
            try:
                fx = DnsFixture(workdir, free_port(), records, extra_zones)
            except RuntimeError as e:
                last = e
                shutil.rmtree(workdir, ignore_errors=True)
                continue
            self.started.append(fx)
            return fx
        raise last

    def stop_all(self):
        for fx in self.started:
            fx.stop()


@pytest.fixture
def dns_factory(tmp_path):
    f = _Factory(tmp_path)
    yield f
    f.stop_all()


@pytest.fixture(scope="module")
def dns_module_factory(tmp_path_factory):
    f = _Factory(tmp_path_factory.mktemp("dns"))
    yield f
    f.stop_all()
