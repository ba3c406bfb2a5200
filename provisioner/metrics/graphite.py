"""Pushing the same series to Graphite (carbon's plaintext protocol, `path value timestamp\\n` over
TCP, port 2003 by default) every `interval` seconds.

One connection, kept open and reopened when carbon goes away. A push that cannot be delivered
is dropped and counted (the next one carries the counters' new values; Graphite's gauges have a
gap): metrics are sampled, not logs, so nothing is buffered for them.
"""
from __future__ import annotations

import logging
import socket
import threading
from typing import Callable

log = logging.getLogger(__name__)


class GraphitePusher:
    def __init__(self, host: str, port: int, interval: float, lines: Callable[[], list[str]], *,
                 timeout: float = 5.0):
        self.host, self.port, self.interval, self.lines, self.timeout = host, port, interval, lines, timeout
        self.sock: socket.socket | None = None
        self.pushes = 0
        self.failures = 0
        self._down = False

    def _connect(self) -> socket.socket:
        if self.sock is None:
            self.sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        return self.sock

    def _drop(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def push_once(self) -> bool:
        payload = "".join(line + "\n" for line in self.lines()).encode()
        for attempt in (1, 2):   # a connection carbon closed since the last push: reconnect once
            try:
                self._connect().sendall(payload)
                self.pushes += 1
                if self._down:
                    log.warning("graphite %s:%d reachable again", self.host, self.port)
                    self._down = False
                return True
            except OSError as exc:
                self._drop()
                if attempt == 2:
                    self.failures += 1
                    if not self._down:
                        log.warning("graphite %s:%d: %s; series are dropped until it answers", self.host,
                                    self.port, exc)
                        self._down = True
        return False

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(self.interval):
            self.push_once()
        self._drop()
