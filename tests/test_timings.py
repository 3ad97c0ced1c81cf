"""The timings table (contract.schema): what a trial's rows record, checked against counts made
independently with the tokenizer, and where `study status` and the report show them.

Two trials of one run share their first stage (ToxiGenQA, 16 examples, batch 4, 8 steps: two
full epochs): a trains it, b reuses it and trains stage 2 (ARC-Easy, 2 steps) on top.
"""

from __future__ import annotations

import json

import polars as pl
import pytest

from contract.plan import TrialPlan
from contract.schema import EVALUATE, LOCK_WAIT, MODEL_LOAD, OUTSIDE, TIMING_PHASES, TRAIN, WRITE
from tests.plans import tiny_study_plans
from trainables.chain import run_chain
from trainables.trial_data import plan_eval_sets, train_examples
from trainables.models import load_tokenizer
from trainables.timings import Recorder, batch_rows, batch_tokens


@pytest.fixture(scope="module")
def shared_study(tiny_model_path, data_dir, tmp_path_factory):
    study = tmp_path_factory.mktemp("timings") / "timed"
    a, b = tiny_study_plans(tiny_model_path, data_dir, study, "timed", {
        "a": [{"task": "toxigen_qa", "steps": 8}], "b": [{"task": "toxigen_qa", "steps": 8}, {"task": "arc_easy"}]},
        run_id="run1")
    assert a.stages[0].stage_key == b.stages[0].stage_key
    run_chain(a)
    run_chain(b)
    (study / "plans.json").write_text(json.dumps([p.to_dict() for p in (a, b)]))
    rows = pl.read_parquet(study / "timings" / "*.parquet")
    return study, a, b, rows, load_tokenizer(str(tiny_model_path))


def _of(rows: pl.DataFrame, plan: TrialPlan) -> pl.DataFrame:
    return rows.filter(pl.col("trial_id") == plan.trial_id)


def _training_tokens(tokenizer, examples) -> int:
    """Prompt + completion as the tokenizer encodes the text, plus the EOS the trainer appends."""
    return sum(len(tokenizer(ex.prompt + ex.completion)["input_ids"]) + 1 for ex in examples)


def _scored_tokens(tokenizer, examples) -> int:
    """Every option's context + option, as the tokenizer encodes the text (none is cut at 256)."""
    return sum(len(tokenizer(ex.prompt + ex.answer_prefix + option)["input_ids"])
               for ex in examples for option in ex.options)


def test_each_trial_records_its_phases_once_with_stage_numbers_and_seconds(shared_study):
    study, a, b, rows, _ = shared_study
    assert set(rows["phase"]) <= set(TIMING_PHASES)
    assert (rows["seconds"] >= 0).all()
    assert rows["run_id"].unique().to_list() == ["run1"]
    for plan, stages in ((a, {0, 1}), (b, {0, 1, 2})):
        mine = _of(rows, plan)
        assert set(mine["stage"].drop_nulls()) == stages
        outside = mine.filter(pl.col("phase") == OUTSIDE)
        assert outside.height == 1 and outside["stage"].is_null().all()
        assert mine.select("stage", "phase", "task").is_duplicated().sum() == 0  # one row per (stage, phase, task)
        assert {LOCK_WAIT, WRITE} <= set(mine.filter(pl.col("stage") == 1)["phase"])
    # a measured the base model (loaded it) and trained stage 1; b found both stored.
    assert {(0, EVALUATE), (0, MODEL_LOAD), (1, TRAIN)} <= set(_of(rows, a).select("stage", "phase").rows())
    assert set(_of(rows, b).filter(pl.col("stage") < 2)["phase"]).isdisjoint({TRAIN, EVALUATE, MODEL_LOAD})
    assert set(rows["device_kind"]) <= {"gpu", "cpu"}
    assert (rows["devices"] >= 1).all()


def test_training_rows_count_steps_times_batch_and_the_tokens_fed(shared_study):
    """8 steps of batch 4 over 16 examples: two full epochs, so exactly twice the subsample's
    tokens; stage 2's 2 steps feed 8 of its 16 examples (tokens between its 8 shortest and longest)."""
    _, a, b, rows, tokenizer = shared_study
    [row] = _of(rows, a).filter(pl.col("phase") == TRAIN).rows(named=True)
    assert (row["stage"], row["task"], row["examples"]) == (1, "toxigen_qa", 8 * 4)
    assert row["tokens"] == 2 * _training_tokens(tokenizer, train_examples(a, a.stages[0]))
    [row] = _of(rows, b).filter(pl.col("phase") == TRAIN).rows(named=True)
    assert (row["stage"], row["task"], row["examples"]) == (2, "arc_easy", 2 * 4)
    lengths = sorted(_training_tokens(tokenizer, [ex]) for ex in train_examples(b, b.stages[1]))
    assert sum(lengths[:8]) <= row["tokens"] <= sum(lengths[-8:])


def test_evaluation_rows_count_the_eval_sets_and_their_scored_tokens(shared_study):
    _, a, b, rows, tokenizer = shared_study
    eval_sets = plan_eval_sets(b)
    expected = {task: (len(examples), _scored_tokens(tokenizer, examples)) for task, examples in eval_sets.items()}
    for plan, stages in ((a, (0, 1)), (b, (2,))):
        evaluated = _of(rows, plan).filter(pl.col("phase") == EVALUATE)
        assert sorted(evaluated.select("stage", "task").rows()) == sorted((s, t) for s in stages for t in expected)
        for r in evaluated.rows(named=True):
            assert (r["examples"], r["tokens"]) == expected[r["task"]]


def test_a_reused_stage_has_no_train_row_for_the_reusing_trial(shared_study):
    _, _, b, rows, _ = shared_study
    stage1 = _of(rows, b).filter(pl.col("stage") == 1)
    assert TRAIN not in stage1["phase"].to_list()
    assert stage1["examples"].is_null().all()


def test_status_prints_the_phase_summary_and_the_report_has_the_time_table(shared_study):
    from analysis.report import write_report
    from analysis.status import render_status, study_status

    study, _, _, rows, _ = shared_study
    status = study_status(study)
    summary = status.phases
    assert summary["phase"].to_list()[-1] == OUTSIDE
    assert summary["seconds"].sum() == pytest.approx(rows["seconds"].sum())
    assert summary["share"].sum() == pytest.approx(1.0)
    train = summary.filter(pl.col("phase") == TRAIN).row(0, named=True)
    assert train["examples"] == 8 * 4 + 2 * 4
    text = render_status(status)
    assert "time per phase" in text
    assert any(line.split()[:1] == [TRAIN] for line in text.splitlines())
    report = write_report(study).read_text()
    section = report[report.index("## Time and cost"):]
    assert "| Phase | Seconds | Share | Examples | Tokens | GPU-hours | CPU-hours |" in section
    assert f"| {TRAIN} |" in section and "| total |" in section


def test_nested_phases_never_count_twice_and_a_trainer_batch_counts_its_masks():
    import torch

    recorder = Recorder("t", "r", started=0.0)
    with recorder.phase("other", stage=1):
        with recorder.phase("write"):
            recorder.count(examples=3)
    totals = {key: t for key, t in recorder.totals.items()}
    assert set(totals) == {(1, "other", None), (1, "write", None)}  # the stage is inherited
    assert totals[(1, "write", None)].examples == 3 and totals[(1, "other", None)].examples is None
    assert batch_tokens({"input_ids": torch.ones(2, 5), "attention_mask": torch.tensor([[1, 1, 1, 0, 0]] * 2)}) == 6
    assert batch_tokens({"chosen_attention_mask": torch.ones(2, 3), "rejected_attention_mask": torch.ones(2, 2),
                         "prompt_attention_mask": torch.ones(2, 1)}) == 12
    assert batch_tokens({"input_ids": torch.ones(1, 7), "position_ids": torch.arange(7)[None]}) == 7  # padding-free
    assert batch_tokens([{"prompt": "x"}]) is None


def test_a_trainer_batch_counts_its_rows_as_examples():
    """Examples fed are the rows the step received: an epoch's short last batch counts what it
    holds, a padding-free row counts the sequences its position ids restart at, DPO its pairs."""
    import torch

    assert batch_rows({"input_ids": torch.ones(8, 5), "attention_mask": torch.ones(8, 5)}) == 8  # 40 = 16 + 16 + 8
    assert batch_rows({"input_ids": torch.ones(1, 7), "position_ids": torch.tensor([[0, 1, 2, 0, 1, 0, 1]])}) == 3
    assert batch_rows({"prompt_input_ids": torch.ones(4, 3), "chosen_input_ids": torch.ones(4, 2)}) == 4
    assert batch_rows({"input_ids_chosen": torch.ones(2, 3), "input_ids_rejected": torch.ones(2, 3)}) == 2
    assert batch_rows([{"prompt": "x"}]) is None
