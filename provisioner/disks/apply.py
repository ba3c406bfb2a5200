"""Carrying out a Plan: every command through the Runner, fstab written atomically.

Right before anything destructive, the device is probed again (`wipefs --no-act`): if what is
on it is not what the plan saw (a signature appeared since planning), apply stops with a
DiskError and formats nothing. mkfs.btrfs is run without -f, so it refuses an existing
filesystem by itself as a second line of defence.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import DiskError
from ..fsutil import atomic_write
from . import fstab
from .actions import Action, DeviceScan, Grow, MakeDir, Mkfs, Mount, Wipe, WriteFstab
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


def _wipe(runner, a: Wipe) -> None:
    now = probe_signature(runner, a.device)
    if not _same(now, a.expect):
        raise DiskError(f"{a.device} changed since planning (now {now.describe()}, planned "
                        f"{a.expect.describe()}); nothing wiped, plan again")
    runner.run(["wipefs", "--all", a.device])


def _mkfs(runner, a: Mkfs) -> None:
    for dev in a.devices:
        found = probe_wipefs(runner, dev)
        if found:
            kinds = ", ".join(sorted({str(s.get("type", "?")) for s in found}))
            raise DiskError(f"refusing to format {dev}: a signature ({kinds}) appeared since "
                            "planning; nothing formatted, plan again")
    runner.run(a.argv())


def run_action(runner, action: Action, *, fstab_path: str = fstab.FSTAB) -> None:
    if isinstance(action, Wipe):
        _wipe(runner, action)
    elif isinstance(action, Mkfs):
        _mkfs(runner, action)
    elif isinstance(action, MakeDir):
        runner.run(["mkdir", "-p", action.path])
    elif isinstance(action, DeviceScan):
        runner.run(["btrfs", "device", "scan", *action.devices])
    elif isinstance(action, Mount):
        runner.run(["mount", "-t", action.fstype, "-o", action.options, action.source,
                    action.mountpoint])
    elif isinstance(action, Grow):
        runner.run(["btrfs", "filesystem", "resize", f"{action.devid}:max", action.mountpoint])
    elif isinstance(action, WriteFstab):
        write_fstab(fstab_path, list(action.entries))
    else:  # pragma: no cover - a new action type without an executor is a bug
        raise TypeError(f"no executor for {type(action).__name__}")


def write_fstab(path: str, entries: list[str]) -> None:
    """Replace only our block, re-reading the file now so others' edits survive."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        text = ""
    new = fstab.render(text, entries)
    if new != text:
        atomic_write(p, new)


def apply(plan: Plan, runner, *, fstab_path: str = fstab.FSTAB,
          on_step: Callable[[Action], None] | None = None) -> ApplyResult:
    """Run every action in order; stops at the first failure (the error says which)."""
    steps = []
    for action in plan.actions:
        if on_step is not None:
            on_step(action)
        start = time.monotonic()
        run_action(runner, action, fstab_path=fstab_path)
        steps.append(Step(action, time.monotonic() - start))
    return ApplyResult(tuple(steps))
