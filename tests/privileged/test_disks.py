"""The disk layer on real loop devices: real mkfs.btrfs, mounts, fstab (a temp one), and the
safety property — never format a disk holding data — checked on the real result.

Every test makes its own sparse files and loop devices under tmp_path and, even on failure,
unmounts what it mounted, makes btrfs forget the devices, and detaches them.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from provisioner.disks.actions import DeviceScan, Grow, Mkfs, Mount, WriteFstab
from provisioner.disks.apply import apply
from provisioner.disks.config import parse_config
from provisioner.disks.discover import discover, gather
from provisioner.disks.fstab import managed_lines
from provisioner.disks.plan import plan
from provisioner.errors import DiskError
from provisioner.runner import Runner
from provisioner import yamlutil

pytestmark = pytest.mark.privileged

MiB = 2**20
SIZE = 300 * MiB


def sh(*argv, check=True) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, check=check)


def _mounts_under(root: Path) -> list[str]:
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mp = line.split()[4].replace("\\040", " ")
        if mp == str(root) or mp.startswith(str(root) + "/"):
            out.append(mp)
    return out


def _attach(path: Path) -> str:
    # another process may take the free device between find and attach: retry
    for _ in range(20):
        r = sh("losetup", "--find", "--show", path, check=False)
        if r.returncode == 0:
            return r.stdout.strip()
        time.sleep(0.1)
    raise RuntimeError(f"could not attach {path}: {r.stderr.strip()}")


class Host:
    """One test's loop devices, temp fstab and mount area."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.mnt = tmp / "mnt"
        self.fstab = tmp / "fstab"
        self.fstab.write_text("# test fstab\n/dev/vdz1 /srv/other ext4 defaults 0 2\n")
        self.loops: list[str] = []
        self.files: dict[str, Path] = {}
        self.runner = Runner()

    def loop(self, n: int, size: int = SIZE) -> list[str]:
        made = []
        for _ in range(n):
            f = self.tmp / f"disk{len(self.files)}.img"
            with open(f, "wb") as fh:
                fh.truncate(size)
            dev = _attach(f)
            self.loops.append(dev)
            self.files[dev] = f
            made.append(dev)
        return made

    def write_config(self, text: str) -> Path:
        path = self.tmp / "disks.yaml"
        path.write_text(text)
        return path

    def config(self, text: str):
        path = self.write_config(text)
        return parse_config(yamlutil.load(path), str(path)), path

    def plan(self, cfg):
        return plan(gather(self.runner, cfg.mountpoints(), fstab_path=str(self.fstab)), cfg)

    def apply(self, cfg):
        p = self.plan(cfg)
        apply(p, self.runner, fstab_path=str(self.fstab))
        return p

    def unmount_all(self):
        for mp in sorted(_mounts_under(self.tmp), key=len, reverse=True):
            if sh("umount", mp, check=False).returncode != 0:
                sh("umount", "-l", mp, check=False)

    def cleanup(self):
        self.unmount_all()
        for dev in self.loops:
            sh("btrfs", "device", "scan", "--forget", dev, check=False)
            sh("losetup", "-d", dev, check=False)


@pytest.fixture
def host(tmp_path):
    h = Host(tmp_path)
    try:
        yield h
    finally:
        h.cleanup()


def wipe(dev: str, timeout: float = 15.0) -> None:
    """wipefs -a, polling while busy: on a shared machine another process's new mount namespace
    can hold a copy of our mount for a moment after we unmount it."""
    deadline = time.monotonic() + timeout
    while True:
        r = sh("wipefs", "-a", dev, check=False)
        if r.returncode == 0:
            return
        assert "busy" in r.stderr and time.monotonic() < deadline, r.stderr
        time.sleep(0.1)


def blkid(dev: str) -> dict:
    r = sh("blkid", "-p", "-o", "export", dev, check=False)
    return dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)


def findmnt(mp: Path) -> dict:
    r = sh("findmnt", "-J", "-o", "TARGET,SOURCE,FSTYPE,OPTIONS", "--mountpoint", mp, check=False)
    return json.loads(r.stdout)["filesystems"][0] if r.returncode == 0 else {}


def fs_show(mp: Path) -> str:
    return sh("btrfs", "filesystem", "show", "--raw", mp).stdout


def eph_config(h: Host, devs: list[str], extra: str = "") -> str:
    return f"ephemeral:\n  mount: {h.mnt / 'eph'}\n  devices: [{', '.join(devs)}]\n{extra}"


def vol_config(h: Host, dev: str, name: str = "data") -> str:
    return f"volumes:\n  - name: {name}\n    match: {{device: {dev}}}\n    mount: {h.mnt / name}\n"


def kinds(p) -> list[str]:
    return [type(a).__name__ for a in p.actions]


def test_fresh_raid0_over_three_devices_plus_a_volume(host):
    eph, (vol,) = host.loop(3), host.loop(1)
    cfg, _ = host.config(eph_config(host, eph) + vol_config(host, vol))
    first = host.apply(cfg)
    assert kinds(first) == ["Mkfs", "Mkfs", "MakeDir", "DeviceScan", "Mount", "MakeDir", "Mount", "WriteFstab"]

    show = fs_show(host.mnt / "eph")
    assert "Label: 'prov-ephemeral'" in show and "Total devices 3" in show
    assert all(d in show for d in eph)
    df = sh("btrfs", "filesystem", "df", host.mnt / "eph").stdout
    assert "Data, RAID0" in df and "Metadata, RAID1" in df
    m = findmnt(host.mnt / "eph")
    assert m["fstype"] == "btrfs" and m["source"] in eph
    assert "noatime" in m["options"] and "compress=zstd:1" in m["options"]
    assert {"nosuid", "nodev"} <= set(m["options"].split(","))   # what images bring is inert here
    assert findmnt(host.mnt / "data")["source"] == vol
    assert "Label: 'prov-vol-data'" in fs_show(host.mnt / "data")

    uuid = blkid(eph[0])["UUID"]
    assert all(blkid(d)["UUID"] == uuid for d in eph)
    text = host.fstab.read_text()
    assert text.startswith("# test fstab\n/dev/vdz1 /srv/other ext4 defaults 0 2\n")  # others' lines kept
    lines = managed_lines(text)
    assert lines[0] == (f"UUID={uuid} {host.mnt / 'eph'} btrfs noatime,nosuid,nodev,compress=zstd:1,nofail,"
                        "x-systemd.device-timeout=30s 0 0")
    assert lines[1].startswith(f"UUID={blkid(vol)['UUID']} {host.mnt / 'data'} btrfs ")

    facts = {d.node: d for d in discover(host.runner)}
    for d in eph:
        assert facts[d].bus == "loop" and facts[d].role == "other" and facts[d].size == SIZE
        assert facts[d].mountpoints == (str(host.mnt / "eph"),)  # every btrfs member, not just the source

    assert host.plan(cfg).empty  # converged: second plan is empty
    assert host.apply(cfg).empty


def test_reboot_only_mounts_no_mkfs(host):
    eph = host.loop(3)
    cfg, _ = host.config(eph_config(host, eph))
    host.apply(cfg)
    (host.mnt / "eph" / "keep.txt").write_text("survives reboot")
    uuid = blkid(eph[0])["UUID"]
    fstab_before = host.fstab.read_text()
    host.unmount_all()
    for d in eph:  # a fresh boot: the kernel has not seen these devices yet
        sh("btrfs", "device", "scan", "--forget", d, check=False)

    p = host.apply(cfg)
    assert kinds(p) == ["DeviceScan", "Mount"]
    assert (host.mnt / "eph" / "keep.txt").read_text() == "survives reboot"
    assert blkid(eph[0])["UUID"] == uuid
    assert host.fstab.read_text() == fstab_before
    assert host.plan(cfg).empty


def test_wiped_ephemeral_set_is_recreated(host):
    eph = host.loop(3)
    cfg, _ = host.config(eph_config(host, eph))
    host.apply(cfg)
    old = blkid(eph[0])["UUID"]
    host.unmount_all()
    for d in eph:  # what a stop/start does to instance store
        sh("btrfs", "device", "scan", "--forget", d, check=False)
        wipe(d)

    p = host.apply(cfg)
    assert kinds(p) == ["Mkfs", "DeviceScan", "Mount", "WriteFstab"]
    new = blkid(eph[0])["UUID"]
    assert new != old and "Total devices 3" in fs_show(host.mnt / "eph")
    lines = managed_lines(host.fstab.read_text())
    assert len(lines) == 1 and lines[0].startswith(f"UUID={new} ") and old not in host.fstab.read_text()


def test_volume_with_data_is_never_reformatted_and_grows(host):
    (vol,) = host.loop(1)
    cfg, _ = host.config(vol_config(host, vol))
    host.apply(cfg)
    data = host.mnt / "data" / "precious.txt"
    data.write_text("do not lose me")
    uuid = blkid(vol)["UUID"]
    for _ in range(2):  # re-runs, with and without an unmount in between
        host.unmount_all()
        p = host.apply(cfg)
        assert "Mkfs" not in kinds(p)
        assert host.apply(cfg).empty
    assert data.read_text() == "do not lose me" and blkid(vol)["UUID"] == uuid

    with open(host.files[vol], "r+b") as fh:  # the cloud volume was resized
        fh.truncate(600 * MiB)
    sh("losetup", "-c", vol)
    p = host.plan(cfg)
    assert p.actions == (Grow(vol, str(host.mnt / "data"), 1, SIZE, 600 * MiB),)
    apply(p, host.runner, fstab_path=str(host.fstab))
    assert f"devid    1 size {600 * MiB} " in fs_show(host.mnt / "data")
    assert data.read_text() == "do not lose me" and blkid(vol)["UUID"] == uuid
    assert host.plan(cfg).empty


def test_volume_with_a_foreign_filesystem_is_mounted_as_is(host):
    (vol,) = host.loop(1)
    sh("mkfs.ext4", "-q", "-F", vol)
    uuid = blkid(vol)["UUID"]
    cfg, _ = host.config(vol_config(host, vol))
    p = host.apply(cfg)
    assert kinds(p) == ["MakeDir", "Mount", "WriteFstab"]
    assert findmnt(host.mnt / "data")["fstype"] == "ext4"
    assert blkid(vol)["UUID"] == uuid
    assert host.plan(cfg).empty


def _has_cap(bit: int) -> bool:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> bit & 1)
    return False


@pytest.mark.skipif(not _has_cap(24), reason="online ext4 resize needs CAP_SYS_RESOURCE (absent in this sandbox)")
def test_ext4_volume_grows_online_with_resize2fs(host):
    (vol,) = host.loop(1)
    sh("mkfs.ext4", "-q", "-F", vol)
    uuid = blkid(vol)["UUID"]
    cfg, _ = host.config(vol_config(host, vol))
    host.apply(cfg)
    (host.mnt / "data" / "keep.txt").write_text("ext4 data")

    with open(host.files[vol], "r+b") as fh:  # the volume grew: resize2fs online, never mkfs
        fh.truncate(600 * MiB)
    sh("losetup", "-c", vol)
    p = host.apply(cfg)
    assert kinds(p) == ["Grow"] and p.actions[0].fstype == "ext4"
    assert os.statvfs(host.mnt / "data").f_blocks * os.statvfs(host.mnt / "data").f_frsize > 500 * MiB
    assert (host.mnt / "data" / "keep.txt").read_text() == "ext4 data" and blkid(vol)["UUID"] == uuid
    assert host.plan(cfg).empty


def _ext4_with_file(host, dev) -> str:
    sh("mkfs.ext4", "-q", "-F", dev)
    probe = host.tmp / "probe"
    probe.mkdir(exist_ok=True)
    sh("mount", dev, probe)
    (probe / "data.txt").write_text("user data")
    sh("umount", probe)
    return blkid(dev)["UUID"]


def _ext4_intact(host, dev, uuid):
    assert blkid(dev).get("TYPE") == "ext4" and blkid(dev)["UUID"] == uuid
    probe = host.tmp / "probe"
    sh("mount", "-o", "ro", dev, probe)
    try:
        assert (probe / "data.txt").read_text() == "user data"
    finally:
        sh("umount", probe)


def test_ext4_on_an_ephemeral_disk_is_refused_and_intact(host):
    eph = host.loop(2)
    uuid = _ext4_with_file(host, eph[1])
    cfg, _ = host.config(eph_config(host, eph))
    with pytest.raises(DiskError, match=f"refusing to format {eph[1]} as ephemeral: it holds an existing ext4 filesystem"):
        host.plan(cfg)
    _ext4_intact(host, eph[1], uuid)
    assert "TYPE" not in blkid(eph[0])  # the blank one was not touched either
    assert not (host.mnt / "eph").exists()


def test_wipe_true_allows_reusing_an_ephemeral_disk(host):
    eph = host.loop(2)
    _ext4_with_file(host, eph[1])
    cfg, _ = host.config(eph_config(host, eph, "  wipe: true\n"))
    p = host.apply(cfg)
    assert kinds(p)[:2] == ["Wipe", "Mkfs"]
    assert "Total devices 2" in fs_show(host.mnt / "eph")


def test_partition_table_on_an_ephemeral_disk_is_refused(host):
    (dev,) = host.loop(1)
    sh_in = subprocess.run(["sfdisk", "-q", "--no-reread", dev], input="label: gpt\n,\n", text=True,
                           capture_output=True)
    assert blkid(dev).get("PTTYPE") == "gpt", sh_in.stderr
    cfg, _ = host.config(eph_config(host, [dev]))
    with pytest.raises(DiskError, match=f"{dev} as ephemeral: it holds a gpt partition table"):
        host.plan(cfg)
    assert blkid(dev).get("PTTYPE") == "gpt"


def test_mounted_disk_is_refused_even_with_wipe(host):
    (dev,) = host.loop(1)
    sh("mkfs.btrfs", "-q", "-L", "someone-else", dev)
    elsewhere = host.tmp / "elsewhere"
    elsewhere.mkdir()
    sh("mount", dev, elsewhere)
    (elsewhere / "busy.txt").write_text("in use")
    cfg, _ = host.config(eph_config(host, [dev], "  wipe: true\n"))
    with pytest.raises(DiskError, match=f"refusing to format {dev} as ephemeral: it is mounted at {elsewhere}"):
        host.plan(cfg)
    assert findmnt(elsewhere)["source"] == dev
    assert (elsewhere / "busy.txt").read_text() == "in use"


def test_signature_appearing_after_planning_stops_apply(host):
    (dev,) = host.loop(1)
    cfg, _ = host.config(eph_config(host, [dev]))
    p = host.plan(cfg)
    assert isinstance(p.actions[0], Mkfs)
    uuid = _ext4_with_file(host, dev)  # someone formats it between plan and apply
    with pytest.raises(DiskError, match=f"refusing to format {dev}: a signature \\(ext4\\) appeared"):
        apply(p, host.runner, fstab_path=str(host.fstab))
    _ext4_intact(host, dev, uuid)


def provision(*args, check_rc=None) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "provisioner.cli.main", *map(str, args)],
                       capture_output=True, text=True)
    if check_rc is not None:
        assert r.returncode == check_rc, r.stderr
    return r


BAD_INPUTS = {
    "unknown device": ("ephemeral:\n  mount: {mnt}/eph\n  devices: [{d0}, /dev/loop-nope]\n",
                       "disks.yaml:3: ephemeral.devices: unknown device /dev/loop-nope"),
    "missing key": ("volumes:\n  - name: data\n    mount: {mnt}/data\n",
                    "disks.yaml:3: volume 'data': no 'match:' says which disk it is"),
    "mount under a file": ("ephemeral:\n  mount: {mnt}/afile/eph\n  devices: [{d0}]\n",
                           "disks.yaml:2: ephemeral: mountpoint {mnt}/afile/eph is under {mnt}/afile"),
    "duplicate mountpoints": ("ephemeral:\n  mount: {mnt}/x\n  devices: [{d0}]\nvolumes:\n  - name: v\n"
                              "    match: {{device: {d1}}}\n    mount: {mnt}/x\n",
                              "disks.yaml:7: volume 'v': mountpoint {mnt}/x is already used by ephemeral"),
}


@pytest.mark.parametrize("case", BAD_INPUTS.keys())
def test_bad_input_is_one_line_and_touches_nothing(host, case):
    d0, d1 = host.loop(2)
    host.mnt.mkdir()
    (host.mnt / "afile").write_text("I am a file")
    text, message = BAD_INPUTS[case]
    path = host.write_config(text.format(mnt=host.mnt, d0=d0, d1=d1))
    fstab_before = host.fstab.read_text()
    r = provision("host", "disks", "apply", "--config", path, "--fstab", host.fstab, check_rc=2)
    (line,) = r.stderr.splitlines()
    assert line.startswith(f"error: {host.tmp}/" + message.format(mnt=host.mnt))
    assert r.stdout == ""
    assert "TYPE" not in blkid(d0) and "TYPE" not in blkid(d1)
    assert host.fstab.read_text() == fstab_before
    assert sorted(p.name for p in host.mnt.iterdir()) == ["afile"]


def test_cli_end_to_end_and_snapshots(host):
    eph, (vol,) = host.loop(2), host.loop(1)
    _, path = host.config(eph_config(host, eph) + vol_config(host, vol))
    common = ["--config", path, "--fstab", host.fstab]
    r = provision("--json", "host", "disks", "plan", *common, check_rc=0)
    assert [a["action"] for a in json.loads(r.stdout)["actions"]][:2] == ["mkfs", "mkfs"]
    r = provision("host", "disks", "apply", *common, check_rc=0)
    assert "[1/" in r.stderr and "applied" in r.stdout
    r = provision("host", "disks", "plan", *common, check_rc=0)
    assert "nothing to do" in r.stdout

    mnt = host.mnt / "data"
    (mnt / "f.txt").write_text("v1")
    provision("host", "disks", "snapshot", mnt, "--name", "s1", check_rc=0)
    (mnt / "f.txt").write_text("v2")
    r = provision("host", "disks", "snapshot", "list", mnt, "--json", check_rc=0)
    assert [s["name"] for s in json.loads(r.stdout)] == ["s1"]
    snap = mnt / ".snapshots" / "s1"
    assert (snap / "f.txt").read_text() == "v1"
    with pytest.raises(OSError):
        (snap / "new.txt").write_text("read-only snapshot")
    r = provision("host", "disks", "snapshot", mnt, "--name", "s1")
    assert r.returncode == 1 and "already exists" in r.stderr
    provision("host", "disks", "snapshot", "delete", mnt, "s1", check_rc=0)
    assert not snap.exists()
    r = provision("host", "disks", "snapshot", "list", mnt, check_rc=0)
    assert "no snapshots" in r.stdout
    r = provision("host", "disks", "snapshot", "delete", mnt, "s1")
    assert r.returncode == 1 and "no snapshot 's1'" in r.stderr


def test_disk_mounted_in_another_mount_namespace_is_never_wiped(host):
    """Our mountinfo cannot see a mount in another namespace; the O_EXCL open in apply can."""
    (dev,) = host.loop(1)
    sh("mkfs.btrfs", "-q", "-L", "someone-else", dev)
    hidden = host.tmp / "hidden"
    hidden.mkdir()
    holder = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         f"mount {dev} {hidden} && echo ready && exec sleep 120"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready", holder.stderr.read()
        assert findmnt(hidden) == {}  # invisible here
        cfg, _ = host.config(eph_config(host, [dev], "  wipe: true\n"))
        p = host.plan(cfg)
        assert kinds(p)[:2] == ["Wipe", "Mkfs"]  # the plan cannot know...
        with pytest.raises(DiskError, match=f"refusing to touch {dev}: the kernel reports it in use"):
            apply(p, host.runner, fstab_path=str(host.fstab))  # ...apply refuses
        assert blkid(dev)["LABEL"] == "someone-else"
    finally:
        holder.kill()
        holder.wait()


def test_active_swap_on_an_ephemeral_disk_is_refused(host):
    (dev,) = host.loop(1, size=64 * MiB)
    sh("mkswap", dev)
    if sh("swapon", dev, check=False).returncode != 0:
        pytest.skip("swapon not permitted here")
    try:
        cfg, _ = host.config(eph_config(host, [dev], "  wipe: true\n"))
        with pytest.raises(DiskError, match=f"refusing to format {dev} as ephemeral: it is mounted at \\[swap\\]"):
            host.plan(cfg)
        assert dev in Path("/proc/swaps").read_text()
    finally:
        sh("swapoff", dev, check=False)
