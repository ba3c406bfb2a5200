"""The SSH host keys a local VM printed on its serial console (cloud-init's keys_to_console).

Parsing is shared with the cloud drivers (`provisioner.clouds.console`); this only reads the log
file qemu writes and shapes the result the way the local state keeps it.
"""
from __future__ import annotations

from pathlib import Path

from ..console import parse_host_keys


def read_host_keys(console_log: Path) -> tuple[list[dict], list[str]]:
    """([{"type": "ED25519", "sha256": "SHA256:…"}, …], ["ssh-ed25519 AAAA…", …]); empty before first boot."""
    try:
        text = console_log.read_text(errors="replace")
    except FileNotFoundError:
        return [], []
    keys = parse_host_keys(text)
    if keys is None or not keys.fingerprints:
        return [], []
    fps = [{"type": t, "sha256": fp} for t, fp in sorted(keys.fingerprints.items()) if fp.startswith("SHA256:")]
    return fps, list(keys.keys)
