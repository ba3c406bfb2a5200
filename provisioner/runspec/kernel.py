"""Per-container kernel settings: `--ulimit` / compose `ulimits`, and `--sysctl` / compose `sysctls`.

Ulimits are Docker's names (nofile, nproc, memlock, …): SOFT[:HARD], -1 meaning unlimited.
Sysctls are the namespaced ones Docker accepts (moby opts.ValidateSysctl): the IPC keys
(kernel.msg*, kernel.sem, kernel.shm*), fs.mqueue.*, and net.* — net.* not when the container
shares the host's network, where it would change the host.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Mapping

from ..errors import ConfigError

RLIMITS = {name: f"RLIMIT_{name.upper()}" for name in (
    "as", "core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice", "nofile", "nproc", "rss",
    "rtprio", "rttime", "sigpending", "stack")}
UNLIMITED = 2 ** 64 - 1   # RLIM_INFINITY
IPC_SYSCTLS = {"kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall", "kernel.shmmax",
               "kernel.shmmni", "kernel.shm_rmid_forced"}
_SYSCTL_KEY = re.compile(r"[a-z0-9_]+(?:[./][A-Za-z0-9_-]+)+")


@dataclass(frozen=True)
class Ulimit:
    name: str
    soft: int     # -1: unlimited
    hard: int

    def oci(self) -> dict:
        def val(v: int) -> int:
            return UNLIMITED if v < 0 else v
        return {"type": RLIMITS[self.name], "soft": val(self.soft), "hard": val(self.hard)}

    def __str__(self) -> str:
        return f"{self.name}={self.soft}:{self.hard}"


def make_ulimit(name: str, soft: int, hard: int | None = None) -> Ulimit:
    if name not in RLIMITS:
        raise ConfigError(f"unknown ulimit {name!r} (known: {', '.join(sorted(RLIMITS))})")
    hard = soft if hard is None else hard
    for v in (soft, hard):
        if isinstance(v, bool) or not isinstance(v, int) or v < -1:
            raise ConfigError(f"ulimit {name}: {v!r} is not a number (or -1 for unlimited)")
    if hard != -1 and (soft == -1 or soft > hard):
        raise ConfigError(f"ulimit {name}: the soft limit {soft} is above the hard limit {hard}")
    return Ulimit(name, soft, hard)


def parse_ulimit(text: str) -> Ulimit:
    """`--ulimit NAME=SOFT[:HARD]`."""
    name, sep, value = str(text).partition("=")
    if not sep or not value:
        raise ConfigError(f"bad --ulimit {text!r} (want NAME=SOFT[:HARD], e.g. nofile=1024:2048)")
    soft, _, hard = value.partition(":")
    try:
        return make_ulimit(name, int(soft), int(hard) if hard else None)
    except ValueError:
        raise ConfigError(f"bad --ulimit {text!r}: limits are numbers (or -1 for unlimited)") from None


def check_sysctl(key: str, host_network: bool = False) -> None:
    if not _SYSCTL_KEY.fullmatch(key):
        raise ConfigError(f"sysctl {key!r} is not a sysctl name")
    if key in IPC_SYSCTLS or key.startswith("fs.mqueue."):
        return
    if key.startswith("net."):
        if host_network:
            raise ConfigError(f"sysctl {key!r} is not allowed with the host's network (it would change the host)")
        return
    raise ConfigError(f"sysctl {key!r} is not namespaced: only net.*, fs.mqueue.* and the IPC kernel.msg*, "
                      "kernel.sem, kernel.shm* keys can be set per container")


def parse_sysctls(items: Iterable[str] | Mapping[str, object], host_network: bool = False
                  ) -> tuple[tuple[str, str], ...]:
    """`--sysctl K=V` values, or compose's mapping / list."""
    pairs = []
    if isinstance(items, Mapping):
        pairs = [(str(k), v) for k, v in items.items()]
    else:
        for item in items:
            k, sep, v = str(item).partition("=")
            if not sep:
                raise ConfigError(f"bad sysctl {item!r} (want KEY=VALUE)")
            pairs.append((k, v))
    out = {}
    for k, v in pairs:
        k = k.strip().replace("/", ".")
        check_sysctl(k, host_network)
        if v is None or isinstance(v, (dict, list)):
            raise ConfigError(f"sysctl {k}: want a value")
        out[k] = str(v).lower() if isinstance(v, bool) else str(v)
    return tuple(out.items())
