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
- `--memory` → linux.resources.memory.limit; `--cpus` → cpu quota/period (period 100 ms);
  `--memory-reservation` → memory.reservation; `--cpu-shares` → cpu.shares; `--pids-limit` →
  pids.limit; `--shm-size` → the size of /dev/shm (64 MiB by default, as Docker).
- linux.seccomp: the default profile (seccomp.py) unless `--security-opt seccomp=unconfined` or a
  profile of the user's (already converted to OCI form); `no-new-privileges` → noNewPrivileges.
- `--cap-add/--cap-drop` → the capability sets (runspec.privileges); `--privileged`: every
  capability, no seccomp, no masked or read-only paths, /sys and the cgroup tree writable, the
  host's devices (as Docker's HostDevices); `--read-only` → root.readonly; `--ulimit` →
  process.rlimits; `--sysctl` → linux.sysctl; `-t` → process.terminal (and TERM=xterm);
  `--group-add` → more additional gids; `--init`: tini (the host's, bind-mounted at
  /sbin/docker-init as Docker does) runs the command as its child.
- `--tmpfs` mounts are tmpfs with Docker's noexec,nosuid,nodev unless their options say exec/suid/dev;
  bind mounts get their propagation (rprivate by default).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

from ..errors import ContainerError
from ..runspec import seccomp
from ..runspec.privileges import DEFAULT_CAPS as _DEFAULT_CAPS
from ..runspec.resources import CPU_PERIOD
from .users import ResolvedUser, group_ids, resolve_user  # noqa: F401 (ResolvedUser: part of this API)

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_CAPS = sorted(_DEFAULT_CAPS)   # moby oci/caps/defaults.go
INIT_PATH = "/sbin/docker-init"        # where Docker mounts its init (tini) in the container
DEFAULT_SHM = 64 << 20
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
    # added with compose's per-service keys; recorded only when set (older records lack them)
    caps: tuple[str, ...] | None = None   # None: Docker's default set
    privileged: bool = False
    read_only: bool = False
    ulimits: tuple[tuple[str, int, int], ...] = ()   # (RLIMIT_X, soft, hard)
    sysctls: tuple[tuple[str, str], ...] = ()
    pids_limit: int | None = None
    shm_size: int | None = None
    memory_reservation: int | None = None
    cpu_shares: int | None = None
    init: bool = False
    tty: bool = False
    group_add: tuple[str, ...] = ()

    def to_json(self) -> dict:
        d = {"command": list(self.command), "entrypoint": self.entrypoint, "env": [list(e) for e in self.env],
             "user": self.user, "workdir": self.workdir, "hostname": self.hostname, "memory": self.memory,
             "cpu_quota": self.cpu_quota, "stop_signal": self.stop_signal, "seccomp": self.seccomp,
             "no_new_privileges": self.no_new_privileges}
        for k in _LATER:
            v = getattr(self, k)
            if v not in (None, False, ()):
                d[k] = [list(x) if isinstance(x, tuple) else x for x in v] if isinstance(v, tuple) else v
        return d

    @classmethod
    def from_json(cls, d: Mapping) -> "RunOptions":
        later = {k: d[k] for k in _LATER if d.get(k) is not None}
        for k in ("caps", "group_add"):
            if k in later:
                later[k] = tuple(later[k])
        for k in ("ulimits", "sysctls"):
            if k in later:
                later[k] = tuple(tuple(x) for x in later[k])
        return cls(tuple(d.get("command") or ()), d.get("entrypoint"), tuple(tuple(e) for e in d.get("env") or ()),
                   d.get("user"), d.get("workdir"), d.get("hostname") or "", d.get("memory"), d.get("cpu_quota"),
                   d.get("stop_signal"), d.get("seccomp"), bool(d.get("no_new_privileges")), **later)


_LATER = ("caps", "privileged", "read_only", "ulimits", "sysctls", "pids_limit", "shm_size", "memory_reservation",
          "cpu_shares", "init", "tty", "group_add")
_TMPFS_DEFAULTS = ("noexec", "nosuid", "nodev")
_TMPFS_OVERRIDES = {"exec": "noexec", "suid": "nosuid", "dev": "nodev"}


@dataclass(frozen=True)
class Mount:
    destination: str
    source: str
    readonly: bool = False
    type: str = "bind"                    # bind | tmpfs
    propagation: str | None = None        # bind: None is rprivate
    options: tuple[str, ...] = ()         # tmpfs: mount options (size=, mode=, exec, …)

    def oci(self) -> dict:
        if self.type == "tmpfs":
            given = list(self.options)
            opts = [o for o in _TMPFS_DEFAULTS if not any(_TMPFS_OVERRIDES.get(g) == o for g in given)]
            opts += [g for g in given if g not in _TMPFS_OVERRIDES] + (["ro"] if self.readonly else [])
            return {"destination": self.destination, "type": "tmpfs", "source": "tmpfs", "options": opts}
        opts = ["rbind", self.propagation or "rprivate"] + (["ro"] if self.readonly else [])
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
    host_network: bool = False           # share the host's network namespace (no network entry)
    init_path: str | None = None         # the host's tini, for opts.init
    host_devices: Sequence[Mapping] = ()  # linux.devices entries, for opts.privileged
    last_cap: int | None = None          # the host kernel's highest capability number


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


def _process(image_cfg: Mapping, opts: RunOptions, inputs: BundleInputs, caps: list[str], cwd: str) -> dict:
    user = resolve_user(opts.user if opts.user is not None else image_cfg.get("User") or "", inputs.passwd,
                        inputs.group)
    gids = list(dict.fromkeys(list(user.additional_gids) + group_ids(opts.group_add, inputs.group)))
    args = process_args(image_cfg, opts)
    if opts.init:
        args = [INIT_PATH, "--"] + args
    env = merge_env(image_cfg.get("Env") or [], inputs.link_env, opts.env, hostname=opts.hostname, home=user.home)
    if opts.tty and not any(e.startswith("TERM=") for e in env):
        env.append("TERM=xterm")   # Docker sets it for a tty
    process = {
        "terminal": bool(opts.tty),
        "user": {"uid": user.uid, "gid": user.gid, **({"additionalGids": gids} if gids else {})},
        "args": args,
        "env": env,
        "cwd": cwd,
        "capabilities": {k: list(caps) for k in ("bounding", "effective", "permitted")},
        "noNewPrivileges": bool(opts.no_new_privileges),
    }
    if opts.ulimits:
        process["rlimits"] = [{"type": t, "soft": int(soft), "hard": int(hard)} for t, soft, hard in opts.ulimits]
    return process


def _mounts(opts: RunOptions, inputs: BundleInputs) -> list[dict]:
    mounts = []
    for base in BASE_MOUNTS:
        m = dict(base, options=list(base["options"]))
        if opts.privileged and m["destination"] in ("/sys", "/sys/fs/cgroup"):
            m["options"] = [o for o in m["options"] if o != "ro"]     # Docker: writable when privileged
        if m["destination"] == "/dev/shm" and opts.shm_size:
            m["options"] = [o for o in m["options"] if not o.startswith("size=")] + [f"size={int(opts.shm_size)}"]
        mounts.append(m)
    taken = {m["destination"] for m in mounts}
    for m in inputs.network_mounts:
        mounts.append(dict(m))
        taken.add(m["destination"])
    extra = list(inputs.volume_mounts)
    if opts.init:
        if not inputs.init_path:
            raise ContainerError("--init needs tini on the host (the tini package's tini-static)")
        extra.append(Mount(INIT_PATH, inputs.init_path, readonly=True))
    for v in extra:
        if v.destination in taken:
            raise ContainerError(f"duplicate mount point {v.destination}")
        taken.add(v.destination)
        mounts.append(v.oci())
    return mounts


def _resources(opts: RunOptions) -> dict:
    resources: dict = {"devices": [{"allow": bool(opts.privileged), "access": "rwm"}]}
    memory = {}
    if opts.memory:
        memory["limit"] = int(opts.memory)
    if opts.memory_reservation:
        memory["reservation"] = int(opts.memory_reservation)
    if memory:
        resources["memory"] = memory
    cpu = {}
    if opts.cpu_quota:
        cpu.update(quota=int(opts.cpu_quota), period=CPU_PERIOD)
    if opts.cpu_shares:
        cpu["shares"] = int(opts.cpu_shares)
    if cpu:
        resources["cpu"] = cpu
    if opts.pids_limit:
        resources["pids"] = {"limit": int(opts.pids_limit)}
    return resources


def build_config(image_cfg: Mapping, opts: RunOptions, inputs: BundleInputs) -> dict:
    """The config.json for one container run."""
    image_cfg = image_cfg or {}
    cwd = opts.workdir or image_cfg.get("WorkingDir") or "/"
    if not cwd.startswith("/"):
        raise ContainerError(f"the working directory {cwd!r} is not an absolute path")
    if opts.privileged:
        from ..runspec.privileges import ALL_CAPS

        caps = sorted(ALL_CAPS[:(inputs.last_cap if inputs.last_cap is not None else len(ALL_CAPS) - 1) + 1])
    else:
        caps = sorted(opts.caps) if opts.caps is not None else list(DEFAULT_CAPS)
    namespaces = [{"type": t} for t in ("pid", "ipc", "uts", "mount")]
    if not inputs.host_network:
        namespaces.append({"type": "network", "path": inputs.netns_path} if inputs.netns_path else {"type": "network"})
    linux: dict = {
        "namespaces": namespaces,
        "cgroupsPath": inputs.cgroups_path,
        "resources": _resources(opts),
        "maskedPaths": [] if opts.privileged else list(MASKED_PATHS),
        "readonlyPaths": [] if opts.privileged else list(READONLY_PATHS),
    }
    if opts.sysctls:
        linux["sysctl"] = dict(opts.sysctls)
    if opts.privileged:
        linux["devices"] = [dict(d) for d in inputs.host_devices]
    elif opts.seccomp is None:
        linux["seccomp"] = seccomp.default_profile(caps)
    elif isinstance(opts.seccomp, Mapping):
        linux["seccomp"] = dict(opts.seccomp)
    elif opts.seccomp != seccomp.UNCONFINED:
        raise ContainerError(f"bad seccomp setting {opts.seccomp!r} in the container's options")
    return {
        "ociVersion": "1.0.2",
        "process": _process(image_cfg, opts, inputs, caps, cwd),
        "root": {"path": str(inputs.rootfs), "readonly": bool(opts.read_only)},
        "hostname": opts.hostname,
        "mounts": _mounts(opts, inputs),
        "linux": linux,
    }
