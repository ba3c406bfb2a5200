"""volumes.py: `-v` parsing with Docker's rules, named volumes via the Runner, paths in a rootfs."""
from __future__ import annotations

import os

import pytest

from provisioner.containers import volumes
from provisioner.runspec.mounts import VolumeSpec, parse_volume
from provisioner.errors import ConfigError, ContainerError
from provisioner.testing import FakeRunner


@pytest.mark.parametrize("spec, expected", [
    ("/data", VolumeSpec("anonymous", "", "/data")),
    ("/data/", VolumeSpec("anonymous", "", "/data")),
    ("/srv/www:/www", VolumeSpec("bind", "/srv/www", "/www")),
    ("/srv/www:/www:ro", VolumeSpec("bind", "/srv/www", "/www", True)),
    ("/srv/www/../x:/www:rw", VolumeSpec("bind", "/srv/x", "/www")),
    ("dbdata:/var/lib/mysql", VolumeSpec("volume", "dbdata", "/var/lib/mysql")),
    ("db.data_1-x:/d:ro", VolumeSpec("volume", "db.data_1-x", "/d", True)),
])
def test_parse(spec, expected):
    assert parse_volume(spec) == expected


@pytest.mark.parametrize("spec, msg", [
    ("", "want SRC:DST"),
    ("data", "not absolute"),
    ("a:b:c:d", "too many"),
    ("./data:/x", "not a valid volume name"),
    ("data/x:/x", "not a valid volume name"),
    ("x:/x", "not a valid volume name"),          # Docker wants 2+ characters
    ("vol:relative", "not absolute"),
    ("vol:/", "over the container's /"),
    ("/h:/c:rbind", "mode 'rbind' is not supported"),
    ("/h:/c:nocopy", "nocopy is for volumes"),
    ("/h::ro", "want SRC:DST"),
])
def test_parse_rejects(spec, msg):
    with pytest.raises(ConfigError, match=msg):
        parse_volume(spec)


def test_spec_round_trip():
    s = VolumeSpec("volume", "v1", "/d", True)
    assert VolumeSpec.from_json(s.to_json()) == s


def test_named_volume_create_and_remove_go_through_the_runner(tmp_path, monkeypatch):
    runner = FakeRunner()

    def create(argv):
        os.mkdir(argv[-1])
        from provisioner.runner import Result
        return Result(list(argv), 0, "", "", 0.0)

    runner.expect(["btrfs", "subvolume", "create"], prefix=True, handler=create)
    runner.expect(["btrfs", "subvolume", "delete", str(tmp_path / "volumes" / "db1")])
    vols = volumes.Volumes(tmp_path, runner)
    assert vols.create("db1") is True
    assert vols.create("db1") is False          # idempotent: no second btrfs call
    assert vols.info("db1")["anonymous"] is False
    assert [v["name"] for v in vols.list()] == ["db1"]
    monkeypatch.setattr(volumes.btrfs, "is_subvolume", lambda p: True)
    vols.remove("db1")
    assert not (tmp_path / "volumes" / "db1.json").exists()
    assert runner.calls[0] == ("btrfs", "subvolume", "create", str(tmp_path / "volumes" / "db1"))
    with pytest.raises(ContainerError, match="bad volume name"):
        vols.path("../escape")


def test_remove_refuses_a_plain_directory(tmp_path):
    (tmp_path / "volumes" / "plain").mkdir(parents=True)
    with pytest.raises(ContainerError, match="not a btrfs subvolume"):
        volumes.Volumes(tmp_path, FakeRunner()).remove("plain")


def test_resolve_in_keeps_symlinks_inside_the_rootfs(tmp_path):
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "real").mkdir()
    (root / "etc" / "passwd").symlink_to("/../../../../etc/shadow")   # escaping, absolute
    (root / "etc" / "group").symlink_to("../../../real/group")        # escaping, relative
    (root / "real" / "group").write_text("g:x:1:\n")
    (root / "loop").symlink_to("loop")
    (root / "data").symlink_to("/real")
    assert volumes.resolve_in(root, "/etc/passwd") == root / "etc" / "shadow"
    assert volumes.read_in(root, "/etc/passwd") == ""                 # never the host's file
    assert volumes.read_in(root, "/etc/group") == "g:x:1:\n"
    assert volumes.resolve_in(root, "/data/sub") == root / "real" / "sub"
    assert volumes.resolve_in(root, "/../../x") == root / "x"
    with pytest.raises(ContainerError, match="too many symlinks"):
        volumes.resolve_in(root, "/loop")
    volumes.make_dir_in(root, "/data/work/dir")
    assert (root / "real" / "work" / "dir").is_dir()
    (root / "file").write_text("")
    with pytest.raises(ContainerError, match="a file is in the way"):
        volumes.make_dir_in(root, "/file")
