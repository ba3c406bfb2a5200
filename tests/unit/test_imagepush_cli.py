"""`provision image push HOST REF`: the host from the inventory, JSON and human output, one-line errors."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from provisioner.cli.main import cli
from provisioner.deploy import inventory
from provisioner.remote import ssh as sshmod

from test_imagepush import FakeSsh, FakeStore, registry  # noqa: F401  (the registry fixture)


def _record(root, key_file):
    rec = inventory.HostRecord(stack="web", host="h1", cloud="local", address="127.0.0.1", port=2222,
                               user="admin", key_file=str(key_file), fingerprints=("SHA256:" + "A" * 43,))
    inventory.save(root, rec)
    return rec


@pytest.fixture
def pushed_to(tmp_path, monkeypatch):
    """A deployed host record whose SshClient is a FakeSsh over a fake store."""
    root = tmp_path / "operator"
    _record(root, tmp_path / "key")
    store = FakeStore()
    fake = FakeSsh(tmp_path / "hostroot", monkeypatch, store)
    targets = []

    class Client:
        def __init__(self, target):
            targets.append(target)
            self.target = target

        def __enter__(self):
            return fake

        def __exit__(self, *exc):
            pass

    monkeypatch.setattr(sshmod, "SshClient", Client)
    return root, store, targets


def test_push_json_then_human_up_to_date(registry, pushed_to):  # noqa: F811
    root, store, targets = pushed_to
    ref = f"{registry.address}/team/a:1"
    res = CliRunner().invoke(cli, ["--root", str(root), "image", "push", "--json", "web/h1", ref,
                                   "--insecure-registry", registry.address])
    assert res.exit_code == 0, (res.output, res.exception)
    data = json.loads(res.stdout)
    assert data["host"] == "web/h1" and data["sent"] == [0, 1] and data["bytes_sent"] > 0
    assert not data["up_to_date"] and store.names[ref] == data["manifest_digest"]
    assert targets[0].port == 2222 and targets[0].fingerprints == ("SHA256:" + "A" * 43,)

    res = CliRunner().invoke(cli, ["--root", str(root), "image", "push", "h1", ref,
                                   "--insecure-registry", registry.address])
    assert res.exit_code == 0, (res.output, res.exception)
    assert f"web/h1 already has {ref}" in res.stdout and "nothing sent" in res.stdout


def test_push_human_reports_layers_and_megabytes(registry, pushed_to):  # noqa: F811
    root, _store, _ = pushed_to
    res = CliRunner().invoke(cli, ["--root", str(root), "image", "push", "web/h1", f"{registry.address}/team/b:1",
                                   "--insecure-registry", registry.address])
    assert res.exit_code == 0, (res.output, res.exception)
    assert "2 layers sent, 0 skipped" in res.stdout and " MB in " in res.stdout
    assert "team/b:1 layer 1: sent" in res.stderr and "team/b:1 layer 2: sent" in res.stderr


def test_push_several_refs_lists_reports(registry, pushed_to):  # noqa: F811
    root, store, _ = pushed_to
    refs = [f"{registry.address}/team/a:1", f"{registry.address}/team/b:1"]
    res = CliRunner().invoke(cli, ["--root", str(root), "image", "push", "web/h1", *refs,
                                   "--insecure-registry", registry.address])
    assert res.exit_code == 0, (res.output, res.exception)
    lines = res.stdout.splitlines()
    assert lines[0].startswith(f"pushed {refs[0]} to web/h1: 2 layers sent, 0 skipped")
    assert lines[1].startswith(f"pushed {refs[1]} to web/h1: 1 layers sent, 1 skipped")
    assert lines[2].startswith("2 images: 3 layers sent,") and len(lines) == 3
    res = CliRunner().invoke(cli, ["--root", str(root), "--json", "image", "push", "web/h1", *refs,
                                   "--insecure-registry", registry.address])
    data = json.loads(res.stdout)
    assert [(d["ref"], d["up_to_date"], d["host"]) for d in data] == [(r, True, "web/h1") for r in refs]


@pytest.mark.parametrize("args,message", [
    (["nohost", "example.com/a:1"], "error: unknown host 'nohost': no deployed host by that name"),
    (["web/h1", "Bad:Ref:x"], "error: invalid image reference 'Bad:Ref:x'"),
    (["web/h1", "example.com/a:1", "--platform", "amd64"], "error: invalid platform 'amd64'"),
])
def test_push_bad_input_is_one_line(tmp_path, args, message):
    _record(tmp_path, tmp_path / "key")
    proc = subprocess.run([sys.executable, "-m", "provisioner.cli.main", "--root", str(tmp_path), "image", "push",
                           *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and proc.stderr.startswith(message), proc.stderr
    assert proc.stdout == ""
