"""RFC 5424 syslog messages, framed by octet counting (RFC 6587 §3.4.1) — pure.

    SYSLOG-MSG = "<" PRIVAL ">1" SP TIMESTAMP SP HOSTNAME SP APP-NAME SP PROCID SP MSGID SP SD [SP MSG]
    SYSLOG-FRAME = MSG-LEN SP SYSLOG-MSG        (MSG-LEN: the octets of SYSLOG-MSG, in decimal)

Header fields are PRINTUSASCII (33..126) with maximum lengths (HOSTNAME 255, APP-NAME 48, PROCID
128, MSGID 32); anything else in them is replaced, and an empty one is the NILVALUE "-". The
timestamp is RFC 3339 with at most 6 fractional digits (the shim records nanoseconds: cut, not
rounded, so the order stays). SD-PARAM values escape '"', '\\' and ']' with a backslash. MSG is the
line as the process wrote it, UTF-8, without its line end; octet counting lets it hold anything,
so no escaping is needed.

Each container line: facility daemon (as Docker's syslog driver), severity info for stdout and
err for stderr; APP-NAME the service (the container's name outside a stack); MSGID the stream;
structured data `[provisioner@32473 stack= service= container= stream=]`. 32473 is the private
enterprise number RFC 5612 reserves for documentation and examples: the SD-ID a project without
its own number can use without colliding with a registered one.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

FACILITY_DAEMON = 3
SEVERITY = {"stdout": 6, "stderr": 3, "info": 6, "warning": 4, "error": 3}
SD_ID = "provisioner@32473"
NIL = "-"
_NOT_PRINTABLE = re.compile(r"[^\x21-\x7e]")
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$")


@dataclass(frozen=True)
class Message:
    timestamp: str                  # RFC 3339 (any precision)
    hostname: str
    app_name: str
    text: str
    msgid: str = NIL
    procid: str = NIL
    severity: int = 6
    facility: int = FACILITY_DAEMON
    sd: tuple[tuple[str, str], ...] = ()   # params of the one SD element SD_ID


def _field(value: str, limit: int) -> str:
    value = _NOT_PRINTABLE.sub("_", value or "")[:limit]
    return value or NIL


def timestamp(stamp: str) -> str:
    """RFC 3339 as RFC 5424 takes it: at most 6 fractional digits; NIL when it is not RFC 3339."""
    m = _STAMP.match(stamp.strip())
    if not m:
        return NIL
    frac = (m.group(2) or "")[:7]
    return f"{m.group(1)}{frac}{m.group(3)}"


def _param(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def encode(msg: Message) -> bytes:
    """The RFC 5424 message (without framing)."""
    pri = msg.facility * 8 + msg.severity
    if msg.sd:
        params = " ".join(f'{_field(k, 32).replace("=", "_")}="{_param(v)}"' for k, v in msg.sd)
        sd = f"[{SD_ID} {params}]"
    else:
        sd = NIL
    text = msg.text[:-1] if msg.text.endswith("\n") else msg.text
    if text.endswith("\r"):
        text = text[:-1]
    head = (f"<{pri}>1 {timestamp(msg.timestamp)} {_field(msg.hostname, 255)} {_field(msg.app_name, 48)} "
            f"{_field(msg.procid, 128)} {_field(msg.msgid, 32)} {sd}")
    return (head + (" " + text if text else "")).encode("utf-8", errors="replace")


def frame(payload: bytes) -> bytes:
    """RFC 6587 octet counting."""
    return b"%d %s" % (len(payload), payload)


def unframe(data: bytes) -> tuple[list[bytes], int]:
    """The whole frames at the start of `data`, and how many bytes they take (a partial frame at
    the end is left for later). Raises ValueError on bytes that are not a frame."""
    out, pos = [], 0
    while pos < len(data):
        sp = data.find(b" ", pos, pos + 11)
        if sp < 0:
            if len(data) - pos > 10:
                raise ValueError(f"not an octet-counted frame at offset {pos}")
            break
        digits = data[pos:sp]
        if not digits.isdigit() or digits.startswith(b"0"):
            raise ValueError(f"not an octet-counted frame at offset {pos}: {digits[:12]!r}")
        end = sp + 1 + int(digits)
        if end > len(data):
            break
        out.append(data[sp + 1:end])
        pos = end
    return out, pos
