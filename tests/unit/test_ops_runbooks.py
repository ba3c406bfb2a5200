"""The runbooks' fenced `sh` blocks, run: rotate-ssh-keys.md in a shell against an SSH server on
loopback whose accepted keys are the authorized_keys file the host agent's users step writes;
replace-a-failed-host.md and restore-a-volume-from-a-snapshot.md (part B) through the CLI against
moto. The `provision deploy` line runs deploy up to SSH (replace: the real pipeline, which reuses
the running hosts; restore: the launch) — SSH and the boot hook need a VM: the deploy tests cover
them."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from provisioner.cli.main import cli
from provisioner.clouds.base import plan_launch
from provisioner.clouds.launch import launch
from provisioner.deploy import inventory, ops_cloud
from provisioner.deploy.ops import VolumeTarget
from provisioner.remote.hostkeys import Target
from provisioner.remote.ssh import SshClient
from provisioner.stack import load_stack
from test_ops_cloud_aws import FAST, FIXTURE, PUBKEY, _launched, _tags, aws, moto_url  # noqa: F401 (fixtures)
from test_deploy_cloud_paths import CONSOLE_EC2, up_to_ssh
from test_ops_sshd import FakeSshd, keygen

RUNBOOKS = Path(__file__).resolve().parents[2] / "docs" / "runbooks"
PY = shlex.quote(sys.executable)


def blocks(runbook: str) -> dict[str, str]:
    """`# step: NAME` -> the block's text (a shell script)."""
    out = {}
    for body in re.findall(r"```sh\n(.*?)```", (RUNBOOKS / runbook).read_text(), re.S):
        m = re.match(r"# step: (\S+)\n", body)
        assert m, f"{runbook}: every sh block starts with '# step: NAME'"
        out[m.group(1)] = body[m.end():]
    return out


def commands(script: str) -> list[str]:
    return [ln for ln in script.splitlines() if ln.strip() and not ln.startswith("#")]


# -- rotate-ssh-keys.md ---------------------------------------------------------------------------
class Host:
    """The host behind the fake sshd: commands run here, with sudo a no-op and the host's paths
    (/etc/provisioner, /home/admin) moved under a test sysroot."""

    def __init__(self, tmp: Path):
        self.sysroot = tmp / "sysroot"
        (self.sysroot / "etc").mkdir(parents=True)
        uid, gid = os.getuid(), os.getgid()
        (self.sysroot / "etc" / "passwd").write_text(f"root:x:0:0::/root:/bin/sh\n"
                                                     f"admin:x:{uid}:{gid}::/home/admin:/bin/bash\n")
        (self.sysroot / "etc" / "group").write_text(f"admin:x:{gid}:\n")
        self.ssh_dir = self.sysroot / "home" / "admin" / ".ssh"
        self.ssh_dir.mkdir(parents=True, mode=0o700)
        self.authorized = self.ssh_dir / "authorized_keys"
        self.root = tmp / "host-root"
        self.subs = {"/etc/provisioner/": f"{self.sysroot}/etc/provisioner/", "/home/admin": f"{self.sysroot}/home/admin",
                     "--step users": f"--step users --sysroot {self.sysroot}"}
        (self.sysroot / "etc" / "provisioner").mkdir()

    def exec(self, x) -> int:
        cmd = x.command
        for a, b in self.subs.items():
            cmd = cmd.replace(a, b)
        data = x.stdin()
        prelude = f'sudo() {{ "$@"; }}; provision() {{ {PY} -m provisioner.cli.main --root {self.root} "$@"; }}; '
        p = subprocess.run(["bash", "-c", prelude + cmd], input=data, capture_output=True, timeout=120)
        x.out(p.stdout)
        if p.stderr:
            x.err(p.stderr.decode(errors="replace"))
        return p.returncode


def test_rotate_ssh_keys_per_the_runbook(tmp_path):
    steps = blocks("rotate-ssh-keys.md")
    assert list(steps) == ["new-key", "install-both", "switch", "remove-old"]
    home = tmp_path / "home"
    keys = home / ".config" / "provisioner" / "keys" / "shop"
    keys.mkdir(parents=True)
    old = keygen(keys / "id_ed25519")
    old_pub = (keys / "id_ed25519.pub").read_text().split()[1]
    host = Host(tmp_path)
    host.authorized.write_text((keys / "id_ed25519.pub").read_text())   # what cloud-init installed
    host.authorized.chmod(0o600)
    sshd = FakeSshd(tmp_path, user="admin", authorized_keys=host.authorized).on("", host.exec)
    op_root = tmp_path / "op-root"
    rec = sshd.record(op_root)
    from provisioner.deploy import inventory
    inventory.save(op_root, inventory.HostRecord(**{**rec.to_json(), "fingerprints": rec.fingerprints,
                                                    "key_file": str(old)}))
    env = {**os.environ, "HOME": str(home)}
    env.pop("XDG_CONFIG_HOME", None)
    prelude = f'set -e; provision() {{ {PY} -m provisioner.cli.main --root {op_root} "$@"; }}\n'

    def run(step: str) -> subprocess.CompletedProcess:
        p = subprocess.run(["bash", "-c", prelude + steps[step]], env=env, capture_output=True, text=True,
                           timeout=300, stdin=subprocess.DEVNULL, cwd=tmp_path)
        assert p.returncode == 0, f"{step}: {p.stdout}{p.stderr}"
        return p

    def keys_on_host() -> list[str]:
        return [ln.split()[1] for ln in host.authorized.read_text().splitlines() if ln and not ln.startswith("#")]

    def can_login(key: Path) -> bool:
        import paramiko

        try:
            with SshClient(Target("127.0.0.1", sshd.port, "admin", key, sshd.fingerprints)) as c:
                # a generous timeout: on a loaded machine a slow handshake must not read as "refused"
                return c.connect(timeout=60).run(["true"], check=False).returncode == 0
        except paramiko.AuthenticationException:  # the key was refused
            return False

    try:
        run("new-key")
        new_pub = (keys / "id_ed25519.new.pub").read_text().split()[1]
        assert can_login(old) and not can_login(keys / "id_ed25519.new")

        run("install-both")
        assert keys_on_host() == [old_pub, new_pub]
        assert (host.authorized.stat().st_mode & 0o777) == 0o600

        run("switch")   # ends with `provision ssh web -- true`, which now logs in with the new key
        assert (keys / "id_ed25519.pub").read_text().split()[1] == new_pub

        out = run("remove-old").stdout
        assert keys_on_host() == [new_pub] and out.count("ssh-ed25519 ") == 1 and new_pub in out
        assert can_login(keys / "id_ed25519") and not can_login(keys / "id_ed25519.old")
    finally:
        sshd.close()


# -- replace-a-failed-host.md and restore part B (moto) -------------------------------------------
def _cli(line: str, url: str, root: Path, subs: dict[str, str] | None = None):
    for a, b in (subs or {}).items():
        line = line.replace(a, b)
    words = shlex.split(line)
    assert words[0] == "provision", line
    if words[1:3] == ["deploy", "--cloud"]:
        # deploy's first phase; the rest (SSH, agent, boot hook) needs a VM
        assert words[3:] == ["aws", "-f", "stack.yml"], line
        return launch(plan_launch(load_stack(FIXTURE), "aws", PUBKEY), _DRIVER[0], timeouts=FAST)
    r = CliRunner().invoke(cli, ["--root", str(root), *words[1:], "--endpoint", url])
    assert r.exit_code == 0, f"{line}: {r.output}"
    return r.output


_DRIVER: list = []


def _volumes(ec2) -> dict[str, dict]:
    return {_tags(v)["provisioner:volume"]: v for v in ec2.describe_volumes()["Volumes"]
            if "provisioner:volume" in _tags(v)}


def test_replace_a_failed_host_per_the_runbook(aws, tmp_path, monkeypatch):
    """The whole stack (web and db) deployed; web fails; the runbook replaces web alone."""
    url, ec2, driver = aws
    monkeypatch.setattr(driver, "console_output", lambda inst: CONSOLE_EC2)  # moto's console has no keys
    root = tmp_path / "root"
    steps = {k: commands(v) for k, v in blocks("replace-a-failed-host.md").items()}
    assert list(steps) == ["inspect", "destroy", "deploy", "check"]

    def deploy(line: str):
        # `provision deploy --cloud aws -f stack.yml` through the real pipeline, up to SSH
        assert shlex.split(line) == ["provision", "deploy", "--cloud", "aws", "-f", "stack.yml"], line
        # nginx:1.25 & co. live on Docker Hub; the registry check has its own tests
        return {h.host: h for h in up_to_ssh(FIXTURE, "aws", driver, root, preflight=False).hosts}

    first = deploy(steps["deploy"][0])
    web, db = inventory.find(root, "shop/web"), inventory.find(root, "shop/db")
    assert first["web"].launched and first["db"].launched
    before = {n: v["VolumeId"] for n, v in _volumes(ec2).items()}

    assert web.instance_id in _cli(steps["inspect"][0], url, root)
    ec2.stop_instances(InstanceIds=[web.instance_id])          # the failure
    _cli(steps["destroy"][0], url, root)
    after_destroy = _cli(steps["destroy"][1], url, root)
    rows = [ln.split() for ln in after_destroy.splitlines()[1:]]
    assert sorted((r[1], r[2], r[-1]) for r in rows if r[0] == "shop") == [
        ("-", "key", "-"), ("db", "firewall", "-"), ("db", "instance", "running"),
        ("web", "volume", "available"), ("web", "volume", "available")], after_destroy
    second = deploy(steps["deploy"][0])
    assert second["web"].launched and not second["db"].launched
    new_web = inventory.find(root, "shop/web")
    assert new_web.instance_id != web.instance_id and inventory.find(root, "shop/db") == db
    vols = _volumes(ec2)
    # both volumes (data is keep: false, kept by --keep-volumes) are the old ones, attached to the new host
    assert {n: v["VolumeId"] for n, v in vols.items()} == before
    assert all([a["InstanceId"] for a in v["Attachments"]] == [new_web.instance_id] for v in vols.values())
    assert new_web.instance_id in _cli(steps["check"][0], url, root)


def test_restore_part_b_per_the_runbook(aws, tmp_path):
    url, ec2, driver = aws
    _DRIVER[:] = [driver]
    steps = {k: commands(v) for k, v in blocks("restore-a-volume-from-a-snapshot.md").items()}
    rec, web = _launched(driver)
    snap = ops_cloud.cloud_snapshotter(driver, rec, VolumeTarget("data", "/srv/data", rec.volumes["data"]),
                                       "before-upgrade")()
    subs = {"snap-0123456789abcdef0": snap.id}

    assert snap.id in _cli(steps["cloud-list"][0], url, tmp_path, subs)
    _cli(steps["cloud-destroy"][0], url, tmp_path, subs)       # data (keep: false) is deleted with the host
    assert set(_volumes(ec2)) == {"logs"}
    _cli(steps["cloud-restore"][0], url, tmp_path, subs)
    restored = _volumes(ec2)["data"]
    assert restored["SnapshotId"] == snap.id and restored["AvailabilityZone"] == "us-east-1a"
    result = _cli(steps["cloud-deploy"][0], url, tmp_path, subs)
    new_web = next(h for h in result.hosts if h.host == "web")
    data = _volumes(ec2)["data"]
    assert data["VolumeId"] == restored["VolumeId"]
    assert [a["InstanceId"] for a in data["Attachments"]] == [new_web.instance.id]
