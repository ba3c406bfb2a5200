"""`provision image push HOST REF`: an image from the operator's registry to a host with no internet.

Like `docker save | ssh host docker load`, but sending only what the host lacks:

1. Resolve REF in its registry, here on the operator's machine (for the host's platform, from
   `uname -m` over SSH unless given).
2. Ask the host's agent which layer chains its store already holds and what REF names there
   (`provision image layers --name REF`, the image config on stdin).
3. Plan (pure): nothing to do when REF already names this manifest and no layer is missing;
   otherwise send the blobs of the missing layers only.
4. Stream a tar of an OCI layout (oci-layout, index.json, manifest, config, the missing layer
   blobs straight from the registry, each verified as it streams) into
   `provision image load - --name REF` on the host, which stages it under
   <root>/incoming/<id>, verifies every blob again and loads it all-or-nothing.

REF is recorded on the host under its full name, so `provision up` / `container run` there find the
image and never try to pull it.
"""
from __future__ import annotations

import json
import tarfile
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

from ..containers import reference as _reference
from ..containers.registry import Platform, Registry, ResolvedImage, parse_platform
from ..errors import HostError, ImageError

REMOTE = ("sudo", "-n", "provision")
REF_NAME = "org.opencontainers.image.ref.name"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
CHUNK = 1 << 20
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "armv6l": "arm", "i686": "386",
         "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}

Progress = Callable[[int, int, int], None]  # (layer index, bytes sent so far, layer size)


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
    except (KeyError, TypeError, ValueError) as exc:
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


def layout_files(image: ResolvedImage) -> list[tuple[str, bytes]]:
    """The small files of a one-image OCI layout: oci-layout, index.json, manifest and config blobs."""
    entry = {"mediaType": image.media_type, "digest": image.manifest_digest, "size": len(image.manifest),
             "annotations": {REF_NAME: str(image.reference)}}
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]}).encode()
    return [("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", index),
            (f"blobs/sha256/{image.manifest_digest.split(':', 1)[1]}", image.manifest),
            (f"blobs/sha256/{image.config_digest.split(':', 1)[1]}", image.config)]


def write_layout_tar(send: Callable[[bytes], None], image: ResolvedImage, send_layers: Iterable[int],
                     open_blob: Callable, progress: Progress | None = None) -> int:
    """Write the layout as a tar to `send`: small files first, then each layer blob streamed from
    `open_blob(descriptor)` (which must raise at EOF when the blob fails verification). Returns the
    layer bytes sent."""
    for name, data in layout_files(image):
        send(_header(name, len(data)) + data + _pad(len(data)))
    total = 0
    for index in send_layers:
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
                    progress(index, done, desc.size)
        finally:
            stream.close()
        if done != desc.size:
            raise ImageError(f"{image.reference.familiar}: layer {index} blob {desc.digest} ended at {done} of "
                             f"{desc.size} bytes")
        send(_pad(desc.size))
        total += done
    send(b"\0" * (2 * tarfile.BLOCKSIZE))
    return total


# ---- the push ------------------------------------------------------------------------------------
def _remote_json(out: str, what: str, where: str) -> dict:
    try:
        data = json.loads(out)
    except ValueError:
        raise HostError(f"ssh {where}: `{what}` did not print JSON: {out.strip()[:200]!r}") from None
    if not isinstance(data, dict):
        raise HostError(f"ssh {where}: `{what}` printed {type(data).__name__}, not a JSON object")
    return data


def push_image(ssh, ref: str, *, insecure_registries: Iterable[str] = (), platform: Platform | str | None = None,
               remote: Sequence[str] = REMOTE, progress: Progress | None = None, registry: Registry | None = None,
               runner=None) -> PushReport:
    """Push `ref` from its registry (reached from here) to the host behind `ssh` (an SshClient)."""
    start = time.monotonic()
    parsed = _reference.parse(ref)
    name = str(parsed)
    where = ssh.target.where
    if isinstance(platform, str):
        platform = parse_platform(platform)
    if platform is None:
        platform = platform_of(ssh.run(["uname", "-m"]).stdout)
    reg = registry or Registry(parsed, insecure_hosts=insecure_registries, runner=runner)
    image = reg.resolve(platform)
    query = [*remote, "--json", "image", "layers", "--name", name]
    answer = _remote_json(ssh.run(query, input=image.config.decode()).stdout, " ".join(query), where)
    plan = plan_push(image, answer)
    report = PushReport(name, where, image.manifest_digest, image.config_digest, len(image.layers),
                        list(plan.send), list(plan.skip), up_to_date=plan.up_to_date)
    if plan.up_to_date:
        report.seconds = time.monotonic() - start
        return report
    sent = [0]

    def write(send: Callable[[bytes], None]) -> None:
        sent[0] = write_layout_tar(send, image, plan.send, reg.open_blob, progress)

    load = [*remote, "--json", "image", "load", "-", "--name", name]
    out = ssh.run_streaming(load, write)
    result = _remote_json(out.stdout, " ".join(load), where)
    if result.get("manifest_digest") != image.manifest_digest:
        raise HostError(f"ssh {where}: the host loaded manifest {result.get('manifest_digest')}, "
                        f"expected {image.manifest_digest}")
    report.bytes_sent = sent[0]
    report.seconds = time.monotonic() - start
    return report
