"""Reading YAML configuration with line numbers: every mistake is reported as ``file:line: problem``.

PyYAML's composer keeps a start mark on every node; the helpers here walk the node tree instead of
the constructed Python objects, so each value can be traced back to the line it came from.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

STR_TAG = "tag:yaml.org,2002:str"
NULL_TAG = "tag:yaml.org,2002:null"


class ConfigError(ValueError):
    """A configuration file (policy, allowlist) with a mistake; the message names ``file:line``."""

    def __init__(self, source: str, line: int | None, problem: str) -> None:
        self.source, self.line, self.problem = source, line, problem
        where = f"{source}:{line}" if line else source
        super().__init__(f"{where}: {problem}")


def line_of(node: Node) -> int:
    """1-based line where `node` starts."""
    return node.start_mark.line + 1


def read_text(path: str | Path, error: type[ConfigError]) -> str:
    """The text of `path`, or `error` naming the file when it cannot be read."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise error(str(path), None, f"not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise error(str(path), None, f"cannot read the file: {exc.strerror or exc}") from None


def compose(text: str, source: str, error: type[ConfigError]) -> Node | None:
    """The node tree of one YAML document (None for an empty one); syntax errors name their line."""
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = " ".join(p for p in (exc.context, exc.problem) if p) or "invalid YAML"
        raise error(source, mark.line + 1 if mark else None, f"invalid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise error(source, None, f"invalid YAML: {exc}") from None


def is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == NULL_TAG


def mapping(node: Node, source: str, error: type[ConfigError], what: str) -> list[tuple[str, Node, Node]]:
    """(key, key node, value node) of a mapping with string keys, in file order; rejects duplicates."""
    if is_null(node):
        return []
    if not isinstance(node, MappingNode):
        raise error(source, line_of(node), f"{what} must be a mapping (key: value)")
    items: list[tuple[str, Node, Node]] = []
    seen: dict[str, int] = {}
    for key_node, value_node in node.value:
        if not isinstance(key_node, ScalarNode) or key_node.tag == NULL_TAG:
            raise error(source, line_of(key_node), f"{what}: keys must be plain names")
        key = key_node.value
        if key in seen:
            raise error(
                source, line_of(key_node), f"{what}: duplicate key {key!r} (first on line {seen[key]})"
            )
        seen[key] = line_of(key_node)
        items.append((key, key_node, value_node))
    return items


def sequence(node: Node, source: str, error: type[ConfigError], what: str) -> list[Node]:
    """The items of a sequence (an empty value counts as an empty list)."""
    if is_null(node):
        return []
    if not isinstance(node, SequenceNode):
        raise error(source, line_of(node), f"{what} must be a list (- item)")
    return list(node.value)


def string(node: Node, source: str, error: type[ConfigError], what: str, *, typed_ok: bool = False) -> str:
    """A scalar's text. Unless `typed_ok`, a value YAML reads as a number, boolean or null is an error
    (quote it), so ``10`` or ``yes`` never silently become something else."""
    if not isinstance(node, ScalarNode):
        raise error(source, line_of(node), f"{what} must be a single value, not a list or mapping")
    if node.tag == NULL_TAG:
        raise error(source, line_of(node), f"{what} is empty")
    if node.tag != STR_TAG and not typed_ok:
        raise error(source, line_of(node), f"{what} must be text; quote {node.value!r}")
    return node.value


def check_keys(
    items: list[tuple[str, Node, Node]],
    allowed: tuple[str, ...],
    source: str,
    error: type[ConfigError],
    what: str,
) -> None:
    """Every key of `items` is one of `allowed`."""
    for key, key_node, _ in items:
        if key not in allowed:
            raise error(
                source,
                line_of(key_node),
                f"{what}: unknown key {key!r} (expected one of {', '.join(allowed)})",
            )
