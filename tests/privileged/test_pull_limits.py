"""A hostile image against the store's disk: a 2 GiB gzip bomb (2 MB compressed) pulled into a
1 GiB loop-backed btrfs store is refused with one clear error naming the image and the layer,
before it writes its data, and the store is exactly as it was; `--max-size` the same way."""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from provisioner.imagebuild.loopfs import loop_btrfs
from provisioner.runner import Runner
from tests.registry_fixture import OCI_CONFIG, OCI_LAYER_GZ, OCI_MANIFEST, FakeRegistry, make_image, serve_image, sha256

pytestmark = pytest.mark.privileged

BOMB = 2 << 30
CHUNK = 64 << 20


def gzip_bomb() -> tuple[bytes, str]:
    """A layer of one 2 GiB file of zeros: concatenated gzip members (a valid gzip stream), the
    64 MiB member repeated; returns (blob, diff_id)."""
    header = tarfile.TarInfo("zeros")
    header.size = BOMB
    head = header.tobuf(format=tarfile.PAX_FORMAT)
    tail = b"\0" * 1024                           # end-of-archive blocks
    zero_member = gzip.compress(b"\0" * CHUNK, 9)
    blob = gzip.compress(head, 1) + zero_member * (BOMB // CHUNK) + gzip.compress(tail, 1)
    h = hashlib.sha256(head)
    zeros = b"\0" * CHUNK
    for _ in range(BOMB // CHUNK):
        h.update(zeros)
    h.update(tail)
    return blob, "sha256:" + h.hexdigest()


def image_of(blob: bytes, diff_id: str) -> dict:
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
                         "rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": len(config)},
                           "layers": [{"mediaType": OCI_LAYER_GZ, "digest": sha256(blob), "size": len(blob)}]}).encode()
    return {"manifest": manifest, "media_type": OCI_MANIFEST, "config": config,
            "blobs": {sha256(blob): blob, sha256(config): config}}


@pytest.fixture(scope="module")
def registry():
    blob, diff_id = gzip_bomb()
    assert len(blob) < 4 << 20
    with FakeRegistry() as reg:
        serve_image(reg, "bomb", ["1"], image_of(blob, diff_id))
        serve_image(reg, "good", ["1"], make_image([{"etc/hello": b"hello\n", "big": os.urandom(3 << 20)}]))
        serve_image(reg, "other", ["1"], make_image([{"big": os.urandom(3 << 20)}]))
        yield reg


@pytest.fixture
def root(tmp_path):
    with loop_btrfs(tmp_path / "fs", Runner(), size="1G") as mnt:
        yield mnt / "root"


def provision(root: Path, *args):
    return subprocess.run([sys.executable, "-m", "provisioner.cli.main", "--root", str(root), *args],
                          capture_output=True, text=True, timeout=300)


def tree(root: Path) -> list[tuple]:
    """Every path under root with its type, mode, size and (for files) content hash."""
    out = []
    for dirpath, dirs, files in os.walk(root):
        for name in sorted(dirs + files):
            p = Path(dirpath) / name
            st = p.lstat()
            digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() and not p.is_symlink() else ""
            out.append((str(p.relative_to(root)), st.st_mode, st.st_size if digest else 0, digest))
    return sorted(out)


def subvolumes(root: Path) -> str:
    return Runner().run(["btrfs", "subvolume", "list", "-o", str(root)]).stdout


def one_error(proc) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def test_a_2gib_gzip_bomb_on_a_1gib_store_is_refused_and_the_store_is_unchanged(registry, root):
    assert provision(root, "image", "pull", "-q", f"{registry.address}/good:1").returncode == 0
    before, subs = tree(root), subvolumes(root)
    start = time.monotonic()
    proc = provision(root, "image", "pull", "-q", f"{registry.address}/bomb:1")
    took = time.monotonic() - start
    err = one_error(proc)
    print(f"refused in {took:.1f}s: {err}")
    assert err.startswith(f"error: {registry.address}/bomb:1: layer sha256:")
    assert "stopped at entry 'zeros': the layer would write more than" in err
    assert "free on the store, less a 64.0 MiB reserve" in err and err.endswith("nothing was stored")
    assert tree(root) == before and subvolumes(root) == subs
    assert "bomb" not in provision(root, "image", "ls").stdout


def test_max_size_refuses_an_image_larger_than_it(registry, root):
    assert provision(root, "image", "pull", "-q", "--max-size", "8m", f"{registry.address}/good:1").returncode == 0
    before, subs = tree(root), subvolumes(root)
    # compressed alone larger than --max-size: refused before anything is downloaded
    err = one_error(provision(root, "image", "pull", "-q", "--max-size", "1m", f"{registry.address}/other:1"))
    assert err.startswith(f"error: {registry.address}/other:1: its 1 new layer(s) are 3.0 MiB compressed")
    assert "(--max-size 1.0 MiB); nothing was stored" in err
    # small compressed, large uncompressed: refused at the entry's header
    err = one_error(provision(root, "image", "pull", "-q", "--max-size", "100m", f"{registry.address}/bomb:1"))
    assert "stopped at entry 'zeros': the layer would write more than 100.0 MiB (--max-size 100.0 MiB)" in err
    assert tree(root) == before and subvolumes(root) == subs
