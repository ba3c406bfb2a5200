"""Shared helpers for the cloud tests: free ports, polling, cloud-init's schema validator."""
from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def assert_valid_cloud_config(text: str, tmp_path: Path) -> None:
    """Validate with cloud-init's own schema validator (Debian's cloud-init, apt-installed)."""
    exe = shutil.which("cloud-init")
    assert exe, "cloud-init is not installed (scripts/install.sh apt-installs it)"
    f = tmp_path / "user-data.yaml"
    f.write_text(text)
    res = subprocess.run([exe, "schema", "-c", str(f)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, f"cloud-init schema rejected the user-data: {res.stdout}{res.stderr}"
    assert "Valid" in res.stdout
