"""User networks through the Engine API, with real clients and no dockerd: Debian's docker client
(`network create/ls/inspect/connect/rm`, `run --network --network-alias`; networks isolated from
each other, a subnet honoured, a running container joining and leaving one) and Debian's
docker-compose 1.29 (`up -d`, `ps`, `logs`, `exec`, `down -v`) on a two-service file — a web server
with a published port and a backend with a named volume, environment and depends_on, the web
service reaching the backend by its service name on the project's network."""
from __future__ import annotations

import ipaddress
import shutil
import textwrap

import pytest

from tests.privileged.api_helpers import COMPOSE, DOCKER, api, volumes  # noqa: F401 (api: fixture)
from tests.privileged.test_container import PAGE, http_get, images, wait_for  # noqa: F401 (fixture)
from tests.registry_fixture import free_port

pytestmark = [
    pytest.mark.privileged,
    pytest.mark.skipif(not DOCKER or not COMPOSE or not all(shutil.which(t) for t in (
        "skopeo", "docker-registry", "nft", "mkfs.btrfs")),
        reason="docker.io's client, docker-compose, skopeo, docker-registry, nft and btrfs-progs are needed "
               "(scripts/install.sh)"),
]


def test_docker_network_create_run_alias_connect_and_rm(api):
    busybox = api.env.refs["busybox"]
    nid = api.docker("network", "create", "--label", "team=ops", "backend").stdout.strip()
    assert len(nid) == 64
    ls = api.docker("network", "ls", "--format", "{{.Name}} {{.Driver}} {{.Scope}}").stdout.splitlines()
    assert sorted(ls) == ["backend bridge local", "bridge bridge local"]
    try:
        api.docker("run", "-d", "--name", "db", "--network", "backend", "--network-alias", "database",
                   api.env.refs["web"])
        api.docker("run", "-d", "--name", "app", "--network", "backend", busybox, "sleep", "1000")
        api.docker("network", "create", "--attachable", "lobby")
        assert [n["Attachable"] for n in api.json("network", "inspect", "lobby", "backend")] == [True, False]
        api.docker("run", "-d", "--name", "outsider", "--network", "lobby", busybox, "sleep", "1000")
        api.docker("run", "-d", "--name", "plain", busybox, "sleep", "1000")
        # by name and by alias, from a container started after it
        assert api.docker("exec", "app", "wget", "-q", "-O-", "http://database/index.html").stdout == PAGE
        assert api.docker("exec", "app", "wget", "-q", "-O-", "http://db/index.html").stdout == PAGE
        assert "db" not in api.docker("exec", "outsider", "cat", "/etc/hosts").stdout
        i = api.json("inspect", "app")[0]
        assert i["HostConfig"]["NetworkMode"] == "backend" and list(i["NetworkSettings"]["Networks"]) == ["backend"]
        assert i["NetworkSettings"]["Networks"]["backend"]["NetworkID"] == nid
        db_ip = api.json("inspect", "db")[0]["NetworkSettings"]["Networks"]["backend"]["IPAddress"]
        assert ipaddress.IPv4Address(db_ip) not in ipaddress.IPv4Network(api.env.net["subnet"])   # its own subnet
        members = api.json("network", "inspect", "backend")[0]["Containers"]
        assert sorted(m["Name"] for m in members.values()) == ["app", "db"]
        assert [c for c in api.docker("ps", "--filter", "network=backend", "--format", "{{.Names}}").stdout.split()] \
            == ["app", "db"]
        # isolated: neither another network's container nor the default bridge's reaches db's address
        for other in ("outsider", "plain"):
            cut = api.docker("exec", other, "wget", "-q", "-T", "2", "-O-", f"http://{db_ip}/index.html", check=False)
            assert cut.returncode != 0, other
        # a running container joins: both sides resolve each other at once, and it reaches db
        api.docker("network", "connect", "--alias", "lonely", "backend", "outsider")
        assert api.docker("exec", "outsider", "wget", "-q", "-O-", "http://database/index.html").stdout == PAGE
        assert "lonely" in api.docker("exec", "app", "cat", "/etc/hosts").stdout
        nets = api.json("inspect", "outsider")[0]["NetworkSettings"]["Networks"]
        assert sorted(nets) == ["backend", "lobby"] and "lonely" in nets["backend"]["Aliases"]
        # its first network stays while it runs; the default bridge is not combined with user networks
        first = api.docker("network", "disconnect", "lobby", "outsider", check=False)
        assert first.returncode != 0 and "first network" in first.stderr
        api.docker("network", "disconnect", "backend", "outsider")
        assert "lonely" not in api.docker("exec", "app", "cat", "/etc/hosts").stdout
        cut = api.docker("exec", "outsider", "wget", "-q", "-T", "2", "-O-", f"http://{db_ip}/index.html", check=False)
        assert cut.returncode != 0
        mixed = api.docker("network", "connect", "backend", "plain", check=False)
        assert mixed.returncode != 0 and "default bridge" in mixed.stderr and "not supported" in mixed.stderr
        busy = api.docker("network", "rm", "backend", check=False)
        assert busy.returncode != 0 and "has active endpoints" in busy.stderr
        refused = api.docker("network", "create", "--ipv6", "other", check=False)
        assert refused.returncode != 0 and "EnableIPv6" in refused.stderr and "not supported" in refused.stderr
        assert "other" not in api.docker("network", "ls").stdout
        # a subnet of the caller's choosing is honoured
        spare = ipaddress.IPv4Network(api.env.spare_subnet())
        gw = str(spare.broadcast_address - 1)
        api.docker("network", "create", "--subnet", str(spare), "--gateway", gw, "fixed")
        ipam = api.json("network", "inspect", "fixed")[0]["IPAM"]["Config"]
        assert ipam == [{"Subnet": str(spare), "Gateway": gw}]
        api.docker("network", "rm", "fixed")
    finally:
        api.docker("rm", "-f", "db", "app", "outsider", "plain", check=False)
        api.docker("network", "rm", "lobby", "fixed", check=False)
    assert api.docker("network", "rm", "backend").stdout.strip() == "backend"
    assert api.docker("network", "ls", "--format", "{{.Name}}").stdout.split() == ["bridge"]


def test_docker_compose_up_ps_logs_exec_down(api, tmp_path):
    port = free_port()
    project = tmp_path / "shop"
    project.mkdir()
    # "redis": a stand-in backend (busybox's httpd on redis's port, serving its named volume)
    (project / "docker-compose.yml").write_text(textwrap.dedent(f"""\
        version: "3.7"
        services:
          redis:
            image: {api.env.refs["busybox"]}
            command: ["sh", "-c", "echo \\"$$GREETING from redis\\" > /data/hello; echo ready; exec httpd -f -p 6379 -h /data"]
            environment:
              GREETING: hello
            volumes:
              - cache:/data
          web:
            image: {api.env.refs["web"]}
            ports:
              - "127.0.0.1:{port}:80"
            environment:
              BACKEND: redis
            depends_on:
              - redis
        volumes:
          cache:
        """))
    try:
        up = api.compose("up", "-d", cwd=str(project))
        assert "Creating network \"shop_default\"" in up.stderr and "Creating shop_web_1" in up.stderr
        assert wait_for(lambda: http_get(port), what="web through its published port") == PAGE
        ps = api.compose("ps", cwd=str(project)).stdout
        assert "shop_redis_1" in ps and "shop_web_1" in ps and f"127.0.0.1:{port}->80/tcp" in ps
        assert ps.count(" Up ") == 2, ps
        # the web service reaches the backend by its service name, and reads what it wrote in its volume
        out = api.compose("exec", "-T", "web", "sh", "-c", "wget -q -O- http://$BACKEND:6379/hello", cwd=str(project))
        assert out.stdout == "hello from redis\n"
        logs = wait_for(lambda: (lambda t: "ready" in t and t)(api.compose("logs", "--no-color", "redis", cwd=str(project)).stdout),
                        what="redis's log")
        assert "redis_1  | ready" in logs
        # the same containers, as provisioner sees them, with compose's labels
        labels = api.json("inspect", "shop_web_1")[0]["Config"]["Labels"]
        assert labels["com.docker.compose.project"] == "shop" and labels["com.docker.compose.service"] == "web"
        assert "shop_cache" in volumes(api.env)
    finally:
        down = api.compose("down", "-v", cwd=str(project), check=False)
    assert down.returncode == 0, down.stderr + api.tail()
    assert api.docker("ps", "-aq").stdout.split() == []
    assert api.docker("network", "ls", "--format", "{{.Name}}").stdout.split() == ["bridge"]
    assert "shop_cache" not in volumes(api.env)
