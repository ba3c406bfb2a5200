"""A service's `healthcheck:` (compose-spec): test (CMD, CMD-SHELL, NONE or a shell string),
interval, timeout, retries, start_period, start_interval (how often during the start period),
disable. None: no check of the stack's own (disabled, or absent:
the caller tells them apart)."""
from __future__ import annotations

from ..runspec.durations import parse_duration
from ..runspec.health import Healthcheck
from .fields import Fields

KEYS = {"test", "interval", "timeout", "retries", "start_period", "start_interval", "disable"}


def parse(f: Fields, d: dict, where: str) -> Healthcheck | None:
    h = d.get("healthcheck")
    if h is None:
        return None
    w = f"{where}.healthcheck"
    if not isinstance(h, dict):
        raise f.fail(f"{w} must be a mapping", d, "healthcheck")
    for k in h:
        if k not in KEYS:
            raise f.fail(f"{w}: unsupported key {k!r} (supported: {', '.join(sorted(KEYS))})", h, k)
    if f.boolean(h, "disable", w, False):
        return None
    test = h.get("test")
    if isinstance(test, str):
        argv: tuple[str, ...] = ("/bin/sh", "-c", test)
    elif isinstance(test, list) and test and all(isinstance(x, str) for x in test):
        kind = test[0]
        if kind == "NONE":
            return None
        if kind == "CMD" and len(test) > 1:
            argv = tuple(test[1:])
        elif kind == "CMD-SHELL" and len(test) == 2:
            argv = ("/bin/sh", "-c", test[1])
        else:
            raise f.fail(f"{w}.test: want [\"CMD\", args...], [\"CMD-SHELL\", \"command\"], [\"NONE\"] or a "
                         "string", h, "test")
    else:
        raise f.fail(f"{w}: 'test' is required (a string or a [\"CMD\", ...] list)", h, "test" if "test" in h else None)
    times = {}
    for key, default in (("interval", 30.0), ("timeout", 30.0), ("start_period", 0.0), ("start_interval", 0.0)):
        if key in h:
            try:
                times[key] = parse_duration(h[key])
            except ValueError as exc:
                raise f.fail(f"{w}.{key}: {exc}", h, key) from None
        else:
            times[key] = default
    for key in ("interval", "timeout") + (("start_interval",) if "start_interval" in h else ()):
        if times[key] <= 0:
            raise f.fail(f"{w}.{key} must be more than 0", h, key)
    retries = h.get("retries", 3)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 1:
        raise f.fail(f"{w}.retries must be a positive integer", h, "retries")
    return Healthcheck(argv, times["interval"], times["timeout"], retries, times["start_period"],
                       times["start_interval"])
