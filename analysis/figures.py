"""PNG figures of the report (forgetting vs first-stage lr, per-group forgetting, curves, and
the curvature figures of the paper's Figure 5).

matplotlib is driven through its object API with the Agg canvas, never pyplot, so building a
report neither needs a display nor changes the backend of a researcher's interactive session.
A figure with nothing to plot is not drawn: its function writes no file and returns None, and
the report leaves it out. Settings are labelled in words ("ToxiGenQA → ARC, lr 1e-3": `orders`
maps a chain to its order in display names, analysis.labels.readable_setting), the panels of
one figure share their y-scale, and accuracy panels mark chance (a uniform guess, the evals'
`chance` column) with a dotted line.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from analysis.labels import readable_setting, task_label
from contract.schema import HEADLINE_METRICS

# Beyond this many settings the per-group panel figure becomes unreadable; the report's
# group table still lists all of them.
MAX_GROUP_PANELS = 12


if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _new_figure(width: float, height: float) -> Figure:
    # Imported here so `import analysis` stays fast for table-only work (matplotlib ~0.5 s).
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path


def _setting(orders: dict[str, str] | None, chain: str, grid_point: str | None) -> str:
    """A setting's label in a figure: its order in display names (orders: chain -> order) and
    its grid point in words; a chain missing from `orders` is shown by its name."""
    return readable_setting((orders or {}).get(chain, chain), grid_point)


def _share_y(figure: Figure) -> None:
    """One y-scale for every panel of `figure`: the union of their autoscaled limits."""
    panels = figure.axes
    if len(panels) < 2:
        return
    low = min(a.get_ylim()[0] for a in panels)
    high = max(a.get_ylim()[1] for a in panels)
    for axes in panels:
        axes.set_ylim(low, high)


def _interval_spans(x: list, low: list[float | None], high: list[float | None]) -> tuple[list, list[float], list[float]]:
    """(x, centre, half-width) in points of each 95% interval (bounds are fractions), for the
    points that have one. The bar spans the interval itself rather than distances from the
    estimate: a clipped interval (near 0 or 100%) is not symmetric about it."""
    kept = [(xi, 100 * lo, 100 * hi) for xi, lo, hi in zip(x, low, high) if lo is not None and hi is not None]
    return [k[0] for k in kept], [(lo + hi) / 2 for _, lo, hi in kept], [(hi - lo) / 2 for _, lo, hi in kept]


def _draw_intervals(axes, x: list, low: list[float | None], high: list[float | None], color: str) -> None:
    xs, centres, halves = _interval_spans(x, low, high)
    if xs:
        axes.errorbar(xs, centres, yerr=halves, fmt="none", ecolor=color, capsize=3)


def plot_forgetting_by_hyperparameter(
    summary: pl.DataFrame, column: str, path: Path, *, xlabel: str | None = None,
    orders: dict[str, str] | None = None,
) -> Path | None:
    """Forgetting of the first task (y, points) against one hyperparameter (x), one line per
    chain (task order): solid = overall forgetting, dashed = WG forgetting (the paper's Figures
    2 and 4). `column` is a column of analysis.forgetting_summary: "first_learning_rate" or an
    expanded grid key such as "stage2.learning_rate" or "stage1.batch_size"; learning rates get
    a log axis.

    Values are seed means. Error bars are the 95% confidence intervals (<metric>_low/_high,
    added by the report when predictions exist; the WG line, a maximum over groups, has none)
    where a point is a single setting; settings of
    one chain that share the value but differ in another grid key are averaged, and such a
    mean has no interval of its own, so it is drawn without a bar.
    """
    name = xlabel or column
    title = f"Forgetting of the first task by {name}"
    if column not in summary.columns:
        return None
    data = summary.filter(pl.col(column).is_not_null() & pl.col("forgetting").is_not_null())
    if data.is_empty() or not data.schema[column].is_numeric():
        return None
    # The WG line is a maximum over groups, which has no interval (analysis.uncertainty).
    bounds = ["forgetting_low", "forgetting_high"]
    # Without predictions the summary has no interval columns: every point is then bar-less.
    data = data.with_columns(pl.lit(None, dtype=pl.Float64).alias(c) for c in bounds if c not in data.columns)
    by_value = (
        data.group_by("chain", column)
        .agg(
            pl.col("forgetting").mean(),
            pl.col("wg_forgetting").mean(),
            # A mean over several settings has no interval (see the docstring).
            *[pl.when(pl.len() == 1).then(pl.col(c).first()) for c in bounds],
        )
        .sort("chain", column)
    )
    figure = _new_figure(7, 4.5)
    axes = figure.add_subplot()
    for (chain,), line in by_value.group_by("chain", maintain_order=True):
        x = line.get_column(column).to_list()
        name_of_chain = (orders or {}).get(chain, chain)
        drawn = axes.plot(x, [100 * v for v in line.get_column("forgetting")], marker="o", label=name_of_chain)
        colour = drawn[0].get_color()
        _draw_intervals(axes, x, line["forgetting_low"].to_list(), line["forgetting_high"].to_list(), colour)
        wg = line.filter(pl.col("wg_forgetting").is_not_null())
        if not wg.is_empty():
            wg_x = wg.get_column(column).to_list()
            axes.plot(wg_x, [100 * v for v in wg.get_column("wg_forgetting")], marker="x", linestyle="--",
                      color=colour, label=f"{name_of_chain} (worst group)")
    if "learning_rate" in column and (by_value.get_column(column) > 0).all():
        axes.set_xscale("log")
    else:
        axes.set_xticks(sorted(set(by_value.get_column(column).to_list())))
    axes.axhline(0, color="grey", linewidth=0.8)
    axes.set_xlabel(name)
    axes.set_ylabel("forgetting of first task (points)")
    axes.set_title(title + " (mean over seeds, 95% CI)", fontsize="medium")
    axes.legend(fontsize="small")
    figure.tight_layout()
    return _save(figure, path)


def plot_forgetting_by_first_lr(summary: pl.DataFrame, path: Path, *, orders: dict[str, str] | None = None) -> Path | None:
    """Forgetting of the first task against stage 1's learning rate (log x), one line per
    chain; solid = overall, dashed = WG, error bars = 95% intervals (the paper's Figure 2a).
    See plot_forgetting_by_hyperparameter."""
    return plot_forgetting_by_hyperparameter(
        summary, "first_learning_rate", path, xlabel="learning rate of stage 1", orders=orders
    )


def plot_group_forgetting(groups: pl.DataFrame, path: Path, *, orders: dict[str, str] | None = None) -> Path | None:
    """group_forgetting_figure, saved to `path` (None, and no file, when there is nothing to plot)."""
    figure = group_forgetting_figure(groups, orders=orders)
    return None if figure is None else _save(figure, path)


def group_forgetting_figure(groups: pl.DataFrame, *, orders: dict[str, str] | None = None) -> Figure | None:
    """Per-group forgetting bars at each setting's final stage, the overall forgetting marked
    by a dashed line and the worst group in red (like the paper's Figures 3 and 6), with 95%
    intervals as error bars when `groups` carries group_forgetting_low/_high. One panel per
    setting, all on one y-scale."""
    title = "Per-group forgetting of the first task at the final stage"
    if groups.is_empty():
        return None
    settings = groups.select("chain", "grid_point").unique(maintain_order=True).head(MAX_GROUP_PANELS)
    columns = min(3, settings.height)
    rows = -(-settings.height // columns)
    figure = _new_figure(5 * columns, 3.8 * rows)
    for index, (chain, grid_point) in enumerate(settings.iter_rows()):
        panel = groups.filter((pl.col("chain") == chain) & (pl.col("grid_point") == grid_point)).sort("group")
        axes = figure.add_subplot(rows, columns, index + 1)
        names = panel.get_column("group").to_list()
        colours = ["tab:red" if worst else "tab:blue" for worst in panel.get_column("is_worst_group")]
        values = [100 * v for v in panel.get_column("forgetting")]
        axes.bar(range(len(names)), values, color=colours)
        # 95% confidence intervals, when the report computed them (analysis/uncertainty.py).
        if "group_forgetting_low" in panel.columns:
            _draw_intervals(axes, list(range(len(names))), panel["group_forgetting_low"].to_list(),
                            panel["group_forgetting_high"].to_list(), "black")
        overall = panel.get_column("overall_forgetting")[0]
        if overall is not None:
            axes.axhline(100 * overall, color="black", linestyle="--", label="overall (average)")
            axes.legend(fontsize="x-small")
        axes.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize="x-small")
        axes.set_ylabel("forgetting (points)")
        axes.set_title(_setting(orders, chain, grid_point), fontsize="small")
    _share_y(figure)
    shown = settings.height
    total = groups.select("chain", "grid_point").unique().height
    suffix = f" (first {shown} of {total} settings)" if total > shown else ""
    figure.suptitle(title + suffix)
    figure.tight_layout()
    return figure


def plot_forgetting_curve(curve: pl.DataFrame, path: Path, *, orders: dict[str, str] | None = None) -> Path | None:
    """Forgetting of the first task after each later stage, one line per setting."""
    title = "Forgetting of the first task after each later stage"
    if curve.is_empty():
        return None
    figure = _new_figure(7, 4.5)
    axes = figure.add_subplot()
    for (chain, grid_point), line in curve.sort("after_stage").group_by(
        "chain", "grid_point", maintain_order=True
    ):
        axes.plot(
            line.get_column("after_stage").to_list(),
            [100 * v for v in line.get_column("forgetting")],
            marker="o",
            label=_setting(orders, chain, grid_point),
        )
    stages = sorted(set(curve.get_column("after_stage").to_list()))
    axes.set_xticks(stages)
    axes.axhline(0, color="grey", linewidth=0.8)
    axes.set_xlabel("after stage")
    axes.set_ylabel("forgetting of first task (points)")
    axes.set_title(title + " (mean over seeds)")
    axes.legend(fontsize="x-small")
    figure.tight_layout()
    return _save(figure, path)


# ---------------------------------------------------------------- curvature (paper Figure 5)

# Beyond this many settings the spectral-radius bar chart becomes unreadable; the report's
# curvature table still lists all of them.
MAX_CURVATURE_BARS = 24


def _task_colours(tasks: list[str]) -> dict[str, str]:
    """One matplotlib cycle colour per first task, in sorted order, so every curvature
    figure colours a task the same way."""
    return {task: f"C{index % 10}" for index, task in enumerate(sorted(set(tasks)))}


def _fit(regressions: pl.DataFrame, name: str, first_task: str) -> dict | None:
    """The regression row (slope, intercept, p_value, r_squared, n) or None if not fitted."""
    rows = regressions.filter((pl.col("regression") == name) & (pl.col("first_task") == first_task))
    if rows.is_empty() or rows.item(0, "slope") is None:
        return None
    return rows.row(0, named=True)


def _fit_label(fit: dict) -> str:
    p = "–" if fit["p_value"] is None else f"{fit['p_value']:.3g}"
    r2 = "–" if fit["r_squared"] is None else f"{fit['r_squared']:.3f}"
    return f"OLS p={p}, R²={r2}, n={fit['n']}"


def plot_spectral_radius_by_setting(by_setting: pl.DataFrame, path: Path, *,
                                    orders: dict[str, str] | None = None) -> Path | None:
    """Spectral radius after stage 1 per setting (bars, mean over seeds, error bars = std over
    seeds), coloured by first task, like the paper's Figure 5a (task ordering)."""
    title = "Spectral radius of the first task's Hessian after stage 1"
    data = by_setting.filter(pl.col("spectral_radius").is_not_null()).sort("first_task", "chain", "grid_point")
    if data.is_empty():
        return None
    shown = data.head(MAX_CURVATURE_BARS)
    colours = _task_colours(shown.get_column("first_task").to_list())
    figure = _new_figure(max(6.0, 0.6 * shown.height + 2), 4.5)
    axes = figure.add_subplot()
    positions = range(shown.height)
    axes.bar(
        positions,
        shown.get_column("spectral_radius").to_list(),
        # One seed has no spread: NaN draws no error bar, where 0 would draw a flat cap.
        yerr=shown.get_column("spectral_radius_std").fill_null(float("nan")).to_list(),
        capsize=3,
        color=[colours[task] for task in shown.get_column("first_task")],
    )
    labels = [_setting(orders, c, g) for c, g in shown.select("chain", "grid_point").iter_rows()]
    axes.set_xticks(list(positions), labels, rotation=45, ha="right", fontsize="x-small")
    from matplotlib.patches import Patch

    legend = [Patch(color=colour, label=task_label(task)) for task, colour in colours.items()]
    axes.legend(handles=legend, title="first task", fontsize="small")
    axes.set_ylabel("spectral radius ρ(H)")
    suffix = f" (first {shown.height} of {data.height} settings)" if data.height > shown.height else ""
    axes.set_title(title + suffix, fontsize="medium")
    figure.tight_layout()
    return _save(figure, path)


def plot_spectral_radius_by_lr(by_setting: pl.DataFrame, regressions: pl.DataFrame, path: Path) -> Path | None:
    """Spectral radius after stage 1 (y) against stage 1's learning rate (x, log), like the
    paper's Figure 5b: one colour per first task, a point per setting (mean over seeds, error
    bars = std over seeds) and the task's OLS line in log10(lr) fitted on the trials
    (regression "spectral_radius~log10_lr")."""
    title = "Spectral radius after stage 1 by first-stage learning rate"
    data = by_setting.filter(
        pl.col("spectral_radius").is_not_null() & (pl.col("first_learning_rate") > 0)
    ).sort("first_task", "first_learning_rate")
    if data.is_empty():
        return None
    import numpy as np

    colours = _task_colours(data.get_column("first_task").to_list())
    figure = _new_figure(7, 4.5)
    axes = figure.add_subplot()
    for (task,), points in data.group_by("first_task", maintain_order=True):
        lrs = points.get_column("first_learning_rate").to_numpy()
        axes.errorbar(
            lrs, points.get_column("spectral_radius").to_numpy(),
            yerr=points.get_column("spectral_radius_std").fill_null(float("nan")).to_numpy(),
            fmt="o", capsize=3, color=colours[task], label=task_label(task),
        )
        fit = _fit(regressions, "spectral_radius~log10_lr", task)
        if fit is not None:
            xs = np.logspace(np.log10(lrs.min()), np.log10(lrs.max()), 50)
            axes.plot(xs, fit["intercept"] + fit["slope"] * np.log10(xs), linestyle="--",
                      color=colours[task], label=f"{task_label(task)}: {_fit_label(fit)}")
    axes.set_xscale("log")
    axes.set_xlabel("learning rate of stage 1")
    axes.set_ylabel("spectral radius ρ(H)")
    axes.set_title(title + " (mean ± std over seeds)", fontsize="medium")
    axes.legend(fontsize="x-small")
    figure.tight_layout()
    return _save(figure, path)


def plot_forgetting_by_spectral_radius(
    by_trial: pl.DataFrame, regressions: pl.DataFrame, path: Path
) -> Path | None:
    """Forgetting of the first task at the final stage (y, points) against the spectral
    radius after stage 1 (x), one point per trial and colour per first task, with the task's
    OLS line (regression "forgetting~spectral_radius"), like the paper's Figure 5c."""
    title = "Forgetting of the first task by spectral radius after stage 1"
    data = by_trial.filter(
        pl.col("spectral_radius").is_not_null() & pl.col("forgetting").is_not_null()
    ).sort("first_task", "spectral_radius")
    if data.is_empty():
        return None
    import numpy as np

    colours = _task_colours(data.get_column("first_task").to_list())
    figure = _new_figure(7, 4.5)
    axes = figure.add_subplot()
    for (task,), points in data.group_by("first_task", maintain_order=True):
        radius = points.get_column("spectral_radius").to_numpy()
        axes.scatter(radius, 100 * points.get_column("forgetting").to_numpy(), color=colours[task], label=task_label(task))
        fit = _fit(regressions, "forgetting~spectral_radius", task)
        if fit is not None:
            xs = np.linspace(radius.min(), radius.max(), 50)
            axes.plot(xs, 100 * (fit["intercept"] + fit["slope"] * xs), linestyle="--",
                      color=colours[task], label=f"{task_label(task)}: {_fit_label(fit)}")
    axes.axhline(0, color="grey", linewidth=0.8)
    axes.set_xlabel("spectral radius ρ(H) after stage 1")
    axes.set_ylabel("forgetting of first task (points)")
    axes.set_title(title + " (one point per trial)", fontsize="medium")
    axes.legend(fontsize="x-small")
    figure.tight_layout()
    return _save(figure, path)


# Panels of the accuracy-progression figure (one per eval task, headline metric).
MAX_PROGRESSION_PANELS = 8


def plot_accuracy_progression(long: pl.DataFrame, path: Path, *, orders: dict[str, str] | None = None) -> Path | None:
    """accuracy_progression_figure, saved to `path` (None, and no file, when there is nothing to plot)."""
    figure = accuracy_progression_figure(long, orders=orders)
    return None if figure is None else _save(figure, path)


CHANCE_LABEL = "chance"


def accuracy_progression_figure(long: pl.DataFrame, *, orders: dict[str, str] | None = None) -> Figure | None:
    """Each eval task's headline metric (accuracy, or safe % for generation tasks) after every
    stage, stage 0 = the base model; one panel per task, one line per setting (the paper's
    Figure 7), every panel on one y-scale. An accuracy panel whose eval set has a chance level
    (`long`'s chance column: a uniform guess's accuracy) marks it with a dotted grey line
    labelled CHANCE_LABEL. `long` is analysis.benchmarks.stage_benchmarks."""
    title = "Every eval task after every stage"
    data = long.filter(pl.col("metric").is_in(HEADLINE_METRICS) & pl.col("value").is_not_null())
    if data.is_empty():
        return None
    panels = data.select("eval_task", "metric").unique().sort("metric", "eval_task").head(MAX_PROGRESSION_PANELS)
    columns = min(4, panels.height)
    rows = -(-panels.height // columns)
    figure = _new_figure(4 * columns, 3.2 * rows)
    for index, (task, metric) in enumerate(panels.iter_rows()):
        axes = figure.add_subplot(rows, columns, index + 1)
        panel = data.filter((pl.col("eval_task") == task) & (pl.col("metric") == metric)).sort("stage")
        for (chain, grid_point), line in panel.group_by("chain", "grid_point", maintain_order=True):
            axes.plot(line.get_column("stage").to_list(), [100 * v for v in line.get_column("value")],
                      marker="o", label=_setting(orders, chain, grid_point))
        chance = panel.get_column("chance").drop_nulls().mean() if "chance" in panel.columns else None
        if chance is not None and metric != "safe":
            axes.axhline(100 * chance, color="grey", linestyle=":", linewidth=1, label=CHANCE_LABEL)
        axes.set_xticks(sorted(set(panel.get_column("stage").to_list())))
        axes.set_xlabel("after stage (0 = base)")
        axes.set_ylabel("safe %" if metric == "safe" else "accuracy (%)")
        axes.set_title(task_label(task), fontsize="small")
    _share_y(figure)
    figure.axes[0].legend(fontsize="x-small")
    figure.suptitle(title + " (mean over seeds)")
    figure.tight_layout()
    return figure
