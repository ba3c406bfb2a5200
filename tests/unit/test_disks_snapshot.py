"""Snapshot commands through a FakeRunner (the real thing is in tests/privileged/test_disks.py)."""
from __future__ import annotations

import pytest

from provisioner.disks import snapshot as snap
from provisioner.disks.config import parse_config
from provisioner.errors import ConfigError, DiskError
from provisioner.testing import FakeRunner

LIST = """ID 256 gen 9 cgen 9 top level 5 otime 2026-11-22 21:42:07 path .snapshots/s1
ID 257 gen 10 cgen 10 top level 5 otime 2026-11-22 21:43:00 path other/sub
"""


def test_parse_subvolume_list():
    assert snap.parse_subvolume_list(LIST) == [(".snapshots/s1", "2026-11-22 21:42:07"),
                                               ("other/sub", "2026-11-22 21:43:00")]


def test_create_runs_a_read_only_snapshot(tmp_path):
    r = FakeRunner().expect(["btrfs", "subvolume", "show", str(tmp_path)])
    r.expect(["mkdir", "-p", str(tmp_path / ".snapshots")])
    r.expect(["btrfs", "subvolume", "snapshot", "-r", str(tmp_path), str(tmp_path / ".snapshots" / "s1")])
    s = snap.create(r, str(tmp_path), "s1")
    assert s.path == str(tmp_path / ".snapshots" / "s1")


def test_not_btrfs_is_one_clear_error(tmp_path):
    r = FakeRunner().expect(["btrfs", "subvolume", "show", str(tmp_path)], returncode=1, stderr="not a btrfs")
    with pytest.raises(DiskError, match="not a btrfs subvolume"):
        snap.create(r, str(tmp_path), "s1")
    with pytest.raises(DiskError, match="not a directory"):
        snap.create(r, str(tmp_path / "missing"), "s1")


@pytest.mark.parametrize("name", ["../x", "a/b", ".hidden", "x" * 200])
def test_bad_names_are_refused_before_any_command(tmp_path, name):
    r = FakeRunner().expect(["btrfs", "subvolume", "show", str(tmp_path)])
    with pytest.raises(DiskError, match="invalid snapshot name"):
        snap.create(r, str(tmp_path), name)
    assert r.commands("mkdir") == []


def test_list_and_delete(tmp_path):
    (tmp_path / ".snapshots" / "s1").mkdir(parents=True)
    r = FakeRunner().expect(["btrfs", "subvolume", "show", str(tmp_path)])
    r.expect(["btrfs", "subvolume", "list", "-s", str(tmp_path)], stdout=LIST)
    r.expect(["btrfs", "subvolume", "delete", str(tmp_path / ".snapshots" / "s1")])
    assert [s.name for s in snap.list_snapshots(r, str(tmp_path))] == ["s1"]
    snap.delete(r, str(tmp_path), "s1")
    with pytest.raises(DiskError, match="no snapshot 'nope'"):
        snap.delete(r, str(tmp_path), "nope")


def test_parse_config_accepts_plain_dicts_from_other_loaders():
    cfg = parse_config({"ephemeral": {"mount": "/mnt/e"}}, "stack.yaml")
    assert cfg.ephemeral.mount == "/mnt/e"
    with pytest.raises(ConfigError, match=r"^stack.yaml: ephemeral: unknown key 'x'"):
        parse_config({"ephemeral": {"mount": "/mnt/e", "x": 1}}, "stack.yaml")
