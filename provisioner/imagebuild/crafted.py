"""Crafted test images: every tar entry type, whiteouts, opaque dirs, xattrs, hardlinks, devices.

Each function returns the layers of one image. They are used by the differential test (store
export vs `umoci unpack`) and pushed to registries by the pull tests.
"""
from __future__ import annotations

from .layout import Layer
from .tarbuild import B, C, D, F, FIFO, H, L, OPQ, WH

T0 = 1_600_000_000


def types_image() -> list[Layer]:
    """Every entry type, special mode bits and owners; replaced across layers."""
    base = (
        D("bin"), D("etc"), D("tmp", mode=0o1777), D("var/log", mode=0o750, gid=4),
        F("bin/tool", b"#!/bin/sh\necho tool\n", mode=0o755),
        H("bin/tool-hardlink", "bin/tool"),
        L("bin/tool-symlink", "tool"), L("bin/abs-symlink", "/bin/tool"), L("dangling", "/does/not/exist"),
        F("usr/bin/setuid", b"su", mode=0o4755), F("usr/bin/setgid", b"sg", mode=0o2711, gid=5),
        D("shared", mode=0o3775), F("etc/owned", b"x", uid=1234, gid=5678, mode=0o640),
        C("dev/null", 1, 3, mode=0o666), C("dev/zero", 1, 5, mode=0o666), B("dev/loopX", 7, 200, mode=0o660, gid=6),
        FIFO("run/initctl", mode=0o600), F("empty", b""), F("big.bin", bytes(range(256)) * 4096, mode=0o600),
        F("name with spaces & ünïcödé", b"unicode\n"), D("deep/a/b/c/d/e/f/g", mode=0o700),
        F("deep/a/b/c/d/e/f/g/leaf", b"leaf", mtime=T0 + 7),
        F("x" * 120 + "/long-name-" + "y" * 100, b"long path (PAX)"),
        L("long-link", "z" * 150),
    )
    second = (
        F("bin/tool", b"#!/bin/sh\necho tool v2\n", mode=0o755),  # replaces (breaks the old hardlink pair)
        F("empty", b"now not empty\n", mode=0o444),
        D("dangling", mode=0o755),  # dir over a symlink
        F("deep/a/b", b"file over a directory tree"),
        L("etc/owned", "/etc/passwd"),  # symlink over a file
        H("bin/second-hardlink", "bin/tool-hardlink"),  # hardlink to a lower-layer file
        D("etc", mode=0o700, uid=5, gid=6, mtime=T0),  # dir over dir: attributes merge
        F("implicit/parents/file", b"no dir entries above me"),
        F("replaced-later", b"first"), H("link-to-replaced", "replaced-later"), F("replaced-later", b"second"),
        F("was-file", b"x"), H("was-file", "bin/tool"),  # a hardlink replaces a file of the same layer
        F(b"latin1-\xe9t\xe9".decode("utf-8", "surrogateescape"), b"non-UTF-8 name"),
    )
    return [Layer(base, compression="gzip"), Layer(second, compression=None)]


def whiteouts_image() -> list[Layer]:
    base = (
        D("etc"), F("etc/a.conf", b"a"), F("etc/b.conf", b"b"), D("etc/conf.d"), F("etc/conf.d/1", b"1"),
        F("etc/conf.d/2", b"2"), D("var/cache/apt", mode=0o755), F("var/cache/apt/pkgcache.bin", b"cache" * 100),
        D("opaque"), F("opaque/lower1", b"l1"), D("opaque/lowerdir"), F("opaque/lowerdir/x", b"x"),
        D("keep"), F("keep/k", b"k"), F(".dotfile", b"dot"), D("usr/lib"), L("lib", "usr/lib"),
        F("usr/lib/libfoo.so", b"foo"),
    )
    second = (
        WH("etc/a.conf"), WH("etc/conf.d"), WH("var/cache/apt"), WH(".dotfile"), WH("not/there"),
        OPQ("opaque"), F("opaque/upper1", b"u1"), D("opaque/lowerdir"), F("opaque/lowerdir/y", b"y"),
        F("keep/added", b"added"), F("lib/libbar.so", b"bar"),  # written through the in-root symlink
    )
    third = (
        D("etc/conf.d", mode=0o700), F("etc/conf.d/3", b"3"),  # re-created after its whiteout
        F("etc/a.conf", b"a again"),
        F("same/file", b"same layer"), WH("same/file"),  # whiteouts never remove same-layer entries
        D("same/dir"), F("same/dir/f", b"f"), WH("same/dir"),
        WH("usr/lib/libfoo.so"),
    )
    fourth = (  # the opaque marker *after* same-layer entries: their lower children are hidden too
        D("opaque2"), D("opaque2/keep"), F("opaque2/keep/new", b"n"), F("opaque2/top", b"t"), OPQ("opaque2"),
    )
    base = base + (D("opaque2"), D("opaque2/keep"), F("opaque2/keep/lower", b"l"), F("opaque2/lower", b"l"))
    return [Layer(base, compression="gzip"), Layer(second, compression="gzip"), Layer(third, compression=None),
            Layer(fourth, compression="gzip")]


def xattrs_image() -> list[Layer]:
    base = (
        D("bin"), F("bin/ping", b"ping", mode=0o755, xattrs={"security.capability": _cap_net_raw()}),
        F("user-attrs", b"u", xattrs={"user.mime_type": b"text/plain", "user.bin": b"\x00\x01\xfe\xff"}),
        F("trusted-attr", b"t", xattrs={"trusted.overlay.note": b"trusted"}),
        D("dir-with-attr", xattrs={"user.dir": b"yes"}),
        F("hl/orig", b"hard", mode=0o640, uid=1, gid=1), H("hl/link1", "hl/orig"), H("hl/link2", "hl/link1"),
        D("hl/sub"), H("hl/sub/link3", "hl/orig"),
    )
    second = (
        F("user-attrs", b"u2", xattrs={"user.new": b"replaced attrs"}),  # replacement drops old xattrs
        H("hl/link4", "hl/orig"), WH("hl/link1"),
    )
    return [Layer(base, compression="gzip"), Layer(second, compression="gzip")]


def _cap_net_raw() -> bytes:
    # vfs_cap_data revision 2: magic_etc, permitted lo/hi, inheritable lo/hi; CAP_NET_RAW = 13
    import struct

    return struct.pack("<IIIII", 0x02000001, 1 << 13, 0, 0, 0)


CRAFTED = {"types": types_image, "whiteouts": whiteouts_image, "xattrs": xattrs_image}


# ---- hostile images: the store must refuse or neutralize them --------------------------------
EVIL_DIR = "/tmp/provisioner-evil-target"  # tests put a victim file here and check it is untouched


def _evil(*entries) -> list[Layer]:
    return [Layer((D("etc"), F("etc/ok", b"ok")), compression="gzip"), Layer(tuple(entries), compression="gzip")]


MALICIOUS = {
    # refused: ImageError
    "dotdot": lambda: _evil(F("../../../../../../" + EVIL_DIR.lstrip("/") + "/victim", b"pwned")),
    "hardlink-escape": lambda: _evil(H("etc/link", EVIL_DIR + "/victim")),
    "hardlink-dotdot": lambda: _evil(H("etc/link", "../../../../" + EVIL_DIR.lstrip("/") + "/victim")),
    # neutralized: applied inside the layer root
    "absolute": lambda: _evil(F(EVIL_DIR + "/victim", b"pwned"), F(EVIL_DIR + "/new", b"new")),
    "symlink-escape": lambda: _evil(L("evil", EVIL_DIR), F("evil/victim", b"pwned"), F("evil/new", b"new"),
                                    L("rel", "../../../../../../" + EVIL_DIR.lstrip("/")), F("rel/victim", b"pwned")),
    "symlink-overwrite": lambda: _evil(L("etc/link", EVIL_DIR + "/victim"), F("etc/link", b"pwned")),
    "whiteout-escape": lambda: _evil(L("evil", EVIL_DIR), F("evil/.wh.victim"), F("evil/.wh..wh..opq")),
    "device": lambda: _evil(C("dev/mem", 1, 1, mode=0o666), B("dev/vda", 254, 0)),
}
MALICIOUS_REFUSED = {"dotdot", "hardlink-escape", "hardlink-dotdot"}
