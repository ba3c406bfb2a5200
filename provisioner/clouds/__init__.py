"""Cloud drivers (AWS EC2, GCE on libcloud; local qemu), and the cloud-neutral launch/status/destroy."""
from __future__ import annotations

from ..errors import ConfigError
from .base import CLOUDS


def make_driver(cloud: str, *, region: str | None = None, project: str | None = None,
                endpoint: str | None = None, **kw):
    """The driver for `cloud`, configured from arguments and the environment."""
    if cloud == "aws":
        from .aws import AwsCloud

        return AwsCloud(region or "us-east-1", endpoint=endpoint, **kw)
    if cloud == "gce":
        from .gce import GceCloud

        return GceCloud(project=project, endpoint=endpoint, **kw)
    if cloud == "local":
        from .local.adapter import make_local_driver

        return make_local_driver(**kw)
    raise ConfigError(f"unknown cloud {cloud!r} (expected one of: {', '.join(CLOUDS)})")
