"""Logs that cannot fill the disk: journald size caps (a drop-in, where systemd runs; journald is
restarted only when the drop-in changed) and a logrotate rule for provisioner's own logs
(<root>/logs/*.log). Container logs are rotated by the supervisor itself (see
containers/supervise.py), so they are not listed here.
"""
from __future__ import annotations

from dataclasses import dataclass

from . import Outcome, StepContext, describe
from .files import WriteFile, plan_file, write

JOURNALD_DROPIN = "/etc/systemd/journald.conf.d/60-provisioner.conf"
LOGROTATE_RULE = "/etc/logrotate.d/provisioner"
JOURNALD = ("[Journal]\n"
            "# Managed by provisioner (provision host boot).\n"
            "SystemMaxUse=500M\n"
            "SystemKeepFree=1G\n"
            "RuntimeMaxUse=100M\n"
            "MaxRetentionSec=1month\n")


@dataclass(frozen=True)
class RestartJournald:
    def describe(self) -> str:
        return "systemctl restart systemd-journald"


def logrotate_rule(root) -> str:
    # copytruncate: the writers (boot hook, CLI) append with O_APPEND and may hold the file open.
    return (f"# Managed by provisioner (provision host boot).\n"
            f"{root}/logs/*.log {{\n"
            "    weekly\n    maxsize 50M\n    rotate 4\n    compress\n    delaycompress\n"
            "    missingok\n    notifempty\n    copytruncate\n    su root root\n}\n")


def plan(ctx: StepContext) -> tuple:
    actions: list = []
    rule = plan_file(ctx.path(LOGROTATE_RULE), logrotate_rule(ctx.root))
    if rule:
        actions.append(rule)
    if ctx.systemd:
        dropin = plan_file(ctx.path(JOURNALD_DROPIN), JOURNALD)
        if dropin:
            actions += [dropin, RestartJournald()]
    return tuple(actions)


def run(ctx: StepContext, dry_run: bool = False) -> Outcome:
    actions = plan(ctx)
    if not dry_run:
        for a in actions:
            if isinstance(a, WriteFile):
                write(a)
            else:
                ctx.runner.run(["systemctl", "restart", "systemd-journald"])
    notes = []
    if not ctx.systemd:
        notes.append("no systemd: journald caps not needed")
    if ctx.runner.which("logrotate") is None:
        notes.append("logrotate is not installed: the rule waits for it")
    return Outcome(describe(actions), "; ".join(notes) or "journald capped, logrotate rule in place")
