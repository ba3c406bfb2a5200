"""`POST /containers/create`'s body (Docker's Config + HostConfig + NetworkingConfig) → a provisioner
RunRequest, pure. Every field is either carried over, accepted because its value is what
provisioner does anyway (Docker's zero value or default), or refused with a 400 naming it: a
parameter provisioner cannot honour is never dropped silently.
"""
from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from ..runspec.env import parse_env
from ..runspec.health import HealthFlags, Healthcheck, resolve as resolve_health
from ..runspec.mounts import VolumeSpec, parse_volume
from ..runspec.netopts import NetworkAttachment, NetworkMode, check_alias, check_ipv4, parse_network_mode
from ..runspec.ports import parse_port
from ..runspec.request import RunRequest, parse_link
from ..runspec.restart import RestartPolicy
from ..runspec.seccomp import parse_security_opts
from .http import bad_request, not_found, not_supported

CPU_PERIOD = 100_000   # runspec.resources' period (µs): NanoCpus 1e9 is one CPU = CPU_PERIOD µs per period

# fields whose value changes nothing here (client hints, or what provisioner always does)
_CONFIG_HINTS = {"AttachStdin", "AttachStdout", "AttachStderr", "ArgsEscaped", "Image", "Cmd", "Entrypoint",
                 "Env", "Labels", "WorkingDir", "User", "Hostname", "Healthcheck", "Volumes", "ExposedPorts",
                 "Tty", "OpenStdin", "StdinOnce", "StopSignal", "StopTimeout"}
# Config fields: accepted when empty/false, else refused
_CONFIG_ZERO = {"Domainname": "", "NetworkDisabled": False, "MacAddress": "", "OnBuild": None, "Shell": None}
# HostConfig fields provisioner carries over
_HOST_USED = {"Binds", "PortBindings", "RestartPolicy", "AutoRemove", "Links", "Memory", "NanoCpus", "CpuQuota",
              "CpuPeriod", "SecurityOpt", "NetworkMode", "Mounts", "LogConfig", "MemorySwap", "ContainerIDFile",
              "VolumeDriver", "IpcMode", "CgroupnsMode", "Isolation", "ConsoleSize", "Runtime", "PidMode",
              "UTSMode", "UsernsMode", "Cgroup", "ShmSize", "OomScoreAdj", "MemorySwappiness"}


def _zero(v: Any) -> bool:
    return v in (None, "", 0, False, [], {})


def _strings(v: Any, where: str, one: bool = True) -> list[str]:
    if v is None:
        return []
    if isinstance(v, str) and one:
        return [v]
    if isinstance(v, list) and all(isinstance(x, str) for x in v):
        return v
    raise bad_request(f"{where} must be a list of strings")


def _check_zero(section: dict, name: str, allowed: set[str], zeros: dict | None = None,
                why: dict[str, str] | None = None) -> None:
    for key, value in section.items():
        if key in allowed:
            continue
        if zeros is not None and key in zeros and value in (zeros[key], None):
            continue
        if _zero(value):
            continue
        raise not_supported(f"{name}.{key}", (why or {}).get(key, ""))


def _ports(host: dict) -> list:
    out = []
    pb = host.get("PortBindings") or {}
    if not isinstance(pb, dict):
        raise bad_request("HostConfig.PortBindings must be an object")
    for key, bindings in pb.items():
        port, _, proto = key.partition("/")
        for b in bindings or [{}]:
            ip, hp = (b or {}).get("HostIp") or "", (b or {}).get("HostPort") or ""
            spec = f"{ip}:{hp}:{port}" if ip else (f"{hp}:{port}" if hp else port)
            try:
                out += parse_port(f"{spec}/{proto or 'tcp'}")
            except ConfigError as exc:
                raise bad_request(f"HostConfig.PortBindings[{key!r}]: {exc}") from None
    if host.get("PublishAllPorts"):
        raise not_supported("HostConfig.PublishAllPorts (-P)", "publish each port with -p")
    return out


def _bind(text: str) -> VolumeSpec:
    src, _, rest = text.partition(":")
    dst, _, mode = rest.partition(":")
    modes = [m for m in mode.split(",") if m]
    odd = [m for m in modes if m not in ("ro", "rw")]
    if odd:
        raise not_supported(f"HostConfig.Binds mode {','.join(odd)!r} in {text!r}", "ro and rw are")
    spec = f"{src}:{dst}" + (":ro" if "ro" in modes else "") if dst else src
    try:
        return parse_volume(spec)
    except ConfigError as exc:
        raise bad_request(f"HostConfig.Binds: {exc}") from None


def _mount(m: dict) -> VolumeSpec:
    if not isinstance(m, dict):
        raise bad_request("HostConfig.Mounts entries must be objects")
    kind, src, dst = m.get("Type", "volume"), m.get("Source") or "", m.get("Target") or ""
    extra = {k: v for k, v in m.items() if k not in ("Type", "Source", "Target", "ReadOnly", "Consistency")
             and not _zero(v)}
    if kind not in ("bind", "volume") or extra:
        what = f"type {kind}" if kind not in ("bind", "volume") else ", ".join(sorted(extra))
        raise not_supported(f"HostConfig.Mounts {what} (target {dst})", "bind and volume mounts are")
    spec = f"{src}:{dst}" if src else dst
    try:
        v = parse_volume(spec + (":ro" if m.get("ReadOnly") and src else ""))
    except ConfigError as exc:
        raise bad_request(f"HostConfig.Mounts: {exc}") from None
    if kind == "bind" and v.kind != "bind":
        raise bad_request(f"HostConfig.Mounts: a bind mount's Source must be an absolute path (got {src!r})")
    return v


def _health(cfg: dict, image_config: dict) -> tuple[Healthcheck | None, HealthFlags]:
    hc = cfg.get("Healthcheck")
    if not hc:
        return None, HealthFlags()
    if not isinstance(hc, dict):
        raise bad_request("Config.Healthcheck must be an object")
    test = hc.get("Test") or []
    if test == ["NONE"]:
        return None, HealthFlags(disable=True)
    secs = {k: f"{hc[j] / 1e9}s" for k, j in (("interval", "Interval"), ("timeout", "Timeout"),
                                               ("start_period", "StartPeriod")) if hc.get(j)}
    flags = HealthFlags(interval=secs.get("interval"), timeout=secs.get("timeout"),
                        start_period=secs.get("start_period"), retries=hc.get("Retries") or None)
    if not test:
        return None, flags
    if test[0] == "CMD-SHELL" and len(test) == 2:
        argv = ("/bin/sh", "-c", test[1])
    elif test[0] == "CMD" and len(test) > 1:
        argv = tuple(test[1:])
    else:
        raise bad_request(f"Config.Healthcheck.Test {test!r}: want [\"CMD\", ...], [\"CMD-SHELL\", cmd] or [\"NONE\"]")
    # the durations not given come from the image's HEALTHCHECK, as dockerd merges them
    merged = resolve_health(flags, {"Healthcheck": {**(image_config.get("Healthcheck") or {}), "Test": ["CMD", "x"]}})
    return Healthcheck(argv, merged["interval"], merged["timeout"], merged["retries"], merged["start_period"]), \
        HealthFlags()


def _resources(host: dict) -> tuple[int | None, int | None]:
    memory = host.get("Memory") or None
    swap = host.get("MemorySwap")
    if swap not in (None, 0, -1) and memory and swap != memory * 2:
        raise not_supported("HostConfig.MemorySwap", "swap is not limited separately (-m alone)")
    quota = None
    if host.get("NanoCpus"):
        quota = int(host["NanoCpus"] * CPU_PERIOD // 1_000_000_000)
    if host.get("CpuQuota"):
        period = host.get("CpuPeriod") or CPU_PERIOD
        quota = int(host["CpuQuota"] * CPU_PERIOD // period)
    elif host.get("CpuPeriod"):
        raise not_supported("HostConfig.CpuPeriod without CpuQuota")
    return memory, quota


DEFAULT_NETWORKS = ("bridge", "default", "")


def request_from_create(body: dict, name: str | None, image_config: dict, *,
                        user_networks=()) -> RunRequest:
    """The run request for a create body; `image_config` is the image's (for the healthcheck's
    defaults). `user_networks`: the names of the user-defined networks there are (network.registry)."""
    networks = (*DEFAULT_NETWORKS, *user_networks)
    cfg = body
    host = body.get("HostConfig") or {}
    if not isinstance(host, dict):
        raise bad_request("HostConfig must be an object")
    image = cfg.get("Image")
    if not isinstance(image, str) or not image:
        raise bad_request("Config.Image is empty: name the image to run")
    known = _CONFIG_HINTS | set(_CONFIG_ZERO) | {"HostConfig", "NetworkingConfig"}
    _check_zero({k: v for k, v in cfg.items() if k not in ("HostConfig", "NetworkingConfig")}, "Config",
                known - set(_CONFIG_ZERO), _CONFIG_ZERO)
    for k in cfg:
        if k not in known and not _zero(cfg[k]):
            raise not_supported(f"Config.{k}")
    log_cfg = host.get("LogConfig") or {}
    if (log_cfg.get("Type") or "json-file") != "json-file" or log_cfg.get("Config"):
        raise not_supported("HostConfig.LogConfig", "the json-file driver with its defaults is what provisioner writes")
    mode = host.get("NetworkMode") or "default"
    try:
        special = parse_network_mode(mode)   # host, none, container:NAME|ID
    except ConfigError as exc:
        raise bad_request(f"HostConfig.NetworkMode: {exc}") from None
    if special is None and mode not in networks:
        raise not_found(f"network {mode} not found")
    for k, v in (host.get("IpcMode"), "IpcMode"), (host.get("PidMode"), "PidMode"), (host.get("UTSMode"), "UTSMode"), \
            (host.get("UsernsMode"), "UsernsMode"), (host.get("Cgroup"), "Cgroup"):
        if k not in (None, "", "private", "shareable"):
            raise not_supported(f"HostConfig.{v} {k!r}")
    if host.get("CgroupnsMode") not in (None, "", "private", "host"):
        raise not_supported(f"HostConfig.CgroupnsMode {host['CgroupnsMode']!r}")
    if host.get("Runtime") not in (None, "", "runc", "provision-runtime"):
        raise not_supported(f"HostConfig.Runtime {host['Runtime']!r}", "provision-runtime runs every container")
    if host.get("VolumeDriver") not in (None, "", "local"):
        raise not_supported(f"HostConfig.VolumeDriver {host['VolumeDriver']!r}", "local volumes only")
    if host.get("Isolation") not in (None, "", "default"):
        raise not_supported(f"HostConfig.Isolation {host['Isolation']!r}")
    for k in ("ShmSize", "OomScoreAdj"):
        if host.get(k):
            raise not_supported(f"HostConfig.{k}")
    if host.get("MemorySwappiness") not in (None, -1):
        raise not_supported("HostConfig.MemorySwappiness")
    _check_zero(host, "HostConfig", _HOST_USED,
                why={"Privileged": "containers never get every capability here",
                     "CapAdd": "containers get Docker's default capabilities", "CapDrop": "",
                     "Dns": "containers use the host's resolvers", "ExtraHosts": "",
                     "VolumesFrom": "name the volumes with -v", "ReadonlyRootfs": "", "Tmpfs": ""})
    ports = tuple(_ports(host))
    if special is None:
        joins = _attachments(body, mode, networks, user_networks)
    else:
        joins = ()
        _special_mode(body, special, ports)
        if special.kind != "container":
            ports = ()   # discarded, as dockerd does (create_warnings says so)
    volumes = [_bind(b) for b in _strings(host.get("Binds"), "HostConfig.Binds")]
    volumes += [_mount(m) for m in host.get("Mounts") or []]
    for dest in cfg.get("Volumes") or {}:
        if dest not in {v.destination for v in volumes}:
            volumes.append(parse_volume(dest))
    restart = host.get("RestartPolicy") or {}
    rname = restart.get("Name") or "no"
    count = restart.get("MaximumRetryCount") or 0
    entry = cfg.get("Entrypoint")
    entry_list = _strings(entry, "Config.Entrypoint") if entry is not None else None
    command = _strings(cfg.get("Cmd"), "Config.Cmd")
    if entry_list is not None and len(entry_list) > 1:
        command = entry_list[1:] + command
    memory, quota = _resources(host)
    health, flags = _health(cfg, image_config)
    labels = cfg.get("Labels") or {}
    if not isinstance(labels, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        raise bad_request("Config.Labels must be an object of strings")
    stop_signal = cfg.get("StopSignal")
    if stop_signal and stop_signal not in ("SIGTERM", "TERM", "15"):
        raise not_supported("Config.StopSignal", "the image's STOPSIGNAL or SIGTERM is sent")
    if cfg.get("StopTimeout") not in (None, 10):
        raise not_supported("Config.StopTimeout", "stop waits 10 s unless the stop request says otherwise")
    try:
        return RunRequest(
            image=image, command=tuple(command), name=name, detach=True, ports=ports,
            volumes=tuple(volumes), env=_env(cfg.get("Env")),
            links=tuple(parse_link(_link(x)) for x in _strings(host.get("Links"), "HostConfig.Links")),
            restart=RestartPolicy.parse(f"{rname}:{count}" if rname == "on-failure" and count else rname),
            memory=memory, cpu_quota=quota, user=cfg.get("User") or None, workdir=cfg.get("WorkingDir") or None,
            entrypoint=None if entry_list is None else (entry_list[0] if entry_list else ""),
            hostname=cfg.get("Hostname") or None, rm=bool(host.get("AutoRemove")),
            security=parse_security_opts(_strings(host.get("SecurityOpt"), "HostConfig.SecurityOpt"),
                                         where="HostConfig.SecurityOpt"),
            healthcheck=health, health_flags=flags, labels=tuple(sorted(labels.items())),
            tty=bool(cfg.get("Tty")), interactive=bool(cfg.get("OpenStdin")), stdin_once=bool(cfg.get("StdinOnce")),
            networks=joins, network_mode=special)
    except ConfigError as exc:
        raise bad_request(str(exc)) from None


def _special_mode(body: dict, mode: NetworkMode, ports: tuple) -> None:
    """What dockerd refuses beside NetworkMode host, none or container:X: an EndpointsConfig for
    another network (the CLI sends the mode's own, empty), and for container:X published ports or
    a hostname (the other container's namespace has both)."""
    netcfg = (body.get("NetworkingConfig") or {}).get("EndpointsConfig") or {}
    if not isinstance(netcfg, dict):
        raise bad_request("NetworkingConfig.EndpointsConfig must be an object")
    for net, ep in netcfg.items():
        if net != str(mode) or not all(_zero(v) for v in (ep or {}).values()):
            raise bad_request(f"container sharing network namespace with another container or host cannot be "
                              f"connected to any other network (NetworkingConfig.EndpointsConfig[{net!r}])")
    if mode.kind == "container":
        if ports:
            raise bad_request("conflicting options: port publishing and the container type network mode")
        if body.get("Hostname"):
            raise bad_request("conflicting options: hostname and the network mode")


def create_warnings(body: dict) -> list[str]:
    """The create answer's Warnings: what dockerd says it dropped (published ports in host mode)."""
    host = body.get("HostConfig") or {}
    if isinstance(host, dict) and host.get("NetworkMode") in ("host", "none") and host.get("PortBindings"):
        return [f"Published ports are discarded when using {host['NetworkMode']} network mode"]
    return []


def _attachments(body: dict, mode: str, networks, user_networks) -> tuple[NetworkAttachment, ...]:
    """The user-defined networks NetworkMode and NetworkingConfig.EndpointsConfig put the container
    on (NetworkMode's first: its default route and published ports), each with its aliases and
    fixed address; none: the default bridge, which is not combined with them."""
    netcfg = (body.get("NetworkingConfig") or {}).get("EndpointsConfig") or {}
    if not isinstance(netcfg, dict):
        raise bad_request("NetworkingConfig.EndpointsConfig must be an object")
    joins: dict[str, NetworkAttachment] = {mode: NetworkAttachment(mode)} if mode in user_networks else {}
    for net, ep in netcfg.items():
        if net not in networks:
            raise not_found(f"network {net} not found")
        where = f"NetworkingConfig.EndpointsConfig[{net!r}]"
        att = endpoint_attachment(ep, net, where)
        if net in user_networks:
            joins[net] = att
        elif att.aliases:
            raise bad_request("network-scoped alias is supported only for containers in user defined networks")
        elif att.ipv4_address:
            raise bad_request("user specified IP address is supported on user defined networks only")
    if joins and mode not in user_networks and mode not in ("default", "bridge", ""):
        raise bad_request(f"HostConfig.NetworkMode {mode!r} is not among the EndpointsConfig's networks")
    if joins and any(n in netcfg for n in DEFAULT_NETWORKS if n):
        raise not_supported("the default bridge together with user-defined networks",
                            "a container here is on the default bridge or on user-defined networks")
    return tuple(joins.values())


def endpoint_attachment(ep: Any, net: str, where: str) -> NetworkAttachment:
    """An EndpointSettings object (container create's, or network connect's EndpointConfig) as the
    attachment it asks for: its aliases and IPAMConfig.IPv4Address; anything else set is a 400."""
    if ep is None:
        ep = {}
    if not isinstance(ep, dict):
        raise bad_request(f"{where} must be an object")
    for k, v in ep.items():
        if k == "IPAMConfig":
            if v is not None and not isinstance(v, dict):
                raise bad_request(f"{where}.IPAMConfig must be an object")
            for ik, iv in (v or {}).items():
                if ik != "IPv4Address" and not _zero(iv):
                    raise not_supported(f"{where}.IPAMConfig.{ik}", "container networks are IPv4")
            continue
        if not _zero(v) and k not in ("NetworkID", "EndpointID", "Gateway", "IPAddress", "MacAddress",
                                      "IPPrefixLen", "Aliases"):
            raise not_supported(f"{where}.{k}")
    aliases = ep.get("Aliases") or []
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        raise bad_request(f"{where}.Aliases must be a list of strings")
    ip = (ep.get("IPAMConfig") or {}).get("IPv4Address") or None
    try:
        return NetworkAttachment(net, tuple(dict.fromkeys(check_alias(a) for a in aliases)),
                                 check_ipv4(ip, f"{where}.IPAMConfig.IPv4Address") if ip else None)
    except ConfigError as exc:
        raise bad_request(str(exc)) from None


def _env(value: Any) -> tuple[str, ...]:
    env = tuple(_strings(value, "Config.Env", one=False))
    parse_env(env, "Config.Env")       # K=V each, K a valid name
    return env


def _link(text: str) -> str:
    """Links as the API gives them ("/db:/web/db" from older clients, "db:alias" from newer)."""
    name, _, alias = text.partition(":")
    name = name.lstrip("/")
    alias = alias.rsplit("/", 1)[-1] if alias else ""
    return f"{name}:{alias}" if alias else name
