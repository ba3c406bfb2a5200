"""Entry points: connect a container to its networks, disconnect it, keep names right.

State under <root>/network/ (all changed under the network lock, written atomically):
  ipam.json             address allocations of the default bridge
  networks/<n>.json     a user-defined network (registry.py), networks/<n>.ipam.json its allocations
  endpoints/<name>.json one record per connected container (its attachments, one per network)
  files/<name>/         hosts, resolv.conf, hostname for the runtime to bind-mount

A container is on the default bridge, or on one or more user-defined networks: one network
namespace, one veth per network (eth0, eth1, …; the first network holds the default route and the
published ports). connect() checks everything it can before touching the system (name, networks,
links, ports against other containers' rules and the host's listening sockets, fixed addresses,
address space), then applies the plan; if a step fails it rolls back what it created and
re-raises, so a failure leaves no netns, veth, rule or allocation behind.
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
from ..runspec.netopts import HOST_GATEWAY, NetworkAttachment
from ..runspec.ports import PortMapping, parse_port
from . import hosts, ipam, names, registry
from .apply import apply
from .facts import NetFacts, read_facts
from .model import DEFAULT_NETWORK, Attachment, Endpoint, NetworkConfig
from .balance import map_name, plan_balance
from .plan import (
    Action, DeleteLink, DeleteNetns, check_subnet, plan_connect, plan_disconnect, plan_remove_network, plan_takeover,
)
from .ports import assign_host_ports, check_conflicts, ephemeral_range, host_listeners

log = logging.getLogger(__name__)
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


def _check_name(name: str) -> None:
    if not _NAME.fullmatch(name):
        raise ContainerError(f"bad container name {name!r} for the network (letters, digits, '_', '.', '-'; ≤ 64)")


def _net(root, cfg: NetworkConfig, att: Attachment | NetworkAttachment, ifname: str | None = None) -> NetworkConfig:
    """The NetworkConfig that plans this attachment (its network's, with the interface's name)."""
    netcfg = registry.require(root, cfg, att.network).config
    return replace(netcfg, inner_ifname=ifname or getattr(att, "ifname", netcfg.inner_ifname))


def _view(ep: Endpoint, att: Attachment, netcfg: NetworkConfig, primary: bool) -> Endpoint:
    """The endpoint as plan_connect sees one attachment: a second network gets no netns of its own,
    no published ports and no default route; an internal network no default route either. A
    replica's ports are its group's (set_balance()), not rules of its own."""
    return replace(ep, address=att.address, prefixlen=att.prefixlen, veth=att.veth,
                   gateway="" if (not primary or netcfg.internal) else att.gateway,
                   owns_netns=ep.owns_netns and primary, ports=ep.ports if primary and not ep.group else ())


def _plan_all(root, cfg, ep: Endpoint, runner, paths: SystemPaths) -> tuple[list[Action], NetFacts]:
    actions: list[Action] = []
    first: NetFacts | None = None
    for i, att in enumerate(ep.attachments):
        netcfg = _net(root, cfg, att)
        facts = read_facts(runner, netcfg, proc=paths.proc, netns_dir=paths.netns_dir)
        check_subnet(facts, netcfg)
        first = first or facts
        actions += [a for a in plan_connect(facts, netcfg, _view(ep, att, netcfg, i == 0)) if a not in actions]
    return actions, first


def _prepare(root, cfg: NetworkConfig, name: str, runner, *, netns_path, hostname, ports, exposed, links,
             paths: SystemPaths, networks: Sequence[NetworkAttachment] = (), extra_hosts=(), dns=None,
             link_envs: Mapping[str, Mapping[str, str]] | None = None, group: str | None = None,
             metadata: bool = False, standby_for: str | None = None):
    _check_name(name)
    eps = endpoints(root)
    if name in eps:
        raise ContainerError(f"container {name} is already connected to the network")
    link_pairs = []
    for target, alias in links:
        if target not in eps:
            raise ContainerError(f"cannot link {name} to {target}: {target} is not running (no network endpoint)")
        link_pairs.append((target, alias or target))
    wanted_nets = list(networks) or [NetworkAttachment(DEFAULT_NETWORK)]
    if len(wanted_nets) > 1 and any(a.network == DEFAULT_NETWORK for a in wanted_nets):
        raise ContainerError(f"{name}: the default bridge cannot be combined with user-defined networks")
    if len({a.network for a in wanted_nets}) != len(wanted_nets):
        raise ContainerError(f"{name}: a network is given twice")
    owns = netns_path is None
    netns = str(Path(paths.netns_dir) / cfg.netns_name(name)) if owns else str(netns_path)
    allocs, attachments = {}, []
    for i, want in enumerate(wanted_nets):
        netcfg = _net(root, cfg, want, f"eth{i}" if want.network != DEFAULT_NETWORK else cfg.inner_ifname)
        key = None if want.network == DEFAULT_NETWORK else want.network
        allocs[key] = ipam.load(root, netcfg.subnet, key, gateway_ip=netcfg.gateway_ip, ip_range=netcfg.ip_range)
        address = allocs[key].allocate(name, want.ipv4_address)
        veth = cfg.veth_name(name) if key is None else cfg.veth_name(f"{name}@{want.network}")
        attachments.append(Attachment(want.network, str(address), netcfg.network.prefixlen, str(netcfg.gateway),
                                      veth, netcfg.inner_ifname, tuple(want.aliases)))
    primary = attachments[0]
    wanted = [m for p in ports for m in (parse_port(p) if isinstance(p, str) else [p])]
    facts = read_facts(runner, cfg, proc=paths.proc, netns_dir=paths.netns_dir)
    listeners = host_listeners(paths.proc)
    if standby_for is not None and standby_for not in eps:
        raise ContainerError(f"cannot stand {name} by for {standby_for}: {standby_for} has no network endpoint")
    # a replica publishes its group's ports: the host ports the first replica got, no conflict with them;
    # a replacement standing by takes its predecessor's ports over later: no clash with them either
    peers = [e for e in eps.values() if group and e.group == group]
    published = {n: e.ports for n, e in eps.items() if not (group and e.group == group) and n != standby_for}
    if peers:
        wanted = list(peers[0].ports)
    wanted = assign_host_ports(name, wanted, published, listeners, ephemeral_range(paths.proc))
    check_conflicts(name, wanted, published, listeners, facts.local_addresses)
    dns = dns or ((), (), ())
    ep = Endpoint(
        name=name, address=primary.address, prefixlen=primary.prefixlen, gateway=primary.gateway, veth=primary.veth,
        netns_path=netns, owns_netns=owns, hostname=hostname or name, ports=tuple(wanted),
        exposed=tuple(sorted({(int(p), str(proto)) for p, proto in exposed}
                             | {(m.container_port, m.proto) for m in wanted})),
        links=tuple(link_pairs), files_dir=str(_files_dir(root, name)),
        extra=tuple(attachments) if primary.network != DEFAULT_NETWORK else (),
        extra_hosts=tuple((h, primary.gateway if ip == HOST_GATEWAY else ip) for h, ip in extra_hosts),
        dns=(tuple(dns[0]), tuple(dns[1]), tuple(dns[2])), group=group, metadata=metadata,
        standby=standby_for is not None)
    env: dict[str, str] = {}
    for t in names.link_targets(eps, ep):
        env.update(hosts.link_env(name, replace(t, env=(link_envs or {}).get(t.name))))
    ep = replace(ep, env=env)
    actions, _ = _plan_all(root, cfg, ep, runner, paths)
    return ep, actions, eps, allocs


def plan(root, cfg: NetworkConfig, name: str, *, runner, netns_path=None, hostname=None,
         ports: Sequence[str | PortMapping] = (), exposed: Iterable[tuple[int, str]] = (),
         links: Iterable[tuple[str, str | None]] = (), paths: SystemPaths = SystemPaths(),
         networks: Sequence[NetworkAttachment] = (), metadata: bool = False) -> list[Action]:
    """What connect() would do (for --dry-run); reads facts only."""
    with ipam.lock(root):
        _, actions, _, _ = _prepare(root, cfg, name, runner, netns_path=netns_path, hostname=hostname, ports=ports,
                                    exposed=exposed, links=links, paths=paths, networks=networks, metadata=metadata)
    return actions


def _resolv(name: str, paths: SystemPaths) -> str:
    resolv, note = hosts.render_resolv_conf(*hosts.read_host_resolv(paths.resolv_conf, paths.resolved_upstream))
    if note:
        log.warning("%s: %s", name, note)
    return resolv


def _save(root, ep: Endpoint) -> None:
    # root's alone: it holds the link env vars (linked containers' environments)
    atomic_write(_endpoints_dir(root) / f"{ep.name}.json", json.dumps(ep.to_json(), indent=2) + "\n", mode=0o600)


def connect(root, cfg: NetworkConfig, name: str, *, runner, netns_path: str | None = None,
            hostname: str | None = None, ports: Sequence[str | PortMapping] = (),
            exposed: Iterable[tuple[int, str]] = (), links: Iterable[tuple[str, str | None]] = (),
            link_envs: Mapping[str, Mapping[str, str]] | None = None,
            paths: SystemPaths = SystemPaths(), networks: Sequence[NetworkAttachment] = (),
            extra_hosts: Iterable[tuple[str, str]] = (), dns=None, group: str | None = None,
            metadata: bool = False, standby_for: str | None = None) -> Endpoint:
    """Attaches `name` (in a new named netns, or the one at `netns_path`) to its `networks` (user-
    defined ones, which must exist; none: the default bridge), with published `ports` ("-p"
    strings or PortMappings), `links` ((container, alias) pairs), `extra_hosts` ((name, address)
    lines; address "host-gateway": the primary network's gateway) and `dns` ((servers, search,
    options) for its resolv.conf). `link_envs` maps a linked container to its environment, for the
    <ALIAS>_ENV_* variables. `group`: a replica of a service whose `ports` its replicas share
    (set_balance() points them at the ready ones; a new replica is not among them until then).
    `metadata`: it may reach the instance metadata service (169.254.169.254), which others may not.
    `standby_for`: `name` replaces that container (a start-first switch): its ports may be the
    same, and are published only when takeover() moves them.
    Returns the endpoint; `.env` holds the link env vars, `.files_dir` the hosts/resolv.conf."""
    with ipam.lock(root):
        ep, actions, eps, allocs = _prepare(
            root, cfg, name, runner, netns_path=netns_path, hostname=hostname, ports=ports, exposed=exposed,
            links=links, paths=paths, networks=networks, extra_hosts=extra_hosts, dns=dns, link_envs=link_envs,
            group=group, metadata=metadata, standby_for=standby_for)
        try:
            apply(actions, runner)
            names.write_files(ep, {**eps, name: ep}, _resolv(name, paths))
            _save(root, ep)
            for key, a in allocs.items():
                ipam.save(root, a, key)
        except BaseException:
            _rollback(root, cfg, ep, runner, paths, eps)
            raise
        eps[name] = ep
        names.refresh(eps, name, [a.network for a in ep.attachments])
    return ep


def reconnect(root, cfg: NetworkConfig, name: str, *, runner, netns_path: str | None = None,
              paths: SystemPaths = SystemPaths()) -> Endpoint:
    """Brings a recorded endpoint back as it was (same addresses, ports, links): after a reboot
    (bridges, tables, netns and veths are gone; a named netns is recreated), or when a restarted
    container has a new network namespace (`netns_path`; the old veths are removed first)."""
    _check_name(name)
    with ipam.lock(root):
        eps = endpoints(root)
        ep = eps.get(name)
        if ep is None:
            raise ContainerError(f"container {name} has no network endpoint to reconnect")
        actions: list[Action] = []
        if netns_path is not None and str(netns_path) != ep.netns_path:
            facts = read_facts(runner, cfg, proc=paths.proc, netns_dir=paths.netns_dir)
            for att in ep.attachments:
                if att.veth in facts.links:
                    actions.append(DeleteLink(att.veth))
            if ep.owns_netns and ep.netns_name in facts.netns:
                actions.append(DeleteNetns(ep.netns_name))
            apply(actions, runner)
            ep = replace(ep, netns_path=str(netns_path), owns_netns=False)
        primary = _net(root, cfg, ep.attachments[0])
        facts = read_facts(runner, primary, proc=paths.proc, netns_dir=paths.netns_dir)
        others = {n: e.ports for n, e in eps.items() if n != name and not (ep.group and e.group == ep.group)}
        own_rules = {m for _, m in facts.rules.get(name, ())} | {m for _, m in facts.balanced.get(ep.group, ())}
        # our own DNAT rules are no listeners; after a reboot they are gone and sockets count
        check_conflicts(name, [m for m in ep.ports if str(m) not in own_rules], others, host_listeners(paths.proc),
                        facts.local_addresses)
        plan_actions, _ = _plan_all(root, cfg, ep, runner, paths)
        apply(plan_actions, runner)
        eps[name] = ep
        names.write_files(ep, eps, _resolv(name, paths))
        _save(root, ep)
        names.refresh(eps, name, [a.network for a in ep.attachments])
    return ep


def takeover(root, cfg: NetworkConfig, name: str, old: str, *, runner,
             paths: SystemPaths = SystemPaths()) -> Endpoint | None:
    """`name`, standing by (connect(standby_for=old)), takes `old`'s published ports over in one
    nftables transaction: each port's chain repointed in place, so every new connection from
    then on reaches `name`, and none is refused meanwhile. `old` keeps its address and its
    established connections (their conntrack entries still name it). Returns `old`'s endpoint as
    it was (None if it had none). A replica (`group`) has no ports of its own to take: its
    group's balance (set_balance) moves connections between replicas."""
    _check_name(name)
    with ipam.lock(root):
        eps = endpoints(root)
        new, was = eps.get(name), eps.get(old)
        if new is None:
            raise ContainerError(f"container {name} has no network endpoint to take ports over with")
        new = replace(new, standby=False)
        if not new.group:
            netcfg = _net(root, cfg, new.attachments[0])   # ports are published on the primary network
            facts = read_facts(runner, netcfg, proc=paths.proc, netns_dir=paths.netns_dir)
            apply(plan_takeover(facts, netcfg, _view(new, new.attachments[0], netcfg, True), old), runner)
        _save(root, new)
        if was is not None and not was.group:
            _save(root, replace(was, ports=()))
    return was


def _disconnect_actions(root, cfg, ep: Endpoint | None, name: str, eps, runner, paths) -> list[Action]:
    if ep is None:   # a half-made endpoint: what the default network's names say
        facts = read_facts(runner, cfg, proc=paths.proc, netns_dir=paths.netns_dir)
        return plan_disconnect(facts, cfg, name, netns_name=cfg.netns_name(name),
                               last=not any(e.on(DEFAULT_NETWORK) for e in eps.values()))
    actions: list[Action] = []
    atts = ep.attachments
    for i, att in reversed(list(enumerate(atts))):   # the primary (and the netns) last
        net = registry.get(root, cfg, att.network)
        netcfg = net.config if net is not None else cfg
        facts = read_facts(runner, netcfg, proc=paths.proc, netns_dir=paths.netns_dir)
        last = att.network == DEFAULT_NETWORK and not any(e.on(DEFAULT_NETWORK) for e in eps.values())
        actions += plan_disconnect(facts, netcfg, name, netns_name=ep.netns_name if i == 0 else None, last=last,
                                   veth=att.veth, address=att.address)
    return actions


def _rollback(root, cfg, ep: Endpoint, runner, paths: SystemPaths, eps) -> None:
    try:
        apply(_disconnect_actions(root, cfg, ep, ep.name, eps, runner, paths), runner, best_effort=True)
    except CommandError as exc:  # keep the original error; say the cleanup had trouble too
        log.warning("network rollback for %s incomplete: %s", ep.name, exc)
    shutil.rmtree(_files_dir(root, ep.name), ignore_errors=True)
    (_endpoints_dir(root) / f"{ep.name}.json").unlink(missing_ok=True)


def disconnect(root, cfg: NetworkConfig, name: str, *, runner, keep_address: bool = False,
               paths: SystemPaths = SystemPaths()) -> list[Action]:
    """Removes the container's veths, netns (if we made it), port rules, files and record; its
    addresses too unless `keep_address` (a restart: the linkers' env vars stay right). The default
    bridge and its table go with its last endpoint (user-defined networks stay until removed).
    The hosts files that named it are rewritten. Returns what was done."""
    _check_name(name)
    with ipam.lock(root):
        eps = endpoints(root)
        ep = eps.pop(name, None)
        actions = _disconnect_actions(root, cfg, ep, name, eps, runner, paths)
        if ep is not None and ep.group:   # out of its group's balance first: no connection goes to it
            actions = _rebalance(root, cfg, ep.group, runner, paths, base=ep, eps=eps, drop=ep.address) + actions
        apply(actions, runner)
        shutil.rmtree(_files_dir(root, name), ignore_errors=True)
        (_endpoints_dir(root) / f"{name}.json").unlink(missing_ok=True)
        nets = [a.network for a in ep.attachments] if ep is not None else [DEFAULT_NETWORK]
        if not keep_address:
            for n in nets:
                net = registry.get(root, cfg, n)
                if net is None:
                    continue
                key = None if n == DEFAULT_NETWORK else n
                with ipam.transaction_for(root, net.config, key) as allocs:
                    allocs.release(name)
        names.refresh(eps, name, nets)
    return actions


def _rebalance(root, cfg, group: str, runner, paths: SystemPaths, *, base: Endpoint, eps: dict[str, Endpoint],
               members: Iterable[str] | None = None, drop: str | None = None) -> list[Action]:
    """The action that points `group`'s ports (`base`'s: every replica has the same) at `members`
    (names), or, without them, at what its maps hold now less the address `drop`."""
    netcfg = _net(root, cfg, base.attachments[0])
    facts = read_facts(runner, netcfg, proc=paths.proc, netns_dir=paths.netns_dir)
    if members is not None:
        addrs = [eps[m].address for m in sorted(members) if m in eps and eps[m].group == group]
    else:
        current = facts.lb_maps.get(map_name(group, str(base.ports[0])), ()) if base.ports else ()
        addrs = [a for a in current if a != drop]
    action = plan_balance(netcfg.table, group, base.ports, addrs, facts.balanced, facts.lb_maps)
    return [action] if action is not None else []


def set_balance(root, cfg: NetworkConfig, group: str, members: Iterable[str], *, runner,
            paths: SystemPaths = SystemPaths()) -> list[Action]:
    """Points the published ports of replica group `group` at `members` (the names of its replicas
    that are ready: running, and healthy when they have a healthcheck), in one nft transaction.
    Returns what was done (nothing when the table already says so)."""
    with ipam.lock(root):
        eps = endpoints(root)
        grp = sorted((e for e in eps.values() if e.group == group), key=lambda e: e.name)
        if not grp:
            return []
        actions = _rebalance(root, cfg, group, runner, paths, base=grp[0], eps=eps, members=list(members))
        apply(actions, runner)
    return actions


def relink(root: str | os.PathLike, target: str) -> list[str]:
    """Rewrites (in place) the hosts files that name `target` with its current addresses; returns
    whose. connect() and disconnect() call it for every endpoint."""
    with ipam.lock(root):
        eps = endpoints(root)
        ep = eps.get(target)
        return names.refresh(eps, target, [a.network for a in ep.attachments] if ep else [])


def remove_network(root, cfg: NetworkConfig, name: str, *, runner, paths: SystemPaths = SystemPaths()) -> bool:
    """Removes user-defined network `name` (its table, bridge, record and allocations); refused while
    a container is on it. False when there is no such network."""
    with ipam.lock(root):
        net = registry.get(root, cfg, name)
        if net is None or name == DEFAULT_NETWORK:
            return False
        users = registry.in_use(endpoints(root), name)
        if users:
            raise ContainerError(f"network {name} is in use by {', '.join(users)}")
        facts = read_facts(runner, net.config, proc=paths.proc, netns_dir=paths.netns_dir)
        apply(plan_remove_network(facts, net.config), runner)
        registry.forget(root, name)
    return True


def teardown(root, cfg: NetworkConfig, *, runner, paths: SystemPaths = SystemPaths()) -> None:
    """Disconnects every endpoint (releasing addresses); the default bridge and table go with the
    last, and every user-defined network is removed."""
    for name in list(endpoints(root)):
        disconnect(root, cfg, name, runner=runner, paths=paths)
    for name in registry.all_networks(root, cfg):
        remove_network(root, cfg, name, runner=runner, paths=paths)
    with ipam.lock(root):
        facts = read_facts(runner, cfg, proc=paths.proc, netns_dir=paths.netns_dir)
        apply(plan_disconnect(facts, cfg, "-", netns_name=None, last=True), runner)
