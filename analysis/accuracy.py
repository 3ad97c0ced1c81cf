"""Accuracy per (trial, stage, eval task, group): read from `evals`, or rebuilt from `predictions`."""

from __future__ import annotations

import polars as pl

from analysis.table_columns import null_column, typed, typed_column
from contract.methods import SCORE_MODE
from contract.schema import ACCURACY_METRIC, ALL, HEADLINE_METRICS, PRIMARY_GROUPINGS, SAFE_METRIC

Frame = pl.LazyFrame | pl.DataFrame

ACCURACY_COLUMNS = ("trial_id", "stage", "eval_task", "metric", "group", "n", "correct", "accuracy")

# metric="primary": each eval task's headline metric, the first of contract.schema's
# HEADLINE_METRICS it has in `evals`. Other groupings than the primary ones (BBQ "condition",
# MMLU "category", ...) are read with grouping=<name>.
PRIMARY = "primary"


def _with_metric_column(lazy: pl.LazyFrame) -> pl.LazyFrame:
    # A row without a metric (no `metric` column, or a null from an older file stacked with
    # newer ones) is accuracy: the contract names the metric only where a task has several.
    if "metric" not in lazy.collect_schema().names():
        lazy = lazy.with_columns(null_column("evals", "metric"))
    return lazy.with_columns(pl.col("metric").fill_null(ACCURACY_METRIC))


def primary_metrics(evals: Frame) -> dict[str, str]:
    """{eval_task: its headline metric}: the first of HEADLINE_METRICS the task has rows of.
    Tasks with none of them (only a judge's metric, say) are left out."""
    present = (
        _with_metric_column(evals.lazy())
        .filter(pl.col("metric").is_in(HEADLINE_METRICS))
        .select(typed_column("evals", "eval_task"), "metric")
        .unique()
        .collect()
    )
    chosen: dict[str, str] = {}
    for task, metric in sorted(present.iter_rows(), key=lambda row: HEADLINE_METRICS.index(row[1])):
        chosen.setdefault(task, metric)
    return chosen


def generation_tasks(evals: Frame) -> list[str]:
    """Eval tasks whose headline metric is safe: their per-example records are the
    generate-mode predictions (correct = the continuation was judged safe)."""
    return sorted(task for task, metric in primary_metrics(evals).items() if metric == SAFE_METRIC)


def stage_accuracy(evals: Frame, *, metric: str = ACCURACY_METRIC, grouping: str | None = None) -> pl.DataFrame:
    """Rows of `evals` for one metric: trial_id, stage, eval_task, metric, group, n, correct, accuracy.

    metric="primary" takes each eval task's headline metric (primary_metrics): accuracy, or
    safe for a generation task; the `metric` column says which. The value column is still
    called accuracy (a fraction, higher is better).

    grouping=None keeps group "all" and the task's primary groups; a grouping name (e.g.
    "condition") keeps "all" and that grouping's groups instead.
    Keys are cast to the contract's types (trial_id str, stage i64) so joins with `trials`
    work even if a writer stored a narrower integer. A row without a metric is accuracy; a
    row without a grouping (files written before the column existed) is "all" or a primary
    group.
    """
    lazy = _with_metric_column(evals.lazy())
    if "grouping" not in lazy.collect_schema().names():
        lazy = lazy.with_columns(null_column("evals", "grouping"))
    wanted = PRIMARY_GROUPINGS if grouping is None else (ALL, grouping)
    if metric == PRIMARY:
        chosen = primary_metrics(evals)
        is_metric = pl.col("metric") == typed_column("evals", "eval_task").replace_strict(
            chosen, default=None, return_dtype=pl.String)
    else:
        is_metric = pl.col("metric") == metric
    return (
        lazy.filter(is_metric & (pl.col("grouping").is_null() | pl.col("grouping").is_in(wanted)))
        .select(typed("evals", *ACCURACY_COLUMNS))
        .sort("trial_id", "stage", "eval_task", "group")
        .collect()
    )


def accuracy_from_predictions(predictions: Frame) -> pl.DataFrame:
    """Recompute the evals accuracy rows from per-example predictions.

    One row for group "all" (every example of the task) and one per demographic group; an
    example listing several groups counts toward each of them, once per group even if the
    list repeats a name. Columns match `stage_accuracy`, with metric "accuracy", so the two
    can be compared directly. Only option-scoring predictions count (mode "score", or no mode
    in files written before the column existed); generate-mode rows are another metric.
    """
    lazy = predictions.lazy()
    if "mode" in lazy.collect_schema().names():
        lazy = lazy.filter(pl.col("mode").is_null() | (pl.col("mode") == SCORE_MODE))
    lazy = lazy.select(typed("predictions", "trial_id", "stage", "eval_task", "example_id", "groups", "correct"))
    keys = ["trial_id", "stage", "eval_task"]
    overall = lazy.with_columns(group=pl.lit(ALL))
    per_group = (
        lazy.with_columns(group=pl.col("groups").list.unique())
        .explode("group")
        # An example with no groups yields a null after explode: it only counts toward "all".
        .filter(pl.col("group").is_not_null() & (pl.col("group") != ALL))
    )
    counted = (
        pl.concat([overall.drop("groups"), per_group.drop("groups")], how="vertical")
        .group_by(*keys, "group")
        .agg(
            n=pl.len().cast(pl.Int64),
            correct=pl.col("correct").sum().cast(pl.Int64),
        )
        .with_columns(
            metric=pl.lit("accuracy"),
            accuracy=pl.col("correct") / pl.col("n"),
        )
    )
    return counted.select(ACCURACY_COLUMNS).sort("trial_id", "stage", "eval_task", "group").collect()
