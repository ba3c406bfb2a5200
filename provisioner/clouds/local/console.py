"""The SSH host keys a local VM printed on its serial console (cloud-init's keys_to_console).

Parsing is shared with the cloud drivers (`provisioner.clouds.console`); this only reads the log
file qemu writes and shapes the result the way the local state keeps it.
"""
from __future__ import annotations

import re
from pathlib import Path

from ..console import parse_host_keys

# On the serial console cloud-init's lines go through syslog and arrive as
# "<14>Nov 22 21:42:20 cloud-init: -----BEGIN SSH HOST KEY FINGERPRINTS-----". The shared parser
# knows the "ec2:" and "[ 12.3] cloud-init[123]:" forms, so drop this prefix first.
_SYSLOG = re.compile(r"^<\d+>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d [\w.-]+(?:\[\d+\])?: ", re.M)


def console_text(console_log: Path) -> str:
    """The console log with the syslog prefix removed, as the shared parser expects it."""
    try:
        text = console_log.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return _SYSLOG.sub("", text.replace("\r", ""))


def read_host_keys(console_log: Path) -> tuple[list[dict], list[str]]:
    """([{"type": "ED25519", "sha256": "SHA256:…"}, …], ["ssh-ed25519 AAAA…", …]); empty before first boot."""
    keys = parse_host_keys(console_text(console_log))
    if keys is None or not keys.fingerprints:
        return [], []
    fps = [{"type": t, "sha256": fp} for t, fp in sorted(keys.fingerprints.items()) if fp.startswith("SHA256:")]
    return fps, list(keys.keys)
