"""`docker system dial-stdio` for provisioner's API: this process's stdin and stdout joined to the
Engine API socket, which is what the docker CLI's ssh transport (DOCKER_HOST=ssh://user@host)
runs on the far side of its ssh connection, and what `provision docker-env` runs over its own
verified SSH session for each client connection.

Run as `python3 -m provisioner.api.dialstdio [--host=unix://PATH] [system dial-stdio]`: the host's
`docker` wrapper (host/steps/api.py installs it only where no docker binary is) passes the docker
CLI's own arguments through. Standard library only, so it starts fast.
"""
from __future__ import annotations

import os
import select
import socket
import sys

DEFAULT_SOCKET = "/run/provisioner/docker.sock"


def socket_path(argv: list[str], env: dict) -> str:
    """Where to connect: --host/-H unix://PATH among the arguments, else DOCKER_HOST (unix://), else
    provisioner's socket."""
    host = None
    args = list(argv)
    while args:
        a = args.pop(0)
        if a.startswith("--host="):
            host = a.split("=", 1)[1]
        elif a in ("-H", "--host") and args:
            host = args.pop(0)
    host = host or env.get("DOCKER_HOST") or f"unix://{DEFAULT_SOCKET}"
    if not host.startswith("unix://"):
        raise SystemExit(f"dial-stdio: only unix:// sockets can be dialled here (got {host})")
    return host[len("unix://"):]


def pump(sock: socket.socket, rfd: int = 0, wfd: int = 1) -> None:
    """Copies rfd → sock and sock → wfd until the socket side ends; the end of our input is passed on
    as a half-close (the server then finishes its answer)."""
    inputs = [sock, rfd]
    while True:
        ready, _, _ = select.select(inputs, [], [])
        if sock in ready:
            data = sock.recv(65536)
            if not data:
                return
            view = memoryview(data)
            while view:
                view = view[os.write(wfd, view):]
        if rfd in ready:
            data = os.read(rfd, 65536)
            if data:
                sock.sendall(data)
            else:
                inputs.remove(rfd)
                try:
                    sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    path = socket_path(argv, dict(os.environ))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError as exc:
        print(f"dial-stdio: cannot connect to the Engine API at {path}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    try:
        pump(sock)
    except (BrokenPipeError, ConnectionResetError):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
