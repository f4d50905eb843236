"""The YAML side of ``testbed.topofile``: a SafeLoader that counts and refuses while it composes.

Apart from ``topofile`` so that PyYAML is imported only when a topology file is read (``up``, ``mininet``,
the pytest plugin), never by the commands that rebuild a lab from its JSON record (``status``, ``fail``,
the agent). Limits and messages are ``topofile``'s.
"""

from __future__ import annotations

from typing import Any, List

import yaml

from testbed.errors import TopologyError, one_line
from testbed.topofile import MAX_DEPTH, MAX_INT_CHARS, MAX_NODES, clip, fmt_path, short

STR_TAG = "tag:yaml.org,2002:str"
INT_TAG = "tag:yaml.org,2002:int"
NOT_IMPLICIT = ("tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:value")  # 2001-13-45 stays a string


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader whose composer refuses, while composing, what a topology file never needs."""

    yaml_implicit_resolvers = {first: [(tag, rx) for tag, rx in resolvers if tag not in NOT_IMPLICIT]
                               for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}

    def __init__(self, text: str, file: str) -> None:
        super().__init__(text)
        self.file = file
        self.parts: List[Any] = []  # where the composer is: ["hosts", "server", "nic"]
        self.depth = 0
        self.nodes = 0

    def refuse(self, mark: Any, message: str) -> None:
        parts = self.parts if len(self.parts) <= 8 else self.parts[:6] + ["…"]
        raise TopologyError(self.file, fmt_path(parts), f"line {mark.line + 1}: {message}")

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            self.refuse(event.start_mark, f"YAML alias *{clip(event.anchor, 20)}: aliases and anchors "
                                          "are not allowed in a topology file; write the value out")
        if getattr(event, "tag", None) is not None:
            tag = event.tag.replace("tag:yaml.org,2002:", "!!")
            self.refuse(event.start_mark, f"YAML tag {short(tag, 30)}: tags are not allowed in a topology "
                                          "file; write plain values (quote a string)")
        if getattr(event, "anchor", None) is not None:
            self.refuse(event.start_mark, f"YAML anchor &{clip(event.anchor, 20)}: anchors and aliases "
                                          "are not allowed in a topology file; write the value out")
        self.nodes += 1
        if self.nodes > MAX_NODES:
            self.refuse(event.start_mark, f"more than {MAX_NODES:,} YAML nodes; a topology file has a few hundred")
        pushed = isinstance(index, (int, yaml.ScalarNode))
        if pushed:
            self.parts.append(index if isinstance(index, int) else clip(index.value, 40))
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                self.refuse(event.start_mark, f"nested more than {MAX_DEPTH} levels deep; a topology file nests 6")
            node = super().compose_node(parent, index)
            if isinstance(node, yaml.ScalarNode) and node.tag == INT_TAG and len(node.value) > MAX_INT_CHARS:
                self.refuse(node.start_mark, f"the number {short(node.value, 24)} has {len(node.value):,} "
                                             "characters; no topology number has more than a few digits")
            return node
        finally:
            self.depth -= 1
            if pushed:
                self.parts.pop()

    def compose_mapping_node(self, anchor: Any) -> Any:
        node = super().compose_mapping_node(anchor)
        seen: dict = {}
        for key, _value in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.tag != STR_TAG:
                text = key.value if isinstance(key, yaml.ScalarNode) else "a " + type(key).__name__[:-4].lower()
                self.refuse(key.start_mark, f"key {short(text, 40)} is not a plain string; topology keys are "
                                            "names (quote it if it is one)")
            if key.value in seen:
                self.parts.append(clip(key.value, 40))
                self.refuse(key.start_mark, f"duplicate key {short(key.value, 40)} (first at line {seen[key.value]})")
            seen[key.value] = key.start_mark.line + 1
        return node


def compose(text: str, file: str) -> Any:
    """Plain data from checked topology text (``topofile.parse`` checks it first); TopologyError if refused."""
    loader = _BoundedLoader(text, file)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise TopologyError(file, where, f"not valid YAML: {one_line(problem, 160)}") from None
    finally:
        loader.dispose()
