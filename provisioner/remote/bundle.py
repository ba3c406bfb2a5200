"""The agent's wheel set for a host with no internet, made on the operator's machine.

- The agent's own wheel is made from the provisioner this process runs — its modules and its two
  native binaries — whatever way it was installed (from a wheel, `pip install .`, an editable
  checkout): no source tree and no build tools are needed. The zip is deterministic (fixed file
  times), so an unchanged agent has the same digest and is not reinstalled.
- Its runtime dependencies — only those the agent imports, not the operator's cloud and SSH
  libraries — as binary wheels for the HOST's Python and C library (manylinux tags up to the
  host's glibc), downloaded once per (python, glibc, requirements) into the cache. Nothing is
  built for this interpreter: a host may run another Python minor than the operator.
- When the host's Python is this one's minor, the agent's byte code is compiled here as well
  (bytecode.py), so the host compiles nothing on first use; otherwise the host compiles what it
  imports, once.
"""
from __future__ import annotations

import base64
import csv
import hashlib
import importlib.metadata
import io
import os
import platform
import re
import shutil
import sys
import tempfile
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .. import __version__, native
from ..agentlibs import OPERATOR_LIBRARIES
from ..errors import HostError
from ..runner import Runner
from . import bytecode

DEFAULT_CACHE = Path(os.environ.get("PROVISION_WHEEL_CACHE", "/var/tmp/provisioner-wheel-cache"))
_DONE = ".complete"
_CONTENT = "content"   # beside an agent wheel in the cache: its content_digest
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
OPERATOR_ONLY = {d.lower() for d in OPERATOR_LIBRARIES.values()}


@dataclass(frozen=True)
class HostPython:
    """A host's interpreter as far as wheels care: "3.13", C library "2.41", machine "x86_64"."""

    version: str
    glibc: str
    machine: str = "x86_64"

    @classmethod
    def local(cls) -> "HostPython":
        return cls(f"{sys.version_info.major}.{sys.version_info.minor}", platform.libc_ver()[1] or "2.17",
                   platform.machine())


@dataclass(frozen=True)
class AgentBundle:
    project_wheel: Path
    dependency_wheels: tuple[Path, ...]
    python: str  # "3.11"

    @property
    def wheels(self) -> tuple[Path, ...]:
        return (self.project_wheel, *self.dependency_wheels)


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[(]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def runtime_requirements() -> list[str]:
    """The installed project's runtime dependencies the agent needs on a host: extras such as
    [test] and the operator-only libraries left out."""
    reqs = importlib.metadata.requires("provisioner") or []
    return sorted(r for r in reqs if "extra ==" not in r and _name(r) not in OPERATOR_ONLY)


def content_digest(wheel: Path) -> str:
    """sha256 over a wheel's member names and contents (not the zip's timestamps); what an agent
    wheel this cache made says it is (written beside it) is read instead of computed again."""
    known = wheel.parent / _CONTENT
    if wheel.parent.joinpath(_DONE).exists() and known.exists():
        return known.read_text().strip()
    h = hashlib.sha256()
    with zipfile.ZipFile(wheel) as z:
        for name in sorted(z.namelist()):
            h.update(name.encode() + b"\0" + z.read(name) + b"\0")
    return h.hexdigest()


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---- the agent's own wheel ---------------------------------------------------------------------

def agent_files() -> list[tuple[str, bytes, int]]:
    """(name in the wheel, content, mode) for the running provisioner: its modules and, under
    provisioner/_bin/, the native runtime and supervisor wherever this install keeps them."""
    pkg = Path(__file__).resolve().parents[1]
    out = [(f"provisioner/{p.relative_to(pkg).as_posix()}", p.read_bytes(), 0o644)
           for p in sorted(pkg.rglob("*.py")) if "__pycache__" not in p.parts]
    for name, found in (("provision-runtime", native.runtime_path()), ("provision-shim", native.shim_path())):
        if not found:
            raise HostError(f"agent: {name} is not built in this install (a checkout builds it with "
                            f"`make -C native` / `make -C native/shim`; scripts/install.sh does both)")
        out.append((f"provisioner/_bin/{name}", Path(found).read_bytes(), 0o755))
    return out


def _record_row(name: str, data: bytes) -> list[str]:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return [name, f"sha256={digest}", str(len(data))]


def write_agent_wheel(dest_dir: Path, files: list[tuple[str, bytes, int]], requirements: list[str],
                      machine: str) -> Path:
    """A wheel of `files` with the dist-info an installer needs (PEP 427/376), deterministic."""
    info = f"provisioner-{__version__}.dist-info"
    meta = ["Metadata-Version: 2.1", "Name: provisioner", f"Version: {__version__}",
            "Summary: the provisioner host agent", *(f"Requires-Dist: {r}" for r in requirements)]
    extra = [(f"{info}/METADATA", ("\n".join(meta) + "\n").encode()),
             (f"{info}/WHEEL", (f"Wheel-Version: 1.0\nGenerator: provisioner {__version__}\n"
                                f"Root-Is-Purelib: false\nTag: py3-none-linux_{machine}\n").encode()),
             (f"{info}/entry_points.txt", b"[console_scripts]\nprovision = provisioner.cli.main:main\n")]
    members = [(n, d, m) for n, d, m in files] + [(n, d, 0o644) for n, d in extra]
    record = io.StringIO()
    csv.writer(record, lineterminator="\n").writerows([_record_row(n, d) for n, d, _ in members]
                                                      + [[f"{info}/RECORD", "", ""]])
    members.append((f"{info}/RECORD", record.getvalue().encode(), 0o644))
    path = dest_dir / f"provisioner-{__version__}-py3-none-linux_{machine}.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data, mode in members:
            zi = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            zi.external_attr = (0o100000 | mode) << 16
            zf.writestr(zi, data, zipfile.ZIP_DEFLATED)
    return path


def agent_wheel(host: HostPython, *, cache: Path | None = None,
                progress: Callable[[str], None] = lambda _m: None) -> Path:
    """The agent's wheel for `host`, from the cache when this install made it already."""
    cache = cache or DEFAULT_CACHE
    files = agent_files()
    here = HostPython.local()
    if host.machine != here.machine:
        raise HostError(f"agent: the host is {host.machine} but this install's native binaries are built for "
                        f"{here.machine}; deploy from a {host.machine} machine")
    compile_here = host.version == here.version
    h = hashlib.sha256(f"{__version__}\n{compile_here}\n".encode())
    for name, data, mode in files:
        h.update(name.encode() + b"\0" + data + b"\0" + str(mode).encode())
    reqs = runtime_requirements()
    h.update("\n".join(reqs).encode())
    out = cache / "agent" / h.hexdigest()[:16]
    wheels = sorted(out.glob("provisioner-*.whl")) if (out / _DONE).exists() else []
    if wheels:
        return wheels[0]
    progress(f"agent: making the provisioner wheel from this install{' (with byte code)' if compile_here else ''}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=out.parent))   # renamed into place: deploys share it
    try:
        wheel = write_agent_wheel(tmp, files, reqs, here.machine)
        if compile_here:
            bytecode.add_to_wheel(wheel)
        (tmp / _CONTENT).write_text(content_digest(wheel) + "\n")
        (tmp / _DONE).write_text("")
        try:
            os.rename(tmp, out)
        except OSError:
            pass   # another deploy of the same agent got there first: use its wheel
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return next(out.glob("provisioner-*.whl"))


def made_before(wheel: Path, content: str) -> Path | None:
    """The agent wheel this cache made earlier whose content is `content` (what a host says it
    has installed), found beside `wheel`; None when this machine never made it."""
    for known in wheel.parent.parent.glob(f"*/{_CONTENT}"):
        if (known.parent / _DONE).exists() and known.read_text().strip() == content:
            return next(known.parent.glob("*.whl"), None)
    return None


def partial_wheel(old: Path, new: Path) -> tuple[bytes, int, int]:
    """`new` without the members `old` has with the same content: what a host that installed
    `old` needs (host/wheelinstall.py keeps the rest in place). The dist-info and .data files
    always go (an installed script's first line names the host's python: it never compares).
    Returns (the zip, members in it, members in `new`)."""
    with zipfile.ZipFile(old) as zo:
        had = {zi.filename: (zi.CRC, zi.file_size) for zi in zo.infolist()}
        with zipfile.ZipFile(new) as zn:
            infos = zn.infolist()
            buf = io.BytesIO()
            sent = 0
            with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as out:
                for zi in infos:
                    data = zn.read(zi)
                    top = zi.filename.split("/", 1)[0]
                    if not top.endswith((".dist-info", ".data")) and had.get(zi.filename) == (zi.CRC, zi.file_size) \
                            and zo.read(zi.filename) == data:
                        continue
                    copy = zipfile.ZipInfo(zi.filename, date_time=zi.date_time)
                    copy.external_attr = zi.external_attr
                    out.writestr(copy, data, zipfile.ZIP_DEFLATED)
                    sent += 1
    return buf.getvalue(), sent, len(infos)


# ---- its dependencies, for the host's interpreter ------------------------------------------------

def manylinux_platforms(glibc: str, machine: str) -> list[str]:
    """The wheel platform tags a Python on this C library loads, newest first (PEP 600 and the
    legacy manylinux1/2010/2014 aliases)."""
    try:
        major, minor = (int(x) for x in glibc.split(".")[:2])
    except ValueError:
        raise HostError(f"agent: cannot read the host's C library version {glibc!r}") from None
    if major != 2:
        raise HostError(f"agent: unexpected C library version {glibc} on the host")
    tags = [f"manylinux_2_{m}_{machine}" for m in range(minor, 4, -1)]
    legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
    return tags + [f"{name}_{machine}" for m, name in legacy.items() if minor >= m]


def dependency_wheels(runner: Runner, host: HostPython, *, cache: Path | None = None,
                      progress: Callable[[str], None] = lambda _m: None) -> Path:
    """A directory of binary wheels of the agent's dependencies for `host` (downloaded once, cached)."""
    cache = cache or DEFAULT_CACHE
    reqs = runtime_requirements()
    key = hashlib.sha256("\n".join(reqs).encode()).hexdigest()[:12]
    deps_dir = cache / "wheels" / f"py{host.version}-glibc{host.glibc}-{host.machine}-{key}"
    if (deps_dir / _DONE).exists():
        return deps_dir
    progress(f"agent: fetching wheels of {len(reqs)} dependencies for Python {host.version} (once)…")
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".deps-", dir=cache))
    try:
        platforms = [a for tag in manylinux_platforms(host.glibc, host.machine) for a in ("--platform", tag)]
        res = runner.run([sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
                          "--only-binary=:all:", *platforms, "--python-version", host.version,
                          "--implementation", "cp", "--dest", str(tmp), *reqs], timeout=1800, check=False)
        if res.returncode != 0:
            tail = " ".join(res.stderr.strip().splitlines()[-2:])
            raise HostError(f"agent: no binary wheels of its dependencies for Python {host.version} with glibc "
                            f"{host.glibc} on {host.machine} ({tail})")
        (tmp / _DONE).write_text("\n".join(reqs) + "\n")
        deps_dir.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(deps_dir, ignore_errors=True)
        os.rename(tmp, deps_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return deps_dir


def build_bundle(runner: Runner, host: HostPython | None = None, *, cache: Path | None = None,
                 progress: Callable[[str], None] = lambda _m: None) -> AgentBundle:
    host = host or HostPython.local()
    deps_dir = dependency_wheels(runner, host, cache=cache, progress=progress)
    wheel = agent_wheel(host, cache=cache, progress=progress)
    return AgentBundle(wheel, tuple(sorted(deps_dir.glob("*.whl"))), host.version)


class AgentBundles:
    """Bundles by host interpreter, each made once however many hosts ask at the same time."""

    def __init__(self, runner: Runner, *, cache: Path | None = None,
                 progress: Callable[[str], None] = lambda _m: None, build=build_bundle):
        self.runner, self.cache, self.progress, self._build = runner, Path(cache) if cache else None, progress, build
        self._lock = threading.Lock()
        self._made: dict[HostPython, AgentBundle] = {}
        self._locks: dict[HostPython, threading.Lock] = {}

    def for_host(self, host: HostPython) -> AgentBundle:
        with self._lock:
            lock = self._locks.setdefault(host, threading.Lock())
        with lock:
            if host not in self._made:
                self._made[host] = self._build(self.runner, host, cache=self.cache, progress=self.progress)
            return self._made[host]
