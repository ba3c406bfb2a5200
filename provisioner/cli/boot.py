"""`provision host boot|status|restore-containers`: the boot hook and its result (thin layer
over provisioner.host.boot)."""
from __future__ import annotations

from pathlib import Path

import click

from ..errors import ConfigError, HostError
from ..host import boot as boot_mod
from ..host import config as host_config
from ..host.steps import StepContext
from ..host.steps import containers as containers_step
from .app import App, emit, json_option, pass_app, status, table


def _context(app: App, config_path, sysroot: Path) -> StepContext:
    cfg = host_config.load(host_config.find_config(app.root, config_path))
    return StepContext(config=cfg, runner=app.runner, root=app.root, sysroot=sysroot)


@click.command("boot")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help=f"Host config. Default: {host_config.ETC_FILE}, <root>/{host_config.HOST_FILE}, "
                   f"{host_config.CLOUD_INIT_FILE}.")
@click.option("--step", "only", multiple=True, type=click.Choice(boot_mod.STEP_NAMES),
              help="Run only this step (repeatable).")
@click.option("--dry-run", is_flag=True, help="Print what each step would change; change nothing.")
@click.option("--sysroot", type=click.Path(file_okay=False, path_type=Path), default=Path("/"), hidden=True,
              help="Prefix for /etc, /run, /proc, /home (tests).")
@click.option("--skip-unchanged", metavar="KEY", default=None,
              help="Run no step when the last run succeeded with the same host config, agent and KEY "
                   "(what deploy does on a host it deployed before).")
@json_option
@pass_app
def boot_cmd(app: App, config_path, only, dry_run, sysroot, skip_unchanged) -> None:
    """The boot hook: disks, users, sysctl, logs, firewall, time sync, containers."""
    ctx = _context(app, config_path, sysroot)

    def progress(r: boot_mod.StepResult) -> None:
        if not app.json:
            status(f"{r.name}: {r.status} ({r.seconds:.2f}s) {r.message}")

    result = boot_mod.boot(ctx, only=tuple(only), dry_run=dry_run, on_step=progress, skip_unchanged=skip_unchanged)

    def human() -> None:
        if result.unchanged:
            click.echo(f"inputs unchanged since the run at {result.started_at}: no step ran")
            return
        click.echo(table(boot_mod.rows(result), ["STEP", "STATUS", "TIME", "MESSAGE"]))
        for s in result.steps:
            for c in s.changes:
                click.echo(f"  {s.name}: {'would ' if dry_run else ''}{c}")

    emit(app, result.to_json(), human)
    if not result.ok:
        raise HostError(f"boot: step(s) failed: {', '.join(result.failed)} "
                        f"(details: {app.root / boot_mod.RESULT_FILE}, {app.root / boot_mod.LOG_FILE})")


@click.command("status")
@json_option
@pass_app
def status_cmd(app: App) -> None:
    """The last boot hook's result (<root>/host/boot-result.json)."""
    path = app.root / boot_mod.RESULT_FILE
    result = boot_mod.read_result(path)

    def human() -> None:
        click.echo(f"{result.stack or '-'}/{result.host}: boot hook at {result.started_at}, "
                   f"{'ok' if result.ok else 'FAILED: ' + ', '.join(result.failed)}")
        click.echo(table(boot_mod.rows(result), ["STEP", "STATUS", "TIME", "MESSAGE"]))

    emit(app, result.to_json(), human)
    if not result.ok:
        raise click.exceptions.Exit(1)


@click.command("restore-containers")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), hidden=True)
@pass_app
def restore_cmd(app: App, config_path) -> None:
    """Start again every container whose restart policy says so (what provisioner-containers.service does)."""
    state = app.root / containers_step.STATE_SUBDIR
    try:
        cfg = host_config.load(host_config.find_config(app.root, config_path))
        state = Path(cfg.containers_state_dir or state)
    except ConfigError:
        pass  # no host config: the default state dir still holds what `up` started
    started = containers_step.restore(app.root, state, app.runner)
    emit(app, {"started": started}, f"started: {', '.join(started)}" if started else "nothing to start")


def register(cli: click.Group) -> None:
    host = cli.commands["host"]
    for cmd in (boot_cmd, status_cmd, restore_cmd):
        host.add_command(cmd)
