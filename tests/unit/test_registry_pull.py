"""The pull pipeline against an in-process registry and a directory-backed stand-in for the store.

The stand-in keeps the Store contract that matters here (apply with the real layers.apply_layer,
drain to EOF, check the diff_id, commit by rename, nothing left on failure); the real btrfs store
is exercised in tests/privileged/test_pull.py.
"""
import contextlib
import hashlib
import os
import random
import shutil
import threading
from pathlib import Path

import pytest

from provisioner.images import pull as pullmod
from provisioner.images.auth import load_credentials, parse_challenge
from provisioner.images.layers import apply_layer
from provisioner.images.tarsafety import Budget
from provisioner.images.transport import retry_after
from provisioner.errors import ConfigError, ImageError, RegistryError
from tests.registry_fixture import Fault, FakeRegistry, FaultProxy, make_image, serve_image, sha256

R = random.Random(3)
BLOBS = [R.randbytes(400_000) for _ in range(4)]


class DirStore:
    def __init__(self, root: Path, on_add=None):
        self.root = root
        self.layers = root / "layers"
        self.tmp = root / "tmp"
        self.layers.mkdir(parents=True)
        self.tmp.mkdir()
        self.images = {}
        self.added = []
        self.on_add = on_add
        self.locked = False

    @contextlib.contextmanager
    def lock(self):
        self.locked = True
        try:
            yield self
        finally:
            self.locked = False

    def recover(self):
        for p in self.tmp.iterdir():
            shutil.rmtree(p)

    @staticmethod
    def chain_id(parent, diff_id):
        if parent is None:
            return diff_id
        return "sha256:" + hashlib.sha256(f"{parent} {diff_id}".encode()).hexdigest()

    def layer_path(self, chain):
        return self.layers / chain.split(":")[1]

    def has_chain(self, chain):
        return self.layer_path(chain).is_dir()

    @staticmethod
    def free_space_budget(pending=0):
        return Budget(1 << 40, "a test store")

    def layer_info(self, chain):
        return {"size": 0}

    def add_layer(self, parent, diff_id, fileobj, media_type, budget=None):
        assert self.locked
        chain = self.chain_id(parent, diff_id)
        if self.on_add:
            self.on_add(len(self.added))
        work = self.tmp / chain.split(":")[1]
        if parent:
            shutil.copytree(self.layer_path(parent), work, symlinks=True)
        try:
            applied = apply_layer(fileobj, media_type, work, budget)
            while fileobj.read(1 << 20):
                pass
            if applied.diff_id != diff_id:
                raise ImageError("diff_id mismatch")
            os.rename(work, self.layer_path(chain))
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        self.added.append(chain)
        return chain

    def discard_unused(self, chains):
        removed = [c for c in chains if self.has_chain(c)]
        for c in removed:
            shutil.rmtree(self.layer_path(c))
            self.added.remove(c)
        return removed

    def put_image(self, names, manifest_digest, manifest, config):
        self.images[tuple(names)] = (manifest_digest, manifest, config)
        return names


class Events(pullmod.Observer):
    def __init__(self):
        self.log = []
        self.lock = threading.Lock()
        self.downloaded_cv = threading.Condition()
        self.done = set()

    def resolved(self, image, needed):
        self.log.append(("resolved", tuple(needed)))

    def downloaded(self, index):
        with self.downloaded_cv:
            self.done.add(index)
            self.downloaded_cv.notify_all()
        with self.lock:
            self.log.append(("downloaded", index))

    def applied(self, index):
        with self.lock:
            self.log.append(("applied", index))


@pytest.fixture(autouse=True)
def no_docker_config(tmp_path, monkeypatch):
    """Hermetic: never read this machine's ~/.docker/config.json (or run its credential helpers)."""
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))


@pytest.fixture
def fake():
    with FakeRegistry() as reg:
        yield reg


@pytest.fixture
def store(tmp_path):
    return DirStore(tmp_path / "store")


def four_layers(fake):
    img = make_image([{f"l{i}/data": BLOBS[i], "shared": f"v{i}".encode()} for i in range(4)])
    serve_image(fake, "app", ["v1"], img)
    return img


def test_pull_applies_all_layers_in_order(fake, store, tmp_path):
    img = four_layers(fake)
    ev = Events()
    res = pullmod.pull(f"{fake.address}/app:v1", store, tmp_path, observer=ev)
    assert len(store.added) == 4 and res.layers == 4 and res.fetched_layers == 4
    top = store.layer_path(store.added[-1])
    for i in range(4):
        assert (top / f"l{i}" / "data").read_bytes() == BLOBS[i]
    assert (top / "shared").read_bytes() == b"v3"  # later layers win
    assert [e for e in ev.log if e[0] == "applied"] == [("applied", i) for i in range(4)]
    assert res.image_id == sha256(img["config"])
    assert list(store.images) == [(f"{fake.address}/app:v1",)]
    assert res.bytes == sum(len(b) for d, b in img["blobs"].items() if d != sha256(img["config"]))
    assert not (tmp_path / pullmod.SPOOL_DIR).exists() or not any((tmp_path / pullmod.SPOOL_DIR).iterdir())


def test_later_layers_download_while_first_applies(fake, tmp_path):
    four_layers(fake)
    ev = Events()

    def on_add(n):
        if n == 0:  # applying layer 0 waits until layers 1..3 are fully downloaded: they must run in parallel
            with ev.downloaded_cv:
                assert ev.downloaded_cv.wait_for(lambda: {1, 2, 3} <= ev.done, timeout=20)

    store = DirStore(tmp_path / "store", on_add=on_add)
    pullmod.pull(f"{fake.address}/app:v1", store, tmp_path, observer=ev)
    assert len(store.added) == 4


def test_shared_layers_are_not_fetched_again(fake, store, tmp_path):
    base = [{f"l{i}/data": BLOBS[i]} for i in range(2)]
    a = make_image(base)
    b = make_image(base + [{"extra": b"x"}])
    serve_image(fake, "a", ["1"], a)
    serve_image(fake, "b", ["1"], b)
    pullmod.pull(f"{fake.address}/a:1", store, tmp_path)
    before = len(fake.requests)
    res = pullmod.pull(f"{fake.address}/b:1", store, tmp_path)
    assert res.fetched_layers == 1 and len(store.added) == 3
    blob_paths = [r["path"] for r in fake.requests[before:] if "/blobs/" in r["path"]]
    assert len(blob_paths) == 2  # config + the one new layer
    again = pullmod.pull(f"{fake.address}/b:1", store, tmp_path)
    assert again.fetched_layers == 0 and again.bytes == 0


@pytest.mark.parametrize("bad_layer", [0, 2])
def test_corrupt_blob_leaves_store_unchanged(fake, store, tmp_path, bad_layer):
    img = four_layers(fake)
    import json
    digest = json.loads(img["manifest"])["layers"][bad_layer]["digest"]
    with FaultProxy(fake.address) as proxy:
        proxy.add(Fault(digest, "corrupt", after=5000))
        with pytest.raises(RegistryError, match=f"blob {digest} failed verification"):
            pullmod.pull(f"{proxy.address}/app:v1", store, tmp_path)
    # Chains committed before the bad layer were discarded again: nothing stays.
    assert store.added == [] and not any(store.layers.iterdir())
    assert not list(store.tmp.iterdir())
    assert not store.images
    assert not (tmp_path / pullmod.SPOOL_DIR).exists() or not any((tmp_path / pullmod.SPOOL_DIR).iterdir())


def test_diff_id_mismatch_rejected(fake, store, tmp_path):
    img = make_image([{"a": b"1"}])
    import json
    cfg = json.loads(img["config"])
    cfg["rootfs"]["diff_ids"] = ["sha256:" + "0" * 64]
    img2 = make_image([{"a": b"1"}])
    config = json.dumps(cfg).encode()
    man = json.loads(img2["manifest"])
    man["config"].update(digest=sha256(config), size=len(config))
    img2["blobs"][sha256(config)] = config
    img2["manifest"] = json.dumps(man).encode()
    serve_image(fake, "bad", ["1"], img2)
    with pytest.raises(ImageError, match="diff_id"):
        pullmod.pull(f"{fake.address}/bad:1", store, tmp_path)
    assert not store.added and not list(store.tmp.iterdir())


def test_spool_reader_follows_a_growing_file(tmp_path):
    data = R.randbytes(3_000_000)
    spool = pullmod.Spool(tmp_path / "s")
    cancel = threading.Event()
    gate = threading.Semaphore(0)

    class Slow:
        def __init__(self):
            self.pos = 0

        def read(self, n):
            gate.acquire()  # one chunk per release: the reader must wait on the writer
            chunk = data[self.pos:self.pos + 100_000]
            self.pos += len(chunk)
            return chunk

        def close(self):
            pass

    t = threading.Thread(target=spool.fill, args=(Slow(), cancel))
    t.start()
    reader = spool.reader(cancel)
    got = bytearray()
    for _ in range(len(data) // 100_000 + 1):
        gate.release()
        chunk = reader.read(1 << 20)
        assert chunk  # never an early EOF while the writer is still going
        got += chunk
        if len(got) == len(data):
            break
    gate.release()
    assert reader.read(10) == b""
    t.join(10)
    assert bytes(got) == data


def test_spool_reader_raises_the_download_error(tmp_path):
    spool = pullmod.Spool(tmp_path / "s")

    class Broken:
        calls = 0

        def read(self, n):
            Broken.calls += 1
            if Broken.calls > 1:
                raise RegistryError("x: blob failed verification")
            return b"abc"

        def close(self):
            pass

    spool.fill(Broken(), threading.Event())
    reader = spool.reader(threading.Event())
    with pytest.raises(RegistryError, match="failed verification"):
        while reader.read(1):
            pass


# -- small auth/transport helpers ---------------------------------------------------------------------
def test_parse_challenge():
    assert parse_challenge('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
                           'scope="repository:library/redis:pull"') == (
        "bearer", {"realm": "https://auth.docker.io/token", "service": "registry.docker.io",
                   "scope": "repository:library/redis:pull"})
    assert parse_challenge('Basic realm="x y"') == ("basic", {"realm": "x y"})
    assert parse_challenge('Bearer realm=unquoted, error="insufficient_scope"') == (
        "bearer", {"realm": "unquoted", "error": "insufficient_scope"})


def test_load_credentials(tmp_path):
    import base64
    import json
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"auths": {
        "https://index.docker.io/v1/": {"auth": base64.b64encode(b"hub:pw").decode()},
        "reg.example:5000": {"auth": base64.b64encode(b"u:p:with:colons").decode()},
    }}))
    assert load_credentials("registry-1.docker.io", cfg).username == "hub"
    c = load_credentials("reg.example:5000", cfg)
    assert (c.username, c.password) == ("u", "p:with:colons")
    assert load_credentials("other", cfg) is None
    assert load_credentials("x", tmp_path / "missing.json") is None
    cfg.write_text("{nope")
    with pytest.raises(ConfigError, match=f"^{cfg}: invalid JSON"):
        load_credentials("x", cfg)


def test_retry_after_forms():
    class R:
        def __init__(self, v):
            self.headers = {"Retry-After": v} if v is not None else {}

    assert retry_after(R("7"), 1.0) == 7.0
    assert retry_after(R(None), 1.5) == 1.5
    assert retry_after(R("Wed, 21 Oct 2015 07:28:00 GMT"), 2.0) == 0.0  # a date in the past
    assert retry_after(R("soon"), 2.0) == 2.0


def test_credential_helpers(tmp_path):
    import json

    from provisioner.runner import Result
    from provisioner.testing import FakeRunner

    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({
        "credHelpers": {"123.dkr.ecr.eu-west-1.amazonaws.com": "ecr-login"},
        "auths": {"inline.example": {"auth": "dTpw"}, "stored.example": {}},
        "credsStore": "pass",
    }))
    inputs = []

    def helper(answer):
        def handler(argv):
            return Result(argv, 0, json.dumps(answer), "")
        return handler

    runner = FakeRunner()
    runner.expect(["docker-credential-ecr-login", "get"], handler=helper({"Username": "AWS", "Secret": "tok"}))
    runner.expect(["docker-credential-pass", "get"], handler=helper({"Username": "me", "Secret": "pw"}), times=1)
    real_run = runner.run

    def run(argv, **kw):
        inputs.append(kw.get("input"))
        return real_run(argv, **kw)

    runner.run = run
    c = load_credentials("123.dkr.ecr.eu-west-1.amazonaws.com", cfg, runner=runner)
    assert (c.username, c.password) == ("AWS", "tok")
    assert load_credentials("inline.example", cfg, runner=runner).username == "u"  # inline before credsStore
    assert load_credentials("stored.example", cfg, runner=runner).username == "me"
    assert inputs == ["123.dkr.ecr.eu-west-1.amazonaws.com", "stored.example"]

    runner.expect(["docker-credential-pass", "get"], returncode=1, stdout="credentials not found in native keychain",
                  times=1)
    assert load_credentials("unknown.example", cfg, runner=runner) is None
    runner.expect(["docker-credential-pass", "get"], returncode=1, stderr="gpg: decryption failed")
    with pytest.raises(ConfigError, match=r"credential helper docker-credential-pass failed for other.example"):
        load_credentials("other.example", cfg, runner=runner)


def test_a_pull_records_how_long_the_image_took_to_arrive(fake, store, tmp_path):
    """What the metrics endpoint serves as provisioner_image_pull_duration_seconds."""
    from provisioner.images import history

    four_layers(fake)
    res = pullmod.pull(f"{fake.address}/app:v1", store, tmp_path)
    pullmod.pull(f"{fake.address}/app:v1", store, tmp_path)   # again: nothing fetched
    (arrival,) = history.read(tmp_path)
    assert (arrival.image, arrival.how, arrival.layers, arrival.applied) == (res.reference, "pull", 4, 0)
    assert arrival.seconds > 0 and arrival.at > 0
