"""Agent delivery to a host with no internet: the wheel set (bundle.py) pushed over SFTP and
installed offline.

1. Over SFTP: only the wheels the host does not already hold (by name and size).
2. On the host: a venv in /opt/provisioner/venv (`pip install --no-index --find-links` for the
   dependencies, unless the venv already holds them), the agent's wheel installed by
   `wheelinstall`, and /usr/local/bin/provision linked to it.

The wheels are built for this interpreter's CPython version; the host's python3 must have the same
major.minor, which is checked first (one clear error instead of a failed install).
"""
from __future__ import annotations

import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import HostError
from ..host import wheelinstall
from .bundle import AgentBundle, content_digest
from .ssh import SshClient

AGENT = "/usr/local/bin/provision"   # where delivery links the host agent
REMOTE_WHEELS = "/var/tmp/provisioner-wheels"
REMOTE_VENV = "/opt/provisioner/venv"


@dataclass
class DeliveryReport:
    sent: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    bytes_sent: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    version: str = ""


def deliver(ssh: SshClient, bundle: AgentBundle, *, venv: str = REMOTE_VENV, staging: str = REMOTE_WHEELS,
            progress: Callable[[str], None] = lambda _m: None) -> DeliveryReport:
    report = DeliveryReport()
    t0 = time.monotonic()
    remote_py = ssh.run(["python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"]).stdout.strip()
    if remote_py != bundle.python:
        raise HostError(f"agent delivery to {ssh.where}: host has Python {remote_py}, the wheels were built "
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
    script = (f"ln -sfn {shlex.quote(venv)}/bin/provision {AGENT} && "
              f"printf '%s\\n' {shlex.quote(digest)} > {shlex.quote(marker)} && {AGENT} --version")
    report.version = ssh.run(["sh", "-c", script], sudo=True).stdout.strip()
    report.seconds["install"] = round(time.monotonic() - t1, 2)
    progress(f"agent: installed {report.version} in {venv} in {report.seconds['install']}s")
    return report
