"""The report shows only what was measured: a demo-like study (two orders, a stage-1 lr grid,
weights but no curvature) gets no empty section or placeholder figure, a header with the
study's settings, one-line reasons for the paper tables it cannot fill, figures labelled in
display names with one y-scale per figure and a chance line on accuracy panels."""

from __future__ import annotations

import json
import re
from pathlib import Path

import polars as pl
import pytest

from analysis.benchmarks import stage_benchmarks
from analysis.figures import CHANCE_LABEL, accuracy_progression_figure, group_forgetting_figure
from analysis.forgetting import group_forgetting
from analysis.report import write_report
from analysis.report_header import chain_orders
from tests.test_analysis_curvature import weight_rows
from tests.test_analysis_forgetting import trial_rows, write_table

CHANCE = {"toxigen_qa": 0.5, "arc_easy": 0.25}


def _evals(trial: str, stage: int, task: str, accuracies: dict[str, float], *, n: int = 40) -> list[dict]:
    return [{"trial_id": trial, "stage": stage, "eval_task": task, "metric": "accuracy", "grouping": "all" if g == "all" else "group",
             "group": g, "n": n, "correct": round(a * n), "accuracy": a, "value": a, "chance": CHANCE[task]}
            for g, a in accuracies.items()]


def write_demo_like(results: Path) -> Path:
    """tqa_arc and arc_tqa, grid stage1.learning_rate ∈ {1e-3, 3e-3}, seed 0, every task
    evaluated at stages 0-2; ToxiGenQA has groups muslim and women; weights, no curvature."""
    trials, evals, weights = [], [], []
    for chain, tasks in (("tqa_arc", ["toxigen_qa", "arc_easy"]), ("arc_tqa", ["arc_easy", "toxigen_qa"])):
        for index, lr in enumerate((1e-3, 3e-3)):
            trial = f"{chain}{index}"
            trials += trial_rows(trial, chain, 0, tasks, json.dumps({"stage1.learning_rate": lr}), [lr, 3e-3])
            drop = 0.1 * (index + 1)
            for stage in (0, 1, 2):
                tqa = 0.5 if stage == 0 else (0.9 if tasks[0] == "toxigen_qa" and stage == 1 else 0.9 - drop)
                evals += _evals(trial, stage, "toxigen_qa", {"all": tqa, "muslim": tqa - drop / 2, "women": tqa})
                evals += _evals(trial, stage, "arc_easy", {"all": 0.3 + 0.1 * stage})
            weights += weight_rows(trial, 2e-5, 7e-5, 9e-5)
    write_table(results, "trials", trials)
    write_table(results, "evals", evals)
    write_table(results, "weights", weights)
    return results


@pytest.fixture
def demo_like(tmp_path: Path) -> Path:
    return write_demo_like(tmp_path / "results")


def _sections(text: str) -> dict[str, str]:
    """Every heading (any level) and the text up to the next heading."""
    parts = re.split(r"^(#+ .*)$", text, flags=re.MULTILINE)
    return {parts[i].strip(): parts[i + 1].strip() for i in range(1, len(parts) - 1, 2)}


def test_a_study_without_curvature_has_no_empty_section_or_placeholder(demo_like: Path):
    text = write_report(demo_like).read_text(encoding="utf-8")
    sections = _sections(text)
    empty = [heading for heading, body in sections.items()
             if not body and not any(h.startswith(heading.split(" ")[0] + "#") for h in sections)]
    assert empty == []
    assert "no data" not in text.lower()
    assert "Curvature" not in text and "ρ(H)" not in text and "Regressions" not in text
    assert "Forgetting curve" not in text  # two-stage chains: the final-stage table says it all
    figures = sorted(p.name for p in (demo_like / "report" / "figures").iterdir())
    assert figures == ["accuracy_progression.png", "forgetting_by_first_lr.png", "group_forgetting.png"]
    assert all(f"figures/{name}" in text for name in figures)
    # Results first: the definitions and the table list come after every result, Time and cost too.
    order = list(sections)
    assert order.index("## Definitions") > order.index("## Figures") > order.index("## Forgetting of the first task, per setting (final stage)")


def test_the_header_holds_the_studys_settings(demo_like: Path):
    text = write_report(demo_like).read_text(encoding="utf-8")
    header = _sections(text)["## Study"]
    for line in ("- Model: tiny", "- Chains: ARC → ToxiGenQA (arc_tqa), ToxiGenQA → ARC (tqa_arc)",
                 "- Grid points: lr 1e-3; lr 3e-3", "- Steps per stage: 10", "- Batch size: 16",
                 "- Training examples per stage: 100", "- Seeds: 0 (1 seed)",
                 "- Eval sets: ARC (40 examples), ToxiGenQA (40 examples)"):
        assert line in header.splitlines(), line
    assert text.index("## Study") < text.index("## Forgetting of the first task")


def test_paper_tables_that_cannot_be_built_say_why_in_one_line(demo_like: Path):
    text = write_report(demo_like).read_text(encoding="utf-8")
    reasons = _sections(text)["### Not built from these results"].splitlines()
    assert reasons == [
        "- Table 1 needs one grid point per order (two-stage chains of two different tasks, every stage SFT): "
        "arc_tqa has 2, tqa_arc has 2 (the grid varies learning rate of stage 1); those chains are in the "
        "hyperparameter table.",
        "- Table 2 needs two-stage chains that share their first task and their second stage but differ in "
        "the first stage's method: every first stage here is SFT.",
    ]
    assert "### Tables 4, 5 and 9" in text  # the table these results do fill is there


def test_figures_use_display_names_one_y_scale_and_a_chance_line(demo_like: Path):
    trials = pl.read_parquet(demo_like / "trials")
    evals = pl.read_parquet(demo_like / "evals")
    orders = chain_orders(trials)
    assert orders == {"tqa_arc": "ToxiGenQA → ARC", "arc_tqa": "ARC → ToxiGenQA"}

    groups = group_forgetting_figure(group_forgetting(trials, evals), orders=orders)
    titles = [axes.get_title() for axes in groups.axes]
    assert titles == ["ToxiGenQA → ARC, lr 1e-3", "ToxiGenQA → ARC, lr 3e-3"]
    assert len({axes.get_ylim() for axes in groups.axes}) == 1

    progression = accuracy_progression_figure(stage_benchmarks(trials, evals), orders=orders)
    panels = {axes.get_title(): axes for axes in progression.axes}
    assert sorted(panels) == ["ARC", "ToxiGenQA"]
    assert len({axes.get_ylim() for axes in progression.axes}) == 1
    legend = [text.get_text() for text in progression.axes[0].get_legend().get_texts()]
    assert "ToxiGenQA → ARC, lr 1e-3" in legend
    for title, chance in (("ARC", 25.0), ("ToxiGenQA", 50.0)):
        lines = [line for line in panels[title].get_lines() if line.get_label() == CHANCE_LABEL]
        assert len(lines) == 1 and list(lines[0].get_ydata()) == [chance, chance], title


def test_results_without_a_chance_column_draw_no_chance_line(demo_like: Path):
    trials = pl.read_parquet(demo_like / "trials")
    evals = pl.read_parquet(demo_like / "evals").drop("chance")
    figure = accuracy_progression_figure(stage_benchmarks(trials, evals))
    assert not [line for axes in figure.axes for line in axes.get_lines() if line.get_label() == CHANCE_LABEL]


def test_a_chain_of_three_stages_gets_its_forgetting_curve(tmp_path: Path):
    trials = trial_rows("t", "three", 0, ["toxigen_qa", "arc_easy", "arc_easy"])
    evals = [row for stage, acc in ((1, 0.9), (2, 0.8), (3, 0.7))
             for row in _evals("t", stage, "toxigen_qa", {"all": acc})]
    write_table(tmp_path, "trials", trials)
    write_table(tmp_path, "evals", evals)
    text = write_report(tmp_path).read_text(encoding="utf-8")
    assert "## Forgetting curve (after every later stage)" in text and "figures/forgetting_curve.png" in text


def test_chance_of_an_eval_set_is_the_mean_of_one_over_its_option_counts():
    from tasks.example import Example
    from trainables.evaluation.dispatch import chance_accuracy

    def example(i: int, options: int) -> Example:
        names = tuple("ABCD"[:options])
        return Example(example_id=str(i), prompt="q", answer_prefix=" Answer:", options=names, option_names=names, label=0)

    assert chance_accuracy([example(0, 4), example(1, 4), example(2, 2)]) == pytest.approx((0.25 + 0.25 + 0.5) / 3)
    assert chance_accuracy([]) is None
    assert chance_accuracy([object()]) is None  # a generation prompt has no options


def test_an_evals_row_without_chance_is_written_with_a_null_one(tmp_path: Path):
    """A measure the stage store kept from before the column existed still publishes."""
    from trainables.results_writer import write_part

    row = {"trial_id": "t", "stage": 0, "eval_task": "arc_easy", "metric": "accuracy", "group": "all", "n": 10,
           "correct": 3, "accuracy": 0.3, "grouping": "all", "value": 0.3}
    write_part(tmp_path, "evals", "t.stage0", [row, {**row, "chance": 0.25}])
    assert pl.read_parquet(tmp_path / "evals")["chance"].to_list() == [None, 0.25]
