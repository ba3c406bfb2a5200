"""The boot hook's containers step converges a deployed stack after a reboot, never before the first up."""
from pathlib import Path

from provisioner.host.config import HostConfig
from provisioner.host.steps import StepContext
from provisioner.host.steps import containers


def _ctx(tmp_path, **cfg):
    return StepContext(config=HostConfig(host="web", **cfg), runner=None, root=tmp_path / "root", sysroot=tmp_path)


def test_stack_up_is_planned_only_once_the_stack_was_brought_up_here(tmp_path):
    ctx = _ctx(tmp_path, stack="shop", stack_file=str(tmp_path / "stack.yml"))
    assert [type(a).__name__ for a in containers.plan(ctx)] == ["Restore"]     # first boot: deploy runs up
    state = Path(ctx.root) / "stacks" / "shop.json"
    state.parent.mkdir(parents=True)
    state.write_text("{}")
    actions = containers.plan(ctx)
    assert [type(a).__name__ for a in actions] == ["Restore", "StackUp"]
    assert actions[1] == containers.StackUp(str(tmp_path / "stack.yml"), "shop", "web")


def test_no_stack_file_no_stack_up(tmp_path):
    ctx = _ctx(tmp_path, stack="shop")
    (Path(ctx.root) / "stacks").mkdir(parents=True)
    (Path(ctx.root) / "stacks" / "shop.json").write_text("{}")
    assert [type(a).__name__ for a in containers.plan(ctx)] == ["Restore"]
