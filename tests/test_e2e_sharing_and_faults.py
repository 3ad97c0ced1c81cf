"""Stage sharing, resume, extend and faults, end to end on a real local Ray cluster."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
import yaml

from study.orchestrate import run_study
from study.spec_loading import spec_from_dict

pytestmark = pytest.mark.slow

TABLES = ("trials", "evals", "predictions", "train_log", "weights")


def _spec_dict(tmp_path, data_dir, *, name, chains, grid=None, seeds=(0,), steps=3, storage=None, **extra):
    return {
        "name": name,
        "model": {"name": "tiny", "max_length": 256},
        "tasks": {"toxigen_qa": {"train_size": 32, "eval_size": 16}, "arc_easy": {"train_size": 32, "eval_size": 16}},
        "stage_defaults": {"learning_rate": 3e-3, "batch_size": 8, "steps": steps},
        "chains": chains,
        "grid": grid or {},
        "seeds": list(seeds),
        "data_dir": str(data_dir),
        "storage": str(storage or tmp_path / "results"),
        "execution": {"executor": "function", "cpus_per_trial": 1, "max_failures": 1},
        **extra,
    }


def _rows(study_dir: Path, table: str) -> pl.DataFrame:
    return pl.read_parquet(study_dir / table / "*.parquet")


def _comparable(study_dir: Path, table: str) -> pl.DataFrame:
    """A table without the columns that legitimately differ between runs (timings, who trained)."""
    frame = _rows(study_dir, table)
    drop = [c for c in ("seconds", "train_seconds", "trained_by", "reused") if c in frame.columns]
    return frame.drop(drop).sort(frame.drop(drop).columns)


def test_four_chains_sharing_two_first_stages_train_six_stages_then_extend_trains_only_new(
        ray_cluster, data_dir, tmp_path):
    """Chains tqa→arc and arc→tqa × stage2.learning_rate {3e-3, 1e-3}: 4 trials × 2 stages = 8
    naive trainings, but only 2 distinct first stages, so 2 + 4 = 6 are trained. Extending the
    grid with 5e-4 (with --resume) trains the 2 new second stages only and skips the 4 finished
    trials; `study status` says so."""
    chains = {"tqa_arc": [{"task": "toxigen_qa"}, {"task": "arc_easy"}],
              "arc_tqa": [{"task": "arc_easy"}, {"task": "toxigen_qa"}]}
    spec = spec_from_dict(_spec_dict(tmp_path, data_dir, name="share", chains=chains,
                                     grid={"stage2.learning_rate": [3e-3, 1e-3]}, keep_checkpoints="all"))
    first = run_study(spec, report=False)
    assert not first.failed
    assert first.counts["stage_trainings_naive"] == 8
    assert first.counts["stage_trainings_executed"] == 6
    trials = _rows(first.study_dir, "trials")
    assert trials.height == 8 and trials.filter(pl.col("reused")).height == 2  # two trials reused a stage 1
    assert trials.select("trial_id", "stage").is_unique().all()

    extended = spec_from_dict(_spec_dict(tmp_path, data_dir, name="share", chains=chains,
                                         grid={"stage2.learning_rate": [3e-3, 1e-3, 5e-4]}, keep_checkpoints="all"))
    second = run_study(extended, resume=True, report=False)
    assert not second.failed
    assert second.counts["trials_skipped"] == 4
    assert second.counts["stage_trainings_executed"] == 2
    assert second.counts["stages_reused_from_earlier_runs"] == 6
    trials = _rows(second.study_dir, "trials")
    assert trials.height == 12 and trials.select("trial_id", "stage").is_unique().all()

    from analysis.status import render_status, study_status

    status = study_status(second.study_dir)
    assert len(status.finished) == 6 and not status.failed and status.stages_trained == 8
    assert "2 stage trainings executed, 6 reused from earlier runs, 4 trials skipped" in render_status(status)


def test_a_diverging_trial_fails_with_its_reason_and_the_others_finish(ray_cluster, data_dir, tmp_path, capsys):
    """A learning-rate grid with one NaN-inducing value: that trial is listed as failed with the
    reason (CLI exit 1), the other finishes, and the results say which stage failed and why."""
    from study.cli import main

    study_file = tmp_path / "nan.yaml"
    study_file.write_text(yaml.safe_dump(_spec_dict(
        tmp_path, data_dir, name="nan", chains={"tqa_arc": [{"task": "toxigen_qa"}, {"task": "arc_easy"}]},
        grid={"stage1.learning_rate": [3e-3, 1e6]})))
    assert main(["run", str(study_file), "--no-report"]) == 1
    err = capsys.readouterr().err
    assert "1 of 2 trials failed" in err and "non-finite" in err
    trials = _rows(tmp_path / "results" / "nan", "trials").sort("learning_rate", "stage")
    by_lr = {lr: rows for (lr,), rows in trials.group_by("grid_point", maintain_order=True)
             for lr in [json.loads(rows["grid_point"][0])["stage1.learning_rate"]]}
    assert by_lr[3e-3]["status"].to_list() == ["finished", "finished"]
    assert by_lr[1e6].sort("stage")["status"].to_list() == ["failed", "skipped"]


def _gcs_address(ray) -> str:
    return ray.get_runtime_context().gcs_address


def _start_driver(study_file: Path, ray, *args: str) -> subprocess.Popen:
    """`study run` as its own driver process on the test's Ray cluster (as `ray job submit` would)."""
    env = {**os.environ, "RAY_ADDRESS": _gcs_address(ray)}
    return subprocess.Popen([sys.executable, "-m", "study", "run", str(study_file), "--no-report", *args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def test_resume_after_the_driver_dies_matches_an_uninterrupted_run(ray_cluster, data_dir, tmp_path):
    """Kill the driver (SIGKILL) once the first trial has finished, resume with --resume, and
    compare every table with an uninterrupted run of the same study: same rows, none duplicated,
    and the finished trial is not run again."""
    chains = {"tqa_arc": [{"task": "toxigen_qa"}, {"task": "arc_easy"}]}
    spec = _spec_dict(tmp_path, data_dir, name="resume", chains=chains, seeds=(0, 1),
                      execution={"executor": "function", "cpus_per_trial": 1, "max_concurrent_trials": 1,
                                 "max_failures": 1})
    study_file = tmp_path / "resume.yaml"
    study_file.write_text(yaml.safe_dump(spec))
    study_dir = tmp_path / "results" / "resume"

    driver = _start_driver(study_file, ray_cluster)
    try:
        _wait_for(lambda: any((study_dir / "_ledger").glob("*.json")), 240, "the first finished trial")
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    finished_before = {p.stem for p in (study_dir / "_ledger").glob("*.json")}
    assert len(finished_before) == 1

    resumed = _start_driver(study_file, ray_cluster, "--resume")
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out
    # A trial still running when the driver died may finish before Ray reaps it: at least
    # those finished at the kill are skipped.
    import re

    skipped = re.search(r"resume: (\d+) of 2 trials already finished", out)
    assert skipped and int(skipped.group(1)) >= len(finished_before), out

    reference = run_study(spec_from_dict({**spec, "storage": str(tmp_path / "reference")}), report=False)
    for table in TABLES:
        got, want = _comparable(study_dir, table), _comparable(reference.study_dir, table)
        assert got.equals(want), f"{table} differs after resume"
    assert _rows(study_dir, "trials").select("trial_id", "stage").is_unique().all()


def test_a_worker_killed_mid_stage_is_retried_and_the_trial_completes(ray_cluster, data_dir, tmp_path):
    """SIGKILL the trial's worker process while it holds stage 2 (stage 1 is stored): Tune
    retries the trial (FailureConfig max_failures=1), which reuses stage 1 from the store,
    retrains stage 2, and finishes with exactly one row per stage and one train_log row per step."""
    chains = {"tqa_arc": [{"task": "toxigen_qa"}, {"task": "arc_easy", "steps": 30}]}
    study_file = tmp_path / "kill.yaml"
    study_file.write_text(yaml.safe_dump(_spec_dict(tmp_path, data_dir, name="kill", chains=chains)))
    study_dir = tmp_path / "results" / "kill"
    driver = _start_driver(study_file, ray_cluster)
    killed = {}

    def stage2_holder() -> bool:
        entries = [p for p in (study_dir / "stages").glob("*") if not p.name.startswith("base-")]
        stored = [e for e in entries if (e / "checkpoint").is_dir()]
        for entry in entries:
            if stored and (entry / "holder.json").is_file() and not (entry / "record.json").exists():
                try:
                    killed.update(json.loads((entry / "holder.json").read_text()), key=entry.name)
                except (json.JSONDecodeError, FileNotFoundError):  # released meanwhile
                    return False
                return True
        return False

    try:
        _wait_for(stage2_holder, 240, "stage 2 in training")
        os.kill(killed["pid"], signal.SIGKILL)
        out, _ = driver.communicate(timeout=600)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    assert driver.returncode == 0, out
    assert killed["pid"] not in (os.getpid(), driver.pid)
    assert "stage trainings: 2 executed" in out  # stage 1 once (before the kill), stage 2 once (the retry)
    record = json.loads((study_dir / "stages" / killed["key"] / "record.json").read_text())
    assert record["status"] == "finished"
    trials = _rows(study_dir, "trials").sort("stage")
    assert trials["status"].to_list() == ["finished", "finished"]
    assert _rows(study_dir, "train_log").filter(pl.col("stage") == 2)["step"].sort().to_list() == list(range(1, 31))
    for table in TABLES:
        frame = _rows(study_dir, table)
        key = [c for c in ("trial_id", "stage", "eval_task", "group", "example_id", "step") if c in frame.columns]
        assert frame.select(key).is_unique().all(), f"duplicate rows in {table}"


def test_an_optuna_study_runs_sampled_trials_and_lists_them_in_plans(ray_cluster, data_dir, tmp_path):
    """search: 3 Optuna samples of stage2.learning_rate for one chain and seed: 3 trials run,
    each with a sampled lr inside the range, all sharing one first stage (trained once), and
    plans.json lists them so the report and `study status` see them."""
    spec = spec_from_dict(_spec_dict(
        tmp_path, data_dir, name="optuna", chains={"tqa_arc": [{"task": "toxigen_qa"}, {"task": "arc_easy"}]},
        search={"algorithm": "optuna", "num_samples": 3, "seed": 0,
                "space": {"stage2.learning_rate": {"loguniform": [1e-4, 1e-2]}},
                "objectives": [{"metric": "arc_easy/accuracy", "mode": "max"},
                               {"metric": "forgetting/toxigen_qa", "mode": "min"}]}))
    outcome = run_study(spec, report=False)
    assert not outcome.failed
    trials = _rows(outcome.study_dir, "trials")
    lrs = trials.filter(pl.col("stage") == 2)["learning_rate"].to_list()
    assert len(lrs) == 3 and all(1e-4 <= lr <= 1e-2 for lr in lrs)
    assert trials.filter(pl.col("stage") == 1)["stage_key"].n_unique() == 1
    assert outcome.counts["stage_trainings_executed"] == 1 + len(set(lrs))
    plans = json.loads((outcome.study_dir / "plans.json").read_text())
    assert sorted(p["trial_id"] for p in plans) == sorted(trials["trial_id"].unique().to_list())
