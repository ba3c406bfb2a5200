"""`provision up` of examples/allinone-stack.yml: every service healthy (real Debian redis and
nginx, busybox stand-ins), reachable through its published ports from 127.0.0.1, and `down -v`
leaves no process, mount, veth, rule, snapshot or volume. The example's registry address and
host ports are rewritten to this test's loopback registry and free ports.

The first run on a machine bootstraps Debian (~1-2 min, cached under /var/tmp)."""
from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest

from provisioner.imagebuild.loopfs import loop_btrfs
from provisioner.imagebuild.recipes import build, push
from provisioner.runner import Runner
from tests.privileged.runtime_helpers import build_runtime
from tests.privileged.test_container import NOTHING, Env, http_get, wait_for
from tests.registry_fixture import docker_registry, free_port

pytestmark = [
    pytest.mark.privileged,
    pytest.mark.skipif(not all(shutil.which(t) for t in ("mmdebstrap", "skopeo", "docker-registry", "nft")),
                       reason="mmdebstrap, skopeo, docker-registry and nft are needed (scripts/install.sh)"),
]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "allinone-stack.yml"


def test_allinone_example_comes_up_healthy_and_down_leaves_nothing(tmp_path):
    build_runtime()
    runner = Runner()
    with docker_registry(tmp_path / "registry") as reg, loop_btrfs(tmp_path / "fs", runner, size="2G") as mnt:
        for recipe, name in (("debian-redis", "redis"), ("debian-nginx", "nginx"), ("busybox", "busybox")):
            build(recipe, tmp_path / recipe, runner)
            push(tmp_path / recipe, f"{reg.address}/allinone/{name}:1", runner=runner)
        e = Env(tmp_path, mnt, {})
        ports = {p: free_port() for p in (6379, 8000, 8080)}
        text = EXAMPLE.read_text().replace("127.0.0.1:5000/", f"{reg.address}/")
        for fixed, free in ports.items():
            text = text.replace(f"127.0.0.1:{fixed}:", f"127.0.0.1:{free}:")
        text = text.replace("127.0.0.1:8125:8125/udp", f"127.0.0.1:{free_port()}:8125/udp")
        stack = tmp_path / "allinone.yml"
        stack.write_text(text)
        try:
            e.provision("up", "-f", str(stack), "--insecure-registry", reg.address, timeout=300)
            ps = {r["service"]: r for r in json.loads(e.provision("ps", "-f", str(stack), "--json").stdout)}
            assert {s: (r["state"], r["health"]) for s, r in ps.items()} == {
                s: ("running", "healthy") for s in ("zookeeper", "redis", "kafka", "mariadb", "graphite", "app", "web")}
            with socket.create_connection(("127.0.0.1", ports[6379]), timeout=5) as s:
                s.sendall(b"PING\r\n")
                assert s.recv(64) == b"+PONG\r\n"
            assert "nginx" in wait_for(lambda: http_get(ports[8000], "/"), what="nginx through its port")
            assert wait_for(lambda: http_get(ports[8080], "/"), what="graphite stand-in") == "graphite\n"
            api = e.provision("container", "exec", "allinone-web", "perl", "-MIO::Socket::INET", "-e",
                              "print IO::Socket::INET->new(q(api:5000)) ? qq(ok) : qq(no)").stdout
            assert api == "ok"
            assert e.provision("container", "exec", "allinone-app", "wget", "-q", "-O-",
                               "http://db:3306/").stdout == "app\n"
            res = e.inspect("allinone-app")["resources"]   # mem_limit: 128m, cpus: 0.5
            assert res["memory"]["limit"] == 128 << 20 and res["cpu"]["quota"] * 2 == res["cpu"]["period"]
            e.provision("down", "-v", "-f", str(stack))
            assert e.leftovers() == NOTHING
            assert [p for p in (e.root / "volumes").iterdir() if p.is_dir()] == []
        finally:
            e.provision("down", "-v", "-f", str(stack), check=False)
            e.cleanup()
