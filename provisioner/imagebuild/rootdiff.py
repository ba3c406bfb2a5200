"""The layer that turns one rootfs tarball into another: what `docker build` commits for a RUN step.

The Debian recipes share one base (mmdebstrap minbase): each image is that base's layers, the
same bytes and so the same digests in every image, plus `diff_layer(base, full)` — the entries of
`full` that are new or differ from `base` (content, type, mode, owner, link target, device,
xattrs; not mtimes), and a whiteout for each path of `base` that `full` no longer has (only the
topmost one of a removed tree). A host that holds one Debian image then receives only the
diff layer of the next.

Hardlinks: a group of paths sharing content is kept whole. If any member is in the diff, all
are, target first, so the layer never links to a file a lower layer holds (or that changed).
"""
from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import PurePosixPath

WHITEOUT = ".wh."


def _name(ti: tarfile.TarInfo) -> str:
    n = ti.name.removeprefix("./").rstrip("/")
    return n or "."


def _index(path) -> tuple[dict[str, tuple], dict[str, str]]:
    """name -> signature (no mtime) and hardlink name -> its target's name."""
    sigs: dict[str, tuple] = {}
    links: dict[str, str] = {}
    with tarfile.open(path, "r:") as tf:
        for ti in tf:
            name = _name(ti)
            xattrs = tuple(sorted((k, v) for k, v in ti.pax_headers.items() if k.startswith("SCHILY.xattr.")))
            content = ""
            if ti.isreg():
                content = hashlib.sha256(tf.extractfile(ti).read()).hexdigest()
            elif ti.islnk():
                links[name] = ti.linkname.removeprefix("./")
            sigs[name] = (ti.type if not ti.islnk() else tarfile.REGTYPE, ti.mode & 0o7777, ti.uid, ti.gid,
                          ti.linkname if ti.issym() else "", ti.devmajor, ti.devminor, xattrs, content)
    for name, target in links.items():   # a hardlink's signature is its target's
        sigs[name] = sigs.get(target, sigs[name])
    return sigs, links


def _groups(links: dict[str, str]) -> dict[str, set[str]]:
    """Each path of a hardlink group -> the whole group (target and links)."""
    groups: dict[str, set[str]] = {}
    for name, target in links.items():
        g = groups.setdefault(target, {target})
        g.add(name)
        groups[name] = g
    return groups


def diff_layer(base, full) -> bytes:
    """An uncompressed layer tar with what changes `base`'s tree into `full`'s (both tarball paths)."""
    base_sigs, _ = _index(base)
    full_sigs, full_links = _index(full)
    changed = {n for n, sig in full_sigs.items() if base_sigs.get(n) != sig}
    groups = _groups(full_links)
    for n in list(changed):                       # whole hardlink groups
        changed |= groups.get(n, set())
    gone = sorted(n for n in base_sigs if n not in full_sigs
                  and str(PurePosixPath(n).parent) in full_sigs)   # topmost removed paths only
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as w:
        for n in gone:
            parent = PurePosixPath(n).parent
            wh = tarfile.TarInfo(str(parent / f"{WHITEOUT}{PurePosixPath(n).name}") if str(parent) != "."
                                 else f"{WHITEOUT}{n}")
            w.addfile(wh, io.BytesIO(b""))
        written: set[str] = set()
        with tarfile.open(full, "r:") as tf:
            held = {}   # hardlinks met before their target is written: written after it
            for ti in tf:
                name = _name(ti)
                if name not in changed:
                    continue
                if ti.islnk() and ti.linkname.removeprefix("./") not in written:
                    held.setdefault(ti.linkname.removeprefix("./"), []).append(ti)
                    continue
                w.addfile(ti, tf.extractfile(ti) if ti.isreg() else None)
                written.add(name)
                for link in held.pop(name, []):
                    w.addfile(link)
                    written.add(_name(link))
    return out.getvalue()
