"""Wall time of the same study run with each trial executor, measured in one run.

    python bench/executor_overhead.py [--steps N]

Runs a 4-trial study (2 chains × 2 first-stage learning rates, tiny model, mirror data) on one
local Ray cluster twice: `function` (the chain loop inside the Tune trial) and `train` (a Ray
Train TorchTrainer per trial). Prints each wall time, the training seconds inside the stages
(the same work in both), and the ratio train/function: the cost of Ray Train's controller and
worker actors per trial. Numbers depend on the machine; compare ratios from one run only.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def study(storage: str, executor: str, steps: int, data_dir: str):
    from study.spec_loading import spec_from_dict

    return spec_from_dict({
        "name": f"bench_{executor}",
        "model": {"name": "tiny", "max_length": 256},
        "tasks": {"toxigen_qa": {"train_size": 200, "eval_size": 100}, "arc_easy": {"train_size": 200, "eval_size": 100}},
        "stage_defaults": {"learning_rate": 3e-3, "batch_size": 16, "steps": steps},
        "chains": {"tqa_arc": [{"task": "toxigen_qa"}, {"task": "arc_easy"}],
                   "arc_tqa": [{"task": "arc_easy"}, {"task": "toxigen_qa"}]},
        "grid": {"stage1.learning_rate": [1e-3, 3e-3]},
        "data_dir": data_dir,
        "storage": storage,
        "execution": {"executor": executor, "cpus_per_trial": 1},
    })


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    data_dir = os.environ.get("STUDY_DATA_DIR") or str(Path(__file__).resolve().parents[2] / "shared" / "data")

    import polars as pl

    from study.cluster import connect
    from study.orchestrate import run_study

    print(connect(dashboard=False))
    with tempfile.TemporaryDirectory() as storage:
        # Warm-up: build the tiny model and import caches outside the timed runs.
        from trainables.models import resolve_base_model

        resolve_base_model("tiny", data_dir)
        results = {}
        for executor in ("function", "train"):
            start = time.perf_counter()
            outcome = run_study(study(storage, executor, args.steps, data_dir), report=False, log=lambda *_: None)
            wall = time.perf_counter() - start
            assert not outcome.failed, outcome.failed
            trials = pl.read_parquet(outcome.study_dir / "trials" / "*.parquet")
            results[executor] = (wall, trials["train_seconds"].sum())
    for executor, (wall, train) in results.items():
        print(f"{executor:9s} wall {wall:7.1f} s   training inside stages {train:6.1f} s   (4 trials, 8 stages)")
    print(f"ratio train/function wall time: {results['train'][0] / results['function'][0]:.2f}x")


if __name__ == "__main__":
    main()
