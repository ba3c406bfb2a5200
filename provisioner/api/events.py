"""`GET /events`: container lifecycle events (create, start, die, destroy), seen by watching the
host's containers — the records and their supervisors — rather than by hooking the API's own
calls, so a container made, started or removed with `provision container`, by a stack or by its
restart policy is reported the same as one driven through the API.

A watcher thread compares the containers' states every POLL seconds while anyone listens (and
keeps the last HISTORY events for `since`); nothing runs when nobody does.
"""
from __future__ import annotations

import collections
import logging
import threading
import time

log = logging.getLogger("provisioner.api")
POLL = 0.25
HISTORY = 1000


def event(action: str, cid: str, attrs: dict, at: float | None = None) -> dict:
    at = time.time() if at is None else at
    return {"status": action, "id": cid, "from": attrs.get("image", ""), "Type": "container", "Action": action,
            "Actor": {"ID": cid, "Attributes": attrs}, "scope": "local", "time": int(at),
            "timeNano": int(at * 1e9)}


def diff(before: dict[str, tuple], after: dict[str, tuple], at: float) -> list[dict]:
    """Events between two views {id: (state, started_at, exit_code, attrs)} of the containers (pure)."""
    out = []
    for cid, (state, started, code, attrs) in after.items():
        old = before.get(cid)
        if old is None:
            out.append(event("create", cid, attrs, at))
            if state in ("running", "restarting", "exited", "dead") and started:
                out.append(event("start", cid, attrs, at))
            if state in ("exited", "dead"):
                out.append(event("die", cid, {**attrs, "exitCode": str(code or 0)}, at))
            continue
        ostate, ostarted, _, _ = old
        if started and started != ostarted:
            if ostate == "running" and started != ostarted:
                out.append(event("die", cid, {**attrs, "exitCode": str(code or 0)}, at))
            out.append(event("start", cid, attrs, at))
        if state in ("exited", "dead", "restarting") and ostate == "running" and started == ostarted:
            out.append(event("die", cid, {**attrs, "exitCode": str(code or 0)}, at))
    for cid, (_state, _s, _c, attrs) in before.items():
        if cid not in after:
            out.append(event("destroy", cid, attrs, at))
    return out


class Events:
    def __init__(self, engine):
        self.engine = engine
        self.history: collections.deque = collections.deque(maxlen=HISTORY)
        self.cond = threading.Condition()
        self.listeners = 0
        self.thread: threading.Thread | None = None
        self.seq = 0

    def view(self) -> dict[str, tuple]:
        mgr = self.engine.manager
        out = {}
        for rec in mgr.records.all():
            st = mgr.status(rec)
            attrs = {"image": rec.image, "name": rec.name, **(rec.config.get("labels") or {})}
            out[rec.id] = (st.state, st.started_at, st.exit_code, attrs)
        return out

    def _watch(self) -> None:
        before = self.view()
        while True:
            with self.cond:
                if self.listeners == 0:
                    self.thread = None
                    return
            time.sleep(POLL)
            try:
                after = self.view()
            except Exception as exc:   # noqa: BLE001 — a record mid-write: look again next time
                log.debug("events: %s", exc)
                continue
            new = diff(before, after, time.time())
            before = after
            if new:
                with self.cond:
                    for e in new:
                        self.seq += 1
                        self.history.append((self.seq, e))
                    self.cond.notify_all()

    def subscribe(self):
        """A generator of events from now on (and the recent past the caller filters by time)."""
        with self.cond:
            self.listeners += 1
            if self.thread is None:
                self.thread = threading.Thread(target=self._watch, daemon=True, name="api-events")
                self.thread.start()
            start = self.seq
        return _Subscription(self, start)


class _Subscription:
    def __init__(self, events: Events, seq: int):
        self.events, self.seq = events, seq
        self.closed = False

    def past(self) -> list[dict]:
        with self.events.cond:
            return [e for s, e in self.events.history if s <= self.seq]

    def next(self, timeout: float) -> list[dict]:
        with self.events.cond:
            self.events.cond.wait_for(lambda: self.events.seq > self.seq, timeout)
            out = [e for s, e in self.events.history if s > self.seq]
            self.seq = self.events.seq
            return out

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            with self.events.cond:
                self.events.listeners -= 1
