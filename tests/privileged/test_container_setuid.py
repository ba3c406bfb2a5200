"""Setuid binaries inside containers work as under Docker, also on a store mounted nosuid,nodev
(as the disks layer mounts it, so that what images bring is inert on the host): `container run -u
65534 IMAGE <setuid-root binary> id -u` prints 0."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from provisioner.imagebuild.layout import Layer, LayoutWriter
from provisioner.imagebuild.loopfs import loop_btrfs
from provisioner.imagebuild.recipes import PATH_ENV, busybox_layers, push
from provisioner.imagebuild.tarbuild import D, F
from provisioner.runner import Runner
from tests.privileged.runtime_helpers import build_runtime
from tests.privileged.test_local_user_attacks import SUID_C
from tests.registry_fixture import docker_registry

pytestmark = [
    pytest.mark.privileged,
    pytest.mark.skipif(not all(shutil.which(t) for t in ("skopeo", "docker-registry", "nft", "mkfs.btrfs", "gcc")),
                       reason="skopeo, docker-registry, nft, btrfs-progs and gcc are needed"),
]


@pytest.fixture(scope="module")
def nosuid_store(tmp_path_factory):
    from tests.privileged.test_container import Env

    build_runtime()
    work = tmp_path_factory.mktemp("setuid")
    (work / "suid.c").write_text(SUID_C)
    subprocess.run(["gcc", "-static", "-O2", "-o", str(work / "suid"), str(work / "suid.c")], check=True)
    with docker_registry(work / "registry") as reg, loop_btrfs(work / "fs", Runner(), size="1G") as mnt:
        Runner().run(["mount", "-o", "remount,nosuid,nodev", str(mnt)])
        layers = busybox_layers(Runner()) + [Layer((D("opt"), F("opt/suid", (work / "suid").read_bytes(),
                                                                 mode=0o4755)))]
        w = LayoutWriter(work / "layout")
        w.tag(w.image(layers, {"Cmd": ["sh"], "Env": [PATH_ENV]}), "latest")
        ref = f"{reg.address}/test/suid:1"
        push(work / "layout", ref, runner=Runner())
        env = Env(work, mnt, {"suid": ref})
        try:
            yield env
        finally:
            env.cleanup()


def _run(env, *args):
    return env.provision("container", "run", "--rm", *args, check=False)


def test_setuid_works_in_a_container_on_a_nosuid_store(nosuid_store):
    """Without a seccomp filter (so without the runtime's no_new_privs question): the helper
    becomes root inside the container, though the store's mount is nosuid."""
    env = nosuid_store
    assert os.statvfs(env.root).f_flag & os.ST_NOSUID
    out = _run(env, "-u", "65534", "--security-opt", "seccomp=unconfined", env.refs["suid"], "/opt/suid",
               "/bin/id", "-u")
    assert (out.returncode, out.stdout.strip()) == (0, "0"), out.stderr
    # the mount it used is gone with the container; the store stays nosuid,nodev
    mounts = [ln for ln in Path("/proc/self/mountinfo").read_text().splitlines() if str(env.root) in ln]
    assert mounts == []


def test_container_run_as_65534_a_setuid_root_binary_prints_uid_0(nosuid_store):
    """The must-show, with Docker's default seccomp profile: as under Docker."""
    env = nosuid_store
    out = _run(env, "-u", "65534", env.refs["suid"], "/opt/suid", "/bin/id", "-u")
    assert (out.returncode, out.stdout.strip()) == (0, "0"), out.stderr
