"""/_ping, /version, /info, /events, /system/df: what clients ask first (to agree on the API
version) and the host's summary."""
from __future__ import annotations

import json
import os
import platform
import time

from .. import __version__
from ..containers.shimlogs import parse_since
from ..errors import ConfigError
from .containers import client_gone
from .http import bad_request, not_supported, parse_filters
from .server import API_VERSION, MIN_API_VERSION

PING_HEADERS = {"Api-Version": API_VERSION, "Docker-Experimental": "false", "Ostype": "linux",
                "Cache-Control": "no-cache, no-store, must-revalidate", "Pragma": "no-cache"}


def ping(eng, req, conn):
    conn.send(200, b"OK", content_type="text/plain; charset=utf-8", headers=PING_HEADERS,
              head_only=req.method == "HEAD")
    return None


def _kernel() -> str:
    return platform.release()


def version(eng, req, conn):
    details = {"ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION, "GitCommit": "", "GoVersion": "",
               "Os": "linux", "Arch": eng.arch(), "KernelVersion": _kernel(), "BuildTime": "",
               "Experimental": "false"}
    return 200, {"Platform": {"Name": f"provisioner {__version__}"},
                 "Components": [{"Name": "Engine", "Version": __version__, "Details": details}],
                 "Version": __version__, **{k: v for k, v in details.items() if k != "Experimental"},
                 "Experimental": False}


def _os_name() -> str:
    try:
        for line in open("/etc/os-release"):
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return "Linux"


def _cgroup_version() -> str:
    return "2" if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else "1"


def _mem_total() -> int:
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def info(eng, req, conn):
    mgr = eng.manager
    states = [mgr.status(r).state for r in mgr.records.all()]
    try:
        images = len(eng.store().images())
    except Exception:   # noqa: BLE001 — no btrfs store yet: no images
        images = 0
    running = sum(s in ("running", "restarting") for s in states)
    return 200, {
        "ID": eng.id, "Containers": len(states), "ContainersRunning": running, "ContainersPaused": 0,
        "ContainersStopped": len(states) - running, "Images": images, "Driver": "btrfs",
        "DriverStatus": [["Root", str(eng.root)]], "Plugins": {"Volume": ["local"], "Network": ["bridge"],
                                                               "Authorization": None, "Log": ["json-file"]},
        "MemoryLimit": True, "SwapLimit": False, "KernelMemory": False, "KernelMemoryTCP": False,
        "CpuCfsPeriod": True, "CpuCfsQuota": True, "CPUShares": False, "CPUSet": False, "PidsLimit": True,
        "IPv4Forwarding": True, "BridgeNfIptables": False, "BridgeNfIp6tables": False, "Debug": False,
        "NFd": len(os.listdir("/proc/self/fd")), "OomKillDisable": False, "NGoroutines": 0,
        "SystemTime": time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime()), "LoggingDriver": "json-file",
        "CgroupDriver": "cgroupfs", "CgroupVersion": _cgroup_version(), "NEventsListener": eng.events.listeners,
        "KernelVersion": _kernel(), "OperatingSystem": _os_name(), "OSVersion": "", "OSType": "linux",
        "Architecture": platform.machine(), "IndexServerAddress": "https://index.docker.io/v1/",
        "RegistryConfig": {"AllowNondistributableArtifactsCIDRs": [], "AllowNondistributableArtifactsHostnames": [],
                           "InsecureRegistryCIDRs": ["127.0.0.0/8"], "IndexConfigs": {}, "Mirrors": []},
        "NCPU": os.cpu_count() or 1, "MemTotal": _mem_total(), "GenericResources": None,
        "DockerRootDir": str(eng.root), "HttpProxy": "", "HttpsProxy": "", "NoProxy": "", "Name": eng.hostname(),
        "Labels": [], "ExperimentalBuild": False, "ServerVersion": __version__,
        "Runtimes": {"provision-runtime": {"path": "provision-runtime"}}, "DefaultRuntime": "provision-runtime",
        "Swarm": {"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive", "ControlAvailable": False,
                  "Error": "", "RemoteManagers": None},
        "LiveRestoreEnabled": True, "Isolation": "", "InitBinary": "",
        "ContainerdCommit": {"ID": "", "Expected": ""}, "RuncCommit": {"ID": "", "Expected": ""},
        "InitCommit": {"ID": "", "Expected": ""}, "SecurityOptions": ["name=seccomp,profile=default"],
        "Warnings": None}


def _event_matches(e: dict, f: dict[str, list[str]]) -> bool:
    attrs = e["Actor"]["Attributes"]
    if "type" in f and e["Type"] not in f["type"]:
        return False
    if "event" in f and e["Action"] not in f["event"]:
        return False
    if "container" in f and not any(c in (e["id"], attrs.get("name")) or e["id"].startswith(c)
                                    for c in f["container"]):
        return False
    if "label" in f:
        for w in f["label"]:
            k, sep, v = w.partition("=")
            if k not in attrs or (sep and attrs[k] != v):
                return False
    if "image" in f and attrs.get("image") not in f["image"]:
        return False
    return True


def _time_arg(req, name: str) -> float | None:
    v = req.arg(name)
    if not v:
        return None
    try:
        stamp = parse_since(v)
    except ConfigError:
        raise bad_request(f"invalid value for {name}: {v!r}") from None
    from .views import stamp_epoch

    return stamp_epoch(stamp)


def events(eng, req, conn):
    f = parse_filters(req, {"type", "event", "container", "label", "image"})
    for t in f.get("type", []):
        if t != "container":
            raise not_supported(f"events of type {t!r}", "container lifecycle events are reported")
    since, until = _time_arg(req, "since"), _time_arg(req, "until")
    sub = eng.events.subscribe()

    def chunks():
        try:
            if since is not None:
                for e in sub.past():
                    if e["time"] >= int(since) and _event_matches(e, f):
                        yield json.dumps(e).encode() + b"\n"
            while True:
                if until is not None and time.time() > until:
                    return
                for e in sub.next(0.5):
                    if until is not None and e["time"] > until:
                        return
                    if _event_matches(e, f):
                        yield json.dumps(e).encode() + b"\n"
                if client_gone(conn):
                    return
        finally:
            sub.close()

    conn.stream(chunks())     # the head goes out at once: clients wait for it before showing anything
    return None


def df(eng, req, conn):
    from . import images as images_mod
    from . import volumes as volumes_mod
    from . import views

    compose = eng.compose_labels()
    containers = [views.list_entry(d, compose.get(d["name"]), eng.gateway, eng.prefixlen, eng.volume_dir)
                  | {"SizeRw": 0, "SizeRootFs": 0} for d in eng.ps(True)]
    try:
        imgs = images_mod.summaries(eng)
    except Exception:   # noqa: BLE001 — no store yet
        imgs = []
    for i in imgs:
        i["Containers"] = sum(c["ImageID"] == i["Id"] for c in containers)
    vols = volumes_mod.listing(eng, sizes=True)
    return 200, {"LayersSize": sum(i["Size"] for i in imgs), "Images": imgs, "Containers": containers,
                 "Volumes": vols, "BuildCache": []}


def register(router) -> None:
    router.add("GET", "/_ping", ping)
    router.add("GET", "/version", version)
    router.add("GET", "/info", info)
    router.add("GET", "/events", events)
    router.add("GET", "/system/df", df)
