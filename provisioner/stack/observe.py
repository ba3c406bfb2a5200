"""A host's `metrics:` and `logging:` keys, typed, every mistake a StackError at file:line.

```yaml
hosts:
  - name: web
    metrics:                       # the agent's Prometheus endpoint (node_exporter/cAdvisor names)
      port: 9100                   # default 9100
      allow_from: 10.0.0.0/8       # the host and cloud firewalls open the port to this range only
      graphite: "carbon.example:2003"   # also push the same series, Graphite plaintext (port default 2003)
      interval: 10s                # how often (default 10s)
      prefix: provisioner          # the Graphite path's root (default provisioner)
    logging:
      ship_to: "tls://logs.example:6514"   # or tcp://HOST:PORT: RFC 5424 over RFC 6587 octet counting
      buffer: 64m                  # on-disk buffer while the collector is away (default 64 MiB)
      ca: ca.pem                   # tls: the collector's CA (next to the stack file); default: the system's
```

On the local cloud the port is forwarded on 127.0.0.1 like a published port, and what comes in
through qemu's forward reaches the VM from qemu's gateway, 10.0.2.2: `allow_from: 10.0.2.2/32`
lets exactly this machine scrape it.
"""
from __future__ import annotations

import ipaddress
import os
import re
from urllib.parse import urlsplit

from .. import yamlutil
from ..runspec.durations import parse_duration
from ..runspec.resources import parse_bytes
from .fields import Fields
from .model import LoggingSpec, MetricsSpec

METRICS_KEYS = {"port", "allow_from", "graphite", "interval", "prefix"}
LOGGING_KEYS = {"ship_to", "buffer", "ca"}
SCHEMES = ("tcp", "tls")
DEFAULT_GRAPHITE_PORT = 2003
MIN_BUFFER = 1 << 20
_HOSTNAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}"
                       r"[A-Za-z0-9])?)*\.?")
_PREFIX = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")


def _host_ok(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return bool(_HOSTNAME.fullmatch(host))


def parse_metrics(c: Fields, h: dict, where: str) -> MetricsSpec | None:
    if "metrics" not in h:
        return None
    d = h["metrics"]
    w = f"{where}.metrics"
    if not isinstance(d, dict):
        raise c.fail(f"{w} must be a mapping (`metrics: {{}}` for the defaults: port 9100, closed to "
                     "other machines)", h, "metrics")
    c.keys(d, METRICS_KEYS, w)
    port = c.integer(d, "port", w, 1, 65535) or 9100
    allow = c.string(d, "allow_from", w)
    if allow is not None:
        try:
            net = ipaddress.ip_network(allow, strict=True)
        except ValueError as exc:
            raise c.fail(f"{w}.allow_from: {exc}", d, "allow_from") from None
        if net.prefixlen == 0:
            raise c.fail(f"{w}.allow_from: {allow} opens the metrics port to the whole internet; name your "
                         "range", d, "allow_from")
        allow = str(net)
    graphite = None
    if d.get("graphite") is not None:
        graphite = _host_port(c, d, "graphite", w, DEFAULT_GRAPHITE_PORT)
    interval = 10.0
    if d.get("interval") is not None:
        if graphite is None:
            raise c.fail(f"{w}.interval is how often series are pushed to Graphite: set {w}.graphite too "
                         "(Prometheus scrapes at its own interval)", d, "interval")
        try:
            interval = parse_duration(d["interval"])
        except ValueError as exc:
            raise c.fail(f"{w}.interval: {exc}", d, "interval") from None
        if interval < 1:
            raise c.fail(f"{w}.interval must be at least 1s", d, "interval")
    prefix = c.string(d, "prefix", w, pattern=_PREFIX, hint="dot-separated letters, digits, '_' and '-'")
    return MetricsSpec(port=port, allow_from=allow, graphite=graphite, interval=interval,
                       prefix=prefix or "provisioner", line=yamlutil.line_of(h, "metrics"))


def _host_port(c: Fields, d: dict, key: str, where: str, default_port: int | None) -> tuple[str, int]:
    v = d[key]
    bad = c.fail(f"{where}.{key}: {v!r} is not HOST:PORT", d, key)
    if not isinstance(v, str) or not v.strip():
        raise bad
    try:
        parts = urlsplit(f"//{v.strip()}")
        host, port = parts.hostname, parts.port
    except ValueError:
        raise bad from None
    if parts.username or parts.password or parts.path or parts.query or parts.fragment or not host \
            or not _host_ok(host):
        raise bad
    if port is None:
        if default_port is None or v.rstrip().endswith(":"):
            raise bad
        port = default_port
    if not 1 <= port <= 65535:
        raise bad
    return host, port


def parse_logging(c: Fields, h: dict, where: str) -> LoggingSpec | None:
    if "logging" not in h:
        return None
    d = h["logging"]
    w = f"{where}.logging"
    if not isinstance(d, dict):
        raise c.fail(f"{w} must be a mapping with ship_to: tcp://HOST:PORT or tls://HOST:PORT", h, "logging")
    c.keys(d, LOGGING_KEYS, w)
    url = c.string(d, "ship_to", w, required=True)
    bad = c.fail(f"{w}.ship_to: {url!r} is not tcp://HOST:PORT or tls://HOST:PORT", d, "ship_to")
    try:
        parts = urlsplit(url.strip())
        host, port = parts.hostname, parts.port
    except ValueError:
        raise bad from None
    if parts.scheme not in SCHEMES or not host or not _host_ok(host) or port is None or not 1 <= port <= 65535 \
            or parts.username or parts.password or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise bad
    size = 64 << 20
    if d.get("buffer") is not None:
        raw = d["buffer"]
        size = parse_bytes(raw) if isinstance(raw, (str, int)) and not isinstance(raw, bool) else None
        if size is None or size < MIN_BUFFER:
            raise c.fail(f"{w}.buffer: {raw!r} is not a size of at least 1m (like 64m or 1g)", d, "buffer")
    ca = c.string(d, "ca", w)
    if ca is not None:
        if parts.scheme != "tls":
            raise c.fail(f"{w}.ca is the collector's CA for tls://; {url} is not TLS", d, "ca")
        full = c.relative(ca)
        if not os.path.isfile(full):
            raise c.fail(f"{w}.ca: {ca!r} not found ({full})", d, "ca")
        ca = full
    return LoggingSpec(scheme=parts.scheme, host=host, port=port, buffer_bytes=size, ca=ca,
                       line=yamlutil.line_of(h, "logging"))
