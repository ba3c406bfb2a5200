"""Hostile layers against the host's memory and disk: oversized tar headers, NUL bytes in PAX
names, sparse entries, and layers larger than the room they are given. Each layer here is tiny
compressed; what it asks of the host is not."""
from __future__ import annotations

import gzip
import io
import os
import tarfile
import tracemalloc

import pytest

from provisioner.errors import ImageError
from provisioner.images import layers
from provisioner.images.layers import apply_layer
from provisioner.images.tarsafety import MAX_HEADER, Budget, LayerError, LayerTooLarge


def _gz(raw: bytes) -> io.BytesIO:
    return io.BytesIO(gzip.compress(raw, 6))


def _pax_layer(headers: dict, name: str = "f", data: bytes = b"x") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        ti = tarfile.TarInfo(name)
        ti.size = len(data)
        ti.pax_headers = headers
        tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def test_a_huge_pax_header_is_refused_without_holding_it_in_memory(tmp_path):
    """The issue's 63 KB gzip whose PAX header made the pull hold 130 MB."""
    raw = _pax_layer({"comment": "A" * (64 << 20)})
    blob = _gz(raw)
    assert len(blob.getvalue()) < 200_000
    tracemalloc.start()
    try:
        with pytest.raises(LayerError, match=r"PAX header of 64\.0 MiB, more than the 1\.0 MiB allowed"):
            apply_layer(blob, layers.MT_OCI_GZIP, tmp_path / "root")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"peak {peak >> 20} MiB"
    assert os.listdir(tmp_path / "root") == []


def test_a_huge_gnu_long_name_is_refused(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        ti = tarfile.TarInfo("d/" + "n" * (2 * MAX_HEADER))
        tf.addfile(ti, io.BytesIO(b""))
    with pytest.raises(LayerError, match="GNU long name of 2.0 MiB"):
        apply_layer(_gz(buf.getvalue()), layers.MT_OCI_GZIP, tmp_path / "root")


def _global(records: dict) -> bytes:
    return tarfile.TarInfo._create_pax_generic_header(records, tarfile.XGLTYPE, "utf-8")


def test_global_pax_records_are_bounded_together(tmp_path):
    raw = b"".join(_global({f"k{i}": "v" * (MAX_HEADER // 2)}) for i in range(3)) + _pax_layer({})
    with pytest.raises(LayerError, match="global PAX records exceed"):
        apply_layer(_gz(raw), layers.MT_OCI_GZIP, tmp_path / "root")


def test_a_long_run_of_headers_is_refused_before_it_is_read(tmp_path):
    """Each header of a run is parsed in its own recursion frame holding it: 2,000 PAX headers of
    1 MiB in a row would hold 2 GB (or end in a RecursionError)."""
    one = tarfile.TarInfo._create_pax_generic_header({"comment": "c" * 1000}, tarfile.XHDTYPE, "utf-8")
    raw = one * 2000 + _pax_layer({})
    with pytest.raises(LayerError, match="more than 8 PAX/GNU headers in a row"):
        apply_layer(_gz(raw), layers.MT_OCI_GZIP, tmp_path / "root")


def test_a_pax_path_with_a_nul_byte_is_a_layer_error(tmp_path):
    raw = _pax_layer({"path": "etc/pass\x00wd"})
    with pytest.raises(LayerError, match="holds a NUL byte"):
        apply_layer(io.BytesIO(raw), layers.MT_OCI_TAR, tmp_path / "root")
    raw = _pax_layer({"SCHILY.xattr.user.a\x00b": "v"})
    with pytest.raises(LayerError, match="holds a NUL byte"):
        apply_layer(io.BytesIO(raw), layers.MT_OCI_TAR, tmp_path / "root2")


def _sparse_layer(real_size: int, regions: list[tuple[int, bytes]]) -> bytes:
    """A GNU sparse 1.0 PAX entry (what GNU tar --sparse --posix writes), built by hand."""
    sparse_map = f"{len(regions)}\n" + "".join(f"{off}\n{len(d)}\n" for off, d in regions)
    map_block = sparse_map.encode().ljust(-(-len(sparse_map) // 512) * 512, b"\0")
    data = b"".join(d for _, d in regions)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        ti = tarfile.TarInfo("GNUSparseFile.0/big")
        ti.size = len(map_block) + len(data)
        ti.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": "big",
                          "GNU.sparse.realsize": str(real_size)}
        tf.addfile(ti, io.BytesIO(map_block + data))
    return buf.getvalue()


def test_sparse_entries_are_written_sparse(tmp_path):
    real = 64 << 20
    regions = [(0, b"head" * 1024), (real - 4096, b"tail" * 1024)]
    raw = _sparse_layer(real, regions)
    assert len(raw) < 32 << 10
    root = tmp_path / "root"
    apply_layer(_gz(raw), layers.MT_OCI_GZIP, root)
    st = os.stat(root / "big")
    assert st.st_size == real
    assert st.st_blocks * 512 < 1 << 20, f"{st.st_blocks * 512} bytes allocated for 8 KiB of data"
    with open(root / "big", "rb") as f:
        assert f.read(4096) == b"head" * 1024
        f.seek(1 << 20)
        assert f.read(4096) == b"\0" * 4096
        f.seek(real - 4096)
        assert f.read() == b"tail" * 1024


def test_a_sparse_map_past_the_file_size_is_refused(tmp_path):
    raw = _sparse_layer(4096, [(8192, b"x" * 512)])
    with pytest.raises(LayerError, match="sparse map out of order or past the file's size"):
        apply_layer(io.BytesIO(raw), layers.MT_OCI_TAR, tmp_path / "root")


def test_a_layer_larger_than_its_budget_stops_at_the_entry_header(tmp_path):
    """A gzip bomb: one entry declaring 1 GiB of zeros; the budget is 1 MiB. It stops at the
    header, before writing (the compressed stream is not even read to its end)."""
    buf = io.BytesIO()
    gz = gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=1)
    header = tarfile.TarInfo("bomb")
    header.size = 1 << 30
    gz.write(header.tobuf(format=tarfile.PAX_FORMAT))
    zeros = b"\0" * (1 << 20)
    for _ in range(4):   # only the first few MiB: the budget must stop it before it wants more
        gz.write(zeros)
    gz.close()
    budget = Budget(1 << 20, "--max-size 1.0 MiB")
    with pytest.raises(LayerTooLarge, match=r"stopped at entry 'bomb': the layer would write more than "
                                            r"1\.0 MiB \(--max-size 1\.0 MiB\)"):
        apply_layer(io.BytesIO(buf.getvalue()), layers.MT_OCI_GZIP, tmp_path / "root", budget=budget)
    assert os.listdir(tmp_path / "root") == []
    assert isinstance(LayerTooLarge("x"), ImageError)
