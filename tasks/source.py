"""Where task data comes from: the Hugging Face Hub (the default) or a local mirror.

Real users load from the Hub. Machines without network point a data dir (the study spec's
``data_dir`` field, or ``STUDY_DATA_DIR``) at a mirror of the original release files.
`data_source_line` is the one line a run prints about which of the two it reads; a dataset the
Hub cannot give is a `DataUnavailableError` naming it and how to use a local copy.
Parsed files are cached in-process because every trial of a study re-loads the same tasks.
Rows are read with where each came from (`read_source`: file and line, or Hub split and
position), so a row a task cannot use is reported as FILE:LINE (tasks.bad_rows).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from contract.problems import Problem

from .bad_rows import BadRowsError
from .row_files import FileRows, read_json_list, read_jsonl

DATA_DIR_ENV = "STUDY_DATA_DIR"

Row = Mapping[str, Any]


def resolve_data_dir(explicit: str | os.PathLike | None) -> Path | None:
    """The mirror dir to read, or None meaning "load from the Hub".

    Precedence: the explicit value (a spec field) > ``$STUDY_DATA_DIR`` > None.
    An empty string counts as not given, so ``STUDY_DATA_DIR=`` cannot silently mean ".".
    A dir that is given but missing is an error, never a quiet fall-back to the network.
    """
    if explicit is not None and str(explicit) != "":
        candidate, origin = explicit, "spec field data_dir"
    elif os.environ.get(DATA_DIR_ENV):
        candidate, origin = os.environ[DATA_DIR_ENV], f"environment variable {DATA_DIR_ENV}"
    else:
        return None
    path = Path(candidate).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"data dir {str(path)!r} (from {origin}) does not exist")
    if not path.is_dir():
        raise NotADirectoryError(f"data dir {str(path)!r} (from {origin}) is not a directory")
    return path.resolve()


LOCAL_COPY_HINT = f"set {DATA_DIR_ENV} or data_dir: to use a local copy"


def data_source_line(explicit: str | os.PathLike | None) -> str:
    """Which source a study reads, in one line: 'data: local mirror at X' or 'data: Hugging Face
    Hub (...)'. FileNotFoundError / NotADirectoryError as `resolve_data_dir`."""
    path = resolve_data_dir(explicit)
    return f"data: local mirror at {path}" if path is not None else f"data: Hugging Face Hub ({LOCAL_COPY_HINT})"


class DataUnavailableError(OSError):
    """Datasets the Hub could not give (no network, offline mode, a gated dataset): each named
    with the tasks that read it, and how to point at a local copy instead."""

    def __init__(self, missing: Sequence[tuple[str, Sequence[str], str]]):
        """`missing`: (dataset as `HubSource.describe` names it, tasks that read it, the error)."""
        self.missing = tuple((dataset, tuple(tasks), error) for dataset, tasks, error in missing)
        lines = [f"could not fetch {len(self.missing)} dataset{'s' if len(self.missing) != 1 else ''} "
                 "from the Hugging Face Hub or the web (no local mirror is configured):"]
        lines += [f"  {dataset} (task{'s' if len(tasks) != 1 else ''} {', '.join(tasks)}): {error}"
                  for dataset, tasks, error in self.missing]
        lines.append(f"To read a local copy instead, set {DATA_DIR_ENV}=/path/to/mirror (or data_dir: in the "
                     "study file): `study tasks` lists the files each task reads under it. Or connect to the "
                     "Hub (and unset HF_HUB_OFFLINE / HF_DATASETS_OFFLINE).")
        super().__init__("\n".join(lines))

    def __str__(self) -> str:
        return self.args[0]


@dataclass(frozen=True)
class HubSource:
    """Arguments for ``datasets.load_dataset``; ``splits`` maps our split to the source's."""

    path: str
    splits: Mapping[str, str] = field(hash=False)
    config: str | None = None
    data_files: str | None = None

    def describe(self) -> str:
        if self.data_files is not None:
            return f"datasets.load_dataset({self.path!r}, data_files={self.data_files!r})"
        return f"datasets.load_dataset({self.path!r}, {self.config!r})"


def is_glob(pattern: str) -> bool:
    """Whether a mirror entry is a glob pattern (several files) rather than one file's path."""
    return any(ch in pattern for ch in "*?[")


# A mirror reader for formats other than json/jsonl: one file -> its rows, with their lines
# (row_files.FileRows) or without (a plain sequence: each row's line is then unknown).
FileReader = Callable[[Path], "FileRows | Sequence[Row]"]


@dataclass(frozen=True)
class MirrorSource:
    """Release files under the data dir.

    ``files`` maps our split to a path relative to the data dir, or to a glob pattern
    ("mmlu/test/*_test.csv") when the release splits a dataset over several files. Files are
    read in sorted order; each row of a glob match carries the matched file's stem under
    ``_source_file`` (MMLU takes its subject from it). ``reader`` parses one file (default:
    jsonl, or a JSON list, by extension: tasks.row_files).
    """

    files: Mapping[str, str] = field(hash=False)
    reader: FileReader | None = field(default=None, hash=False, compare=False)

    def paths(self, data_dir: Path, split: str) -> list[Path]:
        pattern = self.files[split]
        if is_glob(pattern):
            matches = sorted(p for p in data_dir.glob(pattern) if p.is_file())
            if not matches:
                raise FileNotFoundError(
                    f"no mirror file matches {pattern!r} in data dir {str(data_dir)!r} "
                    f"(expected layout: <data dir>/{pattern}; see the mirror's README.md)"
                )
            return matches
        path = data_dir / pattern
        if not path.is_file():
            raise FileNotFoundError(
                f"mirror file {str(path)!r} not found in data dir {str(data_dir)!r} "
                f"(expected layout: <data dir>/{pattern}; see the mirror's README.md)"
            )
        return [path]

    def presence(self, data_dir: Path, split: str) -> tuple[int, int] | None:
        """(files, rows) of a split's file or glob matches under `data_dir` (rows as read, each
        file once per process), or None when it is missing (`study tasks`)."""
        try:
            paths = self.paths(data_dir, split)
        except FileNotFoundError:
            return None
        return len(paths), sum(len(_read_mirror_file(str(p), self.reader).rows) for p in paths)


@dataclass(frozen=True)
class SourceRows:
    """The rows of one split as read, before any task looks at them: each row with where it came
    from (`files[i]`, `lines[i]`: a mirror file and the line the row starts at; for the Hub, the
    dataset and split and the row's 1-based position), and the problems of lines that hold no
    row (tasks.bad_rows)."""

    rows: tuple[Row, ...]
    files: tuple[str, ...]
    lines: tuple[int | None, ...]
    problems: tuple[Problem, ...] = ()


def read_source(hub: HubSource, mirror: MirrorSource, data_dir: Path | None, split: str) -> SourceRows:
    """Raw rows of one split with their origins, from the mirror when a data dir is given, else the Hub."""
    if data_dir is None:
        rows = _load_hub_rows(hub.path, hub.config, hub.data_files, hub.splits[split])
        where = hub_origin(hub, split)
        return SourceRows(rows, (where,) * len(rows), tuple(range(1, len(rows) + 1)))
    paths = mirror.paths(data_dir, split)
    tagged = len(paths) > 1 or is_glob(mirror.files[split])
    rows: list[Row] = []
    files: list[str] = []
    lines: list[int | None] = []
    problems: list[Problem] = []
    for path in paths:
        read = _read_mirror_file(str(path), mirror.reader)
        rows.extend(({**row, "_source_file": path.stem} for row in read.rows) if tagged else read.rows)
        files.extend([str(path)] * len(read.rows))
        lines.extend(read.lines)
        problems.extend(read.problems)
    return SourceRows(tuple(rows), tuple(files), tuple(lines), tuple(problems))


def read_rows(hub: HubSource, mirror: MirrorSource, data_dir: Path | None, split: str) -> tuple[Row, ...]:
    """Raw source rows of one split, from the mirror when a data dir is given, else the Hub.
    BadRowsError when a line of a mirror file holds no row (tasks.bad_rows)."""
    read = read_source(hub, mirror, data_dir, split)
    if read.problems:
        raise BadRowsError(read.problems)
    return read.rows


def hub_origin(hub: HubSource, split: str) -> str:
    """What a Hub row's problem names as its file: hub:<path>[/<config>]/<the source's split>."""
    name = hub.path if hub.config is None else f"{hub.path}/{hub.config}"
    return f"hub:{name}/{hub.splits[split]}"


@functools.lru_cache(maxsize=128)
def _read_mirror_file(path: str, reader: FileReader | None = None) -> FileRows:
    # Cached rows are shared between callers: treat them as read-only.
    if reader is None:
        return read_jsonl(Path(path)) if path.endswith(".jsonl") else read_json_list(Path(path))
    read = reader(Path(path))
    if isinstance(read, FileRows):
        return read
    rows = tuple(read)
    return FileRows(rows, (None,) * len(rows))


@functools.lru_cache(maxsize=16)
def _load_hub_rows(path: str, config: str | None, data_files: str | None, split: str) -> tuple[Row, ...]:
    # Imported here: `datasets` is heavy and mirror-only runs never need it.
    import datasets

    kwargs: dict[str, Any] = {"split": split}
    if data_files is not None:
        kwargs["data_files"] = data_files
    args = (path,) if config is None else (path, config)
    return tuple(dict(row) for row in datasets.load_dataset(*args, **kwargs))


def clear_caches() -> None:
    """Forget parsed files (tests, or a long-lived process whose mirror changed)."""
    _read_mirror_file.cache_clear()
    _load_hub_rows.cache_clear()
