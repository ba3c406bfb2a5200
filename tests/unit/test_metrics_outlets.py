"""The metrics endpoint and the Graphite pusher, on loopback sockets this test opens."""
from __future__ import annotations

import socket
import threading
import urllib.error
import urllib.request

import pytest

from provisioner.metrics.graphite import GraphitePusher
from provisioner.metrics.server import MAX_HEAD, MetricsServer


@pytest.fixture
def server():
    calls = []

    def render():
        calls.append(1)
        return f"# HELP up x\n# TYPE up gauge\nup {len(calls)}\n"

    srv = MetricsServer(0, render, address="127.0.0.1")
    srv.start()
    yield srv
    srv.close()


def _raw(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def test_get_metrics_as_prometheus_asks(server):
    req = urllib.request.Request(f"http://127.0.0.1:{server.port}/metrics",
                                 headers={"Accept": "application/openmetrics-text;version=1.0.0;q=0.5,"
                                                    "text/plain;version=0.0.4;q=0.4", "Accept-Encoding": "gzip"})
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 200 and r.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        assert r.read() == b"# HELP up x\n# TYPE up gauge\nup 1\n"
    assert server.scrapes == 1 and server.scrape_seconds >= 0
    head = _raw(server.port, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and head.endswith(b"\r\n\r\n") and b"Content-Length: 33" in head


def test_other_paths_methods_and_junk(server):
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics/../etc/passwd", timeout=5)
    assert err.value.code == 404
    assert _raw(server.port, b"POST /metrics HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 405 ")
    assert _raw(server.port, b"GET /" + b"a" * (MAX_HEAD + 10)).startswith(b"HTTP/1.1 400 ")
    assert _raw(server.port, b"GET / HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.1 200 ")
    # a client that connects and says nothing does not hold up the next scrape
    idle = socket.create_connection(("127.0.0.1", server.port))
    try:
        assert _raw(server.port, b"GET /metrics HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 200 ")
    finally:
        idle.close()


class Carbon:
    """A line receiver on loopback collecting what it gets."""

    def __init__(self, port: int = 0):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.lines: list[str] = []
        self.got = threading.Event()
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn):
        buf = b""
        while True:
            try:
                chunk = conn.recv(4096)
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            *done, buf = buf.split(b"\n")
            self.lines += [d.decode() for d in done]
            self.got.set()

    def close(self):
        self.sock.shutdown(socket.SHUT_RDWR)   # wakes the accept() so the port really closes
        self.sock.close()
        for c in self.conns:
            c.shutdown(socket.SHUT_RDWR)   # a FIN now, even with a reader thread in recv()
            c.close()


def test_graphite_push_reconnects_and_counts_what_it_could_not_send():
    carbon = Carbon()
    n = iter(range(100))
    pusher = GraphitePusher("127.0.0.1", carbon.port, 1.0, lambda: [f"p.h.up {next(n)} 1700000000"])
    assert pusher.push_once() and carbon.got.wait(5)
    assert carbon.lines == ["p.h.up 0 1700000000"]
    port = carbon.port
    carbon.close()
    # carbon is gone: the first send after it closed may still be accepted by the kernel; by the
    # second the connection is known dead and the reconnect is refused
    results = [pusher.push_once() for _ in range(3)]
    assert results[-1] is False and pusher.failures >= 1
    carbon2 = Carbon(port)
    try:
        carbon2.got.clear()
        assert pusher.push_once() and carbon2.got.wait(5)
        assert carbon2.lines[-1].startswith("p.h.up ") and pusher.pushes >= 2
    finally:
        carbon2.close()
