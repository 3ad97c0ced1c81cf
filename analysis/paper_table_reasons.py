"""Why a paper table was not built from a results folder: one line per table, for the report.

analysis.paper_tables builds each table from whatever the results hold and gives an empty frame
when its layout does not apply; a reader then needs to know what the table asks of a study
(e.g. Table 1 compares task orders, so it needs one grid point per order). `missing_reasons`
says it in the results' own terms: which chains, how many grid points, which keys vary.
"""

from __future__ import annotations

import polars as pl

from analysis.labels import axis_label
from analysis.paper_tables import BUILDERS, setting_stages, varying_axes
from contract.methods import SFT


def _two_stage(trials: pl.DataFrame) -> pl.DataFrame:
    return setting_stages(trials).filter(pl.col("n_stages") == 2)


def _ordering(trials: pl.DataFrame) -> str:
    need = "Table 1 needs one grid point per order (two-stage chains of two different tasks, every stage SFT)"
    two = _two_stage(trials)
    if two.is_empty():
        return f"{need}: no chain here has two stages."
    points = two.group_by("chain").agg(n=pl.col("grid_point").n_unique()).sort("chain")
    gridded = points.filter(pl.col("n") > 1)
    if not gridded.is_empty():
        axes = varying_axes(trials)
        varied = f" (the grid varies {', '.join(axis_label(a) for a in axes)})" if axes else ""
        counts = ", ".join(f"{chain} has {n}" for chain, n in gridded.iter_rows())
        return f"{need}: {counts}{varied}; those chains are in the hyperparameter table."
    return f"{need}, with their first task evaluated after stage 2: none here."


def _first_stage_method(trials: pl.DataFrame) -> str:
    need = ("Table 2 needs two-stage chains that share their first task and their second stage "
            "but differ in the first stage's method")
    two = _two_stage(trials)
    if two.is_empty():
        return f"{need}: no chain here has two stages."
    methods = sorted({(m or SFT) for m in two.get_column("methods").list.get(0).to_list()})
    if len(methods) == 1:
        return f"{need}: every first stage here is {methods[0].upper()}."
    return f"{need}, with their first task evaluated after stage 2: none here."


def _hyperparameter(trials: pl.DataFrame) -> str:
    need = "Tables 4, 5 and 9 need a grid that varies exactly one setting within a two-stage chain"
    if _two_stage(trials).is_empty():
        return f"{need}: no chain here has two stages."
    axes = varying_axes(trials)
    if not axes:
        return f"{need}: no grid key varies here."
    if len(axes) > 1:
        return (f"{need}: here {len(axes)} vary ({', '.join(axis_label(a) for a in axes)}); "
                "analysis.paper_tables.hyperparameter_table(trials, evals, axis=...) builds it for one.")
    return f"{need}, with their first task evaluated after stage 2: none here."


def _benchmarks(trials: pl.DataFrame) -> str:
    return ("Tables 6–10 need an eval task's accuracy or safe % after stage 0 (the base model), "
            "stage 1 or a chain's final stage: none recorded here.")


REASONS = {
    "ordering": _ordering,
    "first_stage_method": _first_stage_method,
    "hyperparameter": _hyperparameter,
    "benchmarks": _benchmarks,
}


def missing_reasons(trials: pl.DataFrame, built: set[str] | list[str]) -> dict[str, str]:
    """One line per paper table (analysis.paper_tables.BUILDERS' names, in that order) that is
    not among `built`, saying what it needs and what these results hold instead."""
    return {name: REASONS[name](trials) for name in BUILDERS if name not in built}
