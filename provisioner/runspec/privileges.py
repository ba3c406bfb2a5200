"""Capabilities as `docker run --cap-add/--cap-drop/--privileged` and compose's `cap_add`,
`cap_drop`, `privileged` give them (moby oci/caps: NormalizeLegacyCapabilities, TweakCapabilities).

Names are taken with or without the CAP_ prefix, in any case; ALL means every capability. The
set a container gets: privileged → all; --cap-add ALL → all (drops ignored, as Docker); --cap-drop
ALL → only the added ones; else Docker's default set minus the drops plus the adds.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from ..errors import ConfigError

# capability(7) numbers 0..40, in order (the runtime's table: native/src/caps.c)
ALL_CAPS = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
    "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)
# moby oci/caps/defaults.go
DEFAULT_CAPS = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID",
    "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL",
    "CAP_AUDIT_WRITE",
)


def normalize_cap(name: str) -> str:
    """"net_admin", "NET_ADMIN", "CAP_NET_ADMIN" → "CAP_NET_ADMIN"; "all" → "ALL"."""
    text = str(name).strip().upper()
    if text == "ALL":
        return "ALL"
    full = text if text.startswith("CAP_") else "CAP_" + text
    if full not in ALL_CAPS:
        raise ConfigError(f"unknown capability {name!r}")
    return full


@dataclass(frozen=True)
class Privileges:
    cap_add: tuple[str, ...] = ()     # normalised names (or "ALL")
    cap_drop: tuple[str, ...] = ()
    privileged: bool = False

    @classmethod
    def parse(cls, cap_add: Iterable[str] = (), cap_drop: Iterable[str] = (), privileged: bool = False
              ) -> "Privileges":
        return cls(tuple(dict.fromkeys(normalize_cap(c) for c in cap_add)),
                   tuple(dict.fromkeys(normalize_cap(c) for c in cap_drop)), bool(privileged))

    def capabilities(self, last_cap: int = len(ALL_CAPS) - 1) -> list[str]:
        """The container's capability set (sorted); `last_cap` is the host kernel's highest."""
        known = ALL_CAPS[:last_cap + 1]
        if self.privileged or "ALL" in self.cap_add:
            return sorted(known)
        adds = [c for c in self.cap_add if c in known]
        if "ALL" in self.cap_drop:
            return sorted(set(adds))
        return sorted((set(DEFAULT_CAPS) - set(self.cap_drop)) | set(adds))

    def is_default(self) -> bool:
        return self == Privileges()
