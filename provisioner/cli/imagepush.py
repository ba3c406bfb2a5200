"""`provision image push HOST REF...`: the operator's side of image delivery (over SSH). Kept out
of cli/image.py, whose commands the host agent runs: this one imports the SSH client."""
from __future__ import annotations

import time

import click

from ..images import reference
from ..images.registry import parse_platform
from .app import App, emit, json_option, pass_app, status
from .image import human_bytes, image_group


class PushProgress:
    """One line per layer as its blob finishes streaming (bytes per layer)."""

    def __init__(self):
        self.start: dict[tuple[str, int], float] = {}

    def __call__(self, ref: str, index: int, done: int, size: int) -> None:
        began = self.start.setdefault((ref, index), time.monotonic())
        if done >= size:
            secs = max(1e-6, time.monotonic() - began)
            status(f"  {reference.parse(ref).familiar} layer {index + 1}: sent {human_bytes(done)} in {secs:.2f}s")


@image_group.command("push")
@click.argument("host")
@click.argument("refs", nargs=-1, required=True, metavar="REF...")
@click.option("--insecure-registry", "insecure", multiple=True, metavar="HOST[:PORT]",
              help="Allow plain HTTP (and unverified HTTPS) to this registry; repeatable.")
@click.option("--platform", "platform_", metavar="OS/ARCH[/VARIANT]",
              help="Platform to pick from a multi-platform image (default: the host's, from uname -m).")
@json_option
@pass_app
def push_cmd(app: App, host: str, refs: tuple[str, ...], insecure: tuple[str, ...], platform_: str | None) -> None:
    """Stream each REF from its registry (reached from here) to deployed HOST (STACK/HOST or HOST) over
    SSH, sending only the layers the host lacks; the host records it as REF. JSON: one report, or a
    list of them for several REFs."""
    from ..deploy import inventory
    from ..remote.imagepush import push_images
    from ..remote.ssh import SshClient

    for ref in refs:
        reference.parse(ref)  # a malformed reference fails before anything is contacted
    plat = parse_platform(platform_) if platform_ else None
    record = inventory.find(app.root, host)
    with SshClient(record.target()) as ssh:
        reports = push_images(ssh, refs, insecure_registries=insecure, platform=plat, runner=app.runner,
                              progress=None if app.json else PushProgress())

    def human() -> None:
        took = f" in {reports[0].seconds:.2f}s" if len(reports) == 1 else ""
        for r in reports:
            if r.up_to_date:
                click.echo(f"{record.name} already has {r.ref} ({r.manifest_digest[:19]}): nothing sent{took}")
            else:
                click.echo(f"pushed {r.ref} to {record.name}: {len(r.sent)} layers sent, {len(r.skipped)} skipped, "
                           f"{r.bytes_sent / 1e6:.1f} MB{took}")
        if len(reports) > 1:
            click.echo(f"{len(reports)} images: {sum(len(r.sent) for r in reports)} layers sent, "
                       f"{sum(r.bytes_sent for r in reports) / 1e6:.1f} MB in {reports[0].seconds:.2f}s")

    data = [dict(r.to_json(), host=record.name) for r in reports]
    emit(app, data[0] if len(data) == 1 else data, human)


def register(cli: click.Group) -> None:
    cli.add_command(image_group)
