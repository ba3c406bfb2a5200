"""Login users and their SSH keys: create a configured user when missing (`useradd`), add it to
the configured groups (`usermod -a -G`), and write ~/.ssh/authorized_keys (0600 in a 0700 .ssh,
owned by the user) atomically. A user with keys listed gets exactly those keys: removing one
from the config removes it from the host (key rotation). A user with no keys listed keeps its file.

The user owns ~ and ~/.ssh and may swap their entries for symlinks at any moment (to /etc, to
/etc/shadow) while root works there: root opens them by fd with O_NOFOLLOW and changes owner,
mode and content only through those fds (fsutil.write_at), never by path. A symlink in the way
is refused, never followed.

With a sysroot other than `/`, useradd/usermod get `--prefix SYSROOT` (their /etc and /home there).
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from ...errors import HostError
from ...fsutil import open_dir_nofollow, read_nofollow, write_at
from ..config import User
from . import Outcome, StepContext, describe, read_text

HEADER = "# Managed by provisioner from the host config; changes are overwritten at boot.\n"


@dataclass(frozen=True)
class Account:
    uid: int
    gid: int
    home: str


@dataclass(frozen=True)
class Facts:
    accounts: dict        # name -> Account (configured users that exist)
    members: dict         # group -> set of member names
    keys_ok: dict         # name -> True when authorized_keys (and .ssh) already match


@dataclass(frozen=True)
class UserAdd:
    user: User

    def describe(self) -> str:
        return f"useradd {self.user.name}"


@dataclass(frozen=True)
class JoinGroups:
    name: str
    groups: tuple[str, ...]

    def describe(self) -> str:
        return f"usermod -a -G {','.join(self.groups)} {self.name}"


@dataclass(frozen=True)
class InstallKeys:
    name: str
    content: str

    def describe(self) -> str:
        return f"write ~{self.name}/.ssh/authorized_keys ({self.content.count(chr(10)) - 1} key(s))"


def parse_passwd(text: str) -> dict[str, Account]:
    out = {}
    for line in text.splitlines():
        f = line.split(":")
        if len(f) >= 7 and f[2].isdigit() and f[3].isdigit():
            out[f[0]] = Account(int(f[2]), int(f[3]), f[5])
    return out


def parse_group(text: str) -> dict[str, set[str]]:
    out = {}
    for line in text.splitlines():
        f = line.split(":")
        if len(f) >= 4:
            out[f[0]] = {m for m in f[3].split(",") if m}
    return out


def keys_content(user: User) -> str:
    return HEADER + "".join(k + "\n" for k in user.keys)


def _ssh_paths(ctx: StepContext, acct: Account) -> tuple[Path, Path]:
    ssh = ctx.path(acct.home) / ".ssh"
    return ssh, ssh / "authorized_keys"


def _keys_match(ctx: StepContext, user: User, acct: Account) -> bool:
    """~/.ssh a real 0700 directory and authorized_keys a real 0600 file, both the user's, holding
    exactly the keys (read without following a symlink)."""
    ssh, keys = _ssh_paths(ctx, acct)
    try:
        st = os.lstat(ssh)
    except FileNotFoundError:
        return False
    if not stat.S_ISDIR(st.st_mode) or (st.st_mode & 0o7777) != 0o700 or (st.st_uid, st.st_gid) != (acct.uid, acct.gid):
        return False
    got = read_nofollow(str(keys))
    return got is not None and got[1] == keys_content(user).encode() and (got[0].st_mode & 0o7777) == 0o600 \
        and (got[0].st_uid, got[0].st_gid) == (acct.uid, acct.gid)


def facts(ctx: StepContext) -> Facts:
    accounts = parse_passwd(read_text(ctx.path("/etc/passwd")) or "")
    members = parse_group(read_text(ctx.path("/etc/group")) or "")
    mine = {u.name: accounts[u.name] for u in ctx.config.users if u.name in accounts}
    ok = {u.name: _keys_match(ctx, u, mine[u.name]) for u in ctx.config.users if u.name in mine and u.keys}
    return Facts(mine, members, ok)


def plan(f: Facts, users: tuple[User, ...]) -> tuple:
    actions: list = []
    for u in users:
        if u.name not in f.accounts:
            actions.append(UserAdd(u))
        else:
            missing = tuple(g for g in u.groups if u.name not in f.members.get(g, set()))
            if missing:
                actions.append(JoinGroups(u.name, missing))
        if u.keys and not f.keys_ok.get(u.name, False):
            actions.append(InstallKeys(u.name, keys_content(u)))
    return tuple(actions)


def _prefix(ctx: StepContext) -> list[str]:
    return [] if ctx.on_real_root else ["--prefix", str(ctx.sysroot)]


def _install_keys(ctx: StepContext, a: InstallKeys) -> None:
    acct = parse_passwd(read_text(ctx.path("/etc/passwd")) or "").get(a.name)
    if acct is None:
        raise HostError(f"user {a.name} is not in {ctx.path('/etc/passwd')} after useradd")
    ssh, _keys = _ssh_paths(ctx, acct)
    try:
        home = open_dir_nofollow(ssh.parent)
    except OSError as exc:
        raise HostError(f"{ssh.parent} (home of {a.name}) is not a directory ({exc.strerror}); refusing") from None
    try:
        try:
            os.mkdir(".ssh", 0o700, dir_fd=home)
        except FileExistsError:
            pass
        try:
            sfd = open_dir_nofollow(".ssh", dir_fd=home)
        except OSError as exc:
            raise HostError(f"{ssh} is not a directory (a symlink?: {exc.strerror}); refusing to write keys "
                            "through it") from None
        try:
            os.fchown(sfd, acct.uid, acct.gid)
            os.fchmod(sfd, 0o700)
            try:
                write_at(sfd, "authorized_keys", a.content, 0o600, acct.uid, acct.gid)
            except OSError as exc:   # the user moved our file away meanwhile: refused, nothing followed
                raise HostError(f"cannot write {ssh}/authorized_keys ({exc.strerror})") from None
        finally:
            os.close(sfd)
    finally:
        os.close(home)


def apply(ctx: StepContext, actions) -> None:
    for a in actions:
        if isinstance(a, UserAdd):
            argv = ["useradd", *_prefix(ctx), "--create-home", "--user-group",
                    "--shell", a.user.shell or "/bin/bash"]
            if a.user.groups:
                argv += ["--groups", ",".join(a.user.groups)]
            ctx.runner.run([*argv, a.user.name])
        elif isinstance(a, JoinGroups):
            ctx.runner.run(["usermod", *_prefix(ctx), "-a", "-G", ",".join(a.groups), a.name])
        else:
            _install_keys(ctx, a)


def run(ctx: StepContext, dry_run: bool = False) -> Outcome:
    users = ctx.config.users
    actions = plan(facts(ctx), users)
    if not dry_run:
        apply(ctx, actions)
    return Outcome(describe(actions), f"{len(users)} user(s): {', '.join(u.name for u in users) or 'none configured'}")
