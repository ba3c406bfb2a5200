"""Differential: for every crafted image (and busybox), the store's export equals `umoci unpack`'s rootfs.

Layers are applied straight from the OCI layout the builder wrote (no registry). Compared: names,
types, modes, owners, sizes, content hashes, link targets, device numbers, xattrs, hardlink groups,
and mtimes, directories' included: both tools give a directory that a layer lists the layer's
mtime and give a lower directory whose entries a layer changes back its previous mtime. Known
difference, allowed below: when an opaque marker follows same-layer entries, umoci removes the lower
children after setting the directory's mtime (so it becomes the time of extraction); we keep the
layer's mtime. Directories created implicitly (no entry of their own) get the extraction time in
both: compared as "recent".
"""
from __future__ import annotations

import os
import shutil
import time

import pytest

from provisioner.images.store import Store
from provisioner.imagebuild import treecmp
from provisioner.imagebuild.crafted import CRAFTED
from provisioner.imagebuild.load import load_layout
from provisioner.imagebuild.loopfs import loop_btrfs
from provisioner.imagebuild.recipes import build
from provisioner.runner import Runner

pytestmark = [
    pytest.mark.privileged,
    pytest.mark.skipif(shutil.which("umoci") is None, reason="umoci not installed (scripts/install.sh)"),
]



@pytest.fixture(autouse=True, scope="module")
def _umask_022():
    """umoci creates implicit parent directories subject to the umask; we always use 0755 (as
    Docker does). Compare under the usual 022."""
    old = os.umask(0o022)
    yield
    os.umask(old)

@pytest.fixture(scope="module")
def env(tmp_path_factory):
    work = tmp_path_factory.mktemp("diff")
    runner = Runner()
    build("crafted", work / "crafted", runner)
    build("busybox", work / "busybox", runner)
    build("multiplatform", work / "multi", runner)
    with loop_btrfs(work / "fs", runner, size="1G") as mnt:
        yield work, Store(mnt, runner), runner


UMOCI_DIR_MTIME_QUIRK = {"crafted:whiteouts": ["opaque2/keep"]}
CASES = [("crafted", tag) for tag in CRAFTED] + [("busybox", "latest")]


@pytest.mark.parametrize("layout,tag", CASES, ids=[f"{a}:{b}" for a, b in CASES])
def test_store_export_matches_umoci_unpack(env, layout, tag):
    work, store, runner = env
    t0 = time.time() - 1  # mtimes of implicitly created directories are at or after this
    record = load_layout(store, work / layout, tag, names=[f"test/{layout}:{tag}"])
    ours = work / f"export-{layout}-{tag}"
    store.export(f"test/{layout}:{tag}", ours)
    bundle = work / f"umoci-{layout}-{tag}"
    runner.run(["umoci", "unpack", "--image", f"{work / layout}:{tag}", str(bundle)])
    a = treecmp.describe(ours, dir_mtimes=True, recent=t0)
    b = treecmp.describe(bundle / "rootfs", dir_mtimes=True, recent=t0)
    assert a["entries"], "empty export"
    for path in UMOCI_DIR_MTIME_QUIRK.get(f"{layout}:{tag}", ()):
        assert a["entries"][path]["mtime"] != "recent" and b["entries"][path]["mtime"] == "recent"
        a["entries"][path].pop("mtime"), b["entries"][path].pop("mtime")
    assert treecmp.diff(a, b) == []
    assert record.config["rootfs"]["diff_ids"] and len(record.chain_ids) == len(record.config["rootfs"]["diff_ids"])


def test_multiplatform_index_selects_the_platform(env):
    work, store, runner = env
    amd = load_layout(store, work / "multi", "latest", names=["test/multi:amd64"], platform=("linux", "amd64"))
    arm = load_layout(store, work / "multi", "latest", names=["test/multi:arm64"], platform=("linux", "arm64"))
    assert amd.id != arm.id and amd.chain_ids[0] == arm.chain_ids[0]  # shared busybox layer stored once
    assert (store.layer_path(arm.top_chain) / "etc/platform").read_text() == "linux/arm64\n"
    assert arm.config["architecture"] == "arm64" and arm.config["variant"] == "v8"
