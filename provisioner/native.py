"""Where the native binaries live — the OCI runtime (native/ → provision-runtime) and the supervisor
(native/shim → provision-shim) — and the runtime's version."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from .errors import CommandError
from .runner import Runner

BINARY = "provision-runtime"
SHIM = "provision-shim"
_PKG = Path(__file__).resolve().parent


def find_binary(name: str, env_var: str, build_dir: Path) -> str | None:
    """A native binary: $ENV_VAR, the one shipped in the wheel (_bin/), the checkout's build, PATH."""
    env = os.environ.get(env_var)
    if env:
        return env if os.access(env, os.X_OK) else None
    for cand in (_PKG / "_bin" / name, build_dir / name):
        if os.access(cand, os.X_OK):
            return str(cand)
    return shutil.which(name)


def runtime_path() -> str | None:
    """The runtime to use: $PROVISION_RUNTIME, the shipped binary, the checkout's build, PATH."""
    return find_binary(BINARY, "PROVISION_RUNTIME", _PKG.parent / "native" / "build")


def shim_path() -> str | None:
    """The supervisor to use: $PROVISION_SHIM, the shipped binary, the checkout's build, PATH."""
    return find_binary(SHIM, "PROVISION_SHIM", _PKG.parent / "native" / "shim" / "build")


def runtime_version(path: str | None = None, runner: Runner | None = None) -> str | None:
    path = path or runtime_path()
    if not path:
        return None
    try:
        out = (runner or Runner()).run([path, "--version"], check=False, timeout=10)
    except CommandError:   # not executable, or timed out
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
