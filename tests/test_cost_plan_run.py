"""`study plan` against a real run of the demo preset (cut down): every count the plan makes is
what the run then records (runs/*.json, stage records, evals rows, checkpoint bytes on disk),
and after the run the same plan has nothing left to train or measure."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from contract.keys import BASE_KEY_PREFIX
from contract.layout import StudyLayout
from study.orchestrate import plan_costs, run_study
from study.presets import resolve_study_file
from study.spec_loading import load_spec_file
from study.throughput import load_table

# 40 examples in batches of 16: 3 steps an epoch (the last one holds 8), so 4 steps feed one
# epoch plus one batch: 56 examples, the tokens of the extra batch an expected value.
CUT_DOWN = ["tasks.toxigen_qa.train_size=40", "tasks.toxigen_qa.eval_size=24", "tasks.arc_easy.train_size=40",
            "tasks.arc_easy.eval_size=20", "stage_defaults.steps=4", "execution.cpus_per_trial=1"]


def _demo(tmp_path: Path, policy: str):
    return load_spec_file(resolve_study_file("demo"),
                          CUT_DOWN + [f"storage={tmp_path}", f"keep_checkpoints={policy}"])


def _plan(spec):
    table = load_table()
    return plan_costs(spec, chars_per_token=table.chars_per_token, model_params=table.model_params)[0]


def _checkpoint_bytes(study_dir: Path) -> tuple[int, int]:
    """(checkpoints, bytes of their files) in the stage store."""
    folders = [p for p in StudyLayout(study_dir).stages.glob("*/checkpoint") if p.is_dir()]
    return len(folders), sum(f.stat().st_size for p in folders for f in p.rglob("*") if f.is_file())


@pytest.mark.slow
def test_demo_plan_counts_equal_what_the_run_records(ray_cluster, data_dir, tmp_path):
    spec = _demo(tmp_path, "all")
    plan = _plan(spec)
    assert not StudyLayout(tmp_path / "demo").stages.exists()  # planning wrote nothing to storage
    trained = {s.key: s for s in plan.trainings}
    assert plan.trials == 4 and len(trained) == 8 and plan.stage_trainings_naive == 8
    assert {s.examples_fed for s in trained.values()} == {56} and not plan.train_tokens_exact

    outcome = run_study(spec, report=False)
    assert outcome.failed == []
    study_dir = outcome.study_dir

    # runs/<run id>.json
    (run_file,) = StudyLayout(study_dir).runs.glob("*.json")
    counts = json.loads(run_file.read_text())
    assert counts["trials"] == plan.trials
    assert counts["distinct_stages"] == plan.distinct_stages
    assert counts["stage_trainings_naive"] == plan.stage_trainings_naive
    assert counts["stage_trainings_executed"] == len(plan.trainings)
    assert counts["stages_reused_from_earlier_runs"] == len(plan.reused) == 0

    # stages/*/record.json: the stages trained, and the examples each trained on
    records = {p.parent.name: json.loads(p.read_text()) for p in StudyLayout(study_dir).stages.glob("*/record.json")}
    trained_records = {k: r for k, r in records.items() if not k.startswith(BASE_KEY_PREFIX)}
    assert set(trained_records) == set(trained)
    assert {k: r["n_train_examples"] for k, r in trained_records.items()} == \
        {k: s.train_examples for k, s in trained.items()}

    # evals rows: n per task at stage 0 and after every stage (the whole-task row of each task)
    evals = pl.read_parquet(StudyLayout(study_dir).table("evals") / "*.parquet")
    whole = evals.filter((pl.col("group") == "all") & (pl.col("metric") == "accuracy"))
    plan_n = {s.number: s.eval_by_task for s in plan.stages}
    for row in whole.iter_rows(named=True):
        assert row["n"] == plan_n[row["stage"]][row["eval_task"]], row
    assert whole.height == 4 * 3 * 2  # 4 trials x stages 0..2 x 2 tasks
    assert plan.total("eval_examples") == 9 * (24 + 20)  # the base model and 8 stages, each evaluated once

    # checkpoints on disk under keep_checkpoints: all (their size: weights and safetensors header
    # exact, the tokenizer files as the base model's, which save_pretrained rewrites a few bytes apart)
    n, size = _checkpoint_bytes(study_dir)
    assert n == plan.kept["all"] == len(trained)
    assert plan.bytes_kept("all") == plan.bytes_written
    assert abs(size - plan.bytes_written) <= 1e-4 * size, (size, plan.bytes_written)

    # timings: the examples fed and tokens scored the plan counted (training tokens are an
    # expected value here: 4 steps leave an epoch unfinished)
    rows = pl.read_parquet(StudyLayout(study_dir).table("timings") / "*.parquet")
    assert rows.filter(pl.col("phase") == "evaluate")["tokens"].sum() == plan.total("scored_tokens")
    assert rows.filter(pl.col("phase") == "evaluate")["examples"].sum() == plan.total("eval_examples")
    assert rows.filter(pl.col("phase") == "train")["examples"].sum() == plan.total("examples_fed")

    # after the run: nothing left to train or measure
    again = _plan(spec)
    assert [s.action for s in again.stages] == ["reuse"] * 9
    assert again.total("eval_examples") == 0 and again.bytes_written == 0
