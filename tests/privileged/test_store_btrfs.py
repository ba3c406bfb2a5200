"""The layer store on a real loop-backed btrfs: chains, sharing, removal, export, snapshots, crashes."""
from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from provisioner.images.layers import MT_OCI_GZIP, MT_OCI_TAR
from provisioner.images.store import Store
from provisioner.errors import ImageError
from provisioner.imagebuild.loopfs import loop_btrfs
from provisioner.imagebuild.tarbuild import C, D, F, FIFO, H, L, OPQ, WH, tar_bytes
from provisioner.runner import Runner

pytestmark = pytest.mark.privileged


@pytest.fixture(scope="module")
def btrfs_mnt(tmp_path_factory):
    with loop_btrfs(tmp_path_factory.mktemp("btrfs"), Runner(), size="1G") as mnt:
        yield mnt


@pytest.fixture
def store(btrfs_mnt, request):
    return Store(btrfs_mnt / request.node.name.replace("[", "_").replace("]", ""), Runner())


def layer(entries):
    raw = tar_bytes(entries)
    return raw, "sha256:" + hashlib.sha256(raw).hexdigest()


def put(store, names, layer_entries):
    parent, diff_ids = None, []
    for entries in layer_entries:
        raw, diff_id = layer(entries)
        parent = store.add_layer(parent, diff_id, io.BytesIO(raw), MT_OCI_TAR)
        diff_ids.append(diff_id)
    config = json.dumps({"names": names, "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    manifest = json.dumps({"schemaVersion": 2, "n": names}).encode()
    return store.put_image(names, "sha256:" + hashlib.sha256(manifest).hexdigest(), manifest, config)


def subvolumes(mnt: Path) -> list[str]:
    out = Runner().run(["btrfs", "subvolume", "list", "-o", str(mnt)]).stdout
    return [line.split(" path ", 1)[1] for line in out.splitlines() if " path " in line]


def test_non_btrfs_root_gets_a_clear_error(tmp_path):
    with pytest.raises(ImageError, match="must be on btrfs"):
        Store(tmp_path, Runner())


def test_layers_are_readonly_subvolumes_shared_between_images(store, btrfs_mnt):
    base = [D("etc"), F("etc/os-release", "ID=test\n"), F("bin/busybox", "bb", mode=0o755)]
    a = put(store, ["r/a:1"], [base, [F("a", "a"), WH("etc/os-release")]])
    b = put(store, ["r/b:1"], [base, [F("b", "b"), OPQ("etc")]])
    assert a.chain_ids[0] == b.chain_ids[0]
    layer_dirs = sorted(p.name for p in store.layers.iterdir() if p.is_dir())
    assert len(layer_dirs) == 3
    for name in layer_dirs:
        p = store.layers / name
        assert os.lstat(p).st_ino == 256  # a subvolume root
        with pytest.raises(OSError):
            (p / "write-test").write_text("x")  # read-only
    assert not (store.layer_path(a.top_chain) / "etc/os-release").exists()
    assert (store.layer_path(a.chain_ids[0]) / "etc/os-release").exists()  # lower chain untouched


def test_remove_prune_export_snapshot(store, tmp_path):
    img = put(store, ["r/full:1"], [
        [D("home/u", uid=1000, gid=1000, mode=0o750), F("home/u/s", "x", mode=0o4755, uid=1000, gid=1000),
         C("dev/null", 1, 3), FIFO("run/f"), L("bin/sh", "busybox"), F("bin/busybox", "bb"), H("bin/ls", "bin/busybox"),
         F("attr", "a", xattrs={"user.note": b"hello", "trusted.t": b"1"})],
    ])
    out = tmp_path / "export"
    store.export("r/full:1", out)
    st = (out / "home/u/s").stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1000, 1000, 0o4755)
    assert stat.S_ISCHR((out / "dev/null").lstat().st_mode) and stat.S_ISFIFO((out / "run/f").lstat().st_mode)
    assert (out / "bin/ls").stat().st_ino == (out / "bin/busybox").stat().st_ino
    assert os.getxattr(out / "attr", "user.note") == b"hello"
    assert os.getxattr(out / "attr", "trusted.t") == b"1"

    snap = store.snapshot(img.top_chain, store.root / "container-1")
    (snap / "bin/new").write_text("container write")
    assert not (store.layer_path(img.top_chain) / "bin/new").exists()
    Runner().run(["btrfs", "subvolume", "delete", str(snap)])

    removed_before = store.prune()
    assert removed_before == []
    store.remove_image("r/full:1")
    assert store.images() == [] and not any(p.is_dir() for p in store.layers.iterdir())
    assert not any(store.tmp.iterdir())


def test_wrong_diff_id_rejected_store_unchanged(store, btrfs_mnt):
    raw, diff_id = layer([F("a", "1")])
    before = set(subvolumes(btrfs_mnt))
    with pytest.raises(ImageError, match="diff_id mismatch"):
        store.add_layer(None, "sha256:" + "0" * 64, io.BytesIO(raw), MT_OCI_TAR)
    assert set(subvolumes(btrfs_mnt)) == before
    assert not any(store.tmp.iterdir()) and not any(store.layers.iterdir())
    assert store.add_layer(None, diff_id, io.BytesIO(raw), MT_OCI_TAR) == diff_id


_CHILD = """
import sys
from pathlib import Path
from provisioner.images.store import Store
from provisioner.runner import Runner
store = Store(Path(sys.argv[1]), Runner())
store.add_layer(None, sys.argv[2], sys.stdin.buffer, sys.argv[3])
"""


def test_kill_9_mid_add_layer_then_recover(store, btrfs_mnt):
    import gzip

    raw, diff_id = layer([F(f"f{i:04d}", os.urandom(4096)) for i in range(2000)])
    blob = gzip.compress(raw, compresslevel=1)
    before = set(subvolumes(btrfs_mnt))
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(store.root), diff_id, MT_OCI_GZIP],
                             stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        child.stdin.write(blob[: len(blob) // 2])
        child.stdin.flush()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # poll: a temp subvolume with some files in it
            work = [p for p in store.tmp.iterdir()] if store.tmp.exists() else []
            if work and any(work[0].iterdir()):
                break
            time.sleep(0.02)
        else:
            pytest.fail("child never started applying the layer")
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
        child.stdin.close()
    assert child.returncode == -signal.SIGKILL
    assert any(store.tmp.iterdir())  # the crash left a temp subvolume...
    assert not store.has_chain(diff_id)  # ...but never a half layer in place
    store.recover()
    assert not any(store.tmp.iterdir())
    assert set(subvolumes(btrfs_mnt)) == before | set()  # the temp subvolume is gone
    chain = store.add_layer(None, diff_id, io.BytesIO(blob), MT_OCI_GZIP)
    assert len(list(store.layer_path(chain).iterdir())) == 2000


def test_recover_flags_a_layer_renamed_but_not_yet_readonly(store):
    raw, diff_id = layer([F("a", "1")])
    chain = store.add_layer(None, diff_id, io.BytesIO(raw), MT_OCI_TAR)
    Runner().run(["btrfs", "property", "set", "-ts", str(store.layer_path(chain)), "ro", "false"])
    assert os.access(store.layer_path(chain), os.W_OK)
    store.recover()
    assert not os.access(store.layer_path(chain), os.W_OK)


def test_lock_excludes_other_processes(store):
    code = ("import sys,time;from pathlib import Path;from provisioner.images.store import Store;"
            "from provisioner.runner import Runner;s=Store(Path(sys.argv[1]),Runner());"
            "print('trying', flush=True)\nwith s.lock(): print(time.time(), flush=True)")
    with store.lock():
        child = subprocess.Popen([sys.executable, "-c", code, str(store.root)], stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "trying"
        with pytest.raises(subprocess.TimeoutExpired):
            child.wait(timeout=0.3)  # blocked on our lock
        released = time.time()
    assert child.wait(timeout=30) == 0
    assert float(child.stdout.read()) >= released


_LOADER = """
import sys
from pathlib import Path
from provisioner.images.store import Store
from provisioner.imagebuild.load import load_layout
from provisioner.runner import Runner
store = Store(Path(sys.argv[1]), Runner())
for tag in ("types", "whiteouts", "xattrs"):
    load_layout(store, Path(sys.argv[2]), tag, names=["crafted:" + tag])
"""


def _consistent(store):
    """Every record's chains exist; every layer is read-only and complete (has its metadata)."""
    for rec in store.images():
        assert all(store.has_chain(c) for c in rec.chain_ids), rec.names
    for layer in store.layers.iterdir():
        if layer.is_dir():
            assert (store.layers / f"{layer.name}.json").exists()
            assert not os.access(layer, os.W_OK)
    assert not any(store.tmp.iterdir())


@pytest.mark.parametrize("when", ["temp-subvolume", "first-layer", "first-record"])
def test_kill_9_during_image_loads_at_several_points(store, tmp_path, when):
    from provisioner.imagebuild import treecmp
    from provisioner.imagebuild.load import load_layout
    from provisioner.imagebuild.recipes import build

    layout = tmp_path / "crafted"
    build("crafted", layout, Runner())
    probe = {
        "temp-subvolume": lambda: store.tmp.exists() and any(store.tmp.iterdir()),
        "first-layer": lambda: store.layers.exists() and any(p.is_dir() for p in store.layers.iterdir()),
        "first-record": lambda: store.records.exists() and any(store.records.glob("*.json")),
    }[when]
    child = subprocess.Popen([sys.executable, "-c", _LOADER, str(store.root), str(layout)])
    try:
        deadline = time.monotonic() + 60
        while not probe() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.001)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
    store.recover()
    _consistent(store)
    for tag in ("types", "whiteouts", "xattrs"):  # loading again completes and gives the right trees
        load_layout(store, layout, tag, names=["crafted:" + tag])
        out = tmp_path / f"export-{tag}"
        store.export("crafted:" + tag, out)
        ref = tmp_path / f"ref-{tag}"
        load_layout(Store(store.root.parent / f"ref-{when}-{tag}", Runner()), layout, tag)
        Store(store.root.parent / f"ref-{when}-{tag}", Runner()).export(f"layout/crafted:{tag}", ref)
        assert treecmp.diff(treecmp.describe(out), treecmp.describe(ref)) == []
    _consistent(store)


_ADD = """
import io, sys
from provisioner.images.store import Store
from provisioner.images.layers import MT_OCI_TAR
from provisioner.runner import Runner
raw = sys.stdin.buffer.read()
Store(sys.argv[1], Runner()).add_layer(None, sys.argv[2], io.BytesIO(raw), MT_OCI_TAR)
"""


@pytest.mark.skipif(not os.path.exists("/usr/bin/strace"), reason="strace needed")
def test_a_layer_is_synced_to_disk_before_it_is_renamed_into_place(store, tmp_path):
    """Power loss after the rename must not leave a 'present' layer holding zero-length or
    garbage files (btrfs writes data back lazily, the rename can commit first): the system calls
    of a real add_layer show syncfs on the finished subvolume before its rename, and an fsync of
    layers/ after it."""
    raw, diff_id = layer([F(f"f{i}", os.urandom(8192)) for i in range(50)])
    log = tmp_path / "strace.log"
    subprocess.run(["strace", "-f", "-qq", "-e", "trace=syncfs,fsync,rename,renameat,renameat2", "-o", str(log),
                    sys.executable, "-c", _ADD, str(store.root), diff_id], input=raw, check=True, timeout=120,
                   env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    calls = [line.split(None, 1)[1] for line in log.read_text().splitlines() if "(" in line]
    work = next(i for i, c in enumerate(calls) if c.startswith("rename") and "/images/tmp/" in c
                and f"/images/layers/{diff_id[7:]}\"" in c)
    assert any(c.startswith("syncfs(") for c in calls[:work]), calls
    assert any(c.startswith("fsync(") for c in calls[work + 1:]), calls
    assert store.has_chain(diff_id)
