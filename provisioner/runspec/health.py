"""A container's healthcheck, and which one it gets, as Docker decides it: the image's HEALTHCHECK unless the run
says otherwise. `docker run --health-cmd/--health-interval/--health-timeout/--health-retries/
--health-start-period` replace single fields of the image's check, `--no-healthcheck` (or a stack's
`healthcheck: {disable: true}`) turns it off, and a stack's own `healthcheck:` replaces it whole.

The image config's Healthcheck: {"Test": ["CMD", ...] | ["CMD-SHELL", "cmd"] | ["NONE"],
"Interval"/"Timeout"/"StartPeriod": nanoseconds (0: the default), "Retries": n (0: the default)}.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from ..errors import ConfigError
from .durations import parse_duration

DEFAULTS = {"interval": 30.0, "timeout": 30.0, "retries": 3, "start_period": 0.0}
_IMAGE_KEYS = {"interval": "Interval", "timeout": "Timeout", "start_period": "StartPeriod"}


@dataclass(frozen=True)
class Healthcheck:
    """A check given whole (a stack's `healthcheck:`): the argv to exec in the container
    ("CMD-SHELL x" is ("/bin/sh", "-c", x)), seconds, and how many failures make it unhealthy."""

    test: tuple[str, ...]
    interval: float = 30.0
    timeout: float = 30.0
    retries: int = 3
    start_period: float = 0.0
    start_interval: float = 0.0   # between checks during the start period (0: the interval); compose's

    def to_json(self) -> dict:
        d = {**asdict(self), "test": list(self.test)}
        if not self.start_interval:
            d.pop("start_interval")   # added later: a record without it reads the same
        return d


@dataclass(frozen=True)
class HealthFlags:
    """`docker run`'s healthcheck flags, as given (None: not given)."""

    cmd: str | None = None
    interval: str | None = None
    timeout: str | None = None
    retries: int | None = None
    start_period: str | None = None
    disable: bool = False

    def given(self) -> list[str]:
        return [f"--health-{k.replace('_', '-')}" for k in ("cmd", "interval", "timeout", "retries", "start_period")
                if getattr(self, k) is not None]

    def check(self) -> dict:
        """The flags' values parsed (seconds, count); one ConfigError naming the flag otherwise."""
        if self.disable and self.given():
            raise ConfigError(f"--no-healthcheck conflicts with {', '.join(self.given())} (as in Docker)")
        out: dict = {}
        for key in ("interval", "timeout", "start_period"):
            text = getattr(self, key)
            if text is None:
                continue
            try:
                out[key] = parse_duration(text)
            except ValueError as exc:
                raise ConfigError(f"--health-{key.replace('_', '-')}: {exc}") from None
            if out[key] <= 0 and key != "start_period":
                raise ConfigError(f"--health-{key.replace('_', '-')} must be more than 0")
        if self.retries is not None:
            if self.retries < 0:
                raise ConfigError("--health-retries cannot be negative")
            out["retries"] = self.retries
        if self.cmd is not None:
            if not self.cmd.strip():
                raise ConfigError("--health-cmd is empty")
            out["test"] = ["/bin/sh", "-c", self.cmd]
        return out


def _image_test(test: object) -> list[str] | None:
    if not isinstance(test, list) or not test or not all(isinstance(x, str) for x in test):
        return None
    if test[0] == "CMD" and len(test) > 1:
        return test[1:]
    if test[0] == "CMD-SHELL" and len(test) == 2:
        return ["/bin/sh", "-c", test[1]]
    return None   # ["NONE"], or nothing runnable


def resolve(flags: HealthFlags, image_config: dict, whole: dict | None = None) -> dict | None:
    """The healthcheck to run (test argv, seconds, retries) or None. `whole`: a stack's own check."""
    given = flags.check()
    if flags.disable:
        return None
    if whole is not None:
        return whole
    image = image_config.get("Healthcheck") if isinstance(image_config.get("Healthcheck"), dict) else {}
    start_interval = image.get("StartInterval")
    test = given.get("test") or _image_test(image.get("Test"))
    if test is None:
        if given:
            raise ConfigError(f"{', '.join(flags.given())} without --health-cmd: the image has no HEALTHCHECK")
        return None
    out = {"test": test}
    for key, default in DEFAULTS.items():
        if key in given:
            out[key] = given[key]
        elif key == "retries":
            out[key] = image.get("Retries") if isinstance(image.get("Retries"), int) and image["Retries"] > 0 \
                else default
        else:
            ns = image.get(_IMAGE_KEYS[key])
            out[key] = ns / 1e9 if isinstance(ns, int) and ns > 0 else default
    if isinstance(start_interval, int) and start_interval > 0:   # an image's HEALTHCHECK --start-interval
        out["start_interval"] = start_interval / 1e9
    return out
