"""`provision ssh` and `provision logs` against an in-process SSH server on loopback (paramiko's
server side): real host key verification, streaming, exit status, stdin; and OpenSSH itself
accepting the known_hosts file written for an interactive session.

`FakeSshd` is shared with the other test_ops_* files: it answers only the commands a test gave it.
"""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Callable

import paramiko
import pytest
from click.testing import CliRunner

from provisioner.cli.main import cli
from provisioner.deploy import inventory
from provisioner.remote.hostkeys import HostKeyMismatch, fetch_host_keys, openssh_argv, sha256_fingerprint, write_known_hosts
from provisioner.errors import ConfigError

FIXTURE = Path(__file__).parent.parent / "fixtures" / "clouds" / "stack.yml"


def keygen(path: Path, kind: str = "ed25519") -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", str(path)], check=True)
    return path


class Exec:
    """What a handler gets: the command, stdin, and ways to answer."""

    def __init__(self, chan: paramiko.Channel, command: str):
        self.chan, self.command = chan, command

    def out(self, data: str | bytes) -> None:
        self.chan.sendall(data.encode() if isinstance(data, str) else data)

    def err(self, data: str) -> None:
        self.chan.sendall_stderr(data.encode())

    def stdin(self) -> bytes:
        buf = b""
        while True:
            chunk = self.chan.recv(65536)
            if not chunk:
                return buf
            buf += chunk


class FakeSshd(paramiko.ServerInterface):
    def __init__(self, tmp: Path, user: str = "debian", authorized_keys: Path | None = None):
        self.user = user
        self.authorized_keys = authorized_keys   # when set, the keys in this file are the ones accepted
        self.host_keys = [paramiko.Ed25519Key.from_private_key_file(str(keygen(tmp / "host_ed25519"))),
                          paramiko.ECDSAKey.from_private_key_file(str(keygen(tmp / "host_ecdsa", "ecdsa")))]
        self.client_key = keygen(tmp / "operator")
        self.authorized = paramiko.Ed25519Key.from_private_key_file(str(self.client_key))
        self.handlers: list[tuple[str, Callable[[Exec], int]]] = []
        self.commands: list[str] = []
        self.ptys = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self._stop = False
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    @property
    def fingerprints(self) -> tuple[str, ...]:
        return tuple(sha256_fingerprint(k) for k in self.host_keys)

    def on(self, prefix: str, handler: Callable[[Exec], int]) -> "FakeSshd":
        """Answer commands starting with `prefix` (first match wins); anything else exits 127."""
        self.handlers.append((prefix, handler))
        return self

    def record(self, tmp: Path, stack="shop", host="web", cloud="local", fingerprints=None, **kw):
        rec = inventory.HostRecord(stack=stack, host=host, cloud=cloud, address="127.0.0.1", port=self.port,
                                   user=self.user, key_file=str(self.client_key),
                                   fingerprints=tuple(fingerprints or self.fingerprints),
                                   stack_file=str(FIXTURE), **kw)
        inventory.save(tmp, rec)
        return rec

    def close(self) -> None:
        """Stop accepting before the socket is closed: a thread left blocked in accept() on a
        closed descriptor would take the connections of whichever socket reuses its number (the
        next test's server)."""
        self._stop = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)   # wakes the blocked accept()
        except OSError:
            pass
        self._acceptor.join(10)
        self.sock.close()

    # -- paramiko's server side ------------------------------------------------------------
    def _accept(self):
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        t = paramiko.Transport(conn)
        for k in self.host_keys:
            t.add_server_key(k)
        try:
            t.start_server(server=self)
        except (paramiko.SSHException, EOFError, OSError):
            return
        while t.is_active():
            chan = t.accept(1.0)
            if chan is not None:
                threading.Thread(target=self._wait_exec, args=(chan,), daemon=True).start()

    def _wait_exec(self, chan):
        for _ in range(100):
            if getattr(chan, "_cmd", None) is not None:
                break
            threading.Event().wait(0.05)
        cmd = getattr(chan, "_cmd", None)
        if cmd is None:
            chan.close()
            return
        self.commands.append(cmd)
        for prefix, handler in self.handlers:
            if cmd.startswith(prefix):
                rc = handler(Exec(chan, cmd))
                break
        else:
            chan.sendall_stderr(f"fake sshd: no handler for {cmd!r}\n".encode())
            rc = 127
        chan.send_exit_status(rc)
        chan.shutdown_write()
        chan.close()

    def get_allowed_auths(self, username):
        return "publickey"

    def check_auth_publickey(self, username, key):
        if self.authorized_keys is not None:
            lines = self.authorized_keys.read_text().splitlines() if self.authorized_keys.exists() else []
            allowed = {ln.split()[1] for ln in lines if ln.strip() and not ln.startswith("#")}
            ok = username == self.user and key.get_base64() in allowed
        else:
            ok = username == self.user and key.asbytes() == self.authorized.asbytes()
        return paramiko.AUTH_SUCCESSFUL if ok else paramiko.AUTH_FAILED

    def check_channel_request(self, kind, chanid):
        return paramiko.OPEN_SUCCEEDED if kind == "session" else paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_exec_request(self, channel, command):
        channel._cmd = command.decode()
        return True

    def check_channel_pty_request(self, *a):
        self.ptys += 1
        return True


@pytest.fixture
def sshd(tmp_path):
    d = FakeSshd(tmp_path)
    yield d
    d.close()


def _invoke(root, *args, input=None):
    return CliRunner().invoke(cli, ["--root", str(root), *args], input=input)


def test_ssh_runs_a_command_streams_both_outputs_and_exits_with_its_status(sshd, tmp_path):
    def handler(x):
        x.out("hello\n")
        x.err("warning\n")
        return 3
    sshd.on("df -h | sort", handler)
    sshd.record(tmp_path)
    r = _invoke(tmp_path, "ssh", "web", "--", "df", "-h", "|", "sort")
    assert r.exit_code == 3
    assert r.stdout == "hello\n" and r.stderr == "warning\n"
    assert sshd.commands == ["df -h | sort"]     # joined by spaces for the remote shell, like ssh


def test_ssh_forwards_stdin(sshd, tmp_path):
    sshd.on("cat", lambda x: x.out(x.stdin().upper()) or 0)
    sshd.record(tmp_path)
    r = _invoke(tmp_path, "ssh", "shop/web", "--", "cat", input="some data\n")
    assert r.exit_code == 0 and r.stdout == "SOME DATA\n"


def test_ssh_refuses_a_host_key_the_console_did_not_report(sshd, tmp_path):
    sshd.on("true", lambda x: 0)
    sshd.record(tmp_path, fingerprints=("SHA256:notTheServersKeyAAAAAAAAAAAAAAAAAAAAAAAAAAA",))
    r = _invoke(tmp_path, "ssh", "web", "--", "true")
    assert isinstance(r.exception, HostKeyMismatch)
    assert "is not among the fingerprints the console reported" in str(r.exception)
    assert sshd.commands == []


def test_ssh_unknown_host_is_one_clear_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "provisioner.cli.main", "--root", str(tmp_path), "ssh", "nope", "--",
                           "true"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.splitlines() == [f"error: unknown host 'nope': no deployed host by that name under "
                                        f"{tmp_path / 'deploy'} (deployed: none)"]


def test_logs_streams_the_services_container_output(sshd, tmp_path):
    sshd.on("sudo -n /usr/local/bin/provision container logs", lambda x: x.out("line 1\nline 2\n") or 0)
    sshd.record(tmp_path)
    r = _invoke(tmp_path, "logs", "web", "frontend", "-n", "2", "-t")
    assert r.exit_code == 0 and r.stdout == "line 1\nline 2\n"
    assert sshd.commands == ["sudo -n /usr/local/bin/provision ps -f /etc/provisioner/stack.yml --host web --json",
                             "sudo -n /usr/local/bin/provision container logs --tail 2 --timestamps shop-frontend"]
    assert sshd.ptys == 0


def test_logs_follow_uses_a_pty_so_closing_hangs_up_the_remote_side(sshd, tmp_path):
    sshd.on("sudo -n /usr/local/bin/provision container logs --follow shop-api",
            lambda x: x.out("started\n") or 0)
    sshd.record(tmp_path)
    r = _invoke(tmp_path, "logs", "web", "api", "-f")
    assert r.exit_code == 0 and "started" in r.stdout and sshd.ptys == 1


def test_logs_of_a_service_not_on_the_host_names_where_it_is(sshd, tmp_path):
    sshd.record(tmp_path)
    r = _invoke(tmp_path, "logs", "web", "postgres")
    assert isinstance(r.exception, ConfigError)
    assert "service 'postgres' is not placed on shop/web (its services: frontend, api)" in str(r.exception)
    r = _invoke(tmp_path, "logs", "web", "nosuch")
    assert isinstance(r.exception, ConfigError) and "unknown service 'nosuch'" in str(r.exception)
    assert sshd.commands == []


def test_logs_reads_the_hosts_stack_file_when_the_operator_has_none(sshd, tmp_path):
    sshd.on("sudo -n cat /etc/provisioner/stack.yml", lambda x: x.out(FIXTURE.read_text()) or 0)
    sshd.on("sudo -n /usr/local/bin/provision container logs shop-api", lambda x: x.out("ok\n") or 0)
    rec = sshd.record(tmp_path)
    inventory.save(tmp_path, inventory.HostRecord(**{**rec.to_json(), "fingerprints": rec.fingerprints,
                                                     "stack_file": str(tmp_path / "gone.yml")}))
    r = _invoke(tmp_path, "logs", "web", "api")
    assert r.exit_code == 0 and r.stdout == "ok\n"


def test_snapshot_dry_run_prints_the_steps(sshd, tmp_path):
    sshd.record(tmp_path, cloud="aws", volumes={"data": "vol-1"})
    r = _invoke(tmp_path, "snapshot", "web", "data", "--name", "s1", "--dry-run", "--json")
    assert r.exit_code == 0, r.output
    plan = json.loads(r.stdout)
    assert plan["mount"] == "/srv/data" and plan["cloud_volume"] == "vol-1"
    assert [s.split()[0] for s in plan["steps"]] == ["check", "btrfs", "start", "fsfreeze", "aws", "fsfreeze", "stop"]
    assert sshd.commands == []


def test_snapshot_on_the_local_cloud_is_btrfs_only(sshd, tmp_path):
    sshd.on("sudo -n findmnt -n -o FSTYPE --mountpoint /srv/data", lambda x: x.out("btrfs\n") or 0)
    sshd.on("sudo -n /usr/local/bin/provision --json host disks snapshot create /srv/data --name s1",
            lambda x: x.out(json.dumps({"name": "s1", "path": "/srv/data/.snapshots/s1"})) or 0)
    sshd.record(tmp_path, cloud="local")
    r = _invoke(tmp_path, "snapshot", "web", "data", "--name", "s1")
    assert r.exit_code == 0, r.output
    assert "btrfs snapshot s1: /srv/data/.snapshots/s1" in r.stdout and "btrfs snapshot only" in r.stdout
    assert not any("fsfreeze" in c for c in sshd.commands)


def test_interactive_known_hosts_holds_only_verified_keys_and_openssh_accepts_it(sshd, tmp_path):
    sshd.on("echo hi", lambda x: x.out("hi\n") or 0)
    rec = sshd.record(tmp_path)
    target = rec.target()
    keys = fetch_host_keys(target)
    assert sorted(k.get_name() for k in keys) == ["ecdsa-sha2-nistp256", "ssh-ed25519"]
    # one key the console did not report is enough to refuse
    with pytest.raises(HostKeyMismatch):
        fetch_host_keys(inventory.HostRecord(**{**rec.to_json(), "fingerprints": rec.fingerprints[:1]}).target())

    known = write_known_hosts(tmp_path / "known_hosts", target, keys)
    assert known.read_text().splitlines()[0].startswith(f"[127.0.0.1]:{sshd.port} ssh-ed25519 ")
    if not shutil.which("ssh"):
        pytest.skip("OpenSSH client not installed")
    argv = openssh_argv(target, known, keys, ["echo", "hi"])
    done = subprocess.run([argv[0], "-o", "BatchMode=yes", *argv[1:]], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout == "hi\n", done.stderr
    # and OpenSSH refuses the server when known_hosts holds another key
    other = paramiko.Ed25519Key.from_private_key_file(str(keygen(tmp_path / "other")))
    write_known_hosts(known, target, [other])
    bad = subprocess.run([argv[0], "-o", "BatchMode=yes", *openssh_argv(target, known, [other], ["echo", "hi"])[1:]],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 255 and "verification failed" in bad.stderr


def test_ssh_without_a_command_hands_openssh_the_verified_keys(sshd, tmp_path, monkeypatch):
    sshd.record(tmp_path)
    seen = {}

    def call(argv):
        known = next(a.split("=", 1)[1] for a in argv if a.startswith("UserKnownHostsFile="))
        seen["argv"], seen["known"] = argv, Path(known).read_text()
        return 7
    # this machine's Runner is the seam that hands the terminal to OpenSSH
    monkeypatch.setattr("provisioner.runner.Runner.interactive", lambda self, argv, sudo=False: call(argv))
    r = _invoke(tmp_path, "ssh", "web")
    assert r.exit_code == 7
    assert "StrictHostKeyChecking=yes" in seen["argv"] and seen["argv"][-1] == "127.0.0.1"
    assert len(seen["known"].splitlines()) == 2
