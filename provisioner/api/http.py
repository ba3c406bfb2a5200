"""The HTTP/1.1 the Docker Engine API speaks, over one accepted connection: requests with keep-alive,
JSON and chunked bodies, JSON answers, chunked streams (logs, events, stats, pull progress) and the
hijacked raw streams of attach and exec start (HTTP 101 "Upgrade: tcp", then the bare socket).

Written against the socket rather than http.server: the request head is read within a bound, a
body has a size limit, and a hijack hands the very socket (and whatever the client already sent
after its request) to the handler without the server writing anything more on it.
"""
from __future__ import annotations

import json
import socket
from dataclasses import dataclass, field
from typing import Iterable
from urllib.parse import parse_qs, unquote, urlsplit

MAX_HEAD = 64 * 1024
MAX_BODY = 16 * 1024 * 1024
REASONS = {200: "OK", 201: "Created", 204: "No Content", 101: "UPGRADED", 304: "Not Modified",
           400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
           405: "Method Not Allowed", 409: "Conflict", 411: "Length Required", 413: "Request Entity Too Large",
           500: "Internal Server Error", 501: "Not Implemented", 503: "Service Unavailable"}


class ApiError(Exception):
    """An answer the Docker way: `{"message": ...}` with the status dockerd gives for the case."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def bad_request(message: str) -> ApiError:
    return ApiError(400, message)


def not_found(message: str) -> ApiError:
    return ApiError(404, message)


def conflict(message: str) -> ApiError:
    return ApiError(409, message)


def not_supported(what: str, why: str = "") -> ApiError:
    """A parameter provisioner cannot honour: named, never silently ignored (400, as dockerd
    answers an invalid parameter)."""
    return ApiError(400, f"{what} is not supported by provisioner" + (f": {why}" if why else ""))


class Closed(Exception):
    """The client went away."""


@dataclass
class Request:
    method: str
    target: str
    version: str
    headers: dict[str, str]            # lower-case names
    path: str = ""
    query: dict[str, list[str]] = field(default_factory=dict)
    body: bytes = b""
    api_version: str = ""

    def __post_init__(self):
        parts = urlsplit(self.target)
        self.path = unquote(parts.path)
        self.query = parse_qs(parts.query, keep_blank_values=True)

    def arg(self, name: str, default: str | None = None) -> str | None:
        vals = self.query.get(name)
        return vals[-1] if vals else default

    def flag(self, name: str, default: bool = False) -> bool:
        """Docker's boolean query values: 1/true/True (and 0/false/False, or empty: false)."""
        v = self.arg(name)
        if v is None:
            return default
        if v.lower() in ("1", "true", "yes"):
            return True
        if v.lower() in ("0", "false", "no", ""):
            return False
        raise bad_request(f"invalid value {v!r} for query parameter {name!r}: want a boolean (1, true, 0, false)")

    def int_arg(self, name: str, default: int | None = None) -> int | None:
        v = self.arg(name)
        if v is None or v == "":
            return default
        try:
            return int(v)
        except ValueError:
            raise bad_request(f"invalid value {v!r} for query parameter {name!r}: want an integer") from None

    def json(self, default=None):
        if not self.body.strip():
            return default
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise bad_request(f"malformed JSON in the request body: {exc}") from None

    def json_object(self) -> dict:
        data = self.json({})
        if not isinstance(data, dict):
            raise bad_request(f"the request body must be a JSON object, not {type(data).__name__}")
        return data

    @property
    def keep_alive(self) -> bool:
        conn = self.headers.get("connection", "").lower()
        if self.version == "HTTP/1.0":
            return "keep-alive" in conn
        return "close" not in conn

    @property
    def wants_upgrade(self) -> bool:
        return "upgrade" in self.headers.get("connection", "").lower() and \
            self.headers.get("upgrade", "").lower() == "tcp"


class Conn:
    """One client connection: reads requests, writes answers."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buf = b""
        self.hijacked = False
        self.streaming = False      # a chunked answer has begun: an error can no longer be answered

    def _fill(self, limit: int) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise Closed()
        self.buf += data
        if len(self.buf) > limit:
            raise ApiError(413, "request head too large")

    def read_request(self) -> Request | None:
        """The next request; None when the client closed between requests."""
        while b"\r\n\r\n" not in self.buf:
            try:
                self._fill(MAX_HEAD)
            except Closed:
                if self.buf.strip():
                    raise
                return None
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        try:
            method, target, version = lines[0].split(" ", 2)
        except ValueError:
            raise bad_request(f"malformed request line {lines[0][:80]!r}") from None
        headers = {}
        for line in lines[1:]:
            k, sep, v = line.partition(":")
            if not sep:
                raise bad_request(f"malformed header line {line[:80]!r}")
            headers[k.strip().lower()] = v.strip()
        req = Request(method.upper(), target, version, headers)
        req.body = self._read_body(headers)
        return req

    def _read_body(self, headers: dict[str, str]) -> bytes:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            out = b""
            while True:
                while b"\r\n" not in self.buf:
                    self._fill(MAX_BODY)
                size_line, self.buf = self.buf.split(b"\r\n", 1)
                try:
                    size = int(size_line.split(b";")[0], 16)
                except ValueError:
                    raise bad_request("malformed chunked request body") from None
                while len(self.buf) < size + 2:
                    self._fill(MAX_BODY + 2)
                out += self.buf[:size]
                self.buf = self.buf[size + 2:]
                if len(out) > MAX_BODY:
                    raise ApiError(413, "request body too large")
                if size == 0:
                    return out
        n = headers.get("content-length")
        if not n:
            return b""
        try:
            length = int(n)
        except ValueError:
            raise bad_request(f"bad Content-Length {n!r}") from None
        if length > MAX_BODY:
            raise ApiError(413, f"request body too large ({length} bytes; at most {MAX_BODY})")
        while len(self.buf) < length:
            self._fill(MAX_BODY)
        body, self.buf = self.buf[:length], self.buf[length:]
        return body

    # -- answers --------------------------------------------------------------------------------
    def _head(self, status: int, headers: dict[str, str]) -> bytes:
        lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def send(self, status: int, body: bytes = b"", content_type: str | None = "application/json",
             headers: dict[str, str] | None = None, head_only: bool = False) -> None:
        h = dict(headers or {})
        empty = status in (204, 304)
        if content_type and not empty:
            h["Content-Type"] = content_type
        if not empty:
            h["Content-Length"] = str(len(body))
        self.sock.sendall(self._head(status, h) + (b"" if head_only or empty else body))

    def send_json(self, status: int, data, headers: dict[str, str] | None = None) -> None:
        self.send(status, json.dumps(data).encode() + b"\n", headers=headers)

    def send_error(self, status: int, message: str) -> None:
        self.send_json(status, {"message": message})

    def stream(self, chunks: Iterable[bytes], content_type: str = "application/json",
               headers: dict[str, str] | None = None, status: int = 200) -> None:
        """A chunked answer, each piece sent as it comes (a client that leaves ends it: Closed)."""
        h = {"Content-Type": content_type, "Transfer-Encoding": "chunked", **(headers or {})}
        self.streaming = True
        try:
            self.sock.sendall(self._head(status, h))
            for chunk in chunks:
                if chunk:
                    self.sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise Closed() from exc

    def hijack(self, upgrade: bool, content_type: str = "application/vnd.docker.raw-stream") -> bytes:
        """Takes the connection over for a raw stream (attach, exec start): answers 101 when the
        client asked to upgrade, else 200 as dockerd does for older clients; returns the bytes the
        client already sent past its request (the start of its stdin)."""
        if upgrade:
            head = self._head(101, {"Content-Type": content_type, "Connection": "Upgrade", "Upgrade": "tcp"})
        else:
            head = self._head(200, {"Content-Type": content_type})
        self.sock.sendall(head)
        self.hijacked = True
        early, self.buf = self.buf, b""
        return early


def json_lines(items: Iterable[dict]) -> Iterable[bytes]:
    for item in items:
        yield json.dumps(item).encode() + b"\n"


def parse_filters(req, allowed: set[str]) -> dict[str, list[str]]:
    """Docker's `filters` query: JSON {"key": ["v", ...]} (or the older {"key": {"v": true}})."""
    raw = req.arg("filters")
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        raise bad_request(f"invalid filters {raw!r}: not JSON") from None
    if not isinstance(data, dict):
        raise bad_request("invalid filters: want a JSON object")
    out = {}
    for k, v in data.items():
        if k not in allowed:
            raise bad_request(f"invalid filter '{k}'")
        out[k] = list(v) if isinstance(v, (list, dict)) else [str(v)]
    return out
