"""`provision`: the root command, global options, and the error boundary."""
from __future__ import annotations

import importlib
import logging
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import click

from .. import __version__
from ..agentlibs import missing_operator_library
from ..errors import ProvisionerError
from .app import DEFAULT_ROOT, App

# Which modules make each top-level command: each module defines `register(cli)` and adds its
# commands (a later module may add subcommands to an earlier one's group). Modules load only when
# their command is used, so `provision host boot` never pays for the registry client's imports.
COMMANDS: dict[str, tuple[str, ...]] = {
    "doctor": ("provisioner.cli.doctor",),
    "host": ("provisioner.cli.host", "provisioner.cli.disks", "provisioner.cli.boot", "provisioner.cli.api"),
    "image": ("provisioner.cli.image", "provisioner.cli.imagebuild", "provisioner.cli.vmimage",
              "provisioner.cli.imagepush"),
    "container": ("provisioner.cli.container",),
    "network": ("provisioner.cli.network",),
    "up": ("provisioner.cli.stack",),
    "down": ("provisioner.cli.stack",),
    "ps": ("provisioner.cli.stack",),
    "releases": ("provisioner.cli.releases",),
    "rollback": ("provisioner.cli.releases",),
    "launch": ("provisioner.cli.cloud",),
    "status": ("provisioner.cli.cloud",),
    "destroy": ("provisioner.cli.cloud",),
    "deploy": ("provisioner.cli.deploy",),
    "ssh": ("provisioner.cli.ops",),
    "logs": ("provisioner.cli.ops",),
    "stats": ("provisioner.cli.observe",),
    "snapshot": ("provisioner.cli.ops",),
    "docker-env": ("provisioner.cli.dockerenv",),
}


class LazyGroup(click.Group):
    """A group that imports a command's modules the first time the command is looked up."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._loaded: set[str] = set()

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(COMMANDS) | set(self.commands))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        for module in COMMANDS.get(name, ()):
            if module not in self._loaded:
                self._loaded.add(module)
                importlib.import_module(module).register(self)
        return self.commands.get(name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="provision")
@click.option(
    "--root", type=click.Path(file_okay=False, path_type=Path), envvar="PROVISION_ROOT",
    default=DEFAULT_ROOT, show_default=True, help="Directory holding all state (env PROVISION_ROOT).",
)
@click.option("-v", "--verbose", count=True, help="More output (-vv for debug logs).")
@click.option("--json", "json_", is_flag=True, help="Print results as JSON.")
@click.pass_context
def cli(ctx: click.Context, root: Path, verbose: int, json_: bool) -> None:
    """Launch VMs on AWS, GCE or local qemu, prepare their disks and run containers."""
    app = ctx.ensure_object(App)
    app.root = root
    app.verbose = verbose
    app.json = app.json or json_
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def _crash_log(exc: BaseException) -> str:
    """Write the traceback of an unexpected error somewhere the user can find it."""
    root = Path(os.environ.get("PROVISION_ROOT", DEFAULT_ROOT)) / "logs"
    text = "".join(traceback.format_exception(exc))
    for directory in (root, Path(tempfile.gettempdir())):
        try:
            directory.mkdir(parents=True, exist_ok=True)
            path = directory / f"provision-crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
            path.write_text(text)
            return str(path)
        except OSError:
            continue
    return "(could not write a log; traceback follows)\n" + text


def main(argv: list[str] | None = None) -> None:
    try:
        rv = cli.main(args=argv, prog_name="provision", standalone_mode=False)
    except ProvisionerError as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(err.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except click.exceptions.Exit as err:
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except ModuleNotFoundError as exc:
        dist = missing_operator_library(exc)
        if dist is None:
            click.echo(f"error: internal error ({type(exc).__name__}: {exc}); details in {_crash_log(exc)}", err=True)
            sys.exit(70)
        # a host's agent is installed without the operator's libraries
        click.echo(f"error: this command runs on the operator's machine: it needs {dist}, which is not installed "
                   "here (a host's agent goes without it)", err=True)
        sys.exit(1)
    except Exception as exc:  # the error boundary: bugs get a log, not a wall of text
        click.echo(f"error: internal error ({type(exc).__name__}: {exc}); details in {_crash_log(exc)}", err=True)
        sys.exit(70)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
