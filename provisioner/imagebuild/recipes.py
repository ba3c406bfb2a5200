"""Test-image recipes written as OCI layouts, and `push` through skopeo.

Recipes (name -> images written under tags in one layout):
  busybox        /bin/busybox (static) + applet symlinks + /etc/passwd,/etc/group     tag: latest
  crafted        every entry type, whiteouts, opaque dirs, xattrs (crafted.py)      tags: types, whiteouts, xattrs
  malicious      hostile layers (`..`, absolute names, escaping symlinks/hardlinks, devices): crafted.MALICIOUS
  multiplatform  an index with linux/amd64 and linux/arm64 busybox-style images      tag: latest
  debian-redis   Debian bookworm minbase (split in layers, shared by every debian-* image) + one layer
                 of what mmdebstrap's redis-server install changed (rootdiff)               tag: latest
  debian-nginx   Debian bookworm minbase + nginx-light via mmdebstrap                     tag: latest
  debian-mariadb      ... + mariadb-server, entrypoint initialising an empty datadir (appfiles.py) tag: latest
  debian-python-app   ... + python3 and a stdlib-only HTTP status app on 5000 (appfiles.py)     tag: latest
  debian-zookeeper    ... + ZooKeeper 3.8 on a jlinked OpenJDK 17, config from ZOO_* env (zookeeper.py)  tag: latest
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
from pathlib import Path
from typing import Callable

from ..errors import ImageError
from . import slim, zookeeper
from .appfiles import MARIADB_FILES, PYTHON_APP_FILES
from .crafted import CRAFTED, MALICIOUS
from .layout import Layer, LayoutWriter
from .rootdiff import diff_layer
from .tarbuild import D, F, L

CACHE_DIR = Path(os.environ.get("PROVISIONER_IMAGECACHE", "/var/tmp/provisioner-imagecache"))
DEBIAN_SUITE = "bookworm"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = "root:x:0:\nnogroup:x:65534:\n"


def busybox_layers(runner, busybox: str = "/bin/busybox", marker: str | None = None) -> list[Layer]:
    data = Path(busybox).read_bytes()
    applets = runner.run([busybox, "--list"]).stdout.split()
    base = [D("bin"), D("etc"), D("root", mode=0o700), D("tmp", mode=0o1777), D("proc"), D("sys"), D("dev"),
            D("home"), D("var"), F("bin/busybox", data, mode=0o755)]
    base += [L(f"bin/{a}", "busybox") for a in sorted(set(applets)) if a != "busybox"]
    files = [F("etc/passwd", PASSWD), F("etc/group", GROUP), F("etc/hostname", "busybox\n")]
    if marker:
        files.append(F("etc/platform", marker + "\n"))
    return [Layer(tuple(base)), Layer(tuple(files))]


BUSYBOX_CONFIG = {"Cmd": ["sh"], "Env": [PATH_ENV], "WorkingDir": "/"}


def recipe_busybox(w: LayoutWriter, runner, fmt: str) -> list[str]:
    w.tag(w.image(busybox_layers(runner), BUSYBOX_CONFIG, fmt=fmt), "latest")
    return ["latest"]


def recipe_crafted(w: LayoutWriter, runner, fmt: str) -> list[str]:
    for tag, layers in CRAFTED.items():
        w.tag(w.image(layers(), {"Cmd": ["/bin/tool"], "Env": [PATH_ENV]}, fmt=fmt), tag)
    return list(CRAFTED)


def recipe_malicious(w: LayoutWriter, runner, fmt: str) -> list[str]:
    for tag, layers in MALICIOUS.items():
        w.tag(w.image(layers(), {"Cmd": ["/bin/sh"]}, fmt=fmt), tag)
    return list(MALICIOUS)


def recipe_multiplatform(w: LayoutWriter, runner, fmt: str) -> list[str]:
    manifests = [
        w.image(busybox_layers(runner, marker="linux/amd64"), BUSYBOX_CONFIG, fmt=fmt, platform=("linux", "amd64")),
        # not runnable on arm64 (the busybox is the host's): enough to test platform selection
        w.image(busybox_layers(runner, marker="linux/arm64"), BUSYBOX_CONFIG, fmt=fmt, platform=("linux", "arm64"),
                variant="v8"),
    ]
    w.tag(w.index(manifests, fmt=fmt), "latest")
    return ["latest"]


# ---- Debian images via mmdebstrap ------------------------------------------------------------
# Every Debian image is the same base (minbase, slimmed, no perl) as its first layers, the same
# bytes in each, plus one layer of what its packages changed (rootdiff): a host holding one of
# them receives only that layer of the next, as with images built FROM one debian image.
BASE_INCLUDE = ["usr-is-merged"]
# apt satisfies "usrmerge | usr-is-merged" with usrmerge, which pulls perl; usr-is-merged makes it
# removable, and perl goes with it unless a package of the recipe needs it
BASE_OPTIONS = [*slim.options(),
                '--customize-hook=chroot "$1" apt-get purge -y --auto-remove -o Dpkg::Use-Pty=0 usrmerge >/dev/null']
DEBIAN_RECIPES = {
    "debian-redis": {
        "include": ["redis-server", *BASE_INCLUDE],
        "config": {"Entrypoint": ["redis-server"], "Cmd": ["--protected-mode", "no", "--bind", "0.0.0.0"],
                   "Env": [PATH_ENV], "ExposedPorts": {"6379/tcp": {}}, "User": "redis",
                   "WorkingDir": "/var/lib/redis"},
    },
    "debian-nginx": {
        "include": ["nginx-light", *BASE_INCLUDE],
        "config": {"Cmd": ["nginx", "-g", "daemon off;"], "Env": [PATH_ENV], "ExposedPorts": {"80/tcp": {}},
                   "WorkingDir": "/", "StopSignal": "SIGQUIT"},
    },
    # "files": entries of one extra layer on top of the split rootfs
    "debian-mariadb": {
        "include": ["mariadb-server", *BASE_INCLUDE],
        "files": MARIADB_FILES,
        "config": {"Entrypoint": ["/usr/local/bin/mariadb-entrypoint"], "Env": [PATH_ENV],
                   "ExposedPorts": {"3306/tcp": {}}, "Volumes": {"/var/lib/mysql": {}}, "WorkingDir": "/"},
    },
    "debian-python-app": {
        "include": ["python3", *BASE_INCLUDE],
        "files": PYTHON_APP_FILES,
        "config": {"Cmd": ["python3", "/srv/app/status_app.py"], "Env": [PATH_ENV, "PORT=5000"],
                   "ExposedPorts": {"5000/tcp": {}}, "User": "nobody", "WorkingDir": "/srv/app"},
    },
    # "mmdebstrap": keyword arguments of mmdebstrap_tar (default: BASE_OPTIONS); zookeeper's start
    # with the same slimming and purge perl themselves
    "debian-zookeeper": {
        "include": zookeeper.INCLUDE,
        "mmdebstrap": {"options": zookeeper.mmdebstrap_options()},
        "files": zookeeper.FILES,
        "config": {**zookeeper.CONFIG, "Env": [PATH_ENV, *zookeeper.CONFIG["Env"]]},
    },
}
# a rootfs split by path into layers (first matching prefix wins; everything else: the base layer)
DEBIAN_SPLIT = [("usr/share/",), ("usr/lib/", "lib/"), ("var/lib/", "var/cache/")]


def mmdebstrap_tar(runner, include: list[str], *, variant: str = "minbase", suite: str = DEBIAN_SUITE,
                   cache: Path = CACHE_DIR, options: list[str] | tuple[str, ...] = ()) -> Path:
    """A rootfs tarball from mmdebstrap, cached under `cache` keyed by the recipe (`options`: more
    mmdebstrap arguments, part of the key when given)."""
    # the key without options is the one the first recipes' caches already carry
    key = hashlib.sha256(json.dumps([suite, variant, sorted(include), 1, *([list(options)] if options else [])])
                         .encode()).hexdigest()[:16]
    out = Path(cache) / f"{suite}-{variant}-{'-'.join(sorted(include)) or 'base'}-{key}.tar"
    if out.exists():
        return out
    if runner.which("mmdebstrap") is None:
        raise ImageError("mmdebstrap is not installed (apt-get install mmdebstrap, or run scripts/install.sh)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.{os.getpid()}.tar")  # mmdebstrap picks the format from ".tar"
    argv = ["mmdebstrap", f"--variant={variant}", "--quiet"]
    if include:
        argv.append("--include=" + ",".join(include))
    argv += options
    try:
        runner.run(argv + [suite, str(tmp)], timeout=1800)
        os.replace(tmp, out)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp)
        else:
            tmp.unlink(missing_ok=True)
    if not out.is_file():
        raise ImageError(f"mmdebstrap did not write a tarball at {out}")
    return out


def split_rootfs_tar(path: Path, groups=DEBIAN_SPLIT) -> list[bytes]:
    """Split one rootfs tar into len(groups)+1 layer tars by path prefix; directories go to the base
    layer (so later layers land in existing dirs), a hardlink goes to its target's layer."""
    buckets: list[list[tuple[tarfile.TarInfo, bytes | None]]] = [[] for _ in range(len(groups) + 1)]
    where: dict[str, int] = {}
    with tarfile.open(path, "r:") as tf:
        for ti in tf:
            name = ti.name.removeprefix("./")
            if ti.isdir():
                idx = 0
            elif ti.islnk():
                idx = where.get(ti.linkname.removeprefix("./"), 0)
            else:
                idx = next((i + 1 for i, g in enumerate(groups) if name.startswith(g)), 0)
            where[name] = idx
            data = tf.extractfile(ti).read() if ti.isreg() else None
            buckets[idx].append((ti, data))
    out = []
    for bucket in buckets:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as w:
            for ti, data in bucket:
                w.addfile(ti, io.BytesIO(data) if data is not None else None)
        out.append(buf.getvalue())
    return out


def debian_base(runner) -> Path:
    return mmdebstrap_tar(runner, BASE_INCLUDE, options=BASE_OPTIONS)


def _debian_recipe(name: str) -> Callable:
    spec = DEBIAN_RECIPES[name]

    def recipe(w: LayoutWriter, runner, fmt: str) -> list[str]:
        base = debian_base(runner)
        rootfs = mmdebstrap_tar(runner, spec["include"], **spec.get("mmdebstrap", {"options": BASE_OPTIONS}))
        layers = [Layer(tar=t, compression="gzip") for t in split_rootfs_tar(base)]
        layers.append(Layer(tar=diff_layer(base, rootfs), compression="gzip"))
        if spec.get("files"):
            layers.append(Layer(tuple(spec["files"])))
        w.tag(w.image(layers, spec["config"], fmt=fmt), "latest")
        return ["latest"]

    return recipe


RECIPES: dict[str, Callable] = {
    "busybox": recipe_busybox, "crafted": recipe_crafted, "malicious": recipe_malicious,
    "multiplatform": recipe_multiplatform,
    **{name: _debian_recipe(name) for name in DEBIAN_RECIPES},
}


def build(recipe: str, output: Path, runner, *, layout_fmt: str = "oci", tag: str | None = None) -> list[str]:
    """Write recipe `recipe` as an OCI layout at `output`; return the tags written.

    `tag` renames the image of a single-image recipe."""
    try:
        fn = RECIPES[recipe]
    except KeyError:
        raise ImageError(f"unknown image recipe {recipe!r} (known: {', '.join(sorted(RECIPES))})") from None
    writer = LayoutWriter(output)
    # skopeo's oci: transport only finds OCI manifests in index.json, so a layout always holds OCI
    # media types unless asked for raw Docker ones (layout_fmt, for registry-less tests); push()
    # converts to Docker schema2 with `--format v2s2`.
    tags = fn(writer, runner, layout_fmt)
    if tag and tags != [tag]:
        if len(tags) != 1:
            raise ImageError(f"recipe {recipe!r} writes several tags ({', '.join(tags)}): --tag needs a single image")
        writer.retag(tags[0], tag)
        tags = [tag]
    return tags


def push(layout_dir: Path, ref: str, insecure: bool = True, *, tag: str = "latest", runner=None,
         fmt: str | None = None) -> None:
    """`skopeo copy oci:LAYOUT:TAG docker://REF` (all platforms of an index; `fmt="docker"`
    converts to Docker schema2 manifests with `--format v2s2`)."""
    from ..runner import Runner

    runner = runner or Runner()
    argv = ["skopeo", "copy", "--quiet", "--all"]
    if insecure:
        argv.append("--dest-tls-verify=false")
    if fmt == "docker":
        argv += ["--format", "v2s2"]
    argv += [f"oci:{layout_dir}:{tag}", f"docker://{ref}"]
    runner.run(argv, timeout=600)
