"""Failed writes: a Parquet part, a JSON record or a checkpoint whose write fails (a writer that
raises mid-file, a results folder that cannot be written) leaves no partial file, fails the trial
with the reason in trials.failure and a `resumable` ledger marker, and a later run with reuse
(`study run --resume`) completes it with the rows of an uninterrupted run. Atomic files get the
mode an ordinary `open` gives."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import pickle
import stat
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from contract.atomic import WriteError, write_json_atomic, write_text_atomic
from contract.layout import StudyLayout
from contract.plan import RunInfo, TrialPlan
from contract.records import TrialMarker, read_record
from study.orchestrate import finished_trials
from trainables.chain import run_chain
from tests.plans import comparable_tables, small_chain_plan

TABLES = ("trials", "evals", "predictions", "train_log", "weights")


# ---------------------------------------------------------------- contract.atomic alone

def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_atomic_files_get_the_mode_open_gives_like_their_folders(tmp_path):
    path = write_json_atomic(tmp_path / "sub" / "r.json", {"a": 1})
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~_umask()
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o777 & ~_umask()
    assert json.loads(path.read_text()) == {"a": 1}


def test_a_writer_raising_mid_file_leaves_the_previous_file_and_no_temporary(tmp_path):
    target = write_text_atomic(tmp_path / "r.json", "old")

    def half_then_disk_full(tmp: Path) -> None:
        tmp.write_text("ne")
        raise OSError(errno.ENOSPC, "No space left on device")

    from contract.atomic import write_file_atomic

    with pytest.raises(WriteError) as caught:
        write_file_atomic(target, half_then_disk_full)
    assert str(caught.value) == f"could not write {target}: OSError: [Errno 28] No space left on device"
    assert caught.value.errno == errno.ENOSPC
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"] and target.read_text() == "old"
    again = pickle.loads(pickle.dumps(caught.value))  # crosses Ray's process boundaries whole
    assert (type(again), str(again), again.path) == (WriteError, str(caught.value), str(target))


def test_a_folder_that_is_a_file_or_read_only_is_a_write_error(tmp_path):
    (tmp_path / "evals").write_text("not a folder")
    with pytest.raises(WriteError, match=r"could not write .*evals/p\.json: FileExistsError"):
        write_json_atomic(tmp_path / "evals" / "p.json", {})
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as root: a read-only folder can still be written (the folder-is-a-file case "
                        "above covers the same failure)")
        with pytest.raises(WriteError, match="PermissionError"):
            write_json_atomic(locked / "p.json", {})
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


# ---------------------------------------------------------------- a trial whose writes fail

def _plan(tiny_model_path, data_dir, study: Path) -> TrialPlan:
    plan = small_chain_plan(tiny_model_path, data_dir, study, "writes")
    return plan


def _run(plan: TrialPlan, run_id: str) -> dict:
    return run_chain(dataclasses.replace(plan, run=RunInfo(run_id, reuse_earlier_runs=True)))


def _tables(study: Path) -> dict[str, pl.DataFrame]:
    return comparable_tables(study, TABLES)


def _partial_files(study: Path) -> list[str]:
    """Temporary files and checkpoint staging folders anywhere in the study folder."""
    return sorted(str(p.relative_to(study)) for p in study.rglob(".*")
                  if p.name.endswith(".tmp") or p.name.startswith(".checkpoint."))


@pytest.fixture(scope="module")
def reference(tiny_model_path, data_dir, tmp_path_factory):
    """The tables of an uninterrupted run of the trial."""
    study = tmp_path_factory.mktemp("reference") / "study"
    _run(_plan(tiny_model_path, data_dir, study), "ref")
    return _tables(study)


def _failed_then_resumed(plan: TrialPlan, study: Path, reference, *, reason: str, stage: int, undo=lambda: None):
    """The trial has just failed on a write at `stage`: check what it left, undo the fault,
    run it again with reuse, and check it completes with the reference rows."""
    assert _partial_files(study) == []
    marker = read_record(TrialMarker, StudyLayout(study).trial_marker(plan.trial_id))
    assert marker.status == "failed" and marker.resumable and reason in marker.failure
    assert marker.failure.startswith(f"stage {stage}: write failed: could not write ")
    assert finished_trials(study, [plan]) == set()  # --resume runs it again
    trials_part = StudyLayout(study).part("trials", plan.trial_id)
    if trials_part.is_file():
        rows = pl.read_parquet(trials_part).sort("stage")
        failing = max(stage, 1) - 1
        assert rows["status"][failing] == "failed" and reason in rows["failure"][failing]
        assert rows["status"][failing + 1:].to_list() == ["skipped"] * (rows.height - failing - 1)
    undo()
    assert _run(plan, "resume")["status"] == "finished"
    marker = read_record(TrialMarker, StudyLayout(study).trial_marker(plan.trial_id))
    assert marker.status == "finished" and not marker.resumable
    assert "resumable" not in json.loads(StudyLayout(study).trial_marker(plan.trial_id).read_text())
    after = _tables(study)
    for table in TABLES:
        assert after[table].equals(reference[table]), f"{table} differs from an uninterrupted run"
    assert _partial_files(study) == []


def test_a_parquet_part_whose_writer_raises_mid_file(tiny_model_path, data_dir, tmp_path, reference, monkeypatch):
    study = tmp_path / "study"
    plan = _plan(tiny_model_path, data_dir, study)
    real = pq.write_table

    def disk_full_on_stage1_evals(table, where, *args, **kwargs):
        if f"{plan.trial_id}.stage1.parquet" in Path(where).name and Path(where).parent.name == "evals":
            Path(where).write_bytes(b"PAR1 half a file")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(table, where, *args, **kwargs)

    monkeypatch.setattr(pq, "write_table", disk_full_on_stage1_evals)
    metrics = _run(plan, "broken")
    assert metrics["status"] == "failed" and "No space left" in metrics["failure"]
    assert not StudyLayout(study).part("evals", f"{plan.trial_id}.stage1").exists()
    _failed_then_resumed(plan, study, reference, reason="No space left on device", stage=1,
                         undo=monkeypatch.undo)


def test_a_json_record_whose_writer_raises_mid_file(tiny_model_path, data_dir, tmp_path, reference, monkeypatch):
    """Stage 2's record.json cannot be written (its checkpoint already is): no record, so the
    resumed trial trains stage 2 again."""
    study = tmp_path / "study"
    plan = _plan(tiny_model_path, data_dir, study)
    real = Path.write_text
    record = StudyLayout(study).stage(plan.stages[1].stage_key).record

    def half_a_record(self, text, *args, **kwargs):
        if self.parent == record.parent and self.name.startswith(".record.json."):
            real(self, text[: len(text) // 2])
            raise OSError(errno.EIO, "Input/output error")
        return real(self, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", half_a_record)
    _run(plan, "broken")
    assert not record.exists()
    _failed_then_resumed(plan, study, reference, reason="Input/output error", stage=2, undo=monkeypatch.undo)


def test_a_checkpoint_whose_writer_raises_mid_file(tiny_model_path, data_dir, tmp_path, reference, monkeypatch):
    """Stage 1's weights are half written when the disk fills: neither checkpoint/ nor the
    hidden staging folder stays, no record is written."""
    import trainables.chain as chain

    study = tmp_path / "study"
    plan = _plan(tiny_model_path, data_dir, study)
    real = chain.save_checkpoint

    def half_saved(model, tokenizer, out_dir):
        real(model, tokenizer, out_dir)
        weights = Path(out_dir) / "model.safetensors"
        with open(weights, "r+b") as handle:
            handle.truncate(weights.stat().st_size // 2)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(chain, "save_checkpoint", half_saved)
    _run(plan, "broken")
    entry = StudyLayout(study).stage(plan.stages[0].stage_key)
    assert not entry.checkpoint.exists() and not entry.record.exists()
    _failed_then_resumed(plan, study, reference, reason="No space left on device", stage=1,
                         undo=monkeypatch.undo)


def test_a_results_folder_that_cannot_be_written(tiny_model_path, data_dir, tmp_path, reference):
    """The evals folder is a file (what a read-only folder does to a process that is not root):
    the base model's evaluation cannot be published, the trial fails at stage 0; once the folder
    can be written, the resumed trial completes."""
    study = tmp_path / "study"
    plan = _plan(tiny_model_path, data_dir, study)
    blocked = StudyLayout(study).table("evals")
    blocked.parent.mkdir(parents=True)
    blocked.write_text("in the way")
    _run(plan, "broken")
    rows = pl.read_parquet(StudyLayout(study).part("trials", plan.trial_id)).sort("stage")
    assert rows["failure"][0].startswith("stage 0 (base model evaluation): write failed: could not write ")
    _failed_then_resumed(plan, study, reference, reason="FileExistsError", stage=0, undo=blocked.unlink)


# ---------------------------------------------------------------- the report, swapped in whole

def test_a_crash_during_study_report_leaves_the_previous_report(tmp_path, monkeypatch, capsys):
    """A first report is written; a second `study report` crashes while rendering: the first
    report's files are all there, unchanged, and nothing half-built is left beside them. A
    third replaces it whole. An output folder that is not a report is refused (exit 2)."""
    import analysis.report as report
    from study.cli import main
    from tests.test_analysis_report import write_study

    study = write_study(tmp_path / "study")
    first = report.write_report(study)
    folder = first.parent
    before = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert Path("report.html") in before and any(p.suffix == ".png" for p in before)

    def crash(*args, **kwargs):
        raise RuntimeError("killed while rendering")

    monkeypatch.setattr(report, "render_html", crash)
    with pytest.raises(RuntimeError, match="killed while rendering"):
        main(["report", str(study)])
    assert {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(".report")) == []
    monkeypatch.undo()

    (folder / "stale.txt").write_text("from an older report")
    assert main(["report", str(study)]) == 0
    assert not (folder / "stale.txt").exists() and (folder / "report.html").is_file()
    assert stat.S_IMODE((folder / "report.md").stat().st_mode) == 0o666 & ~_umask()

    other = tmp_path / "notes"
    other.mkdir()
    (other / "mine.txt").write_text("keep")
    capsys.readouterr()
    assert main(["report", str(study), "--out", str(other)]) == 2
    assert "is not a report folder" in capsys.readouterr().err
    assert [p.name for p in other.iterdir()] == ["mine.txt"]
