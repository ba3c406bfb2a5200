"""The stack file: hosts, the services placed on them, and their disks, parsed once into a Stack."""
from .loader import load_stack, parse_stack
from .model import (CloudSettings, CloudVolume, EphemeralSpec, Host, LoggingSpec, MetricsSpec, RootDisk, ServiceSpec,
                    Stack)

__all__ = ["load_stack", "parse_stack", "Stack", "Host", "ServiceSpec", "CloudSettings", "RootDisk", "CloudVolume",
           "EphemeralSpec", "MetricsSpec", "LoggingSpec"]
