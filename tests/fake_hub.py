"""A stand-in for the `datasets` package, so Hub-layout loading is tested without the Hub."""

from __future__ import annotations

import sys
import types
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from tasks import clear_caches


@contextmanager
def fake_datasets(monkeypatch, rows: Sequence[Any] | Callable[[str], Sequence[Any]]) -> Iterator[list]:
    """`datasets.load_dataset` returns `rows` (or `rows(path)`); yields the list of calls
    (path, args, kwargs). No data dir is set, so loaders take their Hub path; cached rows are
    cleared before and after, so fake rows never leak into other tests."""
    calls: list = []

    def load_dataset(path, *args, **kwargs):
        calls.append((path, args, kwargs))
        return rows(path) if callable(rows) else rows

    # load_dataset, and the progress-bar switch `study run` turns off (trainables.quiet_logs).
    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset,
                                                                       disable_progress_bars=lambda: None))
    monkeypatch.delenv("STUDY_DATA_DIR", raising=False)
    clear_caches()
    try:
        yield calls
    finally:
        clear_caches()
