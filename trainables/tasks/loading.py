"""load_examples: one task split, optionally sub-sampled, from the Hub or a local mirror."""

from __future__ import annotations

import functools
import os
from pathlib import Path

from . import source
from .example import Example
from .registry import get_task
from .sampling import stratified_sample
from .source import read_rows, resolve_data_dir

SPLITS = ("train", "eval")


def load_examples(
    name: str,
    split: str,
    *,
    size: int | None = None,
    data_dir: str | os.PathLike | None = None,
    data_seed: int = 0,
) -> list[Example]:
    """Examples of one split of task `name`.

    size=None: the whole split, in source order. Otherwise a stratified sample of
    min(size, split size) examples in a data_seed-shuffled order (see sampling.py);
    the same arguments always give the same list.
    data_dir: the mirror to read (else $STUDY_DATA_DIR, else the Hugging Face Hub).
    """
    get_task(name)  # unknown names fail first, with a suggestion
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
        raise ValueError(f"size must be a non-negative integer or None, got {size!r}")
    resolved = resolve_data_dir(data_dir)
    pool = _split_examples(name, None if resolved is None else str(resolved), split)
    if size is None:
        return list(pool)
    return stratified_sample(pool, size, data_seed)


@functools.lru_cache(maxsize=32)
def _split_examples(name: str, data_dir: str | None, split: str) -> tuple[Example, ...]:
    # Examples are frozen, so one cached tuple can be handed to every caller.
    task = get_task(name)
    rows = read_rows(task.hub, task.mirror, None if data_dir is None else Path(data_dir), split)
    return tuple(task.examples_from_rows(rows, split))


def clear_caches() -> None:
    """Forget parsed files and built examples (tests, or a process whose mirror changed)."""
    _split_examples.cache_clear()
    source.clear_caches()
