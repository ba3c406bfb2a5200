"""Discovery without a real udev: a fake pyudev device tree (sysfs attributes only, as on a
machine without udevd) and a fake sysfs for mount resolution."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from provisioner.disks.discover import (build_disks, mount_map, path_state, probe_all,
                                        raw_from_udev, whole_disks_of)
from provisioner.disks.facts import RawDisk, Signature
from provisioner.disks.probe import parse_mountinfo, parse_swaps
from provisioner.testing import FakeRunner


class FakeAttributes:
    def __init__(self, values):
        self.values = {k: (v if isinstance(v, bytes) else v.encode()) for k, v in values.items()}

    def get(self, name):
        return self.values.get(name)

    def asint(self, name):
        return int(self.values[name])


@dataclass
class FakeDevice:
    sys_name: str
    device_path: str
    attrs: dict = field(default_factory=dict)
    parents: dict = field(default_factory=dict)
    children: list = field(default_factory=list)
    device_type: str = "disk"
    properties: dict = field(default_factory=dict)
    device_links: list = field(default_factory=list)
    sys_path: str = "/nonexistent"

    @property
    def attributes(self):
        return FakeAttributes(self.attrs)

    @property
    def device_node(self):
        return f"/dev/{self.sys_name}"

    def find_parent(self, subsystem):
        return self.parents.get(subsystem)


def test_raw_from_udev_reads_nvme_parent_attributes():
    ctrl = FakeDevice("nvme1", "/devices/pci0000:00/0000:00:1f.0/nvme/nvme1",
                      attrs={"model": "Amazon EC2 NVMe Instance Storage        ", "serial": "AWS1F2E3D4C5B6A79801"})
    pci = FakeDevice("0000:00:1f.0", "/devices/pci0000:00/0000:00:1f.0", attrs={"vendor": "0x1d0f\n"})
    ctrl.parents = {"pci": pci}
    dev = FakeDevice("nvme1n1", "/devices/pci0000:00/0000:00:1f.0/nvme/nvme1/nvme1n1",
                     attrs={"size": "146484375", "queue/rotational": "0\n"}, parents={"nvme": ctrl},
                     children=[FakeDevice("nvme1n1p1", "/x", device_type="partition")])
    raw = raw_from_udev(dev)
    assert raw.parent_subsystem == "nvme"
    assert raw.size == 146484375 * 512
    assert raw.attributes["model"].strip() == "Amazon EC2 NVMe Instance Storage"
    assert raw.attributes["pci_vendor"] == "0x1d0f"
    assert raw.partitions == ("nvme1n1p1",)
    assert raw.rotational is False


def test_raw_from_udev_multipath_head_device_reads_subsystem_attributes():
    subsys = FakeDevice("nvme-subsys0", "/devices/virtual/nvme-subsystem/nvme-subsys0",
                        attrs={"model": "Amazon Elastic Block Store              ",
                               "serial": "vol0a1b2c3d4e5f60718"})
    head = FakeDevice("nvme0n1", "/devices/virtual/nvme-subsystem/nvme-subsys0/nvme0n1",
                      attrs={"size": "16777216"}, parents={"nvme-subsystem": subsys})
    raw = raw_from_udev(head)
    assert raw is not None and raw.parent_subsystem == "nvme"
    assert raw.attributes["serial"] == "vol0a1b2c3d4e5f60718"
    hidden_path = FakeDevice("nvme0c0n1", "/devices/pci0000:00/0000:00:04.0/nvme/nvme0/nvme0c0n1",
                             attrs={"size": "16777216", "hidden": "1"})
    assert raw_from_udev(hidden_path) is None


def test_raw_from_udev_skips_unattached_loops_ram_and_virtual_disks():
    assert raw_from_udev(FakeDevice("loop5", "/devices/virtual/block/loop5", attrs={"size": "0"})) is None
    assert raw_from_udev(FakeDevice("zram0", "/devices/virtual/block/zram0", attrs={"size": "8"})) is None
    assert raw_from_udev(FakeDevice("dm-0", "/devices/virtual/block/dm-0", attrs={"size": "8"})) is None
    loop = raw_from_udev(FakeDevice("loop2", "/devices/virtual/block/loop2",
                                    attrs={"size": "614400", "loop/backing_file": "/tmp/d.img\n"}))
    assert loop.backing_file == "/tmp/d.img" and loop.size == 300 * 2**20


def _fake_sysfs(tmp_path):
    """vda with partition vda1 holding /; loop0+loop1 one btrfs; dm-0 on loop2."""
    sysfs = tmp_path / "sys"
    devices = sysfs / "devices"
    for d in ("vda", "loop0", "loop1", "loop2", "dm-0"):
        (devices / d).mkdir(parents=True)
    (devices / "vda" / "vda1").mkdir()
    (devices / "vda" / "vda1" / "partition").write_text("1\n")
    (devices / "dm-0" / "slaves").mkdir()
    os.symlink(devices / "loop2", devices / "dm-0" / "slaves" / "loop2")
    cls = sysfs / "class" / "block"
    cls.mkdir(parents=True)
    for name, target in [("vda", "vda"), ("vda1", "vda/vda1"), ("loop0", "loop0"), ("loop1", "loop1"),
                         ("loop2", "loop2"), ("dm-0", "dm-0")]:
        os.symlink(devices / target, cls / name)
    dev = sysfs / "dev" / "block"
    dev.mkdir(parents=True)
    os.symlink(devices / "vda" / "vda1", dev / "254:1")
    os.symlink(devices / "dm-0", dev / "253:0")
    return str(sysfs)


MOUNTINFO = """22 1 254:1 / / rw - ext4 /dev/vda1 rw
40 22 0:39 / /mnt/eph rw - btrfs /dev/loop0 rw
41 22 253:0 / /mnt/dm rw - ext4 /dev/mapper/x rw
"""


def test_whole_disks_of_partitions_and_dm(tmp_path):
    sysfs = _fake_sysfs(tmp_path)
    assert whole_disks_of("vda1", sysfs) == {"vda"}
    assert whole_disks_of("dm-0", sysfs) == {"loop2"}
    assert whole_disks_of("loop0", sysfs) == {"loop0"}


def test_mount_map_sees_partitions_dm_and_every_btrfs_member(tmp_path):
    sysfs = _fake_sysfs(tmp_path)
    raws = [RawDisk(n, f"/dev/{n}", 1) for n in ("vda", "loop0", "loop1", "loop2")]
    sigs = {"loop0": Signature("btrfs", "U"), "loop1": Signature("btrfs", "U"), "vda": Signature(pttype="gpt"),
            "loop2": Signature()}
    mounted, root = mount_map(raws, sigs, parse_mountinfo(MOUNTINFO), sysfs)
    assert mounted == {"vda": ["/"], "loop0": ["/mnt/eph"], "loop1": ["/mnt/eph"], "loop2": ["/mnt/dm"]}
    assert root == {"vda"}
    disks = {d.name: d for d in build_disks(raws, sigs, {}, parse_mountinfo(MOUNTINFO), sysfs)}
    assert disks["vda"].holds_root and disks["vda"].role == "root"
    assert disks["loop1"].mounted and disks["loop1"].role == "other"


def test_probe_all_reads_btrfs_superblocks_only_for_btrfs():
    r = FakeRunner()
    r.expect(["blkid", "-p", "-o", "export", "/dev/loop0"], stdout="TYPE=btrfs\nUUID=U\nLABEL=prov-ephemeral\n")
    r.expect(["blkid", "-p", "-o", "export", "/dev/loop1"], returncode=2)
    r.expect(["btrfs", "inspect-internal", "dump-super", "/dev/loop0"],
             stdout="fsid U\nlabel prov-ephemeral\ntotal_bytes 10\nnum_devices 1\n"
                    "dev_item.total_bytes 10\ndev_item.devid 1\n")
    sigs, supers = probe_all(r, [RawDisk("loop0", "/dev/loop0", 10), RawDisk("loop1", "/dev/loop1", 10)])
    assert sigs["loop1"].blank and sigs["loop0"].fstype == "btrfs"
    assert supers["loop0"].num_devices == 1 and "loop1" not in supers


def test_path_state(tmp_path):
    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_text("x")
    assert path_state(str(tmp_path / "dir")) == "dir"
    assert path_state(str(tmp_path / "missing" / "x")) == "missing"
    assert path_state(str(tmp_path / "file" / "sub")) == f"file:{tmp_path / 'file'}"


def test_active_swap_marks_its_disk_in_use(tmp_path):
    sysfs = _fake_sysfs(tmp_path)
    swaps = parse_swaps("Filename\tType\tSize\tUsed\tPriority\n/dev/vda1 partition 1048572 0 -2\n"
                        "/swapfile file 1024 0 -3\n")
    raws = [RawDisk("vda", "/dev/vda", 1)]
    mounted, _ = mount_map(raws, {}, swaps, sysfs)
    assert mounted == {"vda": ["[swap]"]}
