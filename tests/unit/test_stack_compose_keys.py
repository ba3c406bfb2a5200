"""The compose keys real files use, parsed into the typed model: networks, secrets and configs,
deploy, and the per-service container keys; what cannot be done is one line at file:line, what is
done differently a notice."""
from __future__ import annotations

import os
import textwrap

import pytest

from provisioner.errors import StackError
from provisioner.runspec.kernel import Ulimit
from provisioner.runspec.mounts import VolumeSpec
from provisioner.runspec.netopts import DnsConfig, ExtraHost
from provisioner.runspec.privileges import Privileges
from provisioner.runspec.process import LogConfig, Platform
from provisioner.runspec.restart import RestartPolicy
from provisioner.stack import load_stack
from provisioner.stack.model import FileRef, NetworkDef, ServiceNetwork, UpdateConfig
from provisioner.stack.project import ProjectOptions

FILE = """\
name: shop
x-common: &common
  restart: unless-stopped
networks:
  front: {}
  back:
    internal: true
    ipam:
      config:
        - subnet: 172.28.0.0/24
  shared:
    name: shared-net
    driver: overlay
secrets:
  db_pw:
    file: ./db_pw.txt
  token:
    environment: API_TOKEN
configs:
  site:
    content: "hello"
volumes:
  data:
services:
  web:
    <<: *common
    image: registry.local/web:1
    build: ./web
    labels: {tier: front}
    expose: ["8080", "9000-9001/udp"]
    networks:
      front:
        aliases: [www]
      back:
        priority: 10
    cap_add: [NET_ADMIN]
    cap_drop: [MKNOD]
    read_only: true
    tmpfs: [/run]
    ulimits:
      nofile: {soft: 1024, hard: 2048}
      nproc: 512
    sysctls: {net.core.somaxconn: 1024}
    extra_hosts: ["gw:host-gateway", "db.local=10.1.2.3"]
    dns: 1.1.1.1
    dns_search: [example.com]
    init: true
    stop_signal: SIGINT
    stop_grace_period: 1m30s
    tty: true
    stdin_open: true
    platform: linux/amd64
    pull_policy: always
    logging:
      driver: json-file
      options: {max-size: 10m, max-file: "3"}
    shm_size: 128m
    pids_limit: 100
    secrets:
      - db_pw
      - source: token
        target: api
        uid: "1000"
        gid: "1000"
        mode: 0400
    configs:
      - source: site
        target: /etc/site.txt
    volumes:
      - type: volume
        source: data
        target: /data
        volume: {nocopy: true}
      - type: bind
        source: ./static
        target: /static
        read_only: true
    deploy:
      replicas: 3
      labels: [team=shop]
      resources:
        limits: {cpus: "0.5", memory: 64M, pids: 100}
        reservations: {memory: 32M}
      restart_policy: {condition: on-failure, max_attempts: 4}
      update_config: {parallelism: 2, delay: 10s, order: start-first}
    depends_on:
      db: {condition: service_started, restart: true}
  db:
    image: postgres
    container_name: shop-db
    networks:
      back:
        ipv4_address: 172.28.0.10
  cache:
    image: redis
    network_mode: service:db
  tool:
    image: busybox
    profiles: [debug]
  proxy:
    image: nginx
    network_mode: host
"""


def _write(tmp_path, text=FILE, name="compose.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    pw = tmp_path / "db_pw.txt"
    pw.write_text("s3cret\n")
    os.chmod(pw, 0o600)
    return p


def _load(p, environ=None, **kw):
    return load_stack(p, hosts_required=False, project=ProjectOptions(environ={"API_TOKEN": "tok"} if environ is None
                                                                       else environ, **kw.pop("opts", {})), **kw)


def test_every_key_parses_into_typed_values(tmp_path):
    s = _load(_write(tmp_path))
    assert list(s.services) == ["web", "db", "cache", "proxy"]      # tool is in a profile not enabled
    assert s.networks == {
        "default": NetworkDef("default", "shop_default"),
        "front": NetworkDef("front", "shop_front", line=5),
        "back": NetworkDef("back", "shop_back", internal=True, subnet="172.28.0.0/24", line=6),
        "shared": NetworkDef("shared", "shared-net", line=11)}
    web = s.services["web"]
    assert web.networks == (ServiceNetwork("back", (), None, 10), ServiceNetwork("front", ("www",)))
    assert s.services["db"].networks == (ServiceNetwork("back", (), "172.28.0.10"),)
    assert s.services["db"].container_name == "shop-db"
    assert (web.container_name, web.labels, web.expose) == (None, (("tier", "front"),),
                                                            ((8080, "tcp"), (9000, "udp"), (9001, "udp")))
    assert web.privileges == Privileges(("CAP_NET_ADMIN",), ("CAP_MKNOD",))
    assert web.read_only and web.init and web.tty and web.stdin_open
    assert web.ulimits == (Ulimit("nofile", 1024, 2048), Ulimit("nproc", 512, 512))
    assert web.sysctls == (("net.core.somaxconn", "1024"),)
    assert web.extra_hosts == (ExtraHost("gw", "host-gateway"), ExtraHost("db.local", "10.1.2.3"))
    assert web.dns == DnsConfig(("1.1.1.1",), ("example.com",))
    assert (web.stop_signal, web.stop_grace_period, web.platform, web.pull_policy) == \
        ("SIGINT", 90.0, Platform("linux", "amd64"), "always")
    assert web.log == LogConfig("json-file", 10 << 20, 3)
    assert (web.shm_size, web.pids_limit, web.memory, web.cpu_quota, web.memory_reservation) == \
        (128 << 20, 100, 64 << 20, 50_000, 32 << 20)
    assert web.secrets == (FileRef("db_pw", "/run/secrets/db_pw"), FileRef("token", "/run/secrets/api", 1000, 1000,
                                                                             0o400))
    assert web.configs == (FileRef("site", "/etc/site.txt"),)
    assert web.volumes == (VolumeSpec("volume", "data", "/data", nocopy=True),
                           VolumeSpec("bind", str(tmp_path / "static"), "/static", True, create_host_path=False),
                           VolumeSpec("tmpfs", "", "/run"))
    assert (web.replicas, web.deploy_labels, web.restart) == (3, (("team", "shop"),), RestartPolicy("on-failure", 4))
    assert web.update_config == UpdateConfig(parallelism=2, delay=10.0, order="start-first")
    assert web.depends_restart == ("db",)
    assert s.services["cache"].network_mode == "service:db" and "db" in s.services["cache"].dependencies()
    assert s.secrets["db_pw"].file == str(tmp_path / "db_pw.txt")
    assert s.variables["API_TOKEN"] == "tok"
    notices = "\n".join(s.notices)
    assert "services.web.build: ignored; the service runs image registry.local/web:1" in notices
    assert "networks.shared.driver: overlay networks span a swarm's hosts" in notices
    assert "tool" in _load(_write(tmp_path), opts={"profiles": ("debug",)}).services


def _line(text, needle):
    """The line where `needle` (which may span lines) starts."""
    return text[:text.index(needle)].count("\n") + 1


@pytest.mark.parametrize("old, new, needle, message", [
    ("    cap_add: [NET_ADMIN]", "    cap_add: [NET_WIZARD]", "NET_WIZARD",
     "services.web.cap_add: unknown capability 'NET_WIZARD'"),
    ("  db:\n    image: postgres\n", "  db:\n    image: postgres\n    privileged: true\n", "privileged",
     "services.db.privileged: a privileged container has every capability"),
    ("sysctls: {net.core.somaxconn: 1024}", "sysctls: {kernel.panic: 1}", "kernel.panic", "is not namespaced"),
    ("      nproc: 512", "      nprocs: 512", "nprocs", "unknown ulimit 'nprocs'"),
    ("driver: json-file", "driver: syslog", "driver: syslog", "logging driver 'syslog' is not available"),
    ("platform: linux/amd64", "platform: amd64", "platform:", "bad platform 'amd64'"),
    ("stop_signal: SIGINT", "stop_signal: SIGWHAT", "SIGWHAT", "unknown signal"),
    ("        ipv4_address: 172.28.0.10", "        ipv4_address: 10.9.9.9", "10.9.9.9",
     "10.9.9.9 is not in the network's subnet 172.28.0.0/24"),
    ("      back:\n        ipv4_address", "      nowhere:\n        ipv4_address", "nowhere",
     "network 'nowhere' is not declared"),
    ("    network_mode: service:db", "    network_mode: service:ghost", "service:ghost", "unknown service 'ghost'"),
    ("    network_mode: host", "    network_mode: host\n    ports: ['80:80']", "ports:",
     "published ports have no meaning with network_mode: host"),
    ("      - db_pw\n", "      - nope\n", "- nope", "secret 'nope' is not declared"),
    ("        mode: 0400", "        mode: rw", "mode: rw", "mode 'rw' is not a file mode"),
    ("      replicas: 3", "      replicas: 0", "replicas: 0", "replicas: 0 would run nothing"),
    ("limits: {cpus: \"0.5\", memory: 64M, pids: 100}", "limits: {memory: lots}", "lots", "bad memory value 'lots'"),
    ("      restart_policy: {condition: on-failure, max_attempts: 4}", "      restart_policy: {condition: sometimes}",
     "sometimes", "condition: 'sometimes' is not none, on-failure or any"),
    ("    <<: *common\n", "", "reservations", "memory differs"),
    ("        target: /data\n", "        target: /static\n", "type: bind", "/static is mounted twice"),
    ("    driver: overlay", "    driver: macvlan", "macvlan", "'macvlan' is not available"),
    ("    container_name: shop-db\n", "    scale: 2\n", "    networks:\n      back:\n        ipv4",
     "services.db.networks: a fixed ipv4_address cannot be given to 2 replicas"),
    ("  token:\n    environment: API_TOKEN", "  token:\n    external: true", "external", "not available"),
])
def test_mistakes_are_one_line_at_file_line(tmp_path, old, new, needle, message):
    assert old in FILE, old
    text = FILE.replace(old, new, 1)
    if needle == "reservations":   # a second memory reservation that disagrees
        text = text.replace("    shm_size: 128m", "    shm_size: 128m\n    mem_reservation: 16M")
    p = _write(tmp_path, text)
    with pytest.raises(StackError) as exc:
        _load(p)
    msg = str(exc.value)
    assert message in msg and "\n" not in msg, msg
    assert msg.startswith(f"{p}:{_line(text, needle)}: "), msg


def test_secret_files_missing_or_world_readable_and_unset_variables_are_errors(tmp_path):
    p = _write(tmp_path)
    pw = tmp_path / "db_pw.txt"
    os.chmod(pw, 0o644)
    with pytest.raises(StackError, match=rf"{p}:16: secrets.db_pw.file: {pw} is readable by every user of this "
                                         r"machine \(mode 0644\)"):
        _load(p)
    pw.unlink()
    with pytest.raises(StackError, match=rf"{p}:16: secrets.db_pw.file: {pw} does not exist"):
        _load(p)
    _write(tmp_path)
    with pytest.raises(StackError, match=rf"{p}:18: secrets.token.environment: variable API_TOKEN is not set"):
        _load(p, environ={})


def test_build_only_services_are_refused_before_secret_problems(tmp_path):
    text = FILE.replace("    image: postgres\n", "    build: ./db\n", 1)
    p = _write(tmp_path, text)
    (tmp_path / "db_pw.txt").unlink()
    with pytest.raises(StackError, match=r"services.db: 'build' without 'image' — provisioner builds no images; "
                                         r"build it, push it, name it in image:"):
        _load(p)


def test_swarm_keys_get_notices(tmp_path):
    text = """\
    services:
      w:
        image: x
        deploy:
          mode: global
          placement: {constraints: [node.role == manager]}
          restart_policy: {condition: any, delay: 5s, max_attempts: 3}
          resources: {reservations: {cpus: "0.25"}}
        healthcheck: {test: "true", start_period: 1m, start_interval: 1s}
    """
    s = _load(_write(tmp_path, text))
    assert [n.split(": ", 1)[1].split(":")[0] for n in s.notices] == [
        "services.w.deploy.mode", "services.w.deploy.placement", "services.w.deploy.restart_policy.max_attempts",
        "services.w.deploy.restart_policy.delay", "services.w.deploy.resources.reservations.cpus"]
    assert s.services["w"].healthcheck.start_interval == 1.0
