"""Every eval task's headline numbers after every stage: the paper's Table 6 layout
(accuracy on ARC-e, ARC-c, MMLU, ToxiGenQA, BBQ; safe % on ToxiGen and SaFeRDialogues), plus
the metrics the paper does not print (BBQ bias scores, the paper-exact mode's generated
accuracy and unparseable share).

Everything is read from the evals table: a task's metrics are whatever rows it has over its
whole set (group "all"). The classifier's own held-out accuracy describes the judge, not the
model, so it is listed apart (`judge_accuracy`).
"""

from __future__ import annotations

import polars as pl

from analysis.forgetting import SETTING, _stage_tasks, trial_overview
from analysis.table_columns import null_column, typed, typed_column
from contract.schema import ACCURACY_METRIC, ALL, HEADLINE_METRICS

Frame = pl.LazyFrame | pl.DataFrame

JUDGE_METRIC = "classifier_heldout_accuracy"
# Column order of the wide table: headline metrics first, then the extras.
METRIC_ORDER = (*HEADLINE_METRICS, "generated_accuracy", "unparseable", "bias_score_ambig", "bias_score_disambig")


def _overall_rows(evals: Frame) -> pl.LazyFrame:
    lazy = evals.lazy()
    names = lazy.collect_schema().names()
    if "metric" not in names:
        lazy = lazy.with_columns(metric=pl.lit(ACCURACY_METRIC))
    # Rows written before the `value` column existed are accuracy rows: their value is the accuracy.
    value = typed_column("evals", "value") if "value" in names else null_column("evals", "value")
    # The eval set's chance accuracy; rows written before the column existed have none.
    chance = typed_column("evals", "chance") if "chance" in names else null_column("evals", "chance")
    return (
        lazy.filter(pl.col("group") == ALL)
        .select(
            *typed("evals", "trial_id", "stage", "eval_task"),
            typed_column("evals", "metric").fill_null(ACCURACY_METRIC),
            typed_column("evals", "n"),
            pl.coalesce(value, typed_column("evals", "accuracy")).alias("value"),
            chance,
        )
    )


def stage_benchmarks(trials: Frame, evals: Frame) -> pl.DataFrame:
    """Long table, one row per (setting, stage, eval_task, metric): the seed mean and spread of
    the metric over the task's whole eval set, and the set's chance accuracy (a uniform guess;
    null for generation tasks and results written before evals had it). Stage 0 is the base
    model (stage_task null)."""
    overview = trial_overview(trials)
    rows = _overall_rows(evals).filter(pl.col("metric") != JUDGE_METRIC).collect()
    return (
        rows.join(overview.select("trial_id", *SETTING, "chain_stages", "seed"), on="trial_id", how="inner")
        .join(_stage_tasks(trials), on=["trial_id", "stage"], how="left")
        .group_by(*SETTING, "chain_stages", "stage", "eval_task", "metric")
        .agg(
            pl.col("stage_task").first(),
            n_seeds=pl.col("seed").n_unique().cast(pl.Int64),
            n=pl.col("n").max(),
            value=pl.col("value").mean(),
            value_std=pl.col("value").std(),
            chance=pl.col("chance").mean(),
        )
        .select(*SETTING, "chain_stages", "stage", "stage_task", "eval_task", "metric", "n_seeds", "n",
                "value", "value_std", "chance")
        .sort(*SETTING, "stage", "eval_task", "metric")
    )


def judge_accuracy(evals: Frame) -> pl.DataFrame:
    """The toxicity classifier's held-out accuracy, once per eval task that used it."""
    return (
        _overall_rows(evals).filter(pl.col("metric") == JUDGE_METRIC)
        .group_by("eval_task").agg(n=pl.col("n").max(), accuracy=pl.col("value").mean())
        .sort("eval_task").collect()
    )


def benchmark_columns(long: pl.DataFrame) -> list[tuple[str, str]]:
    """(eval_task, metric) pairs in display order: headline metrics of each task first."""
    pairs = long.select("eval_task", "metric").unique().rows()
    tasks = list(dict.fromkeys(long.sort("eval_task")["eval_task"].to_list()))

    def rank(pair: tuple[str, str]) -> tuple[int, int, str]:
        task, metric = pair
        order = METRIC_ORDER.index(metric) if metric in METRIC_ORDER else len(METRIC_ORDER)
        headline = 0 if metric in HEADLINE_METRICS else 1
        return headline, order * 100 + tasks.index(task), metric

    return sorted(pairs, key=rank)
