"""Curvature and weight change (paper §3.4, Figure 5, Tables 11–12): OLS, the per-trial and
per-setting frames, the regressions and the report section.

Results folders are hand-written Parquet files in the contract's layout; every expected number
is worked out in the docstrings. Forgetting is a fraction, as in the frames.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from analysis import (
    curvature_by_setting,
    curvature_by_trial,
    curvature_regressions,
    group_curvature_by_trial,
    load_results,
    ols,
    with_weight_norms,
    write_report,
)
from analysis.curvature import HUTCHINSON_HAS_NO_EIGENVALUE, REGRESSIONS
from analysis.report import CURVATURE_FIGURE_FILES, CURVATURE_TABLES
from analysis.report_sections import CURVATURE_HEADING
from tests.test_analysis_forgetting import GRID_HIGH_LR, GRID_LOW_LR, trial_rows, write_table
from tests.test_analysis_report import FIGURES, PNG_SIGNATURE, write_study

# ---------------------------------------------------------------- builders


def curvature_row(trial_id: str, stage: int, task: str, eigenvalue: float | None = None, *,
                  algorithm: str = "power_iteration", group: str = "all",
                  eigenvalues: list[float] | None = None, trace: float | None = None,
                  n_samples: int = 50, sample_seed: int = 0, param_subset: str = "all",
                  converged: bool = True) -> dict:
    """One `curvature` row; eigenvalues defaults to [eigenvalue] (empty when there is none)."""
    if eigenvalues is None:
        eigenvalues = [] if eigenvalue is None else [eigenvalue]
    return {
        "trial_id": trial_id, "stage": stage, "task": task, "group": group, "algorithm": algorithm,
        "n_samples": n_samples, "sample_seed": sample_seed, "param_subset": param_subset,
        "eigenvalues": [float(v) for v in eigenvalues],
        "eigenvalue": None if eigenvalue is None else float(eigenvalue), "trace": trace,
        "iterations": 20, "hvp_count": 20, "residual": None, "converged": converged, "tol": 1e-3,
        "seconds": 1.5, "example_ids": ["e1", "e2"],
    }


def weight_rows(trial_id: str, stage1: float, stage2_previous: float, stage2_base: float) -> list[dict]:
    """The `weights` rows of a two-stage trial (at stage 1, previous = base = θ_0)."""
    return [
        {"trial_id": trial_id, "stage": 1, "l2_sq_from_previous": stage1, "l2_sq_from_base": stage1,
         "n_params": 1000},
        {"trial_id": trial_id, "stage": 2, "l2_sq_from_previous": stage2_previous,
         "l2_sq_from_base": stage2_base, "n_params": 1000},
    ]


def write_curvature_study(results_dir: Path) -> Path:
    """write_study's four trials (test_analysis_report) plus curvature and weights.

    Final-stage forgetting (from write_study): t0 0.10, t1 0.10, low 0.02, rev 0.05; per group
    t0 muslim 0.30 / women 0.00, t1 muslim 0.05 / women 0.30, low muslim 0.10 / women 0.00.
    t0, t1: tqa_arc, stage-1 lr 1e-3 (seeds 0, 1); low: tqa_arc, lr 1e-5; rev: arc_tqa, lr 1e-3.

    curvature, group "all", after stage 1 on the first task's loss:
    - t0: power_iteration 400 and lanczos 410 → 400 (power iteration preferred);
          hutchinson trace 1000. Ignored: stage 2 (9999) and the arc loss (7777).
    - t1: power_iteration −280 (sample seed 0) and 320 (seed 1) → mean |λ| = 300. Ignored: a
          param subset (5000, the full set wins) and n_samples 10 (8888, 50 samples win).
    - low: lanczos 100 only → 100 (fallback), converged False.
    - rev: power_iteration with a null eigenvalue and eigenvalues [50, −10] → 50.
    per group (power_iteration unless said): t0 muslim 500, women 200; t1 muslim 350 (its
    lanczos 999 is ignored), women 250; low muslim 150 (lanczos).
    weights (stage 1 from base | stage 2 from previous): t0 2e-5 | 7e-5, t1 4e-5 | 6e-5,
    low 1e-5 | 5e-5, rev 3e-5 | 8e-5.
    """
    write_study(results_dir)
    rows = [
        curvature_row("t0", 1, "toxigen_qa", 400, eigenvalues=[400, 50]),
        curvature_row("t0", 1, "toxigen_qa", 410, algorithm="lanczos", eigenvalues=[410, 60]),
        curvature_row("t0", 1, "toxigen_qa", algorithm="hutchinson", trace=1000.0),
        curvature_row("t0", 2, "toxigen_qa", 9999),
        curvature_row("t0", 1, "arc", 7777),
        curvature_row("t1", 1, "toxigen_qa", -280, sample_seed=0),
        curvature_row("t1", 1, "toxigen_qa", 320, sample_seed=1),
        curvature_row("t1", 1, "toxigen_qa", 5000, param_subset=r"model\.layers\.0\..*"),
        curvature_row("t1", 1, "toxigen_qa", 8888, n_samples=10),
        curvature_row("low", 1, "toxigen_qa", 100, algorithm="lanczos", converged=False),
        curvature_row("rev", 1, "arc", None, eigenvalues=[50, -10]),
        curvature_row("t0", 1, "toxigen_qa", 500, group="muslim"),
        curvature_row("t0", 1, "toxigen_qa", 200, group="women"),
        curvature_row("t1", 1, "toxigen_qa", 350, group="muslim"),
        curvature_row("t1", 1, "toxigen_qa", 999, group="muslim", algorithm="lanczos"),
        curvature_row("t1", 1, "toxigen_qa", 250, group="women"),
        curvature_row("low", 1, "toxigen_qa", 150, group="muslim", algorithm="lanczos"),
    ]
    write_table(results_dir, "curvature", rows, parts=2)
    write_table(results_dir, "weights",
                weight_rows("t0", 2e-5, 7e-5, 9e-5) + weight_rows("t1", 4e-5, 6e-5, 1e-4)
                + weight_rows("low", 1e-5, 5e-5, 6e-5) + weight_rows("rev", 3e-5, 8e-5, 1.1e-4))
    return results_dir


@pytest.fixture
def study(tmp_path: Path):
    return load_results(write_curvature_study(tmp_path))


def approx(fit: dict) -> dict:
    """`fit` with every float compared approximately (None and strings exactly)."""
    return {key: pytest.approx(value) if isinstance(value, float) else value for key, value in fit.items()}


def frames(results) -> tuple[pl.DataFrame, pl.DataFrame]:
    by_trial = curvature_by_trial(results.trials, results.evals, curvature=results.curvature,
                                  weights=results.weights)
    groups = group_curvature_by_trial(results.trials, results.evals, curvature=results.curvature)
    return by_trial, groups


# ---------------------------------------------------------------- OLS


def test_ols_worked_example():
    """x = [1, 2, 3, 4], y = [2, 4, 5, 8] (the arithmetic is in ols's docstring):
    slope 1.9, intercept 0.0, slope_se √0.07, intercept_se √0.525, R² = 361/375,
    p = 1 − 19/√375 (t test with 2 degrees of freedom)."""
    fit = ols(pl.DataFrame({"x": [1, 2, 3, 4], "y": [2.0, 4.0, 5.0, 8.0]}), y="y", x="x")
    assert fit["n"] == 4
    assert fit["slope"] == pytest.approx(1.9)
    assert fit["intercept"] == pytest.approx(0.0, abs=1e-12)
    assert fit["slope_se"] == pytest.approx(math.sqrt(0.07))
    assert fit["intercept_se"] == pytest.approx(math.sqrt(0.525))
    assert fit["r_squared"] == pytest.approx(361 / 375)
    assert fit["p_value"] == pytest.approx(1 - 19 / math.sqrt(375))


def test_ols_equals_statsmodels_and_drops_missing_rows():
    """Nine rows, two of them unusable (a null x, a NaN y): the fit is statsmodels' own on the
    other seven, constant added by hand."""
    import numpy as np
    import statsmodels.api as sm

    frame = pl.DataFrame({
        "lr": [2e-6, 5e-6, 1e-5, 2e-5, 2e-6, 5e-6, 1e-5, None, 2e-5],
        "rho": [180.0, 120.0, 413.0, 31.0, 150.0, 95.0, 300.0, 10.0, float("nan")],
    })
    x = np.array([2e-6, 5e-6, 1e-5, 2e-5, 2e-6, 5e-6, 1e-5])
    y = np.array([180.0, 120.0, 413.0, 31.0, 150.0, 95.0, 300.0])
    reference = sm.OLS(y, sm.add_constant(x)).fit()
    fit = ols(frame.lazy(), y="rho", x="lr")
    assert fit == {
        "n": 7,
        "slope": pytest.approx(reference.params[1]),
        "slope_se": pytest.approx(reference.bse[1]),
        "intercept": pytest.approx(reference.params[0]),
        "intercept_se": pytest.approx(reference.bse[0]),
        "p_value": pytest.approx(reference.pvalues[1]),
        "r_squared": pytest.approx(reference.rsquared),
    }


def test_ols_without_a_line_to_fit():
    """Two points (no residual degrees of freedom) or a constant x: n and nulls, no error.
    A constant y: a flat line (slope 0, intercept y, zero errors), R² and p undefined."""
    nothing = {"slope": None, "slope_se": None, "intercept": None, "intercept_se": None,
               "p_value": None, "r_squared": None}
    assert ols(pl.DataFrame({"x": [1.0, 2.0], "y": [1.0, 3.0]}), y="y", x="x") == {"n": 2} | nothing
    assert ols(pl.DataFrame({"x": [], "y": []}, schema={"x": pl.Float64, "y": pl.Float64}),
               y="y", x="x") == {"n": 0} | nothing
    assert ols(pl.DataFrame({"x": [5.0] * 4, "y": [1.0, 2.0, 3.0, 4.0]}), y="y", x="x") == {"n": 4} | nothing
    flat = ols(pl.DataFrame({"x": [1.0, 2.0, 3.0], "y": [0.5] * 3}), y="y", x="x")
    assert flat == {"n": 3, "slope": 0.0, "slope_se": 0.0, "intercept": 0.5, "intercept_se": 0.0,
                    "p_value": None, "r_squared": None}


# ---------------------------------------------------------------- per trial


def test_curvature_by_trial_joins_the_right_values(study):
    """See write_curvature_study: ρ from power iteration where both exist (t0: 400, not 410),
    sample seeds averaged (t1: 300 from −280 and 320), Lanczos as fallback (low), the first of
    eigenvalues when eigenvalue is null (rev: 50); weight change from stage 1 (from base) and
    the final stage (from previous); curvature_bound = ½ ρ ‖θ_AB − θ_A‖², e.g. t0:
    ½ · 400 · 7e-5 = 0.014."""
    by_trial, _ = frames(study)
    expected = pl.DataFrame({
        "trial_id": ["low", "rev", "t0", "t1"],
        "chain": ["tqa_arc", "arc_tqa", "tqa_arc", "tqa_arc"],
        "seed": [0, 0, 0, 1],
        "first_task": ["toxigen_qa", "arc", "toxigen_qa", "toxigen_qa"],
        "first_stage_key": ["low-1", "rev-1", "t0-1", "t1-1"],
        "first_learning_rate": [1e-5, 1e-3, 1e-3, 1e-3],
        "log10_first_learning_rate": [-5.0, -3.0, -3.0, -3.0],
        "algorithm": ["lanczos", "power_iteration", "power_iteration", "power_iteration"],
        "n_samples": [50, 50, 50, 50],
        "n_measurements": [1, 1, 1, 2],
        "converged": [False, True, True, True],
        "spectral_radius": [100.0, 50.0, 400.0, 300.0],
        "hessian_trace": [None, None, 1000.0, None],
        "l2_sq_first_from_base": [1e-5, 3e-5, 2e-5, 4e-5],
        "l2_sq_final_from_previous": [5e-5, 8e-5, 7e-5, 6e-5],
        "curvature_bound": [0.5 * 100 * 5e-5, 0.5 * 50 * 8e-5, 0.5 * 400 * 7e-5, 0.5 * 300 * 6e-5],
        "forgetting": [0.02, 0.05, 0.10, 0.10],
    })
    assert_frame_equal(by_trial.select(expected.columns), expected)
    assert by_trial.get_column("stage1.learning_rate").to_list() == [1e-5, None, 1e-3, 1e-3]


def test_curvature_by_trial_options(study):
    """algorithm="lanczos" forces Lanczos (t0: 410; t1 and rev have none → null);
    hutchinson is refused; without a curvature table only the weights are filled in."""
    lanczos = curvature_by_trial(study.trials, study.evals, curvature=study.curvature,
                                 algorithm="lanczos")
    assert lanczos.select("trial_id", "spectral_radius").rows() == [
        ("low", 100.0), ("t0", 410.0),
    ]
    with pytest.raises(ValueError, match=re.escape(HUTCHINSON_HAS_NO_EIGENVALUE)):
        curvature_by_trial(study.trials, study.evals, curvature=study.curvature, algorithm="hutchinson")
    weights_only = curvature_by_trial(study.trials, study.evals, curvature=None, weights=study.weights)
    assert weights_only.height == 4
    assert weights_only.get_column("spectral_radius").null_count() == 4
    assert weights_only.get_column("l2_sq_final_from_previous").to_list() == [5e-5, 8e-5, 7e-5, 6e-5]


def test_weight_change_in_every_normalisation(study):
    """Each trial's distances over n_params = 1000 (write_curvature_study): ‖Δθ‖²/N and
    sqrt(‖Δθ‖²/N), e.g. t0: ‖θ_A − θ_base‖² 2e-5 → 2e-8 and 1.4142e-4; ‖θ_AB − θ_A‖² 7e-5 → 7e-8
    and 2.6458e-4. Per setting, each column is its seeds' mean: tqa_arc lr 1e-3 (t0, t1) has
    (2e-8 + 4e-8)/2 = 3e-8 and (√2e-8 + √4e-8)/2 = (1.4142e-4 + 2e-4)/2 = 1.7071e-4."""
    by_trial, _ = frames(study)
    first, final = [1e-5, 3e-5, 2e-5, 4e-5], [5e-5, 8e-5, 7e-5, 6e-5]  # low, rev, t0, t1
    expected = pl.DataFrame({
        "trial_id": ["low", "rev", "t0", "t1"],
        "l2_sq_first_from_base": first,
        "mean_sq_first_from_base": [v / 1000 for v in first],
        "rms_first_from_base": [math.sqrt(v / 1000) for v in first],
        "l2_sq_final_from_previous": final,
        "mean_sq_final_from_previous": [v / 1000 for v in final],
        "rms_final_from_previous": [math.sqrt(v / 1000) for v in final],
    })
    assert_frame_equal(by_trial.select(expected.columns), expected)
    setting = curvature_by_setting(by_trial).filter(pl.col("grid_point") == GRID_HIGH_LR).row(0, named=True)
    assert setting["mean_sq_first_from_base"] == pytest.approx(3e-8)
    assert setting["rms_first_from_base"] == pytest.approx((math.sqrt(2e-8) + math.sqrt(4e-8)) / 2)
    assert setting["rms_final_from_previous"] == pytest.approx((math.sqrt(7e-8) + math.sqrt(6e-8)) / 2)


def test_loaded_weights_table_carries_the_normalisations_and_nulls_without_a_count(tmp_path: Path):
    """load_results adds mean_sq_* and rms_* beside the stored sums: 9 over 4 parameters → 2.25
    and 1.5. A row whose count is null, or a file with no n_params column, keeps its raw sum
    and gets nulls (nothing to divide by)."""
    write_table(tmp_path, "evals", [{"trial_id": "t", "stage": 1, "eval_task": "toxigen_qa", "metric": "accuracy",
                                     "group": "all", "n": 10, "correct": 9, "accuracy": 0.9}])
    write_table(tmp_path, "weights", [
        {"trial_id": "t", "stage": 1, "l2_sq_from_previous": 9.0, "l2_sq_from_base": 9.0, "n_params": 4},
        {"trial_id": "u", "stage": 1, "l2_sq_from_previous": 9.0, "l2_sq_from_base": 9.0, "n_params": None},
    ])
    weights = load_results(tmp_path).weights.collect().sort("trial_id")
    assert weights.select("l2_sq_from_previous", "mean_sq_from_previous", "rms_from_previous",
                          "mean_sq_from_base", "rms_from_base").rows() == [(9.0, 2.25, 1.5, 2.25, 1.5),
                                                                           (9.0, None, None, None, None)]
    no_count = with_weight_norms(pl.DataFrame({"trial_id": ["t"], "stage": [1], "l2_sq_from_previous": [9.0],
                                               "l2_sq_from_base": [9.0]})).collect()
    assert no_count.select("l2_sq_from_base", "mean_sq_from_base", "rms_from_base").rows() == [(9.0, None, None)]


# ---------------------------------------------------------------- per setting (Tables 11–12)


def test_curvature_by_setting_two_seeds(study):
    """tqa_arc lr 1e-3 has seeds t0 and t1: ρ mean (400 + 300)/2 = 350, sample std
    √((50² + 50²)/1) = √5000 ≈ 70.71; ‖θ_A − θ_base‖² (2e-5 + 4e-5)/2 = 3e-5;
    ‖θ_AB − θ_A‖² (7e-5 + 6e-5)/2 = 6.5e-5; forgetting 0.10. One-seed settings: std null."""
    by_trial, _ = frames(study)
    expected = pl.DataFrame({
        "chain": ["arc_tqa", "tqa_arc", "tqa_arc"],
        "grid_point": ["{}", GRID_HIGH_LR, GRID_LOW_LR],
        "first_task": ["arc", "toxigen_qa", "toxigen_qa"],
        "first_learning_rate": [1e-3, 1e-3, 1e-5],
        "n_seeds": [1, 2, 1],
        "n_seeds_spectral_radius": [1, 2, 1],
        "spectral_radius": [50.0, 350.0, 100.0],
        "spectral_radius_std": [None, math.sqrt(5000), None],
        "l2_sq_first_from_base": [3e-5, 3e-5, 1e-5],
        "l2_sq_final_from_previous": [8e-5, 6.5e-5, 5e-5],
        "n_seeds_forgetting": [1, 2, 1],
        "forgetting": [0.05, 0.10, 0.02],
    })
    assert_frame_equal(curvature_by_setting(by_trial).select(expected.columns), expected)


# ---------------------------------------------------------------- per group


def test_group_curvature_pairs_trial_and_group(study):
    """Each (trial, group) curvature meets the same trial's forgetting of that group:
    low/muslim 150 ↔ 0.10 (biased 0.10 − 0.02 = 0.08); t0/muslim 500 ↔ 0.30 (0.20),
    t0/women 200 ↔ 0.00 (−0.10); t1/muslim 350 (power iteration, not lanczos 999) ↔ 0.05
    (−0.05), t1/women 250 ↔ 0.30 (0.20). low/women has forgetting but no curvature: no row."""
    _, groups = frames(study)
    expected = pl.DataFrame({
        "trial_id": ["low", "t0", "t0", "t1", "t1"],
        "group": ["muslim", "muslim", "women", "muslim", "women"],
        "algorithm": ["lanczos"] + ["power_iteration"] * 4,
        "group_spectral_radius": [150.0, 500.0, 200.0, 350.0, 250.0],
        "group_forgetting": [0.10, 0.30, 0.00, 0.05, 0.30],
        "biased_forgetting": [0.08, 0.20, -0.10, -0.05, 0.20],
    })
    assert_frame_equal(groups.select(expected.columns), expected)
    regression = curvature_regressions(frames(study)[0], groups).filter(
        pl.col("regression") == "group_forgetting~group_spectral_radius",
        pl.col("first_task") == "toxigen_qa",
    ).row(0, named=True)
    assert regression == approx({
        "regression": "group_forgetting~group_spectral_radius", "first_task": "toxigen_qa",
        "y": "group_forgetting", "x": "group_spectral_radius",
    } | ols(expected, y="group_forgetting", x="group_spectral_radius"))


# ---------------------------------------------------------------- regressions (Figure 5)


def test_regressions_per_first_task_and_pooled(study):
    """spectral_radius~log10_lr on toxigen_qa: points (−3, 400), (−3, 300), (−5, 100):
    x̄ = −11/3, ȳ = 800/3, Sxy = 1000/3, Sxx = 8/3 → slope 125, intercept 800/3 + 125 · 11/3
    = 725; fitted 350, 350, 100 → SSR 5000, SST 140000/3 → R² = 25/28.
    arc has one trial: n = 1 and no fit. Pooled adds rev (−3, 50): n = 4. Every other row is
    ols() on the same points."""
    by_trial, groups = frames(study)
    table = curvature_regressions(by_trial, groups)
    assert table.columns == ["regression", "first_task", "y", "x", "n", "slope", "slope_se",
                             "intercept", "intercept_se", "p_value", "r_squared"]
    # Five per-trial regressions × (arc, toxigen_qa, pooled) + the group one × (toxigen_qa, pooled).
    assert table.height == (len(REGRESSIONS) - 1) * 3 + 2
    lr = table.filter(pl.col("regression") == "spectral_radius~log10_lr")
    assert lr.get_column("first_task").to_list() == ["arc", "toxigen_qa", "all"]
    assert lr.get_column("n").to_list() == [1, 3, 4]
    tqa = lr.row(1, named=True)
    assert (tqa["slope"], tqa["intercept"], tqa["r_squared"]) == (
        pytest.approx(125.0), pytest.approx(725.0), pytest.approx(25 / 28))
    assert lr.row(0, named=True)["slope"] is None
    per_trial = table.filter(pl.col("regression") != "group_forgetting~group_spectral_radius")
    for row in per_trial.iter_rows(named=True):
        task = row["first_task"]
        points = by_trial if task == "all" else by_trial.filter(pl.col("first_task") == task)
        fit = ols(points, y=row["y"], x=row["x"])
        assert {k: row[k] for k in fit} == approx(fit), row["regression"]


def test_lr_regression_counts_a_shared_first_stage_once():
    """Trials a and b share stage 1 (key k1: one θ_A, one ρ = 400) and go on to different
    second tasks; c (k2) and d (k3) have their own. spectral_radius~log10_lr uses 3 points
    (k1, k2, k3); forgetting~spectral_radius uses all 4 trials."""
    by_trial = pl.DataFrame({
        "trial_id": ["a", "b", "c", "d"],
        "first_task": ["toxigen_qa"] * 4,
        "first_stage_key": ["k1", "k1", "k2", "k3"],
        "first_learning_rate": [1e-5, 1e-5, 2e-5, 5e-6],
        "log10_first_learning_rate": [-5.0, -5.0, math.log10(2e-5), math.log10(5e-6)],
        "spectral_radius": [400.0, 400.0, 100.0, 250.0],
        "l2_sq_final_from_previous": [7e-5, 6e-5, 7.5e-5, 6.5e-5],
        "curvature_bound": [0.014, 0.012, 0.00375, 0.008125],
        "forgetting": [0.05, 0.08, 0.30, 0.20],
    })
    table = curvature_regressions(by_trial).filter(pl.col("first_task") == "toxigen_qa")
    n = dict(table.select("regression", "n").iter_rows())
    assert n["spectral_radius~log10_lr"] == n["spectral_radius~lr"] == 3
    assert n["forgetting~spectral_radius"] == n["forgetting~weight_change"] == 4
    lr = table.filter(pl.col("regression") == "spectral_radius~log10_lr").row(0, named=True)
    once = ols(by_trial.slice(1), y="spectral_radius", x="log10_first_learning_rate")  # b, c, d
    assert (lr["slope"], lr["r_squared"]) == (pytest.approx(once["slope"]), pytest.approx(once["r_squared"]))


# ---------------------------------------------------------------- report


def test_write_report_adds_the_curvature_section(tmp_path: Path):
    """With curvature and weights: the section, its four tables (CSV = Parquet rows) and three
    non-empty PNGs, all six figures embedded in report.html."""
    results_dir = write_curvature_study(tmp_path / "results")
    text = write_report(results_dir).read_text(encoding="utf-8")
    out = results_dir / "report"
    assert f"## {CURVATURE_HEADING}" in text
    lr_fit = "| spectral_radius~log10_lr | {} | spectral_radius | log10_first_learning_rate | {} |"
    for needle in [
        # ρ 350 ± √5000, weight change as the seeds' mean RMS over 1000 parameters:
        # (√2e-8 + √4e-8)/2 = 1.707e-4 and (√7e-8 + √6e-8)/2 = 2.548e-4, forgetting 10 points.
        "| tqa_arc | stage1.learning_rate=0.001 | toxigen_qa | 0.001 | 2 | 350 ± 70.7 | 1.707e-04 "
        "| 2.548e-04 | 10.00 |",
        "| sqrt(‖θ_A − θ_base‖²/N) | sqrt(‖θ_AB − θ_A‖²/N) |",
        "The paper does not state which normalisation its Tables 11–12 use.",
        lr_fit.format("toxigen_qa", 3) + " 125 ± ",
        lr_fit.format("arc", 1) + " – | – | – | – |",
        "Spectral radius from: lanczos (1 trial), power_iteration (3 trials).",
        "figures/spectral_radius_by_lr.png", "figures/forgetting_by_spectral_radius.png",
    ]:
        assert needle in text, needle
    heights = {}
    for name in CURVATURE_TABLES:
        from_parquet = pl.read_parquet(out / "tables" / f"{name}.parquet")
        assert pl.read_csv(out / "tables" / f"{name}.csv").height == from_parquet.height, name
        heights[name] = from_parquet.height
    assert heights == {"curvature_by_setting": 3, "curvature_by_trial": 4,
                       "group_curvature_by_trial": 5, "curvature_regressions": 17}
    settings = pl.read_parquet(out / "tables" / "curvature_by_setting.parquet")
    assert settings.get_column("spectral_radius").to_list() == [50.0, 350.0, 100.0]
    for name in CURVATURE_FIGURE_FILES.values():
        data = (out / "figures" / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 1000, name
    page = (out / "report.html").read_text(encoding="utf-8")
    assert page.count('src="data:image/png;base64,') == len(FIGURES) + len(CURVATURE_FIGURE_FILES)
    assert CURVATURE_HEADING in page and "350 ± 70.7" in page


def test_report_without_curvature_or_weights_has_no_curvature_section(tmp_path: Path):
    write_study(tmp_path)
    text = write_report(tmp_path).read_text(encoding="utf-8")
    assert CURVATURE_HEADING not in text and "ρ(H)" not in text
    out = tmp_path / "report"
    assert not any((out / "tables" / f"{name}.csv").exists() for name in CURVATURE_TABLES)
    assert not any((out / "figures" / name).exists() for name in CURVATURE_FIGURE_FILES.values())


def test_report_with_weights_only(tmp_path: Path):
    """Only weights (curvature not measured): no curvature section, regression table or
    spectral-radius figure; the weight change per setting is shown without a ρ(H) column."""
    write_table(tmp_path, "trials", trial_rows("t", "tqa_arc", 0, ["toxigen_qa", "arc"]))
    write_table(tmp_path, "evals", [
        {"trial_id": "t", "stage": s, "eval_task": "toxigen_qa", "metric": "accuracy", "group": "all",
         "n": 10, "correct": c, "accuracy": c / 10} for s, c in [(1, 9), (2, 7)]
    ])
    write_table(tmp_path, "weights", weight_rows("t", 2e-5, 7e-5, 9e-5))
    text = write_report(tmp_path).read_text(encoding="utf-8")
    assert CURVATURE_HEADING not in text and "ρ(H)" not in text and "Regressions" not in text
    assert "## Weight change per setting (Tables 11–12)" in text
    assert "| tqa_arc | – | toxigen_qa | 1e-05 | 1 | 1.414e-04 | 2.646e-04 | 20.00 |" in text  # √(2e-5/1000), √(7e-5/1000)
    tables = tmp_path / "report" / "tables"
    assert (tables / "curvature_by_setting.parquet").is_file()
    assert not (tables / "curvature_regressions.parquet").exists()
    assert not any((tmp_path / "report" / "figures" / name).exists() for name in CURVATURE_FIGURE_FILES.values())


def test_import_analysis_leaves_statsmodels_and_matplotlib_unloaded():
    """statsmodels (~1.5 s) and matplotlib load on first use, not with `import analysis`."""
    import subprocess
    import sys

    code = (
        "import sys, analysis, analysis.curvature, analysis.regression, analysis.report\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'statsmodels', 'scipy', 'matplotlib'}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.stdout.strip() == "[]", result.stdout
