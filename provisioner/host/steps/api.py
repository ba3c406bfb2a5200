"""The Docker Engine API service (`provision host api`, provisioner/api/) on every host, and the
`docker system dial-stdio` entry point the docker CLI's ssh transport runs (DOCKER_HOST=ssh://).

- with systemd: `provisioner-api.service` (Restart=always; RequiresMountsFor=<root>), enabled and
  restarted when its unit changed or it is not active;
- without: started by the step itself (`--daemon`, a flock on /run/provisioner/api.pid).
The socket is /run/provisioner/docker.sock, 0660 root:root: whoever can open it is root here.

`docker system dial-stdio` is run by the remote user's shell, so it needs a `docker` on PATH. A
host with a docker CLI of its own keeps it untouched (and its dial-stdio reaches whatever
DOCKER_HOST says); a host without one gets /usr/local/bin/docker, a wrapper that does only
`system dial-stdio` (to provisioner's socket, through `sudo -n` when the caller may not write to
it) and otherwise hands over to a docker later on PATH or says there is none. A wrapper found
there is rewritten only if it is ours.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from . import Outcome, StepContext, describe
from .agent import RemoveFile, Systemctl, running_pid
from .files import WriteFile, plan_file, write

UNIT = "provisioner-api.service"
UNIT_PATH = f"/etc/systemd/system/{UNIT}"
PID_FILE = "/run/provisioner/api.pid"
SOCKET = "/run/provisioner/docker.sock"
WRAPPER = "/usr/local/bin/docker"
MARK = "# provisioner: docker system dial-stdio for the Engine API"
PATH_DIRS = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")


def unit_text(python: str, root: Path) -> str:
    return ("# Managed by provisioner (provision host boot).\n"
            "[Unit]\n"
            "Description=provisioner: the Docker Engine API for this host's containers\n"
            "After=local-fs.target\n"
            f"RequiresMountsFor={root}\n"
            "\n[Service]\n"
            "Type=simple\n"
            f"ExecStart={python} -m provisioner.cli.main --root {root} host api --socket {SOCKET}\n"
            "Restart=always\n"
            "RestartSec=2\n"
            "\n[Install]\n"
            "WantedBy=multi-user.target\n")


def wrapper_text(python: str, socket: str = SOCKET) -> str:
    """The wrapper. `system dial-stdio` dials the socket named by --host/-H unix://, else DOCKER_HOST,
    else provisioner's; a caller who cannot write to it (not root, not in the API's --group, or not
    even able to see it in /run/provisioner) goes through `sudo -n` — the login an ssh:// DOCKER_HOST
    names is usually one with passwordless sudo (the cloud images' default user) — and sudo's own
    refusal ("a password is required") is what the docker CLI shows otherwise. sudo drops the
    environment, so the socket is passed as --host."""
    return f"""#!/bin/sh
{MARK}
# (installed by `provision host boot` where no docker CLI was, removed by it once one is; any
# other command goes to a docker later on PATH)
case " $* " in
  *" system dial-stdio "*)
    host=${{DOCKER_HOST:-unix://{socket}}}
    next=
    for a in "$@"; do
      if [ -n "$next" ]; then host=$a; next=; continue; fi
      case "$a" in
        -H|--host) next=1 ;;
        --host=*) host=${{a#--host=}} ;;
      esac
    done
    case "$host" in
      unix://*)
        sock=${{host#unix://}}
        if [ "$(id -u)" != 0 ] && ! [ -w "$sock" ]; then
          exec sudo -n {python} -m provisioner.api.dialstdio "--host=$host" "$@"
        fi ;;
    esac
    exec {python} -m provisioner.api.dialstdio "$@" ;;
esac
self=$(readlink -f "$0")
IFS=:
for d in $PATH; do
  if [ -x "$d/docker" ] && [ "$(readlink -f "$d/docker")" != "$self" ]; then exec "$d/docker" "$@"; fi
done
echo "docker: no docker CLI on this host; provisioner serves the Engine API on {socket}" \\
     "(this wrapper only runs 'docker system dial-stdio', for DOCKER_HOST=ssh://)" >&2
exit 127
"""


def _ours(p: Path) -> bool:
    try:
        with open(p, "rb") as f:
            return MARK.encode() in f.read(4096)
    except OSError:
        return False


def _other_docker(ctx: StepContext) -> str | None:
    """A docker binary on the system PATH that is not our wrapper."""
    for d in PATH_DIRS:
        p = ctx.path(d) / "docker"
        if p.exists() and os.access(p, os.X_OK) and not _ours(p):
            return d + "/docker"
    return None


def plan(ctx: StepContext) -> tuple:
    actions: list = []
    wrapper = ctx.path(WRAPPER)
    if _other_docker(ctx) is None:
        w = plan_file(wrapper, wrapper_text(ctx.python), mode=0o755)
        if w:
            actions.append(w)
    elif _ours(wrapper):
        actions.append(RemoveFile(str(wrapper)))     # a real docker came: ours steps aside
    if ctx.systemd:
        unit = plan_file(ctx.path(UNIT_PATH), unit_text(ctx.python, ctx.root))
        enabled = ctx.runner.run(["systemctl", "is-enabled", UNIT], check=False).stdout.strip() == "enabled"
        active = ctx.runner.run(["systemctl", "is-active", UNIT], check=False).stdout.strip() == "active"
        if unit:
            actions += [unit, Systemctl(("daemon-reload",))]
        if unit or not enabled:
            actions.append(Systemctl(("enable", "--no-reload", UNIT)))
        if unit or not active:
            actions.append(Systemctl(("restart", UNIT)))
        return tuple(actions)
    pid = running_pid(ctx.path(PID_FILE))
    if pid is None:
        actions.append(StartApi((ctx.python, "-m", "provisioner.cli.main", "--root", str(ctx.root), "host", "api",
                                 "--socket", str(ctx.path(SOCKET)), "--daemon", "--pid-file",
                                 str(ctx.path(PID_FILE)))))
    return tuple(actions)


@dataclass(frozen=True)
class StartApi:
    """Start the API server (no systemd)."""

    argv: tuple[str, ...]

    def describe(self) -> str:
        return "start the Engine API server: " + " ".join(self.argv)


def apply(ctx: StepContext, actions) -> None:
    for a in actions:
        if isinstance(a, WriteFile):
            write(a)
        elif isinstance(a, Systemctl):
            ctx.runner.run(["systemctl", *a.args])
        elif isinstance(a, StartApi):
            ctx.runner.run(list(a.argv), timeout=60)
        elif isinstance(a, RemoveFile):
            Path(a.path).unlink(missing_ok=True)


def run(ctx: StepContext, dry_run: bool = False) -> Outcome:
    actions = plan(ctx)
    if not dry_run:
        apply(ctx, actions)
    how = f"{UNIT} active" if ctx.systemd else f"running (pid file {PID_FILE})"
    other = _other_docker(ctx)
    dial = f"dial-stdio through the host's own {other}" if other else f"dial-stdio through {WRAPPER}"
    return Outcome(describe(actions), f"Engine API on unix://{SOCKET}, {how}; {dial}")
