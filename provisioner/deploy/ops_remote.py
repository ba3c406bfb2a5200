"""Running commands on a deployed host for the ops commands (`ssh`, `logs`, `snapshot`).

Two seams: `Remote.run(argv, sudo=…)` waits for a command and returns its output (an SSH host
through `SshRemote`, or this machine through `RunnerRemote`, which is how the unit tests drive
the snapshot sequence with a FakeRunner and the privileged tests with real loop devices); and
`stream(...)`, which copies a remote command's stdout/stderr as they arrive and returns its exit
status. Host keys are always checked against the fingerprints the console reported: the
interactive session hands OpenSSH a known_hosts file holding only keys that matched them.
"""
from __future__ import annotations

import os
import select
import shlex
import socket
import threading
from pathlib import Path
from typing import BinaryIO, Protocol, Sequence

import paramiko

from ..errors import HostError
from ..host.ssh import HostKeyMismatch, SshClient, Target, sha256_fingerprint

AGENT = "/usr/local/bin/provision"   # where agent delivery installs the host agent
NO_STATUS = 255                      # what OpenSSH exits with when the remote status is unknown
# Host key algorithms asked for one at a time, so every key type the server has gets verified.
KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "rsa-sha2-512")


class Remote(Protocol):
    where: str

    def run(self, argv: Sequence[str], *, sudo: bool = False, check: bool = True,
            timeout: float | None = 600.0): ...


class SshRemote:
    """A host over SSH (host key verified by SshClient)."""

    def __init__(self, client: SshClient):
        self.client = client
        self.where = client.target.where

    def run(self, argv, *, sudo=False, check=True, timeout=600.0):
        return self.client.run(list(argv), sudo=sudo, check=check, timeout=timeout)


class RunnerRemote:
    """This machine, through a Runner (we are root here, so `sudo` adds nothing)."""

    def __init__(self, runner, where: str = "localhost"):
        self.runner = runner
        self.where = where

    def run(self, argv, *, sudo=False, check=True, timeout=600.0):
        return self.runner.run(list(argv), check=check, timeout=timeout)


def remote_command(argv: Sequence[str], sudo: bool = False) -> str:
    cmd = shlex.join(str(a) for a in argv)
    return "sudo -n sh -c " + shlex.quote(cmd) if sudo else cmd


def _pump_stdin(chan: paramiko.Channel, stdin: BinaryIO) -> None:
    try:
        while True:
            data = stdin.read1(32768) if hasattr(stdin, "read1") else stdin.read(32768)
            if not data:
                break
            chan.sendall(data)
    except (OSError, EOFError):
        pass
    finally:
        try:
            chan.shutdown_write()
        except (OSError, EOFError):
            pass


def stream(client: SshClient, command: str, out: BinaryIO, err: BinaryIO, *, stdin: BinaryIO | None = None,
           pty: bool = False, timeout: float | None = None) -> int:
    """Run `command` (a remote shell string) and copy its output as it comes; its exit status.

    With `pty`, closing the channel (Ctrl-C here) hangs up the remote command, which matters for
    commands that never end on their own (`logs -f`); stderr then arrives merged into stdout.
    """
    chan = client.open_session()  # on the connection whose host key SshClient verified
    try:
        if pty:
            chan.get_pty()
        chan.exec_command(command)
        if stdin is None:
            chan.shutdown_write()
        else:
            threading.Thread(target=_pump_stdin, args=(chan, stdin), daemon=True).start()
        idle = 0.0
        while True:
            ready, _, _ = select.select([chan], [], [], 1.0)
            got = False
            while chan.recv_ready():
                out.write(chan.recv(65536))
                got = True
            while chan.recv_stderr_ready():
                err.write(chan.recv_stderr(65536))
                got = True
            if got:
                out.flush()
                err.flush()
                idle = 0.0
            elif not ready:
                idle += 1.0
                if timeout is not None and idle >= timeout:
                    raise HostError(f"ssh {client.target.where}: `{command}` silent for {timeout:.0f}s")
            if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                break
            if chan.closed and not chan.exit_status_ready():
                return NO_STATUS
        status = chan.recv_exit_status()
        return NO_STATUS if status < 0 else status
    finally:
        chan.close()


def known_hosts_name(target: Target) -> str:
    return target.host if target.port == 22 else f"[{target.host}]:{target.port}"


def fetch_host_keys(target: Target, timeout: float = 10.0) -> list[paramiko.PKey]:
    """The server's host keys of each type it offers, each checked against the console's fingerprints.

    A key that does not match is a refusal (HostKeyMismatch), never a prompt; a server offering
    none of the types that matched is an error too.
    """
    allowed = set(target.fingerprints)
    if not allowed:
        raise HostError(f"ssh {target.where}: no host key fingerprints to verify against")
    keys, last = [], ""
    for kt in KEY_TYPES:
        try:
            sock = socket.create_connection((target.host, target.port), timeout=timeout)
        except OSError as exc:
            raise HostError(f"ssh {target.where}: cannot connect ({exc})") from None
        t = paramiko.Transport(sock)
        try:
            t.get_security_options().key_types = (kt,)
            t.start_client(timeout=timeout)
            key = t.get_remote_server_key()
        except (paramiko.SSHException, EOFError, OSError) as exc:
            last = f"{kt}: {exc}"
            continue  # the server has no key of this type
        finally:
            t.close()
        fp = sha256_fingerprint(key)
        if fp not in allowed:
            raise HostKeyMismatch(f"ssh {target.where}: host key {key.get_name()} {fp} is not among the fingerprints "
                                  f"the console reported ({', '.join(sorted(allowed))}); refusing")
        keys.append(key)
    if not keys:
        raise HostError(f"ssh {target.where}: could not read a host key ({last})")
    return keys


def write_known_hosts(path: Path, target: Target, keys: list[paramiko.PKey]) -> Path:
    name = known_hosts_name(target)
    path = Path(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        for k in keys:
            f.write(f"{name} {k.get_name()} {k.get_base64()}\n")
    return path


def interactive_argv(target: Target, known_hosts: Path, keys: list[paramiko.PKey],
                     command: Sequence[str] = (), ssh: str = "ssh") -> list[str]:
    """OpenSSH's argv for a session that trusts exactly the verified keys in `known_hosts`."""
    algos = []
    for k in keys:
        name = k.get_name()
        algos += ["rsa-sha2-512", "rsa-sha2-256"] if name == "ssh-rsa" else [name]
    return [ssh, "-o", f"UserKnownHostsFile={known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=yes", "-o", "UpdateHostKeys=no", "-o", f"HostKeyAlgorithms={','.join(algos)}",
            "-o", "IdentitiesOnly=yes", "-o", "BatchMode=no", "-i", str(target.key_file), "-p", str(target.port),
            "-l", target.user, target.host, *command]
