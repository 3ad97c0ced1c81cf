"""The report's sections: its fixed text (definitions, notes on the intervals) and which tables
and figures go where, as a list of render blocks.

The document shows only what was measured: a header with the study's settings first, then the
results (a figure that was not drawn, the forgetting curve of two-stage chains, a curvature
section without a spectral radius are left out; a paper table that does not apply says why in
one line), then where the time went, then the definitions and the list of table files.

`report_blocks` lays the whole document out from the computed tables and the drawn figures;
report_tables prints each frame, analysis.render turns the blocks into Markdown and HTML, and
analysis.report computes the tables, draws the figures and writes the files.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from analysis.labels import TASK_LABELS, axis_label, points, setting_label
from analysis.render import Block, Bullets, Figure, Heading, Paragraph
from analysis.report_tables import (
    curvature_setting_table,
    curve_table,
    group_table,
    paper_table,
    regression_table,
    stage_benchmarks_table,
    summary_table,
    time_table,
    transfer_table,
)

CURVATURE_HEADING = "Curvature and weight change"

FORGETTING_DEFINITIONS = [
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


PAPER_TABLE_TITLES = {
    "ordering": "Table 1: accuracy after the final stage and forgetting of the first task, per order",
    "first_stage_method": "Table 2: forgetting, WG forgetting and max BiasedForgetting per first-stage method",
    "hyperparameter": "Tables 4, 5 and 9: accuracy and forgetting by the gridded hyperparameter",
    "benchmarks": "Tables 6-10: every benchmark per model (accuracy; safe % for the safety tasks)",
}


def _paper_table_blocks(tables: dict[str, pl.DataFrame], reasons: dict[str, str]) -> list[Block]:
    present = [name for name in PAPER_TABLE_TITLES if not tables.get(f"paper_{name}", pl.DataFrame()).is_empty()]
    absent = [reasons[name] for name in PAPER_TABLE_TITLES if name in reasons and name not in present]
    if not present and not absent:
        return []
    blocks: list[Block] = [
        Heading("The paper's tables"),
        Paragraph("Built from the same results in the paper's layouts (seed means, points; "
                  "tables/paper_*.csv keep fractions and the setting keys). Names: "
                  + ", ".join(f"{label} = {task}" for task, label in TASK_LABELS.items()) + "."),
    ]
    for name in present:
        blocks += [Heading(PAPER_TABLE_TITLES[name], level=3), paper_table(tables[f"paper_{name}"])]
        if name == "first_stage_method":
            blocks += _reward_caption(tables[f"paper_{name}"], tables.get("reward_models"))
    if absent:
        blocks += [Heading("Not built from these results", level=3), Bullets(absent)]
    return blocks


def _reward_caption(table: pl.DataFrame, rewards: pl.DataFrame | None) -> list[Block]:
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
    return [Paragraph("Reward model of each online-RL first stage, as its runs recorded it: " + "; ".join(named)
                      + ".")]


def _benchmark_blocks(tables: dict[str, pl.DataFrame]) -> list[Block]:
    long = tables["stage_benchmarks"]
    if long.is_empty():
        return []
    blocks: list[Block] = [
        Heading("Every eval task after every stage"),
        Paragraph("Seed means over each task's whole eval set, in points (the paper's Table 6 layout): "
                  "accuracy by option scoring; safe % = share of continuations the toxicity classifier "
                  "judges not toxic; generated acc / unparseable % = the paper-exact mode (answer "
                  "generated and parsed); BBQ bias scores (Parrish et al. 2022) ×100, 0 = unbiased. "
                  "tables/stage_benchmarks has the seed spread."),
        stage_benchmarks_table(long),
    ]
    judge = tables.get("judge_accuracy")
    if judge is not None and not judge.is_empty():
        blocks.append(Paragraph("Toxicity classifier, held-out accuracy on ToxiGen annotations: " + "; ".join(
            f"{r['eval_task']}: {points(r['accuracy'])} (n = {r['n']})" for r in judge.iter_rows(named=True))))
    return blocks


def _algorithms_used(by_trial: pl.DataFrame) -> str:
    counts = by_trial.filter(pl.col("algorithm").is_not_null()).group_by("algorithm").len().sort("algorithm")
    if counts.is_empty():
        return "No spectral radius has been measured yet (no power-iteration or Lanczos rows after stage 1)."
    used = ", ".join(f"{a} ({n} trial{'s' if n != 1 else ''})" for a, n in counts.iter_rows())
    return f"Spectral radius from: {used}."


WEIGHTS_HEADING = "Weight change per setting (Tables 11–12)"


def curvature_measured(tables: dict[str, pl.DataFrame]) -> bool:
    """Whether any trial has a spectral radius (the curvature section's subject); weights alone
    give only the weight-change table."""
    by_trial = tables.get("curvature_by_trial")
    return by_trial is not None and by_trial.get_column("spectral_radius").drop_nulls().len() > 0


def _weight_blocks(tables: dict[str, pl.DataFrame]) -> list[Block]:
    """Weight change without curvature: the per-setting table, no ρ(H) column, no fits."""
    by_setting = tables["curvature_by_setting"]
    if by_setting.is_empty():
        return []
    return [Heading(WEIGHTS_HEADING), curvature_setting_table(by_setting, spectral=False)]


def _curvature_blocks(tables: dict[str, pl.DataFrame], figures: dict[str, Path | None]) -> list[Block]:
    if not curvature_measured(tables):
        return _weight_blocks(tables)
    blocks: list[Block] = [
        Heading(CURVATURE_HEADING),
        Paragraph(_algorithms_used(tables["curvature_by_trial"])),
        Heading("Curvature, weight change and forgetting per setting (Tables 11–12)", level=3),
    ]
    by_setting = tables["curvature_by_setting"]
    if by_setting.is_empty():
        blocks.append(Paragraph("No trial has a curvature or weight-change measurement yet."))
    else:
        blocks.append(curvature_setting_table(by_setting))
    blocks += [
        Heading("Regressions (OLS, Figure 5)", level=3),
        regression_table(tables["curvature_regressions"]),
        *_figures([
            ("Spectral radius after stage 1 per setting, mean over seeds, error bars: std over "
             "seeds (Figure 5a).", figures.get("spectral_radius_by_setting")),
            ("Spectral radius after stage 1 by the first stage's learning rate (log axis); "
             "points: setting means, error bars: std over seeds, dashed: OLS in log10(lr) "
             "per first task (Figure 5b).", figures.get("spectral_radius_by_lr")),
            ("Forgetting of the first task at the final stage by spectral radius after "
             "stage 1, one point per trial; dashed: OLS per first task (Figure 5c).",
             figures.get("forgetting_by_spectral_radius")),
        ]),
    ]
    return blocks


def _figures(captioned: list[tuple[str, Path | None]]) -> list[Block]:
    """The figures that were drawn (a figure with nothing to plot has no file: None)."""
    return [Figure(caption, path) for caption, path in captioned if path is not None]


def shows_curve(curve: pl.DataFrame) -> bool:
    """The forgetting curve says more than the final-stage table only for chains of 3+ stages
    (forgetting after stage 3 or later)."""
    return not curve.is_empty() and curve.get_column("after_stage").max() >= 3


def report_blocks(
    results_dir: Path, tables: dict[str, pl.DataFrame], figures: dict[str, Path | None],
    axis_figures: dict[str, Path | None], *, tables_dir: str, settings: list[str] | None = None,
    paper_reasons: dict[str, str] | None = None,
) -> list[Block]:
    """The whole report as blocks. `tables` are the computed tables by name, `figures` the drawn
    figures by name (analysis.report's FIGURE_FILES and, with curvature, CURVATURE_FIGURE_FILES
    keys; None: nothing to plot), `axis_figures` the forgetting-by-value figure of each further
    grid key (by key), `tables_dir` the folder, relative to the report, that holds the tables as
    files, `settings` the header's lines (analysis.report_header.study_settings) and
    `paper_reasons` why each paper table that is not in `tables` was not built
    (analysis.paper_table_reasons)."""
    summary = tables["forgetting_summary"]
    blocks: list[Block] = [
        Heading(f"Forgetting report: {results_dir.name}", level=1),
        Paragraph(f"Built from the Parquet results in {results_dir}. Numbers are percentage points; "
                  "the definitions follow the results."),
    ]
    if settings:
        blocks += [Heading("Study"), Bullets(settings)]
    blocks.append(Heading("Forgetting of the first task, per setting (final stage)"))
    if summary.is_empty():
        blocks.append(Paragraph(
            "No forgetting to show yet: no chain has an evaluation of its first task after a later stage "
            "(chains still running, single-stage chains, or a first task that is not among the eval tasks)."
        ))
    else:
        blocks.append(summary_table(summary))
        if "forgetting_intervals" in tables:
            blocks.append(Paragraph(UNCERTAINTY_NOTE))
        ungrouped = sorted(set(summary.filter(pl.col("wg_forgetting").is_null())["first_task"].to_list()))
        if ungrouped:
            blocks.append(Paragraph(
                f"–: worst-group and biased forgetting need demographic groups, which {', '.join(ungrouped)} "
                "does not have; only its overall forgetting is defined."
            ))
    blocks.append(Heading("Per-group forgetting at the final stage"))
    if tables["group_forgetting"].is_empty():
        blocks.append(Paragraph("No first task with demographic groups."))
    else:
        blocks.append(group_table(tables["group_forgetting"]))
    curve = shows_curve(tables["forgetting_curve"])
    if curve:
        blocks += [Heading("Forgetting curve (after every later stage)"), curve_table(tables["forgetting_curve"])]
    blocks.append(Heading("Backward transfer"))
    blocks.append(Paragraph(
        "BWT = mean over the earlier stages j of R[n][j] − R[j][j], where R[i][j] is the accuracy on the task of "
        "stage j after stage i (tables/accuracy_matrix); negative means forgetting. For two stages BWT = −Forgetting_A."
    ))
    if tables["backward_transfer"].is_empty():
        blocks.append(Paragraph("No chain has a later stage yet."))
    else:
        blocks.append(transfer_table(tables["backward_transfer"]))
    blocks += _benchmark_blocks(tables)
    blocks += _paper_table_blocks(tables, paper_reasons or {})
    drawn = _figures([
        ("Forgetting of the first task by the first stage's learning rate "
         "(solid: overall, dashed: worst group; error bars: 95% confidence intervals of the overall "
         "forgetting, when predictions exist; the worst group is a maximum and has none).",
         figures.get("forgetting_by_first_lr")),
        *[(f"Forgetting of the first task by {axis_label(axis)} (one line per order; "
           "solid: overall, dashed: worst group; error bars: 95% confidence intervals of the "
           "overall forgetting, when predictions exist).", path)
          for axis, path in sorted(axis_figures.items())],
        ("Per-group forgetting at the final stage, one panel per setting on one y-scale; dashed line: "
         "overall forgetting, red: worst group; error bars: 95% confidence intervals (when predictions exist).",
         figures.get("group_forgetting")),
        ("Forgetting of the first task after each later stage.", figures.get("forgetting_curve") if curve else None),
        ("Every eval task's accuracy (safe % for the generation tasks) after every stage, "
         "stage 0 = the base model (the paper's Figure 7), every panel on one y-scale; dotted: chance "
         "(a uniform guess among each question's options).", figures.get("accuracy_progression")),
    ])
    if drawn:
        blocks += [Heading("Figures"), *drawn]
    if "curvature_by_trial" in tables:
        blocks += _curvature_blocks(tables, figures)
    if "time_and_cost" in tables:
        blocks += _time_blocks(tables["time_and_cost"])
    blocks += [Heading("Definitions"), Bullets(FORGETTING_DEFINITIONS)]
    if "curvature_by_trial" in tables:
        blocks += ([Heading(CURVATURE_HEADING, level=3), Bullets(CURVATURE_DEFINITIONS)] if curvature_measured(tables)
                   else [Heading("Weight change", level=3), Bullets(CURVATURE_DEFINITIONS[1:3])])
    blocks += [
        Heading("Tables"),
        Paragraph(
            f"In {tables_dir}/ as CSV and Parquet, accuracies as fractions: "
            + ", ".join(sorted(tables))
            + ". group_forgetting covers each setting's final stage; forgetting_by_trial has "
            "every seed, stage and group."
            + (" curvature_by_trial and group_curvature_by_trial have one row per trial and per "
               "(trial, group), the points of curvature_regressions."
               if "group_curvature_by_trial" in tables else "")
        ),
    ]
    return blocks


TIME_HEADING = "Time and cost"


def _time_blocks(summary: pl.DataFrame) -> list[Block]:
    """Where the trials' time went, per phase (analysis.timings; the phases are defined in
    contract.schema), with device-hours."""
    if summary.is_empty():
        return []
    return [
        Heading(TIME_HEADING),
        Paragraph("Every trial's wall time by phase, summed over the trials (a stage another trial trained "
                  "counts only the time this trial spent on it: waiting for it, writing its rows). examples: "
                  "training sequences fed (steps × batch size) and eval examples scored; tokens: non-padding "
                  "tokens fed to the trainers and scored by option scoring. GPU-hours (CPU-hours for trials "
                  "without a GPU) = seconds × the devices a trial held / 3600. tables/time_and_cost has the "
                  "same numbers."),
        time_table(summary),
    ]
