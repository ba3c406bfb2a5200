"""Time sync where missing: if no sync daemon is active (systemd-timesyncd, chrony, ntpd,
openntpd), enable systemd-timesyncd when systemd runs and the unit is installed; otherwise skip
with the reason. With systemd the daemons are asked through `systemctl is-active`; without it,
the process table (<sysroot>/proc/*/comm) is read.
"""
from __future__ import annotations

from dataclasses import dataclass

from . import Outcome, Skip, StepContext, read_text

UNITS = ("systemd-timesyncd.service", "chrony.service", "chronyd.service", "ntp.service", "ntpsec.service",
         "ntpd.service", "openntpd.service")
PROCESSES = {"systemd-timesyn", "chronyd", "ntpd", "openntpd"}  # comm is cut at 15 characters
TIMESYNCD = "systemd-timesyncd.service"


@dataclass(frozen=True)
class Facts:
    systemd: bool
    active: tuple[str, ...]           # units or processes doing time sync now
    timesyncd_installed: bool


@dataclass(frozen=True)
class EnableTimesyncd:
    def describe(self) -> str:
        return f"systemctl enable --now {TIMESYNCD}"


def _processes(ctx: StepContext) -> tuple[str, ...]:
    found = set()
    proc = ctx.path("/proc")
    if not proc.is_dir():
        return ()
    for d in proc.iterdir():
        if d.name.isdigit():
            try:
                comm = (read_text(d / "comm") or "").strip()
            except OSError:  # the process exited while we looked
                continue
            if comm in PROCESSES:
                found.add(comm)
    return tuple(sorted(found))


def facts(ctx: StepContext) -> Facts:
    if not ctx.systemd:
        return Facts(False, _processes(ctx), False)
    res = ctx.runner.run(["systemctl", "is-active", *UNITS], check=False)
    states = res.stdout.split()
    active = tuple(u for u, s in zip(UNITS, states) if s == "active")
    # `systemctl cat` exits 0 only when the unit file exists (enabled or not, even masked -> 1).
    installed = ctx.runner.run(["systemctl", "cat", TIMESYNCD], check=False).returncode == 0
    return Facts(True, active, installed)


def plan(f: Facts) -> tuple:
    if f.active:
        return ()
    if not f.systemd:
        raise Skip("no time sync daemon running and no systemd to enable systemd-timesyncd")
    if not f.timesyncd_installed:
        raise Skip("no time sync daemon active and systemd-timesyncd is not installed")
    return (EnableTimesyncd(),)


def run(ctx: StepContext, dry_run: bool = False) -> Outcome:
    f = facts(ctx)
    actions = plan(f)
    if not dry_run:
        for _ in actions:
            ctx.runner.run(["systemctl", "enable", "--now", TIMESYNCD])
    if f.active:
        return Outcome((), f"already synced by {', '.join(f.active)}")
    return Outcome(tuple(a.describe() for a in actions), "systemd-timesyncd enabled")
