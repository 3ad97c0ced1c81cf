"""analysis/benchmarks.py and the report's "Every eval task after every stage" table, on
hand-built tables with hand-computed means."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from analysis.benchmarks import benchmark_columns, judge_accuracy, stage_benchmarks
from analysis.labels import points
from analysis.report import write_report
from tests.report_checks import assert_every_interval_contains_its_estimate
from tests.test_analysis_forgetting import trial_rows, write_table


def _row(trial, stage, task, metric, value, *, group="all", grouping="all", accuracy=True, n=10):
    return {"trial_id": trial, "stage": stage, "eval_task": task, "metric": metric, "group": group,
            "grouping": grouping, "n": n, "correct": None, "accuracy": value if accuracy else None, "value": value}


def _tables():
    trials = pl.DataFrame(trial_rows("t0", "tqa_arc", 0, ["toxigen_qa", "arc_easy"])
                          + trial_rows("t1", "tqa_arc", 1, ["toxigen_qa", "arc_easy"]))
    evals = []
    for trial, shift in (("t0", 0.0), ("t1", 0.1)):
        for stage in (0, 1, 2):
            evals += [
                _row(trial, stage, "mmlu", "accuracy", 0.25 + shift + 0.01 * stage),
                _row(trial, stage, "mmlu", "accuracy", 0.9, group="STEM", grouping="category"),  # not "all": ignored
                _row(trial, stage, "saferdialogues", "safe", 0.70 + shift),
                _row(trial, stage, "saferdialogues", "classifier_heldout_accuracy", 0.8, n=1826),
                _row(trial, stage, "bbq", "bias_score_ambig", -0.2 + shift, accuracy=False),
            ]
    return trials, pl.DataFrame(evals)


def test_stage_benchmarks_are_seed_means_over_the_whole_task():
    trials, evals = _tables()
    long = stage_benchmarks(trials, evals)
    # 3 stages x 3 (task, metric) pairs; the judge's accuracy and the category row are not among them.
    assert long.height == 9
    assert set(long["metric"]) == {"accuracy", "safe", "bias_score_ambig"}
    mmlu = long.filter((pl.col("eval_task") == "mmlu") & (pl.col("stage") == 2)).row(0, named=True)
    assert mmlu["value"] == pytest.approx((0.27 + 0.37) / 2) and mmlu["n_seeds"] == 2
    assert mmlu["value_std"] == pytest.approx(pl.Series([0.27, 0.37]).std())
    assert mmlu["stage_task"] == "arc_easy"
    bias = long.filter((pl.col("eval_task") == "bbq") & (pl.col("stage") == 0)).row(0, named=True)
    assert bias["value"] == pytest.approx(-0.15)  # the score itself: its accuracy column is null
    assert bias["stage_task"] is None  # stage 0 = the base model
    judge = judge_accuracy(evals).row(0, named=True)
    assert (judge["eval_task"], judge["n"], judge["accuracy"]) == ("saferdialogues", 1826, pytest.approx(0.8))
    # Headline metrics (accuracy, safe) come before the extras.
    assert benchmark_columns(long) == [("mmlu", "accuracy"), ("saferdialogues", "safe"), ("bbq", "bias_score_ambig")]


def test_rows_written_before_the_value_column_read_their_accuracy():
    trials, evals = _tables()
    old = evals.filter(pl.col("metric") == "accuracy").drop("value", "grouping").filter(pl.col("group") == "all")
    long = stage_benchmarks(trials, old)
    assert long.filter(pl.col("stage") == 0)["value"].item() == pytest.approx(0.30)


def test_report_shows_every_task_after_every_stage(tmp_path):
    trials, evals = _tables()
    write_table(tmp_path, "trials", trials.to_dicts())
    write_table(tmp_path, "evals", evals.to_dicts())
    text = write_report(tmp_path).read_text(encoding="utf-8")
    assert "## Every eval task after every stage" in text
    assert "| Chain | Grid point | After stage | Trained on | Seeds | mmlu acc | saferdialogues safe % | bbq bias (ambig) ×100 |" in text
    # Stage 2 row: mmlu (0.27 + 0.37) / 2 = 32.00, safe (0.70 + 0.80) / 2 = 75.00, bias -15.00.
    assert "| tqa_arc | – | 2 | arc_easy | 2 | 32.00 | 75.00 | -15.00 |" in text
    assert "saferdialogues: 80.00 (n = 1826)" in text
    assert (tmp_path / "report" / "tables" / "stage_benchmarks.parquet").is_file()
    # The paper's Figure 7: one panel per task's headline metric, written and non-empty.
    assert "(the paper's Figure 7)" in text
    assert (tmp_path / "report" / "figures" / "accuracy_progression.png").stat().st_size > 5000


def test_report_with_predictions_has_intervals_group_tests_and_paper_table_1(tmp_path):
    """Two orders x 2 seeds with per-example predictions: the report's summary carries 95%
    intervals that contain the estimates, the group table has Holm p-values, and the paper's
    Table 1 lists both orders."""
    import numpy as np

    from analysis.accuracy import accuracy_from_predictions

    rng = np.random.default_rng(0)
    trials, predictions = [], []
    for chain, tasks in (("tqa_arc", ["toxigen_qa", "arc_easy"]), ("arc_tqa", ["arc_easy", "toxigen_qa"])):
        for seed in (0, 1):
            trial = f"{chain}-{seed}"
            trials += trial_rows(trial, chain, seed, tasks)
            for stage in (1, 2):
                for task in ("toxigen_qa", "arc_easy"):
                    # The first task is right 90% of the time after stage 1, 60% after stage 2 (forgets).
                    p = 0.9 if (task == tasks[0] and stage == 1) or task == tasks[stage - 1] else 0.6
                    for i in range(60):
                        predictions.append({"trial_id": trial, "stage": stage, "eval_task": task, "example_id": f"{task}/{i}",
                                            "groups": ["muslim" if i % 2 else "women"] if task == "toxigen_qa" else [],
                                            "label": "A", "prediction": "A", "correct": bool(rng.random() < p),
                                            "margin": 0.0, "mode": "score"})
    frame = pl.DataFrame(predictions, schema_overrides={"groups": pl.List(pl.String)})
    evals = accuracy_from_predictions(frame)
    write_table(tmp_path, "trials", trials)
    write_table(tmp_path, "predictions", frame.to_dicts())
    write_table(tmp_path, "evals", evals.to_dicts())
    text = write_report(tmp_path).read_text(encoding="utf-8")
    assert "[low, high] = 95% confidence interval" in text and "| p (Holm) |" in text
    summary = pl.read_parquet(tmp_path / "report" / "tables" / "forgetting_summary.parquet")
    for row in summary.iter_rows(named=True):
        assert row["forgetting_low"] <= row["forgetting"] <= row["forgetting_high"]
        assert row["forgetting_high"] - row["forgetting_low"] > 0  # 2 seeds x 60 examples: not a point
    tests = pl.read_parquet(tmp_path / "report" / "tables" / "group_forgetting_tests.parquet")
    assert set(tests["group"]) == {"muslim", "women"}
    # The maximum over groups carries its permutation test, not an interval.
    tqa = summary.filter(pl.col("chain") == "tqa_arc").row(0, named=True)
    assert 0 < tqa["max_biased_forgetting_p"] <= 1 and "max_biased_forgetting_low" not in summary.columns
    assert f"{points(tqa['max_biased_forgetting'])} (p = " in text
    assert_every_interval_contains_its_estimate(tmp_path / "report")
    assert "### Table 1: accuracy after the final stage and forgetting of the first task, per order" in text
    assert "| ToxiGenQA → ARC |" in text and "| ARC → ToxiGenQA |" in text
