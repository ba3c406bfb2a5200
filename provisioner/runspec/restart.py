"""Docker's restart policies: `--restart` / compose's `restart:`."""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import ConfigError


@dataclass(frozen=True)
class RestartPolicy:
    """Docker's --restart: no | on-failure[:N] | always | unless-stopped."""

    name: str = "no"
    max_retries: int = 0  # on-failure only; 0 = unlimited

    @classmethod
    def parse(cls, text: str) -> "RestartPolicy":
        text = (text or "no").strip()
        if text in ("no", "always", "unless-stopped"):
            return cls(text)
        m = re.fullmatch(r"on-failure(?::(\d+))?", text)
        if m:
            return cls("on-failure", int(m.group(1) or 0))
        raise ConfigError(f"bad restart policy {text!r} (want no, on-failure[:N], always or unless-stopped)")

    def __str__(self) -> str:
        if self.name == "on-failure" and self.max_retries:
            return f"on-failure:{self.max_retries}"
        return self.name

    def restart_at_boot(self, stop_requested: bool) -> bool:
        """What the host agent does at boot (Docker's daemon start): `always` comes back,
        `unless-stopped` unless the user stopped it. The shim itself treats both alike."""
        return self.name == "always" or (self.name == "unless-stopped" and not stop_requested)
