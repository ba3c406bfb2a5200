"""provision-shim --exit-command (conmon's): runs once the supervised command is done for good,
after the shim has let go of its pid file, and not while a restart policy keeps it going."""
from __future__ import annotations

import json
import os
import signal

import pytest

from provisioner.containers import supervise
from provisioner.errors import ContainerError
from provisioner.runner import Runner
from tests.privileged.test_shim import box, shim, wait_for  # noqa: F401 (fixtures)

pytestmark = pytest.mark.privileged


def _exit_command(box, name: str) -> list[str]:
    """Records whether the shim still held its pid file and what the state said when it ran."""
    pid = box.dir / "state" / f"{name}.pid"
    out = box.dir / f"{name}.exit"
    state = box.dir / "state" / f"{name}.state.json"
    return ["/bin/sh", "-c", f'if [ -e {pid} ]; then held=yes; else held=no; fi; '
            f'echo "held=$held $(cat {state})" > {out}.tmp && mv {out}.tmp {out}']


def test_exit_command_runs_after_the_command_ended_and_the_pid_file_is_gone(box):
    box.start("once", "exit 3", exit_command=_exit_command(box, "once"))
    out = wait_for(lambda: (box.dir / "once.exit").exists() and (box.dir / "once.exit").read_text(),
                   what="exit command")
    assert out.startswith("held=no ") and '"status":"exited"' in out.replace(" ", "") and '"exit_code":3' in \
        out.replace(" ", "")


def test_exit_command_runs_on_stop_too_and_not_during_restarts(box):
    box.start("svc", "sleep 1000", "always", exit_command=_exit_command(box, "svc"))
    first = box.status("svc").pid
    os.killpg(first, signal.SIGKILL)  # restarted by the policy: not done, no exit command
    wait_for(lambda: box.status("svc").restart_count == 1 and box.status("svc").status == "running",
             what="restart")
    assert not (box.dir / "svc.exit").exists()
    box.stop("svc", timeout=1)
    assert wait_for(lambda: (box.dir / "svc.exit").exists() and (box.dir / "svc.exit").read_text(),
                    what="exit command after stop").startswith("held=no ")


def test_exit_command_is_kept_in_the_spec_and_must_be_absolute(box):
    box.start("spec", "exit 0", exit_command=_exit_command(box, "spec"))
    wait_for(lambda: (box.dir / "spec.exit").exists(), what="exit command")
    spec = json.loads((box.dir / "state" / "spec.spec.json").read_text())
    assert spec["exit_command"][0] == "/bin/sh"
    with pytest.raises(ContainerError, match="exit command must be an absolute path"):
        supervise.start("rel", ["/bin/true"], "no", box.dir / "logs", box.dir / "state", runner=Runner(),
                        exit_command=["sh", "-c", "true"])
