"""`provision ssh | logs | snapshot`: reach a deployed host by name (thin over provisioner.deploy)."""
from __future__ import annotations

import os
import shutil
import sys

import click

from ..clouds import make_driver
from ..deploy import inventory, ops, ops_cloud
from ..deploy.ops_snapshot import apply_snapshot, plan_snapshot
from ..errors import ConfigError, HostError
from ..remote.ssh import SshClient
from .app import App, emit, json_option, pass_app, status, table

_ENDPOINT = click.option("--endpoint", metavar="URL", default=None,
                         help="Cloud API endpoint override (emulators); env PROVISION_AWS_ENDPOINT / "
                              "PROVISION_GCE_ENDPOINT.")
_REGION = click.option("--region", default=None, help="AWS region (default: the host's in the stack, AWS_REGION).")
_PROJECT = click.option("--project", default=None, help="GCE project (default: env GOOGLE_CLOUD_PROJECT).")


def _driver(cloud: str, region: str | None, project: str | None, endpoint: str | None, stack=None, host=None):
    if cloud == "aws" and not region:
        if stack is not None and host is not None:
            settings = next((h.clouds.get("aws") for h in stack.hosts if h.name == host), None)
            region = settings.region if settings else None
        region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    return make_driver(cloud, region=region, project=project, endpoint=endpoint)


def _connect(app: App, host: str):
    rec = inventory.find(app.root, host)
    return rec, SshClient(rec.target()).connect()


def _out():
    return sys.stdout.buffer, sys.stderr.buffer


# -- ssh -------------------------------------------------------------------------------------------
@click.command("ssh", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("host")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@pass_app
def ssh_cmd(app: App, host: str, command: tuple[str, ...]) -> None:
    """Run COMMAND on HOST (`provision ssh web -- df -h`), or open a shell without one.

    The host key is checked against the fingerprints the console reported, never trusted on first
    use. Like ssh, the words of COMMAND are joined by spaces for the remote shell; the exit status
    is the command's.
    """
    if command and command[0] == "--":
        command = command[1:]
    if command:
        rec, client = _connect(app, host)
        with client:
            out, err = _out()
            stdin = None if sys.stdin.isatty() else sys.stdin.buffer
            rc = client.stream(["sh", "-c", ops.ssh_command(command)], stdout=out, stderr=err, stdin=stdin)
        raise click.exceptions.Exit(rc)
    rec = inventory.find(app.root, host)
    if shutil.which("ssh") is None:
        raise HostError("no OpenSSH client (ssh) on this machine for an interactive session; "
                        f"run commands with: provision ssh {host} -- COMMAND")
    raise click.exceptions.Exit(SshClient(rec.target()).interactive())


# -- logs ------------------------------------------------------------------------------------------
@click.command("logs")
@click.argument("target", metavar="HOST|STACK")
@click.argument("service", required=False)
@click.option("--cloud", metavar="aws|gce|local", default=None,
              help="Read the whole stack TARGET on this cloud: every host's services merged in time order.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new output (Ctrl-C stops).")
@click.option("-n", "--tail", type=int, default=None, help="Only the last N lines (of each service).")
@click.option("-t", "--timestamps", is_flag=True, help="Prefix each line with its time.")
@click.option("--since", metavar="TIME", help="Only lines since TIME: 2026-01-02T13:23:37Z, a date, Unix seconds, "
              "or a duration back from now (10m).")
@pass_app
def logs_cmd(app: App, target: str, service: str | None, cloud: str | None, follow: bool, tail: int | None,
             timestamps: bool, since: str | None) -> None:
    """Print the output of SERVICE's container on HOST, as it comes; or, with --cloud, the logs of
    every host and service of stack TARGET (or of one SERVICE) merged in time order, each line
    prefixed with host/service."""
    if cloud is not None:
        raise click.exceptions.Exit(_stack_logs(app, target, service, cloud, follow, tail, timestamps, since))
    if service is None:
        raise ConfigError(f"name a service of {target} (provision logs HOST SERVICE), or read a whole stack with "
                          f"--cloud: provision logs STACK [SERVICE] --cloud C")
    rec, client = _connect(app, target)
    with client:
        stack = ops.load_record_stack(rec, client)
        name = ops.service_container(rec, stack, service, client)
        argv = ops.logs_argv(name, follow=follow, tail=tail, timestamps=timestamps, since=since)
        out, err = _out()
        try:
            rc = client.stream(argv, stdout=out, stderr=err, sudo=True, pty=follow)
        except KeyboardInterrupt:
            rc = 0  # closing the channel hangs up the remote `logs -f`
    raise click.exceptions.Exit(rc)


def _stack_logs(app: App, stack_name: str, service, cloud, follow, tail, timestamps, since) -> int:
    from concurrent.futures import ThreadPoolExecutor

    from ..deploy import ops_logs

    records = [r for r in inventory.records(app.root, stack_name) if r.cloud == cloud] if "/" not in stack_name else []
    if not records:
        known = ", ".join(sorted({f"{r.stack} ({r.cloud})" for r in inventory.records(app.root)})) or "none"
        raise HostError(f"no stack {stack_name!r} deployed on the {cloud} cloud (deployed stacks: {known})")
    with ThreadPoolExecutor(max_workers=len(records)) as pool:
        clients = dict(zip((r.host for r in records),
                           pool.map(lambda r: SshClient(r.target()).connect(), records)))
    try:
        stack = ops.load_record_stack(records[0], clients[records[0].host])
        with ThreadPoolExecutor(max_workers=len(records)) as pool:
            running = dict(zip((r.host for r in records),
                               pool.map(lambda r: ops.host_containers(clients[r.host], r), records)))
        wanted = ops_logs.streams(stack, records, service, running)
        width = max(len(s.prefix) for s in wanted)

        def emit(ev) -> None:
            sys.stdout.write(ops_logs.format_line(ev, width, timestamps))
            sys.stdout.flush()
        try:
            problems = ops_logs.read(clients, wanted, follow=follow, tail=tail, since=since, emit=emit)
        except KeyboardInterrupt:
            return 0   # closing the channels hangs up the remote `logs -f`
    finally:
        for c in clients.values():
            c.close()
    for p in problems:
        status(f"warning: {p}")
    return 1 if problems else 0


# -- snapshot --------------------------------------------------------------------------------------
class _SnapshotGroup(click.Group):
    """`snapshot HOST VOLUME` takes one; `snapshot list|restore|delete …` are subcommands."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["create", *args]
        return super().parse_args(ctx, args)


@click.group("snapshot", cls=_SnapshotGroup)
def snapshot_group() -> None:
    """Snapshots of a host's volume: `snapshot HOST VOLUME [--name N]` (btrfs on the host, plus an
    EBS/PD snapshot on AWS/GCE), `snapshot list STACK --cloud C`, `snapshot restore ID --cloud C`,
    `snapshot delete ID --cloud C`."""


@snapshot_group.command("create")
@click.argument("host")
@click.argument("volume")
@click.option("--name", help="Snapshot name (default: UTC timestamp).")
@click.option("--freeze-limit", type=float, default=120.0, show_default=True,
              help="A watchdog on the host thaws the filesystem after this many seconds, whatever happens.")
@click.option("--dry-run", is_flag=True, help="Print the steps; do nothing.")
@_ENDPOINT
@_REGION
@_PROJECT
@json_option
@pass_app
def snapshot_create(app: App, host, volume, name, freeze_limit, dry_run, endpoint, region, project) -> None:
    """Snapshot VOLUME (a name from the host's disks config) of HOST."""
    rec, client = _connect(app, host)
    with client:
        stack = ops.load_record_stack(rec, client)
        plan = plan_snapshot(rec, ops.volume_target(rec, stack, volume), name, freeze_limit=freeze_limit)
        if dry_run:
            emit(app, plan, lambda: click.echo("\n".join(f"{i:2}. {s}" for i, s in enumerate(plan.steps(), 1))))
            return
        take = None
        if plan.cloud_snapshot:
            driver = _driver(rec.cloud, region, project, endpoint, stack, rec.host)
            take = ops_cloud.cloud_snapshotter(driver, rec, plan.volume, plan.name)
        status(f"{rec.name}: snapshot {plan.name} of {plan.volume.name} ({plan.volume.mount})")
        result = apply_snapshot(plan, client, take)

    def human() -> None:
        click.echo(f"btrfs snapshot {plan.name}: {result.btrfs_path} on {rec.name}")
        if result.cloud is not None:
            click.echo(f"{rec.cloud} snapshot {result.cloud.id} of {plan.volume.cloud_id} ({result.cloud.state}); "
                       f"filesystem frozen {result.frozen_seconds:.2f}s")
        for n in result.notes:
            click.echo(f"note: {n}")
    emit(app, result, human)


@snapshot_group.command("list")
@click.argument("stack", required=False)
@click.option("--cloud", required=True, metavar="aws|gce")
@_ENDPOINT
@_REGION
@_PROJECT
@json_option
@pass_app
def snapshot_list(app: App, stack, cloud, endpoint, region, project) -> None:
    """The cloud snapshots of STACK's volumes (every stack's without STACK)."""
    snaps = ops_cloud.list_snapshots(_driver(cloud, region, project, endpoint), stack)
    emit(app, snaps, lambda: click.echo(table(
        [[s.id, s.name, s.host or "-", s.extra["tags"].get("provisioner:volume") or
          s.extra["tags"].get("provisioner-volume") or "-", s.extra.get("volume_id") or "-", s.state or "-",
          s.extra.get("started") or "-"] for s in snaps],
        ["SNAPSHOT", "NAME", "HOST", "VOLUME", "FROM", "STATE", "STARTED"]) if snaps else "no snapshots"))


@snapshot_group.command("restore")
@click.argument("snapshot_id")
@click.option("--cloud", required=True, metavar="aws|gce")
@click.option("--stack", default=None, help="Only look among this stack's snapshots.")
@click.option("--zone", default=None, help="Zone for the new volume (default: where the volume was).")
@click.option("--replace", is_flag=True, help="Delete the (detached) volume it replaces once it exists.")
@_ENDPOINT
@_REGION
@_PROJECT
@json_option
@pass_app
def snapshot_restore(app: App, snapshot_id, cloud, stack, zone, replace, endpoint, region, project) -> None:
    """A new volume from SNAPSHOT_ID, tagged as the volume it was taken from: the next
    `provision launch`/`deploy` of the stack reattaches it."""
    new, removed = ops_cloud.restore(_driver(cloud, region, project, endpoint), snapshot_id, stack=stack, zone=zone,
                                     replace=replace, status=status)
    emit(app, {"volume": new, "removed": removed},
         f"restored {snapshot_id} as volume {new.id} in {new.extra['zone']}" +
         (f"; deleted {', '.join(r.id for r in removed)}" if removed else ""))


@snapshot_group.command("delete")
@click.argument("snapshot_id")
@click.option("--cloud", required=True, metavar="aws|gce")
@_ENDPOINT
@_REGION
@_PROJECT
@json_option
@pass_app
def snapshot_delete(app: App, snapshot_id, cloud, endpoint, region, project) -> None:
    """Delete cloud snapshot SNAPSHOT_ID."""
    ops_cloud.delete_snapshot(_driver(cloud, region, project, endpoint), snapshot_id)
    emit(app, {"deleted": snapshot_id}, f"deleted snapshot {snapshot_id}")


def register(cli: click.Group) -> None:
    cli.add_command(ssh_cmd)
    cli.add_command(logs_cmd)
    cli.add_command(snapshot_group)
