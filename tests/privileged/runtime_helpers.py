"""Bundles for runtime tests: a busybox-static rootfs and config.json builders.

The base config mirrors `runc spec` (the config tools hand to OCI runtimes), so the same
bundle runs unchanged under provision-runtime and runc.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NATIVE = REPO / "native"
BINARY = NATIVE / "build" / "provision-runtime"
BUSYBOX = "/bin/busybox"

DEFAULT_CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]

BASE_CONFIG = {
    "ociVersion": "1.0.2",
    "process": {
        "terminal": False,
        "user": {"uid": 0, "gid": 0},
        "args": ["true"],
        "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
        "cwd": "/",
        "capabilities": {k: list(DEFAULT_CAPS) for k in ("bounding", "effective", "permitted")},
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
        "noNewPrivileges": True,
    },
    "root": {"path": "rootfs", "readonly": True},
    "hostname": "box",
    "mounts": [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
        {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev"]},
    ],
    "linux": {
        "resources": {"devices": [{"allow": False, "access": "rwm"}]},
        "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount", "cgroup")],
        "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                        "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
                        "/proc/scsi"],
        "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
    },
}


def build_runtime() -> Path:
    """`make -C native` (a no-op when up to date)."""
    subprocess.run(["make", "-s", "-C", str(NATIVE)], check=True, capture_output=True, text=True)
    return BINARY


def make_rootfs(dest: Path) -> Path:
    """A busybox-static rootfs: /bin/busybox plus one symlink per applet."""
    bindir = dest / "bin"
    bindir.mkdir(parents=True)
    shutil.copy2(BUSYBOX, bindir / "busybox")
    out = subprocess.run([BUSYBOX, "--list"], check=True, capture_output=True, text=True).stdout
    for applet in out.split():
        if applet != "busybox":
            (bindir / applet).symlink_to("busybox")
    for d in ("proc", "sys", "dev", "tmp", "etc", "hooklog", "data"):
        (dest / d).mkdir()
    (dest / "etc" / "passwd").write_text("root:x:0:0:root:/:/bin/sh\n")
    (dest / "etc" / "group").write_text("root:x:0:\n")
    return dest


def make_bundle(path: Path, rootfs: Path, *, args=None, config=None, **overrides) -> Path:
    """Writes path/config.json from BASE_CONFIG; `overrides` merge at the top level and
    `config` is a function that may edit the dict further."""
    path.mkdir(parents=True, exist_ok=True)
    cfg = copy.deepcopy(BASE_CONFIG)
    cfg["root"]["path"] = str(rootfs)
    if args is not None:
        cfg["process"]["args"] = list(args)
    cfg.update(copy.deepcopy(overrides))
    if config:
        config(cfg)
    (path / "config.json").write_text(json.dumps(cfg, indent=2))
    return path


def runtime_argv(name: str, binary: Path, root: Path) -> list[str]:
    exe = str(binary) if name == "provision-runtime" else shutil.which(name)
    return [exe, "--root", str(root)]


def parse_kv(text: str) -> dict[str, str]:
    """"key=value" lines printed by a container → dict (later keys win)."""
    out = {}
    for line in text.splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def cgroup_dirs(cg_path: str) -> list[str]:
    """Every cgroup directory (any hierarchy) for cg_path that exists now."""
    found = []
    base = Path("/sys/fs/cgroup")
    for h in base.iterdir():
        d = h / cg_path.lstrip("/")
        if d.is_dir():
            found.append(str(d))
    d = base / cg_path.lstrip("/")
    if d.is_dir() and str(d) not in found:
        found.append(str(d))
    return found


def host_hard_nofile() -> int:
    import resource
    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def can_raise_rlimits() -> bool:
    """Does this process hold CAP_SYS_RESOURCE (bit 24 of CapEff)?"""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) & (1 << 24))
    return False


def v2_controllers() -> set[str] | None:
    """Controllers of the cgroup v2 hierarchy, or None if there is none."""
    for p in ("/sys/fs/cgroup/cgroup.controllers", "/sys/fs/cgroup/unified/cgroup.controllers"):
        if os.path.exists(p):
            return set(Path(p).read_text().split())
    return None
