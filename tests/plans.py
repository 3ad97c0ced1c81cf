"""Typed plan parts (and settings) for tests that call a stage runner, a trainer builder or a
measurement directly.

A study fills every setting of a plan (study.planner); a test names only the ones it is about and
takes the study file's defaults (study.spec) for the rest, as a planned stage would.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping

from contract.plan import ModelPlan, OnlineRLPlan, RewardPlan, StagePlan, TrainingPlan, TrialPlan
from study.planner import dpo_plan
from study.spec import CurvatureSpec, DPOSpec, ModelSpec, OnlineRLSpec, RLOOSpec, StageSpec, TrainingSpec

ONLINE_RL_DEFAULTS = {"ppo": OnlineRLSpec(), "rloo": RLOOSpec()}


def training_plan(fields: Mapping[str, Any] | None = None) -> TrainingPlan:
    """The study's training settings with `fields` in place ('auto' checkpointing planned as off,
    as study.planner.training_plan plans a spec the memory check has not resolved)."""
    return TrainingPlan(**{**dataclasses.asdict(TrainingSpec()), "activation_checkpointing": False, **(fields or {})})


def curvature_settings(**given: Any) -> dict[str, Any]:
    """trainables.curvature.measure_curvature's settings as a planned stage passes them: the study
    file's defaults (CurvatureSpec, ModelSpec.max_length) with `given` in place."""
    spec = CurvatureSpec()
    return {"algorithms": spec.algorithms, "top_k": spec.top_k, "max_iterations": spec.max_iterations,
            "tol": spec.tol, "trace_samples": spec.trace_samples, "max_length": ModelSpec().max_length,
            "batch_size": spec.batch_size, "param_regex": spec.parameters, "seed": spec.sample_seed, **given}


def model_plan(path: str | Path, *, max_length: int, dtype: str = "auto", chat: bool = False) -> ModelPlan:
    """The plan's model: a local model folder loaded as stage 0 (and as a 'base' reference)."""
    return ModelPlan(name=str(path), max_length=max_length, dtype=dtype, trust_remote_code=False,
                     chat_template=chat, path=str(path), chat=chat)


def stage_plan(fields: Mapping[str, Any]) -> StagePlan:
    """A stage from the fields of its dict form (method settings: the study's defaults with the
    given ones in place; a reward in its key form, e.g. {"model": path})."""
    fields = dict(fields)
    dpo = fields.pop("dpo", None)
    online = {method: fields.pop(method, None) for method in ONLINE_RL_DEFAULTS}
    method = fields.setdefault("method", "sft")
    schedule = StageSpec(task="x")
    stage = {"stage": 1, "task": "x", "learning_rate": schedule.learning_rate, "batch_size": schedule.batch_size,
             "steps": schedule.steps, "seed": 0, "train_size": None, "task_version": "test", "replay": None,
             "train_limit": None, "data_seed": None, "option_counts": None, "stage_key": "test", "start_from": None,
             **fields}
    if dpo is not None or method == "dpo":
        stage["dpo"] = dpo_plan(dataclasses.replace(DPOSpec(), **(dpo or {})), on_gpu=False, fsdp=False)
    for name, given in online.items():
        if given is not None or method == name:
            settings = {**dataclasses.asdict(ONLINE_RL_DEFAULTS[name]), **(given or {})}
            stage[name] = OnlineRLPlan(**{**settings, "reward": RewardPlan.from_dict(settings["reward"])})
    return StagePlan(**{"dpo": None, "ppo": None, "rloo": None, **stage})


def tiny_study_plans(tiny_model_path: str | Path, data_dir: str | Path, study: str | Path, name: str,
                     chains: Mapping[str, Any], *, train_size: int = 16, eval_size: int = 8,
                     run_id: str | None = None) -> list[TrialPlan]:
    """The trials of a small study on the tiny model: ToxiGenQA and ARC-Easy with `train_size`
    training and `eval_size` eval examples each, stages of 2 steps of batch 4 at lr 1e-3 unless
    a chain's stage says otherwise (seconds on a CPU); `run_id`: the plans carry that run, as
    `study run` stamps them, for tests that call the chain directly."""
    from contract.plan import RunInfo
    from study.planner import build_plans
    from study.spec_loading import spec_from_dict

    spec = spec_from_dict({
        "name": name, "model": {"name": "tiny", "max_length": 256},
        "tasks": {task: {"train_size": train_size, "eval_size": eval_size} for task in ("toxigen_qa", "arc_easy")},
        "stage_defaults": {"learning_rate": 1e-3, "batch_size": 4, "steps": 2},
        "chains": dict(chains), "data_dir": str(data_dir),
    })
    plans = build_plans(spec, study_dir=study, data_dir=str(data_dir), base_model_path=str(tiny_model_path),
                        chat=False)
    return [dataclasses.replace(p, run=RunInfo(run_id)) for p in plans] if run_id else plans


def small_chain_plan(tiny_model_path: str | Path, data_dir: str | Path, study: str | Path, name: str) -> TrialPlan:
    """The one trial of a small study: the tiny model, ToxiGenQA then ARC-Easy, 2 steps of batch 4
    on 16 examples each, 8 eval examples per task (seconds on a CPU)."""
    [plan] = tiny_study_plans(tiny_model_path, data_dir, study, name, {"c": [{"task": "toxigen_qa"}, {"task": "arc_easy"}]})
    return plan


RUN_DEPENDENT_COLUMNS = ("seconds", "train_seconds", "trained_by", "reused", "trained_on")
"""Columns that legitimately differ between two runs of the same trials (timings, who trained)."""


def comparable_tables(study: str | Path, tables: tuple[str, ...]) -> dict[str, Any]:
    """Each of a study folder's `tables` without RUN_DEPENDENT_COLUMNS, rows sorted: equal for two
    runs that produced the same results."""
    import polars as pl

    out = {}
    for table in tables:
        frame = pl.read_parquet(Path(study) / table / "*.parquet")
        frame = frame.drop([c for c in RUN_DEPENDENT_COLUMNS if c in frame.columns])
        out[table] = frame.sort(frame.columns)
    return out
