"""Hostile layers: nothing outside the layer root may change, whatever the tar contains."""
from __future__ import annotations

import hashlib
import io
import os

import pytest

from provisioner.images import layers
from provisioner.images.layers import apply_layer
from provisioner.errors import ImageError
from provisioner.imagebuild.tarbuild import F, H, L, OPQ, WH, D, tar_bytes


@pytest.fixture
def world(tmp_path):
    """tmp_path/outside/victim (must survive) and tmp_path/root (the layer root)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("precious")
    (outside / "sub").mkdir()
    root = tmp_path / "root"
    root.mkdir()
    return tmp_path, outside, root


def snapshot_outside(base, root):
    out = {}
    for dirpath, dirs, files in os.walk(base):
        if os.path.commonpath([dirpath, root]) == str(root):
            continue
        for name in dirs + files:
            p = os.path.join(dirpath, name)
            if os.path.commonpath([p, root]) == str(root):
                continue
            st = os.lstat(p)
            data = open(p, "rb").read() if os.path.isfile(p) and not os.path.islink(p) else b""
            out[p] = (st.st_mode, st.st_nlink, hashlib.sha256(data).hexdigest())
    return out


def run(root, entries):
    return apply_layer(io.BytesIO(tar_bytes(entries)), layers.MT_OCI_TAR, root)


def check(world, entries, *, error: str | None = None):
    base, outside, root = world
    before = snapshot_outside(base, root)
    if error:
        with pytest.raises(ImageError, match=error):
            run(root, entries)
    else:
        run(root, entries)
    assert snapshot_outside(base, root) == before
    assert (outside / "victim").read_text() == "precious"


def test_dotdot_names_are_refused(world):
    check(world, [F("../outside/victim", "pwned")], error=r"contains '\.\.'")
    check(world, [F("a/../../outside/new", "x")], error=r"contains '\.\.'")


def test_absolute_names_land_inside_the_root(world):
    base, outside, root = world
    check(world, [F(str(outside / "victim"), "pwned"), F("/etc/evil", "x")])
    assert (root / str(outside / "victim").lstrip("/")).read_text() == "pwned"
    assert (root / "etc/evil").exists()


@pytest.mark.parametrize("target", ["../outside", "../../../../outside", "ABS"])
def test_write_through_symlinked_directory_stays_inside(world, target):
    base, outside, root = world
    target = str(outside) if target == "ABS" else target
    check(world, [L("evil", target), F("evil/victim", "pwned"), F("evil/sub/new", "x"), D("evil/newdir")])
    assert os.readlink(root / "evil") == target  # the symlink itself is kept as-is


def test_file_over_symlink_replaces_the_link_not_its_target(world):
    base, outside, root = world
    check(world, [L("l", str(outside / "victim")), F("l", "pwned")])
    assert (root / "l").read_text() == "pwned" and not (root / "l").is_symlink()
    check(world, [L("l2", "../outside/victim")])
    check(world, [F("l2", "pwned again")])


def test_hardlinks_to_outside_are_refused(world):
    base, outside, root = world
    check(world, [H("h", "../outside/victim")], error=r"contains '\.\.'")
    check(world, [H("h", str(outside / "victim"))], error="does not exist in the layer root")
    check(world, [L("evil", str(outside)), H("h2", "evil/victim")], error="does not exist in the layer root")
    check(world, [L("evil2", "../outside"), H("h3", "evil2/victim")], error="does not exist in the layer root")


def test_hardlink_to_a_symlink_links_the_symlink_itself(world):
    base, outside, root = world
    check(world, [L("ln", str(outside / "victim")), H("h", "ln"), F("h", "replaced")])
    assert os.readlink(root / "ln") == str(outside / "victim")


def test_file_over_hardlink_does_not_modify_the_other_name(world):
    base, outside, root = world
    check(world, [F("a", "orig"), H("b", "a")])
    check(world, [F("b", "new")])
    assert (root / "a").read_text() == "orig" and (root / "b").read_text() == "new"


def test_whiteouts_and_opaque_through_symlinks_stay_inside(world):
    base, outside, root = world
    check(world, [L("evil", str(outside))])
    check(world, [WH("evil/victim"), OPQ("evil/sub"), WH("evil/sub")])
    check(world, [L("rel", "../outside")])
    check(world, [WH("rel/victim"), OPQ("rel")])
    assert os.path.islink(root / "evil")


def test_symlink_loops_and_file_parents_are_errors(world):
    check(world, [L("a", "b"), L("b", "a"), F("a/x", "x")], error="too many levels")
    check(world, [F("f", "x"), F("f/x", "y")], error="is not a directory")


def test_malformed_whiteout_is_refused(world):
    check(world, [F("a/.wh.", "")], error="malformed whiteout")
    check(world, [F(".wh...", "")], error="malformed whiteout")
