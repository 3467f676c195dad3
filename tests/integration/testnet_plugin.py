"""pytest fixture around testnet.TestNet (destinations + signed DNS on loopback).

In tests/integration/conftest.py:

    from testnet_plugin import testnet  # noqa: F401

In a test (with the conftest `relay` factory):

    def test_x(testnet, relay):
        r = relay(testnet.relay_config(default_level="verify"))
        ... RCPT TO:<someone@good.secure.test> on r.port ...
        assert testnet.messages("good", rcpt="someone@good.secure.test")

One TestNet per session, shared by every module that imports the fixture
(servers keep running between tests: use a unique recipient per test and filter
with rcpt=).  Skipped, saying why, when nsd / the ldns tools / openssl /
faketime are missing.  Everything is stopped by PID when the last user is done.
"""

import shutil

import pytest

from dns_fixture_plugin import TOOLS as DNS_TOOLS
from testnet import TestNet

TOOLS = tuple(DNS_TOOLS) + ("openssl", "faketime")

# Imported both by conftest and by a test module, pytest sees two fixture
# definitions; they share this one instance (reference-counted).
_shared = {"tn": None, "users": 0}


@pytest.fixture(scope="session")
def testnet(tmp_path_factory):
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        pytest.skip("test internet needs %s (apt-get install nsd ldnsutils openssl "
                    "faketime)" % ", ".join(missing))
    if _shared["tn"] is None:
        _shared["tn"] = TestNet(tmp_path_factory.mktemp("testnet")).start()
    _shared["users"] += 1
    try:
        yield _shared["tn"]
    finally:
        _shared["users"] -= 1
        if _shared["users"] == 0:
            tn, _shared["tn"] = _shared["tn"], None
            tn.stop()
