"""containers.cgroupparent on cgroup v2 trees made in a temp dir (files as the kernel shows them)."""
from __future__ import annotations

from provisioner.containers import cgroupparent


def v2_tree(root, controllers="cpuset cpu io memory hugetlb pids rdma misc", enabled="cpu memory"):
    root.mkdir(parents=True)
    (root / "cgroup.controllers").write_text(controllers + "\n")
    (root / "cgroup.subtree_control").write_text(enabled + "\n")
    return root


def test_enables_what_docker_stats_reads_from_the_root_down_to_the_parent(tmp_path):
    root = v2_tree(tmp_path / "cg")
    actions, create = cgroupparent.plan("/provisioner", root)
    assert create and actions == (cgroupparent.Enable(str(root), ("io", "pids")),
                                  cgroupparent.Enable(str(root / "provisioner"), ("cpu", "io", "memory", "pids")))
    cgroupparent.delegate("/provisioner", root)
    assert (root / "provisioner").is_dir()
    # (a real kernel adds the controllers to the file; the test's plain file keeps the last write)
    assert (root / "provisioner" / "cgroup.subtree_control").read_text() == "+pids"


def test_converged_and_what_the_kernel_lacks(tmp_path):
    root = v2_tree(tmp_path / "cg", controllers="cpu memory pids", enabled="cpu memory pids")
    (root / "provisioner").mkdir()
    (root / "provisioner" / "cgroup.subtree_control").write_text("cpu memory pids\n")
    assert cgroupparent.plan("/provisioner", root) == ((), False)   # no io controller here: not asked for


def test_v1_and_hybrid_roots_are_left_alone(tmp_path):
    hybrid = tmp_path / "tmpfs-root"     # hybrid: /sys/fs/cgroup is a tmpfs of hierarchies
    (hybrid / "unified").mkdir(parents=True)
    (hybrid / "unified" / "cgroup.controllers").write_text("\n")
    assert cgroupparent.plan("/provisioner", hybrid) == ((), False)
    assert cgroupparent.plan("/provisioner", hybrid / "unified") == ((), False)   # no controllers there
    cgroupparent.delegate("/provisioner", hybrid)
    assert not (hybrid / "provisioner").exists()
