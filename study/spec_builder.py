"""Build frozen dataclasses from plain YAML data, collecting every type problem with its path.

Kept apart from spec.py so the spec reads as a list of fields, and this as the one place that
knows how YAML values become typed fields (e.g. YAML 1.1 reads `1e-5` as a string; we accept it
as a float, since every researcher writes learning rates that way).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass
from typing import Any, Iterable, Literal, Mapping

_MISSING = object()


@dataclass(frozen=True)
class Problem:
    path: str
    message: str
    line: int | None = None


class SpecError(ValueError):
    """Every problem of a study file, raised once."""

    def __init__(self, problems: list[Problem], *, source: str = "<spec>", lines: Mapping[str, int] | None = None):
        self.source = source
        lines = lines or {}
        self.problems = [
            p if p.line is not None else Problem(p.path, p.message, _line_for(p.path, lines)) for p in problems
        ]
        super().__init__(self.render())

    def render(self) -> str:
        head = f"{self.source}: {len(self.problems)} problem{'s' if len(self.problems) != 1 else ''}"
        body = []
        for p in self.problems:
            where = f"{self.source}:{p.line}" if p.line else self.source
            body.append(f"  {where}: {p.path or '<top>'}: {p.message}")
        return "\n".join([head, *body])


def _line_for(path: str, lines: Mapping[str, int]) -> int | None:
    """Line of the deepest existing ancestor of `path` (e.g. a default-filled stage points to its item)."""
    while path:
        if path in lines:
            return lines[path]
        cut = max(path.rfind("."), path.rfind("["))
        path = path[:cut] if cut > 0 else ""
    return None


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def yaml_line_index(text: str, duplicates: list[Problem] | None = None) -> dict[str, int]:
    """Map field paths ('chains.tqa_arc[0].learning_rate') to 1-based YAML lines.

    PyYAML silently keeps the last of two equal keys; a repeated key is appended to
    `duplicates` as a Problem, since the earlier value would be lost without a word.
    """
    import yaml

    root = yaml.compose(text)
    index: dict[str, int] = {}

    def walk(node: Any, path: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                child = f"{path}.{key.value}" if path else str(key.value)
                if child in index and duplicates is not None:
                    duplicates.append(Problem(child, f"duplicate key (also on line {index[child]})", key.start_mark.line + 1))
                index[child] = key.start_mark.line + 1
                walk(value, child)
                # grid keys may be nested ({stage1: {learning_rate: ...}}) or dotted; index both.
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                child = f"{path}[{i}]"
                index[child] = item.start_mark.line + 1
                walk(item, child)

    if root is not None:
        walk(root, "")
    return index


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if origin in (tuple, list):
        return "a list"
    if origin in (Mapping, dict) or tp in (dict,):
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def build_dataclass(cls: type, raw: Any, path: str, problems: list[Problem]) -> Any:
    """Construct `cls` from `raw`; append a Problem per bad field and return None if any."""
    if not isinstance(raw, Mapping):
        problems.append(Problem(path, f"must be a mapping (got {type(raw).__name__})"))
        return None
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            problems.append(Problem(_join(path, str(key)), f"unknown field '{key}'{did_you_mean(str(key), fields)}"))
    # Unknown keys are reported but do not stop construction, so cross-field checks still run
    # and a typo does not hide the file's other problems.
    before = len(problems)
    values = {}
    for name, f in fields.items():
        if name in raw:
            values[name] = coerce(raw[name], hints[name], _join(path, name), problems)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            problems.append(Problem(_join(path, name), "required field is missing"))
    if len(problems) > before:
        return None
    return cls(**values)


def coerce(value: Any, tp: Any, path: str, problems: list[Problem]) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return coerce(value, inner[0], path, problems)
    if origin is Literal:
        if value in args:
            return value
        problems.append(Problem(path, f"must be {_type_name(tp)} (got {value!r}){did_you_mean(str(value), [str(a) for a in args])}"))
        return None
    if dataclasses.is_dataclass(tp):
        return build_dataclass(tp, value, path, problems)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            problems.append(Problem(path, f"must be a list (got {value!r})"))
            return None
        item_tp = args[0] if args else Any
        return tuple(coerce(v, item_tp, f"{path}[{i}]", problems) for i, v in enumerate(value))
    if origin in (Mapping, dict, typing.Mapping) or origin is not None and getattr(origin, "__name__", "") == "Mapping":
        if not isinstance(value, Mapping):
            problems.append(Problem(path, f"must be a mapping (got {value!r})"))
            return None
        key_tp, val_tp = args if args else (str, Any)
        return {str(k): coerce(v, val_tp, f"{path}.{k}", problems) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML 1.1 reads 1e-5 as a string
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
    else:
        return value
    problems.append(Problem(path, f"must be {_type_name(tp)} (got {value!r})"))
    return None
