"""provision-shim with real processes: restarts per policy, stop, logs and rotation.

These run real daemons (no root strictly needed, but they fork detached supervisors, so they
live in the privileged tier with the other real-process tests). Every test stops what it
started, even on failure.
"""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from provisioner.containers import supervise
from provisioner.errors import ContainerError
from provisioner.runner import Runner

pytestmark = pytest.mark.privileged

SHIM_DIR = Path(__file__).resolve().parents[2] / "native" / "shim"


@pytest.fixture(scope="session")
def shim() -> str:
    Runner().run(["make", "-s", "-C", str(SHIM_DIR)])
    return str(SHIM_DIR / "build" / "provision-shim")


def wait_for(cond, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def box(tmp_path, shim):
    """Starts supervised commands in tmp_path and stops every one of them at the end."""
    started: list[str] = []

    class Box:
        dir = tmp_path

        def start(self, name, script, policy="no", **kw):
            started.append(name)
            return supervise.start(name, ["/bin/sh", "-c", script], policy, tmp_path / "logs",
                                   tmp_path / "state", runner=Runner(), shim=shim, **kw)

        def status(self, name):
            return supervise.status(name, tmp_path / "state", tmp_path / "logs")

        def stop(self, name, timeout=None):
            return supervise.stop(name, tmp_path / "state", timeout, log_dir=tmp_path / "logs")

        def logs(self, name, **kw):
            return list(supervise.logs(name, tmp_path / "logs", state_dir=tmp_path / "state", **kw))

        def texts(self, name):
            return [line.text for line in self.logs(name)]

    yield Box()
    for name in started:
        st = supervise.status(name, tmp_path / "state", tmp_path / "logs")
        if st.shim_alive:
            os.kill(st.shim_pid, signal.SIGKILL)
        if st.pid and st.status != "exited":
            try:
                os.killpg(st.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


RUN_FOREVER = 'echo "run $$"; exec sleep 1000'


def test_kill9_restarts_counts_and_logs_show_both_runs(box):
    first = box.start("web", RUN_FOREVER, "always")
    assert first.status == "running" and first.pid
    wait_for(lambda: any(t.startswith("run ") for t in box.texts("web")), what="first run logged")
    os.kill(first.pid, signal.SIGKILL)
    second = wait_for(lambda: (s := box.status("web")).status == "running" and s.pid != first.pid and s,
                      what="restart")
    assert second.restart_count == 1
    assert second.exit_code == 137  # 128 + SIGKILL, kept from the previous run
    runs = wait_for(lambda: [t for t in box.texts("web") if t.startswith("run ")][1:] and
                    [t for t in box.texts("web") if t.startswith("run ")], what="second run logged")
    assert runs == [f"run {first.pid}\n", f"run {second.pid}\n"]
    assert box.stop("web", timeout=5).status == "exited"


def test_on_failure_n_stops_after_n_restarts(box):
    box.start("job", 'echo attempt; exit 3', "on-failure:2")
    st = wait_for(lambda: (s := box.status("job")).status == "exited" and not s.shim_alive and s,
                  what="supervisor to give up")
    assert (st.exit_code, st.restart_count) == (3, 2)
    assert box.texts("job") == ["attempt\n"] * 3


def test_on_failure_does_not_restart_a_clean_exit(box):
    box.start("ok", 'echo done; exit 0', "on-failure")
    st = wait_for(lambda: (s := box.status("ok")).status == "exited" and not s.shim_alive and s)
    assert (st.exit_code, st.restart_count) == (0, 0)


def test_policy_no_does_not_restart(box):
    box.start("once", 'echo once; exit 5', "no")
    st = wait_for(lambda: (s := box.status("once")).status == "exited" and not s.shim_alive and s)
    assert (st.exit_code, st.restart_count) == (5, 0)
    assert box.texts("once") == ["once\n"]


def test_stop_sends_stop_signal_and_never_restarts(box):
    script = 'trap "echo got-usr1; exit 0" USR1; echo up; while :; do sleep 0.05; done'
    box.start("svc", script, "always", stop_signal="SIGUSR1")
    wait_for(lambda: "up\n" in box.texts("svc"), what="service up")
    st = box.stop("svc", timeout=5)
    assert st.status == "exited" and st.stop_requested and not st.shim_alive
    assert st.exit_code == 0 and st.restart_count == 0
    assert "got-usr1\n" in box.texts("svc")
    assert not Path(f"/proc/{st.pid}").exists() or "Z" in Path(f"/proc/{st.pid}/stat").read_text().split(")")[1][:3]


def test_stop_kills_after_timeout_when_signal_is_ignored(box):
    box.start("stubborn", 'trap "" TERM; echo up; while :; do sleep 0.05; done', "always")
    wait_for(lambda: "up\n" in box.texts("stubborn"))
    t0 = time.monotonic()
    st = box.stop("stubborn", timeout=0.5)
    assert st.exit_code == 137 and st.status == "exited" and st.restart_count == 0
    assert time.monotonic() - t0 >= 0.5


def test_stop_during_backoff_ends_supervision(box):
    box.start("flappy", 'exit 1', "always", backoff_max_ms=5000)
    wait_for(lambda: box.status("flappy").restart_count >= 3, what="a few restarts")
    st = box.stop("flappy", timeout=1)
    assert st.status == "exited" and not st.shim_alive


def test_backoff_doubles_is_capped_and_resets_after_a_long_run(box):
    # quick failures: 100, 200, 400, 800 ms
    box.start("fail", 'exit 1', "on-failure:4")
    st = wait_for(lambda: (s := box.status("fail")).status == "exited" and not s.shim_alive and s, timeout=15)
    assert (st.restart_count, st.backoff_ms) == (4, 800)
    # capped: 100, 200, 250, 250
    box.start("capped", 'exit 1', "on-failure:4", backoff_max_ms=250)
    st = wait_for(lambda: (s := box.status("capped")).status == "exited" and not s.shim_alive and s, timeout=15)
    assert (st.restart_count, st.backoff_ms) == (4, 250)
    # every run outlasts the reset threshold: the delay starts over at 100 ms each time
    box.start("slow", 'sleep 0.3; exit 1', "on-failure:3", backoff_reset_ms=200)
    st = wait_for(lambda: (s := box.status("slow")).status == "exited" and not s.shim_alive and s, timeout=15)
    assert (st.restart_count, st.backoff_ms) == (3, 100)


def test_supervisor_outlives_its_launcher(box):
    st = box.start("daemon", RUN_FOREVER, "no")
    stat = Path(f"/proc/{st.shim_pid}/stat").read_text().rsplit(")", 1)[1].split()
    ppid, sid = int(stat[1]), int(stat[3])
    assert ppid != os.getpid() and sid != os.getsid(0)
    assert Path(box.dir / "state" / "daemon.pid").read_text().strip() == str(st.shim_pid)
    box.stop("daemon", timeout=2)
    assert not (box.dir / "state" / "daemon.pid").exists()


def test_log_rotation_caps_size(box):
    script = 'i=0; while [ $i -lt 400 ]; do echo "line $i padding-padding-padding"; i=$((i+1)); done'
    box.start("chatty", script, "no", log_max_size=4096, log_max_files=3)
    wait_for(lambda: not box.status("chatty").shim_alive)
    files = sorted(p.name for p in (box.dir / "logs").iterdir())
    assert files == ["chatty.log", "chatty.log.1", "chatty.log.2"]
    for p in (box.dir / "logs").iterdir():
        assert p.stat().st_size <= 4096
    texts = box.texts("chatty")
    assert texts[-1] == "line 399 padding-padding-padding\n"
    assert len(texts) < 400  # the oldest fell off
    nums = [int(t.split()[1]) for t in texts]
    assert nums == list(range(nums[0], 400))  # contiguous across the rotated files


def test_logs_tail_timestamps_and_streams(box):
    box.start("mix", 'echo out1; echo err1 >&2; echo out2; printf partial', "no")
    wait_for(lambda: not box.status("mix").shim_alive)
    lines = box.logs("mix")
    assert [(line.stream, line.text) for line in lines if line.stream == "stderr"] == [("stderr", "err1\n")]
    # Order across the two pipes is not defined (as with Docker); within one stream it is.
    assert [line.text for line in lines if line.stream == "stdout"] == ["out1\n", "out2\n", "partial"]
    assert box.logs("mix", tail=2) == lines[-2:]
    assert box.logs("mix", tail=0) == []
    partial = next(line for line in lines if line.text == "partial")
    formatted = partial.format(timestamps=True)
    assert formatted == f"{partial.time} partial" and formatted[:4].isdigit() and "T" in formatted


def test_logs_follow_until_supervisor_exits(box):
    box.start("follow", 'for i in 1 2 3; do echo "n$i"; sleep 0.1; done', "no")
    got = [line.text for line in supervise.logs("follow", box.dir / "logs", follow=True,
                                                  state_dir=box.dir / "state", follow_timeout=10)]
    assert got == ["n1\n", "n2\n", "n3\n"]


def test_exec_failure_is_one_clear_error(box):
    with pytest.raises(ContainerError, match=r"cannot start bad: exec /nonexistent/cmd: No such file"):
        supervise.start("bad", ["/nonexistent/cmd"], "always", box.dir / "logs", box.dir / "state",
                        runner=Runner(), shim=str(SHIM_DIR / "build" / "provision-shim"))
    assert box.status("bad").status == "exited"


def test_second_start_of_a_running_container_is_refused(box):
    box.start("single", RUN_FOREVER)
    with pytest.raises(ContainerError, match="single is already running"):
        box.start("single", RUN_FOREVER)
    box.stop("single", timeout=1)


def test_shim_rss_is_small(box, record_property):
    st = box.start("rss", RUN_FOREVER)
    rss_kb = int(next(line.split()[1] for line in Path(f"/proc/{st.shim_pid}/status").read_text().splitlines()
                      if line.startswith("VmRSS:")))
    record_property("shim_rss_kb", rss_kb)
    print(f"provision-shim VmRSS: {rss_kb} kB")
    assert rss_kb > 0
    box.stop("rss", timeout=1)


def test_restore_after_a_simulated_reboot(box, shim):
    a = box.start("a", RUN_FOREVER, "always")
    box.start("b", RUN_FOREVER, "unless-stopped")
    box.start("c", RUN_FOREVER, "no")
    box.stop("b", timeout=1)
    # "reboot": every supervisor and its command die at once, without a word
    for name in ("a", "c"):
        st = box.status(name)
        os.kill(st.shim_pid, signal.SIGKILL)
        try:
            os.killpg(st.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # already gone with its supervisor (PR_SET_PDEATHSIG)
    wait_for(lambda: box.status("a").status == "dead" and box.status("c").status == "dead")
    assert supervise.restore(box.dir / "state", runner=Runner(), shim=shim) == ["a"]
    st = box.status("a")
    assert st.status == "running" and st.shim_alive and st.pid != a.pid
    assert box.status("b").status == "exited" and box.status("c").status == "dead"
    box.stop("a", timeout=1)


def test_follow_across_rotations_loses_and_repeats_nothing(box):
    """The writer waits for the follower after each batch (~4 KB: one or two rotations), so what is
    checked is the follower's bookkeeping across rotations, not the machine's speed."""
    import threading

    fifo = box.dir / "in.fifo"
    os.mkfifo(fifo)
    box.start("rot", f"exec cat {fifo}", "no", log_max_size=4096, log_max_files=3)
    got: list[int] = []

    def follow():
        for line in supervise.logs("rot", box.dir / "logs", follow=True, state_dir=box.dir / "state",
                                   poll_interval=0.01, follow_timeout=60):
            got.append(int(line.text.split()[1]))

    t = threading.Thread(target=follow)
    t.start()
    n = 0
    with open(fifo, "w") as w:
        for _ in range(24):
            w.write("".join(f"n {i} padding-padding-padding\n" for i in range(n, n + 40)))
            w.flush()
            n += 40
            wait_for(lambda: len(got) >= n, what=f"follower to reach line {n}")
    t.join(timeout=30)
    assert got == list(range(n))  # in order, nothing lost or repeated at a rotation
    assert sorted(p.name for p in (box.dir / "logs").glob("rot.log*")) == ["rot.log", "rot.log.1", "rot.log.2"]


def test_restart_runs_the_same_command_again(box, shim):
    first = box.start("again", RUN_FOREVER, "always", stop_signal="SIGKILL")
    st = supervise.restart("again", box.dir / "state", runner=Runner(), timeout=1, shim=shim)
    assert st.status == "running" and st.pid != first.pid
    wait_for(lambda: [t for t in box.texts("again") if t.startswith("run ")] == [f"run {first.pid}\n", f"run {st.pid}\n"],
             what="both runs logged")
    box.stop("again", timeout=1)


def test_killing_the_supervisor_takes_its_command_along(box):
    st = box.start("orphan", RUN_FOREVER, "always")
    os.kill(st.shim_pid, signal.SIGKILL)
    wait_for(lambda: box.status("orphan").status == "dead", what="shim gone")

    def gone(pid):
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
        except FileNotFoundError:
            return True
    wait_for(lambda: gone(st.pid), what="command killed with its supervisor")
