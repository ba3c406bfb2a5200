"""README's first command ends in scripts/demo: run it for real and check what it shows and
that it leaves nothing behind (no loop device, no mount, no change to /etc/fstab)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.privileged

ROOT = Path(__file__).resolve().parents[2]


def test_demo_runs_and_cleans_up():
    fstab_before = Path("/etc/fstab").read_bytes() if Path("/etc/fstab").exists() else None
    r = subprocess.run([str(ROOT / "scripts" / "demo")], capture_output=True, text=True, timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    work = next(line.split()[-1] for line in r.stdout.splitlines() if "/disk1.img" in line).rsplit("/", 1)[0]
    for expected in ("Label: 'prov-ephemeral'", "Total devices 3", "Data, RAID0", "Metadata, RAID1",
                     "Label: 'prov-vol-data'", "nothing to do: the disks already match the config",
                     "refusing to format", "hello from the volume", "demo: done"):
        assert expected in out, expected
    assert work not in subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    assert work not in Path("/proc/self/mountinfo").read_text()
    assert not Path(work).exists()
    after = Path("/etc/fstab").read_bytes() if Path("/etc/fstab").exists() else None
    assert after == fstab_before
