"""The agent's wheel set for a host with no internet, built on the operator's machine.

`pip wheel --no-deps` of this project (its build also compiles native/ when present), with byte
code compiled here (bytecode.py), plus wheels of its runtime dependencies — only those the agent
imports, not the operator's cloud and SSH libraries — cached under `<cache>/wheels/<tag>-<hash>`
(keyed by the interpreter's major.minor and the dependency list, so they are built once). The
local cloud's VM image bakes the same dependency wheels in (vmimage).
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import os
import re
import shutil
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..agentlibs import OPERATOR_LIBRARIES
from ..errors import HostError
from ..runner import Runner
from . import bytecode

DEFAULT_CACHE = Path(os.environ.get("PROVISION_WHEEL_CACHE", "/var/tmp/provisioner-wheel-cache"))
_DONE = ".complete"
GUEST_GLIBC = "2_36"  # Debian bookworm, the local cloud's image and the clouds' default


@dataclass(frozen=True)
class AgentBundle:
    project_wheel: Path
    dependency_wheels: tuple[Path, ...]
    python: str  # "3.11"

    @property
    def wheels(self) -> tuple[Path, ...]:
        return (self.project_wheel, *self.dependency_wheels)


OPERATOR_ONLY = {d.lower() for d in OPERATOR_LIBRARIES.values()}


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[(]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def runtime_requirements() -> list[str]:
    """The installed project's runtime dependencies the agent needs on a host: extras such as
    [test] and the operator-only libraries left out."""
    reqs = importlib.metadata.requires("provisioner") or []
    return sorted(r for r in reqs if "extra ==" not in r and _name(r) not in OPERATOR_ONLY)


def project_dir() -> Path:
    here = Path(__file__).resolve().parent.parent.parent
    if not (here / "pyproject.toml").is_file():
        raise HostError(f"agent delivery: cannot build a wheel, {here} holds no pyproject.toml "
                        "(install provisioner from a checkout: pip install -e .)")
    return here


def python_tag() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes (what the host checks a delivered wheel against)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def content_digest(wheel: Path) -> str:
    """sha256 over a wheel's member names and contents (not the zip's timestamps), so two builds
    of the same source compare equal and an unchanged agent is not reinstalled."""
    h = hashlib.sha256()
    with zipfile.ZipFile(wheel) as z:
        for name in sorted(z.namelist()):
            h.update(name.encode() + b"\0" + z.read(name) + b"\0")
    return h.hexdigest()


_SOURCE_PARTS = ("pyproject.toml", "setup.py", "provisioner", "templates", "native")
_SKIP_DIRS = {"__pycache__", "build", "tests", ".pytest_cache"}


def source_digest(source: Path) -> str:
    """sha256 over what goes into the wheel (package, templates, C sources), so an unchanged
    checkout reuses its wheel instead of rebuilding it on every deploy."""
    h = hashlib.sha256()
    for part in _SOURCE_PARTS:
        top = source / part
        paths = [top] if top.is_file() else sorted(
            p for p in top.rglob("*") if p.is_file() and not _SKIP_DIRS & set(p.relative_to(source).parts))
        for p in paths:
            h.update(str(p.relative_to(source)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def dependency_wheels(runner: Runner, *, cache: Path | None = None,
                      progress: Callable[[str], None] = lambda _m: None) -> tuple[list[str], Path]:
    """The runtime dependencies and a directory of their wheels for the host (built once, cached)."""
    cache = cache or DEFAULT_CACHE
    reqs = runtime_requirements()
    key = hashlib.sha256("\n".join(reqs).encode()).hexdigest()[:12]
    deps_dir = cache / "wheels" / f"py{python_tag()}-glibc{GUEST_GLIBC}-{key}"
    if not (deps_dir / _DONE).exists():
        progress(f"agent: building wheels of {len(reqs)} dependencies into {deps_dir} (once)…")
        tmp = Path(tempfile.mkdtemp(prefix=".deps-", dir=cache.mkdir(parents=True, exist_ok=True) or cache))
        try:
            # Binary wheels for the HOST's platform (bookworm: glibc 2.36, the same CPython minor),
            # not this machine's: pip would otherwise pick wheels needing a newer glibc. A
            # dependency published only as an sdist falls back to building it here.
            res = runner.run([sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
                              "--only-binary=:all:", "--platform", f"manylinux_{GUEST_GLIBC}_x86_64",
                              "--python-version", python_tag(), "--implementation", "cp",
                              "--dest", str(tmp), *reqs], timeout=1800, check=False)
            if res.returncode != 0:
                runner.run([sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check",
                            "--prefer-binary", "--wheel-dir", str(tmp), *reqs], timeout=1800)
            (tmp / _DONE).write_text("\n".join(reqs) + "\n")
            deps_dir.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(deps_dir, ignore_errors=True)
            os.rename(tmp, deps_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return reqs, deps_dir


def _prune_agent_wheels(keep: Path, max_age: float = 3600.0) -> None:
    """Drop wheels of other source versions once nobody can still be installing them."""
    now = time.time()
    for d in keep.parent.iterdir():
        try:
            if d != keep and d.is_dir() and now - d.stat().st_mtime > max_age:
                shutil.rmtree(d, ignore_errors=True)
        except OSError:
            pass


def build_bundle(runner: Runner, *, cache: Path | None = None, source: Path | None = None,
                 progress: Callable[[str], None] = lambda _m: None) -> AgentBundle:
    cache = cache or DEFAULT_CACHE
    source = source or project_dir()
    _reqs, deps_dir = dependency_wheels(runner, cache=cache, progress=progress)
    out = cache / "agent" / source_digest(source)[:16]
    wheels = sorted(out.glob("provisioner-*.whl")) if (out / _DONE).exists() else []
    if wheels:
        progress(f"agent: the provisioner wheel of this source is built already ({wheels[0].name})")
    else:
        progress(f"agent: building the provisioner wheel from {source}…")
        out.parent.mkdir(parents=True, exist_ok=True)
        # Built aside and renamed into place: concurrent deploys share this cache.
        tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=out.parent))
        try:
            runner.run([sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "--no-deps",
                        "--wheel-dir", str(tmp), str(source)], timeout=900)
            for built in tmp.glob("provisioner-*.whl"):
                bytecode.add_to_wheel(built)   # the host then compiles nothing on first use
            (tmp / _DONE).write_text("")
            try:
                os.rename(tmp, out)
            except OSError:
                pass  # another deploy of the same source got there first: use its wheel
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        _prune_agent_wheels(out)
        wheels = sorted(out.glob("provisioner-*.whl"))
    if len(wheels) != 1:
        raise HostError(f"agent delivery: expected one provisioner wheel in {out}, found {len(wheels)}")
    deps = tuple(sorted(deps_dir.glob("*.whl")))
    return AgentBundle(wheels[0], deps, python_tag())
