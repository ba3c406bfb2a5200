"""`provision image push HOST REF`: images from the operator's registry to a host with no internet.

Like `docker save | ssh host docker load`, but sending only what the host lacks:

1. Resolve each REF in its registry, here on the operator's machine (for the host's platform, from
   `uname -m` over SSH unless given).
2. Ask the host's agent, once for all the images, which layer chains its store already holds and
   what each REF names there (`provision image layers`, the diff_ids on stdin).
3. Plan (pure, `plan_push`): nothing to do for an image when REF already names this manifest and no
   layer is missing; otherwise send the blobs of its missing layers only (a blob two images need
   travels once).
4. Stream a tar of one OCI layout (oci-layout, index.json tagging each manifest with its REF,
   manifests, configs, the missing layer blobs straight from the registry, each verified as it
   streams) into `provision image load - --all` on the host, which stages it under
   <root>/incoming/<id>, verifies every blob again and loads each image all-or-nothing.

Each REF is recorded on the host under its full name, so `provision up` / `container run` there find
the image and never try to pull it. `push_images` does several images in one round trip each way;
`push_image` is the one-image form.
"""
from __future__ import annotations

import json
import tarfile
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

from ..errors import HostError, ImageError
from ..images import reference as _reference
from ..images.registry import Platform, Registry, ResolvedImage, parse_platform
from ..runner import Runner

REMOTE = ("provision",)   # the agent on the host, run as root
REF_NAME = "org.opencontainers.image.ref.name"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
CHUNK = 1 << 20
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "armv6l": "arm", "i686": "386",
         "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}

Progress = Callable[[int, int, int], None]  # (layer index, bytes sent so far, layer size)
BatchProgress = Callable[[str, int, int, int], None]  # (ref, layer index, bytes sent so far, layer size)


@dataclass
class PushReport:
    ref: str
    host: str
    manifest_digest: str
    image_id: str
    layers: int
    sent: list[int] = field(default_factory=list)       # layer indices whose blobs went over SSH
    skipped: list[int] = field(default_factory=list)    # already on the host
    bytes_sent: int = 0                                  # layer blob bytes
    seconds: float = 0.0
    up_to_date: bool = False                             # REF already named this manifest: nothing sent

    def to_json(self) -> dict:
        return {"ref": self.ref, "host": self.host, "manifest_digest": self.manifest_digest, "id": self.image_id,
                "layers": self.layers, "sent": self.sent, "skipped": self.skipped, "bytes_sent": self.bytes_sent,
                "seconds": round(self.seconds, 3), "up_to_date": self.up_to_date}


@dataclass(frozen=True)
class PushPlan:
    send: tuple[int, ...]
    skip: tuple[int, ...]
    up_to_date: bool


def plan_push(image: ResolvedImage, answer: dict) -> PushPlan:
    """What to send, from the host's answer to `image layers --json --name REF`."""
    try:
        missing = sorted({int(i) for i in answer["missing"]})
        current = answer.get("image") or {}
        if not isinstance(current, dict):
            raise TypeError(f"'image' is {type(current).__name__}")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise HostError(f"the host's `image layers` answer is not understood ({exc}): {str(answer)[:200]}") from None
    bad = [i for i in missing if not 0 <= i < len(image.layers)]
    if bad:
        raise HostError(f"the host reports layer {bad[0]} missing, but {image.reference.familiar} has "
                        f"{len(image.layers)} layers")
    skip = tuple(i for i in range(len(image.layers)) if i not in missing)
    up_to_date = not missing and current.get("manifest_digest") == image.manifest_digest
    return PushPlan(() if up_to_date else tuple(missing), skip, up_to_date)


def platform_of(machine: str) -> Platform:
    """The platform for `uname -m` output."""
    m = machine.strip()
    if m not in _ARCH:
        raise HostError(f"unknown host architecture {m!r} (from uname -m); pass --platform")
    return parse_platform(f"linux/{_ARCH[m]}" + ("/v7" if m == "armv7l" else "/v6" if m == "armv6l" else ""))


# ---- the tar stream --------------------------------------------------------------------------------
def _header(name: str, size: int) -> bytes:
    ti = tarfile.TarInfo(name)
    ti.size, ti.mode, ti.mtime, ti.type = size, 0o644, 0, tarfile.REGTYPE
    return ti.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape")


def _pad(size: int) -> bytes:
    return b"\0" * (-size % tarfile.BLOCKSIZE)


@dataclass
class Shipment:
    """One image of a push: its resolved manifest, where its blobs come from, the layers to send."""

    image: ResolvedImage
    open_blob: Callable
    send: tuple[int, ...]


def layout_files(shipments: Sequence[Shipment]) -> list[tuple[str, bytes]]:
    """The small files of an OCI layout of the shipments' images, each tagged with its full reference:
    oci-layout, index.json, and the manifest and config blobs (each once)."""
    entries = [{"mediaType": s.image.media_type, "digest": s.image.manifest_digest, "size": len(s.image.manifest),
                "annotations": {REF_NAME: str(s.image.reference)}} for s in shipments]
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).encode()
    files = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}', "index.json": index}
    for s in shipments:
        for digest, data in ((s.image.manifest_digest, s.image.manifest), (s.image.config_digest, s.image.config)):
            files.setdefault(f"blobs/sha256/{digest.split(':', 1)[1]}", data)
    return list(files.items())


def _stream_blob(send: Callable[[bytes], None], image: ResolvedImage, index: int, open_blob: Callable,
                 progress: Callable[[int, int], None] | None) -> int:
    desc = image.layers[index]
    send(_header(f"blobs/sha256/{desc.digest.split(':', 1)[1]}", desc.size))
    done = 0
    stream = open_blob(desc)
    try:
        while True:
            chunk = stream.read(CHUNK)
            if not chunk:
                break
            done += len(chunk)
            if done > desc.size:
                raise ImageError(f"{image.reference.familiar}: layer {index} blob {desc.digest} is longer than "
                                 f"its descriptor's {desc.size} bytes")
            send(chunk)
            if progress:
                progress(done, desc.size)
    finally:
        stream.close()
    if done != desc.size:
        raise ImageError(f"{image.reference.familiar}: layer {index} blob {desc.digest} ended at {done} of "
                         f"{desc.size} bytes")
    send(_pad(desc.size))
    return done


def write_layout_tar(send: Callable[[bytes], None], shipments: Sequence[Shipment],
                     progress: BatchProgress | None = None) -> list[int]:
    """Write the layout as a tar to `send`: small files first, then each shipment's layer blobs in
    layer order, streamed from its `open_blob(descriptor)` (which must raise at EOF when the blob
    fails verification). Returns the layer bytes sent per shipment."""
    for name, data in layout_files(shipments):
        send(_header(name, len(data)) + data + _pad(len(data)))
    sent = []
    for s in shipments:
        total = 0
        for index in s.send:
            ref = str(s.image.reference)
            total += _stream_blob(send, s.image, index, s.open_blob,
                                  (lambda d, n, r=ref, i=index: progress(r, i, d, n)) if progress else None)
        sent.append(total)
    send(b"\0" * (2 * tarfile.BLOCKSIZE))
    return sent


# ---- the push ------------------------------------------------------------------------------------
def _remote_json(out: str, what: str, where: str) -> dict:
    try:
        data = json.loads(out)
    except ValueError:
        raise HostError(f"ssh {where}: `{what}` did not print JSON: {out.strip()[:200]!r}") from None
    if not isinstance(data, dict):
        raise HostError(f"ssh {where}: `{what}` printed {type(data).__name__}, not a JSON object")
    return data


def _answers(data: dict, names: list[str], where: str) -> list[dict]:
    got = data.get("images")
    if not isinstance(got, list) or len(got) != len(names) or \
            [a.get("name") if isinstance(a, dict) else None for a in got] != names:
        raise HostError(f"ssh {where}: `image layers` answered for {str(got)[:200]}, not for {', '.join(names)}")
    return got


def push_images(ssh: Runner, refs: Sequence[str], *, insecure_registries: Iterable[str] = (),
                platform: Platform | str | None = None, remote: Sequence[str] = REMOTE,
                progress: BatchProgress | None = None, registries: dict[str, Registry] | None = None,
                runner=None) -> list[PushReport]:
    """Push several images in one go: one question to the host about all of them, one stream with
    every missing blob (a layer shared by two of them travels once), one load. Returns a report per
    ref, in order; their `seconds` is the whole push's. A layer blob sent for an earlier image of
    the same push is listed in `skipped` of the later ones."""
    start = time.monotonic()
    names = list(dict.fromkeys(str(_reference.parse(r)) for r in refs))  # all refs checked before any contact
    where = ssh.where
    if isinstance(platform, str):
        platform = parse_platform(platform)
    if platform is None:
        platform = platform_of(ssh.run(["uname", "-m"]).stdout)
    regs = {n: (registries or {}).get(n) or Registry(_reference.parse(n), insecure_hosts=insecure_registries,
                                                      runner=runner) for n in names}
    images = {n: regs[n].resolve(platform) for n in names}
    query = [*remote, "--json", "image", "layers"]
    stdin = json.dumps({"images": [{"name": n, "diff_ids": images[n].diff_ids} for n in names]})
    answers = _answers(_remote_json(ssh.run(query, input=stdin, sudo=True).stdout, " ".join(query), where), names,
                       where)
    reports, shipments, queued = {}, [], set()
    for n, answer in zip(names, answers):
        image = images[n]
        plan = plan_push(image, answer)
        send = tuple(i for i in plan.send if image.layers[i].digest not in queued)
        queued.update(image.layers[i].digest for i in send)
        skip = tuple(sorted(set(range(len(image.layers))) - set(send)))
        reports[n] = PushReport(n, where, image.manifest_digest, image.config_digest, len(image.layers),
                                list(send), list(skip), up_to_date=plan.up_to_date)
        if not plan.up_to_date:
            shipments.append(Shipment(image, regs[n].open_blob, send))
    if shipments:
        sent: list[int] = []

        def write(out: Callable[[bytes], None]) -> None:
            sent[:] = write_layout_tar(out, shipments, progress)

        load = [*remote, "--json", "image", "load", "-", "--all"]
        data = _remote_json(ssh.run(load, input=write, sudo=True).stdout, " ".join(load), where)
        loaded = {r.get("names", [None])[0]: r.get("manifest_digest") for r in data.get("images") or []
                  if isinstance(r, dict) and r.get("names")}
        for s, nbytes in zip(shipments, sent):
            n = str(s.image.reference)
            if loaded.get(n) != s.image.manifest_digest:
                raise HostError(f"ssh {where}: the host loaded {n} as {loaded.get(n)}, expected "
                                f"{s.image.manifest_digest}")
            reports[n].bytes_sent = nbytes
    seconds = time.monotonic() - start
    for r in reports.values():
        r.seconds = seconds
    return [reports[str(_reference.parse(r))] for r in refs]


def push_image(ssh: Runner, ref: str, *, insecure_registries: Iterable[str] = (), platform: Platform | str | None = None,
               remote: Sequence[str] = REMOTE, progress: Progress | None = None, registry: Registry | None = None,
               runner=None) -> PushReport:
    """Push `ref` from its registry (reached from here) to the host behind `ssh` (an SshClient, or
    any Runner)."""
    name = str(_reference.parse(ref))
    batch = (lambda _ref, index, done, size: progress(index, done, size)) if progress else None
    return push_images(ssh, [ref], insecure_registries=insecure_registries, platform=platform, remote=remote,
                       progress=batch, registries={name: registry} if registry else None, runner=runner)[0]
