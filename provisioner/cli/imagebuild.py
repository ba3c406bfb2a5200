"""`provision image build RECIPE --output DIR [--tag T] [--push REF]`: write test images (OCI layouts)."""
from __future__ import annotations

from pathlib import Path

import click

from ..errors import ImageError
from .app import App, emit, json_option, pass_app, status


@click.command("build")
@click.argument("recipe")
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="OCI layout directory to write (created; existing blobs are kept).")
@click.option("--tag", "-t", help="Tag for the image (single-image recipes; default: latest).")
@click.option("--format", "fmt", type=click.Choice(["oci", "docker"]), default="oci", show_default=True,
              help="Media types in the registry: OCI, or Docker schema2 (the layout is OCI; skopeo converts on push).")
@click.option("--push", "push_ref", metavar="REF",
              help="Push with skopeo: REF for one image; for several tags, REF is a repository (REF:TAG each).")
@click.option("--tls-verify/--insecure", default=False, show_default=True,
              help="Verify TLS when pushing (default: insecure, for test registries on loopback).")
@json_option
@pass_app
def build_cmd(app: App, recipe: str, output: Path, tag: str | None, fmt: str, push_ref: str | None,
              tls_verify: bool) -> None:
    """Write the test image RECIPE as an OCI layout: busybox, crafted, multiplatform, debian-redis,
    debian-nginx (the debian ones run mmdebstrap once and cache under /var/tmp/provisioner-imagecache)."""
    from ..imagebuild.recipes import build, push

    status(f"building {recipe} into {output}")
    tags = build(recipe, output, app.runner, tag=tag)
    pushed = []
    if push_ref:
        if len(tags) > 1 and ":" in push_ref.rsplit("/", 1)[-1]:
            raise ImageError(f"--push {push_ref!r}: recipe {recipe!r} has tags {', '.join(tags)}; give a repository "
                             "without a tag (each is pushed as REPO:TAG)")
        for t in tags:
            ref = push_ref if len(tags) == 1 else f"{push_ref}:{t}"
            status(f"pushing {output}:{t} -> {ref}")
            push(output, ref, insecure=not tls_verify, tag=t, runner=app.runner, fmt=fmt)
            pushed.append(ref)
    result = {"recipe": recipe, "layout": str(output), "tags": tags, "format": fmt, "pushed": pushed}
    emit(app, result, "\n".join([f"{output}:{t}" for t in tags] + [f"pushed {r}" for r in pushed]))


def register(cli: click.Group) -> None:
    group = cli.commands.get("image")
    if group is None:  # PULL's `image` group is missing: stand-alone until it exists
        group = click.Group("image-build", help="Build test images.")
        cli.add_command(group)
    group.add_command(build_cmd)
