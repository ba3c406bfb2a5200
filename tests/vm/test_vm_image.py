"""`provision image build-vm`: builds the base image once per machine, then reuses it."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from provisioner.vmimage import ImageSpec

pytestmark = pytest.mark.vm


def test_build_vm_produces_a_cached_bootable_image(vm_image):
    # vm_image built it (or found it) through the library; the CLI must now find it cached.
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "provisioner.cli.main", "--json", "image", "build-vm"],
                         capture_output=True, text=True, check=True)
    data = json.loads(out.stdout)
    assert data["built"] is False and time.monotonic() - start < 30
    assert data["key"] == ImageSpec().key()
    assert Path(data["disk"]) == vm_image.disk and vm_image.disk.stat().st_size > 500 << 20
    assert Path(data["kernel"]).read_bytes()[0x202:0x206] == b"HdrS"  # a bzImage qemu can boot directly
    assert Path(data["initrd"]).stat().st_size > 1 << 20
    assert "root=/dev/vda" in data["append"] and "console=ttyS0" in data["append"]
    magic = subprocess.run(["file", "-s", str(vm_image.disk)], capture_output=True, text=True).stdout \
        if Path("/usr/bin/file").exists() else "ext4"
    assert "ext4" in magic
