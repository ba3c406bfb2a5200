"""YAML loading that remembers line numbers, so config errors can say file:line.

`load(path)` returns `Node` values: `YDict` / `YList` (plain dict / list subclasses) carrying
`.line` (1-based, where the node starts) and `.key_lines` / `.item_lines`. Scalars stay plain
Python values; ask the parent container for their line with `line_of(container, key)`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError


class YDict(dict):
    line: int = 0
    key_lines: dict
    raw: dict           # key → the scalar value as written (e.g. "0440" that YAML 1.1 read as 288)


class YList(list):
    line: int = 0
    item_lines: list


class _Loader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> YDict:
    loader.flatten_mapping(node)
    d = YDict()
    d.line = node.start_mark.line + 1
    d.key_lines = {}
    d.raw = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, (str, int, float, bool)) and key is not None:
            raise ConfigError("mapping keys must be scalars", None)
        if key in d:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        d[key] = loader.construct_object(value_node, deep=True)
        d.key_lines[key] = key_node.start_mark.line + 1
        if isinstance(value_node, yaml.ScalarNode):
            d.raw[key] = value_node.value
    return d


def _construct_sequence(loader: _Loader, node: yaml.SequenceNode) -> YList:
    lst = YList(loader.construct_object(child, deep=True) for child in node.value)
    lst.line = node.start_mark.line + 1
    lst.item_lines = [child.start_mark.line + 1 for child in node.value]
    return lst


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def loads(text: str, path: str = "<string>") -> Any:
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(f"invalid YAML: {problem}", path, line) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", path) from None


def load(path: str | Path) -> Any:
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise ConfigError("file not found", str(path)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", str(path)) from None
    return loads(text, str(path))


def raw_text(container: Any, key: Any) -> str | None:
    """`container[key]` as it is written in the file (a scalar), when known."""
    return getattr(container, "raw", {}).get(key) if isinstance(container, YDict) else None


def line_of(container: Any, key: Any = None) -> int | None:
    """The line of `container[key]` (or of the container itself when key is None)."""
    if key is None:
        return getattr(container, "line", None)
    if isinstance(container, YDict):
        return container.key_lines.get(key, container.line)
    if isinstance(container, YList) and isinstance(key, int) and 0 <= key < len(container.item_lines):
        return container.item_lines[key]
    return getattr(container, "line", None)
