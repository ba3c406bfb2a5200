"""Installs one wheel into the running interpreter's environment: what `pip install --no-deps
--force-reinstall --no-compile WHEEL` does, for the agent's own wheel on a host whose venv already
holds the dependencies.

Why not pip: on a small or emulated host pip's own start-up and resolver cost 12 s (idle, TCG) to
30 s (during cloud-init's first boot) for a 1 MB wheel whose dependencies are all in place; this
is a zip extraction plus three small files.

Stdlib only and runnable as a script (`deliver` sends this file's text to the venv's python on
stdin): it runs before the agent exists on the host.

    python - WHEEL          install (replacing an installed version of the same project)

The wheel format (PEP 427, PEP 376 RECORD, PEP 491 .data directories): `X.data/scripts/` goes to
the scripts directory (a `#!python` first line becomes this interpreter; modes as the zip records
them, as pip does), `X.data/<key>/` to that sysconfig path, everything else to purelib; console
scripts come from entry_points.txt.

Over an installed version (the agent's upgrade on a reused host) it installs in place: a file
whose hash and size the installed RECORD holds, and which is on disk at that size and mode, is
kept; only the others are decompressed and written, and what the new version no longer has is
removed (only files under this environment). A one-module change to the agent writes a handful
of its ~500 files. Every member that is written is checked against the wheel's RECORD before
anything installed is touched.

A partial wheel (remote/bundle.partial_wheel: the full RECORD, only the members that changed)
installs the same way over the version it was made against: a file RECORD names but the zip
does not hold must be installed as RECORD says, else nothing is touched and the exit status is
3 (send the whole wheel).
"""
from __future__ import annotations

import base64
import configparser
import csv
import hashlib
import io
import os
import re
import stat
import sys
import sysconfig
import zipfile

INSTALLER = "provisioner"


class WheelError(Exception):
    pass


class Incomplete(WheelError):
    """A partial wheel names a file in RECORD that it does not hold and that is not installed
    as RECORD says: the sender should send the whole wheel (exit status 3)."""


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _digest(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _dist_info(zf: zipfile.ZipFile, wheel: str) -> str:
    tops = {n.split("/", 1)[0] for n in zf.namelist()}
    infos = [t for t in tops if t.endswith(".dist-info")]
    if len(infos) != 1:
        raise WheelError(f"{wheel}: expected one .dist-info directory, found {len(infos)}")
    return infos[0]


def _record(zf: zipfile.ZipFile, info: str, wheel: str) -> dict[str, tuple[str, str]]:
    """The wheel's RECORD: member -> (hash, size); a member RECORD does not list is refused."""
    try:
        text = zf.read(f"{info}/RECORD").decode()
    except KeyError:
        raise WheelError(f"{wheel}: no {info}/RECORD") from None
    rows = {row[0]: (row[1], row[2] if len(row) > 2 else "") for row in csv.reader(io.StringIO(text)) if row}
    for name in zf.namelist():
        if not name.endswith("/") and name not in rows:
            raise WheelError(f"{wheel}: {name} is not in RECORD")
    return rows


def _read_checked(zf: zipfile.ZipFile, name: str, want: str, wheel: str) -> bytes:
    data = zf.read(name)
    if want and want != _digest(data):
        raise WheelError(f"{wheel}: {name} does not match its RECORD hash")
    return data


def _destination(name: str, info: str, paths: dict[str, str]) -> tuple[str, str] | None:
    """(sysconfig key, path under it) for a wheel member; None for a .data subdir with no home."""
    data_dir = info[: -len(".dist-info")] + ".data"
    if name.startswith(data_dir + "/"):
        _, key, rest = name.split("/", 2)
        return (key, rest) if key in paths else None
    return ("purelib", name)


def _installed(project: str, site: str) -> dict[str, tuple[str, str]]:
    """What installed versions of `project` recorded, under this environment only:
    normalised path -> (hash, size), their RECORD files included (with no hash)."""
    prefix = os.path.realpath(sys.prefix)
    found: dict[str, tuple[str, str]] = {}
    for entry in os.listdir(site) if os.path.isdir(site) else ():
        if not entry.endswith(".dist-info") or _normalize(entry[: -len(".dist-info")].rsplit("-", 1)[0]) != project:
            continue
        info_dir = os.path.join(site, entry)
        try:
            with open(os.path.join(info_dir, "RECORD"), newline="") as f:
                rows = [row for row in csv.reader(f) if row]
        except OSError:
            rows = []
        found[os.path.join(info_dir, "RECORD")] = ("", "")
        real: dict[str, str] = {}   # directory -> its real path (a RECORD names ~500 files in ~50)
        for row in rows:
            path = os.path.normpath(os.path.join(site, row[0]))
            d, name = os.path.split(path)
            if d not in real:
                real[d] = os.path.realpath(d)
            if os.path.islink(path):
                continue   # installed files are never symlinks; one planted there is not followed
            if os.path.join(real[d], name).startswith(prefix + os.sep):   # a RECORD can name anything
                found[path] = (row[1] if len(row) > 1 else "", row[2] if len(row) > 2 else "")
    return found


def _unchanged(path: str, digest: str, size: str, mode: int, installed: dict[str, tuple[str, str]]) -> bool:
    """The installed file is this member already: the same hash and size on record, and on disk a
    regular file of that size and mode (a file changed since then is written again)."""
    if not digest or installed.get(path) != (digest, size):
        return False
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and str(st.st_size) == size and stat.S_IMODE(st.st_mode) == mode


def _remove(stale: list[str], site: str) -> None:
    """Removes files an older install recorded that this one does not have; directories left
    empty go with them, and byte code of modules that are gone."""
    dirs = set()
    for path in stale:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except IsADirectoryError:
            continue
        dirs.add(os.path.dirname(path))
    for d in sorted(dirs, key=len, reverse=True):   # deepest first; stale byte code with it
        cache = os.path.join(d, "__pycache__")
        if os.path.isdir(cache) and not any(n.endswith(".py") for n in os.listdir(d)):
            for n in os.listdir(cache):
                os.unlink(os.path.join(cache, n))
            os.rmdir(cache)
        while d.startswith(site + os.sep) and os.path.isdir(d) and not os.listdir(d):
            os.rmdir(d)
            d = os.path.dirname(d)


def _console_scripts(text: bytes) -> dict[str, str]:
    if not text:
        return {}
    cp = configparser.ConfigParser(delimiters=("=",), interpolation=None)
    cp.optionxform = str
    cp.read_string(text.decode())
    return dict(cp.items("console_scripts")) if cp.has_section("console_scripts") else {}


def _script(target: str) -> bytes:
    module, _, attr = target.partition(":")
    attr = attr.split("[")[0].strip()
    top = attr.split(".")[0]
    return (f"#!{sys.executable}\n"
            "import sys\n"
            f"from {module.strip()} import {top}\n"
            "if __name__ == '__main__':\n"
            f"    sys.exit({attr}())\n").encode()


def _write(path: str, data: bytes, mode: int) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.wheelinstall-tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def install(wheel: str) -> tuple[str, int, int]:
    """Installs `wheel` over what an earlier version installed: files whose content is already in
    place are kept, the rest written, what the new version no longer has removed. Every member to
    be written is read and checked against RECORD before anything installed is touched.
    Returns (dist-info directory name, files written, files kept)."""
    paths = sysconfig.get_paths()
    site = paths["purelib"]
    with zipfile.ZipFile(wheel) as zf:
        info = _dist_info(zf, wheel)
        meta = zf.read(f"{info}/WHEEL").decode() if f"{info}/WHEEL" in zf.namelist() else ""
        if not re.search(r"^Wheel-Version:\s*1\.", meta, re.M):
            raise WheelError(f"{wheel}: not a version 1 wheel ({info}/WHEEL)")
        rows = _record(zf, info, wheel)
        project = _normalize(info[: -len(".dist-info")].rsplit("-", 1)[0])
        installed = _installed(project, site)
        entry_points = f"{info}/entry_points.txt"
        members = set(zf.namelist())
        if entry_points in rows and entry_points not in members:
            raise Incomplete(f"{wheel}: {entry_points} is not in this partial wheel")
        scripts = _console_scripts(_read_checked(zf, entry_points, rows[entry_points][0], wheel)
                                   if entry_points in rows else b"")
        placed = []          # (path, hash, size, data or None when the installed file is kept)
        for zi in zf.infolist():
            name = zi.filename
            if zi.is_dir() or name == f"{info}/RECORD":
                continue
            where = _destination(name, info, paths)
            if where is None:
                raise WheelError(f"{wheel}: {name}: no install location for that .data directory")
            key, rest = where
            path = os.path.normpath(os.path.join(paths[key], rest))
            zmode = zi.external_attr >> 16   # executable as pip decides it: a regular file with an x bit
            mode = 0o755 if stat.S_ISREG(zmode) and zmode & 0o111 else 0o644
            digest, size = rows[name]
            shebang = key == "scripts"
            if not shebang and _unchanged(path, digest, size, mode, installed):
                placed.append((path, digest, size, mode, None))
                continue
            data = _read_checked(zf, name, digest, wheel)
            if shebang and data.startswith(b"#!python"):
                data = f"#!{sys.executable}".encode() + data[len(b"#!python"):]
                digest, size = _digest(data), str(len(data))
                if _unchanged(path, digest, size, mode, installed):
                    data = None
            placed.append((path, digest, size, mode, data))
        for name, (digest, size) in rows.items():   # a partial wheel: the rest must be in place
            if name in members or name == f"{info}/RECORD" or name.endswith("/"):
                continue
            where = _destination(name, info, paths)
            path = os.path.normpath(os.path.join(paths[where[0]], where[1])) if where else ""
            try:
                mode = stat.S_IMODE(os.lstat(path).st_mode) if path else 0
            except OSError:
                mode = 0
            if not (mode and _unchanged(path, digest, size, mode, installed)):
                raise Incomplete(f"{wheel}: {name} is neither in this partial wheel nor installed as its RECORD says")
            placed.append((path, digest, size, mode, None))
    for script, target in scripts.items():
        data = _script(target)
        path = os.path.normpath(os.path.join(paths["scripts"], script))
        digest, size = _digest(data), str(len(data))
        placed.append((path, digest, size, 0o755,
                       None if _unchanged(path, digest, size, 0o755, installed) else data))
    installer = INSTALLER.encode() + b"\n"
    path, digest, size = os.path.join(site, info, "INSTALLER"), _digest(installer), str(len(installer))
    placed.append((path, digest, size, 0o644, None if _unchanged(path, digest, size, 0o644, installed) else installer))

    record_path = os.path.join(site, info, "RECORD")
    keep = {p for p, *_ in placed} | {record_path}
    _remove([p for p in installed if p not in keep], site)
    written = 0
    for path, _d, _s, mode, data in placed:
        if data is not None:
            _write(path, data, mode)
            written += 1
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    for path, digest, size, _m, _data in placed:
        w.writerow((path[len(site) + 1:] if path.startswith(site + os.sep) else os.path.relpath(path, site),
                    digest, size))
    w.writerow((f"{info}/RECORD", "", ""))
    _write(record_path, out.getvalue().encode(), 0o644)
    return info, written + 1, len(placed) - written


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python - WHEEL", file=sys.stderr)
        return 2
    try:
        info, written, kept = install(argv[0])
    except Incomplete as exc:
        print(f"wheelinstall: {exc}", file=sys.stderr)
        return 3
    except (WheelError, zipfile.BadZipFile, OSError) as exc:
        print(f"wheelinstall: {exc}", file=sys.stderr)
        return 1
    print(f"installed {info[: -len('.dist-info')]} ({written} written, {kept} unchanged) in {sys.prefix}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
