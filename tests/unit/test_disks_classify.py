"""Classification of every recorded disk identity, with udev's ID_* properties (udevd ran) and
from sysfs attributes alone (no udevd: containers, this build machine) — both must agree."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from provisioner.disks.classify import aws_volume_id, classify, clean, vpd_serial
from provisioner.disks.facts import RawDisk

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "udev"
NAMES = sorted(p.stem for p in FIXTURES.glob("*.json"))


def load(name: str, with_udev: bool) -> tuple[RawDisk, dict, bool]:
    data = json.loads((FIXTURES / f"{name}.json").read_text())
    raw = dict(data["raw"])
    attrs = dict(raw.pop("attributes"))
    if "vpd_pg80_hex" in attrs:
        attrs["vpd_pg80"] = bytes.fromhex(attrs.pop("vpd_pg80_hex"))
    props = dict(raw.pop("properties"))
    if not with_udev:  # what the udev database holds when no udevd ever ran
        props = {k: v for k, v in props.items() if not k.startswith("ID_") and k != "DEVLINKS"}
    expected = dict(data["expected"])
    if not with_udev:
        expected.update(data.get("expected_without_udev", {}))
    return RawDisk(properties=props, attributes=attrs, **raw), expected, data.get("holds_root", False)


def test_every_identity_has_a_fixture():
    needed = {"aws-nitro-ebs", "aws-nitro-instance-store", "aws-xen-xvdf", "gce-scsi-pd",
              "gce-scsi-local-ssd", "gce-nvme-local-ssd", "gce-nvme-pd", "virtio-plain", "loop"}
    assert needed <= set(NAMES)


@pytest.mark.parametrize("with_udev", [True, False], ids=["udev", "sysfs-only"])
@pytest.mark.parametrize("name", NAMES)
def test_classify_fixture(name, with_udev):
    raw, expected, holds_root = load(name, with_udev)
    ident = classify(raw, holds_root=holds_root)
    got = {k: getattr(ident, k) for k in expected}
    assert got == expected


def test_holding_root_wins_over_any_identity():
    raw, _, _ = load("aws-nitro-instance-store", True)
    assert classify(raw, holds_root=True).role == "root"


@pytest.mark.parametrize("serial,expected", [
    ("vol0a1b2c3d4e5f60718", "vol-0a1b2c3d4e5f60718"),
    ("vol-0a1b2c3d4e5f60718", "vol-0a1b2c3d4e5f60718"),
    ("AWS1F2E3D4C5B6A79801", None),
    ("", None),
])
def test_aws_volume_id(serial, expected):
    assert aws_volume_id(serial) == expected


def test_clean_strips_sysfs_padding():
    assert clean(b"Amazon Elastic Block Store              \n") == "Amazon Elastic Block Store"
    assert clean(None) == ""


def test_vpd_serial():
    assert vpd_serial(bytes([0, 0x80, 0, 6]) + b"data-1") == "data-1"
    assert vpd_serial(b"\x00") == ""
    assert vpd_serial(None) == ""
