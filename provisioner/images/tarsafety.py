"""What a hostile layer tar cannot do to the host: limits applied while it is read.

- `SafeTarInfo` (`tarfile.open(tarinfo=SafeTarInfo)`): tarfile reads a PAX extended or global
  header, a GNU long name/link and a sparse map whole into memory; each is capped here at
  MAX_HEADER (1 MiB, Go's archive/tar limit), the global PAX records at MAX_HEADER together, a run
  of such headers before one entry at MAX_RUN and a sparse map at MAX_SPARSE regions, so a 63 KB gzip cannot make the pull hold 130 MB. A name or
  link name with a NUL byte is refused: no system call could take it.
- `Budget`: the bytes a layer may put on disk, counted at each entry's header (its data plus one
  header block) before its data is written — a gzip bomb declaring a 2 GiB file on a store with
  1 GiB free stops at that header, in milliseconds.
- `write_sparse`: a sparse entry's data regions written at their offsets; the holes stay holes
  (a 10 KiB entry of a 64 MiB sparse file takes 10 KiB, not 64 MiB).
"""
from __future__ import annotations

import os
import tarfile
from dataclasses import dataclass

from ..errors import ImageError

MAX_HEADER = 1 << 20
MAX_SPARSE = 1 << 16
MAX_RUN = 8             # PAX/GNU headers in a row before one entry (real tars: at most 3 or 4)
_SPECIAL = {tarfile.XHDTYPE: "PAX header", tarfile.XGLTYPE: "global PAX header",
            tarfile.SOLARIS_XHDTYPE: "PAX header", tarfile.GNUTYPE_LONGNAME: "GNU long name",
            tarfile.GNUTYPE_LONGLINK: "GNU long link name"}


class LayerError(ImageError):
    """A layer's content is invalid or hostile (raised while applying it)."""


class LayerTooLarge(LayerError):
    """A layer would write more than the pull may (the store's free space or --max-size)."""


def human(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


def _no_nul(ti: tarfile.TarInfo) -> None:
    for what, value in (("name", ti.name), ("link name", ti.linkname)):
        if "\x00" in value:
            raise LayerError(f"layer entry {value.split(chr(0))[0]!r}…: its {what} holds a NUL byte")


class SafeTarInfo(tarfile.TarInfo):
    """tarfile's member parsing with memory caps (see the module docstring)."""

    def _proc_member(self, tf):
        # tarfile parses a run of such headers recursively, each frame holding its header: a run
        # is bounded, and checked here, before the next header of the run is read
        kind = _SPECIAL.get(self.type)
        run = getattr(tf, "_header_run", 0) + 1 if kind is not None else 0
        tf._header_run = run
        if run > MAX_RUN:
            raise LayerError(f"layer has more than {MAX_RUN} PAX/GNU headers in a row before one entry")
        if kind is not None and self.size > MAX_HEADER:
            raise LayerError(f"layer has a {kind} of {human(self.size)}, more than the {human(MAX_HEADER)} allowed")
        if sum(len(k) + len(v) for k, v in tf.pax_headers.items()) > MAX_HEADER:
            raise LayerError(f"layer's global PAX records exceed {human(MAX_HEADER)} together")
        member = super()._proc_member(tf)
        if member is not None:
            _no_nul(member)
            if member.sparse is not None and len(member.sparse) > MAX_SPARSE:
                raise LayerError(f"layer entry {member.name!r}: sparse map of more than {MAX_SPARSE} regions")
        return member

    def _proc_sparse(self, tf):
        """Old GNU sparse ('S'): extension blocks are counted as they are read."""
        structs, isextended, origsize = self._sparse_structs
        del self._sparse_structs
        while isextended:
            if len(structs) > MAX_SPARSE:
                raise LayerError(f"layer entry {self.name!r}: sparse map of more than {MAX_SPARSE} regions")
            buf = tf.fileobj.read(tarfile.BLOCKSIZE)
            for pos in range(0, 21 * 24, 24):
                try:
                    offset, numbytes = tarfile.nti(buf[pos:pos + 12]), tarfile.nti(buf[pos + 12:pos + 24])
                except ValueError:
                    break
                if offset and numbytes:
                    structs.append((offset, numbytes))
            isextended = bool(buf[504])
        self.sparse = structs
        self.offset_data = tf.fileobj.tell()
        tf.offset = self.offset_data + self._block(self.size)
        self.size = origsize
        return self

    def _proc_gnusparse_10(self, next, pax_headers, tf):
        """GNU sparse 1.0: the map leads the data area; its length and lines are bounded."""
        buf = tf.fileobj.read(tarfile.BLOCKSIZE)
        read = len(buf)
        numbers: list[int] = []
        count = None
        while count is None or len(numbers) < count * 2:
            while b"\n" not in buf:
                if read > MAX_HEADER or not (more := tf.fileobj.read(tarfile.BLOCKSIZE)):
                    raise LayerError(f"layer entry {next.name!r}: bad or oversized sparse map")
                buf += more
                read += len(more)
            line, buf = buf.split(b"\n", 1)
            try:
                value = int(line)
            except ValueError:
                raise LayerError(f"layer entry {next.name!r}: bad sparse map") from None
            if count is None:
                if not 0 <= value <= MAX_SPARSE:
                    raise LayerError(f"layer entry {next.name!r}: sparse map of {value} regions "
                                     f"(at most {MAX_SPARSE})")
                count = value
            else:
                numbers.append(value)
        next.offset_data = tf.fileobj.tell()
        next.sparse = list(zip(numbers[::2], numbers[1::2]))


def data_bytes(ti: tarfile.TarInfo) -> int:
    """Bytes of file data an entry puts on disk (a sparse file's data regions only)."""
    if not ti.isreg():
        return 0
    return sum(n for _, n in ti.sparse) if ti.sparse is not None else ti.size


@dataclass
class Budget:
    """How much a layer may still write: `limit` bytes (None: no limit), `why` says whose limit."""

    limit: int | None = None
    why: str = ""
    used: int = 0

    def take(self, ti: tarfile.TarInfo) -> None:
        self.used += tarfile.BLOCKSIZE + data_bytes(ti)
        if self.limit is not None and self.used > self.limit:
            raise LayerTooLarge(f"stopped at entry {ti.name!r}: the layer would write more than "
                                f"{human(self.limit)} ({self.why})")


def write_sparse(fd: int, ti: tarfile.TarInfo, fileobj, copy) -> None:
    """The data regions of sparse entry `ti` (stored one after another from ti.offset_data in
    `fileobj`, a forward-only reader) at their offsets in `fd`; then the file's full size."""
    pos, end = ti.offset_data, 0
    for offset, n in ti.sparse:
        if offset < end or n < 0 or offset + n > ti.size:
            raise LayerError(f"layer entry {ti.name!r}: sparse map out of order or past the file's size")
        fileobj.seek(pos)
        os.lseek(fd, offset, os.SEEK_SET)
        copy(fileobj, fd, n, ti.name)
        pos, end = pos + n, offset + n
    os.ftruncate(fd, ti.size)
