"""compose.labels: which stack and service each container is, from what `up` recorded."""
from __future__ import annotations

import json

from provisioner.compose.labels import service_labels
from provisioner.compose.names import STATE_DIR


def test_labels_from_every_stack_state_and_unreadable_ones_skipped(tmp_path):
    d = tmp_path / STATE_DIR
    d.mkdir()
    (d / "shop.json").write_text(json.dumps({"services": {"web": {"container": "shop-web", "hash": "1"},
                                                          "db": {"container": "shop-db"}}}))
    (d / "blog.json").write_text(json.dumps({"services": {"app": {"container": "blog-app"}}}))
    (d / "broken.json").write_text("{not json")
    (d / ".shop.lock").write_text("")
    assert service_labels(tmp_path) == {"shop-web": ("shop", "web"), "shop-db": ("shop", "db"),
                                        "blog-app": ("blog", "app")}
    assert service_labels(tmp_path / "nowhere") == {}
