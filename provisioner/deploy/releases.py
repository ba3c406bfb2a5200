"""`provision releases|rollback STACK --cloud C`: every host of a deployed stack, over SSH and
concurrently. Each host keeps its own releases (compose/releases.py); rollback asks each to go
back (to release N, or to the one before its current), forgets the deploy fingerprint first (so
the next deploy re-applies what the operator's stack file says), then checks each published port
from here, as deploy does."""
from __future__ import annotations

import json
import shlex
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from ..errors import HostError
from ..remote.ssh import SshClient
from . import inventory
from .changes import DEPLOYED
from .hoststeps import PROVISION, check_ports


def stack_records(root: Path, stack: str, cloud: str) -> list[inventory.HostRecord]:
    records = [r for r in inventory.records(root, stack) if r.cloud == cloud]
    if not records:
        known = ", ".join(sorted({f"{r.stack} ({r.cloud})" for r in inventory.records(root)})) or "none"
        raise HostError(f"no stack {stack!r} deployed on the {cloud} cloud (deployed stacks: {known})")
    return records


def _each(records, work: Callable, ssh_factory) -> dict:
    """`work(rec, ssh)` on every host at once; one error naming every host that failed."""
    def one(rec):
        ssh = ssh_factory(rec.target())
        try:
            return work(rec, ssh), None
        except HostError as exc:
            return None, f"{rec.host}: {exc}"
        finally:
            ssh.close()
    with ThreadPoolExecutor(max_workers=len(records)) as pool:
        done = dict(zip((r.host for r in records), pool.map(one, records)))
    failed = [err for _, err in done.values() if err]
    if failed:
        raise HostError("; ".join(failed))
    return {h: value for h, (value, _) in done.items()}


def _json(ssh, argv: list[str], what: str, timeout: float = 120.0):
    res = ssh.run(argv, sudo=True, check=False, timeout=timeout)
    if res.returncode != 0:
        tail = " ".join((res.stderr.strip() or res.stdout.strip()).splitlines()[-2:])
        raise HostError(f"{what} failed: {tail.removeprefix('error: ')}")
    try:
        return json.loads(res.stdout)
    except ValueError:
        raise HostError(f"{what} printed no JSON: {res.stdout[:200]!r}") from None


def remote_releases(root: Path, stack: str, cloud: str, ssh_factory=SshClient) -> dict[str, list[dict]]:
    """Each host's kept releases, oldest first, the current one flagged."""
    return _each(stack_records(root, stack, cloud),
                 lambda rec, ssh: _json(ssh, [*PROVISION, "releases", stack, "--json"], "provision releases"),
                 ssh_factory)


def remote_rollback(root: Path, stack: str, cloud: str, to: int | None, *, progress=lambda m: None,
                    ssh_factory=SshClient) -> dict[str, dict]:
    """Every host back to release `to` (default: each one's previous); each published TCP port
    checked from here afterwards. Returns per host {"release", "actions", "endpoints"}."""
    def one(rec, ssh):
        ssh.wait_ready(timeout=60)
        progress(f"{rec.host}: rolling back{' to release ' + str(to) if to else ''}")
        args = [*PROVISION, "rollback", stack, "--json"] + (["--to", str(to)] if to is not None else [])
        out = _json(ssh, ["sh", "-c", f"rm -f {DEPLOYED} && exec {shlex.join(args)}"], "provision rollback", 1800)
        out["endpoints"] = check_ports(out.get("tcp_ports", []), rec.endpoints)
        progress(f"{rec.host}: release {out['release']} runs; "
                 + ("; ".join(out.get("actions") or []) or "nothing to change"))
        return out
    return _each(stack_records(root, stack, cloud), one, ssh_factory)
