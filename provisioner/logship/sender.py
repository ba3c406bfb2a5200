"""Sending the spool to the collector over TCP or TLS, in order, and committing only what arrived.

Syslog over TCP (RFC 6587) has no acknowledgement of its own, so "arrived" is what the
collector's TCP stack acknowledged: after each write the sender waits until the socket's send
queue (SIOCOUTQ: bytes not yet acked by the peer) is empty, and only then moves the spool's head.
A connection that breaks before that — the collector stopped, restarted, unreachable — is
reopened (backing off up to MAX_BACKOFF) and the same frames are sent again from the head: the
collector gets every line, in order (one it acked but crashed before writing is the one case
only an application-level protocol such as RELP could cover). Before each write the sender
checks whether the collector closed the connection (a collector never talks on it), so a
restarted collector costs a reconnect, not lost lines; TCP_USER_TIMEOUT bounds how long
unacknowledged data may wait on a silent peer.

tls:// verifies the collector's certificate and name against the system's CAs, or the `ca` file.
"""
from __future__ import annotations

import fcntl
import logging
import select
import socket
import struct
import threading
import time

from .spool import Spool

log = logging.getLogger(__name__)
SIOCOUTQ = 0x5411          # TIOCOUTQ on Linux: unacknowledged bytes of a TCP socket
MAX_BACKOFF = 2.0
USER_TIMEOUT_MS = 20_000


class Sender:
    def __init__(self, spool: Spool, scheme: str, host: str, port: int, *, ca: str | None = None,
                 timeout: float = 10.0, ack_timeout: float = 30.0, batch: int = 1 << 16):
        self.spool, self.scheme, self.host, self.port, self.ca = spool, scheme, host, port, ca
        self.timeout, self.ack_timeout, self.batch = timeout, ack_timeout, batch
        self.sock: socket.socket | None = None
        self.connected = False
        self.reconnects = 0
        self.wake = threading.Event()
        self._backoff = 0.0
        self._failing_since: float | None = None

    # -- the connection ----------------------------------------------------------------------------
    def _connect(self) -> None:
        raw = socket.create_connection((self.host, self.port), timeout=self.timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if hasattr(socket, "TCP_USER_TIMEOUT"):
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, USER_TIMEOUT_MS)
        sock = raw
        if self.scheme == "tls":
            import ssl   # only when asked for: it costs the agent memory

            ctx = ssl.create_default_context(cafile=self.ca)
            try:
                sock = ctx.wrap_socket(raw, server_hostname=self.host)
            except BaseException:
                raw.close()
                raise
        sock.settimeout(self.ack_timeout)
        self.sock, self.connected = sock, True   # (wrap_socket took over raw's descriptor)
        self.reconnects += 1

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None
        self.connected = False

    def _peer_closed(self) -> bool:
        """The collector closed (or reset) the connection: it never sends us anything else."""
        readable, _, _ = select.select([self.sock], [], [], 0)
        if not readable:
            return False
        self.sock.setblocking(False)
        try:
            return self.sock.recv(4096) == b""   # a TLS session ticket is consumed and is no sign of closing
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            if self.scheme == "tls":
                import ssl   # loaded already: the connection is TLS

                if isinstance(exc, ssl.SSLWantReadError):
                    return False   # part of a TLS record arrived, nothing to decrypt yet: still open
            return True
        finally:
            if self.sock is not None:
                self.sock.settimeout(self.ack_timeout)

    def _unacked(self) -> int:
        buf = fcntl.ioctl(self.sock.fileno(), SIOCOUTQ, b"\0\0\0\0")
        return struct.unpack("i", buf)[0]

    def _wait_acked(self) -> None:
        deadline = time.monotonic() + self.ack_timeout
        pause = 0.001
        while self._unacked() > 0:
            if self._peer_closed():
                raise ConnectionResetError("the collector closed the connection before acknowledging")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the collector acknowledged nothing for {self.ack_timeout:g}s")
            time.sleep(pause)
            pause = min(pause * 2, 0.05)

    # -- the loop ----------------------------------------------------------------------------------
    def send_once(self) -> int:
        """Sends what the spool holds from its head, up to one batch; returns the bytes delivered
        (0: nothing to send). Raises OSError when the collector cannot take it."""
        data, pos = self.spool.peek(self.batch)
        if not data:
            return 0
        if self.sock is None or self._peer_closed():
            self.close()
            self._connect()
        self.sock.sendall(data)
        self._wait_acked()
        self.spool.commit(pos, len(data))
        return len(data)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                sent = self.send_once()
            except OSError as exc:
                self.close()
                now = time.monotonic()
                if self._failing_since is None:
                    self._failing_since = now
                    log.warning("log collector %s://%s:%d: %s; lines wait in the buffer (%d bytes)", self.scheme,
                                self.host, self.port, exc, self.spool.pending)
                self._backoff = min(MAX_BACKOFF, max(0.1, self._backoff * 2))
                stop.wait(self._backoff)
                continue
            if self._failing_since is not None:
                log.warning("log collector %s://%s:%d reachable again after %.0fs", self.scheme, self.host,
                            self.port, time.monotonic() - self._failing_since)
                self._failing_since = None
            self._backoff = 0.0
            if not sent:
                self.wake.wait(0.5)
                self.wake.clear()
        self.close()
