"""Compose-style `services:` → typed ServiceSpecs, every error a StackError at file:line.

Supported keys are the ones `provision container run` has a flag for, plus depends_on and
healthcheck. Any other compose key is an error naming it: silently ignoring `networks:` or
`deploy:` would run something other than what the file says. Values are parsed by the same
runspec parsers `container run` uses for its flags.
"""
from __future__ import annotations

import os
import re
from typing import Any

from .. import yamlutil
from ..errors import ConfigError, StackError
from ..runspec.durations import parse_duration
from ..runspec.health import Healthcheck
from ..runspec.mounts import VOLUME_NAME, parse_volume
from ..runspec.ports import parse_compose_port
from ..runspec.resources import parse_cpus, parse_memory
from ..runspec.restart import RestartPolicy
from ..runspec.seccomp import SecurityOpts, parse_security_opts
from .fields import Fields
from .model import ServiceSpec

SERVICE_KEYS = {"image", "command", "entrypoint", "environment", "env_file", "ports", "volumes", "links",
                "depends_on", "restart", "healthcheck", "mem_limit", "cpus", "user", "working_dir", "hostname",
                "security_opt", "cloud_metadata"}
HEALTH_KEYS = {"test", "interval", "timeout", "retries", "start_period", "disable"}
CONDITIONS = ("service_started", "service_healthy", "service_completed_successfully")
_ENV_KEY = re.compile(r"[^=\s]+")
_LINK = re.compile(r"[a-z0-9][a-z0-9-]*(:[A-Za-z0-9][A-Za-z0-9_.-]*)?")
_HOSTNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,62}")


def parse_services(f: Fields, raw: Any, top_volumes: Any) -> tuple[dict[str, ServiceSpec], tuple[str, ...],
                                                                    tuple[str, ...]]:
    """`raw` is the line-aware `services:` mapping, `top_volumes` the top-level `volumes:`.
    Returns the services, their dependency order and the named volumes."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise StackError("'services' must be a mapping of service names", f.path, yamlutil.line_of(raw))
    named = _top_volumes(f, top_volumes)
    out: dict[str, ServiceSpec] = {}
    for name, entry in raw.items():
        if not isinstance(entry, dict):
            raise f.fail(f"services.{name} must be a mapping", raw, name)
        out[name] = _service(f, str(name), entry, named, yamlutil.line_of(raw, name))
    for name, spec in out.items():
        entry = raw[name]
        for target, _ in spec.links:
            if target not in out:
                raise f.fail(f"services.{name}.links: unknown service {target!r} (known: {', '.join(out)})",
                             entry, "links")
        for target, _ in spec.depends_on:
            if target not in out:
                raise f.fail(f"services.{name}.depends_on: unknown service {target!r} (known: {', '.join(out)})",
                             entry, "depends_on")
            if target == name:
                raise f.fail(f"services.{name}.depends_on: a service cannot depend on itself", entry, "depends_on")
        for target, cond in spec.depends_on:
            if cond == "service_healthy" and out[target].healthcheck is None:
                raise f.fail(f"services.{name}.depends_on: {target!r} with condition service_healthy, but "
                             f"{target!r} has no healthcheck", entry, "depends_on")
    return out, _order(f, out, raw), tuple(sorted(named))


def _top_volumes(f: Fields, top: Any) -> set[str]:
    if top is None:
        return set()
    if not isinstance(top, dict):
        raise StackError("'volumes' must be a mapping of named volumes", f.path, yamlutil.line_of(top))
    for name, v in top.items():
        if not isinstance(name, str) or not VOLUME_NAME.fullmatch(name):
            raise f.fail(f"volumes: {name!r} is not a valid volume name", top, name)
        if v not in (None, {}):
            if not isinstance(v, dict):
                raise f.fail(f"volumes.{name} must be empty or a mapping", top, name)
            for k in v:
                raise f.fail(f"volumes.{name}: unsupported key {k!r} (only local named volumes are supported)", v, k)
    return set(top)


def _service(f: Fields, name: str, d: dict, named: set[str], name_line: int | None) -> ServiceSpec:
    where = f"services.{name}"
    for k in d:
        if k not in SERVICE_KEYS:
            raise f.fail(f"{where}: unsupported compose key {k!r} (supported: {', '.join(sorted(SERVICE_KEYS))})",
                         d, k)
    image = f.scalar(d, "image", where)
    if image is None:
        raise StackError(f"{where}: 'image' is required (building images from a stack is not supported)", f.path,
                         name_line)
    env_files = []
    for i, path in enumerate(f.items(d, "env_file", where, one_string=True)):
        if not isinstance(path, str) or not path:
            raise f.fail(f"{where}.env_file[{i}] must be a path", d, "env_file")
        full = f.relative(path)
        if not os.path.isfile(full):
            raise f.fail(f"{where}.env_file: {path!r} not found ({full})", d, "env_file")
        env_files.append(full)
    ports_raw = f.items(d, "ports", where)
    ports = []
    for i, item in enumerate(ports_raw):
        try:
            ports += parse_compose_port(item)
        except ConfigError as exc:
            raise f.fail(f"{where}.ports[{i}]: {exc.message}", ports_raw, i) from None
    links = []
    links_raw = f.items(d, "links", where)
    for i, item in enumerate(links_raw):
        if not isinstance(item, str) or not _LINK.fullmatch(item):
            raise f.fail(f"{where}.links[{i}]: {item!r} is not SERVICE[:ALIAS]", links_raw, i)
        target, _, alias = item.partition(":")
        links.append((target, alias or target))
    # YAML 1.1 reads a bare `restart: no` as false: compose means "no"
    restart = "no" if d.get("restart") is False else (f.scalar(d, "restart", where) or "no")
    try:
        policy = RestartPolicy.parse(restart)
    except ConfigError:
        raise f.fail(f"{where}.restart: {restart!r} is not no, always, on-failure[:N] or unless-stopped", d,
                     "restart") from None
    memory, cpu_quota = _resources(f, d, where)
    workdir = f.scalar(d, "working_dir", where)
    if workdir is not None and not workdir.startswith("/"):
        raise f.fail(f"{where}.working_dir {workdir!r} is not an absolute path", d, "working_dir")
    hostname = f.scalar(d, "hostname", where)
    if hostname is not None and not _HOSTNAME.fullmatch(hostname):
        raise f.fail(f"{where}.hostname {hostname!r} is not a valid host name", d, "hostname")
    health = _healthcheck(f, d, where)
    return ServiceSpec(
        name=name, image=image, command=f.words(d, "command", where), entrypoint=f.words(d, "entrypoint", where),
        env=tuple(_environment(f, d, where)), env_files=tuple(env_files), ports=tuple(ports),
        volumes=tuple(_volumes(f, d, where, named)), links=tuple(links), depends_on=tuple(_depends_on(f, d, where)),
        restart=policy,
        # a healthcheck key that gives no check (disable, NONE) turns the image's off too
        healthcheck=health, health_disabled=health is None and d.get("healthcheck") is not None,
        memory=memory, cpu_quota=cpu_quota, user=f.scalar(d, "user", where), working_dir=workdir,
        hostname=hostname, security=_security_opt(f, d, where),
        cloud_metadata=f.boolean(d, "cloud_metadata", where, False), line=yamlutil.line_of(d))


def _resources(f: Fields, d: dict, where: str) -> tuple[int | None, int | None]:
    out = []
    for key, parse, flag in (("mem_limit", parse_memory, "--memory"), ("cpus", parse_cpus, "--cpus")):
        text = f.scalar(d, key, where)
        try:
            out.append(parse(text) if text is not None else None)
        except ConfigError as exc:
            raise f.fail(f"{where}.{key}: {exc.message.replace(flag, key)}", d, key) from None
    return out[0], out[1]


def _security_opt(f: Fields, d: dict, where: str) -> SecurityOpts:
    """Docker's values (seccomp=unconfined|PROFILE.json, no-new-privileges), checked now; a relative
    profile path is taken from the stack file's directory, as env_file is."""
    items = f.items(d, "security_opt", where)
    opts = SecurityOpts()
    for i, item in enumerate(items):
        w = f"{where}.security_opt[{i}]"
        if not isinstance(item, str) or not item.strip():
            raise f.fail(f"{w} must be a string such as seccomp=unconfined", items, i)
        try:
            one = parse_security_opts([item], base=f.base, where=w)
        except ConfigError as exc:
            raise f.fail(exc.message if exc.message.startswith(w) else f"{w}: {exc.message}", items, i) from None
        opts = SecurityOpts(one.seccomp if one.seccomp is not None else opts.seccomp,
                            opts.no_new_privileges or one.no_new_privileges)
    return opts


def _environment(f: Fields, d: dict, where: str) -> list[str]:
    v = d.get("environment")
    if v is None:
        return []
    out = []
    if isinstance(v, dict):
        for k, val in v.items():
            if not isinstance(k, str) or not _ENV_KEY.fullmatch(k) or isinstance(val, (dict, list)):
                raise f.fail(f"{where}.environment.{k}: want KEY: scalar", v, k)
            if val is None:   # compose: take it from the environment of `provision up`, else unset
                if k in os.environ:
                    out.append(f"{k}={os.environ[k]}")
                continue
            out.append(f"{k}={str(val).lower() if isinstance(val, bool) else val}")
        return out
    if isinstance(v, list):
        for i, item in enumerate(v):
            if not isinstance(item, str) or not _ENV_KEY.fullmatch(item.partition("=")[0]):
                raise f.fail(f"{where}.environment[{i}]: {item!r} is not KEY=VALUE", v, i)
            if "=" in item:
                out.append(item)
            elif item in os.environ:
                out.append(f"{item}={os.environ[item]}")
        return out
    raise f.fail(f"{where}.environment must be a list of KEY=VALUE or a mapping", d, "environment")


def _volumes(f: Fields, d: dict, where: str, named: set[str]) -> list:
    raw = f.items(d, "volumes", where)
    out = []
    for i, item in enumerate(raw):
        if not isinstance(item, str):
            raise f.fail(f"{where}.volumes[{i}]: only the short syntax SRC:DST[:ro] is supported", raw, i)
        src, sep, rest = item.partition(":")
        if sep and (src.startswith(".") or src.startswith("~")):   # relative to the stack file, as compose
            item = f"{f.relative(src)}:{rest}"
        try:
            spec = parse_volume(item)
        except ConfigError as exc:
            raise f.fail(f"{where}.volumes[{i}]: {exc.message}", raw, i) from None
        if spec.kind == "volume" and spec.source not in named:
            raise f.fail(f"{where}.volumes[{i}]: named volume {spec.source!r} is not declared under the top-level "
                         "'volumes:'", raw, i)
        out.append(spec)
    return out


def _depends_on(f: Fields, d: dict, where: str) -> list[tuple[str, str]]:
    v = d.get("depends_on")
    if v is None:
        return []
    if isinstance(v, list):
        for i, item in enumerate(v):
            if not isinstance(item, str):
                raise f.fail(f"{where}.depends_on[{i}] must be a service name", v, i)
        return [(s, "service_started") for s in v]
    if isinstance(v, dict):
        out = []
        for s, cfg in v.items():
            if not isinstance(cfg, dict):
                raise f.fail(f"{where}.depends_on.{s} must be a mapping with 'condition'", v, s)
            for k in cfg:
                if k not in ("condition",):
                    raise f.fail(f"{where}.depends_on.{s}: unsupported key {k!r}", cfg, k)
            cond = cfg.get("condition", "service_started")
            if cond not in CONDITIONS:
                raise f.fail(f"{where}.depends_on.{s}.condition {cond!r} is not one of {', '.join(CONDITIONS)}",
                             cfg, "condition")
            out.append((str(s), cond))
        return out
    raise f.fail(f"{where}.depends_on must be a list or a mapping", d, "depends_on")


def _healthcheck(f: Fields, d: dict, where: str) -> Healthcheck | None:
    h = d.get("healthcheck")
    if h is None:
        return None
    w = f"{where}.healthcheck"
    if not isinstance(h, dict):
        raise f.fail(f"{w} must be a mapping", d, "healthcheck")
    for k in h:
        if k not in HEALTH_KEYS:
            raise f.fail(f"{w}: unsupported key {k!r} (supported: {', '.join(sorted(HEALTH_KEYS))})", h, k)
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
            raise f.fail(f"{w}.test: want [\"CMD\", args...], [\"CMD-SHELL\", \"command\"], [\"NONE\"] or a "
                         "string", h, "test")
    else:
        raise f.fail(f"{w}: 'test' is required (a string or a [\"CMD\", ...] list)", h, "test" if "test" in h else None)
    times = {}
    for key, default in (("interval", 30.0), ("timeout", 30.0), ("start_period", 0.0)):
        if key in h:
            try:
                times[key] = parse_duration(h[key])
            except ValueError as exc:
                raise f.fail(f"{w}.{key}: {exc}", h, key) from None
        else:
            times[key] = default
    for key in ("interval", "timeout"):
        if times[key] <= 0:
            raise f.fail(f"{w}.{key} must be more than 0", h, key)
    retries = h.get("retries", 3)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 1:
        raise f.fail(f"{w}.retries must be a positive integer", h, "retries")
    return Healthcheck(argv, times["interval"], times["timeout"], retries, times["start_period"])


def _order(f: Fields, services: dict[str, ServiceSpec], raw: dict) -> tuple[str, ...]:
    """Dependencies first, by depth (a service after everything it depends on or links to); within
    a depth, the order a walk of the file finds them. A cycle is an error naming it."""
    done: list[str] = []
    state: dict[str, int] = {}

    def visit(name: str, trail: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = trail[trail.index(name):] + [name]
            raise f.fail(f"services: dependency cycle {' -> '.join(cycle)}", raw, cycle[0])
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
