"""`provision doctor`: read what this machine can do and say what to fix.

Pure reads only (files under /proc and /sys, `--version` of tools, a TCP connect); no changes.
"""
from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from . import native
from .errors import CommandError
from .runner import Runner
from .sysinfo import cgroup_mode, filesystems, fstype_of, kvm_usable

INSTALL_HINT = "run scripts/install.sh (installs every system package the project uses)"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True  # False: a warning, the rest of the tool still works


def _tool_version(runner: Runner, argv: list[str]) -> str | None:
    if not runner.which(argv[0]):
        return None
    try:
        out = runner.run(argv, check=False, timeout=10)
    except CommandError:   # timed out
        return None
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else argv[0]


def _recorded_kvm_verdict(root: Path) -> bool | None:
    """What a local-cloud launch found out: /dev/kvm can answer yet never run a guest (broken nesting)."""
    try:
        v = json.loads((root / "local" / "accel.json").read_text())
    except (OSError, ValueError):
        return None
    if v.get("kernel") != os.uname().release:
        return None
    return v.get("kvm_runs_guests")


def _registry_reachable(host: str, port: int = 443, timeout: float = 2.0) -> tuple[bool, str]:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True, f"{host}:{port} reachable"
    except OSError as exc:
        return False, f"{host}:{port}: {exc.strerror or exc}"


def run_checks(root: Path, registries: list[str] | None = None, runner: Runner | None = None) -> list[Check]:
    runner = runner or Runner()
    checks: list[Check] = []
    fs = filesystems()
    ns = sorted(p.name for p in Path("/proc/self/ns").iterdir()) if Path("/proc/self/ns").is_dir() else []
    need_ns = {"mnt", "pid", "net", "uts", "ipc", "user", "cgroup"}
    missing_ns = need_ns - set(ns)
    checks.append(Check("kernel namespaces", not missing_ns,
                        "all of " + ",".join(sorted(need_ns)) if not missing_ns else "missing " + ",".join(sorted(missing_ns)),
                        "use a kernel with CONFIG_NAMESPACES and all namespace types"))
    checks.append(Check("kernel btrfs", "btrfs" in fs, "btrfs in /proc/filesystems" if "btrfs" in fs else "not available",
                        "modprobe btrfs (or use a kernel with CONFIG_BTRFS_FS)"))
    checks.append(Check("loop devices", os.path.exists("/dev/loop-control"), "/dev/loop-control",
                        "modprobe loop", required=False))
    mode = cgroup_mode()
    checks.append(Check("cgroups", mode != "none", f"mode {mode}", "mount cgroup2 on /sys/fs/cgroup"))
    for tool, argv, pkg in (
        ("btrfs-progs", ["mkfs.btrfs", "--version"], "btrfs-progs"),
        ("blkid/wipefs", ["wipefs", "--version"], "util-linux"),
    ):
        v = _tool_version(runner, argv)
        checks.append(Check(tool, v is not None, v or "not found", f"apt-get install {pkg}"))
    rt = native.runtime_path()
    rv = native.runtime_version(rt, runner) if rt else None
    checks.append(Check("native runtime", bool(rt and rv), f"{rt} ({rv})" if rt else "provision-runtime not found",
                        "make -C native (or reinstall the package)"))
    store_fs = fstype_of(root)
    checks.append(Check("state root", store_fs == "btrfs", f"{root} is on {store_fs}",
                        f"the image store needs btrfs: e.g. truncate -s 20G /var/tmp/store.img && "
                        f"mkfs.btrfs /var/tmp/store.img && mkdir -p {root} && mount -o loop /var/tmp/store.img {root}"
                        f" (or `provision host disks apply` on an instance-store disk)", required=False))
    qemu = _tool_version(runner, ["qemu-system-x86_64", "--version"])
    checks.append(Check("qemu", qemu is not None, qemu or "not found", "apt-get install qemu-system-x86 qemu-utils",
                        required=False))
    kvm_ok, kvm_detail = kvm_usable()
    verdict = _recorded_kvm_verdict(root)
    if kvm_ok and verdict is False:
        kvm_ok, kvm_detail = False, kvm_detail + " but guests hang (recorded by a local-cloud launch)"
    checks.append(Check("kvm", kvm_ok, kvm_detail + ("" if kvm_ok else "; local VMs fall back to TCG (slow)"),
                        "enable nested virtualisation or run on a host with KVM", required=False))
    for reg in registries or ["registry-1.docker.io"]:
        host, _, port = reg.partition(":")
        ok, detail = _registry_reachable(host, int(port) if port else 443)
        checks.append(Check(f"registry {reg}", ok, detail,
                            "check the network, or use a registry the host can reach (--insecure-registry for HTTP)",
                            required=False))
    return checks
