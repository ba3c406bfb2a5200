"""A container's own terminal and stdin (`docker run -t` / `-i`): a small process between the
supervisor and the runtime that holds them, as conmon holds a container's console for podman.

The supervisor (native/shim) runs it instead of `<runtime> run …` for a container made with a tty
or an open stdin; it runs the runtime itself and keeps for the container's life:
  - with a tty: the pty master, which the runtime hands over its console socket; what the
    container writes goes to our stdout (the supervisor's log, as Docker logs a tty container's
    output) and to every attached client, raw;
  - with an open stdin: the write end of the container's stdin pipe;
  - a unix socket (root's: `--socket`) where clients attach. A client sends one JSON line —
    {"attach": {"stdin": bool, "replay": bool}} to read the output (tty) and, with stdin, to
    write the container's input; {"resize": [rows, cols]} to size the pty — and then bytes.
    `replay` sends the output written so far (the last REPLAY bytes): `docker run -it` attaches
    before the container starts, and a shell's first prompt must not be lost.
With --stdin-once (Docker's StdinOnce) the container's stdin closes when the first attached
client's input ends. The runtime's exit code is ours; a stop signal the supervisor sends to our
process group reaches the runtime directly.

Standard library (and console's fd receiver) only: it starts with every container that has one.
"""
from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import termios

REPLAY = 16384
HEADER_MAX = 4096


def _receive_master(sock: socket.socket, proc: subprocess.Popen) -> int:
    from .console import receive_master

    return receive_master(sock, proc)


class Relay:
    def __init__(self, sock_path: str, argv: list[str], *, tty: bool, stdin: bool, stdin_once: bool):
        self.sock_path, self.argv, self.tty = sock_path, argv, tty
        self.stdin, self.stdin_once = stdin, stdin_once
        self.master = -1
        self.stdin_w = -1
        self.replay = b""
        self.clients: dict[socket.socket, bool] = {}    # client → sends input
        self.pending: dict[socket.socket, bytes] = {}   # connected, header not read yet
        self.input_done = False

    def start(self) -> subprocess.Popen:
        if os.path.exists(self.sock_path):
            os.unlink(self.sock_path)
        old = os.umask(0o177)
        try:
            self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.listener.bind(self.sock_path)
        finally:
            os.umask(old)
        self.listener.listen(16)
        if not self.tty:
            proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE if self.stdin else subprocess.DEVNULL)
            if proc.stdin is not None:
                self.stdin_w = proc.stdin.fileno()
                self._stdin_file = proc.stdin
            return proc
        tmp = tempfile.mkdtemp(prefix="provision-relay-")
        try:
            console = os.path.join(tmp, "console.sock")
            csock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            csock.bind(console)
            csock.listen(1)
            i = self.argv.index("run") + 1
            argv = self.argv[:i] + ["--console-socket", console] + self.argv[i:]
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            self.master = _receive_master(csock, proc)
            csock.close()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return proc

    # -- clients --------------------------------------------------------------------------------
    def _header(self, c: socket.socket) -> None:
        try:
            data = self.pending[c] + c.recv(HEADER_MAX, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if b"\n" not in data:
            if len(data) >= HEADER_MAX or not data:
                self._drop(c)
            else:
                self.pending[c] = data
            return
        line, rest = data.split(b"\n", 1)
        del self.pending[c]
        try:
            msg = json.loads(line)
        except ValueError:
            self._drop(c)
            return
        if "resize" in msg:
            rows, cols = (int(x) for x in msg["resize"])
            if self.master >= 0:
                fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
            self._drop(c)
            return
        att = msg.get("attach") or {}
        wants_input = bool(att.get("stdin")) and (self.master >= 0 or self.stdin_w >= 0) and not self.input_done
        self.clients[c] = wants_input
        if att.get("replay") and self.replay:
            self._send(c, self.replay)
        if rest and wants_input:
            self._input(rest)

    def _drop(self, c: socket.socket) -> None:
        self.pending.pop(c, None)
        was_input = self.clients.pop(c, False)
        try:
            c.close()
        except OSError:
            pass
        if was_input and self.stdin_once:
            self._close_input()

    def _close_input(self) -> None:
        self.input_done = True
        if self.stdin_w >= 0:
            try:
                self._stdin_file.close()
            except OSError:
                pass
            self.stdin_w = -1

    def _send(self, c: socket.socket, data: bytes) -> None:
        try:
            c.sendall(data)
        except OSError:
            self._drop(c)

    def _input(self, data: bytes) -> None:
        fd = self.master if self.master >= 0 else self.stdin_w
        if fd < 0:
            return
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        except OSError:
            self._close_input()

    def _output(self, data: bytes) -> None:
        self.replay = (self.replay + data)[-REPLAY:]
        view = memoryview(data)
        while view:   # our stdout: the supervisor's log
            try:
                view = view[os.write(1, view):]
            except BlockingIOError:
                select.select([], [1], [], 1.0)
        for c in list(self.clients):
            self._send(c, data)

    # -- the loop -------------------------------------------------------------------------------
    def run(self) -> int:
        proc = self.start()
        while True:
            done = proc.poll() is not None
            rl = [self.listener, *self.pending, *[c for c, inp in self.clients.items() if inp]]
            if self.master >= 0:
                rl.append(self.master)
            r, _, _ = select.select(rl, [], [], 0.05 if done else 1.0)
            if self.master >= 0 and self.master in r:
                try:
                    data = os.read(self.master, 65536)
                except OSError:
                    data = b""
                if data:
                    self._output(data)
                    continue
                os.close(self.master)
                self.master = -1
            talking = [x for x in r if x in self.clients]     # before a header makes another a client
            if self.listener in r:
                c, _ = self.listener.accept()
                self.pending[c] = b""
            for c in [x for x in r if x in self.pending]:
                self._header(c)
            for c in talking:
                try:
                    data = c.recv(65536, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if data:
                    self._input(data)
                elif self.clients.get(c):
                    self.clients[c] = False      # its input ended; it still reads the output
                    if self.stdin_once:
                        self._close_input()
            if done and (self.master < 0 or self.master not in r):
                break
        for c in list(self.clients) + list(self.pending):
            self._drop(c)
        self.listener.close()
        try:
            os.unlink(self.sock_path)
        except OSError:
            pass
        if proc.stderr is not None:     # the runtime's own complaint (tty: its stdio is ours to read)
            err = proc.stderr.read()
            if err:
                os.write(2, err)
        return proc.returncode


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if "--" not in args:
        print("usage: relay --socket PATH [--tty] [--stdin] [--stdin-once] -- RUNTIME ARGS...", file=sys.stderr)
        return 2
    cut = args.index("--")
    opts, runtime = args[:cut], args[cut + 1:]
    sock = opts[opts.index("--socket") + 1]
    # the supervisor's stop signal goes to our whole group: the runtime gets it too and forwards it
    # to the container; we stay to relay the last output and pass its exit code on
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, lambda *_: None)
    relay = Relay(sock, runtime, tty="--tty" in opts, stdin="--stdin" in opts, stdin_once="--stdin-once" in opts)
    try:
        return relay.run()
    except Exception as exc:   # noqa: BLE001 — the supervisor logs our stderr: say why, exit like the runtime
        print(f"provision-runtime: container console relay: {exc}", file=sys.stderr)
        return 125


if __name__ == "__main__":
    sys.exit(main())
