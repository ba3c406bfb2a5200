"""`load_stack(path) -> Stack`: read a stack file once, validate all of it, point errors at file:line.

A stack file is a compose file (compose-spec) with, optionally, provisioner's `hosts:` saying
where its services run. The steps, in compose's order: the project's environment (.env beside
the file, or --env-file; the command's environment wins), the project name (project.py),
interpolation of every value (interpolate.py), then the top-level sections: networks, volumes,
secrets, configs, services (services.py and the parsers it uses), hosts (hosts.py). Secret and
config sources are checked last (files.check_sources), so every mistake in the file itself is
reported before a missing file is.

Top-level keys: name, version (obsolete: a notice), services, networks, volumes, secrets,
configs, hosts, and x-* extensions (ignored, as compose does). A file without `hosts:` is a
stack to bring up on this machine (`provision up`); deploying it puts every service on one host,
`main` (the local cloud's defaults; aws and gce need a `hosts:` section with their settings).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import yamlutil
from ..errors import ConfigError, StackError
from . import files, networks, svc_volumes
from .fields import Fields
from .hosts import NAME_HINT, NAME_RE, implicit_host, parse_host
from .interpolate import interpolate_tree
from .model import Stack
from .project import ProjectOptions, environment, project_name
from .services import Context, parse_services

TOP_KEYS = {"name", "version", "hosts", "services", "volumes", "networks", "secrets", "configs"}


def load_stack(path: str | Path, *, hosts_required: bool = True, project: ProjectOptions | None = None,
               allow_privileged: bool = False) -> Stack:
    path = str(path)
    try:
        doc = yamlutil.load(path)
    except StackError:
        raise
    except ConfigError as err:
        raise StackError(err.message.split(": ", 1)[-1] if err.path else err.message, err.path, err.line) from None
    return parse_stack(doc, path, hosts_required=hosts_required, project=project, allow_privileged=allow_privileged)


def parse_stack(doc: Any, path: str, *, hosts_required: bool = True, project: ProjectOptions | None = None,
                allow_privileged: bool = False) -> Stack:
    opts = project or ProjectOptions()
    if not isinstance(doc, dict):
        raise StackError("a stack file must be a mapping with services (and optionally name, hosts, networks, "
                         "volumes, secrets, configs)", path, yamlutil.line_of(doc) if doc is not None else None)
    for k in doc:
        if k not in TOP_KEYS and not str(k).startswith("x-"):
            raise StackError(f"unknown key {k!r} in the stack (expected one of: {', '.join(sorted(TOP_KEYS))}, or "
                             "x-* extensions)", path, yamlutil.line_of(doc, k))
    env = environment(path, opts)
    notices: list[str] = []
    # the name first: it may use variables, and the rest may use COMPOSE_PROJECT_NAME
    head = interpolate_tree(_only(doc, "name"), path, env.get, notices)
    name = project_name(path, head, env, opts, yamlutil.line_of(doc, "name"))
    env.values.setdefault("COMPOSE_PROJECT_NAME", name)
    doc = interpolate_tree(doc, path, env.get, notices)
    f = Fields(path, env.values, env.get)
    f.notices = notices
    if "version" in doc:
        f.notice("'version' is obsolete and ignored (the compose specification has none)", doc, "version")
    if hosts_required and not NAME_RE.fullmatch(name):
        raise StackError(f"the stack's name {name!r} cannot name cloud resources ({NAME_HINT}); give one with "
                         "name: or -p", path, yamlutil.line_of(doc, "name") if "name" in doc else None)
    nets = networks.top_networks(f, doc.get("networks"), name)
    named = svc_volumes.top_volumes(f, doc.get("volumes"))
    secrets = files.top_files(f, doc.get("secrets"), "secret")
    configs = files.top_files(f, doc.get("configs"), "config")
    profiles = set(opts.profiles) | {p for p in (env.get("COMPOSE_PROFILES") or "").split(",") if p}
    ctx = Context(f, named, nets, secrets, configs, allow_privileged, profiles)
    raw = doc.get("services")
    hosts = _hosts(f, doc, raw if isinstance(raw, dict) else {})
    services, order = parse_services(ctx, raw)
    if not hosts and hosts_required:
        hosts = [implicit_host(f, tuple(services))]
    variables = dict(env.used)
    files.check_sources(f, services, secrets, configs, variables)
    stack = Stack(name=name, path=path, hosts=tuple(hosts), services=services, order=order,
                  volumes=tuple(sorted(named)), networks=nets, secrets=secrets, configs=configs,
                  notices=_in_file_order(f.notices, path), variables=variables, env_files=env.env_files,
                  implicit_hosts=hosts_required and doc.get("hosts") is None)
    for host in stack.hosts:
        _metrics_port_free(f, stack, host)
    return stack


def _in_file_order(notices: list[str], path: str) -> tuple[str, ...]:
    def line(n: str) -> int:
        head = n[len(path) + 1:].split(":", 1)[0]
        return int(head) if head.isdigit() else 0
    return tuple(sorted(dict.fromkeys(notices), key=line))


def _only(doc: dict, key: str) -> yamlutil.YDict:
    out = yamlutil.YDict()
    out.line, out.key_lines, out.raw = doc.line, {k: v for k, v in doc.key_lines.items() if k == key}, {}
    if key in doc:
        out[key] = doc[key]
    return out


def _hosts(f: Fields, doc: dict, raw: dict) -> list:
    hosts_raw = doc.get("hosts")
    if hosts_raw is None:
        return []
    if not isinstance(hosts_raw, list) or not hosts_raw:
        raise f.fail("'hosts' must be a non-empty list of hosts", doc, "hosts")
    hosts, seen = [], set()
    for i, h in enumerate(hosts_raw):
        if not isinstance(h, dict):
            raise f.fail(f"hosts[{i}] must be a mapping", hosts_raw, i)
        host = parse_host(f, h, raw)
        if host.name in seen:
            raise f.fail(f"duplicate host name {host.name!r}", h, "name")
        seen.add(host.name)
        hosts.append(host)
    return hosts


def _metrics_port_free(f: Fields, stack: Stack, host) -> None:
    """The metrics port is the agent's own listener: not SSH's, not a published service port."""
    if host.metrics is None:
        return
    port = host.metrics.port
    taken = [f"{p}" for p in stack.published_ports(host) if p.protocol == "tcp" and p.first <= port <= p.last]
    if port == 22 or taken:
        what = "SSH" if port == 22 else f"published port {taken[0]}"
        raise StackError(f"hosts.{host.name}.metrics.port: {port} is already the host's {what}; pick another",
                         f.path, host.metrics.line)
