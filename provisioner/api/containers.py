"""/containers/...: list, create, inspect, start, stop, restart, kill, wait, remove, top, prune —
each the same lifecycle.Manager call `provision container` makes. (Streams — logs, attach, stats,
exec — are in streams.py.)"""
from __future__ import annotations

import json
import logging
import select
import socket
import time

from ..errors import ContainerError, ProvisionerError
from ..images import reference
from . import networks, views
from .create import create_warnings, request_from_create
from .http import ApiError, bad_request, conflict, not_supported, parse_filters

log = logging.getLogger("provisioner.api")
LIST_FILTERS = {"id", "name", "label", "status", "exited", "ancestor", "health", "network"}
WAIT_CONDITIONS = ("not-running", "next-exit", "removed")
SIGNALS = {"HUP": 1, "INT": 2, "QUIT": 3, "KILL": 9, "USR1": 10, "USR2": 12, "TERM": 15, "STOP": 19, "CONT": 18,
           "WINCH": 28}


def _label_match(labels: dict, wanted: list[str]) -> bool:
    for w in wanted:
        k, sep, v = w.partition("=")
        if k not in labels or (sep and labels[k] != v):
            return False
    return True


def _matches(entry: dict, d: dict, f: dict[str, list[str]]) -> bool:
    if "id" in f and not any(entry["Id"].startswith(x) for x in f["id"]):
        return False
    if "name" in f and not any(x.lstrip("/") in d["name"] for x in f["name"]):
        return False
    if "label" in f and not _label_match(entry["Labels"], f["label"]):
        return False
    if "status" in f and entry["State"] not in f["status"]:
        return False
    if "exited" in f and not (entry["State"] == "exited" and str(d["status"].get("exit_code") or 0) in f["exited"]):
        return False
    if "ancestor" in f and not any(a in (d["image"], d["image_id"]) or d["image_id"].startswith("sha256:" + a)
                                   for a in f["ancestor"]):
        return False
    if "network" in f and not set(f["network"]) & {n for net, info in entry["NetworkSettings"]["Networks"].items()
                                                    for n in (net, info["NetworkID"])}:
        return False
    if "health" in f and ((d.get("health") or {}).get("status") or "none") not in f["health"]:
        return False
    return True


def list_containers(eng, req, conn):
    f = parse_filters(req, LIST_FILTERS)
    for s in f.get("status", []):
        if s not in ("created", "restarting", "running", "removing", "paused", "exited", "dead"):
            raise bad_request(f"invalid filter 'status={s}'")
    all_ = req.flag("all") or bool(f.get("status")) or bool(f.get("exited"))
    compose = eng.compose_labels()
    ids = eng.network_ids()
    gateway, prefixlen, volume_dir = eng.gateway, eng.prefixlen, eng.volume_dir   # (each parses the subnet)
    now = time.time()
    out = []
    for d in eng.ps(all_):
        entry = views.list_entry(d, compose.get(d["name"]), gateway, prefixlen, volume_dir, now, ids)
        if _matches(entry, d, f):
            out.append(entry)
    out.reverse()   # newest first, as dockerd lists them
    limit = req.int_arg("limit")
    if limit and limit > 0:
        out = out[:limit]
    return 200, out


def create_container(eng, req, conn):
    body = req.json_object()
    name = req.arg("name") or None
    if name is not None:
        name = name.lstrip("/")
    if req.arg("platform"):
        plat = req.arg("platform")
        if plat not in (f"linux/{eng.arch()}", "linux"):
            raise not_supported(f"platform {plat!r}", f"this host runs linux/{eng.arch()} images")
    image_ref = body.get("Image")
    if isinstance(image_ref, str) and image_ref:
        try:
            reference.parse(image_ref)
        except Exception as exc:   # ImageError: a bad reference is the client's fault
            raise bad_request(str(exc)) from None
        image = eng.image(image_ref)      # 404 "No such image": the docker CLI pulls, then asks again
        image_config = (image.config or {}).get("config") or {}
    else:
        image_config = {}
    runreq = request_from_create(body, name, image_config, user_networks=tuple(networks.user_networks(eng)))
    if name is not None and eng.manager.records.find(name) is not None:
        other = eng.manager.records.find(name)
        raise conflict(f'Conflict. The container name "/{name}" is already in use by container "{other.id}". '
                       "You have to remove (or rename) that container to be able to reuse that name.")
    rec = eng.manager.run(runreq, start=False)
    return 201, {"Id": rec.id, "Warnings": create_warnings(body)}


def inspect_container(eng, req, conn, id):
    rec = eng.container(id)
    d = eng.describe(rec)
    compose = eng.compose_labels().get(rec.name)
    rt = eng.manager.runtime_path or "provision-runtime"
    out = views.inspect(d, compose, eng.gateway, eng.prefixlen, eng.volume_dir, d.get("log", ""), "provision-runtime",
                        eng.network_ids())
    out["HostConfig"]["Runtime"] = "provision-runtime" if "provision-runtime" in rt else rt.rsplit("/", 1)[-1]
    if req.flag("size"):
        out["SizeRw"], out["SizeRootFs"] = 0, 0
    return 200, out


def start_container(eng, req, conn, id):
    rec = eng.container(id)
    if req.arg("detachKeys"):
        raise not_supported("detachKeys")
    if eng.manager.is_running(rec):
        return 304, None
    eng.manager.start(rec.id)
    return 204, None


def _timeout(req) -> float | None:
    t = req.int_arg("t")
    return None if t is None else float(max(0, t))


def stop_container(eng, req, conn, id):
    rec = eng.container(id)
    if not eng.manager.is_running(rec):
        return 304, None
    eng.manager.stop(rec.id, _timeout(req))
    return 204, None


def restart_container(eng, req, conn, id):
    rec = eng.container(id)
    eng.manager.restart(rec.id, _timeout(req))
    return 204, None


def kill_container(eng, req, conn, id):
    rec = eng.container(id)
    sig = (req.arg("signal") or "KILL").upper().removeprefix("SIG")
    if sig.isdigit():
        num = int(sig)
        sig = next((k for k, v in SIGNALS.items() if v == num), sig)
    if sig not in SIGNALS and not sig.isdigit():
        raise bad_request(f"Invalid signal: {req.arg('signal')}")
    if not eng.manager.is_running(rec) or eng.manager.status(rec).state != "running":
        raise conflict(f"Cannot kill container: {id}: Container {rec.id} is not running")
    if sig == "KILL":
        # as dockerd: SIGKILL also cancels the restart policy (the container stays down)
        eng.manager.stop(rec.id, 0)
    else:
        eng.manager.runtime().kill(rec.id, sig)
    return 204, None


def remove_container(eng, req, conn, id):
    rec = eng.container(id)
    if req.flag("link"):
        raise not_supported("removing a link (rm --link)")
    if eng.manager.is_running(rec) and not req.flag("force"):
        raise conflict(f"You cannot remove a running container {rec.id}. Stop the container before attempting "
                       "removal or force remove")
    eng.manager.rm(rec.id, force=req.flag("force"), remove_volumes=req.flag("v"))
    return 204, None


def client_gone(conn) -> bool:
    """The client has gone (a wait, follow or attach nobody reads any more). On a hijacked
    connection the end of the client's input is only a half-close — `docker run` without -i shuts
    its write side at once — so there only a hang-up or an error counts."""
    p = select.poll()
    p.register(conn.sock, select.POLLIN | select.POLLHUP | select.POLLERR)
    events = dict(p.poll(0)).get(conn.sock.fileno(), 0)
    if events & (select.POLLHUP | select.POLLERR):
        return True
    if conn.hijacked or not events & select.POLLIN:
        return False
    try:
        return conn.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True


def wait_container(eng, req, conn, id):
    """The answer's head goes out at once and the body when the condition holds: `docker run` starts
    the container only once its wait is in place (dockerd flushes the head the same way)."""
    rec = eng.container(id)
    cond = req.arg("condition") or "not-running"
    if cond not in WAIT_CONDITIONS:
        raise bad_request(f"invalid condition {cond!r}: want one of {', '.join(WAIT_CONDITIONS)}")
    conn.stream(_wait(eng, conn, rec, cond))
    return None


def _wait(eng, conn, rec, cond: str):
    mgr = eng.manager
    st = mgr.status(rec)
    seen_start, first_start = st.state in ("running", "restarting"), st.started_at
    last_code = st.exit_code
    removing = cond == "removed" and rec.config.get("auto_remove")
    while True:
        cur = mgr.records.by_id(rec.id)
        if cur is None:
            yield json.dumps({"StatusCode": last_code or 0, "Error": None}).encode() + b"\n"
            return
        st = mgr.status(cur)
        running = st.state in ("running", "restarting") and mgr.is_running(cur)
        if running or (st.started_at and st.started_at != first_start):
            seen_start = True
        if st.exit_code is not None:
            last_code = st.exit_code
        if not running and st.state != "restarting" and cond != "removed":
            if cond == "not-running" or seen_start:
                yield json.dumps({"StatusCode": last_code or 0, "Error": None}).encode() + b"\n"
                return
        if removing and not running and st.state in ("exited", "dead") and not mgr.is_running(cur):
            # `docker run --rm`: the supervisor is gone, so its exit command is about to do this
            # (`container autoremove`, a Python process starting: 0.3 s and more); done here, once,
            # under the same lock and checks, so whichever comes second finds nothing to do
            removing = False
            try:
                mgr.autoremove(cur.id)
            except ProvisionerError as exc:
                log.warning("removing --rm container %s: %s (its exit command tries again)", cur.id[:12], exc)
            continue
        if client_gone(conn):
            return
        time.sleep(0.05)


def top_container(eng, req, conn, id):
    rec = eng.container(id)
    if not eng.manager.is_running(rec):
        raise conflict(f"Container {rec.id} is not running")
    args = (req.arg("ps_args") or "-ef").split()
    try:
        pids = set(eng.manager.runtime().pids(rec.id))
    except ContainerError as exc:
        raise conflict(f"Container {rec.id} is not running ({exc})") from None
    res = eng.runner.run(["ps", *args], check=False)
    if res.returncode != 0:
        raise ApiError(500, f"ps {' '.join(args)} failed: {res.stderr.strip()}")
    lines = res.stdout.splitlines()
    if not lines:
        return 200, {"Titles": [], "Processes": []}
    titles = lines[0].split()
    if "PID" not in titles:
        raise bad_request(f"ps_args {' '.join(args)!r}: the output has no PID column")
    col = titles.index("PID")
    procs = []
    for line in lines[1:]:
        fields = line.split(None, len(titles) - 1)
        if len(fields) > col and fields[col].isdigit() and int(fields[col]) in pids:
            procs.append(fields)
    return 200, {"Titles": titles, "Processes": procs}


def prune_containers(eng, req, conn):
    f = parse_filters(req, {"label", "until"})
    if "until" in f:
        raise not_supported("the prune filter 'until'")
    gone = []
    for d in eng.ps(True):
        if d["status"]["state"] in ("exited", "dead", "created"):
            rec = eng.manager.records.find(d["id"])
            if rec is None or ("label" in f and not _label_match(rec.config.get("labels") or {}, f["label"])):
                continue
            eng.manager.rm(rec.id, force=False)
            gone.append(rec.id)
    return 200, {"ContainersDeleted": gone or None, "SpaceReclaimed": 0}


def rename_container(eng, req, conn, id):
    raise not_supported("renaming a container", "the name keys its network endpoint and supervisor")


def register(router) -> None:
    router.add("GET", "/containers/json", list_containers)
    router.add("POST", "/containers/create", create_container)
    router.add("POST", "/containers/prune", prune_containers)
    router.add("GET", "/containers/{id}/json", inspect_container)
    router.add("POST", "/containers/{id}/start", start_container)
    router.add("POST", "/containers/{id}/stop", stop_container)
    router.add("POST", "/containers/{id}/restart", restart_container)
    router.add("POST", "/containers/{id}/kill", kill_container)
    router.add("POST", "/containers/{id}/wait", wait_container)
    router.add("POST", "/containers/{id}/rename", rename_container)
    router.add("DELETE", "/containers/{id}", remove_container)
    router.add("GET", "/containers/{id}/top", top_container)

