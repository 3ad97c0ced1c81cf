"""Build frozen dataclasses from plain YAML data, collecting every type problem with its path.

Generic: it knows types, not studies. study/spec_loading.py hands it a study file's data (after
shorthands, stage_defaults and `--set`) and StudySpec; it walks the dataclass fields' type hints
and is the one place that knows how YAML values become typed fields (e.g. YAML 1.1 reads `1e-5`
as a string; we accept it as a float, since every researcher writes learning rates that way:
`coerce_float`) and how an unknown field is reported (`unknown_field_message`). spec_loading
uses both where it reads values before they reach a dataclass (grid and search axes, `--set`).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Iterable, Literal, Mapping

from contract.problems import Problem, did_you_mean


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def coerce_float(value: Any) -> Any:
    """A string YAML 1.1 left unread as a float (`1e-5`) as the float every researcher means;
    any other value (a number, an unreadable string) as it is."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def unknown_field_message(key: Any, names: Iterable[str]) -> str:
    """The message of a field no dataclass has, with the closest known name."""
    return f"unknown field '{key}'{did_you_mean(str(key), names)}"


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
            problems.append(Problem(_join(path, str(key)), unknown_field_message(key, fields)))
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
        for option in inner:  # e.g. bool | Literal["auto"]: the first type that takes the value
            tried: list[Problem] = []
            coerced = coerce(value, option, path, tried)
            if not tried:
                return coerced
        problems.append(Problem(path, f"must be {_type_name(tp)} (got {value!r})"))
        return None
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
        number = coerce_float(value)
        if isinstance(number, (int, float)) and not isinstance(number, bool):
            return float(number)
    elif tp is str:
        if isinstance(value, str):
            return value
    else:
        return value
    problems.append(Problem(path, f"must be {_type_name(tp)} (got {value!r})"))
    return None
