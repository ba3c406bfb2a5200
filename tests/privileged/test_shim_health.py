"""provision-shim's own healthcheck with real processes (no container: the check is a shell
command, as the runtime's exec would be): schedule, Docker's rules, check-now, timeout kills,
reset on each restart. Fixtures shared with test_shim.py; every test stops what it started."""
from __future__ import annotations

import os
import signal
from pathlib import Path

from provisioner.containers import supervise
from provisioner.containers.supervise import HealthCheck
from tests.privileged.test_shim import RUN_FOREVER, box, pytestmark, shim, wait_for  # noqa: F401


def _health(box, name):
    return supervise.health(name, box.dir / "state")


def _check(box, script, **kw) -> HealthCheck:
    return HealthCheck(("/bin/sh", "-c", script), **kw)


def _rss_kb(pid: int) -> int:
    return int(next(ln.split()[1] for ln in Path(f"/proc/{pid}/status").read_text().splitlines()
                    if ln.startswith("VmRSS:")))


def _procs_with(arg: str) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if arg.encode() in (p / "cmdline").read_bytes().split(b"\0"):
                    out.append(int(p.name))
            except OSError:
                pass
    return out


def test_checks_every_interval_unhealthy_at_retries_and_back(box):
    flag = box.dir / "ok"
    st = box.start("web", RUN_FOREVER, "always",
                   health=_check(box, f'echo "probe $$"; test -f {flag}', interval=0.1, retries=2))
    first = wait_for(lambda: (h := _health(box, "web")) and h.checks >= 1 and h, what="a first check")
    assert first.pid == st.pid and first.exit_code == 1 and first.output.startswith("probe ")
    bad = wait_for(lambda: (h := _health(box, "web")).status == "unhealthy" and h, what="unhealthy")
    assert bad.failing_streak >= 2 and bad.checked_at
    flag.write_text("")
    good = wait_for(lambda: (h := _health(box, "web")).status == "healthy" and h, what="healthy again")
    assert good.failing_streak == 0 and good.exit_code == 0
    # the supervisor stays small with checks running (issue 5: <= 2 MB per container)
    rss = _rss_kb(st.shim_pid)
    print(f"provision-shim VmRSS with a healthcheck every 100 ms: {rss} kB")
    assert 0 < rss <= 2048
    assert box.stop("web", timeout=2).status == "exited"
    assert _health(box, "web").status == "healthy"   # the last state stays readable (as docker inspect)


def test_check_now_runs_one_at_once_and_each_restart_starts_over(box):
    # a 1 h interval: every check below is one asked for (SIGUSR1), or there would be none
    st = box.start("db", RUN_FOREVER, "always", health=_check(box, "echo fine", interval=3600))
    h = wait_for(lambda: _health(box, "db"), what="health file")
    assert (h.status, h.checks, h.exit_code, h.pid) == ("starting", 0, None, st.pid)
    assert supervise.check_health_now("db", box.dir / "state")
    h = wait_for(lambda: (h := _health(box, "db")).status == "healthy" and h, what="healthy")
    assert (h.checks, h.output, h.restart_count) == (1, "fine\n", 0)
    os.kill(st.pid, signal.SIGKILL)   # the restart policy brings it back: health starts over
    h = wait_for(lambda: (h := _health(box, "db")).restart_count == 1 and h, what="health of the second run")
    again = box.status("db")
    assert (h.status, h.checks, h.pid) == ("starting", 0, again.pid) and again.restart_count == 1
    assert supervise.check_health_now("db", box.dir / "state")
    assert wait_for(lambda: (h := _health(box, "db")).status == "healthy" and h, what="healthy again").checks == 1
    box.stop("db", timeout=2)


def test_a_check_past_its_timeout_is_killed_with_what_it_started(box):
    # the check starts a process in a session of its own and writes its pid, as the runtime's exec
    # does for the command it runs in the container; both must go when the check times out
    pid_file = box.dir / "check.pid"
    script = f'setsid sh -c "echo \\$\\$ > {pid_file}; exec sleep 31337" & wait'
    st = box.start("slow", RUN_FOREVER, "always",
                   health=_check(box, script, interval=3600, timeout=0.3, retries=1, pid_file=str(pid_file)))
    wait_for(lambda: _health(box, "slow"), what="health file")
    supervise.check_health_now("slow", box.dir / "state")
    inner = wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), what="the check's pid file")
    assert int(inner) in _procs_with("31337")
    h = wait_for(lambda: (h := _health(box, "slow")).status == "unhealthy" and h, what="timed out")
    assert (h.exit_code, h.output, h.failing_streak) == (-1, "Health check exceeded timeout (0.3s)", 1)
    wait_for(lambda: not _procs_with("31337"), timeout=5, what="the check's processes gone")
    assert box.status("slow").pid == st.pid   # the container itself is not touched
    box.stop("slow", timeout=2)


def test_a_shim_without_a_healthcheck_ignores_check_now(box):
    st = box.start("plain", RUN_FOREVER, "no")
    assert supervise.check_health_now("plain", box.dir / "state") is False   # no health file: not asked
    os.kill(st.shim_pid, signal.SIGUSR1)                                      # asked anyway: no harm
    # had SIGUSR1 killed it, its state would still say running with the shim gone: "dead"
    assert box.stop("plain", timeout=2).status == "exited"
    assert _health(box, "plain") is None


def test_a_start_interval_checks_often_while_starting_then_every_interval(box):
    # a 1 h interval: without the start interval only one check would come in the first seconds
    box.start("slow", RUN_FOREVER, "no", health=_check(box, "true", interval=3600, start_period=30,
                                                       start_interval=0.1, retries=3))
    # the first check 100 ms after the start, not an hour: and once healthy, no more for an hour
    h = wait_for(lambda: (h := _health(box, "slow")) and h.status == "healthy" and h, what="healthy soon")
    assert h.checks == 1
    assert box.stop("slow", timeout=2).status == "exited"


def test_the_on_change_hook_runs_when_health_changes_and_when_the_command_exits(box):
    flag, seen = box.dir / "ok", box.dir / "hook.log"
    hook = ["/bin/sh", "-c", f"echo changed >> {seen}"]
    box.start("svc", "sleep 1000", "no", health=_check(box, f"test -f {flag}", interval=0.1, retries=1),
              on_change=hook)
    wait_for(lambda: _health(box, "svc").status == "unhealthy", what="unhealthy")
    wait_for(lambda: seen.exists() and seen.read_text().count("changed") == 1, what="the hook, once")
    flag.write_text("")
    wait_for(lambda: seen.read_text().count("changed") == 2, what="the hook for healthy")
    box.stop("svc", timeout=2)
    wait_for(lambda: seen.read_text().count("changed") == 3, what="the hook for the exit")
