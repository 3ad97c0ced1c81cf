"""The stage store: locks, which records a run may reuse, shared prefixes, divergence, forgetting metrics."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import polars as pl
import pytest

from contract.layout import StudyLayout
from contract.plan import RunInfo, TrialPlan
from study.planner import build_plans
from study.spec_loading import spec_from_dict
from trainables.chain import run_chain
from trainables.trial_reports import divergence, forgetting_metrics
from trainables.stage_store import StageStore


# ---------------------------------------------------------------- lock and ledger

def _hold_lock(folder, ready):
    code = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {os.getcwd()!r})
        from contract.plan import RunInfo
        from trainables.stage_store import StageStore
        with StageStore({str(folder)!r}, RunInfo("r")).claim("k"):
            open({str(ready)!r}, "w").close()
            time.sleep(600)
    """)
    return subprocess.Popen([sys.executable, "-c", code])


def _lock_is_free(folder) -> bool:
    import fcntl

    with open(folder / "stages" / "k" / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(handle, fcntl.LOCK_UN)
        return True


def test_a_claimed_stage_is_locked_until_its_holder_dies(tmp_path):
    """While a process holds a stage's claim no other can take it; SIGKILL releases it (so a
    trial killed mid-stage never blocks the trial that retries the stage)."""
    ready = tmp_path / "ready"
    holder = _hold_lock(tmp_path, ready)
    try:
        for _ in range(200):
            if ready.exists():
                break
            time.sleep(0.05)
        assert ready.exists(), "lock holder did not start"
        assert not _lock_is_free(tmp_path)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert _lock_is_free(tmp_path)


def test_records_count_within_their_run_and_across_runs_only_when_reusing(tmp_path):
    store = StageStore(tmp_path, RunInfo("run1"))
    with store.claim("abc") as entry:
        assert entry.usable_record() is None
        entry.checkpoint_staging()  # nothing published yet: a crash here leaves no usable stage
        entry.finish(trial_id="t1", status="finished")
        assert entry.usable_record() is None, "a finished record without a checkpoint is not usable"
        entry.publish_checkpoint(entry.checkpoint_staging())
        assert entry.usable_record().trained_by == "t1"
    assert StageStore(tmp_path, RunInfo("run2")).entry("abc").usable_record() is None
    assert StageStore(tmp_path, RunInfo("run2", reuse_earlier_runs=True)).entry("abc").usable_record().run_id == "run1"
    with store.claim("nan") as entry:
        entry.finish(trial_id="t1", status="diverged", reason="non-finite loss")
        assert entry.usable_record().reason == "non-finite loss"  # a diverged stage needs no checkpoint


# ---------------------------------------------------------------- metrics

def test_forgetting_metrics_by_hand():
    """Chain toxigen_qa → arc_easy. ToxiGenQA accuracy after stage 1: all .80, g1 .90, g2 .70;
    after stage 2: all .60, g1 .85, g2 .35. F = .80 − .60 = .20; per group .05 and .35, so
    WG = .35 and biased = .35 − .20 = .15. ARC (trained at stage 2) has F = 0 at stage 2;
    at stage 1 neither task's forgetting is defined for ARC (NaN); ToxiGenQA's is 0."""
    trained, evaluated = [(1, "toxigen_qa"), (2, "arc_easy")], {"toxigen_qa", "arc_easy"}
    accuracy = {1: {"toxigen_qa": {"all": .80, "g1": .90, "g2": .70}, "arc_easy": {"all": .30}},
                2: {"toxigen_qa": {"all": .60, "g1": .85, "g2": .35}, "arc_easy": {"all": .50}}}
    at2 = forgetting_metrics(trained, evaluated, accuracy, 2)
    assert at2["forgetting/toxigen_qa"] == pytest.approx(.20)
    assert at2["wg_forgetting/toxigen_qa"] == pytest.approx(.35)
    assert at2["biased_forgetting/toxigen_qa"] == pytest.approx(.15)
    assert at2["forgetting/arc_easy"] == 0.0 and math.isnan(at2["wg_forgetting/arc_easy"])
    at1 = forgetting_metrics(trained, evaluated, accuracy, 1)
    assert at1["forgetting/toxigen_qa"] == 0.0 and math.isnan(at1["forgetting/arc_easy"])
    at0 = forgetting_metrics(trained, evaluated, {}, 0)
    assert set(at0) == set(at2) and all(math.isnan(v) for v in at0.values())


def test_divergence_names_the_step_or_the_weights(tiny_model_path):
    import torch

    from trainables.models import load_model_and_tokenizer

    model, _ = load_model_and_tokenizer(str(tiny_model_path), dtype="float32")
    rows = [{"step": 1, "loss": 2.0, "grad_norm": float("nan")}, {"step": 2, "loss": 1.5, "grad_norm": 0.3}]
    assert divergence(rows, model) is None  # a NaN grad_norm means "not logged"
    assert "at step 3" in divergence(rows + [{"step": 3, "loss": float("nan"), "grad_norm": 1.0}], model)
    assert "at step 3" in divergence(rows + [{"step": 3, "loss": 1.0, "grad_norm": float("inf")}], model)
    with torch.no_grad():
        model.model.norm.weight[0] = float("inf")
    assert "model.norm.weight" in divergence(rows, model)


# ---------------------------------------------------------------- chains sharing a prefix

def _spec(data_dir, **chains):
    return spec_from_dict({
        "name": "share", "model": {"name": "tiny", "max_length": 256},
        "tasks": {"toxigen_qa": {"train_size": 16, "eval_size": 8}, "arc_easy": {"train_size": 16, "eval_size": 8}},
        "stage_defaults": {"learning_rate": 1e-3, "batch_size": 4, "steps": 2},
        "chains": chains, "data_dir": str(data_dir),
    })


def _plans(spec, **kwargs):
    """The plans in their plans.json form (what these tests read)."""
    return [p.to_dict() for p in build_plans(spec, **kwargs, chat=False)]


def _run(plan, run_id, reuse=False):
    return run_chain(dataclasses.replace(TrialPlan.from_dict(plan), run=RunInfo(run_id, reuse_earlier_runs=reuse)))


def test_two_trials_sharing_a_first_stage_train_it_once(tiny_model_path, data_dir, tmp_path):
    """Chains a = [tqa, arc lr 1e-3] and b = [tqa, arc lr 2e-3] share stage 1. Trial b reuses
    a's stage 1 (trained_by a, reused) and gets exactly a's stage-0 and stage-1 rows; its
    stage 2 differs. A later run without --resume retrains; with --resume it reuses."""
    spec = _spec(data_dir, a=[{"task": "toxigen_qa"}, {"task": "arc_easy"}],
                 b=[{"task": "toxigen_qa"}, {"task": "arc_easy", "learning_rate": 2e-3}])
    study = tmp_path / "share"
    a, b = _plans(spec, study_dir=study, data_dir=str(data_dir), base_model_path=str(tiny_model_path))
    assert a["stages"][0]["stage_key"] == b["stages"][0]["stage_key"]
    _run(a, "run1")
    last = _run(b, "run1")
    assert set(last) >= {"toxigen_qa/accuracy", "forgetting/toxigen_qa", "wg_forgetting/arc_easy"}

    trials = pl.read_parquet(study / "trials" / "*.parquet").sort("trial_id", "stage")
    b_rows = trials.filter(pl.col("trial_id") == b["trial_id"])
    assert b_rows["reused"].to_list() == [True, False]
    assert b_rows["trained_by"].to_list() == [a["trial_id"], b["trial_id"]]
    assert trials.filter(pl.col("trial_id") == a["trial_id"])["reused"].to_list() == [False, False]
    records = [json.loads(p.read_text()) for p in (study / "stages").glob("*/record.json")]
    assert sorted(r["stage_key"] for r in records if not r["stage_key"].startswith("base-")) == sorted(
        {s["stage_key"] for p in (a, b) for s in p["stages"]})  # 3 distinct stages, each trained once

    evals = pl.read_parquet(study / "evals" / "*.parquet")
    for stage in (0, 1):
        by_trial = [evals.filter((pl.col("trial_id") == p["trial_id"]) & (pl.col("stage") == stage))
                    .drop("trial_id").sort("eval_task", "group") for p in (a, b)]
        assert by_trial[0].equals(by_trial[1])
    train_log = pl.read_parquet(study / "train_log" / "*.parquet")
    assert train_log.filter(pl.col("stage") == 1).group_by("trial_id").len().height == 2  # b has its copy
    assert json.loads(StudyLayout(study).trial_marker(b["trial_id"]).read_text())["status"] == "finished"

    _run(b, "run2")  # a plain rerun: trains its stages again
    record = json.loads((study / "stages" / b["stages"][0]["stage_key"] / "record.json").read_text())
    assert record["run_id"] == "run2" and record["trained_by"] == b["trial_id"]
    _run(a, "run3", reuse=True)  # --resume: reuses run2's stage 1 and run1's stage 2
    rows = pl.read_parquet(study / "trials" / f"{a['trial_id']}.parquet").sort("stage")
    assert rows["reused"].to_list() == [True, True]
    assert rows["trained_by"].to_list() == [b["trial_id"], a["trial_id"]]


def test_a_diverging_stage_fails_with_its_reason_and_skips_the_rest(tiny_model_path, data_dir, tmp_path):
    """lr 1e6 makes the tiny model's loss non-finite within two steps: stage 1 is recorded as
    failed with the step in trials.failure, stage 2 as skipped, no checkpoint is stored, and
    the trial ends normally with a 'failed' ledger marker."""
    spec = _spec(data_dir, c=[{"task": "toxigen_qa", "learning_rate": 1e6, "steps": 4}, {"task": "arc_easy"}])
    study = tmp_path / "share"
    plan = _plans(spec, study_dir=study, data_dir=str(data_dir), base_model_path=str(tiny_model_path))[0]
    metrics = _run(plan, "run1")
    assert metrics["status"] == "failed" and "stage 1" in metrics["failure"]
    rows = pl.read_parquet(study / "trials" / "*.parquet").sort("stage")
    assert rows["status"].to_list() == ["failed", "skipped"]
    assert "non-finite" in rows["failure"][0]
    assert not (study / "stages" / plan["stages"][0]["stage_key"] / "checkpoint").exists()
    marker = json.loads(StudyLayout(study).trial_marker(plan["trial_id"]).read_text())
    assert marker["status"] == "failed" and "non-finite" in marker["failure"]
    assert sorted(pl.read_parquet(study / "evals" / "*.parquet")["stage"].unique()) == [0]


# ---------------------------------------------------------------- start from the best seed

def test_best_seed_start_trains_every_candidate_once_and_starts_all_seeds_from_the_best(
        tiny_model_path, data_dir, tmp_path):
    """Seeds 0 and 1, chain [tqa, arc start_from: best_seed]. Both trials score the two seed
    prefixes on 16 examples of ToxiGenQA's validation split and start stage 2 from the better
    one (ties: seed 0); both then carry that prefix as their stage 1 (same stage_key, rows
    copied), while their stage 2s differ by seed. Stages trained: 2 candidates + 2 second stages.
    trials.start_from records the split, how many examples were scored and every candidate's score."""
    raw = {
        "name": "best", "model": {"name": "tiny", "max_length": 256},
        "tasks": {"toxigen_qa": {"train_size": 16, "eval_size": 8}, "arc_easy": {"train_size": 16, "eval_size": 8}},
        "stage_defaults": {"learning_rate": 1e-3, "batch_size": 4, "steps": 2},
        "chains": {"c": [{"task": "toxigen_qa"}, {"task": "arc_easy", "start_from": "best_seed", "selection_size": 16}]},
        "seeds": [0, 1], "data_dir": str(data_dir),
    }
    spec = spec_from_dict(raw)
    study = tmp_path / "best"
    p0, p1 = _plans(spec, study_dir=study, data_dir=str(data_dir), base_model_path=str(tiny_model_path))
    plain = spec_from_dict({**raw, "chains": {"c": [{"task": "toxigen_qa"}, {"task": "arc_easy"}]}})
    q0, _ = _plans(plain, study_dir=study, data_dir=str(data_dir), base_model_path=str(tiny_model_path))
    assert p0["stages"][0]["stage_key"] == q0["stages"][0]["stage_key"]  # stage 1 is untouched
    assert p0["stages"][1]["stage_key"] != q0["stages"][1]["stage_key"]  # stage 2 hashes the candidates
    candidates = p0["stages"][1]["start_from"]["candidates"]
    assert [c[-1]["seed"] for c in candidates] == [0, 1]
    assert candidates == p1["stages"][1]["start_from"]["candidates"]

    _run(p0, "run1")
    _run(p1, "run1")
    trials = pl.read_parquet(study / "trials" / "*.parquet").sort("trial_id", "stage")
    records = trials.filter(pl.col("stage") == 2)["start_from"].to_list()
    choice = json.loads(records[0])
    assert json.loads(records[1]) == choice  # both trials made the same choice
    assert set(choice) == {"mode", "chosen_seed", "validation_accuracy", "validation_split", "n_validation",
                           "candidates"}
    assert (choice["mode"], choice["validation_split"], choice["n_validation"]) == ("best_seed", "validation", 16)
    scores = {int(seed): acc for seed, acc in choice["candidates"].items()}
    best = min(seed for seed, acc in scores.items() if acc == max(scores.values()))
    assert choice["chosen_seed"] == best and set(scores) == {0, 1}
    assert choice["validation_accuracy"] == scores[best] and all(0 <= acc <= 1 for acc in scores.values())
    # The scores are stored with each candidate stage: 16 validation examples each.
    for candidate in candidates:
        [stored] = (study / "stages" / candidate[-1]["stage_key"] / "measures").glob("validation-*.json")
        assert json.loads(stored.read_text()) == {"accuracy": scores[candidate[-1]["seed"]], "n": 16,
                                                  "split": "validation"}
    stage1 = trials.filter(pl.col("stage") == 1)
    assert stage1["stage_key"].n_unique() == 1 and stage1["stage_seed"].to_list() == [best, best]
    assert stage1["stage_key"][0] == candidates[best][-1]["stage_key"]
    assert trials.filter(pl.col("stage") == 2)["stage_key"].n_unique() == 2
    records = [p for p in (study / "stages").glob("*/record.json") if not p.parent.name.startswith("base-")]
    assert len(records) == 4
    evals = pl.read_parquet(study / "evals" / "*.parquet").filter(pl.col("stage") == 1).drop("trial_id")
    assert evals.filter(pl.col("eval_task") == "toxigen_qa").group_by("group").agg(
        pl.col("accuracy").n_unique()).get_column("accuracy").max() == 1  # both trials: the same θ_A
