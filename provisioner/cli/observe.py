"""`provision stats [STACK|HOST] --cloud C`: docker stats' columns for deployed hosts (thin over
provisioner.deploy.ops_stats)."""
from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor

import click

from ..deploy import inventory, ops_stats
from ..remote.ssh import SshClient
from .app import App, pass_app, table


@click.command("stats")
@click.argument("target", required=False, metavar="[STACK|HOST]")
@click.option("--cloud", required=True, metavar="aws|gce|local", help="The cloud the hosts run on.")
@click.option("--no-stream", is_flag=True, help="Print one sample and exit.")
@click.option("--interval", type=click.FloatRange(0.2, 3600), default=1.0, show_default=True,
              help="Seconds each host measures CPU % over.")
@click.option("--json", "json_", is_flag=True, help="One JSON document per sample.")
@pass_app
def stats_cmd(app: App, target: str | None, cloud: str, no_stream: bool, interval: float, json_: bool) -> None:
    """Live resource usage of every container of a deployed STACK, one HOST, or every deployed host
    of the cloud: CPU %, memory usage / limit, net and block I/O, PIDs, plus each host's load,
    memory and btrfs use. Each host reads its own cgroups (v1, hybrid or v2)."""
    records = inventory.select(app.root, target, cloud)
    with ThreadPoolExecutor(max_workers=len(records)) as pool:
        clients = dict(zip((r.name for r in records), pool.map(lambda r: SshClient(r.target()).connect(), records)))
    try:
        while True:
            samples = ops_stats.sample(clients, records, interval)
            if json_ or app.json:
                click.echo(json.dumps({"hosts": [s.to_json() for s in samples]},
                                      separators=(",", ":") if not no_stream else (", ", ": ")))
            else:
                if not no_stream and sys.stdout.isatty():
                    click.echo("\033[2J\033[H", nl=False)
                click.echo("\n".join(ops_stats.host_lines(samples)))
                click.echo(table(ops_stats.rows(samples), ops_stats.HEADERS))
            sys.stdout.flush()
            if no_stream:
                if any(s.error for s in samples):
                    raise click.exceptions.Exit(1)
                return
    except KeyboardInterrupt:
        return
    finally:
        for c in clients.values():
            c.close()


def register(cli: click.Group) -> None:
    cli.add_command(stats_cmd)
