"""docs/runbooks/restore-a-volume-from-a-snapshot.md part A on a real btrfs (loop device), and the
host side of `provision snapshot` with real fsfreeze: frozen while the cloud snapshot is taken,
thawed after (also when it fails), and the watchdog thaws a filesystem nobody came back for.

`provision snapshot web data` runs through the same library as the CLI, with this machine as the
host (this machine's Runner instead of SSH: the same contract) and the agent being this checkout's CLI. The runbook's
stop-services/start-services lines need a deployed stack and are not run here (they are the
stack CLI's `down`/`up --host`, tested with the stack).
"""
from __future__ import annotations

import os
import shlex
import sys
import threading
from pathlib import Path

import pytest

from provisioner.deploy.inventory import HostRecord
from provisioner.deploy.ops import VolumeTarget
from provisioner.deploy.ops_snapshot import apply_snapshot, plan_snapshot
from provisioner.errors import CloudError
from provisioner.runner import Runner
from test_runbook_full_disk import MiB, blocks, loops, run_line, sh  # noqa: F401  (loops is a fixture)

pytestmark = pytest.mark.privileged


def _agent(tmp: Path, root: Path) -> str:
    path = tmp / "provision-agent"
    path.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -m provisioner.cli.main "
                    f"--root {shlex.quote(str(root))} \"$@\"\n")
    path.chmod(0o755)
    return str(path)


def _rec(cloud: str) -> HostRecord:
    return HostRecord(stack="shop", host="web", cloud=cloud, address="127.0.0.1", port=22, user="root",
                      key_file="/k", fingerprints=("SHA256:x",), volumes={"data": "vol-1"})


def _snapshot_line(line: str, mount: Path, agent: str, cloud: str = "local", take=None, limit: float = 120):
    """`provision snapshot web data --name N` with this machine as the host."""
    words = shlex.split(line)
    assert words[:4] == ["provision", "snapshot", "web", "data"] and words[4] == "--name", line
    plan = plan_snapshot(_rec(cloud), VolumeTarget("data", str(mount), "vol-1"), words[5], freeze_limit=limit)
    return apply_snapshot(plan, Runner(), take, agent=agent)


def _frozen(mount: Path) -> bool:
    """A second freeze of a frozen filesystem fails with EBUSY; undo it when it succeeds."""
    if sh("fsfreeze", "-f", mount, check=False).returncode == 0:
        sh("fsfreeze", "-u", mount)
        return False
    return True


def test_restore_from_the_btrfs_snapshot_per_the_runbook(loops, tmp_path):
    steps = blocks("restore-a-volume-from-a-snapshot.md")
    assert list(steps) == ["snapshot", "list", "stop-services", "restore", "check", "start-services", "cloud-list",
                           "cloud-destroy", "cloud-restore", "cloud-deploy"]
    mount = tmp_path / "srv-data"
    loops.btrfs(300 * MiB, mount)
    root = tmp_path / "root"
    agent = _agent(tmp_path, root)
    subs = {"/srv/data": str(mount)}
    (mount / "db").mkdir()
    (mount / "db" / "table").write_text("good rows\n")
    os.symlink("db/table", mount / "current")
    (mount / "big").write_bytes(os.urandom(20 * MiB))

    [line] = steps["snapshot"]
    res = _snapshot_line(line, mount, agent)
    assert res.btrfs_path == f"{mount}/.snapshots/before-upgrade" and "btrfs snapshot only" in res.notes[0]

    # the damage: a bad migration rewrites a table, deletes a file, adds junk
    (mount / "db" / "table").write_text("garbage\n")
    (mount / "big").unlink()
    (mount / "junk").write_text("x")

    assert "before-upgrade" in run_line(steps["list"][0], subs, root).stdout
    for ln in steps["restore"]:
        run_line(ln, subs, root)
    listing = run_line(steps["check"][0], subs, root).stdout
    assert "junk" not in listing and "big" in listing
    assert (mount / "db" / "table").read_text() == "good rows\n"
    assert os.readlink(mount / "current") == "db/table" and (mount / "big").stat().st_size == 20 * MiB
    assert not (mount / "junk").exists()
    # the damaged state was kept, read-only, and the snapshots survived the wipe
    kept = mount / ".snapshots" / "damaged-20261123"
    assert (kept / "db" / "table").read_text() == "garbage\n" and (kept / "junk").exists()
    assert (mount / ".snapshots" / "before-upgrade" / "db" / "table").read_text() == "good rows\n"
    # and the restored volume is writable (the copy is not a read-only snapshot)
    (mount / "db" / "table").write_text("new rows\n")


def test_cloud_snapshot_runs_with_the_filesystem_frozen_and_thaws_even_on_failure(loops, tmp_path):
    mount = tmp_path / "srv-data"
    loops.btrfs(300 * MiB, mount)
    agent = _agent(tmp_path, tmp_path / "root")
    (mount / "f").write_text("data")
    seen = []

    def take():
        seen.append(_frozen(mount))
        return type("Snap", (), {"id": "snap-1", "state": "pending"})()

    res = _snapshot_line("provision snapshot web data --name s1", mount, agent, cloud="aws", take=take)
    assert seen == [True] and not _frozen(mount) and res.cloud.id == "snap-1" and res.notes == []
    assert (mount / ".snapshots" / "s1" / "f").read_text() == "data"

    def fails():
        seen.append(_frozen(mount))
        raise CloudError("aws: injected failure")
    with pytest.raises(CloudError, match="injected failure.*s2 was made.*is thawed"):
        _snapshot_line("provision snapshot web data --name s2", mount, agent, cloud="aws", take=fails)
    assert seen[-1] is True and not _frozen(mount)
    (mount / "after").write_text("writes work")


def test_the_watchdog_thaws_when_nobody_comes_back(loops, tmp_path):
    mount = tmp_path / "srv-data"
    loops.btrfs(300 * MiB, mount)
    agent = _agent(tmp_path, tmp_path / "root")
    wrote = threading.Event()

    def stuck():
        # a writer blocks on the frozen filesystem until the 1 s watchdog thaws it
        t = threading.Thread(target=lambda: ((mount / "w").write_text("x"), wrote.set()), daemon=True)
        t.start()
        assert wrote.wait(30), "the watchdog never thawed the filesystem"
        return type("Snap", (), {"id": "snap-3", "state": "pending"})()

    res = _snapshot_line("provision snapshot web data --name s3", mount, agent, cloud="aws", take=stuck, limit=1)
    assert "crash-consistent only" in res.notes[0] and not _frozen(mount)
