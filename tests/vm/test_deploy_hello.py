"""`provision deploy --cloud local -f examples/hello.yml` in a real VM with AWS-style disks, and the
ops commands and runbooks against it — one VM for all, in this order:

1. deploy: two instance-store NVMe disks become one btrfs raid0 (the container store), the
   EBS-style volume its own btrfs at /srv/data, the web service answers on the forwarded port;
2. deploying again changes nothing;
3. `provision ssh | logs | snapshot` (real sshd with the console-reported host keys, real sudo,
   btrfs, fsfreeze; the freeze path of a cloud snapshot driven over SSH with a stand-in provider
   call: frozen during it, thawed after, and thawed by the watchdog when the operator vanishes);
   the rotate-ssh-keys runbook as written; the operator's docker client through `docker-env`;
4. after a reboot everything is back with the volume's data intact and not reformatted;
5. the replace-a-failed-host runbook: qemu killed, destroy keeping volumes, deploy again (new host
   keys, the volume's data and filesystem back);
6. destroy leaves no VM process, disk file, port or host record behind.
"""
from __future__ import annotations

import json
import subprocess
import tempfile
import time
from pathlib import Path
from dataclasses import replace

import pytest

from provisioner.clouds.local import local_nvme_role, state
from provisioner.deploy import inventory
from provisioner.deploy.ops import VolumeTarget
from provisioner.remote.hostkeys import fetch_host_keys, openssh_argv, write_known_hosts
from provisioner.deploy.ops_snapshot import WATCHDOG, SnapshotPlan, apply_snapshot
from provisioner.remote.ssh import HostKeyMismatch, SshClient
from tests.registry_fixture import docker_registry, free_port

from deployhelpers import EXAMPLES, deploy, http_get, provision, push_images, reboot_and_wait, ssh_to
from vmhelpers import qemu_processes_for, wait_not_listening

pytestmark = pytest.mark.vm

NAME = "hello/web"


@pytest.fixture(scope="module")
def env(vm_root, vm_image, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hello")
    with docker_registry(tmp / "registry") as reg:
        push_images(tmp, reg.address, {"hello/busybox:1": "busybox"})
        port = free_port()
        text = (EXAMPLES / "hello.yml").read_text().replace("127.0.0.1:5000/", f"{reg.address}/")
        text = text.replace('"8080:80"', f'"{port}:80"')
        stack = tmp / "hello.yml"
        stack.write_text(text)
        # the per-stack operator key goes under this test's config dir, the VM image the cached one (vm_image)
        e = {"XDG_CONFIG_HOME": str(tmp / "config")}
        yield {"root": vm_root, "stack": stack, "port": port, "env": e, "registry": reg.address, "tmp": tmp}
        provision(vm_root, "destroy", "hello", "--cloud", "local", "--yes", env=e, check=False)


@pytest.fixture(scope="module")
def first(env):
    return deploy(env["root"], env["stack"], env["env"])


def test_deploy_serves_from_the_forwarded_port_with_disks_like_aws(env, first):
    (host,) = first["hosts"]
    assert first["ok"] and host["launched"] and host["error"] is None
    assert set(host["seconds"]) >= {"launch", "ssh", "agent", "prepare", "images", "containers", "total"}
    assert [(s["service"], s["state"], s["health"]) for s in host["services"]] == [("web", "running", "healthy")]
    assert host["endpoints"] == {f"{env['port']}/tcp": f"127.0.0.1:{env['port']}"}
    assert http_get(env["port"]).strip() == "hello from provisioner"
    print("\nbreakdown: " + json.dumps(host["seconds"]))
    rec = inventory.find(env["root"], "hello/web")
    # the real sshd's key is checked against the console's fingerprints: a wrong one is refused
    wrong = replace(rec.target(), fingerprints=("SHA256:" + "A" * 43,))
    with pytest.raises(HostKeyMismatch, match="not among the fingerprints"):
        SshClient(wrong).connect()
    with ssh_to(env["root"], "hello/web") as ssh:
        store = ssh.run(["findmnt", "-no", "FSTYPE", "/var/lib/provisioner"]).stdout.strip()
        df = ssh.run(["btrfs", "filesystem", "df", "/var/lib/provisioner"], sudo=True).stdout
        devs = ssh.run(["btrfs", "filesystem", "show", "/var/lib/provisioner"], sudo=True).stdout
        assert store == "btrfs" and "Data, RAID0" in df and devs.count("/dev/nvme") == 2, df + devs
        src = ssh.run(["findmnt", "-no", "FSTYPE,SOURCE", "/srv/data"]).stdout.split()
        assert src[0] == "btrfs"
        serial = ssh.run(["lsblk", "-dno", "SERIAL", src[1]]).stdout.strip()
        assert serial == rec.volumes["data"]            # the EBS-style volume, matched by its id
        # what the on-host discovery saw: real udev properties of qemu's NVMe disks, told apart by serial
        st = state.load(env["root"] / "local" / "hello" / "web")
        for disk in st.disks:
            dev = ssh.run(["sh", "-c", f"lsblk -dno NAME,SERIAL | awk '$2 == \"{disk['serial']}\" {{print $1}}'"]
                          ).stdout.strip()
            out = ssh.run(["udevadm", "info", "--query=property", "--name", f"/dev/{dev}"]).stdout
            props = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
            assert props["ID_SERIAL_SHORT"] == disk["serial"] and props["ID_MODEL"] == "QEMU NVMe Ctrl", props
            assert local_nvme_role(disk["serial"]) == disk["role"]
        assert sorted(d["role"] for d in st.disks) == ["ephemeral", "ephemeral", "volume"]
        status = json.loads(ssh.run(["provision", "host", "status", "--json"], sudo=True).stdout)
        assert {s["name"]: s["status"] for s in status["steps"]}["disks"] in ("ok", "changed")


def test_deploying_again_is_one_round_trip(env, first):
    """Nothing changed: the probe says so (same agent, same files and digests, healthy), and
    deploy stops there — no delivery, boot hook, pull or `up` (bench/deploy.py times it)."""
    started = time.monotonic()
    again = deploy(env["root"], env["stack"], env["env"])
    took = time.monotonic() - started
    (host,) = again["hosts"]
    assert again["ok"] and not host["launched"] and host["unchanged"]
    assert host["actions"] == [] and host["images"] == [] and host["boot"] == [] and host["changes"] == []
    assert [(s["service"], s["state"], s["health"]) for s in host["services"]] == [("web", "running", "healthy")]
    print(f"\nunchanged re-deploy: {took:.1f}s (breakdown {json.dumps(host['seconds'])})")


class Poller:
    """A client of the published port, from the operator side (the forwarded 127.0.0.1 port, the
    path users take): a GET every 50 ms; what each answered, or why it failed."""

    def __init__(self, port: int):
        import threading
        import urllib.request

        self.results: list[tuple[float, str | None, str]] = []
        self._stop = threading.Event()

        def loop():
            while not self._stop.is_set():
                t = time.monotonic()
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
                        self.results.append((t, r.read().decode().strip(), ""))
                except OSError as exc:
                    self.results.append((t, None, f"{type(exc).__name__}: {exc}"))
                self._stop.wait(max(0.0, 0.05 - (time.monotonic() - t)))
        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def stop(self) -> list:
        self._stop.set()
        self._thread.join(30)
        return self.results


VERSIONED = """    command:
      - sh
      - -c
      - "mkdir -p /v && echo \\"$$GREETING $$(cat /etc/platform 2>/dev/null)\\" > /v/index.html; exec httpd -f -v -p 80 -h /v"
    environment: {GREETING: GREETING_VALUE}
"""


def _versioned(env, greeting: str, command: str | None = None) -> Path:
    """hello.yml with a page that says which version answers: its GREETING and image marker."""
    text = env["stack"].read_text()
    start = text.index("    command:\n")
    end = text.index("    ports:")
    block = VERSIONED.replace("GREETING_VALUE", greeting)
    if command is not None:
        block = f"    command: {command}\n    environment: {{GREETING: {greeting}}}\n"
    path = env["tmp"] / "versioned.yml"
    path.write_text(text[:start] + block + text[end:])
    return path


def _switch(env, what: str, run) -> tuple[object, str, list]:
    poller = Poller(env["port"])
    time.sleep(1.0)
    try:
        result = run()
        after = http_get(env["port"]).strip()
    finally:
        time.sleep(1.0)
        results = poller.stop()
    failed = [(round(t, 2), err) for t, body, err in results if body is None]
    assert failed == [], f"{what}: {len(failed)} of {len(results)} requests failed: {failed[:5]}"
    return result, after, results


def test_changes_digests_and_rollback_switch_without_a_failed_request(env, first):
    """Issue 13's must-show, one VM: a client polling every 50 ms sees no failed request across a
    changed environment variable, a new digest under the same tag and a rollback; right after
    each returns the new version answers; a version whose command exits is refused and the old
    one keeps serving."""
    stack = _versioned(env, "one")
    deploy(env["root"], stack, env["env"])
    assert http_get(env["port"]).strip() == "one"

    # (1) a changed environment variable
    out, after, _ = _switch(env, "env change", lambda: deploy(env["root"], _versioned(env, "two"), env["env"]))
    (host,) = out["hosts"]
    assert [(c["service"], c["action"]) for c in host["changes"]] == [("web", "recreate")]
    assert after == "two"

    # (2) new content under the same tag: a new digest, so a new container
    from provisioner.imagebuild.layout import LayoutWriter
    from provisioner.imagebuild.recipes import BUSYBOX_CONFIG, busybox_layers, push
    from provisioner.runner import Runner

    layout = env["tmp"] / "busybox-b"
    w = LayoutWriter(layout)
    w.tag(w.image(busybox_layers(Runner(), marker="b"), BUSYBOX_CONFIG), "latest")
    push(layout, f"{env['registry']}/hello/busybox:1", runner=Runner())
    out, after, _ = _switch(env, "new digest", lambda: deploy(env["root"], _versioned(env, "two"), env["env"]))
    (host,) = out["hosts"]
    assert "new digest" in host["changes"][0]["why"][0] and after == "two b"

    # (3) rollback to the release before: the old digest, with zero failed requests
    out, after, _ = _switch(env, "rollback", lambda: provision(env["root"], "rollback", "hello", "--cloud", "local",
                                                                 "--json", env=env["env"]))
    assert json.loads(out.stdout)["web"]["release"] >= 1 and after == "two"
    rels = json.loads(provision(env["root"], "releases", "hello", "--cloud", "local", "--json", env=env["env"]).stdout)
    assert rels["web"][-1]["by"].startswith("rollback to ") and rels["web"][-1]["current"]

    # (4) a version whose command exits is refused; the old one keeps serving, untouched
    broken = _versioned(env, "three", command='["sh", "-c", "echo broken on purpose; exit 3"]')
    proc, after, _ = _switch(env, "refused version", lambda: provision(
        env["root"], "deploy", "--cloud", "local", "-f", str(broken), "--json", env=env["env"], check=False))
    assert proc.returncode != 0 and after == "two"
    (host,) = json.loads(proc.stdout)["hosts"]
    assert "web" in host["error"] and "broken on purpose" in host["error"], host["error"]

    # back to the example as it was, for the tests after this one
    deploy(env["root"], env["stack"], env["env"])
    assert http_get(env["port"]).strip() == "hello from provisioner"


def _frozen(client: SshClient) -> bool:
    """A second freeze of a frozen filesystem fails (EBUSY); undo it when it succeeds."""
    if client.run(["fsfreeze", "-f", "/srv/data"], sudo=True, check=False).returncode == 0:
        client.run(["fsfreeze", "-u", "/srv/data"], sudo=True)
        return False
    return True


def _client(root) -> SshClient:
    return SshClient(inventory.find(root, NAME).target()).connect()


def test_ssh_runs_commands_with_their_exit_status(env, first):
    r = provision(env["root"], "ssh", NAME, "--", "uname", "-s", ";", "echo", "oops", ">&2", env=env["env"])
    assert r.stdout == "Linux\n" and "oops" in r.stderr
    r = provision(env["root"], "ssh", NAME, "--", "exit", "7", env=env["env"], check=False)
    assert r.returncode == 7


def test_openssh_accepts_the_verified_known_hosts(env, first):
    rec = inventory.find(env["root"], NAME)
    keys = fetch_host_keys(rec.target())
    assert keys
    with tempfile.TemporaryDirectory() as tmp:
        known = write_known_hosts(Path(tmp) / "known_hosts", rec.target(), keys)
        argv = openssh_argv(rec.target(), known, keys, ["hostname"])
        done = subprocess.run([argv[0], "-o", "BatchMode=yes", *argv[1:]], capture_output=True, text=True,
                              timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 0 and done.stdout.strip(), done.stderr


def test_logs_shows_the_service_output(env, first):
    http_get(env["port"])
    deadline = time.monotonic() + 60
    while True:
        # busybox httpd -v logs each request on its stderr, which `logs` keeps on stderr (like docker logs)
        r = provision(env["root"], "logs", NAME, "web", "-n", "20", env=env["env"])
        if "response:200" in r.stderr or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert "response:200" in r.stderr, r.stdout + r.stderr


def test_docker_env_points_the_operators_docker_client_at_the_host(env, first):
    """Issue 16: Debian's docker client on the operator's machine, through `provision docker-env`
    (a local socket forwarded over the verified SSH session to the host's Engine API), sees the
    stack's container and runs one with its exit code passed through; --stop ends it."""
    import os
    import re

    out = provision(env["root"], "docker-env", NAME, env=env["env"]).stdout
    m = re.search(r"^export DOCKER_HOST=(unix://\S+)$", out, re.M)
    assert m, out
    denv = {**os.environ, **env["env"], "DOCKER_HOST": m.group(1), "DOCKER_CONFIG": str(env["tmp"] / "docker")}

    def docker(*args, check=True):
        p = subprocess.run(["docker", *args], env=denv, capture_output=True, text=True, timeout=300)
        assert not check or p.returncode == 0, f"docker {' '.join(args)}: {p.stderr}"
        return p
    try:
        assert docker("version", "--format", "{{.Server.APIVersion}}").stdout.strip() == "1.41"
        rows = [ln.split() for ln in docker("ps", "--format", "{{.Names}} {{.Image}} {{.Status}}").stdout.splitlines()]
        assert any(r[0].startswith("hello-web") and r[1].endswith("/hello/busybox:1") and r[2] == "Up"
                   for r in rows), rows
        image = next(r[1] for r in rows if r[0].startswith("hello-web"))
        run = docker("run", "--rm", image, "sh", "-c", "echo from-docker-env; exit 3", check=False)
        assert run.returncode == 3 and run.stdout.strip() == "from-docker-env", run.stderr
    finally:
        provision(env["root"], "docker-env", "--stop", NAME, env=env["env"], check=False)
    gone = docker("ps", check=False)
    assert gone.returncode != 0


def test_snapshot_on_the_local_cloud_is_a_btrfs_snapshot(env, first):
    r = provision(env["root"], "snapshot", NAME, "data", "--name", "s1", "--json", env=env["env"])
    out = json.loads(r.stdout)
    assert out["btrfs_path"] == "/srv/data/.snapshots/s1" and out["cloud_snapshot_id"] is None
    assert "btrfs snapshot only" in out["notes"][0]
    with _client(env["root"]) as c:
        listed = c.run(["provision", "host", "disks", "snapshot", "list", "/srv/data"], sudo=True).stdout
        assert "s1" in listed
        assert c.run(["cat", "/srv/data/.snapshots/s1/www/index.html"], sudo=True).stdout.strip()


def test_freeze_over_ssh_is_held_during_the_provider_call_and_released(env, first):
    rec = inventory.find(env["root"], NAME)
    plan = SnapshotPlan(rec.name, "aws", VolumeTarget("data", "/srv/data", "vol-x"), "s2", True, 30)
    seen = []
    with _client(env["root"]) as c, _client(env["root"]) as probe:
        def provider():
            seen.append(_frozen(probe))
            return type("Snap", (), {"id": "snap-x", "state": "pending"})()
        res = apply_snapshot(plan, c, provider)
        assert seen == [True] and not _frozen(probe) and res.notes == []
        # no watchdog left behind
        assert "watchdog" not in c.run(["ps", "-eo", "args"], check=False).stdout


def test_the_watchdog_thaws_after_the_operator_vanishes(env, first):
    with _client(env["root"]) as c:
        c.run(["sh", "-c", WATCHDOG, "watchdog", "/srv/data", "30"], sudo=True)
        c.run(["fsfreeze", "-f", "/srv/data"], sudo=True)
    # the operator's connection is gone; the host must thaw on its own
    with _client(env["root"]) as probe:
        assert _frozen(probe)
        deadline = time.monotonic() + 90
        while _frozen(probe):
            assert time.monotonic() < deadline, "/srv/data still frozen 90 s after the operator left"
            time.sleep(1)
        probe.run(["touch", "/srv/data/after-thaw"], sudo=True, timeout=30)


def test_rotate_ssh_keys_runbook_on_the_vm(env, first):
    """docs/runbooks/rotate-ssh-keys.md, its blocks run as written against the VM (last: it
    changes the key every other test logs in with)."""
    import os
    import re
    import shlex
    import sys

    rec = inventory.find(env["root"], NAME)
    keys = Path(rec.key_file).parent
    text = (Path(__file__).resolve().parents[2] / "docs" / "runbooks" / "rotate-ssh-keys.md").read_text()
    subs = {"~/.config/provisioner/keys/shop": str(keys), "provision ssh web ": f"provision ssh {NAME} ",
            "name: admin": f"name: {rec.user}", "/home/admin": f"/home/{rec.user}"}
    prelude = (f"set -e; provision() {{ {shlex.quote(sys.executable)} -m provisioner.cli.main "
               f"--root {shlex.quote(str(env['root']))} \"$@\"; }}\n")
    old_pub = Path(rec.key_file + ".pub").read_text().split()[1]
    outputs = {}
    for body in re.findall(r"```sh\n(.*?)```", text, re.S):
        step = re.match(r"# step: (\S+)\n", body).group(1)
        for a, b in subs.items():
            body = body.replace(a, b)
        p = subprocess.run(["bash", "-c", prelude + body], capture_output=True, text=True, timeout=600,
                           stdin=subprocess.DEVNULL, env={**os.environ, **env["env"],
                                                          "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
        assert p.returncode == 0, f"{step}: {p.stdout}{p.stderr}"
        outputs[step] = p.stdout
    new_pub = Path(rec.key_file + ".pub").read_text().split()[1]
    assert new_pub != old_pub
    shown = [ln.split()[1] for ln in outputs["remove-old"].splitlines() if ln.startswith("ssh-")]
    assert shown == [new_pub]
    # the old key is refused by the real sshd, the new one works
    old = SshClient(inventory.HostRecord(**{**rec.to_json(), "fingerprints": rec.fingerprints,
                                            "key_file": rec.key_file + ".old"}).target())
    with pytest.raises(Exception):
        old.connect()
    with _client(env["root"]) as c:
        assert c.run(["true"]).returncode == 0


def test_reboot_brings_everything_back_with_the_volume_intact(env, first):
    root = env["root"]
    with ssh_to(root, "hello/web") as ssh:
        ssh.run(["sh", "-c", "echo survived > /srv/data/www/index.html"], sudo=True)
        uuid = ssh.run(["findmnt", "-no", "UUID", "/srv/data"]).stdout.strip()
    took = reboot_and_wait(root, "hello/web")
    print(f"\nreboot: SSH back after {took:.0f}s")
    assert http_get(env["port"], timeout=300).strip() == "survived"   # restarted by the boot hook
    with ssh_to(root, "hello/web") as ssh:
        assert ssh.run(["findmnt", "-no", "UUID", "/srv/data"]).stdout.strip() == uuid   # not reformatted
        assert ssh.run(["findmnt", "-no", "FSTYPE", "/var/lib/provisioner"]).stdout.strip() == "btrfs"
        ps = json.loads(ssh.run(["provision", "ps", "-f", "/etc/provisioner/stack.yml", "--json"], sudo=True).stdout)
        assert [(r["service"], r["state"]) for r in ps] == [("web", "running")]


def test_replace_a_failed_host_runbook_on_the_vm(env, first):
    """docs/runbooks/replace-a-failed-host.md on the local cloud: the VM dies (qemu killed), the
    runbook's commands destroy it keeping the volume and deploy again; the new VM has new host
    keys (recorded from its console) and the volume's data."""
    import os
    import re
    import shlex
    import signal

    root = env["root"]
    with _client(root) as c:
        # synced: a killed VM loses what sat in its page cache, like a real power loss
        c.run(["sh", "-c", "echo survived replacement > /srv/data/www/index.html && sync -f /srv/data/www"],
              sudo=True)
        uuid = c.run(["findmnt", "-no", "UUID", "/srv/data"]).stdout.strip()
    old = inventory.find(root, NAME)
    pid = int((root / "local" / "hello" / "web" / "qemu.pid").read_text().split()[0])
    os.kill(pid, signal.SIGKILL)          # the failure (our own VM's qemu)
    text = (Path(__file__).resolve().parents[2] / "docs" / "runbooks" / "replace-a-failed-host.md").read_text()
    for body in re.findall(r"```sh\n(.*?)```", text, re.S):
        for line in body.splitlines():
            if not line.strip() or line.startswith("#"):
                continue
            line = line.replace("--cloud aws", "--cloud local").replace(" shop ", " hello ")
            line = line.replace("-f stack.yml", f"-f {env['stack']}")
            words = shlex.split(line)
            assert words[0] == "provision", line
            provision(root, *words[1:], env=env["env"])
    new = inventory.find(root, NAME)
    assert set(new.fingerprints).isdisjoint(old.fingerprints)       # a new machine, verified anew
    assert http_get(env["port"], timeout=300).strip() == "survived replacement"
    r = provision(root, "ssh", NAME, "--", "cat", "/srv/data/www/index.html", ";", "findmnt", "-no", "UUID",
                  "/srv/data", env=env["env"])
    assert r.stdout.split() == ["survived", "replacement", uuid]     # the same filesystem, not reformatted


def test_destroy_leaves_nothing(env, first):
    root = env["root"]
    rec = inventory.find(root, "hello/web")
    directory = root / "local" / "hello" / "web"
    assert qemu_processes_for(directory)
    provision(root, "destroy", "hello", "--cloud", "local", "--yes", env=env["env"])
    assert qemu_processes_for(directory) == []
    assert not (root / "local" / "hello").exists()
    assert wait_not_listening(rec.port) and wait_not_listening(env["port"])
    assert inventory.records(root, "hello") == []
    assert not state.listening(env["port"])
