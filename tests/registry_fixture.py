"""Registries on loopback for tests and benchmarks.

- `docker_registry(tmp)`: Debian's real `docker-registry` (distribution v2) with a temporary
  config.yml, on a free 127.0.0.1 port with temporary storage; optional htpasswd auth.
- `FakeRegistry`: a small in-process distribution-v2 server serving manifests and blobs from
  memory (Range, optional bearer-token auth, optional blob redirects to another host name).
  Used by the unit tier, which must not depend on system packages.
- `FaultProxy`: an HTTP proxy on loopback in front of either, injecting faults on matching
  requests: connection reset mid-body, an HTTP status (500, 429 with Retry-After, 401),
  corrupted bytes.

Import it directly (`from tests.registry_fixture import …` / `sys.path`), or load it as a
pytest plugin (`pytest_plugins = ["tests.registry_fixture"]`) for the `registry` fixture.
"""
from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import json
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REGISTRY_BIN = "/usr/bin/docker-registry"


class QuietServer(ThreadingHTTPServer):
    """Clients that reset connections (the point of some tests) are not errors worth a traceback."""

    daemon_threads = True

    def handle_error(self, request, client_address):
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(cond, timeout: float = 20.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# -- the real registry ----------------------------------------------------------------------------
def _htpasswd_line(user: str, password: str) -> str:
    # distribution's htpasswd auth accepts bcrypt only; use the `bcrypt` module if present, else
    # htpasswd(1) from apache2-utils.
    try:
        import bcrypt  # type: ignore

        return f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()}"
    except ImportError:
        out = subprocess.run(["htpasswd", "-nbB", user, password], check=True, capture_output=True, text=True)
        return out.stdout.strip()


@dataclass
class RunningRegistry:
    address: str  # 127.0.0.1:PORT
    storage: Path
    proc: subprocess.Popen
    log: Path
    users: dict = field(default_factory=dict)

    def url(self, path: str = "/v2/") -> str:
        return f"http://{self.address}{path}"


@contextlib.contextmanager
def docker_registry(workdir: Path | None = None, *, users: dict[str, str] | None = None,
                    port: int | None = None):
    """Start `docker-registry` on 127.0.0.1:<free port>; yields a RunningRegistry; stops it after."""
    own = workdir is None
    workdir = Path(workdir or tempfile.mkdtemp(prefix="registry-"))
    storage = workdir / "storage"
    storage.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    auth = ""
    if users:
        htpasswd = workdir / "htpasswd"
        htpasswd.write_text("".join(_htpasswd_line(u, p) + "\n" for u, p in users.items()))
        auth = f"auth:\n  htpasswd:\n    realm: test-realm\n    path: {htpasswd}\n"
    config = workdir / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
        + auth
    )
    log = workdir / "registry.log"
    with open(log, "wb") as logf:
        # A long-running server: Popen directly (tests only; library code uses the Runner).
        proc = subprocess.Popen([REGISTRY_BIN, "serve", str(config)], stdout=logf, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    reg = RunningRegistry(f"127.0.0.1:{port}", storage, proc, log, dict(users or {}))

    def up():
        if proc.poll() is not None:
            raise RuntimeError(f"docker-registry exited {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(reg.url(), timeout=1):
                return True
        except urllib.error.HTTPError as err:
            return err.code == 401  # auth enabled: it answers
        except OSError:
            return False

    try:
        wait_until(up, what=f"docker-registry on {reg.address}")
        yield reg
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if own:
            shutil.rmtree(workdir, ignore_errors=True)


def skopeo_push(oci_dir: Path, tag: str, dest: str, *, fmt: str | None = None, all_images: bool = False,
                creds: str | None = None) -> None:
    """`skopeo copy oci:DIR:TAG docker://DEST` to a plain-HTTP loopback registry."""
    argv = ["skopeo", "copy", "--quiet", "--dest-tls-verify=false"]
    if fmt:
        argv += ["--format", fmt]
    if all_images:
        argv += ["--all"]
    if creds:
        argv += ["--dest-creds", creds]
    argv += [f"oci:{oci_dir}:{tag}", f"docker://{dest}"]
    subprocess.run(argv, check=True, capture_output=True, timeout=300)


# -- an in-process registry for the unit tier ---------------------------------------------------------
def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class _LoopbackServer:
    """An HTTP server on a free 127.0.0.1 port, served from a thread while the `with` block runs."""

    def _serve(self, handler) -> None:
        self.server = QuietServer(("127.0.0.1", 0), handler)
        self.port = self.server.server_address[1]
        self.address = f"127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


class FakeRegistry(_LoopbackServer):
    """Serves /v2/<repo>/manifests/<ref> and /v2/<repo>/blobs/<digest> from memory."""

    def __init__(self, *, token: str | None = None, basic: tuple[str, str] | None = None,
                 redirect_blobs: bool = False, honour_range: bool = True, redirect_to: str | None = None):
        self.manifests: dict[tuple[str, str], tuple[str, bytes]] = {}
        self.blobs: dict[str, bytes] = {}
        self.token = token  # require "Bearer <token>" (issued by /token for basic creds or anonymously)
        self.basic = basic
        self.redirect_blobs = redirect_blobs or redirect_to is not None
        self.redirect_to = redirect_to  # host:port blobs redirect to (default: this server as `alias`)
        self.honour_range = honour_range
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        self._serve(self._handler())
        self.alias = f"localhost:{self.port}"  # same server, a different host name (redirect target)

    def add_blob(self, data: bytes) -> str:
        d = sha256(data)
        self.blobs[d] = data
        return d

    def add_manifest(self, repo: str, tags: list[str], media_type: str, body: bytes) -> str:
        d = sha256(body)
        for ref in tags + [d]:
            self.manifests[(repo, ref)] = (media_type, body)
        return d

    def _handler(self):
        reg = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _send(self, status, body=b"", headers=None):
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _authorized(self) -> bool:
                if reg.token is None and reg.basic is None:
                    return True
                got = self.headers.get("Authorization", "")
                if reg.token is not None:
                    if got == f"Bearer {reg.token}":
                        return True
                    self._send(401, b'{"errors":[{"code":"UNAUTHORIZED"}]}', {
                        "WWW-Authenticate": f'Bearer realm="http://{reg.address}/token",'
                                            f'service="fake",scope="repository:x:pull"'})
                    return False
                want = "Basic " + base64.b64encode(":".join(reg.basic).encode()).decode()
                if got == want:
                    return True
                self._send(401, b"", {"WWW-Authenticate": 'Basic realm="fake"'})
                return False

            def do_HEAD(self):
                self.do_GET()

            def do_GET(self):
                host = self.headers.get("Host", "")
                with reg._lock:
                    reg.requests.append({"path": self.path, "host": host, "headers": dict(self.headers)})
                if self.path.startswith("/token"):
                    if reg.basic is not None:
                        want = "Basic " + base64.b64encode(":".join(reg.basic).encode()).decode()
                        if self.headers.get("Authorization") != want:
                            return self._send(401, b"{}")
                    return self._send(200, json.dumps({"token": reg.token, "expires_in": 300}).encode(),
                                      {"Content-Type": "application/json"})
                is_redirected = self.path.startswith("/cdn/")
                if not is_redirected and not self._authorized():
                    return
                parts = self.path.split("/")
                if self.path == "/v2/":
                    return self._send(200, b"{}")
                if is_redirected:
                    return self._blob(self.path[len("/cdn/"):])
                if len(parts) >= 5 and parts[1] == "v2" and parts[-2] == "manifests":
                    repo = "/".join(parts[2:-2])
                    hit = reg.manifests.get((repo, parts[-1]))
                    if hit is None:
                        return self._send(404, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}')
                    return self._send(200, hit[1], {"Content-Type": hit[0], "Docker-Content-Digest": sha256(hit[1])})
                if len(parts) >= 5 and parts[1] == "v2" and parts[-2] == "blobs":
                    if reg.redirect_blobs:
                        return self._send(307, b"", {"Location": f"http://{reg.redirect_to or reg.alias}/cdn/{parts[-1]}"})
                    return self._blob(parts[-1])
                self._send(404, b"")

            def _blob(self, digest):
                data = reg.blobs.get(digest)
                if data is None:
                    return self._send(404, b'{"errors":[{"code":"BLOB_UNKNOWN"}]}')
                rng = self.headers.get("Range")
                if rng and reg.honour_range and rng.startswith("bytes="):
                    start = int(rng[6:].split("-", 1)[0])
                    return self._send(206, data[start:], {
                        "Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"})
                self._send(200, data, {"Content-Type": "application/octet-stream"})

        return Handler


# -- the fault-injecting proxy --------------------------------------------------------------------------
@dataclass
class Fault:
    """Applies to the next `times` requests whose path contains `match`.

    kind: "reset" (send headers and `after` body bytes, then RST), "status" (answer `status`,
    with `retry_after` if set), "corrupt" (flip the byte at `after` in the body), "slow" (sleep
    `delay` seconds before each 64 KiB of the body)."""
    match: str
    kind: str
    times: int = 1
    status: int = 500
    retry_after: str | None = None
    after: int = 0
    delay: float = 0.0
    hits: int = 0


class FaultProxy(_LoopbackServer):
    def __init__(self, upstream: str):
        self.upstream = upstream
        self.faults: list[Fault] = []
        self.log: list[dict] = []
        self._lock = threading.Lock()
        self._serve(self._handler())

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def _take(self, path: str) -> Fault | None:
        with self._lock:
            for f in self.faults:
                if f.match in path and f.hits < f.times:
                    f.hits += 1
                    return f
        return None

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_HEAD(self):
                self._proxy()

            def do_GET(self):
                self._proxy()

            def _proxy(self):
                fault = proxy._take(self.path)
                with proxy._lock:
                    proxy.log.append({"path": self.path, "headers": dict(self.headers),
                                      "fault": fault.kind if fault else None})
                if fault and fault.kind == "status":
                    body = b'{"errors":[{"code":"INJECTED"}]}'
                    self.send_response(fault.status)
                    if fault.retry_after is not None:
                        self.send_header("Retry-After", fault.retry_after)
                    if fault.status == 401:
                        self.send_header("WWW-Authenticate", 'Basic realm="proxy"')
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                conn = http.client.HTTPConnection(proxy.upstream, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                headers["Host"] = proxy.upstream
                conn.request(self.command, self.path, headers=headers)
                resp = conn.getresponse()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() in ("connection", "transfer-encoding", "keep-alive"):
                        continue
                    if k.lower() == "location":
                        v = v.replace(proxy.upstream, proxy.address)
                    self.send_header(k, v)
                body_len = resp.getheader("Content-Length")
                if body_len is None:
                    data = resp.read()
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    conn.close()
                    return
                self.end_headers()
                sent = 0
                while True:
                    chunk = resp.read(64 * 1024)
                    if not chunk:
                        break
                    if fault and fault.kind == "slow":
                        time.sleep(fault.delay)
                    if fault and fault.kind == "corrupt" and sent <= fault.after < sent + len(chunk):
                        i = fault.after - sent
                        chunk = chunk[:i] + bytes([chunk[i] ^ 0xFF]) + chunk[i + 1:]
                    if fault and fault.kind == "reset" and sent + len(chunk) > fault.after:
                        self.wfile.write(chunk[: max(0, fault.after - sent)])
                        self.wfile.flush()
                        # SO_LINGER 0: close() sends RST, a genuine connection reset.
                        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                        self.connection.close()
                        self.close_connection = True
                        conn.close()
                        return
                    self.wfile.write(chunk)
                    sent += len(chunk)
                conn.close()

        return Handler


# -- pytest plugin ------------------------------------------------------------------------------------
try:
    import pytest
except ImportError:  # used by bench/ without pytest
    pytest = None

if pytest is not None:
    @pytest.fixture
    def registry(tmp_path):
        """A real docker-registry on loopback (skipped when the binary is missing)."""
        if not os.path.exists(REGISTRY_BIN):
            pytest.skip(f"{REGISTRY_BIN} not installed (scripts/install.sh installs docker-registry)")
        with docker_registry(tmp_path / "registry") as reg:
            yield reg


# -- small images built in memory (until the project's image builder is used here) --------------------
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZ = "application/vnd.oci.image.layer.v1.tar+gzip"


def make_layer(files: dict[str, bytes], *, mtime: int = 1_600_000_000) -> tuple[bytes, str]:
    """A gzip'd tar of regular files (parents added); returns (blob, diff_id)."""
    import gzip
    import io
    import tarfile

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        dirs = set()
        for name in sorted(files):
            parts = name.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i])
                if d not in dirs:
                    dirs.add(d)
                    ti = tarfile.TarInfo(d)
                    ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, mtime
                    tf.addfile(ti)
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode, ti.mtime = len(files[name]), 0o644, mtime
            tf.addfile(ti, io.BytesIO(files[name]))
    tar = raw.getvalue()
    return gzip.compress(tar, compresslevel=1, mtime=0), sha256(tar)


def make_image(layers: list[dict[str, bytes]], *, arch: str = "amd64", os_: str = "linux",
               docker: bool = False) -> dict:
    """Blobs + config + manifest for an image; returns {"manifest", "media_type", "config", "blobs"}."""
    blobs, descs, diff_ids = {}, [], []
    layer_type = "application/vnd.docker.image.rootfs.diff.tar.gzip" if docker else OCI_LAYER_GZ
    for files in layers:
        blob, diff_id = make_layer(files)
        blobs[sha256(blob)] = blob
        descs.append({"mediaType": layer_type, "digest": sha256(blob), "size": len(blob)})
        diff_ids.append(diff_id)
    config = json.dumps({"architecture": arch, "os": os_, "config": {"Cmd": ["/bin/sh"]},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    blobs[sha256(config)] = config
    media_type = "application/vnd.docker.distribution.manifest.v2+json" if docker else OCI_MANIFEST
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": media_type,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json" if docker else OCI_CONFIG,
                   "digest": sha256(config), "size": len(config)},
        "layers": descs}).encode()
    return {"manifest": manifest, "media_type": media_type, "config": config, "blobs": blobs,
            "diff_ids": diff_ids}


def serve_image(reg: "FakeRegistry", repo: str, tags: list[str], image: dict) -> str:
    for data in image["blobs"].values():
        reg.add_blob(data)
    return reg.add_manifest(repo, tags, image["media_type"], image["manifest"])


def write_oci_layout(dest: Path, tag: str, images: list[dict], *, platforms: list[tuple[str, str]] | None = None):
    """An OCI image layout holding `images`; with `platforms`, tag names an index of them."""
    blobs_dir = dest / "blobs" / "sha256"
    blobs_dir.mkdir(parents=True, exist_ok=True)
    (dest / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')

    def put(data: bytes) -> str:
        d = sha256(data)
        (blobs_dir / d.split(":", 1)[1]).write_bytes(data)
        return d

    descs = []
    for i, img in enumerate(images):
        for data in img["blobs"].values():
            put(data)
        desc = {"mediaType": img["media_type"], "digest": put(img["manifest"]), "size": len(img["manifest"])}
        if platforms:
            desc["platform"] = {"os": platforms[i][0], "architecture": platforms[i][1]}
        descs.append(desc)
    if platforms:
        index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descs}).encode()
        top = {"mediaType": OCI_INDEX, "digest": put(index), "size": len(index)}
    else:
        top = descs[0]
    top = dict(top, annotations={"org.opencontainers.image.ref.name": tag})
    (dest / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [top]}))
    return dest
