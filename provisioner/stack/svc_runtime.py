"""A service's container settings beyond what it runs: resources, privileges, kernel settings,
how its process starts and stops, its image's platform and pull policy, its log, its hosts and
DNS lines. Each value is parsed by runspec/ (what `provision container run` flags use too);
here it is read from the file and every mistake is a StackError at file:line.
"""
from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from ..runspec.durations import parse_duration
from ..runspec.kernel import make_ulimit, parse_sysctls
from ..runspec.netopts import parse_dns, parse_extra_host
from ..runspec.privileges import Privileges, normalize_cap
from ..runspec.process import check_signal, parse_log_config, parse_platform, parse_pull_policy
from ..runspec.resources import parse_size, parse_cpu_shares, parse_cpus, parse_memory, parse_pids
from ..runspec.seccomp import SecurityOpts, parse_security_opts
from .fields import Fields

KEYS = {"mem_limit", "mem_reservation", "cpus", "cpu_shares", "pids_limit", "shm_size", "security_opt", "cap_add",
        "cap_drop", "privileged", "read_only", "sysctls", "ulimits", "init", "stop_signal", "stop_grace_period",
        "tty", "stdin_open", "platform", "pull_policy", "logging", "extra_hosts", "dns", "dns_search", "dns_opt",
        "group_add", "runtime"}


def parse(f: Fields, d: dict, where: str, *, allow_privileged: bool, host_network: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    out.update(_resources(f, d, where))
    out["security"] = _security_opt(f, d, where)
    out["privileges"] = _privileges(f, d, where, allow_privileged)
    out["read_only"] = f.boolean(d, "read_only", where, False)
    out["init"] = f.boolean(d, "init", where, False)
    out["tty"] = f.boolean(d, "tty", where, False)
    out["stdin_open"] = f.boolean(d, "stdin_open", where, False)
    try:
        out["sysctls"] = parse_sysctls(dict(f.pairs(d, "sysctls", where)), host_network=host_network)
    except ConfigError as exc:
        raise f.config(exc, f"{where}.sysctls", d, "sysctls") from None
    out["ulimits"] = _ulimits(f, d, where)
    if d.get("stop_signal") is not None:
        try:
            out["stop_signal"] = check_signal(f.scalar(d, "stop_signal", where))
        except ConfigError as exc:
            raise f.config(exc, f"{where}.stop_signal", d, "stop_signal") from None
    if d.get("stop_grace_period") is not None:
        try:
            out["stop_grace_period"] = parse_duration(d["stop_grace_period"])
        except ValueError as exc:
            raise f.fail(f"{where}.stop_grace_period: {exc}", d, "stop_grace_period") from None
    if d.get("platform") is not None:
        try:
            out["platform"] = parse_platform(f.scalar(d, "platform", where))
        except ConfigError as exc:
            raise f.config(exc, f"{where}.platform", d, "platform") from None
    if d.get("pull_policy") is not None:
        text = f.scalar(d, "pull_policy", where)
        if text == "build":
            f.notice(f"{where}.pull_policy: build: provisioner builds no images; the image is pulled when missing",
                     d, "pull_policy")
            text = "missing"
        try:
            out["pull_policy"] = parse_pull_policy(text)
        except ConfigError as exc:
            raise f.config(exc, f"{where}.pull_policy", d, "pull_policy") from None
    out.update(_logging(f, d, where))
    out.update(_names(f, d, where))
    out["group_add"] = tuple(f.strings(d, "group_add", where))
    runtime = f.scalar(d, "runtime", where)
    if runtime not in (None, "runc", "provision-runtime"):
        raise f.fail(f"{where}.runtime: {runtime!r} is not available (provisioner runs containers with its own "
                     "runc-compatible runtime)", d, "runtime")
    return out


def _resources(f: Fields, d: dict, where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, field, parse in (("mem_limit", "memory", lambda t: parse_memory(t, "mem_limit")),
                              ("cpus", "cpu_quota", parse_cpus),
                              ("mem_reservation", "memory_reservation", lambda t: parse_size(t, "mem_reservation")),
                              ("cpu_shares", "cpu_shares", lambda t: parse_cpu_shares(t, "cpu_shares")),
                              ("pids_limit", "pids_limit", lambda t: parse_pids(t, "pids_limit")),
                              ("shm_size", "shm_size", lambda t: parse_size(t, "shm_size"))):
        text = f.scalar(d, key, where)
        if text is None:
            continue
        try:
            out[field] = parse(text)
        except ConfigError as exc:
            raise f.fail(f"{where}.{key}: {exc.message.replace('--cpus', key)}", d, key) from None
    return out


def _security_opt(f: Fields, d: dict, where: str) -> SecurityOpts:
    """Docker's values (seccomp=unconfined|PROFILE.json, no-new-privileges, apparmor/label
    unconfined), checked now; a relative profile path is taken from the stack file's directory."""
    items = f.items(d, "security_opt", where)
    opts = SecurityOpts()
    for i, item in enumerate(items):
        w = f"{where}.security_opt[{i}]"
        if not isinstance(item, str) or not item.strip():
            raise f.fail(f"{w} must be a string such as seccomp=unconfined", items, i)
        try:
            one = parse_security_opts([item], base=f.base, where=w)
        except ConfigError as exc:
            raise f.config(exc, w, items, i) from None
        opts = SecurityOpts(one.seccomp if one.seccomp is not None else opts.seccomp,
                            opts.no_new_privileges or one.no_new_privileges)
    return opts


def _privileges(f: Fields, d: dict, where: str, allow_privileged: bool) -> Privileges:
    privileged = f.boolean(d, "privileged", where, False)
    if privileged and not allow_privileged:
        raise f.fail(f"{where}.privileged: a privileged container has every capability and the host's devices; "
                     "give --allow-privileged to `up`/`deploy` to run it", d, "privileged")
    caps = {}
    for key in ("cap_add", "cap_drop"):
        try:
            caps[key] = tuple(dict.fromkeys(normalize_cap(c) for c in f.strings(d, key, where, one_string=False)))
        except ConfigError as exc:
            raise f.config(exc, f"{where}.{key}", d, key) from None
    return Privileges(caps["cap_add"], caps["cap_drop"], privileged)


def _ulimits(f: Fields, d: dict, where: str) -> tuple:
    raw = f.mapping(d, "ulimits", where) or {}
    out = []
    for name, v in raw.items():
        w = f"{where}.ulimits.{name}"
        try:
            if isinstance(v, dict):
                f.keys(v, {"soft", "hard"}, w)
                if "soft" not in v or "hard" not in v:
                    raise f.fail(f"{w}: needs both soft and hard", raw, name)
                out.append(make_ulimit(str(name), v["soft"], v["hard"]))
            else:
                out.append(make_ulimit(str(name), v if not isinstance(v, str) else int(v)))
        except (ConfigError, ValueError) as exc:
            raise f.fail(f"{w}: {getattr(exc, 'message', exc)}", raw, name) from None
    return tuple(out)


def _logging(f: Fields, d: dict, where: str) -> dict[str, Any]:
    lg = f.mapping(d, "logging", where)
    if lg is None:
        return {}
    w = f"{where}.logging"
    f.keys(lg, {"driver", "options"}, w)
    driver = f.scalar(lg, "driver", w)
    try:
        parse_log_config(driver)
    except ConfigError as exc:
        raise f.config(exc, f"{w}.driver", lg, "driver") from None
    if driver == "local":
        f.notice(f"{w}.driver: local is kept as a json-file log here (same options)", lg, "driver")
    try:
        return {"log": parse_log_config(driver, dict(f.str_map(lg, "options", w)))}
    except ConfigError as exc:
        raise f.config(exc, f"{w}.options", lg, "options") from None


def _names(f: Fields, d: dict, where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    hosts = []
    for k, v in f.pairs(d, "extra_hosts", where, sep="\0"):
        # a list item "name:ip" / "name=ip" arrives whole in k; a mapping gives (name, ip)
        text = f"{k}={v}" if v else k
        try:
            hosts.append(parse_extra_host(text))
        except ConfigError as exc:
            raise f.config(exc, f"{where}.extra_hosts", d, "extra_hosts") from None
    out["extra_hosts"] = tuple(hosts)
    try:
        out["dns"] = parse_dns(f.strings(d, "dns", where), f.strings(d, "dns_search", where),
                               f.strings(d, "dns_opt", where))
    except ConfigError as exc:
        key = next((k for k in ("dns", "dns_search", "dns_opt") if k in d), "dns")
        raise f.config(exc, f"{where}.{key}", d, key) from None
    return out
