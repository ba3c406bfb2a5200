"""Apply a LaunchPlan through a CloudDriver; find and destroy a stack's resources by tag.

A failed launch removes what it created (newest first) before re-raising; volumes kept from an
earlier launch (`keep: true`) are reattached, never created twice and never removed by a rollback.
An instance that does not reach "running" in time is replaced once, then reported.
One host can be replaced on its own: `destroy(hosts=…)` removes only its resources, and
`launch(alongside=True)` launches it next to the stack's running hosts, reusing the key pair.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable

from ..errors import CloudError
from .base import TAG_KEEP, TAG_VOLUME, CloudDriver, HostPlan, LaunchPlan, Resource
from .console import HostKeys, parse_host_keys
from .retry import poll

log = logging.getLogger(__name__)


@dataclass
class Timeouts:
    running: float = 600.0
    host_keys: float = 300.0
    deleted: float = 600.0
    interval: float = 5.0


@dataclass
class HostResult:
    host: str
    instance: Resource
    volumes: list[Resource]
    firewall: Resource
    ssh_cidr: str
    ssh_cidr_source: str
    host_keys: HostKeys | None
    replaced: bool = False
    ready_seconds: float | None = None   # from the start of the launch to host keys on the console

    def to_json(self):
        return {"host": self.host, "instance": self.instance, "volumes": self.volumes, "firewall": self.firewall,
                "ssh_cidr": self.ssh_cidr, "ssh_cidr_source": self.ssh_cidr_source,
                "host_keys": self.host_keys, "replaced": self.replaced, "ready_seconds": self.ready_seconds}


@dataclass
class LaunchResult:
    stack: str
    cloud: str
    key: Resource | None
    hosts: list[HostResult] = field(default_factory=list)

    def to_json(self):
        return {"stack": self.stack, "cloud": self.cloud, "key": self.key, "hosts": self.hosts}


def _wait_running(driver: CloudDriver, inst: Resource, t: Timeouts, sleep, clock) -> Resource | None:
    def check():
        cur = driver.instance_state(inst)
        if cur.state in ("terminated", "error", "stopped", "TERMINATED"):
            return cur  # a dead end: stop polling, caller sees the state
        return cur if cur.state == "running" else None
    cur = poll(check, timeout=t.running, interval=t.interval, sleep=sleep, clock=clock)
    return cur if cur is not None and cur.state == "running" else None


def _launch_host(driver: CloudDriver, plan: LaunchPlan, hp: HostPlan, key: Resource | None, created: list,
                 kept: dict, t: Timeouts, status: Callable[[str], None], sleep, clock) -> HostResult:
    fw = driver.create_firewall(hp)
    created.append(fw)
    names = ", ".join(fw.extra.get("names") or [fw.name])
    status(f"{hp.host}: firewall {names}: " + ", ".join(str(r) for r in hp.rules))
    replaced = False
    inst = driver.create_instance(hp, key, fw)
    created.append(inst)
    status(f"{hp.host}: instance {inst.id} launching")
    running = _wait_running(driver, inst, t, sleep, clock)
    if running is None:
        status(f"{hp.host}: instance {inst.id} did not reach running in {t.running:.0f}s; replacing it once")
        driver.delete(inst)
        created.remove(inst)
        inst = driver.create_instance(hp, key, fw)
        created.append(inst)
        replaced = True
        running = _wait_running(driver, inst, t, sleep, clock)
        if running is None:
            raise CloudError(f"{plan.cloud}: host {hp.host}: instance {inst.id} never reached 'running' "
                             f"(replaced once; waited {t.running:.0f}s each time)")
    inst = running
    volumes = []
    for vp in hp.volumes:
        vol = kept.get((hp.host, vp.name))
        if vol is not None:
            # a `keep: true` volume that outlived the last destroy: its data is the point, reattach it
            zone = vol.extra.get("zone")
            if zone and zone != inst.extra.get("zone"):
                raise CloudError(f"{plan.cloud}: host {hp.host}: kept volume {vp.name} ({vol.id}) is in {zone}, "
                                 f"the new instance in {inst.extra.get('zone')}; pin the host's zone to {zone}")
            verb = "reattached"
        else:
            vol = driver.create_volume(hp, vp, inst)
            created.append(vol)
            verb = "attached"
        driver.attach_volume(inst, vol, vp)
        volumes.append(vol)
        status(f"{hp.host}: volume {vp.name} ({vp.size_gb} GiB) {vol.id} {verb} as {vp.device}")
    return HostResult(hp.host, inst, volumes, fw, plan.ssh_cidr[hp.host], plan.ssh_cidr_source[hp.host], None,
                      replaced)


def _wait_host_keys(driver: CloudDriver, results: list[HostResult], t: Timeouts, status, sleep, clock,
                    started: float) -> None:
    """Poll every host's console together until each shows its SSH host keys (they boot in parallel)."""
    waiting = {r.host: r for r in results}

    def check():
        for name, r in list(waiting.items()):
            keys = parse_host_keys(driver.console_output(r.instance))
            if keys is not None:
                r.host_keys = keys
                r.ready_seconds = round(clock() - started, 1)
                status(f"{name}: booted; SSH host keys on the console after {r.ready_seconds:.0f}s")
                del waiting[name]
        return True if not waiting else None
    poll(check, timeout=t.host_keys, interval=t.interval, sleep=sleep, clock=clock)
    for name in waiting:
        status(f"{name}: no SSH host keys on the console after {t.host_keys:.0f}s; the SSH step must "
               "verify the host key another way")


def _in_the_way(existing: list[Resource], plan: LaunchPlan, alongside: bool) -> list[Resource]:
    """What must not exist before launching the plan's hosts: kept volumes (keep: true, or a
    destroy --keep-volumes) may outlive a destroy, anything else means the host is still up.
    `alongside`: the stack's other hosts run on, so their resources and the stack's key stay."""
    mine = {hp.host for hp in plan.hosts}
    return [r for r in existing if (r.kind != "volume" or r.state == "in-use")
            and not (alongside and (r.kind in ("key", "network") or (r.host is not None and r.host not in mine)))]


def launch(plan: LaunchPlan, driver: CloudDriver, *, timeouts: Timeouts | None = None,
           status: Callable[[str], None] = lambda m: None, sleep=time.sleep, clock=time.monotonic,
           alongside: bool = False) -> LaunchResult:
    """Launch the plan's hosts. `alongside=True` launches them next to the stack's other hosts,
    which keep running (a replaced host): the stack's key pair is reused, not imported again."""
    t = timeouts or Timeouts()
    driver.check(plan)  # unknown zone / type / image fail here, before anything exists
    existing = driver.find(plan.stack)
    blocking = _in_the_way(existing, plan, alongside)
    if blocking:
        whose = f" for host(s) {', '.join(sorted({r.host or '-' for r in blocking}))}" if alongside else ""
        raise CloudError(f"{plan.cloud}: stack {plan.stack!r} already has resources{whose}; "
                         f"run 'provision status {plan.stack}' or destroy it first")
    vol_tag = TAG_VOLUME[plan.cloud]
    kept = {(r.host, r.extra.get("tags", {}).get(vol_tag)): r for r in existing if r.kind == "volume"}
    created: list[Resource] = []
    try:
        prepare = getattr(driver, "prepare", None)   # stack-wide resources (GCE: the stack's network)
        if prepare is not None:
            created += prepare(plan, existing)
        key = next((r for r in existing if r.kind == "key"), None) if alongside else None
        if key is None:
            key = driver.import_key(plan)
            if key is not None:
                created.append(key)
        result = LaunchResult(plan.stack, plan.cloud, key)
        started = clock()
        for hp in plan.hosts:
            result.hosts.append(_launch_host(driver, plan, hp, key, created, kept, t, status, sleep, clock))
        _wait_host_keys(driver, result.hosts, t, status, sleep, clock, started)
        return result
    except BaseException as exc:
        status(f"launch failed ({exc}); removing the {len(created)} resource(s) it created")
        failures = _remove(driver, list(reversed(created)), t)
        if failures:
            status("could not remove: " + "; ".join(failures))
        raise


def _remove(driver: CloudDriver, resources: list[Resource], t: Timeouts) -> list[str]:
    """Delete instances first (and wait for them), then volumes, firewalls, keys, networks (what
    the others used). Returns failures."""
    order = {"instance": 0, "volume": 1, "firewall": 2, "key": 3, "network": 4}
    failures = []
    resources = sorted(resources, key=lambda r: order.get(r.kind, 9))
    instances = [r for r in resources if r.kind == "instance"]
    for r in instances:
        try:
            driver.delete(r)
        except CloudError as err:
            failures.append(f"{r.kind} {r.id}: {err}")
    for r in instances:
        try:
            if not driver.wait_deleted(r, t.deleted):
                failures.append(f"instance {r.id}: still not terminated after {t.deleted:.0f}s")
        except CloudError as err:
            failures.append(f"instance {r.id}: {err}")
    for r in resources:
        if r.kind == "instance":
            continue
        try:
            driver.delete(r)
        except CloudError as err:
            failures.append(f"{r.kind} {r.id}: {err}")
    return failures


def status_of(driver: CloudDriver, stack: str) -> list[Resource]:
    return sorted(driver.find(stack), key=lambda r: (r.host or "", r.kind, r.name))


def of_hosts(found: list[Resource], hosts: tuple[str, ...], cloud: str, stack: str) -> list[Resource]:
    """The resources of those hosts (all of them when `hosts` is empty); a host with none is an error."""
    if not hosts:
        return found
    unknown = sorted(set(hosts) - {r.host for r in found})
    if unknown:
        have = sorted({r.host for r in found if r.host})
        raise CloudError(f"{cloud}: stack {stack!r} has nothing for host(s) {', '.join(unknown)} "
                         f"(hosts with resources: {', '.join(have) or 'none'})")
    return [r for r in found if r.host in hosts]


def destroy(driver: CloudDriver, stack: str, *, keep_volumes: bool = False, timeouts: Timeouts | None = None,
            status: Callable[[str], None] = lambda m: None,
            hosts: tuple[str, ...] = ()) -> tuple[list[Resource], list[Resource]]:
    """Remove what the stack's tags name. Volumes tagged keep=true (or all, with keep_volumes) stay.
    `hosts`: only what belongs to those hosts (instance, firewall, volumes); the stack's key pair
    and its other hosts stay."""
    t = timeouts or Timeouts()
    found = of_hosts(driver.find(stack), hosts, driver.name, stack)
    keep_tag = TAG_KEEP[driver.name]
    kept = [r for r in found
            if r.kind == "volume" and (keep_volumes or r.extra.get("tags", {}).get(keep_tag) == "true")]
    doomed = [r for r in found if r not in kept]
    for r in doomed:
        status(f"removing {r.kind} {r.name} ({r.id})")
    failures = _remove(driver, doomed, t)
    if failures:
        raise CloudError(f"{driver.name}: destroy {stack}: could not remove: " + "; ".join(failures))
    return doomed, kept
