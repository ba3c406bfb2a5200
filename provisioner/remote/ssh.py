"""A host over SSH, as a Runner: the same contract as `provisioner.runner.Runner`, so deploy and the
ops commands run the same calls here or there, and tests fake both the same way.

The connection trusts only host keys whose fingerprints the console reported (hostkeys.py):
paramiko's AutoAddPolicy is never used. argv is quoted for the remote shell (shlex.join); `sudo`
runs it behind `sudo -n`.
"""
from __future__ import annotations

import logging
import select
import shlex
import signal
import socket
import stat
import tempfile
import threading
import time
from pathlib import Path
from typing import BinaryIO, Mapping, Sequence

import paramiko

from ..errors import CommandError, HostError
from ..runner import Input, Result, Runner, StdinClosed
from .hostkeys import HostKeyMismatch, Target, VerifyFingerprints, fetch_host_keys, openssh_argv, write_known_hosts

log = logging.getLogger(__name__)
# paramiko logs every refused connection while a host boots as an ERROR with a traceback; the
# errors we raise carry the cause, so its own logging only speaks for real emergencies.
logging.getLogger("paramiko").setLevel(logging.CRITICAL)
NO_STATUS = 255   # what OpenSSH exits with when the remote status is unknown


class SshClient:
    def __init__(self, target: Target):
        if not target.fingerprints:
            raise HostError(f"ssh {target.where}: no host key fingerprints to verify against")
        self.target = target
        self._client: paramiko.SSHClient | None = None

    @property
    def where(self) -> str:
        return self.target.where

    # -- connection ---------------------------------------------------------------------------
    def connect(self, timeout: float = 10.0) -> "SshClient":
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(VerifyFingerprints(set(self.target.fingerprints), self.target.where))
        try:
            client.connect(self.target.host, port=self.target.port, username=self.target.user,
                           key_filename=str(self.target.key_file), timeout=timeout, banner_timeout=timeout,
                           auth_timeout=timeout, allow_agent=False, look_for_keys=False)
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
                self.run(["true"], timeout=30.0)
                return time.monotonic() - start
            except HostKeyMismatch:
                raise
            except (OSError, EOFError, paramiko.SSHException, HostError, CommandError) as exc:
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

    def open_session(self, timeout: float | None = 30.0) -> paramiko.Channel:
        """A new session channel on the verified connection (connecting first if needed). A host
        that stops answering (one going down for a reboot) is a HostError after `timeout` seconds,
        never a wait without end."""
        transport = self._c().get_transport()
        if transport is None or not transport.is_active():
            raise HostError(f"ssh {self.target.where}: not connected")
        try:
            return transport.open_session(timeout=timeout)
        except paramiko.SSHException as exc:
            raise HostError(f"ssh {self.target.where}: cannot open a session ({exc})") from None

    # -- the Runner contract ------------------------------------------------------------------
    @staticmethod
    def _argv(argv: Sequence[str], sudo: bool, env: Mapping[str, str] | None = None,
              cwd: str | None = None) -> tuple[str, ...]:
        out = [str(a) for a in argv]
        if env:
            out = ["env", *(f"{k}={v}" for k, v in env.items()), *out]
        if cwd is not None:
            out = ["sh", "-c", 'cd "$1" && shift && exec "$@"', "sh", str(cwd), *out]
        return tuple(["sudo", "-n", *out] if sudo else out)

    @staticmethod
    def command_line(argv: tuple[str, ...]) -> str:
        """What sshd is asked to run. sshd runs a command line with the login shell's -c, so a
        plain ["sh", "-c", SCRIPT] goes as SCRIPT itself, as `ssh host SCRIPT` would send it."""
        if len(argv) == 3 and argv[:2] == ("sh", "-c"):
            return argv[2]
        return shlex.join(argv)

    def run(self, argv: Sequence[str], *, check: bool = True, input: Input = None, timeout: float | None = 600.0,
            env: Mapping[str, str] | None = None, cwd: str | None = None, text: bool = True,
            sudo: bool = False) -> Result:
        argv = self._argv(argv, sudo, env, cwd)
        cmd = self.command_line(argv)
        start = time.monotonic()
        chan = self.open_session(timeout=min(timeout or 30.0, 30.0))
        out: dict[str, bytes] = {}
        readers = [threading.Thread(target=lambda k, f: out.__setitem__(k, f.read()), args=(k, f), daemon=True)
                   for k, f in (("out", chan.makefile("rb")), ("err", chan.makefile_stderr("rb")))]
        try:
            chan.settimeout(timeout)
            chan.exec_command(cmd)
            for t in readers:
                t.start()
            self._feed(chan, input)
            for t in readers:
                t.join(timeout)
            if not chan.status_event.wait(timeout):
                raise socket.timeout()
            rc = chan.exit_status
        except socket.timeout as exc:
            raise CommandError(argv, -1, stderr=f"timed out after {timeout}s", where=self.where) from exc
        finally:
            chan.close()
        stdout = out.get("out", b"").decode(errors="replace")
        stderr = out.get("err", b"").decode(errors="replace")
        if check and rc != 0:
            raise CommandError(argv, rc, stdout, stderr, where=self.where)
        return Result(argv, rc, stdout, stderr, time.monotonic() - start)

    @staticmethod
    def _feed(chan: paramiko.Channel, input: Input) -> None:
        """The command's stdin: nothing, text, bytes, or what a producer streams. A command that
        exits early closes its stdin: the producer stops, and the exit status says why."""
        def send(chunk: bytes) -> None:
            try:
                chan.sendall(chunk)
            except socket.timeout:
                raise
            except OSError as exc:
                raise StdinClosed() from exc

        try:
            if callable(input):
                input(send)
            elif input is not None:
                send(input.encode() if isinstance(input, str) else input)
            chan.shutdown_write()
        except StdinClosed:
            pass

    def stream(self, argv: Sequence[str], *, stdout: BinaryIO, stderr: BinaryIO, stdin: BinaryIO | None = None,
               sudo: bool = False, pty: bool = False, timeout: float | None = None) -> int:
        """Copy the command's output as it comes; its exit status. With `pty`, closing the channel
        (Ctrl-C here) hangs up the remote command, which matters for commands that never end on
        their own (`logs -f`); stderr then arrives merged into stdout. `timeout`: seconds of silence."""
        argv = self._argv(argv, sudo)
        chan = self.open_session()
        try:
            if pty:
                chan.get_pty()
            chan.exec_command(self.command_line(argv))
            if stdin is None:
                chan.shutdown_write()
            else:
                threading.Thread(target=_pump_stdin, args=(chan, stdin), daemon=True).start()
            idle = 0.0
            while True:
                ready, _, _ = select.select([chan], [], [], 1.0)
                got = False
                while chan.recv_ready():
                    stdout.write(chan.recv(65536))
                    got = True
                while chan.recv_stderr_ready():
                    stderr.write(chan.recv_stderr(65536))
                    got = True
                if got:
                    stdout.flush()
                    stderr.flush()
                    idle = 0.0
                elif not ready:
                    idle += 1.0
                    if timeout is not None and idle >= timeout:
                        raise CommandError(argv, -1, stderr=f"silent for {timeout:.0f}s", where=self.where)
                if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                    break
                if chan.closed and not chan.exit_status_ready():
                    return NO_STATUS
            status = chan.recv_exit_status()
            return NO_STATUS if status < 0 else status
        finally:
            chan.close()

    def interactive(self, argv: Sequence[str] = (), *, sudo: bool = False) -> int:
        """A session on this terminal, through OpenSSH trusting exactly the verified host keys.
        Like `ssh host WORDS...`: the words are joined by spaces for the remote shell; none is a
        login shell."""
        keys = fetch_host_keys(self.target)
        command = (["sudo", "-n"] if sudo and argv else []) + [str(a) for a in argv]
        with tempfile.TemporaryDirectory(prefix="provision-ssh-") as d:
            known = write_known_hosts(Path(d) / "known_hosts", self.target, keys)
            old = signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C belongs to the remote shell
            try:
                return Runner().interactive(openssh_argv(self.target, known, keys, command))
            finally:
                signal.signal(signal.SIGINT, old)

    def which(self, name: str) -> str | None:
        res = self.run(["sh", "-c", 'command -v "$1"', "sh", name], check=False)
        return res.stdout.strip() or None

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


def ensure_keypair(path: Path, runner: Runner, comment: str = "provision") -> Path:
    """An ed25519 key pair at `path` (+ .pub), made with ssh-keygen when missing. Returns `path`."""
    path = Path(path)
    if path.exists() and Path(str(path) + ".pub").exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    runner.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])
    return path
