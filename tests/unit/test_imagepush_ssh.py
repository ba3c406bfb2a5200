"""A Runner's streamed stdin (`run(argv, input=producer)`, what `image push` streams its tar through),
the same for this machine's Runner and for SshClient against an in-process paramiko SSH server on
loopback whose exec requests run `sh -c` here: a large stream arrives intact, a command that exits
early stops the stream and reports its status, a writer that fails closes the command's stdin (it
sees EOF), and the host key is still verified."""
from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import threading

import paramiko
import pytest

from provisioner.errors import CommandError
from provisioner.remote.hostkeys import HostKeyMismatch, sha256_fingerprint, target_for
from provisioner.remote.ssh import SshClient
from provisioner.runner import Runner
from tests.registry_fixture import wait_until


class _Server(paramiko.ServerInterface):
    hang_channels = threading.Event()   # set: channel opens go unanswered, as on a host going down

    def __init__(self, client_key: paramiko.PKey):
        self.client_key = client_key

    def get_allowed_auths(self, username):
        return "publickey"

    def check_auth_publickey(self, username, key):
        ok = key.asbytes() == self.client_key.asbytes()
        return paramiko.AUTH_SUCCESSFUL if ok else paramiko.AUTH_FAILED

    def check_channel_request(self, kind, chanid):
        while self.hang_channels.is_set():   # (the server's transport thread for this client, only)
            threading.Event().wait(0.05)
        return paramiko.OPEN_SUCCEEDED if kind == "session" else paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_exec_request(self, channel, command):
        threading.Thread(target=_execute, args=(channel, command.decode()), daemon=True).start()
        return True


def _execute(channel: paramiko.Channel, command: str) -> None:
    """Like sshd: the command's stdin/stdout/stderr are the channel's; its exit status is sent."""
    proc = subprocess.Popen(["sh", "-c", command], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)

    def pump_in():
        try:
            while data := channel.recv(65536):
                proc.stdin.write(data)
                proc.stdin.flush()   # as sshd does: a conversation (dial-stdio) must not wait for EOF
        except (BrokenPipeError, OSError):
            pass
        finally:
            try:
                proc.stdin.close()
            except BrokenPipeError:
                pass

    def pump_out(src, send):
        while data := src.read1(65536):
            send(data)

    threads = [threading.Thread(target=pump_in, daemon=True),
               threading.Thread(target=pump_out, args=(proc.stdout, channel.sendall), daemon=True),
               threading.Thread(target=pump_out, args=(proc.stderr, channel.sendall_stderr), daemon=True)]
    for t in threads:
        t.start()
    threads[1].join()
    threads[2].join()
    channel.send_exit_status(proc.wait())
    channel.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    host_key = paramiko.ECDSAKey.generate()
    client_key = paramiko.ECDSAKey.generate()
    key_file = tmp_path_factory.mktemp("sshkeys") / "id_ecdsa"
    client_key.write_private_key_file(str(key_file))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    transports = []

    def serve(conn):
        t = paramiko.Transport(conn)
        transports.append(t)
        t.add_server_key(host_key)
        try:
            t.start_server(server=_Server(client_key))
        except (paramiko.SSHException, EOFError, OSError):
            t.close()   # a client that refused our host key hangs up mid-handshake

    def accept():   # each handshake in its own thread: a slow one never holds up the next client
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    port = listener.getsockname()[1]
    yield target_for([sha256_fingerprint(host_key)], port, os.environ.get("USER", "root"), key_file)
    # wake the blocked accept() before closing: left blocked on a closed descriptor, the thread would
    # take the connections of the next server whose socket reuses the number (another test's sshd)
    listener.shutdown(socket.SHUT_RDWR)
    acceptor.join(10)
    listener.close()
    for t in transports:
        t.close()


@pytest.fixture(params=["ssh", "local"])
def client(request):
    """The same calls through either Runner: a host over SSH, or this machine."""
    if request.param == "local":
        yield Runner()
        return
    c = SshClient(request.getfixturevalue("server"))
    yield c
    c.close()


def _chunks(total: int, size: int = 1 << 16):
    block = os.urandom(size)
    for _ in range(total // size):
        yield block


def test_a_large_stream_arrives_intact(client):
    h, sent = hashlib.sha256(), 0

    def write(send):
        nonlocal sent
        for chunk in _chunks(8 << 20):
            h.update(chunk)
            send(chunk)
            sent += len(chunk)

    out = client.run(["sh", "-c", "sha256sum; echo done >&2"], input=write)
    assert out.returncode == 0 and out.stdout.split()[0] == h.hexdigest() and sent == 8 << 20
    assert out.stderr.strip() == "done"


def test_a_command_that_exits_early_stops_the_stream_and_reports_why(client):
    produced = 0

    def write(send):
        nonlocal produced
        for chunk in _chunks(256 << 20):  # far more than the channel's window
            send(chunk)
            produced += len(chunk)

    with pytest.raises(CommandError, match=r"failed \(exit 3\): sh -c .*: refused: bad header"):
        client.run(["sh", "-c", "head -c 100 >/dev/null; echo 'refused: bad header' >&2; exit 3"], input=write)
    assert produced < 64 << 20  # the writer was stopped, not run to the end
    out = client.run(["sh", "-c", "exit 4"], input=lambda send: send(b"x" * 10), check=False)
    assert out.returncode == 4


def test_a_failing_writer_closes_the_commands_stdin(client, tmp_path):
    marker = tmp_path / "seen"

    def write(send):
        send(b"partial")
        raise RuntimeError("registry went away")

    with pytest.raises(RuntimeError, match="registry went away"):
        client.run(["sh", "-c", f"cat > {marker}.tmp; mv {marker}.tmp {marker}"], input=write)
    # the command saw EOF (it finished) rather than hanging on its stdin
    wait_until(marker.exists, timeout=10, what="the command to finish after its stdin ended")
    assert marker.read_bytes() == b"partial"


def test_the_host_key_is_verified(server):
    wrong = target_for(["SHA256:" + "B" * 43], server.port, server.user, server.key_file)
    with pytest.raises(HostKeyMismatch):
        SshClient(wrong).run(["cat"], input=lambda send: None)


def test_a_host_that_stops_answering_is_an_error_not_a_wait_without_end(server):
    """A connection up but no answer to opening a session (a host going down for a reboot): the
    command fails after its timeout; it once waited forever (wait_ready across a reboot hung)."""
    from provisioner.errors import HostError

    client = SshClient(server).connect()
    _Server.hang_channels.set()
    try:
        with pytest.raises(HostError, match="cannot open a session"):
            client.open_session(timeout=1.0)
    finally:
        _Server.hang_channels.clear()
        client.close()
