"""The all-in-one stack (examples/allinone-stack.yml) deployed to one local VM with GCE-style disks.

Real Debian redis, mariadb, nginx and a python3 app plus busybox stand-ins, all healthy; the
nginx front end answers on the forwarded port from the operator machine; the local SSD (virtio-scsi,
"Google EphemeralDisk") is the btrfs container store and the persistent disk, matched by its
device name, its own btrfs. The breakdown table is printed (bench/deploy.py records it).
"""
from __future__ import annotations

import json
import time

import pytest

from provisioner.deploy import inventory
from provisioner.deploy.pipeline import PHASES
from tests.registry_fixture import docker_registry, free_port

from deployhelpers import EXAMPLES, deploy, http_get, provision, push_images, reboot_and_wait, ssh_to
from vmhelpers import qemu_processes_for, wait_not_listening

pytestmark = pytest.mark.vm

IMAGES = {"allinone/zookeeper:1": "debian-zookeeper", "allinone/redis:1": "debian-redis", "allinone/nginx:1": "debian-nginx",
          "allinone/mariadb:1": "debian-mariadb", "allinone/python-app:1": "debian-python-app",
          "allinone/busybox:1": "busybox"}
SERVICES = ("zookeeper", "redis", "kafka", "mariadb", "graphite", "app", "web")


@pytest.fixture(scope="module")
def deployed(vm_root, vm_image, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("allinone")
    with docker_registry(tmp / "registry") as reg:
        push_images(tmp, reg.address, IMAGES)
        port = free_port()
        stack = tmp / "allinone.yml"
        stack.write_text((EXAMPLES / "allinone-stack.yml").read_text()
                         .replace("127.0.0.1:5000/", f"{reg.address}/").replace('"8000:80"', f'"{port}:80"'))
        env = {"XDG_CONFIG_HOME": str(tmp / "config")}
        try:
            yield deploy(vm_root, stack, env), port, stack, env
        finally:
            provision(vm_root, "destroy", "allinone", "--cloud", "local", "--yes", env=env, check=False)


def test_allinone_deployed_every_service_healthy(deployed, vm_root):
    result, port, _stack, _env = deployed
    (host,) = result["hosts"]
    assert result["ok"], host["error"]
    assert {s["service"]: (s["state"], s["health"]) for s in host["services"]} == {
        s: ("running", "healthy") for s in SERVICES}
    assert "welcome to nginx" in http_get(port, "/").lower()      # the front end, from the operator side
    print("\n" + " | ".join(f"{label} {host['seconds'].get(key, 0):.0f}s" for key, label in PHASES))
    with ssh_to(vm_root, "allinone/allinone") as ssh:
        store = ssh.run(["findmnt", "-no", "FSTYPE,SOURCE", "/var/lib/provisioner"]).stdout.split()
        backups = ssh.run(["findmnt", "-no", "FSTYPE,SOURCE", "/srv/backups"]).stdout.split()
        assert store[0] == "btrfs" and backups[0] == "btrfs"
        # real udev in the guest reports what GCE's would (vendor, model, serial = device name)
        props = {}
        for dev in (store[1], backups[1]):
            out = ssh.run(["udevadm", "info", "--query=property", "--name", dev]).stdout
            props[dev] = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        assert [props[store[1]][k] for k in ("ID_VENDOR", "ID_MODEL", "ID_BUS")] == ["Google", "EphemeralDisk", "scsi"]
        assert [props[backups[1]][k] for k in ("ID_VENDOR", "ID_MODEL", "ID_SERIAL_SHORT")] == \
            ["Google", "PersistentDisk", "backups"]
        assert ssh.run(["hostname"]).stdout.strip() == "allinone"
        assert "allinone" in ssh.run(["cat", "/etc/hosts"]).stdout
        # the python app answers and PINGs redis through its link alias
        api = json.loads(ssh.run(["sudo", "-n", "provision", "container", "exec", "allinone-app", "python3", "-c",
                                  "import urllib.request as u; print(u.urlopen('http://127.0.0.1:5000/api/')"
                                  ".read().decode())"]).stdout)
        assert api["redis"]["reply"] == "+PONG", api
    assert inventory.find(vm_root, "allinone/allinone").style == "gce"


def test_a_changed_service_is_recreated_alone(deployed, vm_root):
    _result, _port, path, env = deployed
    text = path.read_text()
    head, web = text.split("\n  web:\n", 1)
    # nobody links to the front end: changing it touches nothing else
    path.write_text(head + "\n  web:\n" + web.replace("    restart: always\n",
                                                             "    restart: always\n    environment: {REVISION: '2'}\n", 1))
    again = deploy(vm_root, path, env)
    (host,) = again["hosts"]
    assert again["ok"] and not host["launched"], host["error"]
    assert [(a["action"], a["service"]) for a in host["actions"]] == [("recreate", "web")], host["actions"]
    assert all(s["health"] == "healthy" for s in host["services"])


def test_reboot_brings_the_stack_back_with_the_volume_intact(deployed, vm_root):
    _result, port, _stack, _env = deployed
    name = "allinone/allinone"
    with ssh_to(vm_root, name) as ssh:
        ssh.run(["sh", "-c", "echo kept > /srv/backups/marker"], sudo=True)
        uuid = ssh.run(["findmnt", "-no", "UUID", "/srv/backups"]).stdout.strip()
    took = reboot_and_wait(vm_root, name)
    print(f"\nreboot: SSH back after {took:.0f}s")
    assert "welcome to nginx" in http_get(port, "/", timeout=600).lower()   # restarted by the boot hook
    with ssh_to(vm_root, name) as ssh:
        assert ssh.run(["cat", "/srv/backups/marker"]).stdout.strip() == "kept"
        assert ssh.run(["findmnt", "-no", "UUID", "/srv/backups"]).stdout.strip() == uuid   # not reformatted
        # the boot hook converges the stack after the restart policies had their go: poll until it has
        deadline = time.monotonic() + 600
        while True:
            ps = json.loads(ssh.run(["provision", "ps", "-f", "/etc/provisioner/stack.yml", "--json"], sudo=True).stdout)
            states = {r["service"]: (r["state"], r["health"]) for r in ps}
            if states == {s: ("running", "healthy") for s in SERVICES} or time.monotonic() > deadline:
                break
            time.sleep(5)
        assert states == {s: ("running", "healthy") for s in SERVICES}
        steps = json.loads(ssh.run(["provision", "host", "status", "--json"], sudo=True).stdout)["steps"]
        assert {s["name"]: s["status"] for s in steps}["containers"] in ("ok", "changed"), steps


def test_destroy_keep_volumes_keeps_only_the_volume_files(deployed, vm_root):
    _result, port, _stack, env = deployed
    directory = vm_root / "local" / "allinone" / "allinone"
    provision(vm_root, "destroy", "allinone", "--cloud", "local", "--keep-volumes", "--yes", env=env)
    assert qemu_processes_for(directory) == [] and wait_not_listening(port)
    left = sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))
    assert left == ["volumes", "volumes/backups.json", "volumes/backups.qcow2"]
    assert inventory.records(vm_root, "allinone") == []
    provision(vm_root, "destroy", "allinone", "--cloud", "local", "--yes", env=env)   # now the volume too
    assert not directory.parent.exists()
