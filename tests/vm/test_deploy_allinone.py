"""The all-in-one stack (examples/allinone-stack.yml) deployed to one local VM with GCE-style disks.

Real Debian redis, mariadb, nginx and a python3 app plus busybox stand-ins, all healthy; the
nginx front end answers on the forwarded port from the operator machine; the local SSD (virtio-scsi,
"Google EphemeralDisk") is the btrfs container store and the persistent disk, matched by its
device name, its own btrfs. The breakdown table is printed (bench/deploy.py records it).
"""
from __future__ import annotations

import json

import pytest

from provisioner.deploy import inventory
from provisioner.deploy.pipeline import PHASES
from tests.registry_fixture import docker_registry, free_port

from deployhelpers import EXAMPLES, deploy, http_get, provision, push_images, ssh_to

pytestmark = pytest.mark.vm

IMAGES = {"allinone/redis:1": "debian-redis", "allinone/nginx:1": "debian-nginx",
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
            yield deploy(vm_root, stack, env), port
        finally:
            provision(vm_root, "destroy", "allinone", "--cloud", "local", "--yes", env=env, check=False)


def test_allinone_deployed_every_service_healthy(deployed, vm_root):
    result, port = deployed
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
        models = {dev: ssh.run(["lsblk", "-dno", "VENDOR,MODEL", dev]).stdout.split()
                  for dev in (store[1], backups[1])}
        assert models[store[1]] == ["Google", "EphemeralDisk"], models
        assert models[backups[1]] == ["Google", "PersistentDisk"], models
        assert ssh.run(["hostname"]).stdout.strip() == "allinone"
        assert "allinone" in ssh.run(["cat", "/etc/hosts"]).stdout
        # the python app answers and PINGs redis through its link alias
        api = json.loads(ssh.run(["sudo", "-n", "provision", "container", "exec", "allinone-app", "python3", "-c",
                                  "import urllib.request as u; print(u.urlopen('http://127.0.0.1:5000/api/')"
                                  ".read().decode())"]).stdout)
        assert api["redis"]["reply"] == "+PONG", api
    assert inventory.find(vm_root, "allinone/allinone").style == "gce"
