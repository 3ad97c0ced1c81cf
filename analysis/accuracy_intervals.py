"""95% confidence intervals of every accuracy (per setting, stage, eval task and group) from
`predictions`: the same method as analysis.uncertainty's forgetting intervals, on one stage.

A setting's eval examples are resampled once for all its trials (they share the eval set), the
seed-to-seed variance is added by moments, and the interval is a t interval centred on the
seed-mean accuracy, clipped to [0, 1]; analysis.uncertainty's docstring explains the method and
its calibration, analysis.resampling holds the engine. The report shows the first task's
accuracies with the forgetting intervals; this table of every accuracy is for the Python API.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from analysis.accuracy import Frame
from analysis.forgetting import SETTING, trial_overview
from analysis.grid import expand_grid_point
from analysis.prediction_cells import (
    TrialIndex,
    collect_refusing_duplicates,
    item_cells,
    items_lazy,
    score_predictions,
)
from analysis.resampling import (
    ACCURACY_RANGE,
    bootstrap_means,
    check_arguments,
    in_threads,
    none_if_nan,
    observed_means,
    seed_mean,
    seed_t_interval,
    setting_rng,
)
from analysis.table_columns import declared
from contract.schema import ALL


_ACCURACY_SCHEMA = {
    **declared("trials", "chain", "grid_point"), **declared("evals", "stage", "eval_task"),
    "group": pl.String, "n_seeds": pl.Int64, "n": pl.Int64, "estimate": pl.Float64,
    "low": pl.Float64, "high": pl.Float64, "level": pl.Float64, "n_boot": pl.Int64,
    "se": pl.Float64, "df": pl.Float64,
}


def accuracy_intervals(
    trials: Frame,
    predictions: Frame,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    stages: Sequence[int] | None = None,
    eval_tasks: Sequence[str] | None = None,
    generation_tasks: Sequence[str] = (),
) -> pl.DataFrame:
    """Per (setting, stage, eval_task, group): seed-mean accuracy with its interval.

    Same method as forgetting_intervals (eval items resampled once for all trials, seed variance
    by moments, t interval); the estimate equals mean_stage_accuracy's accuracy on evals
    computed from the same predictions. `stages` / `eval_tasks` restrict the work.
    `generation_tasks` (analysis.generation_tasks of the evals) are measured on their
    generate-mode records, i.e. on the safe metric. Columns: chain, grid_point (+ grid keys),
    stage, eval_task, group ("all" or a group), n_seeds (seeds whose trials evaluated the
    group), n (the group's examples per seed, max over seeds), estimate, low, high, level, n_boot (usable replicates), se, df.
    """
    check_arguments(n_boot, level)
    overview = trial_overview(trials).select("trial_id", *SETTING, "seed")
    lazy = score_predictions(predictions, generation_tasks).join(overview.lazy(), on="trial_id", how="inner")
    if stages is not None:
        lazy = lazy.filter(pl.col("stage").is_in([int(s) for s in stages]))
    if eval_tasks is not None:
        lazy = lazy.filter(pl.col("eval_task").is_in(list(eval_tasks)))
    keys = [*SETTING, "stage", "eval_task"]
    index = TrialIndex.of(overview, 1)
    cells = collect_refusing_duplicates(items_lazy(lazy, keys, ["correct"], index), lazy)

    def setting_rows(part: pl.DataFrame) -> list[dict]:
        key = {name: part.get_column(name)[0] for name in keys}
        setting_cells = item_cells(part, index.trial_ids(key), index.seeds, 1)
        rng = setting_rng(seed, ["accuracy", *key.values()])
        observed = observed_means(setting_cells)[..., 0]  # (T, G1)
        boot = bootstrap_means(setting_cells, int(n_boot), rng)[..., 0]  # (B, T, G1)
        point = seed_mean(observed, axis=0)
        interval = seed_t_interval(observed, boot, point, level, ACCURACY_RANGE)
        sizes = setting_cells.group_sizes()
        seeds = setting_cells.group_seeds()
        return [{
            **key,
            "group": group,
            "n_seeds": int(seeds[index]),
            "n": int(sizes[index]),
            "estimate": none_if_nan(point[index]),
            "low": none_if_nan(interval.low[index]),
            "high": none_if_nan(interval.high[index]),
            "level": level,
            "n_boot": int(interval.usable[index]),
            "se": none_if_nan(interval.se[index]),
            "df": none_if_nan(interval.df[index], allow_inf=True),
        } for index, group in enumerate([ALL, *setting_cells.groups])]

    rows = [row for part in in_threads(setting_rows, cells.partition_by(keys, maintain_order=True)) for row in part]
    result = pl.DataFrame(rows, schema=_ACCURACY_SCHEMA).sort(*keys, "group")
    return expand_grid_point(result)
