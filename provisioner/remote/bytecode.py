"""Byte code compiled here and shipped in the agent's wheel, so the host never compiles it.

An emulated host spends ~30 s byte-compiling what `provision host boot` imports on its first run
(the wheel is installed without compiling, which would cost the same up front). This machine runs
the same CPython major.minor as the host (agent delivery checks it), so it compiles instead:
hash-checked pycs (PEP 552), which stay valid whatever the installed files' mtimes, and which the
host's Python still verifies against the source's hash before using.
"""
from __future__ import annotations

import base64
import csv
import hashlib
import importlib.util
import io
import marshal
import os
import sys
import tempfile
import zipfile
from pathlib import Path

_CHECKED_HASH = 0b11   # PEP 552 flags: hash-based, check the source


def pyc_name(module_path: str) -> str:
    """`pkg/mod.py` -> `pkg/__pycache__/mod.cpython-311.pyc` for this interpreter."""
    head, _, tail = module_path.rpartition("/")
    stem = tail[: -len(".py")]
    name = f"__pycache__/{stem}.{sys.implementation.cache_tag}.pyc"
    return f"{head}/{name}" if head else name


def compile_pyc(source: bytes, path: str) -> bytes:
    code = compile(source, path, "exec", dont_inherit=True)
    return (importlib.util.MAGIC_NUMBER + _CHECKED_HASH.to_bytes(4, "little")
            + importlib.util.source_hash(source) + marshal.dumps(code))


def _record_row(name: str, data: bytes) -> list[str]:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return [name, f"sha256={digest}", str(len(data))]


def add_to_wheel(wheel: Path) -> int:
    """Adds a pyc beside each package module of `wheel` (in place, RECORD updated); returns how many."""
    with zipfile.ZipFile(wheel) as zf:
        infos = zf.infolist()
        members = {zi.filename: zf.read(zi) for zi in infos}
    record_name = next((n for n in members if n.endswith(".dist-info/RECORD") and n.count("/") == 1), None)
    if record_name is None:
        raise ValueError(f"{wheel}: no .dist-info/RECORD")
    data_dir = record_name.split("/", 1)[0][: -len(".dist-info")] + ".data/"
    pycs = {}
    for name, data in members.items():
        if name.endswith(".py") and not name.startswith(data_dir) and pyc_name(name) not in members:
            pycs[pyc_name(name)] = compile_pyc(data, name)
    rows = [r for r in csv.reader(io.StringIO(members[record_name].decode())) if r and r[0] != record_name]
    rows += [_record_row(n, d) for n, d in sorted(pycs.items())] + [[record_name, "", ""]]
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    fd, tmp = tempfile.mkstemp(prefix=".bytecode-", suffix=".whl", dir=wheel.parent)
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            for zi in infos:
                if zi.filename != record_name:
                    zf.writestr(zi, members[zi.filename], zipfile.ZIP_DEFLATED)
            for name, data in sorted(pycs.items()):
                zi = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
                zi.external_attr = 0o100644 << 16
                zf.writestr(zi, data, zipfile.ZIP_DEFLATED)
            zf.writestr(next(zi for zi in infos if zi.filename == record_name), out.getvalue(), zipfile.ZIP_DEFLATED)
        os.replace(tmp, wheel)
    except BaseException:
        os.unlink(tmp)
        raise
    return len(pycs)
