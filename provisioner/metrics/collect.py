"""One snapshot of this host and its containers (facts, plain data): what the endpoint renders,
Graphite receives and `container stats` turns into docker stats' columns.

Per container: its record (name, image), which stack/service it is (compose.labels), its
supervisor's state (restarts, start time) and health, its cgroup's counters (cgroups.py, at the
runtime's cgroupsPath from the container's bundle), and its network namespace's interface
counters, read from /proc/<pid>/net/dev of a process in its cgroup — the namespace's own view,
as cAdvisor reads it (the loopback device left out, as cAdvisor and docker stats do). Nothing
here runs a command: a scrape only reads files.
"""
from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from ..compose.labels import service_labels
from ..containers import supervise
from ..containers.container import Containers, ContainerRecord
from ..errors import ContainerError
from ..images import history
from . import cgroups
from .node import NetDev, Node, parse_netdev, read_node

CGROUP_PARENT = "/provisioner"   # containers.lifecycle.Manager.cgroup_parent: the default place


@dataclass(frozen=True)
class ContainerFacts:
    id: str
    name: str
    image: str
    stack: str = ""
    service: str = ""
    state: str = "created"          # created | running | restarting | exited | dead
    restarts: int = 0
    started_at: float | None = None
    health: str | None = None       # starting | healthy | unhealthy; None without a healthcheck
    cgroup: cgroups.CgroupStats | None = None
    net: dict[str, NetDev] = field(default_factory=dict)

    @property
    def labels(self) -> tuple[tuple[str, str], ...]:
        return (("stack", self.stack), ("service", self.service), ("name", self.name), ("id", self.id[:12]),
                ("image", self.image))


@dataclass(frozen=True)
class Snapshot:
    at: float                        # time.time() when taken
    host: str
    stack: str
    cgroup_mode: str
    node: Node
    containers: tuple[ContainerFacts, ...] = ()
    boot: dict | None = None         # <root>/host/boot-result.json as the boot hook wrote it
    arrivals: tuple[history.Arrival, ...] = ()


def _epoch(stamp: str) -> float | None:
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() if stamp else None
    except ValueError:
        return None


class Collector:
    """Takes snapshots of the host under `root` (`sysroot` prefixes /proc and /sys: tests).
    Container records and cgroup paths are cached by the record file's mtime: a scrape re-reads
    only the counters."""

    def __init__(self, root: str | os.PathLike, *, host: str | None = None, stack: str = "",
                 sysroot: str | os.PathLike = "/", boot_result: Path | None = None):
        self.root = Path(root)
        self.sysroot = Path(sysroot)
        self.host = host or socket.gethostname()
        self.stack = stack
        self.boot_result = boot_result
        self.records = Containers(self.root)
        self.supervise_dir = self.records.dir / ".supervise"
        self.layout = cgroups.host_layout(self.sysroot)
        self.clk_tck = os.sysconf("SC_CLK_TCK")
        self._records: dict[str, tuple[float, ContainerRecord, str]] = {}
        self._devices: dict[str, str] = {}

    def _record(self, d: Path) -> tuple[ContainerRecord, str] | None:
        path = d / "container.json"
        try:
            mtime = path.stat().st_mtime
        except FileNotFoundError:
            return None
        hit = self._records.get(d.name)
        if hit is None or hit[0] != mtime:
            try:
                rec = ContainerRecord.from_json(json.loads(path.read_text()))
            except (OSError, ValueError, KeyError, TypeError):
                return None
            hit = (mtime, rec, self._cgroup_path(d, rec.id))
            self._records[d.name] = hit
        return hit[1], hit[2]

    @staticmethod
    def _cgroup_path(d: Path, cid: str) -> str:
        """The runtime's cgroupsPath from the bundle (its truth), else the default place."""
        try:
            path = json.loads((d / "bundle" / "config.json").read_text())["linux"]["cgroupsPath"]
            if isinstance(path, str) and path:
                return path
        except (OSError, ValueError, KeyError, TypeError):
            pass
        return f"{CGROUP_PARENT}/{cid}"

    def container_dirs(self) -> list[Path]:
        if not self.records.dir.is_dir():
            return []
        return sorted(d for d in self.records.dir.iterdir() if len(d.name) == 64 and d.is_dir())

    def containers(self) -> tuple[ContainerFacts, ...]:
        labels = service_labels(self.root)
        out = []
        dirs = self.container_dirs()
        for d in dirs:
            got = self._record(d)
            if got is None:
                continue
            rec, cg_path = got
            try:
                st = supervise.status(rec.id, self.supervise_dir, d)
                h = supervise.health(rec.id, self.supervise_dir) if rec.config.get("healthcheck") else None
            except ContainerError:
                continue   # its state file is unreadable: left out of this scrape, not a failed scrape
            state = "created" if st.status == "unknown" else st.status
            health = (h.status if h is not None else "starting") if rec.config.get("healthcheck") else None
            stats = cgroups.read(self.layout, cg_path, self.clk_tck) if state in ("running", "restarting") else None
            stack, service = labels.get(rec.name, ("", ""))
            out.append(ContainerFacts(rec.id, rec.name, rec.image, stack, service, state, st.restart_count,
                                      _epoch(st.started_at), health, stats, self._net(stats)))
        known = {d.name for d in dirs}
        for gone in set(self._records) - known:
            del self._records[gone]
        return tuple(out)

    def _net(self, stats: cgroups.CgroupStats | None) -> dict[str, NetDev]:
        for pid in (stats.procs if stats else ()):
            try:
                text = (self.sysroot / "proc" / str(pid) / "net" / "dev").read_text()
            except OSError:
                continue   # that process just exited; try the next
            return {k: v for k, v in parse_netdev(text).items() if k != "lo"}
        return {}

    def devices(self, snap: "Snapshot") -> dict[str, str]:
        """"MAJ:MIN" of the block devices the containers did I/O on -> /dev name (from sysfs)."""
        out = {}
        for key in {k for c in snap.containers if c.cgroup for k in c.cgroup.io}:
            if key not in self._devices:
                uevent = self.sysroot / "sys" / "dev" / "block" / key / "uevent"
                try:
                    name = next((ln.split("=", 1)[1] for ln in uevent.read_text().splitlines()
                                 if ln.startswith("DEVNAME=")), None)
                except OSError:
                    name = None
                self._devices[key] = f"/dev/{name}" if name else key
            out[key] = self._devices[key]
        return out

    def boot(self) -> dict | None:
        if self.boot_result is None:
            return None
        try:
            data = json.loads(self.boot_result.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def snapshot(self) -> Snapshot:
        return Snapshot(at=time.time(), host=self.host, stack=self.stack, cgroup_mode=self.layout.mode,
                        node=read_node(self.sysroot, self.clk_tck), containers=self.containers(), boot=self.boot(),
                        arrivals=tuple(history.read(self.root)))
