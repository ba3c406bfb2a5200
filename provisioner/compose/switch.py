"""How `up` replaces a service's container when its config or digest changed.

start-first (compose's `deploy.update_config.order: start-first`): the new container comes up
beside the old one — its own address, the same volumes, its published ports held back (standing
by) — and once it is healthy the ports switch over to it in one nftables transaction; the old
endpoint's NAT entries that are not established are flushed, the established ones drain for
`stop_grace_period`, then the old container goes. A new container that never becomes healthy is
removed and the old one serves on, untouched.

stop-first: the old container goes, then the new one comes (an outage as long as its start).

The default is start-first for a service with a healthcheck (there is something to wait for
before the switch) and stop-first otherwise, and for a service with a writable named volume (a
database's files are not for two processes at once). `update_config.order` chooses explicitly;
a fixed `container_name`, the host's network or several replicas can only be stop-first (the
name, the ports or the balancing are the old container's until it goes).
"""
from __future__ import annotations

import re

from ..stack.model import ServiceSpec

START_FIRST = "start-first"
STOP_FIRST = "stop-first"
DEFAULT_GRACE = 10.0       # stop_grace_period's default, as compose's


def update_order(spec: ServiceSpec, rollback: bool = False) -> tuple[str, str]:
    """(order, why) for recreating `spec`'s container (`rollback`: going back to a release, where
    `rollback_config` speaks first)."""
    configs = (spec.rollback_config, spec.update_config) if rollback else (spec.update_config,)
    said = next((c.order for c in configs if c is not None and c.order is not None), None)
    if spec.container_name:
        return STOP_FIRST, f"its container_name {spec.container_name!r} is the old container's until it goes"
    if spec.network_mode == "host":
        return STOP_FIRST, "on the host's network its ports are the old container's until it goes"
    if spec.replicas > 1:
        return STOP_FIRST, "a replica at a time, the others serving"
    if said is not None:
        return said, f"deploy.{'rollback' if rollback and spec.rollback_config else 'update'}_config.order"
    if spec.healthcheck is None:
        return STOP_FIRST, "no healthcheck tells when a new container is ready"
    rw = [v.source for v in spec.volumes if v.kind == "volume" and not v.readonly]
    if rw:
        return STOP_FIRST, f"named volume {rw[0]!r} is not for two containers at once"
    return START_FIRST, "it has a healthcheck"


def grace(spec: ServiceSpec) -> float:
    return spec.stop_grace_period if spec.stop_grace_period is not None else DEFAULT_GRACE


_GEN = re.compile(r"^(?P<base>.+)\.(?P<gen>[0-9]+)$")


def next_name(base: str, current: str) -> str:
    """The new container's name beside `current`: <base>.2, <base>.3, … (back to <base> never:
    a name is not reused while the container that had it may still drain)."""
    m = _GEN.match(current)
    gen = int(m["gen"]) + 1 if m and m["base"] == base else 2
    return f"{base}.{gen}"
