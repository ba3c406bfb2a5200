"""`provision docker-env HOST`: the host's Engine API on a unix socket of this machine, forwarded over
the verified SSH session (the host key pinned from the console, as every `provision` command
reaches a host), like `docker-machine env` — `eval $(provision docker-env shop/web)` and the docker
CLI, docker-compose or docker-py work on that host.

Each connection to the local socket is one SSH session channel running `provision host dial-stdio`
on the host as root (what `docker system dial-stdio` does for the docker CLI's own ssh transport):
its stdin and stdout are the host's /run/provisioner/docker.sock. The forwarder runs in the
background (a flock on its pid file while it lives; its log beside the socket) until
`provision docker-env --stop HOST`. A dropped SSH session (the host rebooted) is made again, verified
the same way, for the next client connection.
"""
from __future__ import annotations

import fcntl
import logging
import os
import select
import signal
import socket
import sys
import threading
import time
from pathlib import Path

from ..errors import HostError
from ..fsutil import pidfile_holder
from .hostkeys import Target
from .ssh import SshClient

log = logging.getLogger("provisioner.docker-env")
REMOTE = ("sudo", "-n", "provision", "host", "dial-stdio")


def socket_dir() -> Path:
    """Short (a unix socket path is at most 107 bytes) and this user's alone."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    d = Path(base) / "provision" if base else Path(f"/tmp/provision-{os.getuid()}")
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    if d.stat().st_uid != os.getuid() or d.stat().st_mode & 0o077:
        raise HostError(f"{d} is not this user's own private directory; not putting a root-equivalent socket there")
    return d


def paths(stack: str, host: str) -> tuple[Path, Path]:
    d = socket_dir()
    return d / f"docker-{stack}-{host}.sock", d / f"docker-{stack}-{host}.pid"


def answering(sock_path: Path) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(str(sock_path))
        return True
    except OSError:
        return False
    finally:
        s.close()


class Forwarder:
    """Accepts on `sock_path`; each connection is a `provision host dial-stdio` channel on `client`."""

    def __init__(self, client: SshClient, sock_path: Path, remote: tuple[str, ...] = REMOTE):
        self.client, self.sock_path, self.remote = client, Path(sock_path), remote
        self.stop = threading.Event()
        self._connect_lock = threading.Lock()
        self.sock_path.unlink(missing_ok=True)
        old = os.umask(0o177)
        try:
            self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.listener.bind(str(self.sock_path))
        finally:
            os.umask(old)
        self.listener.listen(32)

    def _channel(self):
        with self._connect_lock:
            try:
                chan = self.client.open_session()
            except HostError:
                self.client.close()        # the session dropped (host rebooted, network): once more
                self.client.connect()
                chan = self.client.open_session()
        chan.exec_command(SshClient.command_line(self.remote))
        return chan

    def _pump(self, conn: socket.socket) -> None:
        try:
            chan = self._channel()
        except Exception as exc:   # noqa: BLE001 — one client's failure; the forwarder goes on
            log.warning("docker-env: cannot reach the host: %s", exc)
            conn.close()
            return
        try:
            inputs = [conn, chan]
            while inputs:
                r, _, _ = select.select(inputs, [], [], 1.0)
                if self.stop.is_set():
                    break
                if chan in r:
                    if chan.recv_stderr_ready():
                        err = chan.recv_stderr(65536)
                        if err:
                            log.warning("docker-env: host says: %s", err.decode(errors="replace").strip())
                    if chan.recv_ready():
                        data = chan.recv(65536)   # (readable for stderr alone, recv() would block)
                        if data:
                            conn.sendall(data)
                    elif chan.eof_received or chan.closed:
                        break
                if conn in r:
                    data = conn.recv(65536)
                    if data:
                        chan.sendall(data)
                    else:
                        chan.shutdown_write()     # the client's half-close, passed on
                        inputs.remove(conn)
        except OSError:
            pass
        finally:
            chan.close()
            conn.close()

    def serve(self) -> None:
        while not self.stop.is_set():
            r, _, _ = select.select([self.listener], [], [], 0.5)
            if r:
                conn, _ = self.listener.accept()
                threading.Thread(target=self._pump, args=(conn,), daemon=True, name="docker-env").start()

    def close(self) -> None:
        self.stop.set()
        self.listener.close()
        self.sock_path.unlink(missing_ok=True)
        self.client.close()


# -- the background forwarder ------------------------------------------------------------------------
PROBE = ("sudo", "-n", "test", "-S", "/run/provisioner/docker.sock")


def start(target: Target, stack: str, host: str, *, remote: tuple[str, ...] = REMOTE,
          probe: tuple[str, ...] | None = PROBE, connect_timeout: float = 20.0) -> Path:
    """The local socket forwarding to `host`'s Engine API: the one already serving, else a new
    forwarder in the background (it reports back once the SSH session is verified, the host's API
    socket found and the local socket listening; any failure before that is raised here)."""
    sock, pid_file = paths(stack, host)
    if pidfile_holder(pid_file) is not None and answering(sock):
        return sock
    log_file = sock.with_suffix(".log")
    r, w = os.pipe()
    pid = os.fork()
    if pid:
        os.close(w)
        with os.fdopen(r, "rb") as f:
            msg = f.read().decode(errors="replace")
        os.waitpid(pid, 0)
        if msg != "ok":
            raise HostError(msg.strip() or f"docker-env: the forwarder for {stack}/{host} exited while starting "
                                           f"(see {log_file})")
        return sock
    # the child: detach, then serve until SIGTERM (paramiko's threads are made after the fork)
    os.close(r)
    code = 1
    try:
        os.setsid()
        if os.fork():
            os._exit(0)
        fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, force=True,
                            format="%(asctime)s %(levelname)s %(message)s")
        code = _serve(target, sock, pid_file, remote, probe, connect_timeout, w)
    except BaseException as exc:   # noqa: BLE001 — the detached child's boundary: report, never return
        try:
            os.write(w, f"docker-env: {exc}".encode())
        except OSError:
            pass
    finally:
        os._exit(code)


def _serve(target: Target, sock: Path, pid_file: Path, remote, probe, connect_timeout: float, report: int) -> int:
    lock = os.open(pid_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise HostError(f"another forwarder holds {pid_file}") from None
    os.ftruncate(lock, 0)
    os.pwrite(lock, f"{os.getpid()}\n".encode(), 0)
    try:
        client = SshClient(target).connect(timeout=connect_timeout)
        if probe is not None and client.run(list(probe), check=False, timeout=30).returncode != 0:
            client.close()
            raise HostError(f"{target.where} has no Engine API socket at /run/provisioner/docker.sock "
                            "(the boot hook's api step starts it: provision host api)")
        fwd = Forwarder(client, sock, remote)
    except BaseException:
        # gone before the report: whoever reads it finds no forwarder (not one still exiting)
        pid_file.unlink(missing_ok=True)
        os.close(lock)
        raise
    signal.signal(signal.SIGTERM, lambda *_: fwd.stop.set())
    signal.signal(signal.SIGINT, lambda *_: fwd.stop.set())
    os.write(report, b"ok")
    os.close(report)
    log.info("docker-env: unix://%s -> %s", sock, target.where)
    try:
        fwd.serve()
    finally:
        fwd.close()
        pid_file.unlink(missing_ok=True)
    return 0


def stop(stack: str, host: str, timeout: float = 10.0) -> bool:
    """Ends the forwarder for `host` (and removes its socket); False when none was running."""
    sock, pid_file = paths(stack, host)
    pid = pidfile_holder(pid_file)
    if pid is None:
        sock.unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pidfile_holder(pid_file) is not None:
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    sock.unlink(missing_ok=True)
    return True
