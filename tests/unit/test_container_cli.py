"""`provision container …`: the thin CLI over lifecycle.Manager (the manager is a double here)."""
from __future__ import annotations

import json

import pytest

from provisioner.cli import container as container_cli
from provisioner.cli.app import App
from provisioner.cli.main import cli
from provisioner.containers.container import ContainerRecord
from provisioner.containers.lifecycle import Status
from provisioner.containers.supervise import LogLine
from provisioner.testing import FakeRunner


class FakeManager:
    def __init__(self):
        self.calls = []
        self.rec = ContainerRecord("f" * 64, "web", "busybox", "sha256:" + "a" * 64, 0.0, {}, {})
        self.records = self
        self.exit_code = 0

    def find(self, ref):
        return self.rec

    def run(self, req):
        self.calls.append(("run", req))
        return self.rec

    def logs(self, ref, tail=None, follow=False, since=None):
        self.calls.append(("logs", ref, tail, follow) + ((since,) if since else ()))
        return iter([LogLine("2026-01-01T00:00:00.000000000Z", "stdout", "out\n"),
                     LogLine("2026-01-01T00:00:01.000000000Z", "stderr", "err\n")])

    def wait(self, rec):
        return Status("exited", self.exit_code)

    def rm(self, ref, force=False, remove_volumes=False):
        self.calls.append(("rm", ref, force, remove_volumes))

    def stop(self, ref, timeout=None):
        self.calls.append(("stop", ref, timeout))

    def ps(self, all_=False):
        self.calls.append(("ps", all_))
        return [{"id": self.rec.id, "name": "web", "image": "busybox", "command": "httpd -f", "created": 0.0,
                 "status": {"state": "running", "restart_count": 2, "exit_code": None}, "ports": ["8080:80/tcp"]}]


@pytest.fixture
def mgr(monkeypatch):
    m = FakeManager()
    monkeypatch.setattr(container_cli, "_manager", lambda app: m)
    return m


def invoke(args):
    return cli.main(args=args, standalone_mode=False, obj=App(runner=FakeRunner()))


def test_run_parses_docker_flags_and_keeps_the_command_s_own_flags(mgr, capsys, monkeypatch):
    monkeypatch.setenv("FROM_SHELL", "yes")
    invoke(["container", "run", "-d", "--name", "web", "-p", "8080:80", "-p", "53:53/udp", "-v", "data:/d:ro",
            "-e", "A=1", "-e", "FROM_SHELL", "-e", "UNSET_ONE", "--link", "db:database", "--restart", "always",
            "-m", "64m", "--cpus", "0.5", "-u", "app", "-w", "/srv", "--entrypoint", "sh", "-h", "box",
            "busybox", "-c", "echo hi"])
    req = mgr.calls[0][1]
    assert req.image == "busybox" and req.command == ("-c", "echo hi") and req.detach
    assert [str(p) for p in req.ports] == ["8080:80/tcp", "53:53/udp"] and [str(v) for v in req.volumes] == ["data:/d:ro"]
    assert req.env == ("A=1", "FROM_SHELL=yes")           # -e K takes K from the shell; unset: dropped
    assert (req.links, str(req.restart), req.memory, req.cpu_quota) == ((("db", "database"),), "always", 64 << 20,
                                                                         50_000)
    assert (req.user, req.workdir, req.entrypoint, req.hostname) == ("app", "/srv", "sh", "box")
    assert capsys.readouterr().out == "f" * 64 + "\n"


def test_attached_run_prints_both_streams_removes_with_rm_and_exits_with_the_code(mgr, capsys):
    mgr.exit_code = 3
    with pytest.raises(SystemExit) as exc:
        invoke(["container", "run", "--rm", "busybox", "false"])
    assert exc.value.code == 3
    out = capsys.readouterr()
    assert (out.out, out.err) == ("out\n", "err\n")
    assert ("rm", mgr.rec.id, True, True) in mgr.calls


def test_ps_table_and_json(mgr, capsys):
    invoke(["container", "ps", "-a"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["CONTAINER", "ID", "IMAGE"]
    assert "Up (restarted 2x)" in lines[1] and lines[1].endswith("web") and "8080:80/tcp" in lines[1]
    invoke(["container", "ps", "--json"])
    assert json.loads(capsys.readouterr().out)[0]["name"] == "web"
    assert mgr.calls == [("ps", True), ("ps", False)]


def test_logs_since_and_json_lines(mgr, capsys):
    invoke(["container", "logs", "--since", "2026-01-01T00:00:00.5Z", "--json", "web"])
    assert mgr.calls[-1] == ("logs", "web", None, False, "2026-01-01T00:00:00.500000000Z")
    lines = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
    assert lines == [{"log": "out\n", "stream": "stdout", "time": "2026-01-01T00:00:00.000000000Z"},
                     {"log": "err\n", "stream": "stderr", "time": "2026-01-01T00:00:01.000000000Z"}]


def test_since_as_docker_takes_it():
    from provisioner.containers.shimlogs import parse_since
    from provisioner.errors import ConfigError

    now = 1767225600.0   # 2026-01-01T00:00:00Z
    assert parse_since("10m", now) == "2025-12-31T23:50:00.000000000Z"
    assert parse_since("1767225600.25", now) == "2026-01-01T00:00:00.250000000Z"
    assert parse_since("2026-01-01T02:00:00+02:00", now) == "2026-01-01T00:00:00.000000000Z"
    assert parse_since("2026-01-02", now) == "2026-01-02T00:00:00.000000000Z"
    with pytest.raises(ConfigError, match="--since 'yesterday'"):
        parse_since("yesterday", now)


def test_logs_tail_timestamps_and_stop_timeout(mgr, capsys):
    invoke(["container", "logs", "--tail", "5", "-t", "web"])
    out = capsys.readouterr()
    assert out.out == "2026-01-01T00:00:00.000000000Z out\n" and out.err.endswith("err\n")
    assert mgr.calls[-1] == ("logs", "web", 5, False)
    invoke(["container", "stop", "-t", "3", "web", "db"])
    assert mgr.calls[-2:] == [("stop", "web", 3.0), ("stop", "db", 3.0)]
    invoke(["container", "rm", "-f", "-v", "web"])
    assert mgr.calls[-1] == ("rm", "web", True, True)
