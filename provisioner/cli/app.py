"""Shared CLI state and output helpers: the global options and how a result is printed."""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import click

from ..runner import Runner

DEFAULT_ROOT = "/var/lib/provisioner"


@dataclass
class App:
    root: Path = Path(DEFAULT_ROOT)
    verbose: int = 0
    json: bool = False
    runner: Runner = field(default_factory=Runner)


pass_app = click.make_pass_decorator(App, ensure=True)


def _set_json(ctx: click.Context, _param, value: bool):
    if value:
        ctx.ensure_object(App).json = True
    return value


def json_option(f: Callable) -> Callable:
    """`--json` on a command (same effect as the global `provision --json`)."""
    return click.option(
        "--json", "json_", is_flag=True, expose_value=False, callback=_set_json,
        help="Print the result as JSON.",
    )(f)


def _default(o: Any):
    if hasattr(o, "to_json"):
        return o.to_json()
    if hasattr(o, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(o)
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def dumps(data: Any) -> str:
    return json.dumps(data, indent=2, default=_default, sort_keys=False)


def emit(app: App, data: Any, human: Callable[[], None] | str | None = None) -> None:
    """Print `data` as JSON under --json, else call/print the human form."""
    if app.json:
        click.echo(dumps(data))
    elif callable(human):
        human()
    elif human is not None:
        click.echo(human)
    else:
        click.echo(dumps(data))


def table(rows: list[list[str]], headers: list[str]) -> str:
    """A plain aligned text table."""
    cells = [headers] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    return "\n".join(lines)


def status(msg: str) -> None:
    """Progress and status lines go to stderr so stdout stays parseable."""
    click.echo(msg, err=True)


def is_tty() -> bool:
    return sys.stderr.isatty()
