"""Where the native runtime binary (native/ → provision-runtime) lives, and its version."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

BINARY = "provision-runtime"
_PKG = Path(__file__).resolve().parent
_CANDIDATES = (
    _PKG / "_bin" / BINARY,  # installed from a wheel
    _PKG.parent / "native" / "build" / BINARY,  # editable install / checkout
)


def runtime_path() -> str | None:
    """The runtime to use: $PROVISION_RUNTIME, the shipped binary, the checkout's build, PATH."""
    env = os.environ.get("PROVISION_RUNTIME")
    if env:
        return env if os.access(env, os.X_OK) else None
    for cand in _CANDIDATES:
        if os.access(cand, os.X_OK):
            return str(cand)
    return shutil.which(BINARY)


def runtime_version(path: str | None = None) -> str | None:
    path = path or runtime_path()
    if not path:
        return None
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10)
    except OSError:
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
