"""smtpclient.py - a socket-level SMTP client for precise protocol tests.

Sends exactly the bytes it is given (no dot-stuffing, no line-ending fixes) and
reads replies with multi-line handling.  STARTTLS wraps the existing socket;
bytes already buffered from before the handshake are kept visible
(`pending`) so a test can tell whether the server answered pipelined commands
in plaintext.
"""

import re
import socket
import ssl

REPLY_LINE = re.compile(rb"^([2-5][0-9][0-9])([ -])(.*)$", re.S)


class Reply:
    def __init__(self, code, lines):
        self.code = code            # int
        self.lines = lines          # text after "NNN-"/"NNN ", one per line (str)

    @property
    def text(self):
        return "\n".join(self.lines)

    @property
    def first(self):
        """The first line as sent: 'NNN text'."""
        return "%d %s" % (self.code, self.lines[0] if self.lines else "")

    def __str__(self):
        return "\n".join("%d%s%s" % (self.code, "-" if i < len(self.lines) - 1 else " ", l)
                         for i, l in enumerate(self.lines))

    __repr__ = __str__


class ProtocolError(AssertionError):
    pass


class SMTPClient:
    def __init__(self, port, host="127.0.0.1", timeout=10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.timeout = timeout
        self.buf = b""
        self.tls = False

    # -- sending --------------------------------------------------------
    def send(self, data):
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogateescape")
        self.sock.sendall(data)

    def cmd(self, line, timeout=None):
        """Send one command line (CRLF added) and read its reply."""
        if isinstance(line, str):
            line = line.encode("utf-8", "surrogateescape")
        self.send(line + b"\r\n")
        return self.reply(timeout)

    # -- reading ---------------------------------------------------------
    def _fill(self, timeout):
        self.sock.settimeout(timeout if timeout is not None else self.timeout)
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("connection closed by peer; unparsed: %r" % self.buf)
        self.buf += chunk

    def readline(self, timeout=None):
        while b"\r\n" not in self.buf:
            if len(self.buf) > 65536:
                raise ProtocolError("reply line too long: %r" % self.buf[:200])
            self._fill(timeout)
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def reply(self, timeout=None):
        """Read one complete (possibly multi-line) reply."""
        lines = []
        code = None
        while True:
            raw = self.readline(timeout)
            m = REPLY_LINE.match(raw) or (re.match(rb"^([2-5][0-9][0-9])()$", raw))
            if not m:
                raise ProtocolError("not a reply line: %r" % raw)
            c = int(m.group(1))
            if code is not None and c != code:
                raise ProtocolError("code changed inside a reply: %r" % raw)
            code = c
            lines.append(m.group(3).decode("utf-8", "replace"))
            if m.group(2) != b"-":
                return Reply(code, lines)

    def replies(self, n, timeout=None):
        return [self.reply(timeout) for _ in range(n)]

    @property
    def pending(self):
        return self.buf

    def closed_by_peer(self, timeout=5.0):
        """True when the server closes the connection (EOF or reset) within timeout
        without sending anything more."""
        if self.buf:
            return False
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(4096)
        except (ConnectionResetError, ssl.SSLError, BrokenPipeError):
            return True
        except socket.timeout:
            return False
        if data:
            self.buf += data
            return False
        return True

    # -- session helpers -------------------------------------------------
    def banner(self):
        return self.reply()

    def ehlo(self, name="client.test"):
        return self.cmd("EHLO " + name)

    def starttls(self, cafile, server_hostname="relay.test"):
        """STARTTLS, check 220, and handshake on the same socket (verifying the
        certificate against cafile).  Returns the 220 reply."""
        r = self.cmd("STARTTLS")
        if r.code != 220:
            return r
        self.handshake(cafile, server_hostname)
        return r

    def handshake(self, cafile, server_hostname="relay.test"):
        if self.buf:
            raise ProtocolError("server sent plaintext after 220 to STARTTLS: %r" % self.buf)
        ctx = ssl.create_default_context(cafile=cafile)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        self.sock.settimeout(self.timeout)
        self.sock = ctx.wrap_socket(self.sock, server_hostname=server_hostname)
        self.tls = True

    def transaction(self, mail_from, rcpts, body, ehlo=True):
        """A full transaction with a body that is already dot-stuffed and CRLF
        terminated.  Returns the list of replies (MAIL, RCPT..., DATA[, dot])."""
        out = [self.cmd("MAIL FROM:<%s>" % mail_from)]
        for r in rcpts:
            out.append(self.cmd("RCPT TO:<%s>" % r))
        d = self.cmd("DATA")
        out.append(d)
        if d.code == 354:
            self.send(body + b".\r\n")
            out.append(self.reply())
        return out

    def quit(self):
        try:
            r = self.cmd("QUIT")
        except (EOFError, OSError):
            r = None
        self.close()
        return r

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def dot_stuff(body):
    """RFC 5321 4.5.2 transparency for a CRLF body (bytes)."""
    lines = body.split(b"\r\n")
    return b"\r\n".join((b"." + l) if l.startswith(b".") else l for l in lines)
