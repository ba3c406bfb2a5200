"""A snapshot as metric families (pure), and those as Prometheus' text exposition format or
Graphite's plaintext protocol.

Names are the ones existing dashboards query: node_exporter's for the host (node_load1,
node_memory_MemAvailable_bytes, node_filesystem_avail_bytes{device,fstype,mountpoint},
node_cpu_seconds_total{cpu,mode}, node_network_receive_bytes_total{device}, ...), cAdvisor's for
containers (container_cpu_usage_seconds_total, container_memory_usage_bytes,
container_memory_working_set_bytes, container_spec_memory_limit_bytes (0: no limit, as cAdvisor),
container_network_{receive,transmit}_bytes_total{interface}, container_fs_{reads,writes}_bytes_total
{device}, ...), each container's series labelled stack, service, name (the container), id (short)
and image. The project's own are provisioner_*: health, restarts, image arrival and boot-hook step
durations. Only counters and identities go out: never a container's environment or command line.

Text format (prometheus.io, "Exposition formats"): `# HELP`/`# TYPE` once per family, then
`name{label="value",...} value` lines; label values escape backslash, double quote and newline;
HELP text escapes backslash and newline; the body ends with a newline.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Iterable

from .collect import ContainerFacts, Snapshot

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
Labels = tuple[tuple[str, str], ...]


@dataclass
class Family:
    name: str
    type: str                     # counter | gauge
    help: str
    samples: list[tuple[Labels, float]] = field(default_factory=list)

    def add(self, value: float | None, labels: Labels = ()) -> None:
        if value is not None:
            self.samples.append((labels, value))


class Families(dict):
    """name -> Family, in the order first asked for."""

    def get_or_add(self, name: str, type_: str, help_: str) -> Family:
        fam = self.get(name)
        if fam is None:
            fam = self[name] = Family(name, type_, help_)
        return fam

    def __call__(self, name: str, type_: str, help_: str, value: float | None, labels: Labels = ()) -> None:
        self.get_or_add(name, type_, help_).add(value, labels)


def _meminfo_name(field_: str) -> str:
    # node_exporter's spelling: "Active(anon)" -> "Active_anon"
    return "node_memory_" + field_.replace("(", "_").replace(")", "") + "_bytes"


def _node(f: Families, snap: Snapshot) -> None:
    n = snap.node
    for i, name in enumerate(("node_load1", "node_load5", "node_load15")):
        f(name, "gauge", f"{name[9:]}m load average.", n.load[i])
    for key, value in n.meminfo.items():
        f(_meminfo_name(key), "gauge", f"Memory information field {key}.", value)
    f("machine_memory_bytes", "gauge", "Amount of memory installed on the machine.", n.meminfo.get("MemTotal"))
    f("machine_cpu_cores", "gauge", "Number of logical CPU cores.", n.cpus)
    cpu = f.get_or_add("node_cpu_seconds_total", "counter", "Seconds the CPUs spent in each mode.")
    for name, modes in n.cpu_ticks.items():
        for mode, ticks in modes.items():
            cpu.add(ticks / n.clk_tck, (("cpu", name[3:]), ("mode", mode)))
    for fs in n.filesystems:
        lab = (("device", fs.device), ("fstype", fs.fstype), ("mountpoint", fs.mountpoint))
        f("node_filesystem_size_bytes", "gauge", "Filesystem size in bytes.", fs.size, lab)
        f("node_filesystem_free_bytes", "gauge", "Filesystem free space in bytes.", fs.free, lab)
        f("node_filesystem_avail_bytes", "gauge", "Filesystem space available to non-root users in bytes.",
          fs.avail, lab)
    for dev, c in n.netdev.items():
        lab = (("device", dev),)
        for d, short in (("receive", "rx"), ("transmit", "tx")):
            f(f"node_network_{d}_bytes_total", "counter", f"Network device statistic {d}_bytes.",
              getattr(c, f"{short}_bytes"), lab)
            f(f"node_network_{d}_packets_total", "counter", f"Network device statistic {d}_packets.",
              getattr(c, f"{short}_packets"), lab)
            f(f"node_network_{d}_errs_total", "counter", f"Network device statistic {d}_errs.",
              getattr(c, f"{short}_errors"), lab)
            f(f"node_network_{d}_drop_total", "counter", f"Network device statistic {d}_drop.",
              getattr(c, f"{short}_dropped"), lab)
    f("node_boot_time_seconds", "gauge", "Node boot time, in unixtime.", n.boot_time or None)
    f("node_time_seconds", "gauge", "System time in seconds since epoch (1970).", snap.at)


def _container(f: Families, c: ContainerFacts, at: float, devices: dict[str, str]) -> None:
    lab = c.labels
    f("provisioner_container_running", "gauge", "1 when the container's process runs (or is being restarted).",
      1 if c.state in ("running", "restarting") else 0, lab)
    f("provisioner_container_restarts_total", "counter", "Restarts by the container's supervisor.", c.restarts, lab)
    if c.health is not None:
        fam = f.get_or_add("provisioner_container_health_status", "gauge",
                           "The container's healthcheck status (1 for the current one).")
        for status in ("starting", "healthy", "unhealthy"):
            fam.add(1 if c.health == status else 0, lab + (("status", status),))
    f("container_start_time_seconds", "gauge", "Start time of the container since unix epoch in seconds.",
      c.started_at, lab)
    s = c.cgroup
    if s is None:
        return
    f("container_last_seen", "gauge", "Last time a container was seen by the exporter.", at, lab)
    ns = lambda v: v / 1e9 if v is not None else None  # noqa: E731
    f("container_cpu_usage_seconds_total", "counter", "Cumulative cpu time consumed in seconds.", ns(s.cpu_ns), lab)
    f("container_cpu_user_seconds_total", "counter", "Cumulative user cpu time consumed in seconds.",
      ns(s.cpu_user_ns), lab)
    f("container_cpu_system_seconds_total", "counter", "Cumulative system cpu time consumed in seconds.",
      ns(s.cpu_system_ns), lab)
    f("container_memory_usage_bytes", "gauge", "Current memory usage in bytes, including all memory regardless "
      "of when it was accessed.", s.memory_usage, lab)
    f("container_memory_working_set_bytes", "gauge", "Current working set in bytes.", s.memory_working_set, lab)
    f("container_memory_cache", "gauge", "Number of bytes of page cache memory.", s.memory_cache, lab)
    f("container_memory_rss", "gauge", "Size of RSS in bytes.", s.memory_rss, lab)
    f("container_spec_memory_limit_bytes", "gauge", "Memory limit for the container (0: none).",
      s.memory_limit or 0, lab)
    f("container_processes", "gauge", "Number of tasks in the container (pids.current).", s.pids, lab)
    for dev, (read, write) in sorted(s.io.items()):
        dl = lab + (("device", devices.get(dev, dev)),)
        f("container_fs_reads_bytes_total", "counter", "Cumulative count of bytes read.", read, dl)
        f("container_fs_writes_bytes_total", "counter", "Cumulative count of bytes written.", write, dl)
    for iface, n in sorted(c.net.items()):
        il = lab + (("interface", iface),)
        for d, short in (("receive", "rx"), ("transmit", "tx")):
            f(f"container_network_{d}_bytes_total", "counter", f"Cumulative count of bytes {d}d.",
              getattr(n, f"{short}_bytes"), il)
            f(f"container_network_{d}_packets_total", "counter", f"Cumulative count of packets {d}d.",
              getattr(n, f"{short}_packets"), il)
            f(f"container_network_{d}_errors_total", "counter", f"Cumulative count of errors encountered while "
              f"{d[:-1]}ing.", getattr(n, f"{short}_errors"), il)
            f(f"container_network_{d}_packets_dropped_total", "counter", f"Cumulative count of packets dropped "
              f"while {d[:-1]}ing.", getattr(n, f"{short}_dropped"), il)


def _own(f: Families, snap: Snapshot) -> None:
    for a in snap.arrivals:
        f("provisioner_image_pull_duration_seconds", "gauge", "How long the image's latest pull (from a registry) "
          "or load (pushed over SSH) took.", a.seconds, (("image", a.image), ("how", a.how)))
        f("provisioner_image_pull_layers_applied", "gauge", "Layers the image's latest arrival had to fetch and "
          "apply.", a.applied, (("image", a.image), ("how", a.how)))
    boot = snap.boot
    if boot:
        for step in boot.get("steps") or []:
            if isinstance(step, dict) and isinstance(step.get("seconds"), (int, float)):
                f("provisioner_boot_step_duration_seconds", "gauge", "How long each step of the last boot hook took.",
                  step["seconds"], (("step", str(step.get("name"))), ("status", str(step.get("status")))))
        if isinstance(boot.get("seconds"), (int, float)):
            f("provisioner_boot_duration_seconds", "gauge", "How long the last boot hook took.", boot["seconds"])
        f("provisioner_boot_ok", "gauge", "1 when no step of the last boot hook failed.", 1 if boot.get("ok") else 0)


def families(snap: Snapshot, devices: dict[str, str] | None = None, extra: Iterable[Family] = ()) -> list[Family]:
    """Every family of the snapshot (`devices`: "MAJ:MIN" -> device name for the fs series)."""
    f = Families()
    _node(f, snap)
    for c in snap.containers:
        _container(f, c, snap.at, devices or {})
    _own(f, snap)
    for fam in extra:
        f.get_or_add(fam.name, fam.type, fam.help).samples.extend(fam.samples)
    return [fam for fam in f.values() if fam.samples]


# -- Prometheus text format ----------------------------------------------------------------------

def _value(v: float) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int):
        return str(v)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v))


def _escape_help(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n")


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(fams: Iterable[Family]) -> str:
    out: list[str] = []
    for fam in fams:
        out.append(f"# HELP {fam.name} {_escape_help(fam.help)}")
        out.append(f"# TYPE {fam.name} {fam.type}")
        for labels, value in fam.samples:
            if labels:
                body = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
                out.append(f"{fam.name}{{{body}}} {_value(value)}")
            else:
                out.append(f"{fam.name} {_value(value)}")
    return "\n".join(out) + "\n" if out else ""


# -- Graphite plaintext ----------------------------------------------------------------------------

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
SKIP_IN_PATH = {"stack", "service", "id", "image"}   # the container's name carries stack and service


def _component(v: str) -> str:
    return _UNSAFE.sub("_", v).strip("_") or "_"


def graphite_lines(fams: Iterable[Family], prefix: str, stack: str, host: str, at: float) -> list[str]:
    """`path value timestamp` lines: path = PREFIX[.STACK].HOST.METRIC[.LABEL VALUES...], each label value
    a path component of letters, digits, '_' and '-' (a mountpoint "/var/lib" becomes "var_lib")."""
    base = ".".join([prefix] + ([_component(stack)] if stack else []) + [_component(host)])
    ts = int(at)
    out = []
    for fam in fams:
        for labels, value in fam.samples:
            if isinstance(value, float) and not math.isfinite(value):
                continue
            parts = [_component(v) for k, v in labels if k not in SKIP_IN_PATH and v]
            out.append(f"{'.'.join([base, fam.name, *parts])} {_value(value)} {ts}")
    return out
