"""Layer application on crafted tars in tmp dirs: entry types, whiteouts, compression, diff_ids."""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat

import pytest
import zstandard

from provisioner.images import layers
from provisioner.images.layers import apply_layer
from provisioner.errors import ImageError
from provisioner.imagebuild.tarbuild import C, D, F, FIFO, H, L, OPQ, WH, tar_bytes

TAR = layers.MT_OCI_TAR
ROOT = os.geteuid() == 0


def apply(dest, entries, media_type=TAR):
    raw = tar_bytes(entries)
    if media_type in (layers.MT_OCI_GZIP, layers.MT_DOCKER_GZIP):
        blob = gzip.compress(raw)
    elif media_type == layers.MT_OCI_ZSTD:
        blob = zstandard.ZstdCompressor().compress(raw)
    else:
        blob = raw
    result = apply_layer(io.BytesIO(blob), media_type, dest)
    assert result.diff_id == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert result.size == len(raw)
    return result


def tree(root):
    """{relative path: kind} for everything under root."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            kind = ("dir" if stat.S_ISDIR(st.st_mode) else "link" if stat.S_ISLNK(st.st_mode)
                    else "file" if stat.S_ISREG(st.st_mode) else "other")
            out[os.path.relpath(p, root)] = kind
    return out


@pytest.mark.parametrize("media_type", [layers.MT_OCI_TAR, layers.MT_OCI_GZIP, layers.MT_OCI_ZSTD,
                                        layers.MT_DOCKER_GZIP])
def test_compressions_give_the_same_tree_and_diff_id(tmp_path, media_type):
    entries = [D("etc"), F("etc/hostname", "box\n"), F("big", os.urandom(3 << 20))]
    apply(tmp_path / "d", entries, media_type)
    assert (tmp_path / "d/etc/hostname").read_text() == "box\n"
    assert (tmp_path / "d/big").stat().st_size == 3 << 20


def test_every_entry_type(tmp_path):
    dest = tmp_path / "d"
    result = apply(dest, [
        D("bin", mode=0o755), F("bin/busybox", b"\x7fELF", mode=0o755),
        L("bin/sh", "busybox"), H("bin/ls", "bin/busybox"),
        F("usr/bin/su", "x", mode=0o4755), F("usr/bin/wall", "x", mode=0o2755), D("tmp", mode=0o1777),
        FIFO("run/fifo", mode=0o620), F("etc/attr", "x", xattrs={"user.k": b"v\x00\xff"}),
        L("dangling", "/nonexistent/abs"),
    ])
    assert result.files == 4
    assert os.readlink(dest / "bin/sh") == "busybox"
    assert os.readlink(dest / "dangling") == "/nonexistent/abs"
    assert (dest / "bin/ls").stat().st_ino == (dest / "bin/busybox").stat().st_ino
    assert stat.S_IMODE((dest / "bin/busybox").stat().st_mode) == 0o755
    assert stat.S_IMODE((dest / "usr/bin/su").stat().st_mode) == 0o4755
    assert stat.S_IMODE((dest / "usr/bin/wall").stat().st_mode) == 0o2755
    assert stat.S_IMODE((dest / "tmp").stat().st_mode) == 0o1777
    assert stat.S_ISFIFO((dest / "run/fifo").lstat().st_mode)
    assert stat.S_IMODE((dest / "run/fifo").lstat().st_mode) == 0o620
    assert stat.S_IMODE((dest / "run").stat().st_mode) == 0o755  # implicit parent
    assert os.getxattr(dest / "etc/attr", "user.k") == b"v\x00\xff"


def test_mtimes_kept_and_directories_set_last(tmp_path):
    dest = tmp_path / "d"
    apply(dest, [D("a", mtime=1000), F("a/f", "x", mtime=2000), D("a/sub", mtime=3000), F("a/sub/g", mtime=4000)])
    assert (dest / "a").stat().st_mtime == 1000
    assert (dest / "a/sub").stat().st_mtime == 3000
    assert (dest / "a/f").stat().st_mtime == 2000


@pytest.mark.skipif(not ROOT, reason="ownership and device nodes need root")
def test_ownership_and_devices_as_root(tmp_path):
    dest = tmp_path / "d"
    apply(dest, [D("home/u", uid=1000, gid=1000, mode=0o700), F("home/u/f", "x", uid=1000, gid=100, mode=0o4750),
                 C("dev/null", 1, 3), L("home/u/l", "f", uid=1000, gid=1000)])
    st = (dest / "home/u/f").stat()
    assert (st.st_uid, st.st_gid) == (1000, 100)
    assert stat.S_IMODE(st.st_mode) == 0o4750  # set after chown, which clears setuid
    assert ((dest / "home/u").stat().st_uid, stat.S_IMODE((dest / "home/u").stat().st_mode)) == (1000, 0o700)
    assert (dest / "home/u/l").lstat().st_uid == 1000
    dev = (dest / "dev/null").lstat()
    assert stat.S_ISCHR(dev.st_mode) and os.major(dev.st_rdev) == 1 and os.minor(dev.st_rdev) == 3


def test_device_node_not_permitted_is_skipped_with_a_warning(tmp_path, monkeypatch):
    def refuse(*a, **kw):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "mknod", refuse)
    result = apply(tmp_path / "d", [C("dev/null", 1, 3), F("ok", "x")])
    assert not (tmp_path / "d/dev/null").exists()
    assert (tmp_path / "d/ok").exists()
    assert any("device nodes not permitted" in w for w in result.warnings)


def test_whiteout_deletes_lower_file_and_directory(tmp_path):
    dest = tmp_path / "d"
    apply(dest, [F("a/keep", "k"), F("a/gone", "g"), F("dir/x/y", "y"), F(".hidden", "h")])
    apply(dest, [WH("a/gone"), WH("dir"), WH(".hidden"), WH("never/existed")])
    assert tree(dest) == {"a": "dir", "a/keep": "file"}


def test_whiteouts_never_remove_same_layer_entries(tmp_path):
    dest = tmp_path / "d"
    apply(dest, [F("a/f", "lower")])
    apply(dest, [F("a/f", "upper"), WH("a/f"), F("b/new", "n"), WH("b")])
    assert (dest / "a/f").read_text() == "upper"
    assert (dest / "b/new").read_text() == "n"


def test_opaque_directory_hides_lower_children_only(tmp_path):
    dest = tmp_path / "d"
    apply(dest, [F("etc/a", "1"), F("etc/sub/b", "2"), F("etc/keep/c", "3"), F("other", "o")])
    # opaque marker after a same-layer entry: that entry stays, all lower children go,
    # including the lower children of a same-layer directory (the whole lower dir is hidden)
    apply(dest, [D("etc/keep"), F("etc/new", "n"), OPQ("etc")])
    assert tree(dest) == {"etc": "dir", "etc/keep": "dir", "etc/new": "file", "other": "file"}


def test_opaque_marker_first_then_entries(tmp_path):
    dest = tmp_path / "d"
    apply(dest, [F("etc/a", "1")])
    apply(dest, [OPQ("etc"), F("etc/b", "2")])
    assert tree(dest) == {"etc": "dir", "etc/b": "file"}


def test_replacement_rules(tmp_path):
    dest = tmp_path / "d"
    apply(dest, [F("was_dir/child", "c"), F("was_file", "f"), D("merge", mode=0o700), F("merge/lower", "l"),
                 L("was_link", "/etc")])
    apply(dest, [F("was_dir", "now a file"), D("was_file", mode=0o750), D("merge", mode=0o755, mtime=5),
                 F("merge/upper", "u"), F("was_link", "plain")])
    assert (dest / "was_dir").read_text() == "now a file"
    assert (dest / "was_file").is_dir() and stat.S_IMODE((dest / "was_file").stat().st_mode) == 0o750
    assert sorted(os.listdir(dest / "merge")) == ["lower", "upper"]
    assert stat.S_IMODE((dest / "merge").stat().st_mode) == 0o755 and (dest / "merge").stat().st_mtime == 5
    assert not (dest / "was_link").is_symlink() and (dest / "was_link").read_text() == "plain"


def test_hardlink_to_lower_layer_file_and_same_path(tmp_path):
    dest = tmp_path / "d"
    apply(dest, [F("bin/busybox", "bb"), H("bin/cat", "bin/busybox")])
    apply(dest, [H("bin/echo", "/bin/busybox"), H("bin/cat", "bin/busybox")])
    assert (dest / "bin/echo").stat().st_ino == (dest / "bin/busybox").stat().st_ino
    assert (dest / "bin/busybox").stat().st_nlink == 3


def test_symlinked_parent_resolved_inside_the_root(tmp_path):
    dest = tmp_path / "d"
    apply(dest, [D("usr/lib"), L("lib", "usr/lib"), L("abs", "/usr"), F("lib/x", "1"), F("abs/lib/y", "2")])
    assert (dest / "usr/lib/x").read_text() == "1"
    assert (dest / "usr/lib/y").read_text() == "2"
    assert (dest / "lib").is_symlink()


@pytest.mark.parametrize("media_type", [TAR, layers.MT_OCI_GZIP, layers.MT_OCI_ZSTD])
def test_corrupt_or_truncated_streams_are_image_errors(tmp_path, media_type):
    raw = tar_bytes([F("a", os.urandom(100_000))])
    blob = {TAR: raw, layers.MT_OCI_GZIP: gzip.compress(raw),
            layers.MT_OCI_ZSTD: zstandard.ZstdCompressor().compress(raw)}[media_type]
    with pytest.raises(ImageError, match="not a valid|truncated"):
        apply_layer(io.BytesIO(blob[: len(blob) // 2]), media_type, tmp_path / "d")
    if media_type != TAR:
        with pytest.raises(ImageError, match="not a valid"):
            apply_layer(io.BytesIO(b"garbage" * 100), media_type, tmp_path / "e")


def test_unknown_media_type(tmp_path):
    with pytest.raises(ImageError, match="unsupported layer media type 'application/x-foo'"):
        apply_layer(io.BytesIO(b""), "application/x-foo", tmp_path)


def test_caller_stream_errors_propagate_unchanged(tmp_path):
    """PULL's verifying stream raises at EOF; that error must come out as it is."""
    class Boom(io.RawIOBase):
        def __init__(self, data):
            self.inner = io.BytesIO(data)

        def readable(self):
            return True

        def read(self, n=-1):
            data = self.inner.read(n)
            if not data:
                raise ImageError("blob digest mismatch")
            return data

    for mt, blob in ((layers.MT_OCI_GZIP, gzip.compress(tar_bytes([F("a", "x")]))),):
        with pytest.raises(ImageError, match="blob digest mismatch"):
            apply_layer(Boom(blob), mt, tmp_path / "d")


def test_small_fd_cache_and_no_fd_leaks(tmp_path, monkeypatch):
    """Evicting cached directory fds never closes one still in use (hardlinks and whiteouts
    resolve a second path mid-entry), and every fd is closed at the end."""
    from provisioner.images import tarapply

    monkeypatch.setattr(tarapply, "_FD_CACHE_MAX", 2)
    entries = []
    for i in range(30):
        entries += [F(f"d{i}/sub/deeper/f", str(i)), H(f"e{i}/x/link", f"d{i}/sub/deeper/f")]
    entries += [D("w/a/b"), F("w/a/b/gone", "g")]
    fds_before = len(os.listdir("/proc/self/fd"))
    apply(tmp_path / "d", entries)
    apply(tmp_path / "d", [WH("w/a/b/gone"), OPQ("d1/sub"), F("d1/sub/new", "n"), H("d2/sub/h", "d3/sub/deeper/f")])
    assert len(os.listdir("/proc/self/fd")) == fds_before
    d = tmp_path / "d"
    for i in range(30):
        if i != 1:
            assert (d / f"e{i}/x/link").stat().st_ino == (d / f"d{i}/sub/deeper/f").stat().st_ino
    assert os.listdir(d / "d1/sub") == ["new"] and not (d / "w/a/b/gone").exists()
    assert (d / "d2/sub/h").read_text() == "3"


def test_lower_directories_keep_their_mtime_when_a_layer_changes_their_entries(tmp_path):
    dest = tmp_path / "d"
    apply(dest, [D("etc", mtime=1000), F("etc/a", "a"), F("etc/b", "b"), D("var", mtime=2000), D("var/x", mtime=3000),
                 F("var/x/f", "f"), D("opq", mtime=4000), F("opq/lower", "l")])
    apply(dest, [F("etc/new", "n"), WH("etc/a"), WH("var/x"), OPQ("opq"), F("new/implicit/f", "i")])
    assert [(dest / d).stat().st_mtime for d in ("etc", "var", "opq")] == [1000, 2000, 4000]
    apply(dest, [D("etc", mtime=5000), F("etc/c", "c")])  # a directory the layer lists takes its mtime
    assert (dest / "etc").stat().st_mtime == 5000


def test_empty_layers(tmp_path):
    """Docker's classic empty layer (gzip of 1024 zero bytes) and a zero-byte tar both apply as no-ops."""
    r = apply_layer(io.BytesIO(gzip.compress(bytes(1024))), layers.MT_DOCKER_GZIP, tmp_path / "a")
    assert r.diff_id == "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"
    r = apply_layer(io.BytesIO(b""), TAR, tmp_path / "b")
    assert r.diff_id == "sha256:" + hashlib.sha256(b"").hexdigest() and r.entries == 0
    assert os.listdir(tmp_path / "a") == [] and os.listdir(tmp_path / "b") == []
