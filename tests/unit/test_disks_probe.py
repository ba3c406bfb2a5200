"""Parsers of blkid, wipefs, dump-super and mountinfo output, and the probes through a FakeRunner."""
from __future__ import annotations

import pytest

from provisioner.disks.facts import Signature
from provisioner.disks.probe import (parse_blkid_export, parse_dump_super, parse_dumpe2fs, parse_mountinfo,
                                     probe_btrfs_super, probe_signature, probe_wipefs)
from provisioner.errors import CommandError, DiskError
from provisioner.testing import FakeRunner

BLKID_BTRFS = """DEVNAME=/dev/loop0
LABEL=prov-ephemeral
UUID=11111111-2222-3333-4444-555555555555
UUID_SUB=218be4d7-1251-4508-b579-e9a4e4148d76
BLOCK_SIZE=4096
TYPE=btrfs
USAGE=filesystem
"""
BLKID_GPT = "DEVNAME=/dev/loop1\nPTUUID=27cd8aa7-a56b-7349-830d-bcccc0675420\nPTTYPE=gpt\n"
DUMP_SUPER = """superblock: bytenr=65536, device=/dev/loop0
---------------------------------------------------------
csum_type		0 (crc32c)
fsid			11111111-2222-3333-4444-555555555555
label			prov-ephemeral
total_bytes		629145600
num_devices		2
dev_item.total_bytes	314572800
dev_item.devid		1
"""
MOUNTINFO = """22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard
43 22 0:39 / /tmp/with\\040space rw,noatime - btrfs /dev/loop0 rw,compress=zstd:1,subvol=/
44 22 0:40 / /run rw - tmpfs tmpfs rw
"""


def test_parse_blkid():
    assert parse_blkid_export(BLKID_BTRFS) == Signature("btrfs", "11111111-2222-3333-4444-555555555555",
                                                        "prov-ephemeral", None)
    assert parse_blkid_export(BLKID_GPT) == Signature(pttype="gpt")
    assert parse_blkid_export("").blank


def test_probe_signature_exit_2_means_blank():
    r = FakeRunner().expect(["blkid", "-p", "-o", "export", "/dev/loop0"], returncode=2)
    assert probe_signature(r, "/dev/loop0") == Signature()


def test_probe_signature_unnamed_signature_counts_as_data():
    r = FakeRunner().expect(["blkid", "-p", "-o", "export", "/dev/loop0"], stdout="USAGE=other\n")
    assert probe_signature(r, "/dev/loop0").fstype == "unknown"


def test_probe_signature_other_failures_raise():
    r = FakeRunner().expect(["blkid", "-p", "-o", "export", "/dev/loop0"], returncode=4, stderr="boom")
    with pytest.raises(CommandError, match="exit 4"):
        probe_signature(r, "/dev/loop0")


def test_probe_wipefs():
    r = FakeRunner().expect(["wipefs", "--no-act", "--json", "/dev/loop0"],
                            stdout='{"signatures": [{"device": "loop0", "type": "ext4"}]}')
    assert probe_wipefs(r, "/dev/loop0") == [{"device": "loop0", "type": "ext4"}]
    r = FakeRunner().expect(["wipefs", "--no-act", "--json", "/dev/loop0"], stdout="")
    assert probe_wipefs(r, "/dev/loop0") == []
    r = FakeRunner().expect(["wipefs", "--no-act", "--json", "/dev/loop0"], stdout="garbage")
    with pytest.raises(DiskError, match="cannot parse wipefs"):
        probe_wipefs(r, "/dev/loop0")


def test_parse_dump_super():
    sb = parse_dump_super(DUMP_SUPER)
    assert (sb.fsid, sb.label, sb.num_devices, sb.devid, sb.dev_size) == (
        "11111111-2222-3333-4444-555555555555", "prov-ephemeral", 2, 1, 314572800)
    assert parse_dump_super("nonsense") is None
    r = FakeRunner().expect(["btrfs", "inspect-internal", "dump-super", "/dev/loop0"], stdout=DUMP_SUPER)
    assert probe_btrfs_super(r, "/dev/loop0") == sb


def test_parse_mountinfo_unescapes_and_reads_fields():
    root, btr, run = parse_mountinfo(MOUNTINFO)
    assert (root.mountpoint, root.fstype, root.source, root.major_minor) == ("/", "ext4", "/dev/vda", "254:0")
    assert btr.mountpoint == "/tmp/with space"
    assert "compress=zstd:1" in btr.options
    assert run.fstype == "tmpfs"


def test_parse_dumpe2fs():
    text = "dumpe2fs 1.47.0 (5-Feb-2023)\nFilesystem volume name:   <none>\nBlock count:              76800\n" \
           "Block size:               4096\n"
    assert parse_dumpe2fs(text) == 76800 * 4096
    assert parse_dumpe2fs("garbage") is None
