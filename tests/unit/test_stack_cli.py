"""`provision up/down/ps`: the thin CLI (dry-run plans, one-line errors, nothing created)."""
from __future__ import annotations

import json

import pytest
import subprocess
import sys

from click.testing import CliRunner

from provisioner.cli.main import cli

STACK = """\
name: demo
services:
  a:
    image: busybox
    healthcheck: {test: "true"}
  b:
    image: busybox
    depends_on: {a: {condition: service_healthy}}
"""


def test_dry_run_prints_the_plan_and_touches_nothing(tmp_path):
    (tmp_path / "s.yml").write_text(STACK)
    root = tmp_path / "root"
    r = CliRunner().invoke(cli, ["--root", str(root), "up", "--dry-run", "-f", str(tmp_path / "s.yml")])
    assert r.exit_code == 0, r.output
    assert r.output.splitlines() == ["create a", "create b"]
    r = CliRunner().invoke(cli, ["--root", str(root), "--json", "up", "--dry-run", "-f", str(tmp_path / "s.yml")])
    assert [(a["action"], a["service"]) for a in json.loads(r.output)] == [("create", "a"), ("create", "b")]
    r = CliRunner().invoke(cli, ["--root", str(root), "ps", "--json", "-f", str(tmp_path / "s.yml")])
    assert [(x["service"], x["container"], x["state"]) for x in json.loads(r.output)] == [
        ("a", "demo-a", "missing"), ("b", "demo-b", "missing")]
    assert not root.exists()


def test_an_invalid_file_is_one_error_line_with_file_and_line(tmp_path):
    path = tmp_path / "s.yml"
    path.write_text(STACK.replace("    image: busybox\n    depends_on", "    image: busybox\n    devices: [/dev/fuse]\n"
                                  "    depends_on"))
    root = tmp_path / "root"
    for cmd in ("up", "down", "ps"):
        proc = subprocess.run([sys.executable, "-m", "provisioner.cli.main", "--root", str(root), cmd, "-f", str(path)],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and proc.stdout == ""
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(
            f"error: {path}:8: services.b: unsupported compose key 'devices' (supported: build, cap_add, cap_drop, "), lines
    assert not root.exists()


BAD = """\
services:
  web:
    image: busybox
    ports: ["80:80"]
"""


@pytest.mark.parametrize("extra, message", [
    ("    devices: [/dev/fuse]\n", "services.web: unsupported compose key 'devices'"),
    ("    cap_add: [NET_WIZARD]\n", "services.web.cap_add: unknown capability 'NET_WIZARD'"),
    ("    logging: {driver: fluentd}\n", "services.web.logging.driver: logging driver 'fluentd' is not available"),
    ("    privileged: true\n", "services.web.privileged: a privileged container has every capability"),
    ("    network_mode: host\n", "services.web.ports: published ports have no meaning with network_mode: host"
                                "|ports:"),
    ("    sysctls: [kernel.panic=1]\n", "services.web.sysctls: sysctl 'kernel.panic' is not namespaced"),
    ("    platform: linux/s390x\n", "services.web: platform linux/s390x is not this host's|image:"),
    ("    deploy: {resources: {reservations: {devices: [{capabilities: [gpu]}]}}}\n",
     "services.web.deploy.resources.reservations.devices: devices (GPUs) cannot be reserved here"),
    ("    image: ${IMG:?set IMG to the image}\n", "required variable IMG is missing a value: set IMG to the image"),
])
def test_each_bad_key_or_value_is_one_line_at_file_line(tmp_path, capsys, monkeypatch, extra, message):
    from provisioner.cli.main import main

    text = BAD.replace("    image: busybox\n", "") if extra.startswith("    image:") else BAD
    text = text.replace('    ports: ["80:80"]\n', '    ports: ["80:80"]\n' + extra)
    path = tmp_path / "compose.yaml"
    path.write_text(text)
    monkeypatch.delenv("IMG", raising=False)
    with pytest.raises(SystemExit) as exc:
        main(["--root", str(tmp_path / "root"), "up", "--dry-run", "-f", str(path)])
    err = capsys.readouterr().err.strip().splitlines()
    message, _, needle = (message or "").partition("|")   # the line named: the added one, or the needle's
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if (needle in ln if needle else ln == extra.rstrip()))
    assert exc.value.code == 2 and len(err) == 1, err
    assert err[0].startswith(f"error: {path}:{line}: ") and message in err[0], err[0]
