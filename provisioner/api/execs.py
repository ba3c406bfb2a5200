"""exec: `POST /containers/{id}/exec` makes an instance, `POST /exec/{id}/start` runs it on the
hijacked connection (the runtime's `exec`, as `provision container exec` runs it), `GET
/exec/{id}/json` tells its exit code, `POST /exec/{id}/resize` sizes its terminal.

Without a terminal the process's stdout and stderr come back multiplexed (streams.frame) and the
client's bytes are its stdin; with one (-t) the pty master — which the runtime hands over the
console socket — is copied both ways raw, as dockerd does.
"""
from __future__ import annotations

import fcntl
import os
import secrets
import select
import socket
import struct
import subprocess
import termios
import threading

from ..containers import console
from .engine import ExecInstance
from .http import bad_request, conflict, not_found, not_supported
from .streams import RAW, STDERR, STDOUT, frame

KEEP = 200       # finished instances kept for inspection


def create_exec(eng, req, conn, id):
    rec = eng.container(id)
    body = req.json_object()
    cmd = body.get("Cmd")
    if not isinstance(cmd, list) or not cmd or not all(isinstance(x, str) for x in cmd):
        raise bad_request("No exec command specified (Cmd)")
    for key in ("Privileged",):
        if body.get(key):
            raise not_supported(f"exec {key}")
    if body.get("DetachKeys"):
        raise not_supported("exec DetachKeys")
    env = body.get("Env") or []
    if not isinstance(env, list) or not all(isinstance(e, str) and "=" in e for e in env):
        raise bad_request("exec Env must be a list of K=V strings")
    if not eng.manager.is_running(rec):
        raise conflict(f"Container {rec.id} is not running")
    inst = ExecInstance(secrets.token_hex(32), rec.id, list(cmd), tuple(env), body.get("User") or None,
                        body.get("WorkingDir") or None, bool(body.get("Tty")), bool(body.get("AttachStdin")),
                        bool(body.get("AttachStdout", True)), bool(body.get("AttachStderr", True)))
    with eng.lock:
        done = [k for k, v in eng.execs.items() if v.exit_code is not None]
        for k in done[:max(0, len(done) - KEEP)]:
            del eng.execs[k]
        eng.execs[inst.id] = inst
    return 201, {"Id": inst.id}


def _instance(eng, id) -> ExecInstance:
    inst = eng.execs.get(id)
    if inst is None:
        raise not_found(f"No such exec instance: {id}")
    return inst


def inspect_exec(eng, req, conn, id):
    return 200, _instance(eng, id).to_json()


def resize_exec(eng, req, conn, id):
    inst = _instance(eng, id)
    h, w = req.int_arg("h"), req.int_arg("w")
    if h is None or w is None:
        raise bad_request("resize wants both h and w")
    if inst.master >= 0:
        try:
            fcntl.ioctl(inst.master, termios.TIOCSWINSZ, struct.pack("HHHH", h, w, 0, 0))
        except OSError:
            pass
    return 201, b""


def start_exec(eng, req, conn, id):
    inst = _instance(eng, id)
    body = req.json_object()
    if inst.running or inst.exit_code is not None:
        raise conflict(f"exec instance {id} has already been started")
    if body.get("Detach"):
        raise not_supported("exec -d (detached exec)", "run the command attached")
    tty = bool(body.get("Tty", inst.tty))
    mgr = eng.manager
    kw = {"env": inst.env, "user": inst.user, "workdir": inst.workdir}
    inst.running = True
    try:
        if tty:
            with console.console_socket() as (sock, path):
                argv = mgr.exec_argv(inst.container, inst.argv, console_socket=path, **kw)
                proc = eng.runner.spawn(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE)
                try:
                    master = console.receive_master(sock, proc)
                except Exception:
                    proc.kill()
                    proc.wait()
                    raise
            inst.master, inst.pid = master, proc.pid
            early = conn.hijack(req.wants_upgrade, RAW)
            try:
                _pump_tty(conn.sock, master, proc, early, inst)
            finally:
                os.close(master)
                inst.master = -1
        else:
            argv = mgr.exec_argv(inst.container, inst.argv, **kw)
            proc = eng.runner.spawn(argv, stdin=subprocess.PIPE if inst.stdin else subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            inst.pid = proc.pid
            early = conn.hijack(req.wants_upgrade, RAW)
            _pump_plain(conn.sock, proc, early, inst)
        inst.exit_code = proc.wait()
    finally:
        inst.running = False
        if inst.exit_code is None:
            inst.exit_code = 126
    return None


def _pump_plain(sock: socket.socket, proc: subprocess.Popen, early: bytes, inst: ExecInstance) -> None:
    lock = threading.Lock()

    def copy(src, stream: int, wanted: bool) -> None:
        for chunk in iter(lambda: os.read(src.fileno(), 65536), b""):
            if wanted:
                with lock:
                    try:
                        sock.sendall(frame(stream, chunk))
                    except OSError:
                        wanted = False
    readers = [threading.Thread(target=copy, args=(proc.stdout, STDOUT, inst.stdout), daemon=True),
               threading.Thread(target=copy, args=(proc.stderr, STDERR, inst.stderr), daemon=True)]
    for t in readers:
        t.start()
    if proc.stdin is not None:
        threading.Thread(target=_feed, args=(sock, proc.stdin, early), daemon=True).start()
    for t in readers:
        t.join()
    _finish(inst, proc)
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def _feed(sock: socket.socket, stdin, early: bytes) -> None:
    """The client's bytes to the process's stdin; its half-close (CloseWrite) is the end of input."""
    try:
        if early:
            stdin.write(early)
            stdin.flush()
        while True:
            data = sock.recv(65536)
            if not data:
                break
            stdin.write(data)
            stdin.flush()
    except OSError:
        pass
    finally:
        try:
            stdin.close()
        except OSError:
            pass


def _finish(inst: ExecInstance, proc: subprocess.Popen) -> None:
    """The exit code is known before the stream ends: the client asks for it right after."""
    inst.exit_code = proc.wait()
    inst.running = False


def _pump_tty(sock: socket.socket, master: int, proc: subprocess.Popen, early: bytes, inst: ExecInstance) -> None:
    with_stdin = inst.stdin
    if early and with_stdin:
        os.write(master, early)
    inputs = [master] + ([sock] if with_stdin else [])
    drain = None
    while True:
        done = proc.poll() is not None
        if done and drain is None:
            drain = 0
        r, _, _ = select.select(inputs, [], [], 0.05 if done else 0.5)
        if master in r:
            try:
                data = os.read(master, 65536)
            except OSError:
                data = b""
            if not data:
                break
            sock.sendall(data)
            continue
        if sock in r:
            data = sock.recv(65536)
            if not data:
                inputs.remove(sock)
                continue
            os.write(master, data)
            continue
        if done:
            break
    _finish(inst, proc)
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def register(router) -> None:
    router.add("POST", "/containers/{id}/exec", create_exec)
    router.add("POST", "/exec/{id}/start", start_exec)
    router.add("GET", "/exec/{id}/json", inspect_exec)
    router.add("POST", "/exec/{id}/resize", resize_exec)
