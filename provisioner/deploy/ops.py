"""What the ops commands decide about a deployed host: which stack spec it runs, where a volume is
mounted, which container a service is, and the exact remote command lines. Pure except for
reading the stack file (the operator's copy, else the one deploy pushed to the host).
"""
from __future__ import annotations

import json

from dataclasses import dataclass
from pathlib import Path

from ..compose.names import container_name
from ..errors import ConfigError, HostError
from ..stack import Stack
from ..stack import dotenv
from ..stack.loader import load_stack, parse_stack
from ..stack.project import DEPLOYED_ENV, ProjectOptions
from .. import yamlutil
from .inventory import HostRecord
from ..remote.deliver import AGENT
from ..runner import Runner

HOST_STACK_FILE = "/etc/provisioner/stack.yml"   # where deploy pushes the stack file
HOST_ENV_FILE = f"/etc/provisioner/{DEPLOYED_ENV}"   # and the variables it was interpolated with


def load_record_stack(rec: HostRecord, remote: Runner | None = None) -> Stack:
    """The stack the host was deployed from: the operator's file, else the host's copy (read with
    the variables deploy resolved for it, in /etc/provisioner/.provision.env)."""
    if rec.stack_file and Path(rec.stack_file).is_file():
        return load_stack(rec.stack_file, project=ProjectOptions(name=rec.stack), allow_privileged=True)
    if remote is None:
        raise HostError(f"{rec.name}: stack file {rec.stack_file or '(none recorded)'} is not on this machine")
    out = remote.run(["cat", HOST_STACK_FILE], sudo=True, check=False)
    if out.returncode != 0:
        raise HostError(f"{rec.name}: stack file {rec.stack_file or '(none recorded)'} is not on this machine and "
                        f"{HOST_STACK_FILE} is unreadable on the host ({out.stderr.strip() or out.returncode})")
    where = f"{rec.name}:{HOST_STACK_FILE}"
    env = remote.run(["cat", HOST_ENV_FILE], sudo=True, check=False)
    environ = dotenv.parse(env.stdout, f"{rec.name}:{HOST_ENV_FILE}") if env.returncode == 0 else {}
    return parse_stack(yamlutil.loads(out.stdout, where), where, allow_privileged=True,
                       project=ProjectOptions(name=rec.stack, environ=environ))


@dataclass(frozen=True)
class VolumeTarget:
    name: str           # the stack's volume name
    mount: str          # where the host mounts it
    cloud_id: str       # EBS volume id / PD name ("" when the record has none, e.g. the local cloud)


def volume_target(rec: HostRecord, stack: Stack, volume: str) -> VolumeTarget:
    try:
        host = stack.host(rec.host)
    except KeyError:
        raise ConfigError(f"host {rec.host!r} is not in stack file {stack.path}", stack.path) from None
    vols = {v.name: v for v in (host.disks.volumes if host.disks is not None else ())}
    if volume not in vols:
        raise ConfigError(f"{rec.name}: no volume {volume!r} in the host's disks config "
                          f"(volumes: {', '.join(sorted(vols)) or 'none'})", stack.path, host.line)
    # the record maps the stack's volume name to the cloud id; records written from a launch's
    # Resource names ("<stack>-<host>-<volume>") are accepted too
    cloud_id = rec.volumes.get(volume) or rec.volumes.get(f"{rec.stack}-{rec.host}-{volume}", "")
    return VolumeTarget(volume, vols[volume].mount, cloud_id)


def host_containers(remote: Runner, rec: HostRecord) -> dict[str, list[str]]:
    """service -> the containers that run it on the host now, as the host's own `ps` says (a
    start-first update gives a service a new container name; replicas have one each). Empty when
    the host cannot say (an agent too old for it, no stack up yet): callers fall back to the names
    `up` gives a service's first container."""
    out = remote.run([AGENT, "ps", "-f", HOST_STACK_FILE, "--host", rec.host, "--json"], sudo=True, check=False)
    try:
        rows = json.loads(out.stdout) if out.returncode == 0 else []
    except ValueError:
        rows = []
    found: dict[str, list[str]] = {}
    for row in rows if isinstance(rows, list) else []:
        if isinstance(row, dict) and row.get("service") and row.get("container"):
            found.setdefault(str(row["service"]), []).append(str(row["container"]))
    return found


def service_container(rec: HostRecord, stack: Stack | None, service: str, remote: Runner | None = None) -> str:
    """The host's container for `service` (its first, as the host's `ps` says when `remote` is
    given), checking the stack places it on this host first."""
    if stack is not None:
        if service not in stack.services:
            raise ConfigError(f"unknown service {service!r} in stack {stack.name} "
                              f"(services: {', '.join(sorted(stack.services))})", stack.path)
        try:
            placed = stack.host(rec.host).services
        except KeyError:
            placed = ()
        if service not in placed:
            raise ConfigError(f"service {service!r} is not placed on {rec.name} "
                              f"(its services: {', '.join(placed) or 'none'})", stack.path)
    running = host_containers(remote, rec) if remote is not None else {}
    return (running.get(service) or [container_name(rec.stack, service)])[0]


def logs_argv(container: str, *, follow: bool = False, tail: int | None = None, timestamps: bool = False,
              since: str | None = None, agent: str = AGENT) -> list[str]:
    argv = [agent, "container", "logs"]
    if follow:
        argv.append("--follow")
    if tail is not None:
        if tail < 0:
            raise ConfigError(f"--tail must be 0 or more, not {tail}")
        argv += ["--tail", str(tail)]
    if timestamps:
        argv.append("--timestamps")
    if since is not None:
        argv += ["--since", since]
    return [*argv, container]


def ssh_command(command: tuple[str, ...] | list[str]) -> str:
    """Like OpenSSH: the words after `--` joined by spaces, for the remote shell to interpret."""
    if not command:
        raise ConfigError("no command given after '--'")
    return " ".join(command)
