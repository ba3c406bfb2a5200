"""The debian-zookeeper image, run for real: Apache ZooKeeper (Debian's libzookeeper-java on a
jlinked cut of Debian's OpenJDK 17) answers "ruok" with "imok" inside the container and through a published
port, reports standalone mode, runs java as the zookeeper user without capabilities, keeps a znode
on its named volume across rm + re-run, and refuses a bad ZOO_MY_ID in one line.

Prints the numbers (build, rootfs size, start to "imok"). The first run on a machine bootstraps
Debian with the JDK and runs jlink (2-4 min here), cached under /var/tmp/provisioner-imagecache."""
from __future__ import annotations

import shutil
import socket
import tarfile
import time

import pytest

from provisioner.imagebuild import zookeeper
from provisioner.imagebuild.loopfs import loop_btrfs
from provisioner.imagebuild.recipes import DEBIAN_RECIPES, build, mmdebstrap_tar, push
from provisioner.runner import Runner
from tests.privileged.runtime_helpers import build_runtime
from tests.privileged.test_container import Env, wait_for
from tests.registry_fixture import docker_registry, free_port

pytestmark = [
    pytest.mark.privileged,
    pytest.mark.skipif(not all(shutil.which(t) for t in ("mmdebstrap", "skopeo", "docker-registry", "nft")),
                       reason="mmdebstrap, skopeo, docker-registry and nft are needed (scripts/install.sh)"),
]

# the old estimate for Debian's zookeeper package on the full default-jre was 733 MB
# (305 MiB on Debian's whole openjdk-17-jre-headless; 179 MiB with the jlinked runtime)
MAX_ROOTFS = 220 << 20
START_TIMEOUT = 60.0


@pytest.fixture(scope="module")
def zk(tmp_path_factory):
    build_runtime()
    work = tmp_path_factory.mktemp("zookeeper")
    runner = Runner()
    with docker_registry(work / "registry") as reg, loop_btrfs(work / "fs", runner, size="2G") as mnt:
        t0 = time.monotonic()
        assert build("debian-zookeeper", work / "layout", runner) == ["latest"]
        built = time.monotonic() - t0
        ref = f"{reg.address}/test/zookeeper:1"
        push(work / "layout", ref, runner=runner)
        print(f"\ndebian-zookeeper: build {built:.1f}s (cold when the tarball was not cached)")
        e = Env(work, mnt, {"zookeeper": ref})
        try:
            yield e, ref
        finally:
            e.cleanup()


def ruok_over_tcp(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"ruok")
        return s.recv(16)


def test_rootfs_is_well_under_the_full_jre_and_has_no_docs():
    spec = DEBIAN_RECIPES["debian-zookeeper"]
    tar = mmdebstrap_tar(Runner(), spec["include"], **spec["mmdebstrap"])   # cached by the fixture's build
    with tarfile.open(tar) as tf:
        members = tf.getmembers()
    size = sum(m.size for m in members if m.isreg())
    names = {m.name.removeprefix("./") for m in members}
    print(f"\ndebian-zookeeper rootfs: {size / 2**20:.0f} MiB in {len(members)} entries")
    assert size < MAX_ROOTFS, f"{size / 2**20:.0f} MiB"
    assert "usr/share/java/zookeeper.jar" in names and "usr/bin/java" in names
    assert "usr/lib/jvm/zookeeper-jre/lib/server/classes.jsa" in names    # jlink wrote a CDS archive
    assert not [n for n in names if n.startswith("usr/lib/jvm/java-17-openjdk")]   # the JDK is gone
    files = {m.name.removeprefix("./") for m in members if m.isreg()}
    # (update-alternatives leaves its man page links dangling: symlinks, not files)
    assert not [n for n in files if n.startswith(("usr/share/man/", "usr/share/locale/", "usr/share/perl/"))]
    assert not [n for n in files if n.startswith("usr/share/doc/") and not n.endswith("/copyright")]


def test_zookeeper_answers_imok_runs_unprivileged_and_keeps_data_on_its_volume(zk):
    e, ref = zk
    port = free_port()
    t0 = time.monotonic()
    cid = e.run("--name", "zk", "-e", "ZOO_MY_ID=3", "-v", "zkdata:/var/lib/zookeeper", "-p", f"127.0.0.1:{port}:2181", ref)
    assert wait_for(lambda: e.provision("container", "exec", "zk", "zk-ruok").stdout, timeout=START_TIMEOUT,
                    what="imok") == "imok\n"
    first = time.monotonic() - t0
    assert ruok_over_tcp(port) == b"imok"          # through the published port, from the host
    srvr = e.provision("container", "exec", "zk", "zk-4lw", "srvr").stdout
    assert "Zookeeper version: 3.8" in srvr and "Mode: standalone" in srvr, srvr
    # 4lw words outside the whitelist are refused
    assert e.provision("container", "exec", "zk", "zk-4lw", "stat").stdout == \
        "stat is not executed because it is not in the whitelist.\n"
    # java runs as zookeeper (999) with no capabilities
    status = dict(line.split(":", 1) for line in open(f"/proc/{e.container_pid(cid)}/status").read().splitlines())
    assert status["Name"].strip() == "java"
    assert status["Uid"].split()[:2] == ["999", "999"] and int(status["CapEff"], 16) == 0
    assert "binding to port" in e.provision("container", "logs", "zk").stdout   # log4j's console appender
    assert (e.root / "volumes" / "zkdata" / "myid").read_text() == "3\n"
    # the real client: a znode written, the container removed, a new one on the same volume reads it
    e.provision("container", "exec", "zk", "zk-cli", "create", "/provisioner", "hello")
    e.provision("container", "rm", "-f", "zk")
    t0 = time.monotonic()
    e.run("--name", "zk2", "-v", "zkdata:/var/lib/zookeeper", ref)
    wait_for(lambda: e.provision("container", "exec", "zk2", "zk-ruok").stdout == "imok\n", timeout=START_TIMEOUT,
             what="imok after re-run")
    again = time.monotonic() - t0
    got = e.provision("container", "exec", "zk2", "zk-cli", "get", "/provisioner").stdout
    assert "hello" in got.splitlines(), got
    print(f"\nstart to imok: {first:.1f}s (pull included), {again:.1f}s (image present)")
    e.provision("container", "rm", "-f", "zk2")


def test_a_bad_server_id_is_one_line_and_exit_code_2(zk):
    e, ref = zk
    out = e.provision("container", "run", "--rm", "-e", "ZOO_MY_ID=0", ref, check=False)
    assert out.returncode == 2, out
    assert out.stderr.strip().splitlines()[-1] == \
        "zookeeper-entrypoint: ZOO_MY_ID must be a number from 1 to 255, not '0'"
