"""A compose file as people write them, brought up on this machine with the real runtime, shim and
network: no `name:` (the project is the folder's name, normalised), a `version:` line, two
networks, a web service that reaches `db` by its service name with no links, a file secret,
`container_name`, `deploy.resources.limits`, `deploy.replicas: 3` behind one published port
(requests spread over the three, and over the healthy ones only), a long-syntax volume and
`${VAR:-default}` taken from `.env` — all as docker compose behaves. And what must be refused
before anything is made: a world-readable secret file."""
from __future__ import annotations

import json
import os
import shutil
import textwrap
from pathlib import Path

import pytest

from tests.privileged.test_container import NOTHING, Env, images, wait_for  # noqa: F401 (fixtures)
from tests.registry_fixture import free_port

pytestmark = [
    pytest.mark.privileged,
    pytest.mark.skipif(not all(shutil.which(t) for t in ("skopeo", "docker-registry", "nft", "mkfs.btrfs")),
                       reason="skopeo, docker-registry, nft and btrfs-progs are needed (scripts/install.sh)"),
]

COMPOSE = """\
version: "3.8"

services:
  web:
    image: ${WEB_IMAGE}
    # each replica serves its own address, so a client can tell them apart
    command: ["sh", "-c", "ip -o -4 addr show eth0 | awk '{print $$4}' > /www/id && exec httpd -f -p 80 -h /www"]
    ports:
      - "127.0.0.1:${WEB_PORT:-8080}:80"
    networks: [front, back]
    healthcheck:
      test: ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1/id"]
      interval: 200ms
      timeout: 2s
      retries: 2
    deploy:
      replicas: 3
      resources:
        limits:
          cpus: "0.5"
          memory: 64M
  db:
    image: ${BOX_IMAGE}
    container_name: ${DB_NAME}
    command: ["sh", "-c", "echo ${GREETING:-hi} > /data/greeting && exec httpd -f -p 5432 -h /data"]
    networks: [back]
    volumes:
      - type: volume
        source: dbdata
        target: /data
    secrets:
      - db_password
  edge:
    image: ${BOX_IMAGE}
    command: ["sleep", "1000"]
    networks: [front]

networks:
  front:
  back:

volumes:
  dbdata:

secrets:
  db_password:
    file: ./db_password.txt
"""


class Project:
    def __init__(self, env: Env):
        self.env = env
        self.dir = env.work / f"My_Shop.{env.sfx}"
        self.name = f"my_shop{env.sfx}"            # compose's normalisation of the folder's name
        self.port = free_port()
        self.db = f"shopdb-{env.sfx}"
        self.dir.mkdir()
        (self.dir / "compose.yaml").write_text(COMPOSE)
        (self.dir / ".env").write_text(textwrap.dedent(f"""\
            WEB_IMAGE={env.refs['web']}
            BOX_IMAGE={env.refs['busybox']}
            WEB_PORT={self.port}
            DB_NAME={self.db}
            GREETING=hello-from-dotenv
            """))
        secret = self.dir / "db_password.txt"
        secret.write_text("s3cret-pw-{}\n".format(env.sfx))
        os.chmod(secret, 0o600)

    def provision(self, *args, check=True):
        """`provision` run in the project's folder, as a user of docker compose would."""
        import subprocess
        import sys

        proc = subprocess.run([sys.executable, "-m", "provisioner.cli.main", "--root", str(self.env.root), *args],
                              capture_output=True, text=True, timeout=300, cwd=self.dir, stdin=subprocess.DEVNULL,
                              env={**{k: v for k, v in os.environ.items() if k != "COMPOSE_PROJECT_NAME"},
                                   "PYTHONPATH": str(Path(__file__).resolve().parents[2])})   # this checkout's
        if check and proc.returncode != 0:
            raise AssertionError(f"provision {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
        return proc

    def exec(self, container: str, *argv: str, check=True):
        return self.provision("container", "exec", container, *argv, check=check)


@pytest.fixture
def project(images):
    work, mnt, refs, _ = images
    env = Env(work, mnt, refs)
    p = Project(env)
    try:
        yield p
    finally:
        p.provision("down", "-v", check=False)
        env.cleanup()


def _get(port: int, path: str = "/id") -> str:
    from provisioner.runner import Runner

    return Runner().run(["/bin/busybox", "wget", "-q", "-O-", f"http://127.0.0.1:{port}{path}"], timeout=10).stdout


def test_a_published_compose_file_behaves_as_docker_compose_would(project):
    p, env = project, project.env
    up = p.provision("up")
    assert f"compose.yaml:1: 'version' is obsolete and ignored" in up.stderr
    assert "web (replica 3) is healthy" not in up.stderr and f"{p.name}-web-3 is healthy" in up.stderr
    rows = json.loads(p.provision("ps", "--json").stdout)
    assert sorted((r["service"], r["container"], r["state"]) for r in rows) == sorted(
        [("web", f"{p.name}-web", "running"), ("web", f"{p.name}-web-2", "running"),
         ("web", f"{p.name}-web-3", "running"), ("db", p.db, "running"), ("edge", f"{p.name}-edge", "running")])
    assert {r["health"] for r in rows if r["service"] == "web"} == {"healthy"}

    # the web service reaches db by its service name, and by its container name, with no links
    assert p.exec(f"{p.name}-web-2", "wget", "-q", "-O-", "http://db:5432/greeting").stdout == "hello-from-dotenv\n"
    assert p.exec(f"{p.name}-web", "wget", "-q", "-O-", f"http://{p.db}:5432/greeting").stdout == "hello-from-dotenv\n"
    # edge shares only front with web: it reaches web by name, never db (no name, no route)
    assert p.exec(f"{p.name}-edge", "wget", "-q", "-O-", "http://web/id").returncode == 0
    assert "db" not in p.exec(f"{p.name}-edge", "cat", "/etc/hosts").stdout.split()
    db_addr = env.inspect(p.db)["networks"][f"{p.name}_back"]["address"]
    assert p.exec(f"{p.name}-edge", "wget", "-q", "-T", "2", "-O-", f"http://{db_addr}:5432/greeting",
                  check=False).returncode != 0

    # the file secret: read-only at /run/secrets/<name>, and nowhere in what provisioner records
    secret = (p.dir / "db_password.txt").read_text()
    assert p.exec(p.db, "cat", "/run/secrets/db_password").stdout == secret
    assert p.exec(p.db, "stat", "-c", "%a %u", "/run/secrets/db_password").stdout.split() == ["444", "0"]
    assert "Read-only" in p.exec(p.db, "sh", "-c", "echo x > /run/secrets/db_password", check=False).stderr
    recorded = json.dumps(env.inspect(p.db)) + (env.root / "stacks" / f"{p.name}.json").read_text()
    recorded += "".join(Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
                        for pid in os.listdir("/proc") if pid.isdigit() and Path(f"/proc/{pid}/cmdline").exists())
    assert secret.strip() not in recorded

    # deploy.resources.limits reach the container's cgroup settings
    res = env.inspect(f"{p.name}-web-3")["resources"]
    assert res["memory"]["limit"] == 64 << 20 and res["cpu"] == {"quota": 50_000, "period": 100_000}

    # three replicas behind one published port (the port .env gave ${WEB_PORT:-8080}), taken in turn
    replicas = {f"{p.name}-web{s}": env.inspect(f"{p.name}-web{s}")["networks"][f"{p.name}_front"]["address"]
                for s in ("", "-2", "-3")}
    seen = [_get(p.port).strip().split("/")[0] for _ in range(30)]
    assert set(seen) == set(replicas.values()) and min(seen.count(a) for a in set(seen)) >= 5

    # an unhealthy replica leaves the balance; healthy again, it comes back
    p.exec(f"{p.name}-web-2", "rm", "/www/id")
    wait_for(lambda: replicas[f"{p.name}-web-2"] not in {_get(p.port).strip().split("/")[0] for _ in range(12)},
             timeout=20, what="the unhealthy replica out of the balance")
    assert {_get(p.port).strip().split("/")[0] for _ in range(12)} == {replicas[f"{p.name}-web"],
                                                                      replicas[f"{p.name}-web-3"]}
    p.exec(f"{p.name}-web-2", "sh", "-c", "ip -o -4 addr show eth0 | awk '{print $4}' > /www/id")
    wait_for(lambda: len({_get(p.port).strip().split("/")[0] for _ in range(12)}) == 3, timeout=20,
             what="the replica back in the balance")

    # the long-syntax named volume outlives the stack; up again is a no-op; down leaves nothing else
    assert p.provision("up").stdout.strip() == f"{p.name}: up to date"
    p.exec(p.db, "sh", "-c", "echo kept > /data/kept")
    p.provision("down")
    # (a deleted namespace's veth may outlive `ip netns del` for a moment: the kernel's teardown)
    wait_for(lambda: env.leftovers() == NOTHING, timeout=10, what=f"nothing left ({env.leftovers()})")
    assert [n["name"] for n in json.loads(p.provision("network", "ls", "--json").stdout)] == ["bridge"]
    p.provision("up")
    assert p.exec(p.db, "cat", "/data/kept").stdout == "kept\n"


def test_a_world_readable_or_missing_secret_is_refused_before_anything_is_made(project):
    p, env = project, project.env
    secret = p.dir / "db_password.txt"
    line = next(i for i, ln in enumerate(COMPOSE.splitlines(), 1) if "file: ./db_password.txt" in ln)
    os.chmod(secret, 0o644)
    proc = p.provision("up", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: compose.yaml:{line}: secrets.db_password.file: {secret} is readable by every user of this machine "
        "(mode 0644); `chmod o-rwx` it first")
    secret.unlink()
    proc = p.provision("up", check=False)
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: compose.yaml:{line}: secrets.db_password.file: {secret} does not exist")
    assert env.leftovers() == NOTHING and not (env.root / "stacks").exists()
    assert not (env.root / "network" / "networks").exists() or not any((env.root / "network" / "networks").iterdir())
