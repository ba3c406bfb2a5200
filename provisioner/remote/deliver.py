"""Agent delivery to a host with no internet: the wheel set (bundle.py) pushed over SFTP and
installed offline.

1. Root installs only from /opt/provisioner/wheels, root's alone (0700), where every wheel is
   checked against the sha256 this side computed and sends over the verified SSH session
   (`host/wheelstage.py`, run as root from stdin): a first pass says which wheels it lacks or
   holds with other content;
2. over SFTP, only those, into a fresh private upload directory of the login user's (`mktemp
   -d`); a second pass copies them in, hashing as it copies, and keeps a wheel only when its hash
   matches; anything else in the staging directory is removed;
3. on the host: a venv in /opt/provisioner/venv (`pip install --no-index --find-links` of the
   staging directory for the dependencies, unless the venv already holds them), the agent's wheel
   installed by `wheelinstall`, and /usr/local/bin/provision linked to it.

(Before, wheels were staged in /var/tmp/provisioner-wheels, which any local account could create
or write into, and a wheel of the right name and size there was installed by root unchecked.)

The wheels are built for this interpreter's CPython version; the host's python3 must have the same
major.minor, which is checked first (one clear error instead of a failed install).
"""
from __future__ import annotations

import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import CommandError, HostError
from ..host import wheelinstall, wheelstage
from .bundle import AgentBundle, content_digest, file_sha256
from .ssh import SshClient

AGENT = "/usr/local/bin/provision"   # where delivery links the host agent
REMOTE_WHEELS = "/opt/provisioner/wheels"   # root's alone: root installs only from here
REMOTE_VENV = "/opt/provisioner/venv"
UPLOAD_BASE = "/var/tmp"                    # the login user's private upload directory goes here


@dataclass
class DeliveryReport:
    sent: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    bytes_sent: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    version: str = ""


def _stage(ssh: SshClient, staging: str, upload: str, hashes: dict[str, str]) -> list[str]:
    """wheelstage as root (its text on stdin); the wheels it still lacks."""
    res = ssh.run(["python3", "-", staging, upload, *(f"{n}={h}" for n, h in hashes.items())], sudo=True,
                  check=False, input=Path(wheelstage.__file__).read_text(), timeout=300)
    if res.returncode != 0:
        tail = (res.stderr.strip() or res.stdout.strip()).splitlines()[-1:] or [f"exit {res.returncode}"]
        raise HostError(f"agent delivery to {ssh.where}: {tail[0]}")
    return [line for line in res.stdout.split() if line in hashes]


def _push(ssh: SshClient, bundle: AgentBundle, staging: str, upload_base: str, report: DeliveryReport) -> None:
    """Every wheel of the bundle into the host's staging directory, checked by hash."""
    local = {w.name: w for w in bundle.wheels}
    hashes = {name: file_sha256(w) for name, w in local.items()}
    missing = _stage(ssh, staging, "-", hashes)
    report.skipped = [n for n in local if n not in missing]
    if not missing:
        return
    upload = ssh.run(["mktemp", "-d", f"{upload_base}/provisioner-upload.XXXXXXXX"]).stdout.strip()
    try:
        for name in missing:
            ssh.put(local[name], f"{upload}/{name}")
            report.sent.append(name)
            report.bytes_sent += local[name].stat().st_size
        still = _stage(ssh, staging, upload, hashes)
        if still:
            raise HostError(f"agent delivery to {ssh.where}: {', '.join(still)} did not arrive in {upload}")
    finally:
        try:
            ssh.run(["rm", "-rf", upload], check=False)
        except CommandError:
            pass


def deliver(ssh: SshClient, bundle: AgentBundle, *, venv: str = REMOTE_VENV, staging: str = REMOTE_WHEELS,
            upload_base: str = UPLOAD_BASE, agent: str = AGENT,
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
    _push(ssh, bundle, staging, upload_base, report)
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
    script = (f"ln -sfn {shlex.quote(venv)}/bin/provision {shlex.quote(agent)} && "
              f"printf '%s\\n' {shlex.quote(digest)} > {shlex.quote(marker)} && {shlex.quote(agent)} --version")
    report.version = ssh.run(["sh", "-c", script], sudo=True).stdout.strip()
    report.seconds["install"] = round(time.monotonic() - t1, 2)
    progress(f"agent: installed {report.version} in {venv} in {report.seconds['install']}s")
    return report
