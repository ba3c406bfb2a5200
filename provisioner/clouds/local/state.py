"""Where a local VM's state lives (`<root>/local/<stack>/<host>/`) and the process behind it."""
from __future__ import annotations

import json
import os
import signal
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ...fsutil import atomic_write

STATE = "state.json"
VOLUMES = "volumes"


@dataclass
class VmState:
    stack: str
    host: str
    pid: int = 0
    ssh_port: int = 0
    user: str = "provision"
    accel: str = ""
    ports: list[dict] = field(default_factory=list)       # {"host_port", "guest_port", "proto"}
    disks: list[dict] = field(default_factory=list)       # DiskPlan as dicts
    image: str = ""
    instance_id: str = ""
    started: float = 0.0
    boot_seconds: float | None = None
    fingerprints: list[dict] = field(default_factory=list)  # {"type", "sha256"} from the console
    host_keys: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


def host_dir(root: Path, stack: str, host: str) -> Path:
    return Path(root) / "local" / stack / host


def save(directory: Path, state: VmState) -> None:
    atomic_write(directory / STATE, json.dumps(state.to_json(), indent=2) + "\n")


def load(directory: Path) -> VmState | None:
    try:
        data = json.loads((directory / STATE).read_text())
    except FileNotFoundError:
        return None
    except ValueError:
        return None
    return VmState(**{k: v for k, v in data.items() if k in VmState.__dataclass_fields__})


def qemu_alive(pid: int, directory: Path) -> bool:
    """True when `pid` is a live qemu started for `directory` (guards against a recycled pid)."""
    if pid <= 0:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":
        return False
    return str(directory).encode() in cmdline


def read_pidfile(path: Path) -> int:
    try:
        return int(path.read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


def stop(pid: int, directory: Path, timeout: float = 15.0) -> bool:
    """Stop the VM's qemu (SIGTERM, then SIGKILL); True once it is gone."""
    if not qemu_alive(pid, directory):
        return True
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not qemu_alive(pid, directory):
                return True
            time.sleep(0.1)
    return not qemu_alive(pid, directory)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_free(port: int, proto: str = "tcp") -> bool:
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def listening(port: int) -> bool:
    """Something accepts TCP connections on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False
