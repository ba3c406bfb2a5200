"""`provision deploy --cloud local -f examples/hello.yml` in a real VM with AWS-style disks.

Two instance-store NVMe disks become one btrfs raid0 (the container store), the EBS-style volume
its own btrfs at /srv/data, the web service answers on the forwarded port; deploying again changes
nothing; after a reboot everything is back with the volume's data intact and not reformatted; and
destroy leaves no VM process, disk file, port or host record behind.
"""
from __future__ import annotations

import json
from dataclasses import replace

import pytest

from provisioner.clouds.local import local_nvme_role, state
from provisioner.deploy import inventory
from provisioner.host.ssh import HostKeyMismatch, SshClient
from tests.registry_fixture import docker_registry, free_port

from deployhelpers import EXAMPLES, deploy, http_get, provision, push_images, reboot_and_wait, ssh_to
from vmhelpers import qemu_processes_for, wait_not_listening

pytestmark = pytest.mark.vm


@pytest.fixture(scope="module")
def env(vm_root, vm_image, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hello")
    with docker_registry(tmp / "registry") as reg:
        push_images(tmp, reg.address, {"hello/busybox:1": "busybox"})
        port = free_port()
        text = (EXAMPLES / "hello.yml").read_text().replace("127.0.0.1:5000/", f"{reg.address}/")
        text = text.replace('"8080:80"', f'"{port}:80"')
        stack = tmp / "hello.yml"
        stack.write_text(text)
        # the per-stack operator key goes under this test's config dir, the VM image the cached one (vm_image)
        e = {"XDG_CONFIG_HOME": str(tmp / "config")}
        yield {"root": vm_root, "stack": stack, "port": port, "env": e}
        provision(vm_root, "destroy", "hello", "--cloud", "local", "--yes", env=e, check=False)


@pytest.fixture(scope="module")
def first(env):
    return deploy(env["root"], env["stack"], env["env"])


def test_deploy_serves_from_the_forwarded_port_with_disks_like_aws(env, first):
    (host,) = first["hosts"]
    assert first["ok"] and host["launched"] and host["error"] is None
    assert set(host["seconds"]) >= {"launch", "ssh", "agent", "prepare", "images", "containers", "total"}
    assert [(s["service"], s["state"], s["health"]) for s in host["services"]] == [("web", "running", "healthy")]
    assert host["endpoints"] == {f"{env['port']}/tcp": f"127.0.0.1:{env['port']}"}
    assert http_get(env["port"]).strip() == "hello from provisioner"
    print("\nbreakdown: " + json.dumps(host["seconds"]))
    rec = inventory.find(env["root"], "hello/web")
    # the real sshd's key is checked against the console's fingerprints: a wrong one is refused
    wrong = replace(rec.target(), fingerprints=("SHA256:" + "A" * 43,))
    with pytest.raises(HostKeyMismatch, match="not among the fingerprints"):
        SshClient(wrong).connect()
    with ssh_to(env["root"], "hello/web") as ssh:
        store = ssh.run(["findmnt", "-no", "FSTYPE", "/var/lib/provisioner"]).stdout.strip()
        df = ssh.run(["btrfs", "filesystem", "df", "/var/lib/provisioner"], sudo=True).stdout
        devs = ssh.run(["btrfs", "filesystem", "show", "/var/lib/provisioner"], sudo=True).stdout
        assert store == "btrfs" and "Data, RAID0" in df and devs.count("/dev/nvme") == 2, df + devs
        src = ssh.run(["findmnt", "-no", "FSTYPE,SOURCE", "/srv/data"]).stdout.split()
        assert src[0] == "btrfs"
        serial = ssh.run(["lsblk", "-dno", "SERIAL", src[1]]).stdout.strip()
        assert serial == rec.volumes["data"]            # the EBS-style volume, matched by its id
        # what the on-host discovery saw: real udev properties of qemu's NVMe disks, told apart by serial
        st = state.load(env["root"] / "local" / "hello" / "web")
        for disk in st.disks:
            dev = ssh.run(f"lsblk -dno NAME,SERIAL | awk '$2 == \"{disk['serial']}\" {{print $1}}'").stdout.strip()
            out = ssh.run(["udevadm", "info", "--query=property", "--name", f"/dev/{dev}"]).stdout
            props = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
            assert props["ID_SERIAL_SHORT"] == disk["serial"] and props["ID_MODEL"] == "QEMU NVMe Ctrl", props
            assert local_nvme_role(disk["serial"]) == disk["role"]
        assert sorted(d["role"] for d in st.disks) == ["ephemeral", "ephemeral", "volume"]
        status = json.loads(ssh.run("sudo -n provision host status --json").stdout)
        assert {s["name"]: s["status"] for s in status["steps"]}["disks"] in ("ok", "changed")


def test_deploying_again_changes_nothing(env, first):
    again = deploy(env["root"], env["stack"], env["env"])
    (host,) = again["hosts"]
    assert again["ok"] and not host["launched"]
    assert host["actions"] == []
    assert [i["up_to_date"] for i in host["images"]] == [True]
    assert [s["status"] for s in host["boot"]].count("changed") == 0, host["boot"]


def test_reboot_brings_everything_back_with_the_volume_intact(env, first):
    root = env["root"]
    with ssh_to(root, "hello/web") as ssh:
        ssh.run("echo survived > /srv/data/www/index.html", sudo=True)
        uuid = ssh.run(["findmnt", "-no", "UUID", "/srv/data"]).stdout.strip()
    took = reboot_and_wait(root, "hello/web")
    print(f"\nreboot: SSH back after {took:.0f}s")
    assert http_get(env["port"], timeout=300).strip() == "survived"   # restarted by the boot hook
    with ssh_to(root, "hello/web") as ssh:
        assert ssh.run(["findmnt", "-no", "UUID", "/srv/data"]).stdout.strip() == uuid   # not reformatted
        assert ssh.run(["findmnt", "-no", "FSTYPE", "/var/lib/provisioner"]).stdout.strip() == "btrfs"
        ps = json.loads(ssh.run("sudo -n provision ps -f /etc/provisioner/stack.yml --json").stdout)
        assert [(r["service"], r["state"]) for r in ps] == [("web", "running")]


def test_destroy_leaves_nothing(env, first):
    root = env["root"]
    rec = inventory.find(root, "hello/web")
    directory = root / "local" / "hello" / "web"
    assert qemu_processes_for(directory)
    provision(root, "destroy", "hello", "--cloud", "local", "--yes", env=env["env"])
    assert qemu_processes_for(directory) == []
    assert not (root / "local" / "hello").exists()
    assert wait_not_listening(rec.port) and wait_not_listening(env["port"])
    assert inventory.records(root, "hello") == []
    assert not state.listening(env["port"])
