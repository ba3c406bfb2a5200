"""Registry client against an in-process distribution-v2 server (real HTTP on loopback)."""
import base64
import io
import random
import json

import pytest

from provisioner.images import reference
from provisioner.images.registry import Platform, Registry, parse_platform
from provisioner.images.transport import read_all
from provisioner.errors import ImageError, RegistryError
from tests.registry_fixture import (
    OCI_INDEX, Fault, FakeRegistry, FaultProxy, make_image, serve_image, sha256,
)

BIG = random.Random(7).randbytes(1 << 20)  # 1 MiB that gzip cannot shrink


class Sleeps(list):
    def __call__(self, seconds):
        self.append(seconds)


def client(ref_text, **kw):
    kw.setdefault("sleep", Sleeps())
    kw.setdefault("credentials", None)
    return Registry(reference.parse(ref_text), **kw)


@pytest.fixture
def fake():
    with FakeRegistry() as reg:
        yield reg


def test_resolve_oci_manifest_by_tag(fake):
    img = make_image([{"a.txt": b"hello"}, {"b.txt": b"world"}])
    digest = serve_image(fake, "team/app", ["v1"], img)
    got = client(f"{fake.address}/team/app:v1").resolve()
    assert got.manifest_digest == digest
    assert got.manifest == img["manifest"]
    assert got.config == img["config"]
    assert [d.digest for d in got.layers] == [json.loads(img["manifest"])["layers"][i]["digest"] for i in (0, 1)]
    assert got.diff_ids == img["diff_ids"]
    accept = fake.requests[0]["headers"]["Accept"]
    for mt in ("application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
               "application/vnd.docker.distribution.manifest.list.v2+json",
               "application/vnd.docker.distribution.manifest.v2+json"):
        assert mt in accept


def test_resolve_docker_schema2_by_digest(fake):
    img = make_image([{"x": b"1"}], docker=True)
    digest = serve_image(fake, "app", ["latest"], img)
    got = client(f"{fake.address}/app@{digest}").resolve()
    assert got.media_type == "application/vnd.docker.distribution.manifest.v2+json"
    assert got.manifest_digest == digest


def _index(fake, repo, tag, entries):
    manifests = []
    for (os_, arch, variant), img in entries:
        d = serve_image(fake, repo, [], img)
        plat = {"os": os_, "architecture": arch}
        if variant:
            plat["variant"] = variant
        manifests.append({"mediaType": img["media_type"], "digest": d, "size": len(img["manifest"]),
                          "platform": plat})
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}).encode()
    return fake.add_manifest(repo, [tag], OCI_INDEX, body)


def test_index_selects_platform(fake):
    amd = make_image([{"arch": b"amd64"}])
    arm = make_image([{"arch": b"arm64"}], arch="arm64")
    _index(fake, "multi", "1", [(("linux", "amd64", None), amd), (("linux", "arm64", "v8"), arm)])
    got = client(f"{fake.address}/multi:1").resolve(parse_platform("linux/arm64"))
    assert got.config == arm["config"]
    assert got.manifest_digest == sha256(arm["manifest"])
    got = client(f"{fake.address}/multi:1").resolve(Platform("linux", "amd64"))
    assert got.config == amd["config"]
    with pytest.raises(ImageError) as exc:
        client(f"{fake.address}/multi:1").resolve(parse_platform("linux/s390x"))
    assert "no image for platform linux/s390x (available: linux/amd64, linux/arm64/v8)" in str(exc.value)
    assert f"{fake.address}/multi:1" in str(exc.value)


def test_parse_platform():
    assert parse_platform("linux/x86_64") == Platform("linux", "amd64")
    assert parse_platform("linux/arm/v7") == Platform("linux", "arm", "v7")
    with pytest.raises(ImageError, match="invalid platform 'linux'"):
        parse_platform("linux")


def test_unknown_tag_names_reference(fake):
    with pytest.raises(ImageError) as exc:
        client(f"{fake.address}/nothing:here").resolve()
    msg = str(exc.value)
    assert msg.startswith(f"{fake.address}/nothing:here: not found")
    assert "'here'" in msg


def test_manifest_fetched_by_digest_is_verified(fake):
    img = make_image([{"x": b"1"}])
    digest = serve_image(fake, "app", ["t"], img)
    fake.manifests[("app", digest)] = (img["media_type"], img["manifest"] + b" ")
    with pytest.raises(RegistryError, match="manifest failed verification"):
        client(f"{fake.address}/app@{digest}").resolve()


def test_config_digest_verified(fake):
    img = make_image([{"x": b"1"}])
    serve_image(fake, "app", ["t"], img)
    fake.blobs[sha256(img["config"])] = img["config"].replace(b"amd64", b"AMD64")
    with pytest.raises(RegistryError, match="failed verification"):
        client(f"{fake.address}/app:t").resolve()


def test_bearer_token_with_docker_config_credentials(tmp_path, monkeypatch):
    (tmp_path / "config.json").write_text(json.dumps(
        {"auths": {"127.0.0.1": {}, "other": {"auth": "eDp5"}}}))
    with FakeRegistry(token="tok123", basic=("alice", "s3cret")) as reg:
        img = make_image([{"x": b"1"}])
        serve_image(reg, "app", ["t"], img)
        cfg = tmp_path / "config.json"
        cfg.write_text(json.dumps({"auths": {f"http://{reg.address}": {
            "auth": base64.b64encode(b"alice:s3cret").decode()}}}))
        monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
        got = Registry(reference.parse(f"{reg.address}/app:t"), sleep=Sleeps()).resolve()
        assert got.config == img["config"]
        token_reqs = [r for r in reg.requests if r["path"].startswith("/token")]
        assert len(token_reqs) == 1  # cached for the config blob
        assert "scope=repository%3Aapp%3Apull" in token_reqs[0]["path"]
        assert token_reqs[0]["headers"]["Authorization"].startswith("Basic ")

        monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "none"))
        with pytest.raises(RegistryError) as exc:
            Registry(reference.parse(f"{reg.address}/app:t"), sleep=Sleeps()).resolve()
        assert str(exc.value).startswith(f"{reg.address}/app:t: unauthorized")


def test_basic_auth_challenge(tmp_path, monkeypatch):
    with FakeRegistry(basic=("bob", "pw")) as reg:
        img = make_image([{"x": b"1"}])
        serve_image(reg, "app", ["t"], img)
        (tmp_path / "config.json").write_text(json.dumps({"auths": {reg.address: {"username": "bob", "password": "pw"}}}))
        monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
        assert Registry(reference.parse(f"{reg.address}/app:t"), sleep=Sleeps()).resolve().config == img["config"]
        (tmp_path / "config.json").write_text(json.dumps({"auths": {reg.address: {"username": "bob", "password": "no"}}}))
        with pytest.raises(RegistryError, match=f"^{reg.address}/app:t: unauthorized"):
            Registry(reference.parse(f"{reg.address}/app:t"), sleep=Sleeps()).resolve()


def test_redirect_does_not_forward_authorization():
    with FakeRegistry(token="tok", redirect_blobs=True) as reg:
        img = make_image([{"x": BIG}])
        serve_image(reg, "app", ["t"], img)
        r = client(f"{reg.address}/app:t")
        got = r.resolve()
        data = read_all(r.open_blob(got.layers[0]))
        assert sha256(data) == got.layers[0].digest
        cdn = [q for q in reg.requests if q["path"].startswith("/cdn/")]
        assert len(cdn) == 2  # config + layer
        assert all(q["host"] == reg.alias and "Authorization" not in q["headers"] for q in cdn)
        first = [q for q in reg.requests if "/blobs/" in q["path"]]
        assert first and all(q["headers"].get("Authorization") == "Bearer tok" for q in first)


@pytest.fixture
def proxied(fake):
    img = make_image([{"big": BIG}, {"small": b"s"}])
    serve_image(fake, "app", ["t"], img)
    with FaultProxy(fake.address) as proxy:
        yield proxy, img


def _layer(proxy, img, sleeps=None):
    r = client(f"{proxy.address}/app:t", sleep=sleeps if sleeps is not None else Sleeps())
    got = r.resolve()
    return r, got, got.layers[0]


def test_retries_500_and_429_with_retry_after(proxied):
    proxy, img = proxied
    proxy.add(Fault("/manifests/", "status", status=500, times=2))
    proxy.add(Fault("/blobs/", "status", status=429, retry_after="3", times=1))
    sleeps = Sleeps()
    r, got, layer = _layer(proxy, img, sleeps)
    assert sha256(read_all(r.open_blob(layer))) == layer.digest
    assert 3.0 in sleeps  # Retry-After honoured
    assert len(sleeps) == 3
    assert [e["fault"] for e in proxy.log[:3]] == ["status", "status", None]


def test_gives_up_after_retries(proxied):
    proxy, img = proxied
    proxy.add(Fault("/manifests/", "status", status=503, times=100))
    with pytest.raises(RegistryError) as exc:
        _layer(proxy, img)
    assert str(exc.value).startswith(f"{proxy.address}/app:t: manifest: registry {proxy.address} answered HTTP 503")


def test_reset_mid_blob_resumes_with_range(proxied):
    proxy, img = proxied
    r, got, layer = _layer(proxy, img)
    proxy.add(Fault(layer.digest, "reset", after=300_000, times=2))
    seen = []
    data = read_all(r.open_blob(layer, on_bytes=seen.append))
    assert sha256(data) == layer.digest
    assert sum(seen) == layer.size  # progress counted each byte once
    blob_reqs = [e for e in proxy.log if layer.digest in e["path"]]
    assert len(blob_reqs) == 3
    assert "Range" not in blob_reqs[0]["headers"]
    offsets = [int(e["headers"]["Range"][6:-1]) for e in blob_reqs[1:]]
    assert 0 < offsets[0] <= 300_000 and offsets[0] < offsets[1] <= offsets[0] + 300_000


def test_resume_when_server_ignores_range():
    with FakeRegistry(honour_range=False) as reg:
        img = make_image([{"big": BIG}])
        serve_image(reg, "app", ["t"], img)
        with FaultProxy(reg.address) as proxy:
            r, got, layer = _layer(proxy, img)
            proxy.add(Fault(layer.digest, "reset", after=200_000))
            assert sha256(read_all(r.open_blob(layer))) == layer.digest


def test_corrupt_blob_rejected_at_eof(proxied):
    proxy, img = proxied
    r, got, layer = _layer(proxy, img)
    proxy.add(Fault(layer.digest, "corrupt", after=1000))
    reader = r.open_blob(layer)
    with pytest.raises(RegistryError) as exc:
        while reader.read(65536):
            pass
    assert f"blob {layer.digest} failed verification" in str(exc.value)
    assert str(exc.value).startswith(f"{proxy.address}/app:t: ")


def test_unreachable_registry():
    from tests.registry_fixture import free_port
    sleeps = Sleeps()
    with pytest.raises(RegistryError) as exc:
        client(f"127.0.0.1:{free_port()}/app:t", sleep=sleeps).resolve()
    assert "cannot reach registry" in str(exc.value)
    assert len(sleeps) == 6  # retries=6: exponential backoff with jitter, capped at 8 s
    for i, slept in enumerate(sleeps):
        base = min(8.0, 0.25 * 2 ** i)
        assert base / 2 <= slept <= base


def test_schema1_refused(fake):
    fake.add_manifest("old", ["t"], "application/vnd.docker.distribution.manifest.v1+prettyjws",
                      json.dumps({"schemaVersion": 1, "fsLayers": []}).encode())
    with pytest.raises(ImageError, match="schema1 manifests are not supported"):
        client(f"{fake.address}/old:t").resolve()


def test_scheme_choice_and_insecure_fallback():
    import requests

    from provisioner.images.transport import Transport, is_loopback

    for host in ("localhost", "localhost:5000", "127.0.0.1:5000", "127.1.2.3", "[::1]:5000", "::1"):
        assert is_loopback(host), host
    for host in ("registry.example:5000", "10.0.0.1", "[2001:db8::1]:5000", "localhost.example"):
        assert not is_loopback(host), host
    assert Transport("127.0.0.1:5000", subject="x", credentials=None).scheme == "http"
    assert Transport("registry.example", subject="x", credentials=None).scheme == "https"

    class NoTLS(requests.Session):
        def __init__(self):
            super().__init__()
            self.tried = []

        def get(self, url, **kw):
            self.tried.append((url, kw.get("verify")))
            raise requests.exceptions.SSLError("wrong version number")

    session = NoTLS()
    t = Transport("registry.example:5000", subject="x", credentials=None, insecure=True, session=session)
    assert t.scheme == "http"
    assert session.tried == [("https://registry.example:5000/v2/", False)]  # HTTPS without verification first
    assert Registry(reference.parse("registry.example:5000/a"), insecure_hosts=["registry.example:5000"],
                    credentials=None).t.insecure
    assert Registry(reference.parse("registry.example:5000/a"), insecure_hosts=["http://registry.example:5000/"],
                    credentials=None).t.insecure
    assert not Registry(reference.parse("registry.example:5000/a"), credentials=None).t.insecure


def test_revoked_token_is_fetched_again():
    with FakeRegistry(token="first") as reg:
        img = make_image([{"x": BIG}])
        serve_image(reg, "app", ["t"], img)
        r = client(f"{reg.address}/app:t")
        got = r.resolve()
        reg.token = "second"  # the registry stops accepting the cached token
        assert sha256(read_all(r.open_blob(got.layers[0]))) == got.layers[0].digest
        assert len([q for q in reg.requests if q["path"].startswith("/token")]) == 2


def test_redirect_to_plain_http_refused_for_https_registries():
    import requests

    from provisioner.images.transport import Transport

    class Redirecting(requests.Session):
        def __init__(self):
            super().__init__()
            self.urls = []

        def request(self, method, url, **kw):
            self.urls.append(url)
            resp = requests.Response()
            resp.status_code, resp.url, resp.raw = 307, url, io.BytesIO(b"")
            resp.headers["Location"] = "http://cdn.example/blob"
            return resp

    session = Redirecting()
    t = Transport("registry.example", subject="registry.example/app:1", credentials=None, session=session)
    with pytest.raises(RegistryError, match=r"^registry.example/app:1: refusing redirect to http://cdn.example"):
        t.request("GET", "/v2/app/blobs/sha256:x")
    assert session.urls == ["https://registry.example/v2/app/blobs/sha256:x"]


def test_tls_failure_is_not_retried_and_suggests_insecure_registry():
    import requests

    from provisioner.images.transport import Transport

    class BadCert(requests.Session):
        calls = 0

        def request(self, method, url, **kw):
            BadCert.calls += 1
            raise requests.exceptions.SSLError("certificate verify failed: self-signed certificate")

    sleeps = Sleeps()
    t = Transport("registry.example:5000", subject="registry.example:5000/app:1", credentials=None,
                  session=BadCert(), sleep=sleeps)
    with pytest.raises(RegistryError) as exc:
        t.request("GET", "/v2/app/manifests/1", what="manifest")
    assert str(exc.value).startswith("registry.example:5000/app:1: manifest: TLS failure talking to registry.example:5000")
    assert str(exc.value).endswith("use --insecure-registry registry.example:5000")
    assert BadCert.calls == 1 and sleeps == []
