"""Write a study's forgetting report (Markdown, HTML, CSV/Parquet tables, PNG figures).

Everything is rebuilt from the Parquet results alone. The report is assembled once as a list
of blocks (headings, paragraphs, bullet lists, tables, figures) and rendered twice, so the
Markdown and the HTML always show the same numbers.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from analysis.figures import plot_forgetting_by_first_lr, plot_forgetting_curve, plot_group_forgetting
from analysis.forgetting import (
    forgetting_by_trial,
    forgetting_curve,
    forgetting_summary,
    group_forgetting,
    mean_stage_accuracy,
)
from analysis.labels import grid_label, points
from analysis.render import html_table, markdown_table
from analysis.results import load_results

# File names under the output folder; `study report` and the README point at these.
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
TABLES_DIR = "tables"
FIGURES_DIR = "figures"
FIGURE_FILES = {
    "forgetting_by_first_lr": "forgetting_by_first_lr.png",
    "group_forgetting": "group_forgetting.png",
    "forgetting_curve": "forgetting_curve.png",
}

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


def _summary_table(summary: pl.DataFrame) -> _Table:
    header = [
        "Chain", "Stages", "Grid point", "Seeds", "Acc_A(θ_A)", "Acc_A(θ_AB)", "Acc_B(θ_AB)",
        "Forgetting_A", "WG forgetting (group)", "Max BiasedForgetting",
    ]
    rows = [
        [
            r["chain"], r["chain_stages"], grid_label(r["grid_point"]) or "–", str(r["n_seeds"]),
            points(r["acc_first_task_after_first_stage"]), points(r["acc_first_task_after_final"]),
            points(r["acc_final_task_after_final"]), points(r["forgetting"]),
            _wg_cell(r["wg_forgetting"], r["worst_group"]), points(r["max_biased_forgetting"]),
        ]
        for r in summary.iter_rows(named=True)
    ]
    return _Table(header, rows)


def _group_table(groups: pl.DataFrame) -> _Table:
    header = [
        "Chain", "Grid point", "Group", "Seeds", "Acc_A,g(θ_A)", "Acc_A,g(θ_AB)",
        "Forgetting_A,g", "BiasedForgetting_A,g", "Worst group",
    ]
    rows = [
        [
            r["chain"], grid_label(r["grid_point"]) or "–", r["group"], str(r["n_seeds"]),
            points(r["acc_after_first_stage"]), points(r["acc_after_stage"]),
            points(r["forgetting"]), points(r["biased_forgetting"]),
            "yes" if r["is_worst_group"] else "",
        ]
        for r in groups.iter_rows(named=True)
    ]
    return _Table(header, rows)


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


def _write_tables(tables: dict[str, pl.DataFrame], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in tables.items():
        frame.write_parquet(folder / f"{name}.parquet")
        frame.write_csv(folder / f"{name}.csv")


def _blocks(
    results_dir: Path, tables: dict[str, pl.DataFrame], figures: dict[str, Path]
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
    blocks.append(_Heading("Figures"))
    blocks += [
        _Figure("Forgetting of the first task by the first stage's learning rate "
                "(solid: overall, dashed: worst group).", figures["forgetting_by_first_lr"]),
        _Figure("Per-group forgetting at the final stage; dashed line: overall forgetting, "
                "red: worst group.", figures["group_forgetting"]),
        _Figure("Forgetting of the first task after each later stage.", figures["forgetting_curve"]),
    ]
    blocks += [
        _Heading("Tables"),
        _Paragraph(
            f"In {TABLES_DIR}/ as CSV and Parquet, accuracies as fractions: "
            + ", ".join(sorted(tables))
            + ". group_forgetting covers each setting's final stage; forgetting_by_trial has "
            "every seed, stage and group."
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
    results_dir: str | Path, out_dir: str | Path | None = None, *, metric: str = "accuracy"
) -> Path:
    """Write the forgetting report of `results_dir` and return the path of report.md.

    Into out_dir (default <results_dir>/report): report.md, report.html (figures embedded),
    tables/{forgetting_summary,group_forgetting,forgetting_curve,stage_accuracy,
    forgetting_by_trial}.{csv,parquet} and figures/{forgetting_by_first_lr,group_forgetting,
    forgetting_curve}.png. Raises FileNotFoundError when the folder has no evals or no trials.
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
    }
    _write_tables(tables, out / TABLES_DIR)
    figure_dir = out / FIGURES_DIR
    figures = {
        "forgetting_by_first_lr": plot_forgetting_by_first_lr(
            tables["forgetting_summary"], figure_dir / FIGURE_FILES["forgetting_by_first_lr"]
        ),
        "group_forgetting": plot_group_forgetting(
            tables["group_forgetting"], figure_dir / FIGURE_FILES["group_forgetting"]
        ),
        "forgetting_curve": plot_forgetting_curve(
            tables["forgetting_curve"], figure_dir / FIGURE_FILES["forgetting_curve"]
        ),
    }
    blocks = _blocks(results.results_dir, tables, figures)
    report_md = out / REPORT_MD
    report_md.write_text(_render_markdown(blocks, out), encoding="utf-8")
    (out / REPORT_HTML).write_text(_render_html(blocks), encoding="utf-8")
    return report_md
