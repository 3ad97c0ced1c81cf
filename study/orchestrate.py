"""Run a validated study on Ray Tune: the one entry point from `study` into `trainables`.

    spec ─► data dir, base model (built once, here in the driver) ─► trial plans
         ─► Tune param_space {chain, seed, stage<k>.<field>…} (grid_search) ─► one trial per plan
         ─► results/<study>/{trials,evals,predictions,train_log}/*.parquet ─► report

Everything under `<storage>/<study name>/`: the resolved study file (study.yaml), the plans
(plans.json), Parquet tables, per-trial checkpoints, Tune's state (_tune/) and the report.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from study.plan import build_plans
from study.spec import StudySpec


# CPU share of a Tune trial that only hosts a TorchTrainer (its Train controller takes 0 CPUs;
# Ray refuses a 0-CPU trial bundle).
TRAIN_TRIAL_CPU = 0.01


@dataclass(frozen=True)
class RunOutcome:
    study_dir: Path
    trials: int
    failed: list[str]
    report: Path | None


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def param_space(spec: StudySpec) -> dict[str, Any]:
    from ray import tune

    space: dict[str, Any] = {"chain": tune.grid_search(list(spec.chains)), "seed": tune.grid_search(list(spec.seeds))}
    for axis in sorted(spec.grid):
        space[axis] = tune.grid_search(list(spec.grid[axis]))
    return space


def run_study(spec: StudySpec, *, resume: bool = False, report: bool = True, log=print) -> RunOutcome:
    import yaml

    from study.cluster import cluster_cpus, cluster_gpus, connect
    from trainables.models import resolve_base_model
    from trainables.tasks import resolve_data_dir
    from trainables.tune_trial import PlanLookup, chain_trial, choose_executor

    data_dir = resolve_data_dir(spec.data_dir)
    data_dir = str(Path(data_dir).resolve()) if data_dir else None
    study_dir = Path(spec.storage).expanduser().resolve() / spec.name
    study_dir.mkdir(parents=True, exist_ok=True)
    _write_atomic(study_dir / "study.yaml", yaml.safe_dump(spec.to_dict(), sort_keys=False))

    log(f"[study] {spec.name}: data from {data_dir or 'the Hugging Face Hub'}")
    # Built inside the study folder: on a multi-node cluster every trial finds it in storage.
    base_model = resolve_base_model(spec.model.name, data_dir, cache_dir=study_dir / "_models")
    log(f"[study] base model: {base_model}")
    plans = build_plans(spec, study_dir=study_dir, data_dir=data_dir, base_model_path=base_model)
    _write_atomic(study_dir / "plans.json", json.dumps(plans, indent=1))

    log(f"[study] {connect()}")
    from ray import tune

    ex = spec.execution
    executor = choose_executor(ex.executor, workers=ex.workers_per_trial, gpus=ex.gpus_per_trial)
    # A function trial holds its worker's resources itself; a TorchTrainer trial only hosts the
    # Train controller (a small CPU fraction: Ray refuses 0-CPU trial bundles) and its worker
    # asks for the rest.
    if executor == "function":
        trial_resources = {"cpu": ex.cpus_per_trial, "gpu": ex.gpus_per_trial}
        worker_cpus = ex.cpus_per_trial
    else:
        # Trial + worker together take cpus_per_trial, so N trials fit where N workers do.
        trial_resources = {"cpu": TRAIN_TRIAL_CPU}
        worker_cpus = max(TRAIN_TRIAL_CPU, ex.cpus_per_trial - TRAIN_TRIAL_CPU)
    limit = ex.max_concurrent_trials or max(1, int(cluster_cpus() // ex.cpus_per_trial))
    if ex.gpus_per_trial:
        limit = min(limit, max(1, int(cluster_gpus() // ex.gpus_per_trial)))
    log(f"[study] {len(plans)} trials, executor={executor}, up to {limit} at a time")

    plan_for = PlanLookup(plans)
    trainable = tune.with_resources(
        tune.with_parameters(chain_trial, plan_for=plan_for, executor=executor, cpus_per_worker=worker_cpus,
                             gpus_per_worker=ex.gpus_per_trial, max_failures=ex.max_failures),
        trial_resources,
    )

    def trial_name(trial) -> str:
        return plan_for(trial.config)["trial_id"]

    tune_dir = study_dir / "_tune"
    experiment = tune_dir / spec.name
    if resume and tune.Tuner.can_restore(str(experiment)):
        log(f"[study] resuming from {experiment}")
        tuner = tune.Tuner.restore(str(experiment), trainable=trainable, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=param_space(spec),
            tune_config=tune.TuneConfig(max_concurrent_trials=limit, trial_name_creator=trial_name,
                                        trial_dirname_creator=trial_name),
            run_config=tune.RunConfig(name=spec.name, storage_path=str(tune_dir),
                                      failure_config=tune.FailureConfig(max_failures=ex.max_failures), verbose=1),
        )
    grid = tuner.fit()
    failed = [plan_for(r.config)["trial_id"] + f": {r.error}" for r in grid if r.error]
    report_path = None
    if report:
        from analysis.report import write_report

        try:
            report_path = write_report(study_dir)
        except FileNotFoundError as exc:  # e.g. every trial failed before its first evaluation
            log(f"[study] no report written: {exc}")
    return RunOutcome(study_dir=study_dir, trials=len(plans), failed=failed, report=report_path)
