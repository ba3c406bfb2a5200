"""The disks config schema: what parses, and every bad input as one `file:line: message`."""
from __future__ import annotations

import textwrap

import pytest

from provisioner import yamlutil
from provisioner.disks.config import Match, load_config, parse_config
from provisioner.errors import ConfigError

FULL = """\
ephemeral:
  mount: /var/lib/provisioner
  devices: [/dev/loop3, /dev/loop4]
  wipe: true
  count: 2
  interface: nvme
volumes:
  - name: data
    match: {device: /dev/loop5}
    mount: /srv/data
    size: 10
    type: gp3
    encrypted: false
    keep: true
    iops: 3000
  - name: logs
    match: {aws_volume_id: vol-0123456789abcdef0}
    mount: /srv/logs
  - name: pd
    match: {gce_device_name: data-1}
    mount: /srv/pd
  - name: byserial
    match: {serial: scratch-1}
    mount: /srv/scratch/
"""


def parse(text: str):
    return parse_config(yamlutil.loads(textwrap.dedent(text), "disks.yaml"), "disks.yaml")


def test_full_config_parses():
    cfg = parse(FULL)
    assert cfg.ephemeral.mount == "/var/lib/provisioner"
    assert cfg.ephemeral.devices == ("/dev/loop3", "/dev/loop4")
    assert (cfg.ephemeral.wipe, cfg.ephemeral.count, cfg.ephemeral.interface) == (True, 2, "nvme")
    data, logs, pd, byserial = cfg.volumes
    assert (data.name, data.match, data.mount) == ("data", Match("device", "/dev/loop5"), "/srv/data")
    assert (data.size, data.type, data.encrypted, data.keep, data.iops) == (10, "gp3", False, True, 3000)
    assert logs.match == Match("aws_volume_id", "vol-0123456789abcdef0")
    assert logs.encrypted is True and logs.keep is False  # defaults
    assert pd.match == Match("gce_device_name", "data-1")
    assert byserial.mount == "/srv/scratch"  # normalised
    assert cfg.mountpoints() == ["/var/lib/provisioner", "/srv/data", "/srv/logs", "/srv/pd", "/srv/scratch"]
    assert cfg.to_json()["volumes"][0]["match"] == {"key": "device", "value": "/dev/loop5"}


def test_empty_config_is_valid_and_does_nothing():
    cfg = parse("{}\n")
    assert cfg.ephemeral is None and cfg.volumes == ()


def test_load_config_from_file(tmp_path):
    p = tmp_path / "disks.yaml"
    p.write_text("ephemeral:\n  mount: /mnt/e\n")
    assert load_config(p).ephemeral.mount == "/mnt/e"
    with pytest.raises(ConfigError, match=r"nope\.yaml: file not found"):
        load_config(tmp_path / "nope.yaml")


BAD = [
    # (yaml, expected line, message fragment)
    ("ephemeral:\n  mount: /a\n  devise: [/dev/loop1]\n", 3, "ephemeral: unknown key 'devise'"),
    ("ephemeral:\n  devices: [/dev/loop1]\n", 2, "ephemeral: missing required key 'mount'"),
    ("ephemeral:\n  mount: var/lib\n", 2, "must be an absolute path"),
    ("ephemeral:\n  mount: /\n", 2, "refusing to mount over '/'"),
    ("ephemeral:\n  mount: /a\n  devices: [/dev/loop1,\n    sdb]\n", 4, "must be a device path under /dev/"),
    ("ephemeral:\n  mount: /a\n  devices: []\n", 3, "must be a non-empty list"),
    ("ephemeral:\n  mount: /a\n  wipe: yes please\n", 3, "ephemeral.wipe: must be true or false"),
    ("ephemeral:\n  mount: /a\n  interface: ide\n", 3, "must be one of nvme, scsi"),
    ("ephemeral:\n  mount: /a\n  count: -1\n", 3, "ephemeral.count: must be an integer ≥ 0"),
    ("volumes:\n  - name: data\n    match: {}\n    mount: /srv/data\n", 3, "needs exactly one of"),
    ("volumes:\n  - match: {device: /dev/loop1}\n    mount: /srv/data\n", 2, "missing required key 'name'"),
    ("volumes:\n  - name: data\n    match: {device: /dev/loop1}\n", 2, "missing required key 'mount'"),
    ("volumes:\n  - name: data\n    match: {uuid: x}\n    mount: /d\n", 3, "unknown key 'uuid'"),
    ("volumes:\n  - name: data\n    match: {serial: a, device: /dev/x}\n    mount: /d\n", 3,
     "needs exactly one of"),
    ("volumes:\n  - name: Data!\n    match: {serial: a}\n    mount: /d\n", 2, "volumes[0].name"),
    ("volumes:\n  - name: d\n    match: {serial: a}\n    mount: /d\n    size: big\n", 5, "size: must be an integer"),
    ("volumes:\n  - name: d\n    match: {serial: a}\n    mount: /d\n    encrypted: 1\n", 5,
     "encrypted: must be true or false"),
    ("volumes:\n  - name: d\n    match: {serial: a}\n    mount: /d\n  - name: d\n    match: {serial: b}\n"
     "    mount: /e\n", 5, "name used twice"),
    ("ephemeral:\n  mount: /srv/x\nvolumes:\n  - name: d\n    match: {serial: a}\n    mount: /srv/x/\n", 6,
     "mountpoint /srv/x is already used by ephemeral"),
    ("ephemeral:\n  mount: /a\n  devices: [/dev/loop1]\nvolumes:\n  - name: d\n    match: {device: /dev/loop1}\n"
     "    mount: /b\n", 6, "device /dev/loop1 is already used by ephemeral"),
    ("volumes: {name: d}\n", 1, "volumes: must be a list"),
    ("disks: {}\n", 1, "disks: unknown key 'disks'"),
    ("- ephemeral\n", 1, "must be a mapping"),
    ("ephemeral:\n  mount: /a\n   bad: indent\n", 3, "invalid YAML"),
]


@pytest.mark.parametrize("text,line,fragment", BAD, ids=[b[2][:40] for b in BAD])
def test_bad_config_is_one_line_with_file_and_line(text, line, fragment):
    with pytest.raises(ConfigError) as exc:
        parse(text)
    msg = str(exc.value)
    assert "\n" not in msg
    assert msg.startswith(f"disks.yaml:{line}: "), msg
    assert fragment in msg
