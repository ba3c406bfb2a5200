"""Entry points: connect a container to the network, disconnect it, keep links right.

State under <root>/network/ (all changed under the network lock, written atomically):
  ipam.json             address allocations
  endpoints/<name>.json one record per connected container
  files/<name>/         hosts, resolv.conf, hostname for the runtime to bind-mount

connect() checks everything it can before touching the system (name, links, ports against
other containers' rules and the host's listening sockets, address space), then applies the
plan; if a step fails it rolls back what it created and re-raises, so a failure leaves no
netns, veth, rule or allocation behind.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from ..errors import CommandError, ContainerError
from ..fsutil import atomic_write
from . import hosts, ipam
from .apply import apply
from .facts import read_facts
from .model import Endpoint, NetworkConfig
from .plan import Action, DeleteLink, DeleteNetns, check_subnet, plan_connect, plan_disconnect, plan_takeover
from ..runspec.ports import PortMapping, parse_port
from .ports import assign_host_ports, check_conflicts, ephemeral_range, host_listeners

log = logging.getLogger(__name__)
Groups = Iterable[tuple[str, Iterable[str]]]   # (user network, the container's aliases on it)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class SystemPaths:
    """Where facts and host files are read from (tests point these elsewhere)."""

    proc: str = "/proc"
    netns_dir: str = "/run/netns"
    resolv_conf: str = "/etc/resolv.conf"
    resolved_upstream: str = hosts.RESOLVED_UPSTREAM


def _endpoints_dir(root) -> Path:
    return ipam.state_dir(root) / "endpoints"


def _files_dir(root, name) -> Path:
    return ipam.state_dir(root) / "files" / name


def endpoints(root: str | os.PathLike) -> dict[str, Endpoint]:
    out = {}
    d = _endpoints_dir(root)
    if d.is_dir():
        for p in sorted(d.glob("*.json")):
            try:
                out[p.stem] = Endpoint.from_json(json.loads(p.read_text()))
            except (OSError, ValueError, TypeError, KeyError) as exc:
                raise ContainerError(f"{p}: unreadable network endpoint ({exc})") from exc
    return out


def endpoint(root: str | os.PathLike, name: str) -> Endpoint | None:
    """The container's endpoint: its own file only (what `endpoints()` has under that name), so
    describing each of n containers reads n files, not n²."""
    if not _NAME.fullmatch(name or ""):
        return None     # connect() refuses such a name: it never has an endpoint
    # _endpoints_dir(root) / f"{name}.json" without pathlib: this runs for each container listed
    p = os.path.join(os.getcwd(), root, "network", "endpoints", f"{name}.json")
    try:
        with open(p, "rb") as f:
            return Endpoint.from_json(json.loads(f.read()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise ContainerError(f"{p}: unreadable network endpoint ({exc})") from exc


def normalize_groups(groups: Groups) -> tuple[tuple[str, tuple[str, ...]], ...]:
    out = []
    for g, aliases in groups:
        for n in (g, *aliases):
            if not _NAME.fullmatch(n):
                raise ContainerError(f"bad network name or alias {n!r} (letters, digits, '_', '.', '-'; ≤ 64)")
        out.append((g, tuple(dict.fromkeys(aliases))))
    return tuple(sorted(out))


def _check_name(name: str) -> None:
    if not _NAME.fullmatch(name):
        raise ContainerError(f"bad container name {name!r} for the network (letters, digits, '_', '.', '-'; ≤ 64)")


def _link_targets(eps: dict[str, Endpoint], ep: Endpoint) -> list[hosts.LinkTarget]:
    out = []
    for target, alias in ep.links:
        t = eps.get(target)
        if t is not None:
            out.append(hosts.LinkTarget(target, alias, t.address, t.exposed))
    return out


def _peers(eps: dict[str, Endpoint], ep: Endpoint) -> list[tuple[str, str]]:
    """(names, address) of every other endpoint on one of `ep`'s user networks: its name and its
    aliases there, as Docker's embedded DNS answers them on a user-defined network. One standing
    by for another is left out (its predecessor still answers until the takeover)."""
    mine = {g for g, _ in ep.groups}
    out = []
    for other in eps.values():
        if other.name == ep.name or other.standby:
            continue
        names: list[str] = []
        for g, aliases in other.groups:
            if g in mine:
                names += [a for a in aliases if a not in names and a != other.name]
        if names or any(g in mine for g, _ in other.groups):
            out.append((" ".join(names + [other.name]), other.address))
    return out


def _hosts_text(ep: Endpoint, eps: dict[str, Endpoint]) -> str:
    return hosts.render_hosts(ep.hostname, ep.address, _link_targets(eps, ep), extra=_peers(eps, ep))


def _write_files(ep: Endpoint, eps: dict[str, Endpoint], resolv: str) -> None:
    d = Path(ep.files_dir)
    d.mkdir(parents=True, exist_ok=True)
    hosts.write_file(d / "hosts", _hosts_text(ep, eps))
    hosts.write_file(d / "resolv.conf", resolv)
    hosts.write_file(d / "hostname", ep.hostname + "\n")


def _prepare(root, cfg: NetworkConfig, name: str, runner, *, netns_path, hostname, ports, exposed, links,
             paths: SystemPaths, allocs: ipam.Allocations, link_envs: Mapping[str, Mapping[str, str]] | None = None,
             metadata: bool = False, standby_for: str | None = None, groups: Groups = ()
             ) -> tuple[Endpoint, list[Action], dict[str, Endpoint]]:
    _check_name(name)
    eps = endpoints(root)
    if name in eps:
        raise ContainerError(f"container {name} is already connected to the network")
    link_pairs = []
    for target, alias in links:
        if target not in eps:
            raise ContainerError(f"cannot link {name} to {target}: {target} is not running (no network endpoint)")
        link_pairs.append((target, alias or target))
    wanted = [m for p in ports for m in (parse_port(p) if isinstance(p, str) else [p])]
    facts = read_facts(runner, cfg, proc=paths.proc, netns_dir=paths.netns_dir)
    check_subnet(facts, cfg)
    listeners = host_listeners(paths.proc)
    if standby_for is not None and standby_for not in eps:
        raise ContainerError(f"cannot stand {name} by for {standby_for}: {standby_for} has no network endpoint")
    # a replacement standing by takes its predecessor's ports over later: no clash with them
    published = {n: e.ports for n, e in eps.items() if n != standby_for}
    wanted = assign_host_ports(name, wanted, published, listeners, ephemeral_range(paths.proc))
    check_conflicts(name, wanted, published, listeners, facts.local_addresses)
    address = allocs.allocate(name)
    owns = netns_path is None
    ep = Endpoint(
        name=name, address=str(address), prefixlen=cfg.network.prefixlen, gateway=str(cfg.gateway),
        veth=cfg.veth_name(name),
        netns_path=str(Path(paths.netns_dir) / cfg.netns_name(name)) if owns else str(netns_path),
        owns_netns=owns, hostname=hostname or name, ports=tuple(wanted),
        exposed=tuple(sorted({(int(p), str(proto)) for p, proto in exposed}
                             | {(m.container_port, m.proto) for m in wanted})),
        links=tuple(link_pairs), files_dir=str(_files_dir(root, name)), metadata=metadata,
        standby=standby_for is not None, groups=normalize_groups(groups),
    )
    env: dict[str, str] = {}
    for t in _link_targets(eps, ep):
        env.update(hosts.link_env(name, replace(t, env=(link_envs or {}).get(t.name))))
    ep = replace(ep, env=env)
    return ep, plan_connect(facts, cfg, ep), eps


def plan(root, cfg: NetworkConfig, name: str, *, runner, netns_path=None, hostname=None,
         ports: Sequence[str | PortMapping] = (), exposed: Iterable[tuple[int, str]] = (),
         links: Iterable[tuple[str, str | None]] = (), paths: SystemPaths = SystemPaths(),
         metadata: bool = False) -> list[Action]:
    """What connect() would do (for --dry-run); reads facts only."""
    with ipam.lock(root):
        allocs = ipam.load(root, cfg.subnet)
        _, actions, _ = _prepare(root, cfg, name, runner, netns_path=netns_path, hostname=hostname, ports=ports,
                                 exposed=exposed, links=links, paths=paths, allocs=allocs, metadata=metadata)
    return actions


def connect(root, cfg: NetworkConfig, name: str, *, runner, netns_path: str | None = None,
            hostname: str | None = None, ports: Sequence[str | PortMapping] = (),
            exposed: Iterable[tuple[int, str]] = (), links: Iterable[tuple[str, str | None]] = (),
            link_envs: Mapping[str, Mapping[str, str]] | None = None,
            paths: SystemPaths = SystemPaths(), metadata: bool = False, standby_for: str | None = None,
            groups: Groups = ()) -> Endpoint:
    """Attaches `name` (in a new named netns, or the one at `netns_path`) to the bridge, with
    published `ports` ("-p" strings or PortMappings) and `links` ((container, alias) pairs);
    `metadata`: it may reach the instance metadata service (169.254.169.254), which others may not.
    `link_envs` maps a linked container to its environment, for the <ALIAS>_ENV_* variables.
    `standby_for`: `name` replaces that container (a start-first switch): its ports may be the
    same, and are published only when takeover() moves them.
    `groups`: the user networks it is on, with its aliases on each (peers find each other by name).
    Returns the endpoint; `.env` holds the link env vars, `.files_dir` the hosts/resolv.conf."""
    with ipam.lock(root):
        allocs = ipam.load(root, cfg.subnet)
        ep, actions, eps = _prepare(root, cfg, name, runner, netns_path=netns_path, hostname=hostname,
                                    ports=ports, exposed=exposed, links=links, paths=paths, allocs=allocs,
                                    link_envs=link_envs, metadata=metadata, standby_for=standby_for,
                                    groups=groups)
        try:
            apply(actions, runner)
            resolv, note = hosts.render_resolv_conf(*hosts.read_host_resolv(paths.resolv_conf,
                                                                              paths.resolved_upstream))
            if note:
                log.warning("%s: %s", name, note)
            _write_files(ep, eps, resolv)
            atomic_write(_endpoints_dir(root) / f"{name}.json", json.dumps(ep.to_json(), indent=2) + "\n", mode=0o600)
            ipam.save(root, allocs)
        except BaseException:
            _rollback(root, cfg, ep, runner, paths, last=not eps)
            raise
        eps[name] = ep
        _relink(eps, name)
    return ep


def reconnect(root, cfg: NetworkConfig, name: str, *, runner, netns_path: str | None = None,
              paths: SystemPaths = SystemPaths()) -> Endpoint:
    """Brings a recorded endpoint back as it was (same address, ports, links): after a reboot
    (bridge, table, netns and veth are gone; a named netns is recreated), or when a restarted
    container has a new network namespace (`netns_path`; the old veth is removed first)."""
    _check_name(name)
    with ipam.lock(root):
        eps = endpoints(root)
        ep = eps.get(name)
        if ep is None:
            raise ContainerError(f"container {name} has no network endpoint to reconnect")
        facts = read_facts(runner, cfg, proc=paths.proc, netns_dir=paths.netns_dir)
        check_subnet(facts, cfg)
        actions: list[Action] = []
        if netns_path is not None and str(netns_path) != ep.netns_path:
            if ep.veth in facts.links:
                actions.append(DeleteLink(ep.veth))
                facts = replace(facts, links=facts.links - {ep.veth})
            if ep.owns_netns and ep.netns_name in facts.netns:
                actions.append(DeleteNetns(ep.netns_name))
                facts = replace(facts, netns=facts.netns - {ep.netns_name})
            ep = replace(ep, netns_path=str(netns_path), owns_netns=False)
        others = {n: e.ports for n, e in eps.items() if n != name}
        own_rules = {m for _, m in facts.rules.get(name, ())}
        listeners = host_listeners(paths.proc)
        # our own DNAT rules are no listeners; after a reboot they are gone and sockets count
        check_conflicts(name, [m for m in ep.ports if str(m) not in own_rules], others, listeners,
                        facts.local_addresses)
        actions += plan_connect(facts, cfg, ep)
        apply(actions, runner)
        resolv, note = hosts.render_resolv_conf(*hosts.read_host_resolv(paths.resolv_conf, paths.resolved_upstream))
        if note:
            log.warning("%s: %s", name, note)
        eps[name] = ep
        _write_files(ep, eps, resolv)
        atomic_write(_endpoints_dir(root) / f"{name}.json", json.dumps(ep.to_json(), indent=2) + "\n", mode=0o600)
        _relink(eps, name)
    return ep


def takeover(root, cfg: NetworkConfig, name: str, old: str, *, runner,
             paths: SystemPaths = SystemPaths()) -> Endpoint | None:
    """`name`, standing by (connect(standby_for=old)), takes `old`'s published ports over in one
    nftables transaction: each port's chain repointed in place, so every new connection from
    then on reaches `name`, and none is refused meanwhile. `old` keeps its address and its
    established connections (their conntrack entries still name it). Returns `old`'s endpoint as
    it was (None if it had none)."""
    _check_name(name)
    with ipam.lock(root):
        eps = endpoints(root)
        new, was = eps.get(name), eps.get(old)
        if new is None:
            raise ContainerError(f"container {name} has no network endpoint to take ports over with")
        facts = read_facts(runner, cfg, proc=paths.proc, netns_dir=paths.netns_dir)
        new = replace(new, standby=False)
        apply(plan_takeover(facts, cfg, new, old), runner)
        atomic_write(_endpoints_dir(root) / f"{name}.json", json.dumps(new.to_json(), indent=2) + "\n", mode=0o600)
        if was is not None:
            atomic_write(_endpoints_dir(root) / f"{old}.json",
                         json.dumps(replace(was, ports=()).to_json(), indent=2) + "\n", mode=0o600)
    return was


def _rollback(root, cfg, ep: Endpoint, runner, paths: SystemPaths, *, last: bool) -> None:
    try:
        facts = read_facts(runner, cfg, proc=paths.proc, netns_dir=paths.netns_dir)
        apply(plan_disconnect(facts, cfg, ep.name, netns_name=ep.netns_name, last=last, address=ep.address), runner,
              best_effort=True)
    except CommandError as exc:  # keep the original error; say the cleanup had trouble too
        log.warning("network rollback for %s incomplete: %s", ep.name, exc)
    shutil.rmtree(_files_dir(root, ep.name), ignore_errors=True)
    (_endpoints_dir(root) / f"{ep.name}.json").unlink(missing_ok=True)


def disconnect(root, cfg: NetworkConfig, name: str, *, runner, keep_address: bool = False,
               paths: SystemPaths = SystemPaths()) -> list[Action]:
    """Removes the container's veth, netns (if we made it), port rules, files and record; its
    address too unless `keep_address` (a restart: the linkers' env vars stay right). The bridge
    and the table go with the last endpoint. Returns what was done."""
    _check_name(name)
    with ipam.lock(root):
        eps = endpoints(root)
        ep = eps.pop(name, None)
        netns_name = ep.netns_name if ep else cfg.netns_name(name)
        facts = read_facts(runner, cfg, proc=paths.proc, netns_dir=paths.netns_dir)
        actions = plan_disconnect(facts, cfg, name, netns_name=netns_name, last=not eps,
                                  address=ep.address if ep else None)
        apply(actions, runner)
        shutil.rmtree(_files_dir(root, name), ignore_errors=True)
        (_endpoints_dir(root) / f"{name}.json").unlink(missing_ok=True)
        if not keep_address:
            with ipam.transaction(root, cfg.subnet, locked=True) as allocs:
                allocs.release(name)
        if ep is not None and ep.groups:
            # its user networks' members no longer find it (a linker keeps its line, as Docker's --link)
            mine = {g for g, _ in ep.groups}
            for other in eps.values():
                if any(g in mine for g, _ in other.groups) and Path(other.files_dir).is_dir():
                    hosts.write_file(Path(other.files_dir) / "hosts", _hosts_text(other, eps))
    return actions


def _relink(eps: dict[str, Endpoint], target: str, groups: Iterable[str] | None = None) -> list[str]:
    """Rewrites the hosts files that name `target`: its linkers' and the members of its user
    networks (`groups`: those it was on, when it has just gone)."""
    if groups is None:
        groups = [g for g, _ in eps[target].groups] if target in eps else []
    groups = set(groups)
    changed = []
    for ep in eps.values():
        if ep.name == target:
            continue
        if (any(t == target for t, _ in ep.links) or any(g in groups for g, _ in ep.groups)) \
                and Path(ep.files_dir).is_dir():
            hosts.write_file(Path(ep.files_dir) / "hosts", _hosts_text(ep, eps))
            changed.append(ep.name)
    return changed


def relink(root: str | os.PathLike, target: str) -> list[str]:
    """Rewrites (in place) the hosts files of the containers linking to `target` with its
    current address; returns their names. connect() calls it for every new endpoint."""
    with ipam.lock(root):
        return _relink(endpoints(root), target)


def regroup(root: str | os.PathLike, name: str, groups: Groups) -> Endpoint:
    """Puts a connected container on these user networks (Docker's network connect/disconnect
    while it runs): its hosts file and its old and new peers' are rewritten in place."""
    with ipam.lock(root):
        eps = endpoints(root)
        ep = eps.get(name)
        if ep is None:
            raise ContainerError(f"container {name} has no network endpoint")
        before = {g for g, _ in ep.groups}
        ep = eps[name] = replace(ep, groups=normalize_groups(groups))
        atomic_write(_endpoints_dir(root) / f"{name}.json", json.dumps(ep.to_json(), indent=2) + "\n", mode=0o600)
        if Path(ep.files_dir).is_dir():
            hosts.write_file(Path(ep.files_dir) / "hosts", _hosts_text(ep, eps))
        _relink(eps, name, before | {g for g, _ in ep.groups})
    return ep


def teardown(root, cfg: NetworkConfig, *, runner, paths: SystemPaths = SystemPaths()) -> None:
    """Disconnects every endpoint (releasing addresses); the bridge and table go with the last."""
    for name in list(endpoints(root)):
        disconnect(root, cfg, name, runner=runner, paths=paths)
    with ipam.lock(root):
        facts = read_facts(runner, cfg, proc=paths.proc, netns_dir=paths.netns_dir)
        apply(plan_disconnect(facts, cfg, "-", netns_name=None, last=True), runner)
