"""`provision host disks …`: the thin CLI over the library (host facts faked, FakeRunner)."""
from __future__ import annotations

import json

import pytest

from provisioner.cli import disks as disks_cli
from provisioner.cli.app import App
from provisioner.cli.main import cli, main
from provisioner.disks.testing import make_disk, make_facts
from provisioner.testing import FakeRunner


@pytest.fixture
def config(tmp_path):
    p = tmp_path / "disks.yaml"
    p.write_text("ephemeral:\n  mount: /mnt/eph\n  devices: [/dev/loop1]\n")
    return p


@pytest.fixture
def fake_host(monkeypatch):
    facts = make_facts([make_disk("/dev/loop1")], paths={"/mnt/eph": "dir"})
    seen = {}

    def gather(runner, mountpoints, devices, fstab_path):
        seen["fstab_path"], seen["mountpoints"] = fstab_path, list(mountpoints)
        return facts
    monkeypatch.setattr(disks_cli, "gather", gather)
    monkeypatch.setattr(disks_cli, "discover", lambda runner: facts.disks)
    monkeypatch.setattr(disks_cli.apply_mod, "device_busy", lambda node: False)
    return seen


def invoke(args, runner=None):
    return cli.main(args=args, standalone_mode=False, obj=App(runner=runner or FakeRunner()))


def test_plan_json(fake_host, config, capsys, tmp_path):
    invoke(["host", "disks", "plan", "--config", str(config), "--fstab", str(tmp_path / "fstab"), "--json"])
    data = json.loads(capsys.readouterr().out)
    assert [a["action"] for a in data["actions"]] == ["mkfs", "mount", "writefstab"]
    assert fake_host == {"fstab_path": str(tmp_path / "fstab"), "mountpoints": ["/mnt/eph"]}


def test_apply_dry_run_runs_nothing(fake_host, config, capsys):
    runner = FakeRunner()  # refuses every command
    invoke(["host", "disks", "apply", "--config", str(config), "--dry-run"], runner)
    out = capsys.readouterr().out
    assert "1. mkfs.btrfs /dev/loop1 label=prov-ephemeral" in out
    assert runner.commands() == []


def test_apply_prints_progress_to_stderr(fake_host, config, capsys, tmp_path):
    runner = FakeRunner().expect(["wipefs", "--no-act", "--json", "/dev/loop1"], stdout="")
    runner.expect(["mkfs.btrfs"], prefix=True).expect(["mount"], prefix=True)
    fstab = tmp_path / "fstab"
    invoke(["host", "disks", "apply", "--config", str(config), "--fstab", str(fstab)], runner)
    captured = capsys.readouterr()
    assert "[1/3] mkfs.btrfs /dev/loop1" in captured.err
    assert "applied 3 action(s)" in captured.out
    assert "UUID=" in fstab.read_text()


def test_discover_table(fake_host, capsys):
    invoke(["host", "disks", "discover"])
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:5] == ["DEVICE", "SIZE", "BUS", "CLOUD", "ROLE"]
    assert out[1].split()[:5] == ["/dev/loop1", "300.0", "MiB", "loop", "local"]


def test_bad_config_is_one_error_line_and_exit_2(tmp_path, capsys):
    p = tmp_path / "disks.yaml"
    p.write_text("ephemeral:\n  mount: /mnt/eph\n  devise: [/dev/loop1]\n")
    with pytest.raises(SystemExit) as exc:
        main(["host", "disks", "plan", "--config", str(p)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {p}:3: ephemeral: unknown key 'devise' (expected one of: mount, devices, wipe, "
                   "count, interface)"]


def test_snapshot_group_defaults_to_create(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(disks_cli.snap, "create",
                        lambda runner, mount, name: calls.append((mount, name)) or
                        disks_cli.snap.Snapshot(name, f"{mount}/.snapshots/{name}"))
    invoke(["host", "disks", "snapshot", "/mnt/data", "--name", "s1"])
    assert calls == [("/mnt/data", "s1")]
    assert "snapshot s1: /mnt/data/.snapshots/s1" in capsys.readouterr().out
