"""The stack's health monitor: after `provision up`, one small process per stack runs each
service's healthcheck at its interval (through the runtime's exec into the container, as `up`
does) and records the result in `<root>/stacks/<stack>.json`, so `provision ps` shows health as
of the last interval. It exits when the stack's state file is gone (`down`) or on SIGTERM.

Run as: python -m provisioner.containers.healthmon ROOT STACK
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

from ..errors import ProvisionerError
from ..fsutil import atomic_write
from ..stack.services import Healthcheck

log = logging.getLogger(__name__)


def pid_path(root: Path, stack: str) -> Path:
    return Path(root) / "stacks" / f".{stack}.monitor.pid"


def running_pid(root: Path, stack: str) -> int | None:
    try:
        pid = int(pid_path(root, stack).read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    return pid if b"provisioner.containers.healthmon" in cmdline and stack.encode() in cmdline else None


def start(root: Path, stack: str) -> int:
    """Starts the monitor unless one runs. A long-running detached daemon, so subprocess.Popen
    directly (the Runner waits for its commands to finish)."""
    import subprocess

    pid = running_pid(root, stack)
    if pid:
        return pid
    proc = subprocess.Popen([sys.executable, "-m", "provisioner.containers.healthmon", str(root), stack],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, close_fds=True)
    atomic_write(pid_path(root, stack), f"{proc.pid}\n")
    return proc.pid


def stop(root: Path, stack: str, timeout: float = 5.0) -> None:
    pid = running_pid(root, stack)
    if pid:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        while running_pid(root, stack) and time.monotonic() < deadline:
            try:   # our child when `up` started it in this same process: reap it
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            time.sleep(0.02)
    pid_path(root, stack).unlink(missing_ok=True)


def run(root: Path, stack: str) -> None:
    from ..runner import Runner
    from .lifecycle import Manager
    from .stack import Stacks

    stacks = Stacks(Manager(root, Runner()))
    state_file = Path(root) / "stacks" / f"{stack}.json"
    due: dict[str, float] = {}
    while True:
        try:
            state = json.loads(state_file.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError):
            time.sleep(0.5)
            continue
        now = time.monotonic()
        results = {}
        for name, entry in state.get("services", {}).items():
            hc = entry.get("healthcheck")
            if not hc:
                continue
            key = f"{name}:{entry['container']}:{entry.get('hash')}"
            if due.get(key, 0.0) > now:
                continue
            check = Healthcheck(tuple(hc["test"]), hc["interval"], hc["timeout"], hc["retries"], hc["start_period"])
            due[key] = now + check.interval
            try:
                ok, output = stacks.probe(entry["container"], check)
            except ProvisionerError as exc:
                ok, output = False, str(exc)
            results[name] = (entry["container"], entry.get("hash"), ok, output, check.retries)
        if results:
            _record(stacks, stack, results)
        wait = min((t for t in due.values()), default=now + 1.0) - time.monotonic()
        time.sleep(min(max(wait, 0.05), 1.0))


def _record(stacks, stack: str, results: dict) -> None:
    """Merge results into the state, unless an `up`/`down` holds the stack (skip this round)."""
    lock = stacks.root / "stacks" / f".{stack}.lock"
    try:
        fh = open(lock, "w")
    except OSError:
        return
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return
        try:
            state = stacks.load_state(stack)
        except ProvisionerError:
            return
        if not stacks._state_path(stack).exists():
            return
        for name, (container, h, ok, output, retries) in results.items():
            entry = state.get("services", {}).get(name)
            if not entry or entry.get("container") != container or entry.get("hash") != h:
                continue   # recreated meanwhile: this result is about the old container
            health = entry.setdefault("health", {"status": "starting", "failing_streak": 0})
            health["failing_streak"] = 0 if ok else health.get("failing_streak", 0) + 1
            if ok:
                health["status"] = "healthy"
            elif health["failing_streak"] >= retries:
                health["status"] = "unhealthy"
            health["checked_at"], health["last_output"] = time.time(), output
        stacks.save_state(stack, state)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    run(Path(sys.argv[1]), sys.argv[2])
