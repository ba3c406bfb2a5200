"""Where an image is pulled from: registry location remaps and mirrors, with the semantics of
containers-registries.conf(5) (version 2), the file podman, skopeo and CRI-O read.

    [[registry]]
    prefix = "127.0.0.1:5000"          # which references the entry covers (default: location)
    location = "10.0.2.2:5000"         # where they really are: the prefix is replaced by this
    insecure = true                    # plain HTTP / unverified TLS to location

    [[registry.mirror]]                # tried in order, before location
    location = "mirror.internal/hub"
    insecure = false

The entry with the longest matching prefix wins (a prefix matches a whole registry, or a
registry/namespace path). A blocked entry refuses the pull. The image is stored under the name
the user asked for, whichever endpoint served it.

The local cloud uses a remap to pull `127.0.0.1:5000/...` references inside its VMs, which reach
the operator's loopback at qemu's gateway address, with no change to the stack file.
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from .reference import Reference, parse

_PREFIX = re.compile(r"(\*\.)?[A-Za-z0-9.-]+(:\d+)?(/[a-z0-9._/-]+)?")
_KEYS = {"prefix", "location", "insecure", "blocked", "mirror"}
_MIRROR_KEYS = {"location", "insecure"}


@dataclass(frozen=True)
class Endpoint:
    location: str          # host[:port][/namespace]
    insecure: bool = False


@dataclass(frozen=True)
class RegistryRule:
    prefix: str
    location: str
    insecure: bool = False
    blocked: bool = False
    mirrors: tuple[Endpoint, ...] = ()

    def matches(self, name: str) -> bool:
        """`name` is domain/path of a reference (no tag or digest)."""
        if self.prefix.startswith("*."):
            host = name.split("/", 1)[0]
            return host.endswith(self.prefix[1:])
        return name == self.prefix or name.startswith(self.prefix + "/")


@dataclass(frozen=True)
class RegistriesConf:
    rules: tuple[RegistryRule, ...] = ()

    def rule_for(self, ref: Reference) -> RegistryRule | None:
        name = f"{ref.domain}/{ref.path}"
        best = None
        for rule in self.rules:
            if rule.matches(name) and (best is None or len(rule.prefix) > len(best.prefix)):
                best = rule
        return best

    def endpoints(self, ref: Reference) -> list[tuple[Reference, bool]]:
        """(the reference as each endpoint names it, insecure) in the order to try: the mirrors,
        then the location. A reference no entry covers is pulled from where it says."""
        rule = self.rule_for(ref)
        if rule is None:
            return [(ref, False)]
        if rule.blocked:
            raise ConfigError(f"pulling {ref.familiar} is blocked by the registries configuration (prefix "
                              f"{rule.prefix})")
        out = [(_rewrite(ref, rule.prefix, m.location), m.insecure) for m in rule.mirrors]
        return out + [(_rewrite(ref, rule.prefix, rule.location), rule.insecure)]

    def to_toml(self) -> str:
        lines = ["# registries.conf(5) v2, written by provision deploy", ""]
        for r in self.rules:
            lines += ["[[registry]]", f"prefix = {_q(r.prefix)}", f"location = {_q(r.location)}",
                      f"insecure = {'true' if r.insecure else 'false'}"]
            if r.blocked:
                lines.append("blocked = true")
            for m in r.mirrors:
                lines += ["", "[[registry.mirror]]", f"location = {_q(m.location)}",
                          f"insecure = {'true' if m.insecure else 'false'}"]
            lines.append("")
        return "\n".join(lines)


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _rewrite(ref: Reference, prefix: str, location: str) -> Reference:
    if prefix.startswith("*."):   # a wildcard entry only names mirrors; its location is the reference's own
        return ref
    name = f"{ref.domain}/{ref.path}"
    text = location + name[len(prefix):]
    if ref.digest:
        text += f"@{ref.digest}"
    elif ref.tag:
        text += f":{ref.tag}"
    return parse(text)


def check_location(value, where: str, path: str | None = None) -> str:
    if not isinstance(value, str) or not _PREFIX.fullmatch(value):
        raise ConfigError(f"{where}: {value!r} is not a registry location like host[:port][/namespace]", path)
    return value


def parse_conf(text: str, path: str = "<registries.conf>") -> RegistriesConf:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML ({exc})", path) from None
    return registries_conf(doc.get("registry", []), path)


def registries_conf(entries, path: str | None = None) -> RegistriesConf:
    """[[registry]] tables (as TOML parses them, or a stack's `registries:` made alike) → the model."""
    if not isinstance(entries, list):
        raise ConfigError("'registry' must be an array of tables ([[registry]])", path)
    rules = []
    for i, e in enumerate(entries):
        where = f"registry[{i}]"
        if not isinstance(e, dict):
            raise ConfigError(f"{where} must be a table", path)
        unknown = set(e) - _KEYS
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}", path)
        location = check_location(e.get("location") or e.get("prefix"), f"{where}.location", path)
        prefix = check_location(e.get("prefix") or location, f"{where}.prefix", path)
        mirrors = []
        for j, m in enumerate(e.get("mirror", [])):
            if not isinstance(m, dict) or set(m) - _MIRROR_KEYS:
                raise ConfigError(f"{where}.mirror[{j}] must be a table with location and insecure", path)
            mirrors.append(Endpoint(check_location(m.get("location"), f"{where}.mirror[{j}].location", path),
                                    bool(m.get("insecure", False))))
        rules.append(RegistryRule(prefix, location, bool(e.get("insecure", False)), bool(e.get("blocked", False)),
                                  tuple(mirrors)))
    return RegistriesConf(tuple(rules))


def load_conf(path: Path) -> RegistriesConf:
    try:
        return parse_conf(Path(path).read_text(), str(path))
    except FileNotFoundError:
        return RegistriesConf()
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", str(path)) from None

