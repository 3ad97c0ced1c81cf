"""What the engine costs: the demo study through `study run` against the same work in a bare loop.

    python bench/engine_overhead.py [--cpus N] [--set KEY=VALUE ...]

1. engine: `python -m study run demo --no-report` with the function executor on a local Ray
   cluster the run starts itself, `execution.cpus_per_trial` = N (default: this machine's CPUs),
   so trials run one at a time with N torch threads each, as the bare loop does. Its phases
   come from the study's `timings` table.
2. bare: a second Python process reads the run's plans.json (the same plans) and, with no Ray,
   no stage store, no Parquet, evaluates the base model once, then trains each distinct stage
   once (trainables.chain's `stage_inputs` and `train_stage`: the engine's own runner, data and
   model loading), saves its checkpoint (the next stage starts from it, as in the engine) and
   evaluates it with `evaluate_rows`, freeing memory between models as the engine does. Its
   phases come from the same recorder (trainables.timings).

Both are timed from outside their process (interpreter start and imports included); the tiny
model is built before either, untimed. Prints both wall times, the ratio engine / bare, and the
per-phase seconds of both (the engine's summed over its trials; its wall time beyond the
trials' sum is the driver: Ray's start, preflight and data checks, Tune). `--set` passes
further overrides to the study (e.g. `--set stage_defaults.steps=50`); keep them the same when
comparing runs. Numbers depend on the machine and its load; compare ratios from one run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PRESET = "demo"


def bare_loop(plans_file: Path, out: Path, cpus: int) -> None:
    """The study's distinct stages and evaluations, one after another, without the engine."""
    import torch

    from contract.keys import base_stage_key
    from contract.plan import TrialPlan
    from contract.schema import OTHER, TRAIN
    from trainables import timings
    from trainables.chain import register_plan_tasks, stage_inputs, train_stage
    from trainables.quiet_logs import quiet_libraries
    from trainables.trial_data import plan_eval_sets
    from trainables.evaluation.dispatch import evaluate_rows
    from trainables.evaluation.precision import unwrapped
    from trainables.models import load_model_and_tokenizer, release_memory, save_checkpoint

    started = time.time()
    torch.set_num_threads(cpus)
    quiet_libraries()
    plans = [TrialPlan.from_dict(p) for p in json.loads(plans_file.read_text())]
    recorder = timings.Recorder("bare", "bare", started=started)
    timings.begin(recorder)
    checkpoints: dict[str, Path] = {}
    evaluated: set[str] = set()
    with tempfile.TemporaryDirectory() as work:
        for plan in plans:
            register_plan_tasks(plan)
            eval_sets = None
            if base_stage_key(plan.model) not in evaluated:
                with timings.phase(OTHER, stage=0):
                    eval_sets = plan_eval_sets(plan)
                    model, tokenizer = load_model_and_tokenizer(plan.model.path, dtype=plan.model.dtype)
                    evaluate_rows(plan, model, tokenizer, eval_sets)
                    del model
                    release_memory()
                evaluated.add(base_stage_key(plan.model))
            for index, stage in enumerate(plan.stages):
                if stage.stage_key in checkpoints:
                    continue  # shared with an earlier trial: trained once, as in the engine
                with timings.phase(OTHER, stage=stage.stage):
                    eval_sets = eval_sets or plan_eval_sets(plan)
                    previous = checkpoints[plan.stages[index - 1].stage_key] if index else plan.model.path
                    inputs = stage_inputs(plan, stage, previous, plan.stages)
                    with timings.phase(TRAIN, task=stage.task):
                        train_stage(plan, stage, inputs, Path(work) / "trainer")
                    model, tokenizer = unwrapped(inputs.model), inputs.tokenizer
                    del inputs
                    release_memory()
                    checkpoints[stage.stage_key] = save_checkpoint(model, tokenizer, Path(work) / stage.stage_key)
                    evaluate_rows(plan, model, tokenizer, eval_sets)
                    del model
                    release_memory()
    out.write_text(json.dumps(recorder.rows()))


def _phases(rows: list[dict]) -> dict[str, float]:
    totals: dict[str, float] = {}
    for row in rows:
        totals[row["phase"]] = totals.get(row["phase"], 0.0) + row["seconds"]
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpus", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--bare", type=Path, help=argparse.SUPPRESS)  # the bare loop's process: plans.json
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare:
        bare_loop(args.bare, args.out, args.cpus)
        return

    import polars as pl

    from contract.layout import StudyLayout, study_folder
    from contract.schema import TIMING_PHASES
    from study.presets import resolve_study_file
    from study.spec_loading import load_spec_file
    from trainables.models import resolve_base_model

    data_dir = os.environ.get("STUDY_DATA_DIR") or str(ROOT.parent / "shared" / "data")
    env = {**os.environ, "STUDY_DATA_DIR": data_dir, "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)  # the run starts its own local cluster
    overrides = ["execution.executor=function", f"execution.cpus_per_trial={args.cpus}", *args.overrides]
    with tempfile.TemporaryDirectory() as storage:
        spec = load_spec_file(resolve_study_file(PRESET), overrides)
        study = study_folder(storage, spec.name)
        resolve_base_model(spec.model.name, data_dir, cache_dir=StudyLayout(study).models)  # untimed warm-up
        command = [sys.executable, "-m", "study", "run", PRESET, "--storage", storage, "--no-report",
                   *(f"--set={o}" for o in overrides)]
        start = time.perf_counter()
        subprocess.run(command, check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
        engine_wall = time.perf_counter() - start
        engine_rows = pl.read_parquet(StudyLayout(study).table("timings") / "*.parquet").to_dicts()

        out = Path(storage) / "bare.json"
        start = time.perf_counter()
        # OMP_NUM_THREADS as Ray sets it in a trial's process: without it this torch build's OpenMP
        # runs small CPU ops up to ~100x slower on a loaded machine (a bare loop's pitfall, not the engine's).
        subprocess.run([sys.executable, __file__, "--bare", str(StudyLayout(study).plans), "--out", str(out),
                        "--cpus", str(args.cpus)], check=True, env={**env, "OMP_NUM_THREADS": str(args.cpus)}, cwd=ROOT)
        bare_wall = time.perf_counter() - start
        bare_rows = json.loads(out.read_text())

    engine, bare = _phases(engine_rows), _phases(bare_rows)
    trials = len({r["trial_id"] for r in engine_rows})
    print(f"study: {PRESET} preset, overrides {' '.join(overrides)}; {trials} trials")
    print(f"command: {' '.join(['study', 'run', PRESET, '--no-report', *(f'--set {o}' for o in overrides)])}")
    print(f"engine wall {engine_wall:7.1f} s   (its trials' timings sum to {sum(engine.values()):.1f} s; "
          f"driver and Ray beyond them {engine_wall - sum(engine.values()):.1f} s)")
    print(f"bare   wall {bare_wall:7.1f} s   (its phases sum to {sum(bare.values()):.1f} s)")
    print(f"ratio engine / bare: {engine_wall / bare_wall:.2f}")
    print(f"{'phase':<16}{'engine s':>10}{'bare s':>10}")
    for phase in TIMING_PHASES:
        if phase in engine or phase in bare:
            print(f"{phase:<16}{engine.get(phase, 0.0):>10.1f}{bare.get(phase, 0.0):>10.1f}")


if __name__ == "__main__":
    main()
