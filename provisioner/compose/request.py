"""A service as run requests, one per replica, named and networked as docker compose does:

  names        <project>-<service>, then <project>-<service>-2, -3… for further replicas (the first
               keeps the name it always had); `container_name` for a one-replica service
  networks     the service's networks (else the project's default), each `<project>_<key>` on the
               host unless the file names it; the service's name and its aliases are its names
               there; network_mode host|none|bridge|service:X|container:X instead
  environment  its env_file entries (compose's .env format) then `environment`
  files        its secrets and configs, their content read now (file, environment, content)
  labels       its own, plus compose's com.docker.compose.project/service/container-number
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import ConfigError, StackError
from ..network.registry import NetworkSpec
from ..runspec.health import HealthFlags
from ..runspec.netopts import NetworkAttachment, NetworkMode
from ..runspec.process import check_platform
from ..runspec.request import RunRequest
from ..runspec.secrets import FileMount
from ..stack import dotenv
from ..stack.model import ServiceNetwork, ServiceSpec, Stack
from .names import container_name, volume_name

LABEL = "com.docker.compose."


def container_names(stack: str, spec: ServiceSpec) -> list[str]:
    if spec.container_name:
        return [spec.container_name]
    base = container_name(stack, spec.name)
    return [base] + [f"{base}-{n}" for n in range(2, spec.replicas + 1)]


def _service_networks(spec: ServiceSpec) -> tuple[ServiceNetwork, ...]:
    if spec.network_mode:
        return ()
    return spec.networks or (ServiceNetwork("default"),)


def preflight(spec: ServiceSpec) -> None:
    """ConfigError when this host cannot make the service's containers: an image platform other
    than the host's, a long-syntax bind mount whose source is missing (compose does not create it)."""
    if spec.platform is not None:
        check_platform(spec.platform)
    for v in spec.volumes:
        if v.kind == "bind" and not v.create_host_path and not os.path.exists(v.source):
            raise ConfigError(f"bind mount source {v.source} does not exist (a long-syntax bind is not created; "
                              "make it, or set bind.create_host_path: true)")


def network_specs(stack: Stack) -> list[NetworkSpec]:
    """The networks this stack's services join (made by `up` unless external), in file order."""
    used = {n.network for s in stack.services.values() for n in _service_networks(s)}
    out = []
    for key, d in stack.networks.items():
        if key in used and not d.external:
            out.append(NetworkSpec(d.name, d.subnet, d.gateway, d.ip_range, d.internal,
                                   tuple(d.labels) + ((LABEL + "project", stack.name), (LABEL + "network", key))))
    return out


def external_networks(stack: Stack) -> list[str]:
    used = {n.network for s in stack.services.values() for n in _service_networks(s)}
    return [d.name for k, d in stack.networks.items() if k in used and d.external]


def attachments(stack: Stack, spec: ServiceSpec) -> tuple[NetworkAttachment, ...]:
    return tuple(NetworkAttachment(stack.networks[n.network].name, tuple(dict.fromkeys((spec.name, *n.aliases))),
                                   n.ipv4_address) for n in _service_networks(spec))


def network_mode(stack: Stack, spec: ServiceSpec) -> NetworkMode | None:
    mode = spec.network_mode
    if mode is None or mode == "bridge":
        return None
    if mode in ("host", "none"):
        return NetworkMode(mode)
    kind, _, target = mode.partition(":")
    if kind == "service":
        return NetworkMode("container", container_names(stack.name, stack.services[target])[0])
    return NetworkMode("container", target)


def files(stack: Stack, spec: ServiceSpec) -> tuple[FileMount, ...]:
    out = []
    for kind, refs, defs in (("secret", spec.secrets, stack.secrets), ("config", spec.configs, stack.configs)):
        for ref in refs:
            d = defs[ref.source]
            if d.file is not None:
                try:
                    content = Path(d.file).read_bytes()
                except OSError as exc:
                    raise StackError(f"{kind}s.{d.name}.file: cannot read {d.file} ({exc.strerror})", stack.path,
                                     d.line) from None
            elif d.environment is not None:
                content = stack.variables.get(d.environment, "").encode()
            else:
                content = (d.content or "").encode()
            out.append(FileMount(kind, ref.source, ref.target, ref.uid, ref.gid, ref.mode, content))
    return tuple(out)


def environment(stack: Stack, spec: ServiceSpec) -> tuple[str, ...]:
    """env_file entries in compose's .env format, then `environment` (later wins in the bundle)."""
    out: list[str] = []
    for path in spec.env_files:
        values = dotenv.read(path, lambda k: stack.variables.get(k, os.environ.get(k)))
        out += [f"{k}={v}" for k, v in values.items()]
    return tuple(out) + spec.env


def request(stack: Stack, spec: ServiceSpec, replica: int = 1, insecure_registries: tuple[str, ...] = (), *,
            image: str | None = None, links: tuple[tuple[str, str], ...] | None = None) -> RunRequest:
    """The service's `replica`th container as one run request; `image` (pinned to a digest) and
    `links` (to the containers that run the linked services now) when the caller knows better."""
    names = container_names(stack.name, spec)
    command = tuple(spec.command or ())
    entrypoint = None
    if spec.entrypoint is not None:
        entrypoint = spec.entrypoint[0] if spec.entrypoint else ""
        command = tuple(spec.entrypoint[1:]) + command
    vols = tuple(v.with_source(volume_name(stack.name, v.source)) if v.kind == "volume" else v
                 for v in spec.volumes)
    labels = tuple(spec.labels) + ((LABEL + "project", stack.name), (LABEL + "service", spec.name),
                                   (LABEL + "container-number", str(replica)))
    return RunRequest(
        image=image or spec.image, command=command, name=names[replica - 1], detach=True,
        # replicas share the service's ports, balanced over the ready ones (network/balance.py)
        ports=spec.ports, balance_group=f"{stack.name}/{spec.name}" if spec.replicas > 1 and spec.ports else None,
        volumes=vols, env=environment(stack, spec),
        links=links if links is not None else tuple((container_names(stack.name, stack.services[t])[0], a)
                                                    for t, a in spec.links),
        restart=spec.restart, memory=spec.memory, cpu_quota=spec.cpu_quota, user=spec.user,
        workdir=spec.working_dir, entrypoint=entrypoint,
        hostname=None if spec.network_mode and spec.network_mode.startswith(("service:", "container:", "host"))
        else spec.hostname or spec.name,
        insecure_registries=insecure_registries, security=spec.security, healthcheck=spec.healthcheck,
        health_flags=HealthFlags(disable=spec.health_disabled), privileges=spec.privileges,
        read_only=spec.read_only, ulimits=spec.ulimits, sysctls=spec.sysctls, pids_limit=spec.pids_limit,
        shm_size=spec.shm_size, memory_reservation=spec.memory_reservation, cpu_shares=spec.cpu_shares,
        init=spec.init, tty=spec.tty, interactive=spec.stdin_open, stop_signal=spec.stop_signal,
        stop_timeout=spec.stop_grace_period, platform=spec.platform, pull=spec.pull_policy, log=spec.log,
        labels=labels, networks=attachments(stack, spec), network_mode=network_mode(stack, spec),
        extra_hosts=spec.extra_hosts, dns=spec.dns, files=files(stack, spec), group_add=spec.group_add,
        cloud_metadata=spec.cloud_metadata)


def hash_inputs(stack: Stack, spec: ServiceSpec) -> dict:
    """What a service's containers get from the rest of the stack, for its config hash: its
    networks (names, subnets, aliases), its network mode's target, and its files' digests."""
    nets = [(a.network, list(a.aliases), a.ipv4_address) for a in attachments(stack, spec)]
    defs = {d.name: (d.subnet, d.internal) for d in stack.networks.values()}
    return {"networks": nets, "network_defs": [defs.get(n[0]) for n in nets],
            "network_mode": str(network_mode(stack, spec) or ""),
            # a replica's ports are its group's: going from one container to several (or back) is a change
            **({"balanced": True} if spec.replicas > 1 and spec.ports else {}),
            "files": [(f.kind, f.name, f.target, f.uid, f.gid, f.mode, f.digest) for f in files(stack, spec)]}
