"""95% confidence intervals for forgetting and group forgetting (and the first task's accuracies
they are differences of), a test of whether a group forgets more (or less) than the task as a
whole, and a test of whether *any* group does (the maximum BiasedForgetting) — from
`predictions`. The same method gives every accuracy's interval in analysis.accuracy_intervals;
the resampling engine is analysis.resampling.

The intervals and the tests are one module because they are one computation: each setting's
items are resampled and permuted once (`_forgetting_settings`), every interval is computed once
from those replicates, and both tables (`forgetting_intervals`, `group_forgetting_tests`; the
report takes both from `forgetting_uncertainty`) read the same numbers, the group tests using
the intervals' standard errors. The docstring below is the method, read top to bottom.

The point estimates are exactly those of `analysis.forgetting` (paper §2.4), recomputed from the
per-example records: per trial and group, accuracy = correct / n; per setting (chain,
grid_point) the accuracies are averaged over the setting's trials (one per seed) and then
differenced; WG forgetting = max over groups of the seed-mean group forgetting (ties: the group
first alphabetically); max biased forgetting = WG − overall forgetting. Forgetting is paired:
a trial's accuracies at stage 1 and at the compared stage are taken on the examples it evaluated
at both (analysis.forgetting takes each stage's accuracy on all it evaluated; the two agree when
the stages evaluated the same examples, as a study's do). Only option-scoring rows
count (mode null or "score"), except for the eval tasks passed as `generation_tasks`, whose
generate-mode rows (correct = judged safe) are their records, so their forgetting is on safe %;
an example listing several groups counts toward each of them, and "all" is every example. By
default forgetting is measured at each trial's final stage (θ_AB), against stage 1 (θ_A), on
the first task of the chain.

What an interval covers
-----------------------
The estimand is the number the setting would give on the whole population of evaluation items
and averaged over the distribution of training seeds. Two sources of noise separate a reported
number from it: which finite evaluation set was used, and which seeds were run. All seeds of a
setting are evaluated on the *same* examples, so the first is shared by the seeds.

Intervals: eval-item bootstrap + seed variance components, t interval
----------------------------------------------------------------------
(1) Eval items. A replicate draws the setting's evaluation examples with replacement (as many
as it has) *once*, and that draw applies to every trial and to both compared stages (an
example carries its outcome in every trial and at stage 1 and stage s: paired over stages and
over seeds). Each trial's statistic is recomputed on the draw (B = 1000 replicates).
(2) Seeds, by moments. From the replicates: V_items = bootstrap variance of the seed mean (the
shared eval-set part) and w = the per-trial item noise that seeds do not share. The observed
spread of the trials' statistics, s², estimates σ²_seed + w, so σ²_seed = max(0, s² − w).
(3) SE² = V_items + σ²_seed / S (S trials), and the interval is estimate ± q·SE with q the t
quantile at Satterthwaite's degrees of freedom for s² (S − 1 of them; ∞ when the trials agree
exactly or S = 1), clipped to the metric's range. See `analysis.resampling.seed_t_interval`.
Why not resample the seeds too: with 3 seeds a resample sees (S−1)/S of the seed variance and
the percentile interval has no small-sample correction; in the calibration simulation below it
covered 72% at a nominal 95% when seed effects were large, this method 93–98%.
Every interval is centred on its estimate, so it contains it.

With a single seed only the eval set varies: the interval says nothing about seed-to-seed
variation. Trials, not seed values, are the units: a setting normally has one trial per seed
(n_seeds counts distinct seeds).

Pairing makes forgetting intervals tight: a model whose answers did not change has forgetting
exactly 0 in every replicate and in every trial (interval [0, 0]), whereas resampling the two
stages independently would give an interval as wide as that of an accuracy. Group accuracies
come from the same draw, so group-minus-overall differences are paired too.

A replicate in which a group drew no examples has no accuracy for that group; as in the point
estimate (a trial without the group does not count toward it), it is left out of that group's
variances (n_boot says how many replicates were usable).

Calibration (tests/test_uncertainty_calibration.py): 400 simulated studies of 3 seeds sharing
one eval set, 7 groups of 15–300 items, item difficulty, item-specific forgetting and seed
random effects on both stages; the nominal 95% intervals of accuracy, forgetting and group
forgetting cover the true population values in 92–98% of studies (Monte Carlo standard error
of a coverage near 95% with 400 studies: 1.1 points).

Maxima have no interval
-----------------------
WG forgetting and max biased forgetting are maxima over noisy groups: the plug-in maximum is
biased upward (with 13 groups of ~25 examples it is positive even when no group differs), and a
bootstrap interval of a maximum can lie wholly above its own estimate. They are reported
without an interval; instead `p_value` on the max biased forgetting row tests "no group forgets
more than average" (below).

Tests
-----
- Per group (`group_forgetting_tests`): difference = Forgetting_{A,g} − Forgetting_A =
  BiasedForgetting_{A,g}, with the interval above; `p_bootstrap` is the two-sided t-test p of
  "difference = 0" from the same SE and degrees of freedom (p < 1 − level exactly when the
  interval excludes 0), so it accounts for the eval set and the seeds.
- Per group, `p_permutation`: the null "which items belong to g is unrelated to their flips":
  the items' group labels are permuted (each label row keeps its number of items) and the
  statistic seed-mean(group − overall forgetting) recomputed; the permutation is the same for
  every trial, because the items are the same (an item that flips in every seed stays one item;
  permuting per trial would break that and understate the null's spread). Two-sided, exact up
  to Monte Carlo error, p = (1 + #{|d*| ≥ |d|}) / (B + 1). It conditions on the trained models.
- Any group (`p_value` of the max_biased_forgetting row of `forgetting_intervals`, and
  `p_max_biased_forgetting` of the group tests): the same permutations, statistic = the
  maximum over groups of BiasedForgetting; one-sided, p = (1 + #{max* ≥ max}) / (B + 1). It is
  the calibrated answer to "is forgetting biased at all": in simulated studies with no group
  effect (13 groups, 15–300 items, 3 seeds) it flags about 5% of settings at α = 0.05 (see the
  calibration tests for the measured rate and the power against a planted effect).
Multiple comparisons: `p_*_holm` are Holm-adjusted across the groups of the same setting and
stage (family-wise error, no independence assumed); use those when asking "is any particular
group singled out", the raw ones for a group named in advance. Nothing is adjusted across
settings.

Only numpy, scipy and polars are used here (no torch, transformers or ray).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from analysis.accuracy import Frame
from analysis.forgetting import SETTING
from analysis.grid import expand_grid_point
from analysis.prediction_cells import forgetting_cells, item_cells
from analysis.resampling import (
    ACCURACY_RANGE,
    DIFFERENCE_RANGE,
    FORGETTING_RANGE,
    Interval,
    ItemCells,
    bootstrap_means,
    check_arguments,
    group_means,
    in_threads,
    none_if_nan,
    observed_means,
    permuted_group_sums,
    seed_mean,
    seed_t_interval,
    setting_rng,
    t_test_p,
)
from analysis.table_columns import declared

# The metric rows of forgetting_intervals (not contract.schema.FORGETTING_METRICS, the metrics
# a trial reports to Tune).
INTERVAL_METRICS = (
    "acc_first_task_after_first_stage",
    "acc_first_task_after_final",
    "forgetting",
    "wg_forgetting",
    "max_biased_forgetting",
)
# Maxima over groups: no interval (see the module docstring).
_MAXIMA = ("wg_forgetting", "max_biased_forgetting")
# Slack when comparing permuted statistics with the observed one (exact ties are common).
_EPS = 1e-12


def _n_seeds(cells: ItemCells) -> int:
    return len(set(cells.seeds))


# ---------------------------------------------------------------- forgetting


@dataclass(frozen=True)
class _SettingForgetting:
    key: dict
    cells: ItemCells
    observed: np.ndarray  # (T, G1, 2) each trial's accuracy at stage 1 and stage s
    boot: np.ndarray  # (B, T, G1, 2) the same under the shared-item bootstrap
    null_difference: np.ndarray | None  # (P, G) group − overall forgetting under permuted labels

    @property
    def groups(self) -> list[str]:
        return self.cells.groups

    @property
    def n_seeds(self) -> int:
        return _n_seeds(self.cells)

    def n_examples(self) -> np.ndarray:
        return self.cells.group_sizes().astype(np.int64)


def _forgetting_settings(trials, predictions, *, after_stage, n_boot, seed, generation_tasks=(),
                         permutation=True) -> list[_SettingForgetting]:
    cells, index = forgetting_cells(trials, predictions, after_stage, generation_tasks)
    keys = [*SETTING, "first_task", "after_stage"]

    def setting(part: pl.DataFrame) -> _SettingForgetting:
        key = {name: part.get_column(name)[0] for name in keys}
        setting_cells = item_cells(part, index.trial_ids(key), index.seeds, 2)
        null = None
        if permutation and setting_cells.groups:
            null = _permuted_differences(setting_cells, int(n_boot), setting_rng(seed, ["permutation", *key.values()]))
        return _SettingForgetting(
            key=key, cells=setting_cells, observed=observed_means(setting_cells),
            boot=bootstrap_means(setting_cells, int(n_boot), setting_rng(seed, ["forgetting", *key.values()])),
            null_difference=null,
        )

    return in_threads(setting, cells.partition_by(keys, maintain_order=True))


def _per_trial_forgetting(means: np.ndarray) -> dict[str, np.ndarray]:
    """From per-trial accuracies (..., T, G1, 2): each trial's statistics (..., T, k)."""
    forgetting = means[..., 0] - means[..., 1]  # (..., T, G1)
    return {
        "acc_first_task_after_first_stage": means[..., 0:1, 0],
        "acc_first_task_after_final": means[..., 0:1, 1],
        "forgetting": forgetting[..., 0:1],
        "group_forgetting": forgetting[..., 1:],
        "difference": forgetting[..., 1:] - forgetting[..., 0:1],
    }


def _point_statistics(observed: np.ndarray) -> dict[str, np.ndarray]:
    """The reported numbers (as analysis.forgetting computes them) from per-trial accuracies
    (T, G1, 2): seed means of the accuracies first, then the differences and maxima."""
    means = seed_mean(observed, axis=0)  # (G1, 2)
    forgetting = means[:, 0] - means[:, 1]
    per_group = forgetting[1:]
    wg = _nanmax(per_group, axis=-1) if per_group.size else np.nan
    return {
        "acc_first_task_after_first_stage": means[0:1, 0],
        "acc_first_task_after_final": means[0:1, 1],
        "forgetting": forgetting[0:1],
        "group_forgetting": per_group,
        "difference": per_group - forgetting[0],
        "wg_forgetting": np.asarray(wg),
        "max_biased_forgetting": np.asarray(wg - forgetting[0]),
    }


_RANGES = {
    "acc_first_task_after_first_stage": ACCURACY_RANGE, "acc_first_task_after_final": ACCURACY_RANGE,
    "forgetting": FORGETTING_RANGE, "group_forgetting": FORGETTING_RANGE, "difference": DIFFERENCE_RANGE,
}


def _intervals(setting: _SettingForgetting, level: float) -> tuple[dict[str, np.ndarray], dict[str, Interval]]:
    point = _point_statistics(setting.observed)
    observed = _per_trial_forgetting(setting.observed)
    boot = _per_trial_forgetting(setting.boot)
    intervals = {name: seed_t_interval(observed[name], boot[name], point[name], level, _RANGES[name])
                 for name in observed}
    return point, intervals


def _permuted_differences(cells: ItemCells, n_perm: int, rng) -> np.ndarray:
    """(n_perm, G): seed-mean group − overall forgetting under permuted group labels."""
    blocks = []
    for n, sums in permuted_group_sums(cells, n_perm, rng):
        means = group_means(n, sums)
        forgetting = seed_mean(means[..., 0] - means[..., 1], axis=1)  # (c, G1)
        blocks.append(forgetting[:, 1:] - forgetting[:, 0:1])
    return np.concatenate(blocks)


def _max_p(null: np.ndarray | None, observed_max: float) -> float | None:
    """One-sided permutation p of the maximum over groups of BiasedForgetting."""
    if null is None or not np.isfinite(observed_max):
        return None
    null_max = _nanmax(null, axis=1)
    return float((1 + np.count_nonzero(null_max >= observed_max - _EPS)) / (null.shape[0] + 1))


def _permutation_p(null: np.ndarray | None, observed: np.ndarray) -> list[float | None]:
    """Two-sided permutation p per group of its difference (group − overall forgetting)."""
    if null is None:
        return [None] * observed.size
    out = []
    for g, value in enumerate(observed):
        column = null[:, g]
        column = column[np.isfinite(column)]
        if not np.isfinite(value) or column.size == 0:
            out.append(None)
            continue
        out.append(float((1 + np.count_nonzero(np.abs(column) >= abs(value) - _EPS)) / (column.size + 1)))
    return out


def _worst_group(groups: list[str], group_forgetting: np.ndarray) -> str | None:
    if not groups or not np.isfinite(group_forgetting).any():
        return None
    # nanargmax returns the first maximum; groups are sorted, so ties go to the first name.
    return groups[int(np.nanargmax(group_forgetting))]


_Estimated = tuple[_SettingForgetting, dict[str, np.ndarray], dict[str, Interval]]


def _estimated(settings: list[_SettingForgetting], level: float) -> list[_Estimated]:
    """(setting, point estimates, intervals) per setting: computed once, read by both tables."""
    return [(setting, *_intervals(setting, level)) for setting in settings]


def forgetting_intervals(
    trials: Frame,
    predictions: Frame,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    after_stage: int | None = None,
    generation_tasks: Sequence[str] = (),
) -> pl.DataFrame:
    """Per (setting, metric): point estimate, interval, and for max biased forgetting the test
    of "no group forgets more than average".

    Metrics (rows): acc_first_task_after_first_stage (Acc_A(θ_A)), acc_first_task_after_final
    (Acc_A at `after_stage`), forgetting, wg_forgetting and max_biased_forgetting (the last two
    only when the first task has groups; they have no interval: low/high are null).
    after_stage=None is each trial's final stage (as in forgetting_summary), an int that stage
    (trials that reach it).

    Columns: chain, grid_point (+ one column per grid key), first_task, after_stage, metric,
    group (the worst group on WG / max biased rows, else null), estimate, low, high, level,
    n_seeds, n_examples (paired first-task examples per seed; of the worst group on its rows),
    n_boot (usable bootstrap replicates; permutations on the max biased row), se, df (of the
    t interval), p_value (max biased forgetting: one-sided permutation p of the maximum; else
    null). The estimates equal forgetting_summary's (for after_stage=None) on evals computed
    from the same predictions when each trial evaluated the same first-task examples at both
    compared stages (accuracy_from_predictions; for a task in `generation_tasks` the
    engine's safe rows, with forgetting_summary(metric="primary")). See the module docstring.
    """
    check_arguments(n_boot, level)
    settings = _forgetting_settings(trials, predictions, after_stage=after_stage, n_boot=n_boot, seed=seed,
                                    generation_tasks=generation_tasks)
    return _interval_table(_estimated(settings, level), level)


def group_forgetting_tests(
    trials: Frame,
    predictions: Frame,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    after_stage: int | None = None,
    generation_tasks: Sequence[str] = (),
    permutation: bool = True,
) -> pl.DataFrame:
    """Per (setting, group of the first task): is the group's forgetting different from the task's?

    Columns: chain, grid_point (+ grid keys), first_task, after_stage, group, n_seeds (seeds
    whose trials evaluated the group), n_examples (the group's examples per seed, max over
    seeds), group_forgetting (+ _low,
    _high), average_forgetting (Forgetting_A), difference = group − average forgetting
    (= BiasedForgetting_{A,g}, + _low, _high: eval-item bootstrap + seed-variance t interval),
    p_bootstrap (two-sided t-test p of difference = 0 from the same SE), p_permutation
    (permutation of the items' group labels, n_boot permutations; null when permutation=False),
    their Holm adjustments across the groups of the setting (p_*_holm), is_worst_group, level,
    n_boot, p_max_biased_forgetting (the setting's test of "no group forgets more than
    average", the same on every row of the setting; null when permutation=False). See the
    module docstring for what each test assumes.
    """
    check_arguments(n_boot, level)
    settings = _forgetting_settings(trials, predictions, after_stage=after_stage, n_boot=n_boot, seed=seed,
                                    generation_tasks=generation_tasks, permutation=permutation)
    return _test_table(_estimated([s for s in settings if s.groups], level), level, permutation)


def forgetting_uncertainty(
    trials: Frame,
    predictions: Frame,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    after_stage: int | None = None,
    generation_tasks: Sequence[str] = (),
    permutation: bool = True,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(forgetting_intervals, group_forgetting_tests) from one pass over the predictions, one
    set of bootstrap replicates and permutations, and one interval per setting and metric: what
    the report uses (the two functions alone each read the predictions and draw the same
    replicates again)."""
    check_arguments(n_boot, level)
    settings = _forgetting_settings(trials, predictions, after_stage=after_stage, n_boot=n_boot, seed=seed,
                                    generation_tasks=generation_tasks, permutation=permutation)
    estimated = _estimated(settings, level)
    return _interval_table(estimated, level), _test_table(estimated, level, permutation)


def _interval_table(estimated: list[_Estimated], level: float) -> pl.DataFrame:
    """forgetting_intervals' rows: one per setting and metric (INTERVAL_METRICS)."""
    rows = []
    for setting, point, intervals in estimated:
        worst = _worst_group(setting.groups, point["group_forgetting"])
        sizes = setting.n_examples()
        worst_n = int(sizes[1 + setting.groups.index(worst)]) if worst else None
        n_perm = None if setting.null_difference is None else setting.null_difference.shape[0]
        for metric in INTERVAL_METRICS:
            row = {**setting.key, "metric": metric, "estimate": none_if_nan(float(np.ravel(point[metric])[0])),
                   "level": level, "n_seeds": setting.n_seeds}
            if metric in _MAXIMA:  # no interval; the maximum carries its permutation test
                if not setting.groups:
                    continue
                p_value = _max_p(setting.null_difference, float(point[metric])) if metric == "max_biased_forgetting" else None
                row |= {"group": worst, "low": None, "high": None, "n_examples": worst_n, "n_boot": n_perm,
                        "se": None, "df": None, "p_value": p_value}
            else:
                interval = intervals[metric]
                row |= {"group": None, "low": none_if_nan(interval.low[0]), "high": none_if_nan(interval.high[0]),
                        "n_examples": int(sizes[0]), "n_boot": int(interval.usable[0]),
                        "se": none_if_nan(interval.se[0]), "df": none_if_nan(interval.df[0], allow_inf=True),
                        "p_value": None}
            rows.append(row)
    return expand_grid_point(pl.DataFrame(rows, schema=_FORGETTING_SCHEMA))


# ---------------------------------------------------------------- group tests


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment of a family of p-values (None stays None, not counted)."""
    present = [(p, i) for i, p in enumerate(p_values) if p is not None and np.isfinite(p)]
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    m = len(present)
    for rank, (p, index) in enumerate(sorted(present)):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[index] = running
    return adjusted


def _test_table(estimated: list[_Estimated], level: float, permutation: bool) -> pl.DataFrame:
    """group_forgetting_tests' rows: one per setting and group of its first task."""
    rows = []
    for setting, point, intervals in estimated:
        if not setting.groups:
            continue
        worst = _worst_group(setting.groups, point["group_forgetting"])
        group_ci, diff_ci = intervals["group_forgetting"], intervals["difference"]
        p_bootstrap = t_test_p(point["difference"], diff_ci)
        null = setting.null_difference if permutation else None
        p_permutation = _permutation_p(null, point["difference"])
        p_max = _max_p(null, float(point["max_biased_forgetting"]))
        sizes = setting.n_examples()
        seeds = setting.cells.group_seeds()
        block = []
        for index, group in enumerate(setting.groups):
            block.append({
                **setting.key,
                "group": group,
                "n_seeds": int(seeds[1 + index]),
                "n_examples": int(sizes[1 + index]),
                "group_forgetting": none_if_nan(point["group_forgetting"][index]),
                "group_forgetting_low": none_if_nan(group_ci.low[index]),
                "group_forgetting_high": none_if_nan(group_ci.high[index]),
                "average_forgetting": none_if_nan(point["forgetting"][0]),
                "difference": none_if_nan(point["difference"][index]),
                "difference_low": none_if_nan(diff_ci.low[index]),
                "difference_high": none_if_nan(diff_ci.high[index]),
                "p_bootstrap": none_if_nan(p_bootstrap[index]),
                "p_permutation": p_permutation[index],
                "is_worst_group": group == worst,
                "level": level,
                "n_boot": int(diff_ci.usable[index]),
                "p_max_biased_forgetting": p_max,
            })
        for name in ("p_bootstrap", "p_permutation"):
            for row, adjusted in zip(block, holm([row[name] for row in block]), strict=True):
                row[f"{name}_holm"] = adjusted
        rows.extend(block)
    return expand_grid_point(pl.DataFrame(rows, schema=_TEST_SCHEMA))


_KEY_SCHEMA = {
    **declared("trials", "chain", "grid_point"), "first_task": pl.String, "after_stage": pl.Int64,
}
_FORGETTING_SCHEMA = {
    **_KEY_SCHEMA, "metric": pl.String, "group": pl.String, "estimate": pl.Float64,
    "low": pl.Float64, "high": pl.Float64, "level": pl.Float64, "n_seeds": pl.Int64,
    "n_examples": pl.Int64, "n_boot": pl.Int64, "se": pl.Float64, "df": pl.Float64, "p_value": pl.Float64,
}
_TEST_SCHEMA = {
    **_KEY_SCHEMA, "group": pl.String, "n_seeds": pl.Int64, "n_examples": pl.Int64,
    "group_forgetting": pl.Float64, "group_forgetting_low": pl.Float64,
    "group_forgetting_high": pl.Float64, "average_forgetting": pl.Float64,
    "difference": pl.Float64, "difference_low": pl.Float64, "difference_high": pl.Float64,
    "p_bootstrap": pl.Float64, "p_bootstrap_holm": pl.Float64, "p_permutation": pl.Float64,
    "p_permutation_holm": pl.Float64, "is_worst_group": pl.Boolean, "level": pl.Float64,
    "n_boot": pl.Int64, "p_max_biased_forgetting": pl.Float64,
}


# No warnings.catch_warnings here: it swaps a process-wide filter list, which is not safe on the
# bootstrap's threads. All-NaN slices are masked instead, so numpy has nothing to warn about.


def _nanmax(values: np.ndarray, axis: int) -> np.ndarray:
    """np.nanmax that gives NaN for an all-NaN slice without warning."""
    empty = np.isnan(values).all(axis=axis)
    return np.where(empty, np.nan, np.max(np.where(np.isnan(values), -np.inf, values), axis=axis))
