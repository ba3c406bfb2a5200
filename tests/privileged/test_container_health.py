"""`container run` and the image's HEALTHCHECK, as Docker: the image's check runs by default,
`--health-*` flags replace single fields of it, `--no-healthcheck` turns it off; bad flags are one
line and create nothing. Real busybox images, runtime, shim (fixtures shared with test_container.py)."""
from __future__ import annotations

from tests.privileged.test_container import NOTHING, _one_error_line, env, images, pytestmark, wait_for  # noqa: F401


def _health(env, name):
    return env.inspect(name).get("health")


def test_the_images_healthcheck_runs_and_flags_change_it(env):
    env.run("--name", "img", env.refs["checked"])
    h = wait_for(lambda: (h := _health(env, "img")) and h["status"] == "healthy" and h, timeout=15,
                 what="the image's check healthy")
    assert h["failing_streak"] == 0 and h["exit_code"] == 0
    # --health-cmd replaces the test; the image's 200 ms interval and 2 retries stay
    env.run("--name", "flagged", "--health-cmd", "exit 3", env.refs["checked"])
    h = wait_for(lambda: (h := _health(env, "flagged")) and h["status"] == "unhealthy" and h, timeout=15,
                 what="--health-cmd's failing check")
    assert h["exit_code"] == 3 and h["failing_streak"] >= 2
    # --no-healthcheck: not even the image's
    env.run("--name", "none", "--no-healthcheck", env.refs["checked"])
    assert env.inspect("none")["status"]["state"] == "running" and not _health(env, "none")
    # an image without HEALTHCHECK gets one from the flags alone
    env.run("--name", "plain", "--health-cmd", "true", "--health-interval", "100ms", env.refs["busybox"],
            "sleep", "1000")
    wait_for(lambda: (h := _health(env, "plain")) and h["status"] == "healthy", timeout=15, what="flags-only check")
    for name in ("img", "flagged", "none", "plain"):
        env.provision("container", "rm", "-f", name)
    assert env.leftovers() == NOTHING


def test_bad_health_flags_are_one_line_and_create_nothing(env):
    cases = [
        (("--health-interval", "soon", env.refs["checked"]), "--health-interval: 'soon' is not a duration"),
        (("--no-healthcheck", "--health-cmd", "true", env.refs["checked"]), "--no-healthcheck conflicts with"),
        (("--health-retries", "-1", env.refs["checked"]), "--health-retries cannot be negative"),
        (("--health-timeout", "5s", env.refs["busybox"], "sleep", "1"),
         "--health-timeout without --health-cmd: the image has no HEALTHCHECK"),
    ]
    for args, want in cases:
        err = _one_error_line(env.provision("container", "run", "-d", *args, check=False))
        assert want in err, err
    assert env.leftovers() == NOTHING
