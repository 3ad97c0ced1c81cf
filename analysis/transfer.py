"""Chains of any length: the accuracy matrix R[i][j] and backward transfer (BWT).

For a trial whose chain trains tasks T_1 … T_n in stages 1 … n:
- R[i][j] = accuracy on T_j (group "all") after stage i, for every stage i ≥ j (and i = 0,
  the base model); a task trained twice has one column per stage that trained it;
- forgetting of T_j after stage i > j = R[j][j] − R[i][j] (for j = 1 this is Forgetting_A);
- BWT = (1 / (n − 1)) Σ_{j < n} (R[n][j] − R[j][j])   (Lopez-Paz & Ranzato, 2017): the mean change
  of every earlier task's accuracy from just after it was trained to the end of the chain;
  negative = forgetting. For a two-stage chain BWT = −Forgetting_A.
Settings (chain, grid point) average R over their seeds first, as the forgetting tables do;
BWT is linear in R, so this equals the mean of per-seed BWT.
"""

from __future__ import annotations

import polars as pl

from analysis.accuracy import Frame, stage_accuracy
from analysis.forgetting import SETTING
from analysis.table_columns import setting_grid_point, typed_column
from contract.schema import ALL


def _trial_matrix(trials: Frame, evals: Frame, *, metric: str) -> pl.DataFrame:
    """Per trial: trained_stage j, task T_j, after_stage i ≥ j (or 0), R[i][j]."""
    stages = trials.lazy().select(
        typed_column("trials", "trial_id"), "chain", setting_grid_point(), "seed",
        typed_column("trials", "stage").alias("trained_stage"), pl.col("task").alias("trained_task"),
    ).collect()
    overall = stage_accuracy(evals, metric=metric).filter(pl.col("group") == ALL)
    return (
        stages.join(overall.select("trial_id", pl.col("stage").alias("after_stage"),
                                   pl.col("eval_task").alias("trained_task"), "accuracy"),
                    on=["trial_id", "trained_task"])
        .filter((pl.col("after_stage") >= pl.col("trained_stage")) | (pl.col("after_stage") == 0))
        .sort("trial_id", "trained_stage", "after_stage")
    )


def accuracy_matrix(trials: Frame, evals: Frame, *, metric: str = "accuracy") -> pl.DataFrame:
    """Seed-mean R[after_stage][trained_stage] per setting, with forgetting since the task was trained."""
    per_trial = _trial_matrix(trials, evals, metric=metric)
    matrix = (
        per_trial.group_by(*SETTING, "trained_stage", "trained_task", "after_stage")
        .agg(accuracy=pl.col("accuracy").mean(), n_seeds=pl.col("seed").n_unique())
    )
    diagonal = matrix.filter(pl.col("after_stage") == pl.col("trained_stage")).select(
        *SETTING, "trained_stage", pl.col("accuracy").alias("accuracy_when_trained"))
    return (
        matrix.join(diagonal, on=[*SETTING, "trained_stage"], how="left")
        .with_columns(forgetting=pl.when(pl.col("after_stage") > pl.col("trained_stage"))
                      .then(pl.col("accuracy_when_trained") - pl.col("accuracy")))
        .drop("accuracy_when_trained")
        .sort(*SETTING, "trained_stage", "after_stage")
    )


def backward_transfer(trials: Frame, evals: Frame, *, metric: str = "accuracy") -> pl.DataFrame:
    """Per setting: n_stages, BWT at the final stage, and n_seeds (chains of ≥ 2 stages)."""
    matrix = accuracy_matrix(trials, evals, metric=metric)
    final = matrix.group_by(SETTING).agg(n_stages=pl.col("trained_stage").max())
    ends = matrix.join(final, on=SETTING).filter(
        (pl.col("after_stage") == pl.col("n_stages")) & (pl.col("trained_stage") < pl.col("n_stages")))
    return (
        ends.group_by(SETTING)
        .agg(n_stages=pl.col("n_stages").first(), bwt=(-pl.col("forgetting")).mean(),
             n_seeds=pl.col("n_seeds").min())
        .sort(SETTING)
    )
