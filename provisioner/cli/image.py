"""`provision image …`: pull, list, inspect, remove, prune and export images in the store under --root."""
from __future__ import annotations

import re
import sys
import threading
import time

import click

from ..images import reference
from ..images.pull import Observer, PullResult, pull
from ..images.registry import parse_platform
from ..errors import ImageError
from ..runspec.resources import parse_size
from .app import App, emit, is_tty, json_option, pass_app, status, table


def _store(app: App):
    from ..images.store import Store  # imported late: `provision --help` must not need the store

    return Store(app.root, app.runner)


def _key(store, text: str) -> str:
    """The store key for what the user typed: a normalised name, or an image id (prefix)."""
    hexlike = re.fullmatch(r"(sha256:)?[0-9a-f]{4,64}", text)
    try:
        name = str(reference.parse(text))
    except ImageError:
        if hexlike:
            return text
        raise
    if hexlike:
        try:
            store.get_image(name)
        except ImageError:
            return text
    return name


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


class ProgressBars(Observer):
    """Per-layer progress on stderr: redrawn bars on a terminal, plain lines otherwise."""

    WIDTH = 24

    def __init__(self, tty: bool, stream=None, interval: float = 0.1):
        self.tty = tty
        self.out = stream or sys.stderr
        self.interval = interval
        self.lock = threading.Lock()
        self.rows: dict[int, dict] = {}
        self.order: list[int] = []
        self.total_layers = 0
        self.drawn = 0
        self.last = 0.0

    def resolved(self, image, needed):
        self.total_layers = len(image.layers)
        now = time.monotonic()
        with self.lock:
            for i in needed:
                self.rows[i] = {"digest": image.layers[i].digest, "size": image.layers[i].size, "got": 0,
                                "start": now, "end": None, "state": "downloading"}
                self.order.append(i)
        skipped = len(image.layers) - len(needed)
        self._line(f"{image.reference.familiar}: {len(image.layers)} layers"
                   + (f", {skipped} already in the store" if skipped else "")
                   + f", manifest {image.manifest_digest[:19]}")
        self._draw(force=True)

    def bytes(self, index, n):
        with self.lock:
            self.rows[index]["got"] += n
        self._draw()

    def downloaded(self, index):
        with self.lock:
            row = self.rows[index]
            row["end"] = time.monotonic()
            if row["state"].startswith("downloading"):
                row["state"] = row["state"].replace("downloading+", "") if "+" in row["state"] else "downloaded"
        if not self.tty:
            self._plain(index, "downloaded")
        self._draw(force=True)

    def applying(self, index):
        with self.lock:
            row = self.rows[index]
            row["state"] = "downloading+applying" if row["state"] == "downloading" else "applying"
        self._draw(force=True)

    def applied(self, index):
        with self.lock:
            self.rows[index]["state"] = "applied"
        if not self.tty:
            self._plain(index, "applied")
        self._draw(force=True)

    def finished(self, result: PullResult):
        self._draw(force=True)
        with self.lock:
            self.drawn = 0  # the final bars stay on screen; the summary goes below them
        fetched = (f"{result.fetched_layers} fetched, {result.layers - result.fetched_layers} already present"
                   if result.fetched_layers != result.layers else f"{result.layers} fetched")
        self._line(f"pulled {result.reference} (id {result.image_id[:19]}): {result.layers} layers ({fetched}), "
                   f"{human_bytes(result.bytes)} in {result.seconds:.2f}s ({human_bytes(result.rate)}/s)")

    # -- rendering ------------------------------------------------------------------------------------
    def _text(self, index: int) -> str:
        row = self.rows[index]
        size, got = row["size"], row["got"]
        elapsed = max(1e-6, (row["end"] or time.monotonic()) - row["start"])
        frac = min(1.0, got / size) if size else 1.0
        bar = "#" * int(frac * self.WIDTH) + "." * (self.WIDTH - int(frac * self.WIDTH))
        return (f"  layer {index + 1}/{self.total_layers} {row['digest'][7:19]} [{bar}] "
                f"{human_bytes(got)}/{human_bytes(size)} {human_bytes(got / elapsed)}/s {row['state']}")

    def _plain(self, index: int, what: str) -> None:
        row = self.rows[index]
        secs = max(1e-6, (row["end"] or time.monotonic()) - row["start"])
        self._line(f"  layer {index + 1}/{self.total_layers} {row['digest'][7:19]} {what}: "
                   f"{human_bytes(row['got'])} in {secs:.2f}s ({human_bytes(row['got'] / secs)}/s)")

    def _line(self, text: str) -> None:
        with self.lock:
            if self.tty and self.drawn:
                self.out.write(f"\x1b[{self.drawn}F\x1b[J")
                self.drawn = 0
            self.out.write(text + "\n")
            self.out.flush()

    def _draw(self, force: bool = False) -> None:
        if not self.tty:
            return
        now = time.monotonic()
        with self.lock:
            if not force and now - self.last < self.interval:
                return
            self.last = now
            lines = [self._text(i) for i in self.order]
            up = f"\x1b[{self.drawn}F" if self.drawn else ""
            self.out.write(up + "".join("\x1b[2K" + line + "\n" for line in lines))
            self.out.flush()
            self.drawn = len(lines)


@click.group("image")
def image_group() -> None:
    """Pull images from registries into the btrfs layer store under --root, and manage them."""


@image_group.command("pull")
@click.argument("refs", nargs=-1, required=True, metavar="REF...")
@click.option("--platform", "platform_", metavar="OS/ARCH[/VARIANT]",
              help="Platform to pick from a multi-platform image (default: this host's).")
@click.option("--insecure-registry", "insecure", multiple=True, metavar="HOST[:PORT]",
              help="Allow plain HTTP (and unverified HTTPS) to this registry; repeatable.")
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
@click.option("--max-size", metavar="SIZE", default=None,
              help="Refuse the image if its new layers would write more than SIZE uncompressed (like 2g); "
                   "the store's free space, less a reserve, is always a limit.")
@json_option
@pass_app
def pull_cmd(app: App, refs: tuple[str, ...], platform_: str | None, insecure: tuple[str, ...], quiet: bool,
             max_size: str | None) -> None:
    """Pull each REF (like redis:7 or host:5000/team/app@sha256:…), all layers in parallel. On a
    host, the registries configuration and credentials deploy delivered apply. JSON: one result,
    or a list of them for several REFs."""
    from ..images.sources import PullSettings

    for ref in refs:
        reference.parse(ref)  # a malformed reference fails before the store is touched
    plat = parse_platform(platform_) if platform_ else None
    limit = parse_size(max_size, "--max-size") if max_size is not None else None
    store = _store(app)
    settings = PullSettings.here(insecure, app.runner)
    results = []
    for ref in refs:
        observer = None if quiet else ProgressBars(is_tty())
        results.append(pull(ref, store, app.root, platform=plat, settings=settings, observer=observer,
                            max_size=limit))
    data = [r.to_json() for r in results]
    emit(app, data[0] if len(data) == 1 else data, lambda: click.echo("\n".join(r.image_id for r in results)))


def _row(rec) -> list[str]:
    names = ", ".join(reference.parse(n).familiar for n in rec.names) or "<none>"
    created = time.strftime("%Y-%m-%d %H:%M", time.localtime(rec.created)) if rec.created else "-"
    return [names, rec.id[7:19], str(len(rec.chain_ids)), human_bytes(rec.size), created]


@image_group.command("ls")
@json_option
@pass_app
def ls_cmd(app: App) -> None:
    """List the images in the store."""
    records = _store(app).images()
    emit(app, [r.to_json() for r in records],
         lambda: click.echo(table([_row(r) for r in records], ["NAME", "ID", "LAYERS", "SIZE", "CREATED"])))


@image_group.command("inspect")
@click.argument("ref")
@json_option
@pass_app
def inspect_cmd(app: App, ref: str) -> None:
    """Show an image's record: names, id, manifest digest, layer chains, config."""
    store = _store(app)
    rec = store.get_image(_key(store, ref))
    data = dict(rec.to_json(), manifest=rec.manifest)

    def human() -> None:
        cfg = rec.config.get("config") or {}
        click.echo(f"names:    {', '.join(rec.names) or '<none>'}")
        click.echo(f"id:       {rec.id}")
        click.echo(f"manifest: {rec.manifest_digest}")
        click.echo(f"platform: {rec.config.get('os', '?')}/{rec.config.get('architecture', '?')}"
                   + (f"/{rec.config['variant']}" if rec.config.get("variant") else ""))
        click.echo(f"size:     {human_bytes(rec.size)} in {len(rec.chain_ids)} layers")
        for key in ("Entrypoint", "Cmd", "WorkingDir", "User", "Env", "ExposedPorts"):
            if cfg.get(key):
                click.echo(f"{key.lower() + ':':<10}{cfg[key]}")

    emit(app, data, human)


@image_group.command("rm")
@click.argument("refs", nargs=-1, required=True)
@pass_app
def rm_cmd(app: App, refs: tuple[str, ...]) -> None:
    """Remove image names (an image goes with its last name; an id removes all its names)."""
    store = _store(app)
    for ref in refs:
        store.remove_image(_key(store, ref))
        status(f"removed {ref}")


@image_group.command("prune")
@json_option
@pass_app
def prune_cmd(app: App) -> None:
    """Delete layer chains that no image uses."""
    removed = _store(app).prune()
    emit(app, {"removed": removed}, lambda: click.echo(f"removed {len(removed)} unused layer chains"))


@image_group.command("export")
@click.argument("ref")
@click.argument("dest", type=click.Path(file_okay=False))
@pass_app
def export_cmd(app: App, ref: str, dest: str) -> None:
    """Write REF's flattened filesystem into directory DEST (like `umoci unpack`'s rootfs)."""
    from pathlib import Path

    store = _store(app)
    store.export(_key(store, ref), Path(dest))
    status(f"exported {ref} to {dest}")


def _names(names: tuple[str, ...]) -> list[str]:
    return [str(reference.parse(n)) for n in names]  # a malformed name fails before the store is touched


@image_group.command("load")
@click.argument("source")
@click.option("--name", "names", multiple=True, metavar="REF",
              help="Name to record the image under (repeatable; default: the layout's tag as layout/DIR:TAG).")
@click.option("--tag", help="Which image of the layout (its org.opencontainers.image.ref.name); needed when it holds several.")
@click.option("--all", "all_", is_flag=True, help="Load every image of the layout, each named by its tag (a full REF).")
@click.option("--platform", "platform_", metavar="OS/ARCH[/VARIANT]", help="Platform to pick from an index.")
@json_option
@pass_app
def load_cmd(app: App, source: str, names: tuple[str, ...], tag: str | None, all_: bool, platform_: str | None) -> None:
    """Load an OCI layout directory SOURCE (or `-`: a tar of one on stdin) into the store.

    Layer blobs may be left out of the layout when their layer chain is already stored (see
    `image layers`); every blob present is verified; each image loads all-or-nothing."""
    from pathlib import Path

    from ..images import history, imageload, imagereceive

    if all_ and (names or tag):
        raise ImageError("image load: --all names each image by its tag; it takes no --name or --tag")
    wanted = _names(names)
    plat = parse_platform(platform_) if platform_ else None
    store = _store(app)

    def load_from(layout: Path) -> list:
        if all_:
            return imageload.load_all(store, layout, platform=plat)
        img = imageload.read_layout(layout, tag, plat)
        default = f"layout/{Path(source).name if source != '-' else 'stdin'}:{img.tag or 'latest'}"
        return [imageload.load(store, layout, wanted or [default], tag=tag, platform=plat)]

    started = time.monotonic()
    if source == "-":
        with imagereceive.incoming(app.root) as work:
            stdin = sys.stdin.buffer
            if all_:  # layers applied as they arrive
                results = imagereceive.receive_and_load(stdin, store, work, platform=plat)
            else:
                imagereceive.receive_tar(stdin, work)
                results = load_from(work)
    else:
        results = load_from(Path(source))
    history.record_loads(app.root, results, time.monotonic() - started)

    def human() -> None:
        for r in results:
            click.echo(f"loaded {', '.join(r.names)} (id {r.image_id[:19]}): {r.layers} layers, "
                       f"{len(r.applied)} applied, {len(r.present)} already present")

    emit(app, {"images": [r.to_json() for r in results]} if all_ else results[0].to_json(), human)


@image_group.command("layers")
@click.option("--missing", is_flag=True, help="Only the layers whose chain is not in the store.")
@click.option("--name", metavar="REF", help="Also report the manifest digest of the image stored under REF.")
@json_option
@pass_app
def layers_cmd(app: App, missing: bool, name: str | None) -> None:
    """Say which layers of an image the store holds: an image config (or a JSON list of diff_ids) on
    stdin, or {"images": [{"name": REF, "diff_ids": [...]}, ...]} for several at once."""
    import json

    from ..images import imageload

    key = _names((name,))[0] if name else None
    try:
        doc = json.loads(sys.stdin.buffer.read())
    except ValueError as exc:
        raise ImageError(f"image layers: stdin is not JSON ({exc}); give an image config") from None
    data = imageload.answer_query(_store(app), doc, key, missing)

    def human() -> None:
        for one in data.get("images") or [data]:
            click.echo(table([[str(x["index"]), x["diff_id"][7:19], "present" if x["present"] else "missing"]
                              for x in one["layers"]], ["INDEX", "DIFF_ID", "STATE"]))

    emit(app, data, human)


def register(cli: click.Group) -> None:
    cli.add_command(image_group)
