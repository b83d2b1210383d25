"""YAML from users, read safely: plain data only (SafeLoader), with limits on size, nesting,
alias expansion (a "billion laughs" document is refused while it is being read, before anything
expands it) and no duplicate keys (the later one would silently win).

Every refusal is a yaml.MarkedYAMLError whose `problem` is one sentence and whose
`problem_mark` (when there is one) gives the line, so callers report it as any YAML error.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

from sweep.errors import SpaceError

MAX_BYTES = 1_000_000        # a search space is a few kB
MAX_DEPTH = 50               # nested mappings and lists
MAX_NODES = 100_000          # nodes after expanding every alias


class YamlLimitError(ConstructorError):
    """A document beyond the limits above, or with a duplicate key."""

    def __init__(self, problem: str, mark=None):
        super().__init__(None, None, problem, mark)


class _Loader(yaml.SafeLoader):
    """YAML as people write numbers (1e-6 is a float; PyYAML's YAML 1.1 reads it as a string),
    with the limits of this module."""

    def compose_document(self):
        self._depth = 0
        node = super().compose_document()
        _check_expansion(node)
        return node

    def compose_node(self, parent, index):
        self._depth = getattr(self, "_depth", 0) + 1
        try:
            if self._depth > MAX_DEPTH:
                raise YamlLimitError(f"nesting deeper than {MAX_DEPTH} levels is not allowed",
                                     self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        if isinstance(node, MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node)
                try:
                    first = seen.get(key)
                except TypeError:
                    continue
                line = key_node.start_mark.line + 1
                if first is not None:
                    raise YamlLimitError(f"duplicate key {key!r} (first at line {first}); each key may appear once",
                                         key_node.start_mark)
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def _check_expansion(node) -> None:
    """Refuse a document whose aliases expand to more than MAX_NODES nodes: PyYAML shares an
    aliased node, so reading is cheap, but anything that walks the result (json, str, a report)
    would expand every alias."""
    if node is None:
        return
    sizes: dict[int, int] = {}
    stack = [(node, False)]
    while stack:
        current, children_done = stack.pop()
        key = id(current)
        if key in sizes and not children_done:
            continue
        if isinstance(current, ScalarNode):
            sizes[key] = 1
            continue
        children = ([c for pair in current.value for c in pair] if isinstance(current, MappingNode)
                    else list(current.value) if isinstance(current, SequenceNode) else [])
        if not children_done:
            sizes[key] = 0  # in progress
            stack.append((current, True))
            stack.extend((c, False) for c in children if id(c) not in sizes)
            continue
        total = 1 + sum(sizes.get(id(c), 1) for c in children)
        if total > MAX_NODES:
            raise YamlLimitError(f"aliases expand to more than {MAX_NODES:,} values; a document this large is "
                                 "refused (write the values out, or use fewer aliases)", current.start_mark)
        sizes[key] = total


def read_yaml(text: str) -> Any:
    """Parse one YAML document from a user; raises yaml.YAMLError (a YamlLimitError for the limits)."""
    size = len(text.encode("utf-8", errors="replace")) if len(text) <= MAX_BYTES else len(text)
    if size > MAX_BYTES:
        raise YamlLimitError(f"the text is {size / 1e6:.1f} MB; allowed: at most {MAX_BYTES / 1e6:g} MB")
    return yaml.load(text, Loader=_Loader)


def read_yaml_file(path: Path) -> tuple[Any, str]:
    """(the parsed document, its text) of a user's YAML file; SpaceError names the file and the
    line where it is not valid YAML."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise SpaceError(f"{path}: cannot be read as UTF-8 text ({err})") from None
    try:
        return read_yaml(text), text
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SpaceError(f"{path}: not valid YAML{where}: {getattr(err, 'problem', err)}") from None


def read_sets(items: list[str], error: type[Exception]) -> dict[str, Any]:
    """`--set FIELD=VALUE` items as {field: value}, each value read as YAML (else kept as text)."""
    values: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise error(f"--set {item!r}: expected FIELD=VALUE")
        key, raw = item.split("=", 1)
        try:
            values[key.strip()] = read_yaml(raw) if raw else ""
        except yaml.YAMLError:
            values[key.strip()] = raw
    return values
