"""images/history.py: the latest arrival per image, bounded, and never a failed pull for its sake."""
from __future__ import annotations

from types import SimpleNamespace

from provisioner.images import history


def test_latest_arrival_per_image_oldest_forgotten_first(tmp_path, monkeypatch):
    monkeypatch.setattr(history, "KEEP", 3)
    for i, name in enumerate(["a", "b", "a", "c", "d"]):
        history.record(tmp_path, history.Arrival(name, "pull", float(i), 2, 1, 1000.0 + i))
    got = {a.image: a.seconds for a in history.read(tmp_path)}
    assert got == {"a": 2.0, "c": 3.0, "d": 4.0}
    assert (tmp_path / history.FILE).stat().st_mode & 0o777 == 0o644


def test_loads_record_each_name_with_the_commands_time(tmp_path):
    results = [SimpleNamespace(names=["reg/web:1", "web:latest"], layers=3, applied=[2]),
               SimpleNamespace(names=["reg/db:2"], layers=5, applied=[])]
    history.record_loads(tmp_path, results, 4.5)
    got = {a.image: (a.how, a.seconds, a.layers, a.applied) for a in history.read(tmp_path)}
    assert got == {"reg/web:1": ("load", 4.5, 3, 1), "web:latest": ("load", 4.5, 3, 1), "reg/db:2": ("load", 4.5, 5, 0)}


def test_an_unwritable_history_is_a_warning_not_a_failure(tmp_path, caplog):
    (tmp_path / "images").write_text("a file where the directory should be")
    history.record(tmp_path, history.Arrival("x", "pull", 1.0, 1, 1, 1.0))
    assert history.read(tmp_path) == [] and "cannot record the arrival of x" in caplog.text
