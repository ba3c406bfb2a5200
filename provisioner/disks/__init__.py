"""Disk discovery, planning and application (btrfs on ephemeral and attached disks).

Entry points for other layers (the boot hook, the clouds layer's stack files):
- `config.parse_config(data, path)` / `config.load_config(path)`: the `disks` schema;
- `converge(config, runner, ...)`: discover → plan → apply (or just plan with dry_run);
- `discover.discover(runner)`: facts about every disk; `plan.plan(facts, config)`: pure.
"""
from __future__ import annotations


def converge(config, runner, *, fstab_path: str | None = None, dry_run: bool = False,
             on_step=None):
    """Bring the disks to `config`. Returns (plan, ApplyResult or None when dry_run/empty)."""
    from .apply import apply
    from .discover import gather
    from .fstab import FSTAB
    from .plan import plan

    fstab_path = fstab_path or FSTAB
    facts = gather(runner, config.mountpoints(), devices=config.device_paths(), fstab_path=fstab_path)
    p = plan(facts, config)
    if dry_run or p.empty:
        return p, None
    return p, apply(p, runner, fstab_path=fstab_path, on_step=on_step)
