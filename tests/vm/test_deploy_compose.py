"""The compose file of tests/privileged/test_stack_compose.py — no name, a version line, two
networks, web reaching db by service name with no links, a file secret, container_name,
deploy.resources.limits, deploy.replicas: 3 behind one published port, a long-syntax volume,
${VAR:-default} from .env — deployed unchanged to a local-cloud VM: `provision deploy --cloud
local -f compose.yaml` from its folder, with no hosts: section (one host, "main").

One VM. Checked from the operator's side through the forwarded port (the three replicas take the
requests in turn) and on the host over SSH (names, the secret root-only at rest and read-only in
the container, the variables file, the cgroup limits); destroy leaves nothing."""
from __future__ import annotations

import json
import os
import textwrap
import urllib.request

import pytest

from tests.registry_fixture import docker_registry, free_port

from deployhelpers import provision, push_images, ssh_to
from vmhelpers import qemu_processes_for

pytestmark = pytest.mark.vm

COMPOSE = """\
version: "3.8"

services:
  web:
    image: ${BOX_IMAGE}
    command: ["sh", "-c", "mkdir -p /www && ip -o -4 addr show eth0 | awk '{print $$4}' > /www/id && exec httpd -f -p 80 -h /www"]
    ports:
      - "${WEB_PORT:-8080}:80"
    networks: [front, back]
    healthcheck:
      test: ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1/id"]
      interval: 1s
      timeout: 5s
      retries: 30
    deploy:
      replicas: 3
      resources:
        limits:
          cpus: "0.5"
          memory: 64M
  db:
    image: ${BOX_IMAGE}
    container_name: compose-db
    command: ["sh", "-c", "echo ${GREETING:-hi} > /data/greeting && exec httpd -f -p 5432 -h /data"]
    networks: [back]
    volumes:
      - type: volume
        source: dbdata
        target: /data
    secrets:
      - db_password

networks:
  front:
  back:

volumes:
  dbdata:

secrets:
  db_password:
    file: ./db_password.txt
"""


@pytest.fixture(scope="module")
def env(vm_root, vm_image, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compose")
    with docker_registry(tmp / "registry") as reg:
        push_images(tmp, reg.address, {"compose/busybox:1": "busybox"})
        folder = tmp / "Compose-App"          # the project: compose-app, from the folder
        folder.mkdir()
        (folder / "compose.yaml").write_text(COMPOSE)
        port = free_port()
        (folder / ".env").write_text(textwrap.dedent(f"""\
            BOX_IMAGE={reg.address}/compose/busybox:1
            WEB_PORT={port}
            GREETING=hello-from-dotenv
            """))
        (folder / "db_password.txt").write_text("vm-s3cret\n")
        os.chmod(folder / "db_password.txt", 0o600)
        e = {"XDG_CONFIG_HOME": str(tmp / "config")}
        yield {"root": vm_root, "folder": folder, "port": port, "env": e}
        provision(vm_root, "destroy", "compose-app", "--cloud", "local", "--yes", env=e, check=False)


def _deploy(env) -> dict:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "provisioner.cli.main", "--root", str(env["root"]), "deploy",
                           "--cloud", "local", "-f", "compose.yaml", "--json"], capture_output=True, text=True,
                          timeout=2400, cwd=env["folder"], stdin=subprocess.DEVNULL, env={**os.environ, **env["env"]})
    sys.stderr.write(proc.stderr)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "compose.yaml:1: 'version' is obsolete and ignored" in proc.stderr
    return json.loads(proc.stdout)


def _get(port: int, path: str = "/id") -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return r.read().decode().strip().split("/")[0]


def test_the_compose_file_deploys_unchanged_to_a_local_cloud_vm(env):
    result = _deploy(env)
    (host,) = result["hosts"]
    assert result["ok"] and host["host"] == "main" and host["error"] is None
    assert sorted((s["service"], s["container"], s["state"], s["health"]) for s in host["services"]) == sorted([
        ("web", "compose-app-web", "running", "healthy"), ("web", "compose-app-web-2", "running", "healthy"),
        ("web", "compose-app-web-3", "running", "healthy"), ("db", "compose-db", "running", "none")])
    assert host["endpoints"] == {f"{env['port']}/tcp": f"127.0.0.1:{env['port']}"}

    # three replicas behind the one forwarded port, taking new connections in turn
    seen = [_get(env["port"]) for _ in range(24)]
    assert len(set(seen)) == 3 and min(seen.count(a) for a in set(seen)) >= 4, seen

    with ssh_to(env["root"], "compose-app/main") as ssh:
        def run(*argv: str, check: bool = True):
            return ssh.run(["provision", *argv], sudo=True, check=check)

        # web reaches db by service name and by container name; no links in the file
        assert run("container", "exec", "compose-app-web-2", "wget", "-q", "-O-",
                   "http://db:5432/greeting").stdout == "hello-from-dotenv\n"
        assert run("container", "exec", "compose-app-web", "wget", "-q", "-O-",
                   "http://compose-db:5432/greeting").stdout == "hello-from-dotenv\n"
        # the secret: root-only at rest on the host, read-only in the container, in no record
        stat = ssh.run(["stat", "-c", "%a %U", "/etc/provisioner/db_password.txt",
                        "/etc/provisioner/.provision.env"], sudo=True).stdout.split("\n")
        assert stat[:2] == ["600 root", "600 root"]
        assert run("container", "exec", "compose-db", "cat", "/run/secrets/db_password").stdout == "vm-s3cret\n"
        inspect = run("container", "inspect", "compose-db").stdout
        assert "vm-s3cret" not in inspect
        # deploy.resources.limits in the container's cgroup settings (a pure v2 host under systemd)
        res = json.loads(run("container", "inspect", "compose-app-web-3").stdout)[0]["resources"]
        assert res["memory"]["limit"] == 64 << 20 and res["cpu"]["quota"] == 50_000
        # the variables the file used, as the operator's machine resolved them, and its name
        penv = ssh.run(["cat", "/etc/provisioner/.provision.env"], sudo=True).stdout
        assert 'COMPOSE_PROJECT_NAME="compose-app"' in penv and 'GREETING="hello-from-dotenv"' in penv

    # deploying again changes nothing
    again = _deploy(env)
    assert again["ok"] and again["hosts"][0]["actions"] == []

    provision(env["root"], "destroy", "compose-app", "--cloud", "local", "--yes", env=env["env"])
    assert qemu_processes_for(env["root"] / "local" / "compose-app") == []
