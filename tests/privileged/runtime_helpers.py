"""Shared by the runtime tests: a busybox-static rootfs, config.json builders, the RT
driver for one runtime binary, and the fixtures (imported by the test modules).

The base config mirrors `runc spec` (the config tools hand to OCI runtimes), so the same
bundle runs unchanged under provision-runtime and runc.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

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


def compile_static(source: str, dest: Path, mode: int = 0o755) -> Path:
    """A tiny C program, compiled static (it runs in a busybox rootfs, which has no libc)."""
    src = dest.with_name(dest.name + ".c")
    src.write_text(source)
    subprocess.run(["cc", "-static", "-O2", "-o", str(dest), str(src)], check=True, capture_output=True, text=True)
    src.unlink()
    dest.chmod(mode)
    return dest


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


RUNTIMES = ["provision-runtime", pytest.param("runc", marks=pytest.mark.skipif(
    shutil.which("runc") is None, reason="runc not installed"))]

USERNS_MAP = [{"containerID": 0, "hostID": 100000, "size": 65536}]


# -- fixtures ---------------------------------------------------------------------------
@pytest.fixture(scope="session")
def runtime_bin():
    return build_runtime()


@pytest.fixture(scope="session")
def rootfs():
    # Not under pytest's 0700 basetemp: a user-namespaced root (host uid 100000) must be
    # able to reach it.
    base = Path(tempfile.mkdtemp(prefix="prt-rootfs-"))
    base.chmod(0o755)
    yield make_rootfs(base / "rootfs")
    shutil.rmtree(base, ignore_errors=True)
    # runc leaves the parents of its cgroups behind; ours are gone already
    for parent in Path("/sys/fs/cgroup").glob("*/prt-test*"):
        for d in sorted(parent.glob("**/"), key=lambda p: -len(p.parts)):
            try:
                d.rmdir()
            except OSError:
                pass


# PRT_CGROUP_V2=1: every runtime call runs in a private mount namespace whose
# /sys/fs/cgroup is a cgroup2 mount, i.e. what a pure-v2 host (current Debian) shows.
V2_MODE = os.environ.get("PRT_CGROUP_V2") == "1"
# Propagation is left as on the host (so shared host mounts stay shared, as for a runtime
# started normally); only /sys/fs/cgroup is made private before the cgroup2 mount covers it.
V2_WRAP = ["unshare", "-m", "--propagation", "unchanged", "sh", "-c",
           'mount --make-private /sys/fs/cgroup && mount -t cgroup2 none /sys/fs/cgroup && exec "$@"', "sh"]


def v2_has(*ctrls: str) -> bool:
    return set(ctrls) <= (v2_controllers() or set())


def procs_file(cg_path: str) -> Path:
    """The host path of cgroup.procs for the container's cgroup (pids hierarchy on v1)."""
    if V2_MODE:
        base = "/sys/fs/cgroup/unified" if os.path.ismount("/sys/fs/cgroup/unified") else "/sys/fs/cgroup"
        return Path(base) / cg_path.lstrip("/") / "cgroup.procs"
    return Path("/sys/fs/cgroup/pids") / cg_path.lstrip("/") / "cgroup.procs"


class RT:
    """One runtime binary with a private --root."""

    def __init__(self, name: str, binary: Path, root: Path):
        self.name = name
        self.exe = runtime_argv(name, binary, root)[0]
        self.base = (V2_WRAP if V2_MODE else []) + runtime_argv(name, binary, root)
        self.root = root
        self.ids: list[str] = []

    def argv_with(self, *global_opts, exe: str | None = None) -> list[str]:
        """The runtime's argv prefix with more global options after the binary (e.g.
        --systemd-cgroup, --log F), or another binary in its place."""
        i = self.base.index(self.exe)
        return self.base[:i] + [exe or self.exe, *map(str, global_opts)] + self.base[i + 1:]

    def new_id(self) -> str:
        cid = f"t{uuid.uuid4().hex[:10]}"
        self.ids.append(cid)
        return cid

    def cli(self, *args, check=True, timeout=30, **kw) -> subprocess.CompletedProcess:
        argv = self.base + [str(a) for a in args]
        if args and args[0] == "create":
            # The created process inherits create's stdio (runc semantics): capturing it
            # through pipes would wait for the container to exit, so use files.
            with open(self.root.parent / "create.out", "w+") as out, open(self.root.parent / "create.err", "w+") as err:
                rc = subprocess.run(argv, stdout=out, stderr=err, timeout=timeout, stdin=subprocess.DEVNULL, **kw).returncode
                out.seek(0)
                err.seek(0)
                proc = subprocess.CompletedProcess(argv, rc, out.read(), err.read())
        else:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, **kw)
        if check and proc.returncode != 0:
            raise AssertionError(f"{self.name} {args}: rc={proc.returncode} {proc.stderr}")
        return proc

    def run(self, bundle: Path, cid: str | None = None, **kw) -> subprocess.CompletedProcess:
        return self.cli("run", "--bundle", bundle, cid or self.new_id(), check=False, **kw)

    def state(self, cid: str) -> dict:
        return json.loads(self.cli("state", cid).stdout)

    def cleanup(self):
        for cid in self.ids:
            subprocess.run(self.base + ["delete", "--force", cid], capture_output=True, timeout=30)


@pytest.fixture(params=RUNTIMES)
def rt(request, runtime_bin, tmp_path):
    r = RT(request.param, runtime_bin, tmp_path / f"state-{request.param}")
    yield r
    r.cleanup()


@pytest.fixture
def prt(runtime_bin, tmp_path):
    r = RT("provision-runtime", runtime_bin, tmp_path / "state")
    yield r
    r.cleanup()


def bundle(tmp_path, rootfs, name="b", cgpath=None, **kw):
    def config(cfg, user=kw.pop("config", None)):
        cfg["linux"]["cgroupsPath"] = cgpath or f"/prt-test/{uuid.uuid4().hex[:10]}"
        if user:
            user(cfg)
    return make_bundle(tmp_path / name, rootfs, config=config, **kw)


def wait_for(pred, timeout=10.0, what="condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def in_v2_namespace(argv: list[str]) -> subprocess.CompletedProcess:
    """Runs argv in a private mount namespace whose /sys/fs/cgroup is a cgroup2 mount:
    what a pure-v2 host (current Debian) looks like to the runtime."""
    wrap = [] if V2_MODE else V2_WRAP  # in V2_MODE the runtime argv is wrapped already
    return subprocess.run(wrap + argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
