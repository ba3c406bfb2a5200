"""`image push` without root: the plan, the host-side missing-layer answer and load (over a fake
store), the tar stream between them, and push_image end to end through a FakeSsh that runs the
real `provision image layers/load` CLI against the fake store, from an in-process registry."""
from __future__ import annotations

import contextlib
import fcntl
import gzip
import io
import json
import os
import shlex
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from provisioner.cli import image as image_cli
from provisioner.cli.main import cli
from provisioner.images import imageload, imagereceive
from provisioner.images.reference import parse
from provisioner.images.registry import Registry, parse_platform
from provisioner.images.store import Store
from provisioner.errors import CommandError, HostError, ImageError, RegistryError
from provisioner.remote import imagepush
from provisioner.runner import Result
from provisioner.testing import FakeRunner
from tests.registry_fixture import FakeRegistry, make_image, serve_image, sha256

BASE = {"bin/sh": os.urandom(60000), "etc/passwd": b"root:x:0:0::/root:/bin/sh\n"}
TOP_A = {"etc/hostname": b"a\n"}
TOP_B = {"etc/hostname": b"b\n", "srv/app": os.urandom(3000)}


class FakeStore:
    """Chains as a set; add_layer reads the stream to EOF (so VerifiedFile checks run) and checks the diff_id."""

    chain_id = staticmethod(Store.chain_id)

    def __init__(self):
        self.chains: set[str] = set()
        self.names: dict[str, str] = {}
        self.applied: list[str] = []

    @contextlib.contextmanager
    def lock(self):
        yield self

    def recover(self):
        pass

    def has_chain(self, chain):
        return chain in self.chains

    def add_layer(self, parent, diff_id, fileobj, media_type):
        chain = Store.chain_id(parent, diff_id)
        if chain in self.chains:
            return chain
        assert parent is None or parent in self.chains
        data = b"".join(iter(lambda: fileobj.read(65536), b""))
        raw = gzip.decompress(data) if media_type.endswith("gzip") else data
        if sha256(raw) != diff_id:
            raise ImageError("diff_id mismatch")
        self.chains.add(chain)
        self.applied.append(diff_id)
        return chain

    def put_image(self, names, manifest_digest, manifest, config):
        assert sha256(manifest) == manifest_digest
        for n in names:
            self.names[n] = manifest_digest
        return SimpleNamespace(id=sha256(config), manifest_digest=manifest_digest)

    def get_image(self, key):
        if key not in self.names:
            raise ImageError(f"image {key!r} not found")
        return SimpleNamespace(id="sha256:" + "0" * 64, manifest_digest=self.names[key])

    def discard_unused(self, chains):
        for c in chains:
            self.chains.discard(c)

    def snapshot(self):
        return set(self.chains), dict(self.names)


class FakeSsh(FakeRunner):
    """The host, faked as any Runner is: `uname -m`, and `provision …` (as root) run through the
    real CLI with what was streamed to its stdin."""

    def __init__(self, root: Path, monkeypatch, store: FakeStore):
        super().__init__(where="op@host:22")
        self.root = root
        self.store = store
        self.streamed: list[int] = []
        monkeypatch.setattr(image_cli, "_store", lambda app: store)
        self.expect(["uname", "-m"], stdout="x86_64\n")
        self.expect(list(imagepush.REMOTE), prefix=True, handler=self._provision)

    @property
    def shell_calls(self) -> list[str]:
        return [shlex.join(c) for c in self.calls]

    def _provision(self, argv) -> Result:
        stdin = self.inputs[-1]
        stdin = stdin.encode() if isinstance(stdin, str) else (stdin or b"")
        if "load" in argv:
            self.streamed.append(len(stdin))
        res = CliRunner().invoke(cli, ["--root", str(self.root), *argv[len(imagepush.REMOTE):]], input=stdin)
        if isinstance(res.exception, ImageError):
            return Result(argv, 1, res.output, f"error: {res.exception}")
        assert res.exit_code == 0, (res.output, res.exception)
        return Result(argv, 0, res.output, "")


@pytest.fixture(scope="module")
def registry():
    with FakeRegistry() as reg:
        a = make_image([BASE, TOP_A])
        b = make_image([BASE, TOP_B])
        serve_image(reg, "team/a", ["1"], a)
        serve_image(reg, "team/b", ["1"], b)
        reg.images = {"a": a, "b": b}
        yield reg


@pytest.fixture
def host(tmp_path, monkeypatch):
    store = FakeStore()
    return FakeSsh(tmp_path / "hostroot", monkeypatch, store), store


def _push(ssh, registry, repo, **kw):
    ref = f"{registry.address}/{repo}:1"
    return imagepush.push_image(ssh, ref, insecure_registries=[registry.address], **kw)


# ---- the plan -------------------------------------------------------------------------------------
def _resolved(n_layers: int, digest: str = "sha256:" + "a" * 64):
    return SimpleNamespace(layers=[object()] * n_layers, manifest_digest=digest,
                           reference=parse("example.com/x:1"))


@pytest.mark.parametrize("answer,send,skip,up_to_date", [
    ({"missing": [], "image": {"manifest_digest": "sha256:" + "a" * 64}}, (), (0, 1, 2), True),
    ({"missing": [], "image": {"manifest_digest": "sha256:" + "b" * 64}}, (), (0, 1, 2), False),  # re-name only
    ({"missing": [], "image": None}, (), (0, 1, 2), False),
    ({"missing": [2], "image": None}, (2,), (0, 1), False),
    ({"missing": [0, 1, 2], "image": None}, (0, 1, 2), (), False),
    # a same-digest name with a layer gone (pruned meanwhile) is not up to date
    ({"missing": [1, 2], "image": {"manifest_digest": "sha256:" + "a" * 64}}, (1, 2), (0,), False),
])
def test_plan_push_sends_only_missing_layers(answer, send, skip, up_to_date):
    plan = imagepush.plan_push(_resolved(3), answer)
    assert (plan.send, plan.skip, plan.up_to_date) == (send, skip, up_to_date)


@pytest.mark.parametrize("answer,match", [
    ({"missing": [3]}, "reports layer 3 missing, but example.com/x:1 has 3 layers"),
    ({"layers": []}, "answer is not understood"),
    ({"missing": ["x"]}, "answer is not understood"),
    ({"missing": [], "image": "sha256:x"}, "answer is not understood"),
    (["not", "an", "object"], "answer is not understood"),
])
def test_plan_push_rejects_a_confused_host(answer, match):
    with pytest.raises(HostError, match=match):
        imagepush.plan_push(_resolved(3), answer)


def test_platform_of_uname():
    assert imagepush.platform_of("x86_64\n") == parse_platform("linux/amd64")
    assert imagepush.platform_of("aarch64") == parse_platform("linux/arm64")
    with pytest.raises(HostError, match="unknown host architecture 'pdp11'"):
        imagepush.platform_of("pdp11")


# ---- host side: which layers are missing --------------------------------------------------------------
def test_layer_states_against_a_store_holding_the_base():
    img = make_image([BASE, TOP_A])
    store = FakeStore()
    base_chain = Store.chain_id(None, img["diff_ids"][0])
    store.chains.add(base_chain)
    states = imageload.layer_states(store, img["diff_ids"])
    assert [(s.index, s.present) for s in states] == [(0, True), (1, False)]
    assert states[0].chain_id == base_chain
    assert states[1].chain_id == Store.chain_id(base_chain, img["diff_ids"][1])


def test_diff_ids_of_config_or_list_and_bad_input():
    ids = ["sha256:" + "1" * 64, "sha256:" + "2" * 64]
    assert imageload.diff_ids_of({"rootfs": {"type": "layers", "diff_ids": ids}}) == ids
    assert imageload.diff_ids_of(ids) == ids
    with pytest.raises(ImageError, match="no rootfs.diff_ids list"):
        imageload.diff_ids_of({"config": {}})
    with pytest.raises(ImageError, match="invalid diff_id in image config"):
        imageload.diff_ids_of(["sha256:nothex"])


def test_layers_cli_answers_missing_and_the_current_image(tmp_path, monkeypatch):
    img = make_image([BASE, TOP_A])
    store = FakeStore()
    store.chains.add(Store.chain_id(None, img["diff_ids"][0]))
    store.names["example.com/team/a:1"] = "sha256:" + "c" * 64
    monkeypatch.setattr(image_cli, "_store", lambda app: store)
    res = CliRunner().invoke(cli, ["--root", str(tmp_path), "--json", "image", "layers", "--missing",
                                   "--name", "example.com/team/a:1"], input=img["config"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["missing"] == [1] and [x["index"] for x in data["layers"]] == [1]
    assert data["image"]["manifest_digest"] == "sha256:" + "c" * 64
    res = CliRunner().invoke(cli, ["--root", str(tmp_path), "image", "layers"], input=b"not json")
    assert isinstance(res.exception, ImageError) and "stdin is not JSON" in str(res.exception)


# ---- push end to end over the fake host ---------------------------------------------------------------
def test_push_sends_missing_layers_then_nothing_then_only_the_new_layer(registry, host):
    ssh, store = host
    progress: list[tuple[int, int, int]] = []
    a = registry.images["a"]
    sizes = [len(a["blobs"][sha256_of]) for sha256_of in [d["digest"] for d in json.loads(a["manifest"])["layers"]]]

    first = _push(ssh, registry, "team/a", progress=lambda *p: progress.append(p))
    assert (first.sent, first.skipped, first.up_to_date) == ([0, 1], [], False)
    assert first.bytes_sent == sum(sizes)
    assert first.manifest_digest == sha256(a["manifest"]) and first.image_id == sha256(a["config"])
    assert {p[0] for p in progress} == {0, 1} and (0, sizes[0], sizes[0]) in progress
    assert store.names[f"{registry.address}/team/a:1"] == first.manifest_digest
    assert len(store.applied) == 2
    assert [p.name for p in (ssh.root / "incoming").iterdir()] == [".lock"]  # staging removed

    again = _push(ssh, registry, "team/a")
    assert again.up_to_date and again.sent == [] and again.skipped == [0, 1] and again.bytes_sent == 0
    assert len(ssh.streamed) == 1  # no load ran
    assert not any("image load" in c for c in ssh.shell_calls[-2:])

    b = _push(ssh, registry, "team/b")
    assert (b.sent, b.skipped) == ([1], [0])
    b_layers = json.loads(registry.images["b"]["manifest"])["layers"]
    assert b.bytes_sent == b_layers[1]["size"]
    assert ssh.streamed[-1] < b_layers[0]["size"]  # the shared base's blob did not travel
    assert store.names[f"{registry.address}/team/b:1"] == sha256(registry.images["b"]["manifest"])
    assert b.to_json()["sent"] == [1] and json.dumps(b.to_json())


def test_push_renames_without_sending_layers(registry, host):
    ssh, store = host
    _push(ssh, registry, "team/a")
    serve_image(registry, "team/a", ["2"], registry.images["a"])
    ref = f"{registry.address}/team/a:2"
    rep = imagepush.push_image(ssh, ref, insecure_registries=[registry.address])
    assert not rep.up_to_date and rep.sent == [] and rep.bytes_sent == 0
    assert store.names[ref] == rep.manifest_digest


@pytest.mark.parametrize("ref,match", [
    ("UPPER/Case:1", "invalid image reference 'UPPER/Case:1': repository name 'Case' must be lower-case"),
    ("example.com/x:bad tag", "invalid image reference 'example.com/x:bad tag': contains whitespace"),
    ("", "invalid image reference '': empty"),
])
def test_bad_refs_fail_before_the_host_is_asked(host, ref, match):
    ssh, store = host
    with pytest.raises(ImageError, match=match):
        imagepush.push_image(ssh, ref)
    assert ssh.calls == [] and store.snapshot() == (set(), {})


def test_unknown_tag_names_the_reference(registry, host):
    ssh, store = host
    with pytest.raises(ImageError, match="team/a:nope: not found"):
        imagepush.push_image(ssh, f"{registry.address}/team/a:nope", insecure_registries=[registry.address])
    assert store.snapshot() == (set(), {})


def test_corrupt_blob_in_the_registry_fails_the_push_and_loads_nothing(registry, host):
    ssh, store = host
    layer = json.loads(registry.images["a"]["manifest"])["layers"][1]["digest"]
    good = registry.blobs[layer]
    registry.blobs[layer] = good[:-5] + b"XXXXX"
    try:
        with pytest.raises(RegistryError, match=layer[:19]):
            _push(ssh, registry, "team/a")
    finally:
        registry.blobs[layer] = good
    assert store.snapshot() == (set(), {})


# ---- host side: the stream, staging, and load ----------------------------------------------------------------
def _tar_of(registry, repo: str, send_layers, platform="linux/amd64") -> tuple[bytes, object]:
    reg = Registry(parse(f"{registry.address}/{repo}:1"), insecure_hosts=[registry.address])
    image = reg.resolve(parse_platform(platform))
    buf = bytearray()
    imagepush.write_layout_tar(buf.extend, [imagepush.Shipment(image, reg.open_blob, tuple(send_layers))])
    return bytes(buf), image


def test_stream_round_trip_and_layout_read(registry, tmp_path):
    data, image = _tar_of(registry, "team/a", [0, 1])
    n = imagereceive.receive_tar(io.BytesIO(data), tmp_path)
    assert n == sum(d.size for d in image.layers) + len(image.manifest) + len(image.config) + len(
        (tmp_path / "index.json").read_bytes()) + len((tmp_path / "oci-layout").read_bytes())
    got = imageload.read_layout(tmp_path)
    assert (got.manifest_digest, got.diff_ids, got.config) == (image.manifest_digest, image.diff_ids, image.config)


def test_interrupted_stream_is_one_error_and_staging_goes(registry, tmp_path):
    data, _ = _tar_of(registry, "team/a", [0, 1])
    with pytest.raises(ImageError, match="not a complete tar of an OCI layout"):
        with imagereceive.incoming(tmp_path) as work:
            imagereceive.receive_tar(io.BytesIO(data[: len(data) // 2]), work)
    assert [p.name for p in (tmp_path / "incoming").iterdir()] == [".lock"]


def test_tampered_blob_in_the_stream_is_refused_and_nothing_kept(registry, tmp_path):
    data, image = _tar_of(registry, "team/a", [0, 1])
    blob = registry.blobs[image.layers[1].digest]
    bad = data.replace(blob[100:140], bytes(40))
    store = FakeStore()
    with pytest.raises(ImageError, match=f"blob {image.layers[1].digest} failed verification"):
        imagereceive.receive_and_load(io.BytesIO(bad), store, tmp_path)
    assert store.snapshot() == (set(), {}) and len(store.applied) == 1  # layer 0 went in, then out again


def test_receive_and_load_applies_layers_as_they_arrive(registry, tmp_path):
    data, image = _tar_of(registry, "team/a", [0, 1])
    store = FakeStore()
    (res,) = imagereceive.receive_and_load(io.BytesIO(data), store, tmp_path)
    assert res.names == [str(image.reference)] and store.names[res.names[0]] == image.manifest_digest
    assert (res.applied, res.present) == ([0, 1], [])
    # applied from the stream: no layer blob was staged
    staged = {p.name for p in (tmp_path / "blobs" / "sha256").iterdir()}
    assert staged == {image.manifest_digest[7:], image.config_digest[7:]}


def test_receive_and_load_stages_blobs_that_arrive_before_their_metadata(registry, tmp_path):
    import tarfile

    data, image = _tar_of(registry, "team/a", [0, 1])
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for m, body in members[::-1]:  # layers first, index.json last
            tar.addfile(m, io.BytesIO(body))
    out.seek(0)
    store = FakeStore()
    (res,) = imagereceive.receive_and_load(out, store, tmp_path)
    assert res.applied == [0, 1] and store.names[res.names[0]] == image.manifest_digest
    assert (tmp_path / "blobs" / "sha256" / image.layers[0].digest[7:]).exists()


def test_interrupted_stream_after_a_layer_was_applied_keeps_nothing(registry, tmp_path):
    data, image = _tar_of(registry, "team/a", [0, 1])
    store = FakeStore()
    cut = data[: data.index(registry.blobs[image.layers[1].digest][:64]) + 100]  # inside layer 1
    with pytest.raises(ImageError, match="not a complete tar of an OCI layout"):
        imagereceive.receive_and_load(io.BytesIO(cut), store, tmp_path)
    assert store.snapshot() == (set(), {}) and len(store.applied) == 1


@pytest.mark.parametrize("name,kind", [("../evil", "file"), ("blobs/sha256/../../x", "file"),
                                       ("etc/passwd", "file"), ("index.json", "symlink")])
def test_stream_with_foreign_entries_is_refused(tmp_path, name, kind):
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        ti = tarfile.TarInfo(name)
        if kind == "symlink":
            ti.type, ti.linkname = tarfile.SYMTYPE, "/etc/shadow"
            tar.addfile(ti)
        else:
            ti.size = 3
            tar.addfile(ti, io.BytesIO(b"abc"))
    buf.seek(0)
    with pytest.raises(ImageError, match="unexpected entry"):
        imagereceive.receive_tar(buf, tmp_path / "dest")
    assert not (tmp_path / "dest").exists() or not any((tmp_path / "dest").rglob("*"))


def test_incoming_sweeps_stale_dirs_but_not_ones_in_use(tmp_path):
    base = tmp_path / "incoming"
    stale, busy = base / "1-1-dead", base / "2-2-busy"
    for d in (stale, busy):
        d.mkdir(parents=True)
        (d / "blob").write_bytes(b"x")
    fd = os.open(busy, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with imagereceive.incoming(tmp_path) as work:
            assert work.is_dir() and work.parent == base
            assert not stale.exists() and busy.exists()
        assert not work.exists()
    finally:
        os.close(fd)


def _layout(registry, tmp_path, repo, send_layers):
    data, image = _tar_of(registry, repo, send_layers)
    dest = tmp_path / repo.replace("/", "-")
    imagereceive.receive_tar(io.BytesIO(data), dest)
    return dest, image


def test_load_without_blobs_of_stored_chains(registry, tmp_path):
    store = FakeStore()
    full, a = _layout(registry, tmp_path, "team/a", [0, 1])
    imageload.load(store, full, ["x/a:1"])
    partial, b = _layout(registry, tmp_path, "team/b", [1])
    res = imageload.load(store, partial, ["x/b:1"])
    assert (res.applied, res.present, res.manifest_digest) == ([1], [0], b.manifest_digest)
    assert store.names["x/b:1"] == b.manifest_digest


def test_load_missing_needed_blob_names_it_and_changes_nothing(registry, tmp_path):
    store = FakeStore()
    partial, b = _layout(registry, tmp_path, "team/b", [1])
    with pytest.raises(ImageError, match=f"layer 0 blob {b.layers[0].digest} is missing from the layout"):
        imageload.load(store, partial, ["x/b:1"])
    assert store.snapshot() == (set(), {})


def test_load_with_a_corrupt_later_blob_discards_earlier_layers(registry, tmp_path):
    store = FakeStore()
    full, a = _layout(registry, tmp_path, "team/a", [0, 1])
    path = full / "blobs" / "sha256" / a.layers[1].digest.split(":", 1)[1]
    path.write_bytes(path.read_bytes()[:-1] + b"!")
    with pytest.raises(ImageError, match=f"layer blob {a.layers[1].digest} failed verification"):
        imageload.load(store, full, ["x/a:1"])
    assert store.snapshot() == (set(), {}) and len(store.applied) == 1  # layer 0 applied, then discarded


def test_read_layout_errors(tmp_path, registry):
    with pytest.raises(ImageError, match="not an OCI image layout"):
        imageload.read_layout(tmp_path)
    full, a = _layout(registry, tmp_path, "team/a", [0, 1])
    with pytest.raises(ImageError, match="tag 'nope' not found"):
        imageload.read_layout(full, "nope")
    assert imageload.read_layout(full, str(a.reference)).manifest_digest == a.manifest_digest
    (full / "blobs" / "sha256" / a.config_digest.split(":", 1)[1]).write_bytes(b"{}")
    with pytest.raises(ImageError, match=f"config blob {a.config_digest} failed verification"):
        imageload.read_layout(full)


# ---- several images in one push --------------------------------------------------------------------------
def test_push_images_batch_sends_a_shared_base_once(registry, host):
    ssh, store = host
    a_ref, b_ref = f"{registry.address}/team/a:1", f"{registry.address}/team/b:1"
    seen: list[tuple[str, int]] = []
    a, b = imagepush.push_images(ssh, [a_ref, b_ref], insecure_registries=[registry.address],
                                 progress=lambda ref, i, done, size: seen.append((ref, i)) if done == size else None)
    assert (a.sent, a.skipped) == ([0, 1], []) and (b.sent, b.skipped) == ([1], [0])
    layers_a = json.loads(registry.images["a"]["manifest"])["layers"]
    layers_b = json.loads(registry.images["b"]["manifest"])["layers"]
    assert a.bytes_sent == layers_a[0]["size"] + layers_a[1]["size"] and b.bytes_sent == layers_b[1]["size"]
    assert seen == [(a_ref, 0), (a_ref, 1), (b_ref, 1)]
    # one question and one stream for both images
    assert [c.split(" image ")[1].split()[0] for c in ssh.shell_calls if " image " in c] == ["layers", "load"]
    assert store.names == {a_ref: a.manifest_digest, b_ref: b.manifest_digest}
    assert len(store.applied) == 3

    again = imagepush.push_images(ssh, [b_ref, a_ref, b_ref], insecure_registries=[registry.address])
    assert [r.ref for r in again] == [b_ref, a_ref, b_ref] and all(r.up_to_date for r in again)
    assert len(ssh.streamed) == 1


def test_layers_query_for_several_images_and_its_errors(tmp_path):
    img = make_image([BASE, TOP_A])
    store = FakeStore()
    store.chains.add(Store.chain_id(None, img["diff_ids"][0]))
    data = imageload.answer_query(store, {"images": [{"name": "a:1", "diff_ids": img["diff_ids"]},
                                                     {"name": "b", "config": json.loads(img["config"])}]})
    assert [(x["name"], x["missing"], x["image"]) for x in data["images"]] == [
        ("docker.io/library/a:1", [1], None), ("docker.io/library/b:latest", [1], None)]
    for doc, match in [({"images": {}}, "must be a list"), ({"images": [{"diff_ids": []}]}, "entry 0: no name"),
                       ({"images": [{"name": "Bad Name", "diff_ids": []}]}, "invalid image reference 'Bad Name'"),
                       ({"images": [{"name": "a", "diff_ids": ["x"]}]}, "entry 0")]:
        with pytest.raises(ImageError, match=match):
            imageload.answer_query(store, doc)


def test_load_all_names_each_image_by_its_tag(registry, tmp_path):
    store = FakeStore()
    data, image = _tar_of(registry, "team/a", [0, 1])
    dest = tmp_path / "all"
    imagereceive.receive_tar(io.BytesIO(data), dest)
    (res,) = imageload.load_all(store, dest)
    assert res.names == [str(image.reference)] and store.names[str(image.reference)] == image.manifest_digest
    index = json.loads((dest / "index.json").read_text())
    index["manifests"][0]["annotations"][imageload.REF_NAME] = "latest but not a ref"
    (dest / "index.json").write_text(json.dumps(index))
    with pytest.raises(ImageError, match="tag 'latest but not a ref' is not an image reference"):
        imageload.load_all(FakeStore(), dest)


def test_docker_schema2_and_multi_platform_images_push(host):
    ssh, store = host
    with FakeRegistry() as reg:
        docker = make_image([BASE, {"etc/docker": b"1\n"}], docker=True)
        serve_image(reg, "d/img", ["1"], docker)
        amd, arm = make_image([{"arch": b"amd64\n"}]), make_image([{"arch": b"arm64\n"}], arch="arm64")
        for img in (amd, arm):
            serve_image(reg, "m/img", [], img)
        index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
            {"mediaType": img["media_type"], "digest": sha256(img["manifest"]), "size": len(img["manifest"]),
             "platform": {"os": "linux", "architecture": arch}} for img, arch in ((amd, "amd64"), (arm, "arm64"))]})
        reg.add_manifest("m/img", ["1"], "application/vnd.oci.image.index.v1+json", index.encode())
        d, m = imagepush.push_images(ssh, [f"{reg.address}/d/img:1", f"{reg.address}/m/img:1"],
                                     insecure_registries=[reg.address])
        # the host said x86_64: the amd64 manifest of the index went, not the index
        assert d.manifest_digest == sha256(docker["manifest"]) and m.manifest_digest == sha256(amd["manifest"])
        assert store.names[f"{reg.address}/m/img:1"] == sha256(amd["manifest"])
        arm_push = imagepush.push_image(ssh, f"{reg.address}/m/img:1", insecure_registries=[reg.address],
                                        platform="linux/arm64")
        assert arm_push.manifest_digest == sha256(arm["manifest"]) and arm_push.sent == [0]


def test_a_host_side_failure_is_one_error_naming_the_host(registry, host, monkeypatch):
    ssh, store = host

    def broken(app):
        raise ImageError("image store /var/lib/provisioner/images must be on btrfs (it is on ext4)")

    monkeypatch.setattr(image_cli, "_store", broken)
    with pytest.raises(CommandError, match=r"^ssh op@host:22: command failed \(exit 1\): provision --json image "
                                           r"layers: error: image store .* must be on btrfs"):
        _push(ssh, registry, "team/a")
