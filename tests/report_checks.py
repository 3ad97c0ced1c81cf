"""Checks on a written report folder, shared by the report tests and the end-to-end study test."""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl

# Interval columns whose estimate column has another name.
_ESTIMATE_OF = {("group_forgetting", "group_forgetting"): "forgetting", ("group_forgetting", "difference"): "biased_forgetting"}


def assert_every_interval_contains_its_estimate(report: Path) -> None:
    """Every interval the report writes contains its point estimate: in every Parquet table
    (<x>_low/<x>_high around <x>, low/high around estimate) and in the Markdown text
    ("x [low, high]"). Fails if it finds no interval at all, so it cannot pass vacuously."""
    checked = 0
    for path in sorted((report / "tables").glob("*.parquet")):
        table = pl.read_parquet(path)
        for column in table.columns:
            if not column.endswith("low") or column.replace("low", "high") not in table.columns:
                continue
            base = column[: -len("_low")] if column != "low" else None
            estimate = "estimate" if base is None else _ESTIMATE_OF.get((path.stem, base), base)
            rows = table.select(low=column, high=column.replace("low", "high"), estimate=estimate).drop_nulls()
            bad = rows.filter((pl.col("low") > pl.col("estimate") + 1e-12) | (pl.col("high") < pl.col("estimate") - 1e-12))
            assert bad.is_empty(), (path.name, column, bad)
            checked += rows.height
    shown = re.findall(r"(-?\d+\.\d+) \[(-?\d+\.\d+), (-?\d+\.\d+)\]", (report / "report.md").read_text(encoding="utf-8"))
    for estimate, low, high in shown:
        assert float(low) <= float(estimate) <= float(high), (estimate, low, high)
    assert checked > 0 and shown
