"""The report's header: the study's settings in one list (model, chains, steps, seeds, train and
eval sizes, the grid), so a table or figure copied out of the report can be read alone, and the
chains' orders in display names that the figures label their settings with.

Everything is read from the results' `trials` and `evals` rows (what the runs recorded), never
from the study file: a report of merged or hand-filtered results describes what it shows.
"""

from __future__ import annotations

import polars as pl

from analysis.labels import grid_words, task_label
from analysis.paper_tables import setting_stages
from contract.schema import ALL, HEADLINE_METRICS


def chain_orders(trials: pl.DataFrame) -> dict[str, str]:
    """chain -> its order in display names, e.g. {"tqa_arc": "ToxiGenQA → ARC"} (methods named
    when a stage is not SFT: "DPO ToxiGenQA → SFT ARC")."""
    if trials.is_empty():
        return {}
    stages = setting_stages(trials)
    return dict(stages.group_by("chain", maintain_order=True).agg(pl.col("order").first()).iter_rows())


def _values(frame: pl.DataFrame, column: str) -> list:
    if column not in frame.columns:
        return []
    return sorted(frame.get_column(column).drop_nulls().unique().to_list())


def _listed(values: list, unit: str = "") -> str:
    text = ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)
    return f"{text}{unit}"


def _per_stage(trials: pl.DataFrame, column: str) -> str | None:
    """One value for every stage ("150"), or each stage's ("stage 1: 100; stage 2: 50")."""
    if column not in trials.columns or trials.get_column(column).null_count() == trials.height:
        return None
    everywhere = _values(trials, column)
    if len(everywhere) == 1:
        return _listed(everywhere)
    by_stage = trials.group_by("stage").agg(pl.col(column).drop_nulls().unique().sort()).sort("stage")
    return "; ".join(f"stage {stage}: {_listed(values)}" for stage, values in by_stage.iter_rows())


def _eval_sets(evals: pl.DataFrame) -> str | None:
    if evals.is_empty() or "eval_task" not in evals.columns:
        return None
    rows = evals.filter(pl.col("group") == ALL)
    if "metric" in rows.columns:
        rows = rows.filter(pl.col("metric").is_null() | pl.col("metric").is_in(HEADLINE_METRICS))
    sizes = rows.group_by("eval_task").agg(pl.col("n").max()).sort("eval_task")
    return ", ".join(f"{task_label(task)} ({n} examples)" for task, n in sizes.iter_rows())


def study_settings(trials: pl.DataFrame, evals: pl.DataFrame) -> list[str]:
    """The header's lines ("Model: tiny", "Steps per stage: 150", ...), each only where the
    results record it."""
    lines: list[str] = []
    models = _values(trials, "model")
    if models:
        lines.append(f"Model: {_listed(models)}")
    orders = chain_orders(trials)
    if orders:
        lines.append("Chains: " + ", ".join(f"{order} ({chain})" for chain, order in sorted(orders.items())))
    grids = _values(trials, "grid_point")
    worded = [grid_words(g) for g in grids if grid_words(g)]
    if worded:
        lines.append("Grid points: " + "; ".join(worded))
    for column, name in (("steps", "Steps per stage"), ("learning_rate", "Learning rate"),
                         ("batch_size", "Batch size"), ("train_size", "Training examples per stage")):
        text = _per_stage(trials, column)
        if text is not None:
            lines.append(f"{name}: {text}")
    seeds = _values(trials, "seed")
    if seeds:
        lines.append(f"Seeds: {_listed(seeds)} ({len(seeds)} seed{'s' if len(seeds) != 1 else ''})")
    eval_sets = _eval_sets(evals)
    if eval_sets:
        lines.append(f"Eval sets: {eval_sets}")
    return lines
