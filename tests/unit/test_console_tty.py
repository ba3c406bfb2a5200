"""containers/console.py without root: a stand-in runtime speaks the console-socket protocol (it
opens a pty, sends the master over the socket, runs a shell on the slave), and "our terminal" is
another pty the test types into. Checks: the pty reaches the process, typed input arrives, the
terminal size is copied, the exit code comes back, and a runtime failure is one clear error."""
from __future__ import annotations

import fcntl
import os
import select
import struct
import sys
import termios
import textwrap
import threading
import time

import pytest

from provisioner.containers import console
from provisioner.errors import ContainerError
from provisioner.runner import Runner

FAKE_RUNTIME = textwrap.dedent("""\
    import os, socket, sys
    path, script = sys.argv[1], sys.argv[2]
    if script == "fail":
        print("provision-runtime: exec: executable file \\"nope\\" not found in $PATH", file=sys.stderr)
        sys.exit(1)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    master, slave = os.openpty()
    pid = os.fork()
    if pid == 0:
        os.setsid()
        import fcntl, termios
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
        for fd in (0, 1, 2):
            os.dup2(slave, fd)
        os.execvp("sh", ["sh", "-c", script])
    os.close(slave)
    socket.send_fds(s, [b"/dev/pts/x"], [master])
    os.close(master)
    _, status = os.waitpid(pid, 0)
    sys.exit(os.waitstatus_to_exitcode(status))
""")


@pytest.fixture
def fake(tmp_path):
    p = tmp_path / "fake_runtime.py"
    p.write_text(FAKE_RUNTIME)
    return str(p)


class UserTerminal:
    """The user's side: the master of a pty whose slave is the CLI's stdin/stdout."""

    def __init__(self, rows=24, cols=80):
        self.master, self.slave = os.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.out = b""
        self.lock = threading.Lock()

    def pump(self, stop: threading.Event, script: list[tuple[bytes, bytes]]):
        """Reads what the CLI prints; when a `wait_for` appears, types its answer."""
        steps = list(script)
        while not stop.is_set():
            r, _, _ = select.select([self.master], [], [], 0.05)
            if r:
                try:
                    data = os.read(self.master, 4096)
                except OSError:
                    return
                with self.lock:
                    self.out += data
            while steps and steps[0][0] in self.out:
                os.write(self.master, steps.pop(0)[1])

    def close(self):
        os.close(self.master)
        os.close(self.slave)


def run(fake: str, script: str, answers=(), interactive=True, term=None):
    term = term or UserTerminal()
    stop = threading.Event()
    t = threading.Thread(target=term.pump, args=(stop, list(answers)), daemon=True)
    t.start()
    try:
        with console.console_socket() as (sock, path):
            code = console.run_with_tty(Runner(), [sys.executable, fake, path, script], sock, interactive=interactive,
                                        stdin=term.slave, stdout=term.slave)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and b"END" in script.encode() and b"END" not in term.out:
            time.sleep(0.02)
    finally:
        stop.set()
        t.join(5)
    return code, term


def test_input_reaches_the_process_on_a_pty_and_the_exit_code_returns(fake):
    term = UserTerminal(rows=33, cols=99)
    attrs = termios.tcgetattr(term.slave)
    code, term = run(fake, "test -t 0 && stty size && echo ready; read x; echo got-$x; echo END; exit 4",
                     answers=[(b"ready", b"hello\n")], term=term)
    assert code == 4
    assert b"33 99" in term.out and b"got-hello" in term.out and b"END" in term.out
    assert termios.tcgetattr(term.slave) == attrs  # our terminal is restored from raw mode
    term.close()


def test_without_interactive_no_input_is_forwarded(fake):
    term = UserTerminal()
    attrs = termios.tcgetattr(term.slave)
    attrs[3] &= ~termios.ECHO  # our terminal's own echo off: "typed" could only come back from the container's pty
    termios.tcsetattr(term.slave, termios.TCSANOW, attrs)
    code, term = run(fake, "echo ready; sleep 1; echo END", answers=[(b"ready", b"typed\n")], interactive=False,
                     term=term)
    assert code == 0 and b"ready" in term.out and b"END" in term.out and b"typed" not in term.out
    term.close()


def test_a_runtime_failure_is_one_error(fake):
    term = UserTerminal()
    with pytest.raises(ContainerError, match=r'^exec failed: exec: executable file "nope" not found'):
        run(fake, "fail", term=term)
    term.close()


def test_interactive_needs_a_terminal(fake, tmp_path):
    r, w = os.pipe()
    try:
        with console.console_socket() as (sock, _path):
            with pytest.raises(ContainerError, match="the input device is not a TTY"):
                console.run_with_tty(Runner(), [sys.executable, fake], sock, interactive=True, stdin=r, stdout=w)
    finally:
        os.close(r)
        os.close(w)
