"""Checkpoint integrity: stage records list the checkpoint's files (size, sha256); a stored
checkpoint that is truncated, missing a file, gone, or (with --verify-checkpoints) altered is
never loaded: its stage is trained again under the same key, with the same rows, and
`study status` lists the warning. Records written before sizes were recorded keep working."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import polars as pl
import pytest

from analysis.status import render_status, study_status
from contract.file_digest import FileDigest, file_sha256, folder_digests, folder_problems
from contract.layout import StudyLayout
from contract.plan import RunInfo, TrialPlan
from contract.records import StageRecord, read_record
from study.orchestrate import write_plans
from trainables.chain import run_chain
from tests.plans import comparable_tables, small_chain_plan

TABLES = ("trials", "evals", "predictions", "train_log", "weights")


# ---------------------------------------------------------------- digests (no model)

def test_folder_digests_are_sizes_and_sha256sum_of_every_file(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.bin").write_bytes(b"x" * (9 << 20))  # more than one read block
    (tmp_path / "sub" / "b.json").write_text("{}")
    digests = folder_digests(tmp_path)
    assert list(digests) == ["a.bin", "sub/b.json"]
    assert digests["a.bin"] == FileDigest(size=9 << 20, sha256=hashlib.sha256(b"x" * (9 << 20)).hexdigest())
    assert folder_problems(tmp_path, digests, hashes=True) == []

    with open(tmp_path / "a.bin", "r+b") as handle:  # same size, one byte changed
        handle.seek(5 << 20)
        handle.write(b"y")
    assert folder_problems(tmp_path, digests, hashes=False) == []  # sizes alone cannot see it
    [changed] = folder_problems(tmp_path, digests, hashes=True)
    assert changed.startswith("a.bin: sha256 ")
    (tmp_path / "sub" / "b.json").unlink()
    (tmp_path / "a.bin").write_bytes(b"x" * 10)
    assert folder_problems(tmp_path, digests, hashes=True) == [
        f"a.bin has 10 bytes, {9 << 20} were written", "sub/b.json is missing"]
    assert folder_problems(tmp_path / "gone", digests, hashes=False) == [f"{tmp_path / 'gone'} is missing"]


def test_stage_records_without_digests_read_and_write_as_before():
    old = {"finished_at": 1.0, "reason": None, "run_id": "r", "stage_key": "k", "status": "finished",
           "trained_by": "t"}
    record = StageRecord.from_dict(old)
    assert record.checkpoint_files is None and record.replaced is None and record.to_dict() == old
    new = StageRecord.from_dict({**old, "checkpoint_files": {"model.safetensors": {"size": 3, "sha256": "ab"}},
                                 "replaced": "why"})
    assert new.checkpoint_files == {"model.safetensors": FileDigest(3, "ab")}
    assert StageRecord.from_dict(new.to_dict()) == new


# ---------------------------------------------------------------- a stored chain, damaged

def _plan(tiny_model_path, data_dir, study: Path) -> TrialPlan:
    plan = small_chain_plan(tiny_model_path, data_dir, study, "integrity")
    write_plans(study, [plan])  # for `study status`
    return plan


def _run(plan: TrialPlan, run_id: str, **run) -> None:
    run_chain(dataclasses.replace(plan, run=RunInfo(run_id, reuse_earlier_runs=True, **run)))


def _tables(study: Path) -> dict[str, pl.DataFrame]:
    return comparable_tables(study, TABLES)


def _record(study: Path, key: str) -> StageRecord:
    return read_record(StageRecord, StudyLayout(study).stage(key).record)


@pytest.fixture(scope="module")
def stored(tiny_model_path, data_dir, tmp_path_factory):
    """A two-stage chain run once (run1); its tables and records as written."""
    study = tmp_path_factory.mktemp("integrity") / "study"
    plan = _plan(tiny_model_path, data_dir, study)
    _run(plan, "run1")
    return study, plan, _tables(study)


def test_records_list_every_checkpoint_file_with_its_size_and_hash(stored):
    study, plan, _ = stored
    for stage in plan.stages:
        record = _record(study, stage.stage_key)
        checkpoint = StudyLayout(study).stage(stage.stage_key).checkpoint
        weights = checkpoint / "model.safetensors"
        assert record.checkpoint_files["model.safetensors"] == FileDigest(weights.stat().st_size, file_sha256(weights))
        assert set(record.checkpoint_files) == {p.relative_to(checkpoint).as_posix()
                                                for p in checkpoint.rglob("*") if p.is_file()}
        assert "config.json" in record.checkpoint_files and record.replaced is None
    assert "checkpoint" not in json.dumps(_record(study, next(
        p.name for p in (study / "stages").iterdir() if p.name.startswith("base-"))).to_dict())


def test_a_truncated_or_missing_checkpoint_is_trained_again_with_the_same_rows(stored, capsys):
    """Truncate stage 1's model.safetensors, rerun with reuse (what --resume or an extended
    grid does): stage 1 is trained again (never loaded: a truncated safetensors would not load),
    stage 2 is reused, every row equals the first run's, and `study status` lists why. Then
    delete stage 2's model.safetensors: likewise."""
    study, plan, before = stored
    first, second = (StudyLayout(study).stage(s.stage_key) for s in plan.stages)
    weights = first.checkpoint / "model.safetensors"
    size = weights.stat().st_size
    with open(weights, "r+b") as handle:
        handle.truncate(size // 2)

    _run(plan, "run2")
    assert "training the stage again" in capsys.readouterr().err
    record = _record(study, plan.stages[0].stage_key)
    assert record.run_id == "run2"
    assert record.replaced == (f"the checkpoint stored by run run1 was not used: "
                               f"model.safetensors has {size // 2} bytes, {size} were written")
    assert weights.stat().st_size == size and record.checkpoint_files["model.safetensors"].size == size
    assert _record(study, plan.stages[1].stage_key).run_id == "run1"  # stage 2 was intact: reused
    after = _tables(study)
    for table in TABLES:
        assert after[table].equals(before[table]), f"{table} differs after retraining stage 1"
    text = render_status(study_status(study))
    assert "checkpoint warnings" in text and f"{first.key}: trained again in run run2: " in text

    (second.checkpoint / "model.safetensors").unlink()
    _run(plan, "run3")
    record = _record(study, plan.stages[1].stage_key)
    assert record.run_id == "run3" and record.replaced.endswith("model.safetensors is missing")
    after = _tables(study)
    for table in TABLES:
        assert after[table].equals(before[table]), f"{table} differs after retraining stage 2"
    assert f"{second.key}: trained again in run run3" in render_status(study_status(study))


def test_an_altered_checkpoint_is_caught_by_its_hash_only_when_asked(stored):
    """One byte changed in stage 2's weights keeps every size: a plain reuse does not see it;
    `--verify-checkpoints` (RunInfo.verify_checkpoints) hashes it and trains the stage again."""
    study, plan, before = stored
    key = plan.stages[1].stage_key
    weights = StudyLayout(study).stage(key).checkpoint / "model.safetensors"
    trained_in = _record(study, key).run_id
    with open(weights, "r+b") as handle:
        handle.seek(weights.stat().st_size - 5)
        byte = handle.read(1)
        handle.seek(-1, 1)
        handle.write(bytes([byte[0] ^ 0xFF]))
    _run(plan, "run4")
    assert _record(study, key).run_id == trained_in  # sizes match: reused as stored

    _run(plan, "run5", verify_checkpoints=True)
    record = _record(study, key)
    assert record.run_id == "run5" and "model.safetensors: sha256 " in record.replaced
    assert not StudyLayout(study).stage(key).verified.exists()  # reset with the stage
    first = StudyLayout(study).stage(plan.stages[0].stage_key)
    assert json.loads(first.verified.read_text())["run_id"] == "run5"  # stage 1 hashed, intact
    after = _tables(study)
    for table in TABLES:
        assert after[table].equals(before[table]), f"{table} differs after retraining stage 2"


def test_a_record_written_before_sizes_were_recorded_is_reused_and_status_says_it_is_unverifiable(stored):
    study, plan, _ = stored
    path = StudyLayout(study).stage(plan.stages[0].stage_key).record
    old = {k: v for k, v in json.loads(path.read_text()).items() if k not in ("checkpoint_files", "replaced")}
    path.write_text(json.dumps(old, indent=1, sort_keys=True))
    _run(plan, "run6", verify_checkpoints=True)
    assert json.loads(path.read_text()) == old  # reused: the folder exists
    assert ("1 stored stages have records written before checkpoint sizes were recorded: only their "
            "checkpoint folder's existence is checked") in render_status(study_status(study))
