"""The one seam for external commands, here or on a host.

The contract (this machine: `Runner`; a host over verified SSH: `remote.ssh.SshClient`; tests:
`provisioner.testing.FakeRunner`, which refuses any command it was not told about):

- `run(argv, ...) -> Result`: wait for the command and capture its output. argv is a list,
  never a shell string. A failure raises CommandError carrying the command, where it ran, the
  exit code and the stderr tail (the shape of cloud-init's `subp` and Invoke's `UnexpectedExit`).
  `input` is text, bytes, or a producer `write(send)` that streams the command's stdin (a tar
  stream, say) while its output is read; `sudo=True` runs it as root.
- `stream(argv, stdout=, stderr=, ...) -> int`: copy the command's output as it comes (`logs -f`),
  return its exit status.
- `interactive(argv) -> int`: the command gets this terminal (`exec -it`, a shell on a host).
- `which(name)`, and `where`, which names the machine in messages.

`Runner.spawn` (this machine only) starts a child this process keeps a handle on, for the pty
proxy of `container exec -t`.
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import BinaryIO, Callable, Mapping, Sequence, Union

from .errors import CommandError, CommandNotFound

log = logging.getLogger(__name__)

Producer = Callable[[Callable[[bytes], None]], None]
Input = Union[str, bytes, Producer, None]
CHUNK = 1 << 16


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class StdinClosed(Exception):
    """The command stopped reading its stdin (it exited): stop producing it."""


def _close(f) -> None:
    try:
        f.close()
    except OSError:   # a pipe the command closed first: nothing more to say to it
        pass


def as_root(argv: Sequence[str], sudo: bool, euid: int) -> list[str]:
    """argv, behind `sudo -n` when asked to run as root and not root already."""
    return ["sudo", "-n", *argv] if sudo and euid != 0 else list(argv)


class Runner:
    """Runs commands on this machine."""

    where = "localhost"

    def _argv(self, argv: Sequence[str], sudo: bool) -> tuple[str, ...]:
        argv = tuple(str(a) for a in as_root([str(a) for a in argv], sudo, os.geteuid()))
        if not argv:
            raise ValueError("empty argv")
        if shutil.which(argv[0]) is None and not os.path.exists(argv[0]):
            raise CommandNotFound(argv)
        return argv

    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        input: Input = None,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike | None = None,
        text: bool = True,
        sudo: bool = False,
    ) -> Result:
        argv = self._argv(argv, sudo)
        full_env = None
        if env is not None:
            full_env = dict(os.environ)
            full_env.update(env)
        log.debug("run: %s", " ".join(argv))
        start = time.monotonic()
        if callable(input):
            proc = self._run_fed(argv, input, timeout, full_env, cwd)
        else:
            binary = isinstance(input, bytes) or not text   # bytes in, text out: decoded below
            if isinstance(input, str) and binary:
                input = input.encode()
            try:
                proc = subprocess.run(
                    argv, input=input, capture_output=True, timeout=timeout, env=full_env, cwd=cwd,
                    text=not binary, stdin=None if input is not None else subprocess.DEVNULL,
                )
            except subprocess.TimeoutExpired as exc:
                raise CommandError(argv, -1, stderr=f"timed out after {timeout}s") from exc
        seconds = time.monotonic() - start
        stdout = proc.stdout if isinstance(proc.stdout, str) else proc.stdout.decode(errors="replace")
        stderr = proc.stderr if isinstance(proc.stderr, str) else proc.stderr.decode(errors="replace")
        result = Result(argv, proc.returncode, stdout, stderr, seconds)
        log.debug("exit %d in %.3fs: %s", proc.returncode, seconds, argv[0])
        if check and proc.returncode != 0:
            raise CommandError(argv, proc.returncode, stdout, stderr)
        return result

    @staticmethod
    def _run_fed(argv, produce: Producer, timeout, env, cwd) -> subprocess.CompletedProcess:
        """`produce` writes the command's stdin while its output is read (so a chatty command never
        stalls the stream). If the command exits early, `send` raises out of `produce`, the rest is
        not produced, and the command's status says why."""
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                cwd=cwd)
        out: dict[str, bytes] = {}
        readers = [threading.Thread(target=lambda k, f: out.__setitem__(k, f.read()), args=(k, f), daemon=True)
                   for k, f in (("out", proc.stdout), ("err", proc.stderr))]
        for t in readers:
            t.start()

        def send(chunk: bytes) -> None:
            try:
                proc.stdin.write(chunk)
            except (BrokenPipeError, ValueError) as exc:
                raise StdinClosed() from exc

        try:
            try:
                produce(send)
            except StdinClosed:
                pass
            except BaseException:
                # the producer failed: the command sees its stdin end (as over SSH) and gets a
                # moment to finish what it makes of that before it is stopped
                _close(proc.stdin)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                raise
            _close(proc.stdin)
            try:
                rc = proc.wait(timeout)
            except subprocess.TimeoutExpired as exc:
                proc.kill()
                proc.wait()
                raise CommandError(argv, -1, stderr=f"timed out after {timeout}s") from exc
        finally:
            _close(proc.stdin)
            for t in readers:
                t.join(5)
        return subprocess.CompletedProcess(argv, rc, out.get("out", b""), out.get("err", b""))

    def stream(self, argv: Sequence[str], *, stdout: BinaryIO, stderr: BinaryIO, stdin: BinaryIO | None = None,
               sudo: bool = False, pty: bool = False, timeout: float | None = None) -> int:
        """Copy the command's output to `stdout`/`stderr` as it comes; its exit status. (`pty` matters
        for a remote command, which a closed session must hang up; here Ctrl-C reaches it anyway.)"""
        argv = self._argv(argv, sudo)
        proc = subprocess.Popen(argv, stdin=stdin if stdin is not None else subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

        def copy(src, dst) -> None:
            for chunk in iter(lambda: src.read1(CHUNK), b""):
                dst.write(chunk)
                dst.flush()

        threads = [threading.Thread(target=copy, args=(proc.stdout, stdout), daemon=True),
                   threading.Thread(target=copy, args=(proc.stderr, stderr), daemon=True)]
        for t in threads:
            t.start()
        try:
            rc = proc.wait(timeout)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        for t in threads:
            t.join()
        return rc

    def interactive(self, argv: Sequence[str], *, sudo: bool = False) -> int:
        """The command shares this process's stdin, stdout and stderr (the terminal); its exit code."""
        return subprocess.call(self._argv(argv, sudo))

    def spawn(self, argv: Sequence[str], *, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
              stderr=subprocess.PIPE) -> subprocess.Popen:
        """A child of this process, left running: the caller waits for it (or kills it)."""
        return subprocess.Popen(list(self._argv(argv, False)), stdin=stdin, stdout=stdout, stderr=stderr)

    def which(self, name: str) -> str | None:
        return shutil.which(name)
