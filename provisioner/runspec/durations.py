"""Durations as compose and Docker's --health-* flags write them: "1m30s", "10s", "500ms", "1h"."""
from __future__ import annotations

import re
from typing import Any

_DURATION = re.compile(r"(?:\d+(?:\.\d+)?(?:h|m|s|ms|us|ns))+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s|us|ns)")
_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}


def parse_duration(text: Any) -> float:
    """Seconds. A bare number is seconds (compose reads it so). Raises ValueError."""
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise ValueError(f"{text!r} is not a duration like 10s or 1m30s")
    if isinstance(text, (int, float)):
        if text < 0:
            raise ValueError(f"{text!r} is negative")
        return float(text)
    s = text.strip()
    if not _DURATION.fullmatch(s):
        raise ValueError(f"{text!r} is not a duration like 10s or 1m30s")
    return sum(float(n) * _SECONDS[u] for n, u in _DURATION_PART.findall(s))
