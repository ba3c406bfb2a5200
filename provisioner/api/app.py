"""The API server assembled: the route table over an Engine, listening where asked."""
from __future__ import annotations

from . import containers, execs, images, networks, streams, system, volumes
from .engine import Engine
from .server import DEFAULT_SOCKET, Router, Server


def router() -> Router:
    r = Router()
    for mod in (system, containers, streams, execs, images, volumes, networks):
        mod.register(r)
    return r


def make_server(root, runner, *, socket_path: str | None = DEFAULT_SOCKET, socket_gid: int = 0,
                tls_listen: str | None = None, tlscacert: str | None = None, tlscert: str | None = None,
                tlskey: str | None = None, manager=None) -> Server:
    """A server for the host under `root`, listening (not yet serving: start())."""
    srv = Server(router(), Engine(root, runner, manager=manager))
    if socket_path:
        srv.listen_unix(socket_path, gid=socket_gid)
    if tls_listen:
        srv.listen_tls(tls_listen, cacert=tlscacert, cert=tlscert, key=tlskey)
    return srv
