"""The data check: every file a study reads, read once before anything runs, every bad row listed.

`study validate --data` and `study run` (before the study folder is written, before Ray starts)
read every split the study needs (study.spec_checks_tasks.needed_splits, plus what the caller
adds: the tiny model's tokenizer corpus) through the tasks' own readers and row checks
(tasks.loading.split_bad_rows), so a row is judged exactly as the trials will judge it. Each bad
row is `FILE:LINE: what is wrong (field ...)` (tasks.bad_rows); a row found by several splits of
one file is listed once.

What follows from them is the study's `data.bad_rows`: `error` raises BadRowsError (exit 2);
`skip` returns them, and the run record, `study status` and the stage keys take them from here
(`DataCheck.plan`: the count and a digest of (file relative to the data dir, line, reason)).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from contract.content_hash import content_hash
from contract.plan import BadRowsPlan
from contract.problems import Problem
from study.spec import StudySpec
from study.spec_checks_tasks import needed_splits
from tasks import get_task, resolve_data_dir
from tasks.bad_rows import ERROR, BadRowsError, unique
from tasks.loading import split_bad_rows
from tasks.source import DataUnavailableError


@dataclass(frozen=True)
class DataCheck:
    """What the data check found: the bad rows (each once, in the order read), and where the data is."""

    bad: tuple[Problem, ...]
    data_dir: Path | None
    reads: tuple[tuple[str, str], ...]
    """(task, split) pairs read, in order."""

    def plan(self) -> BadRowsPlan:
        """The plan's form of the skipped rows (what enters the keys under data.bad_rows: skip):
        files named relative to the data dir, so the same mirror in another place keys alike."""
        return BadRowsPlan(skipped=len(self.bad), digest=content_hash([list(row) for row in self.rows()]))

    def rows(self) -> list[tuple[str, int | None, str]]:
        """(file, line, reason) of every bad row; a mirror file relative to the data dir."""
        return [(self._relative(p.file), p.line, p.message) for p in self.bad]

    def _relative(self, file: str | None) -> str:
        if file is None or self.data_dir is None:
            return file or ""
        try:
            return Path(file).resolve().relative_to(self.data_dir).as_posix()
        except ValueError:
            return file


def needed_reads(spec: StudySpec, extra: Iterable[tuple[str, str]] = ()) -> list[tuple[str, str]]:
    """(task, split) of every split `spec` reads, then the `extra` pairs, each once."""
    reads = [(task, split) for task, splits in needed_splits(spec).items() for split in sorted(splits)]
    for task, split in extra:
        if (task, split) not in reads and split in get_task(task).splits:
            reads.append((task, split))
    return reads


def check_hub(reads: Iterable[tuple[str, str]]) -> None:
    """With no mirror configured: fetch every (task, split) of `reads` from the Hub (each dataset
    tried until it fails once; what is fetched stays cached for the readers after), and raise
    DataUnavailableError naming every dataset it could not give and the tasks that read it."""
    unreachable: dict[str, tuple[list[str], str]] = {}  # dataset -> (tasks, first error)
    for task, split in reads:
        dataset = get_task(task).hub.describe()
        if dataset in unreachable:
            if task not in unreachable[dataset][0]:
                unreachable[dataset][0].append(task)
            continue
        try:
            split_bad_rows(task, split, None)
        except OSError as exc:  # no network, offline mode, a gated or missing dataset
            unreachable[dataset] = ([task], f"{type(exc).__name__}: {exc}")
    if unreachable:
        raise DataUnavailableError([(dataset, tasks, error) for dataset, (tasks, error) in unreachable.items()])


def check_data(spec: StudySpec, extra: Iterable[tuple[str, str]] = ()) -> DataCheck:
    """Read every split `spec` needs (and the `extra` (task, split) pairs) and collect every bad
    row. BadRowsError under data.bad_rows: error when there is one, or when a file cannot be
    read at all (under either policy); FileNotFoundError for a missing mirror file;
    DataUnavailableError naming every dataset the Hub could not give (no mirror configured)."""
    root = resolve_data_dir(spec.data_dir)
    reads = needed_reads(spec, extra)
    if root is None:
        check_hub(reads)
    bad: list[Problem] = []
    for task, split in reads:
        bad.extend(split_bad_rows(task, split, None if root is None else os.fspath(root)))
    check = DataCheck(unique(bad), root, tuple(reads))
    if check.bad and spec.data.bad_rows == ERROR:
        raise BadRowsError(check.bad, source=f"study {spec.name!r} (task data)")
    return check
