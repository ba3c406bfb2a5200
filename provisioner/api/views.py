"""Provisioner's containers as the Engine API shows them (pure): `GET /containers/json` entries and
`GET /containers/{id}/json`, from what lifecycle.Manager.describe() reads (record, supervisor,
network endpoint). Stack containers carry compose's labels (com.docker.compose.project/service)."""
from __future__ import annotations

import time
from datetime import datetime, timezone

from ..runspec.ports import PortMapping

ZERO_TIME = "0001-01-01T00:00:00Z"
BRIDGE = "bridge"


def rfc3339(ts: float | None) -> str:
    if not ts:
        return ZERO_TIME
    d = datetime.fromtimestamp(ts, timezone.utc)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond:06d}000Z"


def stamp_epoch(stamp: str) -> float | None:
    """The shim's RFC 3339 stamps (nanoseconds) → seconds."""
    if not stamp:
        return None
    try:
        head, _, frac = stamp.rstrip("Z").partition(".")
        base = datetime.fromisoformat(head).replace(tzinfo=timezone.utc).timestamp()
        return base + (float("0." + frac) if frac else 0.0)
    except ValueError:
        return None


def human_duration(seconds: float) -> str:
    """go-units HumanDuration, as `docker ps` prints it."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    m = s // 60
    if m == 1:
        return "About a minute"
    if m < 60:
        return f"{m} minutes"
    h = round(s / 3600)
    if h == 1:
        return "About an hour"
    if h < 48:
        return f"{h} hours"
    if h < 24 * 7 * 2:
        return f"{h // 24} days"
    if h < 24 * 30 * 2:
        return f"{h // 24 // 7} weeks"
    if h < 24 * 365 * 2:
        return f"{h // 24 // 30} months"
    return f"{h // 24 // 365} years"


def state_of(d: dict) -> str:
    """Docker's State word: created | running | restarting | exited | dead."""
    return d["status"]["state"]


def status_text(d: dict, now: float | None = None) -> str:
    now = time.time() if now is None else now
    st = d["status"]
    state = st["state"]
    health = d.get("health") or {}
    if state == "running":
        started = stamp_epoch(st.get("started_at") or "") or d["created"]
        h = f" ({health['status']})" if health.get("status") else ""
        return f"Up {human_duration(now - started)}{h}"
    if state == "restarting":
        finished = stamp_epoch(st.get("finished_at") or "") or now
        return f"Restarting ({st.get('exit_code') or 0}) {human_duration(now - finished)} ago"
    if state in ("exited", "dead"):
        finished = stamp_epoch(st.get("finished_at") or "")
        ago = f" {human_duration(now - finished)} ago" if finished else ""
        return f"Exited ({st.get('exit_code') or 0}){ago}" if state == "exited" else "Dead"
    return "Created"


def labels_of(d: dict, compose: tuple[str, str] | None) -> dict[str, str]:
    labels = dict(d.get("labels") or {})
    if compose:
        stack, service = compose
        labels.setdefault("com.docker.compose.project", stack)
        labels.setdefault("com.docker.compose.service", service)
        labels.setdefault("com.docker.compose.oneoff", "False")
        labels.setdefault("com.docker.compose.container-number", "1")
    return labels


def _mappings(d: dict) -> list[PortMapping]:
    out = []
    for p in d.get("ports") or []:
        from ..runspec.ports import parse_port

        out += parse_port(p)
    return out


def exposed(d: dict) -> dict[str, dict]:
    ports = {f"{m.container_port}/{m.proto}": {} for m in _mappings(d)}
    ports.update({k: {} for k in (d.get("image_config") or {}).get("ExposedPorts") or {}})
    return ports


def list_ports(d: dict) -> list[dict]:
    if state_of(d) not in ("running", "restarting"):
        return []       # a stopped container publishes nothing (docker ps -a shows no ports)
    out = []
    for m in _mappings(d):
        entry = {"PrivatePort": m.container_port, "Type": m.proto}
        if m.host_port:
            entry.update({"IP": m.host_ip, "PublicPort": m.host_port})
        out.append(entry)
    return out


def port_map(d: dict) -> dict:
    running = state_of(d) in ("running", "restarting")
    out: dict = {k: None for k in exposed(d)}
    for m in _mappings(d):
        key = f"{m.container_port}/{m.proto}"
        if running and m.host_port:
            out[key] = (out.get(key) or []) + [{"HostIp": m.host_ip, "HostPort": str(m.host_port)}]
    return out


def mounts(d: dict, volume_dir: str) -> list[dict]:
    out = []
    for m in d.get("mounts") or []:
        bind = m["kind"] == "bind"
        out.append({"Type": "bind" if bind else "volume", **({} if bind else {"Name": m["source"]}),
                    "Source": m["source"] if bind else f"{volume_dir}/{m['source']}",
                    "Destination": m["destination"], "Driver": "" if bind else "local", "Mode": "ro" if m.get("readonly") else "",
                    "RW": not m.get("readonly"), "Propagation": "rprivate" if bind else ""})
    return out


def network(d: dict, gateway: str, prefixlen: int, ids: dict[str, str] | None = None) -> dict:
    """NetworkSettings.Networks: the networks the container is on (`net_list`: its record's, the
    default bridge when none), each with its address there while it is connected (`networks`:
    its endpoint's attachments; `gateway`/`prefixlen`: the default bridge's, for records older
    than those). `ids`: the networks' ids by name. Docker lists a container's short id among its
    aliases on a user-defined network (compose looks for it)."""
    out = {}
    for n, aliases in d.get("net_list") or [(BRIDGE, [])]:
        info = (d.get("networks") or {}).get(n) or {}
        addr = info.get("address") or (d.get("address") or "" if n == BRIDGE else "")
        user = n not in (BRIDGE, "host", "none")
        out[n] = {"IPAMConfig": None, "Links": None,
                  "Aliases": list(dict.fromkeys([*aliases, d["id"][:12]])) if user else None,
                  "NetworkID": (ids or {}).get(n, ""), "EndpointID": "",
                  "Gateway": (info.get("gateway") or gateway) if addr else "", "IPAddress": addr,
                  "IPPrefixLen": (info.get("prefixlen") or prefixlen) if addr else 0,
                  "IPv6Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
                  "MacAddress": _mac(addr), "DriverOpts": None}
    return out


def _mac(addr: str) -> str:
    return ("02:42:" + ":".join(f"{int(b):02x}" for b in addr.split("."))) if addr else ""


def network_mode(d: dict) -> str:
    if d.get("network_mode"):   # host, none, container:NAME
        return d["network_mode"]
    nets = d.get("net_list") or []
    return nets[0][0] if nets and nets[0][0] != BRIDGE else "default"


def _primary(d: dict, gateway: str, prefixlen: int) -> tuple[str, str, int]:
    """(address, gateway, prefix length) of the container's first network, "" when not connected."""
    first = (d.get("net_list") or [(BRIDGE, [])])[0][0]
    info = (d.get("networks") or {}).get(first) or {}
    addr = info.get("address") or d.get("address") or ""
    return addr, (info.get("gateway") or gateway) if addr else "", (info.get("prefixlen") or prefixlen) if addr else 0


def list_entry(d: dict, compose: tuple[str, str] | None, gateway: str, prefixlen: int,
               volume_dir: str, now: float | None = None, net_ids: dict[str, str] | None = None) -> dict:
    return {"Id": d["id"], "Names": ["/" + d["name"]], "Image": d["image"], "ImageID": d["image_id"],
            "Command": d["command"], "Created": int(d["created"]), "Ports": list_ports(d),
            "Labels": labels_of(d, compose), "State": state_of(d), "Status": status_text(d, now),
            "HostConfig": {"NetworkMode": network_mode(d)},
            "NetworkSettings": {"Networks": network(d, gateway, prefixlen, net_ids)},
            "Mounts": mounts(d, volume_dir)}


def _health_json(h: dict | None) -> dict | None:
    if not h:
        return None
    log = []
    if h.get("checked_at"):
        log.append({"Start": h.get("checked_at"), "End": h.get("checked_at"), "ExitCode": h.get("exit_code") or 0,
                    "Output": h.get("output") or ""})
    return {"Status": h["status"], "FailingStreak": h.get("failing_streak", 0), "Log": log}


def _restart_policy(text: str) -> dict:
    name, _, n = (text or "no").partition(":")
    return {"Name": name, "MaximumRetryCount": int(n) if n else 0}


def inspect(d: dict, compose: tuple[str, str] | None, gateway: str, prefixlen: int, volume_dir: str,
            log_path: str, runtime: str, net_ids: dict[str, str] | None = None) -> dict:
    st = d["status"]
    state = st["state"]
    opts = d.get("options") or {}
    img = d.get("image_config") or {}
    process = d.get("process") or {}
    args = process.get("args") or d["command"].split()
    entry = ([opts["entrypoint"]] if opts.get("entrypoint") else []) if opts.get("entrypoint") is not None \
        else img.get("Entrypoint")
    cmd = list(opts.get("command") or []) or (None if opts.get("entrypoint") is not None else img.get("Cmd"))
    env = process.get("env") or [f"{k}={v}" for k, v in opts.get("env") or []]
    health = d.get("health")
    primary = _primary(d, gateway, prefixlen)
    res = d.get("resources") or {}
    cpu = (res.get("cpu") or {})
    nano = int(cpu["quota"] * 1_000_000_000 // cpu["period"]) if cpu.get("quota") and cpu.get("period") else 0
    hc = d.get("healthcheck")
    return {
        "Id": d["id"], "Created": rfc3339(d["created"]), "Path": args[0] if args else "", "Args": args[1:],
        "State": {"Status": state, "Running": state in ("running", "restarting"), "Paused": False,
                  "Restarting": state == "restarting", "OOMKilled": False, "Dead": state == "dead",
                  "Pid": (st.get("pid") or 0) if state == "running" else 0,
                  "ExitCode": st.get("exit_code") or 0, "Error": "",
                  "StartedAt": st.get("started_at") or ZERO_TIME, "FinishedAt": st.get("finished_at") or ZERO_TIME,
                  **({"Health": _health_json(health)} if health else {})},
        "Image": d["image_id"], "ResolvConfPath": "", "HostnamePath": "", "HostsPath": "",
        "LogPath": log_path, "Name": "/" + d["name"], "RestartCount": st.get("restart_count") or 0,
        "Driver": "btrfs", "Platform": "linux", "MountLabel": "", "ProcessLabel": "", "AppArmorProfile": "",
        "ExecIDs": None,
        "HostConfig": {
            "Binds": [f"{m['source']}:{m['destination']}" + (":ro" if m.get("readonly") else "")
                      for m in d.get("mounts") or [] if m["kind"] != "anonymous"] or None,
            "NetworkMode": network_mode(d), "PortBindings": {
                f"{m.container_port}/{m.proto}": [{"HostIp": "" if m.host_ip == "0.0.0.0" else m.host_ip,
                                                   "HostPort": str(m.host_port) if m.host_port else ""}]
                for m in _mappings(d)},
            "RestartPolicy": _restart_policy(d.get("restart") or "no"), "AutoRemove": bool(d.get("auto_remove")),
            "Links": [f"/{t}:/{d['name']}/{a}" for t, a in d.get("links") or []] or None,
            "Memory": opts.get("memory") or 0, "NanoCpus": nano, "CpuQuota": 0, "CpuPeriod": 0,
            "LogConfig": {"Type": "json-file", "Config": {}}, "Privileged": False, "PublishAllPorts": False,
            "ReadonlyRootfs": False, "SecurityOpt": None, "Runtime": runtime, "Isolation": "",
            "CapAdd": None, "CapDrop": None, "Dns": [], "ExtraHosts": None, "VolumesFrom": None},
        "GraphDriver": {"Name": "btrfs", "Data": None},
        "Mounts": mounts(d, volume_dir),
        "Config": {
            "Hostname": opts.get("hostname") or d["id"][:12], "Domainname": "", "User": opts.get("user") or img.get("User") or "",
            "AttachStdin": False, "AttachStdout": False, "AttachStderr": False, "ExposedPorts": exposed(d) or None,
            "Tty": bool(opts.get("tty")), "OpenStdin": bool(d.get("stdin_open")),
            "StdinOnce": bool(d.get("stdin_once")), "Env": env, "Cmd": cmd, "Image": d["image"],
            "Volumes": {m["destination"]: {} for m in d.get("mounts") or [] if m["kind"] == "anonymous"} or None,
            "WorkingDir": opts.get("workdir") or img.get("WorkingDir") or "", "Entrypoint": entry,
            "OnBuild": None, "Labels": labels_of(d, compose),
            **({"StopSignal": img["StopSignal"]} if img.get("StopSignal") else {}),
            **({"Healthcheck": {"Test": ["CMD", *hc["test"]], "Interval": int(hc["interval"] * 1e9),
                                "Timeout": int(hc["timeout"] * 1e9), "Retries": hc["retries"],
                                "StartPeriod": int(hc["start_period"] * 1e9)}} if hc else {})},
        "NetworkSettings": {
            "Bridge": "", "SandboxID": "", "HairpinMode": False, "LinkLocalIPv6Address": "", "LinkLocalIPv6PrefixLen": 0,
            "Ports": port_map(d), "SandboxKey": "", "SecondaryIPAddresses": None, "SecondaryIPv6Addresses": None,
            "EndpointID": "", "Gateway": primary[1], "GlobalIPv6Address": "",
            "GlobalIPv6PrefixLen": 0, "IPAddress": primary[0], "IPPrefixLen": primary[2], "IPv6Gateway": "",
            "MacAddress": _mac(primary[0]),
            "Networks": network(d, gateway, prefixlen, net_ids)},
    }
