"""A task file's rows: its mirror files read into rows, and rows turned into Examples.

- RowReader reads one mirror file (jsonl, json or csv, with or without a header row);
  DeclaredMirror is the task's MirrorSource, whose missing-file errors point at the task file.
- RowParser is the task's examples_from_rows: the file's field mapping (task_file.FieldMap,
  dotted paths into nested rows) picks each row's question, options, answer (read as the
  declared answer_format), groups and facets; the template renders the prompt. A row that does
  not fit is a TaskFileError naming the row, its data file and the line of the field mapping.
- holdout_side: which side of a held-out validation split an item of the train split falls on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from contract.problems import Problem
from contract.schema import ALL

from .example import Example
from .bad_rows import RowError
from .holdout import normalized_text, side_of
from .row_files import FileRows, read_csv, read_json_list, read_jsonl
from .source import MirrorSource, Row
from .task_file import EXTENSION_FORMATS, HOLDOUT_FRACTION, MAX_OPTIONS, MIN_OPTIONS, TaskFile
from .task_file_problems import TaskFileError, describe
from .templates import LETTERS, multiple_choice_instruction, multiple_choice_prompt, render_prompt

_MAX_ROW_PROBLEMS = 20  # a broken field mapping fails every row: the first few say enough


# --- mirror files ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RowReader:
    """Reads one mirror file of a declared task into rows with their lines (tasks.row_files: a
    line that holds no row is a bad row at its line). Frozen and hashable, so the source's file
    cache can key on it, and equal for the same declaration, so re-registering a file is a no-op."""

    format: str | None  # None: from the file's extension
    columns: tuple[str, ...] | None = None  # csv without a header row

    def __call__(self, path: Path) -> FileRows:
        fmt = self.format or EXTENSION_FORMATS.get(path.suffix.lower())
        if fmt == "csv":
            return read_csv(path, self.columns)
        if fmt == "jsonl":
            return read_jsonl(path)
        if fmt == "json":
            return read_json_list(path)
        raise ValueError(f"{path}: cannot tell the file format from its extension (set source.mirror.format)")


@dataclass(frozen=True)
class DeclaredMirror(MirrorSource):
    """A MirrorSource whose missing-file errors also point at the task file line naming the file.

    Still a FileNotFoundError, as for built-in tasks, so callers that check a data dir treat
    both alike.
    """

    task_file: str = field(default="", compare=False)  # the task file as given, for messages
    file_lines: Mapping[str, int | None] = field(default_factory=dict, hash=False, compare=False)  # split -> line

    def paths(self, data_dir: Path, split: str) -> list[Path]:
        try:
            return super().paths(data_dir, split)
        except FileNotFoundError as exc:
            where = Problem(path=f"source.mirror.files.{split}", message=str(exc), line=self.file_lines.get(split),
                            file=self.task_file)
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
    raise _RowProblem(field_name, f"{what} must be text (got {describe(value)})")


@dataclass(frozen=True)
class RowParser:
    """examples_from_rows for one declared task: a callable object rather than a closure, so a
    definition can be pickled into Ray workers with its task."""

    task_file: TaskFile

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
                problems.append(Problem(path="", message=f"... and {failed - len(problems)} more rows "
                                        f"of split {split!r} with problems", file=self.task_file.file))
            raise TaskFileError(problems, source=self.task_file.file)
        if self.task_file.holdout and split in ("train", "validation"):
            return [example for example in examples if holdout_side(example, self.task_file.name) == split]
        return examples

    def check_row(self, row: Row) -> None:
        """Raises RowError when a row makes no item (tasks.bad_rows), naming the row field to
        blame: the task's check_row, run before the rows reach __call__."""
        try:
            self._example(row, self._row_id(row, 0))
        except _RowProblem as exc:
            raise RowError(exc.message, self._field_path(exc.field_name)) from None

    def _field_path(self, key: str) -> str:
        """The row field a mapping key reads ("question" -> its dotted path), or the key itself."""
        fields = self.task_file.fields
        paths = {"question": fields.question, "answer": fields.answer, "context": fields.context, "id": fields.id}
        if key == "choices" and fields.choices_in_one_field:
            return fields.choices[0]
        return paths.get(key) or key

    # -- one row --

    def _row_id(self, row: Row, position: int) -> str:
        if self.task_file.fields.id is None:
            return str(position)
        value = _lookup(row, self.task_file.fields.id)
        return str(position) if value is _MISSING or value is None else str(value)

    def _get(self, row: Row, key: str, path: str) -> Any:
        value = _lookup(row, path)
        if value is _MISSING:
            raise _RowProblem(key, f"the row has no field {path!r} (its fields: {', '.join(map(str, row))})")
        return value

    def _example(self, row: Row, row_id: str) -> Example:
        fields, template = self.task_file.fields, self.task_file.template
        example_id = f"{self.task_file.name}/{row_id}"
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
        fields = self.task_file.fields
        if fields.choices_in_one_field:
            values = self._get(row, "choices", fields.choices[0])
            if not isinstance(values, (list, tuple)):
                raise _RowProblem("choices", f"field {fields.choices[0]!r} must hold a list of options "
                                             f"(got {describe(values)})")
        else:
            values = [self._get(row, "choices", path) for path in fields.choices]
        texts = [_scalar_text(value, "choices", "each option") for value in values]
        if not MIN_OPTIONS <= len(texts) <= MAX_OPTIONS:
            raise _RowProblem("choices", f"{len(texts)} options; the template letters {MIN_OPTIONS} to {MAX_OPTIONS}")
        return texts

    def _label(self, value: Any, texts: list[str]) -> int:
        """The correct option's position, read as the file's answer_format says."""
        fmt, n = self.task_file.fields.answer_format, len(texts)
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
        fields, template = self.task_file.fields, self.task_file.template
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
        for path in self.task_file.fields.groups:
            value = self._get(row, "groups", path)
            values = value if isinstance(value, (list, tuple)) else [value]
            found.extend(_scalar_text(v, "groups", "a group") for v in values if v is not None)
        if ALL in found:
            raise _RowProblem("groups", f"the group {ALL!r} is reserved: the evals table's group "
                                        f"{ALL!r} is the whole task, so this group would be counted "
                                        "as it; rename the group in the data, or group by another field")
        # A row counts toward each of its groups once; order kept for readable ids in reports.
        return tuple(dict.fromkeys(g for g in found if g))

    def _facets(self, row: Row) -> tuple[tuple[str, str], ...]:
        facets = []
        for name, path in self.task_file.fields.facets:
            value = self._get(row, "facets", path)
            if value is not None:
                facets.append((name, _scalar_text(value, "facets", f"facet {name!r}")))
        return tuple(facets)

    def _problem(self, exc: _RowProblem, row: Row, row_id: str, position: int, split: str) -> Problem:
        task_file = self.task_file
        if "_source_file" in row:
            data = f"mirror file {task_file.mirror.files[split]!r} (file {row['_source_file']!r})"
        else:
            data = (f"mirror file {task_file.mirror.files[split]!r}, or Hub {task_file.hub.path!r} "
                    f"split {task_file.hub.splits[split]!r}")
        line = task_file.field_lines.get(f"fields.{exc.field_name}")
        where = f"row {row_id!r} (row {position} of split {split!r}, from {data})"
        return Problem(path=f"fields.{exc.field_name}", message=f"{where}: {exc.message}", line=line, file=task_file.file)


@dataclass(frozen=True)
class RowCheck:
    """check_row for one declared task (RowParser.check_row as a comparable, picklable object:
    re-registering an unchanged file keeps its definition equal)."""

    task_file: TaskFile

    def __call__(self, row: Row) -> None:
        RowParser(self.task_file).check_row(row)


def _shuffled(example_id: str, texts: list[str], label: int) -> tuple[list[str], int]:
    """Options in an order fixed by the example id alone: a release that always puts the
    correct answer last would otherwise teach "the answer is D"."""
    order = sorted(range(len(texts)), key=lambda i: hashlib.sha256(f"{example_id}\0{i}".encode()).digest())
    return [texts[i] for i in order], order.index(label)


def holdout_side(example: Example, task_name: str) -> str:
    """'validation' or 'train' for an item of a held-out task's train split (task_file.py's docstring)."""
    return side_of(f"{task_name}/{normalized_text(example.prompt)}", (("validation", HOLDOUT_FRACTION),), rest="train")
