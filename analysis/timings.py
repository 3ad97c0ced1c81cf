"""Where a study's time went: the `timings` table summed per phase (contract.schema defines the
phases and what each row counts).

`phase_summary` is what `study status` prints and the report's "Time and cost" table shows:
per phase, the seconds of every trial's rows together, their share of the total, the examples
and tokens the phase processed, and device-hours (seconds × the devices the trial held: GPUs,
or CPUs where it held no GPU).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from analysis.table_columns import typed
from contract.layout import StudyLayout
from contract.schema import TIMING_PHASES, columns

SUMMARY_COLUMNS = ("phase", "seconds", "share", "examples", "tokens", "gpu_hours", "cpu_hours")


def read_timings(results_dir: str | Path, trial_ids: set[str] | None = None) -> pl.DataFrame | None:
    """The study's timings rows (only `trial_ids`' when given), typed; None when it has none."""
    folder = StudyLayout(Path(results_dir)).table("timings")
    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    if not files:
        return None
    frame = pl.concat([pl.read_parquet(f) for f in files], how="diagonal_relaxed")
    frame = frame.select(typed("timings", *columns("timings")))
    return frame.filter(pl.col("trial_id").is_in(sorted(trial_ids))) if trial_ids is not None else frame


def phase_summary(timings: pl.DataFrame) -> pl.DataFrame:
    """One row per phase present, in contract.schema.TIMING_PHASES order: seconds, share of all
    seconds, examples and tokens (null where no row counted any), GPU- and CPU-hours."""
    rows = timings.with_columns(
        (pl.col("seconds") * pl.col("devices").fill_null(1) / 3600).alias("hours"))
    summary = rows.group_by("phase").agg(
        pl.col("seconds").sum(),
        pl.when(pl.col("examples").is_not_null().any()).then(pl.col("examples").sum()).alias("examples"),
        pl.when(pl.col("tokens").is_not_null().any()).then(pl.col("tokens").sum()).alias("tokens"),
        pl.col("hours").filter(pl.col("device_kind") == "gpu").sum().alias("gpu_hours"),
        pl.col("hours").filter(pl.col("device_kind") != "gpu").sum().alias("cpu_hours"),
    )
    total = summary["seconds"].sum()
    order = {name: i for i, name in enumerate(TIMING_PHASES)}
    return (summary
            .with_columns((pl.col("seconds") / total if total else pl.lit(0.0)).alias("share"),
                          pl.col("phase").replace_strict(order, default=len(order)).alias("_order"))
            .sort("_order", "phase").select(SUMMARY_COLUMNS))


def _count(value: int | None) -> str:
    return "–" if value is None else f"{value:,}"


def render_phase_summary(summary: pl.DataFrame) -> list[str]:
    """Lines of `study status`: one per phase, then the total."""
    lines = [f"  {'phase':<16}{'seconds':>10}{'share':>8}{'examples':>12}{'tokens':>14}"]
    for r in summary.iter_rows(named=True):
        lines.append(f"  {r['phase']:<16}{r['seconds']:>10.1f}{r['share']:>8.1%}"
                     f"{_count(r['examples']):>12}{_count(r['tokens']):>14}")
    lines.append(f"  {'total':<16}{summary['seconds'].sum():>10.1f}")
    return lines
