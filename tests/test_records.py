"""The study folder's JSON records (contract.records): files written before read back and write
the same bytes, so old study folders stay readable and `--resume` continues them."""

from __future__ import annotations

import json

import pytest

from contract.keys import MeasureKeys
from contract.records import (RunRecord, StageRecord, TrialMarker, read_record, read_trial_summaries,
                              write_record)

# Files as the engine has written them since the stage store exists (indent 1; markers and
# stage records with sorted keys, run records in field order).
MARKER = """{
 "curvature": "73348958c772",
 "evals": "7f2c0963b5bc",
 "failure": null,
 "run_id": "fdf4c6a867dd",
 "stage_keys": [
  "46c5c24024a6afd9",
  "10f96f7bfc13a1bd"
 ],
 "status": "finished",
 "trial_id": "ppo_arc-0-ad4d9c76"
}"""
TRAINED_STAGE = """{
 "finished_at": 1796530184.0258896,
 "n_train_examples": 48,
 "reason": null,
 "run_id": "fdf4c6a867dd",
 "stage_key": "22be5d6224a766ed",
 "status": "finished",
 "train_seconds": 0.9918993669998599,
 "trained_by": "rloo_arc-0-46997a20"
}"""
BASE_STAGE = """{
 "finished_at": 1796530158.7265413,
 "reason": null,
 "run_id": "fdf4c6a867dd",
 "stage_key": "base-47f035ff2641",
 "status": "finished",
 "trained_by": "sft_arc-0-38f5290e"
}"""
RUN = """{
 "run_id": "fdf4c6a867dd",
 "resume": false,
 "started": 1796530142.1650836,
 "finished": 1796530184.829533,
 "trials": 4,
 "trials_skipped": 0,
 "stage_trainings_naive": 8,
 "distinct_stages": 8,
 "stage_trainings_executed": 8,
 "stages_reused_from_earlier_runs": 0,
 "failed": [
  "a-0-12345678: stage 1: non-finite loss"
 ]
}"""


@pytest.mark.parametrize("kind, text", [(TrialMarker, MARKER), (StageRecord, TRAINED_STAGE),
                                        (StageRecord, BASE_STAGE), (RunRecord, RUN)])
def test_a_record_on_disk_reads_back_and_writes_the_same_bytes(tmp_path, kind, text):
    (tmp_path / "old.json").write_text(text)
    record = read_record(kind, tmp_path / "old.json")
    write_record(tmp_path / "new.json", record)
    assert (tmp_path / "new.json").read_text() == text


def test_fields_read_from_the_files():
    marker = TrialMarker.from_dict({"status": "failed", "failure": "stage 2: non-finite loss"})
    assert (marker.status, marker.failure, marker.stage_keys) == ("failed", "stage 2: non-finite loss", ())
    assert marker.measure_keys == MeasureKeys(evals=None, curvature=None)  # --resume runs such a trial again
    assert StageRecord.from_dict({"stage_key": "k", "run_id": "r", "trained_by": "t", "status": "diverged",
                                  "reason": "nan", "finished_at": 1.0}).train_seconds is None
    with pytest.raises(ValueError, match="status 'done'"):
        TrialMarker.from_dict({"status": "done"})


def test_trial_summaries_of_plans_json(tmp_path):
    (tmp_path / "plans.json").write_text('[{"trial_id": "a", "stages": [{"stage": 1, "stage_key": "k1"}]},'
                                         ' {"trial_id": "b"}]')
    summaries = read_trial_summaries(tmp_path / "plans.json")
    assert [(s.trial_id, s.stage_keys) for s in summaries] == [("a", ("k1",)), ("b", ())]


def test_a_stage_record_keeps_the_node_that_trained_it(tmp_path):
    """trained_on is written when known and read back; records without it read as None."""
    record = StageRecord(stage_key="k", run_id="r", trained_by="t", status="finished", reason=None,
                         finished_at=1.0, trained_on="node-a")
    write_record(tmp_path / "record.json", record)
    assert json.loads((tmp_path / "record.json").read_text())["trained_on"] == "node-a"
    assert read_record(StageRecord, tmp_path / "record.json") == record
    assert StageRecord.from_dict(json.loads(TRAINED_STAGE)).trained_on is None
