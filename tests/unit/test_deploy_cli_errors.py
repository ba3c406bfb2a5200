"""`provision deploy` bad input: one clear error line, and nothing launched or left running."""
from __future__ import annotations

import json
import socket

import pytest

from provisioner.cli.main import main
from provisioner.vmimage import ImageSpec
from tests.registry_fixture import FakeRegistry, make_image, serve_image

STACK = """\
name: hello
hosts:
  - name: web
    services: [web]
services:
  web:
    image: REGISTRY/hello/web:1
    ports: ["PORT:80"]
"""


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("PROVISION_VM_CACHE", str(tmp_path / "vmcache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    with FakeRegistry() as reg:
        serve_image(reg, "hello/web", ["1"], make_image([{"index.html": b"hi"}]))
        yield tmp_path, reg


class Res:
    def __init__(self, code, output):
        self.exit_code, self.output = code, output


def _deploy(tmp_path, reg, text, port=8080):
    import contextlib
    import io

    stack = tmp_path / "stack.yml"
    stack.write_text(text.replace("REGISTRY", reg.address).replace("PORT", str(port)))
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exit_:
        main(["--root", str(tmp_path / "root"), "deploy", "--cloud", "local", "-f", str(stack)])
    lines = [ln for ln in err.getvalue().splitlines() if ln.startswith("error:")]
    return Res(exit_.value.code, err.getvalue()), lines


def _fake_image(tmp_path):
    d = tmp_path / "vmcache" / "images" / ImageSpec().key()
    d.mkdir(parents=True)
    for f in ("disk.raw", "vmlinuz", "initrd.img"):
        (d / f).write_bytes(b"")
    (d / "image.json").write_text(json.dumps({"disk": "disk.raw", "format": "raw", "kernel": "vmlinuz",
                                              "initrd": "initrd.img", "append": "", "key": ImageSpec().key()}))


def _nothing_launched(tmp_path):
    return not (tmp_path / "root" / "local" / "hello").exists() and not (tmp_path / "root" / "deploy").exists()


def test_vm_image_missing(env):
    tmp_path, reg = env
    res, lines = _deploy(tmp_path, reg, STACK)
    assert res.exit_code != 0 and len(lines) == 1, res.output
    assert lines[0].startswith("error: VM image missing: no debian-12 base image at ") and "provision image build-vm" in lines[0]
    assert _nothing_launched(tmp_path)


def test_port_forward_taken(env):
    tmp_path, reg = env
    _fake_image(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        res, lines = _deploy(tmp_path, reg, STACK, port)
    assert res.exit_code != 0 and lines == [f"error: local cloud: port 127.0.0.1:{port}/tcp for host web is "
                                            "already in use"], res.output
    assert _nothing_launched(tmp_path)


@pytest.mark.parametrize("edit, message", [
    (("services: [web]", "services: [web, db]"), "stack.yml:4: hosts.web.services: unknown service 'db' (known: web)"),
    (("services: [web]", "services: []"), "stack.yml:7: service 'web' is placed on no host"),
    (("REGISTRY/hello/web:1", "REGISTRY/hello/nope:1"), "hello/nope"),
    (("REGISTRY/hello/web:1", "Bad Ref"), "stack.yml:7: service 'web': invalid image reference 'Bad Ref'"),
])
def test_bad_stacks_fail_before_anything_is_launched(env, edit, message):
    tmp_path, reg = env
    _fake_image(tmp_path)
    res, lines = _deploy(tmp_path, reg, STACK.replace(*edit))
    assert res.exit_code != 0 and len(lines) == 1 and message in lines[0], res.output
    assert _nothing_launched(tmp_path)
