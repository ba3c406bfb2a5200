"""bundle.py: image config + run options → OCI config.json, table-driven (pure, no system)."""
from __future__ import annotations

import pytest

from provisioner.containers import bundle
from provisioner.containers.bundle import BundleInputs, Mount, RunOptions, build_config
from provisioner.errors import ConfigError, ContainerError
from provisioner.runspec import env, resources

PASSWD = ("root:x:0:0:root:/root:/bin/sh\n"
          "redis:x:100:101:redis:/var/lib/redis:/usr/sbin/nologin\n"
          "app:x:1000:1000::/home/app:/bin/sh\n"
          "nohome:x:1001:1001::::\n")
GROUP = "root:x:0:\nredis:x:101:\napp:x:1000:\nextra:x:2000:app,redis\nother:x:3000:\n"


def inputs(**kw) -> BundleInputs:
    base = dict(rootfs="/r/rootfs", cgroups_path="/provisioner/abc", passwd=PASSWD, group=GROUP)
    base.update(kw)
    return BundleInputs(**base)


@pytest.mark.parametrize("image, opts, expected", [
    ({"Entrypoint": ["redis-server"], "Cmd": ["--bind", "0.0.0.0"]}, RunOptions(), ["redis-server", "--bind", "0.0.0.0"]),
    ({"Entrypoint": ["redis-server"], "Cmd": ["--bind", "0.0.0.0"]}, RunOptions(command=("--port", "1")),
     ["redis-server", "--port", "1"]),
    # --entrypoint replaces the entrypoint and drops the image's Cmd (Docker)
    ({"Entrypoint": ["redis-server"], "Cmd": ["--bind", "0.0.0.0"]}, RunOptions(entrypoint="sh"), ["sh"]),
    ({"Entrypoint": ["a"], "Cmd": ["b"]}, RunOptions(entrypoint="", command=("ls",)), ["ls"]),
    ({"Cmd": ["sh"]}, RunOptions(command=("echo", "hi")), ["echo", "hi"]),
    ({"Cmd": ["sh"]}, RunOptions(entrypoint="env", command=("-0",)), ["env", "-0"]),
])
def test_args(image, opts, expected):
    assert bundle.process_args(image, opts) == expected


def test_no_command_is_an_error():
    with pytest.raises(ContainerError, match="no command specified"):
        build_config({}, RunOptions(), inputs())


@pytest.mark.parametrize("spec, uid, gid, extra, home", [
    ("", 0, 0, (), "/root"),
    ("root", 0, 0, (), "/root"),
    ("redis", 100, 101, (2000,), "/var/lib/redis"),
    ("app", 1000, 1000, (2000,), "/home/app"),
    ("1000", 1000, 1000, (2000,), "/home/app"),
    ("4242", 4242, 0, (), "/"),              # unknown uid: allowed, gid 0, home /
    ("app:other", 1000, 3000, (), "/home/app"),  # an explicit group drops the supplementary ones
    ("app:77", 1000, 77, (), "/home/app"),
    ("5:6", 5, 6, (), "/"),
    ("nohome", 1001, 1001, (), "/"),
])
def test_resolve_user(spec, uid, gid, extra, home):
    assert bundle.resolve_user(spec, PASSWD, GROUP) == bundle.ResolvedUser(uid, gid, extra, home)


@pytest.mark.parametrize("spec, msg", [("nobody", "unable to find user nobody"),
                                       ("app:nogroup", "unable to find group nogroup")])
def test_resolve_user_unknown_names(spec, msg):
    with pytest.raises(ContainerError, match=msg):
        bundle.resolve_user(spec, PASSWD, GROUP)


def test_env_order_and_defaults():
    env = bundle.merge_env(["PATH=/img", "A=image", "B=image"], {"API_PORT": "tcp://x", "A": "link"},
                           [("A", "user"), ("C", "user=with=equals")], hostname="h1", home="/root")
    assert env == ["PATH=/img", "HOSTNAME=h1", "A=user", "B=image", "API_PORT=tcp://x", "C=user=with=equals",
                   "HOME=/root"]
    env = bundle.merge_env([], {}, [], hostname="h", home="/")
    assert env[0] == f"PATH={bundle.DEFAULT_PATH}"


@pytest.mark.parametrize("text, value", [("6m", 6 << 20), ("64m", 64 << 20), ("1g", 1 << 30), ("1.5g", 3 << 29),
                                         ("10000000", 10_000_000), ("512MB", 512 << 20), ("2G", 2 << 30)])
def test_parse_memory(text, value):
    assert resources.parse_memory(text) == value


@pytest.mark.parametrize("text", ["", "lots", "-1m", "1x", "4m"])
def test_parse_memory_rejects(text):
    with pytest.raises(ConfigError, match="--memory"):
        resources.parse_memory(text)


@pytest.mark.parametrize("text, quota", [("0.5", 50_000), ("1", 100_000), ("2.25", 225_000), ("0.01", 1000)])
def test_parse_cpus(text, quota):
    assert resources.parse_cpus(text) == quota


@pytest.mark.parametrize("text", ["0", "-1", "x", "0.001"])
def test_parse_cpus_rejects(text):
    with pytest.raises(ConfigError, match="--cpus"):
        resources.parse_cpus(text)


def test_env_parsing():
    assert env.parse_env(["A=1", "B=", "C=x=y"]) == [("A", "1"), ("B", ""), ("C", "x=y")]
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        env.parse_env(["=x"])
    text = "# comment\n\nA=1\n  B=two words\nC=\n"
    assert env.parse_env_file(text, "f.env") == [("A", "1"), ("B", "two words"), ("C", "")]
    with pytest.raises(ConfigError, match=r"^f.env:2: bad line"):
        env.parse_env_file("A=1\nnot a pair\n", "f.env")


def test_full_config_mirrors_docker_defaults():
    image = {"Entrypoint": ["redis-server"], "Cmd": ["--bind", "0.0.0.0"], "Env": ["PATH=/usr/bin:/bin"],
             "User": "redis", "WorkingDir": "/var/lib/redis", "ExposedPorts": {"6379/tcp": {}}}
    opts = RunOptions(env=(("MODE", "x"),), hostname="cache", memory=64 << 20, cpu_quota=50_000)
    net_mounts = [{"destination": "/etc/hosts", "type": "bind", "source": "/n/hosts", "options": ["rbind", "rprivate"]}]
    cfg = build_config(image, opts, inputs(netns_path="/run/netns/prov-cache", network_mounts=net_mounts,
                                           volume_mounts=[Mount("/data", "/vol/data"), Mount("/cfg", "/etc/x", True)],
                                           link_env={"DB_PORT": "tcp://10.0.0.3:5432"}))
    p = cfg["process"]
    assert p["args"] == ["redis-server", "--bind", "0.0.0.0"]
    assert p["user"] == {"uid": 100, "gid": 101, "additionalGids": [2000]}
    assert p["cwd"] == "/var/lib/redis"
    assert p["env"] == ["PATH=/usr/bin:/bin", "HOSTNAME=cache", "DB_PORT=tcp://10.0.0.3:5432", "MODE=x",
                        "HOME=/var/lib/redis"]
    assert p["capabilities"]["bounding"] == bundle.DEFAULT_CAPS and len(bundle.DEFAULT_CAPS) == 14
    assert "CAP_SYS_ADMIN" not in p["capabilities"]["effective"]
    assert cfg["root"] == {"path": "/r/rootfs", "readonly": False}
    assert cfg["hostname"] == "cache"
    dests = [m["destination"] for m in cfg["mounts"]]
    assert dests[:7] == ["/proc", "/dev", "/dev/pts", "/sys", "/sys/fs/cgroup", "/dev/mqueue", "/dev/shm"]
    assert dests[7:] == ["/etc/hosts", "/data", "/cfg"]
    assert cfg["mounts"][-1]["options"] == ["rbind", "rprivate", "ro"]
    lx = cfg["linux"]
    assert {"type": "network", "path": "/run/netns/prov-cache"} in lx["namespaces"]
    assert {n["type"] for n in lx["namespaces"]} == {"pid", "ipc", "uts", "mount", "network"}
    assert lx["cgroupsPath"] == "/provisioner/abc"
    assert lx["resources"]["memory"] == {"limit": 64 << 20}
    assert lx["resources"]["cpu"] == {"quota": 50_000, "period": 100_000}
    assert "/proc/kcore" in lx["maskedPaths"] and "/proc/sys" in lx["readonlyPaths"]


def test_options_override_image_user_and_workdir():
    cfg = build_config({"Cmd": ["sh"], "User": "redis", "WorkingDir": "/var/lib/redis"},
                       RunOptions(user="1000:3000", workdir="/tmp"), inputs())
    assert cfg["process"]["user"] == {"uid": 1000, "gid": 3000}
    assert cfg["process"]["cwd"] == "/tmp"
    assert "resources" in cfg["linux"] and "memory" not in cfg["linux"]["resources"]


def test_duplicate_mount_point_and_relative_workdir():
    with pytest.raises(ContainerError, match="duplicate mount point /proc"):
        build_config({"Cmd": ["sh"]}, RunOptions(), inputs(volume_mounts=[Mount("/proc", "/x")]))
    with pytest.raises(ContainerError, match="not an absolute path"):
        build_config({"Cmd": ["sh"], "WorkingDir": "rel"}, RunOptions(), inputs())


def test_exposed_ports_and_stop_signal():
    assert bundle.exposed_ports({"ExposedPorts": {"80/tcp": {}, "53/udp": {}, "8080": {}}}) == \
        [(53, "udp"), (80, "tcp"), (8080, "tcp")]
    with pytest.raises(ContainerError, match="ExposedPorts"):
        bundle.exposed_ports({"ExposedPorts": {"http/tcp": {}}})
    assert bundle.stop_signal({"StopSignal": "SIGQUIT"}, RunOptions()) == "SIGQUIT"
    assert bundle.stop_signal({}, RunOptions()) == "SIGTERM"


def test_run_options_round_trip():
    o = RunOptions(command=("a", "b"), entrypoint="", env=(("K", "V"),), user="u", workdir="/w", hostname="h",
                   memory=1 << 30, cpu_quota=1000, stop_signal="SIGINT")
    assert RunOptions.from_json(o.to_json()) == o


def test_compose_options_reach_the_oci_config():
    opts = RunOptions(command=("sleep", "1"), caps=("CAP_CHOWN", "CAP_NET_ADMIN"), read_only=True,
                      ulimits=(("RLIMIT_NOFILE", 10, 20),), sysctls=(("net.core.somaxconn", "9"),), pids_limit=50,
                      shm_size=1 << 20, memory_reservation=32 << 20, cpu_shares=512, init=True, tty=True,
                      group_add=("extra", "4242"))
    cfg = build_config({"Env": ["PATH=/bin"]}, opts, inputs(
        group="root:x:0:\nextra:x:2000:\n", init_path="/usr/bin/tini-static",
        volume_mounts=[Mount("/run", "tmpfs", type="tmpfs", options=("size=1m", "exec")),
                       Mount("/data", "/srv/data", propagation="rshared")]))
    p, lx = cfg["process"], cfg["linux"]
    assert p["capabilities"]["bounding"] == ["CAP_CHOWN", "CAP_NET_ADMIN"]
    assert p["args"] == ["/sbin/docker-init", "--", "sleep", "1"] and p["terminal"] is True
    assert "TERM=xterm" in p["env"] and p["user"]["additionalGids"] == [2000, 4242]
    assert p["rlimits"] == [{"type": "RLIMIT_NOFILE", "soft": 10, "hard": 20}]
    assert cfg["root"]["readonly"] is True and lx["sysctl"] == {"net.core.somaxconn": "9"}
    assert lx["resources"]["pids"] == {"limit": 50} and lx["resources"]["memory"] == {"reservation": 32 << 20}
    assert lx["resources"]["cpu"] == {"shares": 512}
    mounts = {m["destination"]: m for m in cfg["mounts"]}
    assert "size=1048576" in mounts["/dev/shm"]["options"] and "size=65536k" not in mounts["/dev/shm"]["options"]
    assert mounts["/run"] == {"destination": "/run", "type": "tmpfs", "source": "tmpfs",
                              "options": ["nosuid", "nodev", "size=1m"]}   # exec: no noexec
    assert mounts["/data"]["options"] == ["rbind", "rshared"]
    assert mounts["/sbin/docker-init"]["source"] == "/usr/bin/tini-static" and "ro" in mounts["/sbin/docker-init"][
        "options"]
    assert RunOptions.from_json(opts.to_json()) == opts
    assert set(RunOptions().to_json()) == {"command", "entrypoint", "env", "user", "workdir", "hostname", "memory",
                                           "cpu_quota", "stop_signal", "seccomp", "no_new_privileges"}


def test_privileged_and_host_network():
    cfg = build_config({"Cmd": ["sh"]}, RunOptions(privileged=True), inputs(
        host_network=True, last_cap=37, host_devices=[{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229,
                                                       "fileMode": 0o666, "uid": 0, "gid": 0}]))
    lx = cfg["linux"]
    assert len(cfg["process"]["capabilities"]["effective"]) == 38 and "seccomp" not in lx
    assert lx["maskedPaths"] == [] and lx["readonlyPaths"] == [] and lx["devices"][0]["path"] == "/dev/fuse"
    assert lx["resources"]["devices"] == [{"allow": True, "access": "rwm"}]
    assert "network" not in [n["type"] for n in lx["namespaces"]]
    sys_mount = next(m for m in cfg["mounts"] if m["destination"] == "/sys")
    assert "ro" not in sys_mount["options"]
    with pytest.raises(ContainerError, match="--init needs tini"):
        build_config({"Cmd": ["sh"]}, RunOptions(init=True), inputs())
