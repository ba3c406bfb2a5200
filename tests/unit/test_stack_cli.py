"""`provision up/down/ps`: the thin CLI (dry-run plans, one-line errors, nothing created)."""
from __future__ import annotations

import json
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
    path.write_text(STACK.replace("    image: busybox\n    depends_on", "    image: busybox\n    cap_add: [ALL]\n"
                                  "    depends_on"))
    root = tmp_path / "root"
    for cmd in ("up", "down", "ps"):
        proc = subprocess.run([sys.executable, "-m", "provisioner.cli.main", "--root", str(root), cmd, "-f", str(path)],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and proc.stdout == ""
        assert proc.stderr.strip().splitlines() == [
            f"error: {path}:8: services.b: unsupported compose key 'cap_add' (supported: cloud_metadata, command, cpus, depends_on, "
            "entrypoint, env_file, environment, healthcheck, hostname, image, links, mem_limit, ports, restart, "
            "security_opt, user, volumes, working_dir)"]
    assert not root.exists()
