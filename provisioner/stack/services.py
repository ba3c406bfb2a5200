"""Compose-style `services:` -> checked ServiceSpecs, every error a StackError at file:line.

Supported keys are the ones `provision container run` has a flag for, plus depends_on and
healthcheck. Any other compose key is an error naming it: silently ignoring `networks:` or
`deploy:` would run something other than what the file says.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

from .. import yamlutil
from ..errors import ConfigError, StackError
from .ports import PortSyntaxError, parse_port

SERVICE_KEYS = {"image", "command", "entrypoint", "environment", "env_file", "ports", "volumes", "links",
                "depends_on", "restart", "healthcheck", "mem_limit", "cpus", "user", "working_dir", "hostname",
                "security_opt"}
HEALTH_KEYS = {"test", "interval", "timeout", "retries", "start_period", "disable"}
CONDITIONS = ("service_started", "service_healthy", "service_completed_successfully")
_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?(?:h|m|s|ms|us|ns))+$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s|us|ns)")
_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
_RESTART = re.compile(r"^(no|always|unless-stopped|on-failure(:\d+)?)$")
_ENV_KEY = re.compile(r"^[^=\s]+$")
_VOLUME_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class Healthcheck:
    test: tuple[str, ...]          # argv to exec in the container ("CMD-SHELL x" -> ("/bin/sh", "-c", x))
    interval: float = 30.0
    timeout: float = 30.0
    retries: int = 3
    start_period: float = 0.0


@dataclass(frozen=True)
class ServiceSpec:
    """One service, in the terms of `provision container run` (strings as its flags take them)."""

    name: str
    image: str
    command: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    env: tuple[str, ...] = ()                 # "K=V", in file order
    env_files: tuple[str, ...] = ()           # absolute paths
    ports: tuple[str, ...] = ()               # -p values
    volumes: tuple[str, ...] = ()             # -v values (named volumes, absolute bind paths, anonymous)
    links: tuple[tuple[str, str], ...] = ()   # (service, alias)
    depends_on: tuple[tuple[str, str], ...] = ()  # (service, condition)
    restart: str = "no"
    healthcheck: Healthcheck | None = None
    mem_limit: str | None = None
    cpus: str | None = None
    user: str | None = None
    working_dir: str | None = None
    hostname: str | None = None
    security_opt: tuple[str, ...] = ()        # --security-opt values (a seccomp profile path made absolute)
    health_disabled: bool = False             # healthcheck: {disable: true} or test: ["NONE"]: not the image's either
    line: int | None = None

    def dependencies(self) -> list[str]:
        return sorted({d for d, _ in self.depends_on} | {t for t, _ in self.links})


@dataclass(frozen=True)
class ServiceSet:
    services: dict[str, ServiceSpec]
    volumes: tuple[str, ...] = ()          # top-level named volumes
    order: tuple[str, ...] = field(default=())  # dependency order (dependencies first)


def parse_duration(text: Any) -> float:
    """Compose durations: "1m30s", "10s", "500ms", "1h". Raises ValueError."""
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise ValueError(f"{text!r} is not a duration like 10s or 1m30s")
    if isinstance(text, (int, float)):   # compose reads a bare number as seconds
        if text < 0:
            raise ValueError(f"{text!r} is negative")
        return float(text)
    s = text.strip()
    if not _DURATION.match(s):
        raise ValueError(f"{text!r} is not a duration like 10s or 1m30s")
    return sum(float(n) * _SECONDS[u] for n, u in _DURATION_PART.findall(s))


class _P:
    def __init__(self, path: str):
        self.path = path
        self.base = os.path.dirname(os.path.abspath(path)) if path and not path.startswith("<") else os.getcwd()

    def fail(self, msg: str, container: Any, key: Any = None) -> StackError:
        return StackError(msg, self.path, yamlutil.line_of(container, key))

    def strings(self, d: dict, key: str, where: str) -> tuple[str, ...] | None:
        """A string (split like a shell would be too risky: we take compose's list form or one word
        list from split()) or a list of scalars."""
        v = d.get(key)
        if v is None:
            return None
        if isinstance(v, str):
            import shlex

            try:
                return tuple(shlex.split(v))
            except ValueError as exc:
                raise self.fail(f"{where}.{key}: {exc}", d, key) from None
        if isinstance(v, list) and all(isinstance(x, (str, int, float)) and not isinstance(x, bool) for x in v):
            return tuple(str(x) for x in v)
        raise self.fail(f"{where}.{key} must be a string or a list of strings", d, key)

    def scalar(self, d: dict, key: str, where: str) -> str | None:
        v = d.get(key)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, (str, int, float)) or str(v).strip() == "":
            raise self.fail(f"{where}.{key} must be a non-empty string", d, key)
        return str(v)

    def str_list(self, d: dict, key: str, where: str) -> list:
        v = d.get(key)
        if v is None:
            return []
        if isinstance(v, str) and key == "env_file":
            return [v]
        if not isinstance(v, list):
            raise self.fail(f"{where}.{key} must be a list", d, key)
        return v


def parse_services(raw: Any, top_volumes: Any, path: str) -> ServiceSet:
    """`raw` is the line-aware `services:` mapping, `top_volumes` the top-level `volumes:`."""
    p = _P(path)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise StackError("'services' must be a mapping of service names", path, yamlutil.line_of(raw))
    named = _top_volumes(p, top_volumes)
    out: dict[str, ServiceSpec] = {}
    for name, entry in raw.items():
        if not isinstance(entry, dict):
            raise p.fail(f"services.{name} must be a mapping", raw, name)
        out[name] = _service(p, str(name), entry, named, yamlutil.line_of(raw, name))
    for name, spec in out.items():
        entry = raw[name]
        for target, _ in spec.links:
            if target not in out:
                raise p.fail(f"services.{name}.links: unknown service {target!r} (known: {', '.join(out)})",
                             entry, "links")
        for target, _ in spec.depends_on:
            if target not in out:
                raise p.fail(f"services.{name}.depends_on: unknown service {target!r} (known: {', '.join(out)})",
                             entry, "depends_on")
            if target == name:
                raise p.fail(f"services.{name}.depends_on: a service cannot depend on itself", entry, "depends_on")
        for target, cond in spec.depends_on:
            if cond == "service_healthy" and out[target].healthcheck is None:
                raise p.fail(f"services.{name}.depends_on: {target!r} with condition service_healthy, but "
                             f"{target!r} has no healthcheck", entry, "depends_on")
    order = _order(p, out, raw)
    return ServiceSet(out, tuple(sorted(named)), order)


def _top_volumes(p: _P, top: Any) -> set[str]:
    if top is None:
        return set()
    if not isinstance(top, dict):
        raise StackError("'volumes' must be a mapping of named volumes", p.path, yamlutil.line_of(top))
    for name, v in top.items():
        if not isinstance(name, str) or not _VOLUME_NAME.match(name):
            raise p.fail(f"volumes: {name!r} is not a valid volume name", top, name)
        if v not in (None, {}) :
            if not isinstance(v, dict):
                raise p.fail(f"volumes.{name} must be empty or a mapping", top, name)
            for k in v:
                raise p.fail(f"volumes.{name}: unsupported key {k!r} (only local named volumes are supported)", v, k)
    return set(top)


def _service(p: _P, name: str, d: dict, named: set[str], name_line: int | None) -> ServiceSpec:
    where = f"services.{name}"
    for k in d:
        if k not in SERVICE_KEYS:
            raise p.fail(f"{where}: unsupported compose key {k!r} (supported: {', '.join(sorted(SERVICE_KEYS))})",
                         d, k)
    image = p.scalar(d, "image", where)
    if image is None:
        raise StackError(f"{where}: 'image' is required (building images from a stack is not supported)", p.path,
                         name_line)
    entrypoint = p.strings(d, "entrypoint", where)
    command = p.strings(d, "command", where)
    env = _environment(p, d, where)
    env_files = []
    for i, f in enumerate(p.str_list(d, "env_file", where)):
        if not isinstance(f, str) or not f:
            raise p.fail(f"{where}.env_file[{i}] must be a path", d, "env_file")
        full = os.path.normpath(os.path.join(p.base, f))
        if not os.path.isfile(full):
            raise p.fail(f"{where}.env_file: {f!r} not found ({full})", d, "env_file")
        env_files.append(full)
    ports_raw = p.str_list(d, "ports", where)
    ports = []
    for i, item in enumerate(ports_raw):
        try:
            parse_port(item)
            if isinstance(item, dict):   # long syntax -> the -p form
                text = str(item["target"])
                if item.get("published") not in (None, ""):
                    text = f"{item['published']}:{text}"
                    if item.get("host_ip"):
                        text = f"{item['host_ip']}:{text}"
                item = f"{text}/{item.get('protocol', 'tcp')}"
            from ..network.ports import parse_port as run_port
            run_port(str(item))
        except PortSyntaxError as exc:
            raise p.fail(f"{where}.ports[{i}]: {exc}", ports_raw, i) from None
        except ConfigError as exc:
            raise p.fail(f"{where}.ports[{i}]: {exc.message}", ports_raw, i) from None
        ports.append(str(item))
    volumes = _volumes(p, d, where, named)
    links = []
    links_raw = p.str_list(d, "links", where)
    for i, item in enumerate(links_raw):
        if not isinstance(item, str) or not re.match(r"^[a-z0-9][a-z0-9-]*(:[A-Za-z0-9][A-Za-z0-9_.-]*)?$", item):
            raise p.fail(f"{where}.links[{i}]: {item!r} is not SERVICE[:ALIAS]", links_raw, i)
        target, _, alias = item.partition(":")
        links.append((target, alias or target))
    depends = _depends_on(p, d, where)
    # YAML 1.1 reads a bare `restart: no` as false: compose means "no"
    restart = "no" if d.get("restart") is False else (p.scalar(d, "restart", where) or "no")
    if not _RESTART.match(restart):
        raise p.fail(f"{where}.restart: {restart!r} is not no, always, on-failure[:N] or unless-stopped", d,
                     "restart")
    mem = p.scalar(d, "mem_limit", where)
    cpus = p.scalar(d, "cpus", where)
    try:
        from ..containers.bundle import parse_cpus, parse_memory

        if mem is not None:
            parse_memory(mem)
        if cpus is not None:
            parse_cpus(cpus)
    except ConfigError as exc:
        key = "mem_limit" if mem is not None and "memory" in exc.message else "cpus"
        raise p.fail(f"{where}.{key}: {exc.message.replace('--memory', 'mem_limit').replace('--cpus', 'cpus')}",
                     d, key) from None
    workdir = p.scalar(d, "working_dir", where)
    if workdir is not None and not workdir.startswith("/"):
        raise p.fail(f"{where}.working_dir {workdir!r} is not an absolute path", d, "working_dir")
    hostname = p.scalar(d, "hostname", where)
    if hostname is not None and not re.match(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,62}$", hostname):
        raise p.fail(f"{where}.hostname {hostname!r} is not a valid host name", d, "hostname")
    health = _healthcheck(p, d, where)
    return ServiceSpec(
        name=name, image=image, command=command, entrypoint=entrypoint, env=tuple(env), env_files=tuple(env_files),
        ports=tuple(ports), volumes=tuple(volumes), links=tuple(links), depends_on=tuple(depends), restart=restart,
        # a healthcheck key that gives no check (disable, NONE) turns the image's off too
        healthcheck=health, health_disabled=health is None and d.get("healthcheck") is not None,
        mem_limit=mem, cpus=cpus, user=p.scalar(d, "user", where),
        working_dir=workdir, hostname=hostname, security_opt=_security_opt(p, d, where), line=yamlutil.line_of(d))


def _security_opt(p: _P, d: dict, where: str) -> tuple[str, ...]:
    """Docker's values (seccomp=unconfined|PROFILE.json, no-new-privileges), checked now; a relative
    profile path is taken from the stack file's directory, as env_file is."""
    from ..containers import seccomp

    out = []
    items = p.str_list(d, "security_opt", where)
    for i, item in enumerate(items):
        w = f"{where}.security_opt[{i}]"
        if not isinstance(item, str) or not item.strip():
            raise p.fail(f"{w} must be a string such as seccomp=unconfined", items, i)
        key, sep, value = item.strip().partition("=")
        if key == "seccomp" and sep and value != seccomp.UNCONFINED:
            item = f"seccomp={os.path.normpath(os.path.join(p.base, os.path.expanduser(value)))}"
        try:
            seccomp.parse_security_opts([item], where=w)
        except ConfigError as exc:
            raise p.fail(exc.message if exc.message.startswith(w) else f"{w}: {exc.message}", items, i) from None
        out.append(item)
    return tuple(out)


def _environment(p: _P, d: dict, where: str) -> list[str]:
    v = d.get("environment")
    if v is None:
        return []
    out = []
    if isinstance(v, dict):
        for k, val in v.items():
            if not isinstance(k, str) or not _ENV_KEY.match(k) or isinstance(val, (dict, list)):
                raise p.fail(f"{where}.environment.{k}: want KEY: scalar", v, k)
            if val is None:   # compose: take it from the environment of `provision up`, else unset
                if k in os.environ:
                    out.append(f"{k}={os.environ[k]}")
                continue
            out.append(f"{k}={str(val).lower() if isinstance(val, bool) else val}")
        return out
    if isinstance(v, list):
        for i, item in enumerate(v):
            if not isinstance(item, str) or not _ENV_KEY.match(item.partition("=")[0]):
                raise p.fail(f"{where}.environment[{i}]: {item!r} is not KEY=VALUE", v, i)
            if "=" in item:
                out.append(item)
            elif item in os.environ:
                out.append(f"{item}={os.environ[item]}")
        return out
    raise p.fail(f"{where}.environment must be a list of KEY=VALUE or a mapping", d, "environment")


def _volumes(p: _P, d: dict, where: str, named: set[str]) -> list[str]:
    from ..containers.volumes import parse_volume

    raw = p.str_list(d, "volumes", where)
    out = []
    for i, item in enumerate(raw):
        if not isinstance(item, str):
            raise p.fail(f"{where}.volumes[{i}]: only the short syntax SRC:DST[:ro] is supported", raw, i)
        src, sep, rest = item.partition(":")
        if sep and (src.startswith(".") or src.startswith("~")):   # relative to the stack file, as compose
            src = os.path.normpath(os.path.join(p.base, os.path.expanduser(src)))
            item = f"{src}:{rest}"
        try:
            spec = parse_volume(item)
        except ConfigError as exc:
            raise p.fail(f"{where}.volumes[{i}]: {exc.message}", raw, i) from None
        if spec.kind == "volume" and spec.source not in named:
            raise p.fail(f"{where}.volumes[{i}]: named volume {spec.source!r} is not declared under the top-level "
                         "'volumes:'", raw, i)
        out.append(item)
    return out


def _depends_on(p: _P, d: dict, where: str) -> list[tuple[str, str]]:
    v = d.get("depends_on")
    if v is None:
        return []
    if isinstance(v, list):
        for i, item in enumerate(v):
            if not isinstance(item, str):
                raise p.fail(f"{where}.depends_on[{i}] must be a service name", v, i)
        return [(s, "service_started") for s in v]
    if isinstance(v, dict):
        out = []
        for s, cfg in v.items():
            if not isinstance(cfg, dict):
                raise p.fail(f"{where}.depends_on.{s} must be a mapping with 'condition'", v, s)
            for k in cfg:
                if k not in ("condition",):
                    raise p.fail(f"{where}.depends_on.{s}: unsupported key {k!r}", cfg, k)
            cond = cfg.get("condition", "service_started")
            if cond not in CONDITIONS:
                raise p.fail(f"{where}.depends_on.{s}.condition {cond!r} is not one of {', '.join(CONDITIONS)}",
                             cfg, "condition")
            out.append((str(s), cond))
        return out
    raise p.fail(f"{where}.depends_on must be a list or a mapping", d, "depends_on")


def _healthcheck(p: _P, d: dict, where: str) -> Healthcheck | None:
    h = d.get("healthcheck")
    if h is None:
        return None
    w = f"{where}.healthcheck"
    if not isinstance(h, dict):
        raise p.fail(f"{w} must be a mapping", d, "healthcheck")
    for k in h:
        if k not in HEALTH_KEYS:
            raise p.fail(f"{w}: unsupported key {k!r} (supported: {', '.join(sorted(HEALTH_KEYS))})", h, k)
    if h.get("disable") is True:
        return None
    test = h.get("test")
    if isinstance(test, str):
        argv: tuple[str, ...] = ("/bin/sh", "-c", test)
    elif isinstance(test, list) and test and all(isinstance(x, str) for x in test):
        kind = test[0]
        if kind == "NONE":
            return None
        if kind == "CMD" and len(test) > 1:
            argv = tuple(test[1:])
        elif kind == "CMD-SHELL" and len(test) == 2:
            argv = ("/bin/sh", "-c", test[1])
        else:
            raise p.fail(f"{w}.test: want [\"CMD\", args...], [\"CMD-SHELL\", \"command\"], [\"NONE\"] or a "
                         "string", h, "test")
    else:
        raise p.fail(f"{w}: 'test' is required (a string or a [\"CMD\", ...] list)", h, "test" if "test" in h else None)
    times = {}
    for key, default in (("interval", 30.0), ("timeout", 30.0), ("start_period", 0.0)):
        if key in h:
            try:
                times[key] = parse_duration(h[key])
            except ValueError as exc:
                raise p.fail(f"{w}.{key}: {exc}", h, key) from None
        else:
            times[key] = default
    for key in ("interval", "timeout"):
        if times[key] <= 0:
            raise p.fail(f"{w}.{key} must be more than 0", h, key)
    retries = h.get("retries", 3)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 1:
        raise p.fail(f"{w}.retries must be a positive integer", h, "retries")
    return Healthcheck(argv, times["interval"], times["timeout"], retries, times["start_period"])


def _order(p: _P, services: dict[str, ServiceSpec], raw: dict) -> tuple[str, ...]:
    """Dependencies first, by depth (a service after everything it depends on or links to); within
    a depth, the order a walk of the file finds them. A cycle is an error naming it."""
    done: list[str] = []
    state: dict[str, int] = {}

    def visit(name: str, trail: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = trail[trail.index(name):] + [name]
            raise p.fail(f"services: dependency cycle {' -> '.join(cycle)}", raw, cycle[0])
        state[name] = 1
        for dep in services[name].dependencies():
            visit(dep, trail + [name])
        state[name] = 2
        done.append(name)

    for name in services:
        visit(name, [])
    # By depth: every service that waits on nothing comes before any that waits, so `up` starts
    # the independent ones together instead of holding them behind another's healthcheck.
    level: dict[str, int] = {}
    for name in done:
        level[name] = 1 + max((level[d] for d in services[name].dependencies()), default=-1)
    return tuple(sorted(done, key=level.__getitem__))


def load_services(path: str) -> tuple[str, ServiceSet]:
    """A stack file for `provision up`: `name:` and `services:` (and `volumes:`); `hosts:` when
    present is checked by the full stack loader, so a deploy file can be brought up locally."""
    path = str(path)
    try:
        doc = yamlutil.load(path)
    except StackError:
        raise
    except ConfigError as err:
        raise StackError(err.message.split(": ", 1)[-1] if err.path else err.message, err.path, err.line) from None
    if not isinstance(doc, dict):
        raise StackError("a stack file must be a mapping with keys name and services", path, yamlutil.line_of(doc))
    if "hosts" in doc:
        from .loader import parse_stack

        stack = parse_stack(doc, path)
        return stack.name, parse_services(doc.get("services"), doc.get("volumes"), path)
    from .loader import NAME_RE, TOP_KEYS

    for k in doc:
        if k not in TOP_KEYS:
            raise StackError(f"unknown key {k!r} in the stack (expected one of: {', '.join(sorted(TOP_KEYS))})",
                             path, yamlutil.line_of(doc, k))
    name = doc.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise StackError("the stack needs a 'name' (lowercase letters, digits, '-', at most 32 characters)", path,
                         yamlutil.line_of(doc, "name") if "name" in doc else yamlutil.line_of(doc))
    raw = doc.get("services")
    if isinstance(raw, dict):
        for sname in raw:
            if not isinstance(sname, str) or not NAME_RE.match(sname):
                raise StackError(f"service name {sname!r} is not valid (lowercase letters, digits, '-')", path,
                                 yamlutil.line_of(raw, sname))
    return name, parse_services(raw, doc.get("volumes"), path)
