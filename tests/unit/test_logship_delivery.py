"""Log shipping end to end on loopback: containers' shim logs (written here as the shim writes them)
to a collector this test runs — plain TCP and TLS — through a collector outage, in order."""
from __future__ import annotations

import datetime
import json
import socket
import ssl
import threading
import time

import pytest

from provisioner.logship import syslog
from provisioner.logship.shipper import Shipper


class Collector:
    """An RFC 6587 octet-counting receiver: the messages in arrival order."""

    def __init__(self, port: int = 0, tls: ssl.SSLContext | None = None):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.tls = tls
        self.messages: list[bytes] = []
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
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
        if self.tls is not None:
            try:
                conn = self.tls.wrap_socket(conn, server_side=True)
            except OSError:
                return      # a client that does not trust us: the next may
            self.conns.append(conn)
        buf = b""
        while True:
            try:
                chunk = conn.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            frames, used = syslog.unframe(buf)
            buf = buf[used:]
            with self.lock:
                self.messages += frames

    def close(self):
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        for c in self.conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()

    def texts(self, app: str) -> list[str]:
        """The MSG part of the messages whose APP-NAME is `app`."""
        with self.lock:
            messages = list(self.messages)
        out = []
        for m in messages:
            fields = m.decode().split(" ", 6)       # PRI+VERSION TIMESTAMP HOST APP PROCID MSGID SD...
            if fields[3] != app:
                continue
            rest = fields[6]
            if rest.startswith("-"):
                out.append(rest[2:])
            else:
                end = next(i for i in range(len(rest)) if rest[i] == "]" and rest[i - 1] != "\\")
                out.append(rest[end + 2:])
        return out


def wait_for(cond, timeout=20.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def container(root, cid: str, name: str):
    d = root / "containers" / cid
    d.mkdir(parents=True)
    (d / "container.json").write_text(json.dumps({"id": cid, "name": name, "image": "x", "created": 0}))
    return d / f"{cid}.log"


def write_lines(log, texts, stream="stdout"):
    with open(log, "ab") as f:
        for t in texts:
            stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"
            f.write(json.dumps({"log": t + "\n", "stream": stream, "time": stamp}).encode() + b"\n")


@pytest.fixture
def stop():
    ev = threading.Event()
    yield ev
    ev.set()


def test_lines_arrive_labelled_in_order_across_an_outage(tmp_path, stop):
    root = tmp_path / "root"
    (root / "stacks").mkdir(parents=True)
    (root / "stacks" / "shop.json").write_text(json.dumps({"services": {"web": {"container": "shop-web"}}}))
    log = container(root, "a" * 64, "shop-web")
    collector = Collector()
    port = collector.port
    shipper = Shipper(root, "tcp", "127.0.0.1", port, buffer_bytes=1 << 20, hostname="web1", poll=0.05)
    shipper.start(stop)
    write_lines(log, [f"n={i}" for i in range(50)])
    write_lines(log, ["oops"], stream="stderr")
    wait_for(lambda: len(collector.texts("web")) == 51, what="the first lines")
    first = [m for m in collector.messages if b" web " in m][0].decode()
    assert first.startswith("<30>1 ") and " web1 web - stdout [provisioner@32473 stack=\"shop\" service=\"web\" " \
                                          "container=\"shop-web\" stream=\"stdout\"] n=0" in first
    assert [m for m in collector.messages if b"oops" in m][0].startswith(b"<27>1 ")
    collector.close()                      # the collector goes away ...
    write_lines(log, [f"n={i}" for i in range(50, 120)])
    wait_for(lambda: shipper.spool.pending > 0 and not shipper.sender.connected, what="lines waiting")
    collector = Collector(port)            # ... and comes back on the same port
    try:
        wait_for(lambda: len(collector.texts("web")) >= 70, what="the buffered lines")
        got = [int(t[2:]) for t in collector.texts("web") if t.startswith("n=")]
        assert got == list(range(50, 120))   # none lost, none repeated, in order
        assert shipper.spool.dropped == 0 and shipper.spool.pending == 0
    finally:
        collector.close()


def test_above_the_bound_lines_are_dropped_counted_and_reported(tmp_path, stop):
    root = tmp_path / "root"
    log = container(root, "b" * 64, "solo")
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    srv.close()                            # nothing listens: every line waits
    shipper = Shipper(root, "tcp", "127.0.0.1", port, buffer_bytes=4096, hostname="h", poll=0.05)
    write_lines(log, [f"n={i:04d}" + "x" * 60 for i in range(200)])
    shipper.read_once()
    assert shipper.spool.pending <= 4096 and shipper.spool.dropped > 100
    kept = 200 - shipper.spool.dropped
    collector = Collector(port)
    try:
        shipper.start(stop)
        write_lines(log, ["after"])
        texts = wait_for(lambda: (t := collector.texts("solo")) and t[-1] == "after" and t, what="delivery")
        assert [int(t[2:6]) for t in texts[:-1]] == list(range(kept))      # the oldest kept, in order
        note = wait_for(lambda: collector.texts("provisioner-agent"), what="the drop report")
        assert note == [f"dropped {shipper.spool.dropped} log lines: the buffer was full (4096 bytes) while "
                        f"tcp://127.0.0.1:{port} could not take them"]
        assert shipper.counters()["dropped"] == 200 - kept
    finally:
        collector.close()


def test_tls_with_the_collectors_ca(tmp_path, stop):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "collector")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    (tmp_path / "ca.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "ca.pem", tmp_path / "key.pem")
    collector = Collector(tls=ctx)
    root = tmp_path / "root"
    log = container(root, "c" * 64, "secure")
    try:
        untrusted = Shipper(root, "tls", "127.0.0.1", collector.port, buffer_bytes=1 << 20, hostname="h")
        write_lines(log, ["hello over tls"])
        untrusted.read_once()
        with pytest.raises(ssl.SSLCertVerificationError):   # the system's CAs do not know it
            untrusted.sender.send_once()
        untrusted.spool.close()
        # a new shipper (the agent restarted with the right CA) finds the line in the buffer
        shipper = Shipper(root, "tls", "127.0.0.1", collector.port, buffer_bytes=1 << 20, hostname="h",
                          ca=str(tmp_path / "ca.pem"), poll=0.05)
        shipper.start(stop)
        assert wait_for(lambda: collector.texts("secure"), what="TLS delivery") == ["hello over tls"]
        write_lines(log, ["second"])      # after the server's session tickets: the connection is kept
        wait_for(lambda: collector.texts("secure")[-1:] == ["second"], what="the second line")
        assert shipper.sender.reconnects == 1
    finally:
        collector.close()
