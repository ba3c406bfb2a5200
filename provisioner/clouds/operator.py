"""Where the operator's SSH comes from: the source address of the local default route.

Behind NAT this is a private address, which is why `launch` prints the CIDR it used and where it
came from; set `ssh_cidr` (stack) or `--ssh-cidr` to name the real range.
"""
from __future__ import annotations

import ipaddress
import re

from ..errors import CommandError
from ..runner import Runner

# TEST-NET-1: never routed, so `ip route get` just reports which source address would be used.
_PROBE = "192.0.2.1"


def detect_operator_cidr(runner: Runner) -> str | None:
    try:
        out = runner.run(["ip", "-o", "route", "get", _PROBE]).stdout
    except CommandError:
        return None
    m = re.search(r"\bsrc\s+(\S+)", out)
    if not m:
        return None
    try:
        addr = ipaddress.ip_address(m.group(1))
    except ValueError:
        return None
    return f"{addr}/{addr.max_prefixlen}"
