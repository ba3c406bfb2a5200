"""Backoff for throttling and eventual consistency. Clock and sleep are parameters for tests."""
from __future__ import annotations

import random
import time
from typing import Callable, TypeVar

from .errors import CloudNotFound, CloudThrottled

T = TypeVar("T")


def retry(fn: Callable[[], T], *, attempts: int = 6, base: float = 0.5, cap: float = 20.0,
          retry_on: tuple[type[BaseException], ...] = (CloudThrottled,),
          sleep: Callable[[float], None] = time.sleep, jitter: Callable[[], float] = random.random) -> T:
    """Call `fn`; on a `retry_on` error wait base*2^n (full jitter, capped) and try again."""
    for n in range(attempts):
        try:
            return fn()
        except retry_on:
            if n == attempts - 1:
                raise
            sleep(min(cap, base * (2 ** n)) * (0.5 + jitter() / 2))
    raise AssertionError("unreachable")


def retry_consistent(fn: Callable[[], T], **kw) -> T:
    """For reads right after a create: also retry 'not found' (InvalidInstanceID.NotFound & co)."""
    kw.setdefault("retry_on", (CloudThrottled, CloudNotFound))
    return retry(fn, **kw)


def poll(check: Callable[[], T | None], *, timeout: float, interval: float = 2.0,
         sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> T | None:
    """Call `check` until it returns something truthy or `timeout` seconds pass (then None).

    The wait starts at a tenth of `interval` and doubles up to it: quick answers come quickly,
    slow ones do not hammer the API."""
    deadline = clock() + timeout
    wait = interval / 10
    while True:
        value = check()
        if value:
            return value
        now = clock()
        if now >= deadline:
            return None
        sleep(max(0.0, min(wait, deadline - now)))
        wait = min(interval, wait * 2)
