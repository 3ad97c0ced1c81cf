"""Multiple-choice tasks declared in YAML: adding a task with groups needs no code.

    from tasks.declarative import register_task_file
    register_task_file("tasks/sciq_demo.yaml")   # then load_examples("sciq_demo", "eval", ...)

A file names its source (Hub id, config and splits; the mirror files and their format), which
row fields hold the question, the options, the answer and the groups, the template, metrics,
splits and a version. The file is validated as a whole before anything is loaded: every
problem is reported at once, as ``<file>:<line>: <field path>: <message>``, in a single
TaskFileError. YAML is read with safe-load semantics (plain data, no Python objects).

Schema (every key not marked required is optional):

    name: sciq_demo                   # required; letters, digits, _ . - (it starts example ids)
    description: ...
    version: "1"                      # required; bump it whenever the examples change (feeds stage keys)
    kind: choice                      # the only kind a file can declare
    source:                           # required
      hub:                            # required: the normal source (datasets.load_dataset)
        path: allenai/sciq            # required
        config: null
        data_files: null
        splits: {train: train, validation: validation, eval: test}   # required: our split -> the source's split
      mirror:                         # required: the release files under a data dir
        files: {train: sciq/train.jsonl, validation: sciq/valid.jsonl, eval: sciq/test.jsonl}   # required; globs allowed
        format: jsonl                 # jsonl | json | csv; default: from each file's extension
        columns: [question, a, b]     # csv without a header row: the column names
    fields:                           # required: where each part of an item is in a row
      id: id                          # default: the row's position in its split
      question: question              # required; dotted paths reach into nested rows
      context: support                # prompt: "<context> Question: <question> A. ..." (empty: "Question: ...")
      choices: [distractor1, correct_answer]   # required: a list of fields, or one list field
      answer: correct_answer          # required
      answer_format: text             # required: index (0-based) | letter (A-E) | text
      groups: [category]              # fields whose values (string or list) are the groups
      facets: {difficulty: level}     # secondary groupings: name -> field
    template:
      instruction: null               # null: the paper's instruction for the option count
      prompt: null                    # null: the default layout; else uses {question}, {options}, {context}
      answer_prefix: " The best answer is"
      shuffle_options: false          # true: a fixed option order derived from each example id
    metrics: [{name: accuracy, direction: higher}]   # only accuracy is computed
    splits: [train, validation, eval] # default: the splits source.hub.splits names

Rows of glob-matched mirror files carry their file's stem as ``_source_file``, so a group
field can be ``_source_file`` when a release splits its data by group into files.

A trainable task's train and eval must read different data: the same source split, or the
same mirror file, for both is refused (leave train out to declare an evaluation-only task); a
declared validation split must read data of its own too.

Validation split (where `start_from: best_seed` chooses the best first-stage model). A file
that maps ``validation`` in its sources uses that split. A trainable task that does not gets
one held out of its train split: the items whose normalized prompt (case-folded, whitespace
collapsed) hashes into the first HOLDOUT_FRACTION of [0, 1) (holdout.py), so identical items
stay together and the choice never depends on a seed or on row order. Those items leave the
training pool; the rule is part of the task's keyed version, so stages trained on the whole
train split are not reused.
The evals table names its own groupings "all" (the whole task) and "group" (the primary
groups), so a facet cannot be named either, and a row cannot have the group "all".
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import fnmatch
import hashlib
import json
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from . import registry
from .definition import ACCURACY, SPLITS, TaskDefinition
from .example import Example
from .holdout import normalized_text, side_of
from .source import HubSource, MirrorSource, Row
from .templates import (
    LETTERS,
    MULTIPLE_CHOICE_ANSWER_PREFIX,
    multiple_choice_instruction,
    multiple_choice_prompt,
    render_prompt,
)

ANSWER_FORMATS = ("index", "letter", "text")
MIRROR_FORMATS = ("jsonl", "json", "csv")
_EXTENSION_FORMATS = {".jsonl": "jsonl", ".json": "json", ".csv": "csv"}
_SPLITS = SPLITS
_SPLIT_NAMES = ", ".join(SPLITS)
# Share of a trainable task's train split held out as its validation split when the file
# declares none (module docstring). 10% of a few thousand items covers selection_size 200.
HOLDOUT_FRACTION = 0.10
HOLDOUT_VALIDATION = (f"{HOLDOUT_FRACTION:.0%} of the train split, held out by a hash of the normalized prompt "
                      "(the file declares no validation split)")
_MIN_OPTIONS, _MAX_OPTIONS = 2, len(LETTERS)  # what the multiple-choice template can letter
_PROMPT_PLACEHOLDERS = ("question", "options", "context")
_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_MAX_ROW_PROBLEMS = 20  # a broken field mapping fails every row: the first few say enough
# Names the evals table gives its own groupings: grouping "all" (group "all") is the whole task,
# grouping "group" the primary groups. A facet or a group by these names would be counted as
# them (in worst-group forgetting too), so files and rows cannot use them.
_RESERVED_FACET_NAMES = {"all": "the whole task", "group": "the primary groups (fields.groups)"}
_RESERVED_GROUP = "all"

# Allowed keys per section; True marks a required one.
_TOP_KEYS = {"name": True, "description": False, "version": True, "kind": False, "source": True,
             "fields": True, "template": False, "metrics": False, "splits": False}
_SOURCE_KEYS = {"hub": True, "mirror": True}
_HUB_KEYS = {"path": True, "config": False, "data_files": False, "splits": True}
_MIRROR_KEYS = {"files": True, "format": False, "columns": False}
_FIELD_KEYS = {"id": False, "question": True, "context": False, "choices": True, "answer": True,
               "answer_format": True, "groups": False, "facets": False}
_TEMPLATE_KEYS = {"instruction": False, "prompt": False, "answer_prefix": False, "shuffle_options": False}
_METRIC_KEYS = {"name": True, "direction": False}

# --- errors ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a task file, where it is, and what would be right."""

    file: str
    line: int | None  # 1-based line in the YAML file; None when the file itself is the problem
    path: str  # field path, "fields.answer_format"; "" for the file as a whole
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class TaskFileError(ValueError):
    """A task file that cannot be used; ``problems`` lists every reason, one per line of str()."""

    def __init__(self, problems: Sequence[Problem]):
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


# --- reading YAML with line numbers ---------------------------------------------------------

KeyPath = tuple[Any, ...]  # a field path: keys and list indexes, ("metrics", 0, "name")


def _format_path(path: KeyPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _parse_yaml(text: str, file: str) -> tuple[Any, dict[KeyPath, int], list[Problem]]:
    """The document as plain data, the line of every key and list item, and duplicate keys.

    The node tree (yaml.compose) keeps positions that safe_load throws away; the same loader
    then constructs plain data from that tree, so both come from one parse.
    """
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = None if node is None else loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = None if mark is None else mark.line + 1
        problem = getattr(exc, "problem", None) or str(exc)
        raise TaskFileError([Problem(file, line, "", f"not valid YAML: {problem}")]) from exc
    finally:
        loader.dispose()
    lines: dict[KeyPath, int] = {}
    problems: list[Problem] = []
    if node is not None:
        _record_lines(node, (), lines, problems, file)
    return data, lines, problems


def _record_lines(node: yaml.Node, path: KeyPath, lines: dict[KeyPath, int], problems: list[Problem], file: str) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = key_node.value
            if not isinstance(key, str) or key == "<<":
                continue  # complex or merge keys: checked on the constructed data
            line = key_node.start_mark.line + 1
            if key in seen:  # safe_load would silently keep the last one
                problems.append(Problem(file, line, _format_path(path + (key,)), "duplicate key"))
            seen.add(key)
            lines[path + (key,)] = line  # a key's line, so a bad value points at its key
            _record_lines(value_node, path + (key,), lines, problems, file)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[path + (index,)] = item.start_mark.line + 1
            _record_lines(item, path + (index,), lines, problems, file)


# --- the validated file ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Fields:
    id: str | None
    question: str
    context: str | None
    choices: tuple[str, ...]
    choices_in_one_field: bool  # one field holds the list of options (else one field per option)
    answer: str
    answer_format: str
    groups: tuple[str, ...]
    facets: tuple[tuple[str, str], ...]  # (facet name, field)


@dataclass(frozen=True)
class _Template:
    instruction: str | None
    prompt: str | None
    answer_prefix: str
    shuffle_options: bool


class _Checker:
    """Collects problems with their lines while the file's sections are read."""

    def __init__(self, file: str, lines: dict[KeyPath, int]):
        self.file = file
        self.lines = lines
        self.problems: list[Problem] = []

    def line(self, path: KeyPath) -> int | None:
        # A missing key has no line of its own: point at the nearest enclosing one.
        for end in range(len(path), -1, -1):
            if path[:end] in self.lines:
                return self.lines[path[:end]]
        return None

    def add(self, path: KeyPath, message: str) -> None:
        self.problems.append(Problem(self.file, self.line(path), _format_path(path), message))

    def mapping(self, value: Any, path: KeyPath, keys: Mapping[str, bool]) -> dict[str, Any] | None:
        """``value`` as a mapping with only known keys and every required one; None if not a mapping."""
        if not isinstance(value, dict):
            self.add(path, f"must be a mapping with keys {', '.join(keys)} (got {_describe(value)})")
            return None
        for key in value:
            if not isinstance(key, str):
                self.add(path, f"key {key!r} must be a string (YAML reads yes/no/on/off and numbers otherwise: quote it)")
            elif key not in keys:
                close = difflib.get_close_matches(key, list(keys), n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                self.add(path + (key,), f"unknown key ({hint}allowed here: {', '.join(keys)})")
        for key, required in keys.items():
            if required and key not in value:
                self.add(path, f"missing required key {key!r}")
        return value

    def text(self, value: Any, path: KeyPath, *, optional: bool = False) -> str | None:
        if value is None and optional:
            return None
        if not isinstance(value, str) or not value.strip():
            self.add(path, f"must be a non-empty string (got {_describe(value)})")
            return None
        return value

    def choice(self, value: Any, path: KeyPath, allowed: Sequence[str]) -> str | None:
        if value not in allowed:
            close = difflib.get_close_matches(str(value), list(allowed), n=1) if isinstance(value, str) else []
            hint = f"; did you mean {close[0]!r}?" if close else ""
            self.add(path, f"must be one of {', '.join(allowed)} (got {value!r}){hint}")
            return None
        return value

    def field_path(self, value: Any, path: KeyPath) -> str | None:
        """A row field: a key, or a dotted path into nested rows ("question.stem", "choices.text")."""
        text = self.text(value, path)
        if text is not None and any(not part for part in text.split(".")):
            self.add(path, f"field path {text!r} has an empty part")
            return None
        return text

    def field_paths(self, value: Any, path: KeyPath) -> tuple[str, ...] | None:
        """One field path, or a non-empty list of them."""
        if isinstance(value, list):
            if not value:
                self.add(path, "must name at least one field")
                return None
            parts = [self.field_path(item, path + (i,)) for i, item in enumerate(value)]
            return None if None in parts else tuple(parts)
        single = self.field_path(value, path)
        return None if single is None else (single,)


def _describe(value: Any) -> str:
    if value is None:
        return "nothing"
    kind = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(type(value))
    return f"{kind or type(value).__name__} {value!r}" if not isinstance(value, (dict, list)) else kind


@dataclass(frozen=True)
class _Declared:
    """A task file after validation: everything examples_from_rows needs."""

    file: str  # as given, for messages
    name: str
    fields: _Fields
    template: _Template
    hub: HubSource
    mirror: MirrorSource
    field_lines: Mapping[str, int | None]  # "fields.answer" -> its line, for row problems
    # The validation split is held out of the train split's rows (the file declares none).
    holdout: bool = False


def _check_name(check: _Checker, doc: dict) -> str | None:
    name = check.text(doc.get("name"), ("name",))
    if name is not None and not _NAME_PATTERN.fullmatch(name):
        check.add(("name",), f"must be letters, digits, '_', '.' or '-', starting with a letter or digit (got {name!r})")
        return None
    return name


def _check_version(check: _Checker, value: Any) -> str | None:
    # An int is fine (version: 2); a float is not: 1.10 would silently become "1.1".
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    check.add(("version",), f"must be a string such as \"1\" (got {_describe(value)}; quote it)")
    return None


def _check_splits(check: _Checker, value: Any, hub_splits: Mapping[str, str] | None) -> tuple[str, ...] | None:
    if value is None:  # default: the splits the Hub source maps
        if not hub_splits:
            return None  # already reported
        if "eval" not in hub_splits:
            check.add(("source", "hub", "splits"), "has no entry for the 'eval' split (every task is evaluated)")
            return None
        return tuple(s for s in _SPLITS if s in hub_splits)
    if not isinstance(value, list) or not value:
        check.add(("splits",), f"must be a list of {_SPLIT_NAMES} (got {_describe(value)})")
        return None
    names = [check.choice(item, ("splits", i), _SPLITS) for i, item in enumerate(value)]
    if None in names:
        return None
    if len(set(names)) != len(names):
        check.add(("splits",), f"lists a split twice ({names})")
        return None
    if "eval" not in names:
        check.add(("splits",), "must include eval (a task is always evaluated; train is optional)")
        return None
    return tuple(s for s in _SPLITS if s in names)


def _split_map(check: _Checker, value: Any, path: KeyPath, *, relative_paths: bool) -> dict[str, str] | None:
    """``{train: ..., eval: ...}``: our split -> a source split name or a mirror file."""
    if not isinstance(value, dict) or not value:
        check.add(path, f"must map our splits ({_SPLIT_NAMES}) to {'files' if relative_paths else 'source splits'} "
                        f"(got {_describe(value)})")
        return None
    out = {}
    for split, target in value.items():
        if split not in _SPLITS:
            check.add(path + (split,), f"keys are our split names, {_SPLIT_NAMES} (got {split!r}); "
                                       "the source's own names are the values")
            continue
        target = check.text(target, path + (split,))
        if target is None:
            continue
        if relative_paths and (Path(target).is_absolute() or ".." in Path(target).parts):
            # Mirror files live under the data dir; a path out of it would read anything.
            check.add(path + (split,), f"must be a relative path under the data dir, without '..' (got {target!r})")
            continue
        out[split] = target
    return out


def _check_hub(check: _Checker, value: Any) -> HubSource | None:
    path = ("source", "hub")
    hub = check.mapping(value, path, _HUB_KEYS)
    if hub is None:
        return None
    hub_path = check.text(hub.get("path"), path + ("path",))
    config = check.text(hub.get("config"), path + ("config",), optional=True)
    data_files = check.text(hub.get("data_files"), path + ("data_files",), optional=True)
    splits = _split_map(check, hub.get("splits"), path + ("splits",), relative_paths=False) if "splits" in hub else None
    if hub_path is None or splits is None:
        return None
    return HubSource(path=hub_path, splits=splits, config=config, data_files=data_files)


def _check_mirror(check: _Checker, value: Any, file: str) -> MirrorSource | None:
    path = ("source", "mirror")
    mirror = check.mapping(value, path, _MIRROR_KEYS)
    if mirror is None:
        return None
    files = _split_map(check, mirror.get("files"), path + ("files",), relative_paths=True) if "files" in mirror else None
    fmt = None
    if mirror.get("format") is not None:
        fmt = check.choice(mirror["format"], path + ("format",), MIRROR_FORMATS)
    elif files:
        for split, name in files.items():
            if Path(name).suffix.lower() not in _EXTENSION_FORMATS:
                check.add(path + ("files", split),
                          f"cannot tell the format from {name!r}: set source.mirror.format ({', '.join(MIRROR_FORMATS)})")
    columns = _check_columns(check, mirror.get("columns"), path + ("columns",), fmt, files)
    if files is None:
        return None
    return DeclaredMirror(files=files, reader=RowReader(fmt, columns), task_file=file,
                          file_lines={s: check.line(path + ("files", s)) for s in files})


def _check_columns(check: _Checker, value: Any, path: KeyPath, fmt: str | None,
                   files: Mapping[str, str] | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(c, str) and c for c in value):
        check.add(path, f"must be a list of column names (got {_describe(value)})")
        return None
    if len(set(value)) != len(value):
        check.add(path, "names a column twice")
        return None
    is_csv = fmt == "csv" or (fmt is None and files and all(Path(f).suffix.lower() == ".csv" for f in files.values()))
    if not is_csv:
        check.add(path, "only csv files take columns (json and jsonl rows name their fields)")
        return None
    return tuple(value)


def _check_fields(check: _Checker, value: Any) -> _Fields | None:
    path = ("fields",)
    raw = check.mapping(value, path, _FIELD_KEYS)
    if raw is None:
        return None
    question = check.field_path(raw.get("question"), path + ("question",)) if "question" in raw else None
    answer = check.field_path(raw.get("answer"), path + ("answer",)) if "answer" in raw else None
    choices = check.field_paths(raw.get("choices"), path + ("choices",)) if "choices" in raw else None
    answer_format = (check.choice(raw.get("answer_format"), path + ("answer_format",), ANSWER_FORMATS)
                     if "answer_format" in raw else None)
    optional = {key: check.field_path(raw[key], path + (key,)) if raw.get(key) is not None else None
                for key in ("id", "context")}
    groups = check.field_paths(raw["groups"], path + ("groups",)) if raw.get("groups") is not None else ()
    facets = _check_facets(check, raw.get("facets"), path + ("facets",))
    if choices is not None and isinstance(raw["choices"], list) and not _MIN_OPTIONS <= len(choices) <= _MAX_OPTIONS:
        check.add(path + ("choices",), f"must list {_MIN_OPTIONS} to {_MAX_OPTIONS} option fields (got {len(choices)})")
        choices = None
    needed = (question, answer, choices, answer_format, groups, facets)
    if any(part is None for part in needed) or any(
            raw.get(key) is not None and optional[key] is None for key in optional):
        return None
    return _Fields(id=optional["id"], question=question, context=optional["context"], choices=choices,
                   choices_in_one_field=not isinstance(raw["choices"], list), answer=answer,
                   answer_format=answer_format, groups=groups, facets=facets)


def _check_facets(check: _Checker, value: Any, path: KeyPath) -> tuple[tuple[str, str], ...] | None:
    if value is None:
        return ()
    if not isinstance(value, dict):
        check.add(path, f"must map facet names to fields, e.g. {{difficulty: level}} (got {_describe(value)})")
        return None
    out = []
    for name, source_field in value.items():
        if not isinstance(name, str) or not name.strip():
            check.add(path, f"facet name {name!r} must be a non-empty string")
            continue
        if name in _RESERVED_FACET_NAMES:
            check.add(path + (name,), f"facet name {name!r} is reserved: the evals table's grouping {name!r} is "
                                      f"{_RESERVED_FACET_NAMES[name]}; choose another name")
            continue
        checked = check.field_path(source_field, path + (name,))
        if checked is not None:
            out.append((name, checked))
    return tuple(out) if len(out) == len(value) else None


def _check_template(check: _Checker, value: Any, has_context: bool) -> _Template | None:
    path = ("template",)
    if value is None:
        return _Template(None, None, MULTIPLE_CHOICE_ANSWER_PREFIX, False)
    raw = check.mapping(value, path, _TEMPLATE_KEYS)
    if raw is None:
        return None
    instruction = check.text(raw.get("instruction"), path + ("instruction",), optional=True)
    prompt = _check_prompt(check, raw.get("prompt"), path + ("prompt",), has_context)
    prefix = raw.get("answer_prefix", MULTIPLE_CHOICE_ANSWER_PREFIX)
    if not isinstance(prefix, str) or not prefix.strip():
        check.add(path + ("answer_prefix",),
                  f"must be a non-empty string such as ' The best answer is' (got {_describe(prefix)})")
        prefix = None
    shuffle = raw.get("shuffle_options", False)
    if not isinstance(shuffle, bool):
        check.add(path + ("shuffle_options",), f"must be true or false (got {_describe(shuffle)})")
        shuffle = None
    ok = (raw.get("instruction") is None or instruction is not None) and (raw.get("prompt") is None or prompt is not None)
    if not ok or prefix is None or shuffle is None:
        return None
    return _Template(instruction, prompt, prefix, shuffle)


def _check_prompt(check: _Checker, value: Any, path: KeyPath, has_context: bool) -> str | None:
    prompt = check.text(value, path, optional=True)
    if prompt is None:
        return None
    try:
        parts = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(prompt) if name is not None]
    except ValueError as exc:  # an unmatched brace
        check.add(path, f"is not a valid template ({exc}); write a literal brace as {{{{ or }}}}")
        return None
    allowed = _PROMPT_PLACEHOLDERS if has_context else _PROMPT_PLACEHOLDERS[:2]
    bad = [name for name, spec, conv in parts if name not in allowed or spec or conv]
    if bad:
        extra = "" if has_context else " ({context} needs fields.context)"
        check.add(path, f"placeholders must be plain {', '.join('{' + a + '}' for a in allowed)}{extra} (got {bad})")
        return None
    missing = [name for name in ("question", "options") if name not in {part[0] for part in parts}]
    if missing:
        check.add(path, f"must contain {', '.join('{' + m + '}' for m in missing)}")
        return None
    return prompt


def _check_metrics(check: _Checker, value: Any) -> None:
    """Only accuracy is computed for declarative tasks; anything else is refused here, not
    silently dropped at evaluation time."""
    if value is None:
        return
    if not isinstance(value, list) or not value:
        check.add(("metrics",), f"must be a list such as [{{name: accuracy, direction: higher}}] (got {_describe(value)})")
        return
    for i, item in enumerate(value):
        path = ("metrics", i)
        metric = {"name": item} if isinstance(item, str) else check.mapping(item, path, _METRIC_KEYS)
        if metric is None:
            continue
        name = metric.get("name")
        if name != ACCURACY.name:
            check.add(path + ("name",) if isinstance(item, dict) else path,
                      f"only accuracy is computed for declarative tasks (got {name!r})")
        direction = metric.get("direction", ACCURACY.direction)
        if direction != ACCURACY.direction:
            check.add(path + ("direction",), f"accuracy is better when higher: direction must be higher (got {direction!r})")


def _check_split_coverage(check: _Checker, splits: tuple[str, ...], source: Any) -> None:
    """Every declared split has a source in both places, and neither names an undeclared one.

    Reads the raw mappings, so an entry already reported as malformed is not also "missing".
    """
    for where, key in (("hub", "splits"), ("mirror", "files")):
        section = source.get(where) if isinstance(source, dict) else None
        mapping = section.get(key) if isinstance(section, dict) else None
        if not isinstance(mapping, dict):
            continue
        path = ("source", where, key)
        for split in splits:
            if split not in mapping:
                check.add(path, f"has no entry for the {split!r} split (the task's splits: {', '.join(splits)})")
        for split in mapping:
            if split in _SPLITS and split not in splits:
                check.add(path + (split,),
                          f"the task's splits are {', '.join(splits)}: add {split!r} to splits or remove it here")


def _check_distinct_sources(check: _Checker, splits: tuple[str, ...], hub: HubSource | None,
                            mirror: MirrorSource | None, *, explicit_splits: bool) -> None:
    """A trainable task's train and eval read different data: the same source split, or the
    same mirror file, for both would train on the eval set and report it as held out."""
    if "train" not in splits:
        return
    drop = ("drop train from splits, source.hub.splits and source.mirror.files" if explicit_splits
            else "drop train from source.hub.splits and source.mirror.files")
    advice = f"the task needs distinct train and eval sources; or {drop} to make it evaluation-only"
    if hub is not None and "train" in hub.splits and hub.splits.get("train") == hub.splits.get("eval"):
        check.add(("source", "hub", "splits", "train"),
                  f"train and eval both read the source's {hub.splits['train']!r} split, so the task would "
                  f"train on its eval set: {advice}")
    files = {} if mirror is None else mirror.files
    if "train" in files and "eval" in files and _same_files(files["train"], files["eval"]):
        same = "the same file" if not _is_glob(files["train"]) and not _is_glob(files["eval"]) else "the same files"
        check.add(("source", "mirror", "files", "train"),
                  f"train ({files['train']!r}) and eval ({files['eval']!r}) read {same}, so the task would "
                  f"train on its eval set: {advice}")
    _check_distinct_validation(check, splits, hub, files)


def _check_distinct_validation(check: _Checker, splits: tuple[str, ...], hub: HubSource | None,
                               files: Mapping[str, str]) -> None:
    """A declared validation split reads data of its own: choosing the best model on its
    training data, or on the eval set, would bias the choice and the reported results."""
    if "validation" not in splits:
        return
    why = {"train": "score models on data they trained on", "eval": "choose the model on the eval set"}
    advice = f"map validation to data of its own, or leave it out to hold {HOLDOUT_FRACTION:.0%} of train out"
    for other in ("train", "eval"):
        if other not in splits:
            continue
        if hub is not None and hub.splits.get("validation") == hub.splits.get(other):
            check.add(("source", "hub", "splits", "validation"),
                      f"validation and {other} both read the source's {hub.splits[other]!r} split, so best_seed "
                      f"would {why[other]}: {advice}")
        if "validation" in files and other in files and _same_files(files["validation"], files[other]):
            check.add(("source", "mirror", "files", "validation"),
                      f"validation ({files['validation']!r}) and {other} ({files[other]!r}) read the same data, "
                      f"so best_seed would {why[other]}: {advice}")


def _is_glob(pattern: str) -> bool:
    return any(ch in pattern for ch in "*?[")  # as MirrorSource.paths tells a glob


def _same_files(a: str, b: str) -> bool:
    """Whether two mirror entries name the same file: equal paths or globs, or a glob that
    matches the other's plain path. (Two different globs that overlap are not detected.)"""
    if PurePosixPath(a) == PurePosixPath(b):
        return True
    for pattern, other in ((a, b), (b, a)):
        if _is_glob(pattern) and not _is_glob(other) and _glob_matches(PurePosixPath(pattern).parts,
                                                                        PurePosixPath(other).parts):
            return True
    return False


def _glob_matches(pattern: tuple[str, ...], parts: tuple[str, ...]) -> bool:
    # Path.glob semantics: each part matched on its own, "**" any number of directories.
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(_glob_matches(pattern[1:], parts[i:]) for i in range(len(parts) + 1))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], pattern[0]) and _glob_matches(pattern[1:], parts[1:])


def _validate(doc: Any, check: _Checker, file: str, origin: str) -> TaskDefinition | None:
    top = check.mapping(doc, (), _TOP_KEYS)
    if top is None:
        return None
    name = _check_name(check, top) if "name" in top else None
    version = _check_version(check, top.get("version")) if "version" in top else None
    description = check.text(top.get("description"), ("description",), optional=True) or ""
    if top.get("kind", "choice") != "choice":
        check.add(("kind",), f"only multiple-choice ('choice') tasks can be declared in YAML (got {top['kind']!r})")
    source = check.mapping(top["source"], ("source",), _SOURCE_KEYS) if "source" in top else None
    hub = _check_hub(check, source["hub"]) if source and "hub" in source else None
    mirror = _check_mirror(check, source["mirror"], file) if source and "mirror" in source else None
    fields = _check_fields(check, top["fields"]) if "fields" in top else None
    # From the raw mapping: a fields section with other problems still declares its context.
    has_context = isinstance(top.get("fields"), dict) and top["fields"].get("context") is not None
    template = _check_template(check, top.get("template"), has_context)
    _check_metrics(check, top.get("metrics"))
    splits = _check_splits(check, top.get("splits"), None if hub is None else hub.splits)
    if splits is not None:
        _check_split_coverage(check, splits, source)
        _check_distinct_sources(check, splits, hub, mirror, explicit_splits=top.get("splits") is not None)
    if check.problems or None in (name, version, hub, mirror, fields, template, splits):
        return None
    holdout = "train" in splits and "validation" not in splits
    if holdout:
        hub, mirror, splits = _with_holdout(hub, mirror, splits)
    declared = _Declared(
        file=file, name=name, fields=fields, template=template, hub=hub, mirror=mirror,
        field_lines={f"fields.{key}": check.line(("fields", key)) for key in _FIELD_KEYS}, holdout=holdout,
    )
    return TaskDefinition(
        name=name,
        description=description or f"multiple-choice task declared in {file}",
        version=version,
        hub=hub,
        mirror=mirror,
        template="multiple_choice",
        group_field=", ".join(fields.groups) or None,
        examples_from_rows=RowParser(declared),
        kind="choice",
        splits=splits,
        validation=HOLDOUT_VALIDATION if holdout else ("the file's validation split" if "validation" in splits else ""),
        groupings=tuple(facet for facet, _ in fields.facets),
        metrics=(ACCURACY,),
        origin=origin,
    )


def _with_holdout(hub: HubSource, mirror: MirrorSource,
                  splits: tuple[str, ...]) -> tuple[HubSource, MirrorSource, tuple[str, ...]]:
    """Sources and splits of a trainable task whose validation split is held out of its train
    split: validation reads the train split's rows; RowParser keeps each side's share."""
    hub = dataclasses.replace(hub, splits={**hub.splits, "validation": hub.splits["train"]})
    files = {**mirror.files, "validation": mirror.files["train"]}
    if isinstance(mirror, DeclaredMirror):
        lines = {**mirror.file_lines, "validation": mirror.file_lines.get("train")}
        mirror = dataclasses.replace(mirror, files=files, file_lines=lines)
    else:
        mirror = dataclasses.replace(mirror, files=files)
    return hub, mirror, tuple(s for s in _SPLITS if s in (*splits, "validation"))


def holdout_side(example: Example, task_name: str) -> str:
    """'validation' or 'train' for an item of a held-out task's train split (module docstring)."""
    return side_of(f"{task_name}/{normalized_text(example.prompt)}", (("validation", HOLDOUT_FRACTION),), rest="train")


# --- mirror files ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RowReader:
    """Reads one mirror file of a declared task. Frozen and hashable, so the source's file
    cache can key on it, and equal for the same declaration, so re-registering a file is a no-op."""

    format: str | None  # None: from the file's extension
    columns: tuple[str, ...] | None = None  # csv without a header row

    def __call__(self, path: Path) -> tuple[Row, ...]:
        fmt = self.format or _EXTENSION_FORMATS.get(path.suffix.lower())
        if fmt == "csv":
            return _read_csv(path, self.columns)
        if fmt == "jsonl":
            return _read_jsonl(path)
        if fmt == "json":
            return _read_json(path)
        raise ValueError(f"{path}: cannot tell the file format from its extension (set source.mirror.format)")


def _read_jsonl(path: Path) -> tuple[Row, ...]:
    rows = []
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{line_no}: not valid JSON ({exc.msg})") from exc
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{line_no}: each line must be a JSON object (got {type(row).__name__})")
            rows.append(row)
    return tuple(rows)


def _read_json(path: Path) -> tuple[Row, ...]:
    with open(path, encoding="utf-8") as handle:
        try:
            data = json.load(handle)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from exc
    if not isinstance(data, list) or not all(isinstance(row, dict) for row in data):
        raise ValueError(f"{path}: must hold a JSON list of objects, one per row")
    return tuple(data)


def _read_csv(path: Path, columns: tuple[str, ...] | None) -> tuple[Row, ...]:
    # newline="" lets the csv module keep line breaks inside quoted cells.
    with open(path, encoding="utf-8-sig", newline="") as handle:
        records = csv.reader(handle)
        names = columns
        if names is None:
            header = next(records, None)
            if header is None:
                raise ValueError(f"{path}: empty csv file (no header row)")
            names = tuple(header)
        rows = []
        for record in records:
            if not record:
                continue  # a blank line
            if len(record) != len(names):
                raise ValueError(f"{path}:{records.line_num}: {len(record)} cells, expected {len(names)} "
                                 f"({', '.join(names)})")
            rows.append(dict(zip(names, record)))
    return tuple(rows)


@dataclass(frozen=True)
class DeclaredMirror(MirrorSource):
    """A MirrorSource whose missing-file errors also point at the task file line naming the file.

    Still a FileNotFoundError, as for built-in tasks, so callers that check a data dir treat
    both alike.
    """

    task_file: str = field(default="", compare=False)
    file_lines: Mapping[str, int | None] = field(default_factory=dict, hash=False, compare=False)

    def paths(self, data_dir: Path, split: str) -> list[Path]:
        try:
            return super().paths(data_dir, split)
        except FileNotFoundError as exc:
            where = Problem(self.task_file, self.file_lines.get(split), f"source.mirror.files.{split}", str(exc))
            raise FileNotFoundError(str(where)) from exc


# --- rows -> examples -----------------------------------------------------------------------

_MISSING = object()


def _lookup(row: Any, path: str) -> Any:
    """The value at a dotted path; list items by number ("choices.0"). _MISSING if absent."""
    value = row
    for part in path.split("."):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, (list, tuple)) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value


class _RowProblem(Exception):
    """A row that cannot become an example: which field, and why."""

    def __init__(self, field_name: str, message: str):
        super().__init__(message)
        self.field_name = field_name
        self.message = message


def _scalar_text(value: Any, field_name: str, what: str) -> str:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise _RowProblem(field_name, f"{what} must be text (got {_describe(value)})")


@dataclass(frozen=True)
class RowParser:
    """examples_from_rows for one declared task: a callable object rather than a closure, so a
    definition can be pickled into Ray workers with its task."""

    declared: _Declared

    def __call__(self, rows: tuple[Row, ...], split: str) -> list[Example]:
        examples, problems, failed = [], [], 0
        first_position: dict[str, int] = {}
        for position, row in enumerate(rows):
            row_id = self._row_id(row, position)
            try:
                if row_id in first_position:  # ids key stored predictions and samples: they must be unique
                    raise _RowProblem("id", f"the id is also that of row {first_position[row_id]}")
                first_position[row_id] = position
                examples.append(self._example(row, row_id))
            except _RowProblem as exc:
                failed += 1
                if len(problems) < _MAX_ROW_PROBLEMS:
                    problems.append(self._problem(exc, row, row_id, position, split))
        if failed:
            if failed > len(problems):
                problems.append(Problem(self.declared.file, None, "", f"... and {failed - len(problems)} more rows "
                                        f"of split {split!r} with problems"))
            raise TaskFileError(problems)
        if self.declared.holdout and split in ("train", "validation"):
            return [example for example in examples if holdout_side(example, self.declared.name) == split]
        return examples

    # -- one row --

    def _row_id(self, row: Row, position: int) -> str:
        if self.declared.fields.id is None:
            return str(position)
        value = _lookup(row, self.declared.fields.id)
        return str(position) if value is _MISSING or value is None else str(value)

    def _get(self, row: Row, key: str, path: str) -> Any:
        value = _lookup(row, path)
        if value is _MISSING:
            raise _RowProblem(key, f"the row has no field {path!r} (its fields: {', '.join(map(str, row))})")
        return value

    def _example(self, row: Row, row_id: str) -> Example:
        fields, template = self.declared.fields, self.declared.template
        example_id = f"{self.declared.name}/{row_id}"
        question = _scalar_text(self._get(row, "question", fields.question), "question", "the question")
        texts = self._choices(row)
        label = self._label(self._get(row, "answer", fields.answer), texts)
        if template.shuffle_options:
            texts, label = _shuffled(example_id, texts, label)
        letters = LETTERS[:len(texts)]
        instruction = template.instruction or multiple_choice_instruction(len(texts))
        return Example(
            example_id=example_id,
            prompt=render_prompt(instruction, self._prompt_body(row, question, texts)),
            answer_prefix=template.answer_prefix,
            options=tuple(f" {letter}." for letter in letters),
            option_names=tuple(letters),
            label=label,
            groups=self._groups(row),
            facets=self._facets(row),
        )

    def _choices(self, row: Row) -> list[str]:
        fields = self.declared.fields
        if fields.choices_in_one_field:
            values = self._get(row, "choices", fields.choices[0])
            if not isinstance(values, (list, tuple)):
                raise _RowProblem("choices", f"field {fields.choices[0]!r} must hold a list of options "
                                             f"(got {_describe(values)})")
        else:
            values = [self._get(row, "choices", path) for path in fields.choices]
        texts = [_scalar_text(value, "choices", "each option") for value in values]
        if not _MIN_OPTIONS <= len(texts) <= _MAX_OPTIONS:
            raise _RowProblem("choices", f"{len(texts)} options; the template letters {_MIN_OPTIONS} to {_MAX_OPTIONS}")
        return texts

    def _label(self, value: Any, texts: list[str]) -> int:
        """The correct option's position, read as the file's answer_format says."""
        fmt, n = self.declared.fields.answer_format, len(texts)
        if fmt == "index":
            index = value if isinstance(value, int) and not isinstance(value, bool) else (
                int(value.strip()) if isinstance(value, str) and value.strip().isdigit() else None)
            if index is None or not 0 <= index < n:
                raise _RowProblem("answer", f"answer {value!r} is not an option index 0..{n - 1}")
            return index
        if fmt == "letter":
            letter = value.strip().upper() if isinstance(value, str) else None
            if letter is None or len(letter) != 1 or letter not in LETTERS[:n]:
                raise _RowProblem("answer", f"answer {value!r} is not one of the letters {', '.join(LETTERS[:n])}")
            return LETTERS.index(letter)
        answer = _scalar_text(value, "answer", "the answer")
        matches = [i for i, text in enumerate(texts) if text == answer]
        if len(matches) != 1:
            how = "is not one of" if not matches else "matches several of"
            raise _RowProblem("answer", f"answer {answer!r} {how} the choices {texts}")
        return matches[0]

    def _prompt_body(self, row: Row, question: str, texts: list[str]) -> str:
        fields, template = self.declared.fields, self.declared.template
        context = None
        if fields.context is not None:
            raw = self._get(row, "context", fields.context)
            context = "" if raw is None else _scalar_text(raw, "context", "the context")
        if template.prompt is not None:
            options = multiple_choice_prompt("", texts).lstrip()  # the "A. x. B. y." part alone
            return template.prompt.format(question=question, options=options, context=context or "").strip()
        if context is None:
            return multiple_choice_prompt(question, texts)  # exactly the ARC layout
        # The paper's BBQ layout: "<context> Question: <question> A. ..."
        return multiple_choice_prompt(f"{context} Question: {question}".strip(), texts)

    def _groups(self, row: Row) -> tuple[str, ...]:
        found: list[str] = []
        for path in self.declared.fields.groups:
            value = self._get(row, "groups", path)
            values = value if isinstance(value, (list, tuple)) else [value]
            found.extend(_scalar_text(v, "groups", "a group") for v in values if v is not None)
        if _RESERVED_GROUP in found:
            raise _RowProblem("groups", f"the group {_RESERVED_GROUP!r} is reserved: the evals table's group "
                                        f"{_RESERVED_GROUP!r} is the whole task, so this group would be counted "
                                        "as it; rename the group in the data, or group by another field")
        # A row counts toward each of its groups once; order kept for readable ids in reports.
        return tuple(dict.fromkeys(g for g in found if g))

    def _facets(self, row: Row) -> tuple[tuple[str, str], ...]:
        facets = []
        for name, path in self.declared.fields.facets:
            value = self._get(row, "facets", path)
            if value is not None:
                facets.append((name, _scalar_text(value, "facets", f"facet {name!r}")))
        return tuple(facets)

    def _problem(self, exc: _RowProblem, row: Row, row_id: str, position: int, split: str) -> Problem:
        declared = self.declared
        if "_source_file" in row:
            data = f"mirror file {declared.mirror.files[split]!r} (file {row['_source_file']!r})"
        else:
            data = (f"mirror file {declared.mirror.files[split]!r}, or Hub {declared.hub.path!r} "
                    f"split {declared.hub.splits[split]!r}")
        line = declared.field_lines.get(f"fields.{exc.field_name}")
        where = f"row {row_id!r} (row {position} of split {split!r}, from {data})"
        return Problem(declared.file, line, f"fields.{exc.field_name}", f"{where}: {exc.message}")


def _shuffled(example_id: str, texts: list[str], label: int) -> tuple[list[str], int]:
    """Options in an order fixed by the example id alone: a release that always puts the
    correct answer last would otherwise teach "the answer is D"."""
    order = sorted(range(len(texts)), key=lambda i: hashlib.sha256(f"{example_id}\0{i}".encode()).digest())
    return [texts[i] for i in order], order.index(label)


# --- public API -----------------------------------------------------------------------------


def load_task_file(path: str | Path) -> TaskDefinition:
    """The task a YAML file declares; TaskFileError (with every problem found) if it is not valid.

    Only the file is read here: mirror files are read, and rows checked, when the task's
    examples are first loaded (a row whose answer cannot be located is a TaskFileError then).
    """
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise TaskFileError([Problem(file, None, "", "task file not found")]) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise TaskFileError([Problem(file, None, "", f"cannot read the task file ({exc})")]) from exc
    data, lines, problems = _parse_yaml(text, file)
    check = _Checker(file, lines)
    check.problems.extend(problems)
    definition = _validate(data, check, file, str(Path(path).resolve()))
    if check.problems:
        raise TaskFileError(sorted(check.problems, key=lambda p: (p.line or 0)))
    assert definition is not None  # no problems means every part was built
    return definition


def register_task_file(path: str | Path) -> TaskDefinition:
    """Load a task file and add its task to the registry (registry.TASKS).

    Registering the same file again is fine (every process of a study does it, some more than
    once); if the file changed meanwhile, the new declaration replaces the old and the cached
    examples are dropped. A name taken by another task (built-in or another file) is a
    TaskFileError at the file's ``name`` line.
    """
    definition = load_task_file(path)
    existing = registry.TASKS.get(definition.name)
    same_file = existing is not None and existing.origin == definition.origin
    try:
        # registry.register drops the cached examples when the declaration changed.
        return registry.register(definition, replace=same_file)
    except ValueError as exc:
        line = _name_line(path)
        raise TaskFileError([Problem(str(path), line, "name", str(exc))]) from exc


def _name_line(path: str | Path) -> int | None:
    try:
        _, lines, _ = _parse_yaml(Path(path).read_text(encoding="utf-8"), str(path))
    except (OSError, TaskFileError):
        return None
    return lines.get(("name",))
