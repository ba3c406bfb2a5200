"""`image push` to a real local VM with no registry it can reach: the operator's loopback registry is
127.0.0.1 here and something else in the guest, so the image can only arrive over SSH.

One VM for the module, with one AWS-style ephemeral disk made the btrfs under /var/lib/provisioner;
the agent delivered as `provision deploy` does. busybox goes over (every layer sent), again (nothing
sent), then a second image sharing busybox's base layer (only its own layer sent); the pushed name
runs in the guest without a pull; `provision image push HOST REF` finds the host in the inventory.
The last test destroys the VM.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from provisioner.clouds.local import VmSpec
from provisioner.deploy import inventory
from provisioner.remote.bundle import build_bundle
from provisioner.remote.deliver import deliver
from provisioner.remote.imagepush import push_image, push_images
from provisioner.remote.hostkeys import target_for
from provisioner.remote.ssh import SshClient
from provisioner.imagebuild.layout import Layer, LayoutWriter
from provisioner.imagebuild.recipes import BUSYBOX_CONFIG, build, busybox_layers, push
from provisioner.imagebuild.tarbuild import F
from provisioner.runner import Runner
from tests.registry_fixture import docker_registry, wait_until

from conftest import public_key
from vmhelpers import qemu_processes_for, wait_not_listening

pytestmark = pytest.mark.vm

STACK = "imgpush"
HOST = "img"
AGENT_ROOT = "/var/lib/provisioner"


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """busybox and a second image sharing its base layer, in a docker-registry on this machine's loopback."""
    for tool in ("docker-registry", "skopeo"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed (scripts/install.sh installs it)")
    if not os.path.exists("/bin/busybox"):
        pytest.skip("needs busybox-static (/bin/busybox) for the test images")
    work = tmp_path_factory.mktemp("imgpush-registry")
    runner = Runner()
    with docker_registry(work / "registry") as reg:
        build("busybox", work / "busybox", runner)
        push(work / "busybox", f"{reg.address}/test/busybox:1", runner=runner)
        second = LayoutWriter(work / "second")
        second.tag(second.image(busybox_layers(runner, marker="second"), BUSYBOX_CONFIG), "latest")
        push(work / "second", f"{reg.address}/test/second:1", runner=runner)
        third = LayoutWriter(work / "third")  # busybox's base + 2 MB of its own
        layers = busybox_layers(runner, marker="third")
        layers[1] = Layer(layers[1].entries + (F("srv/blob", os.urandom(2 << 20)),))
        third.tag(third.image(layers, BUSYBOX_CONFIG), "latest")
        push(work / "third", f"{reg.address}/test/third:1", runner=runner)
        yield reg


@pytest.fixture(scope="module")
def vm(cloud, operator_key):
    spec = VmSpec(STACK, HOST, public_key(operator_key), style="aws", ephemeral=1)
    try:
        st = cloud.launch(spec, timeout=420)
        print(f"\nboot: {st.boot_seconds}s to SSH host keys on the console ({st.accel})")
        yield st
    finally:
        cloud.destroy(STACK)


@pytest.fixture(scope="module")
def ssh(vm, operator_key):
    client = SshClient(target_for([f["sha256"] for f in vm.fingerprints], vm.ssh_port, vm.user, operator_key))
    client.wait_ready(timeout=120)
    deliver(client, build_bundle(Runner(), progress=print), progress=print)
    # the store's btrfs on the ephemeral disk (a disk of the test VM, never this machine's)
    serial = next(d["serial"] for d in vm.disks if d["role"] == "ephemeral")
    devices = json.loads(client.run(["lsblk", "--json", "-d", "-o", "NAME,SERIAL"]).stdout)["blockdevices"]
    dev = "/dev/" + next(d["name"] for d in devices if (d.get("serial") or "").strip() == serial)
    client.run(["sh", "-c", f"mkfs.btrfs -q -f {dev} && mkdir -p {AGENT_ROOT} && mount {dev} {AGENT_ROOT}"],
               sudo=True)
    assert client.run(["findmnt", "-n", "-o", "FSTYPE", AGENT_ROOT]).stdout.strip() == "btrfs"
    yield client
    client.close()


def host_images(ssh) -> dict[str, str]:
    data = json.loads(ssh.run(["provision", "--json", "image", "ls"], sudo=True).stdout)
    return {name: rec["manifest_digest"] for rec in data for name in rec["names"]}


def test_first_push_sends_every_layer(registry, ssh):
    ref = f"{registry.address}/test/busybox:1"
    progress: list[tuple[int, int, int]] = []
    report = push_image(ssh, ref, insecure_registries=[registry.address], progress=lambda *p: progress.append(p))
    print(f"\nfirst push: {report.to_json()}")
    assert report.layers == 2 and report.sent == [0, 1] and report.skipped == [] and not report.up_to_date
    assert report.bytes_sent > 500_000  # the static busybox binary
    finished = {i: size for i, done, size in progress if done == size}  # bytes per layer, as they stream
    assert sorted(finished) == [0, 1] and sum(finished.values()) == report.bytes_sent
    assert host_images(ssh)[ref] == report.manifest_digest
    # the staging directory is gone once loaded
    assert ssh.run(["ls", "-A", f"{AGENT_ROOT}/incoming"], sudo=True).stdout.split() == [".lock"]


def test_second_push_sends_nothing(registry, ssh):
    report = push_image(ssh, f"{registry.address}/test/busybox:1", insecure_registries=[registry.address])
    print(f"\nsecond push: {report.to_json()}")
    assert report.up_to_date and report.sent == [] and report.skipped == [0, 1] and report.bytes_sent == 0


def test_image_sharing_the_base_sends_only_its_own_layer(registry, ssh):
    ref = f"{registry.address}/test/second:1"
    report = push_image(ssh, ref, insecure_registries=[registry.address])
    print(f"\nshared-base push: {report.to_json()}")
    assert report.sent == [1] and report.skipped == [0]
    assert 0 < report.bytes_sent < 100_000  # the small files layer, not busybox again
    assert host_images(ssh)[ref] == report.manifest_digest


def test_pushed_image_runs_on_the_host_without_a_pull(registry, ssh):
    ref = f"{registry.address}/test/second:1"
    out = ssh.run(["sudo", "-n", "provision", "-v", "container", "run", "--rm", ref, "cat", "/etc/platform"],
                  check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "second"
    assert "pulling" not in out.stderr
    out = ssh.run(["sudo", "-n", "provision", "container", "run", "--rm", f"{registry.address}/test/busybox:1",
                   "echo", "hi"], check=False)
    assert (out.returncode, out.stdout.strip()) == (0, "hi"), out.stderr


def test_interrupted_push_leaves_nothing_and_the_next_sweeps_stale_staging(registry, ssh):
    incoming = f"{AGENT_ROOT}/incoming"
    # a kill -9 leftover
    ssh.run(["sh", "-c", f"mkdir -p {incoming}/1-1-killed && touch {incoming}/1-1-killed/blob"], sudo=True)
    before = host_images(ssh)
    third, busybox = f"{registry.address}/test/third:1", f"{registry.address}/test/busybox:1"

    class Interrupted(Exception):
        pass

    def cut(ref, index, done, size):
        if done < size:
            raise Interrupted(f"{ref} layer {index} cut at {done} of {size} bytes")

    with pytest.raises(Interrupted):
        push_images(ssh, [third], insecure_registries=[registry.address], progress=cut)
    # the host's load saw its stdin end mid-blob: it fails, removes its staging, records nothing
    def settled() -> bool:  # no load running ([p]: pgrep must not match its own shell) and no staging left
        busy = ssh.run(["pgrep", "-f", "[p]rovision .*image load"], check=False).returncode == 0
        return not busy and ssh.run(["ls", "-A", incoming], sudo=True).stdout.split() == [".lock"]

    wait_until(settled, timeout=90, interval=0.5, what="the interrupted load to exit and its staging to go")
    assert host_images(ssh) == before

    third_report, busybox_report = push_images(ssh, [third, busybox], insecure_registries=[registry.address])
    print(f"\nafter the interruption: {third_report.to_json()}")
    assert (third_report.sent, third_report.skipped) == ([1], [0]) and third_report.bytes_sent > 2 << 20
    assert busybox_report.up_to_date
    assert host_images(ssh)[third] == third_report.manifest_digest


def test_cli_push_finds_the_host_in_the_inventory(registry, vm, ssh, operator_key, tmp_path):
    root = tmp_path / "operator"
    inventory.save(root, inventory.HostRecord(
        stack=STACK, host=HOST, cloud="local", address="127.0.0.1", port=vm.ssh_port, user=vm.user,
        key_file=str(operator_key), fingerprints=tuple(f["sha256"] for f in vm.fingerprints)))
    proc = subprocess.run([sys.executable, "-m", "provisioner.cli.main", "--root", str(root), "image", "push",
                           "--json", HOST, f"{registry.address}/test/busybox:1",
                           "--insecure-registry", registry.address], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["host"] == f"{STACK}/{HOST}" and data["up_to_date"] and data["bytes_sent"] == 0


def test_destroy_leaves_nothing(cloud, vm, ssh):
    ssh.close()
    directory = cloud.host_dir(STACK, HOST)
    assert cloud.destroy(STACK) == [HOST]
    assert qemu_processes_for(directory) == []
    assert not directory.exists()
    assert wait_not_listening(vm.ssh_port)
