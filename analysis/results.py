"""Open a study's results folder (Parquet, one sub-folder per table) as lazy Polars frames.

Only Polars is used here, so a report can be rebuilt from the Parquet files alone on any
machine (no torch, ray or transformers needed).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

# The tables the engine writes (DESIGN.md, "Contracts"). Each lives in <results_dir>/<name>/*.parquet.
TABLE_NAMES = ("trials", "evals", "predictions", "train_log", "curvature", "weights")


@dataclass(frozen=True)
class ResultTables:
    """The tables of one results folder; a table the folder does not hold is None."""

    results_dir: Path
    evals: pl.LazyFrame
    trials: pl.LazyFrame | None = None
    predictions: pl.LazyFrame | None = None
    train_log: pl.LazyFrame | None = None
    curvature: pl.LazyFrame | None = None
    weights: pl.LazyFrame | None = None


def scan_table(results_dir: str | Path, table: str) -> pl.LazyFrame | None:
    """Lazily scan every .parquet file of one table (stacked), or None when it has no files.

    A missing folder and an empty folder mean the same thing (nothing written yet), so both
    give None rather than an error; the caller decides whether the table is required.
    """
    folder = Path(results_dir) / table
    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    if not files:
        return None
    # Files written at different times may differ in columns (the contract grows by adding
    # columns) or in integer/float width; a plain glob scan would refuse them, so each file
    # is scanned and the frames are stacked by column name, missing columns as null.
    return pl.concat([pl.scan_parquet(file) for file in files], how="diagonal_relaxed")


def load_results(results_dir: str | Path) -> ResultTables:
    """Open `results_dir` as a ResultTables of lazy frames.

    Raises FileNotFoundError naming the path when the folder does not exist or holds no
    evals, since every analysis starts from the evals table.
    """
    root = Path(results_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"results folder not found: {root}")
    tables = {name: scan_table(root, name) for name in TABLE_NAMES}
    if tables["evals"] is None:
        raise FileNotFoundError(
            f"no evals in results folder {root}: expected Parquet files in {root / 'evals'}"
        )
    return ResultTables(results_dir=root, **tables)
