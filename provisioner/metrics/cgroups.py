"""Reading a container's cgroup statistics (facts): the files the kernel keeps, in each layout.

Where they are: the runtime puts a container in `<hierarchy>/<cgroupsPath>` of every hierarchy
(native/src/cgroups.c; cgroupsPath is `Manager.cgroup_parent` + "/" + the id), so:

- v2 (one unified tree at /sys/fs/cgroup, as on systemd hosts and the local cloud's VMs):
  cpu.stat (usage_usec, user_usec, system_usec), memory.current, memory.max, memory.stat
  (anon, file, inactive_file), io.stat (rbytes=, wbytes= per MAJ:MIN), pids.current (else the
  count of cgroup.threads), cgroup.procs — the controllers' files exist only where the parent
  delegates them (containers/cgroupparent.py sees to it);
- v1 (a hierarchy per controller, or co-mounted ones such as cpu,cpuacct): cpuacct.usage (ns),
  cpuacct.stat (user/system in USER_HZ ticks), memory.usage_in_bytes, memory.limit_in_bytes,
  memory.stat (total_inactive_file, total_cache, total_rss), blkio's io_service_bytes_recursive
  (the CFQ file, else the throttle one: what runc's libcontainer falls back to), pids.current;
- hybrid (v1 controllers plus the controller-less "unified" tree systemd mounts): as v1, since
  the controllers — and so the statistics — are all on the v1 side.

The layout comes from /proc/self/mountinfo (what is mounted where, with which controllers), so
the same reader serves all three; `root` prefixes every path (tests read recorded trees).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

V1_CONTROLLERS = ("cpuacct", "memory", "blkio", "pids", "cpu")
UNLIMITED_V1 = 1 << 62          # v1 reports "no limit" as a page-rounded LONG_MAX; anything this big is none


@dataclass(frozen=True)
class Layout:
    mode: str                                   # v1 | hybrid | v2 | none
    v1: dict[str, Path] = field(default_factory=dict)   # controller -> hierarchy mount (under root)
    unified: Path | None = None                 # the cgroup2 mount (under root)

    def dirs(self, cgroup_path: str) -> dict[str, Path]:
        """The container's directory in each hierarchy that matters, by controller ("" for v2)."""
        rel = cgroup_path.strip("/")
        out = {ctrl: base / rel for ctrl, base in self.v1.items()}
        if self.unified is not None:
            out[""] = self.unified / rel
        return out


def parse_layout(mountinfo: str, root: str | os.PathLike = "/") -> Layout:
    """Which cgroup hierarchies are mounted where, from /proc/self/mountinfo."""
    root = Path(root)
    v1: dict[str, Path] = {}
    unified = None
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        mountpoint = left.split()[4].replace("\\040", " ")
        fstype, _source, *opts = right.split()
        where = root / mountpoint.lstrip("/")
        if fstype == "cgroup2":
            # hybrid hosts mount it at /sys/fs/cgroup/unified; a v2 host at /sys/fs/cgroup
            if unified is None or mountpoint == "/sys/fs/cgroup":
                unified = where
        elif fstype == "cgroup":
            for ctrl in (opts[0].split(",") if opts else []):
                if ctrl in V1_CONTROLLERS:
                    v1.setdefault(ctrl, where)
    if v1:
        mode = "hybrid" if unified is not None else "v1"
    else:
        mode = "v2" if unified is not None else "none"
    return Layout(mode, v1, unified)


def host_layout(root: str | os.PathLike = "/") -> Layout:
    return parse_layout((Path(root) / "proc/self/mountinfo").read_text(), root)


@dataclass(frozen=True)
class CgroupStats:
    """One container's counters, in bytes and nanoseconds whatever the layout reported them in."""

    cpu_ns: int | None = None                 # total CPU time
    cpu_user_ns: int | None = None
    cpu_system_ns: int | None = None
    memory_usage: int | None = None           # everything charged, page cache included (docker's "usage")
    memory_limit: int | None = None           # None: no limit
    memory_inactive_file: int | None = None   # what docker subtracts for MEM USAGE
    memory_cache: int | None = None
    memory_rss: int | None = None
    io: dict[str, tuple[int, int]] = field(default_factory=dict)   # "MAJ:MIN" -> (read bytes, write bytes)
    pids: int | None = None
    procs: tuple[int, ...] = ()               # the first few processes (to find the container's netns)

    @property
    def memory_working_set(self) -> int | None:
        if self.memory_usage is None:
            return None
        return max(0, self.memory_usage - (self.memory_inactive_file or 0))

    @property
    def io_read(self) -> int:
        return sum(r for r, _ in self.io.values())

    @property
    def io_write(self) -> int:
        return sum(w for _, w in self.io.values())

    def to_json(self) -> dict:
        return {"cpu_ns": self.cpu_ns, "cpu_user_ns": self.cpu_user_ns, "cpu_system_ns": self.cpu_system_ns,
                "memory_usage": self.memory_usage, "memory_limit": self.memory_limit,
                "memory_inactive_file": self.memory_inactive_file, "memory_cache": self.memory_cache,
                "memory_rss": self.memory_rss, "io": {k: list(v) for k, v in self.io.items()}, "pids": self.pids}


def _text(path: Path) -> str | None:
    try:
        return path.read_text()
    except (FileNotFoundError, NotADirectoryError, PermissionError, ProcessLookupError):
        return None
    except OSError:   # ENODEV and friends: a cgroup being removed under us
        return None


def _int(path: Path) -> int | None:
    t = _text(path)
    if t is None:
        return None
    t = t.strip()
    if t == "max":
        return None
    try:
        return int(t)
    except ValueError:
        return None


def _flat_keyed(text: str | None) -> dict[str, int]:
    out = {}
    for line in (text or "").splitlines():
        k, _, v = line.partition(" ")
        try:
            out[k] = int(v)
        except ValueError:
            continue
    return out


def _procs(path: Path, limit: int = 4) -> tuple[int, ...]:
    out = []
    for line in (_text(path) or "").split():
        if line.isdigit():
            out.append(int(line))
            if len(out) >= limit:
                break
    return tuple(out)


def read_v2(d: Path) -> CgroupStats | None:
    if not d.is_dir():
        return None
    cpu = _flat_keyed(_text(d / "cpu.stat"))
    mem = _flat_keyed(_text(d / "memory.stat"))
    io: dict[str, tuple[int, int]] = {}
    for line in (_text(d / "io.stat") or "").splitlines():
        dev, *kvs = line.split()
        vals = dict(kv.split("=", 1) for kv in kvs if "=" in kv)
        try:
            io[dev] = (int(vals.get("rbytes", 0)), int(vals.get("wbytes", 0)))
        except ValueError:
            continue
    usec = lambda k: cpu[k] * 1000 if k in cpu else None  # noqa: E731
    pids = _int(d / "pids.current")
    if pids is None:   # no pids controller delegated to it (containers/cgroupparent.py): count its threads
        threads = _text(d / "cgroup.threads")
        pids = len(threads.split()) if threads is not None else None
    return CgroupStats(cpu_ns=usec("usage_usec"), cpu_user_ns=usec("user_usec"), cpu_system_ns=usec("system_usec"),
                       memory_usage=_int(d / "memory.current"), memory_limit=_int(d / "memory.max"),
                       memory_inactive_file=mem.get("inactive_file"), memory_cache=mem.get("file"),
                       memory_rss=mem.get("anon"), io=io, pids=pids, procs=_procs(d / "cgroup.procs"))


def _blkio_v1(d: Path) -> dict[str, tuple[int, int]]:
    for name in ("blkio.io_service_bytes_recursive", "blkio.throttle.io_service_bytes_recursive"):
        per: dict[str, list[int]] = {}
        for line in (_text(d / name) or "").splitlines():
            parts = line.split()
            if len(parts) != 3 or parts[1].lower() not in ("read", "write"):
                continue
            try:
                n = int(parts[2])
            except ValueError:
                continue
            rw = per.setdefault(parts[0], [0, 0])
            rw[0 if parts[1].lower() == "read" else 1] += n
        if per:
            return {dev: (rw[0], rw[1]) for dev, rw in per.items()}
    return {}


def read_v1(dirs: dict[str, Path], clk_tck: int = 100) -> CgroupStats | None:
    mem_dir, cpu_dir = dirs.get("memory"), dirs.get("cpuacct")
    if not any(p.is_dir() for p in dirs.values() if p is not None):
        return None
    ticks = _flat_keyed(_text(cpu_dir / "cpuacct.stat")) if cpu_dir else {}
    tick_ns = 1_000_000_000 // clk_tck
    mem = _flat_keyed(_text(mem_dir / "memory.stat")) if mem_dir else {}
    limit = _int(mem_dir / "memory.limit_in_bytes") if mem_dir else None
    pids_dir = dirs.get("pids")
    procs_dir = next((p for p in (mem_dir, pids_dir, cpu_dir) if p is not None and p.is_dir()), None)
    return CgroupStats(
        cpu_ns=_int(cpu_dir / "cpuacct.usage") if cpu_dir else None,
        cpu_user_ns=ticks["user"] * tick_ns if "user" in ticks else None,
        cpu_system_ns=ticks["system"] * tick_ns if "system" in ticks else None,
        memory_usage=_int(mem_dir / "memory.usage_in_bytes") if mem_dir else None,
        memory_limit=None if limit is None or limit >= UNLIMITED_V1 else limit,
        memory_inactive_file=mem.get("total_inactive_file"), memory_cache=mem.get("total_cache"),
        memory_rss=mem.get("total_rss"),
        io=_blkio_v1(dirs["blkio"]) if "blkio" in dirs else {},
        pids=_int(pids_dir / "pids.current") if pids_dir else None,
        procs=_procs(procs_dir / "cgroup.procs") if procs_dir else ())


def read(layout: Layout, cgroup_path: str, clk_tck: int = 100) -> CgroupStats | None:
    """The container's statistics; None when it has no cgroup (not running)."""
    dirs = layout.dirs(cgroup_path)
    if layout.mode == "v2":
        return read_v2(dirs[""])
    if layout.mode in ("v1", "hybrid"):
        return read_v1({k: v for k, v in dirs.items() if k}, clk_tck)
    return None
