"""Distribution-spec v2 client: resolve a reference to a manifest, its config and its layers.

`Registry(ref).resolve(platform)` fetches the manifest with an Accept for OCI index/manifest
and Docker manifest list/schema2, follows an index to the entry for the platform, verifies
every digest it can (the manifest when fetched by digest or through an index, the config
always), and returns a `ResolvedImage`. Blobs are opened with `open_blob` (see
transport.BlobReader: verified, resumable).
"""
from __future__ import annotations

import hashlib
import json
import platform as _platform
from dataclasses import dataclass, field
from typing import Callable, Iterable

from ..errors import ImageError, RegistryError
from . import reference as _reference
from .reference import Reference
from .transport import BlobReader, Transport, read_all

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_SCHEMA1 = ("application/vnd.docker.distribution.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v1+prettyjws")
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
ACCEPT = ", ".join([OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST])

LAYER_TYPES = {
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar",
}
MAX_MANIFEST = 4 << 20
MAX_CONFIG = 16 << 20

_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64", "armv7l": "arm",
         "armv6l": "arm", "i686": "386", "i386": "386", "ppc64le": "ppc64le", "s390x": "s390x",
         "riscv64": "riscv64"}


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    def matches(self, entry: dict) -> bool:
        if entry.get("os") != self.os or entry.get("architecture") != self.architecture:
            return False
        if self.variant is None:
            return True
        have = entry.get("variant")
        # arm64 images often omit the (only) variant v8.
        return have == self.variant or (have is None and (self.architecture, self.variant) == ("arm64", "v8"))


def host_platform() -> Platform:
    machine = _platform.machine()
    arch = _ARCH.get(machine, machine)
    variant = {"armv7l": "v7", "armv6l": "v6"}.get(machine)
    return Platform("linux", arch, variant)


def parse_platform(text: str) -> Platform:
    parts = text.strip().split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise ImageError(f"invalid platform {text!r}: expected os/arch[/variant], e.g. linux/amd64")
    arch = _ARCH.get(parts[1], parts[1])
    return Platform(parts[0], arch, parts[2] if len(parts) == 3 else None)


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: dict | None = None

    @classmethod
    def from_json(cls, d: object, where: str) -> "Descriptor":
        if not isinstance(d, dict):
            raise ImageError(f"{where}: descriptor is not an object")
        digest, size = d.get("digest"), d.get("size")
        if not isinstance(digest, str) or not isinstance(size, int) or size < 0:
            raise ImageError(f"{where}: descriptor needs a digest and a non-negative size")
        _reference.validate_digest(digest, f"digest in {where}")
        return cls(str(d.get("mediaType") or ""), digest, size, d.get("platform"))


@dataclass
class ResolvedImage:
    reference: Reference
    manifest_digest: str
    manifest: bytes
    media_type: str
    config_digest: str
    config: bytes
    layers: list[Descriptor]
    diff_ids: list[str]
    platform: Platform | None = None
    config_json: dict = field(default_factory=dict)

    @property
    def size(self) -> int:
        return sum(d.size for d in self.layers)


def digest_of(data: bytes, algo: str = "sha256") -> str:
    return f"{algo}:{hashlib.new(algo, data).hexdigest()}"


def _json(data: bytes, what: str) -> dict:
    try:
        obj = json.loads(data)
    except ValueError as err:
        raise ImageError(f"{what} is not valid JSON ({err})") from None
    if not isinstance(obj, dict):
        raise ImageError(f"{what} is not a JSON object")
    return obj


class Registry:
    """The registry serving one reference's repository."""

    def __init__(self, ref: Reference, *, insecure_hosts: Iterable[str] = (), transport: Transport | None = None,
                 **transport_options):
        self.ref = ref
        hosts = {h.split("://", 1)[-1].rstrip("/") for h in insecure_hosts}  # accept http://host:port/ too
        insecure = ref.domain in hosts or ref.api_host in hosts
        self.t = transport or Transport(ref.api_host, subject=str(ref.familiar), insecure=insecure,
                                        **transport_options)
        self.scope = f"repository:{ref.repository}:pull"

    def _fail(self, why: str) -> ImageError:
        return ImageError(f"{self.ref.familiar}: {why}", reference=str(self.ref))

    def fetch_manifest(self, lookup: str) -> tuple[bytes, str, str]:
        """(body, media type, digest) of the manifest at tag-or-digest `lookup`; verified when a digest."""
        resp = self.t.request("GET", f"/v2/{self.ref.repository}/manifests/{lookup}",
                              headers={"Accept": ACCEPT}, scope=self.scope, what="manifest", stream=True)
        try:
            if resp.status_code == 404:
                kind = "digest" if ":" in lookup else "tag"
                raise self._fail(f"not found: no manifest for {kind} {lookup!r} in {self.ref.api_host}/"
                                 f"{self.ref.repository} (manifest unknown)")
            if resp.status_code != 200:
                raise RegistryError(f"{self.ref.familiar}: manifest request answered HTTP {resp.status_code}",
                                    reference=str(self.ref))
            body = resp.raw.read(MAX_MANIFEST + 1, decode_content=True)
        finally:
            resp.close()
        if len(body) > MAX_MANIFEST:
            raise self._fail(f"manifest larger than {MAX_MANIFEST} bytes; refused")
        media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
        if ":" in lookup:
            algo = lookup.split(":", 1)[0]
            got = digest_of(body, algo)
            if got != lookup:
                raise RegistryError(f"{self.ref.familiar}: manifest failed verification: "
                                    f"asked for {lookup}, content hashes to {got}", reference=str(self.ref))
            digest = lookup
        else:
            digest = resp.headers.get("Docker-Content-Digest") or digest_of(body)
            if digest != digest_of(body, digest.split(":", 1)[0]):
                digest = digest_of(body)  # the header is advisory; the content decides
        return body, media_type, digest

    def fetch_blob(self, desc: Descriptor, limit: int) -> bytes:
        if desc.size > limit:
            raise self._fail(f"blob {desc.digest} is {desc.size} bytes, more than the {limit} allowed")
        return read_all(BlobReader(self.t, self.ref.repository, desc.digest, desc.size))

    def open_blob(self, desc: Descriptor, on_bytes: Callable[[int], None] | None = None) -> BlobReader:
        return BlobReader(self.t, self.ref.repository, desc.digest, desc.size, on_bytes=on_bytes)

    def resolve(self, platform: Platform | None = None) -> ResolvedImage:
        want = platform or host_platform()
        body, media_type, digest = self.fetch_manifest(self.ref.lookup)
        doc = _json(body, f"{self.ref.familiar}: manifest")
        media_type = self._media_type(media_type, doc)
        chosen_platform = None
        if media_type in INDEX_TYPES:
            entry = self._select(doc, want)
            chosen_platform = want
            body, media_type, digest = self.fetch_manifest(entry.digest)
            doc = _json(body, f"{self.ref.familiar}: manifest {entry.digest}")
            media_type = self._media_type(media_type, doc)
            if media_type in INDEX_TYPES:
                raise self._fail("nested image index is not supported")
        if media_type not in MANIFEST_TYPES:
            raise self._fail(f"unsupported manifest type {media_type!r}")
        where = f"{self.ref.familiar}: manifest"
        config = Descriptor.from_json(doc.get("config"), where + " config")
        layers_json = doc.get("layers")
        if not isinstance(layers_json, list):
            raise self._fail("manifest has no layers list")
        layers = [Descriptor.from_json(x, f"{where} layer {i}") for i, x in enumerate(layers_json)]
        for i, layer in enumerate(layers):
            if layer.media_type not in LAYER_TYPES:
                raise self._fail(f"layer {i} has unsupported media type {layer.media_type!r}")
        config_bytes = self.fetch_blob(config, MAX_CONFIG)
        cfg = _json(config_bytes, f"{self.ref.familiar}: image config")
        rootfs = cfg.get("rootfs") if isinstance(cfg.get("rootfs"), dict) else {}
        diff_ids = rootfs.get("diff_ids")
        if not isinstance(diff_ids, list) or len(diff_ids) != len(layers):
            raise self._fail(f"image config lists {len(diff_ids) if isinstance(diff_ids, list) else 'no'} "
                             f"diff_ids for {len(layers)} layers")
        for d in diff_ids:
            _reference.validate_digest(d if isinstance(d, str) else repr(d), "diff_id in image config")
        if chosen_platform is None and cfg.get("os") and cfg.get("architecture") and platform is not None:
            if not want.matches(cfg):
                raise self._fail(f"image is {cfg.get('os')}/{cfg.get('architecture')}, not {want}")
        return ResolvedImage(self.ref, digest, body, media_type, config.digest, config_bytes, layers,
                             list(diff_ids), chosen_platform, cfg)

    def _media_type(self, header_type: str, doc: dict) -> str:
        mt = doc.get("mediaType") or header_type
        if mt in DOCKER_SCHEMA1 or doc.get("schemaVersion") == 1:
            raise self._fail("Docker schema1 manifests are not supported (re-push the image with a current tool)")
        if mt not in INDEX_TYPES + MANIFEST_TYPES:
            # OCI allows omitting mediaType: decide by shape.
            if "manifests" in doc:
                return OCI_INDEX
            if "layers" in doc and "config" in doc:
                return OCI_MANIFEST
        return mt

    def _select(self, index: dict, want: Platform) -> Descriptor:
        entries = index.get("manifests")
        if not isinstance(entries, list):
            raise self._fail("image index has no manifests list")
        available = []
        for i, raw in enumerate(entries):
            desc = Descriptor.from_json(raw, f"{self.ref.familiar}: index entry {i}")
            plat = desc.platform or {}
            available.append("/".join(p for p in (plat.get("os"), plat.get("architecture"), plat.get("variant")) if p)
                             or "unknown")
            if want.matches(plat):
                return desc
        raise self._fail(f"no image for platform {want} (available: {', '.join(available) or 'none'})")
