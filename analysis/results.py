"""Open a study's results folder (Parquet, one sub-folder per table) as lazy Polars frames.

Only Polars is used here, so a report can be rebuilt from the Parquet files alone on any
machine (no torch, ray or transformers needed).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from analysis.weight_norms import with_weight_norms
from contract.layout import StudyLayout
from contract.records import read_trial_summaries
from contract.schema import TABLE_NAMES


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
    replay: pl.LazyFrame | None = None  # which examples each replaying stage mixed in
    timings: pl.LazyFrame | None = None  # where each trial's time went (analysis.timings)


def scan_table(results_dir: str | Path, table: str) -> pl.LazyFrame | None:
    """Lazily scan every .parquet file of one table (stacked), or None when it has no files.

    A missing folder and an empty folder mean the same thing (nothing written yet), so both
    give None rather than an error; the caller decides whether the table is required.
    """
    folder = StudyLayout(Path(results_dir)).table(table)
    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    if not files:
        return None
    # Files written at different times may differ in columns (the contract grows by adding
    # columns) or in integer/float width; a plain glob scan would refuse them, so each file
    # is scanned and the frames are stacked by column name, missing columns as null.
    return pl.concat([pl.scan_parquet(file) for file in files], how="diagonal_relaxed")


def current_trial_ids(results_dir: str | Path) -> set[str] | None:
    """Trial ids of the latest `study run` into this folder (its plans.json), or None if absent."""
    path = StudyLayout(Path(results_dir)).plans
    if not path.is_file():
        return None
    return {plan.trial_id for plan in read_trial_summaries(path)}


def load_results(results_dir: str | Path, *, all_trials: bool = False) -> ResultTables:
    """Open `results_dir` as a ResultTables of lazy frames.

    By default only the trials of the folder's latest run (plans.json) are kept: a rerun with
    other non-grid settings (say, more steps) gets new trial ids, and its older trials, still
    in the Parquet files, must not be averaged into the same (chain, grid point) setting.
    `all_trials=True` keeps every trial found. The weights table carries mean_sq_* and rms_*
    beside its raw l2_sq_* sums (analysis.weight_norms).

    Raises FileNotFoundError naming the path when the folder does not exist or holds no
    evals, since every analysis starts from the evals table.
    """
    root = Path(results_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"results folder not found: {root}")
    tables = {name: scan_table(root, name) for name in TABLE_NAMES}
    keep = None if all_trials else current_trial_ids(root)
    if keep is not None:
        tables = {name: None if frame is None else frame.filter(pl.col("trial_id").is_in(sorted(keep)))
                  for name, frame in tables.items()}
    if tables["weights"] is not None:
        # Every normalisation of the weight change beside the stored raw sums (analysis.weight_norms).
        tables["weights"] = with_weight_norms(tables["weights"])
    if tables["evals"] is None:
        raise FileNotFoundError(
            f"no evals in results folder {root}: expected Parquet files in {StudyLayout(root).table('evals')}"
        )
    return ResultTables(results_dir=root, **tables)
