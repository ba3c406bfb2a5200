"""The host agent's config: direct host spec, from a stack file, the cloud-init JSON, errors at file:line."""
from __future__ import annotations

import json

import pytest

from provisioner.errors import ConfigError
from provisioner.host import config as hc
from provisioner.runspec.ports import PublishedPort

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGxtest me@laptop"

STACK = """\
name: shop
hosts:
  - name: web1
    aws: {instance_type: t3.small, image: ami-0abc12345678, region: us-east-1}
    services: [web]
    ssh_cidr: 10.0.0.0/8
    disks:
      ephemeral: {mount: /var/lib/provisioner}
services:
  web:
    image: nginx
    ports: ["8080:80", "127.0.0.1:9000:9000", "5353:53/udp"]
"""


def write(tmp_path, text, name="host.yml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_direct_spec(tmp_path):
    p = write(tmp_path, f"""\
host: web1
stack: shop
users:
  - name: deploy
    ssh_authorized_keys: ["{KEY}"]
    groups: [sudo]
ports: ["80/tcp", 443, "8000-8010/udp"]
ssh_cidr: 192.168.0.0/16
ssh_port: 2222
sysctl: {{net.core.somaxconn: 4096}}
disks:
  ephemeral: {{mount: /srv/eph}}
""")
    cfg = hc.load(p)
    assert cfg.host == "web1" and cfg.stack == "shop" and cfg.ssh_port == 2222
    assert cfg.ports == (PublishedPort("tcp", 80, 80), PublishedPort("tcp", 443, 443),
                         PublishedPort("udp", 8000, 8010))
    assert cfg.users[0].name == "deploy" and cfg.users[0].keys == (KEY,) and cfg.users[0].groups == ("sudo",)
    assert cfg.sysctl == {"net.core.somaxconn": "4096"}
    assert cfg.disks.mountpoints() == ["/srv/eph"]
    assert cfg.ssh_cidr == "192.168.0.0/16"


def test_from_stack_file(tmp_path):
    write(tmp_path, STACK, "stack.yml")
    cfg = hc.load(write(tmp_path, "host: web1\nstack_file: stack.yml\n"))
    assert cfg.stack == "shop" and cfg.services == ("web",) and cfg.ssh_cidr == "10.0.0.0/8"
    # loopback-bound ports open nothing
    assert cfg.ports == (PublishedPort("tcp", 8080, 8080), PublishedPort("udp", 5353, 5353))
    assert cfg.disks.mountpoints() == ["/var/lib/provisioner"]


def test_metrics_and_logging_come_from_the_stack_file_or_the_host_config(tmp_path):
    stack = STACK.replace("    ssh_cidr: 10.0.0.0/8\n", "    ssh_cidr: 10.0.0.0/8\n    metrics: {allow_from: 10.0.2.2/32}\n"
                                                          "    logging: {ship_to: \"tcp://logs:514\"}\n", 1)
    assert stack != STACK
    write(tmp_path, stack, "stack.yml")
    cfg = hc.load(write(tmp_path, "host: web1\nstack_file: stack.yml\n"))
    assert (cfg.metrics.port, cfg.metrics.allow_from, cfg.logging.url) == (9100, "10.0.2.2/32", "tcp://logs:514")
    assert cfg.to_json()["metrics"]["allow_from"] == "10.0.2.2/32"
    with pytest.raises(ConfigError, match="'metrics' comes from the stack file"):
        hc.load(write(tmp_path, "host: web1\nstack_file: stack.yml\nmetrics: {}\n"))
    direct = hc.load(write(tmp_path, "host: h\nmetrics: {port: 9273}\nlogging: {ship_to: \"tls://l:6514\"}\n"))
    assert (direct.metrics.port, direct.logging.scheme) == (9273, "tls")
    with pytest.raises(ConfigError) as err:
        hc.load(write(tmp_path, "host: h\nlogging:\n  ship_to: ftp://l\n"))
    assert err.value.line == 3 and "host.logging.ship_to" in str(err.value)


def test_cloud_init_json_is_accepted(tmp_path):
    data = {"stack": "shop", "host": "web1", "cloud": "local", "services": ["web"],
            "volumes": [{"name": "data", "size_gb": 1}]}
    cfg = hc.load(write(tmp_path, json.dumps(data), "host.json"))
    assert (cfg.host, cfg.stack, cfg.cloud, cfg.disks, cfg.ports) == ("web1", "shop", "local", None, ())


def test_find_config_order(tmp_path, monkeypatch):
    monkeypatch.setattr(hc, "ETC_FILE", str(tmp_path / "etc-host.yml"))
    monkeypatch.setattr(hc, "CLOUD_INIT_FILE", str(tmp_path / "host.json"))
    with pytest.raises(ConfigError, match="no host config: looked for .*etc-host.yml, .*host.yml, .*host.json"):
        hc.find_config(tmp_path / "root")
    cloud_init = write(tmp_path, '{"host": "h"}', "host.json")
    assert hc.find_config(tmp_path / "root") == cloud_init
    (tmp_path / "root" / "host").mkdir(parents=True)
    under_root = write(tmp_path / "root" / "host", "host: h\n")
    assert hc.find_config(tmp_path / "root") == under_root
    etc = write(tmp_path, "host: h\n", "etc-host.yml")   # /etc first: <root> may be the ephemeral mount
    assert hc.find_config(tmp_path / "root") == etc
    assert hc.find_config(tmp_path / "root", "/x/y.yml") == hc.Path("/x/y.yml")


@pytest.mark.parametrize("text, message, line", [
    ("stack: x\n", "'host'", None),
    ("host: h\nbogus: 1\n", "unknown key 'bogus'", 2),
    ("host: h\nports: [\"80/sctp\"]\n", r"ports\[0\]", 2),
    ("host: h\nports: [70000]\n", r"ports\[0\]", 2),
    ("host: h\nssh_cidr: 10.0.0.1/8\n", "ssh_cidr", 2),
    ("host: h\nssh_port: 0\n", "ssh_port", 2),
    ("host: h\nusers:\n  - name: Root!\n", "not a valid user name", 3),
    ("host: h\nusers:\n  - name: a\n  - name: a\n", "duplicate user", 4),
    ("host: h\nusers:\n  - name: a\n    ssh_authorized_keys: [\"ssh-ed25519 AAAA\\nevil\"]\n",
     "not one OpenSSH public key line", 4),
    ("host: h\nusers:\n  - name: a\n    shell: bash\n", "absolute path", 4),
    ("host: h\nsysctl: {\"kernel\": 1}\n", "sysctl key", 2),
    ("host: h\ndisks:\n  ephemeral: {mount: relative}\n", "absolute", 3),
    ("host: h\nstack_file: nope.yml\n", "not found", 2),
    ("host: h\nstack_file: s.yml\nports: [80]\n", "comes from the stack file", 3),
])
def test_errors_name_file_and_line(tmp_path, text, message, line):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as err:
        hc.load(p)
    assert str(err.value).startswith(f"{p}:{line}: " if line else f"{p}")


def test_unknown_host_in_stack(tmp_path):
    write(tmp_path, STACK, "stack.yml")
    p = write(tmp_path, "host: db9\nstack_file: stack.yml\n")
    with pytest.raises(ConfigError, match=r"host 'db9' is not in stack 'shop' .*hosts: web1") as err:
        hc.load(p)
    assert str(err.value).startswith(f"{p}:1: ")


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="host config not found"):
        hc.load(tmp_path / "nope.yml")


VOL_STACK = STACK.replace("      ephemeral: {mount: /var/lib/provisioner}\n",
                          "      ephemeral: {mount: /var/lib/provisioner}\n"
                          "      volumes:\n        - {name: data, mount: /srv/data, size: 1}\n")


def test_deploy_records_which_disk_a_stack_volume_is(tmp_path):
    write(tmp_path, VOL_STACK, "stack.yml")
    cfg = hc.load(write(tmp_path, "host: web1\nstack_file: stack.yml\nvolumes:\n  data: {aws_volume_id: vol-0abc}\n"))
    (vol,) = cfg.disks.volumes
    assert (vol.name, vol.mount, vol.match.key, vol.match.value) == ("data", "/srv/data", "aws_volume_id", "vol-0abc")
    assert vol.match_where.line == 4


def test_volume_without_a_match_is_a_planning_error_naming_the_line(tmp_path):
    from provisioner.disks.plan import _match_volume

    write(tmp_path, VOL_STACK, "stack.yml")
    cfg = hc.load(write(tmp_path, "host: web1\nstack_file: stack.yml\n"))
    with pytest.raises(ConfigError, match=r"stack.yml:10: volume 'data': no 'match:'"):
        _match_volume(None, cfg.disks.volumes[0])


def test_volume_match_for_an_unknown_volume(tmp_path):
    write(tmp_path, VOL_STACK, "stack.yml")
    with pytest.raises(ConfigError, match=r"host.yml:4: volumes: 'logs' is not a volume of this host's disks"):
        hc.load(write(tmp_path, "host: web1\nstack_file: stack.yml\nvolumes:\n  logs: {serial: x}\n"))
