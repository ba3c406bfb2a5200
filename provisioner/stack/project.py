"""A compose project's environment and name, decided as docker compose decides them.

Environment (what ${VAR} sees): the `.env` file beside the compose file — or the files given with
`--env-file`, later ones winning — overridden by the environment of the command. On a deployed
host, `.provision.env` beside the stack file (written by `provision deploy`: every variable the
file used, as the operator's machine resolved it, and the project's name) stands in for the
environment: the host's own (root's, the boot hook's) is not consulted, so the host interpolates
the file exactly as the operator's machine did.

Name, first found of: `-p/--project-name`, COMPOSE_PROJECT_NAME (environment or .env), the
file's top-level `name:`, the name of the folder holding the file normalised as compose does
(lower-cased, every character but a-z 0-9 _ - dropped, leading _ and - dropped). A name given
(the first three) must already be valid: a lowercase letter or digit, then those and _ -.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from ..errors import StackError
from . import dotenv

PROJECT_RE = re.compile(r"[a-z0-9][a-z0-9_-]*")
DEPLOYED_ENV = ".provision.env"
PROJECT_HINT = "lowercase letters, digits, '_' and '-', starting with a letter or digit"


@dataclass(frozen=True)
class ProjectOptions:
    """What the command line says about the project (`-p`, `--env-file`) and the environment."""

    name: str | None = None
    env_files: tuple[str, ...] = ()
    environ: Mapping[str, str] | None = None       # None: os.environ
    profiles: tuple[str, ...] = ()


@dataclass
class ProjectEnv:
    values: dict[str, str]                      # what ${VAR} resolves against
    env_files: tuple[str, ...] = ()             # the .env files read (absolute)
    used: dict[str, str] = field(default_factory=dict)   # every variable the file looked up and found

    def get(self, name: str) -> str | None:
        v = self.values.get(name)
        if v is not None:
            self.used[name] = v
        return v


def environment(path: str, opts: ProjectOptions) -> ProjectEnv:
    environ = dict(os.environ if opts.environ is None else opts.environ)
    deployed = os.path.join(os.path.dirname(os.path.abspath(path)), DEPLOYED_ENV)
    if os.path.isfile(deployed):
        environ = dotenv.read(deployed)
    if opts.env_files:
        files = [os.path.abspath(f) for f in opts.env_files]
        for f in files:
            if not os.path.isfile(f):
                raise StackError("env file given with --env-file not found", f)
    else:
        beside = os.path.join(os.path.dirname(os.path.abspath(path)), ".env")
        files = [beside] if os.path.isfile(beside) else []
    merged: dict[str, str] = {}
    for f in files:
        merged.update(dotenv.read(f, lambda k: merged.get(k, environ.get(k))))
    merged.update(environ)   # the command's environment wins over .env, as in compose
    return ProjectEnv(merged, tuple(files))


def render(values: Mapping[str, str]) -> str:
    """Variables as a .env file that parses back to exactly these values (double-quoted, escaped)."""
    def quote(v: str) -> str:
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$").replace("\n", "\\n") + '"'
    return "".join(f"{k}={quote(v)}\n" for k, v in sorted(values.items()))


def normalise(text: str) -> str:
    """compose-go's NormalizeProjectName."""
    return re.sub(r"[^a-z0-9_-]", "", text.lower()).lstrip("_-")


def project_name(path: str, doc: Mapping, env: ProjectEnv, opts: ProjectOptions, line_of_name) -> str:
    """`doc` is the interpolated top level (its `name:` already resolved)."""
    for given, where in ((opts.name, "-p/--project-name"), (env.values.get("COMPOSE_PROJECT_NAME"),
                                                             "COMPOSE_PROJECT_NAME")):
        if given:
            if not PROJECT_RE.fullmatch(given):
                raise StackError(f"project name {given!r} from {where} is not valid ({PROJECT_HINT})", path)
            return given
    name = doc.get("name")
    if name is not None:
        if not isinstance(name, str) or not PROJECT_RE.fullmatch(name):
            raise StackError(f"name: {name!r} is not a valid project name ({PROJECT_HINT})", path, line_of_name)
        return name
    folder = Path(os.path.abspath(path)).parent.name
    derived = normalise(folder)
    if not derived:
        raise StackError(f"no project name: the file has no 'name:' and its folder's name {folder!r} has no "
                         "usable character; give one with -p NAME or COMPOSE_PROJECT_NAME", path)
    return derived
