"""Installs one wheel into the running interpreter's environment: what `pip install --no-deps
--force-reinstall --no-compile WHEEL` does, for the agent's own wheel on a host whose venv already
holds the dependencies.

Why not pip: on a small or emulated host pip's own start-up and resolver cost 12 s (idle, TCG) to
30 s (during cloud-init's first boot) for a 1 MB wheel whose dependencies are all in place; this
is a zip extraction plus three small files.

Stdlib only and runnable as a script (`deliver` sends this file's text to the venv's python on
stdin): it runs before the agent exists on the host.

    python - WHEEL          install (replacing an installed version of the same project)

The wheel format (PEP 427, PEP 376 RECORD, PEP 491 .data directories): every file is checked
against the hash in the wheel's RECORD before anything installed is touched; `X.data/scripts/`
goes to the scripts directory (a `#!python` first line becomes this interpreter; modes as
the zip records them, as pip does), `X.data/<key>/`
to that sysconfig path, everything else to purelib; console scripts come from entry_points.txt.
The previous install's RECORD says what to remove first (only files under this environment).
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


def _check_record(zf: zipfile.ZipFile, info: str, wheel: str) -> dict[str, bytes]:
    """Every member, read and checked against RECORD (a member RECORD does not list is refused)."""
    try:
        record = zf.read(f"{info}/RECORD").decode()
    except KeyError:
        raise WheelError(f"{wheel}: no {info}/RECORD") from None
    hashes = {row[0]: row[1] for row in csv.reader(io.StringIO(record)) if row}
    files = {}
    for zi in zf.infolist():
        if zi.is_dir():
            continue
        data = zf.read(zi)
        want = hashes.get(zi.filename)
        if want is None:
            raise WheelError(f"{wheel}: {zi.filename} is not in RECORD")
        if want and zi.filename != f"{info}/RECORD" and want != _digest(data):
            raise WheelError(f"{wheel}: {zi.filename} does not match its RECORD hash")
        files[zi.filename] = data
    return files


def _destination(name: str, info: str, paths: dict[str, str]) -> tuple[str, str] | None:
    """(sysconfig key, path under it) for a wheel member; None for a .data subdir with no home."""
    data_dir = info[: -len(".dist-info")] + ".data"
    if name.startswith(data_dir + "/"):
        _, key, rest = name.split("/", 2)
        return (key, rest) if key in paths else None
    return ("purelib", name)


def _remove_installed(project: str, paths: dict[str, str]) -> list[str]:
    """Removes what an installed version of `project` recorded (under this environment only);
    returns what it removed."""
    site = paths["purelib"]
    prefix = os.path.realpath(sys.prefix)
    removed = []
    for entry in os.listdir(site) if os.path.isdir(site) else ():
        if not entry.endswith(".dist-info") or _normalize(entry[: -len(".dist-info")].rsplit("-", 1)[0]) != project:
            continue
        info_dir = os.path.join(site, entry)
        dirs = {info_dir}
        try:
            with open(os.path.join(info_dir, "RECORD"), newline="") as f:
                rows = [row for row in csv.reader(f) if row]
        except OSError:
            rows = []
        for row in rows:
            path = os.path.realpath(os.path.join(site, row[0]))
            if not path.startswith(prefix + os.sep):
                continue  # a RECORD can name anything; only this environment's files go
            try:
                os.unlink(path)
                removed.append(path)
            except FileNotFoundError:
                pass
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
    return removed


def _console_scripts(files: dict[str, bytes], info: str) -> dict[str, str]:
    text = files.get(f"{info}/entry_points.txt")
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


def install(wheel: str) -> tuple[str, int]:
    """Installs `wheel`; returns (dist-info directory name, files written)."""
    paths = sysconfig.get_paths()
    with zipfile.ZipFile(wheel) as zf:
        info = _dist_info(zf, wheel)
        meta = zf.read(f"{info}/WHEEL").decode() if f"{info}/WHEEL" in zf.namelist() else ""
        if not re.search(r"^Wheel-Version:\s*1\.", meta, re.M):
            raise WheelError(f"{wheel}: not a version 1 wheel ({info}/WHEEL)")
        files = _check_record(zf, info, wheel)
        modes = {zi.filename: zi.external_attr >> 16 for zi in zf.infolist()}
    project = _normalize(info[: -len(".dist-info")].rsplit("-", 1)[0])
    placed = []
    for name in files:
        where = _destination(name, info, paths)
        if where is None:
            raise WheelError(f"{wheel}: {name}: no install location for that .data directory")
        placed.append((name, where))
    scripts = _console_scripts(files, info)

    _remove_installed(project, paths)
    site = paths["purelib"]
    record = []
    for name, (key, rest) in placed:
        if name == f"{info}/RECORD":
            continue
        data = files[name]
        zmode = modes.get(name, 0)   # executable as pip decides it: a regular file with an x bit
        mode = 0o755 if stat.S_ISREG(zmode) and zmode & 0o111 else 0o644
        if key == "scripts" and data.startswith(b"#!python"):
            data = f"#!{sys.executable}".encode() + data[len(b"#!python"):]
        path = os.path.join(paths[key], rest)
        _write(path, data, mode)
        record.append((path, data))
    for script, target in scripts.items():
        data = _script(target)
        path = os.path.join(paths["scripts"], script)
        _write(path, data, 0o755)
        record.append((path, data))
    installer = INSTALLER.encode() + b"\n"
    _write(os.path.join(site, info, "INSTALLER"), installer, 0o644)
    record.append((os.path.join(site, info, "INSTALLER"), installer))
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    for path, data in record:
        w.writerow((os.path.relpath(path, site), _digest(data), len(data)))
    w.writerow((f"{info}/RECORD", "", ""))
    _write(os.path.join(site, info, "RECORD"), out.getvalue().encode(), 0o644)
    return info, len(record) + 1


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python - WHEEL", file=sys.stderr)
        return 2
    try:
        info, n = install(argv[0])
    except (WheelError, zipfile.BadZipFile, OSError) as exc:
        print(f"wheelinstall: {exc}", file=sys.stderr)
        return 1
    print(f"installed {info[: -len('.dist-info')]} ({n} files) in {sys.prefix}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
