"""`provision ssh | logs | snapshot` against a real deployed VM (local cloud, AWS-style disks):
real sshd with its console-reported host keys, real sudo, btrfs, fsfreeze and systemd sessions.

The freeze path of a cloud snapshot is driven through the same library over SSH with a stand-in
for the provider call (the local cloud has none), so the watchdog and thaw are proven on a real
host: frozen while the "provider" is called, thawed after, and thawed by the watchdog when the
operator's connection dies mid-freeze.
"""
from __future__ import annotations

import json
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from provisioner.deploy import inventory
from provisioner.deploy.ops import VolumeTarget
from provisioner.deploy.ops_remote import SshRemote, fetch_host_keys, interactive_argv, write_known_hosts
from provisioner.deploy.ops_snapshot import WATCHDOG, SnapshotPlan, apply_snapshot
from provisioner.host.ssh import SshClient
from tests.registry_fixture import docker_registry, free_port

from deployhelpers import EXAMPLES, deploy, http_get, provision, push_images

pytestmark = pytest.mark.vm

NAME = "opsdemo/web"


@pytest.fixture(scope="module")
def env(vm_root, vm_image, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ops")
    with docker_registry(tmp / "registry") as reg:
        push_images(tmp, reg.address, {"hello/busybox:1": "busybox"})
        port = free_port()
        text = (EXAMPLES / "hello.yml").read_text().replace("127.0.0.1:5000/", f"{reg.address}/")
        text = text.replace('"8080:80"', f'"{port}:80"').replace("name: hello\n", "name: opsdemo\n")
        stack = tmp / "opsdemo.yml"
        stack.write_text(text)
        e = {"XDG_CONFIG_HOME": str(tmp / "config")}
        try:
            out = deploy(vm_root, stack, e)
            assert out["ok"], out
            yield {"root": vm_root, "port": port, "env": e, "stack": stack}
        finally:
            provision(vm_root, "destroy", "opsdemo", "--cloud", "local", "--yes", env=e, check=False)


def _frozen(client: SshClient) -> bool:
    """A second freeze of a frozen filesystem fails (EBUSY); undo it when it succeeds."""
    if client.run(["fsfreeze", "-f", "/srv/data"], sudo=True, check=False).returncode == 0:
        client.run(["fsfreeze", "-u", "/srv/data"], sudo=True)
        return False
    return True


def _client(root) -> SshClient:
    return SshClient(inventory.find(root, NAME).target()).connect()


def test_ssh_runs_commands_with_their_exit_status(env):
    r = provision(env["root"], "ssh", NAME, "--", "uname", "-s", ";", "echo", "oops", ">&2", env=env["env"])
    assert r.stdout == "Linux\n" and "oops" in r.stderr
    r = provision(env["root"], "ssh", NAME, "--", "exit", "7", env=env["env"], check=False)
    assert r.returncode == 7


def test_openssh_accepts_the_verified_known_hosts(env):
    rec = inventory.find(env["root"], NAME)
    keys = fetch_host_keys(rec.target())
    assert keys
    with tempfile.TemporaryDirectory() as tmp:
        known = write_known_hosts(Path(tmp) / "known_hosts", rec.target(), keys)
        argv = interactive_argv(rec.target(), known, keys, ["hostname"])
        done = subprocess.run([argv[0], "-o", "BatchMode=yes", *argv[1:]], capture_output=True, text=True,
                              timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 0 and done.stdout.strip(), done.stderr


def test_logs_shows_the_service_output(env):
    http_get(env["port"])
    deadline = time.monotonic() + 60
    while True:
        # busybox httpd -v logs each request on its stderr, which `logs` keeps on stderr (like docker logs)
        r = provision(env["root"], "logs", NAME, "web", "-n", "20", env=env["env"])
        if "response:200" in r.stderr or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert "response:200" in r.stderr, r.stdout + r.stderr


def test_snapshot_on_the_local_cloud_is_a_btrfs_snapshot(env):
    r = provision(env["root"], "snapshot", NAME, "data", "--name", "s1", "--json", env=env["env"])
    out = json.loads(r.stdout)
    assert out["btrfs_path"] == "/srv/data/.snapshots/s1" and out["cloud_snapshot_id"] is None
    assert "btrfs snapshot only" in out["notes"][0]
    with _client(env["root"]) as c:
        listed = c.run("sudo -n provision host disks snapshot list /srv/data").stdout
        assert "s1" in listed
        assert c.run(["cat", "/srv/data/.snapshots/s1/www/index.html"], sudo=True).stdout.strip()


def test_freeze_over_ssh_is_held_during_the_provider_call_and_released(env):
    rec = inventory.find(env["root"], NAME)
    plan = SnapshotPlan(rec.name, "aws", VolumeTarget("data", "/srv/data", "vol-x"), "s2", True, 30)
    seen = []
    with _client(env["root"]) as c, _client(env["root"]) as probe:
        def provider():
            seen.append(_frozen(probe))
            return type("Snap", (), {"id": "snap-x", "state": "pending"})()
        res = apply_snapshot(plan, SshRemote(c), provider)
        assert seen == [True] and not _frozen(probe) and res.notes == []
        # no watchdog left behind
        assert "watchdog" not in c.run("ps -eo args", check=False).stdout


def test_the_watchdog_thaws_after_the_operator_vanishes(env):
    with _client(env["root"]) as c:
        c.run(["sh", "-c", WATCHDOG, "watchdog", "/srv/data", "30"], sudo=True)
        c.run(["fsfreeze", "-f", "/srv/data"], sudo=True)
    # the operator's connection is gone; the host must thaw on its own
    with _client(env["root"]) as probe:
        assert _frozen(probe)
        deadline = time.monotonic() + 90
        while _frozen(probe):
            assert time.monotonic() < deadline, "/srv/data still frozen 90 s after the operator left"
            time.sleep(1)
        probe.run(["touch", "/srv/data/after-thaw"], sudo=True, timeout=30)


def test_replace_a_failed_host_runbook_on_the_vm(env):
    """docs/runbooks/replace-a-failed-host.md on the local cloud: the VM dies (qemu killed), the
    runbook's commands destroy it keeping the volume and deploy again; the new VM has new host
    keys (recorded from its console) and the volume's data."""
    import os
    import re
    import shlex
    import signal

    root = env["root"]
    with _client(root) as c:
        # synced: a killed VM loses what sat in its page cache, like a real power loss
        c.run("echo survived replacement > /srv/data/www/index.html && sync -f /srv/data/www", sudo=True)
        uuid = c.run(["findmnt", "-no", "UUID", "/srv/data"]).stdout.strip()
    old = inventory.find(root, NAME)
    pid = int((root / "local" / "opsdemo" / "web" / "qemu.pid").read_text().split()[0])
    os.kill(pid, signal.SIGKILL)          # the failure (our own VM's qemu)
    text = (Path(__file__).resolve().parents[2] / "docs" / "runbooks" / "replace-a-failed-host.md").read_text()
    for body in re.findall(r"```sh\n(.*?)```", text, re.S):
        for line in body.splitlines():
            if not line.strip() or line.startswith("#"):
                continue
            line = line.replace("--cloud aws", "--cloud local").replace(" shop ", " opsdemo ")
            line = line.replace("-f stack.yml", f"-f {env['stack']}")
            words = shlex.split(line)
            assert words[0] == "provision", line
            provision(root, *words[1:], env=env["env"])
    new = inventory.find(root, NAME)
    assert set(new.fingerprints).isdisjoint(old.fingerprints)       # a new machine, verified anew
    assert http_get(env["port"], timeout=300).strip() == "survived replacement"
    r = provision(root, "ssh", NAME, "--", "cat", "/srv/data/www/index.html", ";", "findmnt", "-no", "UUID",
                  "/srv/data", env=env["env"])
    assert r.stdout.split() == ["survived", "replacement", uuid]     # the same filesystem, not reformatted


def test_rotate_ssh_keys_runbook_on_the_vm(env):
    """docs/runbooks/rotate-ssh-keys.md, its blocks run as written against the VM (last: it
    changes the key every other test logs in with)."""
    import os
    import re
    import shlex
    import sys

    rec = inventory.find(env["root"], NAME)
    keys = Path(rec.key_file).parent
    text = (Path(__file__).resolve().parents[2] / "docs" / "runbooks" / "rotate-ssh-keys.md").read_text()
    subs = {"~/.config/provisioner/keys/shop": str(keys), "provision ssh web ": f"provision ssh {NAME} ",
            "name: admin": f"name: {rec.user}", "/home/admin": f"/home/{rec.user}"}
    prelude = (f"set -e; provision() {{ {shlex.quote(sys.executable)} -m provisioner.cli.main "
               f"--root {shlex.quote(str(env['root']))} \"$@\"; }}\n")
    old_pub = Path(rec.key_file + ".pub").read_text().split()[1]
    outputs = {}
    for body in re.findall(r"```sh\n(.*?)```", text, re.S):
        step = re.match(r"# step: (\S+)\n", body).group(1)
        for a, b in subs.items():
            body = body.replace(a, b)
        p = subprocess.run(["bash", "-c", prelude + body], capture_output=True, text=True, timeout=600,
                           stdin=subprocess.DEVNULL, env={**os.environ, **env["env"]})
        assert p.returncode == 0, f"{step}: {p.stdout}{p.stderr}"
        outputs[step] = p.stdout
    new_pub = Path(rec.key_file + ".pub").read_text().split()[1]
    assert new_pub != old_pub
    shown = [ln.split()[1] for ln in outputs["remove-old"].splitlines() if ln.startswith("ssh-")]
    assert shown == [new_pub]
    # the old key is refused by the real sshd, the new one works
    old = SshClient(inventory.HostRecord(**{**rec.to_json(), "fingerprints": rec.fingerprints,
                                            "key_file": rec.key_file + ".old"}).target())
    with pytest.raises(Exception):
        old.connect()
    with _client(env["root"]) as c:
        assert c.run(["true"]).returncode == 0
