"""Inside a user namespace (rootless, or a container) mknod and chown to unmapped ids fail: the layer
still applies, devices are skipped with a warning, nothing outside the destination changes."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from provisioner.imagebuild.tarbuild import C, F, tar_bytes

CHILD = """
import json, sys
from provisioner.images.layers import apply_layer
r = apply_layer(open(sys.argv[1], "rb"), "application/vnd.oci.image.layer.v1.tar", sys.argv[2])
print(json.dumps({"warnings": list(r.warnings), "entries": r.entries}))
"""


def _userns_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "--user", "--map-root-user", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _userns_works(), reason="unprivileged user namespaces unavailable")
def test_devices_skipped_in_a_user_namespace(tmp_path):
    layer = tmp_path / "layer.tar"
    layer.write_bytes(tar_bytes([C("dev/null", 1, 3), F("etc/ok", "ok"),
                                 F("etc/owned", "x", uid=4242, gid=4242)]))
    dest = tmp_path / "root"
    before = sorted(os.listdir(tmp_path))
    proc = subprocess.run(["unshare", "--user", "--map-root-user", sys.executable, "-c", CHILD, str(layer), str(dest)],
                          capture_output=True, text=True, timeout=60, cwd=os.getcwd())
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert any("device nodes not permitted" in w for w in out["warnings"])
    assert any("cannot set owner 4242:4242" in w for w in out["warnings"])
    assert not (dest / "dev/null").exists()
    assert (dest / "etc/ok").read_text() == "ok" and (dest / "etc/owned").read_text() == "x"
    assert sorted(os.listdir(tmp_path)) == sorted(before + ["root"])
