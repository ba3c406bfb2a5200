"""Store logic with a FakeRunner standing in for btrfs (subvolumes simulated as directories)."""
from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import pytest

from provisioner.images.layers import MT_OCI_TAR
from provisioner.images.store import Store
from provisioner.errors import ImageError
from provisioner.imagebuild.tarbuild import F, WH, tar_bytes
from provisioner.runner import Result
from provisioner.testing import FakeRunner


def fake_btrfs() -> FakeRunner:
    def ok(argv):
        return Result(argv, 0, "", "")

    def create(argv):
        Path(argv[-1]).mkdir()
        return ok(argv)

    def snap(argv):
        shutil.copytree(argv[-2], argv[-1], symlinks=True)
        return ok(argv)

    def delete(argv):
        shutil.rmtree(argv[-1])
        return ok(argv)

    def cp(argv):
        shutil.copytree(argv[-2], argv[-1], symlinks=True, dirs_exist_ok=True)
        return ok(argv)

    r = FakeRunner()
    r.expect(["btrfs", "subvolume", "create"], prefix=True, handler=create)
    r.expect(["btrfs", "subvolume", "snapshot"], prefix=True, handler=snap)
    r.expect(["btrfs", "subvolume", "delete"], prefix=True, handler=delete)
    r.expect(["btrfs", "property", "set"], prefix=True)
    r.expect(["cp", "-a"], prefix=True, handler=cp)
    return r


def layer(entries):
    raw = tar_bytes(entries)
    return raw, "sha256:" + hashlib.sha256(raw).hexdigest()


def image_blobs(diff_ids, tag="x"):
    config = json.dumps({"architecture": "amd64", "os": "linux", "tag": tag,
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    manifest = json.dumps({"schemaVersion": 2, "config": {"digest": "sha256:" + hashlib.sha256(config).hexdigest()},
                           "layers": []}).encode()
    return "sha256:" + hashlib.sha256(manifest).hexdigest(), manifest, config


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path, fake_btrfs(), check_fs=False)


def add_image(store, names, layer_entries):
    parent, diff_ids = None, []
    for entries in layer_entries:
        raw, diff_id = layer(entries)
        parent = store.add_layer(parent, diff_id, io.BytesIO(raw), MT_OCI_TAR)
        diff_ids.append(diff_id)
    return store.put_image(names, *image_blobs(diff_ids, tag=names[0] if names else "x"))


def test_store_refuses_a_non_btrfs_root(tmp_path):
    with pytest.raises(ImageError, match=r"must be on btrfs .*provision doctor"):
        Store(tmp_path, FakeRunner())


def test_chain_id_follows_the_oci_definition():
    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    assert Store.chain_id(None, a) == a
    assert Store.chain_id(a, b) == "sha256:" + hashlib.sha256(f"{a} {b}".encode()).hexdigest()
    with pytest.raises(ImageError, match="invalid diff_id"):
        Store.chain_id(None, "sha256:../../etc")


def test_add_layers_put_get_export(store, tmp_path):
    rec = add_image(store, ["docker.io/library/t:1"], [[F("a", "1"), F("b", "2")], [WH("a"), F("c", "3")]])
    assert store.get_image("docker.io/library/t:1").id == rec.id
    assert store.get_image(rec.id[7:19]).names == ["docker.io/library/t:1"]
    assert rec.top_chain == rec.chain_ids[-1] and len(rec.chain_ids) == 2
    assert rec.size > 0 and rec.config["rootfs"]["diff_ids"]
    store.export("docker.io/library/t:1", tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["b", "c"]
    with pytest.raises(ImageError, match="must be an empty directory"):
        store.export(rec.id, tmp_path / "out")


def test_shared_layers_are_stored_once_and_prune_keeps_used_chains(store):
    base = [F("base", "b")]
    a = add_image(store, ["r/a:1"], [base, [F("a", "a")]])
    b = add_image(store, ["r/b:1"], [base, [F("b", "b")]])
    assert a.chain_ids[0] == b.chain_ids[0]
    assert len([p for p in store.layers.iterdir() if p.is_dir()]) == 3
    snaps = store.runner.commands("btrfs")
    assert sum(1 for c in snaps if c[2] == "create") == 1  # the base layer was applied once
    store.remove_image("r/a:1")
    assert [i.names for i in store.images()] == [["r/b:1"]]
    assert not store.has_chain(a.chain_ids[1]) and store.has_chain(b.chain_ids[0])
    store.remove_image(b.id)
    assert store.images() == [] and not any(store.layers.iterdir())


def test_names_move_between_images_and_unknown_refs_fail(store):
    one = add_image(store, ["r/x:latest", "r/x:1"], [[F("v", "1")]])
    two = add_image(store, ["r/x:latest"], [[F("v", "2")]])
    assert store.get_image("r/x:latest").id == two.id
    assert store.get_image("r/x:1").names == ["r/x:1"] and store.get_image("r/x:1").id == one.id
    three = add_image(store, ["r/x:1"], [[F("v", "3")]])  # one.id loses its last name: removed
    assert {i.id for i in store.images()} == {two.id, three.id}
    assert store.prune() == [one.top_chain]
    with pytest.raises(ImageError, match="image 'r/nope:1' not found"):
        store.get_image("r/nope:1")
    with pytest.raises(ImageError, match="not found"):
        store.remove_image("r/nope:1")


def test_wrong_diff_id_is_rejected_and_the_store_is_unchanged(store):
    raw, _ = layer([F("a", "1")])
    wrong = "sha256:" + "0" * 64
    with pytest.raises(ImageError, match="diff_id mismatch"):
        store.add_layer(None, wrong, io.BytesIO(raw), MT_OCI_TAR)
    assert not any(store.tmp.iterdir()) and not any(store.layers.iterdir())


def test_add_layer_drains_the_stream_and_cleans_up_when_it_raises(store):
    raw, diff_id = layer([F("a", "1")])

    class Verifying(io.RawIOBase):
        def __init__(self):
            self.inner = io.BytesIO(raw + b"\0" * 4096)

        def readable(self):
            return True

        def read(self, n=-1):
            data = self.inner.read(n)
            if not data:
                raise ImageError("blob sha256:abc: digest mismatch")
            return data

    with pytest.raises(ImageError, match="digest mismatch"):
        store.add_layer(None, diff_id, Verifying(), MT_OCI_TAR)
    assert not any(store.tmp.iterdir()) and not store.has_chain(diff_id)


def test_put_image_requires_layers_and_a_matching_manifest_digest(store):
    digest, manifest, config = image_blobs(["sha256:" + "1" * 64])
    with pytest.raises(ImageError, match="is not in the store"):
        store.put_image(["r/x:1"], digest, manifest, config)
    with pytest.raises(ImageError, match="manifest digest mismatch"):
        store.put_image(["r/x:1"], "sha256:" + "2" * 64, manifest, config)


def test_recover_removes_leftovers(store):
    (store.tmp / "half-done").mkdir()
    (store.layers / ("f" * 64 + ".json")).write_text("{}")
    (store.records / ".x.json.tmp").write_text("")
    store.recover()
    assert not any(store.tmp.iterdir()) and not any(store.layers.iterdir())
    assert not any(store.records.iterdir())


def test_recover_drops_records_a_crash_left_without_names(store):
    rec = add_image(store, ["r/x:1"], [[F("a", "1")]])
    store._write_repos({})  # as if killed between the record and repositories.json
    store.recover()
    assert store.images() == []
    assert store.has_chain(rec.top_chain)  # layers stay until prune (a re-pull reuses them)
    assert store.prune() == [rec.top_chain]


def test_lock_is_reentrant(store):
    with store.lock():
        with store.lock():
            store.prune()
    assert store._lock_fd is None
