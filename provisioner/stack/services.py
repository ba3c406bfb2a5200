"""Compose `services:` entries → typed ServiceSpec values (the values `provision container run`
takes, from runspec/). Every key compose files use in the wild is either taken (here, or by the
parsers of one concern each: svc_runtime, svc_volumes, svc_health, svc_deploy, networks, files),
accepted with a notice naming what happens instead, or refused in one line at file:line.
"""
from __future__ import annotations

import os
import re
from dataclasses import replace
from typing import Any

from .. import yamlutil
from ..errors import ConfigError, StackError
from ..runspec.ports import parse_compose_port
from ..runspec.restart import RestartPolicy
from . import files, networks, svc_deploy, svc_health, svc_runtime, svc_volumes
from .fields import Fields
from .model import FileDef, NetworkDef, ServiceSpec

CORE_KEYS = {"image", "build", "command", "entrypoint", "environment", "env_file", "ports", "expose", "links",
             "depends_on", "restart", "healthcheck", "user", "working_dir", "hostname", "container_name", "labels",
             "profiles", "scale", "volumes", "tmpfs", "networks", "network_mode", "secrets", "configs", "deploy",
             "cloud_metadata"}
SERVICE_KEYS = CORE_KEYS | svc_runtime.KEYS
CONDITIONS = ("service_started", "service_healthy", "service_completed_successfully")
SERVICE_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9._-]*")
_ENV_KEY = re.compile(r"[^=\s]+")
_LINK = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9._-]*(:[A-Za-z0-9][A-Za-z0-9_.-]*)?")
_HOSTNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,62}")
_CONTAINER_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")
_EXPOSE = re.compile(r"(\d+)(?:-(\d+))?(?:/(tcp|udp))?")
BUILD_ONLY = "provisioner builds no images; build it, push it, name it in image:"


class Context:
    """What every service's parse needs from the rest of the file."""

    def __init__(self, f: Fields, named_volumes: set[str], nets: dict[str, NetworkDef],
                 secrets: dict[str, FileDef], configs: dict[str, FileDef], allow_privileged: bool,
                 profiles: set[str]):
        self.f, self.named, self.nets = f, named_volumes, nets
        self.secrets, self.configs = secrets, configs
        self.allow_privileged, self.profiles = allow_privileged, profiles
        self.optional: dict[str, set[str]] = {}     # service → dependencies with required: false


def parse_services(ctx: Context, raw: Any) -> tuple[dict[str, ServiceSpec], tuple[str, ...]]:
    """`raw` is the line-aware `services:` mapping. Returns the active services (those of no
    profile, or of an enabled one) and their dependency order."""
    f = ctx.f
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise StackError("'services' must be a mapping of service names", f.path, yamlutil.line_of(raw))
    out: dict[str, ServiceSpec] = {}
    for name, entry in raw.items():
        if not isinstance(name, str) or not SERVICE_NAME.fullmatch(name):
            raise f.fail(f"service name {name!r} is not valid (letters, digits, '.', '_', '-')", raw, name)
        if not isinstance(entry, dict):
            raise f.fail(f"services.{name} must be a mapping", raw, name)
        out[name] = _service(ctx, name, entry, yamlutil.line_of(raw, name))
    inactive = {n for n, s in out.items() if s.profiles and not set(s.profiles) & ctx.profiles}
    active = {n: s for n, s in out.items() if n not in inactive}
    for name, spec in active.items():
        gone = {t for t in ctx.optional.get(name, ()) if t not in active}
        if gone:
            f.notice(f"services.{name}.depends_on: {', '.join(sorted(gone))} not required and not run; ignored",
                     raw[name], "depends_on")
            active[name] = replace(spec, depends_on=tuple((t, c) for t, c in spec.depends_on if t not in gone),
                                   depends_restart=tuple(t for t in spec.depends_restart if t not in gone))
    _check_references(f, active, raw, inactive)
    return active, _order(f, active, raw)


def _check_references(f: Fields, out: dict[str, ServiceSpec], raw: dict, inactive: set[str]) -> None:
    def known(target: str, entry, key: str) -> None:
        if target in out:
            return
        extra = " (it is in a profile that is not enabled)" if target in inactive else f" (known: {', '.join(out)})"
        raise f.fail(f"services.{name}.{key}: unknown service {target!r}{extra}", entry, key)

    names = {}
    for name, spec in out.items():
        entry = raw[name]
        for target, _ in spec.links:
            known(target, entry, "links")
        for target, _ in spec.depends_on:
            known(target, entry, "depends_on")
            if target == name:
                raise f.fail(f"services.{name}.depends_on: a service cannot depend on itself", entry, "depends_on")
        for target, cond in spec.depends_on:
            if cond == "service_healthy" and out[target].healthcheck is None:
                raise f.fail(f"services.{name}.depends_on: {target!r} with condition service_healthy, but "
                             f"{target!r} has no healthcheck", entry, "depends_on")
        if spec.network_mode and spec.network_mode.startswith("service:"):
            known(spec.network_mode.split(":", 1)[1], entry, "network_mode")
        if spec.container_name:
            if spec.container_name in names:
                raise f.fail(f"services.{name}.container_name: {spec.container_name!r} is also service "
                             f"{names[spec.container_name]}'s", entry, "container_name")
            names[spec.container_name] = name
            if spec.replicas > 1:
                raise f.fail(f"services.{name}.container_name: a service with {spec.replicas} replicas cannot have "
                             "one container name (compose refuses it too)", entry, "container_name")


def _service(ctx: Context, name: str, d: dict, name_line: int | None) -> ServiceSpec:
    f = ctx.f
    where = f"services.{name}"
    for k in d:
        if k not in SERVICE_KEYS and not str(k).startswith("x-"):
            raise f.fail(f"{where}: unsupported compose key {k!r} (supported: {', '.join(sorted(SERVICE_KEYS))})",
                         d, k)
    image = f.scalar(d, "image", where)
    if d.get("build") is not None:
        if image is None:
            raise StackError(f"{where}: 'build' without 'image' — {BUILD_ONLY}", f.path, name_line)
        f.notice(f"{where}.build: ignored; the service runs image {image} (as `docker stack deploy` does)", d, "build")
    if image is None:
        raise StackError(f"{where}: 'image' is required ({BUILD_ONLY})", f.path, name_line)
    kw: dict[str, Any] = {}
    mode = f.scalar(d, "network_mode", where)
    try:
        kw.update(svc_runtime.parse(f, d, where, allow_privileged=ctx.allow_privileged, host_network=mode == "host"))
    except ConfigError as exc:
        if isinstance(exc, StackError):
            raise
        raise f.fail(f"{where}: {exc.message}", d) from None
    restart_given = d.get("restart") is not None
    # YAML 1.1 reads a bare `restart: no` as false: compose means "no"
    restart = "no" if d.get("restart") is False else (f.scalar(d, "restart", where) or "no")
    try:
        kw["restart"] = RestartPolicy.parse(restart)
    except ConfigError:
        raise f.fail(f"{where}.restart: {restart!r} is not no, always, on-failure[:N] or unless-stopped", d,
                     "restart") from None
    kw["replicas"] = f.integer(d, "scale", where, 1, svc_deploy.MAX_REPLICAS) or 1
    given = dict(kw, restart_given=restart_given)
    deploy = svc_deploy.parse(f, d, where, given)
    if "scale" in d and "replicas" in deploy and deploy["replicas"] != kw["replicas"]:
        raise f.fail(f"{where}.scale differs from deploy.replicas; give one", d, "scale")
    kw.update(deploy)
    kw.update(networks.service_networks(f, d, where, ctx.nets))
    if kw["replicas"] > 1 and any(n.ipv4_address for n in kw.get("networks", ())):
        raise f.fail(f"{where}.networks: a fixed ipv4_address cannot be given to {kw['replicas']} replicas", d,
                     "networks")
    if kw.get("network_mode") == "host" and d.get("ports"):
        raise f.fail(f"{where}.ports: published ports have no meaning with network_mode: host (the service listens "
                     "on the host's own ports)", d, "ports")
    if kw.get("network_mode", "").startswith(("service:", "container:")):
        for key in ("ports", "extra_hosts", "dns", "hostname", "links"):
            if d.get(key):
                raise f.fail(f"{where}.{key}: not with network_mode {kw['network_mode']} (that one's network, names "
                             "and ports are shared)", d, key)
    workdir = f.scalar(d, "working_dir", where)
    if workdir is not None and not workdir.startswith("/"):
        raise f.fail(f"{where}.working_dir {workdir!r} is not an absolute path", d, "working_dir")
    hostname = f.scalar(d, "hostname", where)
    if hostname is not None and not _HOSTNAME.fullmatch(hostname):
        raise f.fail(f"{where}.hostname {hostname!r} is not a valid host name", d, "hostname")
    cname = f.scalar(d, "container_name", where)
    if cname is not None and not _CONTAINER_NAME.fullmatch(cname):
        raise f.fail(f"{where}.container_name {cname!r} is not a valid container name", d, "container_name")
    health = svc_health.parse(f, d, where)
    depends, restart_with, ctx.optional[name] = _depends_on(f, d, where)
    return ServiceSpec(
        name=name, image=image, command=f.words(d, "command", where), entrypoint=f.words(d, "entrypoint", where),
        env=tuple(_environment(f, d, where)), env_files=tuple(_env_files(f, d, where)), ports=tuple(_ports(f, d, where)),
        volumes=tuple(svc_volumes.service_volumes(f, d, where, ctx.named)), links=tuple(_links(f, d, where)),
        depends_on=tuple(depends), depends_restart=tuple(restart_with),
        # a healthcheck key that gives no check (disable, NONE) turns the image's off too
        healthcheck=health, health_disabled=health is None and d.get("healthcheck") is not None,
        user=f.scalar(d, "user", where), working_dir=workdir, hostname=hostname, line=yamlutil.line_of(d),
        container_name=cname, labels=tuple(f.pairs(d, "labels", where)), expose=_expose(f, d, where),
        secrets=files.service_refs(f, d, where, "secret", ctx.secrets),
        configs=files.service_refs(f, d, where, "config", ctx.configs),
        profiles=tuple(f.strings(d, "profiles", where, one_string=False)),
        cloud_metadata=f.boolean(d, "cloud_metadata", where, False), **kw)


def _env_files(f: Fields, d: dict, where: str) -> list[str]:
    out = []
    for i, item in enumerate(f.items(d, "env_file", where, one_string=True)):
        required = True
        path = item
        if isinstance(item, dict):   # compose 2.24+: {path, required}
            f.keys(item, {"path", "required", "format"}, f"{where}.env_file[{i}]")
            path, required = item.get("path"), f.boolean(item, "required", f"{where}.env_file[{i}]", True)
        if not isinstance(path, str) or not path:
            raise f.fail(f"{where}.env_file[{i}] must be a path", d, "env_file")
        full = f.relative(path)
        if not os.path.isfile(full):
            if not required:
                continue
            raise f.fail(f"{where}.env_file: {path!r} not found ({full})", d, "env_file")
        out.append(full)
    return out


def _ports(f: Fields, d: dict, where: str) -> list:
    raw = f.items(d, "ports", where)
    out = []
    for i, item in enumerate(raw):
        try:
            out += parse_compose_port(item)
        except ConfigError as exc:
            raise f.config(exc, f"{where}.ports[{i}]", raw, i) from None
    return out


def _expose(f: Fields, d: dict, where: str) -> tuple[tuple[int, str], ...]:
    out = []
    for i, item in enumerate(f.strings(d, "expose", where, one_string=False)):
        m = _EXPOSE.fullmatch(item.strip())
        if not m or not 1 <= int(m.group(1)) <= int(m.group(2) or m.group(1)) <= 65535:
            raise f.fail(f"{where}.expose[{i}]: {item!r} is not a port, a range or PORT/udp", d["expose"], i)
        out += [(p, m.group(3) or "tcp") for p in range(int(m.group(1)), int(m.group(2) or m.group(1)) + 1)]
    return tuple(dict.fromkeys(out))


def _links(f: Fields, d: dict, where: str) -> list[tuple[str, str]]:
    links = []
    raw = f.items(d, "links", where)
    for i, item in enumerate(raw):
        if not isinstance(item, str) or not _LINK.fullmatch(item):
            raise f.fail(f"{where}.links[{i}]: {item!r} is not SERVICE[:ALIAS]", raw, i)
        target, _, alias = item.partition(":")
        links.append((target, alias or target))
    return links


def _environment(f: Fields, d: dict, where: str) -> list[str]:
    """KEY: value / KEY=value items; a KEY with no value takes the project environment's (the
    command's, or .env), as compose does, and is left out when that has none."""
    v = d.get("environment")
    if v is None:
        return []
    out = []
    if isinstance(v, dict):
        for k, val in v.items():
            if not isinstance(k, str) or not _ENV_KEY.fullmatch(k) or isinstance(val, (dict, list)):
                raise f.fail(f"{where}.environment.{k}: want KEY: scalar", v, k)
            if val is None:
                if f.lookup(k) is not None:
                    out.append(f"{k}={f.lookup(k)}")
                continue
            out.append(f"{k}={str(val).lower() if isinstance(val, bool) else val}")
        return out
    if isinstance(v, list):
        for i, item in enumerate(v):
            if not isinstance(item, str) or not _ENV_KEY.fullmatch(item.partition("=")[0]):
                raise f.fail(f"{where}.environment[{i}]: {item!r} is not KEY=VALUE", v, i)
            if "=" in item:
                out.append(item)
            elif f.lookup(item) is not None:
                out.append(f"{item}={f.lookup(item)}")
        return out
    raise f.fail(f"{where}.environment must be a list of KEY=VALUE or a mapping", d, "environment")


def _depends_on(f: Fields, d: dict, where: str) -> tuple[list[tuple[str, str]], list[str], set[str]]:
    """(service, condition) pairs; the services whose recreation restarts this one (`restart:
    true`); those with `required: false` (dropped when they do not run)."""
    v = d.get("depends_on")
    if v is None:
        return [], [], set()
    if isinstance(v, list):
        for i, item in enumerate(v):
            if not isinstance(item, str):
                raise f.fail(f"{where}.depends_on[{i}] must be a service name", v, i)
        return [(s, "service_started") for s in v], [], set()
    if isinstance(v, dict):
        out, restart, optional = [], [], set()
        for s, cfg in v.items():
            cfg = cfg if cfg is not None else {}
            if not isinstance(cfg, dict):
                raise f.fail(f"{where}.depends_on.{s} must be a mapping with 'condition'", v, s)
            w = f"{where}.depends_on.{s}"
            for k in cfg:
                if k not in ("condition", "restart", "required"):
                    raise f.fail(f"{w}: unsupported key {k!r} (supported: condition, required, restart)", cfg, k)
            cond = cfg.get("condition", "service_started")
            if cond not in CONDITIONS:
                raise f.fail(f"{w}.condition {cond!r} is not one of {', '.join(CONDITIONS)}", cfg, "condition")
            if not f.boolean(cfg, "required", w, True):
                optional.add(str(s))
            if f.boolean(cfg, "restart", w, False):
                restart.append(str(s))
            out.append((str(s), cond))
        return out, restart, optional
    raise f.fail(f"{where}.depends_on must be a list or a mapping", d, "depends_on")


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
