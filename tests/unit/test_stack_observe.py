"""A host's `metrics:` and `logging:` keys: typed values, and every mistake one StackError naming
file:line — from the loader, and from `provision deploy` before anything is launched."""
from __future__ import annotations

import contextlib
import io
import textwrap

import pytest

from provisioner.cli.main import main
from provisioner.errors import StackError
from provisioner.stack import LoggingSpec, MetricsSpec, load_stack

HEAD = """\
name: shop
hosts:
  - name: web
    services: [frontend]
"""
TAIL = """\
services:
  frontend:
    image: nginx
    ports: ["80:80"]
"""


def _load(tmp_path, host_keys: str):
    p = tmp_path / "stack.yml"
    p.write_text(HEAD + textwrap.indent(textwrap.dedent(host_keys), "    ") + TAIL)
    return load_stack(p), str(p)


def test_metrics_and_logging_parse_into_typed_values(tmp_path):
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    stack, _ = _load(tmp_path, """\
        metrics: {port: 9273, allow_from: 10.1.0.0/16, graphite: "carbon.example:2013", interval: 30s,
                  prefix: ops.shop}
        logging:
          ship_to: tls://logs.example:6514
          buffer: 16m
          ca: ca.pem
        """)
    web = stack.host("web")
    assert web.metrics == MetricsSpec(port=9273, allow_from="10.1.0.0/16", graphite=("carbon.example", 2013),
                                      interval=30.0, prefix="ops.shop", line=5)
    assert web.logging == LoggingSpec(scheme="tls", host="logs.example", port=6514, buffer_bytes=16 << 20,
                                      ca=str(tmp_path / "ca.pem"), line=7)
    assert web.logging.url == "tls://logs.example:6514"


def test_defaults(tmp_path):
    stack, _ = _load(tmp_path, """\
        metrics: {graphite: 192.0.2.7}
        logging: {ship_to: "tcp://[2001:db8::1]:514"}
        """)
    web = stack.host("web")
    assert (web.metrics.port, web.metrics.allow_from, web.metrics.graphite, web.metrics.interval,
            web.metrics.prefix) == (9100, None, ("192.0.2.7", 2003), 10.0, "provisioner")
    assert (web.logging.scheme, web.logging.host, web.logging.port, web.logging.buffer_bytes) == (
        "tcp", "2001:db8::1", 514, 64 << 20)
    assert web.logging.url == "tcp://[2001:db8::1]:514"
    plain, _ = _load(tmp_path, "ssh_cidr: 10.0.0.0/8\n")
    assert plain.host("web").metrics is None and plain.host("web").logging is None


@pytest.mark.parametrize("keys, line, message", [
    ("metrics: 9100\n", 5, "hosts.web.metrics must be a mapping"),
    ("metrics:\n", 5, "hosts.web.metrics must be a mapping"),
    ("metrics: {port: http}\n", 5, "hosts.web.metrics.port must be an integer in 1..65535"),
    ("metrics:\n  port: 70000\n", 6, "hosts.web.metrics.port must be an integer in 1..65535"),
    ("metrics:\n  allow_from: 10.0.0.1/8\n", 6, "hosts.web.metrics.allow_from: 10.0.0.1/8 has host bits set"),
    ("metrics:\n  allow_from: 0.0.0.0/0\n", 6, "opens the metrics port to the whole internet"),
    ("metrics:\n  allow_from: [10.0.0.0/8]\n", 6, "hosts.web.metrics.allow_from must be a non-empty string"),
    ("metrics:\n  graphite: \"carbon:99999\"\n", 6, "hosts.web.metrics.graphite: 'carbon:99999' is not HOST:PORT"),
    ("metrics:\n  graphite: \"http://carbon:2003\"\n", 6, "is not HOST:PORT"),
    ("metrics:\n  graphite: \"bad_host!:2003\"\n", 6, "is not HOST:PORT"),
    ("metrics:\n  interval: 10s\n", 6, "hosts.web.metrics.interval is how often series are pushed to Graphite"),
    ("metrics:\n  graphite: carbon\n  interval: often\n", 7, "hosts.web.metrics.interval: 'often' is not a duration"),
    ("metrics:\n  graphite: carbon\n  interval: 100ms\n", 7, "hosts.web.metrics.interval must be at least 1s"),
    ("metrics:\n  prefix: \"a..b\"\n", 6, "hosts.web.metrics.prefix: 'a..b' is not valid"),
    ("metrics:\n  port: 80\n", 5, "hosts.web.metrics.port: 80 is already the host's published port 80/tcp"),
    ("metrics:\n  port: 22\n", 5, "hosts.web.metrics.port: 22 is already the host's SSH"),
    ("metrics:\n  scrape: yes\n", 6, "unknown key 'scrape' in hosts.web.metrics"),
    ("logging: tcp://logs:514\n", 5, "hosts.web.logging must be a mapping"),
    ("logging: {}\n", 5, "hosts.web.logging: missing required key 'ship_to'"),
    ("logging:\n  ship_to: udp://logs:514\n", 6, "hosts.web.logging.ship_to: 'udp://logs:514' is not tcp://HOST:PORT"),
    ("logging:\n  ship_to: tcp://logs\n", 6, "is not tcp://HOST:PORT or tls://HOST:PORT"),
    ("logging:\n  ship_to: tcp://logs:0\n", 6, "is not tcp://HOST:PORT"),
    ("logging:\n  ship_to: tcp://logs:514/path\n", 6, "is not tcp://HOST:PORT"),
    ("logging:\n  ship_to: tcp://user@logs:514\n", 6, "is not tcp://HOST:PORT"),
    ("logging:\n  ship_to: 514\n", 6, "hosts.web.logging.ship_to must be a non-empty string"),
    ("logging:\n  ship_to: tcp://logs:514\n  buffer: lots\n", 7, "hosts.web.logging.buffer: 'lots' is not a size"),
    ("logging:\n  ship_to: tcp://logs:514\n  buffer: 4k\n", 7, "is not a size of at least 1m"),
    ("logging:\n  ship_to: tcp://logs:514\n  ca: ca.pem\n", 7, "hosts.web.logging.ca is the collector's CA for tls://"),
    ("logging:\n  ship_to: tls://logs:514\n  ca: missing.pem\n", 7, "hosts.web.logging.ca: 'missing.pem' not found"),
    ("logging:\n  ship_to: tcp://logs:514\n  format: json\n", 7, "unknown key 'format' in hosts.web.logging"),
])
def test_bad_keys_are_one_error_at_file_line(tmp_path, keys, line, message):
    with pytest.raises(StackError) as info:
        _load(tmp_path, keys)
    err = info.value
    assert (err.path, err.line) == (str(tmp_path / "stack.yml"), line), str(err)
    assert message in str(err) and str(err).startswith(f"{tmp_path / 'stack.yml'}:{line}: ")
    assert "\n" not in str(err)


def test_deploy_stops_at_a_bad_key_before_anything_launches(tmp_path, monkeypatch):
    """The CLI prints the one line and exits 2; no VM state, key or host record was made."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    stack = tmp_path / "stack.yml"
    stack.write_text(HEAD + "    logging: {ship_to: \"syslog://logs:514\"}\n" + TAIL)
    root = tmp_path / "root"
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exit_:
        main(["--root", str(root), "deploy", "--cloud", "local", "-f", str(stack)])
    lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
    assert exit_.value.code == 2
    assert lines == [f"error: {stack}:5: hosts.web.logging.ship_to: 'syslog://logs:514' is not tcp://HOST:PORT or "
                     "tls://HOST:PORT"]
    assert not (root / "local").exists() and not (root / "deploy").exists()
    assert not (tmp_path / "config").exists()
