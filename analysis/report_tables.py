"""How the report prints each analysis frame: one render.Table per frame, fractions as points,
intervals as [low, high], grid points as key=value, a missing value as –.

Only formatting: every number is computed by the analysis modules (and written unformatted to
the report's tables/ folder); report_sections decides where each table goes.
"""

from __future__ import annotations

import polars as pl

from analysis.benchmarks import benchmark_columns
from analysis.curvature import POOLED
from analysis.labels import grid_label, points
from analysis.render import Table


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


def summary_table(summary: pl.DataFrame) -> Table:
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
    return Table(header, rows)


def group_table(groups: pl.DataFrame) -> Table:
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
    return Table(header, rows)


def curve_table(curve: pl.DataFrame) -> Table:
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
    return Table(header, rows)


def transfer_table(bwt: pl.DataFrame) -> Table:
    header = ["Chain", "Grid point", "Stages", "Seeds", "BWT"]
    rows = [[r["chain"], grid_label(r["grid_point"]) or "–", str(r["n_stages"]), str(r["n_seeds"]), points(r["bwt"])]
            for r in bwt.iter_rows(named=True)]
    return Table(header, rows)


_METRIC_LABELS = {"accuracy": "acc", "safe": "safe %", "generated_accuracy": "generated acc",
                  "unparseable": "unparseable %", "bias_score_ambig": "bias (ambig) ×100",
                  "bias_score_disambig": "bias (disambig) ×100"}


def stage_benchmarks_table(long: pl.DataFrame) -> Table:
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
    return Table(header, rows)


# Columns that identify a row (kept in the CSV/Parquet tables) rather than report a number;
# the row labels (order, model, hyperparameter, grid) already say what they hold.
_KEY_COLUMNS = ("chain", "grid_point", "pair", "axis", "value", "stage", "n_settings")


def paper_table(frame: pl.DataFrame) -> Table:
    """A paper table as printed: fractions as points, grid-key columns (stage<k>.*) left to the
    labels, and the chain last so every row can be traced to its results."""
    shown = [c for c in frame.columns if c not in _KEY_COLUMNS and not c.startswith("stage")]
    shown += ["chain"] if "chain" in frame.columns else []
    rows = [
        [points(r[c]) if isinstance(r[c], float) else ("–" if r[c] is None else str(r[c])) for c in shown]
        for r in frame.iter_rows(named=True)
    ]
    return Table([c.replace("_", " ") for c in shown], rows)


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


def curvature_setting_table(by_setting: pl.DataFrame, *, spectral: bool = True) -> Table:
    """Tables 11–12 per setting; spectral=False leaves out the ρ(H) column (weights only)."""
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
    if not spectral:
        keep = [i for i, name in enumerate(header) if not name.startswith("ρ(H)")]
        header, rows = [header[i] for i in keep], [[row[i] for i in keep] for row in rows]
    return Table(header, rows)


def regression_table(regressions: pl.DataFrame) -> Table:
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
    return Table(header, rows)


def time_table(summary: pl.DataFrame) -> Table:
    """The "Time and cost" table: analysis.timings.phase_summary as printed."""
    def count(value: int | None) -> str:
        return "–" if value is None else f"{value:,}"

    rows = [[r["phase"], f"{r['seconds']:.1f}", f"{100 * r['share']:.1f}%", count(r["examples"]), count(r["tokens"]),
             f"{r['gpu_hours']:.3f}", f"{r['cpu_hours']:.3f}"] for r in summary.iter_rows(named=True)]
    rows.append(["total", f"{summary['seconds'].sum():.1f}", "100.0%", "", "",
                 f"{summary['gpu_hours'].sum():.3f}", f"{summary['cpu_hours'].sum():.3f}"])
    return Table(["Phase", "Seconds", "Share", "Examples", "Tokens", "GPU-hours", "CPU-hours"], rows)
