"""Debian images from mmdebstrap (redis-server, nginx-light, mariadb-server, python3 + a status app): the
recipes' layers and config, and the store's export of a real rootfs (thousands of files, hardlinks,
setuid, capabilities) equal to `umoci unpack`'s.

The first run on a machine bootstraps Debian through the configured apt mirror (~1-2 min) and caches
the tarball under /var/tmp/provisioner-imagecache."""
from __future__ import annotations

import os
import shutil

import pytest

from provisioner.images.store import Store
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

CASES = {
    "debian-redis": ("usr/bin/redis-server", {"Entrypoint": ["redis-server"], "User": "redis",
                                              "ExposedPorts": {"6379/tcp": {}}}),
    "debian-nginx": ("usr/sbin/nginx", {"Cmd": ["nginx", "-g", "daemon off;"], "ExposedPorts": {"80/tcp": {}}}),
    "debian-mariadb": ("usr/local/bin/mariadb-entrypoint", {"Entrypoint": ["/usr/local/bin/mariadb-entrypoint"],
                                                           "ExposedPorts": {"3306/tcp": {}}}),
    "debian-python-app": ("srv/app/status_app.py", {"Cmd": ["python3", "/srv/app/status_app.py"],
                                                   "User": "nobody"}),
}
# the app recipes add their own files as one more layer
EXTRA = {"debian-mariadb": ("usr/sbin/mariadbd",), "debian-python-app": ("usr/bin/python3",)}


BASES: dict[str, list[str]] = {}


@pytest.mark.parametrize("recipe", list(CASES))
def test_debian_recipe_and_export_matches_umoci(tmp_path, recipe):
    binary, want_config = CASES[recipe]
    runner = Runner()
    layout = tmp_path / recipe
    assert build(recipe, layout, runner) == ["latest"]
    manifest, config, _ = read_image(layout, "latest")
    # the shared Debian base (4 layers, the same blobs in every recipe) + what the packages changed
    assert len(manifest["layers"]) == 5 + (recipe in EXTRA)
    base = [d["digest"] for d in manifest["layers"][:4]]
    assert BASES.setdefault("base", base) == base
    assert manifest["layers"][4]["size"] < 80 << 20
    assert {k: config["config"][k] for k in want_config} == want_config
    with loop_btrfs(tmp_path / "fs", runner, size="2G") as mnt:
        store = Store(mnt, runner)
        record = load_layout(store, layout, "latest", names=[f"test/{recipe}:latest"])
        assert record.size > 50_000_000
        ours = mnt / "export"
        store.export(f"test/{recipe}:latest", ours)
        assert (ours / binary).exists() and all((ours / p).exists() for p in EXTRA.get(recipe, ()))
        bundle = tmp_path / "umoci"
        runner.run(["umoci", "unpack", "--image", f"{layout}:latest", str(bundle)])
        # directory mtimes too: lower directories that later layers add files to keep theirs
        a = treecmp.describe(ours, dir_mtimes=True)
        b = treecmp.describe(bundle / "rootfs", dir_mtimes=True)
        assert len(a["entries"]) > 3000
        assert treecmp.diff(a, b) == []
