"""Our fstab block: replaced as a whole, everything else preserved byte for byte."""
from __future__ import annotations

from provisioner.disks import fstab
from provisioner.disks.apply import write_fstab

USER = "# /etc/fstab: static file system information.\nUUID=abc / ext4 errors=remount-ro 0 1\n/swap none swap sw 0 0\n"


def test_render_appends_block_and_keeps_user_lines():
    out = fstab.render(USER, ["UUID=1 /mnt/e btrfs noatime 0 0"])
    assert out.startswith(USER)
    assert out.endswith(f"{fstab.BEGIN}\nUUID=1 /mnt/e btrfs noatime 0 0\n{fstab.END}\n")
    assert fstab.managed_lines(out) == ["UUID=1 /mnt/e btrfs noatime 0 0"]


def test_render_replaces_block_in_place():
    text = USER + f"{fstab.BEGIN}\nUUID=old /mnt/e btrfs x 0 0\n{fstab.END}\n/dev/sdz /late ext4 d 0 2\n"
    out = fstab.render(text, ["UUID=new /mnt/e btrfs x 0 0"])
    assert out == USER + f"{fstab.BEGIN}\nUUID=new /mnt/e btrfs x 0 0\n{fstab.END}\n/dev/sdz /late ext4 d 0 2\n"


def test_render_with_no_entries_removes_block():
    text = USER + f"{fstab.BEGIN}\nUUID=old /mnt/e btrfs x 0 0\n{fstab.END}\n"
    assert fstab.render(text, []) == USER


def test_unterminated_block_never_swallows_user_lines():
    text = USER + f"{fstab.BEGIN}\nUUID=old /mnt/e btrfs x 0 0\n\n/dev/sdz /late ext4 d 0 2\n"
    out = fstab.render(text, ["UUID=new /mnt/e btrfs x 0 0"])
    assert "/dev/sdz /late ext4 d 0 2" in out
    assert "UUID=old" not in out


def test_unmanaged_mountpoints_skip_our_block_and_unescape():
    text = USER + f"{fstab.BEGIN}\nUUID=1 /mnt/e btrfs x 0 0\n{fstab.END}\n/dev/sdz /a\\040b ext4 d 0 2\n"
    assert fstab.unmanaged_mountpoints(text) == {"/": 2, "none": 3, "/a b": 7}


def test_entry_line_escapes_spaces():
    e = fstab.FstabEntry("UUID=1", "/mnt/my disk", "btrfs", "noatime")
    assert e.line() == "UUID=1 /mnt/my\\040disk btrfs noatime 0 0"


def test_write_fstab_is_atomic_and_preserves_mode(tmp_path):
    p = tmp_path / "fstab"
    p.write_text(USER)
    p.chmod(0o640)
    write_fstab(str(p), ["UUID=1 /mnt/e btrfs noatime 0 0"])
    assert p.read_text().startswith(USER)
    assert (p.stat().st_mode & 0o777) == 0o640
    assert [f.name for f in tmp_path.iterdir()] == ["fstab"]  # no temp file left behind
    write_fstab(str(tmp_path / "new-fstab"), ["UUID=1 /mnt/e btrfs noatime 0 0"])
    assert fstab.managed_lines((tmp_path / "new-fstab").read_text()) == ["UUID=1 /mnt/e btrfs noatime 0 0"]
