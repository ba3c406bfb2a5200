"""`provision launch | status | destroy`: thin layer over provisioner.clouds."""
from __future__ import annotations

import os

import click

from ..clouds import make_driver
from ..clouds.base import CLOUDS, TAG_KEEP, TAG_STACK, plan_launch
from ..clouds.keys import operator_key
from ..clouds.launch import Timeouts, destroy, launch, of_hosts, status_of
from ..clouds.operator import detect_operator_cidr
from ..errors import ConfigError
from ..stack import load_stack
from .app import App, emit, json_option, pass_app, status, table

_CLOUD = click.option("--cloud", "cloud", required=True, metavar="aws|gce|local",
                      help="Which cloud: aws, gce, or local (qemu VMs on this machine, state under --root).")
_ENDPOINT = click.option("--endpoint", metavar="URL", default=None,
                         help="API endpoint override (emulators); env PROVISION_AWS_ENDPOINT / PROVISION_GCE_ENDPOINT.")
_REGION = click.option("--region", default=None, help="AWS region (default: from the stack, AWS_REGION, us-east-1).")
_PROJECT = click.option("--project", default=None, help="GCE project (default: env GOOGLE_CLOUD_PROJECT).")


def _driver(app: App, cloud: str, region: str | None, project: str | None, endpoint: str | None):
    if cloud == "local":
        return make_driver(cloud, root=app.root, runner=app.runner, progress=status)
    region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    return make_driver(cloud, region=region, project=project, endpoint=endpoint)


def _stack_region(stack, cloud: str) -> str | None:
    if cloud != "aws":
        return None
    regions = {h.clouds["aws"].region for h in stack.hosts if "aws" in h.clouds}
    if len(regions) > 1:
        raise ConfigError(f"hosts span several AWS regions ({', '.join(sorted(regions))}); one region per stack",
                          stack.path)
    return regions.pop() if regions else None


@click.command("launch")
@_CLOUD
@click.option("-f", "--file", "stack_file", required=True, type=click.Path(dir_okay=False), help="Stack file.")
@click.option("--ssh-key", type=click.Path(dir_okay=False), default=None,
              help="Operator public key to import (default: a key created per stack in ~/.config/provisioner/keys).")
@click.option("--ssh-cidr", default=None, help="Allow SSH from this range (overrides ssh_cidr in the stack).")
@click.option("--timeout", type=float, default=600.0, show_default=True, help="Seconds to wait for 'running'.")
@click.option("--host-key-timeout", type=float, default=300.0, show_default=True,
              help="Seconds to wait for SSH host keys on the console.")
@click.option("--dry-run", is_flag=True, help="Print the plan; create nothing.")
@_ENDPOINT
@_REGION
@_PROJECT
@json_option
@pass_app
def launch_cmd(app: App, cloud, stack_file, ssh_key, ssh_cidr, timeout, host_key_timeout, dry_run, endpoint,
               region, project):
    """Create the stack's hosts: key, firewall, instances, volumes (all tagged with the stack)."""
    stack = load_stack(stack_file)
    if cloud not in CLOUDS:
        raise ConfigError(f"unknown cloud {cloud!r} (expected one of: {', '.join(CLOUDS)})")
    detected = None
    if cloud != "local" and not ssh_cidr and any(h.ssh_cidr is None for h in stack.hosts):
        detected = detect_operator_cidr(app.runner)
    key = operator_key(stack.name, app.runner, ssh_key)
    if key.private_key:
        status(f"operator key: {key.private_key} ({'created' if key.created else 'existing'})")
    plan = plan_launch(stack, cloud, key.public_key, ssh_cidr=ssh_cidr, detected_cidr=detected)
    for h in plan.hosts:
        status(f"{h.host}: SSH allowed from {plan.ssh_cidr[h.host]} ({plan.ssh_cidr_source[h.host]})")
    if dry_run:
        emit(app, plan, lambda: click.echo(_plan_text(plan)))
        return
    driver = _driver(app, cloud, region or _stack_region(stack, cloud), project, endpoint)
    result = launch(plan, driver, timeouts=Timeouts(running=timeout, host_keys=host_key_timeout), status=status)
    data = {"operator_key": key, **result.to_json()}
    emit(app, data, lambda: click.echo(table(
        [[h.host, h.instance.id, h.instance.extra.get("public_ip") or "-", h.ssh_cidr,
          ", ".join(f"{t} {fp}" for t, fp in (h.host_keys.fingerprints.items() if h.host_keys else [])) or "-"]
         for h in result.hosts], ["HOST", "INSTANCE", "PUBLIC IP", "SSH FROM", "HOST KEYS"])))


def _plan_text(plan) -> str:
    lines = [f"stack {plan.stack} on {plan.cloud}: key pair {plan.key_name}"]
    for h in plan.hosts:
        s = h.settings
        lines.append(f"  {h.host}: {s.instance_type} {s.image} in {s.zone or s.region}"
                     f"{' (spot/preemptible, on-demand fallback)' if s.spot else ''}")
        lines.extend(f"    allow {r}" for r in h.rules)
        lines.extend(f"    volume {v.name}: {v.size_gb} GiB {v.type or 'default'}"
                     f"{' encrypted' if v.encrypted else ''}{' keep' if v.keep else ''} as {v.device}"
                     for v in h.volumes)
    return "\n".join(lines)


@click.command("status")
@click.argument("stack", required=False)
@_CLOUD
@_ENDPOINT
@_REGION
@_PROJECT
@json_option
@pass_app
def status_cmd(app: App, stack, cloud, endpoint, region, project):
    """What the cloud's tags say exists for STACK (or every stack)."""
    driver = _driver(app, cloud, region, project, endpoint)
    found = status_of(driver, stack)
    key = TAG_STACK[cloud]
    emit(app, {"cloud": cloud, "stack": stack, "resources": found}, lambda: click.echo(table(
        [[r.extra.get("tags", {}).get(key, stack or "-"), r.host or "-", r.kind, r.name, r.id, r.state or "-"]
         for r in found], ["STACK", "HOST", "KIND", "NAME", "ID", "STATE"]) if found else f"no resources for "
        f"{'stack ' + stack if stack else 'any stack'} on {cloud}"))


@click.command("destroy")
@click.argument("stack")
@_CLOUD
@click.option("--keep-volumes", is_flag=True, help="Keep every volume (volumes with keep: true are always kept).")
@click.option("--host", "hosts", multiple=True, metavar="NAME",
              help="Only this host's instance, firewall and volumes (repeatable); the rest of the stack stays.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@_ENDPOINT
@_REGION
@_PROJECT
@json_option
@pass_app
def destroy_cmd(app: App, stack, cloud, keep_volumes, hosts, yes, endpoint, region, project):
    """Remove the instances, firewalls, key pair and volumes tagged with STACK, and nothing else."""
    driver = _driver(app, cloud, region, project, endpoint)
    if not yes:
        found = status_of(driver, stack)
        if not found:
            emit(app, {"removed": [], "kept": []}, f"nothing tagged with stack {stack} on {cloud}")
            return
        keep_tag = TAG_KEEP[cloud]

        mine = of_hosts(found, tuple(hosts), cloud, stack)   # an unknown --host fails before the prompt

        def fate(r):
            if r not in mine:
                return "stay"
            keep = r.kind == "volume" and (keep_volumes or r.extra.get("tags", {}).get(keep_tag) == "true")
            return "keep" if keep else "remove"
        click.echo(table([[r.host or "-", r.kind, r.name, r.id, fate(r)] for r in found],
                         ["HOST", "KIND", "NAME", "ID", "ACTION"]), err=True)
        whose = f"host(s) {', '.join(hosts)} of stack {stack}" if hosts else f"stack {stack}"
        click.confirm(f"destroy these resources of {whose}?", abort=True, err=True)
    removed, kept = destroy(driver, stack, keep_volumes=keep_volumes, status=status, hosts=tuple(hosts))
    from ..deploy import inventory

    for host in hosts or (None,):
        inventory.forget(app.root, stack, host)
    emit(app, {"removed": removed, "kept": kept},
         f"removed {len(removed)} resource(s)" + (f"; kept {len(kept)} volume(s): " +
                                                  ", ".join(f"{v.name} ({v.id})" for v in kept) if kept else ""))


def register(cli: click.Group) -> None:
    cli.add_command(launch_cmd)
    cli.add_command(status_cmd)
    cli.add_command(destroy_cmd)
