"""`provision deploy --cloud aws|gce|local -f stack.yml`: thin layer over provisioner.deploy."""
from __future__ import annotations

from pathlib import Path

import click

from ..clouds.launch import Timeouts
from ..clouds.operator import detect_operator_cidr
from ..errors import HostError
from .app import App, emit, json_option, pass_app, status, table
from .cloud import _ENDPOINT, _PROJECT, _REGION, _driver, _stack_region


@click.command("deploy")
@click.option("--cloud", "cloud", default="local", show_default=True, metavar="aws|gce|local",
              help="Where the hosts run: aws, gce, or local (qemu VMs on this machine).")
@click.option("-f", "--file", "stack_file", required=True, type=click.Path(dir_okay=False), help="Stack file.")
@click.option("-i", "--identity", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Operator private key (its .pub is installed); default: a key made per stack.")
@click.option("--user", default=None, help="SSH user (default: local debian, aws admin (Debian AMIs), gce provisioner).")
@click.option("--images", "images", type=click.Choice(["pull", "push"]), default="pull", show_default=True,
              help="pull: each host pulls from the registries (credentials for exactly those delivered over SSH); "
                   "push: images go from here to the hosts over SSH (air-gapped hosts).")
@click.option("--insecure-registry", "insecure", multiple=True, metavar="HOST[:PORT]",
              help="Registry reached over plain HTTP (loopback registries are allowed anyway).")
@click.option("--timeout", type=float, default=600.0, show_default=True,
              help="Seconds to wait for each host to boot (host keys on its console) and for SSH.")
@click.option("-p", "--project-name", "project_name", default=None, metavar="NAME",
              help="The stack's name (default: COMPOSE_PROJECT_NAME, the file's name:, its folder's name).")
@click.option("--env-file", "env_files", multiple=True, type=click.Path(dir_okay=False), metavar="FILE",
              help="Interpolate from FILE instead of the .env beside the stack file.")
@click.option("--allow-privileged", is_flag=True, help="Run services with privileged: true (else refused).")
@click.option("--ssh-cidr", default=None,
              help="Allow SSH from this range, in the cloud firewall and the host's own (overrides ssh_cidr in the "
                   "stack; default: the stack's, else this machine's address).")
@click.option("--dry-run", is_flag=True,
              help="Print what would change on each host (per service: create, recreate and why, remove) and stop: "
                   "nothing is launched, delivered or restarted.")
@_ENDPOINT
@_REGION
@_PROJECT
@json_option
@pass_app
def deploy_cmd(app: App, cloud, stack_file, identity, user, images, insecure, timeout, project_name, env_files,
               allow_privileged, ssh_cidr, dry_run, endpoint, region, project):
    """Launch (or reuse) the stack's hosts, install the agent, prepare disks and host, push images,
    start the services, check their health, and print where the time went."""
    from ..clouds.keys import operator_key, read_public_key
    from ..deploy.pipeline import Deployer, breakdown_rows
    from ..deploy.plan import plan_deploy
    from ..stack import load_stack
    from ..stack.project import ProjectOptions

    stack = load_stack(stack_file, project=ProjectOptions(name=project_name, env_files=tuple(env_files)),
                       allow_privileged=allow_privileged)
    for n in stack.notices:
        status(f"notice: {n}")
    plan = plan_deploy(stack, cloud)   # every input error, before anything is created
    detected = None
    if cloud != "local" and not ssh_cidr and any(h.ssh_cidr is None for h in plan.stack.hosts):
        detected = detect_operator_cidr(app.runner)
    if identity is not None:
        public, private = read_public_key(f"{identity}.pub"), identity
    else:
        key = operator_key(plan.stack.name, app.runner)
        public, private = key.public_key, key.private_key
    driver = _driver(app, cloud, region or _stack_region(plan.stack, cloud), project, endpoint)
    deployer = Deployer(plan, driver, root=app.root, runner=app.runner, public_key=public, private_key=private,
                        user=user, insecure_registries=tuple(insecure), images=images,
                        timeouts=Timeouts(running=timeout, host_keys=timeout), ssh_timeout=timeout,
                        progress=status, ssh_cidr=ssh_cidr, detected_cidr=detected, dry_run=dry_run)
    result = deployer.run()

    def plan() -> None:
        rows = [[h.host, c.service, c.action, "; ".join(c.why)] for h in result.hosts for c in h.changes]
        rows += [[h.host, "-", "none", "unchanged since the last deploy"] for h in result.hosts if h.unchanged]
        click.echo(table(rows, ["HOST", "SERVICE", "CHANGE", "WHY"]) if rows else "nothing to change")
        for h in result.hosts:
            if h.error:
                click.echo(f"{h.host}: FAILED: {h.error}")

    def human() -> None:
        hosts = [h.host for h in result.hosts]
        click.echo(f"stack {result.stack} on {result.cloud}: where the time went")
        click.echo(table(breakdown_rows(result), ["PHASE", *hosts]))
        for h in result.hosts:
            for port, where in sorted(h.endpoints.items()):
                scheme = "http://" if port in ("80/tcp", "8080/tcp", "8000/tcp") else ""
                click.echo(f"{h.host}: {port} -> {scheme}{where}")
            if h.error:
                click.echo(f"{h.host}: FAILED: {h.error}")

    emit(app, result, plan if dry_run else human)
    failed = [h for h in result.hosts if h.error]
    if failed:
        raise HostError("deploy failed on " + "; ".join(f"{h.host} ({h.error})" for h in failed))


def register(cli: click.Group) -> None:
    cli.add_command(deploy_cmd)
