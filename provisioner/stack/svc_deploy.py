"""A service's `deploy:` section (compose-spec deploy.md), on the one host the service runs on.

  replicas               that many containers of the service, its published ports balanced over
                         the healthy ones (compose/replicas.py)
  resources.limits       memory, cpus, pids — the same limits as mem_limit, cpus, pids_limit
  resources.reservations memory: a soft limit (memory.low / soft_limit_in_bytes); cpus: not
                         enforceable by cgroups (a notice says so)
  restart_policy         condition none|on-failure|any → restart no|on-failure[:max_attempts]|always
  labels                 the service's (kept in the model; containers get the service's `labels`)
  update_config, rollback_config   kept for the day-2 switch (issue 13)
Swarm-only keys (placement, endpoint_mode, mode: global, restart delays) are accepted with a
notice naming what happens instead.
"""
from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from ..runspec.durations import parse_duration
from ..runspec.resources import parse_size, parse_cpus, parse_memory, parse_pids
from ..runspec.restart import RestartPolicy
from .fields import Fields
from .model import UpdateConfig

KEYS = {"mode", "replicas", "labels", "resources", "restart_policy", "update_config", "rollback_config", "placement",
        "endpoint_mode"}
UPDATE_KEYS = {"parallelism", "delay", "failure_action", "monitor", "max_failure_ratio", "order"}
MAX_REPLICAS = 64


def parse(f: Fields, d: dict, where: str, given: dict[str, Any]) -> dict[str, Any]:
    """`given`: what the service's own keys already set (mem_limit, cpus, restart…), to compare."""
    dep = f.mapping(d, "deploy", where)
    if dep is None:
        return {}
    w = f"{where}.deploy"
    for k in dep:
        if not str(k).startswith("x-") and k not in KEYS:
            raise f.fail(f"{w}: unsupported key {k!r} (supported: {', '.join(sorted(KEYS))})", dep, k)
    out: dict[str, Any] = {}
    mode = f.scalar(dep, "mode", w) or "replicated"
    if mode == "global":
        f.notice(f"{w}.mode: global runs one container on each swarm node; here, one on the service's host",
                 dep, "mode")
    elif mode != "replicated":
        raise f.fail(f"{w}.mode: {mode!r} is not replicated or global", dep, "mode")
    replicas = f.integer(dep, "replicas", w, 0, MAX_REPLICAS)
    if replicas is not None:
        if mode == "global":
            raise f.fail(f"{w}.replicas: not with mode: global", dep, "replicas")
        if replicas == 0:
            raise f.fail(f"{w}.replicas: 0 would run nothing; remove the service or run at least 1", dep, "replicas")
        out["replicas"] = replicas
    out["deploy_labels"] = tuple(f.pairs(dep, "labels", w))
    for key in ("placement", "endpoint_mode"):
        if dep.get(key) is not None:
            f.notice(f"{w}.{key}: swarm's; the service runs on the host the stack places it on, its replicas behind "
                     "the host's own balancing", dep, key)
    out.update(_resources(f, dep, w, given))
    out.update(_restart(f, dep, w, given))
    for key, field in (("update_config", "update_config"), ("rollback_config", "rollback_config")):
        if dep.get(key) is not None:
            out[field] = _update(f, dep, key, w)
    return out


def _resources(f: Fields, dep: dict, w: str, given: dict[str, Any]) -> dict[str, Any]:
    res = f.mapping(dep, "resources", w)
    if res is None:
        return {}
    rw = f"{w}.resources"
    f.keys(res, {"limits", "reservations"}, rw)
    out: dict[str, Any] = {}
    lim = f.mapping(res, "limits", rw) or {}
    lw = f"{rw}.limits"
    f.keys(lim, {"cpus", "memory", "pids"}, lw)
    for key, field, parse, own in (("memory", "memory", lambda t: parse_memory(t, "memory"), "mem_limit"),
                                   ("cpus", "cpu_quota", parse_cpus, "cpus"),
                                   ("pids", "pids_limit", lambda t: parse_pids(t, "pids"), "pids_limit")):
        text = f.scalar(lim, key, lw)
        if text is None:
            continue
        try:
            value = parse(text)
        except ConfigError as exc:
            raise f.fail(f"{lw}.{key}: {exc.message.replace('--cpus', 'cpus')}", lim, key) from None
        if given.get(field) is not None and given[field] != value:
            raise f.fail(f"{lw}.{key}: {text} differs from the service's {own}; give one", lim, key)
        out[field] = value
    rsv = f.mapping(res, "reservations", rw) or {}
    vw = f"{rw}.reservations"
    f.keys(rsv, {"cpus", "memory", "devices", "generic_resources"}, vw)
    for key in ("devices", "generic_resources"):
        if rsv.get(key):
            raise f.fail(f"{vw}.{key}: devices (GPUs) cannot be reserved here", rsv, key)
    if rsv.get("memory") is not None:
        try:
            value = parse_size(rsv["memory"], "memory")
        except ConfigError as exc:
            raise f.config(exc, f"{vw}.memory", rsv, "memory") from None
        if given.get("memory_reservation") not in (None, value):
            raise f.fail(f"{vw}.memory differs from the service's mem_reservation; give one", rsv, "memory")
        out["memory_reservation"] = value
    if rsv.get("cpus") is not None:
        try:
            parse_cpus(str(rsv["cpus"]))
        except ConfigError as exc:
            raise f.fail(f"{vw}.cpus: {exc.message.replace('--cpus', 'cpus')}", rsv, "cpus") from None
        f.notice(f"{vw}.cpus: not enforced (cgroups give CPU limits and weights, not reservations)", rsv, "cpus")
    return out


def _restart(f: Fields, dep: dict, w: str, given: dict[str, Any]) -> dict[str, Any]:
    rp = f.mapping(dep, "restart_policy", w)
    if rp is None:
        return {}
    rw = f"{w}.restart_policy"
    f.keys(rp, {"condition", "delay", "max_attempts", "window"}, rw)
    cond = f.scalar(rp, "condition", rw) or "any"
    attempts = f.integer(rp, "max_attempts", rw, 0, 1_000_000)
    if cond == "none":
        policy = RestartPolicy("no")
    elif cond == "on-failure":
        policy = RestartPolicy("on-failure", attempts or 0)
    elif cond == "any":
        policy = RestartPolicy("always")
        if attempts:
            f.notice(f"{rw}.max_attempts: with condition any the container always restarts here (Docker's "
                     "always); only on-failure counts attempts", rp, "max_attempts")
    else:
        raise f.fail(f"{rw}.condition: {cond!r} is not none, on-failure or any", rp, "condition")
    for key in ("delay", "window"):
        if rp.get(key) is not None:
            try:
                parse_duration(rp[key])
            except ValueError as exc:
                raise f.fail(f"{rw}.{key}: {exc}", rp, key) from None
            f.notice(f"{rw}.{key}: ignored; restarts back off as Docker's do (100 ms, doubling, reset after 10 s "
                     "of running)", rp, key)
    if given.get("restart_given") and given.get("restart") != policy:
        f.notice(f"{rw}: {policy} replaces the service's restart: {given['restart']} (as compose does)", dep,
                 "restart_policy")
    return {"restart": policy}


def _update(f: Fields, dep: dict, key: str, w: str) -> UpdateConfig:
    u = f.mapping(dep, key, w) or {}
    uw = f"{w}.{key}"
    f.keys(u, UPDATE_KEYS, uw)
    kw: dict[str, Any] = {}
    if u.get("parallelism") is not None:
        kw["parallelism"] = f.integer(u, "parallelism", uw, 0, 1_000_000)
    for k in ("delay", "monitor"):
        if u.get(k) is not None:
            try:
                kw[k] = parse_duration(u[k])
            except ValueError as exc:
                raise f.fail(f"{uw}.{k}: {exc}", u, k) from None
    action = f.scalar(u, "failure_action", uw)
    if action is not None:
        if action not in ("continue", "rollback", "pause"):
            raise f.fail(f"{uw}.failure_action: {action!r} is not continue, rollback or pause", u, "failure_action")
        kw["failure_action"] = action
    if u.get("max_failure_ratio") is not None:
        ratio = u["max_failure_ratio"]
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 <= ratio <= 1:
            raise f.fail(f"{uw}.max_failure_ratio must be a number from 0 to 1", u, "max_failure_ratio")
        kw["max_failure_ratio"] = float(ratio)
    order = f.scalar(u, "order", uw)
    if order is not None:
        if order not in ("stop-first", "start-first"):
            raise f.fail(f"{uw}.order: {order!r} is not stop-first or start-first", u, "order")
        kw["order"] = order
    return UpdateConfig(**kw)
