"""The lines of /etc/fstab that provisioner manages: one marked block, everything else kept.

The block is replaced as a whole (or removed when there is nothing to manage); lines outside
it are never changed. The writer (apply) re-reads the file right before writing, so edits
made by others between plan and apply survive.
"""
from __future__ import annotations

from dataclasses import dataclass

FSTAB = "/etc/fstab"
BEGIN = "# BEGIN provisioner disks (managed by `provision host disks apply`; edits here are replaced)"
END = "# END provisioner disks"
# nofail: a disk that is gone (a detached volume, a stopped-and-started instance's blank local
# disks) never holds up the boot; the boot hook's disks step mounts what it makes. The device
# timeout bounds how long what needs the mount (the containers and API units: RequiresMountsFor)
# waits for udev to announce the disk: 10 s was too short for a loaded or emulated host (measured
# under TCG: the by-uuid link 15 s after systemd began waiting, so every reboot fell back to the
# boot hook, ~50 s later); 30 s covers that and still gives up early on a disk that is not coming.
FSTAB_EXTRA_OPTIONS = ("nofail", "x-systemd.device-timeout=30s")


@dataclass(frozen=True)
class FstabEntry:
    spec: str          # UUID=…
    mountpoint: str
    fstype: str
    options: str

    def line(self) -> str:
        return f"{self.spec} {escape(self.mountpoint)} {self.fstype} {self.options} 0 0"


def escape(field: str) -> str:
    return (field.replace("\\", "\\134").replace(" ", "\\040").replace("\t", "\\011")
            .replace("\n", "\\012"))


def unescape(field: str) -> str:
    for code, ch in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, ch)
    return field


def _block_range(lines: list[str]) -> tuple[int, int] | None:
    """Indexes (begin, end) of our marker lines; an unterminated block ends at the first blank
    line, so a damaged file never swallows the user's lines."""
    if BEGIN not in lines:
        return None
    start = lines.index(BEGIN)
    for i in range(start + 1, len(lines)):
        if lines[i] == END:
            return start, i
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].strip()), len(lines))
    return start, end - 1 if end > start + 1 else start


def split_block(text: str) -> tuple[list[str], list[str], list[str]]:
    """(lines before the block, the block's entry lines, lines after the block)."""
    lines = text.splitlines()
    rng = _block_range(lines)
    if rng is None:
        return lines, [], []
    start, end = rng
    inner = lines[start + 1:end] if lines[end] == END else lines[start + 1:end + 1]
    return lines[:start], inner, lines[end + 1:]


def managed_lines(text: str) -> list[str]:
    return [ln for ln in split_block(text)[1] if ln.strip() and not ln.lstrip().startswith("#")]


def unmanaged_mountpoints(text: str) -> dict[str, int]:
    """mountpoint → line number, for the fstab entries outside our block."""
    lines = text.splitlines()
    rng = _block_range(lines) or (-1, -2)
    out: dict[str, int] = {}
    for i, ln in enumerate(lines):
        if rng[0] <= i <= rng[1]:
            continue
        fields = ln.split()
        if len(fields) >= 2 and not fields[0].startswith("#"):
            out[unescape(fields[1])] = i + 1
    return out


def render(text: str, entries: list[str]) -> str:
    """`text` with our block replaced by `entries` (block removed when there are none)."""
    before, _, after = split_block(text)
    block = [BEGIN, *entries, END] if entries else []
    lines = before + block + after
    return "\n".join(lines) + "\n" if lines else ""
