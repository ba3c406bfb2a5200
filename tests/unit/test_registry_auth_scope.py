"""Registry credentials go to the registry host itself, or to the token realm of a challenge that
the registry host itself answered — never to a realm named by whatever a redirect led to.

The attack: the registry redirects a blob to a CDN (normal), and the CDN — another party — answers
401 with `WWW-Authenticate: Bearer realm="<its token service>"`. Taking that as the registry's
challenge sends the operator's registry password (Basic) to the CDN's realm."""
from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler

import pytest

from provisioner.errors import RegistryError
from provisioner.images import reference
from provisioner.images.registry import Registry
from provisioner.images.transport import read_all
from tests.registry_fixture import FakeRegistry, QuietServer, make_image, serve_image


class _Recorder:
    """A loopback HTTP server answering every request with `status` and `headers`, recording them."""

    def __init__(self, status: int, headers: dict | None = None):
        self.requests: list[dict] = []
        rec = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                rec.requests.append({"path": self.path, "headers": dict(self.headers)})
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = QuietServer(("127.0.0.1", 0), H)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def evil():
    realm = _Recorder(200)          # the CDN's token service: would happily take a password
    cdn = _Recorder(401, {"WWW-Authenticate": f'Bearer realm="http://{realm.address}/token",service="cdn"'})
    try:
        yield cdn, realm
    finally:
        cdn.close()
        realm.close()


def test_a_401_from_a_redirect_target_is_not_a_challenge(tmp_path, monkeypatch, evil):
    cdn, realm = evil
    with FakeRegistry(token="tok", basic=("alice", "s3cret"), redirect_to=cdn.address) as reg:
        img = make_image([{"x": b"layer"}])
        serve_image(reg, "app", ["t"], img)
        (tmp_path / "config.json").write_text(json.dumps({"auths": {reg.address: {
            "auth": base64.b64encode(b"alice:s3cret").decode()}}}))
        monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
        r = Registry(reference.parse(f"{reg.address}/app:t"), sleep=lambda s: None)
        with pytest.raises(RegistryError) as exc:
            got = r.resolve()
            read_all(r.open_blob(got.layers[0]))
    assert realm.requests == []     # the CDN's realm never saw the password, nor anything else
    assert all("Authorization" not in q["headers"] for q in cdn.requests)
    msg = str(exc.value)
    assert msg.startswith(f"{reg.address}/app:t: ") and f"{cdn.address} (a redirect target)" in msg
    assert "401" in msg and "\n" not in msg


def test_the_registrys_own_challenge_may_name_a_realm_elsewhere(tmp_path, monkeypatch):
    """docker.io's realm is auth.docker.io: a realm on another host is fine when the registry
    itself names it (here the token service is this same fake, reached under its other name)."""
    with FakeRegistry(token="tok", basic=("alice", "s3cret")) as reg:
        img = make_image([{"x": b"1"}])
        serve_image(reg, "app", ["t"], img)
        (tmp_path / "config.json").write_text(json.dumps({"auths": {reg.address: {
            "auth": base64.b64encode(b"alice:s3cret").decode()}}}))
        monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
        got = Registry(reference.parse(f"{reg.address}/app:t"), sleep=lambda s: None).resolve()
        assert got.config == img["config"]
        assert any(q["path"].startswith("/token") and q["headers"].get("Authorization", "").startswith("Basic ")
                   for q in reg.requests)
