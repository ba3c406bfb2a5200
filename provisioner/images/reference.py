"""Docker image references: `redis`, `library/redis:7`, `host:5000/a/b@sha256:…`.

Grammar (distribution/reference):
    reference      := name [ ":" tag ] [ "@" digest ]
    name           := [domain "/"] path-component ["/" path-component]*
    domain         := domain-component ["." domain-component]* [":" port]   (or "[ipv6]" [":" port])
    path-component := [a-z0-9]+ (separator [a-z0-9]+)*     separator := [_.] | "__" | "-"+
    tag            := [\\w][\\w.-]{0,127}
    digest         := algorithm ":" hex

The first component is a domain only if it contains "." or ":", or is "localhost" (or has an
upper-case letter), exactly as Docker decides; otherwise the registry is docker.io and a
single-component path gets "library/". Without a tag or digest the tag is "latest".
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import ImageError

DEFAULT_DOMAIN = "docker.io"
LEGACY_DOMAIN = "index.docker.io"
DOCKER_API_HOST = "registry-1.docker.io"
DEFAULT_TAG = "latest"
NAME_TOTAL_MAX = 255

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_RE = re.compile(
    rf"^(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?$"
)
_PATH_COMPONENT_RE = re.compile(r"^[a-z0-9]+(?:(?:[_.]|__|-+)[a-z0-9]+)*$")
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST_RE = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}$")
_DIGEST_HEX = {"sha256": 64, "sha512": 128}


@dataclass(frozen=True)
class Reference:
    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """The repository name with its domain: `docker.io/library/redis`."""
        return f"{self.domain}/{self.path}"

    @property
    def repository(self) -> str:
        """The path used in /v2/<repository>/… URLs."""
        return self.path

    @property
    def api_host(self) -> str:
        """The host:port actually contacted (docker.io's API lives elsewhere)."""
        return DOCKER_API_HOST if self.domain == DEFAULT_DOMAIN else self.domain

    @property
    def lookup(self) -> str:
        """What to ask the registry for: the digest if pinned, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    def with_digest(self, digest: str) -> "Reference":
        return Reference(self.domain, self.path, self.tag, digest)

    def __str__(self) -> str:
        s = self.name
        if self.tag:
            s += ":" + self.tag
        if self.digest:
            s += "@" + self.digest
        return s

    @property
    def familiar(self) -> str:
        """The short form users type: `redis:7` for docker.io/library/redis:7."""
        name = self.name
        if self.domain == DEFAULT_DOMAIN:
            name = self.path[len("library/"):] if self.path.startswith("library/") else self.path
        s = name
        if self.tag:
            s += ":" + self.tag
        if self.digest:
            s += "@" + self.digest
        return s


def _bad(ref: str, why: str) -> ImageError:
    return ImageError(f"invalid image reference {ref!r}: {why}", reference=ref)


def validate_digest(digest: str, what: str = "digest") -> str:
    if not _DIGEST_RE.fullmatch(digest):
        raise ImageError(f"invalid {what} {digest!r}: expected algorithm:hex")
    algo, hexpart = digest.split(":", 1)
    want = _DIGEST_HEX.get(algo)
    if want is None:
        raise ImageError(f"invalid {what} {digest!r}: unsupported algorithm {algo!r} (sha256, sha512)")
    if len(hexpart) != want or not re.fullmatch(r"[0-9a-f]+", hexpart):
        raise ImageError(f"invalid {what} {digest!r}: {algo} needs {want} lower-case hex digits")
    return digest


def parse(ref: str) -> Reference:
    """Parse and normalise a reference; ImageError naming the reference when it is invalid."""
    if not isinstance(ref, str) or not ref:
        raise _bad(str(ref), "empty")
    if ref != ref.strip() or any(c.isspace() for c in ref):
        raise _bad(ref, "contains whitespace")
    rest, digest = ref, None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        try:
            validate_digest(digest)
        except ImageError as err:
            raise _bad(ref, str(err).replace("invalid digest", "bad digest")) from None
    tag = None
    # A tag is after the last ":" that comes after the last "/" (a ":" before it is a port).
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1:]
        if not _TAG_RE.fullmatch(tag):
            raise _bad(ref, f"bad tag {tag!r} (letters, digits, _ . -; at most 128; not starting with . or -)")
    if not rest:
        raise _bad(ref, "missing repository name")
    parts = rest.split("/")
    first = parts[0]
    if len(parts) > 1 and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        domain, path_parts = first, parts[1:]
        if not _DOMAIN_RE.fullmatch(domain):
            raise _bad(ref, f"bad registry host {domain!r}")
    else:
        domain, path_parts = DEFAULT_DOMAIN, parts
    if domain == LEGACY_DOMAIN:
        domain = DEFAULT_DOMAIN
    for comp in path_parts:
        if not _PATH_COMPONENT_RE.fullmatch(comp):
            if comp != comp.lower():
                raise _bad(ref, f"repository name {comp!r} must be lower-case")
            raise _bad(ref, f"bad repository name component {comp!r}")
    if domain == DEFAULT_DOMAIN and len(path_parts) == 1:
        path_parts = ["library"] + path_parts
    path = "/".join(path_parts)
    if len(domain) + 1 + len(path) > NAME_TOTAL_MAX:
        raise _bad(ref, f"repository name longer than {NAME_TOTAL_MAX} characters")
    if tag is None and digest is None:
        tag = DEFAULT_TAG
    return Reference(domain, path, tag, digest)


def looks_like_id(s: str) -> bool:
    """An image id or unique prefix (`sha256:abc…` or 12+ hex digits), not a reference."""
    return bool(re.fullmatch(r"(sha256:)?[0-9a-f]{12,64}", s))
