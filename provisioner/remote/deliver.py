"""Agent delivery to a host with no internet: the wheel set (bundle.py) streamed over the verified
SSH session and installed offline, in two round trips.

1. Probe (as the login user): the host's python3 version, C library and machine, and what the
   agent's venv holds (the marker of the installed agent, the dependency wheels).
2. One streamed `sudo sh -c` that receives a tar of what the host lacks — the agent's wheel, the
   dependency wheels when the venv needs them, the installer and their SHA256SUMS — into a
   root-owned 0700 directory (no other local account can plant or swap a file there), checks every
   hash, then installs: a venv in /opt/provisioner/venv (`pip install --no-index` from that
   directory, only when the dependencies change), the agent's own wheel with `wheelinstall` (pip's
   start-up alone costs 12-30 s on an emulated host), /usr/local/bin/provision linked to it, and
   the marker written last.

An unchanged agent (same wheel contents, same dependency wheels) costs the probe only. A new agent
over one this machine made before (the host's marker names its content) travels as a partial
wheel: only the files that changed, installed in place (wheelinstall keeps the rest, or answers 3
when the host's files are not what its record says, and the whole wheel follows). The wheels
are for the host's own Python (3.11 or newer), whatever the operator runs.
"""
from __future__ import annotations

import hashlib
import io
import re
import shlex
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .. import __version__
from ..errors import CommandError, HostError
from ..host import wheelinstall
from ..runner import Runner
from .bundle import AgentBundle, AgentBundles, HostPython, content_digest, made_before, partial_wheel

AGENT = "/usr/local/bin/provision"   # where delivery links the host agent
AGENT_HOME = "/opt/provisioner"
REMOTE_VENV = f"{AGENT_HOME}/venv"
REMOTE_WHEELS = f"{AGENT_HOME}/wheels"   # root-owned 0700
MIN_PYTHON = (3, 11)
_SUMS = "SHA256SUMS"
_INSTALLER = "wheelinstall.py"


@dataclass
class DeliveryReport:
    sent: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    bytes_sent: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    version: str = ""
    python: str = ""


@dataclass(frozen=True)
class HostFacts:
    python: HostPython
    venv: bool               # the agent's venv exists (made by an earlier delivery, or baked into the image)
    marker: str              # what the installed agent's marker says ("" when none)
    deps: tuple[str, ...]    # the dependency wheels the venv holds


def probe_script(venv: str) -> str:
    v = shlex.quote(venv)
    # $pv and $mk stay set for what a caller's probe asks next in the same shell
    return (f"pv=$(python3 -V 2>&1); echo \"$pv\"; getconf GNU_LIBC_VERSION; uname -m; "
            f"if test -x {v}/bin/python; then echo venv; else echo -; fi; "
            f"mk=; if test -x {v}/bin/provision; then mk=$(cat {v}.installed 2>/dev/null); fi; echo \"$mk\"; "
            f"cat {v}.deps 2>/dev/null || true")


def parse_probe(text: str, where: str) -> HostFacts:
    lines = text.splitlines()
    if len(lines) < 5:
        raise HostError(f"agent delivery to {where}: unexpected answer from the host: {text.strip()[:200]!r}")
    m = re.fullmatch(r"Python (\d+)\.(\d+)(\.\S+)?", lines[0].strip())
    if not m:
        raise HostError(f"agent delivery to {where}: no python3 on the host ({lines[0].strip()[:120]})")
    if (int(m.group(1)), int(m.group(2))) < MIN_PYTHON:
        raise HostError(f"agent delivery to {where}: the host has Python {m.group(1)}.{m.group(2)}; the agent needs "
                        f"{'.'.join(map(str, MIN_PYTHON))} or newer")
    libc = re.fullmatch(r"glibc (\d+\.\d+)\S*", lines[1].strip())
    if not libc:
        raise HostError(f"agent delivery to {where}: the host's C library is not glibc ({lines[1].strip()[:80]})")
    host = HostPython(f"{m.group(1)}.{m.group(2)}", libc.group(1), lines[2].strip())
    return HostFacts(host, lines[3].strip() == "venv", lines[4].strip(),
                     tuple(sorted(x.strip() for x in lines[5:] if x.strip())))


def install_script(stage: str, venv: str, *, project: str, deps: tuple[str, ...], fresh: bool, with_deps: bool,
                   marker: str, home: str = AGENT_HOME, link: str = AGENT) -> str:
    """What root runs on the host, the tar of wheels on its stdin."""
    q = shlex.quote
    inc = f"{stage}/incoming"
    steps = [
        "set -e", "umask 077",
        # the staging directory is root's alone; one left by anyone else (or a symlink) is replaced
        f"if [ -L {q(stage)} ] || {{ [ -e {q(stage)} ] && [ \"$(stat -c %u {q(stage)})\" != 0 ]; }}; then "
        f"rm -rf {q(stage)}; fi",
        f"install -d -m 0700 -o root -g root {q(home)} {q(stage)}",
        f"rm -rf {q(inc)}", f"mkdir -m 0700 {q(inc)}",
        f"tar -x -C {q(inc)} --no-same-owner --no-same-permissions",
        f"cd {q(inc)}", f"sha256sum --quiet --strict -c {_SUMS}",
    ]
    if with_deps:   # only this bundle's wheels where pip looks
        steps.append(f"find {q(stage)} -maxdepth 1 -name '*.whl' -delete")
    steps.append(f"for f in *.whl; do mv -f \"$f\" {q(stage)}/; done")
    if fresh:
        steps.append(f"rm -rf {q(venv)}; python3 -m venv --without-pip {q(venv)}")
    if with_deps and deps:
        # exactly this bundle's dependency wheels, by the host's own pip into the venv (made
        # --without-pip: ensurepip would unpack and compile a second pip, slow on small or
        # emulated hosts), from the checked wheels only
        steps.append(f"python3 -m pip --python {q(venv)}/bin/python install -q --disable-pip-version-check "
                     f"--no-index --find-links {q(stage)} --no-compile "
                     + " ".join(q(f"{stage}/{d}") for d in deps))
    if with_deps:
        steps.append(f"printf '%s\\n' {' '.join(q(d) for d in deps)} > {q(venv)}.deps")
    # the agent's own wheel (same version number, new code) replaces the installed one
    steps.append(f"{q(venv)}/bin/python {_INSTALLER} {q(stage + '/' + project)} >/dev/null")
    steps.append(f"rm -rf {q(inc)}")
    steps.append(f"ln -sfn {q(venv)}/bin/provision {q(link)}")
    steps.append(f"printf '%s\\n' {q(marker)} > {q(venv)}.installed")
    return "\n".join(steps)


def _tar(files: list[tuple[str, bytes]]) -> Callable[[Callable[[bytes], None]], None]:
    """A producer streaming `files` (+ their SHA256SUMS first) as a tar."""
    sums = "".join(f"{hashlib.sha256(d).hexdigest()}  {n}\n" for n, d in files).encode()

    def produce(send: Callable[[bytes], None]) -> None:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
            for name, data in [(_SUMS, sums), *files]:
                ti = tarfile.TarInfo(name)
                ti.size, ti.mode, ti.mtime = len(data), 0o600, 0
                tf.addfile(ti, io.BytesIO(data))
                if buf.tell() > 1 << 20:
                    send(buf.getvalue())
                    buf.seek(0)
                    buf.truncate()
        send(buf.getvalue())
    return produce


def bundle_marker(bundle: AgentBundle) -> str:
    """What an agent installed from `bundle` says it is (its marker file): the agent wheel's
    content and the dependency wheels' names."""
    deps = ",".join(sorted(w.name for w in bundle.dependency_wheels))
    return f"{content_digest(bundle.project_wheel)} {deps}".strip()   # as the probe reads it back


def deliver(ssh: Runner, bundles: AgentBundles | AgentBundle, *, home: str = AGENT_HOME, venv: str = REMOTE_VENV,
            staging: str = REMOTE_WHEELS, link: str = AGENT,
            progress: Callable[[str], None] = lambda _m: None, facts: HostFacts | None = None) -> DeliveryReport:
    """Install the agent on the host behind `ssh` (an SshClient, or any Runner) unless it is there.
    `facts`: what a probe of the caller's already found (deploy's own probe asks more in the same
    round trip), else the first round trip asks."""
    report = DeliveryReport(version=__version__)
    t0 = time.monotonic()
    if facts is None:
        facts = parse_probe(ssh.run(["sh", "-c", probe_script(venv)]).stdout, ssh.where)
    report.python = facts.python.version
    bundle = bundles if isinstance(bundles, AgentBundle) else bundles.for_host(facts.python)
    deps = tuple(sorted(w.name for w in bundle.dependency_wheels))
    marker = bundle_marker(bundle)
    if facts.marker == marker:
        report.skipped = [w.name for w in bundle.wheels]
        report.seconds["push"] = report.seconds["install"] = 0.0
        progress(f"agent: {__version__} already installed from the same wheels; nothing to do")
        return report
    fresh = not facts.venv
    with_deps = fresh or facts.deps != deps
    wheels = list(bundle.wheels if with_deps else (bundle.project_wheel,))
    installer = [(_INSTALLER, Path(wheelinstall.__file__).read_bytes())]
    files = [(w.name, w.read_bytes()) for w in wheels] + installer
    script = install_script(staging, venv, project=bundle.project_wheel.name, deps=deps, fresh=fresh,
                            with_deps=with_deps, marker=marker, home=home, link=link)
    report.sent = [w.name for w in wheels]
    report.skipped = [w.name for w in bundle.wheels if w not in wheels]
    # over an agent this machine made: only the files that changed (the host keeps the others)
    old = None if with_deps or not facts.marker else made_before(bundle.project_wheel, facts.marker.split()[0])
    partial = None
    if old is not None:
        data, n, total = partial_wheel(old, bundle.project_wheel)
        partial = [(bundle.project_wheel.name, data)] + installer
        what = f"{n} of its {total} files: what changed"
    else:
        what = f"{len(wheels)} wheel(s)"
    report.bytes_sent = sum(len(d) for _, d in partial or files)
    progress(f"agent: installing {__version__} for Python {facts.python.version} ({what}, "
             f"{report.bytes_sent / 1e6:.2f} MB{', with its dependencies' if with_deps else ''})")
    t1 = time.monotonic()
    if partial is not None:
        res = ssh.run(["sh", "-c", script], sudo=True, input=_tar(partial), timeout=900, check=False)
        if res.returncode == 3:   # the host's files are not what its marker says: the whole wheel
            progress("agent: the host's installed files differ from its record; sending the whole wheel")
            partial = None
        elif res.returncode != 0:
            raise CommandError(["sh", "-c", script], res.returncode, res.stdout, res.stderr, where=ssh.where)
    if partial is None:
        ssh.run(["sh", "-c", script], sudo=True, input=_tar(files), timeout=900)
    report.seconds["push"] = round(t1 - t0, 2)
    report.seconds["install"] = round(time.monotonic() - t1, 2)
    progress(f"agent: installed {__version__} in {venv} in {time.monotonic() - t0:.1f}s")
    return report
