"""A container's output as the Engine API streams it: logs (follow, tail, since, until, timestamps),
attach (the hijacked connection `docker run` reads a container's output from), resize, and stats
(docker stats' JSON, from the metrics collector the `container stats` command reads).

Without a terminal, stdout and stderr are multiplexed on one stream (dockerd's stdcopy framing):
each frame is an 8-byte header — the stream (1 stdout, 2 stderr), three zero bytes, the payload's
length as a big-endian uint32 — then the payload.
"""
from __future__ import annotations

import json
import socket
import struct
import threading
import time

from ..containers.shimlogs import Attached, parse_since
from ..errors import ConfigError
from .containers import client_gone
from .http import bad_request, conflict, not_supported

STDOUT, STDERR = 1, 2
RAW = "application/vnd.docker.raw-stream"


def frame(stream: int, payload: bytes) -> bytes:
    return struct.pack(">BxxxI", stream, len(payload)) + payload


def unframe(data: bytes) -> list[tuple[int, bytes]]:
    """The frames in `data` (whole frames only; pure: tests and clients)."""
    out, i = [], 0
    while i + 8 <= len(data):
        stream, n = struct.unpack(">BxxxI", data[i:i + 8])
        out.append((stream, data[i + 8:i + 8 + n]))
        i += 8 + n
    return out


def _stamp(req, name: str) -> str | None:
    v = req.arg(name)
    if v in (None, "", "0"):
        return None
    try:
        return parse_since(v)
    except ConfigError:
        raise bad_request(f"invalid value for {name}: {v!r}") from None


def _encode(line, timestamps: bool, tty: bool = False) -> bytes:
    text = (f"{line.time} " if timestamps else "") + line.text
    data = text.encode()
    return data if tty else frame(STDERR if line.stream == "stderr" else STDOUT, data)


def logs(eng, req, conn, id):
    rec = eng.container(id)
    out, err = req.flag("stdout"), req.flag("stderr")
    if not (out or err):
        raise bad_request("Bad parameters: you must choose at least one stream")
    tail = req.arg("tail") or "all"
    if tail != "all":
        try:
            n = int(tail)
        except ValueError:
            raise bad_request(f"invalid value for tail: {tail!r}") from None
        tail_n = n if n >= 0 else None
    else:
        tail_n = None
    since, until = _stamp(req, "since"), _stamp(req, "until")
    ts, follow = req.flag("timestamps"), req.flag("follow")
    if req.flag("details"):
        raise not_supported("logs --details", "the json-file log has no extra attributes here")
    lines = eng.manager.logs(rec.id, tail=tail_n, follow=follow, since=since, idle_marks=follow)

    def chunks():
        for line in lines:
            if line is None:     # the follower waits for more: what we have goes out now
                if client_gone(conn):
                    return
                yield None
                continue
            if until is not None and line.time > until:
                if follow:
                    continue
                break
            if (line.stream == "stderr" and not err) or (line.stream != "stderr" and not out):
                continue
            yield _encode(line, ts)
            if follow and client_gone(conn):
                return

    conn.stream(_batched(chunks()), content_type=RAW)
    return None


def _batched(chunks):
    """Whatever is ready goes out as one chunk (the whole backlog of a long log is not a write per
    line): up to 32 KiB, or all there is when the source says it is waiting for more (None)."""
    buf = b""
    for c in chunks:
        if c is None:
            if buf:
                yield buf
                buf = b""
            continue
        buf += c
        if len(buf) >= 32768:
            yield buf
            buf = b""
    if buf:
        yield buf


def attach(eng, req, conn, id):
    rec = eng.container(id)
    if req.arg("detachKeys"):
        raise not_supported("detachKeys")
    out, err = req.flag("stdout"), req.flag("stderr")
    mgr = eng.manager
    st0 = mgr.status(rec)
    started_before = st0.started_at
    not_started = not mgr.is_running(rec)
    since = parse_since(str(time.time()))
    tty = bool((rec.config.get("options") or {}).get("tty"))
    relayed = tty or bool(rec.config.get("stdin_open"))
    early = conn.hijack(req.wants_upgrade, RAW)
    if req.flag("logs"):
        for line in mgr.logs(rec.id):
            if (line.stream == "stderr" and err) or (line.stream != "stderr" and out):
                conn.sock.sendall(_encode(line, False, tty))
    if not req.flag("stream"):
        return None
    relay = None
    if relayed:
        relay = _relay_connect(eng, conn, rec, stdin=req.flag("stdin"), replay=not_started)
        if relay is None:
            return None
        if req.flag("stdin"):
            threading.Thread(target=_copy_input, args=(conn.sock, relay, early), daemon=True).start()
    try:
        if tty:   # the relay sends the pty's output, raw, as dockerd does for a tty
            _copy(relay, conn.sock)
            return None
        _follow_output(eng, conn, rec, started_before, since, out, err)
    finally:
        if relay is not None:
            relay.close()
    return None


def _relay_connect(eng, conn, rec, *, stdin: bool, replay: bool):
    """A connection to the container's console relay, once its run has one (None: gone first)."""
    mgr = eng.manager
    path = str(mgr.relay_socket(rec))
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            s.sendall(json.dumps({"attach": {"stdin": stdin, "replay": replay}}).encode() + b"\n")
            return s
        except (FileNotFoundError, ConnectionRefusedError):
            s.close()
        cur = mgr.records.find(rec.id)
        if cur is None or client_gone(conn) or mgr.status(cur).state in ("exited", "dead") and \
                not mgr.is_running(cur) and mgr.status(cur).started_at:
            return None
        time.sleep(0.005)


def _copy(src: socket.socket, dst: socket.socket) -> None:
    try:
        for data in iter(lambda: src.recv(65536), b""):
            dst.sendall(data)
    except OSError:
        pass


def _copy_input(client: socket.socket, relay: socket.socket, early: bytes) -> None:
    try:
        if early:
            relay.sendall(early)
        for data in iter(lambda: client.recv(65536), b""):
            relay.sendall(data)
        relay.shutdown(socket.SHUT_WR)      # the client's input ended (its CloseWrite)
    except OSError:
        pass


def _follow_output(eng, conn, rec, started_before: str, since: str, out: bool, err: bool) -> None:
    mgr = eng.manager
    log = Attached(rec.id, mgr.records.path(rec.id), mgr.supervise_dir)
    try:
        # `docker run` attaches before it starts the container: hold its log from the moment the
        # supervisor makes it (a --rm container's log goes with it right after it exits)
        while not log.open():
            if mgr.records.find(rec.id) is None or client_gone(conn):
                return
            time.sleep(0.005)
        while True:
            cur = mgr.records.find(rec.id)
            st = mgr.status(cur) if cur is not None else None
            if cur is None or mgr.is_running(cur) or (st.started_at and st.started_at != started_before) \
                    or st.state in ("exited", "dead"):
                break
            if client_gone(conn):
                return
            time.sleep(0.01)
        for line in log.follow(since):
            if (line.stream == "stderr" and err) or (line.stream != "stderr" and out):
                conn.sock.sendall(_encode(line, False))
    finally:
        log.close()


def resize(eng, req, conn, id):
    rec = eng.container(id)
    h, w = req.int_arg("h"), req.int_arg("w")
    if h is None or w is None:
        raise bad_request("resize wants both h and w")
    if not (rec.config.get("options") or {}).get("tty"):
        return 200, b""          # no terminal to size, as dockerd answers for one without a tty
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(str(eng.manager.relay_socket(rec)))
        s.sendall(json.dumps({"resize": [h, w]}).encode() + b"\n")
    except OSError:
        raise conflict(f"Container {rec.id} is not running") from None
    finally:
        s.close()
    return 200, b""


# -- stats ------------------------------------------------------------------------------------------

def _cpu(c, node) -> dict:
    s = c.cgroup if c is not None else None
    total = (s.cpu_ns if s and s.cpu_ns is not None else 0)
    return {"cpu_usage": {"total_usage": total, "usage_in_kernelmode": (s.cpu_system_ns or 0) if s else 0,
                          "usage_in_usermode": (s.cpu_user_ns or 0) if s else 0},
            "system_cpu_usage": node.system_cpu_ns if node else 0, "online_cpus": node.cpus if node else 0,
            "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0}}


def stats_json(prev, cur, c, cp, mode: str) -> dict:
    """One docker stats sample: `c` the container's facts now, `cp` before (or None)."""
    s = c.cgroup
    inactive = s.memory_inactive_file or 0
    mem_stats = {"total_inactive_file": inactive} if mode in ("v1", "hybrid") else {"inactive_file": inactive}
    if s.memory_cache is not None:
        mem_stats["cache" if mode == "v1" else "file"] = s.memory_cache
    limit = s.memory_limit or cur.node.meminfo.get("MemTotal", 0)
    io = [{"major": int(dev.split(":")[0]), "minor": int(dev.split(":")[1]), "op": op, "value": v}
          for dev, (r, w) in sorted(s.io.items()) for op, v in (("read", r), ("write", w))]
    return {
        "read": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(cur.at)) + f".{int(cur.at % 1 * 1e9):09d}Z",
        "preread": (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(prev.at)) + f".{int(prev.at % 1 * 1e9):09d}Z")
        if prev else "0001-01-01T00:00:00Z",
        "pids_stats": {"current": s.pids or 0}, "blkio_stats": {"io_service_bytes_recursive": io},
        "num_procs": 0, "storage_stats": {},
        "cpu_stats": _cpu(c, cur.node), "precpu_stats": _cpu(cp, prev.node if prev else None),
        "memory_stats": {"usage": s.memory_usage or 0, "stats": mem_stats, "limit": limit},
        "name": "/" + c.name, "id": c.id,
        "networks": {ifname: {"rx_bytes": n.rx_bytes, "rx_packets": n.rx_packets, "rx_errors": n.rx_errors,
                              "rx_dropped": n.rx_dropped, "tx_bytes": n.tx_bytes, "tx_packets": n.tx_packets,
                              "tx_errors": n.tx_errors, "tx_dropped": n.tx_dropped} for ifname, n in c.net.items()},
    }


def stats(eng, req, conn, id):
    from ..metrics.collect import Collector

    rec = eng.container(id)
    stream = req.flag("stream", True)
    one_shot = req.flag("one-shot")
    if one_shot and stream:
        raise bad_request("one-shot is only for stream=false")
    col = Collector(eng.root)

    def find(snap):
        return next((c for c in snap.containers if c.id == rec.id), None)

    def empty() -> dict:
        return {"read": "0001-01-01T00:00:00Z", "preread": "0001-01-01T00:00:00Z", "name": "/" + rec.name,
                "id": rec.id, "pids_stats": {}, "blkio_stats": {}, "num_procs": 0, "storage_stats": {},
                "cpu_stats": {"cpu_usage": {"total_usage": 0}, "throttling_data": {}},
                "precpu_stats": {"cpu_usage": {"total_usage": 0}, "throttling_data": {}}, "memory_stats": {}}

    def sample(prev, cur):
        c = find(cur)
        if c is None or c.cgroup is None:
            return empty()       # not running: dockerd answers zeros too
        return stats_json(prev, cur, c, find(prev) if prev else None, cur.cgroup_mode)

    prev = col.snapshot()
    if not stream:
        if not one_shot:
            time.sleep(1.0)      # a second sample, so the CPU % has a delta (as dockerd's)
            cur = col.snapshot()
            return 200, sample(prev, cur)
        return 200, sample(None, prev)

    def chunks():
        nonlocal prev
        yield json.dumps(sample(None, prev)).encode() + b"\n"
        while True:
            time.sleep(1.0)
            if client_gone(conn):
                return
            cur = col.snapshot()
            yield json.dumps(sample(prev, cur)).encode() + b"\n"
            prev = cur
            if eng.manager.records.find(rec.id) is None:
                return

    conn.stream(chunks())
    return None


def register(router) -> None:
    router.add("GET", "/containers/{id}/logs", logs)
    router.add("POST", "/containers/{id}/attach", attach)
    router.add("POST", "/containers/{id}/resize", resize)
    router.add("GET", "/containers/{id}/stats", stats)
