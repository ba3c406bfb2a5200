"""How the container's main process is run and stopped, and what image it may use: Docker's
--init, -t/--tty, -i/--interactive, --stop-signal, --stop-timeout, --platform, --pull, --log-opt
(compose: init, tty, stdin_open, stop_signal, stop_grace_period, platform, pull_policy, logging).
"""
from __future__ import annotations

import platform as _platform
import re
import signal as _signal
from dataclasses import dataclass

from ..errors import ConfigError
from .resources import parse_size

DEFAULT_STOP_TIMEOUT = 10.0
PULL_POLICIES = ("always", "missing", "never")
# compose spellings of the same policies
_PULL_ALIASES = {"if_not_present": "missing", "missing": "missing", "always": "always", "never": "never"}
LOG_DRIVERS = ("json-file", "local")
_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64", "armv7l": "arm",
         "armhf": "arm", "arm": "arm", "i386": "386", "i686": "386", "386": "386", "ppc64le": "ppc64le",
         "s390x": "s390x", "riscv64": "riscv64"}


def check_signal(text: str | int) -> str:
    """SIGTERM, TERM, 15 → the signal's name (SIGTERM)."""
    t = str(text).strip().upper()
    if t.isdigit():
        try:
            return _signal.Signals(int(t)).name
        except ValueError:
            raise ConfigError(f"unknown signal {text!r}") from None
    name = t if t.startswith("SIG") else "SIG" + t
    if name not in _signal.Signals.__members__ and not re.fullmatch(r"SIGRTM(IN|AX)([+-]\d+)?", name):
        raise ConfigError(f"unknown signal {text!r}")
    return name


@dataclass(frozen=True)
class Platform:
    os: str
    arch: str
    variant: str | None = None

    def __str__(self) -> str:
        return f"{self.os}/{self.arch}" + (f"/{self.variant}" if self.variant else "")


def parse_platform(text: str) -> Platform:
    parts = str(text).strip().lower().split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise ConfigError(f"bad platform {text!r} (want OS/ARCH[/VARIANT], e.g. linux/amd64)")
    arch = _ARCH.get(parts[1], parts[1])
    return Platform(parts[0], arch, parts[2] if len(parts) == 3 else None)


def host_platform(machine: str | None = None) -> Platform:
    m = machine or _platform.machine()
    return Platform("linux", _ARCH.get(m, m))


def check_platform(wanted: Platform, machine: str | None = None) -> None:
    """Images run natively or not at all: a platform other than this host's is an error."""
    host = host_platform(machine)
    if wanted.os != "linux" or wanted.arch != host.arch:
        raise ConfigError(f"platform {wanted} is not this host's ({host}); provisioner runs images natively, "
                          "without emulation")


def parse_pull_policy(text: str) -> str:
    p = _PULL_ALIASES.get(str(text).strip())
    if p is None:
        raise ConfigError(f"pull policy {text!r} is not one of always, missing (if_not_present), never")
    return p


@dataclass(frozen=True)
class LogConfig:
    """The supervisor's log: Docker's json-file driver and its max-size/max-file options; `local` is
    the same file here (the stack parser says so). There is no `none`: the supervisor reads a failed
    start's error from the log."""

    driver: str = "json-file"
    max_size: int | None = None        # bytes per file
    max_files: int | None = None

    def is_default(self) -> bool:
        return self == LogConfig()


def parse_log_config(driver: str | None, options: dict[str, str] | None = None) -> LogConfig:
    driver = driver or "json-file"
    if driver not in LOG_DRIVERS:
        raise ConfigError(f"logging driver {driver!r} is not available (provisioner keeps a json-file log: bound it "
                          "with max-size/max-file, ship it with the host's logging: settings)")
    max_size = max_files = None
    for k, v in (options or {}).items():
        if k == "max-size":
            max_size = parse_size(v, "max-size")
            if max_size < 1024:
                raise ConfigError(f"max-size {v!r} is below 1k")
        elif k == "max-file":
            try:
                max_files = int(str(v))
            except ValueError:
                raise ConfigError(f"max-file {v!r} is not a number") from None
            if max_files < 1:
                raise ConfigError(f"max-file {v!r} must be at least 1")
        elif k in ("labels", "labels-regex", "env", "env-regex", "tag", "compress", "mode", "max-buffer-size"):
            continue   # metadata the json-file driver would add to each line; the shim's lines carry none
        else:
            raise ConfigError(f"log option {k!r} is not one provisioner's json-file log takes (max-size, max-file)")
    return LogConfig(driver, max_size, max_files)
