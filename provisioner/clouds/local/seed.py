"""The NoCloud seed: user-data, meta-data and network-config on an ISO labelled `cidata`."""
from __future__ import annotations

from pathlib import Path

import yaml

from ...fsutil import atomic_write
from ...runner import Runner
from .spec import VmSpec

MAC_PREFIX = "52:54:00"


def mac_for(stack: str, host: str) -> str:
    import hashlib

    h = hashlib.sha256(f"{stack}/{host}".encode()).hexdigest()
    return f"{MAC_PREFIX}:{h[0:2]}:{h[2:4]}:{h[4:6]}"


def user_data(spec: VmSpec) -> str:
    if spec.user_data is not None:
        return spec.user_data
    doc = {
        "hostname": spec.host,
        "manage_etc_hosts": True,
        "users": [{
            "name": spec.user, "shell": "/bin/bash", "groups": ["sudo"],
            "sudo": "ALL=(ALL) NOPASSWD:ALL", "lock_passwd": True,
            "ssh_authorized_keys": [spec.ssh_public_key.strip()],
        }],
        "disable_root": True,
        "ssh_pwauth": False,
        # Host keys are made fresh in the VM and their fingerprints printed on the console, where
        # the operator side reads them to verify the first SSH connection.
        "ssh_deletekeys": True,
        "ssh_genkeytypes": ["ed25519", "ecdsa"],
        "ssh_quiet_keygen": True,
        "ssh_fp_console_blacklist": [],
        "ssh_key_console_blacklist": [],
        "resize_rootfs": True,
    }
    doc.update(spec.extra_user_data)
    return "#cloud-config\n" + yaml.safe_dump(doc, sort_keys=False, width=1 << 16)


def meta_data(spec: VmSpec, instance_id: str) -> str:
    return yaml.safe_dump({"instance-id": instance_id, "local-hostname": spec.host}, sort_keys=False)


def network_config(spec: VmSpec) -> str:
    return yaml.safe_dump({"version": 2, "ethernets": {"nic0": {
        "match": {"macaddress": mac_for(spec.stack, spec.host)}, "dhcp4": True}}},
        sort_keys=False)


def build_seed(spec: VmSpec, instance_id: str, workdir: Path, iso: Path, runner: Runner) -> None:
    files = {"user-data": user_data(spec), "meta-data": meta_data(spec, instance_id),
             "network-config": network_config(spec)}
    workdir.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        atomic_write(workdir / name, text, mode=0o600)
    runner.run(["genisoimage", "-quiet", "-output", str(iso), "-volid", "cidata", "-joliet", "-rock",
                *[str(workdir / n) for n in files]])
