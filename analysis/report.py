"""Write a study's forgetting report (Markdown, HTML, CSV/Parquet tables, PNG figures).

Everything is rebuilt from the Parquet results alone. The report is assembled once as a list
of blocks (headings, paragraphs, bullet lists, tables, figures) and rendered twice, so the
Markdown and the HTML always show the same numbers.
"""

from __future__ import annotations

import base64
import html
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from analysis.accuracy import PRIMARY, generation_tasks
from analysis.benchmarks import benchmark_columns, judge_accuracy, stage_benchmarks
from analysis.labels import TASK_LABELS
from analysis.paper_tables import paper_tables, reward_models, varying_axes
from analysis.uncertainty import forgetting_uncertainty
from analysis.transfer import accuracy_matrix, backward_transfer
from analysis.curvature import (
    POOLED,
    curvature_by_setting,
    curvature_by_trial,
    curvature_regressions,
    group_curvature_by_trial,
)
from analysis.figures import (
    plot_forgetting_by_first_lr,
    plot_forgetting_by_hyperparameter,
    plot_forgetting_by_spectral_radius,
    plot_accuracy_progression,
    plot_forgetting_curve,
    plot_group_forgetting,
    plot_spectral_radius_by_lr,
    plot_spectral_radius_by_setting,
)
from analysis.forgetting import (
    forgetting_by_trial,
    forgetting_curve,
    forgetting_summary,
    group_forgetting,
    mean_stage_accuracy,
)
from analysis.labels import axis_label, grid_label, points, setting_label
from analysis.render import html_table, markdown_table
from analysis.results import ResultTables, load_results

# File names under the output folder; `study report` and the README point at these.
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
TABLES_DIR = "tables"
FIGURES_DIR = "figures"
FIGURE_FILES = {
    "forgetting_by_first_lr": "forgetting_by_first_lr.png",
    "group_forgetting": "group_forgetting.png",
    "forgetting_curve": "forgetting_curve.png",
    "accuracy_progression": "accuracy_progression.png",
}
# Only in a report whose results hold a curvature or weights table.
CURVATURE_TABLES = ("curvature_by_setting", "curvature_by_trial", "group_curvature_by_trial",
                    "curvature_regressions")
CURVATURE_FIGURE_FILES = {
    "spectral_radius_by_setting": "spectral_radius_by_setting.png",
    "spectral_radius_by_lr": "spectral_radius_by_lr.png",
    "forgetting_by_spectral_radius": "forgetting_by_spectral_radius.png",
}
CURVATURE_HEADING = "Curvature and weight change"
# The first stage's lr has its own figure (always written); every other numeric grid key that
# varies within a chain (stage 2's lr, stage 1's batch size, ...) gets
# figures/forgetting_by_<key with dots as underscores>.png, the paper's Figures 2b and 4.
FIRST_LR_AXIS = "stage1.learning_rate"

DEFINITIONS = [
    "A = the task of a chain's first stage, B = the task of its final stage; θ_A = the model "
    "after stage 1, θ_AB = the model after a later stage s.",
    "Forgetting_A = Acc_A(θ_A) − Acc_A(θ_AB), on all of A's examples (paper §2.4, eq. 1).",
    "Forgetting_A,g = the same on A's examples of demographic group g (eq. 2); an example "
    "labelled with several groups counts toward each of them.",
    "WG forgetting = max over groups g of Forgetting_A,g; the group that attains it is shown "
    "in parentheses (ties go to the first name alphabetically).",
    "BiasedForgetting_A,g = Forgetting_A,g − Forgetting_A (eq. 3); the tables report its "
    "maximum, WG forgetting − Forgetting_A.",
    "A setting is a chain with one grid point. Its numbers are means over its seeds: per "
    "group and stage the accuracies are averaged over seeds first and the differences are "
    "taken of those means (equal to the mean of per-seed forgetting; WG is the max over "
    "groups of the seed-mean group forgetting). A seed counts only where both its stage-1 "
    "and its stage-s evaluations exist.",
    "All accuracies and forgetting values in this report are percentage points (accuracy × "
    "100); the CSV/Parquet tables keep fractions in [0, 1].",
    "Acc of a generation task (toxigen_prompts, saferdialogues: no answer options) is its safe % "
    "(share of continuations the toxicity classifier calls safe), so a PPO-trained safety task's "
    "forgetting is the drop in safe %; the metric column of tables/stage_accuracy says which.",
]


CURVATURE_DEFINITIONS = [
    "ρ(H) = spectral radius of the Hessian of the first task's training loss at θ_A (after "
    "stage 1, on group \"all\"): |λ| of its top eigenvalue, by power iteration as in the paper "
    "(Lanczos where a trial has no power-iteration measurement; the algorithm is in "
    "curvature_by_trial). Where several measurements exist, the full parameter set and the "
    "most samples win and sample seeds are averaged.",
    "‖θ_A − θ_base‖² = squared l2 distance of the weights after stage 1 from the base model; "
    "‖θ_AB − θ_A‖² = that of the final stage from the stage before it (paper Tables 11–12).",
    "The per-setting table shows weight change as sqrt(‖Δθ‖²/N), the root-mean-square change per "
    "parameter (N = parameters compared), which does not grow with the model's size; "
    "curvature_by_trial and curvature_by_setting also hold the raw sum ‖Δθ‖² (l2_sq_*, which the "
    "regressions and curvature_bound use) and the mean square ‖Δθ‖²/N (mean_sq_*). The paper does "
    "not state which normalisation its Tables 11–12 use.",
    "Regressions are OLS with a constant (statsmodels), one point per trial (seed); for ρ(H) "
    "against the learning rate, one point per distinct stage 1 (trials that share θ_A count "
    "once). They are fitted per first task and pooled (first task \"all\"); fewer than 3 points "
    "give no fit (–). p is the two-sided p-value of the slope.",
    "The learning rate enters as log10(lr): grids are geometric, so on a linear scale the "
    "largest rate alone sets the slope, and the figure's log axis shows a straight line only "
    "for a fit in log10(lr). spectral_radius~lr, the fit on lr itself, is listed too, since "
    "the paper does not say which scale its OLS used.",
    "curvature_bound = ½ ρ(H) ‖θ_AB − θ_A‖² is the paper's eq. (5) bound on the rise of the "
    "first task's loss; forgetting is in accuracy, so it is only compared by regression.",
    "Forgetting is printed in points here; in the CSV/Parquet tables, and so in the slopes and "
    "intercepts of regressions with forgetting as y, it is a fraction.",
]


@dataclass(frozen=True)
class _Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class _Paragraph:
    text: str


@dataclass(frozen=True)
class _Bullets:
    items: list[str]


@dataclass(frozen=True)
class _Table:
    header: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class _Figure:
    caption: str
    path: Path  # absolute; rendered relative to the report folder


def _wg_cell(wg: float | None, group: str | None) -> str:
    return "–" if wg is None else f"{points(wg)} ({group})"


def _ci(row: dict, column: str) -> str:
    """' [low, high]' in points when the row carries the column's interval, else ''."""
    low, high = row.get(f"{column}_low"), row.get(f"{column}_high")
    return "" if low is None or high is None else f" [{points(low)}, {points(high)}]"


def _max_test(row: dict) -> str:
    """' (p = …)' when the row carries the permutation test of the maximum, else ''."""
    p = row.get("max_biased_forgetting_p")
    return "" if p is None else f" (p = {_number(p, '.2g')})"


def _summary_table(summary: pl.DataFrame) -> _Table:
    header = [
        "Chain", "Stages", "Grid point", "Seeds", "Acc_A(θ_A)", "Acc_A(θ_AB)", "Acc_B(θ_AB)",
        "Forgetting_A", "WG forgetting (group)", "Max BiasedForgetting",
    ]
    # WG and max biased forgetting are maxima over groups: no interval (it would lean high and
    # can miss its own estimate); the maximum carries its permutation test instead.
    rows = [
        [
            r["chain"], r["chain_stages"], grid_label(r["grid_point"]) or "–", str(r["n_seeds"]),
            points(r["acc_first_task_after_first_stage"]) + _ci(r, "acc_first_task_after_first_stage"),
            points(r["acc_first_task_after_final"]) + _ci(r, "acc_first_task_after_final"),
            points(r["acc_final_task_after_final"]), points(r["forgetting"]) + _ci(r, "forgetting"),
            _wg_cell(r["wg_forgetting"], r["worst_group"]),
            points(r["max_biased_forgetting"]) + _max_test(r),
        ]
        for r in summary.iter_rows(named=True)
    ]
    return _Table(header, rows)


def _group_table(groups: pl.DataFrame) -> _Table:
    tested = "p_bootstrap_holm" in groups.columns
    header = [
        "Chain", "Grid point", "Group", "Seeds", "Acc_A,g(θ_A)", "Acc_A,g(θ_AB)",
        "Forgetting_A,g", "BiasedForgetting_A,g", *(["p (Holm)"] if tested else []), "Worst group",
    ]
    rows = [
        [
            r["chain"], grid_label(r["grid_point"]) or "–", r["group"], str(r["n_seeds"]),
            points(r["acc_after_first_stage"]), points(r["acc_after_stage"]),
            points(r["forgetting"]) + _ci(r, "group_forgetting"),
            points(r["biased_forgetting"]) + _ci(r, "difference"),
            *([_number(r["p_bootstrap_holm"], ".3g")] if tested else []),
            "yes" if r["is_worst_group"] else "",
        ]
        for r in groups.iter_rows(named=True)
    ]
    return _Table(header, rows)


UNCERTAINTY_NOTE = (
    "[low, high] = 95% confidence interval, centred on the estimate: the eval examples are "
    "resampled 1,000 times, each resample shared by all seeds and both stages (the seeds were "
    "evaluated on the same examples), and the seed-to-seed variance is added from the spread of "
    "the seeds, with a t quantile for the few seeds (analysis/uncertainty.py). With one seed only "
    "the eval set varies. WG and max BiasedForgetting are maxima over noisy groups, biased upward "
    "(positive even when no group differs), so they get no interval; p after the max is a "
    "permutation test of \"no group forgets more than average\" (group labels shuffled over the "
    "eval examples, 1,000 times). In the group table, p (Holm) tests BiasedForgetting_A,g = 0 "
    "with the interval's standard error, Holm-adjusted over the groups of a setting (a "
    "permutation test per group is in tables/group_forgetting_tests)."
)


def uncertainty_tables(
    trials: pl.DataFrame, predictions: pl.LazyFrame, *, n_boot: int = 1000, seed: int = 0,
    generation_tasks: list[str] | tuple[str, ...] = (),
) -> dict[str, pl.DataFrame]:
    """Bootstrap intervals and group tests from the per-example predictions (their own tables).
    Intervals of every accuracy at every stage (analysis.uncertainty.accuracy_intervals) are
    left to the Python API: the report shows those of the first task's accuracies, which come
    with the forgetting intervals."""
    intervals, tests = forgetting_uncertainty(
        trials, predictions, n_boot=n_boot, seed=seed, generation_tasks=generation_tasks)
    return {"forgetting_intervals": intervals, "group_forgetting_tests": tests}


def _with_intervals(summary: pl.DataFrame, groups: pl.DataFrame, tables: dict[str, pl.DataFrame]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The summary and per-group tables with <metric>_low/_high (and group p-values) joined in."""
    intervals = tables.get("forgetting_intervals")
    if intervals is not None and not intervals.is_empty() and not summary.is_empty():
        bounded = intervals.filter(pl.col("low").is_not_null())
        wide = bounded.pivot(on="metric", index=["chain", "grid_point"], values=["low", "high"])
        wide = wide.rename({c: f"{c.split('_', 1)[1]}_{c.split('_', 1)[0]}" for c in wide.columns if c not in ("chain", "grid_point")})
        summary = summary.join(wide, on=["chain", "grid_point"], how="left")
        tested = intervals.filter(pl.col("metric") == "max_biased_forgetting").select(
            "chain", "grid_point", max_biased_forgetting_p="p_value")
        summary = summary.join(tested, on=["chain", "grid_point"], how="left")
    tests = tables.get("group_forgetting_tests")
    if tests is not None and not tests.is_empty() and not groups.is_empty():
        keep = ["chain", "grid_point", "group", "group_forgetting_low", "group_forgetting_high",
                "difference_low", "difference_high", "p_bootstrap_holm"]
        groups = groups.join(tests.select(keep), on=["chain", "grid_point", "group"], how="left")
    return summary, groups


def _curve_table(curve: pl.DataFrame) -> _Table:
    header = [
        "Chain", "Grid point", "After stage", "Stage task", "Seeds", "Acc_A", "Forgetting_A",
        "WG forgetting (group)", "Max BiasedForgetting",
    ]
    rows = [
        [
            r["chain"], grid_label(r["grid_point"]) or "–", str(r["after_stage"]),
            r["stage_task"] or "–", str(r["n_seeds"]), points(r["acc_first_task_after_stage"]),
            points(r["forgetting"]), _wg_cell(r["wg_forgetting"], r["worst_group"]),
            points(r["max_biased_forgetting"]),
        ]
        for r in curve.iter_rows(named=True)
    ]
    return _Table(header, rows)


def _transfer_table(bwt: pl.DataFrame) -> _Table:
    header = ["Chain", "Grid point", "Stages", "Seeds", "BWT"]
    rows = [[r["chain"], grid_label(r["grid_point"]) or "–", str(r["n_stages"]), str(r["n_seeds"]), points(r["bwt"])]
            for r in bwt.iter_rows(named=True)]
    return _Table(header, rows)


_METRIC_LABELS = {"accuracy": "acc", "safe": "safe %", "generated_accuracy": "generated acc",
                  "unparseable": "unparseable %", "bias_score_ambig": "bias (ambig) ×100",
                  "bias_score_disambig": "bias (disambig) ×100"}


def _benchmark_table(long: pl.DataFrame) -> _Table:
    """Table 6 of the paper: one row per setting and stage, one column per (task, metric)."""
    columns = benchmark_columns(long)
    header = ["Chain", "Grid point", "After stage", "Trained on", "Seeds",
              *(f"{task} {_METRIC_LABELS.get(metric, metric)}" for task, metric in columns)]
    cells = {(r["chain"], r["grid_point"], r["stage"], r["eval_task"], r["metric"]): r for r in long.iter_rows(named=True)}
    rows = []
    for key in long.select("chain", "grid_point", "stage").unique().sort("chain", "grid_point", "stage").rows():
        first = next(r for k, r in cells.items() if k[:3] == key)
        row = [key[0], grid_label(key[1]) or "–", str(key[2]), first["stage_task"] or "(base)", str(first["n_seeds"])]
        for task, metric in columns:
            cell = cells.get((*key, task, metric))
            row.append("–" if cell is None or cell["value"] is None else points(cell["value"]))
        rows.append(row)
    return _Table(header, rows)


PAPER_TABLE_TITLES = {
    "ordering": "Table 1: accuracy after the final stage and forgetting of the first task, per order",
    "first_stage_method": "Table 2: forgetting, WG forgetting and max BiasedForgetting per first-stage method",
    "hyperparameter": "Tables 4, 5 and 9: accuracy and forgetting by the gridded hyperparameter",
    "benchmarks": "Tables 6-10: every benchmark per model (accuracy; safe % for the safety tasks)",
}
# Columns that identify a row (kept in the CSV/Parquet tables) rather than report a number;
# the row labels (order, model, hyperparameter, grid) already say what they hold.
_KEY_COLUMNS = ("chain", "grid_point", "pair", "axis", "value", "stage", "n_settings")


def _paper_table(frame: pl.DataFrame) -> _Table:
    """A paper table as printed: fractions as points, grid-key columns (stage<k>.*) left to the
    labels, and the chain last so every row can be traced to its results."""
    shown = [c for c in frame.columns if c not in _KEY_COLUMNS and not c.startswith("stage")]
    shown += ["chain"] if "chain" in frame.columns else []
    rows = [
        [points(r[c]) if isinstance(r[c], float) else ("–" if r[c] is None else str(r[c])) for c in shown]
        for r in frame.iter_rows(named=True)
    ]
    return _Table([c.replace("_", " ") for c in shown], rows)


def _paper_table_blocks(tables: dict[str, pl.DataFrame]) -> list[object]:
    present = [name for name in PAPER_TABLE_TITLES if not tables.get(f"paper_{name}", pl.DataFrame()).is_empty()]
    if not present:
        return []
    blocks: list[object] = [
        _Heading("The paper's tables"),
        _Paragraph("Built from the same results in the paper's layouts (seed means, points; "
                   "tables/paper_*.csv keep fractions and the setting keys). Names: "
                   + ", ".join(f"{label} = {task}" for task, label in TASK_LABELS.items()) + "."),
    ]
    for name in present:
        blocks += [_Heading(PAPER_TABLE_TITLES[name], level=3), _paper_table(tables[f"paper_{name}"])]
        if name == "first_stage_method":
            blocks += _reward_caption(tables[f"paper_{name}"], tables.get("reward_models"))
    return blocks


def _reward_caption(table: pl.DataFrame, rewards: pl.DataFrame | None) -> list[object]:
    """Table 2's caption line naming each online-RL first stage's reward model, as its runs
    recorded it (tables/reward_models)."""
    if rewards is None or rewards.is_empty():
        return []
    first = rewards.filter(pl.col("stage") == 1)
    rows = table.join(first, on=["chain", "grid_point"], how="inner")
    if rows.is_empty():
        return []
    named = [f"{r['model']} ({setting_label(r['chain'], r['grid_point'])}): {r['reward_model']}"
             for r in rows.iter_rows(named=True)]
    return [_Paragraph("Reward model of each online-RL first stage, as its runs recorded it: " + "; ".join(named)
                       + ".")]


def _benchmark_blocks(tables: dict[str, pl.DataFrame]) -> list[object]:
    long = tables["stage_benchmarks"]
    if long.is_empty():
        return []
    blocks: list[object] = [
        _Heading("Every eval task after every stage"),
        _Paragraph("Seed means over each task's whole eval set, in points (the paper's Table 6 layout): "
                   "accuracy by option scoring; safe % = share of continuations the toxicity classifier "
                   "judges not toxic; generated acc / unparseable % = the paper-exact mode (answer "
                   "generated and parsed); BBQ bias scores (Parrish et al. 2022) ×100, 0 = unbiased. "
                   "tables/stage_benchmarks has the seed spread."),
        _benchmark_table(long),
    ]
    judge = tables.get("judge_accuracy")
    if judge is not None and not judge.is_empty():
        blocks.append(_Paragraph("Toxicity classifier, held-out accuracy on ToxiGen annotations: " + "; ".join(
            f"{r['eval_task']}: {points(r['accuracy'])} (n = {r['n']})" for r in judge.iter_rows(named=True))))
    return blocks


def _number(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def _with_error(value: float | None, error: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.4g}" if error is None else f"{value:.4g} ± {error:.3g}"


def _seeds_cell(row: dict) -> str:
    """n_seeds, with the count behind ρ or forgetting where only some of the seeds have it
    (none at all shows as – in its own cell)."""
    partial = [
        f"{label}: {row[column]}"
        for label, column in [("ρ", "n_seeds_spectral_radius"), ("forgetting", "n_seeds_forgetting")]
        if 0 < row[column] < row["n_seeds"]
    ]
    return f"{row['n_seeds']} ({', '.join(partial)})" if partial else str(row["n_seeds"])


def _curvature_setting_table(by_setting: pl.DataFrame) -> _Table:
    header = [
        "Chain", "Grid point", "First task", "Stage-1 lr", "Seeds", "ρ(H) (mean ± std)",
        "sqrt(‖θ_A − θ_base‖²/N)", "sqrt(‖θ_AB − θ_A‖²/N)", "Forgetting_A",
    ]
    rows = [
        [
            r["chain"], grid_label(r["grid_point"]) or "–", r["first_task"],
            _number(r["first_learning_rate"], "g"), _seeds_cell(r),
            _with_error(r["spectral_radius"], r["spectral_radius_std"]),
            _number(r["rms_first_from_base"], ".3e"), _number(r["rms_final_from_previous"], ".3e"),
            points(r["forgetting"]),
        ]
        for r in by_setting.iter_rows(named=True)
    ]
    return _Table(header, rows)


def _regression_table(regressions: pl.DataFrame) -> _Table:
    header = ["Regression", "First task", "y", "x", "n", "Slope ± se", "Intercept ± se", "p", "R²"]
    rows = [
        [
            r["regression"], "pooled" if r["first_task"] == POOLED else r["first_task"], r["y"], r["x"],
            str(r["n"]), _with_error(r["slope"], r["slope_se"]),
            _with_error(r["intercept"], r["intercept_se"]), _number(r["p_value"], ".3g"),
            _number(r["r_squared"], ".3f"),
        ]
        for r in regressions.iter_rows(named=True)
    ]
    return _Table(header, rows)


def _algorithms_used(by_trial: pl.DataFrame) -> str:
    counts = by_trial.filter(pl.col("algorithm").is_not_null()).group_by("algorithm").len().sort("algorithm")
    if counts.is_empty():
        return "No spectral radius has been measured yet (no power-iteration or Lanczos rows after stage 1)."
    used = ", ".join(f"{a} ({n} trial{'s' if n != 1 else ''})" for a, n in counts.iter_rows())
    return f"Spectral radius from: {used}."


def _curvature_blocks(tables: dict[str, pl.DataFrame], figures: dict[str, Path]) -> list[object]:
    blocks: list[object] = [
        _Heading(CURVATURE_HEADING),
        _Bullets(CURVATURE_DEFINITIONS),
        _Paragraph(_algorithms_used(tables["curvature_by_trial"])),
        _Heading("Curvature, weight change and forgetting per setting (Tables 11–12)", level=3),
    ]
    by_setting = tables["curvature_by_setting"]
    if by_setting.is_empty():
        blocks.append(_Paragraph("No trial has a curvature or weight-change measurement yet."))
    else:
        blocks.append(_curvature_setting_table(by_setting))
    blocks += [
        _Heading("Regressions (OLS, Figure 5)", level=3),
        _regression_table(tables["curvature_regressions"]),
        _Figure("Spectral radius after stage 1 per setting, mean over seeds, error bars: std over "
                "seeds (Figure 5a).", figures["spectral_radius_by_setting"]),
        _Figure("Spectral radius after stage 1 by the first stage's learning rate (log axis); "
                "points: setting means, error bars: std over seeds, dashed: OLS in log10(lr) "
                "per first task (Figure 5b).", figures["spectral_radius_by_lr"]),
        _Figure("Forgetting of the first task at the final stage by spectral radius after "
                "stage 1, one point per trial; dashed: OLS per first task (Figure 5c).",
                figures["forgetting_by_spectral_radius"]),
    ]
    return blocks


def _curvature_tables(
    results: ResultTables, trials: pl.DataFrame, evals: pl.DataFrame, *, metric: str
) -> dict[str, pl.DataFrame]:
    """The curvature tables, or {} when the results hold neither curvature nor weights."""
    if results.curvature is None and results.weights is None:
        return {}
    curvature = None if results.curvature is None else results.curvature.collect()
    weights = None if results.weights is None else results.weights.collect()
    by_trial = curvature_by_trial(trials, evals, curvature=curvature, weights=weights, metric=metric)
    groups = group_curvature_by_trial(trials, evals, curvature=curvature, metric=metric)
    return {
        "curvature_by_setting": curvature_by_setting(by_trial),
        "curvature_by_trial": by_trial,
        "group_curvature_by_trial": groups,
        "curvature_regressions": curvature_regressions(by_trial, groups),
    }


def _curvature_figures(tables: dict[str, pl.DataFrame], figure_dir: Path) -> dict[str, Path]:
    files = {name: figure_dir / file for name, file in CURVATURE_FIGURE_FILES.items()}
    regressions = tables["curvature_regressions"]
    return {
        "spectral_radius_by_setting": plot_spectral_radius_by_setting(
            tables["curvature_by_setting"], files["spectral_radius_by_setting"]
        ),
        "spectral_radius_by_lr": plot_spectral_radius_by_lr(
            tables["curvature_by_setting"], regressions, files["spectral_radius_by_lr"]
        ),
        "forgetting_by_spectral_radius": plot_forgetting_by_spectral_radius(
            tables["curvature_by_trial"], regressions, files["forgetting_by_spectral_radius"]
        ),
    }


def hyperparameter_figure_name(axis: str) -> str:
    """The figures/ key (and file stem) of the forgetting-vs-`axis` figure."""
    return "forgetting_by_" + axis.replace(".", "_")


def hyperparameter_axes(trials: pl.DataFrame, summary: pl.DataFrame) -> list[str]:
    """The grid keys that get a forgetting-vs-value figure: every numeric key that varies
    within a chain, except stage 1's lr (its figure is always written; see FIRST_LR_AXIS) and
    any key that is stage 1's lr under another name (e.g. stage_defaults.learning_rate)."""
    axes = []
    for axis in varying_axes(trials, two_stage_only=False):
        if axis == FIRST_LR_AXIS or axis not in summary.columns or not summary.schema[axis].is_numeric():
            continue
        same_as_first_lr = summary.select(
            (pl.col(axis).cast(pl.Float64) == pl.col("first_learning_rate")).fill_null(False).all()).item()
        if not same_as_first_lr:
            axes.append(axis)
    return axes


def _write_tables(tables: dict[str, pl.DataFrame], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in tables.items():
        frame.write_parquet(folder / f"{name}.parquet")
        frame.write_csv(folder / f"{name}.csv")


def _blocks(
    results_dir: Path, tables: dict[str, pl.DataFrame], figures: dict[str, Path],
    extra_axes: list[str] = (),
) -> list[object]:
    summary = tables["forgetting_summary"]
    blocks: list[object] = [
        _Heading(f"Forgetting report: {results_dir.name}", level=1),
        _Paragraph(f"Built from the Parquet results in {results_dir}."),
        _Heading("Definitions"),
        _Bullets(DEFINITIONS),
        _Heading("Forgetting of the first task, per setting (final stage)"),
    ]
    if summary.is_empty():
        blocks.append(_Paragraph(
            "No forgetting to show yet: no chain has an evaluation of its first task after a later stage "
            "(chains still running, single-stage chains, or a first task that is not among the eval tasks)."
        ))
    else:
        blocks.append(_summary_table(summary))
        if "forgetting_intervals" in tables:
            blocks.append(_Paragraph(UNCERTAINTY_NOTE))
        ungrouped = sorted(set(summary.filter(pl.col("wg_forgetting").is_null())["first_task"].to_list()))
        if ungrouped:
            blocks.append(_Paragraph(
                f"–: worst-group and biased forgetting need demographic groups, which {', '.join(ungrouped)} "
                "does not have; only its overall forgetting is defined."
            ))
    blocks.append(_Heading("Per-group forgetting at the final stage"))
    if tables["group_forgetting"].is_empty():
        blocks.append(_Paragraph("No first task with demographic groups."))
    else:
        blocks.append(_group_table(tables["group_forgetting"]))
    blocks.append(_Heading("Forgetting curve (after every later stage)"))
    if tables["forgetting_curve"].is_empty():
        blocks.append(_Paragraph("No evaluations after a later stage yet."))
    else:
        blocks.append(_curve_table(tables["forgetting_curve"]))
    blocks.append(_Heading("Backward transfer"))
    blocks.append(_Paragraph(
        "BWT = mean over the earlier stages j of R[n][j] − R[j][j], where R[i][j] is the accuracy on the task of "
        "stage j after stage i (tables/accuracy_matrix); negative means forgetting. For two stages BWT = −Forgetting_A."
    ))
    if tables["backward_transfer"].is_empty():
        blocks.append(_Paragraph("No chain has a later stage yet."))
    else:
        blocks.append(_transfer_table(tables["backward_transfer"]))
    blocks += _benchmark_blocks(tables)
    blocks += _paper_table_blocks(tables)
    blocks.append(_Heading("Figures"))
    blocks += [
        _Figure("Forgetting of the first task by the first stage's learning rate "
                "(solid: overall, dashed: worst group; error bars: 95% confidence intervals of the overall "
                "forgetting, when predictions exist; the worst group is a maximum and has none).", figures["forgetting_by_first_lr"]),
        *[_Figure(f"Forgetting of the first task by {axis_label(axis)} (one line per order; "
                  "solid: overall, dashed: worst group; error bars: 95% confidence intervals of the "
                  "overall forgetting, when predictions exist).", figures[hyperparameter_figure_name(axis)])
          for axis in sorted(extra_axes)],
        _Figure("Per-group forgetting at the final stage; dashed line: overall forgetting, "
                "red: worst group; error bars: 95% confidence intervals (when predictions exist).",
                figures["group_forgetting"]),
        _Figure("Forgetting of the first task after each later stage.", figures["forgetting_curve"]),
        _Figure("Every eval task's accuracy (safe % for the generation tasks) after every stage, "
                "stage 0 = the base model (the paper's Figure 7).", figures["accuracy_progression"]),
    ]
    if "curvature_by_trial" in tables:
        blocks += _curvature_blocks(tables, figures)
    blocks += [
        _Heading("Tables"),
        _Paragraph(
            f"In {TABLES_DIR}/ as CSV and Parquet, accuracies as fractions: "
            + ", ".join(sorted(tables))
            + ". group_forgetting covers each setting's final stage; forgetting_by_trial has "
            "every seed, stage and group."
            + (" curvature_by_trial and group_curvature_by_trial have one row per trial and per "
               "(trial, group), the points of curvature_regressions."
               if "curvature_by_trial" in tables else "")
        ),
    ]
    return blocks


def _render_markdown(blocks: list[object], out_dir: Path) -> str:
    parts = []
    for block in blocks:
        if isinstance(block, _Heading):
            parts.append("#" * block.level + " " + block.text)
        elif isinstance(block, _Paragraph):
            parts.append(block.text)
        elif isinstance(block, _Bullets):
            parts.append("\n".join(f"- {item}" for item in block.items))
        elif isinstance(block, _Table):
            parts.append(markdown_table(block.header, block.rows))
        elif isinstance(block, _Figure):
            parts.append(f"![{block.caption}]({block.path.relative_to(out_dir).as_posix()})\n\n{block.caption}")
    return "\n\n".join(parts) + "\n"


_STYLE = (
    "body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
    "table{border-collapse:collapse;margin:1em 0;font-size:0.9em}"
    "th,td{border:1px solid #ccc;padding:0.25em 0.6em;text-align:left}"
    "th{background:#f2f2f2}img{max-width:100%}"
)


def _render_html(blocks: list[object]) -> str:
    title = next(b.text for b in blocks if isinstance(b, _Heading))
    parts = []
    for block in blocks:
        if isinstance(block, _Heading):
            parts.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, _Paragraph):
            parts.append(f"<p>{html.escape(block.text)}</p>")
        elif isinstance(block, _Bullets):
            parts.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in block.items) + "</ul>")
        elif isinstance(block, _Table):
            parts.append(html_table(block.header, block.rows))
        elif isinstance(block, _Figure):
            # Embedded so the HTML file is self-contained (mailable, viewable offline).
            data = base64.b64encode(block.path.read_bytes()).decode("ascii")
            caption = html.escape(block.caption)
            parts.append(
                f'<figure><img alt="{caption}" src="data:image/png;base64,{data}">'
                f"<figcaption>{caption}</figcaption></figure>"
            )
    body = "\n".join(parts)
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>\n"
        f"<body>\n{body}\n</body></html>\n"
    )


def write_report(
    results_dir: str | Path, out_dir: str | Path | None = None, *, metric: str = PRIMARY
) -> Path:
    """Write the forgetting report of `results_dir` and return the path of report.md.

    Into out_dir (default <results_dir>/report): report.md, report.html (figures embedded),
    tables/{forgetting_summary,group_forgetting,forgetting_curve,stage_accuracy,
    forgetting_by_trial, ...}.{csv,parquet} and figures/{forgetting_by_first_lr,group_forgetting,
    forgetting_curve,accuracy_progression}.png. When the results hold a curvature or weights table, a "Curvature
    and weight change" section is added, with tables/{curvature_by_setting,curvature_by_trial,
    group_curvature_by_trial,curvature_regressions}.{csv,parquet} and figures/
    {spectral_radius_by_setting,spectral_radius_by_lr,forgetting_by_spectral_radius}.png;
    otherwise the report is exactly the forgetting report. Every other numeric grid key that
    varies within a chain (stage 2's lr, stage 1's batch size, ...) adds
    figures/forgetting_by_<key, dots as underscores>.png. metric="primary" (the default)
    measures each task on its headline metric (accuracy; safe % for generation tasks); a
    metric name (e.g. "generated_accuracy") measures every task on that one, without
    intervals unless it is "accuracy". Raises FileNotFoundError when the folder has no evals
    or no trials.
    """
    results = load_results(results_dir)
    if results.trials is None:
        raise FileNotFoundError(
            f"no trials in results folder {results.results_dir}: expected Parquet files in "
            f"{results.results_dir / 'trials'}"
        )
    out = Path(out_dir) if out_dir is not None else results.results_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    # Collect once: every table below is derived from these two small frames.
    trials, evals = results.trials.collect(), results.evals.collect()
    tables = {
        "forgetting_summary": forgetting_summary(trials, evals, metric=metric),
        "group_forgetting": group_forgetting(trials, evals, metric=metric),
        "forgetting_curve": forgetting_curve(trials, evals, metric=metric),
        "stage_accuracy": mean_stage_accuracy(trials, evals, metric=metric),
        "forgetting_by_trial": forgetting_by_trial(trials, evals, metric=metric),
        "accuracy_matrix": accuracy_matrix(trials, evals, metric=metric),
        "backward_transfer": backward_transfer(trials, evals, metric=metric),
        "stage_benchmarks": stage_benchmarks(trials, evals),
        "judge_accuracy": judge_accuracy(evals),
        "reward_models": reward_models(trials),
    }
    tables |= {f"paper_{name}": frame for name, frame in paper_tables(trials, evals).items()}
    figure_dir = out / FIGURES_DIR
    # Every figure is drawn on one worker thread (matplotlib stays on a single thread) while this
    # thread computes the intervals and writes the tables: the bootstrap and Parquet work release
    # the GIL, so on a large study the figures cost little extra wall time (bench/report_scale.py).
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="report-figures") as drawer:
        pending = {
            "forgetting_curve": drawer.submit(
                plot_forgetting_curve, tables["forgetting_curve"], figure_dir / FIGURE_FILES["forgetting_curve"]),
            "accuracy_progression": drawer.submit(
                plot_accuracy_progression, tables["stage_benchmarks"],
                figure_dir / FIGURE_FILES["accuracy_progression"]),
        }
        if results.predictions is not None and metric in ("accuracy", PRIMARY):
            tables |= uncertainty_tables(
                trials, results.predictions, generation_tasks=generation_tasks(evals) if metric == PRIMARY else ())
            tables["forgetting_summary"], tables["group_forgetting"] = _with_intervals(
                tables["forgetting_summary"], tables["group_forgetting"], tables)
        tables |= _curvature_tables(results, trials, evals, metric=metric)
        summary = tables["forgetting_summary"]
        axes = hyperparameter_axes(trials, summary)
        pending["forgetting_by_first_lr"] = drawer.submit(
            plot_forgetting_by_first_lr, summary, figure_dir / FIGURE_FILES["forgetting_by_first_lr"])
        pending["group_forgetting"] = drawer.submit(
            plot_group_forgetting, tables["group_forgetting"], figure_dir / FIGURE_FILES["group_forgetting"])
        for axis in axes:
            name = hyperparameter_figure_name(axis)
            pending[name] = drawer.submit(
                plot_forgetting_by_hyperparameter, summary, axis, figure_dir / f"{name}.png", xlabel=axis_label(axis))
        if "curvature_by_trial" in tables:
            pending["_curvature"] = drawer.submit(_curvature_figures, tables, figure_dir)
        _write_tables(tables, out / TABLES_DIR)
        figures = {name: future.result() for name, future in pending.items()}
    figures |= figures.pop("_curvature", {})
    blocks = _blocks(results.results_dir, tables, figures, axes)
    report_md = out / REPORT_MD
    report_md.write_text(_render_markdown(blocks, out), encoding="utf-8")
    (out / REPORT_HTML).write_text(_render_html(blocks), encoding="utf-8")
    return report_md
