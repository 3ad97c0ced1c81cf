"""load_examples: one task split, optionally sub-sampled, from the Hub or a local mirror.

Built examples are cached per (task name, data dir, split); the cache is dropped whenever the
registry gives a name a different definition (registry.on_replaced, at the end of this module).

Before a task turns rows into items, every row is checked (`checked_rows`): a line that holds no
row and a row the task's `check_row` refuses are bad rows with their file and line
(tasks.bad_rows). `bad_rows="error"` (the default) raises BadRowsError listing them all (a task
file keeps its own report of a row it cannot parse: the row, its data file and the line of the
field mapping in the task file); `"skip"` builds the split from the other rows. `split_bad_rows`
lists them at their data files' lines for a study's data check (study.data_check).
"""

from __future__ import annotations

import functools
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from dataclasses import dataclass
from typing import Any

from contract.problems import FileProblems, Problem

from . import source
from .bad_rows import ERROR, POLICIES, SKIP, BadRowsError, row_problem, unique
from .definition import SPLITS, TaskDefinition
from .registry import get_task, on_replaced
from .sampling import stratified_sample
from .source import Row, SourceRows, read_source, resolve_data_dir


def load_examples(
    name: str,
    split: str,
    *,
    size: int | None = None,
    data_dir: str | os.PathLike | None = None,
    data_seed: int = 0,
    limit: int | None = None,
    option_counts: Sequence[int] | None = None,
    bad_rows: str = ERROR,
) -> list[Any]:
    """Items of one split of task `name` (Examples; GenerationPrompts for generation tasks).

    option_counts: keep only items with that many options (None: the task's default,
    `TaskDefinition.option_counts`; ARC keeps its four-option questions). Applied first.
    limit: keep only the first `limit` items of the split in source order (quick runs; applied
    before any sampling, like lm-eval's --limit).
    size=None: the whole (filtered, limited) split, in source order. Otherwise min(size, split
    size) items chosen by the task's training-set rule (train; default: a stratified sample,
    sampling.py) or a stratified sample (validation, eval) in a data_seed-shuffled order; the
    same arguments always give the same list.
    data_dir: the mirror to read (else $STUDY_DATA_DIR, else the Hugging Face Hub).
    bad_rows: "error" raises BadRowsError when a row of the split is bad, "skip" leaves such rows out.
    """
    task = get_task(name)  # unknown names fail first, with a suggestion
    _check_split(task, split)
    for what, value in (("size", size), ("limit", limit)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise ValueError(f"{what} must be a non-negative integer or None, got {value!r}")
    if bad_rows not in POLICIES:
        raise ValueError(f"bad_rows must be one of {', '.join(POLICIES)}, got {bad_rows!r}")
    counts = resolve_option_counts(task, option_counts)
    pool = _split_examples(name, _data_dir_key(data_dir), split, bad_rows)
    if counts is not None:
        pool = tuple(example for example in pool if len(example.options) in counts)
    if limit is not None:
        pool = pool[:limit]
    if size is None:
        return list(pool)
    if task.train_selection is not None and split == "train":
        return task.train_selection(pool, size, data_seed)
    return stratified_sample(pool, size, data_seed)


def resolve_option_counts(task: TaskDefinition, requested: Sequence[int] | None) -> tuple[int, ...] | None:
    """The option counts whose items a task keeps: `requested` (a study's
    tasks.<name>.option_counts), else the task's default; None keeps every item."""
    if requested is None:
        return task.option_counts
    if task.kind != "choice":
        raise ValueError(f"task {task.name!r} is a {task.kind} task: its items have no options to count")
    return tuple(sorted(set(int(n) for n in requested)))


def option_count_histogram(name: str, split: str, data_dir: str | os.PathLike | None = None,
                           bad_rows: str = ERROR) -> dict[int, int]:
    """How many items of a (choice) task's split have each number of options, before any filter."""
    task = get_task(name)
    _check_split(task, split)
    examples = _split_examples(name, _data_dir_key(data_dir), split, bad_rows)
    return dict(sorted(Counter(len(e.options) for e in examples).items()))


def split_bad_rows(name: str, split: str, data_dir: str | os.PathLike | None = None) -> tuple[Problem, ...]:
    """Every bad row of one split of a task (tasks.bad_rows), each once, in file order."""
    task = get_task(name)
    _check_split(task, split)
    return _checked_rows(name, _data_dir_key(data_dir), split).bad


def _check_split(task: TaskDefinition, split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if split not in task.splits:
        raise ValueError(f"task {task.name!r} has no {split!r} split (it has: {', '.join(task.splits)})")


def _data_dir_key(data_dir: str | os.PathLike | None) -> str | None:
    resolved = resolve_data_dir(data_dir)
    return None if resolved is None else str(resolved)


@dataclass(frozen=True)
class CheckedRows:
    """A split's rows as read (`read`), those that passed the task's check (`kept`), and the bad
    rows in file order (lines that hold no row, rows the check refused)."""

    read: SourceRows
    kept: tuple[Row, ...]
    bad: tuple[Problem, ...]


@functools.lru_cache(maxsize=32)
def _checked_rows(name: str, data_dir: str | None, split: str) -> CheckedRows:
    task = get_task(name)
    read = read_source(task.hub, task.mirror, None if data_dir is None else Path(data_dir), split)
    if task.check_row is None:
        return CheckedRows(read, read.rows, unique(read.problems))
    kept, bad = [], list(read.problems)
    for row, file, line in zip(read.rows, read.files, read.lines):
        try:
            task.check_row(row)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            bad.append(row_problem(exc, file, line))
            continue
        kept.append(row)
    bad.sort(key=lambda p: (p.file or "", p.line or 0))
    return CheckedRows(read, tuple(kept), unique(bad))


@functools.lru_cache(maxsize=32)
def _split_examples(name: str, data_dir: str | None, split: str, bad_rows: str) -> tuple[Any, ...]:
    # Examples are frozen, so one cached tuple can be handed to every caller.
    task, checked = get_task(name), _checked_rows(name, data_dir, split)
    if bad_rows == SKIP:
        return tuple(task.examples_from_rows(checked.kept, split))
    if checked.bad:
        if not checked.read.problems:
            try:  # a parser that reports its rows itself (a task file's: the line of its field mapping) keeps its say
                task.examples_from_rows(checked.read.rows, split)
            except FileProblems:
                raise
            except Exception:  # noqa: BLE001 - reported below, at the rows' lines
                pass
        raise BadRowsError(checked.bad, source=f"task {name!r} ({split} split)")
    return tuple(task.examples_from_rows(checked.read.rows, split))


def clear_caches() -> None:
    """Forget parsed files and built examples (tests, or a process whose mirror changed)."""
    _split_examples.cache_clear()
    _checked_rows.cache_clear()
    source.clear_caches()


on_replaced(clear_caches)
