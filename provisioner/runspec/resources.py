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


def parse_memory(text: str) -> int:
    """Docker's RAMInBytes: "512m", "1g", "1.5g", "100000" (bytes); binary units; ≥ 6 MB."""
    n = parse_bytes(text)
    if n is None:
        raise ConfigError(f"bad --memory value {text!r} (want a number with an optional unit b, k, m or g)")
    if n < 6 * (1 << 20):
        raise ConfigError(f"--memory {text} is below the 6 MB minimum Docker enforces")
    return n


def parse_size(text: str, flag: str) -> int:
    """A size an option takes (parse_bytes), or one error naming the option."""
    n = parse_bytes(text)
    if n is None:
        raise ConfigError(f"bad {flag} value {text!r} (want a number with an optional unit b, k, m, g or t)")
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
