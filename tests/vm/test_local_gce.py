"""A real local VM with GCE-style SCSI disks: udev in the guest must report what GCE's would."""
from __future__ import annotations

import pytest

from provisioner.clouds.local import VmSpec, VolumeDisk, state
from provisioner.host.ssh import SshClient, target_for

from conftest import public_key
from vmhelpers import qemu_processes_for, wait_not_listening

pytestmark = pytest.mark.vm

STACK = "vmgce"


@pytest.fixture(scope="module")
def vm(cloud, operator_key):
    spec = VmSpec(STACK, "db", public_key(operator_key), style="gce", ephemeral=1,
                  volumes=(VolumeDisk("pgdata", 512),))
    st = cloud.launch(spec, timeout=420)
    print(f"\nboot: {st.boot_seconds}s to SSH host keys on the console ({st.accel})")
    yield st
    cloud.destroy(STACK)


def test_gce_style_scsi_disks_in_udev(cloud, vm, operator_key):
    st = vm
    with SshClient(target_for([f["sha256"] for f in st.fingerprints], st.ssh_port, st.user, operator_key)) as ssh:
        ssh.wait_ready(timeout=120)
        found = {}
        for name in ssh.run("ls /sys/block").stdout.split():
            if not name.startswith("sd"):
                continue
            out = ssh.run(["udevadm", "info", "--query=property", "--name", f"/dev/{name}"]).stdout
            props = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
            found[props.get("ID_SERIAL_SHORT")] = props
    assert set(found) == {"local-ssd-0", "pgdata"}, found
    assert found["pgdata"]["ID_VENDOR"] == "Google"
    assert found["pgdata"]["ID_MODEL"] == "PersistentDisk"
    assert found["local-ssd-0"]["ID_VENDOR"] == "Google"
    assert found["local-ssd-0"]["ID_MODEL"] == "EphemeralDisk"
    assert found["pgdata"]["ID_BUS"] == "scsi"


def _by_serial(ssh, serial: str) -> str:
    import json

    out = json.loads(ssh.run(["lsblk", "--json", "-d", "-o", "NAME,SERIAL"]).stdout)
    return next("/dev/" + d["name"] for d in out["blockdevices"] if (d.get("serial") or "").strip() == serial)


def test_reboot_keeps_host_keys_and_volume_data(cloud, vm, operator_key):
    import time

    st = vm
    target = target_for([f["sha256"] for f in st.fingerprints], st.ssh_port, st.user, operator_key)
    with SshClient(target) as ssh:
        ssh.wait_ready(timeout=120)
        dev = _by_serial(ssh, "pgdata")
        ssh.run(f"mkfs.ext4 -q {dev} && mount {dev} /mnt && echo keep-me > /mnt/marker && umount /mnt", sudo=True)
        boot_id = ssh.run(["cat", "/proc/sys/kernel/random/boot_id"]).stdout.strip()
        # reboot from a transient unit so this SSH command returns before the connection drops
        ssh.run(["systemd-run", "--on-active=1", "systemctl", "reboot"], sudo=True)
    start = time.monotonic()
    while True:  # the same pinned fingerprints must be accepted after the reboot
        client = SshClient(target)
        try:
            client.wait_ready(timeout=600)  # a reboot on a loaded TCG host: 2–5 minutes
            now = client.run(["cat", "/proc/sys/kernel/random/boot_id"]).stdout.strip()
            if now != boot_id:
                break
        finally:
            client.close()
        assert time.monotonic() - start < 700, "VM did not come back from the reboot"
        time.sleep(2)
    print(f"\nreboot: SSH back after {time.monotonic() - start:.1f}s")
    with SshClient(target) as ssh:
        dev = _by_serial(ssh, "pgdata")
        out = ssh.run(f"mount {dev} /mnt && cat /mnt/marker; umount /mnt", sudo=True).stdout
        assert out.strip() == "keep-me"
    assert state.qemu_alive(st.pid, cloud.host_dir(STACK, "db"))  # the same qemu process: a guest reboot


def test_destroy_keep_volumes_keeps_only_the_volume_files(cloud, vm):
    st = vm
    directory = cloud.host_dir(STACK, "db")
    assert cloud.destroy(STACK, keep_volumes=True) == ["db"]
    assert qemu_processes_for(directory) == []
    assert wait_not_listening(st.ssh_port)
    left = sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))
    assert left == ["volumes", "volumes/pgdata.json", "volumes/pgdata.qcow2"]
    # A second destroy without keep removes the kept volume too.
    assert cloud.destroy(STACK) == ["db"]
    assert not directory.parent.exists()
