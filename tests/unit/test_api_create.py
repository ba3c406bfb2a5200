"""The Engine API's create body → a provisioner run request: what the docker CLI, docker-compose
and docker-py send is carried over, and a parameter provisioner cannot honour is refused naming it."""
from __future__ import annotations

import pytest

from provisioner.api.create import request_from_create
from provisioner.api.http import ApiError
from provisioner.runspec.netopts import NetworkAttachment

IMAGE_CFG = {"Healthcheck": {"Test": ["CMD", "true"], "Interval": 5_000_000_000, "Retries": 7}}


def cli_body(**over) -> dict:
    """What `docker run -d -p 127.0.0.1:8080:80 -e A=1 -v data:/data --name web --restart always
    -m 64m --cpus 0.5 -u 1000 -w /srv --entrypoint sh IMAGE -c 'x'` sends (Debian's docker 20.10)."""
    body = {"Hostname": "", "Domainname": "", "User": "1000", "AttachStdin": False, "AttachStdout": False,
            "AttachStderr": False, "ExposedPorts": {"80/tcp": {}}, "Tty": False, "OpenStdin": False,
            "StdinOnce": False, "Env": ["A=1"], "Cmd": ["-c", "x"], "Image": "web:1", "Volumes": {},
            "WorkingDir": "/srv", "Entrypoint": ["sh"], "OnBuild": None, "Labels": {"team": "ops"},
            "HostConfig": {"Binds": ["data:/data"], "ContainerIDFile": "", "LogConfig": {"Type": "", "Config": {}},
                           "NetworkMode": "default", "PortBindings": {"80/tcp": [{"HostIp": "127.0.0.1",
                                                                                  "HostPort": "8080"}]},
                           "RestartPolicy": {"Name": "always", "MaximumRetryCount": 0}, "AutoRemove": False,
                           "VolumeDriver": "", "VolumesFrom": None, "CapAdd": None, "CapDrop": None,
                           "CgroupnsMode": "", "Dns": [], "DnsOptions": [], "DnsSearch": [], "ExtraHosts": None,
                           "GroupAdd": None, "IpcMode": "", "Cgroup": "", "Links": None, "OomScoreAdj": 0,
                           "PidMode": "", "Privileged": False, "PublishAllPorts": False, "ReadonlyRootfs": False,
                           "SecurityOpt": None, "UTSMode": "", "UsernsMode": "", "ShmSize": 0, "ConsoleSize": [0, 0],
                           "Isolation": "", "CpuShares": 0, "Memory": 64 << 20, "NanoCpus": 500_000_000,
                           "CgroupParent": "", "BlkioWeight": 0, "BlkioWeightDevice": [], "CpuPeriod": 0,
                           "CpuQuota": 0, "CpuRealtimePeriod": 0, "CpuRealtimeRuntime": 0, "CpusetCpus": "",
                           "CpusetMems": "", "Devices": [], "DeviceCgroupRules": None, "DeviceRequests": None,
                           "KernelMemory": 0, "KernelMemoryTCP": 0, "MemoryReservation": 0, "MemorySwap": 0,
                           "MemorySwappiness": None, "OomKillDisable": False, "PidsLimit": None, "Ulimits": None,
                           "CpuCount": 0, "CpuPercent": 0, "IOMaximumIOps": 0, "IOMaximumBandwidth": 0,
                           "MaskedPaths": None, "ReadonlyPaths": None},
            "NetworkingConfig": {"EndpointsConfig": {}}}
    for k, v in over.items():
        if k.startswith("H_"):
            body["HostConfig"][k[2:]] = v
        else:
            body[k] = v
    return body


def test_the_docker_clis_run_flags_carry_over():
    req = request_from_create(cli_body(), "web", {})
    assert req.image == "web:1" and req.name == "web" and req.detach
    assert [str(p) for p in req.ports] == ["127.0.0.1:8080:80/tcp"]
    assert [str(v) for v in req.volumes] == ["data:/data"]
    assert req.env == ("A=1",) and req.user == "1000" and req.workdir == "/srv"
    assert req.entrypoint == "sh" and req.command == ("-c", "x")
    assert str(req.restart) == "always" and req.memory == 64 << 20 and req.cpu_quota == 50_000
    assert dict(req.labels) == {"team": "ops"} and not req.rm


def test_a_longer_entrypoint_keeps_its_argv_order():
    req = request_from_create(cli_body(Entrypoint=["/bin/sh", "-e"], Cmd=["-c", "true"]), None, {})
    assert (req.entrypoint, req.command) == ("/bin/sh", ("-e", "-c", "true"))
    assert request_from_create(cli_body(Entrypoint=[], Cmd=None), None, {}).entrypoint == ""
    assert request_from_create(cli_body(Entrypoint=None, Cmd=None), None, {}).entrypoint is None


def test_auto_remove_anonymous_volumes_mounts_links_and_random_ports():
    req = request_from_create(cli_body(Volumes={"/cache": {}}, H_AutoRemove=True,
                                       H_RestartPolicy={"Name": "no"}, H_Links=["/db:/web/db"],
                                       H_Mounts=[{"Type": "bind", "Source": "/srv/x", "Target": "/x",
                                                  "ReadOnly": True}],
                                       H_PortBindings={"53/udp": [{"HostIp": "", "HostPort": ""}]}), None, {})
    assert req.rm
    assert sorted(str(v) for v in req.volumes) == ["/cache", "/srv/x:/x:ro", "data:/data"]
    assert req.links == (("db", "db"),)
    assert [str(p) for p in req.ports] == ["53/udp"]


def test_healthcheck_merges_the_images_durations_as_dockerd_does():
    hc = {"Test": ["CMD-SHELL", "curl -f localhost"], "Interval": 2_000_000_000}
    req = request_from_create(cli_body(Healthcheck=hc), None, IMAGE_CFG)
    assert req.healthcheck.test == ("/bin/sh", "-c", "curl -f localhost")
    assert (req.healthcheck.interval, req.healthcheck.retries, req.healthcheck.timeout) == (2.0, 7, 30.0)
    off = request_from_create(cli_body(Healthcheck={"Test": ["NONE"]}), None, IMAGE_CFG)
    assert off.health_flags.disable and off.healthcheck is None


@pytest.mark.parametrize("over,named", [
    ({"H_Privileged": True}, "HostConfig.Privileged"),
    ({"H_CapAdd": ["NET_ADMIN"]}, "HostConfig.CapAdd"),
    ({"H_Dns": ["1.1.1.1"]}, "HostConfig.Dns"),
    ({"H_PidsLimit": 100}, "HostConfig.PidsLimit"),
    ({"H_Devices": [{"PathOnHost": "/dev/fuse"}]}, "HostConfig.Devices"),
    ({"H_LogConfig": {"Type": "syslog"}}, "HostConfig.LogConfig"),
    ({"H_PublishAllPorts": True}, "HostConfig.PublishAllPorts"),
    ({"H_Binds": ["/srv:/srv:z"]}, "mode 'z'"),
    ({"H_Mounts": [{"Type": "tmpfs", "Target": "/tmp"}]}, "type tmpfs"),
    ({"Domainname": "example.org"}, "Config.Domainname"),
    ({"StopSignal": "SIGUSR1"}, "Config.StopSignal"),
    ({"MysteryField": 1}, "Config.MysteryField"),
])
def test_what_cannot_be_honoured_is_refused_by_name(over, named):
    with pytest.raises(ApiError) as e:
        request_from_create(cli_body(**over), None, {})
    assert e.value.status == 400 and named in e.value.message and "not supported" in e.value.message


@pytest.mark.parametrize("over,why", [
    ({"Image": ""}, "Config.Image is empty"),
    ({"Env": "A=1"}, "Config.Env"),
    ({"Env": ["=x"]}, "Config.Env"),
    ({"H_PortBindings": {"99999/tcp": [{"HostPort": "1"}]}}, "HostConfig.PortBindings"),
    ({"H_Binds": ["rel/path:/x"]}, "HostConfig.Binds"),
    ({"H_RestartPolicy": {"Name": "sometimes"}}, "restart"),
    ({"Labels": {"a": 1}}, "Config.Labels"),
    ({"Healthcheck": {"Test": ["SHELL", "x"]}}, "Config.Healthcheck.Test"),
])
def test_bad_values_are_a_400_naming_the_field(over, why):
    with pytest.raises(ApiError) as e:
        request_from_create(cli_body(**over), None, {})
    assert e.value.status == 400 and why in e.value.message, e.value.message


def test_an_unknown_network_is_a_404():
    with pytest.raises(ApiError) as e:
        request_from_create(cli_body(NetworkingConfig={"EndpointsConfig": {"backend": {}}}), None, {})
    assert e.value.status == 404 and "network backend not found" in e.value.message


def test_a_user_network_and_its_aliases_carry_over_as_compose_sends_them():
    """docker-compose 1.29: NetworkMode is the project's network, the service name its alias."""
    body = cli_body(H_NetworkMode="shop_default",
                    NetworkingConfig={"EndpointsConfig": {"shop_default": {"Aliases": ["redis"], "IPAMConfig": {},
                                                                           "Links": None}}})
    req = request_from_create(body, "shop_redis_1", {}, user_networks=("shop_default",))
    assert req.networks == (NetworkAttachment("shop_default", ("redis",)),)
    # `docker run --network shop_default` (no EndpointsConfig): on it, no alias
    req = request_from_create(cli_body(H_NetworkMode="shop_default"), None, {}, user_networks=("shop_default",))
    assert req.networks == (NetworkAttachment("shop_default"),)
    assert request_from_create(cli_body(), None, {}, user_networks=("shop_default",)).networks == ()
    # `docker run --network shop_default --ip 10.89.0.9`: a fixed address; NetworkMode's network first
    body = cli_body(H_NetworkMode="shop_back", NetworkingConfig={"EndpointsConfig": {
        "shop_default": {"IPAMConfig": {"IPv4Address": "10.89.0.9"}}, "shop_back": {"Aliases": ["db"]}}})
    req = request_from_create(body, None, {}, user_networks=("shop_default", "shop_back"))
    assert req.networks == (NetworkAttachment("shop_back", ("db",)),
                            NetworkAttachment("shop_default", (), "10.89.0.9"))


@pytest.mark.parametrize("body,status,why", [
    (cli_body(H_NetworkMode="host", NetworkingConfig={"EndpointsConfig": {"shop_default": {}}}), 400,
     "cannot be connected to any other network (NetworkingConfig.EndpointsConfig['shop_default'])"),
    (cli_body(H_NetworkMode="container:web", H_PortBindings={"80/tcp": [{"HostPort": "8080"}]}), 400,
     "conflicting options: port publishing and the container type network mode"),
    (cli_body(H_NetworkMode="container:web", H_PortBindings={}, Hostname="mine"), 400, "conflicting options: hostname"),
    (cli_body(H_NetworkMode="container:"), 400, "HostConfig.NetworkMode: bad network mode 'container:'"),
    (cli_body(H_NetworkMode="ghost"), 404, "network ghost not found"),
    (cli_body(NetworkingConfig={"EndpointsConfig": {"bridge": {"Aliases": ["x"]}}}), 400,
     "network-scoped alias is supported only for containers in user defined networks"),
    (cli_body(H_NetworkMode="shop_default", NetworkingConfig={"EndpointsConfig": {"shop_default": {
        "IPAMConfig": {"IPv6Address": "fd00::9"}}}}), 400, "EndpointsConfig['shop_default'].IPAMConfig.IPv6Address"),
    (cli_body(NetworkingConfig={"EndpointsConfig": {"bridge": {"IPAMConfig": {"IPv4Address": "10.88.0.9"}}}}), 400,
     "user specified IP address is supported on user defined networks only"),
    (cli_body(H_NetworkMode="shop_default", NetworkingConfig={"EndpointsConfig": {"shop_default": {},
                                                                                  "bridge": {}}}), 400,
     "the default bridge together with user-defined networks is not supported"),
])
def test_network_settings_provisioner_cannot_honour(body, status, why):
    with pytest.raises(ApiError) as e:
        request_from_create(body, None, {}, user_networks=("shop_default",))
    assert e.value.status == status and why in e.value.message, e.value.message


def test_host_none_and_another_containers_network_carry_over_as_dockerd_takes_them():
    """`docker run --network host|none|container:web`: the CLI sends NetworkMode and an empty
    EndpointsConfig for it; published ports are dropped in host and none mode, with dockerd's warning."""
    from provisioner.api.create import create_warnings
    from provisioner.runspec.netopts import NetworkMode

    body = cli_body(H_NetworkMode="host", NetworkingConfig={"EndpointsConfig": {"host": {}}})
    req = request_from_create(body, None, {}, user_networks=("shop_default",))
    assert req.network_mode == NetworkMode("host") and req.networks == () and req.ports == ()
    assert create_warnings(body) == ["Published ports are discarded when using host network mode"]
    none = request_from_create(cli_body(H_NetworkMode="none", H_PortBindings={}), None, {})
    assert none.network_mode == NetworkMode("none") and create_warnings(cli_body(H_NetworkMode="none",
                                                                                  H_PortBindings={})) == []
    shared = request_from_create(cli_body(H_NetworkMode="container:0123abcd", H_PortBindings={}), None, {})
    assert shared.network_mode == NetworkMode("container", "0123abcd")
    assert create_warnings(cli_body()) == []
