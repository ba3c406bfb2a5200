"""Releases: what a host ran, numbered, so it can go back.

A release is the stack's services as brought up on this host: the stack file and the files it
names (env files, seccomp profiles) copied as they were, each service's config hash and the image
digest it ran. `up` records one whenever it changed something; the last KEEP are kept, and the
images they pinned keep a digest name in the store (so a moved tag or `image prune` never takes
an image a kept release can go back to).

    <root>/releases/<stack>/<N>/release.json   {"number", "created", "stack", "hash", "stack_sha256",
                                                 "stack_path", "env_files", "profiles",
                                                 "services": {name: {"hash", "spec", "image", "digest",
                                                 "image_name", "container", "replicas"}}, "changes", "by"}
    <root>/releases/<stack>/<N>/stack.yml       and the files it names, by their path under its folder
    <root>/releases/<stack>/current             the number of the release running now
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import StackError
from ..fsutil import atomic_write
from ..stack.model import Stack

DIR = "releases"
KEEP = 5
RELEASE_FILE = "release.json"
STACK_FILE = "stack.yml"


@dataclass(frozen=True)
class Release:
    number: int
    created: float
    stack: str
    hash: str                                   # of what the host runs: every service's hash and digest
    services: dict[str, dict] = field(default_factory=dict)
    changes: tuple[str, ...] = ()
    by: str = "up"                              # up | deploy | rollback to N
    stack_sha256: str = ""                      # of the stack file as it was
    stack_path: str = ""                        # where the stack file was (rollback puts it back there)
    env_files: tuple[str, ...] = ()             # the .env files it was interpolated from (rollback's too)
    profiles: tuple[str, ...] = ()              # the profiles its services were in (rollback activates them)

    def to_json(self) -> dict:
        return {"number": self.number, "created": self.created, "stack": self.stack, "hash": self.hash,
                "services": self.services, "changes": list(self.changes), "by": self.by,
                "stack_sha256": self.stack_sha256, "stack_path": self.stack_path,
                **({"env_files": list(self.env_files)} if self.env_files else {}),
                **({"profiles": list(self.profiles)} if self.profiles else {})}

    @classmethod
    def from_json(cls, d: dict) -> "Release":
        return cls(int(d["number"]), float(d["created"]), d["stack"], d["hash"], dict(d.get("services") or {}),
                   tuple(d.get("changes") or ()), d.get("by", "up"), d.get("stack_sha256", ""),
                   d.get("stack_path", ""), tuple(d.get("env_files") or ()), tuple(d.get("profiles") or ()))


def release_hash(services: dict[str, dict]) -> str:
    data = json.dumps({n: [s.get("hash"), s.get("digest")] for n, s in sorted(services.items())}, sort_keys=True)
    return hashlib.sha256(data.encode()).hexdigest()[:16]


def stack_files(stack: Stack) -> list[Path]:
    """The files a stack reads besides the stack file, by absolute path: its services' env files
    and seccomp profiles, the .env files it was interpolated from (the one beside it at least),
    its secrets' and configs' files (copied as they are: a release directory is root's alone)."""
    out = [Path(stack.path).resolve().parent / ".env", *(Path(f) for f in stack.env_files)]
    for spec in stack.services.values():
        out += [Path(f) for f in spec.env_files]
        if spec.security.seccomp not in (None, "unconfined"):
            out.append(Path(spec.security.seccomp))
    out += [Path(d.file) for d in (*stack.secrets.values(), *stack.configs.values()) if d.file]
    return list(dict.fromkeys(out))


class Releases:
    def __init__(self, root: Path, stack: str):
        self.dir = Path(root) / DIR / stack
        self.stack = stack

    def numbers(self) -> list[int]:
        if not self.dir.is_dir():
            return []
        return sorted(int(p.name) for p in self.dir.iterdir() if p.name.isdigit() and (p / RELEASE_FILE).is_file())

    def get(self, number: int) -> Release:
        try:
            return Release.from_json(json.loads((self.dir / str(number) / RELEASE_FILE).read_text()))
        except FileNotFoundError:
            have = ", ".join(map(str, self.numbers())) or "none"
            raise StackError(f"stack {self.stack} has no release {number} on this host (kept: {have})") from None
        except (OSError, ValueError, KeyError) as exc:
            raise StackError(f"release {number} of {self.stack} is unreadable ({exc})",
                             str(self.dir / str(number))) from None

    def all(self) -> list[Release]:
        return [self.get(n) for n in self.numbers()]

    def current(self) -> Release | None:
        try:
            number = int((self.dir / "current").read_text().strip())
        except (OSError, ValueError):
            return None
        return self.get(number) if number in self.numbers() else None

    def stack_file(self, number: int) -> Path:
        return self.dir / str(number) / STACK_FILE

    def record(self, stack: Stack, services: dict[str, dict], changes: list[str], by: str) -> Release:
        """Copy the stack file and the files it names into a new numbered release, make it the
        current one, and drop the oldest beyond KEEP. Returns it."""
        numbers = self.numbers()
        number = (numbers[-1] + 1) if numbers else 1
        sha = hashlib.sha256(Path(stack.path).read_bytes()).hexdigest()
        rel = Release(number, time.time(), self.stack, release_hash(services), services, tuple(changes), by, sha,
                      str(Path(stack.path).resolve()), tuple(stack.env_files),
                      tuple(sorted({p for s in stack.services.values() for p in s.profiles})))
        tmp = self.dir / f".{number}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        base = Path(stack.path).resolve().parent
        tmp.mkdir(parents=True, mode=0o700)
        shutil.copy2(stack.path, tmp / STACK_FILE)
        for f in stack_files(stack):
            rel_path = f.resolve().relative_to(base) if f.resolve().is_relative_to(base) else None
            if rel_path is None or not f.is_file():
                continue   # a file outside the stack's folder stays where it is (rollback reads it there)
            (tmp / rel_path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, tmp / rel_path)
        atomic_write(tmp / RELEASE_FILE, json.dumps(rel.to_json(), indent=2) + "\n", mode=0o600)
        os.rename(tmp, self.dir / str(number))
        atomic_write(self.dir / "current", f"{number}\n")
        for old in numbers[:max(0, len(numbers) + 1 - KEEP)]:
            shutil.rmtree(self.dir / str(old), ignore_errors=True)
        return rel

    def previous(self) -> Release:
        """The release before the current one (what `rollback` goes back to by default)."""
        cur = self.current()
        older = [n for n in self.numbers() if cur is None or n < cur.number]
        if not older:
            have = ", ".join(map(str, self.numbers())) or "none"
            raise StackError(f"stack {self.stack} has no release before "
                             f"{'release ' + str(cur.number) if cur else 'the current one'} on this host "
                             f"(kept: {have})")
        return self.get(older[-1])

    def restore(self, rel: Release) -> Path:
        """Put release `rel`'s stack file and the files it names back where they were (the files
        they replace are in the current release, so nothing is lost); returns the stack file's path."""
        if not rel.stack_path:
            raise StackError(f"release {rel.number} of {self.stack} does not say where its stack file was")
        target = Path(rel.stack_path)
        src = self.dir / str(rel.number)
        for f in sorted(src.rglob("*")):
            if f.is_dir() or f.name == RELEASE_FILE:
                continue
            rel_path = f.relative_to(src)
            dest = target if rel_path == Path(STACK_FILE) else target.parent / rel_path
            dest.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(dest, f.read_bytes(), mode=f.stat().st_mode & 0o777)
        return target

    def pinned_images(self) -> set[str]:
        """The "repo@digest" names the kept releases ran."""
        return {f"{s['image_name']}@{s['digest']}" for r in self.all() for s in r.services.values()
                if s.get("digest") and s.get("image_name")}
