"""`study status` from a hand-built results folder: one trial finished, one failed, one interrupted, one pending."""

from __future__ import annotations

import json

from trainables.results_writer import write_part


def _plan(trial_id: str, keys: list[str]) -> dict:
    return {"trial_id": trial_id, "stages": [{"stage": i + 1, "stage_key": k} for i, k in enumerate(keys)]}


def _trial_rows(trial_id: str, reused: list[bool]) -> list[dict]:
    columns = ("chain", "method", "method_settings", "task", "stage_key", "model", "grid_point", "executor",
               "trained_by", "failure", "start_from", "seed", "stage_seed", "learning_rate", "batch_size", "steps",
               "train_size", "n_train_examples", "data_seed", "replay_from_stage", "replay_fraction",
               "train_seconds", "train_data_seed", "trained_on")
    return [{**{c: None for c in columns}, "trial_id": trial_id, "stage": i + 1, "status": "finished",
             "reused": r} for i, r in enumerate(reused)]


def test_status_counts_trials_stages_and_lists_failures(tmp_path, capsys):
    """Plans: a=[s1,s2], b=[s1,s3], c=[s4,s5], d=[s6,s7] → naive 8, distinct 7. Stage records
    exist for s1, s2, s3, s4 (4 trained). a finished; b finished reusing s1 (1 reused use);
    c failed (diverged at s5); d has no parts (pending)."""
    from analysis.status import render_status, study_status
    from study.cli import main

    plans = [_plan("a", ["s1", "s2"]), _plan("b", ["s1", "s3"]), _plan("c", ["s4", "s5"]), _plan("d", ["s6", "s7"])]
    (tmp_path / "plans.json").write_text(json.dumps(plans))
    for key in ("s1", "s2", "s3", "s4"):
        (tmp_path / "stages" / key).mkdir(parents=True)
        (tmp_path / "stages" / key / "record.json").write_text(json.dumps({"stage_key": key}))
    (tmp_path / "_ledger").mkdir()
    (tmp_path / "_ledger" / "a.json").write_text(json.dumps({"status": "finished"}))
    (tmp_path / "_ledger" / "b.json").write_text(json.dumps({"status": "finished"}))
    (tmp_path / "_ledger" / "c.json").write_text(json.dumps({"status": "failed", "failure": "stage 2: non-finite loss"}))
    write_part(tmp_path, "trials", "a", _trial_rows("a", [False, False]))
    write_part(tmp_path, "trials", "b", _trial_rows("b", [True, False]))
    status = study_status(tmp_path)
    assert (status.finished, status.pending, status.running) == (["a", "b"], ["d"], [])
    assert status.failed == {"c": "stage 2: non-finite loss"}
    assert (status.stage_trainings_naive, status.distinct_stages, status.stages_trained) == (8, 7, 4)
    assert status.stage_uses_reused == 1
    text = render_status(status)
    assert "4 total, 2 done, 0 running or interrupted, 1 pending, 1 failed" in text
    assert "c: stage 2: non-finite loss" in text

    (tmp_path / "_ledger" / "b.json").unlink()  # b's rows exist but it never ended: interrupted
    assert study_status(tmp_path).running == ["b"]
    assert main(["status", str(tmp_path)]) == 0
    assert main(["status", str(tmp_path / "missing")]) == 2
    assert "no plans.json" in capsys.readouterr().err
