"""`--set key=value` overrides, applied to the raw study data before validation.

Keys are dotted paths (`model=tiny`, `chains.tqa_arc.0.learning_rate=1e-4`,
`tasks.toxigen_qa.train_size=200`, `grid.stage1.learning_rate=[1e-5,5e-6]`); values are YAML
(`[1, 2]`, `null`, `true`). A path may create missing mapping keys; list items must exist.
"""

from __future__ import annotations

import copy
from typing import Any, Iterable

from study.spec_builder import Problem

# Mappings whose keys themselves contain dots (grid axes): the rest of the path is one key.
_DOTTED_KEY_PARENTS = ("grid",)


def apply_overrides(raw: Any, overrides: Iterable[str], problems: list[Problem]) -> Any:
    import yaml

    overrides = list(overrides)
    if not overrides:
        return raw
    data = copy.deepcopy(raw) if raw is not None else {}
    for item in overrides:
        where = f"--set {item}"
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            problems.append(Problem(where, "expected key=value, e.g. --set model=tiny"))
            continue
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as exc:
            problems.append(Problem(where, f"value is not valid YAML: {exc}"))
            continue
        error = _set_path(data, key.split("."), value)
        if error:
            problems.append(Problem(where, error))
    return data


def _set_path(node: Any, parts: list[str], value: Any) -> str | None:
    trail: list[str] = []
    while True:
        head = parts[0]
        if isinstance(node, dict):
            if trail and trail[-1] in _DOTTED_KEY_PARENTS and len(parts) > 1:
                head, parts = ".".join(parts), [".".join(parts)]
            if len(parts) == 1:
                node[head] = value
                return None
            if head not in node or node[head] is None:
                node[head] = {}
            node, parts = node[head], parts[1:]
        elif isinstance(node, list):
            if not head.lstrip("-").isdigit() or not -len(node) <= int(head) < len(node):
                return f"'{'.'.join(trail + [head])}': no list item {head} (the list has {len(node)})"
            if len(parts) == 1:
                node[int(head)] = value
                return None
            node, parts = node[int(head)], parts[1:]
        else:
            return f"'{'.'.join(trail)}' is a value, not a mapping or list"
        trail.append(head)
