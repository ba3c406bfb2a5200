"""SSH to a host with its host key verified against fingerprints read out of band (never TOFU).

The fingerprints come from the console log, where cloud-init prints them at first boot
(`provisioner.clouds.local.console`, and the clouds' console output). A server key whose SHA256
fingerprint is not among them is refused: paramiko's AutoAddPolicy is never used.
"""
from __future__ import annotations

import base64
import hashlib
import logging
import shlex
import socket
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import paramiko

from ..errors import HostError
from ..runner import Runner

log = logging.getLogger(__name__)
# paramiko logs every refused connection while a host boots as an ERROR with a traceback; the
# errors we raise carry the cause, so its own logging only speaks for real emergencies.
logging.getLogger("paramiko").setLevel(logging.CRITICAL)


def sha256_fingerprint(key: paramiko.PKey) -> str:
    """"SHA256:<base64, no padding>" of the key blob: the form `ssh-keygen -l` and cloud-init print."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


class HostKeyMismatch(HostError):
    """The server's host key is not one the console reported: possibly not the machine we launched."""


class _VerifyFingerprints(paramiko.MissingHostKeyPolicy):
    def __init__(self, allowed: set[str], where: str):
        self.allowed = allowed
        self.where = where

    def missing_host_key(self, client, hostname, key):
        fp = sha256_fingerprint(key)
        if fp not in self.allowed:
            raise HostKeyMismatch(f"ssh {self.where}: host key {key.get_name()} {fp} is not among the fingerprints "
                                  f"the console reported ({', '.join(sorted(self.allowed)) or 'none'}); refusing")
        client.get_host_keys().add(hostname, key.get_name(), key)


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    user: str
    key_file: Path
    fingerprints: tuple[str, ...]  # "SHA256:…"

    @property
    def where(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


@dataclass(frozen=True)
class Output:
    returncode: int
    stdout: str
    stderr: str
    seconds: float


class _StdinClosed(Exception):
    """The remote command stopped reading its stdin (it exited): stop producing it."""


class SshClient:
    def __init__(self, target: Target):
        if not target.fingerprints:
            raise HostError(f"ssh {target.where}: no host key fingerprints to verify against")
        self.target = target
        self._client: paramiko.SSHClient | None = None

    # -- connection ---------------------------------------------------------------------------
    def connect(self, timeout: float = 10.0) -> "SshClient":
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(_VerifyFingerprints(set(self.target.fingerprints), self.target.where))
        try:
            client.connect(self.target.host, port=self.target.port, username=self.target.user,
                           key_filename=str(self.target.key_file), timeout=timeout, banner_timeout=timeout,
                           auth_timeout=timeout, allow_agent=False, look_for_keys=False)
        except HostError:
            client.close()
            raise
        except BaseException:
            client.close()
            raise
        self._client = client
        return self

    def wait_ready(self, timeout: float = 300.0) -> float:
        """Retry connecting until the server accepts us; returns the seconds it took.

        A host key mismatch is never retried: it is an answer, not a transient failure.
        """
        start = time.monotonic()
        delay, last = 0.5, ""
        while True:
            try:
                self.connect(timeout=10.0)
                self.run(["true"], check=True)
                return time.monotonic() - start
            except HostKeyMismatch:
                raise
            except (OSError, EOFError, paramiko.SSHException, HostError) as exc:
                last = f"{type(exc).__name__}: {exc}"
                self.close()
            if time.monotonic() - start > timeout:
                raise HostError(f"ssh {self.target.where}: not ready after {timeout:.0f}s ({last})")
            time.sleep(delay)
            delay = min(delay * 1.5, 5.0)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> "SshClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _c(self) -> paramiko.SSHClient:
        if self._client is None:
            self.connect()
        assert self._client is not None
        return self._client

    def open_session(self) -> paramiko.Channel:
        """A new session channel on the verified connection (connecting first if needed), for
        callers that drive a channel themselves (a pty, a stream that never ends)."""
        transport = self._c().get_transport()
        if transport is None or not transport.is_active():
            raise HostError(f"ssh {self.target.where}: not connected")
        return transport.open_session()

    # -- commands -----------------------------------------------------------------------------
    def run(self, argv: Sequence[str] | str, *, check: bool = True, timeout: float | None = 600.0,
            sudo: bool = False, input: str | None = None) -> Output:
        """Run a command (argv list, quoted for the remote shell; or a shell string) and wait for its exit."""
        cmd = argv if isinstance(argv, str) else shlex.join(str(a) for a in argv)
        if sudo:
            cmd = "sudo -n sh -c " + shlex.quote(cmd)
        start = time.monotonic()
        try:
            stdin, stdout, stderr = self._c().exec_command(cmd, timeout=timeout)
            if input is not None:
                stdin.write(input)
            stdin.channel.shutdown_write()
            out = stdout.read().decode(errors="replace")
            err = stderr.read().decode(errors="replace")
            rc = stdout.channel.recv_exit_status()
        except socket.timeout as exc:
            raise HostError(f"ssh {self.target.where}: `{cmd}` timed out after {timeout}s") from exc
        result = Output(rc, out, err, time.monotonic() - start)
        if check and rc != 0:
            tail = " ".join(err.strip().splitlines()[-3:])
            raise HostError(f"ssh {self.target.where}: `{cmd}` failed (exit {rc}){': ' + tail if tail else ''}")
        return result

    def run_streaming(self, argv: Sequence[str] | str, write: Callable[[Callable[[bytes], None]], None], *,
                      check: bool = True, timeout: float | None = 600.0, sudo: bool = False) -> Output:
        """Run a command whose stdin is produced by `write(send)`, e.g. a tar stream (`… | ssh cmd`).

        `write` calls `send(chunk)` as often as it likes; stdout and stderr are read meanwhile (so a
        chatty command never stalls the stream). If the command exits early (it failed), `send`
        raises out of `write` (which should close what it opened in `finally`), the rest of the
        stream is not produced, and the command's exit status and stderr are reported. If `write`
        raises, the channel is closed, so the command sees its stdin end early, and the exception
        propagates."""
        cmd = argv if isinstance(argv, str) else shlex.join(str(a) for a in argv)
        if sudo:
            cmd = "sudo -n sh -c " + shlex.quote(cmd)
        start = time.monotonic()
        transport = self._c().get_transport()
        if transport is None:
            raise HostError(f"ssh {self.target.where}: not connected")
        chan = transport.open_session(timeout=timeout)
        out: dict[str, bytes] = {}

        def drain(key: str, f) -> None:
            out[key] = f.read()

        try:
            chan.settimeout(timeout)
            chan.exec_command(cmd)
            readers = [threading.Thread(target=drain, args=("out", chan.makefile("rb")), daemon=True),
                       threading.Thread(target=drain, args=("err", chan.makefile_stderr("rb")), daemon=True)]
            for t in readers:
                t.start()

            def send(chunk: bytes) -> None:
                try:
                    chan.sendall(chunk)
                except socket.timeout:
                    raise
                except OSError as exc:  # the command exited and closed its stdin: its status says why
                    raise _StdinClosed() from exc

            try:
                write(send)
                chan.shutdown_write()
            except _StdinClosed:
                pass
            for t in readers:
                t.join(timeout)
            if not chan.status_event.wait(timeout):
                raise socket.timeout()
            rc = chan.exit_status
        except socket.timeout as exc:
            raise HostError(f"ssh {self.target.where}: `{cmd}` timed out after {timeout}s") from exc
        finally:
            chan.close()
        result = Output(rc, out.get("out", b"").decode(errors="replace"), out.get("err", b"").decode(errors="replace"),
                        time.monotonic() - start)
        if check and rc != 0:
            tail = " ".join(result.stderr.strip().splitlines()[-3:])
            raise HostError(f"ssh {self.target.where}: `{cmd}` failed (exit {rc}){': ' + tail if tail else ''}")
        return result

    # -- files --------------------------------------------------------------------------------
    def put(self, local: Path, remote: str, mode: int | None = None) -> None:
        with self._c().open_sftp() as sftp:
            sftp.put(str(local), remote)
            if mode is not None:
                sftp.chmod(remote, mode)

    def listdir(self, remote: str) -> dict[str, int]:
        """Regular files in `remote` with their sizes ({} when it does not exist)."""
        with self._c().open_sftp() as sftp:
            try:
                return {a.filename: a.st_size for a in sftp.listdir_attr(remote) if stat.S_ISREG(a.st_mode or 0)}
            except FileNotFoundError:
                return {}
            except OSError as exc:
                raise HostError(f"ssh {self.target.where}: cannot list {remote}: {exc.strerror or exc}") from None


def ensure_keypair(path: Path, runner: Runner, comment: str = "provision") -> Path:
    """An ed25519 key pair at `path` (+ .pub), made with ssh-keygen when missing. Returns `path`."""
    path = Path(path)
    if path.exists() and Path(str(path) + ".pub").exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    runner.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])
    return path


def target_for(fingerprints: Iterable[str], port: int, user: str, key_file: Path,
               host: str = "127.0.0.1") -> Target:
    return Target(host=host, port=port, user=user, key_file=Path(key_file), fingerprints=tuple(fingerprints))
