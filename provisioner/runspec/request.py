"""The run request: everything `provision container run` (or a stack's service, or the Engine
API) asks of one container, as parsed values. `from_flags` is `docker run`'s flags → a request.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..errors import ConfigError
from .env import parse_env
from .health import HealthFlags, Healthcheck
from .kernel import Ulimit, parse_sysctls, parse_ulimit
from .mounts import VolumeSpec, parse_mount_flag, parse_tmpfs, parse_volume
from .netopts import (
    DnsConfig, ExtraHost, NetworkAttachment, NetworkMode, check_alias, check_ipv4, check_network_name,
    parse_dns, parse_extra_host, parse_network_mode,
)
from .ports import PortMapping, parse_ports
from .privileges import Privileges
from .process import LogConfig, Platform, check_signal, parse_platform
from .resources import parse_size, parse_cpus, parse_memory, parse_pids
from .restart import RestartPolicy
from .seccomp import SecurityOpts, parse_security_opts
from .secrets import FileMount


@dataclass(frozen=True)
class RunRequest:
    image: str
    command: tuple[str, ...] = ()
    name: str | None = None
    detach: bool = False
    ports: tuple[PortMapping, ...] = ()
    volumes: tuple[VolumeSpec, ...] = ()
    env: tuple[str, ...] = ()                     # "K=V", checked
    env_files: tuple[str, ...] = ()               # read when the container is made
    links: tuple[tuple[str, str], ...] = ()       # (container, alias)
    restart: RestartPolicy = RestartPolicy()
    memory: int | None = None                     # bytes
    cpu_quota: int | None = None                  # µs per resources.CPU_PERIOD
    user: str | None = None
    workdir: str | None = None
    entrypoint: str | None = None                 # None: the image's; "" clears it
    hostname: str | None = None
    rm: bool = False
    insecure_registries: tuple[str, ...] = ()
    security: SecurityOpts = SecurityOpts()
    healthcheck: Healthcheck | None = None        # a stack's own check: replaces the image's whole
    health_flags: HealthFlags = field(default_factory=HealthFlags)  # --health-* / --no-healthcheck
    # -- added with compose's per-service keys (issue 17); the defaults are Docker's
    privileges: Privileges = Privileges()         # --cap-add/--cap-drop/--privileged
    read_only: bool = False                       # --read-only: the root filesystem
    ulimits: tuple[Ulimit, ...] = ()
    sysctls: tuple[tuple[str, str], ...] = ()
    pids_limit: int | None = None
    shm_size: int | None = None                   # bytes of /dev/shm (Docker: 64 MiB)
    memory_reservation: int | None = None         # bytes (a soft limit)
    cpu_shares: int | None = None
    init: bool = False                            # --init: tini as PID 1
    tty: bool = False
    interactive: bool = False                     # -i: stdin kept open
    stop_signal: str | None = None                # None: the image's StopSignal, else SIGTERM
    stop_timeout: float | None = None             # seconds before SIGKILL (None: 10)
    platform: Platform | None = None
    pull: str = "missing"                         # always | missing | never
    log: LogConfig = LogConfig()
    labels: tuple[tuple[str, str], ...] = ()
    networks: tuple[NetworkAttachment, ...] = ()  # () : the host's default bridge
    network_mode: NetworkMode | None = None       # host | none | container:NAME instead of networks
    extra_hosts: tuple[ExtraHost, ...] = ()
    dns: DnsConfig = DnsConfig()
    files: tuple[FileMount, ...] = ()             # secrets and configs (content in memory only)
    group_add: tuple[str, ...] = ()
    balance_group: str | None = None              # a replica: its ports shared with its group's, balanced
    cloud_metadata: bool = False                  # may reach 169.254.169.254 (--cloud-metadata)
    stdin_once: bool = False                      # -i: the first attached client's end of input closes it
    replaces: str | None = None                   # start-first: takes this container's published ports
                                                  # over when told (Manager.takeover), not before

    def __post_init__(self):
        if self.rm and self.restart.name != "no":
            raise ConfigError("--rm and --restart cannot be used together (as in Docker)")
        if self.workdir and not self.workdir.startswith("/"):
            raise ConfigError(f"--workdir {self.workdir!r} is not an absolute path")
        seen = set()
        for v in self.volumes:
            if v.destination in seen:
                raise ConfigError(f"duplicate mount point {v.destination} in -v")
            seen.add(v.destination)
        for f in self.files:
            if f.target in seen:
                raise ConfigError(f"{f.kind} {f.name}: {f.target} is also a volume's mount point")
            seen.add(f.target)
        if self.network_mode is not None:
            mode = self.network_mode
            if self.networks or self.links:
                raise ConfigError(f"--network {mode} cannot be combined with other networks or links")
            if self.ports and mode.kind in ("host", "container"):
                raise ConfigError(f"--network {mode}: published ports have no meaning there (the container "
                                  + ("listens on the host's own ports)" if mode.kind == "host" else
                                     "shares that container's network: publish them on it)"))
            if mode.kind == "container" and (self.extra_hosts or not self.dns.is_default() or self.hostname):
                raise ConfigError(f"--network {mode}: the hosts, DNS settings and host name are that container's")


def parse_link(text: str) -> tuple[str, str]:
    name, _, alias = text.partition(":")
    if not name or (":" in alias):
        raise ConfigError(f"bad --link {text!r} (want NAME[:ALIAS])")
    return name, alias or name


def env_from_cli(items: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """`-e K` (no '=') takes K from this environment, as Docker's CLI does; unset → dropped."""
    out = []
    for item in items:
        if "=" in item:
            out.append(item)
        elif item in os.environ:
            out.append(f"{item}={os.environ[item]}")
    parse_env(out)
    return tuple(out)


def parse_label(text: str) -> tuple[str, str]:
    k, _, v = str(text).partition("=")
    if not k.strip():
        raise ConfigError(f"bad --label {text!r} (want KEY[=VALUE])")
    return k.strip(), v


def _networks(values, aliases, ip) -> tuple[tuple[NetworkAttachment, ...], NetworkMode | None]:
    """--network (repeatable: the first is the primary), --network-alias and --ip for the first."""
    attachments: list[NetworkAttachment] = []
    mode = None
    for v in values:
        m = parse_network_mode(v)
        if m is not None:
            if len(values) > 1:
                raise ConfigError(f"--network {v} cannot be combined with other networks")
            mode = m
        elif v not in ("bridge", "default"):
            attachments.append(NetworkAttachment(check_network_name(v)))
    if (aliases or ip) and not attachments:
        raise ConfigError("--network-alias and --ip need a user-defined --network")
    if attachments:
        first = attachments[0]
        attachments[0] = NetworkAttachment(first.network, tuple(check_alias(a) for a in aliases),
                                           check_ipv4(ip, "--ip") if ip else None)
    return tuple(attachments), mode


def from_flags(image: str, command: tuple[str, ...] = (), *, name: str | None = None, detach: bool = False,
               ports=(), volumes=(), env=(), env_files=(), links=(), restart: str = "no",
               memory: str | None = None, cpus: str | None = None, user: str | None = None,
               workdir: str | None = None, entrypoint: str | None = None, hostname: str | None = None,
               rm: bool = False, insecure_registries=(), security_opt=(),
               health_flags: HealthFlags | None = None, mounts=(), tmpfs=(), cap_add=(), cap_drop=(),
               privileged: bool = False, read_only: bool = False, ulimits=(), sysctls=(),
               pids_limit: str | None = None, shm_size: str | None = None, memory_reservation: str | None = None,
               init: bool = False, tty: bool = False, interactive: bool = False, stop_signal: str | None = None,
               stop_timeout: int | None = None, platform: str | None = None, labels=(), networks=(),
               network_aliases=(), ip: str | None = None, add_hosts=(), dns=(), dns_search=(), dns_options=(),
               group_add=(), cloud_metadata: bool = False) -> RunRequest:
    """`docker run`'s flags, as typed → a request; a bad value is one ConfigError naming it."""
    health_flags = health_flags or HealthFlags()
    health_flags.check()
    attachments, mode = _networks(tuple(networks), tuple(network_aliases), ip)
    if stop_timeout is not None and stop_timeout < -1:
        raise ConfigError(f"bad --stop-timeout {stop_timeout} (seconds; -1 waits for ever)")
    return RunRequest(
        image=image, command=tuple(command), name=name, detach=detach, ports=tuple(parse_ports(ports)),
        volumes=tuple([parse_volume(v) for v in volumes] + [parse_mount_flag(m) for m in mounts]
                      + [parse_tmpfs(t) for t in tmpfs]),
        env=env_from_cli(env), env_files=tuple(env_files),
        links=tuple(parse_link(x) for x in links), restart=RestartPolicy.parse(restart),
        memory=parse_memory(memory) if memory else None, cpu_quota=parse_cpus(cpus) if cpus else None,
        user=user, workdir=workdir, entrypoint=entrypoint, hostname=hostname, rm=rm,
        insecure_registries=tuple(insecure_registries), security=parse_security_opts(security_opt),
        health_flags=health_flags, privileges=Privileges.parse(cap_add, cap_drop, privileged), read_only=read_only,
        ulimits=tuple(parse_ulimit(u) for u in ulimits),
        sysctls=parse_sysctls(sysctls, host_network=mode is not None and mode.kind == "host"),
        pids_limit=parse_pids(pids_limit) if pids_limit is not None else None,
        shm_size=parse_size(shm_size, "--shm-size") if shm_size else None,
        memory_reservation=parse_memory(memory_reservation, "--memory-reservation") if memory_reservation else None,
        init=init, tty=tty, interactive=interactive, stop_signal=check_signal(stop_signal) if stop_signal else None,
        stop_timeout=float(stop_timeout) if stop_timeout is not None else None,
        platform=parse_platform(platform) if platform else None, labels=tuple(parse_label(x) for x in labels),
        networks=attachments, network_mode=mode, extra_hosts=tuple(parse_extra_host(h) for h in add_hosts),
        dns=parse_dns(dns, dns_search, dns_options), group_add=tuple(group_add), cloud_metadata=cloud_metadata)
