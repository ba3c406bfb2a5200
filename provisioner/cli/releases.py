"""`provision releases|rollback STACK`: what a stack ran, and going back to it — on this host, or
with --cloud on every host of a deployed stack over SSH (thin over compose.engine and
deploy.releases)."""
from __future__ import annotations

import time

import click

from .app import App, emit, json_option, pass_app, status, table

_CLOUD = click.option("--cloud", metavar="aws|gce|local", default=None,
                      help="The stack deployed on this cloud: every host, over SSH (else: this host).")


def _when(created: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(created))


def _changes(r: dict) -> str:
    return "; ".join(r.get("changes") or []) or "-"


@click.command("releases")
@click.argument("stack_name", metavar="STACK")
@_CLOUD
@json_option
@pass_app
def releases_cmd(app: App, stack_name: str, cloud: str | None) -> None:
    """List the releases of STACK kept (the last 5): number, time, what made it, what changed."""
    if cloud is not None:
        from ..deploy.releases import remote_releases

        hosts = remote_releases(app.root, stack_name, cloud)
        rows = [[h, str(r["number"]) + ("*" if r.get("current") else ""), _when(r["created"]), r["by"], _changes(r)]
                for h, rels in hosts.items() for r in rels]
        emit(app, hosts, lambda: click.echo(table(rows, ["HOST", "RELEASE", "CREATED", "BY", "CHANGES"])))
        return
    from ..compose.releases import Releases

    releases = Releases(app.root, stack_name)
    current = releases.current()
    data = [{**r.to_json(), "current": current is not None and r.number == current.number} for r in releases.all()]
    emit(app, data, lambda: click.echo(table(
        [[str(r["number"]) + ("*" if r["current"] else ""), _when(r["created"]), r["by"], _changes(r)] for r in data],
        ["RELEASE", "CREATED", "BY", "CHANGES"]) if data else f"{stack_name}: no releases on this host"))


@click.command("rollback")
@click.argument("stack_name", metavar="STACK")
@click.option("--to", "to", type=int, default=None, metavar="N", help="The release to go back to (default: the "
              "one before the current).")
@_CLOUD
@json_option
@pass_app
def rollback_cmd(app: App, stack_name: str, to: int | None, cloud: str | None) -> None:
    """Go back to an earlier release of STACK: its stack file, files and image digests, switched
    as deploy switches (only what differs is recreated); recorded as a new release."""
    if cloud is not None:
        from ..deploy.releases import remote_rollback

        results = remote_rollback(app.root, stack_name, cloud, to, progress=status)
        emit(app, results, lambda: click.echo("\n".join(
            f"{h}: release {r['release']} ({'; '.join(r['actions']) or 'nothing to change'})"
            for h, r in results.items())))
        return
    from ..compose.engine import Stacks
    from ..compose.plan import describe
    from ..containers.lifecycle import Manager

    number, stack, actions = Stacks(Manager(app.root, app.runner), progress=status).rollback(stack_name, to)
    texts = [describe(a) for a in actions]
    tcp = sorted({n for spec in stack.services.values() for m in spec.ports
                  if (p := m.published()) is not None and p.protocol == "tcp" for n in range(p.first, p.last + 1)})
    emit(app, {"release": number, "actions": texts, "tcp_ports": tcp},
         lambda: click.echo(f"{stack_name}: back to release {number}" + (f" ({'; '.join(texts)})" if texts else "")))


def register(cli: click.Group) -> None:
    cli.add_command(releases_cmd)
    cli.add_command(rollback_cmd)
