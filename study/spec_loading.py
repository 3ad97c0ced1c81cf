"""Loading a study file: YAML -> (shorthands, stage_defaults, `tiny:` block, `--set`) -> StudySpec.

`load_spec_file` reads a file; `spec_from_dict` turns plain data into a validated StudySpec
(study/spec.py lists the fields): it expands the shorthands (`model: tiny`, a single eval task
or task file; `seeds: 3` is refused, since it reads as three seeds and as the seed 3), gives
every stage the `stage_defaults` it does not override,
flattens nested grid and search axes (`stage1: {learning_rate: [...]}`), builds the typed
dataclasses (study/spec_builder.py) and runs the checks across fields (study/spec_checks.py).
Every problem is collected with its field path (and YAML line when known) and raised once as
`SpecError`, so a researcher fixes a file in one round trip. A problem points at what the user
wrote: a bad value a stage inherited from `stage_defaults` is reported once, at
`stage_defaults.<field>` (not once per stage), and a bad value that came from `--set` (or from
the `tiny:` block) is reported as that `--set` argument (or `tiny.<key>` at its line), not at a
line of the file it replaced (`_attributed`).

`--set key=value` overrides are applied to the raw data before all that. Keys are dotted paths
(`model=tiny`, `chains.tqa_arc.0.learning_rate=1e-4`, `tasks.toxigen_qa.train_size=200`,
`grid.stage1.learning_rate=[1e-5,5e-6]`); values are YAML (`[1, 2]`, `null`, `true`). A path
may create missing mapping keys; list items must exist.

A study file may also carry a `tiny:` block, its variant for the built-in tiny model (see
study/presets/paper-*.yaml): dotted field paths, the same syntax as `--set` keys, with YAML
values:

    model: {name: meta-llama/Llama-2-7b-hf, max_length: 2048}
    stage_defaults: {learning_rate: 1.0e-5, steps: 100}
    tiny:
      model.max_length: 384
      stage_defaults.learning_rate: 2.0e-3
      grid.stage1.learning_rate: [1.0e-3, 2.0e-3]
      tasks.arc_easy.train_size: 800

`load_spec_file` applies it only when the model name, after the user's `--set` values, is
'tiny' (e.g. `--set model=tiny`), and then re-applies the user's `--set` values on top, so the
precedence is file < tiny block < --set. In that re-application `--set model=<name>` (the
shorthand that triggered the variant) sets model.name only, so the block's `model.*` values
survive it; `--set model={...}` (a mapping) still replaces the whole model. The block is
checked whether or not it applies: every key must be a field path of the study file (problems
are reported as `tiny.<key>` with its line), its values must have the field's type, and it may
not name the model itself. It is not a field of StudySpec: a loaded spec holds the resolved
values and nothing of the block, so stage keys, `to_dict()` and stored studies do not see it.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from contract.problems import FileProblems, Problem, format_path, line_for, read_yaml
from study.spec import (
    FLOAT_AXIS_FIELDS,
    GRID_FIELDS,
    GRID_KEY,
    SEARCH_DISTRIBUTIONS,
    ModelSpec,
    StageSpec,
    StudySpec,
)
from study.spec_builder import build_dataclass, coerce, coerce_float, unknown_field_message
from study.spec_checks import semantic_problems
from study.spec_checks_axes import axis_value_kind, axis_value_ok


class SpecError(FileProblems):
    """Every problem of a study file, raised once, each with its field path and line."""

    def __init__(self, problems: list[Problem], *, source: str = "<spec>", lines: Mapping[str, int] | None = None):
        lines = lines or {}
        super().__init__([p if p.line is not None else Problem(p.path, p.message, line_for(p.path, lines))
                          for p in problems], source=source)

    def render(self) -> str:
        head = f"{self.source}: {len(self.problems)} problem{'s' if len(self.problems) != 1 else ''}"
        body = []
        for p in self.problems:
            where = f"{self.source}:{p.line}" if p.line else self.source
            body.append(f"  {where}: {p.path or '<top>'}: {p.message}")
        return "\n".join([head, *body])


# ---------------------------------------------------------------- reading a file and plain data


def load_spec_file(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> StudySpec:
    """Read, override (`--set key=value`; a `tiny:` block when the model is 'tiny', see the module
    docstring) and validate a study file; raise SpecError listing every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError([Problem("", f"cannot read study file: {exc.strerror}")], source=str(path)) from exc
    except UnicodeDecodeError as exc:
        raise SpecError([Problem("", f"not UTF-8 text (byte {exc.start}): {exc.reason}")], source=str(path)) from exc
    try:
        document = read_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise SpecError([Problem("", f"invalid YAML: {getattr(exc, 'problem', exc)}", line)], source=str(path)) from exc
    raw = {} if document.data is None else document.data
    lines = document.field_lines()
    problems = [Problem(format_path(path), f"duplicate key (also on line {first})", line)
                for path, line, first in document.duplicates]
    variant: Any = _NO_VARIANT
    if isinstance(raw, dict):
        # Expand `model: tiny` first, so `--set model.max_length=...` works on shorthand files.
        raw = _expand_shorthands(dict(raw))
        variant = raw.pop(TINY_VARIANT_KEY, _NO_VARIANT)
    raw = _apply_user_overrides(raw, overrides, problems)
    origins: list[tuple[str, str]] = []
    if variant is not _NO_VARIANT:
        raw = _apply_tiny_variant(raw, variant, overrides, problems, origins)
    origins += [(item.partition("=")[0].strip(), f"--set {item}") for item in map(str, overrides) if "=" in item]
    if isinstance(raw, dict) and isinstance(raw.get("task_files"), str):  # `--set task_files=my.yaml`
        raw["task_files"] = [raw["task_files"]]
    if isinstance(raw, dict) and isinstance(raw.get("task_files"), list):
        # Relative to the study file, so a study and its task files travel together.
        raw["task_files"] = [str((path.parent / f).resolve()) if isinstance(f, str) else f for f in raw["task_files"]]
    return spec_from_dict(raw, source=str(path), lines=lines, preexisting=problems, origins=origins)


def spec_from_dict(
    raw: Any,
    *,
    source: str = "<dict>",
    lines: Mapping[str, int] | None = None,
    preexisting: list[Problem] | None = None,
    origins: Iterable[tuple[str, str]] = (),
) -> StudySpec:
    """`raw` (a study file's data, after `--set`) as a validated StudySpec; SpecError listing
    every problem. `origins`: (dotted key, label) of the values `--set` or the `tiny:` block
    wrote, in the order written, so their problems are reported as what the user wrote."""
    problems: list[Problem] = list(preexisting or [])
    if not isinstance(raw, Mapping):
        raise SpecError(problems + [Problem("", "a study file must be a mapping of fields")], source=source)
    raw = dict(raw)
    raw = _expand_shorthands(raw)
    if isinstance(raw.get("seeds"), int) and not isinstance(raw["seeds"], bool):
        problems.append(Problem("seeds", _bare_seeds_message(raw.pop("seeds"))))
    defaults = raw.pop("stage_defaults", None) or {}
    if not isinstance(defaults, Mapping):
        problems.append(Problem("stage_defaults", "must be a mapping of stage fields"))
        defaults = {}
    inherited: set[tuple[str, int, str]] = set()
    if "chains" in raw:
        raw["chains"] = _apply_stage_defaults(raw["chains"], defaults, problems, inherited)
    raw["grid"] = _flatten_grid(raw.get("grid"), problems)
    if "search" in raw:
        raw["search"] = _flatten_search(raw["search"], problems)

    spec = build_dataclass(StudySpec, raw, "", problems)
    if spec is not None:
        problems.extend(semantic_problems(spec))
    if problems:
        raise SpecError(_attributed(problems, inherited, list(origins)), source=source, lines=lines)
    return spec


def _bare_seeds_message(n: int) -> str:
    """`seeds: 3` reads as three seeds and as the seed 3: say both ways to write it."""
    if n < 1:
        return f"must be a list of seeds, e.g. [0] (got {n})"
    many = ", ".join(map(str, range(n))) if n <= 5 else f"0, 1, ..., {n - 1}"
    return (f"must be a list of seeds (got the number {n}): [{many}] for {n} seed{'s' if n != 1 else ''}, "
            f"or [{n}] for the single seed {n}")


_STAGE_FIELD = re.compile(r"^chains\.(?P<chain>.+?)\[(?P<index>\d+)\]\.(?P<field>\w+)(?P<rest>.*)$")


def _attributed(problems: list[Problem], inherited: set[tuple[str, int, str]],
                origins: list[tuple[str, str]]) -> list[Problem]:
    """Each problem pointed at what the user wrote, each once (module docstring): a stage field
    inherited from stage_defaults becomes `stage_defaults.<field>`; a field that `--set` (or the
    `tiny:` block) wrote, or one under it, becomes that `--set` argument (or `tiny.<key>`), the
    field path leading the message when it lies below the key."""
    out: list[Problem] = []
    seen: set[tuple[str, str]] = set()
    for problem in problems:
        path, message, line = problem.path, problem.message, problem.line
        match = _STAGE_FIELD.match(path)
        if match and (match["chain"], int(match["index"]), match["field"]) in inherited:
            path, line = f"stage_defaults.{match['field']}{match['rest']}", None
        parts = _path_parts(path)
        for key, label in reversed(origins):  # the last value written at or above the path is the one read
            key_parts = _path_parts(key)
            if key_parts and parts[:len(key_parts)] == key_parts:
                message = message if len(parts) == len(key_parts) else f"{path}: {message}"
                path, line = label, None
                break
        if (path, message) not in seen:
            seen.add((path, message))
            out.append(Problem(path, message, line, problem.file))
    return out


def _path_parts(path: str) -> list[str]:
    """"chains.a[0].steps" -> ["chains", "a", "0", "steps"], as `--set` keys name a field."""
    return [part for part in re.sub(r"\[(\d+)\]", r".\1", path).split(".") if part != ""] if path else []


def _expand_shorthands(raw: dict[str, Any]) -> dict[str, Any]:
    if isinstance(raw.get("model"), str):
        raw["model"] = {"name": raw["model"]}
    if isinstance(raw.get("eval_tasks"), str):
        raw["eval_tasks"] = [raw["eval_tasks"]]
    if isinstance(raw.get("task_files"), str):
        raw["task_files"] = [raw["task_files"]]
    return raw


def _apply_stage_defaults(chains: Any, defaults: Mapping[str, Any], problems: list[Problem],
                          inherited: set[tuple[str, int, str]]) -> Any:
    """Each stage inherits `stage_defaults` and overrides what it names (nanochat-style);
    `inherited` gets (chain, stage index, field) of every value a stage took from them."""
    names = [f.name for f in dataclasses.fields(StageSpec)]
    unknown = set(defaults) - set(names)
    for key in sorted(unknown):
        problems.append(Problem(f"stage_defaults.{key}", unknown_field_message(key, names)))
    defaults = {k: v for k, v in defaults.items() if k not in unknown}
    if not isinstance(chains, Mapping):
        return chains
    merged: dict[str, Any] = {}
    for name, stages in chains.items():
        if isinstance(stages, list):
            merged[name] = [{**defaults, **s} if isinstance(s, Mapping) else s for s in stages]
            inherited.update((str(name), i, str(key)) for i, s in enumerate(stages) if isinstance(s, Mapping)
                             for key in defaults if key not in s)
        else:
            merged[name] = stages
    return merged


def _flatten_grid(grid: Any, problems: list[Problem]) -> Any:
    """Accept both `stage1.learning_rate: [...]` and `stage1: {learning_rate: [...]}`."""
    if grid is None:
        return {}
    if not isinstance(grid, Mapping):
        return grid
    flat: dict[str, Any] = {}
    for key, value in grid.items():
        if isinstance(value, Mapping):
            for sub, values in value.items():
                flat[f"{key}.{sub}"] = values
        else:
            flat[str(key)] = value
    for key, values in flat.items():
        if key.endswith((".learning_rate", ".replay_fraction")) and isinstance(values, list):
            flat[key] = [coerce_float(v) for v in values]
    return flat


def _flatten_search(search: Any, problems: list[Problem]) -> Any:
    """Accept `stage2.learning_rate: {...}` and `stage2: {learning_rate: {...}}` (as the grid) in
    search.space, and YAML 1.1's string `1e-5` as a number in bounds and float choices."""
    if not isinstance(search, Mapping) or not isinstance(search.get("space"), Mapping):
        return search
    flat: dict[str, Any] = {}
    for key, value in search["space"].items():
        key = str(key)
        if "." not in key and isinstance(value, Mapping) and not set(map(str, value)) & set(SEARCH_DISTRIBUTIONS):
            for sub, dist in value.items():
                flat[f"{key}.{sub}"] = dist
        else:
            flat[key] = value
    for key in list(flat):
        dist = flat[key]
        if isinstance(dist, list):
            problems.append(Problem(f"search.space.{key}", f"must be one distribution such as {{choice: {dist}}} "
                                                           "(a plain list is a grid axis)"))
            dist = flat[key] = {"choice": dist}  # checked as that choice, so no follow-up problems
        if isinstance(dist, Mapping):
            floats = key.endswith(tuple(f".{f}" for f in FLOAT_AXIS_FIELDS))
            flat[key] = {kind: [coerce_float(v) for v in values]
                         if isinstance(values, list) and (kind in ("loguniform", "uniform") or kind == "choice" and floats)
                         else values for kind, values in dist.items()}
    return {**search, "space": flat}


# ---------------------------------------------------------------- the `tiny:` block


TINY_VARIANT_KEY = "tiny"
"""Top-level key of a study file's variant for the built-in tiny model (module docstring)."""
_NO_VARIANT = object()


def _model_name(raw: Any) -> Any:
    """The model name a raw study (after --set) names; ModelSpec's default when it names none."""
    model = raw.get("model") if isinstance(raw, Mapping) else None
    if isinstance(model, Mapping):
        return model.get("name", ModelSpec.name)
    return ModelSpec.name if model is None else model


def _apply_tiny_variant(raw: Any, block: Any, overrides: list[str] | tuple[str, ...] | Any,
                        problems: list[Problem], origins: list[tuple[str, str]]) -> Any:
    """Check the `tiny:` block; when the model (after --set) is 'tiny', apply it and re-apply the
    user's --set values over it (file < tiny block < --set). `origins` gets (key, `tiny.<key>`)
    of every value the block wrote."""
    items = _tiny_variant_items(block, problems)
    if not isinstance(raw, dict):
        return raw
    raw = _expand_shorthands(raw)  # `--set model=tiny` left a string; the block may set model.max_length
    active = _model_name(raw) == "tiny"
    target = raw if active else copy.deepcopy(raw)  # inactive: a dry run, to check paths exist
    chains = raw.get("chains")
    for key, value in items:
        parts = key.split(".")
        if parts[0] == "chains" and len(parts) > 1 and not (isinstance(chains, Mapping) and parts[1] in chains):
            known = ", ".join(chains) if isinstance(chains, Mapping) else "none"
            problems.append(Problem(f"{TINY_VARIANT_KEY}.{key}", f"no chain '{parts[1]}' in this file (chains: {known})"))
            continue
        error = _set_path(target, parts, copy.deepcopy(value))
        if error:
            problems.append(Problem(f"{TINY_VARIANT_KEY}.{key}", error))
        elif active:
            origins.append((key, f"{TINY_VARIANT_KEY}.{key}"))
    if not active or not overrides:
        return raw
    again = []
    for item in overrides:
        key, sep, text = str(item).partition("=")
        if sep and key.strip() == "model":
            try:
                value = yaml.safe_load(text) if text.strip() else None
            except yaml.YAMLError:
                value = None
            if isinstance(value, str):
                item = f"model.name={text}"  # the shorthand names the model; keep the block's model.*
        again.append(item)
    return _apply_user_overrides(raw, again, [])  # their problems were reported on the first application


def _apply_user_overrides(raw: Any, overrides: Any, problems: list[Problem]) -> Any:
    """`--set` values in order, shorthands expanded after each, so `--set model=tiny --set
    model.max_length=128` works as it reads."""
    for item in overrides:
        raw = apply_overrides(raw, [item], problems)
        if isinstance(raw, dict):
            raw = _expand_shorthands(raw)
    return raw


def _tiny_variant_items(block: Any, problems: list[Problem]) -> list[tuple[str, Any]]:
    """The valid (dotted key, value) pairs of a `tiny:` block; a Problem for each invalid one."""
    where = TINY_VARIANT_KEY
    if block is None:
        return []
    if not isinstance(block, Mapping):
        problems.append(Problem(where, "must be a mapping of dotted field paths to values, as --set takes them "
                                       "(e.g. {stage_defaults.steps: 150, model.max_length: 384})"))
        return []
    items = []
    for key, value in block.items():
        path = f"{where}.{key}"
        if not isinstance(key, str) or not key or any(not part for part in key.split(".")):
            problems.append(Problem(path, f"keys are dotted field paths such as stage_defaults.steps (got {key!r})"))
            continue
        if key in ("model", "model.name") or key.split(".")[0] == TINY_VARIANT_KEY:
            problems.append(Problem(path, "the tiny block applies when the model is 'tiny' and cannot change the "
                                          "model itself or nest another tiny block (set model.max_length, model.dtype, ...)"))
            continue
        before = len(problems)
        _variant_value_problems(key, value, path, problems)
        if len(problems) == before:
            items.append((key, value))
    return items


def _variant_value_problems(key: str, value: Any, path: str, problems: list[Problem]) -> None:
    """Whether `key` is a field path of a study file and `value` fits its type (as `--set` would
    write it into the raw file): unknown fields, malformed grid axes, non-index list steps."""
    parts = key.split(".")
    if parts[0] == "stage_defaults":
        tp: Any = StageSpec if len(parts) > 1 else None
        parts, done = parts[1:], ["stage_defaults"]
        if tp is None:  # a whole stage_defaults mapping: its keys are checked when it applies
            return
    elif parts[0] == "grid" and len(parts) > 1:
        axis = ".".join(parts[1:])
        match = GRID_KEY.match(axis)
        if not match or match.group(2) not in GRID_FIELDS:
            problems.append(Problem(path, f"grid keys look like 'stage<k>.<field>' with field one of {', '.join(GRID_FIELDS)}"))
        elif not isinstance(value, list) or not value:
            problems.append(Problem(path, f"a grid axis is a non-empty list of values (got {value!r})"))
        else:
            problems.extend(Problem(f"{path}[{i}]", f"must be {axis_value_kind(match.group(2))} (got {v!r})")
                            for i, v in enumerate(value) if not axis_value_ok(match.group(2), coerce_float(v)))
        return
    else:
        tp, done = StudySpec, []
    for part in parts:
        args = typing.get_args(tp)
        if typing.get_origin(tp) in (typing.Union, types.UnionType):
            inner = [a for a in args if a is not type(None)]
            tp, args = inner[0], typing.get_args(inner[0])
        origin = typing.get_origin(tp)
        if dataclasses.is_dataclass(tp):
            names = [f.name for f in dataclasses.fields(tp)]
            if part not in names:
                problems.append(Problem(path, unknown_field_message(part, names)
                                              + (f" (in {'.'.join(done)})" if done else "")))
                return
            tp = typing.get_type_hints(tp)[part]
        elif origin is tuple:
            if not part.lstrip("-").isdigit():
                problems.append(Problem(path, f"'{'.'.join(done)}' is a list: expected an item number, got '{part}'"))
                return
            tp = args[0] if args else Any
        elif origin is not None and getattr(origin, "__name__", "") == "Mapping":
            tp = args[1] if args else Any
        elif tp is Any:
            return
        else:
            problems.append(Problem(path, f"'{'.'.join(done)}' is a value, not a mapping or list"))
            return
        done.append(part)
    if done and done[0] == "search":
        return  # search.space's distributions are checked when the block applies
    coerce(coerce_float(value) if tp is float else value, tp, path, problems)


# ---------------------------------------------------------------- `--set` overrides

# Mappings whose keys themselves contain dots (grid axes): the rest of the path is one key.
_DOTTED_KEY_PARENTS = ("grid",)


def apply_overrides(raw: Any, overrides: Iterable[str], problems: list[Problem]) -> Any:
    """A copy of the raw study data with each `key=value` set in order; a Problem at
    "--set <item>" for each one that is malformed or names a path that cannot be set."""
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
    """Set `value` at the dotted path `parts` of `node` in place; why not, or None."""
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
