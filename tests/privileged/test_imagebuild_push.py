"""The test-image builder end to end: `provision image build … --push` to Debian's docker-registry on
loopback (OCI and Docker schema2, a two-platform index), then `provision image pull` + `image export`
compared with `umoci unpack` of the same layout (the issue's differential, through the registry)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from provisioner.imagebuild import treecmp
from provisioner.imagebuild.crafted import CRAFTED
from provisioner.imagebuild.loopfs import loop_btrfs
from provisioner.runner import Runner
from tests.registry_fixture import docker_registry

pytestmark = [
    pytest.mark.privileged,
    pytest.mark.skipif(not all(shutil.which(t) for t in ("skopeo", "umoci", "docker-registry")),
                       reason="skopeo, umoci and docker-registry are needed (scripts/install.sh)"),
]


def provision(root: Path | None, *args, check=True):
    argv = [sys.executable, "-m", "provisioner.cli.main"] + (["--root", str(root)] if root else []) + list(args)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"provision {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return proc


def skopeo_raw(ref: str) -> dict:
    out = Runner().run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"]).stdout
    return json.loads(out)



@pytest.fixture(autouse=True, scope="module")
def _umask_022():
    """umoci creates implicit parent directories subject to the umask; we always use 0755 (as
    Docker does). Compare under the usual 022."""
    old = os.umask(0o022)
    yield
    os.umask(old)

@pytest.fixture(scope="module")
def env(tmp_path_factory):
    work = tmp_path_factory.mktemp("imagebuild")
    with docker_registry(work / "registry") as reg, loop_btrfs(work / "fs", Runner(), size="1G") as mnt:
        yield work, reg.address, mnt


@pytest.mark.parametrize("fmt", ["oci", "docker"])
def test_crafted_push_pull_export_matches_umoci(env, fmt):
    work, registry, mnt = env
    layout = work / f"crafted-{fmt}"
    out = json.loads(provision(None, "image", "build", "crafted", "--output", str(layout), "--format", fmt,
                               "--push", f"{registry}/crafted-{fmt}", "--json").stdout)
    assert out["tags"] == list(CRAFTED) and len(out["pushed"]) == len(CRAFTED)
    want = ("application/vnd.oci.image.manifest.v1+json" if fmt == "oci"
            else "application/vnd.docker.distribution.manifest.v2+json")
    for tag in CRAFTED:
        ref = f"{registry}/crafted-{fmt}:{tag}"
        assert skopeo_raw(ref)["mediaType"] == want
        provision(mnt, "image", "pull", ref)
        ours = work / f"export-{fmt}-{tag}"
        provision(mnt, "image", "export", ref, str(ours))
        bundle = work / f"umoci-{fmt}-{tag}"
        Runner().run(["umoci", "unpack", "--image", f"{layout}:{tag}", str(bundle)])
        assert treecmp.diff(treecmp.describe(ours), treecmp.describe(bundle / "rootfs")) == []


@pytest.mark.parametrize("fmt", ["oci", "docker"])
def test_multiplatform_index_is_pushed_with_both_platforms(env, fmt):
    work, registry, mnt = env
    ref = f"{registry}/multi-{fmt}:1"
    provision(None, "image", "build", "multiplatform", "-o", str(work / f"multi-{fmt}"), "--format", fmt, "--push", ref)
    index = skopeo_raw(ref)
    assert index["mediaType"] == ("application/vnd.oci.image.index.v1+json" if fmt == "oci"
                                  else "application/vnd.docker.distribution.manifest.list.v2+json")
    assert sorted(m["platform"]["architecture"] for m in index["manifests"]) == ["amd64", "arm64"]


def test_busybox_image_runs_its_shell(env):
    """The busybox recipe is a usable rootfs: its /bin/sh (an applet symlink) runs in a chroot."""
    work, registry, mnt = env
    ref = f"{registry}/busybox:1"
    provision(None, "image", "build", "busybox", "-o", str(work / "bb"), "--tag", "1", "--push", ref)
    provision(mnt, "image", "pull", ref)
    root = work / "bb-export"
    provision(mnt, "image", "export", ref, str(root))
    assert os.readlink(root / "bin/sh") == "busybox"
    out = Runner().run(["chroot", str(root), "/bin/sh", "-c", "echo hello from $(cat /etc/hostname)"]).stdout
    assert out.strip() == "hello from busybox"


def test_bad_recipe_and_bad_push_target_are_one_line_errors(env, tmp_path):
    proc = provision(None, "image", "build", "nope", "-o", str(tmp_path / "x"), check=False)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1].startswith("error: unknown image recipe 'nope'")
    proc = provision(None, "image", "build", "crafted", "-o", str(tmp_path / "y"), "--push", "127.0.0.1:1/a:tag",
                     check=False)
    assert proc.returncode == 1 and "give a repository without a tag" in proc.stderr


def test_malicious_images_are_refused_or_neutralized(env, tmp_path):
    """Hostile layers through the real path (registry -> pull -> store): `..` names and escaping
    hardlinks fail with one error line and leave the store unchanged; absolute names, escaping
    symlinks, whiteouts through symlinks and device nodes stay inside the layer root."""
    from provisioner.imagebuild.crafted import EVIL_DIR, MALICIOUS, MALICIOUS_REFUSED

    work, registry, mnt = env
    evil = Path(EVIL_DIR)
    shutil.rmtree(evil, ignore_errors=True)
    evil.mkdir()
    (evil / "victim").write_text("precious")
    try:
        provision(None, "image", "build", "malicious", "-o", str(work / "malicious"), "--push", f"{registry}/evil")
        root = mnt / "evil-root"
        for tag in MALICIOUS:
            ref = f"{registry}/evil:{tag}"
            proc = provision(root, "image", "pull", ref, check=False)
            if tag in MALICIOUS_REFUSED:
                assert proc.returncode != 0, tag
                last = proc.stderr.strip().splitlines()[-1]
                assert last.startswith("error: ") and ("'..'" in last or "hardlink" in last), last
                assert ref not in provision(root, "image", "ls").stdout
            else:
                assert proc.returncode == 0, f"{tag}: {proc.stderr}"
            assert sorted(os.listdir(evil)) == ["victim"] and (evil / "victim").read_text() == "precious", tag
            assert not any((root / "images/tmp").iterdir())
        out = work / "evil-export"
        provision(root, "image", "export", f"{registry}/evil:symlink-escape", str(out))
        assert (out / EVIL_DIR.lstrip("/") / "victim").read_text() == "pwned"  # landed inside
        assert os.readlink(out / "evil") == EVIL_DIR
    finally:
        shutil.rmtree(evil, ignore_errors=True)
