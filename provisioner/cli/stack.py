"""`provision up|down|ps -f stack.yml`: a stack's services on this host, thin over compose.engine."""
from __future__ import annotations

import json
import re
from pathlib import Path

import click

from ..errors import ConfigError
from .app import App, emit, json_option, pass_app, status, table

_host = click.option("--host", "host", default=None, metavar="NAME",
                     help="Only the services the stack's hosts: section places on host NAME (what deploy runs).")
DEFAULT_FILES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml", "stack.yml")


def _project(f):
    """-f, -p, --env-file, --profile: which file, and the project's name and environment (compose's)."""
    f = click.option("--profile", "profiles", multiple=True, metavar="NAME",
                     help="Also run the services of this profile (as COMPOSE_PROFILES).")(f)
    f = click.option("--env-file", "env_files", multiple=True, type=click.Path(dir_okay=False), metavar="FILE",
                     help="Interpolate from FILE instead of the .env beside the stack file.")(f)
    f = click.option("-p", "--project-name", "project_name", default=None, metavar="NAME",
                     help="The project's name (default: COMPOSE_PROJECT_NAME, the file's name:, its folder's name).")(f)
    return click.option("-f", "--file", "path", default=None, type=click.Path(dir_okay=False),
                        help=f"The stack (compose) file (default: the first of {', '.join(DEFAULT_FILES)} here).")(f)


def _path(path: str | None) -> str:
    if path is not None:
        return path
    from pathlib import Path

    found = next((n for n in DEFAULT_FILES if Path(n).is_file()), None)
    if found is None:
        raise click.UsageError(f"no stack file here (looked for {', '.join(DEFAULT_FILES)}); give one with -f")
    return found


def _load(app: App, path: str | None, host: str | None = None, *, project_name=None, env_files=(), profiles=(),
          allow_privileged: bool = False):
    from ..compose.engine import Stacks
    from ..containers.lifecycle import Manager
    from ..stack import load_stack
    from ..stack.placement import for_host
    from ..stack.project import ProjectOptions

    opts = ProjectOptions(name=project_name, env_files=tuple(env_files), profiles=tuple(profiles))
    # the whole file is checked before anything is touched; with --host (what deploy runs on a host), as
    # deploy read it: a file without hosts: is then one host, "main"
    stack = load_stack(_path(path), hosts_required=host is not None, project=opts, allow_privileged=allow_privileged)
    for n in stack.notices:
        status(f"notice: {n}")
    if host is not None:
        stack = for_host(stack, host)
    return stack, Stacks(Manager(app.root, app.runner), progress=status)


def _pins(path: str) -> dict[str, str]:
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"--pins: cannot read {path} ({exc.strerror})") from None
    except ValueError as exc:
        raise ConfigError(f"--pins: {path} is not JSON ({exc})") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) and
                                             re.fullmatch(r"sha256:[0-9a-f]{64}", v) for k, v in data.items()):
        raise ConfigError(f"--pins: {path} must map image references to sha256:… digests")
    return data


@click.command("up")
@_project
@_host
@click.option("--dry-run", is_flag=True, help="Print the plan and change nothing.")
@click.option("--allow-privileged", is_flag=True, help="Run services with privileged: true (else refused).")
@click.option("--insecure-registry", "insecure", multiple=True, metavar="HOST[:PORT]")
@click.option("--pins", "pins_file", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="JSON {image reference: manifest digest}: run exactly these digests (deploy writes it).")
@click.option("--by", default="up", hidden=True, help="What the release record says made it (deploy).")
@json_option
@pass_app
def up_cmd(app: App, path: str | None, project_name, env_files, profiles, host: str | None, dry_run: bool,
           allow_privileged: bool, insecure, pins_file: str | None, by: str) -> None:
    """Create or update the stack's services in dependency order and wait for their health."""
    from ..compose.plan import describe

    stack, stacks = _load(app, path, host, project_name=project_name, env_files=env_files, profiles=profiles,
                          allow_privileged=allow_privileged)
    stacks.insecure_registries = tuple(insecure)
    pins = _pins(pins_file) if pins_file else {}
    actions = stacks.plan(stack, pins) if dry_run else stacks.up(stack, pins=pins, by=by)
    switched = {} if dry_run else stacks.switched
    emit(app, [{"action": type(a).__name__.lower(), "service": a.service, "text": describe(a),
                **({"switch": switched[a.service]} if a.service in switched else {})} for a in actions],
         lambda: click.echo("\n".join(describe(a) for a in actions) if actions else f"{stack.name}: up to date"))


@click.command("down")
@_project
@_host
@click.option("-v", "--volumes", is_flag=True, help="Also remove the stack's named volumes.")
@pass_app
def down_cmd(app: App, path: str | None, project_name, env_files, profiles, host: str | None, volumes: bool) -> None:
    """Remove every container of the stack (anonymous volumes too; named ones with -v) and its networks."""
    stack, stacks = _load(app, path, host, project_name=project_name, env_files=env_files, profiles=profiles,
                          allow_privileged=True)
    for cname in stacks.down(stack, remove_volumes=volumes):
        click.echo(cname)


@click.command("ps")
@_project
@_host
@json_option
@pass_app
def ps_cmd(app: App, path: str | None, project_name, env_files, profiles, host: str | None) -> None:
    """List the stack's services with their state and health."""
    stack, stacks = _load(app, path, host, project_name=project_name, env_files=env_files, profiles=profiles,
                          allow_privileged=True)
    rows = stacks.ps(stack)
    emit(app, rows, lambda: click.echo(table(
        [[r["service"], r["container"], r["state"], r["health"] if r["health"] != "none" else "",
          ", ".join(r["ports"])] for r in rows], ["SERVICE", "CONTAINER", "STATE", "HEALTH", "PORTS"])))


def register(cli: click.Group) -> None:
    cli.add_command(up_cmd)
    cli.add_command(down_cmd)
    cli.add_command(ps_cmd)
