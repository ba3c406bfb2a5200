"""Assertions shared by the VM tests: what destroy must leave behind (nothing)."""
from __future__ import annotations

import time
from pathlib import Path

from provisioner.clouds.local import state


def qemu_processes_for(directory: Path) -> list[int]:
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if str(directory).encode() in (p / "cmdline").read_bytes():
                    pids.append(int(p.name))
            except OSError:
                pass
    return pids


def wait_not_listening(port: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not state.listening(port):
            return True
        time.sleep(0.1)
    return False
