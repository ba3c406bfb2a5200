"""Resource limits as `docker run --memory/--cpus` and compose's `mem_limit`/`cpus` write them."""
from __future__ import annotations

import re

from ..errors import ConfigError

CPU_PERIOD = 100_000  # µs, Docker's --cpus period
_MEM = re.compile(r"(\d+(?:\.\d+)?)\s*([bkmgt]?)b?", re.I)
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_bytes(text: str | int) -> int | None:
    """A size as Docker writes one: "512m", "1g", "1.5g", "100000" (bytes), binary units; None if
    it is not one."""
    m = _MEM.fullmatch(str(text).strip())
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()]) if m else None


def parse_size(text, what: str = "size") -> int:
    """A size an option takes (parse_bytes), or one ConfigError naming the option (`what`)."""
    n = None if isinstance(text, bool) else parse_bytes(text)
    if n is None:
        raise ConfigError(f"bad {what} value {text!r} (want a number with an optional unit b, k, m, g or t)")
    return n


def parse_memory(text: str, what: str = "--memory") -> int:
    """Docker's RAMInBytes: "512m", "1g", "1.5g", "100000" (bytes); binary units; ≥ 6 MB."""
    n = parse_size(text, what)
    if n < 6 * (1 << 20):
        raise ConfigError(f"{what} {text} is below the 6 MB minimum Docker enforces")
    return n


def parse_pids(value, what: str = "--pids-limit") -> int | None:
    """A pids limit: a positive number; 0 or -1 mean unlimited (None), as Docker."""
    try:
        n = int(str(value).strip())
    except ValueError:
        raise ConfigError(f"bad {what} value {value!r} (want a number; -1 for unlimited)") from None
    if isinstance(value, bool) or n < -1:
        raise ConfigError(f"bad {what} value {value!r} (want a number; -1 for unlimited)")
    return n if n > 0 else None


def parse_cpu_shares(value, what: str = "--cpu-shares") -> int:
    try:
        n = int(str(value).strip())
    except ValueError:
        raise ConfigError(f"bad {what} value {value!r} (want a number, 2 to 262144)") from None
    if isinstance(value, bool) or not 2 <= n <= 262144:
        raise ConfigError(f"bad {what} value {value!r} (want a number, 2 to 262144)")
    return n


def parse_cpus(text: str) -> int:
    """--cpus → CFS quota in µs per CPU_PERIOD."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ConfigError(f"bad --cpus value {text!r} (want a number such as 0.5 or 2)") from None
    if not value > 0:
        raise ConfigError(f"--cpus must be more than 0 (got {text})")
    quota = int(round(value * CPU_PERIOD))
    if quota < 1000:
        raise ConfigError(f"--cpus {text} is too small (the kernel's minimum CFS quota is 1 ms)")
    return quota
