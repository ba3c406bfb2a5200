"""`provision up` of examples/allinone-stack.yml: every service healthy (real Debian redis, nginx,
mariadb, zookeeper and a python3 status app; busybox stand-ins for the rest), reachable through its
published ports from 127.0.0.1 and its link aliases, and `down -v`
leaves no process, mount, veth, rule, snapshot or volume. The example's registry address and
host ports are rewritten to this test's loopback registry and free ports.

The first run on a machine bootstraps Debian five times (redis, nginx, mariadb, python3: ~25 s each
here with a warm apt mirror; zookeeper, with the JDK and jlink, 2-4 min; cached under /var/tmp)."""
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
    with docker_registry(tmp_path / "registry") as reg, loop_btrfs(tmp_path / "fs", runner, size="3G") as mnt:
        for recipe, name in (("debian-redis", "redis"), ("debian-nginx", "nginx"), ("debian-mariadb", "mariadb"),
                             ("debian-python-app", "python-app"), ("debian-zookeeper", "zookeeper"),
                             ("busybox", "busybox")):
            build(recipe, tmp_path / recipe, runner)
            push(tmp_path / recipe, f"{reg.address}/allinone/{name}:1", runner=runner)
        e = Env(tmp_path, mnt, {})
        ports = {p: free_port() for p in (6379, 8000, 8080)}
        text = EXAMPLE.read_text().replace("127.0.0.1:5000/", f"{reg.address}/")
        for fixed, free in ports.items():
            text = text.replace(f"127.0.0.1:{fixed}:", f"127.0.0.1:{free}:")
        text = text.replace("127.0.0.1:8125:8125/udp", f"127.0.0.1:{free_port()}:8125/udp")
        text = text.replace('"8000:80"', f'"127.0.0.1:{ports[8000]}:80"')
        stack = tmp_path / "allinone.yml"
        stack.write_text(text)
        try:
            e.provision("up", "-f", str(stack), "--insecure-registry", reg.address, timeout=300)
            ps = {r["service"]: r for r in json.loads(e.provision("ps", "-f", str(stack), "--json").stdout)}
            assert {s: (r["state"], r["health"]) for s, r in ps.items()} == {
                s: ("running", "healthy") for s in ("zookeeper", "redis", "kafka", "mariadb", "graphite", "app", "web")}
            # the real ZooKeeper answers its four-letter words; kafka's stand-in asked it "ruok" by its link
            assert e.provision("container", "exec", "allinone-zookeeper", "zk-ruok").stdout == "imok\n"
            srvr = e.provision("container", "exec", "allinone-zookeeper", "zk-4lw", "srvr").stdout
            assert "Zookeeper version: 3.8" in srvr and "Mode: standalone" in srvr, srvr
            assert e.provision("container", "exec", "allinone-kafka", "sh", "-c",
                               "printf ruok | nc zookeeper 2181").stdout == "imok"
            with socket.create_connection(("127.0.0.1", ports[6379]), timeout=5) as s:
                s.sendall(b"PING\r\n")
                assert s.recv(64) == b"+PONG\r\n"
            assert "nginx" in wait_for(lambda: http_get(ports[8000], "/"), what="nginx through its port")
            assert wait_for(lambda: http_get(ports[8080], "/"), what="graphite stand-in") == "graphite\n"
            api = e.provision("container", "exec", "allinone-web", "perl", "-MIO::Socket::INET", "-e",
                              "print IO::Socket::INET->new(q(api:5000)) ? qq(ok) : qq(no)").stdout
            assert api == "ok"
            # mariadb initialised its data volume and made MYSQL_DATABASE / MYSQL_USER (over TCP, by password)
            assert e.provision("container", "exec", "allinone-mariadb", "mariadb", "-h", "127.0.0.1", "-uapp",
                               "-papp-secret", "app", "-N", "-e", "select 1, database()").stdout == "1\tapp\n"
            # the python app: its JSON answer, through nginx's link alias "api", shows it PINGed redis by alias
            status = json.loads(e.provision("container", "exec", "allinone-web", "perl", "-MIO::Socket::INET", "-e",
                                            "my $s = IO::Socket::INET->new(q(api:5000)) or die; "
                                            "print $s qq(GET /api/ HTTP/1.0\\r\\n\\r\\n); local $/; "
                                            "print((split /\\r\\n\\r\\n/, <$s>, 2)[1])").stdout)
            assert status["path"] == "/api/" and status["hostname"] == "app"
            assert status["redis"] == {"host": "redis", "port": 6379, "reply": "+PONG"}
            assert status["env"]["DB_HOST"] == "db"
            # ... and reaches mariadb by its alias "db": the server's handshake names it
            hello = e.provision("container", "exec", "allinone-app", "python3", "-c",
                                "import socket; print(socket.create_connection(('db', 3306), 5).recv(128))").stdout
            assert "MariaDB" in hello
            res = e.inspect("allinone-app")["resources"]   # mem_limit: 128m, cpus: 0.5
            assert res["memory"]["limit"] == 128 << 20 and res["cpu"]["quota"] * 2 == res["cpu"]["period"]
            e.provision("down", "-v", "-f", str(stack))
            assert e.leftovers() == NOTHING
            assert [p for p in (e.root / "volumes").iterdir() if p.is_dir()] == []
        finally:
            e.provision("down", "-v", "-f", str(stack), check=False)
            e.cleanup()
