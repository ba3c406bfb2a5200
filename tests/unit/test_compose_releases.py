"""A release keeps what the stack was brought up from: with compose files, the .env it was
interpolated from and its secrets' and configs' files too, next to the stack file as they were."""
from __future__ import annotations

import os
import stat

from provisioner.compose.releases import Releases, stack_files
from provisioner.stack import load_stack
from provisioner.stack.project import ProjectOptions


def test_a_release_copies_the_dotenv_and_the_secret_files(tmp_path):
    d = tmp_path / "app"
    (d / "secrets").mkdir(parents=True)
    (d / "compose.yaml").write_text("services:\n  web:\n    image: ${IMG}\n    secrets: [pw]\n"
                                    "secrets:\n  pw:\n    file: ./secrets/pw.txt\n")
    (d / ".env").write_text("IMG=busybox\n")
    (d / "secrets" / "pw.txt").write_text("hunter2\n")
    os.chmod(d / "secrets" / "pw.txt", 0o600)
    stack = load_stack(d / "compose.yaml", hosts_required=False, project=ProjectOptions(environ={}))
    assert set(stack_files(stack)) == {d / ".env", d / "secrets" / "pw.txt"}
    rel = Releases(tmp_path / "root", stack.name).record(stack, {"web": {"hash": "h"}}, ["create web"], "up")
    kept = tmp_path / "root" / "releases" / "app" / str(rel.number)
    assert (kept / ".env").read_text() == "IMG=busybox\n"
    assert (kept / "secrets" / "pw.txt").read_text() == "hunter2\n"
    assert stat.S_IMODE((kept / "secrets" / "pw.txt").stat().st_mode) == 0o600
    assert stat.S_IMODE(kept.stat().st_mode) == 0o700
    # the kept copy loads the same (its folder's name is the release number: the name is given)
    again = load_stack(kept / "stack.yml", hosts_required=False, project=ProjectOptions(name="app", environ={}))
    assert again.services["web"].image == "busybox"
