"""Reading the host itself (facts): load, memory, CPU time, filesystems, network devices — the
/proc files node_exporter reads, parsed into plain data. `root` prefixes every path (tests)."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

# Filesystems worth a line: the ones data lives on (node_exporter also leaves out the pseudo ones).
REAL_FS = {"btrfs", "ext2", "ext3", "ext4", "xfs", "vfat", "f2fs", "zfs"}
_MEMINFO = re.compile(r"^([A-Za-z0-9_()]+):\s+(\d+)(?:\s+kB)?$")


@dataclass(frozen=True)
class Filesystem:
    device: str
    fstype: str
    mountpoint: str
    size: int
    free: int
    avail: int

    @property
    def used(self) -> int:
        return self.size - self.free


@dataclass(frozen=True)
class NetDev:
    rx_bytes: int
    rx_packets: int
    rx_errors: int
    rx_dropped: int
    tx_bytes: int
    tx_packets: int
    tx_errors: int
    tx_dropped: int


@dataclass(frozen=True)
class Node:
    load: tuple[float, float, float] = (0.0, 0.0, 0.0)
    meminfo: dict[str, int] = field(default_factory=dict)      # bytes, by /proc/meminfo's field names
    cpu_ticks: dict[str, dict[str, int]] = field(default_factory=dict)   # "cpu0" -> mode -> USER_HZ ticks
    clk_tck: int = 100
    boot_time: int = 0
    filesystems: tuple[Filesystem, ...] = ()
    netdev: dict[str, NetDev] = field(default_factory=dict)

    @property
    def cpus(self) -> int:
        return max(1, len(self.cpu_ticks))

    @property
    def system_cpu_ns(self) -> int:
        """All CPUs' time since boot (docker's system_cpu_usage: the sum of /proc/stat's cpu line)."""
        return sum(sum(modes.values()) for modes in self.cpu_ticks.values()) * (1_000_000_000 // self.clk_tck)


MODES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def parse_stat(text: str) -> tuple[dict[str, dict[str, int]], int]:
    """/proc/stat: per-CPU ticks by mode (guest time is inside user already), and btime."""
    cpus, btime = {}, 0
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0].startswith("cpu") and parts[0] != "cpu":
            cpus[parts[0]] = {m: int(v) for m, v in zip(MODES, parts[1:9])}
        elif parts and parts[0] == "btime":
            btime = int(parts[1])
    return cpus, btime


def parse_meminfo(text: str) -> dict[str, int]:
    """The fields in kB, in bytes (the unitless HugePages_* counts are left out)."""
    out = {}
    for line in text.splitlines():
        m = _MEMINFO.match(line.strip())
        if m and line.rstrip().endswith("kB"):
            out[m.group(1)] = int(m.group(2)) * 1024
    return out


def parse_netdev(text: str) -> dict[str, NetDev]:
    """/proc/net/dev (of a host, or of a process's network namespace)."""
    out = {}
    for line in text.splitlines()[2:]:
        name, sep, rest = line.partition(":")
        f = rest.split()
        if not sep or len(f) < 16:
            continue
        n = [int(x) for x in f]
        out[name.strip()] = NetDev(n[0], n[1], n[2], n[3], n[8], n[9], n[10], n[11])
    return out


def _unescape(s: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


# node_exporter's default mount-points-exclude, plus the containers' own root filesystems (each
# a bind of a part of the container store, mounted by the runtime setup: the store is counted once)
EXCLUDED = re.compile(r"^/(dev|proc|sys|run/credentials/.+|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)"
                      r"|/containers/[0-9a-f]{64}/rootfs$")


def mounts(mountinfo: str) -> list[tuple[str, str, str]]:
    """(device, fstype, mountpoint) of the real filesystems, each mountpoint once."""
    out, seen = [], set()
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        mountpoint = _unescape(left.split()[4])
        fstype, device, *_ = right.split()
        if fstype in REAL_FS and mountpoint not in seen and not EXCLUDED.search(mountpoint):
            seen.add(mountpoint)
            out.append((_unescape(device), fstype, mountpoint))
    return out


def statfs(root: Path, found: list[tuple[str, str, str]]) -> tuple[Filesystem, ...]:
    out = []
    for device, fstype, mountpoint in found:
        try:
            st = os.statvfs(root / mountpoint.lstrip("/"))
        except OSError:
            continue   # unmounted meanwhile, or a mount this process cannot see into
        out.append(Filesystem(device, fstype, mountpoint, st.f_blocks * st.f_frsize, st.f_bfree * st.f_frsize,
                              st.f_bavail * st.f_frsize))
    return tuple(out)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def read_node(root: str | os.PathLike = "/", clk_tck: int | None = None) -> Node:
    root = Path(root)
    proc = root / "proc"
    load = tuple(float(x) for x in (_read(proc / "loadavg").split()[:3] or ["0", "0", "0"]))
    cpus, btime = parse_stat(_read(proc / "stat"))
    return Node(load=load, meminfo=parse_meminfo(_read(proc / "meminfo")), cpu_ticks=cpus,
                clk_tck=clk_tck or os.sysconf("SC_CLK_TCK"), boot_time=btime,
                filesystems=statfs(root, mounts(_read(proc / "self/mountinfo"))),
                netdev=parse_netdev(_read(proc / "net/dev")))
