"""`provision snapshot`: the order of the host-side steps (btrfs snapshot, watchdog, freeze, cloud
snapshot, thaw even when the cloud snapshot fails), driven through a FakeRunner."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from provisioner.deploy.inventory import HostRecord
from provisioner.deploy.ops import VolumeTarget, volume_target
from provisioner.deploy.ops_snapshot import WATCHDOG, apply_snapshot, plan_snapshot
from provisioner.errors import CloudError, ConfigError, DiskError
from provisioner.stack import load_stack
from provisioner.testing import FakeRunner

FIXTURE = Path(__file__).parent.parent / "fixtures" / "clouds" / "stack.yml"
AGENT = "/usr/local/bin/provision"
MOUNT = "/srv/data"


def _rec(cloud="aws", volumes=None):
    return HostRecord(stack="shop", host="web", cloud=cloud, address="127.0.0.1", port=22, user="debian",
                      key_file="/k", fingerprints=("SHA256:x",), volumes={"data": "vol-1"} if volumes is None
                      else volumes, stack_file=str(FIXTURE))


def _runner(fstype="btrfs", freeze_rc=0, thaw_rc=0):
    r = FakeRunner()
    r.expect(["findmnt", "-n", "-o", "FSTYPE", "--mountpoint", MOUNT], stdout=fstype + "\n")
    r.expect([AGENT, "--json", "host", "disks", "snapshot", "create", MOUNT, "--name", "s1"],
             stdout=json.dumps({"name": "s1", "path": f"{MOUNT}/.snapshots/s1", "created": "x"}))
    r.expect(["sh", "-c", WATCHDOG, "watchdog", MOUNT, "120"], stdout="4242\n")
    r.expect(["fsfreeze", "-f", MOUNT], returncode=freeze_rc, stderr="fsfreeze: cannot freeze")
    r.expect(["fsfreeze", "-u", MOUNT], returncode=thaw_rc, stderr="Invalid argument")
    r.expect(["kill", "4242"])
    return r


def _plan(cloud="aws"):
    return plan_snapshot(_rec(cloud), VolumeTarget("data", MOUNT, "vol-1" if cloud != "local" else ""), "s1")


def test_btrfs_snapshot_then_freeze_cloud_snapshot_thaw_then_watchdog_stopped():
    r = _runner()
    seen = []

    def take():
        seen.append(list(r.calls))  # what had run when the provider was asked
        return type("Snap", (), {"id": "snap-1", "state": "pending"})()

    res = apply_snapshot(_plan(), r, take)
    assert [c[0] if c[0] != "fsfreeze" else " ".join(c[:2]) for c in r.calls] == [
        "findmnt", AGENT, "sh", "fsfreeze -f", "fsfreeze -u", "kill"]
    assert seen[0][-1] == ("fsfreeze", "-f", MOUNT)       # frozen while the cloud snapshot is taken
    assert res.btrfs_path == f"{MOUNT}/.snapshots/s1" and res.cloud.id == "snap-1" and res.notes == []


def test_cloud_snapshot_failure_still_thaws_and_stops_the_watchdog():
    r = _runner()

    def take():
        raise CloudError("aws: quota or capacity exceeded")

    with pytest.raises(CloudError) as exc:
        apply_snapshot(_plan(), r, take)
    assert r.calls[-2:] == [("fsfreeze", "-u", MOUNT), ("kill", "4242")]
    msg = str(exc.value)
    assert "quota" in msg and f"{MOUNT}/.snapshots/s1 was made" in msg and "thawed" in msg


def test_a_bug_in_the_cloud_call_still_thaws():
    r = _runner()
    with pytest.raises(ZeroDivisionError):
        apply_snapshot(_plan(), r, lambda: 1 / 0)
    assert ("fsfreeze", "-u", MOUNT) in r.calls and r.calls[-1] == ("kill", "4242")


def test_failed_freeze_takes_no_cloud_snapshot_and_stops_the_watchdog():
    r = _runner(freeze_rc=1)
    called = []
    with pytest.raises(CloudError, match="cannot freeze"):
        apply_snapshot(_plan(), r, lambda: called.append(1))
    assert called == [] and ("fsfreeze", "-u", MOUNT) not in r.calls and r.calls[-1] == ("kill", "4242")


def test_thaw_by_the_watchdog_is_reported():
    r = _runner(thaw_rc=1)
    res = apply_snapshot(_plan(), r, lambda: type("S", (), {"id": "snap-2", "state": "x"})())
    assert "crash-consistent only" in res.notes[0]


def test_local_cloud_takes_the_btrfs_snapshot_only_and_says_so():
    r = _runner()
    res = apply_snapshot(_plan("local"), r)
    assert [c[0] for c in r.calls] == ["findmnt", AGENT]
    assert res.cloud is None and "btrfs snapshot only" in res.notes[0]
    assert len(_plan("local").steps()) == 2 and "fsfreeze -u" in _plan().steps()[5]


@pytest.mark.parametrize("fstype,what", [("ext4", "a ext4 filesystem"), ("", "not a mountpoint")])
def test_refuses_a_mount_that_is_not_a_btrfs_before_touching_anything(fstype, what):
    r = FakeRunner().expect(["findmnt", "-n", "-o", "FSTYPE", "--mountpoint", MOUNT], stdout=fstype,
                            returncode=0 if fstype else 1)
    with pytest.raises(DiskError, match=what):
        apply_snapshot(_plan(), r, lambda: None)
    assert len(r.calls) == 1


def test_plan_needs_a_cloud_volume_id_on_clouds_and_a_valid_name():
    with pytest.raises(DiskError, match="no aws volume id for 'data'"):
        plan_snapshot(_rec(volumes={}), VolumeTarget("data", MOUNT, ""), "s1")
    with pytest.raises(DiskError, match="invalid snapshot name"):
        plan_snapshot(_rec(), VolumeTarget("data", MOUNT, "vol-1"), "../x")
    assert plan_snapshot(_rec(), VolumeTarget("data", MOUNT, "vol-1"), None, now=0).name == "19700101T000000Z"
    with pytest.raises(ConfigError, match="--freeze-limit must be between 1 and 3600 seconds, not 0"):
        plan_snapshot(_rec(), VolumeTarget("data", MOUNT, "vol-1"), "s1", freeze_limit=0)


def test_volume_target_reads_the_mount_from_the_stacks_disks_config():
    stack = load_stack(FIXTURE)
    assert volume_target(_rec(), stack, "data") == VolumeTarget("data", "/srv/data", "vol-1")
    named = HostRecord(**{**_rec().to_json(), "fingerprints": ("SHA256:x",), "volumes": {"shop-web-data": "vol-9"}})
    assert volume_target(named, stack, "data").cloud_id == "vol-9"
    with pytest.raises(ConfigError, match=r"no volume 'nope' .*volumes: data, logs"):
        volume_target(_rec(), stack, "nope")


def test_a_connection_lost_during_the_freeze_leaves_the_thaw_to_the_watchdog_and_says_so():
    from provisioner.errors import HostError

    r = _runner()

    def lost(argv):
        raise HostError("ssh debian@h:22: connection lost")
    r.expectations = [e for e in r.expectations if e.argv != ("fsfreeze", "-u", MOUNT)]
    r.expect(["fsfreeze", "-u", MOUNT], handler=lost)

    def take():
        raise CloudError("aws: throttled")
    with pytest.raises(CloudError, match="watchdog thaws it within 120s"):
        apply_snapshot(_plan(), r, take)
    assert ("kill", "4242") not in r.calls      # the watchdog is left to do its job
