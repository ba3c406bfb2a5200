"""The one seam for external commands.

Every command the library runs goes through `Runner.run(argv)`: argv is a list, never a
shell string. A failure raises CommandError carrying the command, exit code and stderr tail
(the shape of cloud-init's `subp` and Invoke's `UnexpectedExit`). Tests use
`provisioner.testing.FakeRunner`, which refuses any command it was not told about.
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from typing import Mapping, Sequence

from .errors import CommandError, CommandNotFound

log = logging.getLogger(__name__)


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


class Runner:
    """Runs commands on this machine."""

    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        input: str | bytes | None = None,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike | None = None,
        text: bool = True,
    ) -> Result:
        argv = tuple(str(a) for a in argv)
        if not argv:
            raise ValueError("empty argv")
        if shutil.which(argv[0]) is None and not os.path.exists(argv[0]):
            raise CommandNotFound(argv)
        full_env = None
        if env is not None:
            full_env = dict(os.environ)
            full_env.update(env)
        if isinstance(input, str) and not text:
            input = input.encode()
        log.debug("run: %s", " ".join(argv))
        start = time.monotonic()
        try:
            proc = subprocess.run(
                argv,
                input=input,
                capture_output=True,
                timeout=timeout,
                env=full_env,
                cwd=cwd,
                text=text,
                stdin=None if input is not None else subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as exc:
            raise CommandError(argv, -1, stderr=f"timed out after {timeout}s") from exc
        seconds = time.monotonic() - start
        stdout = proc.stdout if text else proc.stdout.decode(errors="replace")
        stderr = proc.stderr if text else proc.stderr.decode(errors="replace")
        result = Result(argv, proc.returncode, stdout, stderr, seconds)
        log.debug("exit %d in %.3fs: %s", proc.returncode, seconds, argv[0])
        if check and proc.returncode != 0:
            raise CommandError(argv, proc.returncode, stdout, stderr)
        return result

    def which(self, name: str) -> str | None:
        return shutil.which(name)
