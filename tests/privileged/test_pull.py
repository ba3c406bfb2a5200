"""`provision image pull` end to end: Debian's docker-registry on loopback, images pushed with skopeo
(OCI and Docker schema2 manifests, a two-platform index), a loop-backed btrfs store, and a
fault-injecting proxy (resets, 500, 429, corrupted bytes, kill -9 mid-pull)."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from provisioner.images import pull as pullmod
from provisioner.images.store import Store
from provisioner.errors import RegistryError
from provisioner.imagebuild.loopfs import loop_btrfs
from provisioner.runner import Runner
from tests.registry_fixture import (
    Fault, FaultProxy, docker_registry, make_image, skopeo_push, wait_until, write_oci_layout,
)

pytestmark = pytest.mark.privileged

R = random.Random(11)
DATA = [R.randbytes(700_000) for _ in range(3)]
LAYERS = [{"etc/os-release": b"ID=test\n", "usr/bin/tool": DATA[0]},
          {"usr/lib/big": DATA[1], "etc/os-release": b"ID=test2\n"},
          {"srv/data": DATA[2]}]


def provision(root: Path, *args, check=True, env=None):
    proc = subprocess.run([sys.executable, "-m", "provisioner.cli.main", "--root", str(root), *args],
                          capture_output=True, text=True, timeout=300, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"provision {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return proc


@pytest.fixture(autouse=True)
def no_docker_config(tmp_path, monkeypatch):
    """Hermetic: never read this machine's ~/.docker/config.json (or run its credential helpers)."""
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))


@pytest.fixture(scope="module")
def btrfs_mnt(tmp_path_factory):
    with loop_btrfs(tmp_path_factory.mktemp("btrfs"), Runner(), size="1G") as mnt:
        yield mnt


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    if not os.path.exists("/usr/bin/docker-registry"):
        pytest.skip("docker-registry not installed")
    work = tmp_path_factory.mktemp("registry")
    with docker_registry(work / "reg") as reg:
        img = make_image(LAYERS)
        write_oci_layout(work / "oci", "1", [img])
        skopeo_push(work / "oci", "1", f"{reg.address}/oci/app:1")
        skopeo_push(work / "oci", "1", f"{reg.address}/docker/app:1", fmt="v2s2")
        amd = make_image([{"arch": b"amd64\n"}])
        arm = make_image([{"arch": b"arm64\n"}], arch="arm64")
        write_oci_layout(work / "multi", "1", [amd, arm], platforms=[("linux", "amd64"), ("linux", "arm64")])
        skopeo_push(work / "multi", "1", f"{reg.address}/multi/app:1", all_images=True)
        yield reg


@pytest.fixture
def root(btrfs_mnt, request):
    return btrfs_mnt / request.node.name.replace("[", "_").replace("]", "").replace("/", "_")


def check_rootfs(path: Path):
    assert (path / "usr/bin/tool").read_bytes() == DATA[0]
    assert (path / "usr/lib/big").read_bytes() == DATA[1]
    assert (path / "srv/data").read_bytes() == DATA[2]
    assert (path / "etc/os-release").read_text() == "ID=test2\n"


def leftovers(root: Path) -> list[str]:
    found = [str(p) for p in (root / "images" / "tmp").iterdir()] if (root / "images" / "tmp").exists() else []
    spool = root / pullmod.SPOOL_DIR
    if spool.exists():
        found += [str(p) for p in spool.rglob("*")]
    return found


@pytest.mark.parametrize("repo,media_type", [
    ("oci/app", "application/vnd.oci.image.manifest.v1+json"),
    ("docker/app", "application/vnd.docker.distribution.manifest.v2+json"),
])
def test_cli_pull_ls_inspect_export_rm(registry, root, tmp_path, repo, media_type):
    ref = f"{registry.address}/{repo}:1"
    out = provision(root, "image", "pull", ref)
    assert "pulled " + ref in out.stderr and "3 layers" in out.stderr
    assert "layer 3/3" in out.stderr  # per-layer progress lines (stderr is not a tty here)
    image_id = out.stdout.strip()
    assert image_id.startswith("sha256:")

    listed = json.loads(provision(root, "image", "ls", "--json").stdout)
    assert [r["names"] for r in listed] == [[ref]]
    info = json.loads(provision(root, "image", "inspect", ref, "--json").stdout)
    assert info["id"] == image_id and info["manifest"]["mediaType"] == media_type
    assert len(info["chain_ids"]) == 3

    provision(root, "image", "export", ref, str(tmp_path / "rootfs"))
    check_rootfs(tmp_path / "rootfs")

    again = json.loads(provision(root, "image", "pull", ref, "--json", "-q").stdout)
    assert again["fetched_layers"] == 0 and again["id"] == image_id

    provision(root, "image", "rm", ref)
    assert json.loads(provision(root, "image", "ls", "--json").stdout) == []
    assert not [p for p in (root / "images" / "layers").iterdir()]


def test_index_selects_platform(registry, root, tmp_path):
    ref = f"{registry.address}/multi/app:1"
    provision(root, "image", "pull", "--platform", "linux/arm64", ref)
    provision(root, "image", "export", ref, str(tmp_path / "arm"))
    assert (tmp_path / "arm" / "arch").read_text() == "arm64\n"
    provision(root, "image", "pull", "--platform", "linux/amd64", ref)
    provision(root, "image", "export", ref, str(tmp_path / "amd"))
    assert (tmp_path / "amd" / "arch").read_text() == "amd64\n"
    bad = provision(root, "image", "pull", "--platform", "linux/s390x", ref, check=False)
    assert bad.returncode != 0
    assert bad.stderr.strip().splitlines() == [
        f"error: {ref}: no image for platform linux/s390x (available: linux/amd64, linux/arm64)"]


@pytest.fixture
def proxy(registry):
    with FaultProxy(registry.address) as p:
        yield p


def _layer_digests(registry, repo="oci/app"):
    import urllib.request
    req = urllib.request.Request(f"http://{registry.address}/v2/{repo}/manifests/1",
                                 headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    with urllib.request.urlopen(req) as resp:
        return [d["digest"] for d in json.load(resp)["layers"]]


def test_faults_reset_500_429_pull_completes(registry, proxy, root, tmp_path):
    digests = _layer_digests(registry)
    proxy.add(Fault("/manifests/", "status", status=500))
    proxy.add(Fault(digests[0], "reset", after=200_000))  # the layer applied straight from the network
    proxy.add(Fault(digests[2], "reset", after=300_000))  # a spooled layer
    proxy.add(Fault(digests[1], "status", status=429, retry_after="1"))
    store = Store(root, Runner())
    res = pullmod.pull(f"{proxy.address}/oci/app:1", store, root)
    assert res.fetched_layers == 3
    assert all(f.hits == 1 for f in proxy.faults)
    ranged = [e for e in proxy.log if "Range" in e["headers"]]
    assert {e["path"].rsplit("/", 1)[1] for e in ranged} == {digests[0], digests[2]}
    store.export(f"{proxy.address}/oci/app:1", tmp_path / "out")
    check_rootfs(tmp_path / "out")
    assert leftovers(root) == []


@pytest.mark.parametrize("bad", [0, 2])
def test_wrong_digest_rejected_store_unchanged(registry, proxy, root, bad):
    digests = _layer_digests(registry)
    proxy.add(Fault(digests[bad], "corrupt", after=100_000))
    store = Store(root, Runner())
    before = sorted(p.name for p in (root / "images").rglob("*") if p.name != "lock")
    with pytest.raises(RegistryError, match=f"blob {digests[bad]} failed verification"):
        pullmod.pull(f"{proxy.address}/oci/app:1", store, root)
    assert store.images() == []
    assert leftovers(root) == []
    # Chains this pull committed before the bad layer were discarded again: the store is as it was.
    assert [p for p in store.layers.iterdir() if p.is_dir()] == []
    assert sorted(p.name for p in (root / "images").rglob("*") if p.name != "lock") == before


def test_kill_9_mid_pull_then_pull_again(registry, proxy, root, tmp_path):
    digests = _layer_digests(registry)
    for d in digests:
        proxy.add(Fault(d, "slow", delay=0.05))
    ref = f"{proxy.address}/oci/app:1"
    Store(root, Runner())  # create the layout so the test can watch images/tmp
    proc = subprocess.Popen([sys.executable, "-m", "provisioner.cli.main", "--root", str(root), "image", "pull",
                             "-q", ref], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # Kill once a layer is being applied into a temporary subvolume and spool files exist.
        wait_until(lambda: any((root / "images" / "tmp").iterdir()) and any((root / pullmod.SPOOL_DIR).rglob("layer-*")),
                   timeout=60, what="a pull in progress")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert leftovers(root)  # the crash did leave work behind...
    proxy.faults.clear()
    out = provision(root, "image", "pull", ref)
    assert "pulled" in out.stderr
    assert leftovers(root) == []  # ...which the next pull cleaned up
    subvols = Runner().run(["btrfs", "subvolume", "list", str(root)]).stdout
    assert f"{root.name}/images/layers/" in subvols
    assert f"{root.name}/images/tmp/" not in subvols
    provision(root, "image", "export", ref, str(tmp_path / "out"))
    check_rootfs(tmp_path / "out")


def one_error_line(proc, *expected):
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for text in expected:
        assert text in lines[0]
    return lines[0]


def test_bad_input_gives_one_line_naming_the_reference(registry, proxy, root):
    one_error_line(provision(root, "image", "pull", "Bad//Ref", check=False),
                   "error: invalid image reference 'Bad//Ref'")
    line = one_error_line(provision(root, "image", "pull", f"{registry.address}/oci/app:nope", check=False),
                          f"{registry.address}/oci/app:nope", "not found")
    assert "'nope'" in line
    proxy.add(Fault("/v2/", "status", status=401, times=100))
    one_error_line(provision(root, "image", "pull", f"{proxy.address}/oci/app:1", check=False),
                   f"error: {proxy.address}/oci/app:1: unauthorized")


def test_htpasswd_registry_with_docker_config(tmp_path, root):
    users = {"alice": "wonderland"}
    with docker_registry(tmp_path / "authreg", users=users) as reg:
        img = make_image([{"secret": b"s3"}])
        write_oci_layout(tmp_path / "oci", "1", [img])
        skopeo_push(tmp_path / "oci", "1", f"{reg.address}/private/app:1", creds="alice:wonderland")
        ref = f"{reg.address}/private/app:1"
        env = dict(os.environ, DOCKER_CONFIG=str(tmp_path / "nocreds"))
        one_error_line(provision(root, "image", "pull", ref, check=False, env=env), f"error: {ref}: unauthorized")
        import base64
        (tmp_path / "docker").mkdir()
        (tmp_path / "docker" / "config.json").write_text(json.dumps(
            {"auths": {reg.address: {"auth": base64.b64encode(b"alice:wonderland").decode()}}}))
        env = dict(os.environ, DOCKER_CONFIG=str(tmp_path / "docker"))
        provision(root, "image", "pull", ref, env=env)
        provision(root, "image", "export", ref, str(tmp_path / "out"))
        assert (tmp_path / "out" / "secret").read_bytes() == b"s3"


def test_concurrent_pulls_of_the_same_image(registry, root, tmp_path):
    ref = f"{registry.address}/oci/app:1"
    procs = [subprocess.Popen([sys.executable, "-m", "provisioner.cli.main", "--root", str(root), "--json", "image",
                               "pull", "-q", ref], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        results.append(json.loads(out))
    assert results[0]["id"] == results[1]["id"]
    # The store lock serialises them: one fetched the layers, the other found them stored.
    assert sorted(r["fetched_layers"] for r in results) == [0, 3]
    assert len([p for p in (root / "images" / "layers").iterdir() if p.is_dir()]) == 3
    assert leftovers(root) == []
