"""The task file: a multiple-choice task declared in YAML, checked as a whole against its schema.

    from tasks.task_file_registration import register_task_file
    register_task_file("tasks/sciq_demo.yaml")   # then load_examples("sciq_demo", "eval", ...)

A file names its source (Hub id, config and splits; the mirror files and their format), which
row fields hold the question, the options, the answer and the groups, the template, metrics,
splits and a version. `read_task_file` checks the file as a whole before anything is loaded:
every problem is reported at once, as ``<file>:<line>: <field path>: <message>``, in a single
TaskFileError. YAML is read with safe-load semantics (plain data, no Python objects). What it
returns, a TaskFile, is the validated description the other task_file_* modules work from:
task_file_rows.py turns data rows into Examples by it, task_file_registration.py makes it a
TaskDefinition in the registry.

This module is one topic read top to bottom (the schema, then the check of each of its
sections in the schema's order, then the whole file), hence its length.

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

import dataclasses
import fnmatch
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from contract.problems import KeyPath, Problem
from contract.schema import ALL, PRIMARY_GROUPING

from .definition import ACCURACY, SPLITS
from .source import HubSource, is_glob
from .task_file_problems import Checker, TaskFileError, describe, read_task_yaml
from .templates import LETTERS, MULTIPLE_CHOICE_ANSWER_PREFIX

ANSWER_FORMATS = ("index", "letter", "text")
MIRROR_FORMATS = ("jsonl", "json", "csv")
EXTENSION_FORMATS = {".jsonl": "jsonl", ".json": "json", ".csv": "csv"}  # a mirror file's format when not set
_SPLIT_NAMES = ", ".join(SPLITS)
# Share of a trainable task's train split held out as its validation split when the file
# declares none (module docstring). 10% of a few thousand items covers selection_size 200.
HOLDOUT_FRACTION = 0.10
HOLDOUT_VALIDATION = (f"{HOLDOUT_FRACTION:.0%} of the train split, held out by a hash of the normalized prompt "
                      "(the file declares no validation split)")
MIN_OPTIONS, MAX_OPTIONS = 2, len(LETTERS)  # what the multiple-choice template can letter
_PROMPT_PLACEHOLDERS = ("question", "options", "context")
_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# Names the evals table gives its own groupings (contract.schema): grouping ALL (group ALL) is
# the whole task, grouping PRIMARY_GROUPING the primary groups. A facet or a group by these
# names would be counted as them (in worst-group forgetting too), so files and rows cannot use them.
_RESERVED_FACET_NAMES = {ALL: "the whole task", PRIMARY_GROUPING: "the primary groups (fields.groups)"}

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


# --- the validated file ---------------------------------------------------------------------


@dataclass(frozen=True)
class FieldMap:
    """fields: where each part of an item is in a row (dotted field paths)."""

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
class TemplateSettings:
    """template: how an item is rendered (None: the paper's instruction, the default layout)."""

    instruction: str | None
    prompt: str | None
    answer_prefix: str
    shuffle_options: bool


@dataclass(frozen=True)
class MirrorFiles:
    """source.mirror: the release file (or glob) of each split under a data dir, how to read them,
    and the line naming each file (a missing file is reported there)."""

    files: Mapping[str, str]
    format: str | None  # None: from each file's extension (EXTENSION_FORMATS)
    columns: tuple[str, ...] | None  # csv without a header row
    lines: Mapping[str, int | None]


@dataclass(frozen=True)
class TaskFile:
    """A task file after validation: everything its TaskDefinition and its row parser need.

    With a held-out validation split (``holdout``), ``hub``, ``mirror`` and ``splits`` already
    read validation from the train split's source; the row parser keeps each side's share.
    """

    file: str  # as given, for messages
    origin: str  # the file's resolved path (TaskDefinition.origin: its bytes enter the keyed version)
    name: str
    description: str  # "" when the file gives none
    version: str
    fields: FieldMap
    template: TemplateSettings
    hub: HubSource
    mirror: MirrorFiles
    splits: tuple[str, ...]
    field_lines: Mapping[str, int | None]  # "fields.answer" -> its line, for row problems
    # The validation split is held out of the train split's rows (the file declares none).
    holdout: bool = False
    # Where a clash of the name with another task is reported; not part of what the file declares.
    name_line: int | None = field(default=None, compare=False)


# --- the sections ---------------------------------------------------------------------------


def _check_name(check: Checker, doc: dict) -> str | None:
    name = check.text(doc.get("name"), ("name",))
    if name is not None and not _NAME_PATTERN.fullmatch(name):
        check.add(("name",), f"must be letters, digits, '_', '.' or '-', starting with a letter or digit (got {name!r})")
        return None
    return name


def _check_version(check: Checker, value: Any) -> str | None:
    # An int is fine (version: 2); a float is not: 1.10 would silently become "1.1".
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    check.add(("version",), f"must be a string such as \"1\" (got {describe(value)}; quote it)")
    return None


def _check_splits(check: Checker, value: Any, hub_splits: Mapping[str, str] | None) -> tuple[str, ...] | None:
    if value is None:  # default: the splits the Hub source maps
        if not hub_splits:
            return None  # already reported
        if "eval" not in hub_splits:
            check.add(("source", "hub", "splits"), "has no entry for the 'eval' split (every task is evaluated)")
            return None
        return tuple(s for s in SPLITS if s in hub_splits)
    if not isinstance(value, list) or not value:
        check.add(("splits",), f"must be a list of {_SPLIT_NAMES} (got {describe(value)})")
        return None
    names = [check.choice(item, ("splits", i), SPLITS) for i, item in enumerate(value)]
    if None in names:
        return None
    if len(set(names)) != len(names):
        check.add(("splits",), f"lists a split twice ({names})")
        return None
    if "eval" not in names:
        check.add(("splits",), "must include eval (a task is always evaluated; train is optional)")
        return None
    return tuple(s for s in SPLITS if s in names)


def _split_map(check: Checker, value: Any, path: KeyPath, *, relative_paths: bool) -> dict[str, str] | None:
    """``{train: ..., eval: ...}``: our split -> a source split name or a mirror file."""
    if not isinstance(value, dict) or not value:
        check.add(path, f"must map our splits ({_SPLIT_NAMES}) to {'files' if relative_paths else 'source splits'} "
                        f"(got {describe(value)})")
        return None
    out = {}
    for split, target in value.items():
        if split not in SPLITS:
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


def _check_hub(check: Checker, value: Any) -> HubSource | None:
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


def _check_mirror(check: Checker, value: Any) -> MirrorFiles | None:
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
            if Path(name).suffix.lower() not in EXTENSION_FORMATS:
                check.add(path + ("files", split),
                          f"cannot tell the format from {name!r}: set source.mirror.format ({', '.join(MIRROR_FORMATS)})")
    columns = _check_columns(check, mirror.get("columns"), path + ("columns",), fmt, files)
    if files is None:
        return None
    return MirrorFiles(files=files, format=fmt, columns=columns,
                       lines={s: check.line(path + ("files", s)) for s in files})


def _check_columns(check: Checker, value: Any, path: KeyPath, fmt: str | None,
                   files: Mapping[str, str] | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(c, str) and c for c in value):
        check.add(path, f"must be a list of column names (got {describe(value)})")
        return None
    if len(set(value)) != len(value):
        check.add(path, "names a column twice")
        return None
    is_csv = fmt == "csv" or (fmt is None and files and all(Path(f).suffix.lower() == ".csv" for f in files.values()))
    if not is_csv:
        check.add(path, "only csv files take columns (json and jsonl rows name their fields)")
        return None
    return tuple(value)


def _check_fields(check: Checker, value: Any) -> FieldMap | None:
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
    if choices is not None and isinstance(raw["choices"], list) and not MIN_OPTIONS <= len(choices) <= MAX_OPTIONS:
        check.add(path + ("choices",), f"must list {MIN_OPTIONS} to {MAX_OPTIONS} option fields (got {len(choices)})")
        choices = None
    needed = (question, answer, choices, answer_format, groups, facets)
    if any(part is None for part in needed) or any(
            raw.get(key) is not None and optional[key] is None for key in optional):
        return None
    return FieldMap(id=optional["id"], question=question, context=optional["context"], choices=choices,
                   choices_in_one_field=not isinstance(raw["choices"], list), answer=answer,
                   answer_format=answer_format, groups=groups, facets=facets)


def _check_facets(check: Checker, value: Any, path: KeyPath) -> tuple[tuple[str, str], ...] | None:
    if value is None:
        return ()
    if not isinstance(value, dict):
        check.add(path, f"must map facet names to fields, e.g. {{difficulty: level}} (got {describe(value)})")
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


def _check_template(check: Checker, value: Any, has_context: bool) -> TemplateSettings | None:
    path = ("template",)
    if value is None:
        return TemplateSettings(None, None, MULTIPLE_CHOICE_ANSWER_PREFIX, False)
    raw = check.mapping(value, path, _TEMPLATE_KEYS)
    if raw is None:
        return None
    instruction = check.text(raw.get("instruction"), path + ("instruction",), optional=True)
    prompt = _check_prompt(check, raw.get("prompt"), path + ("prompt",), has_context)
    prefix = raw.get("answer_prefix", MULTIPLE_CHOICE_ANSWER_PREFIX)
    if not isinstance(prefix, str) or not prefix.strip():
        check.add(path + ("answer_prefix",),
                  f"must be a non-empty string such as ' The best answer is' (got {describe(prefix)})")
        prefix = None
    shuffle = raw.get("shuffle_options", False)
    if not isinstance(shuffle, bool):
        check.add(path + ("shuffle_options",), f"must be true or false (got {describe(shuffle)})")
        shuffle = None
    ok = (raw.get("instruction") is None or instruction is not None) and (raw.get("prompt") is None or prompt is not None)
    if not ok or prefix is None or shuffle is None:
        return None
    return TemplateSettings(instruction, prompt, prefix, shuffle)


def _check_prompt(check: Checker, value: Any, path: KeyPath, has_context: bool) -> str | None:
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


def _check_metrics(check: Checker, value: Any) -> None:
    """Only accuracy is computed for declarative tasks; anything else is refused here, not
    silently dropped at evaluation time."""
    if value is None:
        return
    if not isinstance(value, list) or not value:
        check.add(("metrics",), f"must be a list such as [{{name: accuracy, direction: higher}}] (got {describe(value)})")
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


def _check_split_coverage(check: Checker, splits: tuple[str, ...], source: Any) -> None:
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
            if split in SPLITS and split not in splits:
                check.add(path + (split,),
                          f"the task's splits are {', '.join(splits)}: add {split!r} to splits or remove it here")


def _check_distinct_sources(check: Checker, splits: tuple[str, ...], hub: HubSource | None,
                            mirror: MirrorFiles | None, *, explicit_splits: bool) -> None:
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
        same = "the same file" if not is_glob(files["train"]) and not is_glob(files["eval"]) else "the same files"
        check.add(("source", "mirror", "files", "train"),
                  f"train ({files['train']!r}) and eval ({files['eval']!r}) read {same}, so the task would "
                  f"train on its eval set: {advice}")
    _check_distinct_validation(check, splits, hub, files)


def _check_distinct_validation(check: Checker, splits: tuple[str, ...], hub: HubSource | None,
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


def _same_files(a: str, b: str) -> bool:
    """Whether two mirror entries name the same file: equal paths or globs, or a glob that
    matches the other's plain path. (Two different globs that overlap are not detected.)"""
    if PurePosixPath(a) == PurePosixPath(b):
        return True
    for pattern, other in ((a, b), (b, a)):
        if is_glob(pattern) and not is_glob(other) and _glob_matches(PurePosixPath(pattern).parts,
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




# --- the whole file -------------------------------------------------------------------------


def read_task_file(path: str | Path) -> TaskFile:
    """The validated description of a task file; TaskFileError with every problem found if it
    is not valid. Only the file is read: its mirror files and rows are read when the task's
    examples are first loaded."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise TaskFileError([Problem(path="", message="task file not found", file=file)], source=file) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise TaskFileError([Problem(path="", message=f"cannot read the task file ({exc})", file=file)],
                            source=file) from exc
    data, lines, problems = read_task_yaml(text, file)
    check = Checker(file, lines)
    check.problems.extend(problems)
    task_file = _validate(data, check, file, str(Path(path).resolve()))
    if check.problems:
        raise TaskFileError(sorted(check.problems, key=lambda p: (p.line or 0)), source=file)
    assert task_file is not None  # no problems means every part was built
    return task_file


def _validate(doc: Any, check: Checker, file: str, origin: str) -> TaskFile | None:
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
    mirror = _check_mirror(check, source["mirror"]) if source and "mirror" in source else None
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
    return TaskFile(
        file=file, origin=origin, name=name, description=description, version=version, fields=fields,
        template=template, hub=hub, mirror=mirror, splits=splits,
        field_lines={f"fields.{key}": check.line(("fields", key)) for key in _FIELD_KEYS}, holdout=holdout,
        name_line=check.lines.get(("name",)),
    )


def _with_holdout(hub: HubSource, mirror: MirrorFiles,
                  splits: tuple[str, ...]) -> tuple[HubSource, MirrorFiles, tuple[str, ...]]:
    """Sources and splits of a trainable task whose validation split is held out of its train
    split: validation reads the train split's rows; the row parser keeps each side's share."""
    hub = dataclasses.replace(hub, splits={**hub.splits, "validation": hub.splits["train"]})
    mirror = dataclasses.replace(mirror, files={**mirror.files, "validation": mirror.files["train"]},
                                 lines={**mirror.lines, "validation": mirror.lines.get("train")})
    return hub, mirror, tuple(s for s in SPLITS if s in (*splits, "validation"))
