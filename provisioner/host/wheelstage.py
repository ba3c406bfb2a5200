"""Stage the agent's wheels into a root-owned 0700 directory, each one checked against the sha256
the operator sent over the verified SSH session, before root installs anything from it.

Stdlib only and runnable as a script: agent delivery sends this file's text to the host's
python3 on stdin and runs it as root (it runs before the agent exists on the host):

    python3 - STAGING UPLOAD NAME=SHA256 [NAME=SHA256 ...]

- STAGING is created 0700 and must be a real directory of root's with no access for others (an
  existing one is made so; a symlink or another owner's directory is refused);
- a NAME already in STAGING with its hash stays; otherwise it is copied in from UPLOAD (the
  login user's own upload directory, made by `mktemp -d`; "-" for none), opened without
  following a symlink, hashed as it is copied, and kept only when the hash matches;
- every other entry of STAGING is removed: pip's --find-links then sees exactly these wheels;
- what root hashed is remembered in STAGING/.verified (name, sha256, and the file's inode, size
  and mtime): a wheel unchanged since — only root can change anything there — is not read again
  (hashing the dependency wheels twice per delivery costs seconds on an emulated host);
- prints the NAMEs still missing (in neither directory), one per line, and exits 0; a wheel
  whose content does not match its hash exits 1 with one line naming it.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
import sys

VERIFIED = ".verified"


class StageError(Exception):
    pass


def _staging(path: str) -> int:
    os.makedirs(path, mode=0o700, exist_ok=True)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise StageError(f"{path}: not a directory ({exc.strerror}); refusing to stage wheels there") from None
    st = os.fstat(fd)
    if st.st_uid != 0:
        os.close(fd)
        raise StageError(f"{path} belongs to uid {st.st_uid}, not root; refusing to stage wheels there")
    os.fchmod(fd, 0o700)
    return fd


def _identity(st: os.stat_result) -> list[int]:
    return [st.st_ino, st.st_size, st.st_mtime_ns]


def _digest_at(dir_fd: int, name: str, known: dict) -> str | None:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        seen = known.get(name)
        if seen and seen[1:] == _identity(st):
            return seen[0]
        h = hashlib.sha256()
        while chunk := os.read(fd, 1 << 20):
            h.update(chunk)
        known[name] = [h.hexdigest(), *_identity(st)]
        return h.hexdigest()
    finally:
        os.close(fd)


def _load_verified(dir_fd: int) -> dict:
    got = None
    try:
        fd = os.open(VERIFIED, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        with os.fdopen(fd) as f:
            got = json.load(f)
    except (OSError, ValueError):
        pass
    return got if isinstance(got, dict) else {}


def _save_verified(dir_fd: int, known: dict) -> None:
    tmp = f"{VERIFIED}.tmp"
    try:
        os.unlink(tmp, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
    with os.fdopen(fd, "w") as f:
        json.dump(known, f)
    os.replace(tmp, VERIFIED, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)


def _copy_in(upload: str, name: str, want: str, dir_fd: int) -> bool:
    """UPLOAD/NAME into the staging directory if it hashes to `want`; False when it is not there."""
    try:
        src = os.open(os.path.join(upload, name), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise StageError(f"{upload}/{name}: {exc.strerror}") from None
    tmp = f".{name}.tmp"
    try:
        if not stat.S_ISREG(os.fstat(src).st_mode):
            raise StageError(f"{upload}/{name} is not a regular file")
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except FileNotFoundError:
            pass
        dst = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
        h = hashlib.sha256()
        try:
            while chunk := os.read(src, 1 << 20):
                h.update(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(dst, view):]
            os.fsync(dst)
        finally:
            os.close(dst)
        if h.hexdigest() != want:
            os.unlink(tmp, dir_fd=dir_fd)
            raise StageError(f"wheel {name}: its content hashes to sha256:{h.hexdigest()}, not the sha256:{want} "
                             "the operator sent; refused")
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        return True
    finally:
        os.close(src)


def stage(staging: str, upload: str | None, wanted: dict[str, str]) -> list[str]:
    """Returns the names still missing (see the module docstring)."""
    for name in wanted:
        if name != os.path.basename(name) or name.startswith(".") or not name.endswith(".whl"):
            raise StageError(f"{name!r} is not a wheel file name")
    fd = _staging(staging)
    try:
        known = _load_verified(fd)
        missing = []
        for name, want in wanted.items():
            if _digest_at(fd, name, known) == want:
                continue
            if upload is None or not _copy_in(upload, name, want, fd):
                missing.append(name)
            else:   # hashed as it was copied: remembered as it is now
                known[name] = [want, *_identity(os.stat(name, dir_fd=fd, follow_symlinks=False))]
        for entry in os.listdir(fd):
            if entry not in wanted and entry != VERIFIED:
                st = os.stat(entry, dir_fd=fd, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    raise StageError(f"{staging}/{entry}: a directory where only wheels belong")
                os.unlink(entry, dir_fd=fd)
        _save_verified(fd, {n: v for n, v in known.items() if n in wanted})
        os.fsync(fd)
        return missing
    finally:
        os.close(fd)


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: python3 - STAGING UPLOAD|- NAME=SHA256...", file=sys.stderr)
        return 2
    staging, upload, pairs = argv[0], None if argv[1] == "-" else argv[1], argv[2:]
    try:
        wanted = dict(p.split("=", 1) for p in pairs)
        for name in stage(staging, upload, wanted):
            print(name)
    except (StageError, ValueError, OSError) as exc:
        print(f"wheelstage: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
