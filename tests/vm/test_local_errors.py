"""Bad input for the local cloud: one clear error, nothing left running or written."""
from __future__ import annotations

import socket

import pytest

from provisioner.clouds.local import LocalCloud, PortForward, VmSpec, state
from provisioner.errors import CloudError, ImageError
from provisioner.runner import Runner

from conftest import public_key
from vmhelpers import qemu_processes_for

pytestmark = pytest.mark.vm


def test_missing_vm_image(tmp_path, operator_key):
    cloud = LocalCloud(tmp_path, Runner(), image=tmp_path / "no-such-image.qcow2")
    with pytest.raises(ImageError, match="VM image missing: .*no-such-image.qcow2 does not exist"):
        cloud.launch(VmSpec("s", "h", public_key(operator_key)))
    assert not (tmp_path / "local").exists()


@pytest.fixture
def taken_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_port_forward_taken_checked_before_anything_starts(vm_root, cloud, operator_key, taken_port):
    spec = VmSpec("busy", "h", public_key(operator_key), ports=(PortForward(taken_port, 80),))
    with pytest.raises(CloudError, match=f"port 127.0.0.1:{taken_port}/tcp .* is already in use"):
        cloud.launch(spec)
    assert not (vm_root / "local" / "busy").exists()


def test_port_forward_taken_as_qemu_starts(vm_root, cloud, operator_key, taken_port, monkeypatch):
    # The port is grabbed between our check and qemu's bind: qemu's own refusal is translated,
    # and the half-made VM is removed.
    monkeypatch.setattr(state, "port_free", lambda port, proto="tcp": True)
    spec = VmSpec("race", "h", public_key(operator_key), ports=(PortForward(taken_port, 80),))
    with pytest.raises(CloudError, match=f"port forward tcp:127.0.0.1:{taken_port}-:80 could not be set up"):
        cloud.launch(spec)
    directory = vm_root / "local" / "race" / "h"
    assert qemu_processes_for(directory) == []
    assert not directory.exists()
