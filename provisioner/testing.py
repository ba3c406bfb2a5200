"""Test doubles shared by the unit tests (and usable by downstream code's tests).

FakeRunner answers only the commands it was told about and refuses everything else, so a
unit test can never touch the real host by accident (Invoke's MockContext, cloud-init's
`disable_subp_usage`).
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

    def run(self, argv, *, check=True, input=None, timeout=None, env=None, cwd=None, text=True):
        argv = tuple(str(a) for a in argv)
        self.calls.append(argv)
        for exp in self.expectations:
            matched = argv[: len(exp.argv)] == exp.argv if exp.prefix else argv == exp.argv
            if not matched or (exp.times is not None and exp.used >= exp.times):
                continue
            exp.used += 1
            if exp.handler is not None:
                result = exp.handler(argv)
            else:
                result = Result(argv, exp.returncode, exp.stdout, exp.stderr)
            if check and result.returncode != 0:
                raise CommandError(argv, result.returncode, result.stdout, result.stderr)
            return result
        raise UnexpectedCommand(f"FakeRunner refused an undeclared command: {' '.join(argv)}")

    def which(self, name: str) -> str | None:
        return f"/usr/bin/{name}" if name in self.known_commands else None

    def commands(self, name: str | None = None) -> list[tuple[str, ...]]:
        """The commands run so far (optionally only those whose argv[0] is `name`)."""
        return [c for c in self.calls if name is None or c[0] == name]
