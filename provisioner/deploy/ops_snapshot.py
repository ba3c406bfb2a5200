"""`provision snapshot HOST VOLUME`: a btrfs snapshot on the host, then (on AWS/GCE) a cloud
snapshot of the volume's EBS/PD taken with the filesystem frozen.

Why this order and not "freeze, btrfs snapshot, thaw": creating a btrfs snapshot is a write, and
every write to a frozen filesystem blocks until it is thawed (tested: `btrfs subvolume snapshot`
on a frozen btrfs sits in D state until `fsfreeze -u`). A btrfs snapshot is atomic on its own (it
commits a transaction), so it needs no freeze. The block-level cloud snapshot is what the freeze
is for: with writes held, the EBS/PD copy holds a clean filesystem including the btrfs snapshot
just made. The freeze lasts only until the provider has fixed its point in time (AWS:
CreateSnapshot answered; GCE: the snapshot is UPLOADING or READY).

A frozen filesystem left behind would hang every writer on the host, so the thaw runs in
`finally`, and before freezing a watchdog is started on the host that thaws after
`freeze_limit` seconds even if this process or its SSH connection dies; it is killed after the
thaw.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Callable

from ..disks.snapshot import _check_name, default_name
from ..errors import CloudError, ConfigError, DiskError, ProvisionerError
from .inventory import HostRecord
from .ops import VolumeTarget
from ..remote.deliver import AGENT
from ..runner import Runner

FREEZE_LIMIT = 120.0
CLOUDS_WITH_SNAPSHOTS = ("aws", "gce")
# $1 mount, $2 seconds: a detached thaw for the day the operator's side never comes back.
WATCHDOG = ('setsid sh -c \'sleep "$2"; fsfreeze -u "$1" 2>/dev/null\' watchdog "$1" "$2" '
            '</dev/null >/dev/null 2>&1 & echo $!')


@dataclass(frozen=True)
class SnapshotPlan:
    host: str
    cloud: str
    volume: VolumeTarget
    name: str
    cloud_snapshot: bool
    freeze_limit: float = FREEZE_LIMIT

    def steps(self) -> list[str]:
        m = self.volume.mount
        out = [f"check that {m} is a mounted btrfs",
               f"btrfs snapshot (read-only) {m}/.snapshots/{self.name}"]
        if self.cloud_snapshot:
            out += [f"start a watchdog that thaws {m} after {self.freeze_limit:.0f}s",
                    f"fsfreeze -f {m}",
                    f"{self.cloud} snapshot of {self.volume.cloud_id} tagged with stack, host, volume, name",
                    f"fsfreeze -u {m} (always, even when the cloud snapshot fails)",
                    "stop the watchdog"]
        return out

    def to_json(self) -> dict:
        return {"host": self.host, "cloud": self.cloud, "volume": self.volume.name, "mount": self.volume.mount,
                "cloud_volume": self.volume.cloud_id, "name": self.name, "cloud_snapshot": self.cloud_snapshot,
                "steps": self.steps()}


@dataclass
class SnapshotResult:
    plan: SnapshotPlan
    btrfs_path: str = ""
    cloud: object = None            # the driver's Resource for the cloud snapshot
    frozen_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    thawed: bool = True             # False when the thaw could not be sent (the watchdog will do it)

    def to_json(self) -> dict:
        return {**self.plan.to_json(), "btrfs_path": self.btrfs_path,
                "cloud_snapshot_id": getattr(self.cloud, "id", None), "frozen_seconds": round(self.frozen_seconds, 3),
                "notes": self.notes}


def plan_snapshot(rec: HostRecord, vt: VolumeTarget, name: str | None = None, *, now: float | None = None,
                  freeze_limit: float = FREEZE_LIMIT) -> SnapshotPlan:
    """Pure: what `apply_snapshot` will do. Local-cloud hosts (and volumes the record has no cloud
    id for) get the btrfs snapshot only."""
    name = _check_name(name or default_name(now))
    if not 1 <= freeze_limit <= 3600:
        raise ConfigError(f"--freeze-limit must be between 1 and 3600 seconds, not {freeze_limit:g}")
    cloud = rec.cloud in CLOUDS_WITH_SNAPSHOTS
    if cloud and not vt.cloud_id:
        raise DiskError(f"{rec.name}: the host record has no {rec.cloud} volume id for {vt.name!r}; "
                        "deploy again to refresh it")
    return SnapshotPlan(rec.name, rec.cloud, vt, name, cloud, freeze_limit)


def _btrfs_snapshot(remote: Runner, plan: SnapshotPlan, agent: str) -> str:
    m = plan.volume.mount
    fs = remote.run(["findmnt", "-n", "-o", "FSTYPE", "--mountpoint", m], sudo=True, check=False)
    if fs.returncode != 0 or fs.stdout.strip() != "btrfs":
        what = f"a {fs.stdout.strip()} filesystem" if fs.returncode == 0 else "not a mountpoint"
        raise DiskError(f"{remote.where}: {m} (volume {plan.volume.name}) is {what}; expected a mounted btrfs")
    out = remote.run([agent, "--json", "host", "disks", "snapshot", "create", m, "--name", plan.name], sudo=True)
    try:
        return json.loads(out.stdout)["path"]
    except (ValueError, KeyError, TypeError):
        raise DiskError(f"{remote.where}: unexpected answer from the host agent's snapshot: "
                        f"{out.stdout.strip()[:200]!r}") from None


def _frozen(remote: Runner, plan: SnapshotPlan, take: Callable[[], object], result: SnapshotResult,
            clock: Callable[[], float]) -> object:
    m = plan.volume.mount
    dog = remote.run(["sh", "-c", WATCHDOG, "watchdog", m, str(int(plan.freeze_limit))], sudo=True)
    pid = dog.stdout.strip()
    try:
        remote.run(["fsfreeze", "-f", m], sudo=True)
        start = clock()
        try:
            return take()
        finally:
            try:
                thaw = remote.run(["fsfreeze", "-u", m], sudo=True, check=False)
            except ProvisionerError as exc:  # the connection died: the watchdog is the thaw now
                result.thawed = False
                result.notes.append(f"could not thaw {m} ({exc}); the host's watchdog thaws it within "
                                    f"{plan.freeze_limit:.0f}s")
            else:
                if thaw.returncode != 0:
                    result.notes.append(f"{m} was no longer frozen at thaw time (the {plan.freeze_limit:.0f}s "
                                        "watchdog thawed it?): the cloud snapshot is crash-consistent only")
            result.frozen_seconds = clock() - start
    finally:
        if pid.isdigit() and result.thawed:
            remote.run(["kill", pid], sudo=True, check=False)


def apply_snapshot(plan: SnapshotPlan, remote: Runner, cloud_snapshot: Callable[[], object] | None = None, *,
                   agent: str = AGENT, clock: Callable[[], float] = time.monotonic) -> SnapshotResult:
    """Run the plan. `cloud_snapshot` makes the provider's snapshot (called with the fs frozen)."""
    result = SnapshotResult(plan)
    result.btrfs_path = _btrfs_snapshot(remote, plan, agent)
    if not plan.cloud_snapshot:
        result.notes.append(f"{plan.cloud} cloud: btrfs snapshot only (no provider snapshot on this cloud)")
        return result
    if cloud_snapshot is None:
        raise ProvisionerError(f"{plan.host}: a {plan.cloud} snapshot needs a cloud driver")
    try:
        result.cloud = _frozen(remote, plan, cloud_snapshot, result, clock)
    except ProvisionerError as err:
        # one line that still says what exists: the btrfs snapshot was made and the fs is thawed
        thawed = "is thawed" if result.thawed else \
            f"could not be thawed from here: the host's watchdog thaws it within {plan.freeze_limit:.0f}s"
        raise CloudError(f"{plan.host}: {plan.cloud} snapshot of {plan.volume.cloud_id} failed: {err} "
                         f"(the btrfs snapshot {result.btrfs_path} was made; {plan.volume.mount} {thawed})",
                         cause=err) from err
    return result
