"""SSH host keys from the console output cloud-init writes at first boot.

cloud-init's `cc_keys_to_console` prints

    ec2: #############################################################
    -----BEGIN SSH HOST KEY FINGERPRINTS-----
    ec2: 256 SHA256:abc... root@host (ED25519)
    -----END SSH HOST KEY FINGERPRINTS-----
    -----BEGIN SSH HOST KEY KEYS-----
    ssh-ed25519 AAAA... root@host
    -----END SSH HOST KEY KEYS-----

Lines may carry an "ec2: " prefix, a syslog/kernel-time prefix, or CRs from the serial port.
A re-run (new instance id on the same disk) prints new blocks: the last complete one wins.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

_FP = re.compile(r"(\d+)\s+((?:SHA256|MD5):\S+)\s+.*\((\w+)\)\s*$")
_KEY = re.compile(r"(?:^|\s)((?:ssh|ecdsa|sk)-[a-z0-9@.-]+)\s+(AAAA[A-Za-z0-9+/=]+)(?:\s|$)")


@dataclass(frozen=True)
class HostKeys:
    fingerprints: dict[str, str]   # key type (ED25519, ECDSA, RSA) -> "SHA256:..."
    keys: list[str]                # "ssh-ed25519 AAAA..." lines, for known_hosts

    def to_json(self):
        return {"fingerprints": self.fingerprints, "keys": self.keys}


def _blocks(text: str, name: str) -> list[list[str]]:
    """Lines between BEGIN/END markers. Markers and lines may carry any prefix (kernel time,
    syslog "<14>Nov 22 10:00:00 ec2: ", "cloud-init[123]: "), so match inside the line."""
    begin, end = f"-----BEGIN {name}-----", f"-----END {name}-----"
    out, cur = [], None
    for line in text.replace("\r", "").splitlines():
        if begin in line:
            cur = []
        elif end in line:
            if cur is not None:
                out.append(cur)
            cur = None
        elif cur is not None and line.strip():
            cur.append(line.strip())
    return out


def parse_host_keys(console: str) -> HostKeys | None:
    """The host keys of the LAST boot that printed a complete block; None if none yet."""
    fps_blocks = _blocks(console, "SSH HOST KEY FINGERPRINTS")
    key_blocks = _blocks(console, "SSH HOST KEY KEYS")
    if not fps_blocks and not key_blocks:
        return None
    fingerprints = {}
    for line in fps_blocks[-1] if fps_blocks else []:
        m = _FP.search(line)
        if m:
            fingerprints[m.group(3).upper()] = m.group(2)
    keys = []
    for line in key_blocks[-1] if key_blocks else []:
        m = _KEY.search(line)
        if m:
            keys.append(f"{m.group(1)} {m.group(2)}")
    if not fingerprints and not keys:
        return None
    return HostKeys(fingerprints, keys)
