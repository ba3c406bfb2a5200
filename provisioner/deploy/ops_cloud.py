"""The cloud half of snapshots: snapshot a host's EBS/PD volume with the stack's tags, list a
stack's snapshots, and restore one as a new volume carrying the tags of the volume it was taken
from, so the next `launch`/`deploy` reattaches it like any kept volume (launch.py finds volumes
by their stack/host/volume tags).
"""
from __future__ import annotations

from typing import Callable

from ..clouds.base import TAG_HOST, TAG_STACK, TAG_VOLUME, Resource
from ..errors import CloudError, ConfigError
from .inventory import HostRecord
from .ops import VolumeTarget

SNAPSHOT_TAGS = ("provisioner:snapshot", "provisioner-snapshot")   # the drivers' snapshot-name tag


def volume_resource(driver, rec: HostRecord, vt: VolumeTarget) -> Resource:
    for r in driver.find(rec.stack):
        if r.kind == "volume" and r.id == vt.cloud_id:
            return r
    raise CloudError(f"{rec.cloud}: volume {vt.name} of {rec.name} ({vt.cloud_id}) not found among stack "
                     f"{rec.stack}'s resources")


def snapshot_tags(cloud: str, vol: Resource) -> dict[str, str]:
    """The volume's own tags (stack, host, volume name, keep, user tags): what a restore needs."""
    tags = dict(vol.extra.get("tags") or {})
    if not tags.get(TAG_STACK[cloud]) or not tags.get(TAG_VOLUME[cloud]):
        raise CloudError(f"{cloud}: volume {vol.id} lacks the stack/volume tags; not a volume of ours")
    return tags


def cloud_snapshotter(driver, rec: HostRecord, vt: VolumeTarget, name: str) -> Callable[[], Resource]:
    """Resolve the volume now (before any freeze); the returned call only asks for the snapshot."""
    vol = volume_resource(driver, rec, vt)
    tags = snapshot_tags(rec.cloud, vol)
    return lambda: driver.snapshot_volume(vol.id, name, tags, zone=vol.extra.get("zone"))


def list_snapshots(driver, stack: str | None) -> list[Resource]:
    return driver.snapshots(stack)


def delete_snapshot(driver, snapshot_id: str) -> Resource:
    """Delete one of our snapshots (one without our tags is refused: not ours to delete)."""
    snap = _find_snapshot(driver, snapshot_id, None)
    driver.delete_snapshot(snap.id)
    return snap


def _find_snapshot(driver, snapshot_id: str, stack: str | None) -> Resource:
    for s in driver.snapshots(stack):
        if s.id == snapshot_id:
            return s
    raise CloudError(f"{driver.name}: no snapshot {snapshot_id} of {'stack ' + stack if stack else 'any stack'} "
                     f"(see 'provision snapshot list')")


def restore(driver, snapshot_id: str, *, stack: str | None = None, zone: str | None = None,
            replace: bool = False, status: Callable[[str], None] = lambda m: None) -> tuple[Resource, list[Resource]]:
    """Create a volume from `snapshot_id` tagged as the volume it came from. A volume still holding
    those tags is in the way: refused while attached (destroy the host first), deleted with
    `replace` once the restored volume exists. Returns (restored volume, removed volumes)."""
    cloud = driver.name
    snap = _find_snapshot(driver, snapshot_id, stack)
    tags = {k: v for k, v in snap.extra["tags"].items() if k not in SNAPSHOT_TAGS}
    stack_name, host, vname = tags.get(TAG_STACK[cloud]), tags.get(TAG_HOST[cloud]), tags.get(TAG_VOLUME[cloud])
    if not (stack_name and host and vname):
        raise CloudError(f"{cloud}: snapshot {snapshot_id} lacks stack/host/volume tags; restore it by hand")
    old = [r for r in driver.find(stack_name) if r.kind == "volume" and r.host == host
           and r.extra.get("tags", {}).get(TAG_VOLUME[cloud]) == vname]
    busy = [r for r in old if r.state == "in-use" or r.extra.get("attached_to")]
    if busy:
        raise CloudError(f"{cloud}: volume {vname} of {stack_name}/{host} ({busy[0].id}) is attached to a running "
                         f"host; destroy the host first: provision destroy {stack_name} --cloud {cloud}")
    if old and not replace:
        raise CloudError(f"{cloud}: volume {vname} of {stack_name}/{host} still exists ({old[0].id}); "
                         "add --replace to delete it once the restored volume exists")
    zone = zone or snap.extra.get("zone") or (old[0].extra.get("zone") if old else None)
    if not zone:
        raise ConfigError(f"{cloud}: which zone should the restored volume live in? pass --zone "
                          "(the host's zone: a volume attaches only within its zone)")
    status(f"creating volume {vname} for {stack_name}/{host} from {snapshot_id} in {zone}")
    new = driver.volume_from_snapshot(snap, zone, tags)
    for r in old:
        status(f"deleting the replaced volume {r.id}")
        driver.delete(r)
    return new, old
