"""Atomic writes: a file or a folder appears whole or not at all.

Everything is written under a hidden temporary name in the target's own folder (so the final
rename stays on one filesystem) and renamed into place; a reader, or a process killed in the
middle, never leaves or sees half of it. Rename is atomic on POSIX filesystems.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def write_file_atomic(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call write(temporary path), then rename it to `path` (replacing any previous file)."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
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
