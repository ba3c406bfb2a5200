"""The package's layers, read from the source: data flows down, the stack model stays apart from
what runs containers, and the on-host agent never reaches the operator's side.

Layers, top to bottom (a module imports its own subpackage, or a lower layer; imports inside
functions count):

    cli
    deploy
    clouds, vmimage, remote, imagebuild, doctor     the operator's side (and its tools)
    host                                            the on-host agent: boot hook and steps
    api                                             the Docker Engine API server a host runs
    metrics, logship                                what the agent serves and ships: a host's series, its logs
    compose                                         up/down/ps: a Stack into containers
    stack, containers                               the stack file → one typed model; run one container
    images, network, disks
    runspec                                         typed container options, pure
    runner, errors, fsutil, yamlutil, native, sysinfo, agentlibs, hostos, testing

Rooms of one layer do not import each other (stack and containers meet only in compose), except
the PEERS named below; the bottom layer's single modules may.
"""
from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from provisioner.agentlibs import OPERATOR_LIBRARIES

PKG = Path(__file__).resolve().parents[2] / "provisioner"
LAYERS = [
    {"cli"},
    {"deploy"},
    {"clouds", "vmimage", "remote", "imagebuild", "doctor"},
    {"host"},
    {"api"},
    {"metrics", "logship"},
    {"compose"},
    {"stack", "containers"},
    {"images", "network", "disks"},
    {"runspec"},
    {"runner", "errors", "fsutil", "yamlutil", "native", "sysinfo", "agentlibs", "hostos", "testing", ""},
]
BASE = len(LAYERS) - 1
# Same-layer edges that are real seams: the local cloud boots the VM image, whose builder bakes in
# the agent's dependency wheels.
PEERS = {("clouds", "vmimage"), ("vmimage", "remote")}
OPERATOR_LIBS = set(OPERATOR_LIBRARIES)
OPERATOR_PACKAGES = {"deploy", "clouds", "remote", "vmimage", "imagebuild"}
# The CLI modules the host agent runs (boot hook, disks, containers, stacks, image load/layers).
AGENT_CLI = {"main", "app", "host", "disks", "boot", "container", "network", "stack", "image", "doctor", "api"}


def _modules(root: Path = PKG) -> dict[str, Path]:
    mods = {}
    for p in root.rglob("*.py"):
        parts = ["provisioner", *p.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = p
    return mods


def _imports(mods: dict[str, Path], module_level_only: bool = False) -> dict[str, set[str]]:
    """module -> every name it imports (provisioner modules resolved; others by their top name)."""
    out = {}
    for m, p in mods.items():
        tree = ast.parse(p.read_text())
        nodes = tree.body if module_level_only else ast.walk(tree)
        names: set[str] = set()
        for node in nodes:
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = m.split(".") if p.name == "__init__.py" else m.split(".")[:-1]
                if node.level:
                    base = base[: len(base) - (node.level - 1)]
                    prefix = ".".join(base + ([node.module] if node.module else []))
                else:
                    prefix = node.module or ""
                names.add(prefix)
                names |= {f"{prefix}.{a.name}" for a in node.names if f"{prefix}.{a.name}" in mods}
        out[m] = names
    return out


def _room(module: str) -> str:
    """The subpackage (or top-level module) a provisioner module belongs to; "" for the package."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _layer(room: str) -> int:
    return next(i for i, rooms in enumerate(LAYERS) if room in rooms)


def upward_imports(mods: dict[str, Path]) -> list[str]:
    bad = []
    for m, names in _imports(mods).items():
        here = _room(m)
        for n in names:
            if n not in mods or _room(n) == here:
                continue
            there = _room(n)
            same = _layer(there) == _layer(here) and _layer(here) != BASE and (here, there) not in PEERS
            if _layer(there) < _layer(here) or same:
                bad.append(f"{m} imports {n} ({here} may not import {there})")
    return sorted(bad)


def agent_leaks(mods: dict[str, Path]) -> list[str]:
    """What the agent's modules reach (imports inside functions included) on the operator's side."""
    graph = _imports(mods)
    roots = [m for m in mods if _room(m) in ("host", "api", "compose")] + \
            [f"provisioner.cli.{c}" for c in AGENT_CLI if f"provisioner.cli.{c}" in mods]
    seen, todo, parent = set(), list(roots), {}
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        for n in graph[m]:
            if n in mods and n not in seen:
                parent.setdefault(n, m)
                todo.append(n)
    leaks = []
    for m in sorted(seen):
        why = f"{m} (via {parent[m]})" if m in parent else m
        leaks += [f"{why} imports {n}" for n in sorted(graph[m]) if n.split(".")[0] in OPERATOR_LIBS]
        if _room(m) in OPERATOR_PACKAGES:
            leaks.append(f"the agent reaches operator-side {why}")
    return leaks


def test_no_module_imports_upward():
    assert upward_imports(_modules()) == []


def test_the_stack_model_does_not_import_what_runs_containers():
    """(The image reference grammar and registries model below it are data the model may use.)"""
    graph = _imports(_modules())
    bad = [f"{m} imports {n}" for m, names in graph.items() if _room(m) == "stack"
           for n in names if _room(n) in ("containers", "compose", "network")]
    assert bad == []


def test_the_agent_reaches_nothing_of_the_operators_side():
    assert agent_leaks(_modules()) == []


def test_the_checks_catch_what_they_forbid(tmp_path):
    """The checks above, run over a copy of the package with one bad import planted each."""
    copy = tmp_path / "provisioner"
    subprocess.run(["cp", "-r", str(PKG), str(copy)], check=True)
    (copy / "stack" / "model.py").write_text((copy / "stack" / "model.py").read_text() +
                                             "\nfrom ..containers import bundle  # planted\n")
    (copy / "runspec" / "ports.py").write_text((copy / "runspec" / "ports.py").read_text() +
                                               "\n\ndef _later():\n    from ..network import ports  # planted\n")
    bad = upward_imports(_modules(copy))
    assert any("provisioner.stack.model imports provisioner.containers" in b for b in bad), bad
    assert any("provisioner.runspec.ports imports provisioner.network" in b for b in bad), bad
    steps = copy / "host" / "steps" / "users.py"
    steps.write_text(steps.read_text() + "\n\ndef _later():\n    import paramiko  # planted\n")
    assert any("provisioner.host.steps.users" in leak and "paramiko" in leak for leak in agent_leaks(_modules(copy)))


def test_the_agents_commands_run_with_the_operator_libraries_absent(tmp_path):
    """What a host runs, in a Python where importing paramiko, libcloud, jinja2 or the Google API
    client fails, as on a host the agent was installed on."""
    blocker = textwrap.dedent(f"""
        import importlib.abc, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name.split(".")[0] in {sorted(OPERATOR_LIBS)!r}:
                    raise ModuleNotFoundError(f"No module named {{name!r}} (not installed on a host)", name=name)
        sys.meta_path.insert(0, Block())
        from provisioner.cli.main import main
        main(sys.argv[1:])
    """)
    for args in (["host", "--help"], ["host", "boot", "--help"], ["host", "disks", "--help"], ["image", "--help"],
                 ["image", "load", "--help"], ["container", "--help"], ["container", "run", "--help"],
                 ["container", "stats", "--help"], ["container", "logs", "--help"],
                 ["up", "--help"], ["ps", "--help"], ["doctor", "--help"], ["host", "api", "--help"],
                 ["host", "dial-stdio", "--help"]):
        p = subprocess.run([sys.executable, "-c", blocker, *args], capture_output=True, text=True, timeout=120,
                           cwd=PKG.parent)
        assert p.returncode == 0, (args, p.stderr[-2000:])
    # and an operator's command says so plainly rather than failing on an import
    p = subprocess.run([sys.executable, "-c", blocker, "image", "push", "web", "busybox"], capture_output=True,
                       text=True, timeout=120, cwd=PKG.parent)
    assert p.returncode != 0 and "paramiko" in p.stderr and "internal error" not in p.stderr, p.stderr


@pytest.mark.parametrize("room", ["stack", "runspec", "images", "network", "metrics", "logship"])
def test_the_lower_rooms_import_no_operator_library(room):
    graph = _imports(_modules())
    bad = [f"{m} imports {n}" for m, names in graph.items() if _room(m) == room
           for n in names if n.split(".")[0] in OPERATOR_LIBS]
    assert bad == []
