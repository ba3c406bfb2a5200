"""rootdiff: base layers + the diff layer give the same tree as the full rootfs, and the diff holds
only what changed (the rest comes from the shared base)."""
from __future__ import annotations

import io
import tarfile

from provisioner.images.layers import apply_layer
from provisioner.imagebuild import treecmp
from provisioner.imagebuild.rootdiff import diff_layer
from provisioner.imagebuild.tarbuild import D, F, H, L, tar_bytes

RAW = "application/vnd.oci.image.layer.v1.tar"

BASE = [D("."), D("etc"), F("etc/passwd", "root\n"), F("etc/shadow", "x", mode=0o640, gid=42),
        D("usr"), D("usr/bin"), F("usr/bin/tool", "v1", mode=0o755), H("usr/bin/tool-alias", "usr/bin/tool"),
        F("usr/bin/same", "same", mode=0o755), H("usr/bin/same-link", "usr/bin/same"),
        D("usr/share"), D("usr/share/doc"), D("usr/share/doc/pkg"), F("usr/share/doc/pkg/README", "r"),
        F("usr/share/keep", "k"), L("bin", "usr/bin"), F("gone-top", "t"), F("etc/mode", "m"),
        F("etc/xattr", "x", xattrs={"user.k": b"1"})]
FULL = [D("."), D("etc"), F("etc/passwd", "root\nredis\n"), F("etc/shadow", "x", mode=0o640, gid=42),
        D("usr"), D("usr/bin"), F("usr/bin/tool", "v2", mode=0o755), H("usr/bin/tool-alias", "usr/bin/tool"),
        F("usr/bin/same", "same", mode=0o755), H("usr/bin/same-link", "usr/bin/same"),
        H("usr/bin/same-new-link", "usr/bin/same"),
        D("usr/share"), F("usr/share/keep", "k", mtime=1), L("bin", "usr/bin"), F("etc/mode", "m", mode=0o600),
        F("etc/xattr", "x", xattrs={"user.k": b"2"}),
        D("var"), D("var/lib"), F("var/lib/new", "n")]


def _tree(tmp_path, name, *tars):
    for t in tars:
        apply_layer(io.BytesIO(t), RAW, tmp_path / name)
    return treecmp.describe(tmp_path / name, mtimes=False)


def test_base_plus_diff_is_the_full_tree_and_the_diff_only_what_changed(tmp_path):
    (tmp_path / "base.tar").write_bytes(tar_bytes(BASE))
    (tmp_path / "full.tar").write_bytes(tar_bytes(FULL))
    diff = diff_layer(tmp_path / "base.tar", tmp_path / "full.tar")
    layered = _tree(tmp_path, "layered", tar_bytes(BASE), diff)
    whole = _tree(tmp_path, "whole", tar_bytes(FULL))
    assert treecmp.diff(layered, whole) == []
    names = [n.removeprefix("./") for n in tarfile.open(fileobj=io.BytesIO(diff)).getnames()]
    # one whiteout per removed tree (usr/share/doc, not what was under it); changed content, mode,
    # xattrs and whole hardlink groups; new paths with their directories
    assert sorted(names) == sorted([
        ".wh.gone-top", "usr/share/.wh.doc", "etc/passwd", "usr/bin/tool", "usr/bin/tool-alias",
        "usr/bin/same", "usr/bin/same-link", "usr/bin/same-new-link", "etc/mode", "etc/xattr",
        "var", "var/lib", "var/lib/new"])
    # a file whose only difference is its mtime stays in the base layer
    assert "usr/share/keep" not in names and "etc/shadow" not in names


def test_identical_rootfs_give_an_empty_diff(tmp_path):
    (tmp_path / "a.tar").write_bytes(tar_bytes(BASE))
    assert tarfile.open(fileobj=io.BytesIO(diff_layer(tmp_path / "a.tar", tmp_path / "a.tar"))).getnames() == []
