"""/images/...: list, inspect, pull (`POST /images/create`, its progress streamed as dockerd's JSON
lines), tag, remove, prune — over the btrfs image store `provision image` uses."""
from __future__ import annotations

import base64
import binascii
import json
import queue
import threading
import time
from dataclasses import dataclass

from ..errors import ImageError, ProvisionerError
from ..images import reference
from ..images.auth import Credentials
from ..images.pull import Observer, pull
from ..images.sources import PullSettings
from .http import bad_request, conflict, not_supported, parse_filters
from .views import rfc3339


def _familiar(name: str) -> str:
    try:
        return reference.parse(name).familiar
    except ImageError:
        return name


def _tags_digests(rec) -> tuple[list[str], list[str]]:
    tags, digests = [], []
    for n in rec.names:
        (digests if "@" in n else tags).append(_familiar(n))
    if not digests and rec.manifest_digest:
        for t in tags:
            digests.append(t.rsplit(":", 1)[0] + "@" + rec.manifest_digest if ":" in t.split("/")[-1]
                           else t + "@" + rec.manifest_digest)
    return tags, sorted(set(digests))


def _created(rec) -> float:
    c = (rec.config or {}).get("created")
    if isinstance(c, str):
        from .views import stamp_epoch

        return stamp_epoch(c.replace("+00:00", "Z")) or rec.created
    return rec.created


def summary(rec) -> dict:
    tags, digests = _tags_digests(rec)
    cfg = (rec.config or {}).get("config") or {}
    return {"Id": rec.id, "ParentId": "", "RepoTags": tags or ["<none>:<none>"], "RepoDigests": digests,
            "Created": int(_created(rec)), "Size": rec.size, "SharedSize": -1, "VirtualSize": rec.size,
            "Labels": cfg.get("Labels") or {}, "Containers": -1}


def summaries(eng) -> list[dict]:
    return [summary(r) for r in eng.store().images()]


def list_images(eng, req, conn):
    f = parse_filters(req, {"reference", "dangling", "label", "before", "since"})
    for k in ("before", "since"):
        if k in f:
            raise not_supported(f"the image filter '{k}'")
    out = []
    for rec in eng.store().images():
        s = summary(rec)
        if "dangling" in f and (f["dangling"][0] in ("true", "1")) != (s["RepoTags"] == ["<none>:<none>"]):
            continue
        if "reference" in f and not any(_ref_match(t, p) for t in s["RepoTags"] for p in f["reference"]):
            continue
        if "label" in f and not all(
                (w.partition("=")[0] in s["Labels"]) and (not w.partition("=")[1] or s["Labels"][w.partition("=")[0]]
                                                          == w.partition("=")[2]) for w in f["label"]):
            continue
        out.append(s)
    return 200, sorted(out, key=lambda s: -s["Created"])


def _ref_match(tag: str, pattern: str) -> bool:
    import fnmatch

    repo = tag.rsplit(":", 1)[0] if ":" in tag.split("/")[-1] else tag
    return fnmatch.fnmatch(tag, pattern) or fnmatch.fnmatch(repo, pattern)


def inspect_image(eng, req, conn, name):
    rec = eng.image(name)
    cfg = rec.config or {}
    tags, digests = _tags_digests(rec)
    return 200, {"Id": rec.id, "RepoTags": tags, "RepoDigests": digests, "Parent": "", "Comment": cfg.get("comment", ""),
                 "Created": rfc3339(_created(rec)), "Container": "", "ContainerConfig": {},
                 "DockerVersion": cfg.get("docker_version", ""), "Author": cfg.get("author", ""),
                 "Config": cfg.get("config") or {}, "Architecture": cfg.get("architecture", ""),
                 "Variant": cfg.get("variant", ""), "Os": cfg.get("os", "linux"), "Size": rec.size,
                 "VirtualSize": rec.size, "GraphDriver": {"Name": "btrfs", "Data": None},
                 "RootFS": {"Type": "layers", "Layers": (cfg.get("rootfs") or {}).get("diff_ids") or []},
                 "Metadata": {"LastTagTime": "0001-01-01T00:00:00Z"}}


def history_image(eng, req, conn, name):
    rec = eng.image(name)
    hist = (rec.config or {}).get("history") or []
    return 200, [{"Id": "<missing>", "Created": 0, "CreatedBy": h.get("created_by", ""), "Tags": None,
                  "Size": 0, "Comment": h.get("comment", "")} for h in reversed(hist)]


@dataclass(frozen=True)
class _ClientSettings(PullSettings):
    """A host's pull settings, with the credentials the client sent (X-Registry-Auth) for its registry."""

    client: Credentials | None = None
    client_host: str = ""

    def credentials(self, host: str):
        if self.client is not None and (not self.client_host or self.client_host.split("://")[-1].rstrip("/") == host):
            return self.client
        return super().credentials(host)


def _client_auth(req) -> tuple[Credentials | None, str]:
    raw = req.headers.get("x-registry-auth")
    if not raw:
        return None, ""
    try:
        pad = "=" * (-len(raw) % 4)
        data = json.loads(base64.urlsafe_b64decode(raw + pad) or b"{}")
    except (binascii.Error, ValueError):
        raise bad_request("X-Registry-Auth: not base64url-encoded JSON") from None
    if not isinstance(data, dict):
        return None, ""
    if data.get("identitytoken") or data.get("registrytoken"):
        raise not_supported("X-Registry-Auth identity tokens", "give a username and password")
    if data.get("username") and data.get("password"):
        return Credentials(data["username"], data["password"]), data.get("serveraddress") or ""
    return None, ""


class _Progress(Observer):
    """pull's callbacks → dockerd's progress messages, on a queue the response reads."""

    def __init__(self, q: queue.Queue):
        self.q = q
        self.lock = threading.Lock()
        self.ids: dict[int, str] = {}
        self.sizes: dict[int, int] = {}
        self.done: dict[int, int] = {}
        self.last: dict[int, float] = {}

    def _put(self, status: str, index: int | None = None, **extra) -> None:
        msg = {"status": status}
        if index is not None:
            msg["id"] = self.ids[index]
        msg.update(extra)
        self.q.put(msg)

    def resolved(self, image, needed) -> None:
        with self.lock:
            for i, layer in enumerate(image.layers):
                self.ids[i] = layer.digest.split(":")[-1][:12]
                self.sizes[i] = layer.size
            for i in range(len(image.layers)):
                if i in needed:
                    self._put("Pulling fs layer", i, progressDetail={})
                else:
                    self._put("Already exists", i, progressDetail={})

    def bytes(self, index: int, n: int) -> None:
        with self.lock:
            self.done[index] = self.done.get(index, 0) + n
            now = time.monotonic()
            if now - self.last.get(index, 0) < 0.1:
                return
            self.last[index] = now
            cur, total = self.done[index], self.sizes.get(index, 0)
            width = 50
            fill = int(width * cur / total) if total else 0
            bar = "[" + "=" * max(0, fill - 1) + (">" if fill else "") + " " * (width - fill) + "]"
            self._put("Downloading", index, progressDetail={"current": cur, "total": total},
                      progress=f"{bar} {cur}B/{total}B")

    def downloaded(self, index: int) -> None:
        with self.lock:
            self._put("Download complete", index, progressDetail={})

    def applying(self, index: int) -> None:
        with self.lock:
            size = self.sizes.get(index, 0)
            self._put("Extracting", index, progressDetail={"current": size, "total": size})

    def applied(self, index: int) -> None:
        with self.lock:
            self._put("Pull complete", index, progressDetail={})


def create_image(eng, req, conn):
    if req.arg("fromSrc") or req.arg("repo") and not req.arg("fromImage"):
        raise not_supported("importing an image (fromSrc)", "pull it from a registry")
    src = req.arg("fromImage")
    if not src:
        raise bad_request("fromImage is required")
    tag = req.arg("tag") or ""
    if tag:
        src = f"{src}@{tag}" if tag.startswith("sha256:") else f"{src}:{tag}"
    plat = req.arg("platform")
    if plat and plat not in (f"linux/{eng.arch()}", "linux"):
        raise not_supported(f"platform {plat!r}", f"this host runs linux/{eng.arch()} images")
    try:
        ref = reference.parse(src)
    except ImageError as exc:
        raise bad_request(str(exc)) from None
    creds, host = _client_auth(req)
    base = PullSettings.here((), eng.runner)
    settings = _ClientSettings(base.conf, base.insecure, base.auth_file, base.cloud, base.runner, creds, host)
    store = eng.store()
    try:
        before = store.get_image(str(ref)).id
    except ImageError:
        before = None
    q: queue.Queue = queue.Queue()
    progress = _Progress(q)
    result: dict = {}

    def work():
        try:
            result["r"] = pull(str(ref), store, eng.root, settings=settings, observer=progress)
        except ProvisionerError as exc:
            result["e"] = str(exc)
        except Exception as exc:   # noqa: BLE001 — reported in the stream: its head is sent already
            result["e"] = f"internal error while pulling: {type(exc).__name__}: {exc}"
        q.put(None)

    threading.Thread(target=work, daemon=True, name="api-pull").start()
    path = ref.path.split("/", 1)[1] if ref.path.startswith("library/") else ref.path

    def chunks():
        yield _line({"status": f"Pulling from {path}", "id": ref.tag or ref.digest or "latest"})
        while True:
            msg = q.get()
            if msg is None:
                break
            yield _line(msg)
        if "e" in result:
            yield _line({"errorDetail": {"message": result["e"]}, "error": result["e"]})
            return
        r = result["r"]
        yield _line({"status": f"Digest: {r.record.manifest_digest}"})
        what = "Image is up to date for" if before == r.record.id else "Downloaded newer image for"
        yield _line({"status": f"Status: {what} {ref.familiar}"})

    conn.stream(chunks())
    return None


def _line(d: dict) -> bytes:
    return json.dumps(d).encode() + b"\r\n"


def tag_image(eng, req, conn, name):
    rec = eng.image(name)
    repo = req.arg("repo")
    if not repo:
        raise bad_request("repo is required")
    tag = req.arg("tag") or "latest"
    try:
        ref = reference.parse(f"{repo}:{tag}")
    except ImageError as exc:
        raise bad_request(str(exc)) from None
    eng.store().add_names(rec.id, [str(ref)])
    return 201, b""


def remove_image(eng, req, conn, name):
    rec = eng.image(name)
    if req.flag("noprune"):
        raise not_supported("noprune", "layers no image uses are removed with the image")
    users = [r for r in eng.manager.records.all() if r.image_id == rec.id]
    by_id = name.removeprefix("sha256:") and rec.id.removeprefix("sha256:").startswith(name.removeprefix("sha256:"))
    if users and (by_id or len(rec.names) <= 1) and not req.flag("force"):
        c = users[0]
        raise conflict(f"conflict: unable to remove repository reference \"{name}\" (must force) - container "
                       f"{c.id[:12]} is using its referenced image {rec.id.split(':')[1][:12]}")
    if users and req.flag("force") and (by_id or len(rec.names) <= 1):
        raise conflict(f"conflict: unable to delete {rec.id.split(':')[1][:12]} (cannot be forced) - image is "
                       f"being used by container {users[0].id[:12]}")
    store = eng.store()
    out = []
    key = None
    if not by_id:
        try:
            key = str(reference.parse(name))
        except ImageError:
            key = name
        if key not in rec.names:
            key = next((n for n in rec.names if _familiar(n) == name or n == name), None)
    if key is not None and not by_id:
        store.remove_image(key)
        out.append({"Untagged": _familiar(key)})
        gone = not any(r.id == rec.id for r in store.images())
    else:
        for n in rec.names:
            out.append({"Untagged": _familiar(n)})
        store.remove_image(rec.id)
        gone = True
    if gone:
        out.append({"Deleted": rec.id})
    return 200, out


def prune_images(eng, req, conn):
    f = parse_filters(req, {"dangling", "label", "until"})
    if "until" in f or "label" in f:
        raise not_supported("image prune filters other than dangling")
    dangling = (f.get("dangling") or ["true"])[0] in ("true", "1")
    store = eng.store()
    used = {r.image_id for r in eng.manager.records.all()}
    deleted = []
    reclaimed = 0
    for rec in store.images():
        if rec.id in used or (dangling and rec.names):
            continue
        for n in rec.names:
            deleted.append({"Untagged": _familiar(n)})
        store.remove_image(rec.id)
        deleted.append({"Deleted": rec.id})
        reclaimed += rec.size
    store.prune()
    return 200, {"ImagesDeleted": deleted or None, "SpaceReclaimed": reclaimed}


def register(router) -> None:
    router.add("GET", "/images/json", list_images)
    router.add("POST", "/images/create", create_image)
    router.add("POST", "/images/prune", prune_images)
    router.add("GET", "/images/{name:.*}/json", inspect_image)
    router.add("GET", "/images/{name:.*}/history", history_image)
    router.add("POST", "/images/{name:.*}/tag", tag_image)
    router.add("DELETE", "/images/{name:.*}", remove_image)

