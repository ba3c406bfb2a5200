"""Which stack and service each of this host's containers is, from what `up` records
(`<root>/stacks/<stack>.json`: per service, the container made for it). Read by the metrics
endpoint and the log shipper, which label every series and line with it."""
from __future__ import annotations

import json
import os
from pathlib import Path

from .names import STATE_DIR


def service_labels(root: str | os.PathLike) -> dict[str, tuple[str, str]]:
    """container name -> (stack, service), for every stack brought up here; an unreadable state
    file is skipped (its containers are then labelled by name alone)."""
    out: dict[str, tuple[str, str]] = {}
    for path in sorted((Path(root) / STATE_DIR).glob("*.json")):
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        services = state.get("services") if isinstance(state, dict) else None
        for service, entry in (services or {}).items():
            if isinstance(entry, dict) and isinstance(entry.get("container"), str):
                out[entry["container"]] = (path.stem, str(service).split("#", 1)[0])   # "<service>#<n>": a replica
    return out
