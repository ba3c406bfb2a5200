"""A real local VM with AWS-style disks: 2 instance-store NVMe + 1 EBS-style volume.

Boots once for the module: host key verified from the console, disks seen by udev in the guest,
the agent delivered over SFTP and run, then destroy leaves no process, file or port behind.
"""
from __future__ import annotations

import json
import socket

import pytest

from provisioner.clouds.local import PortForward, VmSpec, VolumeDisk, local_nvme_role, state
from provisioner.host.deliver import build_bundle, deliver
from provisioner.host.ssh import HostKeyMismatch, SshClient, target_for
from provisioner.runner import Runner

from conftest import public_key
from vmhelpers import qemu_processes_for, wait_not_listening

pytestmark = pytest.mark.vm

STACK = "vmaws"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def vm(cloud, operator_key):
    spec = VmSpec(STACK, "web", public_key(operator_key), style="aws", ephemeral=2,
                  volumes=(VolumeDisk("data", 512),), ports=(PortForward(_free_port(), 80),))
    st = cloud.launch(spec, timeout=420)
    print(f"\nboot: {st.boot_seconds}s to SSH host keys on the console ({st.accel})")
    yield spec, st
    cloud.destroy(STACK)


@pytest.fixture(scope="module")
def ssh(vm, operator_key):
    _spec, st = vm
    client = SshClient(target_for([f["sha256"] for f in st.fingerprints], st.ssh_port, st.user, operator_key))
    waited = client.wait_ready(timeout=120)
    print(f"\nssh ready {waited:.1f}s after the host keys appeared")
    yield client
    client.close()


def test_ssh_verifies_the_host_key_from_the_console(vm, ssh, operator_key):
    _spec, st = vm
    assert {f["type"] for f in st.fingerprints} >= {"ED25519"}
    assert ssh.run(["hostname"]).stdout.strip() == "web"
    # A fingerprint that is not the server's is refused, not trusted on first use.
    wrong = target_for(["SHA256:" + "A" * 43], st.ssh_port, st.user, operator_key)
    with pytest.raises(HostKeyMismatch, match="not among the fingerprints"):
        SshClient(wrong).connect()


def test_aws_style_disks_seen_by_udev_in_the_guest(vm, ssh):
    _spec, st = vm
    expected = {d["serial"]: d["role"] for d in st.disks}
    assert sorted(expected.values()) == ["ephemeral", "ephemeral", "volume"]
    out = ssh.run(["lsblk", "--json", "-d", "-o", "NAME,SERIAL,MODEL,SIZE"]).stdout
    seen = {d["serial"].strip(): d for d in json.loads(out)["blockdevices"] if d.get("serial")}
    assert set(expected) <= set(seen), out
    for serial, role in expected.items():
        dev = "/dev/" + seen[serial]["name"]
        assert dev.startswith("/dev/nvme")
        out = ssh.run(["udevadm", "info", "--query=property", "--name", dev]).stdout
        props = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        assert props["ID_SERIAL_SHORT"] == serial
        assert props["ID_MODEL"] == "QEMU NVMe Ctrl"
        # The model cannot tell them apart in qemu; the serial prefix does.
        assert local_nvme_role(serial) == role
    vol = next(s for s, r in expected.items() if r == "volume")
    assert vol.startswith("vol") and len(vol) == 20


def test_agent_delivery_runs_provision_in_the_vm(ssh, tmp_path_factory):
    bundle = build_bundle(Runner(), progress=print)
    report = deliver(ssh, bundle, progress=print)
    assert report.version.startswith("provision")
    assert bundle.project_wheel.name in report.sent
    out = ssh.run(["provision", "--version"]).stdout
    assert "provision" in out and report.version in out
    doc = ssh.run("sudo -n provision doctor --json", check=False)
    assert doc.stdout.strip(), doc.stderr
    data = json.loads(doc.stdout)
    assert data, "doctor --json printed nothing"
    text = json.dumps(data)
    assert "kernel btrfs" in text and "cgroups" in text
    # Delivering the same agent again sends and installs nothing (a rebuild with the same
    # contents compares equal too: unit-tested, not here, as the checkout may change meanwhile).
    again = deliver(ssh, bundle)
    assert again.sent == [] and len(again.skipped) == len(bundle.wheels) and again.version == report.version


def test_status_then_destroy_leaves_nothing(cloud, vm, ssh):
    spec, st = vm
    ssh.close()
    rows = cloud.status(STACK)
    assert [(r["host"], r["state"]) for r in rows] == [("web", "running")]
    directory = cloud.host_dir(STACK, "web")
    assert qemu_processes_for(directory) == [st.pid]
    assert state.listening(st.ssh_port)
    assert cloud.destroy(STACK) == ["web"]
    assert qemu_processes_for(directory) == []
    assert not directory.exists() and not directory.parent.exists()
    assert wait_not_listening(st.ssh_port)
    assert wait_not_listening(spec.ports[0].host_port)
    assert cloud.status(STACK) == []
