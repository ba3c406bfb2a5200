"""Agent delivery to a host with no internet: wheels built here, pushed over SFTP, installed offline.

1. On the operator machine: `pip wheel --no-deps` of this project (its build also compiles native/
   when present), plus wheels of its runtime dependencies cached under `<cache>/wheels/<tag>-<hash>`
   (keyed by the interpreter's major.minor and the dependency list, so they are built once).
2. Over SFTP: only the wheels the host does not already hold (by name and size).
3. On the host: a venv in /opt/provisioner/venv (`pip install --no-index --find-links` for the
   dependencies, unless the venv already holds them), the agent's wheel installed by
   `wheelinstall`, and /usr/local/bin/provision linked to it.

The wheels are built for this interpreter's CPython version; the host's python3 must have the same
major.minor, which is checked first (one clear error instead of a failed install).
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shlex
import shutil
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import HostError
from ..runner import Runner
from . import bytecode, wheelinstall
from .ssh import SshClient

DEFAULT_CACHE = Path(os.environ.get("PROVISION_WHEEL_CACHE", "/var/tmp/provisioner-wheel-cache"))
REMOTE_WHEELS = "/var/tmp/provisioner-wheels"
REMOTE_VENV = "/opt/provisioner/venv"
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


@dataclass
class DeliveryReport:
    sent: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    bytes_sent: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    version: str = ""


def runtime_requirements() -> list[str]:
    """The installed project's runtime dependencies (extras such as [test] left out)."""
    reqs = importlib.metadata.requires("provisioner") or []
    return sorted(r for r in reqs if "extra ==" not in r)


def project_dir() -> Path:
    here = Path(__file__).resolve().parent.parent.parent
    if not (here / "pyproject.toml").is_file():
        raise HostError(f"agent delivery: cannot build a wheel, {here} holds no pyproject.toml "
                        "(install provisioner from a checkout: pip install -e .)")
    return here


def python_tag() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


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


def deliver(ssh: SshClient, bundle: AgentBundle, *, venv: str = REMOTE_VENV, staging: str = REMOTE_WHEELS,
            progress: Callable[[str], None] = lambda _m: None) -> DeliveryReport:
    report = DeliveryReport()
    t0 = time.monotonic()
    remote_py = ssh.run(["python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"]).stdout.strip()
    if remote_py != bundle.python:
        raise HostError(f"agent delivery to {ssh.target.where}: host has Python {remote_py}, the wheels were built "
                        f"for {bundle.python}; run provision with a Python {remote_py} interpreter")
    digest = content_digest(bundle.project_wheel) + " " + ",".join(w.name for w in bundle.dependency_wheels)
    marker = f"{venv}.installed"
    current = ssh.run(["cat", marker], check=False).stdout.strip()
    if current == digest and ssh.run(["test", "-x", f"{venv}/bin/provision"], check=False).returncode == 0:
        report.skipped = [w.name for w in bundle.wheels]
        report.version = ssh.run([f"{venv}/bin/provision", "--version"]).stdout.strip()
        report.seconds["push"] = report.seconds["install"] = 0.0
        progress(f"agent: {report.version} already installed from the same wheels; nothing to do")
        return report
    ssh.run(["mkdir", "-p", staging])
    have = ssh.listdir(staging)
    for whl in bundle.wheels:
        size = whl.stat().st_size
        if have.get(whl.name) == size and whl != bundle.project_wheel:
            report.skipped.append(whl.name)
            continue
        ssh.put(whl, f"{staging}/{whl.name}")
        report.sent.append(whl.name)
        report.bytes_sent += size
    report.seconds["push"] = round(time.monotonic() - t0, 2)
    progress(f"agent: sent {len(report.sent)} wheel(s), {report.bytes_sent / 1e6:.1f} MB "
             f"({len(report.skipped)} already there) in {report.seconds['push']}s")
    t1 = time.monotonic()
    # The host's own pip installs into a venv made --without-pip (ensurepip would unpack and
    # compile a second pip: slow on small or emulated hosts), and --no-compile leaves the
    # byte-compiling to first import, which only touches the modules the agent uses.
    pip = ["python3", "-m", "pip", "--python", f"{venv}/bin/python", "install", "-q", "--disable-pip-version-check",
           "--no-index", "--find-links", staging, "--no-compile"]
    wheel = f"{staging}/{bundle.project_wheel.name}"
    fresh = ssh.run(["test", "-x", f"{venv}/bin/python"], check=False).returncode != 0
    deps = "\n".join(sorted(w.name for w in bundle.dependency_wheels))
    deps_file = f"{venv}.deps"   # which dependency wheels the venv holds (the VM image writes it too)
    if fresh:
        ssh.run(["python3", "-m", "venv", "--without-pip", venv], sudo=True)
    # The agent's own wheel (same version number, new code) replaces the installed one through
    # wheelinstall, not pip: pip's start-up alone is 12-30 s on an emulated host.
    own = [f"{venv}/bin/python", "-", wheel]
    installer = Path(wheelinstall.__file__).read_text()
    if not fresh and ssh.run(["cat", deps_file], check=False).stdout.strip() == deps:
        # The dependencies are in place (e.g. baked into the image): only the agent itself.
        ssh.run(own, sudo=True, timeout=900, input=installer)
    else:
        ssh.run([*pip, wheel], sudo=True, timeout=900)
        if not fresh:
            ssh.run(own, sudo=True, timeout=900, input=installer)
        ssh.run(["tee", deps_file], sudo=True, input=deps + "\n")
    # As root, so this first run also writes the byte code of what the agent imports.
    report.version = ssh.run(
        f"ln -sfn {shlex.quote(venv)}/bin/provision /usr/local/bin/provision && "
        f"printf '%s\\n' {shlex.quote(digest)} > {shlex.quote(marker)} && /usr/local/bin/provision --version",
        sudo=True).stdout.strip()
    report.seconds["install"] = round(time.monotonic() - t1, 2)
    progress(f"agent: installed {report.version} in {venv} in {report.seconds['install']}s")
    return report
