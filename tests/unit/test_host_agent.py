"""The agent boot step (systemd unit, or the step starting the agent itself) and the agent process
(on loopback, in a temp root): started, scraped, restarted on a new config, stopped."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from provisioner.host.config import HostConfig
from provisioner.host.steps import StepContext
from provisioner.host.steps import agent as step
from provisioner.runner import Result, Runner
from provisioner.stack import LoggingSpec, MetricsSpec
from provisioner.testing import FakeRunner

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ctx_for(tmp_path, runner, systemd=False, **cfg) -> StepContext:
    sysroot = tmp_path / "sys"
    (sysroot / "etc").mkdir(parents=True, exist_ok=True)
    if systemd:
        (sysroot / "run/systemd/system").mkdir(parents=True, exist_ok=True)
    return StepContext(config=HostConfig(host="web1", stack="shop", **cfg), runner=runner, root=tmp_path / "root",
                       sysroot=sysroot, python=sys.executable)


def test_nothing_configured_is_skipped(tmp_path):
    out = step.run(ctx_for(tmp_path, FakeRunner()))
    assert out.skipped and out.changes == () and out.message == "no metrics or logging configured"


def test_with_systemd_the_unit_is_installed_then_restarted_only_on_change(tmp_path):
    runner = FakeRunner()
    state = {"enabled": "disabled", "active": "inactive"}
    runner.expect(["systemctl", "is-enabled", step.UNIT], handler=lambda a: Result(a, 1, state["enabled"], ""))
    runner.expect(["systemctl", "is-active", step.UNIT], handler=lambda a: Result(a, 3, state["active"], ""))
    runner.expect(["systemctl"], prefix=True)
    ctx = ctx_for(tmp_path, runner, systemd=True, metrics=MetricsSpec(port=9100, allow_from="10.0.0.0/8"),
                  logging=LoggingSpec("tcp", "logs", 514))
    out = step.run(ctx)
    assert [c for c in runner.commands("systemctl") if "is-" not in c[1]] == [
        ("systemctl", "enable", "--no-reload", step.UNIT), ("systemctl", "daemon-reload"),
        ("systemctl", "restart", step.UNIT)]
    unit = ctx.path(step.UNIT_PATH).read_text()
    assert f"ExecStart={sys.executable} -m provisioner.host.agent --config {step.CONFIG_PATH}" in unit
    assert f"RequiresMountsFor={ctx.root}" in unit and "Restart=always" in unit
    conf = ctx.path(step.CONFIG_PATH)
    assert conf.stat().st_mode & 0o777 == 0o600
    cfg = json.loads(conf.read_text())
    assert cfg["metrics"]["port"] == 9100 and cfg["logging"] == {"scheme": "tcp", "host": "logs", "port": 514,
                                                                   "buffer_bytes": 64 << 20, "ca": None}
    assert cfg["boot_result"] == str(ctx.root / "host/boot-result.json") and cfg["host"] == "web1"
    assert "metrics on :9100" in out.message and "logs to tcp://logs:514" in out.message
    state.update(enabled="enabled", active="active")
    runner.calls.clear()
    assert step.run(ctx).changes == ()                        # converged
    ctx.config = HostConfig(host="web1", stack="shop", metrics=MetricsSpec(port=9273))
    assert step.run(ctx).changes == (f"write {conf} (600)", f"systemctl restart {step.UNIT}")
    ctx.config = HostConfig(host="web1", stack="shop")        # both keys gone: stop and remove
    out = step.run(ctx)
    assert out.changes == (f"systemctl disable --now {step.UNIT}", f"remove {ctx.path(step.UNIT_PATH)}",
                           "systemctl daemon-reload", f"remove {conf}")
    assert not conf.exists() and not ctx.path(step.UNIT_PATH).exists()


@pytest.fixture
def agents():
    """pids of agents a test started: stopped at the end whatever happened."""
    pids: list[Path] = []
    yield pids
    for pid_file in pids:
        pid = step.running_pid(pid_file)
        if pid is not None:
            step.stop_agent(pid, pid_file)


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return r.read().decode()


def test_without_systemd_the_step_runs_the_agent_itself(tmp_path, agents, monkeypatch):
    """The real agent process, on loopback ports of this test, in a temp root."""
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    port = free_port()
    ctx = ctx_for(tmp_path, Runner(), metrics=MetricsSpec(port=port),
                  logging=LoggingSpec("tcp", "127.0.0.1", free_port(), buffer_bytes=1 << 20))
    pid_file = ctx.path(step.PID_FILE)
    agents.append(pid_file)
    out = step.run(ctx)
    assert [c.split(":")[0] for c in out.changes] == [f"write {ctx.path(step.CONFIG_PATH)} (600)", "start the agent"]
    first = step.running_pid(pid_file)
    assert first is not None and "running (pid file /run/provisioner/agent.pid)" in out.message
    text = scrape(port)
    assert "node_load1 " in text and "process_resident_memory_bytes " in text
    assert "provisioner_logship_connected 0" in text and "provisioner_logship_buffer_limit_bytes 1048576" in text
    assert (ctx.root / "logship").stat().st_mode & 0o777 == 0o700
    assert step.run(ctx).changes == () and step.running_pid(pid_file) == first    # converged: left running
    port2 = free_port()
    ctx.config = HostConfig(host="web1", stack="shop", metrics=MetricsSpec(port=port2))
    out = step.run(ctx)
    assert out.changes[:2] == (f"write {ctx.path(step.CONFIG_PATH)} (600)", f"stop the agent (pid {first})")
    assert len(out.changes) == 3 and out.changes[2].startswith("start the agent: ")
    second = step.running_pid(pid_file)
    assert second not in (None, first) and "provisioner_logship" not in scrape(port2)
    ctx.config = HostConfig(host="web1", stack="shop")
    assert step.run(ctx).changes == (f"stop the agent (pid {second})", f"remove {ctx.path(step.CONFIG_PATH)}")
    assert step.running_pid(pid_file) is None


def test_the_agent_says_why_it_cannot_start(tmp_path):
    busy = socket.socket()
    busy.bind(("0.0.0.0", 0))
    busy.listen()
    try:
        conf = tmp_path / "agent.json"
        conf.write_text(json.dumps({"host": "h", "root": str(tmp_path / "root"), "logging": None,
                                    "metrics": {"port": busy.getsockname()[1], "graphite": None}}))
        p = subprocess.run([sys.executable, "-m", "provisioner.host.agent", "--config", str(conf), "--daemon",
                            "--pid-file", str(tmp_path / "agent.pid")], capture_output=True, text=True, timeout=60,
                           cwd=REPO)
        assert p.returncode == 1 and "cannot start" in p.stderr and "Address already in use" in p.stderr
    finally:
        busy.close()
