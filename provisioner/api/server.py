"""The Engine API server: a unix socket (root's: the API is root-equivalent), or TCP with TLS and
client certificates only, a thread per connection, and the route table.

Versions as dockerd: `/v1.41/containers/json` and `/containers/json` (the newest) both answer;
a client newer than 1.41 is told the maximum (400), as is one older than 1.12.
"""
from __future__ import annotations

import logging
import os
import re
import socket
import ssl
import stat
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import ConfigError, ContainerError, ImageError, ProvisionerError, RegistryError
from .http import ApiError, Closed, Conn, Request

log = logging.getLogger("provisioner.api")

API_VERSION = "1.41"
MIN_API_VERSION = "1.12"
DEFAULT_SOCKET = "/run/provisioner/docker.sock"
_VERSIONED = re.compile(r"^/v(\d+\.\d+)(/.*)$")

Handler = Callable[..., object]


def _vtuple(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split("."))


@dataclass
class Route:
    method: str
    pattern: re.Pattern
    handler: Handler


class Router:
    def __init__(self):
        self.routes: list[Route] = []

    def add(self, method: str, path: str, handler: Handler) -> None:
        rx = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path.replace("{name:.*}", "(?P<name>.+)"))
        rx = "^" + rx + "$"
        self.routes.append(Route(method, re.compile(rx), handler))

    def match(self, method: str, path: str) -> tuple[Handler, dict]:
        allowed = False
        for r in self.routes:
            m = r.pattern.match(path)
            if m:
                if r.method == method or (method == "HEAD" and r.method == "GET"):
                    return r.handler, m.groupdict()
                allowed = True
        if allowed:
            raise ApiError(405, f"method {method} is not allowed on {path}")
        raise ApiError(404, f"page not found: {method} {path}")


def error_for(exc: ProvisionerError) -> ApiError:
    """A library error as dockerd would answer it: missing things 404, in-use and conflicts 409,
    bad input 400; anything else 500 with the library's own one-line message."""
    msg = str(exc)
    low = msg.lower()
    if isinstance(exc, ConfigError):
        return ApiError(400, msg)
    if low.startswith("no such container") or "not found in the store" in low or "is not in the store" in low:
        return ApiError(404, msg)
    if "already in use" in low or "is running" in low or "ambiguous" in low:
        return ApiError(409, msg)
    if isinstance(exc, (ImageError, RegistryError)) and ("invalid" in low or "bad " in low):
        return ApiError(400, msg)
    if isinstance(exc, ContainerError) and low.startswith(("bad container", "bad volume")):
        return ApiError(400, msg)
    return ApiError(500, msg)


class Server:
    """Serves `router` for `engine` on listening sockets until close()."""

    def __init__(self, router: Router, engine):
        self.router = router
        self.engine = engine
        self.listeners: list[socket.socket] = []
        self.tls: ssl.SSLContext | None = None
        self.closed = threading.Event()

    # -- listening ------------------------------------------------------------------------------
    def listen_unix(self, path: str | os.PathLike, *, mode: int = 0o660, gid: int = 0) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() or path.is_symlink():
            if not stat.S_ISSOCK(path.lstat().st_mode):
                raise ConfigError(f"{path} exists and is not a socket; not replacing it")
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(str(path))
                raise ConfigError(f"{path}: another API server answers there already")
            except (ConnectionRefusedError, FileNotFoundError):
                path.unlink()     # left by a server that is gone
            finally:
                probe.close()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)      # never reachable by others, not even between bind and chmod
        try:
            s.bind(str(path))
        finally:
            os.umask(old)
        if os.geteuid() == 0:
            os.chown(path, 0, gid)
        os.chmod(path, mode)
        s.listen(64)
        self.listeners.append(s)

    def listen_tls(self, address: str, *, cacert: str, cert: str, key: str) -> tuple[str, int]:
        """TCP only with TLS and a client certificate signed by `cacert` (dockerd's --tlsverify)."""
        host, sep, port = address.rpartition(":")
        if not sep or not port.isdigit():
            raise ConfigError(f"--tls-listen {address!r}: want HOST:PORT")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.verify_mode = ssl.CERT_REQUIRED
        try:
            ctx.load_cert_chain(cert, key)
            ctx.load_verify_locations(cacert)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load the TLS files ({exc})", cert) from exc
        self.tls = ctx
        fam = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host.strip("[]") or "0.0.0.0", int(port)))
        s.listen(64)
        self.listeners.append(s)
        return s.getsockname()[:2]

    def start(self) -> None:
        for s in self.listeners:
            threading.Thread(target=self._accept, args=(s,), daemon=True, name="api-accept").start()

    def close(self) -> None:
        self.closed.set()
        for s in self.listeners:
            try:
                name = s.getsockname()
                s.close()
                if isinstance(name, str) and name:
                    Path(name).unlink(missing_ok=True)
            except OSError:
                pass

    def _accept(self, lsock: socket.socket) -> None:
        while not self.closed.is_set():
            try:
                sock, _ = lsock.accept()
            except OSError:
                if self.closed.is_set():
                    return
                self.closed.wait(0.1)
                continue
            threading.Thread(target=self.serve_connection, args=(sock, lsock.family != socket.AF_UNIX),
                             daemon=True, name="api-conn").start()

    # -- one connection -------------------------------------------------------------------------
    def serve_connection(self, sock: socket.socket, tcp: bool = False) -> None:
        try:
            if tcp:
                sock.settimeout(10)
                sock = self.tls.wrap_socket(sock, server_side=True)
                sock.settimeout(None)
            conn = Conn(sock)
            while not conn.hijacked:
                try:
                    req = conn.read_request()
                except ApiError as exc:
                    conn.send_error(exc.status, exc.message)
                    return
                if req is None:
                    return
                self.handle(conn, req)
                if not req.keep_alive:
                    return
        except (Closed, ConnectionError, ssl.SSLError, socket.timeout, OSError) as exc:
            log.debug("connection ended: %s", exc)
        finally:
            try:
                # shutdown first: a thread still reading the client's input (attach, exec) would
                # otherwise keep the socket open, and the client would never see the end
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                sock.close()
            except OSError:
                pass

    def handle(self, conn: Conn, req: Request) -> None:
        log.debug("%s %s", req.method, req.target)
        path = req.path
        m = _VERSIONED.match(path)
        try:
            if m:
                req.api_version, path = m.group(1), m.group(2)
                if _vtuple(req.api_version) > _vtuple(API_VERSION):
                    raise ApiError(400, f"client version {req.api_version} is too new. Maximum supported API "
                                        f"version is {API_VERSION}")
                if _vtuple(req.api_version) < _vtuple(MIN_API_VERSION):
                    raise ApiError(400, f"client version {req.api_version} is too old. Minimum supported API "
                                        f"version is {MIN_API_VERSION}, please upgrade your client to a newer "
                                        "version")
            else:
                req.api_version = API_VERSION
            handler, params = self.router.match(req.method, path.rstrip("/") or "/")
            result = handler(self.engine, req, conn, **params)
            if conn.hijacked or result is None:
                return
            status, data = result
            if isinstance(data, bytes):
                conn.send(status, data, content_type="text/plain; charset=utf-8",
                          head_only=req.method == "HEAD")
            elif status in (204, 304):
                conn.send(status)
            else:
                conn.send_json(status, data)
        except ApiError as exc:
            self._fail(conn, exc.status, exc.message)
        except ProvisionerError as exc:
            api = error_for(exc)
            self._fail(conn, api.status, api.message)
        except (Closed, ConnectionError):
            raise
        except Exception as exc:   # noqa: BLE001 — the server's boundary: log it, answer 500, keep serving
            log.exception("%s %s failed", req.method, req.path)
            self._fail(conn, 500, f"internal error in provisioner's API server: {type(exc).__name__}: {exc}")

    @staticmethod
    def _fail(conn: Conn, status: int, message: str) -> None:
        if conn.hijacked or conn.streaming:
            raise Closed()    # the answer has begun: the client sees the stream end early
        conn.send_error(status, message)
