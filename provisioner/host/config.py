"""The host agent's config: which host of which stack this machine is, and what to prepare.

Looked for, in order: `--config FILE`, `/etc/provisioner/host.yml` (written by agent delivery),
`<root>/host/host.yml`, then `/etc/provisioner/host.json` (written by cloud-init from the
user-data; JSON is YAML). /etc comes first because <root> is usually the ephemeral mount: a file
there is hidden until the disks step mounts it and lost when the instance is stopped. Either form:

```yaml
host: web1                      # required: this host's name
stack_file: stack.yml           # the stack file (relative to this file): disks, ports, ssh_cidr from there
ssh_cidr: 203.0.113.0/24        # with stack_file: the range deploy used for the cloud firewall (beats the stack's)
stack: shop                     # informational when there is no stack file
cloud: local                    # informational
users:                          # login users and their SSH keys (the whole authorized_keys is managed)
  - name: deploy
    ssh_authorized_keys: ["ssh-ed25519 AAAA... me@laptop"]
    groups: [sudo]
    shell: /bin/bash
# without stack_file, the host spec directly:
disks: {ephemeral: {mount: /var/lib/provisioner}}   # the disk layer's schema
ports: ["80/tcp", "8000-8010/udp", 443]              # published ports the firewall opens
ssh_cidr: 10.0.0.0/8                                 # who may reach SSH (default: anyone)
ssh_port: 22
volumes:                        # which disk each stack volume is (written by `provision deploy`
  data: {aws_volume_id: vol-0abc}   # from the volumes it created; overrides the stack's match:)
sysctl: {net.core.somaxconn: 4096}                   # extra sysctls on top of the defaults
containers_state_dir: /var/lib/provisioner/containers/supervise
metrics: {port: 9100, allow_from: 10.0.0.0/8}         # the agent's endpoint (stack/observe.py's keys)
logging: {ship_to: "tcp://logs.example:514"}        # where the agent ships the logs
```
Every mistake is a ConfigError naming file:line.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import yamlutil
from ..errors import ConfigError
from ..runspec.ports import PublishedPort

ETC_FILE = "/etc/provisioner/host.yml"
HOST_FILE = "host/host.yml"
CLOUD_INIT_FILE = "/etc/provisioner/host.json"
KEYS = {"host", "stack_file", "stack", "cloud", "users", "disks", "ports", "ssh_cidr", "ssh_port",
        "services", "sysctl", "containers_state_dir", "volumes", "metrics", "logging"}
FROM_STACK = ("disks", "ports", "ssh_cidr", "metrics", "logging")
USER_KEYS = {"name", "ssh_authorized_keys", "groups", "shell"}
_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_KEY = re.compile(r"^(ssh-(rsa|ed25519|dss)|ecdsa-sha2-nistp(256|384|521)|sk-(ssh-ed25519|ecdsa-sha2-nistp256)"
                  r"@openssh\.com)[ \t]+[A-Za-z0-9+/=]+([ \t]+[^\r\n]*)?")
_SYSCTL = re.compile(r"^[a-z0-9_]+(\.[A-Za-z0-9_-]+)+$")
_PORT = re.compile(r"(\d+)(?:-(\d+))?(?:/(tcp|udp))?")


@dataclass(frozen=True)
class User:
    name: str
    keys: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    shell: str | None = None


@dataclass(frozen=True)
class HostConfig:
    host: str
    path: str = "<config>"
    stack: str | None = None
    cloud: str | None = None
    stack_file: str | None = None
    disks: Any = None                       # provisioner.disks.config.DisksConfig or None
    ports: tuple[PublishedPort, ...] = ()
    ssh_cidr: str | None = None
    ssh_port: int = 22
    users: tuple[User, ...] = ()
    services: tuple[str, ...] = ()
    sysctl: dict = field(default_factory=dict)
    containers_state_dir: str | None = None
    metrics: Any = None                     # provisioner.stack.MetricsSpec or None
    logging: Any = None                     # provisioner.stack.LoggingSpec or None

    def to_json(self) -> dict:
        return {"host": self.host, "path": self.path, "stack": self.stack, "cloud": self.cloud,
                "stack_file": self.stack_file, "ports": [str(p) for p in self.ports], "ssh_cidr": self.ssh_cidr,
                "ssh_port": self.ssh_port, "users": [u.name for u in self.users], "services": list(self.services),
                "disks": self.disks.to_json() if self.disks is not None else None,
                "metrics": self.metrics.to_json() if self.metrics is not None else None,
                "logging": self.logging.to_json() if self.logging is not None else None}


def find_config(root: Path, explicit: str | Path | None = None, cloud_init_file: str | None = None,
                etc_file: str | None = None) -> Path:
    if explicit:
        return Path(explicit)
    cands = (Path(etc_file or ETC_FILE), Path(root) / HOST_FILE, Path(cloud_init_file or CLOUD_INIT_FILE))
    for cand in cands:
        if cand.is_file():
            return cand
    raise ConfigError(f"no host config: looked for {', '.join(map(str, cands))} "
                      "(is this machine a provisioned host? `provision deploy` writes the first)")


def load(path: str | Path) -> HostConfig:
    path = str(path)
    if not Path(path).is_file():
        raise ConfigError("host config not found", path)
    return parse(yamlutil.load(path), path)


def _fail(msg: str, path: str, container: Any = None, key: Any = None) -> ConfigError:
    return ConfigError(msg, path, yamlutil.line_of(container, key) if container is not None else None)


def parse(doc: Any, path: str) -> HostConfig:
    if not isinstance(doc, dict):
        raise ConfigError("a host config must be a mapping with at least 'host'", path)
    for k in doc:
        if k not in KEYS:
            raise _fail(f"unknown key {k!r} (expected one of: {', '.join(sorted(KEYS))})", path, doc, k)
    host = doc.get("host")
    if not isinstance(host, str) or not host.strip():
        raise _fail("'host' (this host's name) must be a non-empty string", path, doc,
                    "host" if "host" in doc else None)
    fields: dict[str, Any] = {"host": host, "path": path}
    for k in ("stack", "cloud", "containers_state_dir"):
        if doc.get(k) is not None:
            if not isinstance(doc[k], str) or not doc[k]:
                raise _fail(f"{k!r} must be a non-empty string", path, doc, k)
            fields[k] = doc[k]
    fields["users"] = _users(doc.get("users"), path, doc)
    fields["services"] = _strings(doc, "services", path)
    fields["sysctl"] = _sysctl(doc.get("sysctl"), path, doc)
    port = doc.get("ssh_port", 22)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise _fail("'ssh_port' must be a port number 1-65535", path, doc, "ssh_port")
    fields["ssh_port"] = port
    if doc.get("stack_file") is not None:
        for k in FROM_STACK:
            if k in doc and k != "ssh_cidr":
                raise _fail(f"{k!r} comes from the stack file when 'stack_file' is given; remove it here",
                            path, doc, k)
        fields.update(_from_stack(doc, path, host))
        if doc.get("ssh_cidr") is not None:   # the one range deploy gave the cloud firewall too
            fields["ssh_cidr"] = _cidr(doc, path)
        fields["disks"] = _volume_matches(doc, path, fields["disks"])
    else:
        fields["ssh_cidr"] = _cidr(doc, path)
        fields["ports"] = _ports(doc.get("ports"), path, doc)
        fields.update(_observe(doc, path))
        if doc.get("disks") is not None:
            from ..disks.config import parse_config
            if not isinstance(doc["disks"], dict):
                raise _fail("'disks' must be a mapping (the disk layer's schema)", path, doc, "disks")
            fields["disks"] = _volume_matches(doc, path, parse_config(doc["disks"], path))
    return HostConfig(**fields)


def _volume_matches(doc: dict, path: str, disks):
    """Apply `volumes: {NAME: {KEY: VALUE}}`: which disk each named volume is on this host."""
    from dataclasses import replace

    from ..disks.config import Where, parse_match

    v = doc.get("volumes")
    if v is None:
        return disks
    if not isinstance(v, dict):
        raise _fail("'volumes' must map a volume name to a match like {aws_volume_id: vol-0abc}", path, doc,
                    "volumes")
    known = {vol.name: vol for vol in (disks.volumes if disks is not None else ())}
    for name, match in v.items():
        if name not in known:
            raise _fail(f"volumes: {name!r} is not a volume of this host's disks "
                        f"(volumes: {', '.join(known) or 'none'})", path, v, name)
        known[name] = replace(known[name], match=parse_match(match, path, f"volumes.{name}"),
                              match_where=Where(path, yamlutil.line_of(v, name)))
    return replace(disks, volumes=tuple(known[vol.name] for vol in disks.volumes))


def _from_stack(doc: dict, path: str, host: str) -> dict:
    from ..stack import load_stack

    sf = doc["stack_file"]
    if not isinstance(sf, str) or not sf:
        raise _fail("'stack_file' must be a path", path, doc, "stack_file")
    stack_path = Path(path).parent / sf
    if not stack_path.is_file():
        raise _fail(f"stack file {stack_path} not found", path, doc, "stack_file")
    stack = load_stack(stack_path, allow_privileged=True)   # deploy refused it unless the operator allowed it
    try:
        h = stack.host(host)
    except KeyError:
        known = ", ".join(x.name for x in stack.hosts)
        raise _fail(f"host {host!r} is not in stack {stack.name!r} ({stack_path}; hosts: {known})",
                    path, doc, "host") from None
    return {"stack": stack.name, "stack_file": str(stack_path), "disks": h.disks,
            "ports": tuple(stack.published_ports(h)), "ssh_cidr": h.ssh_cidr,
            "services": tuple(doc.get("services") or h.services), "metrics": h.metrics, "logging": h.logging}


def _observe(doc: dict, path: str) -> dict:
    """`metrics:` and `logging:` written in the host config itself: the stack file's keys, same parser."""
    from ..stack.fields import Fields
    from ..stack.observe import parse_logging, parse_metrics

    f = Fields(path)
    return {"metrics": parse_metrics(f, doc, "host"), "logging": parse_logging(f, doc, "host")}


def _strings(doc: dict, key: str, path: str) -> tuple[str, ...]:
    v = doc.get(key) or []
    if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
        raise _fail(f"{key!r} must be a list of strings", path, doc, key)
    return tuple(v)


def _cidr(doc: dict, path: str) -> str | None:
    v = doc.get("ssh_cidr")
    if v is None:
        return None
    try:
        return str(ipaddress.ip_network(str(v), strict=True))
    except ValueError as exc:
        raise _fail(f"ssh_cidr: {exc}", path, doc, "ssh_cidr") from None


def _ports(v: Any, path: str, doc: dict) -> tuple[PublishedPort, ...]:
    if v is None:
        return ()
    if not isinstance(v, list):
        raise _fail("'ports' must be a list like [\"80/tcp\", \"8000-8010/udp\"]", path, doc, "ports")
    out = set()
    for i, p in enumerate(v):
        m = _PORT.fullmatch(str(p)) if isinstance(p, (str, int)) and not isinstance(p, bool) else None
        first, last = (int(m.group(1)), int(m.group(2) or m.group(1))) if m else (0, 0)
        if not m or not 1 <= first <= last <= 65535:
            raise _fail(f"ports[{i}]: {p!r} is not a port or range like 80, \"443/tcp\" or \"8000-8010/udp\"",
                        path, v, i)
        out.add(PublishedPort(m.group(3) or "tcp", first, last))
    return tuple(sorted(out))


def _sysctl(v: Any, path: str, doc: dict) -> dict:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise _fail("'sysctl' must be a mapping of key: value", path, doc, "sysctl")
    out = {}
    for k, val in v.items():
        if not isinstance(k, str) or not _SYSCTL.fullmatch(k):
            raise _fail(f"sysctl key {k!r} is not valid (like net.core.somaxconn)", path, v, k)
        if isinstance(val, (dict, list, bool)) or val is None or "\n" in str(val):
            raise _fail(f"sysctl {k}: value must be a number or a one-line string", path, v, k)
        out[k] = str(val)
    return out


def _users(v: Any, path: str, doc: dict) -> tuple[User, ...]:
    if v is None:
        return ()
    if not isinstance(v, list):
        raise _fail("'users' must be a list of {name, ssh_authorized_keys, groups, shell}", path, doc, "users")
    out, seen = [], set()
    for i, u in enumerate(v):
        if not isinstance(u, dict):
            raise _fail(f"users[{i}] must be a mapping", path, v, i)
        for k in u:
            if k not in USER_KEYS:
                raise _fail(f"users[{i}]: unknown key {k!r} (expected one of: {', '.join(sorted(USER_KEYS))})",
                            path, u, k)
        name = u.get("name")
        if not isinstance(name, str) or not _USER.fullmatch(name):
            raise _fail(f"users[{i}].name {name!r} is not a valid user name (lowercase, digits, '_', '-')",
                        path, u, "name" if "name" in u else None)
        if name in seen:
            raise _fail(f"users[{i}]: duplicate user {name!r}", path, u, "name")
        seen.add(name)
        keys = u.get("ssh_authorized_keys") or []
        if not isinstance(keys, list):
            raise _fail(f"users[{i}].ssh_authorized_keys must be a list", path, u, "ssh_authorized_keys")
        for j, key in enumerate(keys):
            if not isinstance(key, str) or not _KEY.fullmatch(key.strip()):
                raise _fail(f"users[{i}].ssh_authorized_keys[{j}] is not one OpenSSH public key line "
                            "(like 'ssh-ed25519 AAAA... comment')", path, keys, j)
        groups = _strings(u, "groups", path)
        for g in groups:
            if not _USER.fullmatch(g):
                raise _fail(f"users[{i}].groups: {g!r} is not a valid group name", path, u, "groups")
        shell = u.get("shell")
        if shell is not None and (not isinstance(shell, str) or not shell.startswith("/") or "\n" in shell):
            raise _fail(f"users[{i}].shell must be an absolute path", path, u, "shell")
        out.append(User(name, tuple(k.strip() for k in keys), groups, shell))
    return tuple(out)
