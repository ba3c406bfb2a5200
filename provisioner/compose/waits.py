"""How long and on what `up` waits: a service's start, completion or health, read from its
container's supervisor (provision-shim runs the healthcheck and keeps its result in a file)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from ..errors import ContainerError
from ..stack.model import ServiceSpec

UP_TIMEOUT = 120.0
HEALTH_POLL = 0.05   # how often `up` reads a service's health file while it waits


def wait_budget(spec: ServiceSpec) -> float:
    """How long `up` waits for a service: UP_TIMEOUT, or longer when its healthcheck needs it
    to decide (start period plus retries+1 checks, each an interval and at most a timeout) —
    a slow starter on a small or emulated host is not cut off before its own check could."""
    hc = spec.healthcheck
    if hc is None:
        return UP_TIMEOUT
    return max(UP_TIMEOUT, hc.start_period + (hc.retries + 1) * (hc.interval + hc.timeout))


@dataclass
class Waits:
    """Waiting on containers' states and health, as `up` does before and after each service."""

    manager: object                # containers.lifecycle.Manager
    now: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    progress: Callable[[str], None] = field(default=lambda msg: None)

    def wait_condition(self, cname: str, spec: ServiceSpec, cond: str, *, no_restarts: bool = False) -> None:
        """Until container `cname` of `spec` meets `cond` (service_started, service_healthy,
        service_completed_successfully); ContainerError naming the service when it cannot.
        `no_restarts`: a process that exits is the end of it, even when its restart policy
        starts it again (a start-first switch's new container: the old one still serves)."""
        budget = wait_budget(spec)
        deadline = self.now() + budget
        if cond == "service_started" and not no_restarts:
            return   # `run` returned once the runtime reported it running
        if cond == "service_completed_successfully":
            while True:
                rec = self.manager.records.get(cname)
                st = self.manager.status(rec)
                if st.state in ("exited", "dead"):
                    if st.exit_code == 0:
                        return
                    raise ContainerError(f"service {spec.name} exited with code {st.exit_code}; its dependents "
                                         "need it to complete successfully")
                if self.now() > deadline:
                    raise ContainerError(f"service {spec.name} did not complete within {budget:g}s")
                self.sleep(0.05)
        hc = spec.healthcheck
        who = spec.name if spec.replicas == 1 else cname   # a replica: which one
        rec = self.manager.records.find(cname)
        if rec is not None:
            # the shim's first check comes one interval after the start (as Docker's); ask for one
            # now, so a service that is ready at once does not hold `up` for its interval
            self.manager.check_health_now(rec)
        while True:
            rec = self.manager.records.find(cname)
            st = self.manager.status(rec) if rec is not None else None
            # while it restarts (its policy), the file still tells of the run before: wait for the next
            health = self.manager.health(rec) if st is not None and st.state == "running" else None
            if health is not None and health.status == "healthy":
                self.progress(f"{who} is healthy")
                return
            if no_restarts and hc is None and st is not None and st.state == "running" and not st.restart_count:
                return   # started (a switch without a healthcheck: running, not restarted)
            if st is None or st.state in ("exited", "dead") or (no_restarts and st.restart_count):
                code = f" (exit code {st.exit_code})" if st is not None else ""
                raise ContainerError(f"service {who} stopped{code} before it became healthy; "
                                     f"see `provision container logs {cname}`")
            if health is not None and health.status == "unhealthy":
                raise ContainerError(f"service {who} is unhealthy: {hc.retries} checks failed "
                                     f"(last: {health.output.strip()[-120:] or 'no output'})")
            if self.now() > deadline:
                raise ContainerError(f"service {who} did not become healthy within {budget:g}s")
            self.sleep(HEALTH_POLL)
