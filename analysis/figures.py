"""PNG figures of the report (forgetting vs first-stage lr, per-group forgetting, curves).

matplotlib is driven through its object API with the Agg canvas, never pyplot, so building a
report neither needs a display nor changes the backend of a researcher's interactive session.
Every function writes its file even when there is nothing to plot (a "no data" notice), so a
report always has the same set of files.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from analysis.labels import setting_label

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


def _no_data(path: Path, title: str) -> Path:
    figure = _new_figure(6, 3)
    axes = figure.add_subplot()
    axes.set_axis_off()
    axes.text(0.5, 0.5, f"{title}\n(no data)", ha="center", va="center")
    return _save(figure, path)


def plot_forgetting_by_first_lr(summary: pl.DataFrame, path: Path) -> Path:
    """Forgetting of the first task (y, points) against stage 1's learning rate (x, log).

    One line per chain (task order); solid = overall forgetting, dashed = WG forgetting.
    Values are already seed means; settings of one chain that share a first-stage lr (they
    differ in another grid value, e.g. the second stage's lr) are averaged too, as in the
    paper's Figure 2a.
    """
    title = "Forgetting of the first task by first-stage learning rate"
    data = summary.filter(pl.col("first_learning_rate").is_not_null() & pl.col("forgetting").is_not_null())
    if data.is_empty():
        return _no_data(path, title)
    by_lr = (
        data.group_by("chain", "first_learning_rate")
        .agg(pl.col("forgetting").mean(), pl.col("wg_forgetting").mean())
        .sort("chain", "first_learning_rate")
    )
    figure = _new_figure(7, 4.5)
    axes = figure.add_subplot()
    for (chain,), line in by_lr.group_by("chain", maintain_order=True):
        x = line.get_column("first_learning_rate").to_list()
        drawn = axes.plot(x, [100 * v for v in line.get_column("forgetting")], marker="o", label=f"{chain}")
        wg = line.filter(pl.col("wg_forgetting").is_not_null())
        if not wg.is_empty():
            axes.plot(
                wg.get_column("first_learning_rate").to_list(),
                [100 * v for v in wg.get_column("wg_forgetting")],
                marker="x", linestyle="--", color=drawn[0].get_color(), label=f"{chain} (WG)",
            )
    if (by_lr.get_column("first_learning_rate") > 0).all():
        axes.set_xscale("log")
    axes.axhline(0, color="grey", linewidth=0.8)
    axes.set_xlabel("learning rate of stage 1")
    axes.set_ylabel("forgetting of first task (points)")
    axes.set_title(title + " (mean over seeds)")
    axes.legend(fontsize="small")
    figure.tight_layout()
    return _save(figure, path)


def plot_group_forgetting(groups: pl.DataFrame, path: Path) -> Path:
    """Per-group forgetting bars at each setting's final stage, the overall forgetting marked
    by a dashed line and the worst group in red (like the paper's Figure 3)."""
    title = "Per-group forgetting of the first task at the final stage"
    if groups.is_empty():
        return _no_data(path, title)
    settings = groups.select("chain", "grid_point").unique(maintain_order=True).head(MAX_GROUP_PANELS)
    columns = min(3, settings.height)
    rows = -(-settings.height // columns)
    figure = _new_figure(5 * columns, 3.8 * rows)
    for index, (chain, grid_point) in enumerate(settings.iter_rows()):
        panel = groups.filter((pl.col("chain") == chain) & (pl.col("grid_point") == grid_point)).sort("group")
        axes = figure.add_subplot(rows, columns, index + 1)
        names = panel.get_column("group").to_list()
        colours = ["tab:red" if worst else "tab:blue" for worst in panel.get_column("is_worst_group")]
        axes.bar(range(len(names)), [100 * v for v in panel.get_column("forgetting")], color=colours)
        overall = panel.get_column("overall_forgetting")[0]
        if overall is not None:
            axes.axhline(100 * overall, color="black", linestyle="--", label="overall (average)")
            axes.legend(fontsize="x-small")
        axes.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize="x-small")
        axes.set_ylabel("forgetting (points)")
        axes.set_title(setting_label(chain, grid_point), fontsize="small")
    shown = settings.height
    total = groups.select("chain", "grid_point").unique().height
    suffix = f" (first {shown} of {total} settings)" if total > shown else ""
    figure.suptitle(title + suffix)
    figure.tight_layout()
    return _save(figure, path)


def plot_forgetting_curve(curve: pl.DataFrame, path: Path) -> Path:
    """Forgetting of the first task after each later stage, one line per setting."""
    title = "Forgetting of the first task after each later stage"
    if curve.is_empty():
        return _no_data(path, title)
    figure = _new_figure(7, 4.5)
    axes = figure.add_subplot()
    for (chain, grid_point), line in curve.sort("after_stage").group_by(
        "chain", "grid_point", maintain_order=True
    ):
        axes.plot(
            line.get_column("after_stage").to_list(),
            [100 * v for v in line.get_column("forgetting")],
            marker="o",
            label=setting_label(chain, grid_point),
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
