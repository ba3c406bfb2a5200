"""The pure half of `up`: what a service's container is made from (its config hash), and the plan —
desired hashes + what exists → Remove/Create/Recreate/Start actions. An unchanged, running
stack plans nothing.

A recreated service's *linkers* are recreated too: their link env vars carry its address and
environment (Docker bakes them in at create). Services that only depends_on it are kept.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from ..stack.model import ServiceSpec, Stack


def profile_paths(spec: ServiceSpec) -> list[str]:
    """The seccomp profile file a service names (absolute: the loader made it so)."""
    return [spec.security.seccomp] if spec.security.seccomp not in (None, "unconfined") else []


def config_hash(spec: ServiceSpec, env_file_texts: dict[str, str], digest: str | None = None) -> str:
    """What the service's container is made from: every field but its line, the contents of its
    env files and seccomp profiles (`env_file_texts`: path → text, for both), and the image's
    manifest digest when a release pins it (a new digest under the same tag is a new container)."""
    data = asdict(spec)
    if digest:
        data["image_digest"] = digest
    data.pop("line", None)
    for key in ("health_disabled", "cloud_metadata"):
        if not data.get(key):
            data.pop(key, None)   # likewise: only a set flag changes the hash (older stacks keep theirs)
    if profile_paths(spec):   # a changed seccomp profile recreates the service, as a changed env file does
        data["security_opt_texts"] = [env_file_texts.get(f, "") for f in profile_paths(spec)]
    data["env_file_texts"] = [env_file_texts.get(f, "") for f in spec.env_files]
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


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


@dataclass(frozen=True)
class Recreate:
    service: str
    reason: str


@dataclass(frozen=True)
class Start:
    service: str


@dataclass(frozen=True)
class Remove:
    service: str
    container: str


def plan(stack: Stack, hashes: dict[str, str], current: dict[str, Current]) -> list:
    """Removals first (services gone from the file), then services in dependency order."""
    actions: list = []
    for name, cur in sorted(current.items()):
        if name not in stack.services and cur.exists:
            actions.append(Remove(name, cur.container))
    recreated: set[str] = set()
    for name in stack.order:
        spec = stack.services[name]
        cur = current.get(name)
        if cur is None or not cur.exists:
            actions.append(Create(name))
            recreated.add(name)
        elif cur.hash != hashes[name]:
            actions.append(Recreate(name, "configuration changed"))
            recreated.add(name)
        elif any(t in recreated for t, _ in spec.links):
            actions.append(Recreate(name, "a linked service was recreated"))
            recreated.add(name)
        elif not cur.running:
            actions.append(Start(name))
    return actions


def describe(action) -> str:
    if isinstance(action, Remove):
        return f"remove {action.container} (service {action.service} is no longer in the file)"
    if isinstance(action, Recreate):
        return f"recreate {action.service} ({action.reason})"
    return f"{type(action).__name__.lower()} {action.service}"
