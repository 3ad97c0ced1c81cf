"""The checkpoint budget (`keep_checkpoints`): which stage checkpoints a study keeps, that a
removed one is no integrity problem, that a stage whose checkpoint was removed is trained again
(once) when something needs it, and that `study status` counts the bytes kept and freed.

The chains run through `run_chain` directly (flock claims, no Ray): four chains of the tiny
model sharing two first stages take about ten seconds per study on a CPU."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from analysis.status import render_status, study_status
from contract.checkpoint_needs import Measurement, StageNeeds, kept_at_end, removable, stage_needs
from contract.file_digest import file_sha256
from contract.layout import StudyLayout
from contract.plan import RunInfo, TrialPlan
from contract.records import StageRecord, read_record
from study.orchestrate import write_plans
from study.planner import build_plans
from study.spec_loading import spec_from_dict
from tests.plans import comparable_tables
from trainables.chain import run_chain
from trainables.stage_store import StageStore

TABLES = ("evals", "predictions", "train_log", "weights")
TQA, ARC = {"task": "toxigen_qa"}, {"task": "arc_easy"}
FIRST_LRS = (1e-3, 3e-3)


def _plans(tiny_model_path, data_dir, study: Path, lrs=FIRST_LRS, **extra) -> list[TrialPlan]:
    """Chains tqa→arc and arc→tqa × stage2.learning_rate: 2 distinct first stages, each the
    start of len(lrs) second stages."""
    spec = spec_from_dict({
        "name": "budget", "model": {"name": "tiny", "max_length": 256},
        "tasks": {"toxigen_qa": {"train_size": 16, "eval_size": 8}, "arc_easy": {"train_size": 16, "eval_size": 8}},
        "stage_defaults": {"learning_rate": 1e-3, "batch_size": 4, "steps": 2},
        "chains": {"tqa_arc": [TQA, ARC], "arc_tqa": [ARC, TQA]}, "grid": {"stage2.learning_rate": list(lrs)},
        "data_dir": str(data_dir), **extra})
    return build_plans(spec, study_dir=study, data_dir=str(data_dir), base_model_path=str(tiny_model_path),
                       chat=False)


def _run(plans: list[TrialPlan], policy: str, run_id: str = "r1", *, resume: bool = False) -> None:
    for plan in plans:
        run_chain(dataclasses.replace(plan, run=RunInfo(run_id, reuse_earlier_runs=resume, keep_checkpoints=policy)))


def _records(study: Path) -> dict[str, StageRecord]:
    stages = StudyLayout(study).stages
    return {d.name: read_record(StageRecord, d / "record.json") for d in sorted(stages.iterdir())
            if not d.name.startswith("base-")}


def _with_checkpoint(study: Path) -> set[str]:
    return {key for key in _records(study) if StudyLayout(study).stage(key).checkpoint.is_dir()}


@pytest.fixture(scope="module")
def studies(tiny_model_path, data_dir, tmp_path_factory) -> dict[str, tuple[Path, list[TrialPlan]]]:
    """The same 4-chain study run under each policy (policy -> (study folder, plans))."""
    out = {}
    for policy in ("needed", "final", "all"):
        study = tmp_path_factory.mktemp(f"budget-{policy}")
        plans = _plans(tiny_model_path, data_dir, study)
        write_plans(study, plans)
        _run(plans, policy)
        out[policy] = (study, plans)
    return out


# ---------------------------------------------------------------- who needs what (no model)

def test_needs_of_four_chains_sharing_two_first_stages(tiny_model_path, data_dir, tmp_path):
    dicts = [p.to_dict() for p in _plans(tiny_model_path, data_dir, tmp_path)]
    needs = stage_needs(dicts)
    firsts = {d["stages"][0]["stage_key"] for d in dicts}
    lasts = {d["stages"][1]["stage_key"] for d in dicts}
    assert len(firsts) == 2 and len(lasts) == 4 and set(needs) == firsts | lasts
    for key in firsts:  # each first stage is where two second stages start
        assert len(needs[key].consumers) == 2 and needs[key].consumers <= lasts and not needs[key].last
    for key in lasts:
        assert not needs[key].consumers and needs[key].last
        assert {m.table for m in needs[key].measurements} == {"evals", "predictions"}
    assert kept_at_end(dicts, "needed") == set()
    assert kept_at_end(dicts, "final") == lasts
    assert kept_at_end(dicts, "all") == firsts | lasts
    with pytest.raises(ValueError, match="keep_checkpoints: 'some'"):
        kept_at_end(dicts, "some")


def test_removable_waits_for_every_consumer_and_measurement():
    stage = StageNeeds(consumers={"c1", "c2"}, measurements={Measurement("evals", "k")}, last=False)
    measured = lambda m: True  # noqa: E731
    assert not removable(stage, "needed", {"c1"}.__contains__, measured)  # c2 not stored yet
    assert removable(stage, "needed", {"c1", "c2"}.__contains__, measured)
    assert not removable(stage, "needed", {"c1", "c2"}.__contains__, lambda m: False)  # evals missing
    assert not removable(stage, "all", {"c1", "c2"}.__contains__, measured)
    last = StageNeeds(measurements={Measurement("evals", "k")}, last=True)
    assert removable(last, "needed", bool, measured) and not removable(last, "final", bool, measured)


def test_curvature_and_best_seed_validation_are_needs(tiny_model_path, data_dir, tmp_path):
    """A curvature stage needs its curvature stored; a best_seed stage starts from every
    candidate, each of which needs its validation accuracy stored."""
    spec = spec_from_dict({
        "name": "best", "model": {"name": "tiny", "max_length": 256},
        "tasks": {"toxigen_qa": {"train_size": 16, "eval_size": 8}, "arc_easy": {"train_size": 16, "eval_size": 8}},
        "stage_defaults": {"batch_size": 4, "steps": 2}, "seeds": [0, 1], "seed_scope": "order_and_data",
        "chains": {"c": [TQA, {"task": "arc_easy", "start_from": "best_seed"}]},
        "curvature": {"enabled": True, "stages": [2]}, "data_dir": str(data_dir)})
    dicts = [p.to_dict() for p in build_plans(spec, study_dir=tmp_path, data_dir=str(data_dir),
                                              base_model_path=str(tiny_model_path), chat=False)]
    needs = stage_needs(dicts)
    seconds = {d["stages"][1]["stage_key"] for d in dicts}
    candidates = {c[-1]["stage_key"] for d in dicts for c in d["stages"][1]["start_from"]["candidates"]}
    assert len(candidates) == 2 and len(seconds) == 2
    for key in candidates:
        assert needs[key].consumers == seconds
        assert "validation" in {m.table for m in needs[key].measurements}
    for key in seconds:
        assert "curvature" in {m.table for m in needs[key].measurements}


# ---------------------------------------------------------------- a study under each policy

def test_each_policy_ends_with_the_checkpoints_it_keeps_and_the_same_rows(studies):
    expected = {"needed": 0, "final": 4, "all": 6}
    rows = {}
    for policy, (study, plans) in studies.items():
        kept = _with_checkpoint(study)
        assert kept == kept_at_end([p.to_dict() for p in plans], policy)
        assert len(kept) == expected[policy], policy
        records = _records(study)
        assert len(records) == 6 and all(r.checkpoint_bytes and r.checkpoint_bytes > 0 for r in records.values())
        assert {k for k, r in records.items() if r.checkpoint_removed} == set(records) - kept
        rows[policy] = comparable_tables(study, TABLES)
    for policy in ("needed", "final"):
        for table in TABLES:
            assert rows[policy][table].equals(rows["all"][table]), (policy, table)


def test_a_removed_checkpoint_is_no_integrity_problem_and_its_stage_is_reused(studies):
    study, plans = studies["needed"]
    later = StageStore(study, RunInfo("r2", reuse_earlier_runs=True, verify_checkpoints=True))
    for key, record in _records(study).items():
        entry = later.entry(key)
        assert record.checkpoint_removed and entry.checkpoint_problem(record) is None
        assert entry.usable_record() == record and entry.discarded is None
    # Rerunning a finished trial (a resume) reuses its stages: nothing is trained or measured again.
    before = comparable_tables(study, TABLES)
    _run(plans[:1], "needed", "r2", resume=True)
    assert all(r.run_id == "r1" and r.retrained is None for r in _records(study).values())
    for table in TABLES:
        assert comparable_tables(study, TABLES)[table].equals(before[table])


def test_status_shows_checkpoint_bytes_kept_and_freed(studies):
    sizes = {}
    for policy, (study, _) in studies.items():
        status = study_status(study)
        records = _records(study)
        freed = sum(r.checkpoint_bytes for r in records.values() if r.checkpoint_removed)
        kept = sum(r.checkpoint_bytes for r in records.values() if not r.checkpoint_removed)
        on_disk = sum(f.stat().st_size for key in _with_checkpoint(study)
                      for f in StudyLayout(study).stage(key).checkpoint.rglob("*") if f.is_file())
        assert kept == on_disk
        sizes[policy] = (status.checkpoints_kept, status.checkpoint_bytes_kept, status.checkpoints_freed,
                         status.checkpoint_bytes_freed)
        assert sizes[policy] == (len(records) - sum(r.checkpoint_removed for r in records.values()), kept,
                                 sum(r.checkpoint_removed for r in records.values()), freed)
        assert "checkpoints: " in render_status(status) and " removed by keep_checkpoints (" in render_status(status)
    one = sizes["all"][1] // 6  # the six tiny checkpoints have the same size
    assert sizes == {"needed": (0, 0, 6, 6 * one), "final": (4, 4 * one, 2, 2 * one), "all": (6, 6 * one, 0, 0)}
    assert "checkpoints: 0 kept (0 B), 6 removed by keep_checkpoints" in render_status(study_status(studies["needed"][0]))


def test_best_seed_candidates_and_curvature_under_needed_leave_no_checkpoint_and_the_rows_of_all(
        tiny_model_path, data_dir, tmp_path):
    """Two seeds, stage 2 starting from the best first stage, curvature after stage 2: under
    `needed` the candidates go once both second stages are stored (after their validation), the
    second stages once their curvature is; the rows equal those under `all`."""
    spec = {
        "name": "best", "model": {"name": "tiny", "max_length": 256},
        "tasks": {"toxigen_qa": {"train_size": 16, "eval_size": 8}, "arc_easy": {"train_size": 16, "eval_size": 8}},
        "stage_defaults": {"learning_rate": 1e-3, "batch_size": 4, "steps": 1}, "seeds": [0, 1],
        "seed_scope": "order_and_data",
        "chains": {"c": [TQA, {"task": "arc_easy", "start_from": "best_seed", "selection_size": 8}]},
        "curvature": {"enabled": True, "stages": [2], "n_samples": 4, "algorithms": ["power_iteration"],
                      "max_iterations": 2},
        "data_dir": str(data_dir)}
    tables = {}
    for policy in ("needed", "all"):
        study = tmp_path / policy
        plans = build_plans(spec_from_dict(spec), study_dir=study, data_dir=str(data_dir),
                            base_model_path=str(tiny_model_path), chat=False)
        write_plans(study, plans)
        _run(plans, policy)
        assert len(_records(study)) == 4
        assert _with_checkpoint(study) == kept_at_end([p.to_dict() for p in plans], policy)
        tables[policy] = comparable_tables(study, TABLES + ("curvature", "trials"))
    assert len(_with_checkpoint(tmp_path / "all")) == 4 and not _with_checkpoint(tmp_path / "needed")
    for table, frame in tables["all"].items():
        assert tables["needed"][table].equals(frame), table


# ---------------------------------------------------------------- extending a study

def test_an_extension_retrains_a_removed_prefix_once_with_identical_weights_and_rows(
        studies, tiny_model_path, data_dir, tmp_path, capfd):
    """Two new second-stage learning rates: four new trials, two per first stage, whose
    checkpoint `needed` removed. The two new tqa→arc trials run: the first stage they share is
    trained again by the first (one log line) and reused by the second; the new trials' rows
    equal those of the same extension of the `all` study, which trains nothing again; at the
    end no checkpoint is left (the arc→tqa first stage waits, removed, for its new trials)."""
    study = tmp_path / "budget"
    shutil.copytree(studies["needed"][0], study)
    old = _plans(tiny_model_path, data_dir, study)
    extended = _plans(tiny_model_path, data_dir, study, lrs=FIRST_LRS + (5e-4, 2e-4))
    write_plans(study, extended)
    new = [p for p in extended if p.trial_id not in {o.trial_id for o in old}]
    assert len(new) == 4
    new = [p for p in new if p.chain == "tqa_arc"]
    [first] = firsts = {p.stages[0].stage_key for p in new}
    capfd.readouterr()
    _run(new, "needed", "r2", resume=True)
    err = capfd.readouterr().err
    [line] = [line for line in err.splitlines() if "again (its checkpoint was removed by keep_checkpoints)" in line]
    assert f"trial {new[0].trial_id}: training stage {first} again" in line and "starts from it" in line
    records = _records(study)
    assert records[first].run_id == "r2" and "starts from it" in records[first].retrained
    assert records[first].checkpoint_removed  # both new children stored: removed again
    assert _with_checkpoint(study) == set()
    assert len(records) == 8 and sum(r.run_id == "r2" for r in records.values()) == 1 + 2

    # The same extension of the `all` study trains nothing again and keeps every checkpoint:
    # the retrained first stages have the `all` study's weights, the new trials its rows.
    reference = tmp_path / "reference"
    shutil.copytree(studies["all"][0], reference)
    write_plans(reference, _plans(tiny_model_path, data_dir, reference, lrs=FIRST_LRS + (5e-4, 2e-4)))
    _run([dataclasses.replace(p, study_dir=str(reference)) for p in new], "all", "r2", resume=True)
    assert "again (its checkpoint" not in capfd.readouterr().err
    assert _records(reference)[first].run_id == "r1"
    for table in TABLES:
        assert comparable_tables(study, TABLES)[table].equals(comparable_tables(reference, TABLES)[table]), table


def test_a_retrained_stage_has_the_weights_it_had(studies, tiny_model_path, data_dir, tmp_path):
    """A removed first stage trained again (its evals asked under a new eval set) has the same
    checkpoint, byte for byte, as the `all` study's copy of that stage."""
    study = tmp_path / "budget"
    shutil.copytree(studies["needed"][0], study)
    [plan] = [p for p in _plans(tiny_model_path, data_dir, study, lrs=FIRST_LRS[:1],
                                tasks={"toxigen_qa": {"train_size": 16, "eval_size": 6},
                                       "arc_easy": {"train_size": 16, "eval_size": 8}})
              if p.chain == "tqa_arc"]
    assert {s.stage_key for s in plan.stages} <= set(_records(study))  # same stages, new eval set
    write_plans(study, [plan])
    run_chain(dataclasses.replace(plan, run=RunInfo("r3", reuse_earlier_runs=True, keep_checkpoints="all")))
    reference = StudyLayout(studies["all"][0])
    for stage in plan.stages:
        record = _records(study)[stage.stage_key]
        assert "evaluations" in record.retrained and not record.checkpoint_removed  # kept under `all`
        ours = StudyLayout(study).stage(stage.stage_key).checkpoint / "model.safetensors"
        theirs = reference.stage(stage.stage_key).checkpoint / "model.safetensors"
        assert file_sha256(ours) == file_sha256(theirs)


# ---------------------------------------------------------------- two children at once

def _trial_process(plan: TrialPlan, go: Path) -> subprocess.Popen:
    code = textwrap.dedent(f"""
        import dataclasses, json, sys, time
        from pathlib import Path
        sys.path.insert(0, {os.getcwd()!r})
        from contract.plan import RunInfo, TrialPlan
        from trainables.chain import run_chain
        plan = TrialPlan.from_dict(json.loads({json.dumps(plan.to_dict())!r}))
        while not Path({str(go)!r}).exists():
            time.sleep(0.01)
        run_chain(dataclasses.replace(plan, run=RunInfo("r1", keep_checkpoints="needed")))
    """)
    return subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": os.getcwd()})


def test_two_children_finished_at_once_remove_their_parent_when_both_are_stored(tiny_model_path, data_dir, tmp_path):
    """Two processes run the two trials that share a first stage at the same time: one trains
    it, the other waits for its claim and reuses it, both train their second stage; the first
    stage's checkpoint is removed, after both second stages were stored."""
    study = tmp_path / "budget"
    plans = [p for p in _plans(tiny_model_path, data_dir, study) if p.chain == "tqa_arc"]
    write_plans(study, plans)
    go = tmp_path / "go"
    processes = [_trial_process(plan, go) for plan in plans]
    go.touch()
    assert [p.wait(timeout=300) for p in processes] == [0, 0]
    records = _records(study)
    [first] = {p.stages[0].stage_key for p in plans}
    children = [records[p.stages[1].stage_key] for p in plans]
    assert records[first].checkpoint_removed
    assert records[first].checkpoint_removed_at > max(c.finished_at for c in children)
    assert _with_checkpoint(study) == set()
