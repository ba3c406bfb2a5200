"""The operator's SSH key for a stack: import a given public key, or create one per stack.

Created keys live under the user's config dir (`$XDG_CONFIG_HOME/provisioner/keys/<stack>/`,
default ~/.config/...), private key mode 0600, so the later SSH step finds them again.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..runner import Runner

_PUBKEY = re.compile(r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(?:256|384|521)) [A-Za-z0-9+/=]+( .*)?$")


@dataclass(frozen=True)
class OperatorKey:
    public_key: str               # one line, "ssh-ed25519 AAAA... comment"
    private_key: Path | None      # None when the operator brought their own key
    created: bool                 # True when this call generated it

    def to_json(self):
        return {"public_key": self.public_key, "private_key": str(self.private_key) if self.private_key else None,
                "created": self.created}


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "provisioner"


def key_dir(stack: str, base: Path | None = None) -> Path:
    return (base or config_dir()) / "keys" / stack


def read_public_key(path: str | Path) -> str:
    try:
        text = Path(path).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read SSH public key: {exc.strerror}", str(path)) from None
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    if len(lines) != 1 or not _PUBKEY.fullmatch(lines[0].strip()):
        raise ConfigError("not an OpenSSH public key (expected one 'ssh-ed25519 AAAA...' line)", str(path), 1)
    return lines[0].strip()


def operator_key(stack: str, runner: Runner, public_key_path: str | Path | None = None,
                 base: Path | None = None) -> OperatorKey:
    """The key to install for `stack`: the given public key, or the stack's own (created once)."""
    if public_key_path:
        return OperatorKey(read_public_key(public_key_path), None, False)
    d = key_dir(stack, base)
    private = d / "id_ed25519"
    public = d / "id_ed25519.pub"
    if private.exists() and public.exists():
        return OperatorKey(read_public_key(public), private, False)
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    for stale in (private, public):
        stale.unlink(missing_ok=True)
    runner.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"provisioner-{stack}", "-f", str(private)])
    os.chmod(private, 0o600)
    return OperatorKey(read_public_key(public), private, True)
