"""What a stack's containers and volumes are called on a host: Docker compose's rules
(`<project>-<service>`, `<project>_<volume>`), used by the engine and by the ops commands that
find a service's container on a deployed host; and where `up` records them (`<root>/stacks/`)."""
from __future__ import annotations

STATE_DIR = "stacks"


def container_name(stack: str, service: str) -> str:
    return f"{stack}-{service}"


def volume_name(stack: str, volume: str) -> str:
    return f"{stack}_{volume}"
