"""Forgetting, worst-group forgetting and biased forgetting (paper §2.4) from `trials` + `evals`.

Definitions, for a trial whose chain is A → B (→ C ...), A being the task of stage 1:
- Forgetting_A(s)      = Acc_A(after stage 1) − Acc_A(after stage s), on group "all";
- Forgetting_{A,g}(s)  = the same on A's examples of group g (every group g ≠ "all");
- WG forgetting        = max_g Forgetting_{A,g}, with the group that attains it (ties: the
                         group name first in alphabetical order);
- BiasedForgetting_{A,g} = Forgetting_{A,g} − Forgetting_A; its maximum is WG − Forgetting_A.
"The" forgetting of a trial is at its final stage; the curve covers every stage s = 2..n.
Accuracies are fractions in [0, 1] everywhere in these frames (the report prints points ×100).

Seeds: a *setting* is (chain, grid_point); the paper reports each setting as the mean over
its seeds. Per group and stage we first average the accuracies over the setting's trials and
then take differences of those means. Because forgetting is linear in the accuracies this is
the mean of the per-seed forgetting; WG forgetting is then the max over groups of the
seed-mean per-group forgetting (not the mean of per-seed maxima), which is how the paper's
tables read. A trial counts toward a (setting, stage) only where it has both the stage-1 and
the stage-s evaluation of A, so an unfinished trial never mixes seed sets; n_seeds says how
many distinct seeds each number averages.
"""

from __future__ import annotations

import polars as pl

from analysis.accuracy import Frame, stage_accuracy
from analysis.grid import expand_grid_point
from analysis.table_columns import setting_grid_point, typed
from contract.schema import ALL

# The columns that identify a setting; the seeds of a setting are averaged.
SETTING = ["chain", "grid_point"]


def trial_overview(trials: Frame) -> pl.DataFrame:
    """One row per trial: its setting, seed, first/final task, final stage and stage-1 settings.

    chain_stages spells the chain out, e.g. "sft:toxigen_qa → sft:arc_easy".
    """
    staged = trials.lazy().with_columns(*typed("trials", "trial_id", "stage"), setting_grid_point())
    first = pl.col("stage") == 1
    return (
        staged.sort("trial_id", "stage")
        .group_by("trial_id")
        .agg(
            pl.col("chain").first(),
            pl.col("grid_point").first(),
            pl.col("seed").first(),
            first_task=pl.col("task").filter(first).first(),
            final_task=pl.col("task").last(),
            final_stage=pl.col("stage").max(),
            first_learning_rate=pl.col("learning_rate").filter(first).first().cast(pl.Float64),
            first_batch_size=pl.col("batch_size").filter(first).first(),
            chain_stages=pl.concat_str(
                pl.col("method"), pl.lit(":"), pl.col("task"), ignore_nulls=True
            ).str.join(" → "),
        )
        .sort("trial_id")
        .collect()
    )


def _stage_tasks(trials: Frame) -> pl.DataFrame:
    """trial_id, stage, stage_task: which task each stage trained on."""
    return (
        trials.lazy()
        .select(*typed("trials", "trial_id", "stage"), stage_task=pl.col("task"))
        .unique(["trial_id", "stage"], keep="first")
        .collect()
    )


def trial_forgetting(trials: Frame, evals: Frame, *, metric: str) -> pl.DataFrame:
    """Per (trial, later stage, group) forgetting of the first task, grid_point not expanded."""
    overview = trial_overview(trials)
    on_first_task = (
        stage_accuracy(evals, metric=metric)
        .join(overview, on="trial_id", how="inner")
        .filter(pl.col("eval_task") == pl.col("first_task"))
    )
    reference = on_first_task.filter(pl.col("stage") == 1).select(
        "trial_id", "group", acc_after_first_stage="accuracy"
    )
    later = on_first_task.filter(
        (pl.col("stage") >= 2) & (pl.col("stage") <= pl.col("final_stage"))
    ).select(
        "trial_id", "chain", "grid_point", "seed", "first_task", "final_stage", "group",
        after_stage="stage", acc_after_stage="accuracy",
    )
    rows = later.join(reference, on=["trial_id", "group"], how="inner").with_columns(
        forgetting=pl.col("acc_after_first_stage") - pl.col("acc_after_stage")
    )
    overall = rows.filter(pl.col("group") == ALL).select(
        "trial_id", "after_stage", overall_forgetting="forgetting"
    )
    return (
        rows.join(overall, on=["trial_id", "after_stage"], how="left")
        .join(
            _stage_tasks(trials).rename({"stage": "after_stage"}),
            on=["trial_id", "after_stage"],
            how="left",
        )
        .with_columns(
            is_final_stage=pl.col("after_stage") == pl.col("final_stage"),
            biased_forgetting=pl.col("forgetting") - pl.col("overall_forgetting"),
        )
        .select(
            "trial_id", *SETTING, "seed", "first_task", "after_stage", "stage_task",
            "is_final_stage", "group", "acc_after_first_stage", "acc_after_stage",
            "forgetting", "biased_forgetting",
        )
        .sort("trial_id", "after_stage", "group")
    )


def forgetting_by_trial(trials: Frame, evals: Frame, *, metric: str = "accuracy") -> pl.DataFrame:
    """One row per (trial_id, after_stage, group), for every stage after the first.

    group "all" is the whole first task; biased_forgetting is the row's forgetting minus the
    trial's "all" forgetting at the same stage (so 0 on the "all" row). Grid values are
    expanded into one column per key after grid_point.
    """
    return expand_grid_point(trial_forgetting(trials, evals, metric=metric))


def _setting_means(trials: Frame, evals: Frame, *, metric: str) -> pl.DataFrame:
    """Per (setting, after_stage, group): seed-mean accuracies and their forgetting."""
    per_trial = trial_forgetting(trials, evals, metric=metric)
    return (
        per_trial.group_by(*SETTING, "after_stage", "group")
        .agg(
            pl.col("first_task").first(),
            pl.col("stage_task").first(),
            pl.col("is_final_stage").first(),
            n_seeds=pl.col("seed").n_unique().cast(pl.Int64),
            acc_after_first_stage=pl.col("acc_after_first_stage").mean(),
            acc_after_stage=pl.col("acc_after_stage").mean(),
        )
        # Difference of the seed means (see the module docstring for why this is the choice).
        .with_columns(forgetting=pl.col("acc_after_first_stage") - pl.col("acc_after_stage"))
        .sort(*SETTING, "after_stage", "group")
    )


def _group_rows(means: pl.DataFrame) -> pl.DataFrame:
    """Per-group rows of `means` with overall forgetting, biased forgetting and the worst-group flag."""
    overall = means.filter(pl.col("group") == ALL).select(
        *SETTING, "after_stage", overall_forgetting="forgetting"
    )
    stage_keys = [*SETTING, "after_stage"]
    return (
        means.filter(pl.col("group") != ALL)
        .join(overall, on=stage_keys, how="left")
        .with_columns(biased_forgetting=pl.col("forgetting") - pl.col("overall_forgetting"))
        # Rank groups within each (setting, stage): most forgetting first, ties by name.
        .sort(*stage_keys, "forgetting", "group", descending=[False] * 3 + [True, False])
        .with_columns(is_worst_group=pl.int_range(pl.len()).over(stage_keys) == 0)
        .select(
            *SETTING, "first_task", "after_stage", "stage_task", "is_final_stage", "group",
            "n_seeds", "acc_after_first_stage", "acc_after_stage", "forgetting",
            "overall_forgetting", "biased_forgetting", "is_worst_group",
        )
        .sort(*stage_keys, "group")
    )


def group_forgetting(
    trials: Frame, evals: Frame, *, all_stages: bool = False, metric: str = "accuracy"
) -> pl.DataFrame:
    """Per (setting, group): seed-mean forgetting of the first task and biased forgetting.

    By default only each setting's final stage; all_stages=True gives every stage s ≥ 2.
    overall_forgetting is Forgetting_A of the same setting and stage; biased_forgetting =
    forgetting − overall_forgetting; is_worst_group marks the group with the most forgetting.
    A first task without demographic groups contributes no rows.
    """
    rows = _group_rows(_setting_means(trials, evals, metric=metric))
    if not all_stages:
        rows = rows.filter(pl.col("is_final_stage"))
    return expand_grid_point(rows)


def _curve(trials: Frame, evals: Frame, *, metric: str) -> pl.DataFrame:
    means = _setting_means(trials, evals, metric=metric)
    stage_keys = [*SETTING, "after_stage"]
    worst = _group_rows(means).filter(pl.col("is_worst_group")).select(
        *stage_keys,
        wg_forgetting="forgetting",
        worst_group="group",
        max_biased_forgetting="biased_forgetting",
    )
    return (
        means.filter(pl.col("group") == ALL)
        .join(worst, on=stage_keys, how="left")
        .select(
            *SETTING, "first_task", "after_stage", "stage_task", "is_final_stage", "n_seeds",
            acc_first_task_after_first_stage="acc_after_first_stage",
            acc_first_task_after_stage="acc_after_stage",
            forgetting="forgetting",
            wg_forgetting="wg_forgetting",
            worst_group="worst_group",
            max_biased_forgetting="max_biased_forgetting",
        )
        .sort(*stage_keys)
    )


def forgetting_curve(trials: Frame, evals: Frame, *, metric: str = "accuracy") -> pl.DataFrame:
    """Per (setting, after_stage), s = 2..n: seed-mean forgetting of the first task, WG
    forgetting (and its group) and max biased forgetting after each later stage.

    wg_forgetting, worst_group and max_biased_forgetting are null when the first task has no
    demographic groups.
    """
    return expand_grid_point(_curve(trials, evals, metric=metric))


def forgetting_summary(trials: Frame, evals: Frame, *, metric: str = "accuracy") -> pl.DataFrame:
    """One row per setting (chain, grid_point), at the chain's final stage, seed-averaged.

    Columns (besides the expanded grid values): chain_stages, first_task, final_task,
    final_stage, first_learning_rate (stage 1's lr), n_seeds,
    acc_first_task_after_first_stage = Acc_A(θ_A), acc_first_task_after_final = Acc_A(θ_AB),
    acc_final_task_after_final = Acc_B(θ_AB) (the paper's Table 1 layout), forgetting,
    wg_forgetting, worst_group, max_biased_forgetting. Settings whose chain has a single
    stage (no forgetting to measure) are left out.
    """
    overview = trial_overview(trials)
    per_trial = trial_forgetting(trials, evals, metric=metric)
    # Acc_B(θ_AB) averaged over the very trials that enter the final-stage forgetting.
    finished = per_trial.filter(pl.col("is_final_stage") & (pl.col("group") == ALL))
    final_task_acc = (
        finished.select("trial_id", *SETTING, "after_stage")
        .join(overview.select("trial_id", "final_task"), on="trial_id", how="left")
        .join(
            stage_accuracy(evals, metric=metric).filter(pl.col("group") == ALL),
            left_on=["trial_id", "after_stage", "final_task"],
            right_on=["trial_id", "stage", "eval_task"],
            how="left",
        )
        .group_by(SETTING)
        .agg(acc_final_task_after_final=pl.col("accuracy").mean())
    )
    setting_info = (
        overview.sort("trial_id")
        .group_by(SETTING)
        .agg(
            pl.col("chain_stages").first(),
            pl.col("final_task").first(),
            pl.col("final_stage").max(),
            pl.col("first_learning_rate").first(),
        )
    )
    summary = (
        _curve(trials, evals, metric=metric)
        .filter(pl.col("is_final_stage"))
        .join(setting_info, on=SETTING, how="left")
        .join(final_task_acc, on=SETTING, how="left")
        .select(
            *SETTING, "chain_stages", "first_task", "final_task", "final_stage",
            "first_learning_rate", "n_seeds", "acc_first_task_after_first_stage",
            acc_first_task_after_final="acc_first_task_after_stage",
            acc_final_task_after_final="acc_final_task_after_final",
            forgetting="forgetting",
            wg_forgetting="wg_forgetting",
            worst_group="worst_group",
            max_biased_forgetting="max_biased_forgetting",
        )
        .sort(SETTING)
    )
    return expand_grid_point(summary)


def mean_stage_accuracy(trials: Frame, evals: Frame, *, metric: str = "accuracy") -> pl.DataFrame:
    """Per (setting, stage, eval_task, group): accuracy averaged over the setting's seeds.

    Stage 0 is the base model (stage_task null). accuracy_std is the spread over seeds
    (null with a single seed); n is the group's example count (the same for every seed);
    metric says what "accuracy" holds (with metric="primary", safe for a generation task).
    """
    overview = trial_overview(trials)
    return expand_grid_point(
        stage_accuracy(evals, metric=metric)
        .join(overview.select("trial_id", *SETTING, "seed"), on="trial_id", how="inner")
        .join(_stage_tasks(trials), on=["trial_id", "stage"], how="left")
        .group_by(*SETTING, "stage", "eval_task", "group")
        .agg(
            pl.col("stage_task").first(),
            pl.col("metric").first(),
            n_seeds=pl.col("seed").n_unique().cast(pl.Int64),
            n=pl.col("n").max(),
            accuracy=pl.col("accuracy").mean(),
            accuracy_std=pl.col("accuracy").std(),
        )
        .select(
            *SETTING, "stage", "stage_task", "eval_task", "metric", "group", "n_seeds", "n",
            "accuracy", "accuracy_std",
        )
        .sort(*SETTING, "stage", "eval_task", "group")
    )
