"""Where a container's network comes from, as its record says (`run`'s --network):

  networks (or none given)  an endpoint of its own (network/): a netns, a veth per network, its
                            /etc/hosts, resolv.conf and hostname kept by the network manager
  host                      the host's network namespace; the host's /etc/hosts and resolv.conf,
                            read-only; the host's name
  none                      a network namespace of its own with only loopback (the runtime makes it);
                            hosts and resolv.conf of its own with no servers
  container:NAME            NAME's namespace and NAME's hosts, resolv.conf and hostname (NAME must
                            be running); compose's network_mode: service:X is this

`placement()` is read when the bundle is made; `connect()` makes the endpoint the first mode needs.
"""
from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from .. import network
from ..errors import ContainerError
from ..runspec.netopts import NetworkAttachment
from . import bundle
from .container import ContainerRecord


@dataclass(frozen=True)
class Placement:
    netns_path: str | None          # None with host_network: the host's; else None: a new empty one
    mounts: tuple[dict, ...]        # /etc/hosts, resolv.conf, hostname
    hostname: str
    host_network: bool = False
    env: dict | None = None         # link env vars


def mode_of(rec: ContainerRecord) -> str | None:
    return rec.config.get("network_mode")


def _ro(dest: str, src: str) -> dict:
    return bundle.Mount(dest, src, readonly=True).oci()


def _own_files(d: Path, hostname: str) -> tuple[dict, ...]:
    """network_mode none: a hosts file with loopback only (no address to name), no name servers."""
    d.mkdir(parents=True, exist_ok=True)
    network.hosts.write_file(d / "hosts", network.hosts.render_hosts(hostname, ""))
    network.hosts.write_file(d / "resolv.conf", "")
    network.hosts.write_file(d / "hostname", hostname + "\n")
    return tuple({"destination": f"/etc/{f}", "type": "bind", "source": str(d / f), "options": ["rbind", "rprivate"]}
                 for f in ("hosts", "resolv.conf", "hostname"))


def placement(mgr, rec: ContainerRecord, fallback_hostname: str) -> Placement:
    mode = mode_of(rec)
    hostname = rec.config["options"].get("hostname") or fallback_hostname
    if mode == "host":
        return Placement(None, (_ro("/etc/hosts", "/etc/hosts"), _ro("/etc/resolv.conf", "/etc/resolv.conf")),
                         rec.config["options"].get("hostname") or socket.gethostname(), host_network=True)
    if mode == "none":
        return Placement(None, _own_files(mgr._dir(rec) / "netfiles", hostname), hostname)
    if mode and mode.startswith("container:"):
        target = mode.split(":", 1)[1]
        other = mgr.records.find(target)
        ep = network.endpoint(mgr.root, other.name) if other is not None else None
        if other is None or ep is None or not mgr.is_running(other):
            raise ContainerError(f"cannot join {target}'s network: no running container with that name")
        return Placement(ep.netns_path, tuple(ep.oci_mounts()), ep.hostname)
    ep = network.endpoint(mgr.root, rec.name)
    if ep is None:
        raise ContainerError(f"container {rec.name} has no network endpoint")
    return Placement(ep.netns_path, tuple(ep.oci_mounts()), ep.hostname, env=dict(ep.env))


def needs_endpoint(rec: ContainerRecord) -> bool:
    return mode_of(rec) is None


def connect(mgr, rec: ContainerRecord, exposed) -> network.Endpoint:
    cfg = rec.config
    return network.connect(
        mgr.root, mgr.net, rec.name, runner=mgr.runner, paths=mgr.net_paths,
        hostname=cfg["options"].get("hostname") or rec.id[:12], ports=list(cfg["ports"]), exposed=exposed,
        links=[tuple(x) for x in cfg["links"]],
        networks=[NetworkAttachment.from_json(a) for a in cfg.get("networks", ())],
        extra_hosts=[tuple(h) for h in cfg.get("extra_hosts", ())],
        dns=tuple(tuple(x) for x in cfg["dns"]) if cfg.get("dns") else None, group=cfg.get("balance"),
        metadata=bool(cfg.get("cloud_metadata")), standby_for=_standing_by(mgr, rec))


def _standing_by(mgr, rec: ContainerRecord) -> str | None:
    """The container whose ports `rec` is to take over (run with `replaces`), while that one still has them."""
    old = rec.config.get("replaces")
    return old if old and network.endpoint(mgr.root, old) is not None else None
