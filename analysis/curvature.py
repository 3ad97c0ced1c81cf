"""Curvature of the first task's minimum, weight change and forgetting (paper §3.4, Figure 5,
Appendix A.4 Tables 11–12), from the `curvature` and `weights` tables.

Definitions, for a trial whose chain is A → B (→ ...):
- spectral_radius ρ(H) = |λ_max| of the Hessian of A's training loss at θ_A (measured after
  `stage`, 1 by default), group "all". The top eigenvalue is the one of largest |λ|, so a
  negative one counts by its size. Power iteration (the paper's method) is preferred, Lanczos
  is the fallback; Hutchinson only estimates the trace (hessian_trace), never ρ.
  Where a trial has several measurements of the chosen algorithm, the full parameter set
  (param_subset "all") and then the largest n_samples are preferred, and what is left
  (different sample seeds) is averaged; n_measurements says how many rows that was.
- l2_sq_first_from_base     = ‖θ_A − θ_base‖²  (weights.l2_sq_from_base at stage 1);
  l2_sq_final_from_previous = ‖θ_AB − θ_A‖²   (weights.l2_sq_from_previous at the final stage;
  for a longer chain it is the last stage's step, not the distance back to θ_A). Raw sums over
  the parameters; mean_sq_* (÷ N) and rms_* (sqrt of that) beside each are the per-parameter
  normalisations of analysis.weight_norms (the paper does not state which its Tables 11–12 use).
- curvature_bound = ½ ρ(H) ‖θ_AB − θ_A‖², the paper's eq. (5) bound on the rise of A's loss
  (a loss bound; forgetting is measured in accuracy, so it is compared by regression only). It
  and the forgetting~weight_change regression use the raw sum: ρ(H) is a curvature over all
  parameters, so the bound needs the unnormalised squared step.
- forgetting = the trial's Forgetting_A at its final stage (analysis.forgetting), a fraction.

Regressions (curvature_regressions) are fitted on trials, not on setting means: each seed is
one point, as in the paper's Figure 5 (three runs per learning rate). For ρ against the first
stage's learning rate the point is one θ_A: trials whose stage 1 is the same (same stage_key,
e.g. tqa→arc and tqa→bbq with one seed) measure one minimum and count once.

Learning rate enters as log10(lr): the study grids learning rates geometrically (the paper's
2e-6, 5e-6, 1e-5, 2e-5), so on a linear scale the largest rate alone sets the slope, and the
figures draw lr on a log axis, where only a fit in log10(lr) is a straight line. The paper
does not say which scale its OLS used, so the fit on lr itself is reported too
("spectral_radius~lr") for comparison with its p ≤ 0.01, R² = 0.387.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from analysis.accuracy import Frame
from analysis.forgetting import SETTING, trial_forgetting, trial_overview
from analysis.grid import expand_grid_point
from analysis.regression import OLS_FIELDS, ols
from analysis.table_columns import declared, null_column, typed, typed_column
from analysis.weight_norms import DISTANCES, NORMALISATIONS, with_weight_norms
from contract.schema import ALL

# Weight change per trial: θ_A from θ_base and the final stage from the one before, each in every
# normalisation of analysis.weight_norms (raw sum, per-parameter mean, RMS).
WEIGHT_CHANGE_COLUMNS = tuple(f"{n}_{d}" for d in ("first_from_base", "final_from_previous") for n in NORMALISATIONS)
# Algorithms that estimate the top eigenvalue, in order of preference.
SPECTRAL_ALGORITHMS = ("power_iteration", "lanczos")
TRACE_ALGORITHM = "hutchinson"
# first_task of the regression rows fitted on every first task together.
POOLED = "all"

HUTCHINSON_HAS_NO_EIGENVALUE = (
    "algorithm 'hutchinson' estimates the Hessian trace, not its spectral radius; "
    "choose 'power_iteration' or 'lanczos' (or None for the preferred one)"
)

# Optional curvature columns and what a file without them means.
_CURVATURE_DEFAULTS: dict[str, object] = {
    "task": None,
    "group": ALL,
    "param_subset": "all",
    "n_samples": None,
    "eigenvalue": None,
    "eigenvalues": None,
    "trace": None,
    "converged": None,
}

_EMPTY_TRIAL_COLUMNS = {
    "algorithm": pl.String, "n_samples": pl.Int64, "n_measurements": pl.Int64,
    "converged": pl.Boolean, "spectral_radius": pl.Float64,
}


_GROUP_PAIR_SCHEMA = {
    **declared("trials", "trial_id", "chain", "grid_point", "seed"),
    "first_task": pl.String, "group": pl.String, "algorithm": pl.String, "n_samples": pl.Int64,
    "n_measurements": pl.Int64, "converged": pl.Boolean, "group_spectral_radius": pl.Float64,
    "group_forgetting": pl.Float64, "biased_forgetting": pl.Float64,
}


@dataclass(frozen=True)
class Regression:
    """One line of the regression table: y on x over the rows of `source`."""

    name: str
    y: str
    x: str
    source: str  # "trial": curvature_by_trial; "group": group_curvature_by_trial
    one_point_per: str | None = None  # rows sharing this column's value count once


REGRESSIONS = (
    Regression("spectral_radius~log10_lr", "spectral_radius", "log10_first_learning_rate", "trial",
               one_point_per="first_stage_key"),
    Regression("spectral_radius~lr", "spectral_radius", "first_learning_rate", "trial",
               one_point_per="first_stage_key"),
    Regression("forgetting~spectral_radius", "forgetting", "spectral_radius", "trial"),
    Regression("forgetting~weight_change", "forgetting", "l2_sq_final_from_previous", "trial"),
    Regression("forgetting~curvature_bound", "forgetting", "curvature_bound", "trial"),
    Regression("group_forgetting~group_spectral_radius", "group_forgetting", "group_spectral_radius",
               "group"),
)

REGRESSION_SCHEMA = {
    "regression": pl.String, "first_task": pl.String, "y": pl.String, "x": pl.String,
    "n": pl.Int64, "slope": pl.Float64, "slope_se": pl.Float64, "intercept": pl.Float64,
    "intercept_se": pl.Float64, "p_value": pl.Float64, "r_squared": pl.Float64,
}


# ---------------------------------------------------------------- reading the curvature table


def _curvature_rows(curvature: Frame) -> pl.DataFrame:
    """The curvature table with the contract's types, optional columns filled in, and
    spectral_radius = |top eigenvalue| (eigenvalue, else the first of eigenvalues)."""
    lazy = curvature.lazy()
    present = set(lazy.collect_schema().names())
    lazy = lazy.with_columns(
        null_column("curvature", name, default)
        for name, default in _CURVATURE_DEFAULTS.items()
        if name not in present
    )
    return lazy.select(
        *typed("curvature", "trial_id", "stage", "task"),
        typed_column("curvature", "group").fill_null(ALL),
        typed_column("curvature", "algorithm"),
        typed_column("curvature", "param_subset").fill_null("all"),
        *typed("curvature", "n_samples", "converged"),
        spectral_radius=pl.coalesce(
            typed_column("curvature", "eigenvalue"),
            typed_column("curvature", "eigenvalues").list.first(),
        ).abs(),
        trace=typed_column("curvature", "trace"),
    ).collect()


def _first_task_rows(curvature: Frame, overview: pl.DataFrame, *, stage: int) -> pl.DataFrame:
    """Measurements after `stage` on the loss of each trial's first task (a null task is read
    as the first task)."""
    return (
        _curvature_rows(curvature)
        .filter(pl.col("stage") == stage)
        .join(overview.select("trial_id", "first_task"), on="trial_id", how="inner")
        .filter(pl.col("task").is_null() | (pl.col("task") == pl.col("first_task")))
    )


def _pick(rows: pl.DataFrame, keys: list[str], algorithms: tuple[str, ...], value: str) -> pl.DataFrame:
    """Per `keys`: the first algorithm of `algorithms` that was measured, then param_subset
    "all" over a subset, then the largest n_samples; `value` averaged over what is left."""
    preference = {name: rank for rank, name in enumerate(algorithms)}
    ranked = rows.filter(
        pl.col("algorithm").is_in(list(algorithms)) & pl.col(value).is_not_null()
    ).with_columns(
        _algorithm_rank=pl.col("algorithm").replace_strict(preference, return_dtype=pl.Int64),
        _subset_rank=(pl.col("param_subset") != "all").cast(pl.Int64),
        _samples=pl.col("n_samples").fill_null(0),
    )
    for column, best in [("_algorithm_rank", "min"), ("_subset_rank", "min"), ("_samples", "max")]:
        ranked = ranked.filter(pl.col(column) == getattr(pl.col(column), best)().over(keys))
    return (
        ranked.group_by(keys)
        .agg(
            pl.col("algorithm").first(),
            pl.col("n_samples").first(),
            n_measurements=pl.len().cast(pl.Int64),
            # All-null means "not recorded", not "converged".
            converged=pl.when(pl.col("converged").is_not_null().any())
            .then(pl.col("converged").all())
            .otherwise(None),
            **{value: pl.col(value).mean()},
        )
        .sort(keys)
    )


def _algorithms(algorithm: str | None) -> tuple[str, ...]:
    if algorithm is None:
        return SPECTRAL_ALGORITHMS
    if algorithm == TRACE_ALGORITHM:
        raise ValueError(HUTCHINSON_HAS_NO_EIGENVALUE)
    return (algorithm,)


# ---------------------------------------------------------------- per trial


def _weight_change(weights: Frame, overview: pl.DataFrame) -> pl.DataFrame:
    """trial_id, <n>_first_from_base (stage 1) and <n>_final_from_previous (final stage) for each
    normalisation n (l2_sq, mean_sq, rms): WEIGHT_CHANGE_COLUMNS."""
    rows = with_weight_norms(weights).select(
        *typed("weights", "trial_id", "stage"),
        # The stored l2_sq_* and the derived mean_sq_*, rms_*: all float.
        *(pl.col(f"{n}_{d}").cast(pl.Float64) for n in NORMALISATIONS for d in DISTANCES),
    ).unique(["trial_id", "stage"], keep="last").collect()
    first = rows.filter(pl.col("stage") == 1).select(
        "trial_id", **{f"{n}_first_from_base": f"{n}_from_base" for n in NORMALISATIONS})
    final = rows.join(overview.select("trial_id", "final_stage"), on="trial_id", how="inner").filter(
        pl.col("stage") == pl.col("final_stage")
    ).select("trial_id", **{f"{n}_final_from_previous": f"{n}_from_previous" for n in NORMALISATIONS})
    return first.join(final, on="trial_id", how="full", coalesce=True)


def _first_stage_keys(trials: Frame) -> pl.DataFrame:
    """trial_id → first_stage_key, the identity of θ_A (the trial id where stage_key is absent)."""
    lazy = trials.lazy()
    present = "stage_key" in lazy.collect_schema().names()
    key = typed_column("trials", "stage_key") if present else null_column("trials", "stage_key")
    return (
        lazy.filter(typed_column("trials", "stage") == 1)
        .select(
            typed_column("trials", "trial_id"),
            first_stage_key=pl.coalesce(key, typed_column("trials", "trial_id")),
        )
        .unique("trial_id", keep="first")
        .collect()
    )


def curvature_by_trial(
    trials: Frame,
    evals: Frame,
    *,
    curvature: Frame | None,
    weights: Frame | None = None,
    stage: int = 1,
    algorithm: str | None = None,
    metric: str = "accuracy",
) -> pl.DataFrame:
    """One row per trial with a curvature or weight-change measurement (see the module docstring).

    Columns: trial_id, chain, grid_point (+ one column per grid key), seed, first_task,
    chain_stages, first_stage_key, first_learning_rate, log10_first_learning_rate,
    first_batch_size, final_stage, algorithm, n_samples, n_measurements, converged,
    spectral_radius, hessian_trace, l2_sq_first_from_base, mean_sq_first_from_base,
    rms_first_from_base, l2_sq_final_from_previous, mean_sq_final_from_previous,
    rms_final_from_previous, curvature_bound, forgetting. A value that was not measured (yet) is
    null. `algorithm` forces one algorithm instead of the preference power_iteration > lanczos.
    """
    algorithms = _algorithms(algorithm)
    overview = trial_overview(trials)
    keys = ["trial_id"]
    if curvature is None:
        spectral = pl.DataFrame(schema={**declared("trials", "trial_id"), **_EMPTY_TRIAL_COLUMNS})
        trace = pl.DataFrame(schema={**declared("trials", "trial_id"), "hessian_trace": pl.Float64})
    else:
        rows = _first_task_rows(curvature, overview, stage=stage).filter(pl.col("group") == ALL)
        spectral = _pick(rows, keys, algorithms, "spectral_radius")
        trace = _pick(rows, keys, (TRACE_ALGORITHM,), "trace").select("trial_id", hessian_trace="trace")
    if weights is None:
        change = pl.DataFrame(schema={**declared("weights", "trial_id"), **{c: pl.Float64 for c in WEIGHT_CHANGE_COLUMNS}})
    else:
        change = _weight_change(weights, overview)
    forgetting = (
        trial_forgetting(trials, evals, metric=metric)
        .filter(pl.col("is_final_stage") & (pl.col("group") == ALL))
        .select("trial_id", "forgetting")
    )
    measured = ["spectral_radius", "hessian_trace", *WEIGHT_CHANGE_COLUMNS]
    frame = (
        overview.join(_first_stage_keys(trials), on="trial_id", how="left")
        .join(spectral, on="trial_id", how="left")
        .join(trace, on="trial_id", how="left")
        .join(change, on="trial_id", how="left")
        .join(forgetting, on="trial_id", how="left")
        .filter(pl.any_horizontal(pl.col(measured).is_not_null()))
        .with_columns(
            log10_first_learning_rate=pl.when(pl.col("first_learning_rate") > 0).then(
                pl.col("first_learning_rate").log10()
            ),
            curvature_bound=0.5 * pl.col("spectral_radius") * pl.col("l2_sq_final_from_previous"),
        )
        .select(
            "trial_id", *SETTING, "seed", "first_task", "chain_stages", "first_stage_key",
            "first_learning_rate", "log10_first_learning_rate", "first_batch_size", "final_stage",
            "algorithm", "n_samples", "n_measurements", "converged", *measured, "curvature_bound",
            "forgetting",
        )
        .sort("trial_id")
    )
    return expand_grid_point(frame)


def group_curvature_by_trial(
    trials: Frame,
    evals: Frame,
    *,
    curvature: Frame | None,
    stage: int = 1,
    algorithm: str | None = None,
    metric: str = "accuracy",
) -> pl.DataFrame:
    """One row per (trial, demographic group) whose curvature was measured on that group's
    examples of the first task (curvature.group ≠ "all"), paired with the same trial's
    forgetting of that group at its final stage.

    Columns: trial_id, chain, grid_point (+ grid keys), seed, first_task, group, algorithm,
    n_samples, n_measurements, converged, group_spectral_radius, group_forgetting
    (Forgetting_A,g of this trial) and biased_forgetting (group_forgetting − Forgetting_A);
    the forgetting columns are null until the final stage has been evaluated.
    """
    algorithms = _algorithms(algorithm)
    overview = trial_overview(trials)
    if curvature is None:
        return pl.DataFrame(schema=_GROUP_PAIR_SCHEMA)
    keys = ["trial_id", "group"]
    rows = _first_task_rows(curvature, overview, stage=stage).filter(pl.col("group") != ALL)
    spectral = _pick(rows, keys, algorithms, "spectral_radius").rename(
        {"spectral_radius": "group_spectral_radius"}
    )
    forgetting = (
        trial_forgetting(trials, evals, metric=metric)
        .filter(pl.col("is_final_stage") & (pl.col("group") != ALL))
        .select("trial_id", "group", "biased_forgetting", group_forgetting="forgetting")
    )
    frame = (
        spectral.join(overview.select("trial_id", *SETTING, "seed", "first_task"), on="trial_id", how="inner")
        .join(forgetting, on=keys, how="left")
        .select(list(_GROUP_PAIR_SCHEMA))
        .sort(keys)
    )
    return expand_grid_point(frame)


# ---------------------------------------------------------------- per setting (Tables 11–12)


def _seeds_with(column: str) -> pl.Expr:
    return pl.col("seed").filter(pl.col(column).is_not_null()).n_unique().cast(pl.Int64)


def curvature_by_setting(by_trial: pl.DataFrame) -> pl.DataFrame:
    """Per setting (chain, grid_point) of `curvature_by_trial`: means over its seeds.

    Columns (besides the expanded grid values): chain_stages, first_task, first_learning_rate,
    first_batch_size, n_seeds (seeds with any measurement), n_seeds_spectral_radius,
    spectral_radius (mean), spectral_radius_std (sample std over seeds; null for one seed),
    the weight change columns of curvature_by_trial (l2_sq_*, mean_sq_*, rms_*),
    n_seeds_forgetting, forgetting (means).
    Each mean is over the seeds where that value exists, hence the per-column seed counts.
    """
    frame = (
        by_trial.sort("trial_id")
        .group_by(SETTING)
        .agg(
            pl.col("chain_stages").first(),
            pl.col("first_task").first(),
            pl.col("first_learning_rate").first(),
            pl.col("first_batch_size").first(),
            n_seeds=pl.col("seed").n_unique().cast(pl.Int64),
            n_seeds_spectral_radius=_seeds_with("spectral_radius"),
            spectral_radius=pl.col("spectral_radius").mean(),
            spectral_radius_std=pl.col("spectral_radius").std(),
            **{column: pl.col(column).mean() for column in WEIGHT_CHANGE_COLUMNS},
            n_seeds_forgetting=_seeds_with("forgetting"),
            forgetting=pl.col("forgetting").mean(),
        )
        .sort(SETTING)
    )
    return expand_grid_point(frame)


# ---------------------------------------------------------------- regressions (Figure 5)


def _regression_points(frame: pl.DataFrame, spec: Regression) -> pl.DataFrame:
    if frame.is_empty() or spec.x not in frame.columns or spec.y not in frame.columns:
        return pl.DataFrame(schema={"first_task": pl.String, spec.x: pl.Float64, spec.y: pl.Float64})
    points = frame.sort("trial_id").filter(
        pl.col(spec.x).cast(pl.Float64).is_finite() & pl.col(spec.y).cast(pl.Float64).is_finite()
    )
    if spec.one_point_per is not None:
        points = points.unique(spec.one_point_per, keep="first", maintain_order=True)
    return points.select("first_task", spec.x, spec.y)


def curvature_regressions(
    by_trial: pl.DataFrame, group_pairs: pl.DataFrame | None = None
) -> pl.DataFrame:
    """OLS fits of REGRESSIONS, per first task and pooled (first_task "all").

    Columns: regression, first_task, y, x, n, slope, slope_se, intercept, intercept_se,
    p_value, r_squared (see analysis.regression.ols; fractions for forgetting, so a slope
    per point of forgetting is slope / 100). A first task with fewer than 3 points has n and
    nulls. The group regression needs `group_pairs` (group_curvature_by_trial).
    """
    sources = {"trial": by_trial, "group": group_pairs if group_pairs is not None else pl.DataFrame()}
    rows = []
    for spec in REGRESSIONS:
        points = _regression_points(sources[spec.source], spec)
        tasks = sorted(set(points.get_column("first_task").drop_nulls().to_list()))
        subsets = [(task, points.filter(pl.col("first_task") == task)) for task in tasks]
        for first_task, subset in [*subsets, (POOLED, points)]:
            fit = ols(subset, y=spec.y, x=spec.x)
            rows.append({"regression": spec.name, "first_task": first_task, "y": spec.y, "x": spec.x}
                        | {field: fit[field] for field in OLS_FIELDS})
    return pl.DataFrame(rows, schema=REGRESSION_SCHEMA)
