"""Pure: an image config + `docker run`-style options → an OCI runtime config.json (a dict).

Nothing here reads or writes the system; the caller hands in the image's /etc/passwd and
/etc/group text, the network endpoint's namespace and mounts, the volume mounts, and where
the rootfs is. What mirrors Docker (moby `daemon/oci_linux.go`, `oci/defaults.go`):

- args = Entrypoint + Cmd; `--entrypoint` replaces the image's Entrypoint *and* drops its Cmd;
  command arguments replace Cmd.
- Env: the image's, then the link variables, then `-e`/`--env-file` (later wins); PATH, HOSTNAME
  and HOME filled in when missing (HOME from the user's passwd entry, else "/").
- User: "", name, uid, name:group, uid:gid; names looked up in the image's passwd/group; the
  user's supplementary groups from /etc/group; an unknown name is an error (as Docker's).
- Docker's default capability set, masked and read-only paths, /dev, /dev/pts, /dev/shm,
  /dev/mqueue, /proc, /sys (ro), /sys/fs/cgroup (ro).
- `--memory` → linux.resources.memory.limit; `--cpus` → cpu quota/period (period 100 ms).
- linux.seccomp: the default profile (seccomp.py) unless `--security-opt seccomp=unconfined` or a
  profile of the user's (already converted to OCI form); `no-new-privileges` → noNewPrivileges.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

from ..errors import ContainerError
from ..runspec import seccomp
from ..runspec.resources import CPU_PERIOD

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# moby oci/caps/defaults.go
DEFAULT_CAPS = sorted([
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID",
    "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL",
    "CAP_AUDIT_WRITE",
])
# moby oci/defaults.go
MASKED_PATHS = ["/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
                "/sys/devices/virtual/powercap"]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]

BASE_MOUNTS = [
    {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
     "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
    {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
     "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
    {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
    {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
     "options": ["ro", "nosuid", "noexec", "nodev"]},
    {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
    {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
     "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
]

# ---- users -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ResolvedUser:
    uid: int
    gid: int
    additional_gids: tuple[int, ...] = ()
    home: str = "/"


def _table(text: str, fields: int) -> list[list[str]]:
    rows = []
    for line in (text or "").splitlines():
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) >= fields:
            rows.append(parts)
    return rows


def resolve_user(spec: str, passwd: str = "", group: str = "") -> ResolvedUser:
    """Docker's user lookup (moby/sys/user GetExecUser) against the image's files."""
    spec = (spec or "").strip()
    users = _table(passwd, 7)
    groups = _table(group, 4)
    user_part, _, group_part = spec.partition(":")
    user_part = user_part or "0"
    entry = None
    for row in users:
        if row[0] == user_part or (user_part.isdigit() and row[2] == user_part):
            entry = row
            break
    if entry is None and not user_part.isdigit():
        raise ContainerError(f"unable to find user {user_part}: no matching entries in the image's /etc/passwd")
    uid = int(entry[2]) if entry else int(user_part)
    gid = int(entry[3]) if entry and entry[3].isdigit() else 0
    home = entry[5] if entry and entry[5] else "/"
    if group_part:
        match = next((g for g in groups if g[0] == group_part or (group_part.isdigit() and g[2] == group_part)), None)
        if match is None and not group_part.isdigit():
            raise ContainerError(f"unable to find group {group_part}: no matching entries in the image's /etc/group")
        gid = int(match[2]) if match else int(group_part)
    extra: list[int] = []
    if entry and not group_part:
        name = entry[0]
        for g in groups:
            members = [m for m in g[3].split(",") if m]
            if name in members and g[2].isdigit() and int(g[2]) != gid and int(g[2]) not in extra:
                extra.append(int(g[2]))
    return ResolvedUser(uid, gid, tuple(extra), home)


# ---- options ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunOptions:
    """What `provision container run` was asked, already parsed (no files read)."""

    command: tuple[str, ...] = ()
    entrypoint: str | None = None         # None: the image's; "" clears it
    env: tuple[tuple[str, str], ...] = ()  # -e and --env-file, in order
    user: str | None = None
    workdir: str | None = None
    hostname: str = ""
    memory: int | None = None             # bytes
    cpu_quota: int | None = None          # µs per CPU_PERIOD
    stop_signal: str | None = None
    seccomp: object = None                # None: the default profile; "unconfined"; or an OCI profile dict
    no_new_privileges: bool = False
    tty: bool = False                     # process.terminal: a pty (containers.relay receives it)

    def to_json(self) -> dict:
        return {"command": list(self.command), "entrypoint": self.entrypoint, "env": [list(e) for e in self.env],
                "user": self.user, "workdir": self.workdir, "hostname": self.hostname, "memory": self.memory,
                "cpu_quota": self.cpu_quota, "stop_signal": self.stop_signal, "seccomp": self.seccomp,
                "no_new_privileges": self.no_new_privileges, **({"tty": True} if self.tty else {})}

    @classmethod
    def from_json(cls, d: Mapping) -> "RunOptions":
        return cls(tuple(d.get("command") or ()), d.get("entrypoint"), tuple(tuple(e) for e in d.get("env") or ()),
                   d.get("user"), d.get("workdir"), d.get("hostname") or "", d.get("memory"), d.get("cpu_quota"),
                   d.get("stop_signal"), d.get("seccomp"), bool(d.get("no_new_privileges")), bool(d.get("tty")))


@dataclass(frozen=True)
class Mount:
    destination: str
    source: str
    readonly: bool = False

    def oci(self) -> dict:
        opts = ["rbind", "rprivate"] + (["ro"] if self.readonly else [])
        return {"destination": self.destination, "type": "bind", "source": self.source, "options": opts}


@dataclass
class BundleInputs:
    """Everything the config depends on besides the image config and the options."""

    rootfs: str
    cgroups_path: str
    passwd: str = ""
    group: str = ""
    netns_path: str | None = None
    network_mounts: Sequence[Mapping] = ()
    volume_mounts: Sequence[Mount] = ()
    link_env: Mapping[str, str] = field(default_factory=dict)


def process_args(image_cfg: Mapping, opts: RunOptions) -> list[str]:
    if opts.entrypoint is not None:
        entry = [opts.entrypoint] if opts.entrypoint else []
        cmd = list(opts.command)
    else:
        entry = list(image_cfg.get("Entrypoint") or [])
        cmd = list(opts.command) if opts.command else list(image_cfg.get("Cmd") or [])
    args = entry + cmd
    if not args:
        raise ContainerError("no command specified: the image has no Entrypoint or Cmd and none was given")
    return args


def merge_env(image_env: Iterable[str], link_env: Mapping[str, str], user_env: Iterable[tuple[str, str]],
              *, hostname: str, home: str) -> list[str]:
    env: dict[str, str] = {}
    for item in image_env or ():
        k, _, v = item.partition("=")
        env[k] = v
    env.update(link_env)
    for k, v in user_env:
        env[k] = v
    env.setdefault("PATH", DEFAULT_PATH)
    env.setdefault("HOSTNAME", hostname)
    env.setdefault("HOME", home)
    # Docker puts PATH first and HOSTNAME second; the rest keeps its order
    first = [k for k in ("PATH", "HOSTNAME") if k in env]
    return [f"{k}={env[k]}" for k in first + [k for k in env if k not in first]]


def stop_signal(image_cfg: Mapping, opts: RunOptions) -> str:
    return opts.stop_signal or image_cfg.get("StopSignal") or "SIGTERM"


def exposed_ports(image_cfg: Mapping) -> list[tuple[int, str]]:
    out = []
    for key in image_cfg.get("ExposedPorts") or {}:
        port, _, proto = str(key).partition("/")
        try:
            out.append((int(port), (proto or "tcp").lower()))
        except ValueError:
            raise ContainerError(f"image config has a bad ExposedPorts entry {key!r}") from None
    return sorted(set(out))


def build_config(image_cfg: Mapping, opts: RunOptions, inputs: BundleInputs) -> dict:
    """The config.json for one container run."""
    image_cfg = image_cfg or {}
    user = resolve_user(opts.user if opts.user is not None else image_cfg.get("User") or "", inputs.passwd,
                        inputs.group)
    cwd = opts.workdir or image_cfg.get("WorkingDir") or "/"
    if not cwd.startswith("/"):
        raise ContainerError(f"the working directory {cwd!r} is not an absolute path")
    hostname = opts.hostname
    caps = list(DEFAULT_CAPS)
    process = {
        "terminal": bool(opts.tty),
        "user": {"uid": user.uid, "gid": user.gid, **({"additionalGids": list(user.additional_gids)}
                                                       if user.additional_gids else {})},
        "args": process_args(image_cfg, opts),
        "env": merge_env(image_cfg.get("Env") or [], inputs.link_env, opts.env, hostname=hostname, home=user.home),
        "cwd": cwd,
        "capabilities": {k: list(caps) for k in ("bounding", "effective", "permitted")},
        "noNewPrivileges": bool(opts.no_new_privileges),
    }
    mounts = [dict(m) for m in BASE_MOUNTS]
    taken = {m["destination"] for m in mounts}
    for m in inputs.network_mounts:
        mounts.append(dict(m))
        taken.add(m["destination"])
    for v in inputs.volume_mounts:
        if v.destination in taken:
            raise ContainerError(f"duplicate mount point {v.destination}")
        taken.add(v.destination)
        mounts.append(v.oci())
    namespaces = [{"type": t} for t in ("pid", "ipc", "uts", "mount")]
    namespaces.append({"type": "network", "path": inputs.netns_path} if inputs.netns_path else {"type": "network"})
    resources: dict = {"devices": [{"allow": False, "access": "rwm"}]}
    if opts.memory:
        resources["memory"] = {"limit": int(opts.memory)}
    if opts.cpu_quota:
        resources["cpu"] = {"quota": int(opts.cpu_quota), "period": CPU_PERIOD}
    linux: dict = {
        "namespaces": namespaces,
        "cgroupsPath": inputs.cgroups_path,
        "resources": resources,
        "maskedPaths": list(MASKED_PATHS),
        "readonlyPaths": list(READONLY_PATHS),
    }
    if opts.seccomp is None:
        linux["seccomp"] = seccomp.default_profile(caps)
    elif isinstance(opts.seccomp, Mapping):
        linux["seccomp"] = dict(opts.seccomp)
    elif opts.seccomp != seccomp.UNCONFINED:
        raise ContainerError(f"bad seccomp setting {opts.seccomp!r} in the container's options")
    return {
        "ociVersion": "1.0.2",
        "process": process,
        "root": {"path": str(inputs.rootfs), "readonly": False},
        "hostname": hostname,
        "mounts": mounts,
        "linux": linux,
    }
