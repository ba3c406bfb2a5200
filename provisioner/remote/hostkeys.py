"""Host keys, verified against fingerprints read out of band (never trust on first use).

The fingerprints come from the console log, where cloud-init prints them at first boot (the
clouds' console output, `provisioner.clouds.local.console`). paramiko's connection refuses a key
whose SHA256 fingerprint is not among them; for an interactive OpenSSH session, each key type the
server offers is fetched and checked first, and OpenSSH is handed a known_hosts file holding only
keys that matched.
"""
from __future__ import annotations

import base64
import hashlib
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import paramiko

from ..errors import HostError

# Host key algorithms asked for one at a time, so every key type the server has gets verified.
KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "rsa-sha2-512")


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    user: str
    key_file: Path
    fingerprints: tuple[str, ...]  # "SHA256:…"

    @property
    def where(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


def target_for(fingerprints, port: int, user: str, key_file: Path, host: str = "127.0.0.1") -> Target:
    return Target(host=host, port=port, user=user, key_file=Path(key_file), fingerprints=tuple(fingerprints))


def sha256_fingerprint(key: paramiko.PKey) -> str:
    """"SHA256:<base64, no padding>" of the key blob: the form `ssh-keygen -l` and cloud-init print."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


class HostKeyMismatch(HostError):
    """The server's host key is not one the console reported: possibly not the machine we launched."""


def _mismatch(where: str, key: paramiko.PKey, allowed: set[str]) -> HostKeyMismatch:
    return HostKeyMismatch(f"ssh {where}: host key {key.get_name()} {sha256_fingerprint(key)} is not among the "
                           f"fingerprints the console reported ({', '.join(sorted(allowed)) or 'none'}); refusing")


class VerifyFingerprints(paramiko.MissingHostKeyPolicy):
    def __init__(self, allowed: set[str], where: str):
        self.allowed = allowed
        self.where = where

    def missing_host_key(self, client, hostname, key):
        if sha256_fingerprint(key) not in self.allowed:
            raise _mismatch(self.where, key, self.allowed)
        client.get_host_keys().add(hostname, key.get_name(), key)


def known_hosts_name(target: Target) -> str:
    return target.host if target.port == 22 else f"[{target.host}]:{target.port}"


def fetch_host_keys(target: Target, timeout: float = 10.0) -> list[paramiko.PKey]:
    """The server's host keys of each type it offers, each checked against the console's fingerprints.

    A key that does not match is a refusal (HostKeyMismatch), never a prompt; a server offering
    none of the types that matched is an error too.
    """
    allowed = set(target.fingerprints)
    if not allowed:
        raise HostError(f"ssh {target.where}: no host key fingerprints to verify against")
    keys, last = [], ""
    for kt in KEY_TYPES:
        try:
            sock = socket.create_connection((target.host, target.port), timeout=timeout)
        except OSError as exc:
            raise HostError(f"ssh {target.where}: cannot connect ({exc})") from None
        t = paramiko.Transport(sock)
        try:
            t.get_security_options().key_types = (kt,)
            t.start_client(timeout=timeout)
            key = t.get_remote_server_key()
        except (paramiko.SSHException, EOFError, OSError) as exc:
            last = f"{kt}: {exc}"
            continue  # the server has no key of this type
        finally:
            t.close()
        if sha256_fingerprint(key) not in allowed:
            raise _mismatch(target.where, key, allowed)
        keys.append(key)
    if not keys:
        raise HostError(f"ssh {target.where}: could not read a host key ({last})")
    return keys


def write_known_hosts(path: Path, target: Target, keys: list[paramiko.PKey]) -> Path:
    name = known_hosts_name(target)
    path = Path(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        for k in keys:
            f.write(f"{name} {k.get_name()} {k.get_base64()}\n")
    return path


def openssh_argv(target: Target, known_hosts: Path, keys: list[paramiko.PKey], command: Sequence[str] = (),
                 ssh: str = "ssh") -> list[str]:
    """OpenSSH's argv for a session that trusts exactly the verified keys in `known_hosts`."""
    algos = []
    for k in keys:
        name = k.get_name()
        algos += ["rsa-sha2-512", "rsa-sha2-256"] if name == "ssh-rsa" else [name]
    return [ssh, "-o", f"UserKnownHostsFile={known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=yes", "-o", "UpdateHostKeys=no", "-o", f"HostKeyAlgorithms={','.join(algos)}",
            "-o", "IdentitiesOnly=yes", "-o", "BatchMode=no", "-i", str(target.key_file), "-p", str(target.port),
            "-l", target.user, target.host, *command]
