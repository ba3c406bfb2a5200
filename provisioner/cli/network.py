"""`provision network create|ls|rm`: user-defined networks on this host (Docker's `docker network`),
thin over network/; compose's networks are these too."""
from __future__ import annotations

import click

from .app import App, emit, json_option, pass_app, table


def _parts(app: App):
    from ..containers.lifecycle import Manager

    mgr = Manager(app.root, app.runner)
    return mgr, mgr.net


@click.group("network")
def network_group() -> None:
    """User-defined networks: containers on one reach each other by name and alias."""


@network_group.command("create")
@click.option("--subnet", metavar="CIDR", help="Its IPv4 subnet (default: the next free block of the pool).")
@click.option("--gateway", metavar="IPV4", help="The bridge's address (default: the subnet's first).")
@click.option("--ip-range", "ip_range", metavar="CIDR", help="Give containers addresses from this part only.")
@click.option("--internal", is_flag=True, help="No way out: no NAT, nothing forwarded off the bridge.")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE")
@click.argument("name")
@pass_app
def create_cmd(app: App, subnet, gateway, ip_range, internal, labels, name) -> None:
    from .. import network
    from ..runspec.netopts import check_ipv4, check_network_name

    check_network_name(name)
    mgr, cfg = _parts(app)
    net = network.ensure(app.root, cfg, network.NetworkSpec(
        name, subnet, check_ipv4(gateway, "--gateway") if gateway else None, ip_range, internal,
        tuple(tuple(x.partition("=")[::2]) for x in labels)), runner=app.runner)
    click.echo(net.name)


@network_group.command("ls")
@json_option
@pass_app
def ls_cmd(app: App) -> None:
    from .. import network

    mgr, cfg = _parts(app)
    eps = network.endpoints(app.root)
    rows = [{"name": n.name, "subnet": n.config.subnet, "gateway": str(n.config.gateway), "bridge": n.config.bridge,
             "internal": n.config.internal, "labels": dict(n.labels),
             "containers": sorted(e.name for e in eps.values() if e.on(n.name))}
            for n in network.all_networks(app.root, cfg).values()]
    emit(app, rows, lambda: click.echo(table(
        [[r["name"], r["subnet"], r["bridge"], "yes" if r["internal"] else "", len(r["containers"])] for r in rows],
        ["NAME", "SUBNET", "BRIDGE", "INTERNAL", "CONTAINERS"])))


@network_group.command("rm")
@click.argument("names", nargs=-1, required=True)
@pass_app
def rm_cmd(app: App, names) -> None:
    from .. import network
    from ..errors import ContainerError

    mgr, cfg = _parts(app)
    for name in names:
        if not network.remove_network(app.root, cfg, name, runner=app.runner, paths=mgr.net_paths):
            raise ContainerError(f"network {name} not found")
        click.echo(name)


def register(cli: click.Group) -> None:
    cli.add_command(network_group)
