"""Write a study's forgetting report (Markdown, HTML, CSV/Parquet tables, PNG figures).

Everything is rebuilt from the Parquet results alone. This module computes the report's tables
(analysis.forgetting, .uncertainty, .curvature, ...), draws its figures (analysis.figures) and
writes the files; analysis.report_sections lays the document out from them and
analysis.render turns it into Markdown and HTML.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import polars as pl

from analysis.accuracy import PRIMARY, generation_tasks
from analysis.benchmarks import judge_accuracy, stage_benchmarks
from analysis.curvature import (
    curvature_by_setting,
    curvature_by_trial,
    curvature_regressions,
    group_curvature_by_trial,
)
from analysis.figures import (
    plot_accuracy_progression,
    plot_forgetting_by_first_lr,
    plot_forgetting_by_hyperparameter,
    plot_forgetting_by_spectral_radius,
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
from analysis.labels import axis_label
from analysis.paper_table_reasons import missing_reasons
from analysis.paper_tables import paper_tables, reward_models, varying_axes
from analysis.render import render_html, render_markdown
from analysis.report_header import chain_orders, study_settings
from analysis.report_sections import curvature_measured, report_blocks, shows_curve
from analysis.results import ResultTables, load_results
from analysis.table_columns import typed
from analysis.timings import phase_summary
from analysis.transfer import accuracy_matrix, backward_transfer
from analysis.uncertainty import forgetting_uncertainty
from contract.atomic import replace_folder
from contract.layout import StudyLayout
from contract.schema import columns

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
# The first stage's lr has its own figure (always written); every other numeric grid key that
# varies within a chain (stage 2's lr, stage 1's batch size, ...) gets
# figures/forgetting_by_<key with dots as underscores>.png, the paper's Figures 2b and 4.
FIRST_LR_AXIS = "stage1.learning_rate"


def uncertainty_tables(
    trials: pl.DataFrame, predictions: pl.LazyFrame, *, n_boot: int = 1000, seed: int = 0,
    generation_tasks: list[str] | tuple[str, ...] = (),
) -> dict[str, pl.DataFrame]:
    """Bootstrap intervals and group tests from the per-example predictions (their own tables).
    Intervals of every accuracy at every stage (analysis.accuracy_intervals) are
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


def _curvature_tables(
    results: ResultTables, trials: pl.DataFrame, evals: pl.DataFrame, *, metric: str
) -> dict[str, pl.DataFrame]:
    """The curvature tables, or {} when the results hold neither curvature nor weights; without
    a spectral radius (weights only) just the per-trial and per-setting weight change."""
    if results.curvature is None and results.weights is None:
        return {}
    curvature = None if results.curvature is None else results.curvature.collect()
    weights = None if results.weights is None else results.weights.collect()
    by_trial = curvature_by_trial(trials, evals, curvature=curvature, weights=weights, metric=metric)
    tables = {"curvature_by_setting": curvature_by_setting(by_trial), "curvature_by_trial": by_trial}
    if not curvature_measured(tables):
        return tables
    groups = group_curvature_by_trial(trials, evals, curvature=curvature, metric=metric)
    return tables | {
        "group_curvature_by_trial": groups,
        "curvature_regressions": curvature_regressions(by_trial, groups),
    }


def _curvature_figures(tables: dict[str, pl.DataFrame], figure_dir: Path,
                       orders: dict[str, str]) -> dict[str, Path | None]:
    files = {name: figure_dir / file for name, file in CURVATURE_FIGURE_FILES.items()}
    regressions = tables["curvature_regressions"]
    return {
        "spectral_radius_by_setting": plot_spectral_radius_by_setting(
            tables["curvature_by_setting"], files["spectral_radius_by_setting"], orders=orders
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


class ReportFolderError(ValueError):
    """The output folder holds something other than a report: it is not replaced."""


def write_report(
    results_dir: str | Path, out_dir: str | Path | None = None, *, metric: str = PRIMARY
) -> Path:
    """Write the forgetting report of `results_dir` and return the path of report.md.

    The report is built in a hidden folder beside the output folder and swapped in whole
    (contract.atomic.replace_folder): a `study report` that crashes or is killed leaves the
    previous report as it was. An output folder that exists and holds files but no report.md
    is refused (ReportFolderError) rather than replaced.

    Into out_dir (default <results_dir>/report): report.md, report.html (figures embedded),
    tables/{forgetting_summary,group_forgetting,forgetting_curve,stage_accuracy,
    forgetting_by_trial, ...}.{csv,parquet} and figures/{forgetting_by_first_lr,group_forgetting,
    forgetting_curve,accuracy_progression}.png: a figure with nothing to plot is not written, and
    the forgetting curve is drawn only for chains of 3+ stages. When the results hold a spectral
    radius, a "Curvature and weight change" section is added, with tables/{curvature_by_setting,
    curvature_by_trial,group_curvature_by_trial,curvature_regressions}.{csv,parquet} and figures/
    {spectral_radius_by_setting,spectral_radius_by_lr,forgetting_by_spectral_radius}.png; with a
    weights table alone, just the weight change per setting (curvature_by_setting/_by_trial). Every other numeric grid key that
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
            f"{StudyLayout(results.results_dir).table('trials')}"
        )
    out = Path(out_dir) if out_dir is not None else StudyLayout(results.results_dir).report
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / REPORT_MD).is_file())):
        raise ReportFolderError(f"{out} exists and is not a report folder (no {REPORT_MD}); the report replaces its "
                                "output folder whole, so name a new or empty folder")
    replace_folder(out, lambda staging: _build_report(results, staging, metric))
    return out / REPORT_MD


def _build_report(results: ResultTables, out: Path, metric: str) -> None:
    """Every file of the report, written into `out` (write_report's staging folder)."""
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
    built = paper_tables(trials, evals)
    tables |= {f"paper_{name}": frame for name, frame in built.items()}
    orders = chain_orders(trials)
    if results.timings is not None:
        tables["time_and_cost"] = phase_summary(results.timings.select(typed("timings", *columns("timings"))).collect())
    figure_dir = out / FIGURES_DIR
    # Every figure is drawn on one worker thread (matplotlib stays on a single thread) while this
    # thread computes the intervals and writes the tables: the bootstrap and Parquet work release
    # the GIL, so on a large study the figures cost little extra wall time (bench/report_scale.py).
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="report-figures") as drawer:
        pending = {
            "accuracy_progression": drawer.submit(
                plot_accuracy_progression, tables["stage_benchmarks"],
                figure_dir / FIGURE_FILES["accuracy_progression"], orders=orders),
        }
        if shows_curve(tables["forgetting_curve"]):
            pending["forgetting_curve"] = drawer.submit(
                plot_forgetting_curve, tables["forgetting_curve"], figure_dir / FIGURE_FILES["forgetting_curve"],
                orders=orders)
        if results.predictions is not None and metric in ("accuracy", PRIMARY):
            tables |= uncertainty_tables(
                trials, results.predictions, generation_tasks=generation_tasks(evals) if metric == PRIMARY else ())
            tables["forgetting_summary"], tables["group_forgetting"] = _with_intervals(
                tables["forgetting_summary"], tables["group_forgetting"], tables)
        tables |= _curvature_tables(results, trials, evals, metric=metric)
        summary = tables["forgetting_summary"]
        axes = hyperparameter_axes(trials, summary)
        pending["forgetting_by_first_lr"] = drawer.submit(
            plot_forgetting_by_first_lr, summary, figure_dir / FIGURE_FILES["forgetting_by_first_lr"], orders=orders)
        pending["group_forgetting"] = drawer.submit(
            plot_group_forgetting, tables["group_forgetting"], figure_dir / FIGURE_FILES["group_forgetting"],
            orders=orders)
        for axis in axes:
            name = hyperparameter_figure_name(axis)
            pending[name] = drawer.submit(
                plot_forgetting_by_hyperparameter, summary, axis, figure_dir / f"{name}.png", xlabel=axis_label(axis),
                orders=orders)
        if "curvature_regressions" in tables:
            pending["_curvature"] = drawer.submit(_curvature_figures, tables, figure_dir, orders)
        _write_tables(tables, out / TABLES_DIR)
        figures = {name: future.result() for name, future in pending.items()}
    figures |= figures.pop("_curvature", {})
    axis_figures = {axis: figures.pop(hyperparameter_figure_name(axis)) for axis in axes}
    figures.setdefault("forgetting_curve", None)
    blocks = report_blocks(results.results_dir, tables, figures, axis_figures, tables_dir=TABLES_DIR,
                           settings=study_settings(trials, evals), paper_reasons=missing_reasons(trials, built))
    (out / REPORT_MD).write_text(render_markdown(blocks, out), encoding="utf-8")
    (out / REPORT_HTML).write_text(render_html(blocks), encoding="utf-8")
