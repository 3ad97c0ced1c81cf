"""Where task data comes from: the Hugging Face Hub (the default) or a local mirror.

Real users load from the Hub. Machines without network point a data dir (the study spec's
``data_dir`` field, or ``STUDY_DATA_DIR``) at a mirror of the original release files.
Parsed files are cached in-process because every trial of a study re-loads the same tasks.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


# A mirror reader for formats other than json/jsonl: one file -> its rows.
FileReader = Callable[[Path], "tuple[Row, ...]"]


@dataclass(frozen=True)
class MirrorSource:
    """Release files under the data dir.

    ``files`` maps our split to a path relative to the data dir, or to a glob pattern
    ("mmlu/test/*_test.csv") when the release splits a dataset over several files. Files are
    read in sorted order; each row of a glob match carries the matched file's stem under
    ``_source_file`` (MMLU takes its subject from it). ``reader`` parses one file (default:
    json / jsonl by extension).
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


def read_rows(hub: HubSource, mirror: MirrorSource, data_dir: Path | None, split: str) -> tuple[Row, ...]:
    """Raw source rows of one split, from the mirror when a data dir is given, else the Hub."""
    if data_dir is None:
        return _load_hub_rows(hub.path, hub.config, hub.data_files, hub.splits[split])
    paths = mirror.paths(data_dir, split)
    if len(paths) == 1 and not is_glob(mirror.files[split]):
        return _read_mirror_file(str(paths[0]), mirror.reader)
    rows: list[Row] = []
    for path in paths:
        rows.extend({**row, "_source_file": path.stem} for row in _read_mirror_file(str(path), mirror.reader))
    return tuple(rows)


@functools.lru_cache(maxsize=128)
def _read_mirror_file(path: str, reader: FileReader | None = None) -> tuple[Row, ...]:
    # Cached rows are shared between callers: treat them as read-only.
    if reader is not None:
        return tuple(reader(Path(path)))
    with open(path, encoding="utf-8") as handle:
        if path.endswith(".jsonl"):
            return tuple(json.loads(line) for line in handle if line.strip())
        return tuple(json.load(handle))


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
