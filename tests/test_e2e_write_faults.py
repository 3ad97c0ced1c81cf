"""A results folder that cannot be written and a truncated checkpoint, end to end through
`study run` on a real local Ray cluster: the run lists the failed write, `--resume` completes
it; an extended grid that reuses a truncated stage trains it again, with the rows of a fresh
run and the warning in `study status`."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from analysis.status import render_status, study_status
from study.orchestrate import run_study
from study.spec_loading import spec_from_dict

pytestmark = pytest.mark.slow

TABLES = ("trials", "evals", "predictions", "train_log", "weights")


def _spec(data_dir, storage: Path, lrs):
    return spec_from_dict({
        "name": "writes", "model": {"name": "tiny", "max_length": 256},
        "tasks": {"toxigen_qa": {"train_size": 32, "eval_size": 16}, "arc_easy": {"train_size": 32, "eval_size": 16}},
        "stage_defaults": {"learning_rate": 3e-3, "batch_size": 8, "steps": 3},
        "chains": {"tqa_arc": [{"task": "toxigen_qa"}, {"task": "arc_easy"}]},
        "grid": {"stage2.learning_rate": list(lrs)}, "seeds": [0], "data_dir": str(data_dir),
        "storage": str(storage), "execution": {"executor": "function", "cpus_per_trial": 1, "max_failures": 1},
        "keep_checkpoints": "all",
    })


def _comparable(study_dir: Path, table: str) -> pl.DataFrame:
    frame = pl.read_parquet(study_dir / table / "*.parquet")
    frame = frame.drop([c for c in ("seconds", "train_seconds", "trained_by", "reused") if c in frame.columns])
    return frame.sort(frame.columns)


def test_a_blocked_results_folder_then_a_truncated_checkpoint(ray_cluster, data_dir, tmp_path):
    storage = tmp_path / "results"
    study = storage / "writes"
    (study / "evals").parent.mkdir(parents=True)
    (study / "evals").write_text("in the way")  # as a read-only folder is to a non-root process

    failed = run_study(_spec(data_dir, storage, [3e-3]), report=False)
    [line] = failed.failed
    assert "stage 0: write failed: could not write" in line and "evals" in line
    assert "stage 0: write failed" in render_status(study_status(study))

    (study / "evals").unlink()
    resumed = run_study(_spec(data_dir, storage, [3e-3]), resume=True, report=False)
    assert not resumed.failed and resumed.counts["trials_skipped"] == 0

    [key] = pl.read_parquet(study / "trials" / "*.parquet").filter(pl.col("stage") == 1)["stage_key"].to_list()
    stage1 = study / "stages" / key
    weights = stage1 / "checkpoint" / "model.safetensors"
    with open(weights, "r+b") as handle:
        handle.truncate(weights.stat().st_size // 3)

    extended = run_study(_spec(data_dir, storage, [3e-3, 1e-3]), resume=True, report=False)
    assert not extended.failed
    assert extended.counts["trials_skipped"] == 1
    assert extended.counts["stage_trainings_executed"] == 2  # stage 1 again (truncated) and the new stage 2
    text = render_status(study_status(study))
    assert f"{stage1.name}: trained again in run " in text and "model.safetensors has " in text

    reference = run_study(_spec(data_dir, tmp_path / "reference", [3e-3, 1e-3]), report=False)
    for table in TABLES:
        assert _comparable(study, table).equals(_comparable(reference.study_dir, table)), table
