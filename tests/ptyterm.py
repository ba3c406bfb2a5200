"""A program on the slave side of a pty of ours, as a user's terminal runs it: we are the user at
the master (read what it prints, type, see its exit code). Shared by the tests that drive
`provision container exec -it` and the docker client's `run -it`/`exec -it`."""
from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import termios
import time


class PtyTerminal:
    def __init__(self, argv: list[str], env: dict | None = None, *, rows: int = 33, cols: int = 99,
                 timeout: float = 15.0):
        self.argv, self.timeout = argv, timeout
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: the program on a terminal
            os.execve(argv[0], argv, env if env is not None else dict(os.environ))
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.out = b""

    def read_until(self, needle: bytes, timeout: float | None = None) -> bytes:
        deadline = time.monotonic() + (timeout or self.timeout)
        while needle not in self.out:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {needle!r}; got {self.out!r}")
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                try:
                    data = os.read(self.fd, 4096)
                except OSError:
                    data = b""
                if not data:
                    raise AssertionError(f"terminal closed before {needle!r}; got {self.out!r}")
                self.out += data
        return self.out

    def type(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def wait(self, timeout: float | None = None) -> int:
        deadline = time.monotonic() + (timeout or self.timeout)
        while time.monotonic() < deadline:
            # keep draining so the child never blocks on a full pty
            if select.select([self.fd], [], [], 0.05)[0]:
                try:
                    self.out += os.read(self.fd, 4096)
                except OSError:
                    pass
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                os.close(self.fd)
                return os.waitstatus_to_exitcode(status)
        os.kill(self.pid, 9)
        os.waitpid(self.pid, 0)
        os.close(self.fd)
        raise AssertionError(f"{os.path.basename(self.argv[0])} did not exit; output {self.out!r}")
