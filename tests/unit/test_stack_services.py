"""Compose-style services: the supported keys parsed, every bad input one StackError at file:line."""
from __future__ import annotations

import textwrap

import pytest

from provisioner.errors import StackError
from provisioner.runspec.durations import parse_duration
from provisioner.runspec.health import Healthcheck
from provisioner.runspec.mounts import VolumeSpec
from provisioner.runspec.ports import PortMapping
from provisioner.stack import load_stack


def load_services(path):
    stack = load_stack(path, hosts_required=False)
    return stack.name, stack

GOOD = """\
name: demo
volumes:
  data: {}
services:
  web:
    image: registry.local/web:1
    ports: ["127.0.0.1:8080:80", "9000:9000/udp", {target: 81, published: 8081}]
    environment: {ROLE: web, DEBUG: true}
    volumes: ["data:/srv", "./static:/static:ro", /cache]
    healthcheck:
      test: ["CMD", "wget", "-q", "-O-", "http://localhost/"]
      interval: 1m30s
      timeout: 500ms
      retries: 5
      start_period: 2s
    restart: unless-stopped
    mem_limit: 64m
    cpus: 0.5
  app:
    image: busybox
    command: sleep 1000
    entrypoint: ["/bin/sh", "-c"]
    environment: [A=1, "B=two words"]
    links: ["web:api"]
    depends_on:
      web: {condition: service_healthy}
    user: "1000:1000"
    working_dir: /work
    hostname: app1
  db:
    image: busybox
    restart: no
    healthcheck: {test: "true", interval: 1s}
  worker:
    image: busybox
    depends_on: [db, app]
"""


def _write(tmp_path, text, name="stack.yml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return str(p)


def test_supported_keys_parse(tmp_path):
    name, s = load_services(_write(tmp_path, GOOD))
    assert name == "demo" and s.volumes == ("data",)
    web, app, db = s.services["web"], s.services["app"], s.services["db"]
    assert web.ports == (PortMapping("127.0.0.1", 8080, 80), PortMapping("0.0.0.0", 9000, 9000, "udp"),
                         PortMapping("0.0.0.0", 8081, 81))
    assert web.env == ("ROLE=web", "DEBUG=true")
    assert web.volumes == (VolumeSpec("volume", "data", "/srv"), VolumeSpec("bind", f"{tmp_path}/static", "/static", True),
                           VolumeSpec("anonymous", "", "/cache"))
    assert web.healthcheck == Healthcheck(("wget", "-q", "-O-", "http://localhost/"), 90.0, 0.5, 5, 2.0)
    assert (str(web.restart), web.memory, web.cpu_quota) == ("unless-stopped", 64 << 20, 50_000)
    assert app.command == ("sleep", "1000") and app.entrypoint == ("/bin/sh", "-c")
    assert app.env == ("A=1", "B=two words")
    assert app.links == (("web", "api"),) and app.depends_on == (("web", "service_healthy"),)
    assert (app.user, app.working_dir, app.hostname) == ("1000:1000", "/work", "app1")
    assert db.healthcheck.test == ("/bin/sh", "-c", "true") and db.healthcheck.interval == 1.0
    assert str(db.restart) == "no"   # YAML's bare `no` is false: compose's "no"
    order = s.order
    assert order.index("web") < order.index("app") < order.index("worker")
    assert order.index("db") < order.index("worker")


def test_durations():
    assert parse_duration("1m30s") == 90.0
    assert parse_duration("1h") == 3600.0
    assert parse_duration("250ms") == 0.25
    assert parse_duration(5) == 5.0
    for bad in ("10", "1x", "s", "", "-1s", True):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_healthcheck_forms(tmp_path):
    text = GOOD.replace('test: "true", interval: 1s', 'test: ["CMD-SHELL", "wget -q -O- http://localhost/"]')
    _, s = load_services(_write(tmp_path, text))
    assert s.services["db"].healthcheck.test == ("/bin/sh", "-c", "wget -q -O- http://localhost/")
    assert (s.services["db"].healthcheck.interval, s.services["db"].healthcheck.retries) == (30.0, 3)
    text = GOOD.replace('test: "true", interval: 1s', 'test: ["NONE"]').replace("depends_on: [db, app]",
                                                                               "depends_on: [app]")
    _, s = load_services(_write(tmp_path, text))
    assert s.services["db"].healthcheck is None


def _line_of(text: str, needle: str) -> int:
    return next(i for i, ln in enumerate(text.splitlines(), 1) if needle in ln)


@pytest.mark.parametrize("old,new,needle,message", [
    ("    hostname: app1\n", "    hostname: app1\n    networks: [front]\n", "networks:",
     r"services.app.networks.front: network 'front' is not declared under the top-level 'networks:'"),
    ("  db:\n    image: busybox\n", "  db:\n    build: .\n", "  db:",
     "services.db: 'build' without 'image' — provisioner builds no images; build it, push it, name it in image:"),
    ('"9000:9000/udp"', '"99999:80"', "99999", r"services.web.ports\[1\]: bad port mapping '99999:80': host port 99999 is outside 1-65535"),
    ('"9000:9000/udp"', '"80:80/sctp"', "sctp", r"services.web.ports\[1\].*protocol"),
    ('links: ["web:api"]', 'links: ["nope:api"]', "nope:api", "services.app.links: unknown service 'nope'"),
    ("depends_on: [db, app]", "depends_on: [db, ghost]", "ghost",
     "services.worker.depends_on: unknown service 'ghost'"),
    ("interval: 1m30s", "interval: 90x", "90x", "services.web.healthcheck.interval: '90x' is not a duration"),
    ("timeout: 500ms", "timeout: soon", "soon", "services.web.healthcheck.timeout"),
    ('test: ["CMD", "wget"', 'test: ["RUN", "wget"', "RUN", "services.web.healthcheck.test: want"),
    ("retries: 5", "retries: 0", "retries: 0", "services.web.healthcheck.retries must be a positive integer"),
    ("retries: 5", "retries: 5\n      start_delay: 1s", "start_delay",
     "services.web.healthcheck: unsupported key 'start_delay'"),
    ('healthcheck: {test: "true", interval: 1s}', "healthcheck: {interval: 1s}", "interval: 1s}",
     "services.db.healthcheck: 'test' is required"),
    ("condition: service_healthy", "condition: service_ready", "service_ready", "is not one of"),
    ("restart: unless-stopped", "restart: sometimes", "sometimes", "services.web.restart: 'sometimes'"),
    ("mem_limit: 64m", "mem_limit: lots", "lots", "services.web.mem_limit: bad"),
    ('"data:/srv"', '"other:/srv"', "other:/srv", "named volume 'other' is not declared"),
    ("working_dir: /work", "working_dir: work", "working_dir", "not an absolute path"),
    ("  worker:\n    image: busybox\n", "  worker:\n    command: x\n", "  worker:", "'image' is required"),
])
def test_errors_name_file_and_line(tmp_path, old, new, needle, message):
    assert old in GOOD
    text = GOOD.replace(old, new, 1)
    path = _write(tmp_path, text)
    with pytest.raises(StackError, match=message) as exc:
        load_services(path)
    assert str(exc.value).startswith(f"{path}:{_line_of(text, needle)}: "), str(exc.value)


def test_cycle_is_named(tmp_path):
    text = GOOD.replace("    image: registry.local/web:1\n", "    image: registry.local/web:1\n    depends_on: [worker]\n")
    path = _write(tmp_path, text)
    with pytest.raises(StackError, match=r"dependency cycle (web -> worker -> app -> web|.*web.*worker.*)") as exc:
        load_services(path)
    assert str(exc.value).startswith(f"{path}:")
    assert "web" in str(exc.value) and "worker" in str(exc.value) and "app" in str(exc.value)


def test_healthy_condition_needs_a_healthcheck(tmp_path):
    text = GOOD.replace("depends_on: [db, app]", "depends_on: {app: {condition: service_healthy}}")
    with pytest.raises(StackError, match="'app' has no healthcheck"):
        load_services(_write(tmp_path, text))


def test_the_full_loader_checks_services_too(tmp_path):
    from provisioner.stack import load_stack

    text = """\
    name: shop
    hosts:
      - name: web
        services: [frontend]
        aws: {instance_type: t3.small, image: ami-1e749f67, zone: us-east-1a}
    services:
      frontend:
        image: nginx
        devices: [/dev/fuse]
    """
    path = _write(tmp_path, text)
    with pytest.raises(StackError, match=f"{path}:9: services.frontend: unsupported compose key 'devices'"):
        load_stack(path)
    # and a stack with hosts can still be brought up locally
    name, s = load_services(_write(tmp_path, text.replace("devices: [/dev/fuse]", "ports: ['80:80']")))
    assert name == "shop" and s.services["frontend"].ports == (PortMapping("0.0.0.0", 80, 80),)


def test_unknown_top_key_and_a_missing_name_taken_from_the_folder(tmp_path):
    with pytest.raises(StackError, match=r":2: unknown key 'include' in the stack"):
        load_services(_write(tmp_path, "name: a\ninclude: [x.yml]\nservices: {}\n"))
    folder = tmp_path / "My App_2.0"
    folder.mkdir()
    name, _ = load_services(_write(folder, "services: {}\n"))
    assert name == "myapp_20"


def test_the_allinone_example_loads():
    import os

    path = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "allinone-stack.yml")
    name, s = load_services(path)
    assert name == "allinone"
    assert set(s.services) == {"zookeeper", "redis", "kafka", "mariadb", "graphite", "app", "web"}
    order = s.order
    assert order.index("zookeeper") < order.index("kafka") < order.index("app") < order.index("web")
    assert all(spec.healthcheck is not None for spec in s.services.values())
    assert ("mariadb", "db") in s.services["app"].links
    assert s.volumes == ("kafka-logs", "mariadb-data", "redis-data")


def test_env_file_is_relative_to_the_stack_file_and_must_exist(tmp_path):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "db.env").write_text("A=1\n")
    text = "name: a\nservices:\n  db:\n    image: busybox\n    env_file: conf/db.env\n"
    _, s = load_services(_write(tmp_path, text))
    assert s.services["db"].env_files == (str(tmp_path / "conf" / "db.env"),)
    path = _write(tmp_path, text.replace("conf/db.env", "[conf/db.env, missing.env]"))
    with pytest.raises(StackError, match=f"{path}:5: services.db.env_file: 'missing.env' not found"):
        load_services(path)
