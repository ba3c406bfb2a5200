"""The pure half of `up`: what a service's containers are made from (its config hash), and the plan —
desired hashes + what exists → Remove/Create/Recreate/Start actions. An unchanged, running
stack plans nothing.

A recreated service's *linkers* are recreated too: their link env vars carry its address and
environment (Docker bakes them in at create). Services that only depends_on it are kept, unless
their depends_on says `restart: true`.

Containers are keyed like the stack state: a service's first replica by the service's name, its
further replicas `<service>#<n>` (n from 2): `Current` and the actions carry that key, so a file
without replicas plans exactly as before.
"""
from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import StackError
from ..stack.model import ServiceSpec, Stack
from . import request as requests   # what a service gets from the rest of the stack (hash_inputs)

# ServiceSpec's fields before issue 17: always hashed. Later ones are hashed only when set, so an
# unchanged service keeps its hash (and its container) when the model grows.
_HASHED_ALWAYS = {"name", "image", "command", "entrypoint", "env", "env_files", "ports", "volumes", "links",
                  "depends_on", "restart", "healthcheck", "memory", "cpu_quota", "user", "working_dir", "hostname",
                  "security"}
_VOLUME_LATER = {"propagation": None, "nocopy": False, "create_host_path": True, "subpath": None,
                 "tmpfs_options": []}


@functools.lru_cache(maxsize=1)
def _defaults() -> dict:
    return asdict(ServiceSpec(name="", image=""))


def replica_key(service: str, n: int) -> str:
    return service if n == 1 else f"{service}#{n}"


def split_key(key: str) -> tuple[str, int]:
    service, _, n = key.partition("#")
    return service, int(n) if n else 1


def profile_paths(spec: ServiceSpec) -> list[str]:
    """The seccomp profile file a service names (absolute: the loader made it so)."""
    return [spec.security.seccomp] if spec.security.seccomp not in (None, "unconfined") else []


def _relative(value, base: str):
    """`value` with every path under `base` written relative to it (recursively)."""
    if isinstance(value, str):
        return value[len(base) + 1:] if value.startswith(base + "/") else value
    if isinstance(value, dict):
        return {k: _relative(v, base) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_relative(v, base) for v in value]
    return value


def config_hash(spec: ServiceSpec, env_file_texts: dict[str, str], digest: str | None = None,
                extra: dict | None = None, base: str | None = None) -> str:
    """What the service's containers are made from: every field but its line (a field added later
    only when set), the contents of its env files and seccomp profiles (`env_file_texts`: path →
    text, for both), the image's manifest digest when a release pins it (a new digest under the
    same tag is a new container), and `extra` (what it gets from the rest of the stack: its
    networks, its secrets' and configs' digests).

    With `base` (the stack file's folder) the hash is *portable*: paths under the folder count by
    their place in it, so the operator's copy of a stack and the host's copy deploy pushed hash
    alike — how deploy tells, before touching a host, which services a release changes."""
    data = asdict(spec)
    if base is not None:
        data = _relative(data, base.rstrip("/"))
    if digest:
        data["image_digest"] = digest
    data.pop("line", None)
    data.pop("replicas", None)   # how many containers: the plan's business, not what each is made from
    defaults = _defaults()
    for k in list(data):
        if k not in _HASHED_ALWAYS and data[k] == defaults.get(k):
            data.pop(k)
    if data.get("healthcheck") and not data["healthcheck"].get("start_interval"):
        data["healthcheck"].pop("start_interval", None)   # added later: hashed only when set
    for v in data.get("volumes", ()):
        for k, default in _VOLUME_LATER.items():
            if v.get(k) == default or (isinstance(default, list) and not v.get(k)):
                v.pop(k, None)
    if profile_paths(spec):   # a changed seccomp profile recreates the service, as a changed env file does
        data["security_opt_texts"] = [env_file_texts.get(f, "") for f in profile_paths(spec)]
    data["env_file_texts"] = [env_file_texts.get(f, "") for f in spec.env_files]
    if extra:
        data["stack"] = _relative(extra, base.rstrip("/")) if base is not None else extra
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def service_hashes(stack: Stack, pins: dict[str, str] | None = None, *, portable: bool = False) -> dict[str, str]:
    """Each service's config hash, reading the env files and seccomp profiles it names and the
    digests of its secrets and configs (the one part of this module that reads anything).
    `portable`: counted from the stack file's folder."""
    pins = pins or {}
    base = str(Path(stack.path).resolve().parent) if portable else None
    out = {}
    for name, spec in stack.services.items():
        texts = {}
        for key, paths in (("env_file", spec.env_files), ("security_opt", profile_paths(spec))):
            for f in paths:
                try:
                    texts[f] = Path(f).read_text()
                except OSError as exc:
                    raise StackError(f"services.{name}.{key}: cannot read ({exc.strerror})", f) from exc
        out[name] = config_hash(spec, texts, pins.get(spec.image), requests.hash_inputs(stack, spec), base)
    return out


# ---- facts and plan (pure) ----------------------------------------------------------------------

@dataclass(frozen=True)
class Current:
    container: str
    hash: str
    exists: bool
    running: bool


@dataclass(frozen=True)
class Create:
    service: str
    replica: int = 1


@dataclass(frozen=True)
class Recreate:
    service: str
    reason: str
    replica: int = 1


@dataclass(frozen=True)
class Start:
    service: str
    replica: int = 1


@dataclass(frozen=True)
class Remove:
    service: str          # the state key: the service, or <service>#<n> for a further replica
    container: str


def plan(stack: Stack, hashes: dict[str, str], current: dict[str, Current]) -> list:
    """Removals first (services gone from the file, replicas beyond the count), then services in
    dependency order, each replica in turn."""
    actions: list = []
    for key, cur in sorted(current.items()):
        service, n = split_key(key)
        if cur.exists and (service not in stack.services or n > stack.services[service].replicas):
            actions.append(Remove(key, cur.container))
    recreated: set[str] = set()
    for name in stack.order:
        spec = stack.services[name]
        for n in range(1, spec.replicas + 1):
            cur = current.get(replica_key(name, n))
            if cur is None or not cur.exists:
                actions.append(Create(name, n))
                recreated.add(name)
            elif cur.hash != hashes[name]:
                actions.append(Recreate(name, "configuration changed", n))
                recreated.add(name)
            elif any(t in recreated for t, _ in spec.links):
                actions.append(Recreate(name, "a linked service was recreated", n))
                recreated.add(name)
            elif any(t in recreated for t in spec.depends_restart):
                actions.append(Recreate(name, "a service it depends on (restart: true) was recreated", n))
                recreated.add(name)
            elif spec.network_mode and spec.network_mode.startswith("service:") and \
                    spec.network_mode.split(":", 1)[1] in recreated:
                actions.append(Recreate(name, "the service whose network it shares was recreated", n))
                recreated.add(name)
            elif not cur.running:
                actions.append(Start(name, n))
    return actions


def describe(action) -> str:
    if isinstance(action, Remove):
        service, n = split_key(action.service)
        why = f"service {service} is no longer in the file" if n == 1 else f"replica {n} of {service} is not wanted"
        return f"remove {action.container} ({why})"
    who = action.service + (f" (replica {action.replica})" if action.replica > 1 else "")
    if isinstance(action, Recreate):
        return f"recreate {who} ({action.reason})"
    return f"{type(action).__name__.lower()} {who}"
