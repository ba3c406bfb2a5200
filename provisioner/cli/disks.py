"""`provision host disks discover|plan|apply|snapshot`: thin layer over provisioner.disks."""
from __future__ import annotations

from pathlib import Path

import click

from ..disks import apply as apply_mod
from ..disks import snapshot as snap
from ..disks.config import load_config
from ..disks.discover import discover, gather
from ..disks.fstab import FSTAB
from ..disks.plan import plan as make_plan
from .app import App, emit, json_option, pass_app, status, table


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _config_option(f):
    return click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
                        help="Disks config (YAML). Default: <root>/disks.yaml.")(f)


def _fstab_option(f):
    return click.option("--fstab", "fstab_path", default=FSTAB, show_default=True, envvar="PROVISION_FSTAB",
                        help="fstab file to manage (env PROVISION_FSTAB).")(f)


def _plan(app: App, config_path: Path | None, fstab_path: str):
    config = load_config(config_path or app.root / "disks.yaml")
    facts = gather(app.runner, config.mountpoints(), devices=config.device_paths(), fstab_path=fstab_path)
    return make_plan(facts, config)


def _print_plan(p) -> None:
    if p.empty:
        click.echo("nothing to do: the disks already match the config")
    for i, line in enumerate(p.describe(), 1):
        click.echo(f"{i:2}. {line}")
    for note in p.notes:
        click.echo(f"note: {note}")


@click.group("disks")
def disks_group() -> None:
    """Discover disks, plan and apply btrfs on ephemeral and attached disks, snapshots."""


@disks_group.command("discover")
@json_option
@pass_app
def discover_cmd(app: App) -> None:
    """Show every block disk with its cloud identity, role and signatures."""
    disks = discover(app.runner)

    def human() -> None:
        rows = [[d.node, _size(d.size), d.bus, d.cloud, d.role, d.model or "-", d.serial or "-",
                 d.volume_id or d.device_name or "-",
                 d.fstype or (f"pt:{d.pttype}" if d.pttype else "-"), d.fs_label or "-",
                 ",".join(d.mountpoints) or "-"] for d in disks]
        click.echo(table(rows, ["DEVICE", "SIZE", "BUS", "CLOUD", "ROLE", "MODEL", "SERIAL",
                                "VOLUME", "FS", "LABEL", "MOUNTED"]))

    emit(app, [d.to_json() for d in disks], human)


@disks_group.command("plan")
@_config_option
@_fstab_option
@click.option("--dry-run", is_flag=True, help="Accepted for symmetry: plan never changes anything.")
@json_option
@pass_app
def plan_cmd(app: App, config_path, fstab_path, dry_run) -> None:
    """Print what apply would do (changes nothing)."""
    p = _plan(app, config_path, fstab_path)
    emit(app, p, lambda: _print_plan(p))


@disks_group.command("apply")
@_config_option
@_fstab_option
@click.option("--dry-run", is_flag=True, help="Print the plan and stop.")
@json_option
@pass_app
def apply_cmd(app: App, config_path, fstab_path, dry_run) -> None:
    """Format, mount and record in fstab what the config asks for (idempotent)."""
    p = _plan(app, config_path, fstab_path)
    if dry_run or p.empty:
        emit(app, {"plan": p.to_json(), "applied": False}, lambda: _print_plan(p))
        return
    n = len(p.actions)
    counter = iter(range(1, n + 1))
    result = apply_mod.apply(p, app.runner, fstab_path=fstab_path,
                             on_step=lambda a: status(f"[{next(counter)}/{n}] {a.describe()}"))

    def human() -> None:
        total = sum(s.seconds for s in result.steps)
        click.echo(f"applied {len(result.steps)} action(s) in {total:.2f}s")
        for note in p.notes:
            click.echo(f"note: {note}")

    emit(app, {"plan": p.to_json(), "applied": True, "result": result.to_json()}, human)


class _SnapshotGroup(click.Group):
    """`snapshot MOUNT` creates; `snapshot list|delete …` are subcommands."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["create", *args]
        return super().parse_args(ctx, args)


@disks_group.group("snapshot", cls=_SnapshotGroup)
def snapshot_group() -> None:
    """Read-only btrfs snapshots: `snapshot MOUNT [--name N]`, `snapshot list MOUNT`,
    `snapshot delete MOUNT NAME`."""


@snapshot_group.command("create")
@click.argument("mount")
@click.option("--name", help="Snapshot name (default: UTC timestamp).")
@json_option
@pass_app
def snapshot_create(app: App, mount: str, name: str | None) -> None:
    """Make a read-only snapshot of MOUNT under MOUNT/.snapshots/."""
    s = snap.create(app.runner, mount, name)
    emit(app, s, f"snapshot {s.name}: {s.path}")


@snapshot_group.command("list")
@click.argument("mount")
@json_option
@pass_app
def snapshot_list(app: App, mount: str) -> None:
    """List the snapshots of MOUNT."""
    snaps = snap.list_snapshots(app.runner, mount)
    emit(app, snaps, lambda: click.echo(table([[s.name, s.created or "-", s.path] for s in snaps],
                                              ["NAME", "CREATED", "PATH"]) if snaps else "no snapshots"))


@snapshot_group.command("delete")
@click.argument("mount")
@click.argument("name")
@json_option
@pass_app
def snapshot_delete(app: App, mount: str, name: str) -> None:
    """Delete snapshot NAME of MOUNT."""
    s = snap.delete(app.runner, mount, name)
    emit(app, s, f"deleted snapshot {s.name}")


def register(cli: click.Group) -> None:
    cli.commands["host"].add_command(disks_group)
