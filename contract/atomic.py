"""Atomic writes: a file or a folder appears whole or not at all.

Everything is written under a hidden temporary name in the target's own folder (so the final
rename stays on one filesystem) and renamed into place; a reader, or a process killed in the
middle, never leaves or sees half of it. Rename is atomic on POSIX filesystems.

A write that fails (disk full, permission denied, a folder that is a file, a writer raising
mid-file) removes its temporary file and raises WriteError, an OSError naming the path: the
trial loop (trainables.chain) fails the trial with that reason, and `study run --resume` runs
it again. Files are created with the mode an ordinary `open` gives (0666 less the umask: 0644
under the usual umask 022), like the folders around them, so a study's results are readable
by the group and others exactly as its folders are (tempfile.mkstemp would make them 0600).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class WriteError(OSError):
    """A file, record or checkpoint could not be written; nothing partial was left in its place.
    `path`: what was being written; `reason`: the error the filesystem or the writer gave."""

    def __init__(self, path: str | Path, reason: str, errno: int | None = None):
        super().__init__(errno, f"could not write {path}: {reason}")
        self.path, self.reason = str(path), reason

    def __str__(self) -> str:
        return self.strerror

    def __reduce__(self):  # picklable across Ray processes with its own arguments
        return type(self), (self.path, self.reason, self.errno)


@contextlib.contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Turn an OSError raised while writing `path` into a WriteError naming it."""
    try:
        yield
    except WriteError:
        raise
    except OSError as exc:
        raise WriteError(path, f"{type(exc).__name__}: {exc}", exc.errno) from exc


def _new_temporary(final: Path) -> Path:
    """A new, empty hidden file beside `final`, created as `open` would (mode 0666 less the umask)."""
    while True:
        tmp = final.parent / f".{final.name}.{secrets.token_hex(6)}.tmp"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue


def write_file_atomic(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call write(temporary path), then rename it to `path` (replacing any previous file).
    WriteError when any of it fails; the temporary file is removed."""
    final = Path(path)
    with writing(final):
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = _new_temporary(final)
        try:
            write(tmp)
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    return final


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_file_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json_atomic(path: str | Path, payload: Any, *, indent: int = 1, sort_keys: bool = True) -> Path:
    return write_text_atomic(path, json.dumps(payload, indent=indent, sort_keys=sort_keys))


def publish_folder(target: Path, build: Callable[[Path], None], *, marker: str, replace: bool = False) -> None:
    """Run build(staging folder), then rename it to `target`.

    For entries that several processes (Ray workers) may build at the same time: when two
    build the same one, the first rename wins and the other's copy is discarded. marker: a file
    inside a complete entry; a rename that fails because another process published first is
    fine when the marker is there. replace=True removes an existing (stale) target first.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.staging-", dir=target.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the entry is shared by the study's workers
    try:
        build(staging)
        if replace and target.exists():
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.rename(staging, target)
        except OSError:
            if not (target / marker).exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def replace_folder(target: str | Path, build: Callable[[Path], T]) -> T:
    """Run build(staging folder), then swap the staging folder in for `target`; build's result.

    For a folder one process rewrites as a whole (the report): it is built under a hidden name
    beside `target`, so a build that fails or is killed leaves the previous `target` as it was
    (a killed build leaves only its hidden staging folder). The swap is two renames (the old
    folder aside, the new one in place) and then the old folder's removal; only a process
    killed between the two renames leaves no `target`, with the previous one under its hidden
    `.old` name beside it. OSErrors are raised as WriteError.
    """
    final = Path(target)
    with writing(final):
        final.parent.mkdir(parents=True, exist_ok=True)
        token = secrets.token_hex(6)
        staging = final.parent / f".{final.name}.staging-{token}"
        old = final.parent / f".{final.name}.old-{token}"
        staging.mkdir()  # mode 0777 less the umask, like every other folder
        try:
            result = build(staging)
            if final.exists():
                os.rename(final, old)
            os.rename(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            if old.exists() and not final.exists():
                os.rename(old, final)
            raise
        shutil.rmtree(old, ignore_errors=True)
    return result
