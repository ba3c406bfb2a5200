"""Docker's user lookup against an image's /etc/passwd and /etc/group (moby/sys/user
GetExecUser), and `--group-add` names."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..errors import ContainerError


@dataclass(frozen=True)
class ResolvedUser:
    uid: int
    gid: int
    additional_gids: tuple[int, ...] = ()
    home: str = "/"


def _table(text: str, fields: int) -> list[list[str]]:
    rows = []
    for line in (text or "").splitlines():
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) >= fields:
            rows.append(parts)
    return rows


def resolve_user(spec: str, passwd: str = "", group: str = "") -> ResolvedUser:
    """Docker's user lookup (moby/sys/user GetExecUser) against the image's files."""
    spec = (spec or "").strip()
    users = _table(passwd, 7)
    groups = _table(group, 4)
    user_part, _, group_part = spec.partition(":")
    user_part = user_part or "0"
    entry = None
    for row in users:
        if row[0] == user_part or (user_part.isdigit() and row[2] == user_part):
            entry = row
            break
    if entry is None and not user_part.isdigit():
        raise ContainerError(f"unable to find user {user_part}: no matching entries in the image's /etc/passwd")
    uid = int(entry[2]) if entry else int(user_part)
    gid = int(entry[3]) if entry and entry[3].isdigit() else 0
    home = entry[5] if entry and entry[5] else "/"
    if group_part:
        match = next((g for g in groups if g[0] == group_part or (group_part.isdigit() and g[2] == group_part)), None)
        if match is None and not group_part.isdigit():
            raise ContainerError(f"unable to find group {group_part}: no matching entries in the image's /etc/group")
        gid = int(match[2]) if match else int(group_part)
    extra: list[int] = []
    if entry and not group_part:
        name = entry[0]
        for g in groups:
            members = [m for m in g[3].split(",") if m]
            if name in members and g[2].isdigit() and int(g[2]) != gid and int(g[2]) not in extra:
                extra.append(int(g[2]))
    return ResolvedUser(uid, gid, tuple(extra), home)


def group_ids(names: Sequence[str], group_text: str) -> list[int]:
    """--group-add: numeric gids, or names from the image's /etc/group."""
    rows = _table(group_text, 4)
    out = []
    for n in names:
        match = next((g for g in rows if g[0] == n), None)
        if match is not None and match[2].isdigit():
            out.append(int(match[2]))
        elif str(n).isdigit():
            out.append(int(n))
        else:
            raise ContainerError(f"unable to find group {n}: no matching entries in the image's /etc/group")
    return out
