"""The stack file: hosts, the services placed on them, and their disks."""
from .loader import load_stack, parse_stack
from .model import CloudSettings, EphemeralSpec, Host, RootDisk, Service, Stack, VolumeSpec
from .ports import PublishedPort, parse_port

__all__ = ["load_stack", "parse_stack", "Stack", "Host", "Service", "CloudSettings", "RootDisk", "VolumeSpec",
           "EphemeralSpec", "PublishedPort", "parse_port"]
