"""What a container's bundle takes from this host besides the image: the kernel's highest
capability, tini for --init, the device nodes a privileged container gets, and the files of its
secrets and configs.

Secrets and configs are written once, when the container is made, into its own directory
(root-only, like the rest of <root>/containers/<id>) as `files/<kind>-<name>`, with the owner and
mode the service asked for, and bind-mounted read-only at their targets. Their content comes in
memory from the run request; the record keeps only the digest.
"""
from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path
from typing import Iterable, Mapping

from ..errors import ContainerError
from ..fsutil import atomic_write
from ..runspec.secrets import FileMount
from . import bundle

INIT_CANDIDATES = ("/usr/bin/tini-static", "/usr/bin/docker-init", "/usr/libexec/docker/docker-init",
                   "/usr/bin/tini")
_NO_DEVICES = ("/dev/pts", "/dev/shm", "/dev/mqueue", "/dev/.lxc", "/dev/.lxd-mounts")


def last_cap(path: str = "/proc/sys/kernel/cap_last_cap") -> int | None:
    try:
        return int(Path(path).read_text().strip())
    except (OSError, ValueError):
        return None


def init_path() -> str:
    """The host's tini (Debian's tini package: a static build, so it runs in any image)."""
    found = next((p for p in INIT_CANDIDATES if os.access(p, os.X_OK)), None) or shutil.which("tini-static")
    if not found:
        raise ContainerError("--init (compose init: true) needs tini on the host: apt-get install tini")
    return found


def devices(root: str = "/dev") -> list[dict]:
    """linux.devices for every character and block device of the host (Docker's HostDevices, for
    --privileged), the ones under pts, shm and mqueue left out."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if os.path.join(dirpath, d) not in _NO_DEVICES]
        for f in sorted(filenames):
            p = os.path.join(dirpath, f)
            try:
                st = os.lstat(p)
            except OSError:
                continue
            kind = "c" if stat.S_ISCHR(st.st_mode) else "b" if stat.S_ISBLK(st.st_mode) else None
            if kind is None:
                continue
            out.append({"path": p, "type": kind, "major": os.major(st.st_rdev), "minor": os.minor(st.st_rdev),
                        "fileMode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid})
    return out


def _file(d: Path, kind: str, name: str) -> Path:
    return d / "files" / f"{kind}-{name}"


def write_files(d: Path, files: Iterable[FileMount]) -> None:
    """The secrets and configs of a container being made (its directory is root's alone)."""
    for f in files:
        path = _file(d, f.kind, f.name)
        path.parent.mkdir(exist_ok=True)
        os.chmod(path.parent, 0o700)
        atomic_write(path, f.content, mode=f.mode)
        os.chown(path, f.uid, f.gid)
        os.chmod(path, f.mode)


def file_mounts(d: Path, recorded: Iterable[Mapping]) -> list[bundle.Mount]:
    out = []
    for f in recorded:
        path = _file(d, f["kind"], f["name"])
        if not path.is_file():
            raise ContainerError(f"{f['kind']} {f['name']} of this container is missing ({path}); recreate it")
        out.append(bundle.Mount(f["target"], str(path), readonly=True))
    return out
