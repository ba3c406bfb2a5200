"""PD snapshots for `provision snapshot` and restore, against the GCE compute v1 double (requests
validated against Google's discovery document)."""
from __future__ import annotations

from pathlib import Path

import pytest

from provisioner.clouds.base import plan_launch
from provisioner.clouds.launch import Timeouts, destroy, launch
from provisioner.deploy import ops_cloud
from provisioner.deploy.inventory import HostRecord
from provisioner.deploy.ops import VolumeTarget
from provisioner.errors import CloudError
from provisioner.stack import load_stack
from test_clouds_gce_double import double, gce  # noqa: F401  (the GCE double and driver fixtures)

FIXTURE = Path(__file__).parent.parent / "fixtures" / "clouds" / "stack.yml"
PUBKEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C8okWi0dh2l9GKJl operator@test"
FAST = Timeouts(running=5, host_keys=5, deleted=5, interval=0.01)


def _launched(gce):
    result = launch(plan_launch(load_stack(FIXTURE), "gce", PUBKEY), gce, timeouts=FAST)
    web = next(h for h in result.hosts if h.host == "web")
    vols = {v.extra["tags"]["provisioner-volume"]: v.id for v in web.volumes}
    return HostRecord(stack="shop", host="web", cloud="gce", address="203.0.113.10", port=22, user="provisioner",
                      key_file="/k", fingerprints=("SHA256:x",), instance_id=web.instance.id, volumes=vols,
                      stack_file=str(FIXTURE))


def test_pd_snapshot_is_labelled_listed_and_deleted(double, gce):
    rec = _launched(gce)
    snap = ops_cloud.cloud_snapshotter(gce, rec, VolumeTarget("data", "/srv/data", rec.volumes["data"]),
                                       "20261123T010203Z")()
    assert snap.id == "shop-web-data-20261123t010203z" and snap.state == "ready"
    stored = double.snapshots[snap.id]
    assert stored["sourceDisk"].endswith("/zones/us-central1-a/disks/shop-web-data")
    assert stored["labels"] == {"team": "shop", "provisioner-stack": "shop", "provisioner-host": "web",
                                "provisioner-volume": "data", "provisioner-keep": "false",
                                "provisioner-snapshot": "20261123t010203z"}
    [req] = [r for r in double.requests if r[0] == "compute.disks.createSnapshot"]
    assert req[1].endswith("/zones/us-central1-a/disks/shop-web-data/createSnapshot")
    listed = ops_cloud.list_snapshots(gce, "shop")
    assert [(s.id, s.host, s.extra["zone"], s.extra["volume_id"]) for s in listed] == [
        (snap.id, "web", "us-central1-a", "shop-web-data")]
    assert ops_cloud.list_snapshots(gce, "other") == []
    ops_cloud.delete_snapshot(gce, snap.id)
    assert double.snapshots == {}


def test_restore_creates_a_labelled_disk_from_the_snapshot_that_launch_reattaches(double, gce):
    rec = _launched(gce)
    snap = ops_cloud.cloud_snapshotter(gce, rec, VolumeTarget("logs", "/srv/logs", rec.volumes["logs"]), "s1")()
    with pytest.raises(CloudError, match="attached to a running host"):
        ops_cloud.restore(gce, snap.id)
    destroy(gce, "shop", timeouts=FAST)          # logs (keep: true) stays
    new, removed = ops_cloud.restore(gce, snap.id, replace=True)
    assert [r.id for r in removed] == ["shop-web-logs"] and ("us-central1-a", "shop-web-logs") not in double.disks
    disk = double.disks[("us-central1-a", new.id)]
    assert disk["sourceSnapshot"].endswith(f"/global/snapshots/{snap.id}")
    assert disk["labels"]["provisioner-volume"] == "logs" and "provisioner-snapshot" not in disk["labels"]

    launch(plan_launch(load_stack(FIXTURE), "gce", PUBKEY), gce, timeouts=FAST)
    web = double.instances[("us-central1-a", "shop-web")]
    attached = {d["deviceName"]: d["source"].rsplit("/", 1)[-1] for d in web["disks"] if d.get("source")
                and not d.get("boot")}
    assert attached["logs"] == new.id


def test_snapshot_list_and_delete_cli_on_gce(double, gce, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from provisioner.cli.main import cli

    rec = _launched(gce)
    snap = ops_cloud.cloud_snapshotter(gce, rec, VolumeTarget("data", "/srv/data", rec.volumes["data"]), "s1")()
    monkeypatch.setenv("PROVISION_GCE_TOKEN", double.token)
    common = ["--cloud", "gce", "--project", "test-project", "--endpoint", double.base_url]
    r = CliRunner().invoke(cli, ["--root", str(tmp_path), "snapshot", "list", "shop", *common])
    assert r.exit_code == 0, r.output
    assert snap.id in r.output and "shop-web-data" in r.output and "ready" in r.output
    r = CliRunner().invoke(cli, ["--root", str(tmp_path), "snapshot", "delete", snap.id, *common])
    assert r.exit_code == 0, r.output
    assert double.snapshots == {}
