"""The metrics endpoint: `GET /metrics` answers the host's series in Prometheus' text format.

A deliberately small HTTP/1.1 server on one listening socket (the agent must stay small: the
standard library's http.server alone costs ~7 MB of imports): a thread per connection, a request
head of at most 8 KiB read within a few seconds, GET and HEAD of /metrics (and / pointing there),
one response per connection (`Connection: close`), scrapes rendered one at a time. Who may
connect is the firewalls' business (the host's nftables table and the cloud's rules open the port
to `metrics.allow_from` only).
"""
from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Callable

from .exposition import CONTENT_TYPE

log = logging.getLogger(__name__)
MAX_HEAD = 8192
READ_TIMEOUT = 5.0


def _listener(port: int, address: str | None) -> socket.socket:
    """Both IPv4 and IPv6 when the host has IPv6 (one dual-stack socket), else IPv4."""
    if address is None and socket.has_ipv6:
        try:
            s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("::", port))
            return s
        except OSError:
            s.close()
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((address or "0.0.0.0", port))
    return s


class MetricsServer:
    def __init__(self, port: int, render: Callable[[], str], *, address: str | None = None):
        self.render = render
        self.sock = _listener(port, address)
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self.scrapes = 0
        self.scrape_seconds = 0.0

    def serve_forever(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                if self._closed.is_set():
                    return
                time.sleep(0.1)   # EMFILE and the like: do not spin
                continue
            threading.Thread(target=self._handle, args=(conn,), daemon=True, name="metrics-conn").start()

    def start(self) -> threading.Thread:
        t = threading.Thread(target=self.serve_forever, daemon=True, name="metrics-server")
        t.start()
        return t

    def close(self) -> None:
        self._closed.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    def _head(self, conn: socket.socket) -> bytes | None:
        conn.settimeout(READ_TIMEOUT)
        data = b""
        while b"\r\n\r\n" not in data and b"\n\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                return None
            data += chunk
            if len(data) > MAX_HEAD:
                return None
        return data

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            try:
                head = self._head(conn)
                if head is None:
                    return self._send(conn, 400, "bad request\n")
                method, _, rest = head.split(b"\n", 1)[0].decode("latin-1").strip().partition(" ")
                path = rest.split(" ", 1)[0].split("?", 1)[0]
                if method not in ("GET", "HEAD"):
                    return self._send(conn, 405, "only GET and HEAD\n", extra="Allow: GET, HEAD\r\n")
                if path == "/metrics":
                    with self._lock:
                        t0 = time.monotonic()
                        body = self.render()
                        self.scrape_seconds = time.monotonic() - t0
                        self.scrapes += 1
                    return self._send(conn, 200, body, CONTENT_TYPE, head_only=method == "HEAD")
                if path == "/":
                    return self._send(conn, 200, "provisioner agent: metrics at /metrics\n",
                                      head_only=method == "HEAD")
                return self._send(conn, 404, "not found: try /metrics\n")
            except (OSError, UnicodeError) as exc:
                log.debug("metrics connection: %s", exc)

    @staticmethod
    def _send(conn: socket.socket, code: int, body: str, ctype: str = "text/plain; charset=utf-8",
              head_only: bool = False, extra: str = "") -> None:
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}[code]
        data = body.encode()
        conn.sendall(f"HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len(data)}\r\n"
                     f"Connection: close\r\n{extra}\r\n".encode() + (b"" if head_only else data))
