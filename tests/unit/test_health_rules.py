"""The shim's healthcheck rules in C (native/shim/tests/test_health.c, `make -C native/shim check`):
streaks, retries, start period, recovery, timeouts as failures, and the health file's JSON. These
replaced the Python monitor's (healthmon) rules when the checks moved into the shim."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

SHIM = Path(__file__).resolve().parents[2] / "native" / "shim"


@pytest.mark.skipif(shutil.which("make") is None or shutil.which("cc") is None, reason="no C toolchain")
def test_shim_health_rules():
    proc = subprocess.run(["make", "-s", "-C", str(SHIM), "check"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "test_health: all checks passed" in proc.stdout
