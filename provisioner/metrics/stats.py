"""`docker stats` from two snapshots (pure): per running container CPU %, memory usage / limit,
MEM %, net I/O, block I/O and PIDs, computed as docker's CLI computes them, plus one line for
the host (load, memory, each btrfs filesystem's use).

docker/cli's stats helpers: CPU % is the container's CPU time delta over the host's CPU time
delta (the sum of /proc/stat's cpu line) times the online CPUs, times 100 — so 100 % is one CPU
busy; MEM USAGE is usage minus inactive_file (total_inactive_file on v1), the page cache the
kernel can drop; the limit is the cgroup's, or the host's memory when there is none. Net and block
I/O are totals since the container started, in decimal units (kB, MB); memory in binary (MiB).
"""
from __future__ import annotations

from dataclasses import dataclass

from .collect import ContainerFacts, Snapshot


@dataclass(frozen=True)
class Row:
    id: str
    name: str
    stack: str
    service: str
    cpu_percent: float | None       # None on the first sample (no delta yet)
    mem_usage: int
    mem_limit: int
    mem_percent: float
    net_rx: int
    net_tx: int
    block_read: int
    block_write: int
    pids: int

    def to_json(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class HostRow:
    host: str
    cgroup_mode: str
    load: tuple[float, float, float]
    cpus: int
    mem_used: int                   # MemTotal - MemAvailable
    mem_total: int
    filesystems: tuple[tuple[str, int, int], ...]   # btrfs: (mountpoint, used, size)

    def to_json(self) -> dict:
        return {"host": self.host, "cgroup_mode": self.cgroup_mode, "load": list(self.load), "cpus": self.cpus,
                "mem_used": self.mem_used, "mem_total": self.mem_total,
                "filesystems": [{"mountpoint": m, "used": u, "size": s} for m, u, s in self.filesystems]}


def mem_usage(c: ContainerFacts) -> int:
    s = c.cgroup
    if s is None or s.memory_usage is None:
        return 0
    inactive = s.memory_inactive_file or 0
    return s.memory_usage - inactive if inactive < s.memory_usage else s.memory_usage


def cpu_percent(prev_cpu: int | None, prev_system: int, cur_cpu: int | None, cur_system: int, cpus: int) -> float:
    if prev_cpu is None or cur_cpu is None:
        return 0.0
    cpu_delta, system_delta = cur_cpu - prev_cpu, cur_system - prev_system
    if system_delta > 0 and cpu_delta > 0:
        return cpu_delta / system_delta * cpus * 100.0
    return 0.0


def rows(prev: Snapshot | None, cur: Snapshot) -> list[Row]:
    before = {c.id: c for c in prev.containers} if prev is not None else {}
    out = []
    for c in cur.containers:
        s = c.cgroup
        if s is None:
            continue          # only running containers, as docker stats without -a
        p = before.get(c.id)
        cpu = None
        if prev is not None:
            cpu = cpu_percent(p.cgroup.cpu_ns if p is not None and p.cgroup else None, prev.node.system_cpu_ns,
                              s.cpu_ns, cur.node.system_cpu_ns, cur.node.cpus)
        usage = mem_usage(c)
        limit = s.memory_limit or cur.node.meminfo.get("MemTotal", 0)
        out.append(Row(c.id, c.name, c.stack, c.service, cpu, usage, limit,
                       usage / limit * 100.0 if limit else 0.0,
                       sum(n.rx_bytes for n in c.net.values()), sum(n.tx_bytes for n in c.net.values()),
                       s.io_read, s.io_write, s.pids or 0))
    return out


def host_row(cur: Snapshot) -> HostRow:
    m = cur.node.meminfo
    total = m.get("MemTotal", 0)
    return HostRow(cur.host, cur.cgroup_mode, cur.node.load, cur.node.cpus, total - m.get("MemAvailable", total),
                   total, tuple((fs.mountpoint, fs.used, fs.size) for fs in cur.node.filesystems
                                if fs.fstype == "btrfs"))


# -- docker's units --------------------------------------------------------------------------------

def binary_size(n: float) -> str:
    """go-units BytesSize: "%.4g" with B, KiB, MiB, GiB, ..."""
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
    i = 0
    while n >= 1024 and i < len(units) - 1:
        n /= 1024
        i += 1
    return f"{n:.4g}{units[i]}"


def decimal_size(n: float) -> str:
    """go-units HumanSizeWithPrecision(n, 3): "%.3g" with B, kB, MB, GB, ..."""
    units = ("B", "kB", "MB", "GB", "TB", "PB")
    i = 0
    while n >= 1000 and i < len(units) - 1:
        n /= 1000
        i += 1
    return f"{n:.3g}{units[i]}"


HEADERS = ["CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "NET I/O", "BLOCK I/O", "PIDS"]


def cells(r: Row) -> list[str]:
    cpu = "--" if r.cpu_percent is None else f"{r.cpu_percent:.2f}%"
    return [r.id[:12], r.name, cpu, f"{binary_size(r.mem_usage)} / {binary_size(r.mem_limit)}",
            f"{r.mem_percent:.2f}%", f"{decimal_size(r.net_rx)} / {decimal_size(r.net_tx)}",
            f"{decimal_size(r.block_read)} / {decimal_size(r.block_write)}", str(r.pids)]


def host_line(h: HostRow) -> str:
    fs = ", ".join(f"{m} {binary_size(u)} / {binary_size(s)} ({u / s * 100 if s else 0:.0f}%)"
                   for m, u, s in h.filesystems) or "no btrfs"
    return (f"{h.host}: load {h.load[0]:.2f} {h.load[1]:.2f} {h.load[2]:.2f} ({h.cpus} CPU), mem "
            f"{binary_size(h.mem_used)} / {binary_size(h.mem_total)}, btrfs {fs}, cgroup {h.cgroup_mode}")
