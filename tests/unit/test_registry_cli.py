"""`provision image …` CLI pieces that need no btrfs: argument errors, progress output, name lookup."""
import io
import subprocess
import sys
from types import SimpleNamespace

import pytest

from provisioner.cli.image import ProgressBars, _key, human_bytes
from provisioner.images import reference
from provisioner.images.pull import PullResult
from provisioner.errors import ImageError


def run_cli(*args, root):
    return subprocess.run([sys.executable, "-m", "provisioner.cli.main", "--root", str(root), *args],
                          capture_output=True, text=True, timeout=60)


def test_malformed_reference_is_one_line_and_touches_nothing(tmp_path):
    root = tmp_path / "root"
    proc = run_cli("image", "pull", "team/Case:1", root=root)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "error: invalid image reference 'team/Case:1': repository name 'Case' must be lower-case"]
    assert not root.exists()


def test_bad_platform(tmp_path):
    proc = run_cli("image", "pull", "--platform", "amd64", "redis", root=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip() == "error: invalid platform 'amd64': expected os/arch[/variant], e.g. linux/amd64"


def test_store_must_be_btrfs(tmp_path):
    proc = run_cli("image", "ls", root=tmp_path)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "must be on btrfs" in lines[0]


def _image(n=2):
    layers = [SimpleNamespace(digest="sha256:" + f"{i:x}" * 64, size=1000 * (i + 1)) for i in range(n)]
    return SimpleNamespace(layers=layers, reference=reference.parse("127.0.0.1:5000/app:1"),
                           manifest_digest="sha256:" + "e" * 64)


def _result():
    return PullResult("127.0.0.1:5000/app:1", "sha256:" + "c" * 64, "sha256:" + "e" * 64, 2, 1, 2000, 0.5)


def test_progress_plain_lines_when_not_a_tty():
    out = io.StringIO()
    bars = ProgressBars(tty=False, stream=out)
    bars.resolved(_image(), [1])
    bars.bytes(1, 1500)
    bars.bytes(1, 500)
    bars.downloaded(1)
    bars.applied(1)
    bars.finished(_result())
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("127.0.0.1:5000/app:1: 2 layers, 1 already in the store")
    assert lines[1].startswith("  layer 2/2 111111111111 downloaded: 2.0 kB in ")
    assert lines[2].startswith("  layer 2/2 111111111111 applied: 2.0 kB")
    assert lines[3] == ("pulled 127.0.0.1:5000/app:1 (id sha256:cccccccccccc): 2 layers (1 fetched, 1 already "
                        "present), 2.0 kB in 0.50s (4.0 kB/s)")
    assert "\x1b" not in out.getvalue()


def test_progress_bars_redraw_on_a_tty():
    out = io.StringIO()
    bars = ProgressBars(tty=True, stream=out, interval=0)
    bars.resolved(_image(), [0, 1])
    bars.bytes(0, 500)
    bars.applying(0)
    bars.downloaded(1)
    text = out.getvalue()
    assert "\x1b[2F" in text  # moves up over the two bars to redraw them
    assert "[############............] 500 B/1.0 kB" in text
    assert "downloading+applying" in text
    assert text.count("layer 2/2") >= 2
    bars.finished(_result())
    final = out.getvalue()[len(text):]
    assert "\x1b[J" not in final  # the finished bars are kept, the summary printed below them
    assert final.rstrip("\n").endswith("(4.0 kB/s)")


def test_human_bytes():
    assert human_bytes(999) == "999 B"
    assert human_bytes(1500) == "1.5 kB"
    assert human_bytes(113_082_932) == "113.1 MB"
    assert human_bytes(5e12) == "5000.0 GB"


class StubStore:
    def __init__(self, names):
        self.names = names

    def get_image(self, key):
        if key not in self.names:
            raise ImageError(f"image {key!r} not found in the store")
        return key


def test_key_normalises_names_and_passes_ids():
    store = StubStore({"docker.io/library/redis:7", "docker.io/library/abcdef:latest"})
    assert _key(store, "redis:7") == "docker.io/library/redis:7"
    assert _key(store, "sha256:" + "a" * 64) == "sha256:" + "a" * 64
    assert _key(store, "0123456789ab") == "0123456789ab"  # an id prefix, not a name in the store
    assert _key(store, "abcdef") == "docker.io/library/abcdef:latest"  # a name that looks like hex
    with pytest.raises(ImageError, match="invalid image reference 'Nope'"):
        _key(store, "Nope")
