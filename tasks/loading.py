"""load_examples: one task split, optionally sub-sampled, from the Hub or a local mirror.

Built examples are cached per (task name, data dir, split); the cache is dropped whenever the
registry gives a name a different definition (registry.on_replaced, at the end of this module).
"""

from __future__ import annotations

import functools
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import source
from .definition import SPLITS, TaskDefinition
from .registry import get_task, on_replaced
from .sampling import stratified_sample
from .source import read_rows, resolve_data_dir


def load_examples(
    name: str,
    split: str,
    *,
    size: int | None = None,
    data_dir: str | os.PathLike | None = None,
    data_seed: int = 0,
    limit: int | None = None,
    option_counts: Sequence[int] | None = None,
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
    """
    task = get_task(name)  # unknown names fail first, with a suggestion
    _check_split(task, split)
    for what, value in (("size", size), ("limit", limit)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise ValueError(f"{what} must be a non-negative integer or None, got {value!r}")
    counts = resolve_option_counts(task, option_counts)
    pool = _split_examples(name, _data_dir_key(data_dir), split)
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


def option_count_histogram(name: str, split: str, data_dir: str | os.PathLike | None = None) -> dict[int, int]:
    """How many items of a (choice) task's split have each number of options, before any filter."""
    task = get_task(name)
    _check_split(task, split)
    return dict(sorted(Counter(len(e.options) for e in _split_examples(name, _data_dir_key(data_dir), split)).items()))


def _check_split(task: TaskDefinition, split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if split not in task.splits:
        raise ValueError(f"task {task.name!r} has no {split!r} split (it has: {', '.join(task.splits)})")


def _data_dir_key(data_dir: str | os.PathLike | None) -> str | None:
    resolved = resolve_data_dir(data_dir)
    return None if resolved is None else str(resolved)


@functools.lru_cache(maxsize=32)
def _split_examples(name: str, data_dir: str | None, split: str) -> tuple[Any, ...]:
    # Examples are frozen, so one cached tuple can be handed to every caller.
    task = get_task(name)
    rows = read_rows(task.hub, task.mirror, None if data_dir is None else Path(data_dir), split)
    return tuple(task.examples_from_rows(rows, split))


def clear_caches() -> None:
    """Forget parsed files and built examples (tests, or a process whose mirror changed)."""
    _split_examples.cache_clear()
    source.clear_caches()


on_replaced(clear_caches)
