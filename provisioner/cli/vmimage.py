"""`provision image build-vm`: build (or reuse) the local cloud's base VM image."""
from __future__ import annotations

from pathlib import Path

import click

from .. import hostos
from ..vmimage import ImageSpec, default_cache_dir
from ..vmimage.build import build
from .app import App, emit, json_option, pass_app, status


@click.command("build-vm")
@click.option("--cache", "cache", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Image cache directory (default: $PROVISION_VM_CACHE or /var/tmp/provisioner-vm-cache).")
@click.option("--os", "os_", type=click.Choice(sorted(hostos.SYSTEMS)), default=hostos.DEFAULT, show_default=True,
              help="The host OS the image runs (its Debian suite and Python).")
@click.option("--mirror", default="http://deb.debian.org/debian", show_default=True, help="Debian mirror URL.")
@click.option("--package", "packages", multiple=True, metavar="NAME", help="Extra package to include; repeatable.")
@click.option("--force", is_flag=True, help="Rebuild even when a cached image matches.")
@json_option
@pass_app
def build_vm_cmd(app: App, cache: Path | None, os_: str, mirror: str, packages: tuple[str, ...],
                 force: bool) -> None:
    """mmdebstrap a Debian cloud VM image for the local cloud (cached by package list)."""
    spec = ImageSpec(os=os_, mirror=mirror, extra_packages=tuple(packages))
    image, built = build(spec, runner=app.runner, cache=cache or default_cache_dir(), force=force, progress=status)
    emit(app, {**image.to_json(), "built": built, "spec": spec.to_json()},
         f"{image.disk.parent} ({'built' if built else 'cached'})")


def register(cli: click.Group) -> None:
    group = cli.commands.get("image")
    if group is None:  # the image group (pull/ls/…) is missing: stand alone until it exists
        group = click.Group("image", help="Images.")
        cli.add_command(group)
    group.add_command(build_vm_cmd)
