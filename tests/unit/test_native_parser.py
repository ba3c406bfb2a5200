"""The C parser's own tests (native/tests/test_config.c): config.json → operation list and
field-naming errors, no root needed. Skipped where the C toolchain or json-c is missing."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

NATIVE = Path(__file__).resolve().parents[2] / "native"


@pytest.mark.skipif(shutil.which("make") is None or shutil.which("cc") is None, reason="no C toolchain")
@pytest.mark.skipif(not os.path.exists("/usr/include/json-c/json.h"), reason="libjson-c-dev not installed")
@pytest.mark.skipif(not os.path.exists("/usr/include/seccomp.h"), reason="libseccomp-dev not installed")
def test_native_parser_checks():
    proc = subprocess.run(["make", "-s", "-C", str(NATIVE), "check"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "test_config: all checks passed" in proc.stdout
