"""`provision host api` (the Docker Engine API server on this host) and `provision host dial-stdio`
(`docker system dial-stdio`'s job, for DOCKER_HOST=ssh://)."""
from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

import click

from ..errors import ConfigError
from .app import App, pass_app, status

DEFAULT_SOCKET = "/run/provisioner/docker.sock"


@click.command("api")
@click.option("--socket", "socket_path", default=DEFAULT_SOCKET, show_default=True, metavar="PATH",
              help="The unix socket to serve (0660, root's group unless --group).")
@click.option("--group", "group", default=None, metavar="GROUP",
              help="Group owning the socket (its members get root-equivalent access).")
@click.option("--tls-listen", metavar="HOST:PORT", help="Also serve TCP, TLS with client certificates only.")
@click.option("--tlscacert", type=click.Path(dir_okay=False), help="CA that signs the client certificates.")
@click.option("--tlscert", type=click.Path(dir_okay=False), help="The server's certificate.")
@click.option("--tlskey", type=click.Path(dir_okay=False), help="The server's key.")
@click.option("--daemon", is_flag=True, help="Detach once serving (without systemd); needs --pid-file.")
@click.option("--pid-file", type=click.Path(dir_okay=False, path_type=Path), help="Held with a flock while serving.")
@pass_app
def api_cmd(app: App, socket_path, group, tls_listen, tlscacert, tlscert, tlskey, daemon, pid_file) -> None:
    """Serve the Docker Engine API (1.41) for this host's containers: the docker CLI, docker-compose
    and docker-py work against it. Whoever can open the socket is root on this host."""
    from ..host.agent import daemonize, hold_pid_file

    if tls_listen and not (tlscacert and tlscert and tlskey):
        raise ConfigError("--tls-listen needs --tlscacert, --tlscert and --tlskey: TCP is served only with TLS "
                          "and client certificates")
    if (tlscacert or tlscert or tlskey) and not tls_listen:
        raise ConfigError("--tlscacert/--tlscert/--tlskey without --tls-listen: say where to listen")
    if daemon and not pid_file:
        raise ConfigError("--daemon needs --pid-file")
    gid = 0
    if group:
        import grp

        try:
            gid = grp.getgrnam(group).gr_gid if not group.isdigit() else int(group)
        except KeyError:
            raise ConfigError(f"--group {group!r}: no such group") from None
    report = daemonize() if daemon else None
    try:
        lock = hold_pid_file(pid_file) if pid_file else None
        from ..api.app import make_server

        srv = make_server(app.root, app.runner, socket_path=socket_path, socket_gid=gid, tls_listen=tls_listen,
                          tlscacert=tlscacert, tlscert=tlscert, tlskey=tlskey)
        srv.start()
    except (OSError, SystemExit, ConfigError) as exc:
        if report is not None:
            os.write(report, (f"provision host api: {exc}\n").encode())
            os._exit(1)
        raise
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if report is not None:
        os.write(report, b"ok")
        os.close(report)
    else:
        status(f"serving the Docker Engine API on unix://{socket_path}"
               + (f" and tcp://{tls_listen} (TLS)" if tls_listen else ""))
    while not stop.wait(3600):
        pass
    srv.close()
    if lock is not None:
        os.close(lock)


@click.command("dial-stdio", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def dial_stdio_cmd(args) -> None:
    """Join stdin/stdout to the API socket (what `docker system dial-stdio` does)."""
    from ..api.dialstdio import main

    sys.exit(main(list(args)))


def register(cli: click.Group) -> None:
    host = cli.commands["host"]
    host.add_command(api_cmd)
    host.add_command(dial_stdio_cmd)
