"""docs/runbooks/recover-a-full-disk.md, followed step by step on a real btrfs on loop devices.

The runbook's fenced `sh` blocks are parsed and each line is run here: `provision ssh web -- CMD`
becomes CMD run on this machine (the "host"), `sudo` is a no-op (we are root), `provision` is this
checkout's CLI with a test --root, /srv/data is the test's mount and /dev/nvme3n1 a spare loop
device. Also the helpers the other runbook tests share (`Loops`, `blocks`, `run_line`).
"""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.privileged

RUNBOOKS = Path(__file__).resolve().parents[2] / "docs" / "runbooks"
MiB = 2**20


def blocks(runbook: str) -> dict[str, list[str]]:
    """`# step: NAME` -> the block's command lines (comments and blank lines dropped)."""
    text = (RUNBOOKS / runbook).read_text()
    out = {}
    for body in re.findall(r"```sh\n(.*?)```", text, re.S):
        lines = body.splitlines()
        m = re.match(r"# step: (\S+)", lines[0]) if lines else None
        assert m, f"{runbook}: every sh block starts with '# step: NAME': {lines[:1]}"
        out[m.group(1)] = [ln for ln in lines[1:] if ln.strip() and not ln.lstrip().startswith("#")]
    return out


def run_line(line: str, subs: dict[str, str], root: Path, check: bool = True) -> subprocess.CompletedProcess:
    for a, b in subs.items():
        line = line.replace(a, b)
    words = shlex.split(line)
    # `provision ssh HOST -- WORDS`: like ssh, the words joined by spaces for the host's shell
    script = " ".join(words[4:]) if words[:2] == ["provision", "ssh"] and words[3] == "--" else line
    prelude = (f'sudo() {{ "$@"; }}; provision() {{ {shlex.quote(sys.executable)} -m provisioner.cli.main '
               f'--root {shlex.quote(str(root))} "$@"; }}; set -o pipefail; ')
    proc = subprocess.run(["bash", "-c", prelude + script], capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, f"runbook line failed: {line}\n{proc.stdout}\n{proc.stderr}"
    return proc


def sh(*argv, check=True) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, check=check, timeout=300)


class Loops:
    """Loop devices and mounts this test made; all undone in cleanup."""

    def __init__(self, tmp: Path):
        self.tmp, self.devs, self.mounts = tmp, [], []

    def device(self, size: int) -> str:
        f = self.tmp / f"disk{len(self.devs)}.img"
        with open(f, "wb") as fh:
            fh.truncate(size)
        for _ in range(20):  # another engineer may take the free device between find and attach
            r = sh("losetup", "--find", "--show", f, check=False)
            if r.returncode == 0:
                self.devs.append(r.stdout.strip())
                return self.devs[-1]
            time.sleep(0.1)
        raise RuntimeError(f"could not attach {f}: {r.stderr}")

    def btrfs(self, size: int, mount: Path) -> str:
        dev = self.device(size)
        sh("mkfs.btrfs", "-q", "-f", dev)
        mount.mkdir(parents=True, exist_ok=True)
        sh("mount", dev, mount)
        self.mounts.append(mount)
        return dev

    def cleanup(self):
        for m in reversed(self.mounts):
            sh("fsfreeze", "-u", m, check=False)
            if sh("umount", m, check=False).returncode != 0:
                sh("umount", "-l", m, check=False)
        for d in self.devs:
            sh("btrfs", "device", "scan", "--forget", d, check=False)
            sh("losetup", "-d", d, check=False)


@pytest.fixture
def loops(tmp_path):
    lp = Loops(tmp_path)
    try:
        yield lp
    finally:
        lp.cleanup()


def fill(mount: Path, name: str) -> None:
    """Write until btrfs says ENOSPC."""
    r = sh("dd", "if=/dev/urandom", f"of={mount / name}", "bs=1M", "conv=fsync", check=False)
    assert "No space left on device" in r.stderr, r.stderr


def can_write(mount: Path, mib: int = 16) -> bool:
    r = sh("dd", "if=/dev/zero", f"of={mount / '.probe'}", "bs=1M", f"count={mib}", "conv=fsync", check=False)
    (mount / ".probe").unlink(missing_ok=True)
    return r.returncode == 0


def test_recover_a_full_disk_by_deleting_snapshots_then_by_adding_a_device(loops, tmp_path):
    steps = blocks("recover-a-full-disk.md")
    assert list(steps) == ["usage", "list-snapshots", "delete-snapshot", "prune-images", "add-device",
                           "check-writes"]
    mount = tmp_path / "srv-data"
    loops.btrfs(300 * MiB, mount)
    spare = loops.device(300 * MiB)
    root = mount / "provisioner"      # the image store must be on btrfs: keep it on the full filesystem
    subs = {"/srv/data": str(mount), "/dev/nvme3n1": spare}

    # the incident: a snapshot pins data the application deleted, then the disk fills up
    sh("dd", "if=/dev/urandom", f"of={mount / 'old-export'}", "bs=1M", "count=120", "conv=fsync")
    run_line("provision host disks snapshot /srv/data --name 20261123T010000Z", subs, root)
    (mount / "old-export").unlink()
    fill(mount, "fill")
    assert not can_write(mount)

    out = "".join(run_line(ln, subs, root).stdout for ln in steps["usage"])
    assert "Free (estimated)" in out and "fill" in out
    listed = "".join(run_line(ln, subs, root).stdout for ln in steps["list-snapshots"])
    assert "20261123T010000Z" in listed
    for ln in steps["delete-snapshot"]:
        run_line(ln, subs, root)
    assert "20261123T010000Z" not in run_line(steps["list-snapshots"][0], subs, root).stdout
    for ln in steps["prune-images"]:
        run_line(ln, subs, root)
    for ln in steps["check-writes"]:
        run_line(ln, subs, root)
    assert can_write(mount, 64)       # the 120 MiB the snapshot held are free again

    # full again, with nothing left to delete: add a device and rebalance
    fill(mount, "fill2")
    assert not can_write(mount)
    for ln in steps["add-device"]:
        run_line(ln, subs, root)
    assert sh("btrfs", "filesystem", "show", mount).stdout.count(" path /dev/loop") == 2
    for ln in steps["check-writes"]:
        run_line(ln, subs, root)
    assert can_write(mount, 128)
