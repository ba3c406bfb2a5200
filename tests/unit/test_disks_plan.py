"""The pure planner, table-driven: {facts, desired config, expected actions}, then every
refusal (the safety property: never format a disk holding data)."""
from __future__ import annotations

import itertools

import pytest

from provisioner import yamlutil
from provisioner.disks.actions import DeviceScan, Grow, MakeDir, Mkfs, Mount, Remount, Wipe, WriteFstab
from provisioner.disks.config import parse_config
from provisioner.disks.facts import Signature
from provisioner.disks.fstab import BEGIN, END
from provisioner.disks.plan import EPHEMERAL_LABEL, plan
from provisioner.disks.testing import btrfs_disk, make_disk, make_facts, mount_entry
from provisioner.errors import ConfigError, DiskError

U1, U2 = "11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222"
OLD = "99999999-9999-9999-9999-999999999999"
BTRFS_OPTS = "noatime,nosuid,nodev,compress=zstd:1,ssd,discard=async"
FSTAB_OPTS = BTRFS_OPTS + ",nofail,x-systemd.device-timeout=30s"


def uuids():
    it = iter([U1, U2])
    return lambda: next(it)


def cfg(text: str):
    return parse_config(yamlutil.loads(text, "disks.yaml"), "disks.yaml")


EPH3 = "ephemeral:\n  mount: /mnt/eph\n  devices: [/dev/loop1, /dev/loop2, /dev/loop3]\n"
VOL = "volumes:\n  - name: data\n    match: {device: /dev/loop4}\n    mount: /srv/data\n"
LOOPS = ["/dev/loop1", "/dev/loop2", "/dev/loop3"]


def fstab_with(*entries: str) -> str:
    return "\n".join(["/dev/vda1 / ext4 defaults 0 1", BEGIN, *entries, END]) + "\n"


def eph_entry(uuid=U1):
    return f"UUID={uuid} /mnt/eph btrfs {FSTAB_OPTS} 0 0"


def vol_entry(uuid, fstype="btrfs", opts=FSTAB_OPTS):
    return f"UUID={uuid} /srv/data {fstype} {opts} 0 0"


def ours(node, **kw):
    return btrfs_disk(node, OLD, EPHEMERAL_LABEL, num_devices=3, **kw)


CASES = {
    "fresh raid0 over three blank devices": dict(
        disks=[make_disk(n) for n in LOOPS], config=EPH3,
        expected=[
            Mkfs(tuple(LOOPS), EPHEMERAL_LABEL, U1, "raid0", "raid1"),
            MakeDir("/mnt/eph"), DeviceScan(tuple(LOOPS)),
            Mount("/dev/loop1", "/mnt/eph", "btrfs", BTRFS_OPTS),
            WriteFstab((eph_entry(),)),
        ]),
    "one ephemeral device: single data, dup metadata": dict(
        disks=[make_disk("/dev/loop1")],
        config="ephemeral:\n  mount: /mnt/eph\n  devices: [/dev/loop1]\n", paths={"/mnt/eph": "dir"},
        expected=[
            Mkfs(("/dev/loop1",), EPHEMERAL_LABEL, U1, "single", "dup"),
            Mount("/dev/loop1", "/mnt/eph", "btrfs", BTRFS_OPTS),
            WriteFstab((eph_entry(),)),
        ]),
    "rotational disks get no ssd/discard options": dict(
        disks=[make_disk("/dev/loop1", rotational=True)],
        config="ephemeral:\n  mount: /mnt/eph\n  devices: [/dev/loop1]\n", paths={"/mnt/eph": "dir"},
        expected=[
            Mkfs(("/dev/loop1",), EPHEMERAL_LABEL, U1, "single", "dup"),
            Mount("/dev/loop1", "/mnt/eph", "btrfs", "noatime,nosuid,nodev,compress=zstd:1"),
            WriteFstab((f"UUID={U1} /mnt/eph btrfs noatime,nosuid,nodev,compress=zstd:1,nofail,"
                        "x-systemd.device-timeout=30s 0 0",)),
        ]),
    "after reboot: our set is only scanned and mounted": dict(
        disks=[ours(n) for n in LOOPS], config=EPH3, paths={"/mnt/eph": "dir"},
        fstab=fstab_with(eph_entry(OLD)),
        expected=[DeviceScan(tuple(LOOPS)), Mount("/dev/loop1", "/mnt/eph", "btrfs", BTRFS_OPTS)]),
    "converged: nothing to do": dict(
        disks=[ours(n, mountpoints=("/mnt/eph",)) for n in LOOPS], config=EPH3,
        paths={"/mnt/eph": "dir"}, mounts=[mount_entry("/mnt/eph", "/dev/loop1")],
        fstab=fstab_with(eph_entry(OLD)), expected=[]),
    "mounted by an older version without nosuid,nodev: remounted with them": dict(
        disks=[ours(n, mountpoints=("/mnt/eph",)) for n in LOOPS], config=EPH3,
        paths={"/mnt/eph": "dir"}, mounts=[mount_entry("/mnt/eph", "/dev/loop1", options="rw,noatime")],
        fstab=fstab_with(eph_entry(OLD)), expected=[Remount("/mnt/eph", "nosuid,nodev")]),
    "converged but fstab lost our block: only fstab": dict(
        disks=[ours(n, mountpoints=("/mnt/eph",)) for n in LOOPS], config=EPH3,
        paths={"/mnt/eph": "dir"}, mounts=[mount_entry("/mnt/eph", "/dev/loop1")],
        fstab="/dev/vda1 / ext4 defaults 0 1\n", expected=[WriteFstab((eph_entry(OLD),))]),
    "blank again after stop/start: re-created": dict(
        disks=[make_disk(n) for n in LOOPS], config=EPH3, paths={"/mnt/eph": "dir"},
        fstab=fstab_with(eph_entry(OLD)),
        expected=[
            Mkfs(tuple(LOOPS), EPHEMERAL_LABEL, U1, "raid0", "raid1"), DeviceScan(tuple(LOOPS)),
            Mount("/dev/loop1", "/mnt/eph", "btrfs", BTRFS_OPTS),
            WriteFstab((eph_entry(),), removed=(eph_entry(OLD),)),
        ]),
    "wipe: true erases a foreign filesystem first": dict(
        disks=[make_disk("/dev/loop1", fstype="ext4", fs_uuid=OLD), make_disk("/dev/loop2", pttype="gpt")],
        config="ephemeral:\n  mount: /mnt/eph\n  wipe: true\n  devices: [/dev/loop1, /dev/loop2]\n",
        paths={"/mnt/eph": "dir"},
        expected=[
            Wipe("/dev/loop1", Signature("ext4", OLD)), Wipe("/dev/loop2", Signature(pttype="gpt")),
            Mkfs(("/dev/loop1", "/dev/loop2"), EPHEMERAL_LABEL, U1, "raid0", "raid1"),
            DeviceScan(("/dev/loop1", "/dev/loop2")), Mount("/dev/loop1", "/mnt/eph", "btrfs", BTRFS_OPTS),
            WriteFstab((eph_entry(),)),
        ]),
    "default selection: every ephemeral-role disk, never loops or volumes": dict(
        disks=[make_disk("/dev/nvme0n1", role="root", holds_root=True, mountpoints=("/",)),
               make_disk("/dev/nvme1n1", role="ephemeral", cloud="aws"),
               make_disk("/dev/nvme2n1", role="ephemeral", cloud="aws"),
               make_disk("/dev/nvme3n1", role="volume", cloud="aws", volume_id="vol-0abc"),
               make_disk("/dev/loop0")],
        config="ephemeral:\n  mount: /mnt/eph\n", paths={"/mnt/eph": "dir"},
        expected=[
            Mkfs(("/dev/nvme1n1", "/dev/nvme2n1"), EPHEMERAL_LABEL, U1, "raid0", "raid1"),
            DeviceScan(("/dev/nvme1n1", "/dev/nvme2n1")),
            Mount("/dev/nvme1n1", "/mnt/eph", "btrfs", BTRFS_OPTS), WriteFstab((eph_entry(),)),
        ]),
    "no ephemeral disks on this host: nothing, with a note": dict(
        disks=[make_disk("/dev/loop0")], config="ephemeral:\n  mount: /mnt/eph\n", expected=[],
        notes=["no ephemeral disks on this host; nothing to do for ephemeral"]),
    "blank volume: mkfs, mkdir, mount, fstab": dict(
        disks=[make_disk("/dev/loop4")], config=VOL,
        expected=[
            Mkfs(("/dev/loop4",), "prov-vol-data", U1, "single", "dup", role="volume"),
            MakeDir("/srv/data"), Mount("/dev/loop4", "/srv/data", "btrfs", BTRFS_OPTS),
            WriteFstab((vol_entry(U1),)),
        ]),
    "volume with ext4: mounted as-is, never formatted": dict(
        disks=[make_disk("/dev/loop4", fstype="ext4", fs_uuid=OLD)], config=VOL, paths={"/srv/data": "dir"},
        expected=[Mount("/dev/loop4", "/srv/data", "ext4", "noatime,nosuid,nodev"),
                  WriteFstab((vol_entry(OLD, "ext4", "noatime,nosuid,nodev,nofail,x-systemd.device-timeout=30s"),))]),
    "volume whose disk grew: mounted then grown": dict(
        disks=[btrfs_disk("/dev/loop4", OLD, "prov-vol-data", size=600 * 2**20, dev_size=300 * 2**20)],
        config=VOL, paths={"/srv/data": "dir"}, fstab=fstab_with(vol_entry(OLD)),
        expected=[Mount("/dev/loop4", "/srv/data", "btrfs", BTRFS_OPTS),
                  Grow("/dev/loop4", "/srv/data", 1, 300 * 2**20, 600 * 2**20)]),
    "mounted volume that grew: only grown": dict(
        disks=[btrfs_disk("/dev/loop4", OLD, "prov-vol-data", size=600 * 2**20, dev_size=300 * 2**20,
                          mountpoints=("/srv/data",))],
        config=VOL, paths={"/srv/data": "dir"}, fstab=fstab_with(vol_entry(OLD)),
        mounts=[mount_entry("/srv/data", "/dev/loop4")],
        expected=[Grow("/dev/loop4", "/srv/data", 1, 300 * 2**20, 600 * 2**20)]),
    "ext4 volume whose disk grew: resize2fs after mounting": dict(
        disks=[make_disk("/dev/loop4", fstype="ext4", fs_uuid=OLD, size=600 * 2**20, fs_size=300 * 2**20)],
        config=VOL, paths={"/srv/data": "dir"},
        fstab=fstab_with(vol_entry(OLD, "ext4", "noatime,nosuid,nodev,nofail,x-systemd.device-timeout=30s")),
        expected=[Mount("/dev/loop4", "/srv/data", "ext4", "noatime,nosuid,nodev"),
                  Grow("/dev/loop4", "/srv/data", 0, 300 * 2**20, 600 * 2**20, fstype="ext4")]),
    "volume matched by AWS volume id (either spelling)": dict(
        disks=[make_disk("/dev/nvme1n1", cloud="aws", role="volume", volume_id="vol-0abc",
                         fstype="xfs", fs_uuid=OLD)],
        config="volumes:\n  - name: data\n    match: {aws_volume_id: vol0abc}\n    mount: /srv/data\n",
        paths={"/srv/data": "dir"},
        expected=[Mount("/dev/nvme1n1", "/srv/data", "xfs", "noatime,nosuid,nodev"),
                  WriteFstab((vol_entry(OLD, "xfs", "noatime,nosuid,nodev,nofail,x-systemd.device-timeout=30s"),))]),
    "volume matched by GCE device name": dict(
        disks=[make_disk("/dev/sdb", cloud="gce", role="volume", device_name="data-1", rotational=True)],
        config="volumes:\n  - name: data\n    match: {gce_device_name: data-1}\n    mount: /srv/data\n",
        paths={"/srv/data": "dir"},
        expected=[Mkfs(("/dev/sdb",), "prov-vol-data", U1, "single", "dup", role="volume"),
                  Mount("/dev/sdb", "/srv/data", "btrfs", "noatime,nosuid,nodev,compress=zstd:1"),
                  WriteFstab((vol_entry(U1, opts="noatime,nosuid,nodev,compress=zstd:1,nofail,x-systemd.device-timeout=30s"),))]),
    "ephemeral and a volume nested under it: parent mounted first": dict(
        disks=[make_disk("/dev/loop1"), make_disk("/dev/loop4")],
        config=("volumes:\n  - name: data\n    match: {device: /dev/loop4}\n    mount: /mnt/eph/data\n"
                "ephemeral:\n  mount: /mnt/eph\n  devices: [/dev/loop1]\n"),
        expected=[
            Mkfs(("/dev/loop1",), EPHEMERAL_LABEL, U1, "single", "dup"),
            Mkfs(("/dev/loop4",), "prov-vol-data", U2, "single", "dup", role="volume"),
            MakeDir("/mnt/eph"), Mount("/dev/loop1", "/mnt/eph", "btrfs", BTRFS_OPTS),
            MakeDir("/mnt/eph/data"), Mount("/dev/loop4", "/mnt/eph/data", "btrfs", BTRFS_OPTS),
            WriteFstab((eph_entry(), f"UUID={U2} /mnt/eph/data btrfs {FSTAB_OPTS} 0 0")),
        ]),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_plan_cases(case):
    facts = make_facts(case["disks"], mounts=case.get("mounts", ()), fstab_text=case.get("fstab", ""),
                       paths=case.get("paths"))
    p = plan(facts, cfg(case["config"]), new_uuid=uuids())
    assert list(p.actions) == case["expected"]
    assert list(p.notes) == case.get("notes", [])
    assert p.empty == (not case["expected"])
    for action in p.actions:  # every action has a human line and a JSON form
        assert action.describe()
        assert action.to_json()["action"] == type(action).__name__.lower()


REFUSALS = {
    "ext4 on an ephemeral disk": (
        [make_disk("/dev/loop1", fstype="ext4", fs_uuid=OLD)], EPH3.replace(", /dev/loop2, /dev/loop3", ""),
        DiskError, "refusing to format /dev/loop1 as ephemeral: it holds an existing ext4 filesystem"),
    "partition table on an ephemeral disk": (
        [make_disk("/dev/loop1", pttype="gpt")], "ephemeral:\n  mount: /e\n  devices: [/dev/loop1]\n",
        DiskError, "/dev/loop1 as ephemeral: it holds a gpt partition table; set ephemeral.wipe: true"),
    "partitions without a table signature": (
        [make_disk("/dev/loop1", partitions=("loop1p1",))], "ephemeral:\n  mount: /e\n  devices: [/dev/loop1]\n",
        DiskError, "it holds partitions loop1p1"),
    "mounted ephemeral disk, even with wipe": (
        [make_disk("/dev/loop1", fstype="ext4", fs_uuid=OLD, mountpoints=("/mnt/x",))],
        "ephemeral:\n  mount: /e\n  wipe: true\n  devices: [/dev/loop1]\n",
        DiskError, "refusing to format /dev/loop1 as ephemeral: it is mounted at /mnt/x"),
    "the disk holding /, even with wipe": (
        [make_disk("/dev/vda", holds_root=True, role="root", mountpoints=("/",))],
        "ephemeral:\n  mount: /e\n  wipe: true\n  devices: [/dev/vda]\n",
        DiskError, "refusing /dev/vda for ephemeral: it holds the root filesystem /"),
    "a disk under device-mapper": (
        [make_disk("/dev/loop1", holders=("dm-0",))], "ephemeral:\n  mount: /e\n  devices: [/dev/loop1]\n",
        DiskError, "in use by dm-0"),
    "an incomplete set of ours": (
        [ours("/dev/loop1"), ours("/dev/loop2")], "ephemeral:\n  mount: /e\n  devices: [/dev/loop1, /dev/loop2]\n",
        DiskError, "ephemeral: /dev/loop1 belongs to an earlier ephemeral btrfs (UUID 9999"),
    "ours plus a new blank disk": (
        [ours("/dev/loop1"), ours("/dev/loop2"), ours("/dev/loop3"), make_disk("/dev/loop4")],
        "ephemeral:\n  mount: /e\n  devices: [/dev/loop1, /dev/loop2, /dev/loop3, /dev/loop4]\n",
        DiskError, "3 devices) but the set now is /dev/loop1, /dev/loop2, /dev/loop3, /dev/loop4"),
    "unknown ephemeral device": (
        [make_disk("/dev/loop1")], "ephemeral:\n  mount: /e\n  devices:\n    - /dev/loop1\n    - /dev/loop9\n",
        ConfigError, "disks.yaml:5: ephemeral.devices: unknown device /dev/loop9"),
    "unknown volume device": (
        [make_disk("/dev/loop1")], "volumes:\n  - name: data\n    match: {device: /dev/loop9}\n    mount: /d\n",
        ConfigError, "disks.yaml:3: volume 'data': unknown device /dev/loop9"),
    "no disk matches a volume id": (
        [make_disk("/dev/loop1")], "volumes:\n  - name: data\n    match: {aws_volume_id: vol-1}\n    mount: /d\n",
        DiskError, "volume 'data': no disk on this host matches {aws_volume_id: vol-1}"),
    "two disks match one serial": (
        [make_disk("/dev/vdb", serial="x"), make_disk("/dev/vdc", serial="x")],
        "volumes:\n  - name: data\n    match: {serial: x}\n    mount: /d\n",
        DiskError, "matches several disks: /dev/vdb, /dev/vdc"),
    "volume with only a partition table": (
        [make_disk("/dev/loop4", pttype="dos", partitions=("loop4p1",))], VOL,
        DiskError, "volume 'data': /dev/loop4 holds a dos partition table (loop4p1)"),
    "volume mounted somewhere else": (
        [make_disk("/dev/loop4", fstype="ext4", fs_uuid=OLD, mountpoints=("/old",))], VOL,
        DiskError, "volume 'data': /dev/loop4 is mounted at /old, not /srv/data"),
    "mountpoint under a regular file": (
        [make_disk("/dev/loop4")], VOL, ConfigError, "disks.yaml:4: volume 'data': mountpoint /srv/data is under /srv"),
    "mountpoint already taken by another mount": (
        [make_disk("/dev/loop4")], VOL, DiskError, "/srv/data already has tmpfs (tmpfs) mounted on it"),
    "mountpoint already in fstab outside our block": (
        [make_disk("/dev/loop4")], VOL, ConfigError, "already has an fstab entry (line 2)"),
    "a volume disk also listed as ephemeral": (
        [make_disk("/dev/sdb", serial="s"), make_disk("/dev/loop1")],
        "ephemeral:\n  mount: /e\n  devices: [/dev/sdb]\nvolumes:\n  - name: d\n    match: {serial: s}\n    mount: /d\n",
        ConfigError, "ephemeral: /dev/sdb is also matched by volume 'd'"),
}
_EXTRA = {
    "mountpoint under a regular file": dict(paths={"/srv/data": "file:/srv"}),
    "mountpoint already taken by another mount": dict(mounts=[mount_entry("/srv/data", "tmpfs", "tmpfs")]),
    "mountpoint already in fstab outside our block": dict(fstab="/dev/vda1 / ext4 defaults 0 1\n"
                                                                "/dev/sdz /srv/data ext4 defaults 0 2\n"),
}


@pytest.mark.parametrize("name", REFUSALS.keys())
def test_refusals(name):
    disks, config, error, fragment = REFUSALS[name]
    extra = _EXTRA.get(name, {})
    facts = make_facts(disks, mounts=extra.get("mounts", ()), fstab_text=extra.get("fstab", ""),
                       paths=extra.get("paths"))
    with pytest.raises(error) as exc:
        plan(facts, cfg(config), new_uuid=uuids())
    assert fragment in str(exc.value)
    assert "\n" not in str(exc.value)


def test_plan_json_and_describe():
    facts = make_facts([make_disk(n) for n in LOOPS])
    p = plan(facts, cfg(EPH3), new_uuid=itertools.repeat(U1).__next__)
    data = p.to_json()
    assert [a["action"] for a in data["actions"]] == ["mkfs", "makedir", "devicescan", "mount", "writefstab"]
    assert data["actions"][0]["devices"] == LOOPS
    assert p.describe()[0].startswith("mkfs.btrfs /dev/loop1 /dev/loop2 /dev/loop3 label=prov-ephemeral")


def test_symlinked_device_paths_resolve_through_aliases():
    facts = make_facts([make_disk("/dev/sdb")], paths={"/srv/data": "dir"})
    facts = type(facts)(**{**facts.__dict__, "aliases": {"/dev/disk/by-id/google-data-1": "/dev/sdb"}})
    p = plan(facts, cfg("volumes:\n  - name: data\n    match: {device: /dev/disk/by-id/google-data-1}\n"
                        "    mount: /srv/data\n"), new_uuid=uuids())
    assert p.actions[0] == Mkfs(("/dev/sdb",), "prov-vol-data", U1, "single", "dup", role="volume")
