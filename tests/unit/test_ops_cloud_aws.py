"""EBS snapshots for `provision snapshot` and the restore runbook's cloud part, against moto on loopback."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from provisioner.cli.main import cli
from provisioner.clouds.base import plan_launch
from provisioner.clouds.launch import Timeouts, destroy, launch
from provisioner.deploy import ops_cloud
from provisioner.deploy.inventory import HostRecord
from provisioner.deploy.ops import VolumeTarget
from provisioner.errors import CloudError, ConfigError
from provisioner.stack import load_stack
from test_clouds_aws_moto import aws, moto_url  # noqa: F401  (the moto server and driver fixtures)

FIXTURE = Path(__file__).parent.parent / "fixtures" / "clouds" / "stack.yml"
PUBKEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C8okWi0dh2l9GKJl operator@test"
FAST = Timeouts(running=10, host_keys=0, deleted=10, interval=0.05)


def _tags(obj):
    return {t["Key"]: t["Value"] for t in obj.get("Tags", [])}


def _launched(driver):
    result = launch(plan_launch(load_stack(FIXTURE), "aws", PUBKEY), driver, timeouts=FAST)
    web = next(h for h in result.hosts if h.host == "web")
    vols = {v.extra["tags"]["provisioner:volume"]: v.id for v in web.volumes}
    rec = HostRecord(stack="shop", host="web", cloud="aws", address="203.0.113.9", port=22, user="debian",
                     key_file="/k", fingerprints=("SHA256:x",), instance_id=web.instance.id, volumes=vols,
                     stack_file=str(FIXTURE))
    return rec, web


def test_snapshot_of_a_hosts_volume_carries_the_stack_tags(aws):
    _, ec2, driver = aws
    rec, _ = _launched(driver)
    snap = ops_cloud.cloud_snapshotter(driver, rec, VolumeTarget("data", "/srv/data", rec.volumes["data"]), "s1")()

    [desc] = ec2.describe_snapshots(SnapshotIds=[snap.id])["Snapshots"]
    assert desc["VolumeId"] == rec.volumes["data"]
    assert _tags(desc) == {"Name": "shop-web-data", "provisioner:stack": "shop", "provisioner:host": "web",
                           "provisioner:volume": "data", "provisioner:keep": "false", "provisioner:snapshot": "s1",
                           "team": "shop"}
    assert [(s.id, s.name, s.host) for s in ops_cloud.list_snapshots(driver, "shop")] == [(snap.id, "s1", "web")]
    assert ops_cloud.list_snapshots(driver, "other") == []
    # a snapshot that is not ours (no provisioner tags) is neither listed nor deletable
    foreign = ec2.create_snapshot(VolumeId=rec.volumes["logs"])["SnapshotId"]
    assert foreign not in [s.id for s in ops_cloud.list_snapshots(driver, None)]
    with pytest.raises(CloudError, match=f"no snapshot {foreign}"):
        ops_cloud.delete_snapshot(driver, foreign)
    ops_cloud.delete_snapshot(driver, snap.id)
    assert ops_cloud.list_snapshots(driver, "shop") == []


def test_unknown_volume_is_one_clear_error(aws):
    _, _, driver = aws
    rec, _ = _launched(driver)
    with pytest.raises(CloudError, match="volume data of shop/web \\(vol-0000\\) not found"):
        ops_cloud.cloud_snapshotter(driver, rec, VolumeTarget("data", "/srv/data", "vol-0000"), "s1")


def test_restore_refuses_an_attached_volume_then_replaces_a_failed_host_with_the_snapshot(aws):
    """restore-a-volume-from-a-snapshot.md (cloud part) and replace-a-failed-host.md against moto."""
    _, ec2, driver = aws
    rec, web = _launched(driver)
    snap = ops_cloud.cloud_snapshotter(driver, rec, VolumeTarget("logs", "/srv/logs", rec.volumes["logs"]), "s1")()

    with pytest.raises(CloudError, match="attached to a running host; destroy the host first"):
        ops_cloud.restore(driver, snap.id)
    # the host failed: destroy the stack; `logs` (keep: true) survives, `data` goes
    destroy(driver, "shop", timeouts=FAST)
    old_logs = rec.volumes["logs"]
    assert [v["VolumeId"] for v in ec2.describe_volumes()["Volumes"] if _tags(v).get("provisioner:volume")] == \
        [old_logs]
    with pytest.raises(CloudError, match="still exists .*--replace"):
        ops_cloud.restore(driver, snap.id)
    new, removed = ops_cloud.restore(driver, snap.id, stack="shop", replace=True)
    assert [r.id for r in removed] == [old_logs] and new.extra["zone"] == "us-east-1a"
    [vol] = [v for v in ec2.describe_volumes()["Volumes"] if _tags(v).get("provisioner:volume")]
    assert vol["VolumeId"] == new.id and vol["SnapshotId"] == snap.id and vol["State"] == "available"
    assert _tags(vol)["provisioner:keep"] == "true" and "provisioner:snapshot" not in _tags(vol)

    # launch again: the restored volume is reattached (not created anew), `data` is new
    result = launch(plan_launch(load_stack(FIXTURE), "aws", PUBKEY), driver, timeouts=FAST)
    web2 = next(h for h in result.hosts if h.host == "web")
    by_name = {v.extra["tags"]["provisioner:volume"]: v.id for v in web2.volumes}
    assert by_name["logs"] == new.id and by_name["data"] != rec.volumes["data"]
    attached = ec2.describe_volumes(VolumeIds=[new.id])["Volumes"][0]["Attachments"]
    assert [a["InstanceId"] for a in attached] == [web2.instance.id]


def test_restore_without_a_zone_when_nothing_says_where(aws):
    _, _, driver = aws
    rec, _ = _launched(driver)
    snap = ops_cloud.cloud_snapshotter(driver, rec, VolumeTarget("data", "/srv/data", rec.volumes["data"]), "s1")()
    destroy(driver, "shop", timeouts=FAST)   # `data` is keep: false, so it is gone: no zone to copy
    with pytest.raises(ConfigError, match="pass --zone"):
        ops_cloud.restore(driver, snap.id)


def test_snapshot_list_restore_delete_cli(aws, tmp_path):
    url, ec2, driver = aws
    rec, _ = _launched(driver)
    snap = ops_cloud.cloud_snapshotter(driver, rec, VolumeTarget("data", "/srv/data", rec.volumes["data"]), "s1")()
    base = ["--root", str(tmp_path), "snapshot"]
    r = CliRunner().invoke(cli, [*base, "list", "shop", "--cloud", "aws", "--endpoint", url])
    assert r.exit_code == 0, r.output
    assert snap.id in r.output and "s1" in r.output and rec.volumes["data"] in r.output
    destroy(driver, "shop", timeouts=FAST)
    r = CliRunner().invoke(cli, [*base, "restore", snap.id, "--cloud", "aws", "--zone", "us-east-1a",
                                 "--endpoint", url, "--json"])
    assert r.exit_code == 0, r.output
    vid = json.loads(r.stdout)["volume"]["id"]
    assert ec2.describe_volumes(VolumeIds=[vid])["Volumes"][0]["SnapshotId"] == snap.id
    r = CliRunner().invoke(cli, [*base, "delete", snap.id, "--cloud", "aws", "--endpoint", url])
    assert r.exit_code == 0 and f"deleted snapshot {snap.id}" in r.output
    assert snap.id not in [s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]]


def test_snapshot_cli_over_ssh_freezes_around_the_ebs_snapshot(aws, tmp_path):
    """`provision snapshot web data` end to end: a fake sshd plays the host, moto plays EC2."""
    from test_ops_sshd import FakeSshd

    url, ec2, driver = aws
    rec, _ = _launched(driver)
    sshd = FakeSshd(tmp_path)
    frozen_during = []
    state = {"frozen": False}

    def freeze(x):
        state["frozen"] = True
        return 0

    def thaw(x):
        frozen_during.append(len(ec2.describe_snapshots(
            OwnerIds=["self"], Filters=[{"Name": "tag:provisioner:snapshot", "Values": ["s1"]}])["Snapshots"]))
        state["frozen"] = False
        return 0
    sudo = "sudo -n "
    sshd.on(f"{sudo}findmnt -n -o FSTYPE --mountpoint /srv/data", lambda x: x.out("btrfs\n") or 0)
    sshd.on(f"{sudo}/usr/local/bin/provision --json host disks snapshot create /srv/data --name s1",
            lambda x: x.out(json.dumps({"name": "s1", "path": "/srv/data/.snapshots/s1"})) or 0)
    sshd.on(f"{sudo}sh -c ", lambda x: x.out("4242\n") or 0)
    sshd.on(f"{sudo}fsfreeze -f /srv/data", freeze)
    sshd.on(f"{sudo}fsfreeze -u /srv/data", thaw)
    sshd.on(f"{sudo}kill 4242", lambda x: 0)
    try:
        sshd.record(tmp_path, cloud="aws", volumes=rec.volumes)
        r = CliRunner().invoke(cli, ["--root", str(tmp_path), "snapshot", "web", "data", "--name", "s1",
                                     "--endpoint", url, "--json"])
    finally:
        sshd.close()
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["btrfs_path"] == "/srv/data/.snapshots/s1" and out["cloud_snapshot_id"].startswith("snap-")
    assert [c.split()[2] for c in sshd.commands] == ["findmnt", "/usr/local/bin/provision", "sh",
                                                     "fsfreeze", "fsfreeze", "kill"]
    assert frozen_during == [1] and state["frozen"] is False   # the EBS snapshot existed before the thaw
    [snap] = ec2.describe_snapshots(SnapshotIds=[out["cloud_snapshot_id"]])["Snapshots"]
    assert snap["VolumeId"] == rec.volumes["data"] and _tags(snap)["provisioner:snapshot"] == "s1"
