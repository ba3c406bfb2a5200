"""Containers with a restart policy come back after a reboot (Docker's daemon-start rule, in
`containers.supervise.restore`: `always`, and `unless-stopped` unless the user stopped it).
The supervisors' state is where the container manager keeps it (<root>/containers/.supervise);
before a container's command starts again, its network endpoint (netns, veth, DNAT rules: all
gone with the reboot) is rebuilt with `network.reconnect`, same address and ports.

Without systemd (this step's test machine, minimal images) the hook calls restore() itself.
With systemd it installs and enables `provisioner-containers.service`, a oneshot unit running
`python -m provisioner.host.restore` (the agent's own interpreter), and starts it: the supervisors then live in that unit's
own cgroup instead of cloud-init's, and on later boots the unit restores the containers early,
before cloud-init runs the hook (which then finds them running and starts nothing).
KillMode=process because the unit's "main process" exits at once while the supervisors it
started must keep running; at shutdown systemd's final SIGTERM reaches them anyway.
RequiresMountsFor=<root>: when the ephemeral filesystem is not there yet (a stopped-and-started
cloud instance gets blank local disks), the unit fails instead of restoring from an empty
directory, and the hook's containers step restarts it once the disks step has mounted <root>.

Restart policies alone do not bring a stack back in order: a service that started before what
it depends on was ready may have used up `on-failure:N`. So when this host runs a deployed stack
(host config `stack_file:`, and the stack was brought up here before), the step then starts
whatever of it is not running, in dependency order, each waiting for the health its dependants
need — start only: creating or recreating is `provision up`'s job (deploy runs it after pushing
the images a changed stack file may need). On the first boot (nothing brought up yet) it does
nothing.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ...containers import cgroupparent, supervise
from . import Outcome, StepContext, describe
from .files import WriteFile, plan_file, write

UNIT = "provisioner-containers.service"
UNIT_PATH = f"/etc/systemd/system/{UNIT}"
STATE_SUBDIR = "containers/.supervise"   # containers.lifecycle.Manager.supervise_dir


def state_dir(ctx: StepContext) -> Path:
    return Path(ctx.config.containers_state_dir or ctx.root / STATE_SUBDIR)


def unit_text(python: str, root: Path, state: Path | None = None) -> str:
    extra = f" --state-dir {state}" if state is not None else ""
    return ("# Managed by provisioner (provision host boot).\n"
            "[Unit]\n"
            "Description=provisioner: restart supervised containers\n"
            "Wants=network-online.target\n"
            "After=network-online.target local-fs.target\n"
            # the store and the supervisors' state are on the ephemeral mount at <root>
            f"RequiresMountsFor={root}\n"
            "\n[Service]\n"
            "Type=oneshot\n"
            "RemainAfterExit=yes\n"
            "KillMode=process\n"
            f"ExecStart={python} -m provisioner.host.restore --root {root}{extra}\n"
            "\n[Install]\n"
            "WantedBy=multi-user.target\n")


@dataclass(frozen=True)
class Systemctl:
    args: tuple[str, ...]

    def describe(self) -> str:
        return "systemctl " + " ".join(self.args)


@dataclass(frozen=True)
class StackUp:
    stack_file: str
    stack: str
    host: str

    def describe(self) -> str:
        return f"start what of stack {self.stack} is not running on {self.host}, in dependency order"


@dataclass(frozen=True)
class Restore:
    state_dir: str

    def describe(self) -> str:
        return f"restore supervised containers from {self.state_dir}"


def _unit_state(ctx: StepContext) -> tuple[bool, bool]:
    enabled = ctx.runner.run(["systemctl", "is-enabled", UNIT], check=False).stdout.strip() == "enabled"
    active = ctx.runner.run(["systemctl", "is-active", UNIT], check=False).stdout.strip() == "active"
    return enabled, active


def _stack_up(ctx: StepContext) -> tuple:
    cfg = ctx.config
    if not (cfg.stack_file and cfg.stack and (Path(ctx.root) / "stacks" / f"{cfg.stack}.json").is_file()):
        return ()
    return (StackUp(cfg.stack_file, cfg.stack, cfg.host),)


def stack_up(root: Path, action: StackUp, runner) -> list[str]:
    from ...compose.engine import Stacks
    from ...compose.plan import describe as describe_action
    from ...containers.lifecycle import Manager
    from ...stack import load_stack
    from ...stack.placement import for_host

    # the file deploy put here: a privileged service in it was allowed by the operator then
    stack = for_host(load_stack(action.stack_file, allow_privileged=True), action.host)
    stacks = Stacks(Manager(root=Path(root), runner=runner))
    return [describe_action(a) for a in stacks.up(stack, start_only=True)]


def plan(ctx: StepContext) -> tuple:
    return _restore_plan(ctx) + _stack_up(ctx)


def _restore_plan(ctx: StepContext) -> tuple:
    if not ctx.systemd:
        return (Restore(str(state_dir(ctx))),)
    actions: list = []
    custom = Path(ctx.config.containers_state_dir) if ctx.config.containers_state_dir else None
    unit = plan_file(ctx.path(UNIT_PATH), unit_text(ctx.python, ctx.root, custom))
    enabled, active = _unit_state(ctx)
    # One daemon-reload, and only for a new unit file (each costs seconds on a small host):
    # `enable` alone would reload too, so it is told not to.
    if unit:
        actions.append(unit)
    if unit or not enabled:
        actions.append(Systemctl(("enable", "--no-reload", UNIT)))
    if unit:
        actions.append(Systemctl(("daemon-reload",)))
    if unit or not active:
        # restart, not start: an active RemainAfterExit unit would make start a no-op
        actions.append(Systemctl(("restart", UNIT)))
    return tuple(actions)


def restore(root: Path, state: Path, runner, cgroup_mount: Path = Path("/sys/fs/cgroup")) -> list[str]:
    """supervise.restore(), reconnecting each container's network endpoint first. A supervised
    command with no container record (or a container without network) just starts. Returns the
    names started (the container's name when it has a record)."""
    if not state.is_dir():
        return []
    from ... import network
    from ...containers.lifecycle import Manager

    mgr = Manager(root=Path(root), runner=runner, cgroup_mount=str(cgroup_mount))
    records = {r.id: r for r in mgr.records.all()}

    def before_start(cid: str) -> None:
        rec = records.get(cid)
        if rec is not None and network.endpoint(mgr.root, rec.name) is not None:
            network.reconnect(mgr.root, mgr.net, rec.name, runner=runner, paths=mgr.net_paths)

    cgroupparent.delegate(mgr.cgroup_parent, mgr.cgroup_mount)   # a reboot emptied the cgroup tree
    started = supervise.restore(state, runner=runner, before_start=before_start)
    # a reboot emptied the tables too: the replicated services' ports point at their ready replicas
    # again (a replica with a healthcheck joins when its supervisor finds it healthy)
    for group in sorted({r.config["balance"] for r in records.values() if r.config.get("balance")}):
        mgr.rebalance(group)
    return [records[c].name if c in records else c for c in started]


def run(ctx: StepContext, dry_run: bool = False) -> Outcome:
    actions = plan(ctx)
    if dry_run:
        return Outcome(tuple(a.describe() for a in actions if not isinstance(a, (Restore, StackUp))),
                       "would restore containers" if actions else "")
    started: list[str] = []
    converged: list[str] = []
    for a in actions:
        if isinstance(a, WriteFile):
            write(a)
        elif isinstance(a, Systemctl):
            ctx.runner.run(["systemctl", *a.args])
        elif isinstance(a, StackUp):
            converged = stack_up(ctx.root, a, ctx.runner)
        else:
            started = restore(ctx.root, Path(a.state_dir), ctx.runner, ctx.path("/sys/fs/cgroup"))
    changes = [d for a, d in zip(actions, describe(actions)) if not isinstance(a, (Restore, StackUp))]
    changes += [f"started {name}" for name in started] + converged
    if ctx.systemd:
        return Outcome(tuple(changes), f"{UNIT} enabled and active")
    return Outcome(tuple(changes), f"{len(started)} container(s) started" if started
                   else "every container with a restart policy is running")
