"""`provision host …`: commands that run on the host itself (the on-host agent)."""
from __future__ import annotations

import click


@click.group("host")
def host_group() -> None:
    """Commands run on a host: boot hook, disks."""


def register(cli: click.Group) -> None:
    cli.add_command(host_group)
