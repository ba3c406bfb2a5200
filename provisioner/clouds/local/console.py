"""Read the SSH host key fingerprints cloud-init prints on the serial console.

cloud-init's keys_to_console module writes a block like
    -----BEGIN SSH HOST KEY FINGERPRINTS-----
    256 SHA256:Qx… root@web (ED25519)
    -----END SSH HOST KEY FINGERPRINTS-----
(lines may carry a syslog prefix such as "<14>Nov 22 21:40:01 ec2: "). Those fingerprints are what
the SSH client verifies the server's key against: no trust on first use.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

BEGIN = "-----BEGIN SSH HOST KEY FINGERPRINTS-----"
END = "-----END SSH HOST KEY FINGERPRINTS-----"
_LINE = re.compile(r"(\d+)\s+(SHA256:[A-Za-z0-9+/]+={0,2})\s+.*\((\w+)\)\s*$")


@dataclass(frozen=True)
class Fingerprint:
    bits: int
    sha256: str   # "SHA256:<base64 without padding>", as ssh-keygen -l prints it
    type: str     # ED25519, ECDSA, RSA


def parse_fingerprints(text: str) -> list[Fingerprint]:
    """The fingerprints of the LAST complete block (a reboot prints it again)."""
    last: list[Fingerprint] | None = None
    current: list[Fingerprint] | None = None
    for raw in text.splitlines():
        line = raw.replace("\r", "")
        if BEGIN in line:
            current = []
        elif END in line and current is not None:
            last, current = current, None
        elif current is not None:
            m = _LINE.search(line)
            if m:
                current.append(Fingerprint(int(m.group(1)), m.group(2).rstrip("="), m.group(3).upper()))
    return last or []


def read_fingerprints(console_log: Path) -> list[Fingerprint]:
    try:
        return parse_fingerprints(console_log.read_text(errors="replace"))
    except FileNotFoundError:
        return []
