"""Carrying out a Plan: every command through the Runner, fstab written atomically.

Right before anything destructive, the device is probed again (`wipefs --no-act`): if what is
on it is not what the plan saw (a signature appeared since planning), apply stops with a
DiskError and formats nothing. The device is also opened with O_EXCL, which the kernel
refuses (EBUSY) while anything holds it: a mount in any mount namespace (invisible in our
mountinfo), device-mapper, md, or another mkfs. mkfs.btrfs is run without -f, so it refuses an
existing filesystem by itself as a last line of defence.
"""
from __future__ import annotations

import errno
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import DiskError
from ..fsutil import atomic_write
from . import fstab
from .actions import Action, DeviceScan, Grow, MakeDir, Mkfs, Mount, Remount, Wipe, WriteFstab
from .facts import Signature
from .plan import Plan
from .probe import probe_signature, probe_wipefs


@dataclass(frozen=True)
class Step:
    action: Action
    seconds: float

    def to_json(self) -> dict:
        return {**self.action.to_json(), "seconds": round(self.seconds, 3)}


@dataclass(frozen=True)
class ApplyResult:
    steps: tuple[Step, ...]

    def to_json(self) -> dict:
        return {"steps": [s.to_json() for s in self.steps]}


def _same(now: Signature, planned: Signature) -> bool:
    return (now.fstype, now.uuid, now.pttype) == (planned.fstype, planned.uuid, planned.pttype)


def device_busy(node: str) -> bool:
    """True when the kernel says something holds `node` (an exclusive open fails with EBUSY)."""
    try:
        fd = os.open(node, os.O_RDONLY | os.O_EXCL | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            return True
        raise DiskError(f"cannot open {node}: {exc.strerror}") from None
    os.close(fd)
    return False


def _check_not_busy(node: str, busy) -> None:
    if (busy or device_busy)(node):
        raise DiskError(f"refusing to touch {node}: the kernel reports it in use (mounted in some "
                        "mount namespace, or held by device-mapper/md); nothing changed")


def _wipe(runner, a: Wipe, busy=None) -> None:
    _check_not_busy(a.device, busy)
    now = probe_signature(runner, a.device)
    if not _same(now, a.expect):
        raise DiskError(f"{a.device} changed since planning (now {now.describe()}, planned "
                        f"{a.expect.describe()}); nothing wiped, plan again")
    runner.run(["wipefs", "--all", a.device])


def _mkfs(runner, a: Mkfs, busy=None) -> None:
    for dev in a.devices:
        _check_not_busy(dev, busy)
    for dev in a.devices:
        found = probe_wipefs(runner, dev)
        if found:
            kinds = ", ".join(sorted({str(s.get("type", "?")) for s in found}))
            raise DiskError(f"refusing to format {dev}: a signature ({kinds}) appeared since "
                            "planning; nothing formatted, plan again")
    runner.run(a.argv())


def run_action(runner, action: Action, *, fstab_path: str = fstab.FSTAB, busy=None) -> None:
    """`busy(node) -> bool` replaces the O_EXCL check (unit tests on fake devices)."""
    if isinstance(action, Wipe):
        _wipe(runner, action, busy)
    elif isinstance(action, Mkfs):
        _mkfs(runner, action, busy)
    elif isinstance(action, MakeDir):
        runner.run(["mkdir", "-p", action.path])
    elif isinstance(action, DeviceScan):
        runner.run(["btrfs", "device", "scan", *action.devices])
    elif isinstance(action, Mount):
        runner.run(["mount", "-t", action.fstype, "-o", action.options, action.source,
                    action.mountpoint])
    elif isinstance(action, Remount):
        runner.run(["mount", "-o", f"remount,{action.options}", action.mountpoint])
    elif isinstance(action, Grow) and action.fstype == "btrfs":
        runner.run(["btrfs", "filesystem", "resize", f"{action.devid}:max", action.mountpoint])
    elif isinstance(action, Grow):
        runner.run(["resize2fs", action.device])  # online grow of a mounted ext filesystem
    elif isinstance(action, WriteFstab):
        write_fstab(fstab_path, list(action.entries))
    else:  # pragma: no cover - a new action type without an executor is a bug
        raise TypeError(f"no executor for {type(action).__name__}")


def write_fstab(path: str, entries: list[str]) -> None:
    """Replace only our block, re-reading the file now so others' edits survive."""
    p = Path(path)
    try:
        text, mode = p.read_text(), None          # its own mode is kept
    except FileNotFoundError:
        text, mode = "", 0o644                     # fstab is world-readable
    new = fstab.render(text, entries)
    if new != text:
        atomic_write(p, new, mode=mode)


def apply(plan: Plan, runner, *, fstab_path: str = fstab.FSTAB,
          on_step: Callable[[Action], None] | None = None,
          busy: Callable[[str], bool] | None = None) -> ApplyResult:
    """Run every action in order; stops at the first failure (the error says which)."""
    steps = []
    for action in plan.actions:
        if on_step is not None:
            on_step(action)
        start = time.monotonic()
        run_action(runner, action, fstab_path=fstab_path, busy=busy)
        steps.append(Step(action, time.monotonic() - start))
    return ApplyResult(tuple(steps))
