"""`provision up|down|ps -f stack.yml`: a stack's services on this host, thin over containers.stack."""
from __future__ import annotations

import click

from .app import App, emit, json_option, pass_app, status, table

_file = click.option("-f", "--file", "path", default="stack.yml", show_default=True, type=click.Path(dir_okay=False),
                     help="The stack file.")
_host = click.option("--host", "host", default=None, metavar="NAME",
                     help="Only the services the stack's hosts: section places on host NAME (what deploy runs).")


def _load(app: App, path: str, host: str | None = None):
    from ..containers.lifecycle import Manager
    from ..containers.stack import Stacks
    from ..stack.services import load_services

    name, services = load_services(path)   # the whole file is checked before anything is touched
    if host is not None:
        from ..stack import load_stack
        from ..stack.placement import services_for_host

        services = services_for_host(load_stack(path), services, host)
    return name, services, Stacks(Manager(app.root, app.runner), progress=status)


@click.command("up")
@_file
@_host
@click.option("--dry-run", is_flag=True, help="Print the plan and change nothing.")
@click.option("--insecure-registry", "insecure", multiple=True, metavar="HOST[:PORT]")
@json_option
@pass_app
def up_cmd(app: App, path: str, host: str | None, dry_run: bool, insecure) -> None:
    """Create or update the stack's services in dependency order and wait for their health."""
    from ..containers.stack import describe

    name, services, stacks = _load(app, path, host)
    stacks.insecure_registries = tuple(insecure)
    if dry_run:
        actions = stacks.plan(name, services)
    else:
        actions = stacks.up(name, services)
    emit(app, [{"action": type(a).__name__.lower(), "service": a.service, "text": describe(a)} for a in actions],
         lambda: click.echo("\n".join(describe(a) for a in actions) if actions else f"{name}: up to date"))


@click.command("down")
@_file
@_host
@click.option("-v", "--volumes", is_flag=True, help="Also remove the stack's named volumes.")
@pass_app
def down_cmd(app: App, path: str, host: str | None, volumes: bool) -> None:
    """Remove every container of the stack (anonymous volumes too; named ones with -v)."""
    name, services, stacks = _load(app, path, host)
    for cname in stacks.down(name, services, remove_volumes=volumes):
        click.echo(cname)


@click.command("ps")
@_file
@_host
@json_option
@pass_app
def ps_cmd(app: App, path: str, host: str | None) -> None:
    """List the stack's services with their state and health."""
    name, services, stacks = _load(app, path, host)
    rows = stacks.ps(name, services)
    emit(app, rows, lambda: click.echo(table(
        [[r["service"], r["container"], r["state"], r["health"] if r["health"] != "none" else "",
          ", ".join(r["ports"])] for r in rows], ["SERVICE", "CONTAINER", "STATE", "HEALTH", "PORTS"])))


def register(cli: click.Group) -> None:
    cli.add_command(up_cmd)
    cli.add_command(down_cmd)
    cli.add_command(ps_cmd)
