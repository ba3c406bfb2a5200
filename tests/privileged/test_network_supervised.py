"""The two building blocks together, as `provision container run -d --restart always -p …`
will use them: a supervised busybox httpd in a container network namespace, published on a
host port, killed with -9 and brought back by the shim, reachable again on the same port."""
from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from provisioner import network as net
from provisioner.containers import supervise
from provisioner.runner import Runner

from test_network import NOTHING, Env, free_port, wait_for  # tests/privileged is on sys.path (rootdir import)
from test_shim import SHIM_DIR

pytestmark = pytest.mark.privileged


@pytest.fixture
def env(tmp_path):
    e = Env(tmp_path)
    Runner().run(["make", "-s", "-C", str(SHIM_DIR)])
    try:
        yield e
    finally:
        st = supervise.status("web", tmp_path / "state", tmp_path / "logs")
        if st.shim_alive:
            os.kill(st.shim_pid, signal.SIGKILL)
        if st.pid:
            subprocess.run(["kill", "-9", str(st.pid)], capture_output=True)
        e.cleanup()


def test_supervised_httpd_behind_a_published_port_survives_kill9(env):
    port = free_port()
    ep = net.connect(env.root, env.cfg, "web", runner=env.runner, ports=[f"{port}:80"])
    www = env.root / "www"
    www.mkdir()
    (www / "index.html").write_text("supervised\n")
    argv = ["ip", "netns", "exec", Path(ep.netns_path).name, "/bin/busybox", "httpd", "-f", "-vv", "-p", "80",
            "-h", str(www)]
    first = supervise.start("web", argv, "always", env.root / "logs", env.root / "state", runner=env.runner,
                            shim=str(SHIM_DIR / "build" / "provision-shim"))
    url = f"http://127.0.0.1:{port}/"
    assert wait_for(lambda: env.wget(url, check=False).stdout == "supervised\n", what="first run serving")

    os.kill(first.pid, signal.SIGKILL)
    st = wait_for(lambda: (s := supervise.status("web", env.root / "state")).status == "running"
                  and s.pid != first.pid and s, what="restart")
    assert st.restart_count == 1 and st.exit_code == 137
    assert wait_for(lambda: env.wget(url, check=False).stdout == "supervised\n", what="second run serving")
    # httpd -vv logs each request to stderr: the log has requests from both runs, from the
    # bridge address (127.0.0.1 masqueraded on its way into the container)
    requests = [line for line in supervise.logs("web", env.root / "logs") if line.stream == "stderr"
                and env.cfg.gateway.exploded in line.text]
    times = sorted(r.time for r in requests)
    assert len(requests) >= 2 and times[0] < st.started_at < times[-1]

    assert supervise.stop("web", env.root / "state", timeout=2).status == "exited"
    net.disconnect(env.root, env.cfg, "web", runner=env.runner)
    assert env.leftovers() == NOTHING
