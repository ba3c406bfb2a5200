"""The agent service: the metrics endpoint, the Graphite push and log shipping (host/agent.py),
kept running as the host config's `metrics:` and `logging:` ask.

The step writes the agent's config — the resolved settings as JSON, root-only (0600: it names
the collectors), at /etc/provisioner/agent.json — then:

- with systemd: installs `provisioner-agent.service` (Restart=always; RequiresMountsFor=<root>,
  where the agent reads the containers and keeps its log buffer), enables it and restarts it when
  its config or unit changed or it is not active;
- without systemd: starts the agent itself (`--daemon`: it detaches and holds a flock on
  /run/provisioner/agent.pid for its life), after stopping one started from an older config.

Neither key: the agent is stopped and its unit removed (`skipped` when there was none).
"""
from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from ...fsutil import pidfile_holder as running_pid
from . import RESULT_FILE, Outcome, StepContext, describe
from .files import WriteFile, plan_file, write

UNIT = "provisioner-agent.service"
UNIT_PATH = f"/etc/systemd/system/{UNIT}"
CONFIG_PATH = "/etc/provisioner/agent.json"
PID_FILE = "/run/provisioner/agent.pid"
STOP_TIMEOUT = 10.0


def agent_config(ctx: StepContext) -> dict | None:
    """What the agent runs, from the host config (pure); None when it has nothing to do."""
    m, lg = ctx.config.metrics, ctx.config.logging
    if m is None and lg is None:
        return None
    return {"host": ctx.config.host, "stack": ctx.config.stack, "root": str(ctx.root),
            "boot_result": str(ctx.root / RESULT_FILE),
            "metrics": None if m is None else {"port": m.port, "graphite": list(m.graphite) if m.graphite else None,
                                               "interval": m.interval, "prefix": m.prefix},
            "logging": None if lg is None else {"scheme": lg.scheme, "host": lg.host, "port": lg.port,
                                                "buffer_bytes": lg.buffer_bytes, "ca": lg.ca}}


def unit_text(python: str, root: Path, config: str) -> str:
    return ("# Managed by provisioner (provision host boot).\n"
            "[Unit]\n"
            "Description=provisioner agent: metrics endpoint, Graphite push, log shipping\n"
            "Wants=network-online.target\n"
            "After=network-online.target local-fs.target\n"
            f"RequiresMountsFor={root}\n"
            "\n[Service]\n"
            "Type=simple\n"
            f"ExecStart={python} -m provisioner.host.agent --config {config}\n"
            "Restart=always\n"
            "RestartSec=2\n"
            # a guard, well above what it uses (bench/RESULTS.md): a leak restarts it instead of the host suffering
            "MemoryMax=128M\n"
            "\n[Install]\n"
            "WantedBy=multi-user.target\n")


@dataclass(frozen=True)
class Systemctl:
    args: tuple[str, ...]

    def describe(self) -> str:
        return "systemctl " + " ".join(self.args)


@dataclass(frozen=True)
class StopAgent:
    pid: int

    def describe(self) -> str:
        return f"stop the agent (pid {self.pid})"


@dataclass(frozen=True)
class StartAgent:
    argv: tuple[str, ...]

    def describe(self) -> str:
        return "start the agent: " + " ".join(self.argv)


@dataclass(frozen=True)
class RemoveFile:
    path: str

    def describe(self) -> str:
        return f"remove {self.path}"


def _unit_state(ctx: StepContext) -> tuple[bool, bool]:
    enabled = ctx.runner.run(["systemctl", "is-enabled", UNIT], check=False).stdout.strip() == "enabled"
    active = ctx.runner.run(["systemctl", "is-active", UNIT], check=False).stdout.strip() == "active"
    return enabled, active


def plan(ctx: StepContext) -> tuple:
    cfg = agent_config(ctx)
    config_path = ctx.path(CONFIG_PATH)
    if cfg is None:
        return _plan_off(ctx, config_path)
    actions: list = []
    conf = plan_file(config_path, json.dumps(cfg, indent=1, sort_keys=True) + "\n", mode=0o600)
    if conf:
        actions.append(conf)
    if ctx.systemd:
        unit = plan_file(ctx.path(UNIT_PATH), unit_text(ctx.python, ctx.root, CONFIG_PATH))
        enabled, active = _unit_state(ctx)
        if unit:
            actions.append(unit)
        if unit or not enabled:
            actions.append(Systemctl(("enable", "--no-reload", UNIT)))
        if unit:
            actions.append(Systemctl(("daemon-reload",)))
        if unit or conf or not active:
            actions.append(Systemctl(("restart", UNIT)))
        return tuple(actions)
    pid_file = ctx.path(PID_FILE)
    pid = running_pid(pid_file)
    if pid is not None and conf:
        actions.append(StopAgent(pid))
    if pid is None or conf:
        actions.append(StartAgent((ctx.python, "-m", "provisioner.host.agent", "--config", str(config_path),
                                   "--daemon", "--pid-file", str(pid_file))))
    return tuple(actions)


def _plan_off(ctx: StepContext, config_path: Path) -> tuple:
    actions: list = []
    if ctx.systemd and ctx.path(UNIT_PATH).exists():
        actions += [Systemctl(("disable", "--now", UNIT)), RemoveFile(str(ctx.path(UNIT_PATH))),
                    Systemctl(("daemon-reload",))]
    elif not ctx.systemd:
        pid = running_pid(ctx.path(PID_FILE))
        if pid is not None:
            actions.append(StopAgent(pid))
    if config_path.exists():
        actions.append(RemoveFile(str(config_path)))
    return tuple(actions)


def stop_agent(pid: int, pid_file: Path, timeout: float = STOP_TIMEOUT) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while running_pid(pid_file) == pid:
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + timeout
        time.sleep(0.05)


def apply(ctx: StepContext, actions) -> None:
    for a in actions:
        if isinstance(a, WriteFile):
            write(a)
        elif isinstance(a, Systemctl):
            ctx.runner.run(["systemctl", *a.args])
        elif isinstance(a, StopAgent):
            stop_agent(a.pid, ctx.path(PID_FILE))
        elif isinstance(a, StartAgent):
            ctx.runner.run(list(a.argv), timeout=60)
        elif isinstance(a, RemoveFile):
            Path(a.path).unlink(missing_ok=True)


def run(ctx: StepContext, dry_run: bool = False) -> Outcome:
    cfg = agent_config(ctx)
    actions = plan(ctx)
    if not dry_run:
        apply(ctx, actions)
    if cfg is None:
        return Outcome(describe(actions), "no metrics or logging configured", skipped=not actions)
    what = []
    if cfg["metrics"]:
        what.append(f"metrics on :{cfg['metrics']['port']}")
        if cfg["metrics"]["graphite"]:
            what.append("graphite {}:{}".format(*cfg["metrics"]["graphite"]))
    if cfg["logging"]:
        what.append(f"logs to {ctx.config.logging.url}")
    how = f"{UNIT} active" if ctx.systemd else f"running (pid file {PID_FILE})"
    return Outcome(describe(actions), f"{', '.join(what)}; {how}")
