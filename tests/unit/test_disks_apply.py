"""apply(): the exact commands through the Runner, the re-probe right before anything
destructive, and the fstab write."""
from __future__ import annotations

import json

import pytest

from provisioner.disks.actions import DeviceScan, Grow, MakeDir, Mkfs, Mount, Wipe, WriteFstab
from provisioner.disks.apply import apply
from provisioner.disks.facts import Signature
from provisioner.disks.fstab import managed_lines
from provisioner.disks.plan import Plan
from provisioner.errors import DiskError
from provisioner.testing import FakeRunner

DEVS = ("/dev/loop1", "/dev/loop2")
FREE = {"busy": lambda node: False}  # unit tests never open real devices
MKFS = Mkfs(DEVS, "prov-ephemeral", "u-1", "raid0", "raid1")


def wipefs_says(runner, dev, signatures):
    runner.expect(["wipefs", "--no-act", "--json", dev],
                  stdout=json.dumps({"signatures": signatures}) if signatures else "")


def test_full_plan_runs_the_expected_commands(tmp_path):
    fstab = tmp_path / "fstab"
    fstab.write_text("/dev/vda / ext4 defaults 0 1\n")
    r = FakeRunner()
    for d in DEVS:
        wipefs_says(r, d, [])
    r.expect(MKFS.argv())
    r.expect(["mkdir", "-p", "/mnt/eph"])
    r.expect(["btrfs", "device", "scan", *DEVS])
    r.expect(["mount", "-t", "btrfs", "-o", "noatime", "/dev/loop1", "/mnt/eph"])
    r.expect(["btrfs", "filesystem", "resize", "1:max", "/mnt/eph"])
    p = Plan((MKFS, MakeDir("/mnt/eph"), DeviceScan(DEVS), Mount("/dev/loop1", "/mnt/eph", "btrfs", "noatime"),
              Grow("/dev/loop1", "/mnt/eph", 1, 1, 2), WriteFstab(("UUID=u-1 /mnt/eph btrfs noatime 0 0",))))
    seen = []
    result = apply(p, r, fstab_path=str(fstab), on_step=seen.append, **FREE)
    assert seen == list(p.actions)
    assert [s.action for s in result.steps] == list(p.actions)
    assert r.commands("mkfs.btrfs") == [("mkfs.btrfs", "-q", "--nodiscard", "-L", "prov-ephemeral", "-U", "u-1",
                                         "-d", "raid0", "-m", "raid1", *DEVS)]
    assert fstab.read_text().startswith("/dev/vda / ext4 defaults 0 1\n")
    assert managed_lines(fstab.read_text()) == ["UUID=u-1 /mnt/eph btrfs noatime 0 0"]
    assert result.to_json()["steps"][0]["action"] == "mkfs"


def test_signature_appeared_since_planning_formats_nothing():
    r = FakeRunner()
    wipefs_says(r, "/dev/loop1", [])
    wipefs_says(r, "/dev/loop2", [{"device": "loop2", "type": "ext4", "offset": "0x438"}])
    with pytest.raises(DiskError, match=r"refusing to format /dev/loop2: a signature \(ext4\) appeared"):
        apply(Plan((MKFS,)), r, fstab_path="/nonexistent/fstab", **FREE)
    assert r.commands("mkfs.btrfs") == []


def test_wipe_checks_the_signature_is_still_the_planned_one():
    planned = Signature("ext4", "old-uuid")
    r = FakeRunner().expect(["blkid", "-p", "-o", "export", "/dev/loop1"],
                            stdout="TYPE=xfs\nUUID=other-uuid\n")
    with pytest.raises(DiskError, match="changed since planning"):
        apply(Plan((Wipe("/dev/loop1", planned),)), r, **FREE)
    assert r.commands("wipefs") == []

    r = FakeRunner().expect(["blkid", "-p", "-o", "export", "/dev/loop1"], stdout="TYPE=ext4\nUUID=old-uuid\n")
    r.expect(["wipefs", "--all", "/dev/loop1"])
    apply(Plan((Wipe("/dev/loop1", planned),)), r, **FREE)
    assert r.commands("wipefs") == [("wipefs", "--all", "/dev/loop1")]


def test_failure_stops_at_the_failing_step():
    r = FakeRunner().expect(["mkdir", "-p", "/mnt/a"], returncode=1, stderr="Permission denied")
    with pytest.raises(Exception, match="Permission denied"):
        apply(Plan((MakeDir("/mnt/a"), MakeDir("/mnt/b"))), r)
    assert r.commands() == [("mkdir", "-p", "/mnt/a")]


def test_empty_plan_runs_nothing():
    r = FakeRunner()
    assert apply(Plan(()), r).steps == ()
    assert r.commands() == []


def test_device_held_by_the_kernel_is_never_touched():
    r = FakeRunner()  # refuses every command: nothing may even be probed
    with pytest.raises(DiskError, match="refusing to touch /dev/loop2: the kernel reports it in use"):
        apply(Plan((MKFS,)), r, busy=lambda node: node == "/dev/loop2")
    with pytest.raises(DiskError, match="refusing to touch /dev/loop1"):
        apply(Plan((Wipe("/dev/loop1", Signature("ext4", "u")),)), r, busy=lambda node: True)
    assert r.commands("mkfs.btrfs") == [] and r.commands("wipefs") == []


def test_ext_grow_runs_resize2fs_on_the_device():
    r = FakeRunner().expect(["resize2fs", "/dev/loop4"])
    apply(Plan((Grow("/dev/loop4", "/srv/data", 0, 1, 2, fstype="ext4"),)), r, **FREE)
    assert r.commands() == [("resize2fs", "/dev/loop4")]
