"""Test doubles shared by the unit tests (and usable by downstream code's tests).

FakeRunner answers only the commands it was told about and refuses everything else, so a
unit test can never touch the real host by accident (Invoke's MockContext, cloud-init's
`disable_subp_usage`). It honours the whole Runner contract (runner.py) — run, stream,
interactive — so it stands in for this machine or for a host over SSH alike.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

from .errors import CommandError
from .runner import Result


class UnexpectedCommand(AssertionError):
    """Raised by FakeRunner for a command no test declared."""


@dataclass
class _Expectation:
    argv: tuple[str, ...]
    prefix: bool
    returncode: int
    stdout: str
    stderr: str
    handler: Callable[[tuple[str, ...]], Result] | None
    times: int | None
    used: int = 0


@dataclass
class FakeRunner:
    expectations: list[_Expectation] = field(default_factory=list)
    calls: list[tuple[str, ...]] = field(default_factory=list)
    known_commands: set[str] = field(default_factory=set)
    where: str = "localhost"                         # another name: it stands in for a host
    inputs: list = field(default_factory=list)       # what each call got on stdin (None: nothing)

    def expect(
        self,
        argv: Sequence[str],
        *,
        stdout: str = "",
        stderr: str = "",
        returncode: int = 0,
        prefix: bool = False,
        handler: Callable[[tuple[str, ...]], Result] | None = None,
        times: int | None = None,
    ) -> "FakeRunner":
        """Declare a command. `prefix=True` matches any argv starting with `argv`."""
        self.expectations.append(
            _Expectation(tuple(argv), prefix, returncode, stdout, stderr, handler, times)
        )
        return self

    def _answer(self, argv: tuple[str, ...]) -> Result:
        for exp in self.expectations:
            matched = argv[: len(exp.argv)] == exp.argv if exp.prefix else argv == exp.argv
            if not matched or (exp.times is not None and exp.used >= exp.times):
                continue
            exp.used += 1
            if exp.handler is not None:
                return exp.handler(argv)
            return Result(argv, exp.returncode, exp.stdout, exp.stderr)
        raise UnexpectedCommand(f"FakeRunner refused an undeclared command: {' '.join(argv)}")

    def run(self, argv, *, check=True, input=None, timeout=None, env=None, cwd=None, text=True, sudo=False):
        """`sudo` is not part of the argv matched: a test declares the command itself."""
        argv = tuple(str(a) for a in argv)
        self.calls.append(argv)
        if callable(input):   # a producer streaming stdin: collect what it sends
            chunks: list[bytes] = []
            input(chunks.append)
            input = b"".join(chunks)
        self.inputs.append(input)
        result = self._answer(argv)
        if check and result.returncode != 0:
            raise CommandError(argv, result.returncode, result.stdout, result.stderr,
                               where=None if self.where == "localhost" else self.where)
        return result

    def stream(self, argv, *, stdout, stderr, stdin=None, sudo=False, pty=False, timeout=None) -> int:
        argv = tuple(str(a) for a in argv)
        self.calls.append(argv)
        self.inputs.append(stdin.read() if stdin is not None else None)
        result = self._answer(argv)
        stdout.write(result.stdout.encode())
        stderr.write(result.stderr.encode())
        return result.returncode

    def interactive(self, argv, *, sudo=False) -> int:
        argv = tuple(str(a) for a in argv)
        self.calls.append(argv)
        self.inputs.append(None)
        return self._answer(argv).returncode

    def spawn(self, argv, **_kw):
        raise UnexpectedCommand(f"FakeRunner does not start processes: {' '.join(map(str, argv))}")

    def which(self, name: str) -> str | None:
        return f"/usr/bin/{name}" if name in self.known_commands else None

    def commands(self, name: str | None = None) -> list[tuple[str, ...]]:
        """The commands run so far (optionally only those whose argv[0] is `name`)."""
        return [c for c in self.calls if name is None or c[0] == name]
