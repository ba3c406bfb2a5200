"""`provision doctor`."""
from __future__ import annotations

import sys

import click

from .. import doctor
from .app import App, emit, json_option, pass_app


@click.command("doctor")
@click.option("--registry", "registries", multiple=True, metavar="HOST[:PORT]",
              help="Registries to check (default: Docker Hub).")
@json_option
@pass_app
def doctor_cmd(app: App, registries: tuple[str, ...]) -> None:
    """Check this machine: kernel, tools, cgroups, registries, native runtime, qemu/KVM."""
    checks = doctor.run_checks(app.root, list(registries) or None, app.runner)

    def human() -> None:
        for c in checks:
            mark = "ok  " if c.ok else ("FAIL" if c.required else "warn")
            click.echo(f"[{mark}] {c.name}: {c.detail}")
            if not c.ok and c.fix:
                click.echo(f"       fix: {c.fix}")

    emit(app, [c.__dict__ for c in checks], human)
    if any(c.required and not c.ok for c in checks):
        sys.exit(1)


def register(cli: click.Group) -> None:
    cli.add_command(doctor_cmd)
