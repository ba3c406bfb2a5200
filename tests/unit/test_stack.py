"""The stack file loader: schema, file:line errors, service placement and published ports."""
from __future__ import annotations

import os
import textwrap

import pytest

from provisioner.errors import ConfigError, StackError
from provisioner.runspec.ports import PublishedPort, parse_compose_port, published
from provisioner.stack import load_stack

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "fixtures", "clouds", "stack.yml")

BASE = """\
name: shop
hosts:
  - name: web
    services: [frontend]
    aws:
      instance_type: t3.small
      image: ami-1e749f67
      zone: us-east-1a
services:
  frontend:
    image: nginx
    ports: ["80:80"]
"""


def _load(tmp_path, text):
    p = tmp_path / "stack.yml"
    p.write_text(textwrap.dedent(text))
    return load_stack(p), str(p)


def test_fixture_loads_fully():
    s = load_stack(FIXTURE)
    assert s.name == "shop" and [h.name for h in s.hosts] == ["web", "db"]
    web = s.host("web")
    assert web.services == ("frontend", "api") and web.ssh_cidr == "198.51.100.0/24"
    aws, gce = web.clouds["aws"], web.clouds["gce"]
    assert (aws.instance_type, aws.image, aws.region, aws.zone, aws.spot) == (
        "t3.small", "ami-1e749f67", "us-east-1", "us-east-1a", True)
    assert aws.root_disk.size_gb == 20 and aws.root_disk.type == "gp3" and aws.tags == {"team": "shop"}
    assert (gce.instance_type, gce.zone, gce.region, gce.spot) == ("e2-small", "us-central1-a", "us-central1", True)
    assert [(v.name, v.size_gb, v.encrypted, v.keep) for v in web.volumes] == [("data", 10, True, False),
                                                                               ("logs", 5, True, True)]
    assert web.ephemeral.count == 2 and web.ephemeral.interface == "nvme"
    assert [str(p) for p in s.published_ports(web)] == ["80/tcp", "443/tcp", "8080-8081/tcp", "5353/udp"]
    assert [str(p) for p in s.published_ports(s.host("db"))] == ["5432/tcp"]
    assert s.services["api"].image == "example/api:1"   # the services parsed once, with the hosts
    assert s.volumes == ("pgdata",)


def test_disks_are_delegated_to_the_disk_layer(tmp_path):
    pytest.importorskip("provisioner.disks.config", reason="disk layer's parse_config not available")
    s = load_stack(FIXTURE)
    assert s.host("web").disks is not None       # parse_config's result is kept for the host agent
    with pytest.raises(StackError) as info:
        _load(tmp_path, BASE.replace("    services: [frontend]\n", "    services: [frontend]\n    disks:\n"
                                     "      volumes:\n        - {name: data, match: {}, mount: /srv, size: 1}\n"))
    assert ":6:" in str(info.value) or ":7:" in str(info.value)
    assert "match" in str(info.value)


@pytest.mark.parametrize("edit, line, message", [
    (("name: shop", "name: Shop!"), 1, "name: 'Shop!' is not a valid project name"),
    (("services:\n  frontend", "colour: red\nservices:\n  frontend"), 9, "unknown key 'colour' in the stack"),
    (("    aws:", "    awz: {}\n    aws:"), 5, "unknown key 'awz' in a host"),
    (("services: [frontend]", "services: [frontend, db]"), 4, "unknown service 'db' (known: frontend)"),
    (("t3.small", "t3 small"), 6, "instance_type: 't3 small' is not valid"),
    (("ami-1e749f67", "ubuntu"), 7, "image: 'ubuntu' is not valid"),
    (("zone: us-east-1a", "zone: eu-west-1a\n      region: us-east-1"), 8, "zone 'eu-west-1a' is not in region"),
    (('"80:80"', '"80:80/sctp"'), 12, "protocol must be tcp or udp"),
    (('"80:80"', '"70000:80"'), 12, "outside 1-65535"),
    (("    services: [frontend]", "    ssh_cidr: 0.0.0.0/0\n    services: [frontend]"), 4,
     "opens SSH to the whole internet"),
    (("    services: [frontend]", "    ssh_cidr: 10.0.0.1/8\n    services: [frontend]"), 4, "has host bits set"),
    (("      zone: us-east-1a\n", "      zone: us-east-1a\n      spot: maybe\n"), 9, "spot must be true or false"),
])
def test_errors_name_file_line_and_problem(tmp_path, edit, line, message):
    text = BASE
    assert edit[0] in text
    with pytest.raises(StackError) as info:
        _load(tmp_path, text.replace(edit[0], edit[1], 1))
    msg = str(info.value)
    assert msg.startswith(f"{tmp_path}/stack.yml:{line}: "), msg
    assert message in msg and "\n" not in msg


def test_structural_errors(tmp_path):
    for text, message in [("- a\n", "must be a mapping"), ("name: x\nhosts: []\n", "'hosts' must be a non-empty list"),
                          ("name: x\nhosts:\n  - {name: a, local: {style: xen}}\n", "local.style must be aws or gce"),
                          ("name: x\nhosts:\n  - {name: a, local: {memory: 64}}\n", r"local.memory must be an integer"),
                          ("name: x\nhosts:\n  - {name: a, local: {disk: 1}}\n", "unknown key 'disk'"),
                          ("name: x\nhosts: [1]\n", r"hosts\[0\] must be a mapping"),
                          ("name: x\nhosts:\n  - {name: a, gce: {machine_type: e2-small, image: i, zone: us-central1-a},"
                           " services: [s]}\n  - {name: a, gce: {machine_type: e2-small, image: i, zone: us-central1-a}}"
                           "\nservices: {s: {}}\n", "duplicate host name 'a'"),
                          ("name: x\nname: y\n", "duplicate key"),
                          ("name: [\n", "invalid YAML")]:
        with pytest.raises(StackError, match=message):
            _load(tmp_path, text)
    with pytest.raises(StackError, match="file not found"):
        load_stack(tmp_path / "nope.yml")


@pytest.mark.parametrize("entry, expected", [
    ("80:80", PublishedPort("tcp", 80, 80)),
    ("8080:80/udp", PublishedPort("udp", 8080, 8080)),
    ("0.0.0.0:443:443", PublishedPort("tcp", 443, 443)),
    ("127.0.0.1:9000:9000", None),
    ("8000-8010:8000-8010", PublishedPort("tcp", 8000, 8010)),
    ("3000", None),
    (3000, None),
    ("127.0.0.1::80", None),
    ({"target": 80, "published": 8080, "protocol": "udp"}, PublishedPort("udp", 8080, 8080)),
    ({"target": 80, "published": "8080", "host_ip": "127.0.0.1"}, None),
    ({"target": 80}, None),
])
def test_published_ports_of_compose_entries(entry, expected):
    assert published(parse_compose_port(entry)) == ([expected] if expected else [])


@pytest.mark.parametrize("entry", ["80:80:80:80", "a:80", "8000-8010:80-81", "1.2.3:80:80", True, 1.5,
                                   {"published": 80}, {"target": 80, "bogus": 1}, "0:80",
                                   "[::1]:9000:9000", "[2001:db8::1]:9000:9000/udp"])   # the container network is IPv4
def test_compose_ports_rejected(entry):
    with pytest.raises(ConfigError):
        parse_compose_port(entry)
