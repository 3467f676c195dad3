#!/usr/bin/python3
"""smtpserver.py - the next hop the relay talks to in integration tests.

An aiosmtpd server on 127.0.0.1 that records every transaction: envelope
sender, recipients, the DATA content exactly as received after the SMTP
transparency dots are removed (decode_data=False, so bytes), the EHLO/HELO name
the client gave, whether TLS was active and the client's address.

Behaviour, for the tests:
  * RCPT whose local part starts with "reject" -> 550 5.1.1 User unknown
  * the reply to the final dot is configurable (data_reply)
  * slow=N delays every reply to EHLO/HELO/MAIL/RCPT/DATA-end by N seconds
  * optional STARTTLS (tls_cert + tls_key) and require_starttls

In-process:   with NextHop(port) as nh: ...; nh.messages
As a process: /usr/bin/python3 smtpserver.py --port P --record DIR [--tls-cert C
              --tls-key K] [--require-starttls] [--data-reply '250 ...'] [--slow S]
              Each message becomes DIR/NNNNNN.json (envelope, metadata, content
              as hex) written atomically, so a test can kill the process and
              still read what arrived.
"""

import argparse
import asyncio
import json
import os
import signal
import ssl
import sys
import threading
import time
from dataclasses import dataclass, field, asdict

from aiosmtpd.controller import Controller

DEFAULT_DATA_REPLY = "250 2.0.0 Ok: queued by nexthop"


TRACE_FIELDS = (b"received:", b"x-tls-policy:")


def split_trace(raw):
    """(trace, rest): the header fields tlsrelay prepends - one Received: whose
    first line names "(tlsrelay)" and, on a gateway, the X-TLS-Policy: after it
    - and the bytes the client sent.  Other content is left as it is."""
    lines = raw.split(b"\r\n")
    if not lines or not lines[0].lower().startswith(b"received:"):
        return b"", raw
    i, seen = 0, []
    while i < len(lines) and len(seen) < 2:
        low = lines[i].lower()
        name = next((f for f in TRACE_FIELDS if low.startswith(f)), None)
        if name is None or name in seen:
            break
        seen.append(name)
        i += 1
        while i < len(lines) and lines[i][:1] in (b" ", b"\t"):
            i += 1
    trace = b"\r\n".join(lines[:i]) + b"\r\n"
    if b"(tlsrelay)" not in trace:
        return b"", raw
    return trace, b"\r\n".join(lines[i:])


@dataclass
class Message:
    mail_from: str
    rcpt_tos: list
    raw: bytes          # what arrived, the relay's trace header fields included
    ehlo: str
    tls: bool
    peer: list = field(default_factory=list)
    mail_options: list = field(default_factory=list)

    @property
    def trace(self):
        """The Received:/X-TLS-Policy: fields tlsrelay added (b"" if none)."""
        return split_trace(self.raw)[0]

    @property
    def content(self):
        """What the client sent: raw without the relay's trace fields."""
        return split_trace(self.raw)[1]

    def to_json(self):
        d = asdict(self)
        d["raw"] = self.raw.hex()
        return json.dumps(d)

    @classmethod
    def from_json(cls, text):
        d = json.loads(text)
        d["raw"] = bytes.fromhex(d.pop("raw", d.pop("content", "")))
        return cls(**d)


class Recorder:
    """aiosmtpd handler: the behaviour described above."""

    def __init__(self, data_reply=DEFAULT_DATA_REPLY, slow=0.0, record_dir=None):
        self.data_reply = data_reply
        self.slow = slow
        self.record_dir = record_dir
        self.messages = []
        self.sessions = 0       # EHLO/HELO commands seen
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)

    async def _delay(self):
        if self.slow:
            await asyncio.sleep(self.slow)

    async def handle_HELO(self, server, session, envelope, hostname):
        await self._delay()
        session.host_name = hostname
        with self.lock:
            self.sessions += 1
        return "250 {}".format(server.hostname)

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        await self._delay()
        session.host_name = hostname
        with self.lock:
            self.sessions += 1
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        await self._delay()
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        await self._delay()
        local = address.rsplit("@", 1)[0]
        if local.lower().startswith("reject"):
            return "550 5.1.1 User unknown"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server, session, envelope):
        await self._delay()
        msg = Message(
            mail_from=envelope.mail_from,
            rcpt_tos=list(envelope.rcpt_tos),
            raw=bytes(envelope.original_content),
            ehlo=session.host_name or "",
            tls=session.ssl is not None,
            peer=list(session.peer[:2]) if session.peer else [],
            mail_options=list(envelope.mail_options),
        )
        if self.data_reply.startswith("2"):
            self._record(msg)
        return self.data_reply

    def _record(self, msg):
        with self.cond:
            self.messages.append(msg)
            n = len(self.messages)
            if self.record_dir:
                path = os.path.join(self.record_dir, "%06d.json" % n)
                with open(path + ".tmp", "w") as f:
                    f.write(msg.to_json())
                    f.flush()
                    os.fsync(f.fileno())
                os.rename(path + ".tmp", path)
            self.cond.notify_all()

    def wait_for(self, n, timeout=10.0):
        """Block until at least n messages arrived; return the list."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.messages) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            return list(self.messages)


def server_tls_context(cert, key):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


class NextHop:
    """The recorder running in a background thread of the test process."""

    def __init__(self, port, tls_cert=None, tls_key=None, require_starttls=False,
                 data_reply=DEFAULT_DATA_REPLY, slow=0.0, record_dir=None,
                 hostname="nexthop.test"):
        self.port = port
        self.handler = Recorder(data_reply=data_reply, slow=slow, record_dir=record_dir)
        kw = {}
        if tls_cert:
            kw["tls_context"] = server_tls_context(tls_cert, tls_key)
            kw["require_starttls"] = require_starttls
        self.controller = Controller(
            self.handler, hostname="127.0.0.1", port=port, decode_data=False,
            server_hostname=hostname, ready_timeout=10.0, **kw)

    @property
    def messages(self):
        with self.handler.lock:
            return list(self.handler.messages)

    def wait_for(self, n, timeout=10.0):
        return self.handler.wait_for(n, timeout)

    def start(self):
        self.controller.start()
        return self

    def stop(self):
        self.controller.stop()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def read_records(record_dir):
    """The messages a separate-process next hop wrote, in arrival order."""
    out = []
    for name in sorted(os.listdir(record_dir)):
        if name.endswith(".json"):
            with open(os.path.join(record_dir, name)) as f:
                out.append(Message.from_json(f.read()))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--record", required=True, help="directory for received messages")
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    ap.add_argument("--require-starttls", action="store_true")
    ap.add_argument("--data-reply", default=DEFAULT_DATA_REPLY)
    ap.add_argument("--slow", type=float, default=0.0)
    a = ap.parse_args(argv)
    os.makedirs(a.record, exist_ok=True)
    nh = NextHop(a.port, tls_cert=a.tls_cert, tls_key=a.tls_key,
                 require_starttls=a.require_starttls, data_reply=a.data_reply,
                 slow=a.slow, record_dir=a.record)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    nh.start()
    print("ready", a.port, flush=True)
    while not stop.wait(0.2):
        pass
    nh.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
