"""The run request: everything `provision container run` (or a stack's service, or the Engine
API) asks of one container, as parsed values. `from_flags` is `docker run`'s flags → a request.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..errors import ConfigError
from .env import parse_env
from .health import HealthFlags, Healthcheck
from .mounts import VolumeSpec, parse_volume
from .ports import PortMapping, parse_ports
from .resources import parse_cpus, parse_memory
from .restart import RestartPolicy
from .seccomp import SecurityOpts, parse_security_opts


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
    cloud_metadata: bool = False                  # may reach 169.254.169.254 (--cloud-metadata)
    labels: tuple[tuple[str, str], ...] = ()      # Docker's labels, kept on the record
    tty: bool = False                             # -t: the process gets a pty (containers.relay holds it)
    interactive: bool = False                     # -i: its stdin stays open for attached clients
    stdin_once: bool = False                      # the first attached client's end of input closes it
    networks: tuple[tuple[str, tuple[str, ...]], ...] = ()  # user networks (on the host's bridge) and
                                                  # this container's aliases on each: peers resolve them
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


def from_flags(image: str, command: tuple[str, ...] = (), *, name: str | None = None, detach: bool = False,
               ports=(), volumes=(), env=(), env_files=(), links=(), restart: str = "no",
               memory: str | None = None, cpus: str | None = None, user: str | None = None,
               workdir: str | None = None, entrypoint: str | None = None, hostname: str | None = None,
               rm: bool = False, insecure_registries=(), security_opt=(),
               health_flags: HealthFlags | None = None, cloud_metadata: bool = False) -> RunRequest:
    """`docker run`'s flags, as typed → a request; a bad value is one ConfigError naming it."""
    health_flags = health_flags or HealthFlags()
    health_flags.check()
    return RunRequest(
        image=image, command=tuple(command), name=name, detach=detach, ports=tuple(parse_ports(ports)),
        volumes=tuple(parse_volume(v) for v in volumes), env=env_from_cli(env), env_files=tuple(env_files),
        links=tuple(parse_link(x) for x in links), restart=RestartPolicy.parse(restart),
        memory=parse_memory(memory) if memory else None, cpu_quota=parse_cpus(cpus) if cpus else None,
        user=user, workdir=workdir, entrypoint=entrypoint, hostname=hostname, rm=rm,
        insecure_registries=tuple(insecure_registries), security=parse_security_opts(security_opt),
        health_flags=health_flags, cloud_metadata=cloud_metadata)
