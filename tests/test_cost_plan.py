"""The cost plan's counts on plans built by the real planner with known example and token counts
(sharing across grid points, best-seed candidates, an extension of a stored study), the
throughput table's checks, GPU-hours arithmetic and rates measured from a timings table."""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from contract.layout import StudyLayout
from contract.records import DIVERGED, FINISHED, StageRecord, write_record
from study.cli import main
from study.cost_plan import count_plan, fed, hvp_budget, kept_at_end
from study.planner import build_plans
from study.spec_loading import load_spec_file
from study.throughput import Rate, ThroughputError, gpu_hours, load_table, measured
from trainables.token_counts import SetCount

TRAIN = SetCount(40, 4_000)  # 40 examples, 100 tokens each
EVAL = {"arc_easy": SetCount(30, 3_000), "toxigen_qa": SetCount(20, 1_000)}
CHECKPOINT = 1_000_000


class Counts:
    """Known counts for every set the plan asks about."""

    def train(self, plan, stage):
        return TRAIN

    def evaluation(self, plan):
        return EVAL

    def validation(self, plan, stage, size):
        return SetCount(size, size * 50)


def _plans(tmp_path: Path, body: str):
    path = tmp_path / "study.yaml"
    path.write_text("name: s\nmodel: {name: tiny, max_length: 256}\n"
                    "tasks: {arc_easy: {train_size: 40, eval_size: 30}, toxigen_qa: {train_size: 40, eval_size: 20}}\n"
                    "eval_tasks: [arc_easy, toxigen_qa]\n"
                    f"storage: {tmp_path}\n" + body)
    spec = load_spec_file(path)
    return spec, build_plans(spec, study_dir=tmp_path / "s", data_dir=None, base_model_path="tiny-000000000000",
                             chat=False)


def _count(plans, policy="needed", **kw):
    return count_plan(plans, Counts(), checkpoint_bytes=CHECKPOINT, policy=policy, study="s", **kw)


GRID = """stage_defaults: {method: sft, learning_rate: 1.0e-3, batch_size: 16, steps: 4}
chains: {c: [{task: arc_easy}, {task: toxigen_qa}]}
grid: {stage2.learning_rate: [1.0e-3, 2.0e-3]}
seeds: [0]
"""


def test_grid_points_share_their_first_stage(tmp_path):
    _, plans = _plans(tmp_path, GRID)
    cost = _count(plans)
    assert cost.trials == 2 and cost.stage_trainings_naive == 4 and cost.distinct_stages == 3
    assert len(cost.trainings) == 3 and not cost.reused
    # 4 steps of 16 over 40 examples: one epoch (3 steps, the last of 8) and one more batch
    assert {s.examples_fed for s in cost.trainings} == {40 + 16}
    assert cost.total("train_tokens") == pytest.approx(3 * (4_000 + 16 * 100))
    assert not cost.train_tokens_exact
    # the base model and 3 stages, each evaluated once on both tasks
    assert cost.total("eval_examples") == 4 * 50 and cost.total("scored_tokens") == 4 * 4_000
    assert cost.bytes_written == 3 * CHECKPOINT
    assert cost.kept == {"needed": 0, "final": 2, "all": 3}


def test_best_seed_candidates_are_stages_and_are_validated(tmp_path):
    _, plans = _plans(tmp_path, """stage_defaults: {method: sft, learning_rate: 1.0e-3, batch_size: 10, steps: 8}
chains: {c: [{task: arc_easy}, {task: toxigen_qa, start_from: best_seed, selection_size: 12}]}
seeds: [0, 1, 2]
""")
    cost = _count(plans, policy="final")
    # three first stages (one per seed: the candidates), three second stages from the best of them
    assert cost.trials == 3 and cost.distinct_stages == 6 and len(cost.trainings) == 6
    assert cost.total("validation_examples") == 3 * 12 and cost.total("validation_tokens") == 3 * 12 * 50
    # 8 steps of 10 over 40 examples: two whole epochs, exact
    assert {s.examples_fed for s in cost.trainings} == {80} and cost.train_tokens_exact
    assert cost.total("train_tokens") == 6 * 8_000
    assert cost.kept == {"needed": 0, "final": 3, "all": 6}
    assert kept_at_end(plans, "final") == {p.stages[-1].stage_key for p in plans}


def test_an_extension_counts_only_what_it_adds(tmp_path):
    _, plans = _plans(tmp_path, GRID)
    layout = StudyLayout(tmp_path / "s")
    first, second_a, second_b = (plans[0].stages[0], plans[0].stages[1], plans[1].stages[1])
    for stage, status in ((first, FINISHED), (second_a, DIVERGED)):
        write_record(layout.stage(stage.stage_key).record, StageRecord(
            stage_key=stage.stage_key, run_id="r1", trained_by="t", status=status, reason=None, finished_at=0.0))
    layout.stage(first.stage_key).checkpoint.mkdir(parents=True)
    cost = _count(plans)
    assert [s.key for s in cost.trainings] == [second_b.stage_key]
    assert {s.key for s in cost.reused} == {first.stage_key, second_a.stage_key}
    assert cost.bytes_written == CHECKPOINT and cost.notes  # says it assumes --resume
    # the diverged stage is not evaluated; the stored finished one is (no stored evals here)
    assert cost.total("eval_examples") == 3 * 50
    # a removed checkpoint that a stage still to train starts from: trained again
    layout.stage(first.stage_key).checkpoint.rmdir()
    again = _count(plans)
    assert {s.key for s in again.trainings} == {first.stage_key, second_b.stage_key}
    # fresh (no --resume): everything
    assert len(_count(plans, fresh=True).trainings) == 3


def test_fed_and_hvp_budget():
    assert fed(800, 80_000, 150, 16) == (2_400, 240_000, True)  # three whole epochs
    examples, tokens, exact = fed(40, 4_000, 4, 16)
    assert (examples, exact) == (56, False) and tokens == pytest.approx(4_000 + 1_600)
    curvature = type("C", (), {"algorithms": ("power_iteration", "lanczos"), "top_k": 2, "max_iterations": 10,
                               "trace_samples": 3})
    assert hvp_budget(curvature) == 2 * 10 + 10 + 3


def test_gpu_hours_of_a_known_plan(tmp_path):
    _, plans = _plans(tmp_path, GRID)
    cost = _count(plans)
    rate = Rate("X", 1e9, train_tokens_per_s=100.0, score_tokens_per_s=400.0)
    hours = gpu_hours(cost, rate)
    assert hours.train == pytest.approx(3 * 5_600 / 100 / 3600)
    assert hours.score == pytest.approx(16_000 / 400 / 3600)
    assert hours.curvature == 0 and hours.total == pytest.approx(hours.train + hours.score)


def test_table_rates_scale_with_model_size():
    table = load_table()
    a100 = table.rate("A100-80GB", 6738415616)
    assert a100.train_tokens_per_s == 3014 and a100.score_tokens_per_s == 9042
    half = table.rate("A100-80GB", 6738415616 / 2)
    assert half.train_tokens_per_s == pytest.approx(2 * 3014)
    with pytest.raises(KeyError, match="A100-80GB"):
        table.rate("TPU", 1e9)


BAD_TABLE = """source: test
date: "2026"
rates:
  - gpu: A100-80GB
    params: 7.0e+9
    train_tokens_per_s: -5
    score_tokens_per_s: 9000
  - gpu: H100
    parms: 7.0e+9
    train_tokens_per_s: 1
    score_tokens_per_s: fast
model_params: {m: 1.5}
"""


def test_throughput_file_problems_name_their_lines(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_TABLE)
    with pytest.raises(ThroughputError) as caught:
        load_table(path)
    found = {(p.path, p.line) for p in caught.value.problems}
    assert ("rates[0].train_tokens_per_s", 6) in found
    assert ("rates[1].parms", 9) in found  # unknown: did you mean 'params'?
    assert ("rates[1]", 8) in found  # missing params
    assert ("rates[1].score_tokens_per_s", 11) in found
    assert ("model_params.m", 12) in found
    assert "did you mean 'params'" in caught.value.render()
    assert main(["plan", "demo", "--throughput", str(path)]) == 2
    assert f"{path}:6: rates[0].train_tokens_per_s: must be > 0" in capsys.readouterr().err


def test_rates_measured_from_a_timings_table(tmp_path):
    timings = tmp_path / "timings"
    timings.mkdir()
    rows = {"trial_id": ["t"] * 4, "run_id": ["r"] * 4, "stage": [1, 1, 1, 0], "phase": ["train", "evaluate",
            "evaluate", "load"], "task": [None, "arc_easy", "bbq", None], "seconds": [10.0, 2.0, 3.0, 7.0],
            "examples": [100, 50, 50, 0], "tokens": [40_000, 20_000, 30_000, 0]}
    pq.write_table(pa.table(rows), timings / "t.parquet")
    rate = measured(tmp_path, params=1e9, gpus_per_trial=2, gpu="A100-80GB")
    assert rate.train_tokens_per_s == 40_000 / (10 * 2) and rate.score_tokens_per_s == 50_000 / (5 * 2)
    cpu = measured(tmp_path, params=1e9, gpus_per_trial=0, gpu="cpu")
    assert cpu.train_tokens_per_s == 4_000
    with pytest.raises(FileNotFoundError, match="timings"):
        measured(tmp_path / "nothing", params=1e9, gpus_per_trial=1, gpu="x")


def test_plan_cli_on_the_tiny_demo(tmp_path, capsys, data_dir):
    """The real counts of a cut-down demo: tokens from the tiny model's tokenizer, 3 whole epochs."""
    code = main(["plan", "demo", "--storage", str(tmp_path), "--set", "tasks.toxigen_qa.train_size=32",
                 "--set", "tasks.arc_easy.train_size=32", "--set", "tasks.toxigen_qa.eval_size=20",
                 "--set", "tasks.arc_easy.eval_size=20", "--set", "stage_defaults.steps=6"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "4 trials" in out and "8 stage trainings" in out
    assert "training tokens: exact" in out and "counted with the model's tokenizer" in out
    assert "keep_checkpoints: needed    0 x" in out and "<- this study" in out
    assert not (tmp_path / "demo").exists()
    assert math.isfinite(float(out.split("CPU-hours (per trial process): ")[1].split()[0]))
