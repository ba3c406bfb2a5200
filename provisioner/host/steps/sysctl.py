"""Kernel settings containers need: forwarding, bridge netfilter (where br_netfilter is loaded),
map count and inotify limits. Written to /etc/sysctl.d/60-provisioner.conf (so a reboot keeps
them even before the hook runs) and applied with `sysctl -p FILE`.

Limits (`MINIMUMS`) are floors: a host already set higher keeps its value. Keys the kernel lacks
(net.bridge.* without br_netfilter) are left out and named in the message.
"""
from __future__ import annotations

from dataclasses import dataclass

from ...errors import HostError
from . import Outcome, StepContext, describe, read_text
from .files import WriteFile, plan_file, write

CONF = "/etc/sysctl.d/60-provisioner.conf"
EXACT = {
    "net.ipv4.ip_forward": "1",
    "net.ipv6.conf.all.forwarding": "1",
    "net.bridge.bridge-nf-call-iptables": "1",
    "net.bridge.bridge-nf-call-ip6tables": "1",
}
MINIMUMS = {
    "vm.max_map_count": 262144,
    "fs.inotify.max_user_watches": 524288,
    "fs.inotify.max_user_instances": 512,
}


@dataclass(frozen=True)
class Facts:
    live: dict          # key -> current value, only keys the kernel has
    conf: str | None    # the current file, None when missing


@dataclass(frozen=True)
class Apply:
    path: str

    def describe(self) -> str:
        return f"sysctl -p {self.path}"


def desired_keys(ctx: StepContext) -> tuple[dict, dict]:
    """(exact, minimums): tests pass `options['sysctl']` to keep to namespaced keys."""
    override = ctx.options.get("sysctl")
    if override is not None:
        return dict(override), {}
    return {**EXACT, **ctx.config.sysctl}, dict(MINIMUMS)


def facts(ctx: StepContext, keys) -> Facts:
    # Through the runner (not /proc/sys directly) so a runner inside a network namespace reads
    # that namespace's net.* values. -e: keys the kernel lacks are ignored, not errors.
    res = ctx.runner.run(["sysctl", "-e", *sorted(keys)], check=False)
    live = {}
    for line in res.stdout.splitlines():
        k, sep, v = line.partition(" = ")
        if sep:
            live[k.strip()] = " ".join(v.split())
    return Facts(live, read_text(ctx.path(CONF)))


def _norm(v) -> str:
    return " ".join(str(v).split())


def render(values: dict) -> str:
    lines = ["# Managed by provisioner (provision host boot); changes are overwritten at boot.\n"]
    lines += [f"{k} = {v}\n" for k, v in sorted(values.items())]
    return "".join(lines)


def plan(f: Facts, exact: dict, minimums: dict, conf_path) -> tuple[tuple, dict, list[str]]:
    """-> (actions, values written, keys missing from the kernel)."""
    values, missing = {}, []
    for k, v in exact.items():
        if k in f.live:
            values[k] = _norm(v)
        else:
            missing.append(k)
    for k, low in minimums.items():
        if k not in f.live:
            missing.append(k)
            continue
        try:
            values[k] = str(max(int(f.live[k]), low))
        except ValueError:
            values[k] = str(low)
    actions = []
    w = plan_file(conf_path, render(values))
    if w:
        actions.append(w)
    if w or any(f.live.get(k) != v for k, v in values.items()):
        actions.append(Apply(str(conf_path)))
    return tuple(actions), values, sorted(missing)


def run(ctx: StepContext, dry_run: bool = False) -> Outcome:
    exact, minimums = desired_keys(ctx)
    f = facts(ctx, {*exact, *minimums})
    actions, values, missing = plan(f, exact, minimums, ctx.path(CONF))
    wanted = [k for k in missing if k in ctx.config.sysctl]
    if wanted:  # the user asked for these by name: a typo or a missing module, say so
        raise HostError(f"sysctl: {', '.join(wanted)} (from {ctx.config.path}) not in this kernel; nothing applied")
    note = f"not in this kernel: {', '.join(missing)}" if missing else ""
    if not dry_run:
        for a in actions:
            if isinstance(a, WriteFile):
                write(a)
            else:
                ctx.runner.run(["sysctl", "-q", "-p", a.path])
    msg = f"{len(values)} settings" + (f"; {note}" if note else "")
    return Outcome(describe(actions), msg)
