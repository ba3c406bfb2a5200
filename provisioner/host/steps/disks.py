"""Disks per the host's `disks:` config, through the disk layer's `converge()` (discover, plan,
apply; an empty plan on a converged host). fstab is <sysroot>/etc/fstab."""
from __future__ import annotations

from ... import disks
from . import Outcome, Skip, StepContext


def run(ctx: StepContext, dry_run: bool = False) -> Outcome:
    cfg = ctx.config.disks
    if cfg is None:
        raise Skip("no 'disks:' in this host's config")
    plan, _result = disks.converge(cfg, ctx.runner, fstab_path=str(ctx.path("/etc/fstab")), dry_run=dry_run)
    mounts = ", ".join(cfg.mountpoints()) or "nothing to mount"
    notes = "; ".join(plan.notes)
    return Outcome(tuple(plan.describe()), mounts + (f"; {notes}" if notes else ""))
