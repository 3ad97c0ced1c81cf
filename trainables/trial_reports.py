"""What a trial reports about its stages: the `trials` table row of a stage, the forgetting
metrics Tune sees after each stage, and whether a stage's training diverged.

Pure functions of the plan and the measured numbers (trainables.chain calls them), kept apart so
the chain module reads as the data flow and these as the definitions they implement (paper §2.4
for forgetting).
"""

from __future__ import annotations

import json
from typing import Any, Collection, Sequence

from contract.plan import StagePlan, TrialPlan
from contract.schema import ALL, FORGETTING_METRICS


def forgetting_metrics(trained: Sequence[tuple[int, str]], evaluated: Collection[str],
                       accuracy: dict[int, dict[str, dict[str, float]]], number: int) -> dict[str, float]:
    """Forgetting of every evaluated task a stage trains, at stage `number` (paper §2.4):
    F = Acc(θ after the stage that last trained the task) − Acc(θ now); WG = max over groups
    of the per-group F; biased = WG − F (the maximum BiasedForgetting). NaN before the
    task's stage or when an accuracy is missing. `trained`: (stage number, task) of every
    stage of the chain, in order; `evaluated`: the tasks evaluated after each stage."""
    nan = float("nan")
    out: dict[str, float] = {}
    for task in dict.fromkeys(task for _, task in trained):
        if task not in evaluated:
            continue
        trained_at = [stage for stage, t in trained if t == task and stage <= number]
        values = {name: nan for name in FORGETTING_METRICS}
        if trained_at and trained_at[-1] in accuracy and number in accuracy:
            then, now = accuracy[trained_at[-1]].get(task, {}), accuracy[number].get(task, {})
            if ALL in then and ALL in now:
                values["forgetting"] = then[ALL] - now[ALL]
                groups = [g for g in then if g != ALL and g in now]
                if groups:
                    values["wg_forgetting"] = max(then[g] - now[g] for g in groups)
                    values["biased_forgetting"] = values["wg_forgetting"] - values["forgetting"]
        out.update({f"{name}/{task}": value for name, value in values.items()})
    return out


def divergence(log_rows: list[dict], model: Any) -> str | None:
    """Why a stage's training diverged (a non-finite logged loss or gradient norm, or
    non-finite weights), or None."""
    import math

    import torch

    for row in log_rows:
        # grad_norm is NaN when a trainer does not log it: only an infinite one counts.
        if not math.isfinite(row["loss"]) or math.isinf(row.get("grad_norm", 0.0)):
            return f"non-finite loss ({row['loss']}) or gradient norm ({row.get('grad_norm')}) at step {row['step']}"
    for name, param in model.named_parameters():
        if not torch.isfinite(param).all():
            return f"non-finite weights in {name} after training"
    return None


def trial_row(plan: TrialPlan, stage: StagePlan, executor: str, *, status: str, seconds: float | None = None,
               n_train: int | None = None, trained_by: str | None = None, trained_on: str | None = None,
               reused: bool | None = None, failure: str | None = None,
               start_from: str | None = None) -> dict[str, Any]:
    return {
        "trial_id": plan.trial_id, "chain": plan.chain, "seed": plan.seed, "stage": stage.stage,
        # The method's own settings (e.g. DPO beta, PPO kl_coef), as JSON.
        "method": stage.method, "method_settings": json.dumps(stage.method_settings(), sort_keys=True),
        "task": stage.task, "learning_rate": stage.learning_rate,
        "batch_size": stage.batch_size, "steps": stage.steps, "stage_seed": stage.seed,
        "train_size": stage.train_size, "n_train_examples": n_train, "data_seed": plan.data_seed,
        "train_data_seed": plan.train_data_seed(stage),
        "replay_from_stage": stage.replay.from_stage if stage.replay is not None else None,
        "replay_fraction": stage.replay.fraction if stage.replay is not None else None,
        "stage_key": stage.stage_key, "model": plan.model.name,
        "grid_point": json.dumps(plan.grid_point, sort_keys=True), "executor": executor,
        "train_seconds": seconds, "status": status,
        "trained_by": trained_by, "reused": reused, "failure": failure, "start_from": start_from,
        "trained_on": trained_on,
    }
