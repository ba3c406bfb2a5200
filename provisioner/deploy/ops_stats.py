"""`provision stats [STACK|HOST] --cloud C`: docker stats' columns for every container of the
chosen hosts, plus one line per host — each host's agent samples its own cgroups and /proc
(`provision --json container stats --no-stream`), all hosts at once over their SSH connections."""
from __future__ import annotations

import json
import shlex
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from paramiko import SSHException

from ..errors import ProvisionerError
from ..metrics import stats
from ..remote.deliver import AGENT
from .inventory import HostRecord


@dataclass
class HostStats:
    record: HostRecord
    host: dict | None = None                        # stats.HostRow.to_json() from the host
    containers: list[dict] = field(default_factory=list)
    error: str | None = None

    def to_json(self) -> dict:
        return {"host": self.record.name, "cloud": self.record.cloud, "summary": self.host,
                "containers": self.containers, "error": self.error}


def remote_argv(interval: float, agent: str = AGENT) -> list[str]:
    return [agent, "--json", "container", "stats", "--no-stream", "--interval", f"{interval:g}"]


def sample(clients: dict[str, object], records: list[HostRecord], interval: float = 1.0) -> list[HostStats]:
    """One sample of every host (`clients`: record name -> a Runner there), taken concurrently."""
    def one(rec: HostRecord) -> HostStats:
        out = HostStats(rec)
        try:
            res = clients[rec.name].run(remote_argv(interval), sudo=True, check=False, timeout=120)
        except (ProvisionerError, OSError, EOFError, SSHException) as exc:
            out.error = str(exc)
            return out
        if res.returncode != 0:
            out.error = (res.stderr.strip().splitlines() or [f"`{shlex.join(remote_argv(interval))}` exited "
                                                            f"{res.returncode}"])[-1].removeprefix("error: ")
            return out
        try:
            doc = json.loads(res.stdout)
            out.host, out.containers = doc["host"], list(doc["containers"])
        except (ValueError, KeyError, TypeError):
            out.error = f"the agent printed no stats: {res.stdout[:120]!r}"
        return out

    with ThreadPoolExecutor(max_workers=max(1, len(records))) as pool:
        return list(pool.map(one, records))


HEADERS = ["HOST", *stats.HEADERS]


def rows(samples: list[HostStats]) -> list[list[str]]:
    out = []
    for s in samples:
        for c in s.containers:
            out.append([s.record.name, *stats.cells(stats.Row(**c))])
    return out


def host_lines(samples: list[HostStats]) -> list[str]:
    out = []
    for s in samples:
        if s.error is not None:
            out.append(f"{s.record.name}: unavailable: {s.error}")
        else:
            h = s.host
            row = stats.HostRow(s.record.name, h["cgroup_mode"], tuple(h["load"]), h["cpus"], h["mem_used"],
                                h["mem_total"], tuple((f["mountpoint"], f["used"], f["size"]) for f in h["filesystems"]))
            out.append(stats.host_line(row))
    return out
