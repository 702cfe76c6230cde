"""A YAML SafeLoader whose mappings and lists remember the line they start on.

Validation errors then point at file and line. `to_plain` strips the wrappers so what reaches
the runner (and, later, Celery) is plain, picklable data.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, SequenceNode


class LineDict(dict):
    line: int = 0
    key_lines: dict[str, int]


class LineList(list):
    line: int = 0
    item_lines: list[int]


class AliasRefused(yaml.YAMLError):
    """A suite used a YAML alias (`*name`, `<<: *name`). Refused: aliases let a few lines stand for
    billions of values ("billion laughs"), and a suite shares values with `vars:` and `include:`."""

    def __init__(self, anchor: str, mark: yaml.Mark) -> None:
        self.anchor = anchor
        self.problem_mark = mark
        super().__init__(f"alias *{anchor}")


class _LineLoader(yaml.SafeLoader):
    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self.check_event(AliasEvent):
            event = self.peek_event()
            raise AliasRefused(str(event.anchor), event.start_mark)
        return super().compose_node(parent, index)


def _construct_mapping(loader: _LineLoader, node: MappingNode) -> LineDict:
    loader.flatten_mapping(node)
    result = LineDict()
    result.line = node.start_mark.line + 1
    result.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str | int | float | bool) and key is not None:
            raise yaml.constructor.ConstructorError(
                None, None, "mapping keys must be plain scalars", key_node.start_mark
            )
        if key in result:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[str(key)] = value_node.start_mark.line + 1
    return result


def _construct_sequence(loader: _LineLoader, node: SequenceNode) -> LineList:
    result = LineList(loader.construct_object(child, deep=True) for child in node.value)
    result.line = node.start_mark.line + 1
    result.item_lines = [child.start_mark.line + 1 for child in node.value]
    return result


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def load_yaml_with_lines(text: str) -> Any:
    """Parse YAML text; raises yaml.YAMLError (with problem_mark) when malformed, AliasRefused (one) at its
    first alias."""
    return yaml.load(text, Loader=_LineLoader)


def line_of(value: Any, key: str | None = None, default: int | None = None) -> int | None:
    if key is not None and isinstance(value, LineDict):
        return value.key_lines.get(key, value.line)
    if isinstance(value, LineDict | LineList):
        return value.line
    return default


def item_line(values: Any, index: int, default: int | None = None) -> int | None:
    if isinstance(values, LineList) and index < len(values.item_lines):
        return values.item_lines[index]
    return default


def to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_plain(v) for v in value]
    return value
