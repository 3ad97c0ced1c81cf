"""File digests: the size and streaming sha256 of every file of a folder, and what differs.

The stage store records them for each checkpoint it publishes (contract.records.StageRecord
`checkpoint_files`) and checks them before a stored checkpoint is reused
(trainables.stage_store): the sizes always (a stat per file), the hashes when asked.

Why sha256 (and not contract.content_hash, which hashes small JSON payloads, nor a faster
non-cryptographic hash such as xxh3): it is the standard library's, so checking a record needs
nothing but `sha256sum`; it streams in fixed-size blocks, so a 13-27 GB checkpoint of a 7B model
never sits in memory; and with the CPU's SHA extensions it runs at about 2 GB/s per core
(measured on this project's machines), about the speed a checkpoint is read from disk, so a
hash check costs roughly one more read of the checkpoint. The full hex digest is kept: it is
what `sha256sum` prints.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

BLOCK_BYTES = 8 << 20
"""Bytes read per step of the streaming hash."""


@dataclass(frozen=True)
class FileDigest:
    """One file's size in bytes and sha256 (hex)."""

    size: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"size": self.size, "sha256": self.sha256}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "FileDigest":
        return cls(size=int(data["size"]), sha256=str(data["sha256"]))


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, read in BLOCK_BYTES blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(BLOCK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def folder_digests(folder: str | Path) -> dict[str, FileDigest]:
    """Every file under `folder` (recursively), by its POSIX path relative to `folder`, sorted."""
    root = Path(folder)
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {p.relative_to(root).as_posix(): FileDigest(size=p.stat().st_size, sha256=file_sha256(p))
            for p in files}


def folder_problems(folder: str | Path, expected: Mapping[str, FileDigest], *, hashes: bool) -> list[str]:
    """What differs between `folder` and its recorded digests: a missing file, a size that
    differs, and (with `hashes`) a sha256 that differs; empty when the folder is as recorded.
    Files the record does not name are not looked at. Sizes are compared for every file first,
    so a truncated file is found without reading any."""
    root = Path(folder)
    if not root.is_dir():
        return [f"{root} is missing"]
    problems = []
    for name, want in expected.items():
        path = root / name
        if not path.is_file():
            problems.append(f"{name} is missing")
        elif (size := path.stat().st_size) != want.size:
            problems.append(f"{name} has {size} bytes, {want.size} were written")
    if hashes and not problems:
        problems = [f"{name}: sha256 {got[:12]}… differs from the {want.sha256[:12]}… written"
                    for name, want in expected.items() if (got := file_sha256(root / name)) != want.sha256]
    return problems
