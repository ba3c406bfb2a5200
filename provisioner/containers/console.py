"""`exec -t`: a pty for a process in a container, as `docker exec -it` gives.

The OCI console-socket protocol (runc's `recvtty`): we listen on a unix socket, hand its path to
`<runtime> exec --tty --console-socket PATH`, and the runtime sends us the pty master over it
(SCM_RIGHTS) once the process has the slave as its controlling terminal. Then this side copies
our stdin to the master and the master to our stdout until the process exits, with our terminal
in raw mode (the pty in the container does the line editing and echo) and its size kept equal
to ours (SIGWINCH).

The runtime runs for as long as the process does and our terminal must be proxied meanwhile,
so it is started with the Runner's spawn (a child we keep a handle on), not run (which captures
output until exit); its stderr is read once it has ended, for the error message.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import termios
import time
import tty
from typing import Iterator, Sequence

from ..errors import ContainerError

ACCEPT_TIMEOUT = 15.0


@contextlib.contextmanager
def console_socket() -> Iterator[tuple[socket.socket, str]]:
    """A listening unix socket in a private temp dir (root-only: the pty is the container's)."""
    d = tempfile.mkdtemp(prefix="provision-console-")
    path = os.path.join(d, "console.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(1)
        yield sock, path
    finally:
        sock.close()
        shutil.rmtree(d, ignore_errors=True)


def receive_master(sock: socket.socket, proc: subprocess.Popen, timeout: float = ACCEPT_TIMEOUT) -> int:
    """Waits for the runtime's connection and the pty master fd it sends; fails with the runtime's
    own message if it ends first."""
    deadline = time.monotonic() + timeout
    sock.settimeout(0.05)
    while True:
        try:
            conn, _ = sock.accept()
            break
        except socket.timeout:
            if proc.poll() is not None:
                why = _runtime_error(proc) or f"the runtime exited with {proc.returncode}"
                raise ContainerError(f"exec failed: {why}") from None
            if time.monotonic() > deadline:
                raise ContainerError(f"exec: the runtime sent no terminal within {timeout:g}s") from None
    with conn:
        conn.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            _msg, fds, _flags, _addr = socket.recv_fds(conn, 1024, 1)
        except (OSError, socket.timeout) as exc:
            raise ContainerError(f"exec: no terminal from the runtime ({exc})") from None
    if not fds:
        proc.wait(timeout=10)
        raise ContainerError(f"exec failed: {_runtime_error(proc) or 'the runtime sent no terminal'}")
    for extra in fds[1:]:
        os.close(extra)
    return fds[0]


def _runtime_error(proc: subprocess.Popen) -> str:
    """The runtime's own one-line error ("" when its last stderr line is not one)."""
    err = proc.stderr.read() if proc.stderr else b""
    lines = [ln for ln in err.decode(errors="replace").splitlines() if ln.strip()]
    last = lines[-1] if lines else ""
    return last.removeprefix("provision-runtime: ") if last.startswith("provision-runtime:") else ""


def copy_winsize(src_fd: int, dst_fd: int) -> None:
    with contextlib.suppress(OSError):
        size = fcntl.ioctl(src_fd, termios.TIOCGWINSZ, struct.pack("HHHH", 0, 0, 0, 0))
        fcntl.ioctl(dst_fd, termios.TIOCSWINSZ, size)


@contextlib.contextmanager
def raw_terminal(fd: int) -> Iterator[bool]:
    """Our terminal in raw mode for the duration (restored even on errors); False if fd is no tty."""
    if not os.isatty(fd):
        yield False
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd, termios.TCSANOW)
        yield True
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def proxy(master: int, proc: subprocess.Popen, *, stdin: int | None, stdout: int) -> None:
    """Copies stdin → master and master → stdout until the process has exited and the master is
    drained. A process left in the background holding the pty does not keep us here: once the
    runtime (which waits for the exec'd process) is gone, whatever is buffered is copied and we stop."""
    inputs = [master] + ([stdin] if stdin is not None else [])
    drain_until = None
    while True:
        done = proc.poll() is not None
        if done and drain_until is None:
            drain_until = time.monotonic() + 1.0
        if drain_until is not None and time.monotonic() > drain_until:
            break
        ready, _, _ = select.select(inputs, [], [], 0 if done else 0.1)
        if master in ready:
            try:
                data = os.read(master, 65536)
            except OSError as exc:
                if exc.errno != errno.EIO:  # EIO: every slave fd is closed
                    raise
                data = b""
            if not data:
                break
            _write_all(stdout, data)
            continue
        if stdin is not None and stdin in ready:
            data = os.read(stdin, 65536)
            if data:
                _write_all(master, data)
            else:  # our input ended: the terminal's end-of-file, as a keyboard's ^D would
                inputs.remove(stdin)
                with contextlib.suppress(OSError):
                    os.write(master, bytes([termios.tcgetattr(master)[6][termios.VEOF]]))
            continue
        if done:
            break


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            select.select([], [fd], [], 1.0)
            continue
        view = view[n:]


def run_with_tty(runner, argv: Sequence[str], sock: socket.socket, *, interactive: bool, stdin: int = 0,
                 stdout: int = 1) -> int:
    """Runs the runtime's `exec --tty` (argv, already naming the console socket) through the
    Runner and proxies its pty; returns the process's exit code."""
    if interactive and not os.isatty(stdin):
        raise ContainerError("the input device is not a TTY (use -i without -t, or run from a terminal)")
    # the runtime's stdio is not the pty: it only reports its own errors on stderr
    proc = runner.spawn(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    master = -1
    old_winch = None
    try:
        master = receive_master(sock, proc)
        term = stdin if os.isatty(stdin) else stdout
        copy_winsize(term, master)
        if os.isatty(term):
            old_winch = signal.signal(signal.SIGWINCH, lambda *_: copy_winsize(term, master))
        with raw_terminal(stdin) if interactive else contextlib.nullcontext(False):
            proxy(master, proc, stdin=stdin if interactive else None, stdout=stdout)
        code = proc.wait()
        if code != 0:
            err = _runtime_error(proc)
            if err:  # the runtime failed (no such executable...), not the process
                raise ContainerError(f"exec failed: {err}")
    except BaseException:
        if proc.poll() is None:
            proc.kill()  # the runtime only; the process in the container loses its terminal (SIGHUP)
            proc.wait()
        raise
    finally:
        if old_winch is not None:
            signal.signal(signal.SIGWINCH, old_winch)
        if master >= 0:
            os.close(master)
        if proc.stderr:
            proc.stderr.close()
    return code
