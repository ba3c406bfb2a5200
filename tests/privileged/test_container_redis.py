"""A Redis image built from Debian packages (the builder's debian-redis recipe, via mmdebstrap)
answers PING through a published port from the host's 127.0.0.1, keeps its data in a named
volume across rm + re-run, and `rm -f` leaves nothing behind.

The first run on a machine bootstraps Debian (~1-2 min, cached under /var/tmp)."""
from __future__ import annotations

import shutil
import socket

import pytest

from provisioner.imagebuild.loopfs import loop_btrfs
from provisioner.imagebuild.recipes import build, push
from provisioner.runner import Runner
from tests.privileged.runtime_helpers import build_runtime
from tests.privileged.test_container import NOTHING, Env, wait_for
from tests.registry_fixture import docker_registry, free_port

pytestmark = [
    pytest.mark.privileged,
    pytest.mark.skipif(not all(shutil.which(t) for t in ("mmdebstrap", "skopeo", "docker-registry", "nft")),
                       reason="mmdebstrap, skopeo, docker-registry and nft are needed (scripts/install.sh)"),
]


def redis(port: int, *cmd: str) -> bytes:
    """One RESP command, one reply line."""
    payload = f"*{len(cmd)}\r\n".encode() + b"".join(f"${len(c)}\r\n{c}\r\n".encode() for c in cmd)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(payload)
        data = b""
        while not data.endswith(b"\r\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        return data


@pytest.fixture(scope="module")
def redis_env(tmp_path_factory):
    build_runtime()
    work = tmp_path_factory.mktemp("redis")
    runner = Runner()
    with docker_registry(work / "registry") as reg, loop_btrfs(work / "fs", runner, size="2G") as mnt:
        build("debian-redis", work / "layout", runner)
        ref = f"{reg.address}/debian/redis:7"
        push(work / "layout", ref, runner=runner)
        e = Env(work, mnt, {"redis": ref})
        try:
            yield e
        finally:
            e.cleanup()


def test_redis_answers_ping_through_a_published_port_and_keeps_data(redis_env):
    e = redis_env
    port = free_port()
    e.run("--name", "cache", "-p", f"127.0.0.1:{port}:6379", "-v", "redisdata:/var/lib/redis", e.refs["redis"])
    assert wait_for(lambda: redis(port, "PING"), timeout=30, what="redis PING") == b"+PONG\r\n"
    assert redis(port, "SET", "k", "kept") == b"+OK\r\n"
    assert redis(port, "SAVE") == b"+OK\r\n"
    info = e.inspect("cache")
    assert info["process"]["user"]["uid"] != 0           # the image's User "redis", looked up in its passwd
    assert info["process"]["cwd"] == "/var/lib/redis"
    e.provision("container", "rm", "-f", "cache")
    assert e.leftovers() == NOTHING
    port2 = free_port()
    e.run("--name", "cache2", "-p", f"127.0.0.1:{port2}:6379", "-v", "redisdata:/var/lib/redis", e.refs["redis"])
    assert wait_for(lambda: redis(port2, "GET", "k"), timeout=30, what="redis GET") == b"$4\r\nkept\r\n"
    e.provision("container", "rm", "-f", "cache2")
    assert e.leftovers() == NOTHING
