"""`provision docker-env HOST`: point a local docker CLI, docker-compose or docker-py at a deployed
host's Engine API (like `docker-machine env`): `eval $(provision docker-env shop/web)`."""
from __future__ import annotations

import click

from ..deploy import inventory
from .app import App, emit, pass_app, status


@click.command("docker-env")
@click.argument("host", metavar="STACK/HOST|HOST")
@click.option("--stop", "stop_", is_flag=True, help="End the forwarder for HOST and remove its socket.")
@pass_app
def docker_env_cmd(app: App, host: str, stop_: bool) -> None:
    """Forward a local unix socket to HOST's Engine API over the verified SSH session and print the
    shell lines that use it. The socket is yours alone (0600 in a 0700 directory): whoever can open
    it is root on HOST. The forwarder runs in the background until --stop."""
    from ..remote import dockerenv

    rec = inventory.find(app.root, host)
    if stop_:
        if dockerenv.stop(rec.stack, rec.host):
            status(f"stopped the docker-env forwarder for {rec.name}")
        else:
            status(f"no docker-env forwarder for {rec.name} was running")
        if not app.json:
            click.echo("unset DOCKER_HOST")
        return
    sock = dockerenv.start(rec.target(), rec.stack, rec.host)
    if app.json:
        emit(app, {"host": rec.name, "DOCKER_HOST": f"unix://{sock}"})
        return
    click.echo(f"export DOCKER_HOST=unix://{sock}")
    click.echo(f"# {rec.name}'s Engine API, forwarded over SSH; run: eval $(provision docker-env {rec.name})")
    click.echo(f"# stop with: provision docker-env --stop {rec.name}")


def register(cli: click.Group) -> None:
    cli.add_command(docker_env_cmd)
