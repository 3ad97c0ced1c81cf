"""The `paper-ordering` preset end to end on a local Ray cluster, on the tiny model offline
(`--set model=tiny` plus smaller sizes): every task of the paper's suite is evaluated after
every stage, per group, and lands in evals and predictions (issue #3); the report rebuilds the
paper's Table 1 with both orders and 95% intervals (issue #7)."""

from __future__ import annotations

import dataclasses

import polars as pl
import pytest

from study.orchestrate import run_study
from study.presets import resolve_study_file
from study.spec_loading import load_spec_file

pytestmark = pytest.mark.slow

EVAL_SIZES = {"toxigen_qa": 26, "arc_easy": 10, "arc_challenge": 10, "bbq": 24, "mmlu": 60,
              "toxigen_prompts": 26, "saferdialogues": 5}


def _table(study_dir, name) -> pl.DataFrame:
    return pl.read_parquet(study_dir / name / "*.parquet")


def test_paper_ordering_preset_on_the_tiny_model_evaluates_every_task_and_reports_table_1(ray_cluster, data_dir, tmp_path):
    overrides = ["model=tiny", "seeds=[0]"] + [f"tasks.{task}.eval_size={size}" for task, size in EVAL_SIZES.items()] + [
        "tasks.toxigen_qa.train_size=32", "tasks.arc_easy.train_size=32", "tasks.bbq.train_size=32",
        "stage_defaults.steps=4", "model.max_length=256", "generation.max_new_tokens=12", f"data_dir={data_dir}",
    ]
    spec = dataclasses.replace(load_spec_file(resolve_study_file("paper-ordering"), overrides),
                               storage=str(tmp_path / "results"))
    outcome = run_study(spec)  # the trial warns that the mirror's SaFeRDialogues is a sample
    assert outcome.failed == [] and outcome.trials == 4
    text = outcome.report.read_text(encoding="utf-8")
    assert "### Table 1: accuracy after the final stage and forgetting of the first task, per order" in text
    for order in ("ARC → ToxiGenQA", "ToxiGenQA → ARC", "ARC → BBQ", "BBQ → ARC"):
        assert f"| {order} |" in text
    assert "[low, high] = 95% confidence interval" in text
    # From here on: the ToxiGenQA -> ARC trial.
    trial = _table(outcome.study_dir, "trials").filter(pl.col("chain") == "tqa_arc")["trial_id"][0]
    evals = _table(outcome.study_dir, "evals").filter(pl.col("trial_id") == trial)
    predictions = _table(outcome.study_dir, "predictions").filter(pl.col("trial_id") == trial)

    # Every task, at stages 0 (base), 1 and 2, with its primary metric over the whole task.
    primary = {"safe" if t in ("toxigen_prompts", "saferdialogues") else "accuracy" for t in EVAL_SIZES}
    overall = evals.filter((pl.col("group") == "all") & pl.col("metric").is_in(primary))
    assert sorted(overall.select("eval_task", "stage").unique().rows()) == sorted(
        (task, stage) for task in EVAL_SIZES for stage in (0, 1, 2))
    for task, size in EVAL_SIZES.items():
        row = overall.filter((pl.col("eval_task") == task) & (pl.col("stage") == 0)).row(0, named=True)
        assert row["n"] == size, task

    stage0 = evals.filter(pl.col("stage") == 0)

    def groups(task: str, grouping: str, metric: str = "accuracy") -> set[str]:
        rows = stage0.filter((pl.col("eval_task") == task) & (pl.col("grouping") == grouping) & (pl.col("metric") == metric))
        return set(rows["group"])

    assert len(groups("toxigen_qa", "group")) == 13
    assert len(groups("mmlu", "group")) > 10  # subjects (all 57 need ≥ 228 items: tests/test_tasks_mmlu.py)
    assert groups("mmlu", "category") == {"STEM", "humanities", "social sciences", "other"}
    assert groups("bbq", "condition") == {"ambig", "disambig"}
    assert len(groups("bbq", "group")) == 6  # the mirror's 6 categories
    assert groups("toxigen_prompts", "prompt_type", "safe") == {"hate", "neutral"}
    assert len(groups("toxigen_prompts", "group", "safe")) == 13
    # BBQ bias scores, paper-exact generated answers, and the judge's own held-out accuracy.
    metrics = set(stage0.select("eval_task", "metric").unique().rows())
    assert {("bbq", "bias_score_ambig"), ("bbq", "bias_score_disambig"), ("bbq", "generated_accuracy"),
            ("bbq", "unparseable"), ("toxigen_qa", "generated_accuracy"), ("toxigen_qa", "unparseable"),
            ("toxigen_prompts", "classifier_heldout_accuracy")} <= metrics
    judge = stage0.filter(pl.col("metric") == "classifier_heldout_accuracy").row(0, named=True)
    assert judge["n"] > 1000 and judge["accuracy"] > 0.7

    # One prediction per example and mode; evals are recomputable from them.
    p0 = predictions.filter(pl.col("stage") == 0)
    counts = dict(p0.group_by("eval_task", "mode").len().select(pl.concat_str("eval_task", "mode", separator="/"), "len").rows())
    expected = {f"{task}/{'generate' if task in ('toxigen_prompts', 'saferdialogues') else 'score'}": size
                for task, size in EVAL_SIZES.items()}
    expected |= {"toxigen_qa/generate": EVAL_SIZES["toxigen_qa"], "bbq/generate": EVAL_SIZES["bbq"]}
    assert counts == expected
    for task in EVAL_SIZES:
        metric = "safe" if task in ("toxigen_prompts", "saferdialogues") else "accuracy"
        mode = "generate" if metric == "safe" else "score"
        for stage in (0, 1, 2):
            shown = evals.filter((pl.col("eval_task") == task) & (pl.col("stage") == stage) & (pl.col("group") == "all")
                                 & (pl.col("metric") == metric))["accuracy"].item()
            rows = predictions.filter((pl.col("eval_task") == task) & (pl.col("stage") == stage) & (pl.col("mode") == mode))
            assert shown == pytest.approx(rows["correct"].mean()), (task, stage)
    bbq = p0.filter((pl.col("eval_task") == "bbq") & (pl.col("mode") == "score"))
    assert set(bbq["role"]) <= {"unknown", "biased", "counter_biased"}
    assert bbq["facets"].list.len().min() >= 1
    generated = p0.filter(pl.col("mode") == "generate")
    assert generated["generation"].null_count() == 0

