"""A connected (running) container joins or leaves one more user-defined network: Docker's
`network connect` / `network disconnect` while it runs.

join() adds an attachment to its endpoint: an address from the network's allocator, a veth on the
network's bridge (made with its table if it is the network's first member) moved into the
container's namespace as the next ethN, no default route and no published ports (the first
network keeps those); leave() deletes that veth and releases the address. Either way the
container's own /etc/hosts and those of everyone sharing the network are rewritten in place.
The container's first network (its default route and published ports) stays: leave() refuses it,
and a container on the default bridge cannot join a user-defined network (the default bridge
resolves no names and is not combined with them, as at connect()).
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..errors import ContainerError
from ..runspec.netopts import NetworkAttachment
from . import hosts, ipam, names, registry
from .apply import apply
from .facts import read_facts
from .manage import SystemPaths, _net, _save, _view, endpoints
from .model import DEFAULT_NETWORK, Attachment, Endpoint, NetworkConfig
from .plan import check_subnet, plan_connect, plan_disconnect


def _rewrite_hosts(ep: Endpoint, eps: dict[str, Endpoint]) -> None:
    if Path(ep.files_dir).is_dir():
        hosts.write_file(Path(ep.files_dir) / "hosts", names.render(eps, ep))


def _next_ifname(ep: Endpoint) -> str:
    used = {a.ifname for a in ep.attachments}
    return next(f"eth{i}" for i in range(len(used) + 1) if f"eth{i}" not in used)


def join(root, cfg: NetworkConfig, name: str, want: NetworkAttachment, *, runner,
         paths: SystemPaths = SystemPaths()) -> Attachment:
    """Puts connected container `name` on user-defined network `want.network` (which must exist),
    with `want.aliases` and, if given, `want.ipv4_address`. Returns the new attachment."""
    with ipam.lock(root):
        eps = endpoints(root)
        ep = eps.get(name)
        if ep is None:
            raise ContainerError(f"container {name} has no network endpoint")
        if want.network == DEFAULT_NETWORK or ep.on(DEFAULT_NETWORK) is not None:
            raise ContainerError(f"{name}: the default bridge cannot be combined with user-defined networks")
        if ep.on(want.network) is not None:
            raise ContainerError(f"container {name} is already on network {want.network}")
        netcfg = _net(root, cfg, want, _next_ifname(ep))
        allocs = ipam.load(root, netcfg.subnet, want.network, gateway_ip=netcfg.gateway_ip, ip_range=netcfg.ip_range)
        address = allocs.allocate(name, want.ipv4_address)
        att = Attachment(want.network, str(address), netcfg.network.prefixlen, str(netcfg.gateway),
                         cfg.veth_name(f"{name}@{want.network}"), netcfg.inner_ifname, tuple(want.aliases))
        new = replace(ep, extra=ep.attachments + (att,))
        facts = read_facts(runner, netcfg, proc=paths.proc, netns_dir=paths.netns_dir)
        check_subnet(facts, netcfg)
        actions = plan_connect(facts, netcfg, _view(new, att, netcfg, False))
        apply(actions, runner)
        try:
            ipam.save(root, allocs, want.network)
            eps[name] = new
            _rewrite_hosts(new, eps)
            _save(root, new)
        except BaseException:
            apply(plan_disconnect(read_facts(runner, netcfg, proc=paths.proc, netns_dir=paths.netns_dir), netcfg,
                                  name, netns_name=None, last=False, veth=att.veth, address=att.address),
                  runner, best_effort=True)
            raise
        names.refresh(eps, name, [want.network])
    return att


def leave(root, cfg: NetworkConfig, name: str, network: str, *, runner, paths: SystemPaths = SystemPaths()) -> None:
    """Takes connected container `name` off user-defined network `network` (not its first one)."""
    with ipam.lock(root):
        eps = endpoints(root)
        ep = eps.get(name)
        if ep is None:
            raise ContainerError(f"container {name} has no network endpoint")
        att = ep.on(network)
        if att is None:
            raise ContainerError(f"container {name} is not connected to network {network}")
        if att == ep.attachments[0]:
            raise ContainerError(f"{name}: {network} is its first network (its default route and published ports); "
                                 "stop the container to take it off it")
        net = registry.require(root, cfg, network)
        facts = read_facts(runner, net.config, proc=paths.proc, netns_dir=paths.netns_dir)
        apply(plan_disconnect(facts, net.config, name, netns_name=None, last=False, veth=att.veth,
                              address=att.address), runner)
        new = replace(ep, extra=tuple(a for a in ep.attachments if a != att))
        _save(root, new)
        eps[name] = new
        with ipam.transaction_for(root, net.config, network) as allocs:
            allocs.release(name)
        _rewrite_hosts(new, eps)
        names.refresh(eps, name, [network])
