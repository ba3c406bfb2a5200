"""What a deploy will do, decided before anything is launched (pure: it takes the parsed stack).

Everything that can be wrong with the input is found here: the stack file (file:line), service
placement, images that cannot be named, a cloud the hosts have no settings for. Launching a VM
and then failing on a typo would leave something running; this is why the plan comes first.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, ImageError, StackError
from ..images.reference import parse as parse_reference
from ..stack import Stack
from ..stack.placement import check_placement
from ..stack.project import DEPLOYED_ENV, render as render_env

REMOTE_DIR = "/etc/provisioner"
REMOTE_STACK = f"{REMOTE_DIR}/stack.yml"
REMOTE_HOST = f"{REMOTE_DIR}/host.yml"
REMOTE_ENV = f"{REMOTE_DIR}/{DEPLOYED_ENV}"


@dataclass(frozen=True)
class HostDeployPlan:
    host: str
    services: tuple[str, ...]        # in dependency order
    images: tuple[str, ...]          # distinct image references, in first-use order
    files: tuple[tuple[str, str], ...]  # (local path, remote path): env files, secrets, configs next to the stack
    tcp_ports: tuple[int, ...]       # published TCP ports checked from the operator after `up`
    project_env: str = ""            # REMOTE_ENV: the file's variables as resolved here, and its name


@dataclass(frozen=True)
class DeployPlan:
    stack: Stack
    cloud: str
    hosts: tuple[HostDeployPlan, ...]

    @property
    def images(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(i for h in self.hosts for i in h.images))


def _beside(stack: Stack, path: str, what: str, line: int | None) -> tuple[str, str]:
    """A file the stack names, which sits next to the stack file; the host reads it next to its copy."""
    base = Path(stack.path).resolve().parent
    local = Path(path).resolve()
    if not local.is_relative_to(base):
        raise StackError(f"{what} {path} is outside the stack file's directory; deploy copies the files that "
                         "sit next to the stack file", stack.path, line)
    return str(local), f"{REMOTE_DIR}/{local.relative_to(base)}"


def _env_files(stack: Stack, service: str) -> list[tuple[str, str]]:
    spec = stack.services[service]
    out = [_beside(stack, path, f"service {service!r}: env_file", spec.line) for path in spec.env_files]
    for kind, refs, defs in (("secrets", spec.secrets, stack.secrets), ("configs", spec.configs, stack.configs)):
        for ref in refs:
            d = defs[ref.source]
            if d.file:   # its content travels over the verified SSH session and rests root-only (0600)
                out.append(_beside(stack, d.file, f"{kind}.{d.name}.file", d.line))
    return out


def project_env(stack: Stack) -> str:
    """What the host interpolates the stack file with (REMOTE_ENV): every variable it used, as this
    machine resolved them (its environment, .env, --env-file), and the project's name — which on
    the host could not come from the folder (/etc/provisioner)."""
    values = dict(stack.variables)
    values["COMPOSE_PROJECT_NAME"] = stack.name
    return render_env(values)


def plan_deploy(stack: Stack, cloud: str) -> DeployPlan:
    check_placement(stack)
    if stack.implicit_hosts and cloud != "local":
        raise ConfigError(f"the stack has no hosts: section: it deploys to the local cloud as one host "
                          f"({stack.hosts[0].name}); for {cloud}, say where its services run with hosts: and their "
                          f"{cloud}: settings", stack.path)
    hosts = []
    for h in stack.hosts:
        if cloud not in h.clouds:
            raise ConfigError(f"host {h.name!r} has no '{cloud}:' settings", stack.path, h.line)
        placed = [s for s in stack.order if s in h.services]
        images, files = [], []
        for s in placed:
            image = stack.services[s].image
            try:
                parse_reference(image)
            except ImageError as exc:
                raise StackError(f"service {s!r}: {exc}", stack.path, stack.services[s].line) from None
            images.append(image)
            files += _env_files(stack, s)
        if h.logging is not None and h.logging.ca:   # the collector's CA, for the agent's TLS
            files.append(_beside(stack, h.logging.ca, f"hosts.{h.name}.logging.ca", h.logging.line))
        tcp = sorted({p for port in stack.published_ports(h) if port.protocol == "tcp"
                      for p in range(port.first, port.last + 1)})
        hosts.append(HostDeployPlan(h.name, tuple(placed), tuple(dict.fromkeys(images)), tuple(dict.fromkeys(files)),
                                    tuple(tcp), project_env(stack)))
    return DeployPlan(stack, cloud, tuple(hosts))


def host_yaml(stack: Stack, cloud: str, host: str, volume_matches: dict[str, dict[str, str]],
              ssh_cidr: str = "") -> str:
    """/etc/provisioner/host.yml: which host this is, its stack, which disk each volume is, and the
    SSH range its cloud firewall allows (the host firewall allows the same)."""
    lines = [f"host: {host}", f"stack: {stack.name}", f"cloud: {cloud}", "stack_file: stack.yml"]
    if ssh_cidr:
        lines.append(f"ssh_cidr: {ssh_cidr}")
    if volume_matches:
        lines.append("volumes:")
        for name, match in sorted(volume_matches.items()):
            (key, value), = match.items()
            lines.append(f"  {name}: {{{key}: {value!r}}}")
    return "\n".join(lines) + "\n"


def volume_match(cloud: str, style: str, name: str, volume_id: str) -> dict[str, str]:
    """How the host finds the disk of a volume this deploy created (see ../shared cloud-disks facts):
    AWS (and AWS-style local disks): the EBS volume id in the NVMe serial; GCE: the device name."""
    if cloud == "gce" or (cloud == "local" and style == "gce"):
        return {"gce_device_name": name}
    return {"aws_volume_id": volume_id}
