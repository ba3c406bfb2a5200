"""`provision doctor`: read what this machine can do and say what to fix.

Pure reads only (files under /proc and /sys, `--version` of tools, a TCP connect); no changes.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from . import native

INSTALL_HINT = "run scripts/install.sh (installs every system package the project uses)"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True  # False: a warning, the rest of the tool still works


def _tool_version(argv: list[str]) -> str | None:
    if not shutil.which(argv[0]):
        return None
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else argv[0]


def cgroup_mode(mountinfo: str | None = None) -> str:
    """'v2' (unified), 'hybrid' (v1 controllers + a cgroup2 mount), 'v1' (legacy) or 'none'."""
    if mountinfo is None:
        mountinfo = Path("/proc/self/mountinfo").read_text()
    v1 = v2_root = v2_any = False
    for line in mountinfo.splitlines():
        fields = line.split()
        if " - " not in line:
            continue
        mountpoint = fields[4]
        fstype = line.split(" - ", 1)[1].split()[0]
        if fstype == "cgroup2":
            v2_any = True
            v2_root = v2_root or mountpoint == "/sys/fs/cgroup"
        elif fstype == "cgroup":
            v1 = True
    if v2_root and not v1:
        return "v2"
    if v1 and v2_any:
        return "hybrid"
    if v1:
        return "v1"
    return "v2" if v2_any else "none"


def _filesystems() -> set[str]:
    try:
        return {line.split()[-1] for line in Path("/proc/filesystems").read_text().splitlines() if line.strip()}
    except OSError:
        return set()


def fstype_of(path: Path) -> str | None:
    """The filesystem type of the mount holding `path` (longest mountpoint prefix wins)."""
    path = path.resolve()
    while not path.exists():
        path = path.parent
    best, best_type = "", None
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        mnt = left.split()[4].replace("\\040", " ")
        if (str(path) == mnt or str(path).startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
            best, best_type = mnt, right.split()[0]
    return best_type


def kvm_usable() -> tuple[bool, str]:
    """True when /dev/kvm opens read-write and answers KVM_GET_API_VERSION."""
    if not os.path.exists("/dev/kvm"):
        return False, "/dev/kvm absent"
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return False, f"/dev/kvm: {exc.strerror}"
    try:
        version = fcntl.ioctl(fd, 0xAE00)  # KVM_GET_API_VERSION
        return version == 12, f"/dev/kvm API {version}"
    except OSError as exc:
        return False, f"/dev/kvm ioctl: {exc.strerror}"
    finally:
        os.close(fd)


def _recorded_kvm_verdict(root: Path) -> bool | None:
    """What a local-cloud launch found out: /dev/kvm can answer yet never run a guest (broken nesting)."""
    import json

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


def run_checks(root: Path, registries: list[str] | None = None) -> list[Check]:
    checks: list[Check] = []
    fs = _filesystems()
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
        v = _tool_version(argv)
        checks.append(Check(tool, v is not None, v or "not found", f"apt-get install {pkg}"))
    rt = native.runtime_path()
    rv = native.runtime_version(rt) if rt else None
    checks.append(Check("native runtime", bool(rt and rv), f"{rt} ({rv})" if rt else "provision-runtime not found",
                        "make -C native (or reinstall the package)"))
    store_fs = fstype_of(root)
    checks.append(Check("state root", store_fs == "btrfs", f"{root} is on {store_fs}",
                        f"the image store needs btrfs: e.g. truncate -s 20G /var/tmp/store.img && "
                        f"mkfs.btrfs /var/tmp/store.img && mkdir -p {root} && mount -o loop /var/tmp/store.img {root}"
                        f" (or `provision host disks apply` on an instance-store disk)", required=False))
    qemu = _tool_version(["qemu-system-x86_64", "--version"])
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
