"""`provision image load` / `image layers` against a real btrfs store on a loop device, as the host
side of `image push` runs them: layouts with the blobs of already-stored chains left out load; a
layout lacking a needed blob, or with a corrupt one, fails with one clear line and leaves the store
exactly as it was; a layout arriving as a tar on stdin is staged and the staging removed."""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from provisioner.imagebuild.loopfs import loop_btrfs
from provisioner.runner import Runner
from tests.registry_fixture import make_image, write_oci_layout

pytestmark = pytest.mark.privileged

BASE = {"bin/tool": os.urandom(400_000), "etc/os-release": b"ID=base\n"}
TOP_A = {"etc/hostname": b"a\n"}
TOP_B = {"etc/hostname": b"b\n", "srv/b": os.urandom(100_000)}
OTHER = {"opt/other": os.urandom(50_000)}
OTHER_TOP = {"opt/top": b"top\n"}


def provision(root: Path, *args, input: bytes | None = None):
    return subprocess.run([sys.executable, "-m", "provisioner.cli.main", "--root", str(root), *args],
                          capture_output=True, input=input, timeout=300)


def ok(proc) -> dict:
    assert proc.returncode == 0, proc.stderr.decode()
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    with loop_btrfs(tmp_path_factory.mktemp("btrfs"), Runner(), size="1G") as mnt:
        yield mnt / "root"


def layout(tmp: Path, name: str, image: dict, drop: list[int] = ()) -> Path:
    """An OCI layout of `image` without the blobs of the layers in `drop`."""
    dest = write_oci_layout(tmp / name, "latest", [image])
    for i in drop:
        digest = json.loads(image["manifest"])["layers"][i]["digest"]
        (dest / "blobs" / "sha256" / digest.split(":", 1)[1]).unlink()
    return dest


def store_state(root: Path) -> dict:
    images = root / "images"

    def ls(d: str) -> list[str]:
        return sorted(p.name for p in (images / d).iterdir()) if (images / d).is_dir() else []

    repos = images / "repositories.json"
    return {"layers": ls("layers"), "records": ls("records"), "tmp": ls("tmp"),
            "repositories": repos.read_text() if repos.exists() else ""}


def test_load_layers_and_partial_layouts(root, tmp_path):
    a, b = make_image([BASE, TOP_A]), make_image([BASE, TOP_B])
    # nothing stored yet: both layers missing
    missing = ok(provision(root, "image", "layers", "--missing", "--json", "--name", "example.com/a:1",
                           input=a["config"]))
    assert missing["missing"] == [0, 1] and missing["image"] is None

    full = ok(provision(root, "image", "load", str(layout(tmp_path, "a", a)), "--name", "example.com/a:1",
                        "--json"))
    assert full["applied"] == [0, 1] and full["names"] == ["example.com/a:1"]

    answer = ok(provision(root, "image", "layers", "--json", "--name", "example.com/a:1", input=b["config"]))
    assert answer["missing"] == [1] and [x["present"] for x in answer["layers"]] == [True, False]
    assert answer["image"]["manifest_digest"] == full["manifest_digest"]

    # B's layout without its base blob: the base chain is stored, so it loads
    partial = ok(provision(root, "image", "load", str(layout(tmp_path, "b", b, drop=[0])),
                           "--name", "example.com/b:1", "--json"))
    assert (partial["applied"], partial["present"]) == ([1], [0])
    out = tmp_path / "export-b"
    assert provision(root, "image", "export", "example.com/b:1", str(out)).returncode == 0
    assert (out / "bin/tool").read_bytes() == BASE["bin/tool"]
    assert (out / "srv/b").read_bytes() == TOP_B["srv/b"] and (out / "etc/hostname").read_text() == "b\n"
    # a layout with every layer blob left out, under a second name: nothing applied
    again = ok(provision(root, "image", "load", str(layout(tmp_path, "b2", b, drop=[0, 1])),
                         "--name", "example.com/b:2", "--json"))
    assert again["applied"] == [] and again["id"] == partial["id"]
    assert not any((root / "images" / "tmp").iterdir())


def one_line_error(proc, *expected: str) -> str:
    err = proc.stderr.decode().strip()
    assert proc.returncode != 0 and len(err.splitlines()) == 1, err
    for text in expected:
        assert text in err, err
    return err


def test_missing_needed_blob_is_one_error_and_store_unchanged(root, tmp_path):
    img = make_image([OTHER, OTHER_TOP])
    digest = json.loads(img["manifest"])["layers"][0]["digest"]
    before = store_state(root)
    proc = provision(root, "image", "load", str(layout(tmp_path, "other", img, drop=[0])), "--name", "x/other:1")
    one_line_error(proc, f"layer 0 blob {digest} is missing from the layout", "is not in the store")
    assert store_state(root) == before


def test_corrupt_later_blob_discards_the_layers_it_added(root, tmp_path):
    img = make_image([OTHER, {"opt/more": os.urandom(20_000)}])
    dest = layout(tmp_path, "corrupt", img)
    digest = json.loads(img["manifest"])["layers"][1]["digest"]
    blob = dest / "blobs" / "sha256" / digest.split(":", 1)[1]
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    before = store_state(root)
    proc = provision(root, "image", "load", str(dest), "--name", "x/corrupt:1")
    one_line_error(proc, f"layer blob {digest} failed verification")
    assert store_state(root) == before  # layer 0 was applied, then discarded again


def _tar_of(directory: Path, first: list[str] = ()) -> bytes:
    files = [str(p.relative_to(directory)) for p in sorted(directory.rglob("*")) if p.is_file()]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in [f for f in first if f in files] + [f for f in files if f not in first]:
            tar.add(directory / name, arcname=name)
    return buf.getvalue()


def sha256_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_load_from_stdin_tar_stages_and_cleans_up(root, tmp_path):
    ok(provision(root, "--json", "image", "load", str(layout(tmp_path, "a", make_image([BASE, TOP_A]))),
                 "--name", "example.com/a:1"))  # BASE's chain is stored (again: no-op)
    img = make_image([BASE, {"etc/hostname": b"stdin\n"}])
    data = _tar_of(layout(tmp_path, "stdin", img, drop=[0]))
    stale = root / "incoming" / "1-1-stale"
    stale.mkdir(parents=True)
    (stale / "junk").write_bytes(b"left by a killed load")
    res = ok(provision(root, "--json", "image", "load", "-", "--name", "example.com/stdin:1", input=data))
    assert res["applied"] == [1] and res["present"] == [0]
    assert [p.name for p in (root / "incoming").iterdir()] == [".lock"]
    # an interrupted stream: one line, nothing staged left, store unchanged
    before = store_state(root)
    img2 = make_image([OTHER, {"etc/hostname": b"cut\n"}])
    cut = _tar_of(layout(tmp_path, "cut", img2))
    proc = provision(root, "image", "load", "-", "--name", "example.com/cut:1", input=cut[: len(cut) // 2])
    one_line_error(proc, "not a complete tar of an OCI layout")
    assert store_state(root) == before
    assert [p.name for p in (root / "incoming").iterdir()] == [".lock"]
    shutil.rmtree(tmp_path / "cut")


@pytest.mark.parametrize("source", ["dir", "stdin"])
def test_load_all_two_images_sharing_a_layer(root, tmp_path, source):
    base = {"opt/shared": os.urandom(30_000)}
    one, two = make_image([base, {"x": b"1"}]), make_image([base, {"x": b"2"}])
    dest = write_oci_layout(tmp_path / "two", "example.com/one:1", [one])
    # a second tagged entry in the same layout, as `image push` writes several images
    second = write_oci_layout(tmp_path / "tmp2", "example.com/two:1", [two])
    for blob in (second / "blobs" / "sha256").iterdir():
        shutil.copy(blob, dest / "blobs" / "sha256" / blob.name)
    index = json.loads((dest / "index.json").read_text())
    index["manifests"] += json.loads((second / "index.json").read_text())["manifests"]
    (dest / "index.json").write_text(json.dumps(index))
    before = len(store_state(root)["layers"])
    if source == "dir":
        res = ok(provision(root, "--json", "image", "load", str(dest), "--all"))
    else:  # layers applied straight from the stream (manifests and configs first, as `image push` sends)
        order = ["oci-layout", "index.json"] + [f"blobs/sha256/{d[7:]}" for img in (one, two) for d in (
            sha256_of(img["manifest"]), sha256_of(img["config"]))]
        res = ok(provision(root, "--json", "image", "load", "-", "--all", input=_tar_of(dest, first=order)))
        assert [p.name for p in (root / "incoming").iterdir()] == [".lock"]
    assert [(r["names"], r["applied"], r["present"]) for r in res["images"]] == [
        (["example.com/one:1"], [0, 1], []), (["example.com/two:1"], [1], [0])]
    assert len(store_state(root)["layers"]) == before + 2 * 3  # 3 chains, each a subvolume + its .json
