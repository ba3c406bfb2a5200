"""Debian images from mmdebstrap (redis-server): the recipe's layers and config, and the store's
export of a real rootfs (thousands of files, hardlinks, setuid, capabilities) equal to `umoci unpack`'s.

The first run on a machine bootstraps Debian through the configured apt mirror (~1-2 min) and caches
the tarball under /var/tmp/provisioner-imagecache."""
from __future__ import annotations

import os
import shutil

import pytest

from provisioner.containers.store import Store
from provisioner.imagebuild import treecmp
from provisioner.imagebuild.layout import read_image
from provisioner.imagebuild.load import load_layout
from provisioner.imagebuild.loopfs import loop_btrfs
from provisioner.imagebuild.recipes import build
from provisioner.runner import Runner

pytestmark = [
    pytest.mark.privileged,
    pytest.mark.skipif(not (shutil.which("mmdebstrap") and shutil.which("umoci")),
                       reason="mmdebstrap and umoci are needed (scripts/install.sh)"),
]



@pytest.fixture(autouse=True, scope="module")
def _umask_022():
    """umoci creates implicit parent directories subject to the umask; we always use 0755 (as
    Docker does). Compare under the usual 022."""
    old = os.umask(0o022)
    yield
    os.umask(old)

def test_debian_redis_recipe_and_export_matches_umoci(tmp_path):
    runner = Runner()
    layout = tmp_path / "redis"
    assert build("debian-redis", layout, runner) == ["latest"]
    manifest, config, _ = read_image(layout, "latest")
    assert len(manifest["layers"]) == 4
    assert config["config"]["Entrypoint"] == ["redis-server"]
    assert config["config"]["ExposedPorts"] == {"6379/tcp": {}} and config["config"]["User"] == "redis"
    with loop_btrfs(tmp_path / "fs", runner, size="2G") as mnt:
        store = Store(mnt, runner)
        record = load_layout(store, layout, "latest", names=["test/redis:latest"])
        assert record.size > 50_000_000
        ours = mnt / "export"
        store.export("test/redis:latest", ours)
        assert (ours / "usr/bin/redis-server").exists()
        assert "redis:" in (ours / "etc/passwd").read_text()
        bundle = tmp_path / "umoci"
        runner.run(["umoci", "unpack", "--image", f"{layout}:latest", str(bundle)])
        # directory mtimes too: lower directories that later layers add files to keep theirs
        a = treecmp.describe(ours, dir_mtimes=True)
        b = treecmp.describe(bundle / "rootfs", dir_mtimes=True)
        assert len(a["entries"]) > 3000
        assert treecmp.diff(a, b) == []
