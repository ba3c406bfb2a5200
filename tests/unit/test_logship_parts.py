"""logship's parts: RFC 5424 / RFC 6587 encoding, following rotated shim logs, the bounded spool."""
from __future__ import annotations

import json
import os

import pytest

from provisioner.logship import spool as spoolmod
from provisioner.logship import syslog, tail
from provisioner.logship.spool import Spool


# -- RFC 5424 and octet counting ------------------------------------------------------------------

def test_a_container_line_as_rfc5424():
    msg = syslog.Message("2026-11-22T21:40:00.123456789Z", "web", "api", "hello wörld\n", msgid="stdout",
                         severity=syslog.SEVERITY["stdout"],
                         sd=(("stack", "shop"), ("service", "api"), ("container", "shop-api"), ("stream", "stdout")))
    assert syslog.encode(msg) == ('<30>1 2026-11-22T21:40:00.123456Z web api - stdout [provisioner@32473 '
                                  'stack="shop" service="api" container="shop-api" stream="stdout"] hello wörld'
                                  ).encode()
    framed = syslog.frame(syslog.encode(msg))
    assert framed.startswith(b"%d <30>1 " % len(syslog.encode(msg)))
    assert syslog.unframe(framed + framed[:10]) == ([syslog.encode(msg)] * 1, len(framed))


def test_header_fields_are_printable_ascii_with_their_limits_and_sd_values_escaped():
    msg = syslog.Message("2026-01-01T00:00:00+02:00", "h o\tst", "a" * 60, "", msgid="", severity=3,
                         sd=(("k", 'va"l\\u]e'),))
    head = syslog.encode(msg).decode()
    assert head == f'<27>1 2026-01-01T00:00:00+02:00 h_o_st {"a" * 48} - - [provisioner@32473 k="va\\"l\\\\u\\]e"]'
    assert syslog.timestamp("yesterday") == "-" and syslog.timestamp("2026-01-01T00:00:00Z") == "2026-01-01T00:00:00Z"
    assert syslog.encode(syslog.Message("bad", "h", "a", "x")).startswith(b"<30>1 - h a - - - x")


def test_unframe_refuses_junk():
    with pytest.raises(ValueError):
        syslog.unframe(b"012 abc")
    with pytest.raises(ValueError):
        syslog.unframe(b"<30>1 not framed at all")


# -- following the shim's rotation ----------------------------------------------------------------

class ShimLog:
    """Writes and rotates like native/shim/log.c: rename base.(N-2)..base.1 up, base -> base.1."""

    def __init__(self, base, max_files=3):
        self.base, self.max_files, self.n = base, max_files, 0

    def write(self, count=1):
        with open(self.base, "ab") as f:
            for _ in range(count):
                self.n += 1
                f.write(json.dumps({"log": f"line {self.n}\n", "stream": "stdout",
                                    "time": "2026-01-01T00:00:00Z"}).encode() + b"\n")

    def rotate(self):
        name = self.base.name
        for i in range(self.max_files - 1, 1, -1):     # base.(i-1) -> base.i; the oldest falls off
            src = self.base.with_name(f"{name}.{i - 1}")
            if src.exists():
                os.replace(src, self.base.with_name(f"{name}.{i}"))
        os.replace(self.base, self.base.with_name(f"{name}.1"))


def _numbers(lines):
    return [int(json.loads(ln)["log"].split()[1]) for ln in lines]


def test_following_across_rotations_reads_every_line_once(tmp_path):
    log = ShimLog(tmp_path / "c.log")
    got, cur = [], None
    for step in range(12):
        log.write(5)
        if step % 3 == 1:
            log.rotate()
            log.write(2)
        if step % 4 == 0:   # the reader sometimes lags a rotation or two
            continue
        chunk = tail.read_new(log.base, cur)
        assert not chunk.lost
        got += _numbers(chunk.lines)
        cur = chunk.cursor
    got += _numbers(tail.read_new(log.base, cur).lines)
    assert got == list(range(1, log.n + 1))


def test_a_torn_last_line_waits_and_a_bounded_round_resumes(tmp_path):
    base = tmp_path / "c.log"
    base.write_bytes(b'{"a": 1}\n{"a": 2}\n{"a"')
    chunk = tail.read_new(base, None)
    assert chunk.lines == [b'{"a": 1}', b'{"a": 2}'] and chunk.cursor.offset == 18
    with open(base, "ab") as f:
        f.write(b': 3}\n' + b'{"a": 4}\n' * 100)
    small = tail.read_new(base, chunk.cursor, max_bytes=30)
    assert small.lines[0] == b'{"a": 3}' and len(small.lines) == 3
    rest = tail.read_new(base, small.cursor)
    assert len(small.lines) + len(rest.lines) == 101
    assert tail.read_new(base, rest.cursor) == tail.Chunk([], rest.cursor)


def test_a_cursor_whose_file_fell_off_is_reported_and_reading_restarts_at_the_oldest(tmp_path):
    log = ShimLog(tmp_path / "c.log", max_files=2)
    log.write(3)
    cur = tail.read_new(log.base, None).cursor
    for _ in range(3):   # more rotations than files kept
        log.write(2)
        log.rotate()
    log.write(1)
    chunk = tail.read_new(log.base, cur)
    assert chunk.lost and _numbers(chunk.lines) == [8, 9, 10]


def test_a_text_log_truncated_in_place_starts_again(tmp_path):
    base = tmp_path / "agent.log"
    base.write_text("one\ntwo\n")
    cur = tail.read_new(base, None).cursor
    base.write_text("three\n")   # copytruncate then a write: same inode, shorter
    assert tail.read_new(base, cur).lines == [b"three"]


# -- the bounded spool ----------------------------------------------------------------------------

def test_spool_keeps_order_drops_and_counts_above_its_bound_and_survives_a_restart(tmp_path, monkeypatch):
    monkeypatch.setattr(spoolmod, "SEGMENT_BYTES", 64)
    frames = [syslog.frame(f"message {i}".encode()) for i in range(20)]   # 11-12 bytes each
    sp = Spool(tmp_path / "spool", limit=90)
    dropped = sp.append(frames[:10])
    assert dropped == 2 and sp.dropped == 2 and sp.pending == sum(map(len, frames[:8])) == 88
    assert oct((tmp_path / "spool").stat().st_mode & 0o777) == "0o700"
    assert all(oct(p.stat().st_mode & 0o777) == "0o600" for p in (tmp_path / "spool").glob("*.seg"))
    data, pos = sp.peek(30)
    assert syslog.unframe(data)[0] == [b"message 0", b"message 1"]
    sp.commit(pos, len(data))
    sp.close()
    again = Spool(tmp_path / "spool", limit=90)        # a restart: the head is where it was committed
    got = []
    while True:
        data, pos = again.peek(1 << 16)
        if not data:
            break
        got += syslog.unframe(data)[0]
        again.commit(pos, len(data))
    assert got == [f"message {i}".encode() for i in range(2, 8)]
    assert again.pending == 0 and len(list((tmp_path / "spool").glob("*.seg"))) == 1   # passed segments deleted
    assert again.append(frames[10:12]) == 0
    assert syslog.unframe(again.peek()[0])[0] == [b"message 10", b"message 11"]


def test_a_frame_bigger_than_the_batch_is_read_whole(tmp_path):
    sp = Spool(tmp_path / "spool", limit=1 << 20)
    big = syslog.frame(b"x" * 5000)
    sp.append([big, syslog.frame(b"y")])
    data, pos = sp.peek(100)
    assert data == big and pos == (0, len(big))
