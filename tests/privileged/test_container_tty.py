"""`provision container exec -t/-it` on a real container: the CLI is driven from a pty of our own
(pty.fork), as a user's terminal would; `tty` inside names a /dev/pts device, typed input reaches
the shell, the terminal size is the caller's, and the exit code comes back."""
from __future__ import annotations

import shutil
import sys

import pytest

from tests.ptyterm import PtyTerminal
from tests.privileged.test_container import Env, env, images  # noqa: F401 (fixtures)

pytestmark = [
    pytest.mark.privileged,
    pytest.mark.skipif(not all(shutil.which(t) for t in ("skopeo", "docker-registry", "nft", "mkfs.btrfs")),
                       reason="skopeo, docker-registry, nft and btrfs-progs are needed (scripts/install.sh)"),
]


class Terminal(PtyTerminal):
    """The CLI running on the slave side of a pty; we are the user at the master."""

    def __init__(self, env: Env, *args: str, rows: int = 33, cols: int = 99):
        super().__init__([sys.executable, "-m", "provisioner.cli.main", "--root", str(env.root), *args],
                         rows=rows, cols=cols)


def test_exec_it_gives_a_pty_that_takes_input(env):
    env.run("--name", "box", env.refs["busybox"], "sleep", "1000")
    t = Terminal(env, "container", "exec", "-it", "box", "sh")
    t.type("tty; stty size; echo in-$((6*7))\n")
    out = t.read_until(b"in-42\r\n")
    assert b"/dev/pts/" in out and b"33 99\r\n" in out  # a pty, with our terminal's size
    # the shell's own echo of what we typed shows the input went through the container's pty
    assert b"echo in-$((6*7))" in out
    t.type("exit 5\n")
    assert t.wait() == 5


def test_exec_t_without_i_prints_through_the_pty(env):
    env.run("--name", "box", env.refs["busybox"], "sleep", "1000")
    out = env.provision("container", "exec", "-t", "box", "sh", "-c", "tty; exit 3", check=False)
    assert out.returncode == 3 and out.stdout.startswith("/dev/pts/"), out
    # again: an exec's pty leaves nothing behind in the container (no /dev/console mount over it)
    again = env.provision("container", "exec", "-t", "box", "tty")
    assert again.stdout.startswith("/dev/pts/"), again
    # -it with no terminal for input is Docker's error, one line
    out = env.provision("container", "exec", "-it", "box", "tty", check=False, input="")
    assert out.returncode != 0 and "the input device is not a TTY" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    # the runtime's failure (no such executable) is the error, not a hang
    out = env.provision("container", "exec", "-t", "box", "no-such-binary", check=False)
    assert out.returncode != 0 and len(out.stderr.strip().splitlines()) == 1 and "no-such-binary" in out.stderr, out
