"""Names clouds keep in NVMe identify data, parsed from synthetic 4 KiB identify pages."""
from __future__ import annotations

import json

from provisioner.disks.classify import classify
from provisioner.disks.facts import RawDisk
from provisioner.disks.nvme import _ADMIN_CMD, ebs_device_name, gce_device_name


def page(offset: int, payload: bytes) -> bytes:
    data = bytearray(4096)
    data[offset:offset + len(payload)] = payload
    return bytes(data)


def test_admin_command_struct_matches_the_kernel_abi():
    assert _ADMIN_CMD.size == 72  # sizeof(struct nvme_passthru_cmd)


def test_ebs_device_name_from_vendor_specific_area():
    assert ebs_device_name(page(3072, b"sdf")) == "sdf"
    assert ebs_device_name(page(3072, b"/dev/xvdba" + b" " * 22)) == "xvdba"
    assert ebs_device_name(page(3072, b"")) is None
    assert ebs_device_name(None) is None


def test_gce_device_name_from_namespace_json():
    blob = json.dumps({"device_name": "data-2", "disk_type": "PERSISTENT"}).encode()
    assert gce_device_name(page(384, blob)) == "data-2"
    assert gce_device_name(page(384, b"not json")) is None
    assert gce_device_name(page(384, b"")) is None
    assert gce_device_name(b"short") is None


def test_mapping_link_from_amazon_rules_when_identify_was_not_readable():
    raw = RawDisk("nvme1n1", "/dev/nvme1n1", 1, parent_subsystem="nvme",
                  attributes={"model": "Amazon Elastic Block Store", "serial": "vol0abc"},
                  properties={"DEVLINKS": "/dev/disk/by-id/nvme-x /dev/xvdg"})
    ident = classify(raw)
    assert (ident.volume_id, ident.device_name) == ("vol-0abc", "sdg")


def test_google_by_id_link_names_nvme_pd():
    raw = RawDisk("nvme0n2", "/dev/nvme0n2", 1, parent_subsystem="nvme", attributes={"model": "nvme_card-pd"},
                  links=("/dev/disk/by-id/google-logs",))
    assert classify(raw).device_name == "logs"
