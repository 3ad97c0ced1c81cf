"""Typed plan parts (and settings) for tests that call a stage runner, a trainer builder or a
measurement directly.

A study fills every setting of a plan (study.planner); a test names only the ones it is about and
takes the study file's defaults (study.spec) for the rest, as a planned stage would.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping

from contract.plan import ModelPlan, OnlineRLPlan, RewardPlan, StagePlan, TrainingPlan
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
